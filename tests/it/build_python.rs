//! Issue 2 acceptance: the real `prebake build` on real interpreters, unpacked with GNU tar
//! and run under a real chroot.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs prebake; builds skip the OCI image (oci_image.rs covers it) to stay fast.
fn prebake(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = support::prebake(args);
    if args.first() == Some(&"build") {
        c.arg("--no-image");
    }
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run prebake")
}

/// `prebake build SPEC --out OUT EXTRA...`.
fn build(spec: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    prebake(&args, &[])
}

fn build_ok(spec: &Path, out: &Path) -> serde_json::Value {
    let o = build(spec, out, &[]);
    assert!(
        o.status.success(),
        "prebake build {} failed:\n{}{}",
        spec.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let manifest = std::fs::read(out.join("bundle/bundle.json")).unwrap();
    serde_json::from_slice(&manifest).unwrap()
}

/// A successful build into `out/` of a fresh temp dir, with its manifest.
struct Built {
    tmp: tempfile::TempDir,
    out: PathBuf,
    m: serde_json::Value,
}

impl Built {
    fn spec(spec: &Path) -> Built {
        Self::with(tempfile::tempdir().unwrap(), spec)
    }

    /// Build from spec YAML `text` (written into the temp dir).
    fn yaml(text: &str) -> Built {
        let tmp = tempfile::tempdir().unwrap();
        let spec = write_spec(tmp.path(), text);
        Self::with(tmp, &spec)
    }

    fn with(tmp: tempfile::TempDir, spec: &Path) -> Built {
        let out = tmp.path().join("out");
        let m = build_ok(spec, &out);
        Built { tmp, out, m }
    }

    fn bundle(&self) -> PathBuf {
        self.out.join("bundle")
    }

    /// The rootfs unpacked by GNU tar into `root/` of the temp dir.
    fn unpack(&self) -> PathBuf {
        let root = self.tmp.path().join("root");
        untar(&self.bundle(), &self.m, &root);
        root
    }
}

/// Unpack with GNU tar (an independent reader) into `dest`.
fn untar(bundle: &Path, manifest: &serde_json::Value, dest: &Path) {
    let file = bundle.join(manifest["rootfs"]["file"].as_str().unwrap());
    std::fs::create_dir_all(dest).unwrap();
    let st = Command::new("tar")
        .args(["--zstd", "-xpf"])
        .arg(&file)
        .arg("-C")
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success(), "tar failed on {}", file.display());
}

/// Run `script` with the bundle's interpreter chrooted into `root`.
fn chroot_python(root: &Path, manifest: &serde_json::Value, script: &Path) -> Output {
    let interp = manifest["languages"]["python3"]["interpreter"]
        .as_str()
        .unwrap();
    let code = std::fs::read_to_string(script).unwrap();
    // Absolute: with a cleared environment Command would search the child's PATH.
    Command::new(support::which("chroot").expect("chroot on PATH"))
        .arg(root)
        .arg(interp)
        .args(["-I", "-B", "-c", &code])
        .env_clear()
        .env("LANG", "C.UTF-8")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

fn assert_runs(root: &Path, manifest: &serde_json::Value, script: &str, expect: &str) {
    let o = chroot_python(
        root,
        manifest,
        &support::repo_root().join("tests/scripts").join(script),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains("cannot open shared object file"),
        "missing library in rootfs:\n{stderr}"
    );
    assert!(
        o.status.success(),
        "{script} failed in chroot ({}):\n{stderr}",
        o.status
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(expect));
}

fn write_spec(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("spec.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
#[cfg_attr(not(all(have_root, have_zstd)), ignore = "needs root and zstd")]
fn default_image_runs_stdlib_smoke_in_chroot() {
    let _exclusive = support::exclusive();
    let built = Built::spec(&support::repo_root().join("images/python3.yaml"));
    let m = &built.m;
    assert_eq!(m["format_version"], 1);
    assert!(m["languages"]["python3"]["interpreter"]
        .as_str()
        .unwrap()
        .starts_with('/'));
    let root = built.unpack();
    // The loader keeps its symlink path, and /tmp is world-writable and sticky.
    assert!(root.join("lib64/ld-linux-x86-64.so.2").exists() || !cfg!(target_arch = "x86_64"));
    use std::os::unix::fs::PermissionsExt;
    let tmp_mode = std::fs::metadata(root.join("tmp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777);
    // Nothing from the excluded stdlib parts, and bytecode is baked.
    let prov = m["provenance"].as_object().unwrap();
    assert!(!prov
        .keys()
        .any(|k| k.contains("/idlelib/") || k.ends_with("/test/__init__.py")));
    assert!(prov
        .keys()
        .any(|k| k.ends_with("/__pycache__/json.cpython-311.pyc")
            || k.contains("/json/__pycache__/__init__.")));
    assert_runs(&root, m, "smoke_stdlib.py", "smoke ok");
}

#[test]
#[cfg_attr(
    not(all(have_root, have_debian_python)),
    ignore = "needs root and /usr/bin/python3.11"
)]
fn debian_python_builds_and_runs() {
    let _exclusive = support::exclusive();
    let built =
        Built::yaml("name: debian\nlanguages:\n  python3:\n    interpreter: /usr/bin/python3.11\n");
    assert_runs(&built.unpack(), &built.m, "smoke_stdlib.py", "smoke ok");
}

#[test]
#[cfg_attr(
    not(all(have_root, have_fixture_venv)),
    ignore = "needs root and the fixture venv"
)]
fn numpy_venv_image_imports_and_computes() {
    let _exclusive = support::exclusive();
    let py = support::fixture_venv_python();
    let built = Built::yaml(&format!(
        "name: numpy\nlanguages:\n  python3:\n    interpreter: {}\n    packages: [numpy, requests, httpx, jinja2]\n",
        py.display()
    ));
    let m = &built.m;
    let dists: Vec<String> = m["languages"]["python3"]["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_lowercase())
        .collect();
    for want in ["numpy", "requests", "httpx", "jinja2", "markupsafe", "idna"] {
        assert!(
            dists.iter().any(|d| d == want),
            "{want} missing from {dists:?}"
        );
    }
    // numpy.libs (the wheel's vendored OpenBLAS, found through $ORIGIN RPATH) is planned.
    let prov = m["provenance"].as_object().unwrap();
    assert!(
        prov.keys().any(|k| k.contains("/numpy.libs/")),
        "numpy.libs missing from the rootfs"
    );
    // The venv lives under /var/tmp (1777 on the host): that mode must not reach the rootfs.
    assert_no_world_writable_but_tmp(&built.bundle(), m);
    assert_runs(&built.unpack(), m, "numpy_smoke.py", "numpy ok");
}

/// Issue 10: in chroot-only mode a world-writable or sticky directory of the rootfs is
/// writable by every run and shared across runs. Only `tmp/` may be one; device nodes are
/// 0666 by nature and symlinks' modes mean nothing.
fn assert_no_world_writable_but_tmp(bundle: &Path, manifest: &serde_json::Value) {
    let file = bundle.join(manifest["rootfs"]["file"].as_str().unwrap());
    let dec = zstd::stream::read::Decoder::new(std::fs::File::open(&file).unwrap()).unwrap();
    let mut ar = tar::Archive::new(dec);
    let mut bad = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let kind = e.header().entry_type();
        if kind.is_character_special() || kind.is_symlink() {
            continue;
        }
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mode = e.header().mode().unwrap();
        if name != "tmp/" && mode & 0o1002 != 0 {
            bad.push(format!("{name} {mode:04o}"));
        }
    }
    assert!(bad.is_empty(), "world-writable or sticky entries: {bad:?}");
}

/// Copy `src` to `dst` creating entries in reverse name order, so directory order differs.
fn copy_reversed(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.reverse();
    for p in names {
        let to = dst.join(p.file_name().unwrap());
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            copy_reversed(&p, &to);
        } else if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&p).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

#[test]
fn builds_are_byte_identical_across_umask_tz_locale_order_and_path() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    // An input tree given as `paths`, rebuilt between the builds in another order.
    let tree = tmp.path().join("input");
    let seed = tmp.path().join("seed");
    for (rel, body) in [
        ("pkg/a.py", "A = 1\n"),
        ("pkg/b.py", "B = 2\n"),
        ("pkg/sub/c.txt", "c\n"),
        ("pkg/z.dat", "zz\n"),
    ] {
        let p = seed.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    std::os::unix::fs::symlink("a.py", seed.join("pkg/link.py")).unwrap();
    copy_reversed(&seed, &tree);
    let spec = write_spec(
        tmp.path(),
        &format!(
            "name: det\nlanguages:\n  python3:\n    interpreter: python3\n    paths: [{}]\n",
            tree.join("pkg").display()
        ),
    );
    let out1 = tmp.path().join("one/out");
    let o = prebake(
        &[
            "build",
            spec.to_str().unwrap(),
            "--out",
            out1.to_str().unwrap(),
        ],
        &[("TZ", "UTC"), ("LC_ALL", "C")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Second build: the input tree recreated (new inodes, new mtimes, reverse order), another
    // umask, TZ, locale and output path.
    std::fs::remove_dir_all(&tree).unwrap();
    // SAFETY: umask only sets the process's creation mask.
    unsafe { libc::umask(0o077) };
    copy_reversed(&seed, &tree);
    let out2 = tmp.path().join("elsewhere/deeper/out");
    let o = prebake(
        &[
            "build",
            spec.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
        ],
        &[
            ("TZ", "Asia/Shanghai"),
            ("LC_ALL", "C.UTF-8"),
            ("LANG", "de_DE.UTF-8"),
        ],
    );
    // SAFETY: umask only sets the process's creation mask.
    unsafe { libc::umask(0o022) };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = out1.join("bundle/rootfs.tar.zst");
    let b = out2.join("bundle/rootfs.tar.zst");
    assert_eq!(
        support::sha256_file(&a),
        support::sha256_file(&b),
        "rootfs.tar.zst differs"
    );
    assert_eq!(
        std::fs::read(out1.join("bundle/bundle.json")).unwrap(),
        std::fs::read(out2.join("bundle/bundle.json")).unwrap(),
        "bundle.json differs"
    );
    for f in ["python3.json", "python3.bpf", "python3-net.bpf"] {
        assert_eq!(
            support::sha256_file(&out1.join("bundle/seccomp").join(f)),
            support::sha256_file(&out2.join("bundle/seccomp").join(f))
        );
    }

    // SOURCE_DATE_EPOCH changes the bytes, predictably the same for the same value.
    let out3 = tmp.path().join("three/out");
    let out4 = tmp.path().join("four/out");
    for out in [&out3, &out4] {
        let o = prebake(
            &[
                "build",
                spec.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let c = support::sha256_file(&out3.join("bundle/rootfs.tar.zst"));
    assert_ne!(support::sha256_file(&a), c);
    assert_eq!(c, support::sha256_file(&out4.join("bundle/rootfs.tar.zst")));
}

/// Runs prebake, expects failure with every `needles` in stderr, and no output left behind.
fn expect_failure(args: &[&str], out: &Path, needles: &[&str]) {
    let o = prebake(args, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure for {args:?}");
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks `{n}`:\n{stderr}");
    }
    assert!(!out.exists(), "{} was written on failure", out.display());
    // No temp dirs left next to it either.
    if let Some(parent) = out.parent() {
        if let Ok(rd) = std::fs::read_dir(parent) {
            for e in rd {
                let n = e.unwrap().file_name();
                assert!(
                    !n.to_string_lossy().starts_with(".prebake-build-"),
                    "temp dir {n:?} left behind"
                );
            }
        }
    }
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let spec = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };

    // Each spec, and what its error must name.
    let cases: [(&str, &str, &[&str]); 5] = [
        ("unparsable.yaml", "languages: [python3\n  oops: {\n", &["unparsable.yaml"]),
        (
            "unknown.yaml",
            "name: x\nlanguages:\n  python3:\n    interpreter: python3\n    pakages: [numpy]\n",
            &["unknown.yaml:5", "pakages"],
        ),
        (
            "nointerp.yaml",
            "name: x\nlanguages:\n  python3:\n    interpreter: /nonexistent/python9\n",
            &["/nonexistent/python9"],
        ),
        (
            "nopath.yaml",
            "name: x\nlanguages:\n  python3:\n    interpreter: python3\n    paths: [/nonexistent/lib]\n",
            &["/nonexistent/lib"],
        ),
        (
            "nopkg.yaml",
            "name: x\nlanguages:\n  python3:\n    interpreter: python3\n    packages: [surely-not-installed-pkg]\n",
            &["surely-not-installed-pkg", "not installed"],
        ),
    ];
    for (name, text, needles) in cases {
        let s = spec(name, text);
        expect_failure(&["build", &s, "--out", o], &out, needles);
    }

    // An interpreter the sandbox's own /tmp would hide at run time.
    let tmp_python =
        std::env::temp_dir().join(format!("prebake-test-python-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp_python);
    let real = String::from_utf8(
        Command::new("python3")
            .args([
                "-I",
                "-c",
                "import os, sys; print(os.path.realpath(sys.executable))",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(real.trim(), &tmp_python).unwrap();
    let s = spec(
        "masked.yaml",
        &format!(
            "name: x\nlanguages:\n  python3:\n    interpreter: {}\n",
            tmp_python.display()
        ),
    );
    expect_failure(&["build", &s, "--out", o], &out, &["mounts over", "/tmp"]);
    std::fs::remove_file(&tmp_python).unwrap();

    // An existing, non-empty --out is refused and left as it was.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let good = support::repo_root().join("images/python3.yaml");
    let r = prebake(&["build", good.to_str().unwrap(), "--out", o], &[]);
    assert_eq!(r.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    assert!(!out.join("bundle").exists());
    // --force replaces a previous prebake output only, never a directory that is something else.
    let r = prebake(
        &["build", good.to_str().unwrap(), "--out", o, "--force"],
        &[],
    );
    assert_eq!(r.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("not a previous") || stderr.contains("is not one"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn dify_config_builds_with_merged_syscalls_and_warnings() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    // dify-sandbox's own keys, as an existing deployment has them; 99 is sysinfo on x86_64,
    // which the baked Python policy does not allow.
    std::fs::write(
        &cfg,
        "app:\n  port: 8194\n  debug: false\n  key: dify-sandbox\nmax_workers: 4\nmax_requests: 50\nworker_timeout: 5\npython_path: /usr/bin/python3.11\npython_lib_path:\n  - /usr/lib/python3.11\n  - /etc/ssl/certs/ca-certificates.crt\n  - /nonexistent/dify/path\nenable_network: true\nallowed_syscalls: [99]\nproxy:\n  socks5: ''\n  http: ''\n  https: ''\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = prebake(
        &[
            "build",
            "--dify-config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/dify/path"),
        "no warning: {stderr}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle/bundle.json")).unwrap()).unwrap();
    assert_eq!(
        m["languages"]["python3"]["interpreter"],
        "/usr/bin/python3.11"
    );
    // allowed_syscalls is merged into the baked policy, not a replacement of it.
    let policy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle/seccomp/python3.json")).unwrap())
            .unwrap();
    let allowed: Vec<&str> = policy["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|r| r["names"].as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap())
        .collect();
    for name in ["sysinfo", "read", "write", "openat", "getcwd"] {
        assert!(allowed.contains(&name), "{name} not allowed: {allowed:?}");
    }
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn missing_library_fails_the_build_unless_allowed() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let ghost_c = tmp.path().join("ghost.c");
    let needs_c = tmp.path().join("needs.c");
    std::fs::write(&ghost_c, "int ghost(void) { return 1; }\n").unwrap();
    std::fs::write(
        &needs_c,
        "int ghost(void);\nint f(void) { return ghost(); }\n",
    )
    .unwrap();
    // libneeds.so has DT_NEEDED libghost.so.7, which exists nowhere once the build starts.
    let ghost = tmp.path().join("libghost.so.7");
    let cc = |args: &[&str]| {
        let st = Command::new("cc").args(args).status().unwrap();
        assert!(st.success(), "cc {args:?}");
    };
    cc(&[
        "-shared",
        "-fPIC",
        "-o",
        ghost.to_str().unwrap(),
        "-Wl,-soname,libghost.so.7",
        ghost_c.to_str().unwrap(),
    ]);
    cc(&[
        "-shared",
        "-fPIC",
        "-o",
        lib.join("libneeds.so").to_str().unwrap(),
        needs_c.to_str().unwrap(),
        "-Wl,--no-as-needed",
        ghost.to_str().unwrap(),
    ]);
    std::fs::remove_file(&ghost).unwrap();
    let spec = write_spec(
        tmp.path(),
        &format!(
            "name: missing\nlanguages:\n  python3:\n    interpreter: python3\n    paths: [{}]\n",
            lib.display()
        ),
    );
    let out = tmp.path().join("out");
    let o = build(&spec, &out, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    for needle in [
        "libghost.so.7",
        "libneeds.so",
        "searched",
        "--allow-missing",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks `{needle}`:\n{stderr}"
        );
    }
    assert!(!out.exists());
    let o = build(&spec, &out, &["--allow-missing"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("libghost.so.7"),
        "{stderr}"
    );
}
