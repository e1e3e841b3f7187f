//! Benchmark (ignored by default; run with
//! `cargo test --release --test it -- --ignored --nocapture runtime_bench`):
//! latency of `print(1)` through POST /v1/sandbox/run against the same interpreter run
//! directly on the host with `-I -c`, and throughput at concurrency 2 and 8.

use crate::support;
use crate::support::runtime::{Server, KEY, PYTHON};
use serde_json::json;
use std::time::Instant;

fn throughput(s: &Server, conc: usize, total: usize) -> f64 {
    let url = s.url("/v1/sandbox/run");
    let start = Instant::now();
    let hs: Vec<_> = (0..conc)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let ag = support::runtime::agent();
                for _ in 0..total / conc {
                    let mut r = ag
                        .post(&url)
                        .header("X-Api-Key", KEY)
                        .send_json(json!({"language": "python3", "code": "print(1)"}))
                        .unwrap();
                    assert!(r
                        .body_mut()
                        .read_to_string()
                        .unwrap()
                        .contains("\"stdout\":\"1\\n\""));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    (total / conc * conc) as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: cargo test --release --test it -- --ignored --nocapture runtime_bench"]
fn bench_print1() {
    let _exclusive = support::exclusive();
    support::bench_needs(cfg!(have_root), "root");
    let n = 200;
    let ns = std::env::var("BENCH_NAMESPACES").unwrap_or_else(|_| "true".into());
    let s = Server::start(
        &format!("max_workers: 8\nmax_requests: 100\nnamespaces: {ns}\n"),
        &[],
    );
    let ag = support::runtime::agent();
    // The same interpreter with the same (empty) site-packages as the bundle's venv: the
    // host's own site-packages (awscli & co, .pth hooks) would make the direct side slower
    // than the sandbox and the overhead meaningless.
    let venv_dir = tempfile::tempdir().unwrap();
    let venv = venv_dir.path().join("venv");
    let st = std::process::Command::new(PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(st.success());
    let direct_python = venv.join("bin/python");
    let mut direct = Vec::new();
    let mut sandbox = Vec::new();
    for _ in 0..10 {
        s.run_py("print(1)");
    }
    for _ in 0..n {
        let t = Instant::now();
        let out = std::process::Command::new(&direct_python)
            .args(["-I", "-B", "-c", "print(1)"])
            .output()
            .unwrap();
        direct.push(t.elapsed());
        assert_eq!(out.stdout, b"1\n");
        let t = Instant::now();
        let mut r = ag
            .post(&s.url("/v1/sandbox/run"))
            .header("X-Api-Key", KEY)
            .send_json(json!({"language": "python3", "code": "print(1)"}))
            .unwrap();
        let body = r.body_mut().read_to_string().unwrap();
        sandbox.push(t.elapsed());
        assert!(body.contains("\"stdout\":\"1\\n\""));
    }
    let (d50, d99) = (
        support::percentile_ms(&mut direct, 0.5),
        support::percentile_ms(&mut direct, 0.99),
    );
    let (s50, s99) = (
        support::percentile_ms(&mut sandbox, 0.5),
        support::percentile_ms(&mut sandbox, 0.99),
    );
    println!("namespaces={ns} n={n}");
    println!("direct  venv python -I -B -c: p50 {d50:.2} ms  p99 {d99:.2} ms");
    println!(
        "sandbox POST /run       : p50 {s50:.2} ms  p99 {s99:.2} ms  (overhead p50 {:.2} ms)",
        s50 - d50
    );
    for c in [2, 8] {
        println!(
            "throughput concurrency {c}: {:.1} runs/s",
            throughput(&s, c, 200)
        );
    }
}

/// What the runs' own network namespace behind pasta costs a run with network (as Dify sends
/// every run): `print(1)` with `enable_network: true` through a server whose runs join the
/// pasta namespace, against one whose runs share the server's namespace (`SANDBOX_PASTA=off`),
/// interleaved, 200 each.
#[test]
#[ignore = "benchmark: cargo test --release --test it -- --ignored --nocapture runtime_bench"]
fn bench_network_namespace() {
    let _exclusive = support::exclusive();
    support::bench_needs(cfg!(have_root), "root");
    let n = 200;
    let cfg = "max_workers: 8\nmax_requests: 100\nenable_network: true\n";
    let behind = Server::start(cfg, &[]);
    let shared = Server::start(cfg, &[("SANDBOX_PASTA", "off")]);
    assert!(behind.log().contains("behind pasta"), "{}", behind.log());
    let ag = support::runtime::agent();
    let body = json!({"language": "python3", "code": "print(1)", "enable_network": true});
    let time = |s: &Server| {
        let t = Instant::now();
        let mut r = ag
            .post(&s.url("/v1/sandbox/run"))
            .header("X-Api-Key", KEY)
            .send_json(&body)
            .unwrap();
        let out = r.body_mut().read_to_string().unwrap();
        assert!(out.contains("\"stdout\":\"1\\n\""), "{out}");
        t.elapsed()
    };
    for _ in 0..10 {
        time(&behind);
        time(&shared);
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        a.push(time(&behind));
        b.push(time(&shared));
    }
    let (a50, a99) = (
        support::percentile_ms(&mut a, 0.5),
        support::percentile_ms(&mut a, 0.99),
    );
    let (b50, b99) = (
        support::percentile_ms(&mut b, 0.5),
        support::percentile_ms(&mut b, 0.99),
    );
    println!("runs with network, n={n}");
    println!("own namespace behind pasta : p50 {a50:.2} ms  p99 {a99:.2} ms");
    println!("server's namespace (shared): p50 {b50:.2} ms  p99 {b99:.2} ms");
    println!(
        "cost of the namespace p50 {:.2} ms ({:.3}x)",
        a50 - b50,
        a50 / b50
    );
}
