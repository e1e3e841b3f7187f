//! The Node.js tests' fixture: the python3+nodejs bundle built by the real `prebake build`
//! from `images/python3-nodejs.yaml`, served by [`super::runtime::Server`].
#![allow(dead_code)]

use super::runtime::{self, Fixture};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const SPEC: &str = "images/python3-nodejs.yaml";

/// `prebake build SPEC --out OUT` with extra environment and a umask; panics with the
/// build's stderr on failure.
pub fn prebake_build(spec: &Path, out: &Path, env: &[(&str, &str)], umask: u32) {
    let mut cmd = super::prebake_under_umask(
        &format!("{umask:03o}"),
        &[
            "build",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
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
    runtime::fixture("node-fixture", &F, |work| {
        prebake_build(
            &super::repo_root().join(SPEC),
            &work.join("out"),
            &[],
            0o022,
        )
    })
}
