//! Shared helpers for the `runtime` integration tests: the test bundle (ONE fixture function,
//! [`build_bundle`], so it can be switched to `prebake build` in one place) and a running
//! `runtime serve` with an HTTP client.
#![allow(dead_code)]

use prebake::contract::{BundleManifest, SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The base interpreter of the fixture venv (pyenv's build, on every machine of this kind).
pub const PYTHON: &str = "/root/.pyenv/versions/3.11.7/bin/python3.11";
pub const KEY: &str = "test-key-0123456789";

/// A prebake-built bundle and the sandbox root shared by every server started over it.
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    pub bundle: &'static Path,
    pub root: &'static Path,
}

/// The fixture `name` under cargo's target tmp dir: `build(work)` must leave a bundle at
/// `work/out/bundle`. Built once per test process, and again whenever the `prebake` binary is
/// newer than it; then unpacked once, before any server starts, so servers find the stamp
/// and never race to unpack.
pub fn fixture(
    name: &str,
    cell: &'static OnceLock<(PathBuf, PathBuf)>,
    build: impl FnOnce(&Path),
) -> Fixture {
    let (bundle, root) = cell.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let dir = base.join("bundle");
        let stale = match (
            std::fs::metadata(dir.join("bundle.json")).and_then(|m| m.modified()),
            std::fs::metadata(super::bin("prebake")).and_then(|m| m.modified()),
        ) {
            (Ok(built), Ok(bin)) => built < bin,
            _ => true,
        };
        if stale {
            let work = base.join(format!("build-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&work);
            build(&work);
            let _ = std::fs::remove_dir_all(&dir);
            // Another test process may have won the race; either copy is fine.
            if std::fs::rename(work.join("out/bundle"), &dir).is_err() {
                assert!(dir.join("bundle.json").exists());
            }
            let _ = std::fs::remove_dir_all(&work);
        }
        let root = base.join("root");
        let manifest = BundleManifest::load(&dir).unwrap();
        prebake::runtime::unpack::unpack_bundle(&dir, &manifest, &root).unwrap();
        (dir, root)
    });
    Fixture { bundle, root }
}

/// The Python fixture: see [`build_bundle`].
pub fn python_fixture() -> Fixture {
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    fixture("runtime-fixture", &F, build_bundle)
}

/// A bundle of the fixture venv's interpreter with what Dify's runners import (jinja2,
/// requests, httpx): the warm pool's preload list finds them.
pub fn dify_fixture() -> Fixture {
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    venv_fixture(
        "runtime-dify-fixture",
        &F,
        "name: runtime-dify-test\nlanguages:\n  python3:\n    interpreter: {python}\n    packages: [jinja2, requests, httpx]\n",
    )
}

/// The fixture `name` built by the real `prebake build --no-image` from `spec`, a spec
/// template whose `{python}` is the fixture venv's interpreter.
pub fn venv_fixture(
    name: &str,
    cell: &'static OnceLock<(PathBuf, PathBuf)>,
    spec: &str,
) -> Fixture {
    fixture(name, cell, |work| {
        std::fs::create_dir_all(work).unwrap();
        let path = work.join("spec.yaml");
        let python = super::fixture_venv_python();
        std::fs::write(
            &path,
            spec.replace("{python}", &python.display().to_string()),
        )
        .unwrap();
        super::run(
            Command::new(super::bin("prebake"))
                .arg("build")
                .arg(&path)
                .arg("--no-image")
                .arg("--out")
                .arg(work.join("out")),
        );
    })
}

/// The Python fixture's bundle.
pub fn bundle() -> &'static Path {
    python_fixture().bundle
}

/// The Python fixture's sandbox root.
pub fn root() -> &'static Path {
    python_fixture().root
}

/// The fixture: a venv of [`PYTHON`] holding one tiny distribution (`prebake-test-dist`, for
/// the dependencies routes), built into a bundle by the real `prebake build` with the real
/// seccomp policy.
pub fn build_bundle(work: &Path) {
    // Not under /tmp (the checkout may be there): the sandbox mounts its own /tmp over the
    // rootfs, and prebake refuses an interpreter it would hide.
    let venv = PathBuf::from(format!(
        "/var/tmp/prebake-fixture-venv-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(work).unwrap();
    super::run(
        Command::new(PYTHON)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv),
    );
    let site = venv.join("lib/python3.11/site-packages");
    let info = site.join("prebake_test_dist-1.0.dist-info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(site.join("prebake_test_dist.py"), "VALUE = 42\n").unwrap();
    std::fs::write(
        info.join("METADATA"),
        "Metadata-Version: 2.1\nName: prebake-test-dist\nVersion: 1.0\n",
    )
    .unwrap();
    std::fs::write(
        info.join("RECORD"),
        "prebake_test_dist.py,,\nprebake_test_dist-1.0.dist-info/METADATA,,\nprebake_test_dist-1.0.dist-info/RECORD,,\n",
    )
    .unwrap();
    let spec = work.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: runtime-test\nlanguages:\n  python3:\n    interpreter: {}\n    packages: [prebake-test-dist]\n",
            venv.join("bin/python").display()
        ),
    )
    .unwrap();
    super::run(
        Command::new(super::bin("prebake"))
            .arg("build")
            .arg(&spec)
            .arg("--out")
            .arg(work.join("out")),
    );
    let _ = std::fs::remove_dir_all(&venv);
}

/// Wait (up to a minute) until the log file at `log` holds one of `lines`; panics with `what`
/// and the log otherwise.
pub fn wait_until_logged(log: &Path, lines: &[&str], what: &str) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if lines.iter().any(|l| text.contains(l)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The children of `parent` with their states (`R`, `S`, `Z`, ...), from /proc.
pub fn children(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its last ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let mut fields = rest.split(' ');
        let state = fields.next().unwrap().chars().next().unwrap();
        if fields.next() == Some(parent.to_string().as_str()) {
            out.push((pid, state));
        }
    }
    out
}

/// The runtime's log line when a zygote is ready.
pub const WARM_POOL_READY: &str = "warm pool: zygote ready";
/// The runtime's log lines that settle whether runs fork from a zygote.
const WARM_POOL_DECIDED: &[&str] = &[
    WARM_POOL_READY,
    "warm pool off",
    "warm pool: cannot start a zygote",
    "warm pool: no Python language",
];

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
    /// Start over the Python fixture with `config` (YAML, `app.port` and `app.key` are added)
    /// and extra env, and wait until healthy.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Server {
        Self::start_over(python_fixture(), config, env)
    }

    /// [`Server::start`] over another fixture.
    pub fn start_over(fixture: Fixture, config: &str, env: &[(&str, &str)]) -> Server {
        let s = Self::spawn_over(fixture, config, env);
        s.wait_healthy();
        s.wait_warm_pool();
        s
    }

    /// Wait until the warm pool has decided: its zygote is ready (so runs fork from it), it
    /// is off, or it could not start. Tests then know which path their runs take.
    pub fn wait_warm_pool(&self) {
        wait_until_logged(
            &self.dir.path().join("server.log"),
            WARM_POOL_DECIDED,
            "the warm pool never said whether it is on",
        );
    }

    /// How many zygotes became ready so far (a replaced one counts again).
    pub fn zygotes_started(&self) -> usize {
        self.log().matches(WARM_POOL_READY).count()
    }

    /// The pid of the newest ready zygote.
    pub fn zygote_pid(&self) -> Option<u32> {
        u32::try_from(self.zygote_ready_field("pid")?).ok()
    }

    /// A number the newest ready zygote's line logs as `key=N`.
    pub fn zygote_ready_field(&self, key: &str) -> Option<u64> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains(WARM_POOL_READY))?;
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    /// Start over the Python fixture without waiting for /health.
    pub fn spawn(config: &str, env: &[(&str, &str)]) -> Server {
        Self::spawn_over(python_fixture(), config, env)
    }

    pub fn spawn_over(fixture: Fixture, config: &str, env: &[(&str, &str)]) -> Server {
        Self::spawn_wrapped(fixture, config, env, &[])
    }

    /// [`Server::start_over`] as [`ROOTLESS_USER`]: `runtime serve` started by a user that
    /// is not root, so it enters rootless mode.
    pub fn start_rootless(fixture: Fixture, config: &str, env: &[(&str, &str)]) -> Server {
        let setpriv = rootless_user().setpriv();
        let wrapper: Vec<&str> = setpriv.iter().map(String::as_str).collect();
        let s = Self::spawn_wrapped(fixture, config, env, &wrapper);
        s.wait_healthy();
        s.wait_warm_pool();
        assert!(
            s.log().contains("rootless=yes"),
            "not in rootless mode; log:\n{}",
            s.log()
        );
        s
    }

    /// [`Server::spawn_over`] with `runtime serve ...` run as the arguments of `wrapper`
    /// (`unshare -m ...`), for a server in a world the test arranged.
    pub fn spawn_wrapped(
        fixture: Fixture,
        config: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(
            &cfg,
            format!("app:\n  port: {port}\n  key: {KEY}\n{config}"),
        )
        .unwrap();
        if !wrapper.is_empty() {
            // A wrapper may start the server as another user: it must read its config.
            use std::os::unix::fs::PermissionsExt;
            for (path, mode) in [(dir.path(), 0o755), (cfg.as_path(), 0o644)] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        let mut cmd = runtime_command(wrapper);
        cmd.arg("serve")
            .arg("--bundle")
            .arg(fixture.bundle)
            .arg("--root")
            .arg(fixture.root)
            .arg("--config")
            .arg(&cfg)
            .env_remove("API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ));
        // A whole run of the suite with the warm pool on or off (the runtime's default when
        // unset); a test that sets SANDBOX_WARM_POOL itself keeps its own choice.
        if let Ok(v) = std::env::var("PREBAKE_TEST_WARM_POOL") {
            cmd.env("SANDBOX_WARM_POOL", v);
        }
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
        self.status_of("/health")
    }

    /// The text of `GET /metrics`, which must answer 200.
    pub fn metrics(&self) -> String {
        let mut r = self.agent.get(&self.url("/metrics")).call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.body_mut().read_to_string().unwrap()
    }

    /// The HTTP status of GET `path` (None: no answer).
    pub fn status_of(&self, path: &str) -> Option<u16> {
        self.agent
            .get(&self.url(path))
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
        self.run_lang("python3", code, false)
    }

    pub fn run_js(&self, code: &str) -> Value {
        self.run_lang("nodejs", code, false)
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

    /// SIGTERM, then wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(
                libc::pid_t::try_from(self.child.id()).unwrap(),
                libc::SIGTERM,
            )
        };
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

/// The per-run directories (and their trash) left in the Python fixture root's `/tmp`.
pub fn run_dirs_left() -> Vec<String> {
    std::fs::read_dir(root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run-") || n.starts_with(".trash-"))
        .collect()
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
            let rootless = ROOTLESS_SUB..ROOTLESS_SUB + SANDBOX_UID_COUNT;
            if (SANDBOX_UID_BASE..SANDBOX_UID_BASE + SANDBOX_UID_COUNT).contains(&uid)
                || rootless.contains(&uid)
            {
                found.push((pid, uid));
            }
        }
    }
    found
}

/// Wait up to 5 s for every pool-uid process to be gone (orphaned zombies are reaped by the
/// host's init asynchronously), then return what is left.
/// What a stopped server left in the host's mount namespace and in /run: a mount point under
/// the sandbox `root` (runs mount only in namespaces of their own), or a mount or /run entry
/// named for the server's pid (`/run/prebake-netns-<pid>-<nanos>` lives only until pasta has
/// configured the namespace). Scoped to that pid and root, so concurrent servers do not count.
pub fn leftover_mounts_and_run_files(root: &Path, server_pid: u32) -> Vec<String> {
    let tag = format!("-{server_pid}-");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut left: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| {
            Path::new(mount_point).starts_with(root)
                || (mount_point.starts_with("/run/prebake") && mount_point.contains(&tag))
        })
        .map(|m| format!("mount {m}"))
        .collect();
    // A rootless server keeps them in its lock directory (it cannot write /run).
    let mut dirs = vec![PathBuf::from("/run")];
    for entry in std::fs::read_dir("/tmp").unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("prebake-runtime-")
        {
            dirs.push(entry.path());
        }
    }
    for dir in &dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("prebake") && name.contains(&tag) {
                left.push(entry.path().display().to_string());
            }
        }
    }
    left
}

/// The user rootless servers run as, and the first of its subordinate ids: the sandbox uids
/// of its runs are host ids from there.
pub const ROOTLESS_USER: &str = "prebake-rootless";
pub const ROOTLESS_SUB: u32 = 300_000;

#[derive(Debug, Clone, Copy)]
pub struct RootlessUser {
    pub uid: u32,
    pub gid: u32,
}

impl RootlessUser {
    /// The wrapper that runs a command as this user, with no supplementary group.
    pub fn setpriv(&self) -> Vec<String> {
        vec![
            "setpriv".into(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".into(),
        ]
    }
}

/// The `runtime` binary, or, with a `wrapper` (`setpriv ...`, `unshare -m`), the wrapper
/// with `runtime` as its last argument so far.
pub fn runtime_command(wrapper: &[&str]) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(super::bin("runtime"));
            c
        }
        None => Command::new(super::bin("runtime")),
    }
}

/// [`ROOTLESS_USER`], created (a system user, no home, no shell) with its range of
/// subordinate ids in /etc/subuid and /etc/subgid unless it exists. Needs root, newuidmap
/// (Debian's uidmap) and a /dev/net/tun others may open (Debian's udev makes it 0666).
pub fn rootless_user() -> RootlessUser {
    static USER: OnceLock<RootlessUser> = OnceLock::new();
    *USER.get_or_init(|| {
        let id = |flag: &str| {
            Command::new("id")
                .args([flag, ROOTLESS_USER])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        };
        if id("-u").is_none() {
            super::run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                ROOTLESS_USER,
            ]));
        }
        let range = format!("{ROOTLESS_SUB}-{}", ROOTLESS_SUB + SANDBOX_UID_COUNT - 1);
        let line = format!("{ROOTLESS_USER}:{ROOTLESS_SUB}:{SANDBOX_UID_COUNT}");
        for (file, flag) in [("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if !text.lines().any(|l| l == line) {
                super::run(Command::new("usermod").args([flag, &range, ROOTLESS_USER]));
            }
        }
        assert!(
            Path::new("/usr/bin/newuidmap").exists(),
            "rootless servers need newuidmap and newgidmap: apt-get install uidmap"
        );
        let tun = std::fs::metadata("/dev/net/tun").map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o777
        });
        assert_eq!(
            tun.ok(),
            Some(0o666),
            "rootless pasta opens /dev/net/tun as its user: chmod 0666 /dev/net/tun (Debian's udev rule; .ci/run does it)"
        );
        RootlessUser {
            uid: id("-u").expect("the rootless user exists"),
            gid: id("-g").expect("the rootless user has a group"),
        }
    })
}

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

/// Minimal base64 (standard alphabet, padded) so the test needs no extra crate.
pub mod b64 {
    pub fn encode(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = u32::from(c[0]) << 16
                | u32::from(*c.get(1).unwrap_or(&0)) << 8
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}
