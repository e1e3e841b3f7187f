//! The Node.js tests' fixture: the python3+nodejs bundle built by the real `prebake build`
//! from `images/python3-nodejs.yaml`, served by `runtime_common`'s `Server`.
#![allow(dead_code)]

use super::runtime_common::{self, Fixture};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const SPEC: &str = "images/python3-nodejs.yaml";

/// `prebake build SPEC --out OUT` with extra environment and a umask; panics with the
/// build's stderr on failure.
pub fn prebake_build(spec: &Path, out: &Path, env: &[(&str, &str)], umask: u32) {
    // The umask is set in the child only (it is process-wide); `sh` keeps it through exec.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "umask {umask:03o} && exec \"$0\" build \"$1\" --out \"$2\""
        ))
        .arg(super::common::bin("prebake"))
        .arg(spec)
        .arg(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("spawn prebake");
    assert!(
        o.status.success(),
        "prebake build {} failed:\n{}",
        spec.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The python3+nodejs bundle and its sandbox root.
pub fn fixture() -> Fixture {
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    runtime_common::fixture("node-fixture", &F, |work| {
        prebake_build(
            &super::common::repo_root().join(SPEC),
            &work.join("out"),
            &[],
            0o022,
        )
    })
}
