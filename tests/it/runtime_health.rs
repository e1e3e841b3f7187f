//! `/health` is 503 until the sandbox is ready. In a module of its own (under
//! `support::exclusive`, so no test of another module runs meanwhile) because it uses a private
//! uid lock directory: the uid pool is only exclusive between processes that share one, so no
//! other server may run at the same time.

use crate::support;
use crate::support::runtime::Server;
use serde_json::json;
use std::time::{Duration, Instant};

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
    // The image's health check command says the same.
    let health_check = || {
        std::process::Command::new(support::bin("runtime"))
            .args(["health", "--port", &s.port.to_string()])
            .output()
            .unwrap()
    };
    let o = health_check();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("503"));
    let (st, v) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": "print(1)"}),
    );
    assert_eq!((st, &v["code"]), (503, &json!(-503)), "{v}");
    // /metrics answers while starting, and counts the refusal.
    let text = s.metrics();
    assert!(has_line(&text, "prebake_ready 0"), "{text}");
    assert!(
        has_line(
            &text,
            "prebake_requests_refused_total{reason=\"not_ready\"} 1"
        ),
        "{text}"
    );
    drop(held);
    s.wait_healthy();
    assert_eq!(s.status_of("/readyz"), Some(200));
    assert_eq!(s.status_of("/livez"), Some(200));
    assert_eq!(health_check().status.code(), Some(0));
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

/// `log_format: json`: every line of the log is a JSON object, and each run has one line with
/// its request id, language, outcome, exit code and output sizes, never its code or output.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn json_logs_parse_line_by_line_and_carry_no_code_or_output() {
    let _exclusive = support::exclusive();
    let s = Server::start("log_format: json\n", &[]);
    let code = "marker = 'CODE-MARK' + 'ER-1'\nprint('OUT' + 'PUT-MARKER-2')\n";
    assert_eq!(s.run_py(code)["stdout"], "OUTPUT-MARKER-2\n");
    let (st, v) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": "import sys\nsys.exit(3)\n"}),
    );
    assert_eq!((st, &v["code"]), (200, &json!(0)), "{v}");
    let log = s.log();
    s.stop();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let runs: Vec<_> = lines.iter().filter(|l| l["message"] == "run").collect();
    assert_eq!(runs.len(), 2, "{log}");
    for (run, exit, out) in [(runs[0], 0, 16), (runs[1], 3, 0)] {
        assert_eq!(run["language"], "python3", "{run}");
        assert_eq!(run["exit_code"], exit, "{run}");
        assert_eq!(run["stdout_bytes"], out, "{run}");
        assert_eq!(run["path"], "/v1/sandbox/run", "{run}");
        assert!(
            run["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{run}"
        );
        assert!(
            run["outcome"].as_str().is_some_and(|o| !o.is_empty()),
            "{run}"
        );
    }
    assert_ne!(runs[0]["request_id"], runs[1]["request_id"]);
    assert!(
        !log.contains("CODE-MARKER-1") && !log.contains("OUTPUT-MARKER-2"),
        "{log}"
    );
}

/// Whether `text` has exactly this line.
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// `GET /metrics` after a mix of runs: each outcome is counted under its own label, the
/// histogram counts every run, a 503 for too many requests is counted, and no code or output
/// appears.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn metrics_count_each_outcome() {
    let _exclusive = support::exclusive();
    let s = Server::start("max_workers: 1\nmax_requests: 1\nworker_timeout: 1\n", &[]);
    let py = |code: &str| {
        s.post(
            "/v1/sandbox/run",
            &json!({"language": "python3", "code": code}),
        )
    };
    assert_eq!(
        py("print('METRIC-' + 'OUT')").1["data"]["stdout"],
        "METRIC-OUT\n"
    );
    assert_eq!(py("import sys\nsys.exit(3)\n").1["data"]["exit_code"], 3);
    let (st3, v3) = py("while True: pass\n");
    assert_eq!(v3["data"]["exit_code"], -1, "{st3} {v3}");
    // An x32 system call: the policy kills the process (SIGSYS).
    let (_, d) = py("import ctypes\nctypes.CDLL(None).syscall(0x40000027)\n");
    assert!(
        d["data"]["error"]
            .as_str()
            .unwrap()
            .contains("operation not permitted"),
        "{d}"
    );
    // max_requests 1: a second request while one runs is refused with 503.
    std::thread::scope(|scope| {
        let long = scope.spawn(|| py("import time\ntime.sleep(0.6)\n"));
        std::thread::sleep(Duration::from_millis(250));
        let (st, v) = py("print(1)");
        assert_eq!((st, &v["code"]), (503, &json!(-503)), "{v}");
        assert_eq!(long.join().unwrap().1["code"], 0);
    });
    // A warm run is answered before its process is reaped (see `end_record.rs`): its worker
    // slot and uid come back a moment after the answer.
    let settled = Instant::now() + Duration::from_secs(5);
    let mut text = s.metrics();
    while !(has_line(&text, "prebake_runs_running 0") && has_line(&text, "prebake_uids_in_use 0"))
        && Instant::now() < settled
    {
        std::thread::sleep(Duration::from_millis(10));
        text = s.metrics();
    }
    for line in [
        "prebake_runs_total{language=\"python3\",outcome=\"ok\"} 2",
        "prebake_runs_total{language=\"python3\",outcome=\"error\"} 1",
        "prebake_runs_total{language=\"python3\",outcome=\"timeout\"} 1",
        "prebake_runs_total{language=\"python3\",outcome=\"seccomp_denial\"} 1",
        "prebake_run_duration_seconds_count{language=\"python3\"} 5",
        "prebake_run_duration_seconds_bucket{language=\"python3\",le=\"+Inf\"} 5",
        "prebake_requests_refused_total{reason=\"too_many_requests\"} 1",
        "prebake_ready 1",
        "prebake_workers 1",
        "prebake_runs_running 0",
        "prebake_runs_queued 0",
        "prebake_uids_in_use 0",
    ] {
        assert!(has_line(&text, line), "{line} not in:\n{text}");
    }
    // Every sample line is `name{labels} value` with a numeric value.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let value = l.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{l}");
        assert!(l.starts_with("prebake_"), "{l}");
    }
    assert!(
        !text.contains("METRIC-OUT") && !text.contains("sys.exit"),
        "{text}"
    );
    assert!(
        text.contains("prebake_start_phase_seconds{phase=\"rootfs\"}"),
        "{text}"
    );
}
