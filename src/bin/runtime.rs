//! `runtime`: the in-container binary. Thin: parse arguments, call the library, print.
//!
//! The capability probe forks, so it runs first, before any thread exists (tokio starts
//! later, only for `serve`).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use prebake::contract::{BundleManifest, DEFAULT_BUNDLE_DIR, DEFAULT_SANDBOX_ROOT};
use prebake::dify_config::DEFAULT_CONFIG;
use prebake::error::Chain;
use prebake::runtime::config::Config;
use prebake::runtime::listen;
use prebake::runtime::locate::{load_manifest, rootfs_dir};
use prebake::runtime::probe::Capabilities;
use prebake::runtime::ready_record::{self, ReadyRecord};
use prebake::runtime::rootless::{self, Rootless};
use prebake::runtime::sandbox::{Exit, Isolation, Limits, RunRequest, Sandbox, SandboxError};
use prebake::runtime::server::{router, AppState};
use prebake::runtime::uidpool::{PoolError, DEFAULT_LOCK_DIR};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "runtime",
    version,
    about = "Run untrusted scripts in prebake's sandbox"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// The bundle directory (bundle.json, rootfs, seccomp/).
    #[arg(long, default_value = DEFAULT_BUNDLE_DIR)]
    bundle: PathBuf,
    /// The sandbox root the rootfs is unpacked into.
    #[arg(long, default_value = DEFAULT_SANDBOX_ROOT)]
    root: PathBuf,
    /// Directory of the uid-pool lock files. Every runtime process of a node must share it:
    /// sandbox uids are node-wide (for `serve`, `uid_lock_dir` / SANDBOX_UID_LOCK_DIR wins).
    #[arg(long, env = "PREBAKE_LOCK_DIR", default_value = DEFAULT_LOCK_DIR)]
    lock_dir: PathBuf,
    /// DANGEROUS: run code even where chroot, a uid switch or seccomp is unavailable (each
    /// run is still a fresh process with rlimits, but NOT confined).
    #[arg(long, env = "PREBAKE_INSECURE_NO_SANDBOX")]
    insecure_no_sandbox: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Unpack the bundle's rootfs into the sandbox root (once).
    Unpack {
        #[command(flatten)]
        common: Common,
    },
    /// Print what this platform allows.
    Probe,
    /// Ask the server on this host for its readiness (GET /readyz on 127.0.0.1): exit 0 when
    /// it answers 200, 1 otherwise. For container health checks: the image has no curl.
    Health {
        /// The server's port.
        #[arg(long, env = "SANDBOX_PORT", default_value_t = 8194)]
        port: u16,
    },
    /// Run one script (FILE, or stdin) in the sandbox; print its output, exit with its code.
    Exec {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "python3")]
        language: String,
        /// Wall-clock limit in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Give the script the host's network.
        #[arg(long)]
        network: bool,
        /// Do not use namespaces even where allowed (chroot-only isolation).
        #[arg(long)]
        no_namespaces: bool,
        /// Address-space limit in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        file: Option<PathBuf>,
    },
    /// Serve dify-sandbox's HTTP API.
    #[command(after_help = SERVE_HELP)]
    Serve {
        #[command(flatten)]
        common: Common,
        /// Config file (default conf/config.yaml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The settings `runtime serve` reads, for `--help`: config key, environment variable (which
/// wins over the file), default. docs/api.md has the long form.
const SERVE_HELP: &str = "\
Settings (config file key / environment variable, which wins / default):
  app.key                  API_KEY                   required: the X-Api-Key value
  app.port                 SANDBOX_PORT              8194
  app.debug                DEBUG                     false
  log_format               LOG_FORMAT                text (or json: one object per line)
  max_workers              MAX_WORKERS               4 scripts at once
  max_requests             MAX_REQUESTS              50 running + waiting, then 503
  worker_timeout           WORKER_TIMEOUT            5 seconds per script
  enable_network           ENABLE_NETWORK            true, as dify-sandbox ships it
  enable_preload           ENABLE_PRELOAD            false
  proxy.http               HTTP_PROXY                \"\" (handed to runs with network)
  proxy.https              HTTPS_PROXY               \"\" (handed to runs with network)
  proxy.socks5             SOCKS5_PROXY              \"\" (handed to runs with network)
  limits.memory_mb         SANDBOX_MEMORY_MB         1024 (address space per script)
  limits.nodejs_memory_mb  SANDBOX_NODEJS_MEMORY_MB  2048
  limits.output_bytes      SANDBOX_OUTPUT_BYTES      67108864 per stream
  limits.processes         SANDBOX_MAX_PROCESSES     64
  limits.tmp_mb            SANDBOX_TMP_MB            64
  limits.request_bytes     SANDBOX_REQUEST_BYTES     16777216 (larger bodies get 413)
  limits.header_timeout    SANDBOX_HEADER_TIMEOUT    10 seconds to send request headers
  limits.connections       SANDBOX_MAX_CONNECTIONS   1024 open (lowered to fit the fd limit;
                                                     beyond it the oldest idle one is closed)
  shutdown_timeout         SANDBOX_SHUTDOWN_TIMEOUT  worker_timeout + 5 seconds: SIGTERM waits
                                                     that long for in-flight runs, then exits
  uid_lock_dir             SANDBOX_UID_LOCK_DIR      /run/prebake-runtime (uid-pool locks;
                                                     share it between all servers of a node;
                                                     rootless: $XDG_RUNTIME_DIR/prebake-runtime,
                                                     else /tmp/prebake-runtime-UID)
  namespaces               SANDBOX_NAMESPACES        true (where the platform allows them)
  warm_pool                SANDBOX_WARM_POOL         true (fork Python runs from a zygote)
  warm_pool_preload        SANDBOX_WARM_POOL_PRELOAD json, base64, jinja2, requests, httpx
  warm_pool_max_forks      SANDBOX_WARM_POOL_MAX_FORKS  1000 runs, then a new zygote
Build-time keys (python_path, python_lib_path, nodejs_path, allowed_syscalls, ...) are accepted
and ignored with a warning: they belong to `prebake build --dify-config`.";

fn init_logs(level: &str) {
    init_logs_as(level, false);
}

/// Logs on stderr at `level` (RUST_LOG wins), as text or as one JSON object per line.
fn init_logs_as(level: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = if json {
        // The event's fields at the top level, beside level, target and timestamp.
        logs.json().flatten_event(true).try_init()
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}

/// How this process came to be root (or not) before probing.
enum Privilege {
    /// Started as root.
    Root,
    /// Started as another user, now root in a user namespace of its own.
    Rootless(Rootless),
    /// Started as another user, and rootless mode is unavailable: why.
    Unprivileged(String),
}

/// A start as non-root enters rootless mode first. Call before any thread exists.
fn gain_privilege() -> Privilege {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Privilege::Root;
    }
    match rootless::enter() {
        Ok(r) => Privilege::Rootless(r),
        Err(e) => Privilege::Unprivileged(Chain(&e).to_string()),
    }
}

impl Privilege {
    /// Log how the runtime is privileged.
    fn log(&self) {
        match self {
            Privilege::Root => {}
            Privilege::Rootless(r) => tracing::info!("rootless mode: {r}"),
            Privilege::Unprivileged(why) => {
                tracing::warn!("not root, and rootless mode is unavailable: {why}")
            }
        }
    }

    /// Rootless defaults: the uid-pool locks in a directory of this user when none is set
    /// (it cannot write /run), which also takes pasta's start-up files.
    fn apply(&self, lock_dir: &mut PathBuf, chosen: bool) -> Result<()> {
        let Privilege::Rootless(r) = self else {
            return Ok(());
        };
        if !chosen && lock_dir.as_path() == std::path::Path::new(DEFAULT_LOCK_DIR) {
            *lock_dir = rootless::default_lock_dir(r.host_uid);
            rootless::private_dir(lock_dir)?;
        }
        prebake::runtime::netns::set_state_dir(lock_dir);
        Ok(())
    }
}

/// Log the probed capabilities in one line; refuse unless they suffice or the opt-out is given.
fn check_platform(caps: Capabilities, insecure: bool, how: &Privilege) -> Result<Capabilities> {
    tracing::info!("capabilities: {caps}");
    if let Some(why) = caps.refusal() {
        if !insecure {
            if let Privilege::Unprivileged(rootless) = how {
                bail!("{why} (capabilities: {caps}; not root, and rootless mode is unavailable: {rootless})");
            }
            bail!("{why} (capabilities: {caps})");
        }
        tracing::warn!(
            "!!! INSECURE: --insecure-no-sandbox is set: {why}. Scripts run in a fresh process with rlimits but are NOT confined !!!"
        );
    }
    Ok(caps)
}

fn open_sandbox(
    common: &Common,
    manifest: &BundleManifest,
    caps: &Capabilities,
    namespaces: bool,
    limits: Limits,
) -> Result<Sandbox> {
    let rootfs = rootfs_dir(&common.bundle, manifest, &common.root)?;
    tracing::info!(rootfs = %rootfs.dir.display(), "rootfs {}", rootfs.how);
    let iso = Isolation::from_caps(caps, namespaces);
    let sandbox = Sandbox::new(
        &common.bundle,
        manifest,
        &rootfs.dir,
        iso,
        limits,
        &common.lock_dir,
    )?;
    Ok(sandbox)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        // The low byte, all of `exit(code)` that a parent sees (a script's code is 0..=255,
        // a signal's 128 + its number).
        Ok(code) => ExitCode::from(code.to_le_bytes()[0]),
        Err(e) => {
            eprintln!("runtime: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Health { port } => Ok(match ready_status(port) {
            Ok(200) => 0,
            Ok(status) => {
                eprintln!("runtime: 127.0.0.1:{port}/readyz answered {status}");
                1
            }
            Err(e) => {
                eprintln!("runtime: no answer from 127.0.0.1:{port}/readyz: {e}");
                1
            }
        }),
        Cmd::Probe => {
            let how = gain_privilege();
            let caps = Capabilities::probe();
            println!("{caps}");
            match &how {
                Privilege::Root => {}
                Privilege::Rootless(r) => println!("rootless: {r}"),
                Privilege::Unprivileged(why) => println!("rootless: unavailable: {why}"),
            }
            if let Some(why) = caps.refusal() {
                println!("refused: {why}");
            }
            Ok(0)
        }
        Cmd::Unpack { common } => {
            let how = gain_privilege();
            init_logs("info");
            how.log();
            let manifest = load_manifest(&common.bundle)?;
            let start = std::time::Instant::now();
            let r = rootfs_dir(&common.bundle, &manifest, &common.root)?;
            println!(
                "rootfs {} at {} ({:.1} ms)",
                r.how,
                r.dir.display(),
                start.elapsed().as_secs_f64() * 1000.0
            );
            Ok(0)
        }
        Cmd::Exec {
            common,
            language,
            timeout,
            network,
            no_namespaces,
            memory_mb,
            file,
        } => {
            let how = gain_privilege();
            // Quiet by default: stderr carries the script's own stderr.
            init_logs("warn");
            how.log();
            let mut common = common;
            how.apply(&mut common.lock_dir, false)?;
            let caps = check_platform(Capabilities::probe(), common.insecure_no_sandbox, &how)?;
            let mut limits = Limits::default();
            if let Some(m) = memory_mb {
                // For the language this run uses, whatever its default.
                let bytes = m.checked_mul(1 << 20).context("--memory-mb is too large")?;
                limits.memory_bytes = bytes;
                limits.memory_by_language.insert(language.clone(), bytes);
            }
            let manifest = load_manifest(&common.bundle)?;
            let sandbox = open_sandbox(&common, &manifest, &caps, !no_namespaces, limits)?;
            // One script, no pasta: with network it shares this process's namespace.
            sandbox.attach_network(None);
            let code = match &file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("{}: cannot read the script", f.display()))?,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("cannot read the script from stdin")?;
                    s
                }
            };
            if network {
                sandbox.sync_resolver_files();
            }
            let out = sandbox.run(&RunRequest {
                language,
                code,
                network,
                timeout: Duration::from_secs(timeout),
                network_env: Vec::new(),
            })?;
            std::io::stdout().write_all(&out.stdout)?;
            std::io::stdout().flush()?;
            std::io::stderr().write_all(&out.stderr)?;
            if !out.success() {
                // The synthetic line (timeout, truncation, seccomp...), without the stderr
                // already printed.
                let text = out.error_text();
                if let Some(line) = text.lines().nth(1) {
                    if line.starts_with("error: ") {
                        eprintln!("runtime: {line}");
                    }
                }
            }
            Ok(match out.exit {
                _ if out.timed_out => 124,
                Exit::Code(c) => c,
                Exit::Signal(s) => 128 + s,
            })
        }
        Cmd::Serve { common, config } => serve(common, config.as_deref()),
    }
}

/// The HTTP status of `GET /readyz` on 127.0.0.1:`port`, within 2 s.
fn ready_status(port: u16) -> std::io::Result<u16> {
    use std::io::BufRead;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut line = String::new();
    std::io::BufReader::new(conn).read_line(&mut line)?;
    // "HTTP/1.1 200 OK"
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

fn serve(mut common: Common, config_path: Option<&std::path::Path>) -> Result<i32> {
    let how = gain_privilege();
    let (path, required) = match config_path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let env = |k: &str| std::env::var(k).ok();
    let config = Config::load(Some(&path), required, &env)?;
    init_logs_as(if config.debug { "debug" } else { "info" }, config.log_json);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    how.log();
    if let Some(dir) = &config.uid_lock_dir {
        common.lock_dir = dir.clone();
    }
    how.apply(&mut common.lock_dir, config.uid_lock_dir.is_some())?;
    tracing::info!(lock_dir = %common.lock_dir.display(), "uid-pool locks (share this directory between all servers of the node)");
    let (max_connections, lowered) =
        listen::fit_connections(config.max_connections, config.max_workers);
    if let Some(w) = lowered {
        tracing::warn!("{w}");
    }
    // What an earlier server of this container left when it was killed while pasta started.
    prebake::runtime::netns::sweep_stale_mounts();
    let (caps, manifest) = Capabilities::probe_while(|| load_manifest(&common.bundle));
    let caps = check_platform(caps, common.insecure_no_sandbox, &how)?;
    let manifest = manifest?;
    let deps = manifest
        .languages
        .iter()
        .map(|(k, v)| (k.clone(), v.distributions.clone()))
        .collect();
    let port = config.port;
    let state = Arc::new(AppState::new(config, deps));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let drained = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("cannot listen on port {port}"))?;
        tracing::info!(
            port,
            "listening; /health answers 503 until the sandbox is ready"
        );
        let setup_state = state.clone();
        tokio::spawn(async move {
            let res =
                tokio::task::spawn_blocking(move || {
                get_ready(&common, &manifest, &caps, &setup_state)
            })
            .await;
            match res {
                Ok(Ok(())) => tracing::info!("sandbox ready"),
                Ok(Err(e)) => {
                    tracing::error!("sandbox setup failed: {e:#}");
                    std::process::exit(1);
                }
                Err(e) => {
                    tracing::error!("sandbox setup panicked: {e}");
                    std::process::exit(1);
                }
            }
        });
        let opts = listen::Options {
            header_timeout: Duration::from_secs(state.config.header_timeout),
            max_connections,
        };
        let stopping = state.clone();
        let draining = listen::serve(listener, router(state.clone()), opts, async move {
            shutdown_signal().await;
            stopping.begin_shutdown();
        })
        .await;
        // Bounded: a platform's grace period ends in SIGKILL anyway, and queued runs would
        // otherwise extend the wait by max_requests / max_workers deadlines.
        let bound = Duration::from_secs(state.config.shutdown_timeout);
        let finished = async {
            draining.closed().await;
            state.runs_finished().await;
        };
        let drained = tokio::time::timeout(bound, finished).await.is_ok();
        // A pasta start still under way holds a bind mount of the runs' namespace in /run
        // until pasta is up: let it finish (and clean up) rather than leave that behind.
        if let Some(sandbox) = state.sandbox.get() {
            let sandbox = sandbox.clone();
            let _ = tokio::task::spawn_blocking(move || {
                sandbox.settle_network(Duration::from_secs(5))
            })
            .await;
        }
        if drained {
            tracing::info!("shut down: in-flight runs finished and reaped");
            Ok::<_, anyhow::Error>(true)
        } else {
            tracing::warn!(
                runs = state.runs_in_flight(),
                "shutdown_timeout of {}s passed: exiting with runs still in flight (their processes die with the server)",
                bound.as_secs()
            );
            Ok(false)
        }
    })?;
    // Do not wait for the abandoned runs' blocking threads (dropping the runtime would).
    rt.shutdown_background();
    Ok(if drained { 0 } else { 1 })
}

/// Unpack, open the sandbox, run one probe script per language; only then is the server
/// healthy. A re-start whose every input matches an earlier start that passed its probes (see
/// `prebake::runtime::ready_record`) is healthy at once and probes in the background.
fn get_ready(
    common: &Common,
    manifest: &BundleManifest,
    caps: &Capabilities,
    state: &Arc<AppState>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let sandbox = open_sandbox(
        common,
        manifest,
        caps,
        state.config.namespaces,
        state.config.limits.clone(),
    )?;
    let sandbox = Arc::new(sandbox);
    if state.config.enable_network {
        // pasta takes 10-20 ms to come up: runs with network wait for it, nothing else does.
        let net = sandbox.clone();
        std::thread::Builder::new()
            .name("pasta-start".into())
            .spawn(move || {
                // Whatever happens in there, runs with network must not wait forever.
                struct DecideOnExit(Arc<Sandbox>);
                impl Drop for DecideOnExit {
                    fn drop(&mut self) {
                        self.0.attach_network(None);
                    }
                }
                let net = DecideOnExit(net);
                attach_network(&net.0);
            })
            .context("cannot start the thread that starts pasta")?;
    } else {
        sandbox.attach_network(None);
    }
    state
        .metrics
        .start_phase("rootfs", start.elapsed().as_secs_f64());
    tracing::info!(
        rootfs = %sandbox.rootfs().display(),
        isolation = ?sandbox.isolation,
        "rootfs ready in {:.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let platform = vec![
        ("capabilities".to_owned(), format!("{caps:?}")),
        ("isolation".to_owned(), format!("{:?}", sandbox.isolation)),
        ("limits".to_owned(), format!("{:?}", sandbox.limits)),
        // SAFETY: geteuid has no preconditions.
        ("euid".to_owned(), unsafe { libc::geteuid() }.to_string()),
    ];
    let facts = ready_record::start_facts(&common.bundle, manifest, sandbox.rootfs(), platform);
    let record = match ReadyRecord::new(&common.lock_dir, &facts) {
        Some(record) if record.present() => return ready_then_probe(sandbox, state, record),
        record => record,
    };
    let probing = std::time::Instant::now();
    probe_all(&sandbox, state)?;
    state
        .metrics
        .start_phase("probes", probing.elapsed().as_secs_f64());
    if let Some(record) = record {
        match record.write() {
            Ok(()) => {
                tracing::info!(record = %record.path().display(), "probes passed: a re-start with the same runtime build, bundle, rootfs, platform and limits will be ready at once")
            }
            Err(e) => {
                tracing::warn!(record = %record.path().display(), "cannot keep the record of this start's probes (the next start probes again): {e}")
            }
        }
    }
    // After the probe runs, which therefore start cold: a broken interpreter fails the
    // start, and a zygote that cannot start only costs speed.
    sandbox.start_warm_pool(&state.config.warm)?;
    let _ = state.sandbox.set(sandbox);
    Ok(())
}

/// Ready at once on the `record` of an earlier start that passed its probes; the probes run
/// in the background, then the warm pool starts. A probe that fails now removes the record
/// and stops the server, as a failed probe at start does.
fn ready_then_probe(
    sandbox: Arc<Sandbox>,
    state: &Arc<AppState>,
    record: ReadyRecord,
) -> Result<()> {
    let _ = state.sandbox.set(sandbox.clone());
    tracing::info!(
        record = %record.path().display(),
        "an earlier start with this runtime build, bundle, rootfs, platform and limits passed its probes: ready now, probing in the background"
    );
    let state = state.clone();
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            let probing = std::time::Instant::now();
            if let Err(e) = probe_all(&sandbox, &state) {
                record.remove();
                tracing::error!("{e:#}: stopping (the record of the earlier start is removed, so the next start probes before it is ready)");
                std::process::exit(1);
            }
            state
                .metrics
                .start_phase("probes", probing.elapsed().as_secs_f64());
            if let Err(e) = sandbox.start_warm_pool(&state.config.warm) {
                tracing::warn!("warm pool not started: {}", Chain(&e));
            }
        })
        .context("cannot start the background probe's thread")?;
    Ok(())
}

/// Every language of the bundle: a broken interpreter fails the start, not a request. The
/// languages are probed side by side (Node's own start takes twice Python's).
fn probe_all(sandbox: &Sandbox, state: &AppState) -> Result<()> {
    std::thread::scope(|scope| {
        let probes: Vec<_> = [("python3", "print('ok')"), ("nodejs", "console.log('ok')")]
            .into_iter()
            .filter(|(language, _)| sandbox.has_language(language))
            .map(|(language, code)| scope.spawn(move || probe_run(sandbox, state, language, code)))
            .collect();
        for probe in probes {
            probe
                .join()
                .map_err(|_| anyhow::anyhow!("a probe run's thread panicked"))??;
        }
        Ok(())
    })
}

/// Runs with network get their own namespace behind pasta where the platform allows
/// namespaces and pasta is there (see `prebake::runtime::netns`); otherwise they share the
/// server's, and the log says what that exposes.
fn attach_network(sandbox: &Sandbox) {
    use prebake::runtime::netns::{find_pasta, SandboxNet};
    const SHARED: &str = "runs with network share the server's network namespace: they can connect to the pod's loopback and addresses (bind, listen and unix sockets stay refused)";
    if !sandbox.isolation.net_ns {
        tracing::warn!("no network namespaces on this platform: {SHARED}");
        sandbox.attach_network(None);
        return;
    }
    let Some(pasta) = find_pasta() else {
        tracing::warn!("pasta not found (install Debian's passt package, or set SANDBOX_PASTA to its path): {SHARED}");
        sandbox.attach_network(None);
        return;
    };
    let start = std::time::Instant::now();
    match SandboxNet::start(&pasta) {
        Ok(net) => {
            tracing::info!(
                pasta = %pasta.display(),
                "runs with network: their own network namespace behind pasta (no pod loopback), ready in {:.1} ms",
                start.elapsed().as_secs_f64() * 1000.0
            );
            sandbox.attach_network(Some(net));
        }
        Err(e) => {
            tracing::warn!("{}: {SHARED}", Chain(&e));
            sandbox.attach_network(None);
        }
    }
}

/// One probe run of `language`, which must print `ok`.
fn probe_run(sandbox: &Sandbox, state: &AppState, language: &str, code: &str) -> Result<()> {
    let req = RunRequest {
        language: language.into(),
        code: code.into(),
        network: false,
        timeout: Duration::from_secs(state.config.worker_timeout.max(10)),
        network_env: Vec::new(),
    };
    // Other runtime processes on this host may hold every uid for a while: wait for one
    // rather than fail the start.
    let mut waited = std::time::Instant::now();
    let out = loop {
        match sandbox.run(&req) {
            Err(SandboxError::Pool(PoolError::Exhausted)) => {
                if waited.elapsed() > Duration::from_secs(5) {
                    tracing::warn!("waiting for a free sandbox uid for the probe run");
                    waited = std::time::Instant::now();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other?,
        }
    };
    if !out.success() || out.stdout != b"ok\n" {
        bail!(
            "the probe run of {language} failed: stdout {:?}, {}",
            String::from_utf8_lossy(&out.stdout),
            out.error_text()
        );
    }
    tracing::info!(
        "probe run of {language} ok in {:.1} ms",
        out.duration.as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!(
        "signal received: no new connections; finishing in-flight runs, queued ones are refused"
    );
}
