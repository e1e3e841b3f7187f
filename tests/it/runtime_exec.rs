//! `runtime exec`: one script under the full isolation sequence, with and without namespaces.

use crate::support;
use crate::support::runtime::bundle;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn exec(code: &str, extra: &[&str]) -> Output {
    let root = tempfile::tempdir().unwrap();
    exec_in(root.path(), code, extra)
}

/// [`exec`] over the sandbox root `root` (already unpacked when it is the fixture's: no
/// unpacking time in what a test measures).
fn exec_in(root: &std::path::Path, code: &str, extra: &[&str]) -> Output {
    let mut child = Command::new(support::bin("runtime"))
        .arg("exec")
        .arg("--bundle")
        .arg(bundle())
        .arg("--root")
        .arg(root)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(code.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn exec_hello_both_modes() {
    let _exclusive = support::exclusive();
    for mode in [&[][..], &["--no-namespaces"][..]] {
        let out = exec(
            "import os, sys\nprint('hi', os.getuid() >= 65537, os.getcwd())\nsys.stderr.write('err\\n')\nsys.exit(3)\n",
            mode,
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with("hi True /tmp"),
            "{mode:?}: {stdout} {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("err\n"), "{mode:?}");
        assert_eq!(out.status.code(), Some(3), "{mode:?}");
        // The three devices the docs promise, in both modes (chroot-only mode sees the
        // rootfs's own /dev).
        let out = exec("import os\nprint(sorted(os.listdir('/dev')))\n", mode);
        assert_eq!(
            text(&out.stdout),
            "['null', 'urandom', 'zero']\n",
            "{mode:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn exec_isolation_facts() {
    let _exclusive = support::exclusive();
    // With namespaces: pid 1, no network interfaces but lo, read-only /, private tmpfs /tmp.
    let code = r#"
import os, socket
print(os.getpid())
try:
    open('/usr/x', 'w'); print('wrote /usr')
except OSError as e: print('ro', e.errno)
try:
    s = socket.socket(); s.settimeout(1)
    s.connect(('1.1.1.1', 80)); print('net up')
except OSError as e: print('no net')
print(sorted(os.listdir('/dev')))
print(socket.gethostname())
"#;
    let out = exec(code, &[]);
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.first(), Some(&"1"), "{s} {}", text(&out.stderr));
    assert!(lines[1].starts_with("ro "), "{s}");
    assert_eq!(lines[2], "no net");
    assert_eq!(lines[3], "['null', 'urandom', 'zero']");
    assert_eq!(lines[4], "sandbox");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn exec_seccomp_kill_is_reported() {
    let _exclusive = support::exclusive();
    // The baked policy kills the process on an x32 system call (getpid | __X32_SYSCALL_BIT).
    let out = exec(
        "import ctypes\nctypes.CDLL(None).syscall(0x40000027)\nprint('survived')\n",
        &[],
    );
    assert!(!text(&out.stdout).contains("survived"));
    assert_eq!(out.status.code(), Some(128 + libc::SIGSYS));
    assert!(
        text(&out.stderr).contains("operation not permitted"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn exec_timeout_kills_tree() {
    let _exclusive = support::exclusive();
    for mode in [
        &["--timeout", "1"][..],
        &["--timeout", "1", "--no-namespaces"][..],
    ] {
        // The fixture's root, unpacked already: the clock measures the run, not an unpack
        // (seconds when other tests load the machine).
        let start = std::time::Instant::now();
        let out = exec_in(
            support::runtime::root(),
            "import threading, time\ndef spin():\n    while True: pass\nthreading.Thread(target=spin, daemon=True).start()\nwhile True: time.sleep(1)\n",
            mode,
        );
        let took = start.elapsed();
        assert!(
            took.as_secs() < 5,
            "{mode:?}: {took:?}\n{}",
            text(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(124),
            "{mode:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("timeout"));
    }
    let left = support::runtime::leftover_pool_processes();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn refuses_without_privileges_unless_opted_out() {
    let _exclusive = support::exclusive();
    use std::os::unix::process::CommandExt;
    // As an unprivileged uid, chroot, uid switch and namespaces are unavailable.
    let locks = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        locks.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let run = |insecure: bool| {
        let mut cmd = Command::new(support::bin("runtime"));
        cmd.arg("exec")
            .arg("--bundle")
            .arg(bundle())
            .arg("--root")
            .arg(locks.path().join("root"))
            .env("PREBAKE_LOCK_DIR", locks.path())
            .env_remove("PREBAKE_INSECURE_NO_SANDBOX")
            .uid(60123)
            .gid(60123)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if insecure {
            cmd.arg("--insecure-no-sandbox");
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"import os\nprint('ran as', os.getuid())\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(false);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to run untrusted code") && err.contains("chroot"),
        "{err}"
    );
    assert!(err.contains("capabilities: root=no"), "{err}");
    // Rootless mode was tried and says what it lacks (this uid has no subordinate ids).
    assert!(
        err.contains("rootless mode is unavailable: /etc/subuid gives user 60123"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = run(true);
    let err = text(&out.stderr);
    assert!(err.contains("INSECURE"), "{err}");
    assert_eq!(text(&out.stdout), "ran as 60123\n", "{err}");
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn probe_prints_one_line() {
    let _exclusive = support::exclusive();
    let out = Command::new(support::bin("runtime"))
        .arg("probe")
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(s.starts_with("root=yes mount_ns=yes"), "{s}");
    assert!(s.contains("chroot=yes") && s.contains("seccomp=yes"), "{s}");
}

#[test]
#[cfg_attr(
    not(all(have_root, have_pyenv_python)),
    ignore = "needs root and pyenv's python 3.11 (the fixture bundle)"
)]
fn a_bundle_for_another_architecture_is_refused_naming_both() {
    let _exclusive = support::exclusive();
    // A copy of the fixture bundle whose manifest says aarch64 (the files stay as they are:
    // the runtime must refuse before it touches them).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bundle");
    support::run(Command::new("cp").arg("-a").arg(bundle()).arg(&copy));
    let manifest_path = copy.join("bundle.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let mut changed = 0;
    for lang in manifest["languages"].as_object_mut().unwrap().values_mut() {
        if let Some(seccomp) = lang["seccomp"].as_object_mut() {
            seccomp.insert("arch".into(), "aarch64".into());
            changed += 1;
        }
    }
    assert!(changed > 0, "the fixture bundle names no arch: {manifest}");
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let root = dir.path().join("root");
    for command in ["unpack", "exec"] {
        let mut cmd = Command::new(support::bin("runtime"));
        cmd.arg(command)
            .arg("--bundle")
            .arg(&copy)
            .arg("--root")
            .arg(&root);
        let o = cmd.stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{command}: {stderr}");
        let host = std::env::consts::ARCH;
        assert!(
            stderr.contains("built for aarch64") && stderr.contains(host),
            "{command}: {stderr}"
        );
        assert!(!root.exists(), "{command} unpacked a foreign bundle");
    }
}
