//! Decides, when the package is built, what the integration tests (tests/it/) can use on this
//! machine, and tells them through `have_*` cfgs: a test that needs root or a tool carries
//! `#[cfg_attr(not(have_root), ignore = "needs root")]`, so `cargo test` lists it as
//! `ignored` with the reason instead of passing it without running it.
//!
//! With `PREBAKE_NO_SKIP=1` (set by `.ci/run`) nothing may be ignored for want of something:
//! the build fails, naming what is missing and the tests that need it.
//!
//! The answers are kept until something they depend on changes: the tool's file, the `PATH`
//! directories where a missing tool would appear, the environment variables below. (The
//! library and binaries see the cfgs too and ignore them; a change rebuilds them once.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The base interpreter the runtime fixtures use (pyenv's build, on every CI machine).
const PYENV_PYTHON: &str = "/root/.pyenv/versions/3.11.7/bin/python3.11";
/// Debian's interpreter, for the tests of the Debian layout.
const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";
/// The fixture venv `.ci/run` makes, unless `PREBAKE_FIXTURE_VENV` names another.
const DEFAULT_VENV: &str = "/var/tmp/prebake-fixture-venv";
/// The SBOM validators' venv `.ci/run` makes (spdx-tools, cyclonedx-python-lib), unless
/// `PREBAKE_SBOM_VENV` names another.
const DEFAULT_SBOM_VENV: &str = "/var/tmp/prebake-sbom-venv";

/// Commands looked up on `PATH`; each gives the cfg `have_<name>` ('-' becomes '_':
/// `have_docker_registry`).
// Kept compact by hand: rustfmt puts one name a line once a name is long (docker-registry).
#[rustfmt::skip]
const TOOLS: &[&str] = &[
    "aarch64-linux-gnu-gcc", "apt-get", "bash", "cc", "chroot", "docker-compose", "docker-registry", "dpkg-deb",
    "git", "gzip", "htpasswd", "ldconfig", "ldd", "newuidmap", "node", "openssl", "pasta", "perf", "python3", "qemu-aarch64-static",
    "runc", "skopeo", "strace", "tar", "umoci", "unshare", "zstd",
];

/// The Rust target the multi-arch tests cross-compile `runtime` for (cfg `have_rust_aarch64`).
const AARCH64_TARGET: &str = "aarch64-unknown-linux-gnu";

struct Requirement {
    cfg: String,
    what: String,
    present: bool,
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for var in [
        "PATH",
        "PREBAKE_NO_SKIP",
        "PREBAKE_FIXTURE_VENV",
        "PREBAKE_SBOM_VENV",
        "USER",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let mut watch = Watch::default();
    let mut reqs = vec![Requirement {
        cfg: "have_root".into(),
        what: "root (uid 0)".into(),
        present: euid() == Some(0),
    }];
    for tool in TOOLS {
        let found = which(tool);
        match &found {
            Some(p) => watch.file(p),
            None => watch.path_dirs(),
        }
        reqs.push(Requirement {
            cfg: format!("have_{}", tool.replace('-', "_")),
            what: format!("the `{tool}` command"),
            present: found.is_some(),
        });
    }
    let venv = std::env::var("PREBAKE_FIXTURE_VENV").unwrap_or_else(|_| DEFAULT_VENV.into());
    let sbom_venv = std::env::var("PREBAKE_SBOM_VENV").unwrap_or_else(|_| DEFAULT_SBOM_VENV.into());
    for (cfg, what, path) in [
        (
            "have_pyenv_python",
            "pyenv's python 3.11.7".to_string(),
            PathBuf::from(PYENV_PYTHON),
        ),
        (
            "have_debian_python",
            DEBIAN_PYTHON.to_string(),
            PathBuf::from(DEBIAN_PYTHON),
        ),
        (
            "have_fixture_venv",
            format!("the fixture venv at {venv} (made by .ci/run; PREBAKE_FIXTURE_VENV)"),
            Path::new(&venv).join("bin/python"),
        ),
        (
            "have_sbom_venv",
            format!(
                "the SBOM validators' venv at {sbom_venv} (made by .ci/run; PREBAKE_SBOM_VENV)"
            ),
            Path::new(&sbom_venv).join("bin/pyspdxtools"),
        ),
        (
            "have_kubernetes_validate",
            format!("kubernetes-validate in the validators' venv at {sbom_venv} (made by .ci/run)"),
            Path::new(&sbom_venv).join("bin/kubernetes-validate"),
        ),
    ] {
        watch.file_or_ancestor(&path);
        reqs.push(Requirement {
            cfg: cfg.into(),
            what,
            present: path.exists(),
        });
    }
    reqs.push(Requirement {
        cfg: "have_rust_aarch64".into(),
        what: format!("the Rust target {AARCH64_TARGET} (rustup target add {AARCH64_TARGET})"),
        present: rust_target_installed(AARCH64_TARGET, &mut watch),
    });
    reqs.push(Requirement {
        cfg: "have_static_libc".into(),
        what: "a static libc (`cc -static`, libc6-dev)".into(),
        present: static_cc_works(&mut watch),
    });

    for r in &reqs {
        println!("cargo::rustc-check-cfg=cfg({})", r.cfg);
        if r.present {
            println!("cargo::rustc-cfg={}", r.cfg);
        }
    }
    for p in &watch.0 {
        println!("cargo::rerun-if-changed={}", p.display());
    }

    let missing: Vec<&Requirement> = reqs.iter().filter(|r| !r.present).collect();
    if missing.is_empty() {
        return;
    }
    let users = tests_by_cfg();
    let lines: Vec<String> = missing
        .iter()
        .filter_map(|r| {
            let tests = users
                .iter()
                .filter(|(c, _)| *c == r.cfg)
                .map(|(_, t)| t.as_str());
            let tests: Vec<&str> = tests.collect();
            (!tests.is_empty()).then(|| format!("{} ({}): {}", r.what, r.cfg, tests.join(", ")))
        })
        .collect();
    if std::env::var_os("PREBAKE_NO_SKIP").is_some_and(|v| v == "1") && !lines.is_empty() {
        eprintln!(
            "PREBAKE_NO_SKIP=1 forbids skipping tests, and this machine lacks what these need:"
        );
        for l in &lines {
            eprintln!("  {l}");
        }
        std::process::exit(1);
    }
    for l in &lines {
        println!("cargo::warning=tests ignored for want of {l}");
    }
}

/// The effective uid, from /proc (a build script has no libc crate).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether the standard library of the Rust `target` is installed for the compiler building
/// this package (rustup puts it in the target's libdir).
fn rust_target_installed(target: &str, watch: &mut Watch) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(o) = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
    else {
        return false;
    };
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    if !o.status.success() || !dir.is_absolute() {
        return false;
    }
    watch.file_or_ancestor(&dir);
    std::fs::read_dir(&dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
    })
}

/// Whether `cc -static` links a program: what the OCI test's static `hello` needs.
fn static_cc_works(watch: &mut Watch) -> bool {
    if which("cc").is_none() {
        return false;
    }
    // libc.a is where libc6-dev puts it; `cc` prints the bare name when it has none.
    if let Ok(o) = Command::new("cc").arg("-print-file-name=libc.a").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.is_absolute() {
            watch.file_or_ancestor(&p);
        }
    }
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = dir.join("static_probe.c");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    Command::new("cc")
        .arg("-static")
        .arg("-o")
        .arg(dir.join("static_probe"))
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the answers depend on, for `rerun-if-changed`. A path that does not exist would make
/// cargo rerun the script (and rebuild the package) on every build, so a missing file is
/// watched through the nearest directory that exists, unless that is a busy shared one.
#[derive(Default)]
struct Watch(BTreeSet<PathBuf>);

impl Watch {
    fn file(&mut self, p: &Path) {
        self.0.insert(p.to_path_buf());
    }

    fn file_or_ancestor(&mut self, p: &Path) {
        let Some(existing) = p.ancestors().find(|a| a.exists()) else {
            return;
        };
        // The tests make and remove scratch directories in these: watching them would
        // rebuild the package after every test run.
        if ["/", "/tmp", "/var/tmp"]
            .iter()
            .any(|b| existing == Path::new(b))
        {
            return;
        }
        self.file(existing);
    }

    /// A missing tool appears in one of the `PATH` directories (which change when it does).
    fn path_dirs(&mut self) {
        let Some(path) = std::env::var_os("PATH") else {
            return;
        };
        for d in std::env::split_paths(&path) {
            if d.is_absolute() && d.is_dir() {
                self.0.insert(d);
            }
        }
    }
}

/// `(cfg, module::test)` for every test of tests/it/ that an absent `cfg` ignores: the
/// `have_*` names in a `#[cfg_attr(not(...), ignore = ...)]` attribute, and the `fn` after it.
fn tests_by_cfg() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("tests/it") else {
        return found;
    };
    let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let module = file.file_stem().unwrap_or_default().to_string_lossy();
        let mut pending: Vec<String> = Vec::new();
        // rustfmt spreads a long attribute over lines: gather it up to its `)]`.
        let mut attr: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(a) = &mut attr {
                a.push_str(line);
            } else if line.starts_with("#[cfg_attr(") {
                attr = Some(line.to_string());
            }
            if let Some(a) = attr.take_if(|a| a.ends_with(")]")) {
                if a.contains("ignore") {
                    pending.extend(cfg_names(&a));
                }
            } else if let Some(rest) = line.strip_prefix("fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                for cfg in pending.drain(..) {
                    found.push((cfg, format!("{module}::{name}")));
                }
            }
        }
    }
    found
}

/// The `have_*` words of a line.
fn cfg_names(line: &str) -> Vec<String> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("have_"))
        .map(str::to_string)
        .collect()
}
