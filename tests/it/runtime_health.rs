//! `/health` is 503 until the sandbox is ready. In a module of its own (under
//! `support::exclusive`, so no test of another module runs meanwhile) because it uses a private
//! uid lock directory: the uid pool is only exclusive between processes that share one, so no
//! other server may run at the same time.

use crate::support;
use crate::support::runtime::Server;
use serde_json::json;
use std::time::Duration;

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn health_is_503_until_ready() {
    let _exclusive = support::exclusive();
    // Hold every uid of the pool in a private lock dir: the probe run cannot start, so the
    // server must not say it is healthy; release them and it becomes ready.
    let locks = tempfile::tempdir().unwrap();
    let mut held = Vec::new();
    for uid in prebake::contract::SANDBOX_UID_BASE
        ..prebake::contract::SANDBOX_UID_BASE + prebake::contract::SANDBOX_UID_COUNT
    {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::create(locks.path().join(format!("uid-{uid}.lock"))).unwrap();
        // SAFETY: flock on our own descriptor.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        held.push(f);
    }
    let s = Server::spawn("", &[("PREBAKE_LOCK_DIR", locks.path().to_str().unwrap())]);
    let start = std::time::Instant::now();
    while s.health().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.health(), Some(503));
    // Readiness says the same; liveness is 200 all along (a start is not a hang).
    assert_eq!(s.status_of("/readyz"), Some(503));
    assert_eq!(s.status_of("/livez"), Some(200));
    let (st, v) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": "print(1)"}),
    );
    assert_eq!((st, &v["code"]), (503, &json!(-503)), "{v}");
    drop(held);
    s.wait_healthy();
    assert_eq!(s.status_of("/readyz"), Some(200));
    assert_eq!(s.status_of("/livez"), Some(200));
    assert_eq!(s.run_py("print(1)")["stdout"], "1\n");
    // Probes are logged at debug only (they come every few seconds); runs at info.
    let log = s.log();
    for path in ["/health", "/readyz", "/livez"] {
        assert!(
            !log.contains(&format!("path={path} ")),
            "{path} logged at info:\n{log}"
        );
    }
    assert!(log.contains("path=/v1/sandbox/run "), "{log}");
}
