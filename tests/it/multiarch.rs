//! Multi-arch (issue 13): the default spec built for linux/arm64 on this amd64 machine from a
//! Debian arm64 sysroot (scripts/arm64-sysroot.sh), twice to the same bytes; its python run
//! under qemu-user in a chroot on a stdlib smoke script and Dify's packages, and its node on a
//! line of JavaScript; the seccomp filter tried under qemu
//! (qemu-user refuses a guest's seccomp filter: see `seccomp_under_qemu`); and the amd64 and
//! arm64 images assembled into one OCI index, twice to the same bytes, read by skopeo, pushed
//! to a local registry and pulled back with the same digests.
//!
//! qemu runs explicitly (`chroot ROOT /qemu-aarch64-static /usr/bin/python3`), copied into a
//! scratch copy of the rootfs: binfmt_misc is not mounted on every test machine.

use crate::support::{self, bin, prebake, repo_root, run, run_stdout};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const AARCH64: &str = "aarch64-unknown-linux-gnu";
/// The default spec: python3 with Dify's pinned requirements (wheels for aarch64, fetched by
/// the host's pip), and Node.js (Debian's arm64 nodejs, from the sysroot).
const SPEC: &str = "images/dify.yaml";

struct Shared {
    _dir: tempfile::TempDir,
    /// Two arm64 builds of the default spec, and an amd64 one.
    arm64: [PathBuf; 2],
    amd64: PathBuf,
    /// The arm64 rootfs unpacked, with qemu-aarch64-static at its root.
    root: PathBuf,
    sysroot: PathBuf,
}

/// The sysroot: `PREBAKE_ARM64_SYSROOT`, else the script's default (kept between runs; the
/// script only refreshes it when Debian's package versions change).
fn sysroot() -> PathBuf {
    let dir = std::env::var_os("PREBAKE_ARM64_SYSROOT").map_or_else(
        || PathBuf::from("/var/tmp/prebake-arm64-sysroot"),
        PathBuf::from,
    );
    run(Command::new(repo_root().join("scripts/arm64-sysroot.sh")).arg(&dir));
    dir
}

/// `runtime` cross-compiled for aarch64 into this test run's target directory, in the dev
/// profile: a cold release build (thin LTO) takes minutes longer, and the image's runtime is
/// only checked for its architecture and libraries here.
fn aarch64_runtime() -> PathBuf {
    // CARGO_BIN_EXE_runtime is TARGET/<profile>/runtime.
    let target_dir = bin("runtime")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .args(["build", "--locked", "--bin", "runtime", "--target", AARCH64])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .current_dir(repo_root()));
    target_dir.join(AARCH64).join("debug/runtime")
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let sysroot = sysroot();
        let runtime = aarch64_runtime();
        let arm64 = [dir.path().join("arm64-a"), dir.path().join("arm64-b")];
        for out in &arm64 {
            let started = std::time::Instant::now();
            run(&mut prebake(&[
                "build",
                SPEC,
                "--platform",
                "linux/arm64",
                "--sysroot",
                sysroot.to_str().unwrap(),
                "--runtime",
                runtime.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ]));
            eprintln!("arm64 build: {:.1} s", started.elapsed().as_secs_f64());
        }
        let amd64 = dir.path().join("amd64");
        let started = std::time::Instant::now();
        run(&mut prebake(&[
            "build",
            SPEC,
            "--runtime",
            bin("runtime").to_str().unwrap(),
            "--out",
            amd64.to_str().unwrap(),
        ]));
        eprintln!("amd64 build: {:.1} s", started.elapsed().as_secs_f64());

        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        run(Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(arm64[0].join("bundle/rootfs.tar.zst"))
            .arg("-C")
            .arg(&root));
        let qemu = support::which("qemu-aarch64-static").expect("qemu-aarch64-static on PATH");
        std::fs::copy(qemu, root.join("qemu-aarch64-static")).unwrap();
        Shared {
            _dir: dir,
            arm64,
            amd64,
            root,
            sysroot,
        }
    })
}

/// Every file of `dir` by relative path: its bytes' sha256 (a symlink: its target).
fn tree(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let what = if e.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else {
                support::sha256_file(e.path())
            };
            (rel, what)
        })
        .collect()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The one image manifest of a build's layout, and its config.
fn image_config(layout: &Path) -> serde_json::Value {
    let index = json(&layout.join("index.json"));
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    json(&blob(&manifest["config"]["digest"]))
}

/// `argv` (a program of the arm64 rootfs and its arguments) under qemu in a chroot of `root`,
/// with the sandbox's clean environment.
fn arm64_run(root: &Path, argv: &[&str]) -> std::process::Output {
    // chroot is in /usr/sbin, which the clean PATH below (the one Command looks it up in) lacks.
    Command::new(support::which("chroot").expect("chroot on PATH"))
        .arg(root)
        .arg("/qemu-aarch64-static")
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", "/tmp")
        .output()
        .unwrap()
}

/// `python3 -I -B -c script` of the arm64 rootfs, under qemu in a chroot.
fn arm64_python(root: &Path, script: &str) -> std::process::Output {
    arm64_run(root, &["/usr/bin/python3", "-I", "-B", "-c", script])
}

/// Two arm64 builds give the same bytes, and everything in them is for arm64; a runtime of
/// this machine is refused before any work.
fn reproducible_and_for_arm64(s: &Shared) {
    let out = s.arm64[0].with_file_name("wrong-runtime");
    let refused = prebake(&["build", SPEC, "--platform", "linux/arm64", "--sysroot"])
        .arg(&s.sysroot)
        .arg("--runtime")
        .arg(bin("runtime"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("e_machine 62"),
        "{err}"
    );
    assert!(!out.exists(), "a refused build wrote {}", out.display());

    let (a, b) = (tree(&s.arm64[0]), tree(&s.arm64[1]));
    assert_eq!(a, b, "two arm64 builds of the same inputs differ");

    // `verify` rebuilds for the recorded platform from the sysroot; without it, it says so.
    let verify = |sysroot: Option<&Path>| {
        let mut c = prebake(&["verify"]);
        c.arg(&s.arm64[0]).args(["--spec", SPEC]);
        if let Some(dir) = sysroot {
            c.arg("--sysroot").arg(dir);
        }
        c.output().unwrap()
    };
    let out = verify(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("linux/arm64") && err.contains("--sysroot"),
        "{err}"
    );
    let out = verify(Some(&s.sysroot));
    support::assert_success(&out, "prebake verify --sysroot of the arm64 build");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("identical"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let config = image_config(&s.arm64[0].join("image"));
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
    let manifest = json(&s.arm64[0].join("bundle/bundle.json"));
    assert_eq!(
        manifest["languages"]["python3"]["seccomp"]["arch"],
        "aarch64"
    );
    assert_eq!(
        manifest["languages"]["python3"]["interpreter"],
        "/usr/bin/python3"
    );
    // Every ELF object of the rootfs is aarch64 (e_machine 183), none of the host's.
    let mut elves = 0;
    for e in walkdir::WalkDir::new(&s.root)
        .into_iter()
        .map(Result::unwrap)
    {
        if !e.file_type().is_file() || e.file_name() == "qemu-aarch64-static" {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        if bytes.len() > 20 && bytes.starts_with(b"\x7fELF") {
            let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
            assert_eq!(machine, 183, "{} is not aarch64", e.path().display());
            elves += 1;
        }
    }
    assert!(elves > 20, "only {elves} ELF files in the arm64 rootfs");
    assert!(s.root.join("lib/ld-linux-aarch64.so.1").exists());
    // The SBOM names the sysroot's Debian packages, for arm64.
    let cdx = std::fs::read_to_string(s.arm64[0].join("bundle/sbom.cdx.json")).unwrap();
    assert!(
        cdx.contains("pkg:deb/debian/libc6@"),
        "no libc6 in the SBOM"
    );
    assert!(cdx.contains("arch=arm64"), "no arm64 package in the SBOM");
}

/// The arm64 python runs a stdlib smoke script under qemu.
fn stdlib_under_qemu(s: &Shared) {
    let script = r#"
import base64, bz2, csv, ctypes, datetime, decimal, hashlib, json, lzma, platform, re, sqlite3
import ssl, struct, sys, uuid, zlib, zoneinfo
assert platform.machine() == "aarch64", platform.machine()
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.execute("insert into t values (42)")
ctx = ssl.create_default_context()
ctx.load_verify_locations("/etc/ssl/certs/ca-certificates.crt")
print(json.dumps({
    "machine": platform.machine(),
    "sha256": hashlib.sha256(b"prebake").hexdigest(),
    "sqlite": db.execute("select x from t").fetchone()[0],
    "cas": ctx.cert_store_stats()["x509_ca"],
    "zlib": len(zlib.compress(b"a" * 1000)) < 100,
    "lzma": lzma.decompress(lzma.compress(b"x")) == b"x",
    "bz2": bz2.decompress(bz2.compress(b"x")) == b"x",
    "tz": str(datetime.datetime(2024, 7, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")).utcoffset()),
    "decimal": str(decimal.Decimal(1) / 7)[:6],
    "libz": ctypes.CDLL("libz.so.1") is not None,
    "dont_write_bytecode": sys.flags.dont_write_bytecode,
}))
"#;
    let out = arm64_python(&s.root, script);
    support::assert_success(&out, "the arm64 python under qemu");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["machine"], "aarch64");
    assert_eq!(got["sha256"], support::sha256(b"prebake"));
    assert_eq!(got["sqlite"], 42);
    assert!(got["cas"].as_u64().unwrap() > 50, "{got}");
    for k in ["zlib", "lzma", "bz2", "libz"] {
        assert_eq!(got[k], true, "{k}: {got}");
    }
    assert_eq!(got["tz"], "2:00:00");
    assert_eq!(got["decimal"], "0.1428");
}

/// The requirements' wheels are aarch64's (their compiled modules load), and the sysroot's node
/// runs: Debian's nodejs reads builtins from /usr/share/nodejs at start (without
/// undici-fetch.js it aborts before running a line), which the planner found by asking node.
fn packages_and_node_under_qemu(s: &Shared) {
    let manifest = json(&s.arm64[0].join("bundle/bundle.json"));
    let langs = &manifest["languages"];
    assert_eq!(langs["nodejs"]["interpreter"], "/usr/bin/node");
    assert_eq!(langs["nodejs"]["seccomp"]["arch"], "aarch64");
    let dists: Vec<String> = langs["python3"]["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["name"], d["version"]).replace('"', ""))
        .collect();
    for want in [
        "Jinja2 3.1.4",
        "MarkupSafe 2.1.5",
        "httpx 0.27.2",
        "PySocks 1.7.1",
    ] {
        assert!(dists.iter().any(|d| d == want), "{want} missing: {dists:?}");
    }
    let out = arm64_python(
        &s.root,
        r#"
import jinja2, markupsafe._speedups, charset_normalizer.md, requests, httpx, socks, json
print(json.dumps({
    "speedups": markupsafe._speedups.__file__,
    "md": charset_normalizer.md.__file__,
    "render": jinja2.Template("{{ x | e }}").render(x="<a>"),
}))
"#,
    );
    support::assert_success(&out, "the requirements under qemu");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["render"], "&lt;a&gt;");
    for k in ["speedups", "md"] {
        let f = got[k].as_str().unwrap();
        assert!(
            f.starts_with("/usr/local/lib/python3.11/dist-packages/")
                && f.ends_with("-aarch64-linux-gnu.so"),
            "{k}: {f}"
        );
    }
    assert!(s
        .root
        .join("usr/share/nodejs/undici/undici-fetch.js")
        .is_file());
    let node = arm64_run(
        &s.root,
        &[
            "/usr/bin/node",
            "-e",
            "console.log(JSON.stringify({arch: process.arch, sum: [1, 2, 3].reduce((a, b) => a + b)}))",
        ],
    );
    support::assert_success(&node, "the arm64 node under qemu");
    assert_eq!(
        String::from_utf8_lossy(&node.stdout).trim(),
        r#"{"arch":"arm64","sum":6}"#
    );
}

/// qemu-user cannot run a script under the bundle's seccomp filter: it refuses a guest's
/// `prctl(PR_SET_SECCOMP)` (qemu 7.2: EINVAL, since the filter would apply to qemu's own
/// host syscalls), and a filter installed from outside would see qemu's x86_64 syscalls,
/// which the aarch64 program (AUDIT_ARCH_AARCH64) refuses. The filter is therefore tested on
/// arm64 hardware only; here the test checks that qemu refuses, and that the script still
/// runs. Should a later qemu accept the filter, the script must then run under it.
fn seccomp_under_qemu(s: &Shared) {
    let bpf = std::fs::read(s.arm64[0].join("bundle/seccomp/python3.bpf")).unwrap();
    let programs = prebake::contract::bpf::decode(&bpf).unwrap();
    let dir = tempfile::tempdir_in(s.root.join("tmp")).unwrap();
    for (i, p) in programs.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("{i}.bin")),
            prebake::contract::bpf::program_bytes(p),
        )
        .unwrap();
    }
    let inside = Path::new("/tmp").join(dir.path().file_name().unwrap());
    let inside = inside.display();
    let script = format!(
        r#"
import ctypes, glob, hashlib, json, os
libc = ctypes.CDLL(None, use_errno=True)
class Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
results = []
for f in sorted(glob.glob("{inside}/*.bin")):
    raw = open(f, "rb").read()
    insns = (Insn * (len(raw) // 8)).from_buffer_copy(raw)
    prog = Prog(len(insns), insns)
    rc = libc.prctl(22, 2, ctypes.byref(prog), 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    results.append((rc, ctypes.get_errno()))
# Under the filter (if it was installed): the stdlib still works, a new process does not.
ok = hashlib.sha256(b"x").hexdigest() == "{x}"
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    forked = True
except OSError:
    forked = False
print(json.dumps({{"results": results, "hash_ok": ok, "forked": forked}}))
"#,
        x = support::sha256(b"x")
    );
    let out = arm64_python(&s.root, &script);
    support::assert_success(&out, "the seccomp script under qemu");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["hash_ok"], true, "{got}");
    let results = got["results"].as_array().unwrap();
    assert!(!results.is_empty());
    if results.iter().all(|r| r[0] == -1) {
        // qemu-user refused the filter: EINVAL.
        assert!(results.iter().all(|r| r[1] == 22), "{got}");
        eprintln!(
            "qemu-user refuses seccomp filters (EINVAL): the aarch64 filter is not exercised here"
        );
    } else {
        assert!(results.iter().all(|r| r[0] == 0), "{got}");
        assert_eq!(got["forked"], false, "the filter allowed fork: {got}");
    }
}

#[test]
#[cfg_attr(
    not(all(
        have_root,
        have_apt_get,
        have_dpkg_deb,
        have_qemu_aarch64_static,
        have_aarch64_linux_gnu_gcc,
        have_rust_aarch64,
        have_chroot,
        have_skopeo,
        have_docker_registry,
        have_tar,
        have_zstd
    )),
    ignore = "needs root, apt-get, dpkg-deb, qemu-user-static, gcc-aarch64-linux-gnu, the aarch64 Rust target, chroot, skopeo, docker-registry, tar and zstd"
)]
fn amd64_and_arm64_images_and_their_index() {
    let _exclusive = support::exclusive();
    let s = shared();
    reproducible_and_for_arm64(s);
    stdlib_under_qemu(s);
    packages_and_node_under_qemu(s);
    seccomp_under_qemu(s);
    index_of_amd64_and_arm64(s);
}

/// The amd64 and arm64 images in one index: deterministic, read and copied by skopeo.
fn index_of_amd64_and_arm64(s: &Shared) {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    let amd64 = s.amd64.to_str().unwrap();
    let arm64 = s.arm64[0].to_str().unwrap();
    // Twice, the inputs in either order: the same bytes.
    let summary = run_stdout(&mut prebake(&[
        "index",
        amd64,
        arm64,
        "-o",
        x.to_str().unwrap(),
    ]));
    run(&mut prebake(&[
        "index",
        arm64,
        amd64,
        "-o",
        y.to_str().unwrap(),
    ]));
    assert_eq!(tree(&x), tree(&y), "two indexes of the same images differ");
    assert!(
        summary.contains("linux/arm64") && summary.contains("linux/amd64"),
        "{summary}"
    );

    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", x.display()))
        .output()
        .unwrap();
    support::assert_success(&raw, "skopeo inspect --raw");
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["mediaType"], prebake::oci::MEDIA_INDEX);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]).replace('"', "")
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (arch, build) in [("amd64", &s.amd64), ("arm64", &s.arm64[0])] {
        let inspected = support::skopeo(&[
            "inspect",
            "--override-arch",
            arch,
            &format!("oci:{}:latest", x.display()),
        ]);
        assert_eq!(inspected["Architecture"], arch);
        let own = image_config(&build.join("image"));
        assert_eq!(inspected["Labels"], own["config"]["Labels"]);
    }
    // The whole index copies, every platform.
    let copy = dir.path().join("copy");
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--all",
        &format!("oci:{}:latest", x.display()),
        &format!("oci:{}:latest", copy.display()),
    ]));

    push_and_pull_back(&x, &copy);

    // Two images of one platform are refused, naming both.
    let out = prebake(&["index", arm64, s.arm64[1].to_str().unwrap(), "-o"])
        .arg(dir.path().join("z"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux/arm64") && err.contains("one image per platform"),
        "{err}"
    );
}

/// The index pushed to a local registry (Debian's docker-registry) and pulled back with skopeo
/// (`copy --all --preserve-digests`): the same index digest, the same manifest per platform.
fn push_and_pull_back(layout: &Path, scratch: &Path) {
    let registry = crate::push::Registry::start(None);
    let reference = registry.reference("multiarch");
    let (stdout, stderr) = crate::push::push_ok(&[layout.to_str().unwrap(), &reference], &[]);
    let index_digest = json(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        crate::push::pushed_digest(&stdout),
        index_digest,
        "{stderr}"
    );
    let raw = crate::push::skopeo_raw(&reference, &[]);
    assert_eq!(format!("sha256:{}", support::sha256(&raw)), index_digest);
    let pulled = scratch.with_file_name("pulled");
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:latest", pulled.display()),
    ]));
    let top = json(&pulled.join("index.json"));
    assert_eq!(top["manifests"][0]["digest"], index_digest.as_str());
    let manifests = |dir: &Path| -> Vec<String> {
        let blob = dir
            .join("blobs/sha256")
            .join(index_digest.trim_start_matches("sha256:"));
        json(&blob)["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{} {}", m["platform"]["architecture"], m["digest"]))
            .collect()
    };
    let (pushed, back) = (manifests(layout), manifests(&pulled));
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    assert_eq!(pushed, back, "the pulled index lists other manifests");
}

#[test]
fn unknown_platform_and_missing_sysroot_are_clear_errors() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = prebake(&["build", SPEC, "--platform", "linux/s390x", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--platform") && err.contains("linux/amd64, linux/arm64"),
        "{err}"
    );
    let out = prebake(&["build", SPEC, "--platform", "linux/arm64", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sysroot"), "{err}");
    assert!(!out_dir.exists(), "nothing is written on a bad flag");
}
