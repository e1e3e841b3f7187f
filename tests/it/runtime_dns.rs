//! Name resolution in runs with network (issue 9): a run sees the container's own
//! `/etc/resolv.conf` and `/etc/hosts` as they are at run time, in both isolation modes, and a
//! run without network still resolves and reaches nothing. They run over the default image
//! (images/dify.yaml), so requests, httpx and Node's fetch are tested as Dify's nodes use them.
//!
//! The "container" is a private mount namespace in which the test binds its own resolver files
//! over `/etc/resolv.conf` and `/etc/hosts` before `runtime serve` starts: the resolver file
//! points at a DNS server the test runs on 127.0.0.77, and the hosts file names a test host.

use crate::support;
use crate::support::runtime::{Fixture, Server};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The DNS server's address is fixed: one world at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const DNS_IP: &str = "127.0.0.77";
/// The test host's web server: outside the pod (see `support::outside_ip`), where runs with
/// network reach it in both modes.
const WEB_IP: &str = "10.77.0.1";
const DNS_NAME: &str = "svc.prebake.test";
const HOSTS_NAME: &str = "hosts-only.prebake.test";

/// A DNS server on a loopback address (as Docker's 127.0.0.11 is), an HTTP server outside, and
/// the resolver files that name them.
struct World {
    _serial: MutexGuard<'static, ()>,
    dns: Child,
    port: u16,
    files: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

fn world() -> World {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Before the DNS server starts: a failure here must not leave it running.
    assert_eq!(support::outside_ip().to_string(), WEB_IP);
    let script = support::repo_root().join("tests/scripts/dns_server.py");
    let mut dns = Command::new(support::runtime::PYTHON)
        .arg(script)
        .args([DNS_IP, DNS_NAME, WEB_IP])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the DNS server");
    let mut line = String::new();
    BufReader::new(dns.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "DNS server did not start");

    let web = TcpListener::bind((WEB_IP, 0)).unwrap();
    let port = web.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in web.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "hello from the test host";
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });

    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("resolv.conf"),
        format!("nameserver {DNS_IP}\noptions timeout:2 attempts:1\n"),
    )
    .unwrap();
    std::fs::write(
        files.path().join("hosts"),
        format!("127.0.0.1 localhost\n{WEB_IP} {HOSTS_NAME}\n"),
    )
    .unwrap();
    World {
        _serial: serial,
        dns,
        port,
        files,
    }
}

/// `runtime serve` in a mount namespace whose /etc/resolv.conf and /etc/hosts are the world's.
fn serve_in(world: &World, fixture: Fixture, namespaces: bool, warm: bool) -> Server {
    let hosts = world.files.path().join("hosts");
    let resolv = world.files.path().join("resolv.conf");
    let s = Server::spawn_wrapped(
        fixture,
        &format!("namespaces: {namespaces}\n"),
        &[("SANDBOX_WARM_POOL", if warm { "true" } else { "false" })],
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf && shift 2 && exec \"$@\"",
            "sh",
            hosts.to_str().unwrap(),
            resolv.to_str().unwrap(),
        ],
    );
    s.wait_healthy();
    s.wait_warm_pool();
    s
}

/// The default image (images/dify.yaml: python3 with requests and httpx, and node), as Dify
/// uses it.
fn dify_fixture() -> Fixture {
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    support::runtime::fixture("dify-fixture", &F, |work| {
        support::node::prebake_build(
            &support::repo_root().join("images/dify.yaml"),
            &work.join("out"),
            &[],
            0o022,
        )
    })
}

/// Run `check(server, web_port, namespaces)` in both isolation modes, each over a server in the
/// test's world, with the warm pool off and on (the tests need root, `unshare` and `node`).
///
/// Namespaces mode mounts the resolver files in each run's own mount namespace: the rootfs's
/// files stay as they were.
fn in_both_modes(check: impl Fn(&Server, u16, bool)) {
    let w = world();
    let rootfs_etc = |name: &str| {
        let p = dify_fixture().root.join("etc").join(name);
        let m = std::fs::symlink_metadata(&p).unwrap();
        (std::fs::read(&p).unwrap(), m.modified().unwrap(), m.len())
    };
    for ns in [true, false] {
        for warm in [false, true] {
            let before = (rootfs_etc("resolv.conf"), rootfs_etc("hosts"));
            let s = serve_in(&w, dify_fixture(), ns, warm);
            check(&s, w.port, ns);
            if ns {
                let after = (rootfs_etc("resolv.conf"), rootfs_etc("hosts"));
                assert!(
                    before == after,
                    "namespaces mode wrote the rootfs's resolver files"
                );
                // The mounts were the runs' own: none is left in the server's namespace.
                let mounts =
                    std::fs::read_to_string(format!("/proc/{}/mountinfo", s.child.id())).unwrap();
                let root = dify_fixture().root.to_str().unwrap();
                assert!(!mounts.lines().any(|l| l.contains(root)), "{mounts}");
            }
            assert_eq!(s.stop().code(), Some(0), "namespaces={ns} warm={warm}");
        }
    }
}

fn out(d: &Value) -> &str {
    d["stdout"].as_str().unwrap_or_default()
}

#[test]
#[cfg_attr(
    not(all(have_root, have_unshare, have_node)),
    ignore = "needs root, unshare and node"
)]
fn python_resolves_by_name_with_network_only() {
    let _exclusive = support::exclusive();
    in_both_modes(|s, port, ns| {
        // The server reads the same config defaults Dify relies on: network is on.
        let code = format!(
            "import socket, urllib.request\n\
             print(socket.getaddrinfo('{DNS_NAME}', {port}, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])\n\
             print(socket.gethostbyname('{HOSTS_NAME}'))\n\
             print(urllib.request.urlopen('http://{DNS_NAME}:{port}/', timeout=5).read().decode())\n\
             print(urllib.request.urlopen('http://{HOSTS_NAME}:{port}/', timeout=5).read().decode())\n\
             import requests, httpx\n\
             print(requests.get('http://{DNS_NAME}:{port}/', timeout=5).text)\n\
             print(httpx.get('http://{HOSTS_NAME}:{port}/', timeout=5).text)\n\
             print(open('/etc/resolv.conf').read().split()[1])\n\
             import os\n\
             print(os.path.exists('/etc/debian_version'))\n\
             try:\n    open('/etc/hosts', 'a')\nexcept OSError as e:\n    print('hosts not writable')\n"
        );
        let d = s.run_lang("python3", &code, true);
        // With namespaces the run's resolver is pasta's forwarder (the container's
        // 127.0.0.77 is on the server's loopback, out of the run's reach); without, the
        // container's own.
        let nameserver = if ns { "169.254.53.53" } else { DNS_IP };
        assert_eq!(
            out(&d),
            format!(
                "{WEB_IP}\n{WEB_IP}\n{}{nameserver}\nFalse\nhosts not writable\n",
                "hello from the test host\n".repeat(4)
            ),
            "namespaces={ns}: {d}\n{}",
            s.log()
        );
        assert_eq!(d["error"], "", "namespaces={ns}: {d}");

        // Without network, neither the name nor the address is reachable.
        let code = format!(
            "import socket\n\
             try:\n    socket.getaddrinfo('{DNS_NAME}', 80)\n    print('resolved')\nexcept OSError as e:\n    print('no dns')\n\
             try:\n    socket.create_connection(('{WEB_IP}', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('no connect')\n"
        );
        let d = s.run_lang("python3", &code, false);
        assert_eq!(out(&d), "no dns\nno connect\n", "namespaces={ns}: {d}");
    });
}

#[test]
#[cfg_attr(
    not(all(have_root, have_unshare, have_node)),
    ignore = "needs root, unshare and node"
)]
fn node_resolves_by_name_with_network() {
    let _exclusive = support::exclusive();
    in_both_modes(|s, port, ns| {
        let code = format!(
            "const dns = require('dns');\n\
             dns.lookup('{DNS_NAME}', {{family: 4}}, async (err, addr) => {{\n\
               console.log(err ? 'lookup ' + err.code : addr);\n\
               const hosts = await dns.promises.lookup('{HOSTS_NAME}', {{family: 4}});\n\
               console.log(hosts.address);\n\
               const r = await fetch('http://{DNS_NAME}:{port}/');\n\
               console.log(await r.text());\n\
             }});\n"
        );
        let d = s.run_lang("nodejs", &code, true);
        assert_eq!(
            out(&d),
            format!("{WEB_IP}\n{WEB_IP}\nhello from the test host\n"),
            "namespaces={ns}: {d}\n{}",
            s.log()
        );
    });
}

/// A rootfs built without the resolver stubs (`etc_stubs: false`) has nothing to mount the
/// container's files over: runs with network still run (the files are copied instead, as in
/// chroot-only mode), in namespaces mode too.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn runs_with_network_work_without_the_resolver_stubs() {
    let _exclusive = support::exclusive();
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let fixture = support::runtime::venv_fixture(
        "runtime-nostubs-fixture",
        &F,
        "name: runtime-nostubs-test\nlanguages:\n  python3:\n    interpreter: {python}\nextras: { etc_stubs: false }\n",
    );
    let s = Server::start_over(fixture, "", &[]);
    for network in [true, false] {
        let d = s.run_lang("python3", "print(6 * 7)", network);
        assert_eq!(out(&d), "42\n", "network={network}: {d}\n{}", s.log());
    }
    assert!(!s.log().contains("resolver files' mounts"), "{}", s.log());
}
