//! Node.js through the whole pipeline: `prebake build images/python3-nodejs.yaml`, then
//! `runtime serve` on that bundle with the real `node`, the baked nodejs seccomp policy and the
//! usual isolation. Tests are serialized: they share the uid pool, and the leftover-process
//! checks must see only their own runs.

use crate::support;
use crate::support::runtime::{leftover_pool_processes, Server, KEY};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const LIMITS: &str = "limits:\n  output_bytes: 1048576\n  processes: 64\n  tmp_mb: 16\n";

/// Run `f` against a server in each isolation mode (namespaces, and chroot-only as under
/// Docker's default profile); afterwards the server still serves both languages, stops
/// cleanly, and no pool process is left.
fn both_modes(extra: &str, f: impl Fn(&Server, bool)) {
    both_modes_timeout(3, extra, f)
}

fn both_modes_timeout(timeout: u64, extra: &str, f: impl Fn(&Server, bool)) {
    let test = support::test_name();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for ns in [true, false] {
        let s = Server::start_over(
            support::node::fixture(),
            &format!("{LIMITS}worker_timeout: {timeout}\nnamespaces: {ns}\n{extra}"),
            &[],
        );
        f(&s, ns);
        assert_eq!(
            s.run_js("console.log('still here')")["stdout"],
            "still here\n",
            "ns={ns}"
        );
        assert_eq!(
            s.run_lang("python3", "print('py too')", false)["stdout"],
            "py too\n"
        );
        assert_eq!(s.stop().code(), Some(0));
        let left = leftover_pool_processes();
        assert!(left.is_empty(), "{test} ns={ns}: leftovers {left:?}");
    }
}

fn text<'a>(d: &'a Value, k: &str) -> &'a str {
    d[k].as_str()
        .unwrap_or_else(|| panic!("`{k}` is not a string in {d}"))
}

/// Dify's JavaScript runner (api/core/helper/code_executor/javascript): the user's code
/// defines `main`, the inputs arrive as base64 JSON, the result is printed between markers.
fn dify_js(user_code: &str, inputs: &Value) -> String {
    let inputs = support::runtime::b64::encode(inputs.to_string().as_bytes());
    format!(
        "// declare main function\n{user_code}\n\n// decode and prepare input object\nvar inputs_obj = JSON.parse(Buffer.from('{inputs}', 'base64').toString('utf-8'))\n\n// execute main function\nvar output_obj = main(inputs_obj)\n\n// convert output to json and print\nvar output_json = JSON.stringify(output_obj)\nvar result = `<<RESULT>>${{output_json}}<<RESULT>>`\nconsole.log(result)\n"
    )
}

/// The JSON between the `<<RESULT>>` markers, as Dify's client extracts it.
fn dify_result(stdout: &str) -> Value {
    let start = stdout.find("<<RESULT>>").expect("no <<RESULT>> marker") + "<<RESULT>>".len();
    let end = start
        + stdout[start..]
            .find("<<RESULT>>")
            .expect("no closing <<RESULT>>");
    serde_json::from_str(&stdout[start..end]).unwrap()
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn dify_javascript_runner_returns_the_result() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let user = "function main({arg1, arg2, items}) {\n  console.error('debug: adding', arg1, arg2)\n  return {\n    result: arg1 + arg2,\n    count: items.length,\n    upper: items.map(x => x.toUpperCase()),\n    text: '日本語 ' + new Intl.NumberFormat('de-DE').format(1234567.891),\n  }\n}";
        let d = s.run_js(&dify_js(
            user,
            &json!({"arg1": 40, "arg2": 2, "items": ["a", "é", "ß"]}),
        ));
        assert_eq!(d["error"], "", "ns={ns}: {d}");
        assert_eq!(d["exit_code"], 0);
        let stdout = text(&d, "stdout");
        assert_eq!(
            dify_result(stdout),
            json!({"result": 42, "count": 3, "upper": ["A", "É", "SS"], "text": "日本語 1.234.567,891"}),
            "ns={ns}: {d}"
        );
        // console.error goes to stderr only.
        assert!(!stdout.contains("debug:"), "{d}");
        assert_eq!(d["stderr"], "debug: adding 40 2\n", "{d}");
    });
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn thrown_error_is_reported() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let d = s.run_js(&dify_js(
            "function main({x}) { throw new Error('bad input: ' + x) }",
            &json!({"x": "q7"}),
        ));
        assert_eq!(d["exit_code"], 1, "ns={ns}: {d}");
        assert!(text(&d, "stderr").contains("Error: bad input: q7"), "{d}");
        let error = text(&d, "error");
        assert!(
            error.starts_with("process exited with code 1\n") && error.contains("bad input: q7"),
            "{d}"
        );
        assert!(!text(&d, "stdout").contains("<<RESULT>>"), "{d}");
    });
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn node_runtime_features_work_under_the_policy() {
    let _exclusive = support::exclusive();
    // libuv's thread pool (crypto, zlib, fs), its event loop (epoll, eventfd, timers), V8
    // worker threads, ICU built into the binary, the private /tmp.
    both_modes("", |s, ns| {
        let code = r#"
const fs = require('fs'), crypto = require('crypto'), zlib = require('zlib'), os = require('os');
const { Worker } = require('worker_threads');
const out = { icu: typeof process.versions.icu, month: new Intl.DateTimeFormat('fr-FR', {month: 'long', timeZone: 'UTC'}).format(new Date(Date.UTC(2020, 6, 1))) };
fs.writeFileSync('a.txt', 'hello');
const steps = [
  new Promise((ok, no) => fs.readFile('a.txt', 'utf8', (e, d) => e ? no(e) : ok(out.fs = d))),
  new Promise((ok, no) => zlib.gzip('abc'.repeat(100), (e, b) => e ? no(e) : ok(out.gunzip = zlib.gunzipSync(b).length))),
  new Promise((ok, no) => crypto.pbkdf2('pw', 'salt', 1000, 8, 'sha256', (e, k) => e ? no(e) : ok(out.pbkdf2 = k.toString('hex')))),
  new Promise(ok => setTimeout(() => ok(out.timer = true), 20)),
  new Promise((ok, no) => new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', {eval: true}).on('message', m => ok(out.worker = m)).on('error', no)),
];
Promise.all(steps).then(() => { out.tmp = os.tmpdir(); console.log(JSON.stringify(out)) }, e => { console.error('failed:', e); process.exit(2) });
"#;
        let d = s.run_js(code);
        assert_eq!(d["error"], "", "ns={ns}: {d}");
        let v: Value = serde_json::from_str(text(&d, "stdout").trim()).unwrap();
        assert_eq!(v["icu"], "string", "{v}");
        assert_eq!(v["month"], "juillet", "{v}");
        assert_eq!(v["fs"], "hello");
        assert_eq!(v["gunzip"], 300);
        assert_eq!(v["pbkdf2"].as_str().unwrap().len(), 16);
        assert_eq!(v["timer"], true);
        assert_eq!(v["worker"], 42);
    });
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn child_process_fails_with_a_clear_error() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        let code = r#"
const cp = require('child_process');
const seen = [];
try { const p = cp.spawn('ls'); p.on('error', e => seen.push('spawn event ' + e.code)); } catch (e) { seen.push('spawn threw ' + e.code + ': ' + e.message) }
try { cp.execSync('ls'); seen.push('execSync ran') } catch (e) { seen.push('execSync threw ' + e.code + ': ' + e.message) }
const r = cp.spawnSync('/usr/bin/node', ['-e', 'console.log("child")']);
seen.push('spawnSync ' + (r.error ? r.error.code : 'ran: ' + r.stdout));
setTimeout(() => console.log(JSON.stringify(seen)), 50);
"#;
        let d = s.run_js(code);
        assert_eq!(d["exit_code"], 0, "ns={ns}: {d}");
        let seen: Vec<String> = serde_json::from_str(text(&d, "stdout").trim()).unwrap();
        assert_eq!(seen.len(), 3, "{d}");
        assert_eq!(seen[0], "spawn threw EPERM: spawn EPERM", "{d}");
        assert_eq!(
            seen[1], "execSync threw EPERM: spawnSync /bin/sh EPERM",
            "{d}"
        );
        assert_eq!(seen[2], "spawnSync EPERM", "{d}");

        // Unhandled, as a user would write it: a non-zero exit and the error in `error`.
        let d = s.run_js("require('child_process').spawn('ls')\nconsole.log('after')");
        assert_ne!(d["exit_code"], 0, "{d}");
        assert!(text(&d, "error").contains("spawn EPERM"), "{d}");
        assert_eq!(d["stdout"], "", "{d}");
    });
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn redefined_globals_gain_nothing() {
    let _exclusive = support::exclusive();
    // dify-sandbox wraps code in a JavaScript prelude, so tampering with globals that the
    // prelude uses could matter; here nothing privileged runs in the script's process: the
    // boundary is the kernel's. The script tampers with everything it can, reaches
    // child_process by every route, and still cannot start a process; the next run in the
    // same server sees pristine globals (every run is a fresh process).
    both_modes("", |s, ns| {
        let code = r#"
const fs = require('fs');
const saved = { call: Function.prototype.call, push: Array.prototype.push };
globalThis.parseInt = () => 'pwned';
Function.prototype.call = function () { return 'pwned' };
Object.defineProperty(Array.prototype, 'push', { value: function () { return 'pwned' } });
JSON.parse = () => ({ pwned: true });
Object.freeze = x => x;
process.binding = new Proxy(process.binding, { apply: (t, self, args) => Reflect.apply(t, self, args) });
const routes = {
  require: () => require('child_process'),
  mainModule: () => process.mainModule ? process.mainModule.require('child_process') : require('module').prototype.require.apply(module, ['child_process']),
  moduleLoad: () => require('module')._load('child_process'),
  constructorChain: () => (function(){}).constructor.constructor('return process')().getBuiltinModule ? (function(){}).constructor.constructor('return process')().getBuiltinModule('child_process') : require('node:child_process'),
};
const results = {};
for (const [name, get] of Object.entries(routes)) {
  const cp = get();
  try { const out = cp.execFileSync('/usr/bin/node', ['-e', 'console.log(1)']); results[name] = 'ran: ' + out; }
  catch (e) { results[name] = e.code; }
}
try { process.binding('spawn_sync').spawn({ file: '/usr/bin/node', args: ['node', '-e', '1'], envPairs: [], stdio: [{type: 'ignore'}, {type: 'ignore'}, {type: 'ignore'}] }); results.binding = 'returned' }
catch (e) { results.binding = 'threw ' + e.message }
// Put back what stdout's stream code needs, only to print the results.
Function.prototype.call = saved.call;
Object.defineProperty(Array.prototype, 'push', { value: saved.push });
console.log(JSON.stringify(results));
"#;
        let d = s.run_js(code);
        let stdout = text(&d, "stdout");
        let v: Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("ns={ns}: {e}: {d}"));
        for route in ["require", "mainModule", "moduleLoad", "constructorChain"] {
            assert_eq!(v[route], "EPERM", "ns={ns} route {route}: {d}");
        }
        assert!(!stdout.contains("ran:"), "{d}");
        // The raw binding returns an error status instead of throwing; nothing ran either.
        let d2 = s.run_js("console.log(parseInt('42'), typeof Function.prototype.call, [1].push(2), JSON.parse('{\"a\":1}').a)");
        assert_eq!(d2["stdout"], "42 function 2 1\n", "{d2}");
    });
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn infinite_loop_is_stopped_at_the_deadline() {
    let _exclusive = support::exclusive();
    both_modes("", |s, ns| {
        for code in [
            "while (true) {}",
            "setInterval(() => {}, 1)",
            "(async () => { for (;;) await null })()",
        ] {
            let t = Instant::now();
            let d = s.run_js(code);
            let took = t.elapsed();
            assert_eq!(d["exit_code"], -1, "ns={ns} {code}: {d}");
            assert!(text(&d, "error").contains("error: timeout"), "{d}");
            assert!(
                took >= Duration::from_secs(3) && took < Duration::from_secs(6),
                "ns={ns} {code}: took {took:?}"
            );
        }
    });
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn memory_bomb_is_stopped_and_reported() {
    let _exclusive = support::exclusive();
    // The default nodejs limit: 2 GiB of address space, V8's ~700 MiB of reservations
    // included; half a GiB of heap fits. The deadline is long enough that only the memory
    // limit can stop the bombs.
    both_modes_timeout(20, "", |s, ns| {
        let d = s.run_js("const a = []; for (let i = 0; i < 64; i++) a.push(new Array(1e6).fill(i + 0.5)); console.log(a.length)");
        assert_eq!(d["stdout"], "64\n", "ns={ns}: {d}");
        for (code, always_reported) in [
            (
                "const a = []; while (true) a.push(new Array(1e6).fill(1.5))",
                true,
            ),
            (
                "const a = []; while (true) a.push(Buffer.alloc(64 << 20, 1))",
                true,
            ),
            // Many small objects: the limit is often reached inside V8's garbage collector,
            // where one malloc is unchecked (heap::base::Worklist::Local::PublishPushSegment)
            // and node dies of SIGSEGV without a word; stopped all the same.
            (
                "let s = 'x'; const keep = []; for (let i = 0;; i++) keep.push({ i, s: s + i })",
                false,
            ),
        ] {
            let t = Instant::now();
            let d = s.run_js(code);
            let took = t.elapsed();
            assert_ne!(d["exit_code"], 0, "ns={ns} {code}: {d}");
            let error = text(&d, "error");
            let short = &error[..error.len().min(2000)];
            let reported = error.contains("error: memory limit exceeded (2048 MiB per script)");
            assert!(
                reported || (!always_reported && error.contains("error: killed by signal 11")),
                "ns={ns} {code}: {short}"
            );
            assert!(!error.contains("error: timeout"), "ns={ns} {code}: {short}");
            assert!(took < Duration::from_secs(15), "ns={ns} {code}: {took:?}");
        }
    });
}

/// A one-shot HTTP server on the tests' outside address (`support::outside_ip`) answering
/// `body` to every request.
fn http_listener(body: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind((support::outside_ip(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { return };
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if tx.send(req).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn fetch_works_only_with_network_on() {
    let _exclusive = support::exclusive();
    let (port, requests) = http_listener("hello from the host");
    let code = format!(
        "fetch('http://10.77.0.1:{port}/x').then(r => r.text()).then(t => console.log('fetched:', t), e => {{ console.error('fetch failed:', e.message, e.cause && e.cause.code); process.exit(3) }})"
    );
    // The operator allows network: only requests that ask for it get it.
    both_modes("enable_network: true\n", |s, ns| {
        let d = s.run_lang("nodejs", &code, true);
        assert_eq!(
            d["stdout"], "fetched: hello from the host\n",
            "ns={ns}: {d}"
        );
        assert!(requests
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .starts_with("GET /x HTTP/1.1"));
        let d = s.run_lang("nodejs", &code, false);
        assert_eq!(d["exit_code"], 3, "ns={ns}: {d}");
        assert!(text(&d, "stderr").contains("fetch failed"), "{d}");
        assert!(
            requests.try_recv().is_err(),
            "a run without network reached the host"
        );
    });
    // The operator disabled network: asking for it is refused before anything runs.
    both_modes("enable_network: false\n", |s, ns| {
        let (status, body) = s.post(
            "/v1/sandbox/run",
            &json!({"language": "nodejs", "code": code, "enable_network": true}),
        );
        assert_eq!(status, 200);
        assert_eq!(body["code"], -400, "ns={ns}: {body}");
        assert_eq!(
            body["message"],
            "network is disabled, please enable it in the configuration"
        );
        let d = s.run_lang("nodejs", &code, false);
        assert_eq!(d["exit_code"], 3, "ns={ns}: {d}");
        assert!(requests.try_recv().is_err());
    });
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn dependencies_of_nodejs_are_an_empty_list() {
    let _exclusive = support::exclusive();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Server::start_over(
        support::node::fixture(),
        &format!("{LIMITS}worker_timeout: 3\n"),
        &[],
    );
    for path in [
        "/v1/sandbox/dependencies?language=nodejs",
        "/v1/sandbox/dependencies/refresh?language=nodejs",
    ] {
        let (status, body) = s.get(path, Some(KEY));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body,
            json!({"code": 0, "message": "success", "data": {"dependencies": []}}),
            "{path}"
        );
    }
    let (_, body) = s.get("/v1/sandbox/dependencies?language=python3", Some(KEY));
    assert_eq!(body["code"], 0, "{body}");
}

/// A copy of the test bundle whose nodejs environment sets `extra_env` (the rootfs is
/// hard-linked, the manifest rewritten).
fn bundle_with_env(dir: &Path, extra_env: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("seccomp")).unwrap();
    for e in std::fs::read_dir(support::node::fixture().bundle.join("seccomp")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("seccomp").join(e.file_name())).unwrap();
    }
    let mut m: Value = serde_json::from_slice(
        &std::fs::read(support::node::fixture().bundle.join("bundle.json")).unwrap(),
    )
    .unwrap();
    let rootfs = m["rootfs"]["file"].as_str().unwrap().to_owned();
    std::fs::hard_link(
        support::node::fixture().bundle.join(&rootfs),
        dir.join(&rootfs),
    )
    .unwrap();
    for (k, v) in extra_env {
        m["languages"]["nodejs"]["env"][k] = json!(v);
    }
    std::fs::write(dir.join("bundle.json"), m.to_string()).unwrap();
}

#[test]
#[cfg_attr(
    not(all(have_root, have_node, have_strace)),
    ignore = "needs root, node and strace"
)]
fn io_uring_is_refused_with_enosys_and_libuv_falls_back() {
    let _exclusive = support::exclusive();
    // Node 20.x keeps io_uring off unless UV_USE_IO_URING=1; with it on, libuv calls
    // io_uring_setup, gets ENOSYS from the policy, and does file I/O on its thread pool.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("bundle");
    bundle_with_env(&b, &[("UV_USE_IO_URING", "1")]);
    let script = dir.path().join("fs.js");
    std::fs::write(
        &script,
        "const fs = require('fs');\nfs.writeFile('f.txt', 'data', e => { if (e) throw e; fs.readFile('f.txt', 'utf8', (e, d) => { if (e) throw e; console.log('fs ok', d, process.env.UV_USE_IO_URING) }) })\n",
    )
    .unwrap();
    let trace = dir.path().join("strace.txt");
    let out = Command::new("strace")
        .args(["-f", "-e", "trace=io_uring_setup,io_uring_enter", "-o"])
        .arg(&trace)
        .arg(support::bin("runtime"))
        .args(["exec", "--language", "nodejs", "--bundle"])
        .arg(&b)
        .arg("--root")
        .arg(support::node::fixture().root)
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "fs ok data 1\n");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let setups: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("io_uring_setup("))
        .collect();
    assert!(!setups.is_empty(), "libuv never tried io_uring:\n{trace}");
    assert!(
        setups.iter().all(|l| l.contains("= -1 ENOSYS")),
        "io_uring_setup not refused with ENOSYS:\n{trace}"
    );
    assert!(!trace.contains("io_uring_enter("), "{trace}");
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn seccomp_show_and_dig_for_nodejs() {
    let _exclusive = support::exclusive();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(support::bin("prebake"))
        .args(["seccomp", "show", "--language", "nodejs"])
        .arg(support::repo_root().join("images/nodejs.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in ["io_uring_setup", "errno ENOSYS", "epoll_pwait", "eventfd2"] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }
    let io_uring_row = table
        .lines()
        .find(|l| l.starts_with("io_uring_setup"))
        .unwrap();
    assert!(io_uring_row.contains("errno ENOSYS"), "{io_uring_row}");

    // dig: a script inside the policy needs nothing; one that changes its priority is told
    // exactly which syscall to add.
    let dir = tempfile::tempdir().unwrap();
    let dig = |code: &str| {
        let script = dir.path().join("s.js");
        std::fs::write(&script, code).unwrap();
        let out = Command::new(support::bin("prebake"))
            .args(["dig", "--language", "nodejs", "--bundle"])
            .arg(support::node::fixture().bundle)
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = dig("const fs = require('fs'); fs.readFile('/etc/hosts', () => require('zlib').gzip('x', () => console.log('ok')))");
    assert!(ok.contains("nothing to add"), "{ok}");
    let prio = dig("try { require('os').setPriority(0, 10) } catch (e) { console.log(e.code) }");
    assert!(
        prio.contains("setpriority") && prio.contains("allow: [setpriority]"),
        "{prio}"
    );
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn python3_nodejs_image_builds_reproducibly() {
    let _exclusive = support::exclusive();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = support::repo_root().join(support::node::SPEC);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("first/out");
    let b = dir.path().join("second/deeper/out");
    support::node::prebake_build(&spec, &a, &[("TZ", "UTC")], 0o022);
    support::node::prebake_build(
        &spec,
        &b,
        &[("TZ", "Pacific/Kiritimati"), ("LANG", "C")],
        0o077,
    );
    let (a, b) = (a.join("bundle"), b.join("bundle"));
    let m: Value = serde_json::from_slice(&std::fs::read(a.join("bundle.json")).unwrap()).unwrap();
    let rootfs = m["rootfs"]["file"].as_str().unwrap();
    assert!(m["languages"]["nodejs"].is_object() && m["languages"]["python3"].is_object());
    assert_eq!(
        support::sha256_file(&a.join(rootfs)),
        support::sha256_file(&b.join(rootfs))
    );
    assert_eq!(
        std::fs::read(a.join("bundle.json")).unwrap(),
        std::fs::read(b.join("bundle.json")).unwrap()
    );
    for f in ["nodejs.json", "nodejs.bpf", "nodejs-net.bpf", "python3.bpf"] {
        assert_eq!(
            support::sha256_file(&a.join("seccomp").join(f)),
            support::sha256_file(&b.join("seccomp").join(f)),
            "{f}"
        );
    }
    // The recorded digest is the file's.
    assert_eq!(
        m["rootfs"]["sha256_compressed"],
        support::sha256_file(&a.join(rootfs))
    );
}

/// Latency of a trivial script through POST /v1/sandbox/run (both isolation modes) against
/// `node -e` on the host with the same arguments and environment as the sandbox (the host's
/// own environment may add work, e.g. NODE_EXTRA_CA_CERTS parses a CA bundle at start),
/// interleaved so that all three see the same machine load:
/// `cargo test --test it -- --ignored --nocapture node::bench`.
#[test]
#[ignore = "benchmark: cargo test --test it -- --ignored --nocapture node::bench"]
fn bench_trivial_node_script() {
    let _exclusive = support::exclusive();
    support::bench_needs(cfg!(all(have_root, have_node)), "root and node");
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let node = support::which("node").unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(support::node::fixture().bundle.join("bundle.json")).unwrap(),
    )
    .unwrap();
    let lang = &m["languages"]["nodejs"];
    let args: Vec<String> = serde_json::from_value(lang["args"].clone()).unwrap();
    let env: std::collections::BTreeMap<String, String> =
        serde_json::from_value(lang["env"].clone()).unwrap();
    let servers: Vec<(bool, Server)> = [true, false]
        .into_iter()
        .map(|ns| {
            (
                ns,
                Server::start_over(
                    support::node::fixture(),
                    &format!("max_workers: 1\nnamespaces: {ns}\n"),
                    &[],
                ),
            )
        })
        .collect();
    let ag = support::runtime::agent();
    let mut host = Vec::new();
    let mut api: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
    for i in 0..n + 5 {
        let t = Instant::now();
        let out = Command::new(&node)
            .args(&args)
            .args(["-e", "console.log(1)"])
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        let took = t.elapsed();
        assert_eq!(out.stdout, b"1\n");
        if i >= 5 {
            host.push(took);
        }
        for (k, (_, s)) in servers.iter().enumerate() {
            let t = Instant::now();
            let mut r = ag
                .post(&s.url("/v1/sandbox/run"))
                .header("X-Api-Key", KEY)
                .send_json(json!({"language": "nodejs", "code": "console.log(1)"}))
                .unwrap();
            let body = r.body_mut().read_to_string().unwrap();
            let took = t.elapsed();
            assert!(body.contains("\"stdout\":\"1\\n\""), "{body}");
            if i >= 5 {
                api[k].push(took);
            }
        }
    }
    println!(
        "nodejs console.log(1), n={n}: host `node -e` p50 {:.1} ms p99 {:.1} ms",
        support::percentile_ms(&mut host, 0.5),
        support::percentile_ms(&mut host, 0.99)
    );
    for (k, (ns, _)) in servers.iter().enumerate() {
        println!(
            "nodejs console.log(1), n={n}: API (namespaces: {ns}) p50 {:.1} ms p99 {:.1} ms",
            support::percentile_ms(&mut api[k], 0.5),
            support::percentile_ms(&mut api[k], 0.99)
        );
    }
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn node_cannot_name_its_parent() {
    let _exclusive = support::exclusive();
    // Without a pid namespace getppid named the server; now it answers 0 in both modes, as
    // for the first process of a pid namespace. node's start-up capget (which could name any
    // pid) is refused there, and node runs all the same.
    both_modes("", |s, ns| {
        let d = s.run_js("console.log(process.ppid, process.pid > 0)");
        assert_eq!(d["stdout"], "0 true\n", "ns={ns}: {d}");
    });
}
