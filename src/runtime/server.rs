//! `runtime serve`: dify-sandbox's HTTP API (shared/api.md) over [`Sandbox`].
//!
//! Runs are blocking (a poll loop per run, see `sandbox`), so each one takes a thread from
//! tokio's blocking pool; at most `max_workers` of them run at once (a semaphore), and at most
//! `max_requests` are running or queued (beyond that 503).

use super::config::Config;
use super::sandbox::{RunOutcome, RunRequest, Sandbox};
use crate::contract::Distribution;
use crate::error::Chain;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Shared state of the server.
pub struct AppState {
    pub config: Config,
    /// Set once the rootfs is ready and a probe run succeeded; /health says ok from then on.
    pub sandbox: OnceLock<Arc<Sandbox>>,
    pub dependencies: BTreeMap<String, Vec<Distribution>>,
    /// Owned permits: a run keeps its permit until the sandbox process is done, even when the
    /// client has gone and axum dropped the handler.
    workers: Arc<Semaphore>,
    in_flight: AtomicUsize,
    /// Requests waiting for a worker. Not `in_flight` less the workers busy: a run answered
    /// before its process is reaped holds its worker but no longer counts as in flight.
    waiting: AtomicUsize,
    pub metrics: super::metrics::Metrics,
}

impl AppState {
    pub fn new(config: Config, dependencies: BTreeMap<String, Vec<Distribution>>) -> Self {
        AppState {
            workers: Arc::new(Semaphore::new(config.max_workers)),
            config,
            sandbox: OnceLock::new(),
            dependencies,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            metrics: super::metrics::Metrics::default(),
        }
    }

    /// From now on queued runs answer at once instead of starting (SIGTERM): only the runs
    /// already running are waited for.
    pub fn begin_shutdown(&self) {
        self.workers.close();
    }

    /// Resolves when no run is running or queued, including runs whose client has gone and
    /// answered runs whose process is still being reaped (they keep their worker slot).
    pub async fn runs_finished(&self) {
        while self.runs_in_flight() > 0
            || self.workers.available_permits() < self.config.max_workers
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn runs_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// What a request ended with, for the log line.
#[derive(Clone)]
struct Outcome(String);

/// What a run ended with, for its log line: never the code or the output, only their sizes.
#[derive(Clone)]
struct RunFacts {
    request_id: String,
    language: String,
    exit_code: i32,
    run_ms: f64,
    stdout_bytes: usize,
    stderr_bytes: usize,
}

fn envelope(http: StatusCode, code: i32, message: &str, data: Value, outcome: &str) -> Response {
    let mut body = json!({"code": code, "message": message});
    // Moved in, not serialized again as `json!` would (it takes its values by reference).
    body["data"] = data;
    let mut r = (http, Json(body)).into_response();
    r.extensions_mut().insert(Outcome(outcome.to_string()));
    r
}

fn bad_request(message: &str) -> Response {
    envelope(
        StatusCode::BAD_REQUEST,
        -400,
        message,
        Value::Null,
        "bad-request",
    )
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/sandbox/run", post(run))
        .route("/v1/sandbox/dependencies", get(dependencies))
        .route("/v1/sandbox/dependencies/update", post(update))
        .route("/v1/sandbox/dependencies/refresh", get(dependencies))
        // An explicit body limit (axum's implicit one is 2 MiB): larger bodies get HTTP 413,
        // after the key check, which runs first as the outer layer.
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.request_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(health))
        .route("/livez", get(live))
        .route("/metrics", get(metrics))
        .merge(api)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One structured line per request.
async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let outcome = resp
        .extensions()
        .get::<Outcome>()
        .map(|o| o.0.clone())
        .unwrap_or_else(|| "-".into());
    let status = resp.status().as_u16();
    let duration_ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
    // Probes come every few seconds from every kubelet and load balancer: debug, not info.
    if let Some(run) = resp.extensions().get::<RunFacts>() {
        tracing::info!(
            method = %method,
            path = %path,
            status,
            outcome = %outcome,
            request_id = %run.request_id,
            language = %run.language,
            exit_code = run.exit_code,
            run_ms = format!("{:.1}", run.run_ms),
            stdout_bytes = run.stdout_bytes,
            stderr_bytes = run.stderr_bytes,
            duration_ms,
            "run"
        );
    } else if is_probe_path(&path) {
        tracing::debug!(method = %method, path = %path, status, outcome = %outcome, duration_ms, "request");
    } else {
        tracing::info!(method = %method, path = %path, status, outcome = %outcome, duration_ms, "request");
    }
    resp
}

/// The routes machines poll: `/health` (dify-sandbox's), `/readyz`, `/livez`, `/metrics`.
fn is_probe_path(path: &str) -> bool {
    matches!(path, "/health" | "/readyz" | "/livez" | "/metrics")
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("x-api-key")
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    // Compare digests, not the keys: `ct_eq` on slices of different lengths returns at once,
    // which would tell a prober the key's length.
    let digest = |b: &[u8]| <sha2::Sha256 as sha2::Digest>::digest(b);
    let ok: bool = digest(given)
        .as_slice()
        .ct_eq(digest(st.config.key.as_bytes()).as_slice())
        .into();
    if !ok {
        let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        r.extensions_mut().insert(Outcome("unauthorized".into()));
        return r;
    }
    next.run(req).await
}

/// Prometheus' text format (see [`super::metrics`]); no key, like the health routes: it holds
/// counts, never code, output or keys.
async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let sandbox = st.sandbox.get();
    let gauges = super::metrics::Gauges {
        ready: sandbox.is_some(),
        workers: st.config.max_workers,
        running: st
            .config
            .max_workers
            .saturating_sub(st.workers.available_permits()),
        queued: st.waiting.load(Ordering::SeqCst),
        warm_zygotes: sandbox.map(|s| s.warm_zygotes()).unwrap_or_default(),
        uids_in_use: sandbox.map(|s| s.uids_leased()),
        uids_total: crate::contract::SANDBOX_UID_COUNT as usize,
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(&gauges),
    )
        .into_response()
}

/// Liveness: the process answers. 200 from the moment it listens, also while it unpacks the
/// rootfs and probes (a start is not a hang: restarting it would only start over).
async fn live() -> Response {
    (StatusCode::OK, Json(json!("ok"))).into_response()
}

/// Readiness, `/health` (as dify-sandbox has it) and `/readyz`: 200 once the sandbox can run
/// code (the rootfs is there and the probe runs passed, or a matching record of them), 503
/// until then.
async fn health(State(st): State<Arc<AppState>>) -> Response {
    if st.sandbox.get().is_some() {
        (StatusCode::OK, Json(json!("ok"))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!("starting"))).into_response()
    }
}

/// Counts a request as in flight (running or queued) for its lifetime.
/// One request counted against `max_requests`, until dropped. It owns the state so that it can
/// move into the blocking task and outlive a handler dropped by a disconnecting client.
struct InFlight(Arc<AppState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request waiting for a worker, until dropped: when it has one, or when its client went
/// away while it waited (axum drops the handler).
struct Waiting<'a>(&'a AppState);

impl<'a> Waiting<'a> {
    fn new(st: &'a AppState) -> Self {
        st.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(st)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

struct RunBody {
    language: String,
    code: String,
    preload: String,
    enable_network: bool,
}

fn parse_run(body: &[u8]) -> Result<RunBody, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("request body must be a JSON object")?;
    let string = |k: &str, required: bool| -> Result<String, String> {
        match obj.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            None | Some(Value::Null) => Err(format!("missing field `{k}`")),
            Some(_) => Err(format!("field `{k}` must be a string")),
        }
    };
    let language = string("language", true)?;
    let code = string("code", true)?;
    if code.is_empty() {
        return Err("field `code` must not be empty".into());
    }
    let preload = string("preload", false)?;
    let enable_network = match obj.get("enable_network") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("field `enable_network` must be true or false".into()),
    };
    Ok(RunBody {
        language,
        code,
        preload,
        enable_network,
    })
}

fn is_known_language(l: &str) -> bool {
    l == "python3" || l == "nodejs"
}

async fn run(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let req = match parse_run(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg),
    };
    let Some(sandbox) = st.sandbox.get().cloned() else {
        st.metrics.refused("not_ready");
        return envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            -503,
            "sandbox is not ready yet",
            Value::Null,
            "not-ready",
        );
    };
    if !is_known_language(&req.language) || !sandbox.has_language(&req.language) {
        // The answer stays dify-sandbox's; the operator's log says what would fix it.
        tracing::warn!(
            language = %req.language,
            available = %sandbox.language_names().join(", "),
            "unsupported language: add it under `languages:` in the image spec (python3, nodejs) and rebuild"
        );
        return bad_request("unsupported language");
    }
    if req.enable_network && !st.config.enable_network {
        return envelope(
            StatusCode::OK,
            -400,
            "network is disabled, please enable it in the configuration",
            Value::Null,
            "network-disabled",
        );
    }
    if st.in_flight.fetch_add(1, Ordering::SeqCst) >= st.config.max_requests {
        st.in_flight.fetch_sub(1, Ordering::SeqCst);
        st.metrics.refused("too_many_requests");
        return envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            -503,
            "Too many requests",
            Value::Null,
            "too-many",
        );
    }
    let counted = InFlight(Arc::clone(&st));
    let waiting = Waiting::new(&st);
    let permit = Arc::clone(&st.workers).acquire_owned().await;
    drop(waiting);
    let Ok(permit) = permit else {
        return envelope(
            StatusCode::OK,
            -500,
            "server is shutting down",
            Value::Null,
            "error",
        );
    };
    // Preload runs inside the same sandbox, before the user's code, never outside it.
    let code = if st.config.enable_preload && !req.preload.is_empty() {
        format!("{}\n{}", req.preload, req.code)
    } else {
        req.code
    };
    let language = req.language.clone();
    let run_req = RunRequest {
        language: req.language,
        code,
        network: req.enable_network,
        timeout: Duration::from_secs(st.config.worker_timeout),
        network_env: st.config.network_env(),
    };
    // The permit and the count move into the task: if the client disconnects, axum drops this
    // handler but the run goes on to its deadline, and must keep its worker slot until then.
    // The outcome comes back as soon as it is known. The request stops counting against
    // `max_requests` then: a client's next request must not be refused for a run it has its
    // answer to. The task keeps the worker slot until the run's process is reaped and its uid
    // returned, which may come after the answer: the next run waits for it, if it must.
    let (answer, answered) = tokio::sync::oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        if run_req.network {
            sandbox.sync_resolver_files();
        }
        sandbox.run_answering(&run_req, move |outcome| {
            drop(counted);
            // The handler is gone when the client disconnected: nobody to answer.
            let _ = answer.send(outcome);
        });
    });
    let result = match answered.await {
        Ok(outcome) => Ok(outcome),
        // The task ended without answering: it panicked.
        Err(_) => task.await.map(|()| {
            Err(super::sandbox::SandboxError::Os {
                what: "answer the run",
                source: std::io::ErrorKind::BrokenPipe.into(),
            })
        }),
    };
    match result {
        Ok(Ok(out)) => {
            st.metrics
                .run_finished(&language, out.outcome(), out.duration.as_secs_f64());
            let mut r = run_response(&out);
            r.extensions_mut().insert(RunFacts {
                request_id: request_id(),
                language,
                exit_code: out.exit_code(),
                run_ms: out.duration.as_secs_f64() * 1000.0,
                stdout_bytes: out.stdout.len(),
                stderr_bytes: out.stderr.len(),
            });
            r
        }
        Ok(Err(e)) => {
            st.metrics.refused("internal");
            internal("run failed to start", &e)
        }
        Err(e) => {
            st.metrics.refused("internal");
            internal("the sandbox worker failed", &e)
        }
    }
}

/// A -500 answer. The detail (a [`super::sandbox::SandboxError`] names host paths: the
/// rootfs, run directories, lock files) goes to the server log under a fresh id; the client
/// gets a generic message with that id, which is all an operator needs to find the line.
fn internal(what: &str, e: &(dyn std::error::Error + 'static)) -> Response {
    let id = request_id();
    tracing::error!(request_id = %id, error = %Chain(e), "{what}");
    envelope(
        StatusCode::OK,
        -500,
        &internal_message(&id),
        Value::Null,
        "internal",
    )
}

fn internal_message(id: &str) -> String {
    format!("internal error: the sandbox could not run the code (request id {id}; the server log has the details)")
}

/// Unique within the process, and unlikely to repeat across restarts (start time, pid).
fn request_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static PREFIX: OnceLock<String> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:x}{:05x}", t.as_secs(), std::process::id())
    });
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn run_response(out: &RunOutcome) -> Response {
    let data = json!({
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr": String::from_utf8_lossy(&out.stderr),
        "error": out.error_text(),
        "exit_code": out.exit_code(),
    });
    envelope(StatusCode::OK, 0, "success", data, out.outcome())
}

#[derive(serde::Deserialize)]
struct LangQuery {
    language: Option<String>,
}

async fn dependencies(State(st): State<Arc<AppState>>, q: Query<LangQuery>) -> Response {
    let Some(lang) = q.0.language else {
        return bad_request("missing query parameter `language`");
    };
    match st.dependencies.get(&lang) {
        Some(d) => envelope(
            StatusCode::OK,
            0,
            "success",
            json!({"dependencies": d}),
            "ok",
        ),
        None => bad_request("unsupported language"),
    }
}

async fn update(_headers: HeaderMap) -> Response {
    // Dependencies are fixed at build time; nothing to update.
    envelope(StatusCode::OK, 0, "success", json!({}), "ok")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sandbox::SandboxError;

    #[test]
    fn internal_errors_keep_host_paths_in_the_log() {
        let e = SandboxError::Prepare {
            path: "/var/sandbox/sandbox-python/tmp/run-65537".into(),
            what: "create the run's /tmp directory",
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let r = internal("run failed to start", &e);
        let msg = internal_message("x");
        assert!(!msg.contains('/'), "{msg}");
        assert_eq!(r.status(), StatusCode::OK);
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
    }
}
