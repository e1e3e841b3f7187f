//! dify-sandbox's shipped `conf/config.yaml` files (tests/fixtures/dify-sandbox/, keys and
//! values as shipped) build with `prebake build --dify-config` and serve with `runtime serve
//! --config` unchanged, with dify-sandbox's environment overrides (`PYTHON_PATH` names this
//! machine's interpreter, `API_KEY` the secret), and Dify's Python runner works against them
//! with `enable_network: true` as Dify sends it, without any `enable_network` setting of ours.

use crate::support;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3.11";

#[test]
#[cfg_attr(
    not(all(have_root, have_debian_python)),
    ignore = "needs root and /usr/bin/python3.11"
)]
fn shipped_configs_build_and_serve_unchanged() {
    let _exclusive = support::exclusive();
    for version in ["main", "0.2.10"] {
        let config = support::repo_root()
            .join("tests/fixtures/dify-sandbox")
            .join(version)
            .join("conf/config.yaml");
        // Outside /tmp, which the sandbox masks with its own.
        let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let out = work.path().join("out");
        // A python_lib_path entry that is a whole site-packages: its distributions are listed.
        let site = work.path().join("lib/site-packages");
        let dist_info = site.join("prebake_fake_dist-1.2.3.dist-info");
        std::fs::create_dir_all(&dist_info).unwrap();
        std::fs::write(
            dist_info.join("METADATA"),
            "Metadata-Version: 2.1\nName: prebake-fake-dist\nVersion: 1.2.3\n\nbody\n",
        )
        .unwrap();
        let o = Command::new(support::bin("prebake"))
            .args(["build", "--no-image", "--dify-config"])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .env("PYTHON_PATH", PYTHON)
            .env("PYTHON_LIB_PATH", &site)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{version}: build failed:\n{stderr}");
        assert!(!stderr.contains("unknown key"), "{version}:\n{stderr}");

        let (mut child, port) = serve(
            work.path(),
            &out.join("bundle"),
            &["--config".as_ref(), config.as_os_str()],
            &[("API_KEY", "a-secret-key")],
        );
        // Dify's Python runner, as its client wraps it, with the flag it always sends.
        let inputs =
            support::runtime::b64::encode(br#"{"name": "d\u00e9j\u00e0", "n": [1, {"k": 2}]}"#);
        let code = format!(
            "def main(name: str, n: list) -> dict:\n    return {{'greeting': 'hi ' + name, 'n': n}}\n\
             import json\nfrom base64 import b64decode\n\
             inputs_obj = json.loads(b64decode('{inputs}').decode('utf-8'))\n\
             output_obj = main(**inputs_obj)\n\
             output_json = json.dumps(output_obj, indent=4)\n\
             result = f'''<<RESULT>>{{output_json}}<<RESULT>>'''\nprint(result)\n"
        );
        let data = dify_run(port, "a-secret-key", "python3", &code);
        let result: Value = serde_json::from_str(&result_of(&data)).unwrap();
        assert_eq!(
            result,
            json!({"greeting": "hi déjà", "n": [1, {"k": 2}]}),
            "{version}"
        );
        let agent = support::runtime::agent();
        let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
        let mut r = agent
            .get(url("/v1/sandbox/dependencies?language=python3"))
            .header("X-Api-Key", "a-secret-key")
            .call()
            .unwrap();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert!(
            v["data"]["dependencies"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "prebake-fake-dist", "version": "1.2.3"})),
            "{version}: {v}"
        );
        let log_text = std::fs::read_to_string(work.path().join("server.log")).unwrap_or_default();
        // The build-time key is named once, as a warning that says where it belongs.
        assert!(log_text.contains("python_path"), "{version}: {log_text}");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(libc::pid_t::try_from(child.id()).unwrap(), libc::SIGTERM) };
        let _ = child.wait();
    }
}

#[test]
fn serve_help_lists_every_setting() {
    let _exclusive = support::exclusive();
    let o = Command::new(support::bin("runtime"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    // Every environment variable `runtime serve` reads (src/runtime/config.rs).
    let config_src =
        std::fs::read_to_string(support::repo_root().join("src/runtime/config.rs")).unwrap();
    let mut checked = 0;
    for line in config_src.lines().filter(|l| l.contains("src.")) {
        let names: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        for name in names {
            assert!(
                help.contains(name),
                "`runtime serve --help` lacks {name}:\n{help}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} names found in config.rs");
    assert!(help.contains("true, as dify-sandbox ships it"), "{help}");
}

/// `runtime serve ARGS` over `bundle` with a root in `work` and `env`; waits until healthy.
/// Returns the child and its port.
fn serve(
    work: &std::path::Path,
    bundle: &std::path::Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (std::process::Child, u16) {
    serve_wrapped(work, bundle, args, env, &[])
}

/// [`serve`], with `runtime serve ...` run as the arguments of `wrapper` (`setpriv ...`).
fn serve_wrapped(
    work: &std::path::Path,
    bundle: &std::path::Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    wrapper: &[&str],
) -> (std::process::Child, u16) {
    let port = support::free_port();
    let log = work.join("server.log");
    let mut cmd = support::runtime::runtime_command(wrapper);
    cmd.arg("serve")
        .arg("--bundle")
        .arg(bundle)
        .arg("--root")
        .arg(work.join("root"))
        .args(args)
        .env_remove("ENABLE_NETWORK")
        .env("SANDBOX_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let agent = support::runtime::agent();
    let start = Instant::now();
    while agent
        .get(format!("http://127.0.0.1:{port}/health"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never healthy:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// POST /v1/sandbox/run as Dify's client does; returns `data`.
fn dify_run(port: u16, key: &str, language: &str, code: &str) -> Value {
    let mut r = support::runtime::agent()
        .post(format!("http://127.0.0.1:{port}/v1/sandbox/run"))
        .header("X-Api-Key", key)
        .send_json(
            json!({"language": language, "code": code, "preload": "", "enable_network": true}),
        )
        .unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["data"]["error"], "", "{v}");
    v["data"].clone()
}

/// The text between Dify's `<<RESULT>>` markers.
fn result_of(data: &Value) -> String {
    let stdout = data["stdout"].as_str().unwrap();
    stdout
        .split("<<RESULT>>")
        .nth(1)
        .unwrap_or_else(|| panic!("no result in {data}"))
        .to_string()
}

#[test]
#[cfg_attr(not(all(have_root, have_node)), ignore = "needs root and node")]
fn default_image_runs_difys_three_runners() {
    let _exclusive = support::exclusive();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = work.path().join("out");
    // `prebake build` with no spec, as the README's first command.
    let o = Command::new(support::bin("prebake"))
        .args(["build", "--no-image", "--out"])
        .arg(&out)
        .current_dir(support::repo_root())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "default build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Cold runs, then runs forked from the warm pool's zygote (the default); as root, then
    // started by a user that is not root (rootless mode, which unpacks the rootfs itself).
    let user = support::runtime::rootless_user();
    let setpriv = user.setpriv();
    let as_user: Vec<&str> = setpriv.iter().map(String::as_str).collect();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (warm, rootless) in [
        ("false", false),
        ("true", false),
        ("false", true),
        ("true", true),
    ] {
        let dir = work.path().join(format!("warm-{warm}-rootless-{rootless}"));
        std::fs::create_dir_all(&dir).unwrap();
        if rootless {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
        }
        let key = "a-secret-key";
        let (mut child, port) = serve_wrapped(
            &dir,
            &out.join("bundle"),
            &[],
            &[("API_KEY", key), ("SANDBOX_WARM_POOL", warm)],
            if rootless { &as_user } else { &[] },
        );
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
        assert_eq!(
            log.contains("rootless=yes"),
            rootless,
            "rootless={rootless}:\n{log}"
        );
        if warm == "true" {
            support::runtime::wait_until_logged(
                &dir.join("server.log"),
                &[support::runtime::WARM_POOL_READY],
                "no zygote",
            );
        }
        runs_difys_three_runners(port, key, warm == "true");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(libc::pid_t::try_from(child.id()).unwrap(), libc::SIGTERM) };
        let _ = child.wait();
    }
}

fn runs_difys_three_runners(port: u16, key: &str, warm: bool) {
    let inputs =
        r#"{"name": "Zo\u00eb \u2603", "items": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]}"#;
    let b64 = support::runtime::b64::encode(inputs.as_bytes());

    // python3: Dify's runner around a main(**inputs).
    let py = format!(
        r#"def main(name: str, items: list) -> dict:
    return {{'hello': name, 'total': sum(i['v'] for i in items)}}
import json
from base64 import b64decode
inputs_obj = json.loads(b64decode('{b64}').decode('utf-8'))
output_obj = main(**inputs_obj)
output_json = json.dumps(output_obj, indent=4)
result = f'''<<RESULT>>{{output_json}}<<RESULT>>'''
print(result)
"#
    );
    let r: Value = serde_json::from_str(&result_of(&dify_run(port, key, "python3", &py))).unwrap();
    assert_eq!(r, json!({"hello": "Zoë ☃", "total": 3}));

    // javascript: Dify's runner around main(inputs).
    let js = format!(
        r#"function main({{name, items}}) {{
  return {{hello: name, keys: items.map(i => i.k)}};
}}
var inputs_obj = JSON.parse(Buffer.from('{b64}', 'base64').toString('utf-8'))
var output_obj = main(inputs_obj)
var output_json = JSON.stringify(output_obj)
var result = `<<RESULT>>${{output_json}}<<RESULT>>`
console.log(result)
"#
    );
    let r: Value = serde_json::from_str(&result_of(&dify_run(port, key, "nodejs", &js))).unwrap();
    assert_eq!(r, json!({"hello": "Zoë ☃", "keys": ["a", "b"]}));

    // jinja2: Dify's template transformer runs as python3 code that imports jinja2.
    let template = support::runtime::b64::encode(
        b"Hi {{ name | upper }}!{% for i in items %} {{ loop.index }}:{{ i.k }}={{ i.v * 10 }}{% endfor %}",
    );
    let j2 = format!(
        r#"def main(**inputs):
    import jinja2
    from base64 import b64decode
    template = jinja2.Template(b64decode('{template}').decode('utf-8'))
    return template.render(**inputs)
import json
from base64 import b64decode
inputs_obj = json.loads(b64decode('{b64}').decode('utf-8'))
output = main(**inputs_obj)
result = f'''<<RESULT>>{{output}}<<RESULT>>'''
print(result)
"#
    );
    assert_eq!(
        result_of(&dify_run(port, key, "python3", &j2)),
        "Hi ZOË ☃! 1:a=10 2:b=20"
    );

    // What Dify's nodes import is there.
    let d = dify_run(
        port,
        key,
        "python3",
        "import jinja2, requests, httpx, socks, socksio\nprint('ok')\n",
    );
    assert_eq!(d["stdout"], "ok\n");
    // And the runs above took the path asked for: a fork of the zygote has its preload list.
    let d = dify_run(
        port,
        key,
        "python3",
        "import sys\nprint('jinja2' in sys.modules)\n",
    );
    assert_eq!(d["stdout"], if warm { "True\n" } else { "False\n" });
}

/// A spec naming `requirements` (written beside it) fails to build with a message containing
/// every one of `expect`, and leaves no output.
fn requirements_build_fails(requirements: &str, env: &[(&str, &str)], expect: &[&str]) {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(work.path().join("reqs.txt"), requirements).unwrap();
    std::fs::write(
        work.path().join("spec.yaml"),
        "languages:\n  python3:\n    interpreter: python3\n    requirements: reqs.txt\n",
    )
    .unwrap();
    let out = work.path().join("out");
    let mut cmd = Command::new(support::bin("prebake"));
    cmd.arg("build")
        .arg(work.path().join("spec.yaml"))
        .args(["--no-image", "--out"])
        .arg(&out)
        // A cache of its own: the failed venv must not linger in the shared one either.
        .env("PREBAKE_CACHE_DIR", work.path().join("cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "built anyway:\n{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "`{e}` missing from:\n{stderr}");
    }
    assert!(!out.exists(), "a failed build left {}", out.display());
    let venvs = work.path().join("cache/venvs");
    let left: Vec<_> = std::fs::read_dir(&venvs)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "half-installed venvs left: {left:?}");
}

#[test]
fn bad_requirements_fail_the_build_clearly() {
    let _exclusive = support::exclusive();
    // Checked before anything is installed.
    requirements_build_fails(
        "idna==3.10 --hash=sha256:00\nrequests>=2\n",
        &[],
        &["reqs.txt:2:", "`requests>=2` is not pinned"],
    );
    // A hash that is not the wheel's.
    let bad_hash = "idna==3.10 --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    requirements_build_fails(bad_hash, &[], &["reqs.txt", "pip install failed", "HASH"]);
    // An index that cannot be reached (offline).
    requirements_build_fails(
        bad_hash,
        &[("PIP_INDEX_URL", "http://127.0.0.1:9/simple")],
        &["reqs.txt", "pip install failed", "Connection refused"],
    );
    // No wheel for this interpreter (PyYAML 5.1 predates CPython 3.11's wheels).
    requirements_build_fails(
        "PyYAML==5.1 --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
        &[],
        &[
            "reqs.txt",
            "pip install failed",
            "Could not find a version that satisfies the requirement PyYAML==5.1",
        ],
    );
}

/// The Containerfile's helpers under Debian's Python 3.11.2 (its tarfile has no `filter=`):
/// PIP_PACKAGES become the spec's packages, and the image unpacks into its two layers.
#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn containerfile_helpers_work_with_debian_python() {
    let _exclusive = support::exclusive();
    let root = support::repo_root();
    let o = Command::new(PYTHON)
        .arg(root.join("Containerfile.d/select_packages.py"))
        .arg(root.join("images/python3.yaml"))
        .arg("/opt/venv/bin/python")
        .arg("numpy jinja2[i18n]>=3 requests==2.32.3")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec_text = String::from_utf8(o.stdout).unwrap();
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(work.path().join("spec.yaml"), &spec_text).unwrap();
    let spec = prebake::spec::ImageSpec::load(&work.path().join("spec.yaml")).unwrap();
    let py = &spec.languages[&prebake::spec::Language::Python3];
    assert_eq!(py.interpreter, "/opt/venv/bin/python");
    assert_eq!(py.packages, ["numpy", "jinja2", "requests"]);

    let out = work.path().join("out");
    let o = Command::new(support::bin("prebake"))
        .arg("build")
        .arg(root.join("images/python3.yaml"))
        .args(["--layer-compression", "gzip", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let layers = work.path().join("layers");
    let o = Command::new(PYTHON)
        .arg(root.join("Containerfile.d/unpack_layers.py"))
        .arg(out.join("image"))
        .arg(&layers)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(layers.join("0/usr/local/bin/runtime").is_file());
    assert!(layers.join("1/opt/prebake/bundle/bundle.json").is_file());
    assert!(!layers.join("2").exists());
}

#[test]
fn a_missing_bundle_names_the_flag_and_the_image_path() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(support::bin("runtime"))
        .args(["unpack", "--bundle"])
        .arg(dir.path().join("nowhere"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--bundle") && stderr.contains("/opt/prebake/bundle"),
        "{stderr}"
    );
}
