//! Hostile scripts: each gets a clear `error` and the server keeps serving. Every scenario
//! runs with namespaces (the default) and without (`namespaces: false`, chroot-only, what
//! Docker's default profile allows). Tests are serialized so the leftover-process checks see
//! only their own runs.

use crate::support;
use crate::support::runtime::{
    leftover_mounts_and_run_files, leftover_pool_processes, python_fixture, Server,
};
use serde_json::{json, Value};
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const LIMITS: &str = "worker_timeout: 2\nlimits:\n  memory_mb: 256\n  output_bytes: 1048576\n  processes: 32\n  tmp_mb: 16\n";

/// Run `f` against a server in each isolation mode (namespaces as root, chroot-only, and
/// namespaces in rootless mode: started by a user that is not root), with runs forked from the
/// warm pool's zygote (the default) and cold; afterwards no pool process may be left.
fn both_modes(extra: &str, f: impl Fn(&Server, bool)) {
    let test = support::test_name();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (ns, warm, rootless) in [
        (true, true, false),
        (false, true, false),
        (true, false, false),
        (false, false, false),
        (true, true, true),
        (true, false, true),
    ] {
        let config = format!("{LIMITS}namespaces: {ns}\nwarm_pool: {warm}\n{extra}");
        let s = if rootless {
            Server::start_rootless(python_fixture(), &config, &[])
        } else {
            Server::start(&config, &[])
        };
        let mode = format!("ns={ns} warm={warm} rootless={rootless}");
        f(&s, ns);
        // The server still answers.
        assert_eq!(
            s.run_py("print('still here')")["stdout"],
            "still here\n",
            "{mode}"
        );
        let pid = s.child.id();
        assert_eq!(s.stop().code(), Some(0));
        let left = leftover_pool_processes();
        assert!(
            left.is_empty(),
            "{test} {mode}: leftover processes {left:?}"
        );
        let left = leftover_mounts_and_run_files(python_fixture().root, pid);
        assert!(left.is_empty(), "{test} {mode}: left behind {left:?}");
    }
}

fn err(d: &Value) -> &str {
    d["error"].as_str().unwrap()
}

/// A run may write the record a warm run leaves of its end (`end_record.rs`: its standard
/// input is its own code memfd) and close its output, warm or cold. That buys it an early
/// answer to its own request and a kill right after, never more time: it is gone long before
/// its deadline.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_forged_record_of_the_end_only_ends_the_run_sooner() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        // Pool processes that are not this run's (a test of another module that has just
        // ended may still be reaping its own): the check below is about this run's.
        let others = support::runtime::pool_processes();
        let start = Instant::now();
        let d = s.run_py(
            "import os, struct, time\nos.pwrite(0, b'\\0prebake-end' + struct.pack('<I', 42), os.fstat(0).st_size)\nprint('forged', flush=True)\nos.close(1)\nos.close(2)\ntime.sleep(30)\n",
        );
        assert_eq!(
            (&d["stdout"], &d["exit_code"]),
            (&json!("forged\n"), &json!(42)),
            "ns={ns}: {d}"
        );
        // Answered on the record, well before the 2 s deadline, and killed then: nothing of
        // it is left a second later, still before its deadline.
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "ns={ns}: {:?}",
            start.elapsed()
        );
        let ours = || {
            let mut p = support::runtime::pool_processes();
            p.retain(|p| !others.contains(p));
            p
        };
        let gone = Instant::now() + Duration::from_millis(1000);
        while !ours().is_empty() && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = ours();
        assert!(
            left.is_empty(),
            "ns={ns}: still running after its answer: {left:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2), "ns={ns}");
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn infinite_loop_and_tree_are_killed_at_the_deadline() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let start = Instant::now();
        let d = s.run_py(
            "import threading\ndef spin():\n    while True: pass\nfor _ in range(3):\n    threading.Thread(target=spin).start()\nwhile True: pass\n",
        );
        let took = start.elapsed();
        assert!(took < Duration::from_secs(4), "ns={ns}: {took:?}");
        assert_eq!(d["exit_code"], -1, "ns={ns}: {d}");
        assert!(
            err(&d).starts_with("process exited with code -1\nerror: timeout\n"),
            "ns={ns}: {d}"
        );
        // Its spinning threads died with it (fork is refused by the policy, see
        // fork_and_thread_bombs).
        let left = leftover_pool_processes();
        assert!(left.is_empty(), "ns={ns}: {left:?}");
        // Closing stdout and stderr does not escape the deadline.
        let start = Instant::now();
        let d = s.run_py("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n");
        assert!(start.elapsed() < Duration::from_secs(4), "ns={ns}");
        assert!(err(&d).contains("error: timeout\n"), "ns={ns}: {d}");
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn memory_bomb() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let d = s.run_py("x = []\nwhile True:\n    x.append(bytearray(10 * 1024 * 1024))\n");
        assert_ne!(d["exit_code"], 0, "ns={ns}: {d}");
        assert!(d["stderr"].as_str().unwrap().contains("MemoryError"), "{d}");
        assert!(
            err(&d).contains("error: memory limit exceeded (256 MiB per script)\n"),
            "{d}"
        );
        let d = s.run_py("b = bytearray(8 * 1024 ** 3)\n");
        assert!(err(&d).contains("memory limit"), "{d}");
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn fork_and_thread_bombs() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let d = s.run_py(
            "import threading, time\nts = []\nwhile True:\n    t = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n    t.start()\n    ts.append(t)\n",
        );
        assert!(
            err(&d).starts_with("process exited with code 1\n")
                && d["stderr"]
                    .as_str()
                    .unwrap()
                    .contains("can't start new thread"),
            "ns={ns}: {d}"
        );
        let start = Instant::now();
        let d = s.run_py(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(err(&d).contains("error: timeout\n"), "ns={ns}: {d}");
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn output_flood_is_capped() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let start = Instant::now();
        let d = s.run_py("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "killed early, not at the deadline"
        );
        assert_eq!(d["stdout"].as_str().unwrap().len(), 1048576, "ns={ns}");
        assert!(
            err(&d).contains("error: output limit exceeded: stdout is longer than 1048576 bytes"),
            "ns={ns}: {}",
            err(&d)
        );
        let d = s.run_py("import sys\nwhile True:\n    sys.stderr.write('e' * 65536)\n");
        assert!(
            err(&d).contains("stderr is longer than"),
            "{}",
            &err(&d)[..200]
        );
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn filling_tmp_is_capped() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let d = s.run_py(
            "import tempfile, os\nf = open(os.path.join(tempfile.gettempdir(), 'big'), 'wb')\nwhile True:\n    f.write(b'x' * (1 << 20))\n    f.flush()\n",
        );
        assert_eq!(d["exit_code"], 1, "ns={ns}: {d}");
        let stderr = d["stderr"].as_str().unwrap();
        assert!(
            stderr.contains("No space left") || stderr.contains("File too large"),
            "ns={ns}: {stderr}"
        );
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn host_files_are_out_of_reach() {
    let _exclusive = support::exclusive();
    let runtime_bin = support::bin("runtime");
    let code = format!(
        "import os\nfor p in ['/etc/shadow', '/proc/1/environ', '/proc/self/environ', {:?}, '/root/.bashrc', '/run/prebake-runtime/uid-65537.lock']:\n    try:\n        open(p, 'rb').read(1)\n        print('READ', p)\n    except OSError as e:\n        print('denied', p, e.errno)\nfor p in ['/evil', '/usr/evil', '/etc/passwd', '/usr/bin/python3.11', '/dev/null2']:\n    try:\n        open(p, 'ab').write(b'x')\n        print('WROTE', p)\n    except OSError as e:\n        print('denied', p, e.errno)\ntry:\n    os.chmod('/tmp', 0o777)\n    print('CHMOD')\nexcept OSError:\n    print('denied chmod')\n",
        runtime_bin.to_str().unwrap()
    );
    let passwd = support::runtime::root().join("etc/passwd");
    let before = std::fs::read(&passwd).unwrap();
    both_modes("", |s, ns| {
        let d = s.run_py(&code);
        let out = d["stdout"].as_str().unwrap();
        assert!(
            !out.contains("READ") && !out.contains("WROTE") && !out.contains("CHMOD"),
            "ns={ns}: {out}"
        );
        assert_eq!(out.matches("denied").count(), 12, "ns={ns}: {out} {d}");
    });
    assert_eq!(std::fs::read(&passwd).unwrap(), before);
    assert!(!support::runtime::root().join("evil").exists());
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn tmp_is_private_per_run() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let d = s.run_py(
            "import tempfile, os\np = os.path.join(tempfile.gettempdir(), 'secret')\nopen(p, 'w').write('s3cret')\nopen('cwdfile', 'w').write('x')\nprint(p)\nprint(os.path.abspath('cwdfile'))\n",
        );
        assert_eq!(d["exit_code"], 0, "ns={ns}: {d}");
        let paths: Vec<String> = d["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let check = format!(
            "import os, tempfile\nfor p in {paths:?}:\n    print(os.path.exists(p))\nprint(os.listdir(tempfile.gettempdir()))\n"
        );
        let d = s.run_py(&check);
        assert_eq!(d["stdout"], "False\nFalse\n[]\n", "ns={ns}: {d}");
    });
    // Nothing left in the rootfs's /tmp (chroot mode used per-run directories there).
    let tmp = support::runtime::root().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn network_off_and_on() {
    let _exclusive = support::exclusive();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let outside = support::outside_ip();
    // Without network: with namespaces a run has its own empty net namespace; without them
    // (Docker's default capabilities) the policy's network set refuses socket() instead.
    // With network: a host outside is reached. The server's loopback (where the API, and in
    // a pod any sidecar, listens) is out of reach with namespaces, where runs with network
    // have their own namespace behind pasta; chroot-only mode cannot make one, and the
    // README says so. Rootless servers (namespaces mode) run pasta as their user.
    for (ns, rootless) in [(true, false), (false, false), (true, true)] {
        let listener = std::net::TcpListener::bind((outside, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = String::new();
            c.read_to_string(&mut buf).unwrap();
            buf
        });
        let connect = |ip: &str, port: u16| {
            format!(
                "import socket\ns = socket.create_connection(('{ip}', {port}), timeout=2)\ns.sendall(b'hello from the sandbox')\ns.close()\nprint('sent')\n"
            )
        };
        let code = connect(&outside.to_string(), port);
        let config = format!("enable_network: true\nnamespaces: {ns}\n");
        let s = if rootless {
            Server::start_rootless(python_fixture(), &config, &[])
        } else {
            Server::start(&config, &[])
        };
        let ns = format!("{ns} rootless={rootless}");
        let d = s.run_py(&code);
        assert_ne!(d["exit_code"], 0, "ns={ns}: {d}");
        assert!(
            d["stderr"].as_str().unwrap().contains("Error"),
            "ns={ns}: {d}"
        );
        assert_eq!(d["stdout"], "", "ns={ns}: {d}");
        let (_, v) = s.post(
            "/v1/sandbox/run",
            &json!({"language": "python3", "code": code, "enable_network": true}),
        );
        assert_eq!(v["data"]["stdout"], "sent\n", "ns={ns}: {v}");
        assert_eq!(accepted.join().unwrap(), "hello from the sandbox");
        // The API's own port on the server's loopback.
        let (_, v) = s.post(
            "/v1/sandbox/run",
            &json!({"language": "python3", "code": connect("127.0.0.1", s.port), "enable_network": true}),
        );
        if ns.starts_with("true") {
            assert!(
                v["data"]["stderr"]
                    .as_str()
                    .unwrap()
                    .contains("Connection refused"),
                "ns={ns}: {v}"
            );
        } else {
            assert_eq!(v["data"]["stdout"], "sent\n", "ns={ns}: {v}");
        }
        assert_eq!(s.stop().code(), Some(0));
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn runs_cannot_signal_each_other() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let url = s.url("/v1/sandbox/run");
        let victim = std::thread::spawn(move || {
            let mut r = support::runtime::agent()
                .post(&url)
                .header("X-Api-Key", support::runtime::KEY)
                .send_json(json!({"language": "python3", "code": "import time\ntime.sleep(1)\nprint('victim alive')"}))
                .unwrap();
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            v
        });
        std::thread::sleep(Duration::from_millis(300));
        // Signal everything this uid may signal, and every pid near ours.
        let d = s.run_py(
            "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    print('kill -1', e.errno)\nn = 0\nfor pid in range(2, 4096):\n    if pid == os.getpid():\n        continue\n    try:\n        os.kill(pid, signal.SIGKILL)\n        n += 1\n    except OSError:\n        pass\nprint('killed', n)\n",
        );
        assert!(
            d["stdout"].as_str().unwrap().contains("killed 0"),
            "ns={ns}: {d}"
        );
        let v = victim.join().unwrap();
        assert_eq!(v["data"]["stdout"], "victim alive\n", "ns={ns}: {v}");
        assert_eq!(v["data"]["error"], "");
    });
}

/// Entries of the rootfs's /tmp that chroot mode's per-run directories left behind.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn deep_directory_nest_is_removed_after_the_run() {
    let _exclusive = support::exclusive();
    // A canary outside the rootfs, named by absolute symlinks the script plants: the cleanup
    // must remove the links, never follow them.
    let canary = tempfile::tempdir().unwrap();
    std::fs::write(canary.path().join("keep"), "x").unwrap();
    let target = canary.path().to_str().unwrap().to_owned();
    let code = format!(
        "import os\nos.symlink({target:?}, 'link')\nn = 0\ntry:\n    for i in range(20000):\n        os.mkdir('d')\n        os.chdir('d')\n        n += 1\n        if n % 5000 == 0:\n            os.symlink({target:?}, 'link')\n            open('f', 'w').write('x')\nexcept OSError as e:\n    print('stopped', e.errno)\nprint('depth', n)\n"
    );
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A longer deadline than the other scenarios: 20,000 levels must be reached even on a
    // loaded machine.
    for (ns, rootless) in [(true, false), (false, false), (true, true)] {
        let config = format!("worker_timeout: 20\nnamespaces: {ns}\n");
        let s = if rootless {
            Server::start_rootless(python_fixture(), &config, &[])
        } else {
            Server::start(&config, &[])
        };
        for round in 0..2 {
            let d = s.run_py(&code);
            let out = d["stdout"].as_str().unwrap();
            if ns {
                // The private tmpfs has 4096 inodes: the nest stops there.
                assert!(out.contains("depth "), "ns={ns} round={round}: {d}");
            } else {
                // No tmpfs: the supervisor measures the run's directory and kills the run
                // past 64 levels (whatever depth it reached by then is removed below).
                assert!(
                    err(&d).contains(
                        "error: /tmp limit exceeded (64 MiB, 4096 entries, 64 levels per script)\n"
                    ),
                    "ns={ns} round={round}: {d}"
                );
                assert_eq!(d["exit_code"], -1, "ns={ns} round={round}: {d}");
                // Removed before the answer was sent; nothing set aside either.
                let left = support::runtime::run_dirs_left();
                assert!(left.is_empty(), "round={round}: {left:?}");
            }
            assert_eq!(s.health(), Some(200), "ns={ns} round={round}");
            assert!(canary.path().join("keep").exists(), "ns={ns} round={round}");
            // The next run (the pool hands out the same uid again) works.
            let d = s.run_py("import os\nprint(os.listdir('.'))\n");
            assert_eq!(d["stdout"], "[]\n", "ns={ns} round={round}: {d}");
            assert_eq!(d["error"], "", "ns={ns} round={round}: {d}");
        }
        assert_eq!(s.stop().code(), Some(0), "ns={ns} rootless={rootless}");
        let left = leftover_pool_processes();
        assert!(
            left.is_empty(),
            "ns={ns} rootless={rootless}: leftover processes {left:?}"
        );
    }
    let left = support::runtime::run_dirs_left();
    assert!(left.is_empty(), "{left:?}");
    assert!(canary.path().join("keep").exists());
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_signal_to_the_servers_process_group_does_not_reach_runs() {
    let _exclusive = support::exclusive();
    // A ^C in the operator's terminal (or a kill of the server's process group) is the
    // server's business: it shuts down gracefully and lets runs finish. Runs lead their own
    // session in every mode; in a pid namespace they used to stay in the server's group and
    // died of the SIGINT (KeyboardInterrupt). Also: no signal is blocked or ignored in the
    // run but what Python itself sets (SIGPIPE and SIGXFSZ ignored, its SIGINT handler).
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (ns, rootless) in [(true, false), (false, false), (true, true)] {
        // `setsid` makes the server lead its own group (it execs, keeping the pid; so does
        // setpriv, which starts the rootless server as the unprivileged user).
        let setpriv = if rootless {
            support::runtime::rootless_user().setpriv()
        } else {
            Vec::new()
        };
        let wrapper: Vec<&str> = std::iter::once("setsid")
            .chain(setpriv.iter().map(String::as_str))
            .collect();
        let s = Server::spawn_wrapped(
            support::runtime::python_fixture(),
            &format!(
                "{LIMITS}namespaces: {ns}
"
            ),
            &[],
            &wrapper,
        );
        s.wait_healthy();
        if rootless {
            assert!(s.log().contains("rootless=yes"), "{}", s.log());
        }
        let url = s.url("/v1/sandbox/run");
        let run = std::thread::spawn(move || {
            let mut r = support::runtime::agent()
                .post(&url)
                .header("X-Api-Key", support::runtime::KEY)
                .send_json(json!({"language": "python3", "code": "import signal, time\ntime.sleep(1)\nprint(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))\nprint([s.name for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT) and signal.getsignal(s) != signal.SIG_DFL])\nprint('finished')"}))
                .unwrap();
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            v
        });
        std::thread::sleep(Duration::from_millis(400));
        let pgid = libc::pid_t::try_from(s.child.id()).unwrap();
        // SAFETY: signalling the server's own process group (the test is not in it).
        assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
        let v = run.join().unwrap();
        let mode = format!("ns={ns} rootless={rootless}");
        assert_eq!(v["data"]["stdout"], "[]\n[]\nfinished\n", "{mode}: {v}");
        assert_eq!(s.stop().code(), Some(0), "{mode}");
        let left = leftover_pool_processes();
        assert!(left.is_empty(), "{mode}: leftover processes {left:?}");
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn memfd_cannot_hold_memory_beyond_the_limit() {
    let _exclusive = support::exclusive();
    // 40 memfds of 15 MiB (600 MiB; each file stays under RLIMIT_FSIZE) under a 256 MiB
    // limit: memfd pages count against no rlimit. With a memory cgroup (SANDBOX_CGROUPS=on;
    // this machine's tree is writable) the run is killed at the limit and told so; without
    // one (the default) memfd_create is refused. ctypes callbacks still work then (libffi
    // falls back from its memfd trampolines).
    let code = "import os\nfds = []\nfor i in range(40):\n    fd = os.memfd_create('m%d' % i)\n    os.ftruncate(fd, 15 << 20)\n    for off in range(0, 15 << 20, 1 << 20):\n        os.pwrite(fd, b'x' * (1 << 20), off)\n    fds.append(fd)\nprint('held', len(fds) * 15, 'MiB')\n";
    // A rootless server asked for cgroups finds no tree it may write: memfd must then be
    // refused as without them, not allowed on the strength of the setting.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for cgroups in ["on", "off"] {
        for (ns, rootless) in [(true, false), (false, false), (true, true)] {
            let config = format!("{LIMITS}namespaces: {ns}\n");
            let env = [("SANDBOX_CGROUPS", cgroups)];
            let s = if rootless {
                Server::start_rootless(python_fixture(), &config, &env)
            } else {
                Server::start(&config, &env)
            };
            let ns = format!("{ns} rootless={rootless}");
            let d = s.run_py(code);
            assert!(
                !d["stdout"].as_str().unwrap().contains("held"),
                "{cgroups} ns={ns}: {d}"
            );
            if cgroups == "on" && !rootless {
                assert!(
                    err(&d).contains("error: memory limit exceeded (256 MiB per script)\n"),
                    "{cgroups} ns={ns}: {d}"
                );
            } else {
                assert!(
                    d["stderr"].as_str().unwrap().contains("PermissionError"),
                    "{cgroups} ns={ns}: {d}"
                );
            }
            let d = s.run_py("import ctypes\nf = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x * 2)\nprint(f(21))\n");
            assert_eq!(d["stdout"], "42\n", "{cgroups} ns={ns}: {d}");
            // A healthy run on the same uid afterwards.
            assert_eq!(
                s.run_py("print('ok')")["stdout"],
                "ok\n",
                "{cgroups} ns={ns}"
            );
            assert_eq!(s.stop().code(), Some(0));
            let left = leftover_pool_processes();
            assert!(left.is_empty(), "{cgroups} ns={ns}: {left:?}");
        }
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn runs_with_network_cannot_listen_or_reach_unix_sockets() {
    let _exclusive = support::exclusive();
    // A run with network shares the server's network namespace in both modes: it must not
    // serve (bind, listen), nor reach the namespace's abstract unix sockets. The test holds
    // an abstract socket open in that namespace.
    let name = format!("prebake-hostile-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abstract_listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    abstract_listener.set_nonblocking(true).unwrap();
    let code = format!(
        "import socket\nfor what, f in [\n    ('tcp-bind', lambda: socket.socket().bind(('0.0.0.0', 0))),\n    ('udp-bind', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('0.0.0.0', 0))),\n    ('unix', lambda: socket.socket(socket.AF_UNIX).connect('\\0{name}')),\n    ('netlink', lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)),\n]:\n    try:\n        f()\n        print(what, 'ALLOWED')\n    except OSError as e:\n        print(what, 'refused', e.errno)\n"
    );
    both_modes("enable_network: true\n", |s, ns| {
        let (_, v) = s.post(
            "/v1/sandbox/run",
            &json!({"language": "python3", "code": code, "enable_network": true}),
        );
        let out = v["data"]["stdout"].as_str().unwrap_or_default();
        assert_eq!(
            out, "tcp-bind refused 1\nudp-bind refused 1\nunix refused 1\nnetlink refused 1\n",
            "ns={ns}: {v}"
        );
        assert!(
            abstract_listener.accept().is_err(),
            "ns={ns}: a run connected"
        );
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn many_files_in_tmp_are_capped_in_total() {
    let _exclusive = support::exclusive();
    // RLIMIT_FSIZE caps one file; the total is capped too: by the tmpfs with namespaces, by
    // the supervisor's measurement of the run's directory without (chroot-only mode).
    both_modes("", |s, ns| {
        let d = s.run_py(
            "import os, tempfile, time\nd = tempfile.gettempdir()\nfor i in range(8):\n    with open(os.path.join(d, 'f%d' % i), 'wb') as f:\n        f.write(b'x' * (15 << 20))\n    print('wrote', i, flush=True)\ntime.sleep(1)\nprint('kept 120 MiB')\n",
        );
        let out = d["stdout"].as_str().unwrap();
        assert!(!out.contains("kept"), "ns={ns}: {d}");
        if ns {
            assert!(
                d["stderr"].as_str().unwrap().contains("No space left"),
                "ns={ns}: {d}"
            );
        } else {
            assert!(
                err(&d).contains("error: /tmp limit exceeded (16 MiB"),
                "ns={ns}: {d}"
            );
        }
    });
    let left = support::runtime::run_dirs_left();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn runs_cannot_tell_which_processes_exist() {
    let _exclusive = support::exclusive();
    // Without a pid namespace a run shares the container's pids. The calls the policy allows
    // that name a pid (tgkill with signal 0, sched_getaffinity) used to answer differently
    // for a pid that exists (EPERM, or its CPU set) and one that does not (ESRCH): a map of
    // the container's processes, the server included. Now every other pid gets one answer.
    both_modes("", |s, ns| {
        let server = s.child.id();
        let code = format!(
            "import os, ctypes, platform\nme = os.getpid()\ntry:\n    os.sched_getaffinity({server})\n    aff = 'SEEN'\nexcept OSError as e:\n    aff = e.errno\nnr = {{'x86_64': 234, 'aarch64': 131}}[platform.machine()]\nlibc = ctypes.CDLL(None, use_errno=True)\nanswers = set()\nfor pid in range(1, 4096):\n    if pid == me:\n        continue\n    r = libc.syscall(nr, pid, pid, 0)\n    answers.add(ctypes.get_errno() if r != 0 else 0)\nprint(aff, sorted(answers))\nprint(libc.syscall(nr, me, me, 0), len(os.sched_getaffinity(0)) > 0)\nprint(os.getppid())\n"
        );
        let d = s.run_py(&code);
        // In a pid namespace nothing else exists (ESRCH, 3); without one everything else is
        // refused alike (EPERM, 1). The run still signals and queries itself.
        // The parent is nobody (0) in both: the first process of a pid namespace has no
        // parent in it, and without one getppid would name the server.
        let want = if ns {
            "3 [3]\n0 True\n0\n"
        } else {
            "1 [1]\n0 True\n0\n"
        };
        assert_eq!(d["stdout"], want, "ns={ns}: {d}");
    });
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let rest = &s[s.rfind(')').unwrap() + 2..];
        !rest.starts_with('Z')
    })
}

#[test]
#[cfg_attr(not(all(have_root, have_pasta)), ignore = "needs root and pasta")]
fn a_killed_server_leaves_no_network_namespace_behind() {
    let _exclusive = support::exclusive();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for rootless in [false, true] {
        let config = "enable_network: true\nnamespaces: true\n";
        let mut s = if rootless {
            Server::start_rootless(python_fixture(), config, &[])
        } else {
            Server::start(config, &[])
        };
        let d = s.run_lang("python3", "print('up')", true);
        assert_eq!(d["stdout"], "up\n", "rootless={rootless}: {d}");
        let server = s.child.id();
        let helpers: Vec<u32> = support::runtime::children(server)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert!(
            helpers.len() >= 2,
            "rootless={rootless}: pasta and the namespace holder are the server's children: {helpers:?}\n{}",
            s.log()
        );
        // Nothing of this server's namespace is in /run (or mounted) once it serves: a server
        // that dies without cleaning up would leave it there for good.
        let left_behind = || leftover_mounts_and_run_files(python_fixture().root, server);
        assert_eq!(left_behind(), Vec::<String>::new(), "rootless={rootless}");
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        let start = Instant::now();
        while helpers.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<_> = helpers.iter().filter(|&&p| alive(p)).collect();
        assert!(
            left.is_empty(),
            "rootless={rootless}: still running after the server died: {left:?}"
        );
        assert_eq!(left_behind(), Vec::<String>::new(), "rootless={rootless}");
    }
}

/// A run cannot make namespaces (a user namespace would give it every capability inside),
/// mount, chroot, join a namespace or become uid 0: each call fails with EPERM, the policy's
/// answer, in every mode. Rootless servers are root in their own user namespace, so this is
/// what keeps their runs from sharing that.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn namespace_and_privilege_calls_are_refused() {
    let _exclusive = support::exclusive();
    let calls = [
        ("unshare_user", "libc.unshare(0x10000000)"),
        ("unshare_mount", "libc.unshare(0x00020000)"),
        ("unshare_net", "libc.unshare(0x40000000)"),
        ("mount", "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)"),
        ("chroot", "libc.chroot(b'/tmp')"),
        ("setns", "libc.setns(0, 0)"),
        ("setuid_0", "libc.setuid(0)"),
        ("setgid_0", "libc.setgid(0)"),
    ];
    let mut code = String::from(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfor name, call in [\n",
    );
    for (name, call) in calls {
        code.push_str(&format!("    ('{name}', lambda: {call}),\n"));
    }
    code.push_str(
        "]:\n    ctypes.set_errno(0)\n    rc = call()\n    print(name, rc, os.strerror(ctypes.get_errno()))\nprint(os.getuid(), os.getgid())\n",
    );
    both_modes("", |s, ns| {
        let d = s.run_py(&code);
        let mut expect: String = calls
            .iter()
            .map(|(name, _)| format!("{name} -1 Operation not permitted\n"))
            .collect();
        // Still the pool's uid and gid afterwards.
        let out = d["stdout"].as_str().unwrap();
        let ids = out.lines().last().unwrap_or_default();
        assert!(
            !ids.starts_with("0 ") && !ids.ends_with(" 0"),
            "ns={ns}: {d}"
        );
        expect.push_str(ids);
        expect.push('\n');
        assert_eq!(out, expect, "ns={ns}: {d}");
    });
}
