//! `runtime serve` under hostile or unlucky conditions (issue 10): slow clients, SIGTERM with
//! a long run, internal errors, two servers on one node.

mod common;
mod runtime_common;

use runtime_common::{python_fixture, Fixture, Server};
use serde_json::json;
use std::path::PathBuf;

fn root(test: &str) -> bool {
    common::require_root(test)
}

#[test]
fn internal_errors_do_not_reveal_host_paths() {
    if !root("internal_errors_do_not_reveal_host_paths") {
        return;
    }
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
