//! Shared helpers for the Node.js tests: the python3+nodejs bundle built by the real
//! `prebake build` from `images/python3-nodejs.yaml`, its unpacked root, and a `runtime serve`
//! child with an HTTP client (the same shape as `runtime_common`, over this bundle).
#![allow(dead_code)]

use prebake::bundle::{BundleManifest, SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const KEY: &str = "node-test-key-0123456789";
pub const SPEC: &str = "images/python3-nodejs.yaml";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-fixture")
}

/// `prebake build SPEC --out OUT` with extra environment and a umask; panics with the
/// build's stderr on failure.
pub fn prebake_build(spec: &Path, out: &Path, env: &[(&str, &str)], umask: u32) {
    // The umask is set in the child only (it is process-wide); `sh` keeps it through exec.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "umask {umask:03o} && exec \"$0\" build \"$1\" --out \"$2\""
        ))
        .arg(super::common::bin("prebake"))
        .arg(spec)
        .arg(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("spawn prebake");
    assert!(
        o.status.success(),
        "prebake build {} failed:\n{}",
        spec.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The test bundle: built once per test process, and again whenever `prebake` is newer.
pub fn bundle() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let dir = fixture_dir().join("bundle");
        let stale = match (
            std::fs::metadata(dir.join("bundle.json")).and_then(|m| m.modified()),
            std::fs::metadata(super::common::bin("prebake")).and_then(|m| m.modified()),
        ) {
            (Ok(built), Ok(bin)) => built < bin,
            _ => true,
        };
        if stale {
            let tmp = fixture_dir().join(format!("build-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            prebake_build(
                &super::common::repo_root().join(SPEC),
                &tmp.join("out"),
                &[],
                0o022,
            );
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(tmp.join("out/bundle"), &dir).unwrap();
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

/// The sandbox root, unpacked once before any server starts.
pub fn root() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let root = fixture_dir().join("root");
        let manifest = BundleManifest::load(bundle()).unwrap();
        prebake::runtime::unpack::unpack_bundle(bundle(), &manifest, &root).unwrap();
        root
    })
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A `runtime serve` child over the python3+nodejs bundle.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Server {
    /// Start with `config` (YAML; `app.port` and `app.key` are added) and wait for /health.
    pub fn start(config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(
            &cfg,
            format!("app:\n  port: {port}\n  key: {KEY}\n{config}"),
        )
        .unwrap();
        let child = Command::new(super::common::bin("runtime"))
            .arg("serve")
            .arg("--bundle")
            .arg(bundle())
            .arg("--root")
            .arg(root())
            .arg("--config")
            .arg(&cfg)
            .env_remove("API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let s = Server {
            child,
            port,
            dir,
            agent: agent(),
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let ok = s
                .agent
                .get(&s.url("/health"))
                .call()
                .is_ok_and(|r| r.status().as_u16() == 200);
            if ok {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server never became healthy; log:\n{}", s.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POST a JSON body with the key; returns (HTTP status, body JSON).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut r = self
            .agent
            .post(&self.url(path))
            .header("X-Api-Key", KEY)
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut r = self
            .agent
            .get(&self.url(path))
            .header("X-Api-Key", KEY)
            .call()
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Run code of `language`; returns `data` after checking the envelope is a success.
    pub fn run_lang(&self, language: &str, code: &str, network: bool) -> Value {
        let (status, body) = self.post(
            "/v1/sandbox/run",
            &json!({"language": language, "code": code, "enable_network": network}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["code"], 0, "{body}");
        body["data"].clone()
    }

    pub fn run_js(&self, code: &str) -> Value {
        self.run_lang("nodejs", code, false)
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("server did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose real uid is in the sandbox pool, after waiting up to 5 s for them to go.
pub fn leftover_pool_processes() -> Vec<(u32, u32)> {
    let start = Instant::now();
    loop {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
                continue;
            };
            let uid = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse::<u32>().ok())
                .unwrap_or(0);
            if (SANDBOX_UID_BASE..SANDBOX_UID_BASE + SANDBOX_UID_COUNT).contains(&uid) {
                found.push((pid, uid));
            }
        }
        if found.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
