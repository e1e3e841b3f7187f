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

/// An address that stands for "a host outside the pod" in network tests: 10.77.0.1 on a veth
/// interface in the test's network namespace. Runs with network reach it the way they
/// reach any other host: directly when they share the server's namespace, through pasta when
/// they have their own (see src/runtime/netns.rs), where the server's loopback, which tests
/// used before, is rightly out of reach. Created once per test process (as root, with
/// iproute2) and removed at exit.
#[allow(dead_code)]
pub fn outside_ip() -> std::net::Ipv4Addr {
    use std::sync::OnceLock;
    static MADE: OnceLock<()> = OnceLock::new();
    const DEV: &str = "pbtest-out0";
    const PEER: &str = "pbtest-out1";
    MADE.get_or_init(|| {
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        // A leftover of a killed test process: start from scratch.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", DEV])
            .stderr(std::process::Stdio::null())
            .status();
        // A veth pair (some kernels lack the dummy driver); the address on one end is as
        // local to the namespace as a dummy interface's would be.
        assert!(
            ip(&["link", "add", DEV, "type", "veth", "peer", "name", PEER])
                && ip(&["addr", "add", "10.77.0.1/32", "dev", DEV])
                && ip(&["link", "set", DEV, "up"])
                && ip(&["link", "set", PEER, "up"]),
            "cannot create the veth pair {DEV}/{PEER} (root and iproute2 needed)"
        );
        extern "C" fn remove() {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", DEV])
                .status();
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(remove) };
    });
    std::net::Ipv4Addr::new(10, 77, 0, 1)
}
