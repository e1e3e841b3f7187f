//! `runtime serve`: every row of shared/api.md, Dify's runner, output fidelity, config.

use crate::support;
use crate::support::runtime::{Server, KEY};
use serde_json::{json, Value};
use std::time::Duration;

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn auth_and_bad_requests() {
    let _exclusive = support::exclusive();
    // Network is on by default (as dify-sandbox ships it); the operator turns it off here.
    let s = Server::start("enable_network: false\n", &[]);
    let ag = support::runtime::agent();
    let body = json!({"language": "python3", "code": "print(1)"});
    // 401 without and with a wrong key, on every /v1 route.
    for key in [None, Some("wrong"), Some("")] {
        let mut req = ag.post(&s.url("/v1/sandbox/run"));
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        assert_eq!(req.send_json(&body).unwrap().status().as_u16(), 401);
        assert_eq!(
            s.get("/v1/sandbox/dependencies?language=python3", key).0,
            401
        );
        assert_eq!(
            s.get("/v1/sandbox/dependencies/refresh?language=python3", key)
                .0,
            401
        );
    }
    // 400: body that does not parse, misses fields, or names an unknown language.
    let raw = |text: &str| {
        let mut r = ag
            .post(&s.url("/v1/sandbox/run"))
            .header("X-Api-Key", KEY)
            .header("Content-Type", "application/json")
            .send(text)
            .unwrap();
        let st = r.status().as_u16();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        (st, v)
    };
    for (text, needle) in [
        ("{not json", "not valid JSON"),
        ("[1,2]", "JSON object"),
        (r#"{"code": "print(1)"}"#, "language"),
        (r#"{"language": "python3"}"#, "code"),
        (r#"{"language": "python3", "code": ""}"#, "code"),
        (r#"{"language": "python3", "code": 5}"#, "code"),
    ] {
        let (st, v) = raw(text);
        assert_eq!(st, 400, "{text}: {v}");
        assert_eq!(v["code"], -400, "{text}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{text}: {v}"
        );
    }
    for lang in ["ruby", "nodejs"] {
        // nodejs is a dify language, but this bundle has no node: unsupported too.
        let (st, v) = s.post(
            "/v1/sandbox/run",
            &json!({"language": lang, "code": "print(1)"}),
        );
        assert_eq!(
            (st, &v["code"], &v["message"]),
            (400, &json!(-400), &json!("unsupported language")),
            "{v}"
        );
    }
    // Network requested while the operator disabled it: 200 with code -400.
    let (st, v) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": "print(1)", "enable_network": true}),
    );
    assert_eq!(st, 200);
    assert_eq!(v["code"], -400);
    assert_eq!(
        v["message"],
        "network is disabled, please enable it in the configuration"
    );
    // Dependencies from the bundle.
    let (st, v) = s.get("/v1/sandbox/dependencies?language=python3", Some(KEY));
    assert_eq!(st, 200);
    assert_eq!(
        v,
        json!({"code": 0, "message": "success", "data": {"dependencies": [{"name": "prebake-test-dist", "version": "1.0"}]}})
    );
    let (_, v2) = s.get(
        "/v1/sandbox/dependencies/refresh?language=python3",
        Some(KEY),
    );
    assert_eq!(v, v2);
    let (st, v) = s.post(
        "/v1/sandbox/dependencies/update",
        &json!({"language": "python3"}),
    );
    assert_eq!(
        (st, v),
        (200, json!({"code": 0, "message": "success", "data": {}}))
    );
    let (st, v) = s.get("/v1/sandbox/dependencies?language=cobol", Some(KEY));
    assert_eq!((st, &v["message"]), (400, &json!("unsupported language")));
    // The log has one structured line per request.
    let log = s.log();
    assert!(log.contains("path=/v1/sandbox/run status=401"), "{log}");
    assert!(log.contains("capabilities: root=yes"), "{log}");
    assert_eq!(s.stop().code(), Some(0));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn dify_runner_outputs_and_errors() {
    let _exclusive = support::exclusive();
    let s = Server::start("", &[]);
    // Dify's Python runner with inputs.
    use support::runtime::b64::encode;
    let inputs = json!({"a": 2, "b": "x"});
    let user = "def main(a: int, b: str) -> dict:\n    return {'result': a * 21, 'text': b * 3, 'ü': [1, None]}\n";
    let code = format!(
        "{user}\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('{}').decode('utf-8'))\noutput_obj = main(**inputs_obj)\noutput_json = json.dumps(output_obj, indent=4)\nresult = f'''<<RESULT>>{{output_json}}<<RESULT>>'''\nprint(result)\n",
        encode(inputs.to_string().as_bytes())
    );
    let d = s.run_py(&code);
    assert_eq!(d["error"], "", "{d}");
    assert_eq!(d["exit_code"], 0);
    let out = d["stdout"].as_str().unwrap();
    let inner = out.split("<<RESULT>>").nth(1).expect("result markers");
    let v: Value = serde_json::from_str(inner).unwrap();
    assert_eq!(v, json!({"result": 42, "text": "xxx", "ü": [1, null]}));

    // 300 KB of stdout, byte-exact.
    let expected: String = (0..300_000u32)
        .map(|i| {
            if i % 97 == 96 {
                '\n'
            } else {
                char::from(32 + (i * 7 % 95) as u8)
            }
        })
        .collect();
    let d = s.run_py(
        "import sys\nsys.stdout.write(''.join('\\n' if i % 97 == 96 else chr(32 + (i * 7 % 95)) for i in range(300000)))\n",
    );
    assert_eq!(d["error"], "");
    assert!(
        d["stdout"].as_str().unwrap() == expected,
        "300 KB stdout differs"
    );

    // An exception: non-zero exit, traceback in stderr, error text.
    let d = s.run_py("def f():\n    raise ValueError('boom')\nprint('before')\nf()\n");
    assert_eq!(d["exit_code"], 1);
    assert_eq!(d["stdout"], "before\n");
    let stderr = d["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("Traceback") && stderr.contains("ValueError: boom"),
        "{stderr}"
    );
    let err = d["error"].as_str().unwrap();
    assert!(err.starts_with("process exited with code 1\n"), "{err}");
    assert!(err.ends_with(stderr), "{err}");

    // sys.exit code and logging to stderr only.
    let d = s.run_py("import logging, sys\nlogging.basicConfig(level=logging.INFO)\nlogging.info('log-line')\nprint('out')\nsys.exit(7)\n");
    assert_eq!(d["stdout"], "out\n");
    assert!(d["stderr"].as_str().unwrap().contains("log-line"));
    assert_eq!(d["exit_code"], 7);
    assert!(d["error"]
        .as_str()
        .unwrap()
        .starts_with("process exited with code 7\n"));

    // Preload is ignored unless the operator enables it.
    let (_, v) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": "print(X)", "preload": "X = 5"}),
    );
    assert!(
        v["data"]["stderr"].as_str().unwrap().contains("NameError"),
        "{v}"
    );
    assert_eq!(s.stop().code(), Some(0));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn preload_runs_inside_the_sandbox() {
    let _exclusive = support::exclusive();
    let s = Server::start("enable_preload: true\n", &[]);
    let (_, v) = s.post(
        "/v1/sandbox/run",
        &json!({"language": "python3", "code": "print(X, os.getuid() >= 65537)", "preload": "import os\nX = 5"}),
    );
    assert_eq!(v["data"]["stdout"], "5 True\n", "{v}");
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn too_many_requests_and_graceful_shutdown() {
    let _exclusive = support::exclusive();
    let s = Server::start("max_workers: 1\nmax_requests: 2\nworker_timeout: 10\n", &[]);
    let url = s.url("/v1/sandbox/run");
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut r = support::runtime::agent()
                    .post(&url)
                    .header("X-Api-Key", KEY)
                    .send_json(json!({"language": "python3", "code": "import time\ntime.sleep(1)\nprint('slept')"}))
                    .unwrap();
                let st = r.status().as_u16();
                let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                (st, v)
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy = results.iter().filter(|(st, _)| *st == 503).count();
    let ok = results.iter().filter(|(st, _)| *st == 200).count();
    assert!(busy >= 1 && ok >= 2 && busy + ok == 5, "{results:?}");
    for (st, v) in &results {
        if *st == 503 {
            assert_eq!(
                (&v["code"], &v["message"]),
                (&json!(-503), &json!("Too many requests"))
            );
        } else {
            assert_eq!(v["data"]["stdout"], "slept\n", "{v}");
        }
    }

    // SIGTERM while a run is in flight: the run finishes, then the server exits 0.
    let url2 = url.clone();
    let inflight = std::thread::spawn(move || {
        let mut r = support::runtime::agent()
            .post(&url2)
            .header("X-Api-Key", KEY)
            .send_json(json!({"language": "python3", "code": "import time\ntime.sleep(1)\nprint('finished')"}))
            .unwrap();
        r.body_mut().read_to_string().unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = s.stop();
    assert_eq!(status.code(), Some(0));
    let body = inflight.join().unwrap();
    assert!(body.contains("finished"), "{body}");
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn config_rules() {
    let _exclusive = support::exclusive();
    // An empty key refuses to start, naming the key and the variable.
    let out = std::process::Command::new(support::bin("runtime"))
        .args(["serve", "--config", "/nonexistent/config.yaml"])
        .arg("--bundle")
        .arg(support::runtime::bundle())
        .env_remove("API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A missing explicit --config is an error; with no file and no API_KEY the key is empty.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::bin("runtime"))
        .arg("serve")
        .arg("--bundle")
        .arg(support::runtime::bundle())
        .current_dir(dir.path())
        .env_remove("API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("API_KEY") && err.contains("app.key"), "{err}");

    // The default key and build-time keys are warned about; env wins over the file.
    let s = Server::start(
        "python_lib_path: [/usr/lib]\nallowed_syscalls: [1]\n",
        &[("API_KEY", "dify-sandbox")],
    );
    let log = s.log();
    assert!(log.contains("public default `dify-sandbox`"), "{log}");
    assert!(log.contains("python_lib_path ignored"), "{log}");
    assert!(log.contains("allowed_syscalls [1] ignored"), "{log}");
    // The key from the environment is the one in force.
    let mut r = support::runtime::agent()
        .post(&s.url("/v1/sandbox/run"))
        .header("X-Api-Key", "dify-sandbox")
        .send_json(json!({"language": "python3", "code": "print(1)"}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("\"stdout\":\"1\\n\""));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn request_body_limit_is_explicit() {
    let _exclusive = support::exclusive();
    let s = Server::start("limits:\n  request_bytes: 1048576\n", &[]);
    let ag = support::runtime::agent();
    let post = |key: &str, code: String| {
        ag.post(&s.url("/v1/sandbox/run"))
            .header("X-Api-Key", key)
            .send_json(json!({"language": "python3", "code": code}))
            .unwrap()
            .status()
            .as_u16()
    };
    // Under the limit: runs (a large comment, then a print).
    let under = format!("#{}\nprint(1)\n", "x".repeat(900 << 10));
    assert_eq!(post(KEY, under), 200);
    // Over it: 413; a wrong key is refused first, before the body is looked at.
    let over = format!("#{}\nprint(1)\n", "x".repeat(2 << 20));
    assert_eq!(post(KEY, over.clone()), 413);
    assert_eq!(post("wrong", over), 401);
    assert_eq!(s.stop().code(), Some(0));
}
