//! Clients that disconnect mid-run (issue 10): axum drops the handler of a request whose
//! client went away, but the sandboxed run goes on to its deadline. It must keep its worker
//! slot until it ends, so `max_workers` holds however clients behave.

mod common;
mod runtime_common;

use runtime_common::{Server, KEY};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn max_workers_holds_when_clients_disconnect() {
    if !common::require_root("max_workers_holds_when_clients_disconnect") {
        return;
    }
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
        let uids: BTreeSet<u32> = runtime_common::pool_processes()
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
    assert!(runtime_common::leftover_pool_processes().is_empty());
}
