//! Seccomp policies, run for real: each compiled program is installed in a forked child that
//! then execs the host's Python (or a tiny C program), and the test checks what the kernel did.

use crate::support;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use prebake::contract::Arch;
use prebake::seccomp::install::Programs;
use prebake::seccomp::{self, SeccompError};
use prebake::spec::{DefaultAction, Language, SeccompSpec, SyscallRef};

const PY: &str = "/usr/bin/python3.11";

fn spec(default_action: DefaultAction, allow: &[&str]) -> SeccompSpec {
    SeccompSpec {
        default_action,
        allow: allow
            .iter()
            .map(|s| SyscallRef::Name(s.to_string()))
            .collect(),
    }
}

/// `cmd` with `bpf` installed between fork and exec, as the runtime does.
fn confine(cmd: &mut Command, bpf: &[u8]) {
    let programs = Programs::from_bytes(bpf).expect("compiled BPF parses");
    // SAFETY: only prctl and seccomp syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            programs
                .install()
                .map_err(std::io::Error::from_raw_os_error)
        });
    }
}

fn run_py(bpf: &[u8], code: &str) -> Output {
    let mut cmd = Command::new(PY);
    cmd.args(["-I", "-c", code]).stdin(Stdio::null());
    confine(&mut cmd, bpf);
    cmd.output().expect("spawn python under seccomp")
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "{}", show(o));
}

fn py_artifacts() -> seccomp::Artifacts {
    seccomp::compile(Language::Python3, &SeccompSpec::default()).unwrap()
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn allowed_call_works_denied_call_is_eperm() {
    let _exclusive = support::exclusive();
    let a = py_artifacts();
    let o = run_py(&a.bpf, "import os; print(os.getcwd(), os.getpid() > 0)");
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("True"));
    // getpriority(2) is outside the policy: EPERM, so Python raises PermissionError.
    let o = run_py(
        &a.bpf,
        "import os\ntry:\n  os.getpriority(os.PRIO_PROCESS, 0)\nexcept PermissionError as e:\n  print('EPERM', e.errno)",
    );
    assert_ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "EPERM 1");
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn threads_start_through_clone_fallback() {
    let _exclusive = support::exclusive();
    let a = py_artifacts();
    let o = run_py(
        &a.bpf,
        "import threading\nout=[]\nts=[threading.Thread(target=lambda i=i: out.append(sum(range(i*1000)))) for i in range(8)]\n\
         [t.start() for t in ts]; [t.join() for t in ts]\nprint(len(out))\n\
         import concurrent.futures as cf\nwith cf.ThreadPoolExecutor(4) as ex: print(sum(ex.map(abs, range(-5, 5))))",
    );
    assert_ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["8", "25"]
    );
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn fork_and_subprocess_are_permission_errors() {
    let _exclusive = support::exclusive();
    let a = py_artifacts();
    let o = run_py(
        &a.bpf,
        "import os, subprocess\ntry:\n  os.fork()\nexcept PermissionError: print('fork EPERM')\n\
         try:\n  subprocess.run(['/bin/true'])\nexcept PermissionError: print('spawn EPERM')",
    );
    assert_ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["fork EPERM", "spawn EPERM"]
    );
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn network_only_in_the_network_variant() {
    let _exclusive = support::exclusive();
    let a = py_artifacts();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ntry:\n  s = socket.create_connection(('127.0.0.1', {port}), timeout=5); s.sendall(b'hi'); print('connected')\n\
         except PermissionError: print('EPERM')\n\
         try:\n  socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\nexcept PermissionError: print('netlink EPERM')"
    );
    let o = run_py(&a.bpf, &code);
    assert_ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["EPERM", "netlink EPERM"]
    );
    let accept = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    let o = run_py(&a.bpf_net, &code);
    assert_ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["connected", "netlink EPERM"]
    );
    assert_eq!(&accept.join().unwrap(), b"hi");
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn asyncio_works_without_network() {
    let _exclusive = support::exclusive();
    let o = run_py(
        &py_artifacts().bpf,
        "import asyncio\nasync def f(): await asyncio.sleep(0.01); return 7\nprint(asyncio.run(f()))",
    );
    assert_ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "7");
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn kill_process_variant_dies_by_sigsys() {
    let _exclusive = support::exclusive();
    let a = seccomp::compile(Language::Python3, &spec(DefaultAction::KillProcess, &[])).unwrap();
    let o = run_py(
        &a.bpf,
        "import os; print('alive', flush=True); os.getpriority(os.PRIO_PROCESS, 0)",
    );
    assert_eq!(o.status.signal(), Some(libc::SIGSYS), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "alive");
    // Explicit refusals keep their errno even when the default kills.
    let o = run_py(
        &a.bpf,
        "import os\ntry: os.fork()\nexcept PermissionError: print('fork EPERM')",
    );
    assert_ok(&o);
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn log_variant_allows() {
    let _exclusive = support::exclusive();
    let a = seccomp::compile(Language::Python3, &spec(DefaultAction::Log, &[])).unwrap();
    let o = run_py(
        &a.bpf,
        "import os; print(os.getpriority(os.PRIO_PROCESS, 0))",
    );
    assert_ok(&o);
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn spec_allow_is_merged() {
    let _exclusive = support::exclusive();
    let mut s = spec(DefaultAction::Errno, &["getpriority"]);
    // dify's allowed_syscalls are numbers: 102 is getuid on x86_64, already allowed (merge).
    s.allow.push(SyscallRef::Number(
        Arch::host().unwrap().number("getuid").unwrap(),
    ));
    let a = seccomp::compile(Language::Python3, &s).unwrap();
    let o = run_py(
        &a.bpf,
        "import os; print(os.getpriority(os.PRIO_PROCESS, 0), os.getuid() >= 0)",
    );
    assert_ok(&o);
}

fn cc(name: &str, src: &str) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let exe = dir.join(name);
    let st = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(&c)
        .status()
        .unwrap();
    assert!(st.success(), "cc {name}");
    exe
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn i386_and_x32_calls_are_refused() {
    let _exclusive = support::exclusive();
    // getpid through the i386 ABI (int 0x80, nr 20) and the x32 ABI (0x40000000 | 39):
    // both must be refused before the kernel runs them; the process dies by SIGSYS.
    let exe = cc(
        "abi",
        r#"#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    long r;
    printf("start\n"); fflush(stdout);
    if (strcmp(argv[1], "i386") == 0)
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    else
        __asm__ volatile("syscall" : "=a"(r) : "a"(0x40000000L | 39) : "rcx", "r11", "memory");
    printf("executed %ld\n", r);
    return 0;
}
"#,
    );
    let a = py_artifacts();
    for abi in ["i386", "x32"] {
        // Unconfined, the call runs (or, for x32 on kernels without it, fails with ENOSYS).
        let o = Command::new(&exe).arg(abi).output().unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("executed"),
            "{abi}: {}",
            show(&o)
        );
        let mut cmd = Command::new(&exe);
        cmd.arg(abi);
        confine(&mut cmd, &a.bpf);
        let o = cmd.output().unwrap();
        assert_eq!(o.status.signal(), Some(libc::SIGSYS), "{abi}: {}", show(&o));
        assert!(!String::from_utf8_lossy(&o.stdout).contains("executed"));
    }
}

const STDLIB_SCRIPTS: &[(&str, &str)] = &[
    ("json", "import json; assert json.loads(json.dumps({'a': [1, 2.5, None]}))['a'][1] == 2.5"),
    ("base64", "import base64; assert base64.b64decode(base64.b64encode(b'\\x00x')) == b'\\x00x'"),
    ("zoneinfo", "import zoneinfo, datetime; print(datetime.datetime(2024,7,1,tzinfo=zoneinfo.ZoneInfo('Europe/Paris')).utcoffset())"),
    ("logging", "import logging; logging.basicConfig(level=logging.INFO); logging.getLogger('x').info('hello')"),
    ("hashlib", "import hashlib; print(hashlib.sha256(b'x').hexdigest(), hashlib.md5(b'x').hexdigest())"),
    ("sqlite3", "import sqlite3; c = sqlite3.connect(':memory:'); c.execute('create table t(x)'); c.execute('insert into t values (1)'); print(c.execute('select sum(x) from t').fetchone())"),
    ("sqlite3_file", "import sqlite3, tempfile, os\nd = tempfile.mkdtemp()\nc = sqlite3.connect(os.path.join(d, 'db')); c.execute('create table t(x)'); c.commit(); c.close()\nimport shutil; shutil.rmtree(d)"),
    ("ssl", "import ssl; ctx = ssl.create_default_context(); print(ssl.OPENSSL_VERSION)"),
    ("decimal", "import decimal; print(decimal.Decimal('1.1') * 3)"),
    ("ctypes", "import ctypes, ctypes.util\nlibc = ctypes.CDLL(None); print(libc.getpid() > 0)\ncb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1); print(cb(1))"),
    ("tempfile_shutil", "import tempfile, shutil, os, pathlib\nd = pathlib.Path(tempfile.mkdtemp()); (d/'a').write_text('x'); shutil.copy2(d/'a', d/'b'); print(sorted(os.listdir(d))); shutil.rmtree(d)"),
    ("misc", "import random, uuid, datetime, re, statistics, csv, io, struct, time\nprint(uuid.uuid4(), datetime.datetime.now(), time.monotonic() > 0, statistics.mean([1,2,3]))\nimport platform; platform.platform(); import resource; resource.getrlimit(resource.RLIMIT_NOFILE)"),
    ("signals", "import signal, faulthandler; faulthandler.enable(); signal.setitimer(signal.ITIMER_REAL, 10); signal.setitimer(signal.ITIMER_REAL, 0); print(len(signal.sigpending()))"),
];

#[test]
#[cfg_attr(
    not(any(have_debian_python, have_pyenv_python)),
    ignore = "needs /usr/bin/python3.11 or pyenv's python 3.11.7"
)]
fn stdlib_scripts_exit_zero() {
    let _exclusive = support::exclusive();
    let mut interpreters = vec![];
    if Path::new(PY).exists() {
        interpreters.push(PY.to_string());
    }
    let pyenv = "/root/.pyenv/versions/3.11.7/bin/python3.11";
    if Path::new(pyenv).exists() {
        interpreters.push(pyenv.to_string());
    }
    assert!(!interpreters.is_empty(), "python3.11");
    // Under kill_process too: a syscall the policy forgot would kill the script instead of
    // hiding behind an EPERM that Python happens to tolerate.
    for action in [DefaultAction::Errno, DefaultAction::KillProcess] {
        let a = seccomp::compile(Language::Python3, &spec(action, &[])).unwrap();
        for py in &interpreters {
            for (name, code) in STDLIB_SCRIPTS {
                let mut cmd = Command::new(py);
                cmd.args(["-I", "-c", code]).stdin(Stdio::null());
                confine(&mut cmd, &a.bpf);
                let o = cmd.output().unwrap();
                assert!(o.status.success(), "{py} {name} ({action:?}): {}", show(&o));
            }
        }
    }
}

/// The builder's smoke script and numpy with several OpenBLAS threads, under the baked Python
/// policy (errno and kill_process defaults: a forgotten syscall kills instead of hiding).
#[test]
#[cfg_attr(not(have_fixture_venv), ignore = "needs the fixture venv")]
fn smoke_script_and_numpy_threads_under_the_policy() {
    let _exclusive = support::exclusive();
    let py = support::fixture_venv_python();
    let scripts = support::repo_root().join("tests/scripts");
    for action in [DefaultAction::Errno, DefaultAction::KillProcess] {
        let a = seccomp::compile(Language::Python3, &spec(action, &[])).unwrap();
        for (script, expect) in [
            ("smoke_stdlib.py", "smoke ok"),
            ("numpy_smoke.py", "numpy ok"),
        ] {
            let mut cmd = Command::new(&py);
            cmd.arg("-I")
                .arg(scripts.join(script))
                .env("SMOKE_UNDER_SECCOMP", "1")
                .env("OPENBLAS_NUM_THREADS", "4")
                .stdin(Stdio::null());
            confine(&mut cmd, &a.bpf);
            let o = cmd.output().unwrap();
            assert!(o.status.success(), "{script} ({action:?}): {}", show(&o));
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.contains(expect), "{script}: {out}");
            if script == "numpy_smoke.py" {
                let threads: u32 = out.split_whitespace().last().unwrap().parse().unwrap();
                assert!(threads > 1, "OpenBLAS ran single-threaded: {out}");
            }
        }
    }
}

/// requests and httpx reach a local HTTP server under the network variant, and fail cleanly
/// (an exception, not a dead process) under the variant without network.
#[test]
#[cfg_attr(not(have_fixture_venv), ignore = "needs the fixture venv")]
fn requests_and_httpx_reach_a_local_server_only_with_network() {
    let _exclusive = support::exclusive();
    use std::io::{Read, Write};
    let py = support::fixture_venv_python();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    // Exactly two requests are expected (one per client), all with network.
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
        }
    });
    let code = format!(
        "import requests, httpx\ntry:\n    a = requests.get({url:?}, timeout=5).text\nexcept requests.ConnectionError as e:\n    a = 'refused'\ntry:\n    b = httpx.get({url:?}, timeout=5).text\nexcept httpx.ConnectError as e:\n    b = 'refused'\nprint(a, b)\n"
    );
    let a = py_artifacts();
    for (bpf, expect) in [(&a.bpf, "refused refused"), (&a.bpf_net, "ok ok")] {
        let mut cmd = Command::new(&py);
        cmd.args(["-I", "-c", &code]).stdin(Stdio::null());
        confine(&mut cmd, bpf);
        let o = cmd.output().unwrap();
        assert_ok(&o);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            expect,
            "{}",
            show(&o)
        );
    }
    server.join().unwrap();
}

#[test]
#[cfg_attr(not(have_node), ignore = "needs node")]
fn node_runs_under_its_policy() {
    let _exclusive = support::exclusive();
    let code = "const crypto=require('crypto'), fs=require('fs'), os=require('os'), zlib=require('zlib');\n\
        fs.writeFileSync(os.tmpdir()+'/prebake-node-'+process.pid, 'x'); fs.unlinkSync(os.tmpdir()+'/prebake-node-'+process.pid);\n\
        crypto.pbkdf2('a','b',1000,32,'sha256',(e,k)=>{ if (e) throw e; console.log('pbkdf2', k.length); });\n\
        fs.promises.readFile('/etc/hostname').then(()=>console.log('read'));\n\
        setTimeout(()=>console.log(JSON.stringify({z: zlib.gunzipSync(zlib.gzipSync('hi')).toString()})), 10);\n\
        try { require('child_process').execFileSync('/bin/true'); console.log('spawned') } catch (e) { console.log('spawn', e.code) }";
    for action in [DefaultAction::Errno, DefaultAction::KillProcess] {
        let a = seccomp::compile(Language::Nodejs, &spec(action, &[])).unwrap();
        let mut cmd = Command::new("node");
        cmd.args(["-e", code]).stdin(Stdio::null());
        confine(&mut cmd, &a.bpf);
        let o = cmd.output().unwrap();
        assert_ok(&o);
        let out = String::from_utf8_lossy(&o.stdout);
        for want in ["pbkdf2 32", "read", "{\"z\":\"hi\"}", "spawn EPERM"] {
            assert!(
                out.contains(want),
                "{action:?}: missing {want}: {}",
                show(&o)
            );
        }
    }
}

#[test]
fn oci_json_round_trips_and_names_are_known() {
    let _exclusive = support::exclusive();
    for lang in [Language::Python3, Language::Nodejs] {
        for arch in Arch::ALL {
            for action in [
                DefaultAction::Errno,
                DefaultAction::KillProcess,
                DefaultAction::Log,
            ] {
                let a = seccomp::compile_for(arch, lang, &spec(action, &["getpriority"])).unwrap();
                for json in [&a.oci_json, &a.oci_json_net] {
                    let ours: serde_json::Value = serde_json::from_slice(json).unwrap();
                    let parsed: oci_spec::runtime::LinuxSeccomp =
                        serde_json::from_slice(json).expect("oci-spec reads our JSON");
                    assert_eq!(
                        serde_json::to_value(&parsed).unwrap(),
                        ours,
                        "{lang:?} {arch:?}"
                    );
                    let names: Vec<&str> = ours["syscalls"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|s| {
                            s["names"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|n| n.as_str().unwrap())
                        })
                        .collect();
                    assert!(names.contains(&"getpriority"));
                    for n in &names {
                        assert!(arch.number(n).is_some(), "{n} unknown on {arch:?}");
                    }
                    assert_eq!(ours["architectures"][0], arch.oci_name());
                }
                // Deterministic bytes.
                let again =
                    seccomp::compile_for(arch, lang, &spec(action, &["getpriority"])).unwrap();
                assert_eq!(a.oci_json, again.oci_json);
                assert_eq!(a.bpf, again.bpf);
            }
        }
    }
    let a = seccomp::compile_for(Arch::X86_64, Language::Python3, &SeccompSpec::default()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&a.oci_json).unwrap();
    let find = |name: &str| -> Vec<serde_json::Value> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["names"].as_array().unwrap().iter().any(|n| n == name))
            .cloned()
            .collect()
    };
    assert_eq!(find("clone3")[0]["errnoRet"], 38);
    assert_eq!(
        find("socket")[0]["errnoRet"],
        1,
        "no network: socket is EPERM"
    );
    assert!(find("ptrace").is_empty());
    assert!(find("open").iter().all(|s| s["action"] == "SCMP_ACT_ALLOW"));
    let aarch =
        seccomp::compile_for(Arch::Aarch64, Language::Python3, &SeccompSpec::default()).unwrap();
    assert!(!String::from_utf8_lossy(&aarch.oci_json).contains("\"open\""));
}

#[test]
fn bad_input_is_a_clear_error() {
    let _exclusive = support::exclusive();
    let e = seccomp::compile(
        Language::Python3,
        &spec(DefaultAction::Errno, &["getloadavg"]),
    )
    .unwrap_err();
    assert!(matches!(e, SeccompError::UnknownSyscall { .. }), "{e}");
    assert!(e.to_string().contains("`getloadavg`"), "{e}");
    let s = SeccompSpec {
        default_action: DefaultAction::Errno,
        allow: vec![SyscallRef::Number(100_000)],
    };
    let e = seccomp::compile(Language::Python3, &s).unwrap_err();
    assert!(
        matches!(e, SeccompError::NumberOutOfRange { nr: 100_000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("100000"), "{e}");
    let e =
        seccomp::compile(Language::Python3, &spec(DefaultAction::Errno, &["ptrace"])).unwrap_err();
    assert!(matches!(e, SeccompError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("`ptrace`"), "{e}");
    let e = seccomp::compile(
        Language::Nodejs,
        &spec(DefaultAction::Errno, &["io_uring_setup"]),
    )
    .unwrap_err();
    assert!(matches!(e, SeccompError::Refused { .. }), "{e}");
    let e = seccomp::parse_default_action("allow").unwrap_err();
    assert!(e.to_string().contains("`allow`"), "{e}");
    assert_eq!(
        seccomp::parse_default_action("kill_process").unwrap(),
        DefaultAction::KillProcess
    );
    let e =
        seccomp::show_table(Language::Python3, &spec(DefaultAction::Errno, &["nope"])).unwrap_err();
    assert!(e.to_string().contains("`nope`"));
}

#[test]
fn table_lists_numbers_per_arch_and_why() {
    let _exclusive = support::exclusive();
    let t = seccomp::show_table(
        Language::Python3,
        &spec(DefaultAction::Errno, &["getpriority"]),
    )
    .unwrap();
    let line = |name: &str| {
        t.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing in\n{t}"))
            .to_string()
    };
    let clone3 = line("clone3");
    assert!(
        clone3.contains("435") && clone3.contains("errno ENOSYS"),
        "{clone3}"
    );
    let open = line("open");
    assert!(open.contains(" 2 ") && open.contains(" - "), "{open}");
    assert!(line("getpriority").contains("seccomp.allow"));
    assert!(line("socket").contains("network"));
    assert!(line("ptrace").contains("never"));
    assert!(line("clone").contains("CLONE_THREAD"));
}

fn dig_py(code: &str) -> seccomp::DigReport {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.py");
    std::fs::File::create(&script)
        .unwrap()
        .write_all(code.as_bytes())
        .unwrap();
    seccomp::dig(
        Path::new("/"),
        Path::new(PY),
        &["-I".to_string()],
        &[("LC_ALL".into(), "C.UTF-8".into())],
        &script,
        Language::Python3,
        &SeccompSpec::default(),
    )
    .unwrap()
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn dig_names_exactly_the_denied_syscalls() {
    let _exclusive = support::exclusive();
    let r = dig_py(
        "import os, socket, threading\n\
         t = threading.Thread(target=lambda: os.getpriority(os.PRIO_PROCESS, 0)); t.start(); t.join()\n\
         os.getsid(0); os.getsid(0)\n\
         socket.socket().close()\nprint('done')",
    );
    assert_eq!(r.exit_code, Some(0), "{r}\n{}", r.stderr);
    let mut names = r.names();
    names.sort();
    assert_eq!(names, ["getpriority", "getsid", "socket"], "{r}");
    let sid = r.denied.iter().find(|d| d.name == "getsid").unwrap();
    assert_eq!(sid.count, 2);
    assert!(
        r.denied
            .iter()
            .find(|d| d.name == "socket")
            .unwrap()
            .network
    );
    let snippet = r.yaml().unwrap();
    assert_eq!(
        snippet,
        "languages:\n  python3:\n    seccomp:\n      allow: [getsid, getpriority]\n"
    );
    // The snippet is a valid part of an image spec, at the right place.
    let spec = prebake::spec::ImageSpec::from_yaml(
        &format!(
            "name: dug\n{}",
            snippet.replace("    seccomp:", "    interpreter: python3\n    seccomp:")
        ),
        std::path::Path::new("dug.yaml"),
    )
    .unwrap();
    assert_eq!(
        spec.languages[&prebake::spec::Language::Python3]
            .seccomp
            .allow,
        vec![
            prebake::spec::SyscallRef::Name("getsid".into()),
            prebake::spec::SyscallRef::Name("getpriority".into())
        ]
    );
    assert_eq!(r.stdout.trim(), "done");
    let text = r.to_string();
    assert!(text.contains("allow: [getsid, getpriority]"), "{text}");
    eprintln!("{text}");
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn dig_reports_nothing_for_a_script_inside_the_policy() {
    let _exclusive = support::exclusive();
    let r = dig_py(
        "import json, threading, hashlib, os, asyncio\n\
         ts = [threading.Thread(target=hashlib.sha256, args=(b'x',)) for _ in range(4)]\n\
         [t.start() for t in ts]; [t.join() for t in ts]\n\
         try: os.fork()\nexcept PermissionError: pass\n\
         asyncio.run(asyncio.sleep(0))\nprint(json.dumps(os.getcwd()))",
    );
    assert_eq!(r.exit_code, Some(0), "{r}\n{}", r.stderr);
    assert!(r.denied.is_empty(), "{r}");
    assert!(r.yaml().is_none());
    assert!(r.to_string().contains("nothing to add"));
}

#[test]
#[cfg_attr(
    not(all(have_debian_python, have_root, have_cc)),
    ignore = "needs /usr/bin/python3.11, root and cc"
)]
fn dig_in_a_chroot() {
    let _exclusive = support::exclusive();
    // A minimal rootfs: a static-free C program and its libraries would need the ELF closure;
    // the host's root bind is not available either, so use a copy of what `cc`'s output needs.
    let exe = cc(
        "digchroot",
        "#include <unistd.h>\n#include <stdio.h>\n#include <sys/syscall.h>\nint main(){ syscall(SYS_getpriority, 0, 0); syscall(SYS_getpriority, 0, 0); puts(\"ok\"); return 0; }\n",
    );
    let root = tempfile::tempdir().unwrap();
    let ldd = Command::new("ldd").arg(&exe).output().unwrap();
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    files.push(exe.clone());
    for f in files {
        let dest = root.path().join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
    // dig feeds the script on stdin and appends "-": the program ignores both.
    let script = root.path().join("unused.txt");
    std::fs::write(&script, "").unwrap();
    let r = seccomp::dig(
        root.path(),
        &exe,
        &[],
        &[],
        &script,
        Language::Python3,
        &SeccompSpec::default(),
    )
    .unwrap();
    assert_eq!(r.exit_code, Some(0), "{r}\n{}", r.stderr);
    assert_eq!(r.names(), ["getpriority"]);
    assert_eq!(r.denied[0].count, 2);
    assert_eq!(r.stdout.trim(), "ok");
}

/// Figures for the README: instruction counts, and `python3 -I -c pass` with and without the
/// filter, interleaved in one run so machine load affects both alike.
#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn figures_instructions_and_startup_overhead() {
    let _exclusive = support::exclusive();
    for lang in [Language::Python3, Language::Nodejs] {
        let a = seccomp::compile(lang, &SeccompSpec::default()).unwrap();
        let progs = |b: &[u8]| {
            Programs::from_bytes(b)
                .unwrap()
                .programs()
                .iter()
                .map(|p| p.len().to_string())
                .collect::<Vec<_>>()
                .join("+")
        };
        eprintln!(
            "FIGURE {} {}: bpf {} instructions ({}), bpf-net {} instructions ({})",
            lang.as_str(),
            a.arch,
            a.instructions.0,
            progs(&a.bpf),
            a.instructions.1,
            progs(&a.bpf_net)
        );
        assert!(a.instructions.0 > 100 && a.instructions.1 > 100);
    }
    let a = py_artifacts();
    let run = |confined: bool| {
        let mut cmd = Command::new(PY);
        cmd.args(["-I", "-c", "pass"]).stdin(Stdio::null());
        if confined {
            confine(&mut cmd, &a.bpf);
        } else {
            // Same fork+exec path as the confined run (a pre_exec closure turns off std's
            // posix_spawn), so the difference is the filter alone.
            // SAFETY: only prctl between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let t = Instant::now();
        let st = cmd.status().unwrap();
        assert!(st.success());
        t.elapsed()
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        run(true);
        run(false);
    }
    for _ in 0..40 {
        with.push(run(true));
        without.push(run(false));
    }
    with.sort();
    without.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let (w, wo) = (median(&with), median(&without));
    eprintln!(
        "FIGURE python3 -I -c pass: median {:.2} ms with the filter, {:.2} ms without, ratio {:.3} (min {:.2} / {:.2} ms)",
        w.as_secs_f64() * 1e3,
        wo.as_secs_f64() * 1e3,
        w.as_secs_f64() / wo.as_secs_f64(),
        with[0].as_secs_f64() * 1e3,
        without[0].as_secs_f64() * 1e3,
    );
}
