//! What the integration tests share: paths of the built binaries and the repository, running
//! commands, hashing, the exclusion between modules, and the fixtures of [`runtime`] and
//! [`node`].
//!
//! A test that needs root or a tool says so with `#[cfg_attr(not(have_root), ignore = "needs
//! root")]` (the `have_*` cfgs come from the package's build.rs), never at run time.

pub mod node;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The running test's name, `module::test` (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

/// The full name of the test `name` of the running test's module (to run it alone, in a child
/// process of the test binary).
pub fn sibling_test(name: &str) -> String {
    match test_name().rsplit_once("::") {
        Some((module, _)) => format!("{module}::{name}"),
        None => name.to_string(),
    }
}

/// Held for the length of every test: while it is held, no test of another module runs.
/// Each module was once a test binary of its own, and cargo ran those one after another; the
/// tests rely on it (no process of the sandbox uid pool, no run directory and no server but
/// their module's, the process umask that one build test changes, timings). Tests of one
/// module still run in parallel with each other, as before.
pub struct Exclusive(String);

struct Gate {
    /// The module whose tests run now, and how many of them.
    current: Mutex<Option<(String, usize)>>,
    freed: Condvar,
}

static GATE: Gate = Gate {
    current: Mutex::new(None),
    freed: Condvar::new(),
};

/// Wait until no test of another module holds [`Exclusive`], then hold it for this test's
/// module (taken from the test's name, so a test never names itself).
pub fn exclusive() -> Exclusive {
    let name = test_name();
    let module = name.split_once("::").map_or("", |(m, _)| m).to_string();
    let mut current = GATE.current.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match &mut *current {
            None => {
                *current = Some((module.clone(), 1));
                break;
            }
            Some((m, n)) if *m == module => {
                *n += 1;
                break;
            }
            Some(_) => {
                current = GATE.freed.wait(current).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
    Exclusive(module)
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        let mut current = GATE.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((m, n)) = &mut *current {
            debug_assert_eq!(*m, self.0);
            *n -= 1;
            if *n == 0 {
                *current = None;
                GATE.freed.notify_all();
            }
        }
    }
}

/// A benchmark (`#[ignore]`d, run on request) fails unless what it needs is `present` (a
/// `have_*` cfg): it has no second ignore to fall back on.
pub fn bench_needs(present: bool, what: &str) {
    assert!(present, "the benchmark needs {what}");
}

/// The python of the fixture venv (numpy, requests, httpx, jinja2) that `.ci/run` makes;
/// tests that use it carry `cfg_attr(not(have_fixture_venv), ignore)`.
pub fn fixture_venv_python() -> PathBuf {
    let venv = std::env::var("PREBAKE_FIXTURE_VENV")
        .unwrap_or_else(|_| "/var/tmp/prebake-fixture-venv".into());
    Path::new(&venv).join("bin/python")
}

/// Run `cmd` to completion; panics with its output unless it succeeded.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert_success(&out, &format!("{cmd:?}"));
    out
}

/// Panics with `what` and the output unless `out` is a success.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`run`], and its standard output.
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("UTF-8 output")
}

/// `prebake ARGS`, run from the repository root.
pub fn prebake(args: &[&str]) -> Command {
    let mut c = Command::new(bin("prebake"));
    c.args(args).current_dir(repo_root());
    c
}

/// [`prebake`] under `umask` (octal digits). The umask is process-wide, so it is set in a
/// shell that then execs prebake.
pub fn prebake_under_umask(umask: &str, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(bin("prebake"))
        .args(args)
        .current_dir(repo_root());
    c
}

/// `skopeo --insecure-policy ARGS`, whose output is JSON.
pub fn skopeo(args: &[&str]) -> serde_json::Value {
    let out = run(Command::new("skopeo").arg("--insecure-policy").args(args));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn sha256_file(p: &Path) -> String {
    sha256(&std::fs::read(p).unwrap())
}

/// The p50 and p99 of `v`, in milliseconds.
pub fn p50_p99_ms(v: &mut [Duration]) -> (f64, f64) {
    (percentile_ms(v, 0.5), percentile_ms(v, 0.99))
}

/// The `p` quantile (0 to 1) of `v`, in milliseconds.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "p is in 0..=1: the rounded index is in 0..v.len()"
)]
pub fn percentile_ms(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// A TCP port of 127.0.0.1 for a server to listen on, free a moment ago and new to this
/// process. Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by
/// default): a port from `bind(0)` is an ephemeral one, and a test client's outgoing
/// connection could take it between the pick and the server's own bind (a server failed to
/// start so, with EADDRINUSE, in a CI run). Each test process starts at a place of its own.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % PORTS;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % PORTS).expect("below 32,000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Find `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
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

/// Run `benches/<script>` with bash and this test run's `prebake` and `runtime` (`PREBAKE`,
/// `RUNTIME`), plus `env`; its standard output, after asserting that it succeeded.
pub fn run_bench(script: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("benches").join(script))
        .args(args)
        .env("PREBAKE", bin("prebake"))
        .env("RUNTIME", bin("runtime"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An address that stands for "a host outside the pod" in network tests: 10.77.0.1 on a veth
/// interface in the test's network namespace. Runs with network reach it the way they
/// reach any other host: directly when they share the server's namespace, through pasta when
/// they have their own (see src/runtime/netns.rs), where the server's loopback, which tests
/// used before, is rightly out of reach. Created once per test process (as root, with
/// iproute2) and removed at exit.
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

/// The validators' venv that `.ci/run` makes (SPDX and CycloneDX validators,
/// kubernetes-validate); `PREBAKE_SBOM_VENV` names another.
pub fn validators_venv() -> PathBuf {
    PathBuf::from(
        std::env::var("PREBAKE_SBOM_VENV").unwrap_or_else(|_| "/var/tmp/prebake-sbom-venv".into()),
    )
}
