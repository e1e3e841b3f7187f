//! Rootless mode: `runtime` started by a user that is not root enters a user namespace of its
//! own, maps the sandbox uids onto the user's subordinate ids, and confines runs as in
//! namespaces mode. The hostile suite (`runtime_hostile::both_modes`) and Dify's runners
//! (`dify_dropin`) run rootless too; these tests pin what is particular to it.

use crate::support;
use crate::support::runtime::{python_fixture, rootless_user, Server, ROOTLESS_SUB};
use prebake::contract::SANDBOX_UID_COUNT;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The host uid of `pid` (its real uid, as /proc/PID/status gives it).
fn host_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
#[cfg_attr(
    not(all(have_root, have_newuidmap)),
    ignore = "needs root (to make the user) and newuidmap"
)]
fn the_probe_says_rootless_and_which_ids_it_mapped() {
    let _exclusive = support::exclusive();
    let user = rootless_user();
    let out = Command::new(support::bin("runtime"))
        .arg("probe")
        .uid(user.uid)
        .gid(user.gid)
        .current_dir("/")
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(
        s.starts_with("root=yes mount_ns=yes pid_ns=yes ipc_ns=yes uts_ns=yes net_ns=yes"),
        "{s}"
    );
    assert!(s.contains(" rootless=yes\n"), "{s}");
    assert!(
        s.contains(&format!(
            "host uid {} gid {} is 0; sandbox uids 65537.. are host uids {ROOTLESS_SUB}..",
            user.uid, user.gid
        )),
        "{s}"
    );

    // A user with no subordinate ids: not rootless, and the probe says what to add.
    let out = Command::new(support::bin("runtime"))
        .arg("probe")
        .uid(60124)
        .gid(60124)
        .current_dir("/")
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(
        s.starts_with("root=no") && s.contains(" rootless=no\n"),
        "{s}"
    );
    assert!(
        s.contains("rootless: unavailable: /etc/subuid gives user 60124 (uid 60124) no range of at least 64 ids")
            && s.contains("usermod --add-subuids"),
        "{s}"
    );
}

/// The server runs as its user's host uid, never root; each run as a host uid of the user's
/// subordinate range, which neither the server nor any other user has.
#[test]
#[cfg_attr(
    not(all(have_root, have_newuidmap)),
    ignore = "needs root (to make the user) and newuidmap"
)]
fn runs_get_host_uids_from_the_subordinate_range_and_the_server_stays_unprivileged() {
    let _exclusive = support::exclusive();
    let user = rootless_user();
    for warm in [true, false] {
        let s = Server::start_rootless(
            python_fixture(),
            &format!("warm_pool: {warm}\nworker_timeout: 10\n"),
            &[],
        );
        assert_eq!(host_uid(s.child.id()), Some(user.uid), "warm={warm}");
        // A run that waits long enough to be seen from the host.
        let port = s.port;
        let waiting = std::thread::spawn(move || {
            support::runtime::agent()
                .post(format!("http://127.0.0.1:{port}/v1/sandbox/run"))
                .header("X-Api-Key", support::runtime::KEY)
                .send_json(serde_json::json!({
                    "language": "python3",
                    "code": "import os, time\nprint(os.getuid(), os.getgid())\ntime.sleep(2)\n",
                }))
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap()
        });
        let range = ROOTLESS_SUB..ROOTLESS_SUB + SANDBOX_UID_COUNT;
        let start = Instant::now();
        let seen = loop {
            let pids = support::runtime::pool_processes();
            if let Some(&(_, uid)) = pids.first() {
                break uid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "warm={warm}: no run seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(range.contains(&seen), "warm={warm}: host uid {seen}");
        let answer: serde_json::Value = serde_json::from_str(&waiting.join().unwrap()).unwrap();
        // Inside, the run sees the pool's first uid and gid, as a run of a root server does.
        assert_eq!(
            answer["data"]["stdout"], "65537 65537\n",
            "warm={warm}: {answer}"
        );
        assert_eq!(s.stop().code(), Some(0));
    }
}

/// The lock directory of a rootless server is its own: one planted by another user, or a
/// symlink, is refused by name, and nothing runs.
#[test]
#[cfg_attr(
    not(all(have_root, have_newuidmap)),
    ignore = "needs root (to make the user) and newuidmap"
)]
fn a_planted_lock_directory_is_refused() {
    let _exclusive = support::exclusive();
    let user = rootless_user();
    let runtime_dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(runtime_dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let planted = runtime_dir.path().join("prebake-runtime");
    for plant in ["symlink", "root's directory"] {
        let _ = std::fs::remove_file(&planted);
        let _ = std::fs::remove_dir(&planted);
        if plant == "symlink" {
            std::os::unix::fs::symlink("/tmp", &planted).unwrap();
        } else {
            std::fs::create_dir(&planted).unwrap();
        }
        let out = Command::new(support::bin("runtime"))
            .arg("exec")
            .arg("--bundle")
            .arg(python_fixture().bundle)
            .arg("--root")
            .arg(python_fixture().root)
            .env("XDG_RUNTIME_DIR", runtime_dir.path())
            .env_remove("PREBAKE_LOCK_DIR")
            .uid(user.uid)
            .gid(user.gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{plant}: {err}");
        assert!(
            err.contains(&format!(
                "{} is not a directory of this user that only it can write",
                planted.display()
            )),
            "{plant}: {err}"
        );
        assert!(out.stdout.is_empty(), "{plant}");
    }
}
