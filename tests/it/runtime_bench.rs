//! Benchmark (ignored by default; run with
//! `cargo test --release --test it -- --ignored --nocapture runtime_bench`):
//! latency of `print(1)` through POST /v1/sandbox/run against the same interpreter run
//! directly on the host with `-I -c`, and throughput at concurrency 2 and 8 (cold runs);
//! the warm pool against cold runs on Dify's workloads; the network namespace's cost.

use crate::support;
use crate::support::runtime::{Server, KEY, PYTHON};
use serde_json::json;
use std::time::{Duration, Instant};

/// One POST /v1/sandbox/run of `body`, timed from the request to the whole answer read;
/// returns the time and the answer.
fn timed_run(ag: &ureq::Agent, s: &Server, body: &serde_json::Value) -> (Duration, String) {
    let t = Instant::now();
    let mut r = ag
        .post(&s.url("/v1/sandbox/run"))
        .header("X-Api-Key", KEY)
        .send_json(body)
        .unwrap();
    let out = r.body_mut().read_to_string().unwrap();
    (t.elapsed(), out)
}

/// Successful and failed `print(1)` runs per second at concurrency `conc` for `secs` seconds.
/// `print(1)` and the Dify runners of `names` (from `warm_pool::dify_cases`), as benchmarks run
/// them.
fn dify_workloads(names: &[&str]) -> Vec<(&'static str, String)> {
    let mut workloads = vec![("print(1)", "print(1)".to_owned())];
    workloads.extend(
        crate::warm_pool::dify_cases()
            .into_iter()
            .filter(|(name, _)| names.contains(name)),
    );
    workloads
}

/// Each workload run on `a` and `b` in turn (10 warm-up rounds, then `n`), with
/// `enable_network: true` as Dify sends it; each must exit 0. Per workload: its name and
/// [a p50, a p99, b p50, b p99] in ms.
fn interleaved(
    a: &Server,
    b: &Server,
    workloads: &[(&'static str, String)],
    n: usize,
) -> Vec<(&'static str, [f64; 4])> {
    let ag = support::runtime::agent();
    let time = |s: &Server, code: &str| {
        let body =
            json!({"language": "python3", "code": code, "preload": "", "enable_network": true});
        let (took, out) = timed_run(&ag, s, &body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["exit_code"], 0, "{out}");
        took
    };
    let mut figures = Vec::new();
    for (name, code) in workloads {
        for _ in 0..10 {
            time(a, code);
            time(b, code);
        }
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..n {
            ta.push(time(a, code));
            tb.push(time(b, code));
        }
        let (a50, a99) = support::p50_p99_ms(&mut ta);
        let (b50, b99) = support::p50_p99_ms(&mut tb);
        figures.push((*name, [a50, a99, b50, b99]));
    }
    figures
}

fn sustained(s: &Server, conc: usize, secs: u64) -> (f64, u64) {
    let url = s.url("/v1/sandbox/run");
    let stop = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let hs: Vec<_> = (0..conc)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let ag = support::runtime::agent();
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < stop {
                    let r = ag.post(&url).header("X-Api-Key", KEY).send_json(
                        json!({"language": "python3", "code": "print(1)", "enable_network": true}),
                    );
                    let good = r.is_ok_and(|mut r| {
                        r.body_mut()
                            .read_to_string()
                            .is_ok_and(|b| b.contains("\"stdout\":\"1\\n\""))
                    });
                    if good {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for h in hs {
        let (o, f) = h.join().unwrap();
        ok += o;
        failed += f;
    }
    (ok as f64 / start.elapsed().as_secs_f64(), failed)
}

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
    // Cold runs: this measures the API's overhead over starting the interpreter; the warm
    // pool has its own benchmark below.
    let s = Server::start(
        &format!("max_workers: 8\nmax_requests: 100\nnamespaces: {ns}\nwarm_pool: false\n"),
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
        let (took, body) = timed_run(&ag, &s, &json!({"language": "python3", "code": "print(1)"}));
        sandbox.push(took);
        assert!(body.contains("\"stdout\":\"1\\n\""));
    }
    let (d50, d99) = support::p50_p99_ms(&mut direct);
    let (s50, s99) = support::p50_p99_ms(&mut sandbox);
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
        let (took, out) = timed_run(&ag, s, &body);
        assert!(out.contains("\"stdout\":\"1\\n\""), "{out}");
        took
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
    let (a50, a99) = support::p50_p99_ms(&mut a);
    let (b50, b99) = support::p50_p99_ms(&mut b);
    println!("runs with network, n={n}");
    println!("own namespace behind pasta : p50 {a50:.2} ms  p99 {a99:.2} ms");
    println!("server's namespace (shared): p50 {b50:.2} ms  p99 {b99:.2} ms");
    println!(
        "cost of the namespace p50 {:.2} ms ({:.3}x)",
        a50 - b50,
        a50 / b50
    );
}

/// The warm pool against cold runs, same image (the fixture venv with jinja2, requests and
/// httpx), same run, interleaved: `print(1)`, Dify's Python runner and Dify's Jinja2 runner
/// with `enable_network: true` as Dify sends them (200 each), then sustained `print(1)`
/// throughput at concurrency 8 (`BENCH_SECONDS`, default 10; the figure is 60).
/// `BENCH_NAMESPACES=false` for chroot-only mode.
#[test]
#[ignore = "benchmark: cargo test --release --test it -- --ignored --nocapture runtime_bench"]
fn bench_warm_pool() {
    let _exclusive = support::exclusive();
    support::bench_needs(cfg!(have_root), "root");
    support::bench_needs(cfg!(have_fixture_venv), "the fixture venv");
    let n = 200;
    let ns = std::env::var("BENCH_NAMESPACES").unwrap_or_else(|_| "true".into());
    let secs: u64 = std::env::var("BENCH_SECONDS").map_or(10, |v| v.parse().unwrap());
    let cfg = format!("max_workers: 8\nmax_requests: 100\nnamespaces: {ns}\n");
    let fixture = support::runtime::dify_fixture();
    let cold = Server::start_over(fixture, &format!("{cfg}warm_pool: false\n"), &[]);
    let warm = Server::start_over(fixture, &format!("{cfg}warm_pool: true\n"), &[]);
    assert_eq!(warm.zygotes_started(), 1, "{}", warm.log());
    println!("warm pool against cold runs, namespaces={ns}, n={n} each, interleaved");
    let workloads = dify_workloads(&["Dify's Python runner", "Dify's Jinja2 runner"]);
    for (name, [c50, c99, w50, w99]) in interleaved(&cold, &warm, &workloads, n) {
        println!(
            "{name:<22} cold p50 {c50:6.2} ms p99 {c99:6.2} ms | warm p50 {w50:6.2} ms p99 {w99:6.2} ms | cold/warm p50 {:.2}x",
            c50 / w50
        );
    }
    let (cr, cf) = sustained(&cold, 8, secs);
    let (wr, wf) = sustained(&warm, 8, secs);
    println!(
        "print(1) at concurrency 8 for {secs} s: cold {cr:.0} runs/s ({cf} failed) | warm {wr:.0} runs/s ({wf} failed) | warm/cold {:.2}x",
        wr / cr
    );
    assert_eq!((cf, wf), (0, 0), "failed runs");
}

/// A warm run answered on its record of its end (`end_record.rs`) against one answered after
/// its exit, same server, interleaved: `print(1)` against the same script with its standard
/// input (the code memfd) closed first, which leaves the run nowhere to write the record. 300
/// each, `enable_network: true`, 20 ms apart, so that no request meets the previous run's
/// exit still under way (which would count against whichever variant comes second);
/// `BENCH_NAMESPACES=false` for chroot-only mode.
#[test]
#[ignore = "benchmark: cargo test --release --test it -- --ignored --nocapture runtime_bench"]
fn bench_answer_before_exit() {
    let _exclusive = support::exclusive();
    support::bench_needs(cfg!(have_root), "root");
    support::bench_needs(cfg!(have_fixture_venv), "the fixture venv");
    let n = 300;
    let ns = std::env::var("BENCH_NAMESPACES").unwrap_or_else(|_| "true".into());
    let cfg = format!("max_workers: 8\nnamespaces: {ns}\nwarm_pool: true\n");
    let s = Server::start_over(support::runtime::dify_fixture(), &cfg, &[]);
    assert_eq!(s.zygotes_started(), 1, "{}", s.log());
    let ag = support::runtime::agent();
    let time = |code: &str| {
        std::thread::sleep(Duration::from_millis(20));
        let body =
            json!({"language": "python3", "code": code, "preload": "", "enable_network": true});
        let (took, out) = timed_run(&ag, &s, &body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["stdout"], "1\n", "{out}");
        took
    };
    let (on_record, after_exit) = ("print(1)", "import os\nos.close(0)\nprint(1)");
    for _ in 0..20 {
        time(on_record);
        time(after_exit);
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        a.push(time(on_record));
        b.push(time(after_exit));
    }
    let (a50, a99) = support::p50_p99_ms(&mut a);
    let (b50, b99) = support::p50_p99_ms(&mut b);
    println!(
        "warm print(1), namespaces={ns}, n={n} each: answered on its record p50 {a50:.2} ms p99 {a99:.2} ms | after its exit p50 {b50:.2} ms p99 {b99:.2} ms | saved p50 {:.2} ms ({:.2}x)",
        b50 - a50,
        b50 / a50
    );
}

/// Rootless mode against root, same run, interleaved: `print(1)` and Dify's Python runner
/// (200 each, `enable_network: true`) on a server started as root and one started by a user
/// that is not root, both namespaces mode (`BENCH_WARM_POOL=false` for cold runs), then
/// sustained `print(1)` at concurrency 8 for `BENCH_SECONDS` (default 10).
#[test]
#[ignore = "benchmark: cargo test --release --test it -- --ignored --nocapture runtime_bench"]
fn bench_rootless() {
    let _exclusive = support::exclusive();
    support::bench_needs(cfg!(have_root), "root");
    support::bench_needs(cfg!(have_newuidmap), "newuidmap");
    support::bench_needs(cfg!(have_fixture_venv), "the fixture venv");
    let n = 200;
    let warm = std::env::var("BENCH_WARM_POOL").unwrap_or_else(|_| "true".into());
    let secs: u64 = std::env::var("BENCH_SECONDS").map_or(10, |v| v.parse().unwrap());
    let cfg = format!("max_workers: 8\nmax_requests: 100\nwarm_pool: {warm}\n");
    let fixture = support::runtime::dify_fixture();
    let root = Server::start_over(fixture, &cfg, &[]);
    let rootless = Server::start_rootless(fixture, &cfg, &[]);
    println!("rootless against root, warm_pool={warm}, n={n} each, interleaved");
    let workloads = dify_workloads(&["Dify's Python runner"]);
    for (name, [a50, a99, b50, b99]) in interleaved(&root, &rootless, &workloads, n) {
        println!(
            "{name:<22} root p50 {a50:6.2} ms p99 {a99:6.2} ms | rootless p50 {b50:6.2} ms p99 {b99:6.2} ms | rootless/root p50 {:.2}x",
            b50 / a50
        );
    }
    let (ar, af) = sustained(&root, 8, secs);
    let (br, bf) = sustained(&rootless, 8, secs);
    println!(
        "print(1) at concurrency 8 for {secs} s: root {ar:.0} runs/s ({af} failed) | rootless {br:.0} runs/s ({bf} failed) | rootless/root {:.2}x",
        br / ar
    );
    assert_eq!((af, bf), (0, 0), "failed runs");
}
