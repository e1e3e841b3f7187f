//! The warm pool (issue 12): Python runs forked from a zygote must be indistinguishable from
//! cold runs, in both isolation modes, share nothing with each other, and survive a zygote
//! that dies or wears out.

use crate::support;
use crate::support::runtime::{b64, children, dify_fixture, python_fixture, Fixture, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Scripts whose every observable (stdout, stderr, `error`, exit code) is deterministic, so a
/// cold and a warm run must agree byte for byte. Each names what it pins down.
const CASES: &[(&str, &str)] = &[
    ("print", "print(1)"),
    (
        "main module and interpreter state",
        "import sys\nprint(sorted(globals()))\nprint(__name__, __file__, __doc__, __package__, __spec__, __loader__)\nprint(sys.argv, sys.orig_argv[1:], sys.path, sys.flags)\nprint(repr(sys.stdin.read()), sys.stdin.seekable(), sys.stdout.line_buffering, sys.stderr.line_buffering)\nprint(sys.stdout.encoding, sys.stdout.errors, sys.stderr.errors, sys.getrecursionlimit())\n",
    ),
    (
        "process state",
        "import os, resource\nprint(sorted(os.environ.items()))\nprint(os.getcwd(), os.getppid(), os.getuid() >= 65536, os.getuid() == os.getgid(), os.getgroups(), oct(os.umask(0o22)))\nprint([resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC, resource.RLIMIT_CORE)])\ndef is_open(fd):\n    try:\n        os.fstat(fd)\n        return True\n    except OSError:\n        return False\nprint([fd for fd in range(1024) if is_open(fd)])\nimport socket\nprint(socket.gethostname())\n",
    ),
    (
        "traceback through functions",
        "def f(x):\n    return g(x)\n\ndef g(x):\n    return 1 / x\n\nf(0)\n",
    ),
    (
        "chained exceptions",
        "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('v') from e\n",
    ),
    ("syntax error", "x = (\n"),
    ("indentation error", "if True:\nprint(1)\n"),
    ("bad encoding cookie", "# -*- coding: nope -*-\nprint(1)\n"),
    ("sys.exit()", "import sys\nsys.exit()\n"),
    ("sys.exit(3)", "import sys\nprint('out')\nsys.exit(3)\n"),
    ("sys.exit(text)", "import sys\nsys.exit('bye')\n"),
    ("SystemExit(300)", "raise SystemExit(300)\n"),
    ("os._exit", "import os\nprint('lost in the buffer')\nos._exit(7)\n"),
    ("unicode", "import sys\nprint('Zoë ☃')\nsys.stderr.write('é\\n')\n"),
    ("unencodable output", "print('\\udcff')\n"),
    ("input at end of file", "input()\n"),
    (
        "non-daemon thread finishes before exit",
        "import threading, time\ndef w():\n    time.sleep(0.05)\n    print('thread done')\nthreading.Thread(target=w).start()\nprint('main done')\n",
    ),
    (
        "atexit and __del__ at exit",
        "import atexit\natexit.register(print, 'at exit')\nclass A:\n    def __del__(self):\n        print('del A')\na = A()\nprint('body')\n",
    ),
    (
        "stdout closed: exit code 120",
        "import os\nos.close(1)\nprint('x')\n",
    ),
    ("KeyboardInterrupt", "raise KeyboardInterrupt\n"),
    ("warning", "import warnings\nwarnings.warn('careful')\n"),
    ("large output", "print('x' * 200000)\n"),
    ("recursion", "def r():\n    r()\nr()\n"),
    ("seccomp denial", "import os\nos.mknod('node')\n"),
];

/// Dify's Python runner around main(**inputs), and its Jinja2 template runner (also the
/// warm pool benchmark's workload, `runtime_bench::bench_warm_pool`).
pub(crate) fn dify_cases() -> Vec<(&'static str, String)> {
    let inputs = br#"{"name": "Zo\u00eb", "items": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]}"#;
    let b64 = b64::encode(inputs);
    let template = b64::encode(
        b"Hi {{ name | upper }}!{% for i in items %} {{ loop.index }}:{{ i.k }}={{ i.v * 10 }}{% endfor %}",
    );
    vec![
        (
            "Dify's Python runner",
            format!(
                "def main(name: str, items: list) -> dict:\n    return {{'hello': name, 'total': sum(i['v'] for i in items)}}\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('{b64}').decode('utf-8'))\noutput_obj = main(**inputs_obj)\noutput_json = json.dumps(output_obj, indent=4)\nresult = f'''<<RESULT>>{{output_json}}<<RESULT>>'''\nprint(result)\n"
            ),
        ),
        (
            "Dify's Python runner, failing main",
            format!(
                "def main(name: str, items: list) -> dict:\n    return {{'x': items[5]}}\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('{b64}').decode('utf-8'))\noutput_obj = main(**inputs_obj)\nprint(output_obj)\n"
            ),
        ),
        (
            "Dify's Jinja2 runner",
            format!(
                "def main(**inputs):\n    import jinja2\n    from base64 import b64decode\n    template = jinja2.Template(b64decode('{template}').decode('utf-8'))\n    return template.render(**inputs)\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('{b64}').decode('utf-8'))\noutput = main(**inputs_obj)\nresult = f'''<<RESULT>>{{output}}<<RESULT>>'''\nprint(result)\n"
            ),
        ),
        (
            // The zygote's clones skip threading's and logging's after-fork hooks (zygote.py,
            // preload_without_fork_hooks; httpx imports both): every lock those would reset
            // must be free in a run, or the worker blocks and the join times out.
            "threads and logging after the clone",
            "import logging, sys, threading\nlogging.basicConfig(level=logging.INFO, format='%(threadName)s %(message)s', stream=sys.stdout)\nt = threading.Thread(target=logging.getLogger('w').info, args=('from a thread',), name='worker')\nt.start()\nt.join(5)\nlogging.info('from main')\nprint(t.is_alive(), threading.active_count(), threading.main_thread() is threading.current_thread(), threading.main_thread().name)\n"
                .to_owned(),
        ),
        (
            "Jinja2 template error",
            "import jinja2\nprint(jinja2.Template('{{ x.y.z }}', undefined=jinja2.StrictUndefined).render())\n"
                .to_owned(),
        ),
    ]
}

fn start(fixture: Fixture, ns: bool, warm: bool, extra: &str) -> Server {
    start_with_env(fixture, ns, warm, extra, &[])
}

/// [`start`], with more environment for the server.
fn start_with_env(
    fixture: Fixture,
    ns: bool,
    warm: bool,
    extra: &str,
    env: &[(&str, &str)],
) -> Server {
    let mut vars = vec![("SANDBOX_WARM_POOL", if warm { "true" } else { "false" })];
    vars.extend_from_slice(env);
    let s = Server::start_over(
        fixture,
        &format!("worker_timeout: 5\nnamespaces: {ns}\n{extra}"),
        &vars,
    );
    if warm {
        assert_eq!(s.zygotes_started(), 1, "no zygote; log:\n{}", s.log());
    }
    s
}

fn run(s: &Server, code: &str) -> Value {
    let (status, body) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": code, "preload": "", "enable_network": true}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// Whether a run came from the zygote: its preload list is already imported.
fn forked(s: &Server) -> bool {
    let out = run(s, "import sys\nprint('base64' in sys.modules)\n");
    match out["data"]["stdout"].as_str() {
        Some("True\n") => true,
        Some("False\n") => false,
        _ => panic!("{out}"),
    }
}

/// Python frames below a warm run's `<module>` that a cold run does not have: the `-c`
/// bootstrap, `exec`, the zygote's module and the call into CPython's file runner. They count
/// against the recursion limit (the README documents it); everything else must be equal.
const ZYGOTE_FRAMES: u64 = 4;

/// A warm run's result as a cold run would have printed it, for the one documented
/// difference: a RecursionError's traceback repeats `ZYGOTE_FRAMES` fewer lines.
fn undo_known_differences(mut body: Value) -> Value {
    const REPEATED: &str = "[Previous line repeated ";
    for key in ["stderr", "error"] {
        let Some(text) = body["data"][key].as_str() else {
            continue;
        };
        if !text.contains("RecursionError") {
            continue;
        }
        let Some(at) = text.find(REPEATED) else {
            continue;
        };
        let from = at + REPEATED.len();
        let digits = text[from..].find(' ').unwrap() + from;
        let n: u64 = text[from..digits].parse().unwrap();
        let fixed = format!("{}{}{}", &text[..from], n + ZYGOTE_FRAMES, &text[digits..]);
        body["data"][key] = Value::String(fixed);
    }
    body
}

/// The result with chroot mode's per-uid directory (`/tmp/run-65537`) named without its uid:
/// which pool uid a run gets depends on what else holds one at the moment, warm or cold.
fn without_uid(body: &Value) -> Value {
    let text = body.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("/tmp/run-") {
        let from = at + "/tmp/run-".len();
        out.push_str(&rest[..from]);
        let digits = rest[from..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        out.push_str("UID");
        rest = &rest[from + digits..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

fn compare(fixture: Fixture, cases: &[(&str, String)]) {
    for ns in [true, false] {
        let cold = start(fixture, ns, false, "");
        let warm = start(fixture, ns, true, "");
        assert!(forked(&warm) && !forked(&cold), "ns={ns}");
        let mut differ = Vec::new();
        for (name, code) in cases {
            let c = without_uid(&run(&cold, code));
            let w = without_uid(&undo_known_differences(run(&warm, code)));
            if c != w {
                differ.push(format!("{name} (ns={ns}):\n  cold: {c}\n  warm: {w}"));
            }
        }
        assert!(forked(&warm), "ns={ns}: the runs above were not warm");
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn warm_runs_are_indistinguishable_from_cold_runs() {
    let _exclusive = support::exclusive();
    let cases: Vec<(&str, String)> = CASES
        .iter()
        .map(|(name, code)| (*name, (*code).to_owned()))
        .collect();
    compare(python_fixture(), &cases);
}

#[test]
#[cfg_attr(
    not(all(have_root, have_fixture_venv)),
    ignore = "needs root and the fixture venv"
)]
fn difys_runners_are_indistinguishable_warm_and_cold() {
    let _exclusive = support::exclusive();
    let cases = dify_cases();
    compare(dify_fixture(), &cases);
    // And the zygote preloaded what the runners import.
    let s = start(dify_fixture(), true, true, "");
    let out = run(
        &s,
        "import sys\nprint(all(m in sys.modules for m in ('jinja2', 'requests', 'httpx')))\n",
    );
    assert_eq!(out["data"]["stdout"], "True\n", "{out}");
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn no_state_of_one_warm_run_reaches_the_next() {
    let _exclusive = support::exclusive();
    for ns in [true, false] {
        let s = start(python_fixture(), ns, true, "");
        let first = run(
            &s,
            "import json, os, random, sys\njson.leak = 1\nos.environ['LEAK'] = '1'\nsys.path.append('/leak')\nopen('leak', 'w').write('x')\nimport builtins\nbuiltins.leak = 1\nprint(random.random())\n",
        );
        assert_eq!(first["data"]["exit_code"], 0, "{first}");
        let second = run(
            &s,
            "import json, os, random, sys, builtins\nprint(hasattr(json, 'leak'), 'LEAK' in os.environ, '/leak' in sys.path, os.path.exists('leak'), hasattr(builtins, 'leak'))\nprint(random.random())\n",
        );
        let out = second["data"]["stdout"].as_str().unwrap();
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("False False False False False"),
            "ns={ns}: {second}"
        );
        // `random` is reseeded in every fork: two runs do not draw the same numbers.
        assert_ne!(
            lines.next(),
            first["data"]["stdout"].as_str().unwrap().lines().next(),
            "ns={ns}"
        );
        assert!(forked(&s), "ns={ns}");
    }
}

/// Of a server's child processes, the zygote and its clones waiting for a run. A clone that
/// took a run keeps the zygote's command line until it is a zombie, through the teardown of
/// its memory after its answer: it is told apart by its pool uid.
fn from_zygotes(kids: &[(u32, char)]) -> Vec<u32> {
    let pool = support::runtime::pool_processes();
    kids.iter()
        .map(|(pid, _)| *pid)
        .filter(|pid| !pool.iter().any(|(p, _)| p == pid))
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("\0-c\0_t=dict(globals())")
        })
        .collect()
}

/// The server's child processes that are runs (their uid is a pool uid), alive or exiting.
/// (Tests of this module run side by side: the node's pool processes are not all this one's.)
fn runs_of(s: &Server) -> Vec<u32> {
    let pool = support::runtime::pool_processes();
    children(s.child.id())
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| pool.iter().any(|(p, _)| p == pid))
        .collect()
}

/// The server's zygote and its clones waiting for a run.
fn zygote_processes(s: &Server) -> Vec<u32> {
    from_zygotes(&children(s.child.id()))
}

fn wait_for(what: &str, s: &Server, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}; log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A zygote clones its first runs' processes ahead (two), and replaces each once its run is
/// over: no run waits for a clone on its path, and the runtime knows every process the
/// zygote made for a run before it hands the run over (a run cloned on its path is known
/// only from the zygote's answer, which a stalled zygote never gives).
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_new_zygote_has_its_first_run_s_process_ready() {
    let _exclusive = support::exclusive();
    for ns in [true, false] {
        let s = start(python_fixture(), ns, true, "");
        let zygote = s.zygote_pid().expect("the zygote's pid in the log");
        wait_for("not two processes ahead of the first run", &s, || {
            zygote_processes(&s).len() == 3
        });
        let ahead: Vec<u32> = zygote_processes(&s)
            .into_iter()
            .filter(|&p| p != zygote)
            .collect();
        let gone = |p: &u32| !std::path::Path::new(&format!("/proc/{p}")).exists();
        // The first run is one of them: it ran and is gone (just after its answer: it is
        // reaped once answered), the other still waits, and a third is cloned for the next.
        assert!(forked(&s), "ns={ns}");
        wait_for(
            &format!("ns={ns}: none of {ahead:?} took the first run"),
            &s,
            || ahead.iter().filter(|p| gone(p)).count() == 1,
        );
        wait_for("not two processes ahead of the second run", &s, || {
            zygote_processes(&s).len() == 3
        });
        assert_eq!(
            ahead.iter().filter(|p| gone(p)).count(),
            1,
            "ns={ns}: {ahead:?}"
        );
    }
}

/// A spare is replaced once the run that took it is over and its process gone, not at the
/// hand-over, where the clone (a millisecond of copying page tables) took the CPU of the run
/// that had just been woken (zygote.py). While a run lasts, one spare waits; after, two.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_spare_is_replaced_only_once_its_run_is_over() {
    let _exclusive = support::exclusive();
    for ns in [true, false] {
        let s = start(python_fixture(), ns, true, "");
        let zygote = s.zygote_pid().expect("the zygote's pid in the log");
        // Processes cloned from the zygote that are not runs yet.
        let spares = |s: &Server| {
            zygote_processes(s)
                .into_iter()
                .filter(|p| *p != zygote)
                .count()
        };
        wait_for("not two spares at the start", &s, || spares(&s) == 2);
        std::thread::scope(|scope| {
            let long = scope.spawn(|| run(&s, "import time\ntime.sleep(1.5)\nprint('done')\n"));
            wait_for("the run never started", &s, || runs_of(&s).len() == 1);
            let until = Instant::now() + Duration::from_millis(800);
            while Instant::now() < until {
                assert_eq!(
                    spares(&s),
                    1,
                    "ns={ns}: a spare was cloned while the run ran"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = long.join().unwrap();
            assert_eq!(out["data"]["stdout"], "done\n", "ns={ns}: {out}");
        });
        wait_for("the spare was not replaced after the run", &s, || {
            spares(&s) == 2
        });
    }
}

/// A number the zygote's ready line logs (`key=N`).
fn ready_field(s: &Server, key: &str) -> u64 {
    s.zygote_ready_field(key)
        .unwrap_or_else(|| panic!("no {key}= on the zygote's ready line; log:\n{}", s.log()))
}

/// A process's private dirty memory: the pages no other process maps, in KiB.
fn private_dirty_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Private_Dirty:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The zygote learns from its three sample runs (Dify's runners' shapes: the image has
/// jinja2; an image without it has two) which of its pages runs write, and each spare copies
/// them while it waits (prefault.rs): a spare holds those pages privately before any run
/// came. The sample runs are stopped, read and killed before the first spare: none is left
/// behind, stopped or not.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn spares_copy_ahead_the_pages_the_sample_runs_wrote() {
    let _exclusive = support::exclusive();
    for ns in [true, false] {
        let s = start(dify_fixture(), ns, true, "");
        let zygote = s.zygote_pid().expect("the zygote's pid in the log");
        assert_eq!(ready_field(&s, "samples"), 3, "ns={ns}: {}", s.log());
        let pages = ready_field(&s, "prefault_pages");
        assert!(pages >= 300, "ns={ns}: only {pages} pages learned");
        wait_for("not two spares at the start", &s, || {
            zygote_processes(&s).len() == 3
        });
        let kids = children(s.child.id());
        assert!(
            kids.iter().all(|(_, state)| *state != 'T' && *state != 'Z'),
            "ns={ns}: a stopped or unreaped process: {kids:?}"
        );
        for spare in zygote_processes(&s).into_iter().filter(|&p| p != zygote) {
            // Without copying ahead a spare holds about a megabyte of its own (its stack,
            // the pages its clone wrote); with it, most of the learned pages on top.
            wait_for(
                &format!("ns={ns}: spare {spare} did not copy {pages} pages ahead"),
                &s,
                || private_dirty_kib(spare) >= pages * 4 / 2 + 1024,
            );
        }
        assert!(forked(&s), "ns={ns}");
    }
    // An image without jinja2: its sample is skipped, the other two teach.
    let s = start(python_fixture(), true, true, "");
    assert_eq!(ready_field(&s, "samples"), 2, "{}", s.log());
    assert!(ready_field(&s, "prefault_pages") > 0, "{}", s.log());
}

/// With per-run cgroups and namespaces a run gets no run filter (runfilter.rs: nothing to
/// add), and the sample runs must not ask for one either: an empty program fails seccomp(2),
/// and until 3655eb5 every sample failed there, so spares copied nothing ahead with
/// `SANDBOX_CGROUPS=on`.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn the_zygote_learns_from_its_samples_with_cgroups_on() {
    let _exclusive = support::exclusive();
    let s = start_with_env(dify_fixture(), true, true, "", &[("SANDBOX_CGROUPS", "on")]);
    // The case under test: the runtime did get its cgroups (this machine's tree is writable,
    // as `runtime_hostile::memfd_cannot_hold_memory_beyond_the_limit` requires too).
    assert!(
        s.log().contains("per-run memory and pids cgroups"),
        "no cgroups; log:\n{}",
        s.log()
    );
    assert_eq!(ready_field(&s, "samples"), 3, "{}", s.log());
    let pages = ready_field(&s, "prefault_pages");
    assert!(pages >= 300, "only {pages} pages learned");
    assert_eq!(run(&s, "print(1)")["data"]["stdout"], "1\n");
    assert!(forked(&s));
}

/// A warm run records its exit status before it exits (`end_record.rs`), so its answer does
/// not wait for the kernel to free its memory. A run that wrote 600 MB and kept them to its
/// end (on `sys`, which the end of a run does not clear) is still being torn down when its
/// answer arrives; a cold run, answered after its reap, never is.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_warm_run_is_answered_before_its_memory_is_freed() {
    let _exclusive = support::exclusive();
    let touch = "import sys\nb = bytearray(600 << 20)\nb[::4096] = b'\\1' * len(range(0, len(b), 4096))\nsys.kept = b\nprint('touched')\nsys.exit(5)\n";
    for ns in [true, false] {
        for warm in [true, false] {
            let s = start(python_fixture(), ns, warm, "limits:\n  memory_mb: 2048\n");
            assert_eq!(forked(&s), warm, "ns={ns}");
            let out = run(&s, touch);
            let exiting = runs_of(&s);
            assert_eq!(
                out["data"]["stdout"], "touched\n",
                "ns={ns} warm={warm}: {out}"
            );
            assert_eq!(out["data"]["exit_code"], 5, "ns={ns} warm={warm}: {out}");
            assert_eq!(
                !exiting.is_empty(),
                warm,
                "ns={ns} warm={warm}: the run's process at its answer: {exiting:?}"
            );
            wait_for("the answered run is never reaped", &s, || {
                runs_of(&s).is_empty()
            });
        }
    }
}

/// `prebake_runs_queued` counts the requests waiting for a worker, also while the worker is
/// held by a run that was answered and whose process is still being torn down (it used to be
/// the requests in flight less the workers busy, which missed exactly those: an answered run
/// no longer counts as in flight). One worker; a run that wrote 1 GB and kept it to its end
/// prints its pid (chroot-only: the host's) and is answered while it is torn down, and a
/// second request waits behind it. A scrape taken while the first run's process is still
/// there (checked after the scrape) must show one running and one queued.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_request_waiting_behind_an_answered_run_counts_as_queued() {
    let _exclusive = support::exclusive();
    let s = start(
        python_fixture(),
        false,
        true,
        "max_workers: 1\nlimits:\n  memory_mb: 2048\n",
    );
    let touch = "import os, sys\nb = bytearray(1 << 30)\nb[::4096] = b'\\1' * len(range(0, len(b), 4096))\nsys.kept = b\nprint(os.getpid())\n";
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let mut seen = false;
    for _ in 0..5 {
        std::thread::scope(|scope| {
            let first = scope.spawn(|| run(&s, touch));
            wait_for("the first run never took the worker", &s, || {
                metric(&s.metrics(), "prebake_runs_running") == 1
            });
            let second = scope.spawn(|| run(&s, "print('second')\n"));
            wait_for("the second request never queued", &s, || {
                metric(&s.metrics(), "prebake_runs_queued") == 1
            });
            let out = first.join().unwrap();
            let text = s.metrics();
            let pid = out["data"]["stdout"].as_str().unwrap().trim().to_owned();
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                assert_eq!(metric(&text, "prebake_runs_running"), 1, "{text}");
                assert_eq!(metric(&text, "prebake_runs_queued"), 1, "{text}");
                seen = true;
            }
            assert_eq!(second.join().unwrap()["data"]["stdout"], "second\n");
        });
        if seen {
            break;
        }
    }
    assert!(
        seen,
        "the first run was never still exiting after its answer"
    );
    wait_for("a run still holds the worker", &s, || {
        let text = s.metrics();
        metric(&text, "prebake_runs_running") == 0 && metric(&text, "prebake_runs_queued") == 0
    });
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_dead_zygote_costs_one_run_its_latency_never_the_run() {
    let _exclusive = support::exclusive();
    for ns in [true, false] {
        let s = start(python_fixture(), ns, true, "");
        let pid = s.zygote_pid().expect("the zygote's pid in the log");
        // SAFETY: signalling the server's zygote, a process this test does not own; it
        // is the point of the test.
        unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGKILL) };
        // The next run finds it dead, starts cold and succeeds.
        let out = run(&s, "print('served')\n");
        assert_eq!(out["data"]["stdout"], "served\n", "ns={ns}: {out}");
        wait_for("no new zygote", &s, || s.zygotes_started() == 2);
        assert_ne!(s.zygote_pid(), Some(pid));
        assert!(forked(&s), "ns={ns}");
    }
}

/// A run that finds no spare goes to the zygote, which clones it at once. A zygote that then
/// stalls past the runtime's patience (strace holds its clone) costs the run its latency: the
/// run starts cold, once, and the zygote is replaced, no zombie left. The spares are
/// killed first, from outside, as the OOM killer might: the runtime finds each dead when it
/// hands it the run, and reaps it. The script counts the starts before it in its working
/// directory, which in chroot-only mode is the run's own directory in the rootfs, the same
/// for every start of one run (in namespaces mode each has its own tmpfs).
#[test]
#[cfg_attr(not(all(have_root, have_strace)), ignore = "needs root and strace")]
fn a_run_that_meets_a_stalled_zygote_runs_once_cold() {
    let _exclusive = support::exclusive();
    for ns in [true, false] {
        let s = start(python_fixture(), ns, true, "");
        assert!(forked(&s), "ns={ns}");
        let pid = s.zygote_pid().expect("the zygote's pid in the log");
        wait_for("the zygote's spares never appeared", &s, || {
            zygote_processes(&s).len() == 3
        });
        let stalled = zygote_processes(&s);
        for spare in stalled.iter().filter(|p| **p != pid) {
            // SAFETY: signalling a process of the server under test; it is the point.
            unsafe { libc::kill(libc::pid_t::try_from(*spare).unwrap(), libc::SIGKILL) };
        }
        let mut strace = std::process::Command::new("strace")
            .args(["-o", "/dev/null", "-e", "trace=clone"])
            .args(["-e", "inject=clone:delay_enter=3000000:when=1"])
            .args(["-p", &pid.to_string()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strace");
        let mut said = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(strace.stderr.take().unwrap()),
            &mut said,
        )
        .unwrap();
        assert!(said.contains("attached"), "strace: {said}");

        let out = run(
            &s,
            "import os\nbefore = [f for f in os.listdir('.') if f.startswith('ran-')]\nopen('ran-%d' % os.getpid(), 'w').close()\nprint(len(before))\n",
        );
        assert_eq!(
            out["data"]["stdout"],
            "0\n",
            "ns={ns}: {out}; log:\n{}",
            s.log()
        );
        assert!(
            s.log()
                .contains("this run starts cold and the zygote is replaced"),
            "ns={ns}: the zygote did not stall; log:\n{}",
            s.log()
        );
        // The stalled zygote and its killed spares are gone, and reaped.
        for pid in &stalled {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "ns={ns}: {pid} of {stalled:?} is still there"
            );
        }
        assert!(strace.wait().is_ok());
        wait_for("no new zygote", &s, || s.zygotes_started() == 2);
        assert!(forked(&s), "ns={ns}");
        wait_for("a zombie among the server's children", &s, || {
            children(s.child.id())
                .iter()
                .all(|(_, state)| *state != 'Z')
        });
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_zygote_is_replaced_after_its_forks() {
    let _exclusive = support::exclusive();
    let s = start(python_fixture(), true, true, "warm_pool_max_forks: 3\n");
    let first = s.zygote_pid();
    for _ in 0..3 {
        assert_eq!(run(&s, "print(1)")["data"]["stdout"], "1\n");
    }
    wait_for("the worn zygote was not replaced", &s, || {
        s.zygotes_started() == 2
    });
    assert_ne!(s.zygote_pid(), first);
    // The old one is gone (killed and reaped), the new one serves.
    let old = first.unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{old}")).exists(),
        "the replaced zygote {old} is still there"
    );
    assert!(forked(&s));
    // The server's children that came from zygotes: the new zygote and the two spares it
    // cloned for the next runs, all alive; the old zygote's spares were killed and reaped.
    // (The others are pasta and the network namespace's holder.) No zombie anywhere.
    // A spare is cloned after the run that took the last one is over, so it may take a
    // moment to appear, and the last run is reaped just after its answer.
    wait_for(
        "not exactly the new zygote and its spares, or a zombie",
        &s,
        || {
            let kids = children(s.child.id());
            kids.iter().all(|(_, state)| *state != 'Z') && from_zygotes(&kids).len() == 3
        },
    );
    assert!(zygote_processes(&s).contains(&s.zygote_pid().unwrap()));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_run_without_network_finds_no_proxy_secret_of_runs_with_network() {
    let _exclusive = support::exclusive();
    let secret = "s3cr3t-proxy-pass";
    let s = start(
        python_fixture(),
        true,
        true,
        &format!("proxy:\n  http: http://user:{secret}@proxy.invalid:3128\n"),
    );
    let with = |network: bool, code: &str| {
        let (status, body) = s.post(
            "/v1/sandbox/run",
            &json!({"language": "python3", "code": code, "enable_network": network}),
        );
        assert_eq!(status, 200, "{body}");
        body["data"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // Runs with network get it, as cold ones do.
    assert!(with(true, "import os\nprint(os.environ.get('HTTP_PROXY'))\n").contains(secret));
    // A run without network finds it nowhere the interpreter can reach, though a run with
    // network came first from the same zygote.
    let scan = format!(
        "import gc, os, sys\nneedle = {:?}[::-1]\nfound = []\ndef look(o, where):\n    if isinstance(o, (str, bytes)):\n        t = o if isinstance(o, str) else o.decode('latin-1')\n        if needle in t:\n            found.append(where)\nfor o in gc.get_objects():\n    look(o, 'object')\n    for r in gc.get_referents(o):\n        look(r, 'referent of a ' + type(o).__name__)\nfor name, m in list(sys.modules.items()):\n    for k, v in list(vars(m).items()):\n        look(v, name + '.' + k)\nframe = sys._getframe()\nwhile frame is not None:\n    for v in list(frame.f_locals.values()):\n        look(v, 'frame ' + frame.f_code.co_name)\n    frame = frame.f_back\nfor v in list(os.environ.values()):\n    look(v, 'environment')\nprint(sorted(set(found)))\n",
        secret.chars().rev().collect::<String>()
    );
    // The script's own copy of the needle is found once, in its globals.
    assert_eq!(
        with(false, &scan),
        "['__main__.needle', 'frame <module>', 'referent of a dict']\n"
    );
    assert!(forked(&s));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn runs_cannot_reach_the_zygote() {
    let _exclusive = support::exclusive();
    for ns in [true, false] {
        let s = start(python_fixture(), ns, true, "");
        let pid = s.zygote_pid().unwrap();
        let out = run(
            &s,
            &format!(
                "import os, signal\nfor sig in (signal.SIGKILL, signal.SIGSTOP, 0):\n    try:\n        os.kill({pid}, sig)\n        print('reached')\n    except OSError as e:\n        print(type(e).__name__)\n"
            ),
        );
        let stdout = out["data"]["stdout"].as_str().unwrap_or_default();
        assert!(!stdout.contains("reached"), "ns={ns}: {out}");
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "ns={ns}: the zygote died"
        );
        assert_eq!(s.zygote_pid(), Some(pid));
        assert!(forked(&s), "ns={ns}");
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn the_api_key_is_nowhere_in_a_warm_run() {
    let _exclusive = support::exclusive();
    // Every string the interpreter holds that a script can reach: environment, argv, the
    // objects the collector tracks and what they refer to, every module's namespace. The
    // script's own copies of the key are found too: a cold run finds exactly those.
    let code = format!(
        "import gc, os, sys\nkey = {:?}[::-1]\nfound = []\ndef look(o, where):\n    if isinstance(o, (str, bytes)):\n        t = o if isinstance(o, str) else o.decode('latin-1')\n        if key in t:\n            found.append(where)\nfor o in gc.get_objects():\n    look(o, 'object')\n    for r in gc.get_referents(o):\n        look(r, 'referent of a ' + type(o).__name__)\nfor name, m in list(sys.modules.items()):\n    for k, v in list(vars(m).items()):\n        look(v, name + '.' + k)\nfor v in list(os.environ.values()) + sys.argv + sys.orig_argv:\n    look(v, 'environment or argv')\nprint(sorted(found))\n",
        support::runtime::KEY.chars().rev().collect::<String>()
    );
    for ns in [true, false] {
        let cold = start(python_fixture(), ns, false, "");
        let warm = start(python_fixture(), ns, true, "");
        let (c, w) = (run(&cold, &code), run(&warm, &code));
        assert_eq!(c["data"]["exit_code"], 0, "{c}");
        assert_eq!(
            w["data"]["stdout"], c["data"]["stdout"],
            "ns={ns}: warm {w} cold {c}"
        );
        assert!(forked(&warm));
    }
}

/// Where the kernel lets a process populate ranges of its own memory many at a time
/// (`process_madvise(2)` with `MADV_POPULATE_WRITE`, Linux 6.13), a spare copies ahead with
/// one call per 256 KiB instead of one `madvise` per range (about 800 fewer calls, half a
/// millisecond of CPU per spare, on Dify's preload). perf counts both calls in the zygote's
/// spares (its clones inherit the counters; a spare's counts join when it exits, after its
/// run) while runs go through, in both isolation modes (a spare opens a pidfd of itself,
/// pid 1 of its namespace or not); an older kernel must show the reverse.
#[test]
#[cfg_attr(not(all(have_root, have_perf)), ignore = "needs root and perf")]
fn spares_copy_ahead_with_one_call_per_batch_where_the_kernel_allows() {
    let _exclusive = support::exclusive();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let vectored = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (6, 13);
    for ns in [true, false] {
        let s = start(dify_fixture(), ns, true, "");
        assert!(
            s.log().contains(&format!("vectored_copy={vectored}")),
            "ns={ns}, kernel {release}: {}",
            s.log()
        );
        let zygote = s.zygote_pid().expect("the zygote's pid in the log");
        let perf = std::process::Command::new("perf")
            .args(["stat", "-x", ",", "-p", &zygote.to_string()])
            .args([
                "-e",
                "syscalls:sys_enter_madvise,syscalls:sys_enter_process_madvise",
            ])
            .args(["--", "sleep", "4"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("perf");
        std::thread::sleep(Duration::from_millis(500));
        // The two spares there before perf came are not counted: these runs take them, and the
        // spares cloned after them take the rest.
        const RUNS: u64 = 8;
        for _ in 0..RUNS {
            assert_eq!(
                run(&s, "print(1)")["data"]["stdout"],
                "1\n",
                "ns={ns}: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = perf.wait_with_output().expect("perf");
        let said = String::from_utf8_lossy(&out.stderr);
        let count = |event: &str| -> u64 {
            said.lines()
                .find(|l| l.contains(event))
                .and_then(|l| l.split(',').next()?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no count of {event} from perf:\n{said}"))
        };
        let (one_each, many) = (
            count("sys_enter_madvise"),
            count("sys_enter_process_madvise"),
        );
        // Each spare makes at least one call; the per-range way hundreds.
        if vectored {
            assert!(
                many >= RUNS - 2 && one_each < many,
                "ns={ns}: madvise {one_each}, process_madvise {many}"
            );
        } else {
            assert!(
                many == 0 && one_each >= 100 * (RUNS - 2),
                "ns={ns}: madvise {one_each}, process_madvise {many}"
            );
        }
    }
}
