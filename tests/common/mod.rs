//! Shared helpers for the integration tests.
//!
//! Tests that need root or an external tool call [`skip_unless`]. Without the tool they say so
//! loudly on stderr and return early; with `PREBAKE_NO_SKIP=1` (set by `.ci/run`) the missing
//! prerequisite is a failure instead, so nothing is silently skipped in CI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Returns true when the test may run. `what` names the missing prerequisite.
pub fn skip_unless(ok: bool, test: &str, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("PREBAKE_NO_SKIP").is_some_and(|v| v == "1") {
        panic!("{test}: {what} is required (PREBAKE_NO_SKIP=1 forbids skipping)");
    }
    eprintln!("\n*** SKIPPED {test}: {what} is not available ***\n");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skip unless running as root.
pub fn require_root(test: &str) -> bool {
    skip_unless(is_root(), test, "root (uid 0)")
}

/// Find `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Skip unless `tool` is on PATH.
pub fn require_tool(test: &str, tool: &str) -> bool {
    skip_unless(
        which(tool).is_some(),
        test,
        &format!("the `{tool}` command"),
    )
}

/// Path of a binary built by cargo for this test run.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "prebake" => PathBuf::from(env!("CARGO_BIN_EXE_prebake")),
        "runtime" => PathBuf::from(env!("CARGO_BIN_EXE_runtime")),
        other => panic!("unknown binary {other}"),
    }
}

/// The repository root (for images/ and templates/).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
