//! Shared helpers for the `runtime` integration tests: the test bundle (ONE fixture function,
//! [`build_bundle`], so it can be switched to `prebake build` in one place) and a running
//! `runtime serve` with an HTTP client.
#![allow(dead_code)]

use prebake::bundle::{
    BundleManifest, Distribution, LanguageInfo, RootfsInfo, SeccompFiles, FORMAT_VERSION,
    SANDBOX_UID_BASE, SANDBOX_UID_COUNT,
};
use prebake::seccomp::install::{Programs, SockFilter};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PYTHON: &str = "/usr/bin/python3.11";
pub const KEY: &str = "test-key-0123456789";

/// The test bundle, built once per machine (cached under cargo's target tmp dir).
pub fn bundle() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runtime-bundle-v1");
        if !dir.join("bundle.json").exists() {
            let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            build_bundle(&tmp);
            // Another test binary may have won the race; either copy is fine.
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        dir
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Shared objects `ldd` says `path` loads.
fn ldd(path: &Path, into: &mut BTreeSet<PathBuf>) {
    for line in run(Command::new("ldd").arg(path)).lines() {
        let line = line.trim();
        let p = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
            None => line.split(' ').next().unwrap_or(""),
        };
        if p.starts_with('/') {
            into.insert(PathBuf::from(p));
        }
    }
}

/// Copy host path `src` to the same absolute path under `rootfs`, recreating symlinked
/// directories (merged /usr: /lib -> usr/lib) as symlinks and copying symlink targets too.
fn copy_in(rootfs: &Path, src: &Path) {
    let rel = |p: &Path| rootfs.join(p.strip_prefix("/").unwrap());
    let mut cur = PathBuf::from("/");
    let parent = src.parent().unwrap();
    for comp in parent.components().skip(1) {
        let next = cur.join(comp);
        let meta = std::fs::symlink_metadata(&next).unwrap();
        if meta.file_type().is_symlink() {
            let dest = rel(&next);
            if std::fs::symlink_metadata(&dest).is_err() {
                std::os::unix::fs::symlink(std::fs::read_link(&next).unwrap(), &dest).unwrap();
            }
            cur = std::fs::canonicalize(&next).unwrap();
            std::fs::create_dir_all(rel(&cur)).unwrap();
        } else {
            std::fs::create_dir_all(rel(&next)).unwrap();
            cur = next;
        }
    }
    let leaf = cur.join(src.file_name().unwrap());
    let dest = rel(&leaf);
    if std::fs::symlink_metadata(&dest).is_err() {
        run(Command::new("cp").arg("-a").arg(&leaf).arg(&dest));
    }
    if std::fs::symlink_metadata(&leaf)
        .unwrap()
        .file_type()
        .is_symlink()
    {
        copy_in(rootfs, &std::fs::canonicalize(&leaf).unwrap());
    }
}

/// The fixture: Debian's python3.11 and its stdlib, the libraries it and lib-dynload need
/// (copied with their absolute paths and symlinks), /etc stubs, /tmp, /dev, a seccomp
/// program pair and bundle.json with compression "none".
pub fn build_bundle(out: &Path) {
    let rootfs = out.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut libs = BTreeSet::new();
    ldd(Path::new(PYTHON), &mut libs);
    for e in std::fs::read_dir("/usr/lib/python3.11/lib-dynload").unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "so") {
            ldd(&p, &mut libs);
        }
    }
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    paths.insert(PYTHON.into());
    paths.insert("/usr/lib/python3.11".into());
    for l in libs {
        paths.insert(l);
    }
    for p in &paths {
        copy_in(&rootfs, p);
    }
    let _ = std::fs::remove_dir_all(rootfs.join("usr/lib/python3.11/test"));

    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let mut passwd = String::from("root:x:0:0:root:/root:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    for uid in SANDBOX_UID_BASE..SANDBOX_UID_BASE + SANDBOX_UID_COUNT {
        passwd.push_str(&format!(
            "sandbox{uid}:x:{uid}:{uid}::/tmp:/usr/sbin/nologin\n"
        ));
        group.push_str(&format!("sandbox{uid}:x:{uid}:\n"));
    }
    std::fs::write(etc.join("passwd"), passwd).unwrap();
    std::fs::write(etc.join("group"), group).unwrap();
    for (d, mode) in [("tmp", 0o1777), ("dev", 0o755)] {
        use std::os::unix::fs::PermissionsExt;
        let p = rootfs.join(d);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    // Permissive but real: check the arch, kill the process on ptrace, allow the rest.
    let ins = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let prog = vec![
        ins(0x20, 0, 0, 4),           // ld arch
        ins(0x15, 0, 3, 0xc000_003e), // jeq x86_64 ? next : kill
        ins(0x20, 0, 0, 0),           // ld nr
        ins(0x15, 1, 0, 101),         // jeq ptrace ? kill : allow
        ins(0x06, 0, 0, 0x7fff_0000), // allow
        ins(0x06, 0, 0, 0x8000_0000), // kill process
    ];
    let sec = out.join("seccomp");
    std::fs::create_dir_all(&sec).unwrap();
    let bytes = Programs::to_bytes(&[prog]);
    std::fs::write(sec.join("python3.bpf"), &bytes).unwrap();
    std::fs::write(sec.join("python3-net.bpf"), &bytes).unwrap();
    std::fs::write(sec.join("python3.json"), "{}\n").unwrap();

    let mut env = BTreeMap::new();
    env.insert("PATH".into(), "/usr/bin:/bin".into());
    env.insert("LANG".into(), "C.UTF-8".into());
    let mut languages = BTreeMap::new();
    languages.insert(
        "python3".to_string(),
        LanguageInfo {
            interpreter: PYTHON.into(),
            args: vec!["-I".into(), "-B".into()],
            env,
            version: "3.11".into(),
            distributions: vec![Distribution {
                name: "prebake-test-dist".into(),
                version: "1.0".into(),
            }],
            seccomp: Some(SeccompFiles {
                oci_json: "seccomp/python3.json".into(),
                bpf: "seccomp/python3.bpf".into(),
                bpf_net: "seccomp/python3-net.bpf".into(),
                arch: "x86_64".into(),
            }),
        },
    );
    let manifest = BundleManifest {
        format_version: FORMAT_VERSION,
        prebake_version: env!("CARGO_PKG_VERSION").into(),
        spec_digest: "test-fixture".into(),
        rootfs: RootfsInfo {
            file: "rootfs".into(),
            compression: "none".into(),
            sha256_uncompressed: String::new(),
            sha256_compressed: String::new(),
            size_uncompressed: 0,
            size_compressed: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
            hardlinks: 0,
        },
        languages,
        provenance: BTreeMap::new(),
    };
    std::fs::write(out.join("bundle.json"), manifest.to_json()).unwrap();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `runtime serve` child process with its own config and sandbox root.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Server {
    /// Start with `config` (YAML, `app.port` and `app.key` are added) and extra env.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Server {
        let s = Self::spawn(config, env);
        s.wait_healthy();
        s
    }

    pub fn spawn(config: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(
            &cfg,
            format!("app:\n  port: {port}\n  key: {KEY}\n{config}"),
        )
        .unwrap();
        let mut cmd = Command::new(super::common::bin("runtime"));
        cmd.arg("serve")
            .arg("--bundle")
            .arg(bundle())
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--config")
            .arg(&cfg)
            .env_remove("API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server {
            child: cmd.spawn().unwrap(),
            port,
            dir,
            agent: agent(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn health(&self) -> Option<u16> {
        self.agent
            .get(&self.url("/health"))
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub fn wait_healthy(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.health() == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server never became healthy; log:\n{}", self.log());
    }

    /// POST /v1/sandbox/run with the test key; returns (HTTP status, body JSON).
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

    pub fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.agent.get(&self.url(path));
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        let mut r = req.call().unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Run python code; returns `data` after checking the envelope is a success.
    pub fn run_py(&self, code: &str) -> Value {
        let (status, body) = self.post(
            "/v1/sandbox/run",
            &json!({"language": "python3", "code": code, "enable_network": false}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["code"], 0, "{body}");
        body["data"].clone()
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

/// Processes whose real uid is in the sandbox pool.
pub fn pool_processes() -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            let uid: u32 = line
                .split_whitespace()
                .nth(1)
                .and_then(|u| u.parse().ok())
                .unwrap_or(0);
            if (SANDBOX_UID_BASE..SANDBOX_UID_BASE + SANDBOX_UID_COUNT).contains(&uid) {
                found.push((pid, uid));
            }
        }
    }
    found
}

/// Wait up to 5 s for every pool-uid process to be gone (orphaned zombies are reaped by the
/// host's init asynchronously), then return what is left.
pub fn leftover_pool_processes() -> Vec<(u32, u32)> {
    let start = Instant::now();
    loop {
        let left = pool_processes();
        if left.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
