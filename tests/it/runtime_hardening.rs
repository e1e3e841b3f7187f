//! `runtime serve` under hostile or unlucky conditions (issue 10): slow clients, SIGTERM with
//! a long run, internal errors, two servers on one node.

use crate::support;
use crate::support::runtime::{python_fixture, Fixture, Server, KEY};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether the server closed `c` before `deadline` (EOF or reset; bytes before it, such as
/// an error response, are fine).
fn closed_by(c: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn slow_clients_do_not_starve_health_or_runs() {
    let _exclusive = support::exclusive();
    // The reported setup: a 512-descriptor limit (soft and hard), and more connections than
    // that which never finish their request line.
    let s = Server::spawn_wrapped(
        python_fixture(),
        "limits:\n  header_timeout: 8\n",
        &[],
        &["sh", "-c", "ulimit -n 512 && exec \"$@\"", "sh"],
    );
    s.wait_healthy();
    let mut slow: Vec<TcpStream> = (0..700)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port))
                .unwrap_or_else(|e| panic!("the server stopped accepting: {e}"));
            c.write_all(b"GET /hea").unwrap();
            c
        })
        .collect();
    let opened = Instant::now();

    let quick = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build();
    let quick: ureq::Agent = quick.into();
    let t = Instant::now();
    let health = quick.get(&s.url("/health")).call();
    let took = t.elapsed();
    assert!(
        matches!(&health, Ok(r) if r.status() == 200),
        "/health with 700 slow connections open: {health:?} after {took:?}; log:\n{}",
        s.log()
    );
    let t = Instant::now();
    let mut r = quick
        .post(&s.url("/v1/sandbox/run"))
        .header("X-Api-Key", KEY)
        .send_json(json!({"language": "python3", "code": "print(1)"}))
        .expect("a run with 700 slow connections open");
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["data"]["stdout"], "1\n", "{v}");
    eprintln!("health {took:?}, run {:?}", t.elapsed());

    // The header timeout (8 s) closes every slow connection the server still holds; the
    // others were closed to make room.
    let deadline = opened + Duration::from_secs(8 + 6);
    let open: usize = slow
        .iter_mut()
        .map(|c| usize::from(!closed_by(c, deadline)))
        .sum();
    assert_eq!(
        open, 0,
        "slow connections still open after the header timeout"
    );
    let log = s.log();
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(
        log.contains("does not fit the descriptor limit 512"),
        "{log}"
    );
    assert_eq!(s.stop().code(), Some(0));
}

/// Pids of pool-uid processes descending from `ancestor`.
fn pool_descendants(ancestor: u32) -> Vec<u32> {
    let ppid = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name's closing parenthesis: state, then ppid.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    support::runtime::pool_processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                match ppid(p) {
                    Some(pp) if pp == ancestor => return true,
                    Some(pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn shutdown_is_bounded() {
    let _exclusive = support::exclusive();
    let mut s = Server::start("worker_timeout: 60\nshutdown_timeout: 2\n", &[]);
    let url = s.url("/v1/sandbox/run");
    let client = std::thread::spawn(move || {
        support::runtime::agent()
            .post(&url)
            .header("X-Api-Key", KEY)
            .send_json(json!({"language": "python3", "code": "import time\ntime.sleep(40)\nprint('late')"}))
            .and_then(|mut r| r.body_mut().read_to_string())
    });
    let pid = s.child.id();
    let start = Instant::now();
    let mut run = Vec::new();
    while run.is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        run = pool_descendants(pid);
    }
    assert!(!run.is_empty(), "the run never started; log:\n{}", s.log());

    // SAFETY: signalling our own child.
    unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM with shutdown_timeout 2; log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    eprintln!("exited {took:?} after SIGTERM");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "exit {took:?} after SIGTERM, the bound is 2 s; log:\n{}",
        s.log()
    );
    assert_eq!(
        status.code(),
        Some(1),
        "runs were abandoned: not a clean exit"
    );
    let log = s.log();
    assert!(log.contains("shutdown_timeout of 2s passed"), "{log}");
    // The abandoned run does not outlive the server.
    let start = Instant::now();
    let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
    while run.iter().any(alive) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = run.iter().filter(|p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "run processes outlived the server: {left:?}"
    );
    let answer = client.join().unwrap();
    assert!(
        !answer.as_deref().is_ok_and(|b| b.contains("late")),
        "{answer:?}"
    );
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn internal_errors_do_not_reveal_host_paths() {
    let _exclusive = support::exclusive();
    // A sandbox root of its own, since the test breaks it.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fixture = Fixture {
        bundle: python_fixture().bundle,
        root: Box::leak(dir.path().to_path_buf().into_boxed_path()),
    };
    // Chroot-only isolation: each run's /tmp is a directory under the rootfs's /tmp.
    let s = Server::start_over(fixture, "namespaces: false\n", &[]);
    let log = s.log();
    let rootfs = log
        .lines()
        .find(|l| l.contains("rootfs ready"))
        .and_then(|l| l.split("rootfs=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no rootfs in the log:\n{log}"));
    let tmp = rootfs.join("tmp");
    let moved = rootfs.join("tmp.moved");
    std::fs::rename(&tmp, &moved).unwrap();
    let (st, v) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": "print(1)"}),
    );
    std::fs::rename(&moved, &tmp).unwrap();
    assert_eq!((st, &v["code"]), (200, &json!(-500)), "{v}");
    let msg = v["message"].as_str().unwrap();
    let host = dir.path().to_str().unwrap();
    assert!(
        !msg.contains(host) && !msg.contains("/tmp") && !msg.contains('/'),
        "host path in the answer: {msg}"
    );
    let id = msg
        .split("request id ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no request id in {msg}"));
    // The detail is in the log, under that id.
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("request id {id} not in the log:\n{log}"));
    assert!(line.contains(host) && line.contains("tmp/run-"), "{line}");
    // The server still works once the root is repaired.
    assert_eq!(s.run_py("print(2)")["stdout"], "2\n");
    assert_eq!(s.stop().code(), Some(0));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn servers_sharing_the_lock_dir_never_share_a_uid() {
    let _exclusive = support::exclusive();
    // Two servers as two pods of one node: each has its own /run (PREBAKE_LOCK_DIR, the
    // older setting), and both are given the node's lock directory as uid_lock_dir. That is
    // the default directory, which every other server of these tests locks in: a private one
    // would collide with them (the very bug), and their first lease of a uid kills its
    // processes.
    let shared = Path::new(prebake::runtime::uidpool::DEFAULT_LOCK_DIR);
    let own_a = tempfile::tempdir().unwrap();
    let own_b = tempfile::tempdir().unwrap();
    let cfg = format!(
        "max_workers: 2\nworker_timeout: 30\nuid_lock_dir: {}\n",
        shared.display()
    );
    let a = Server::start(
        &cfg,
        &[("PREBAKE_LOCK_DIR", own_a.path().to_str().unwrap())],
    );
    let b = Server::start(
        &cfg,
        &[("PREBAKE_LOCK_DIR", own_b.path().to_str().unwrap())],
    );
    let handles: Vec<_> = [&a, &a, &b, &b]
        .iter()
        .map(|s| {
            let url = s.url("/v1/sandbox/run");
            std::thread::spawn(move || {
                let text = support::runtime::agent()
                    .post(&url)
                    .header("X-Api-Key", KEY)
                    .send_json(json!({"language": "python3", "code": "import os, time\ntime.sleep(3)\nprint(os.getuid())"}))
                    .and_then(|mut r| r.body_mut().read_to_string())
                    .map_err(|e| e.to_string())?;
                let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                v["data"]["stdout"]
                    .as_str()
                    .and_then(|o| o.trim().parse::<u32>().ok())
                    .ok_or_else(|| v.to_string())
            })
        })
        .collect();
    let mut uids: Vec<u32> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}\nserver a:\n{}\nserver b:\n{}", a.log(), b.log()))
        })
        .collect();
    uids.sort();
    let n = uids.len();
    uids.dedup();
    assert_eq!(uids.len(), n, "concurrent runs of two servers shared a uid");
    let locks = |d: &Path| std::fs::read_dir(d).unwrap().count();
    assert_eq!(
        locks(own_a.path()) + locks(own_b.path()),
        0,
        "locks outside uid_lock_dir"
    );
    assert!(a.log().contains(&format!("lock_dir={}", shared.display())));
    assert_eq!(a.stop().code(), Some(0));
    assert_eq!(b.stop().code(), Some(0));
}
