//! Clients that disconnect mid-run (issue 10): axum drops the handler of a request whose
//! client went away, but the sandboxed run goes on to its deadline. It must keep its worker
//! slot until it ends, so `max_workers` holds however clients behave.

use crate::support;
use crate::support::runtime::{Server, KEY};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Both tests count the machine's pool processes: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn max_workers_holds_when_clients_disconnect() {
    let _exclusive = support::exclusive();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Server::start("max_workers: 2\nmax_requests: 50\nworker_timeout: 5\n", &[]);
    let body = r#"{"language": "python3", "code": "import time\ntime.sleep(1.5)\nprint('done')", "enable_network": false}"#;
    // Eight requests, each client gone 150 ms after sending.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        write!(
            c,
            "POST /v1/sandbox/run HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(150));
    drop(clients);

    // Runs at once = distinct sandbox uids alive at one moment.
    let mut most = 0;
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let uids: BTreeSet<u32> = support::runtime::pool_processes()
            .into_iter()
            .map(|(_, uid)| uid)
            .collect();
        most = most.max(uids.len());
        seen.extend(uids);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(most > 0, "no run was seen at all");
    assert!(most <= 2, "{most} runs at once with max_workers 2");
    // The server is still whole: a new run succeeds, and nothing is left behind.
    let d = s.run_py("print('after')");
    assert_eq!(d["stdout"], "after\n", "{d}");
    assert_eq!(s.stop().code(), Some(0));
    assert!(support::runtime::leftover_pool_processes().is_empty());
}

/// Entries of the sandbox root's /tmp that chroot mode's per-run directories left behind.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_thousand_requests_with_disconnecting_clients() {
    let _exclusive = support::exclusive();
    // 1,000 requests from 8 clients at once against 4 workers, every other client gone
    // 0-30 ms after sending: never more than max_workers runs at once, every run whose client
    // waited succeeds, and nothing is left behind. In both isolation modes.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const WORKERS: usize = 4;
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 125;
    for ns in [true, false] {
        let s = Server::start(
            &format!(
                "max_workers: {WORKERS}\nmax_requests: 200\nworker_timeout: 10\nnamespaces: {ns}\n"
            ),
            &[],
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let monitor = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut most = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let uids: BTreeSet<u32> = support::runtime::pool_processes()
                        .into_iter()
                        .map(|(_, uid)| uid)
                        .collect();
                    most = most.max(uids.len());
                    std::thread::sleep(Duration::from_millis(5));
                }
                most
            })
        };
        let port = s.port;
        let url = s.url("/v1/sandbox/run");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let agent = support::runtime::agent();
                    let mut failures = Vec::new();
                    for i in 0..PER_CLIENT {
                        if (c + i) % 2 == 0 {
                            let mut r = agent
                                .post(&url)
                                .header("X-Api-Key", KEY)
                                .send_json(serde_json::json!({"language": "python3", "code": format!("print({c} * 1000 + {i})"), "enable_network": true}))
                                .unwrap();
                            let v: serde_json::Value =
                                serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                            if v["data"]["stdout"] != format!("{}\n", c * 1000 + i) || v["data"]["error"] != "" {
                                failures.push(v);
                            }
                        } else {
                            let body = r#"{"language": "python3", "code": "import time\ntime.sleep(0.03)\nprint('gone')", "enable_network": true}"#;
                            let mut t = TcpStream::connect(("127.0.0.1", port)).unwrap();
                            write!(
                                t,
                                "POST /v1/sandbox/run HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .unwrap();
                            std::thread::sleep(Duration::from_millis((i % 4 * 10) as u64));
                            drop(t);
                            // Give the abandoned run its time, as a retrying client would.
                            std::thread::sleep(Duration::from_millis(40));
                        }
                    }
                    failures
                })
            })
            .collect();
        let failures: Vec<_> = clients
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        // Let abandoned runs finish.
        let start = Instant::now();
        while !support::runtime::pool_processes().is_empty()
            && start.elapsed() < Duration::from_secs(15)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let most = monitor.join().unwrap();
        assert!(
            failures.is_empty(),
            "ns={ns}: {} failed runs, first {}; the server's errors, warnings and panics:\n{}",
            failures.len(),
            failures[0],
            s.log()
                .lines()
                .filter(|l| l.contains(" ERROR ") || l.contains(" WARN ") || l.contains("panicked"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            most <= WORKERS,
            "ns={ns}: {most} runs at once with max_workers {WORKERS}"
        );
        assert_eq!(s.run_py("print('after')")["stdout"], "after\n", "ns={ns}");
        assert_eq!(s.stop().code(), Some(0), "ns={ns}");
        let left = support::runtime::leftover_pool_processes();
        assert!(left.is_empty(), "ns={ns}: leftover processes {left:?}");
        let dirs = support::runtime::run_dirs_left();
        assert!(dirs.is_empty(), "ns={ns}: run directories left {dirs:?}");
    }
}
