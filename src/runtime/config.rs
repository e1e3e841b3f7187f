//! `runtime serve` configuration: dify-sandbox's `conf/config.yaml` keys plus prebake's own
//! limits; environment variables win over the file. dify-sandbox's keys are in shared/api.md;
//! prebake's own:
//!
//! | key | env | meaning | default |
//! |---|---|---|---|
//! | `limits.memory_mb` | `SANDBOX_MEMORY_MB` | address space per script (RLIMIT_AS) | 1024 |
//! | `limits.nodejs_memory_mb` | `SANDBOX_NODEJS_MEMORY_MB` | the same for `nodejs` runs: V8 reserves ~700 MiB of address space before any script runs (see `Limits::memory_by_language`) | 2048 |
//! | `limits.output_bytes` | `SANDBOX_OUTPUT_BYTES` | cap per stream; beyond it the run is killed and the truncation reported. dify-sandbox has no cap at all, so the default is far above anything Dify's own result limits accept (strings of 400,000 characters): 64 MiB per stream bounds the server's buffers to 2 × 64 MiB × `max_workers` | 67108864 |
//! | `limits.processes` | `SANDBOX_MAX_PROCESSES` | processes + threads per script (RLIMIT_NPROC of its own uid) | 64 |
//! | `limits.tmp_mb` | `SANDBOX_TMP_MB` | size of the private /tmp, and the largest file (RLIMIT_FSIZE) | 64 |
//! | `limits.request_bytes` | `SANDBOX_REQUEST_BYTES` | largest request body (code plus Dify's base64 inputs); larger ones get HTTP 413 | 16777216 |
//! | `limits.header_timeout` | `SANDBOX_HEADER_TIMEOUT` | seconds a connection may take to send a request's headers (also the idle time of a kept-alive connection); slower ones are closed, so connections that never finish their headers cannot pile up | 10 |
//! | `limits.connections` | `SANDBOX_MAX_CONNECTIONS` | open connections at most, lowered at start to fit the descriptor limit; beyond it the oldest connection that is not in a request is closed to make room, so /health and runs stay answered | 1024 |
//! | `shutdown_timeout` | `SANDBOX_SHUTDOWN_TIMEOUT` | seconds SIGTERM waits for in-flight runs before the server exits anyway | `worker_timeout` + 5 |
//! | `uid_lock_dir` | `SANDBOX_UID_LOCK_DIR` | directory of the uid-pool lock files; every server of a node must share it (see the README), because RLIMIT_NPROC counts per uid node-wide. The older `PREBAKE_LOCK_DIR` is read when neither is set | /run/prebake-runtime (rootless: `$XDG_RUNTIME_DIR/prebake-runtime`, else `/tmp/prebake-runtime-UID`) |
//! | `namespaces` | `SANDBOX_NAMESPACES` | use namespaces where the platform allows them | true |
//! | `warm_pool` | `SANDBOX_WARM_POOL` | fork Python runs from a zygote with the preload list imported (see `sandbox::warm`) | true |
//! | `warm_pool_preload` | `SANDBOX_WARM_POOL_PRELOAD` | modules the zygote imports (a YAML list; comma-separated in the environment); absent ones are skipped | json, base64, jinja2, requests, httpx |
//! | `log_format` | `LOG_FORMAT` | `text`, or `json`: one JSON object per line, and for each run one line with its request id, language, outcome, exit code, durations and output sizes (never the code or the output) | text |
//! | `warm_pool_max_forks` | `SANDBOX_WARM_POOL_MAX_FORKS` | runs one zygote serves before it is replaced (bounds how long runs share its address-space layout and hash secret) | 1000 |
//!
//! `allowed_syscalls` is accepted and ignored with a warning: a stacked seccomp filter can only
//! narrow the baked policy, never widen it, and compiling a new one at run time is what
//! prebake avoids; extra syscalls belong in the image spec, baked at build time.

use super::sandbox::{Limits, WarmConfig};
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

// The file's vocabulary is shared with the build's importer (`spec::dify`).
use crate::dify_config::{env_list, env_name, lookup, BUILD_TIME_KEYS};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub port: u16,
    pub key: String,
    pub debug: bool,
    /// Log lines as JSON objects, one per line (`log_format: json`), instead of text.
    pub log_json: bool,
    pub max_workers: usize,
    pub max_requests: usize,
    /// Seconds per script.
    pub worker_timeout: u64,
    pub enable_network: bool,
    pub enable_preload: bool,
    pub allowed_syscalls: Vec<i64>,
    pub proxy_socks5: String,
    pub proxy_http: String,
    pub proxy_https: String,
    pub limits: Limits,
    /// Largest request body; axum answers 413 beyond it.
    pub request_bytes: usize,
    /// Seconds a connection may take to send a request's headers.
    pub header_timeout: u64,
    /// Open connections at most (before the descriptor-limit clamp `runtime serve` applies).
    pub max_connections: usize,
    /// Seconds SIGTERM waits for in-flight runs.
    pub shutdown_timeout: u64,
    /// The uid-pool lock directory, when configured (else the caller's default).
    pub uid_lock_dir: Option<PathBuf>,
    /// Use namespaces when the platform allows them (false mimics Docker's default profile).
    pub namespaces: bool,
    /// The warm pool (zygotes for Python runs).
    pub warm: WarmConfig,
    /// Things to warn about once logging is up.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 8194,
            key: String::new(),
            debug: false,
            log_json: false,
            max_workers: 4,
            max_requests: 50,
            worker_timeout: 5,
            // dify-sandbox ships `enable_network: True` and Dify sends `enable_network: true` with
            // every run: a default of false fails every Dify code node.
            enable_network: true,
            enable_preload: false,
            allowed_syscalls: Vec::new(),
            proxy_socks5: String::new(),
            proxy_http: String::new(),
            proxy_https: String::new(),
            limits: Limits::default(),
            request_bytes: 16 << 20,
            header_timeout: 10,
            max_connections: 1024,
            shutdown_timeout: 5 + 5,
            uid_lock_dir: None,
            namespaces: true,
            warm: WarmConfig::default(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{origin}: `{key}` must be {expected}, found {found}")]
    Type {
        origin: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "the API key is empty: set `app.key` in the config file or API_KEY in the environment"
    )]
    EmptyKey,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{key} = {value} is too large (at most {max})")]
    TooLarge {
        key: &'static str,
        value: u64,
        max: u64,
    },
}

/// A day: a larger deadline is a typo, and `Instant + Duration` must not overflow.
const MAX_WORKER_TIMEOUT: u64 = 86_400;
/// 1 GiB per output stream: the server holds both streams of every run in memory.
const MAX_OUTPUT_BYTES: u64 = 1 << 30;
/// Queued requests each hold a connection; a million is already beyond any node.
const MAX_REQUESTS: u64 = 1_000_000;
/// An hour to send headers is already no timeout at all.
const MAX_HEADER_TIMEOUT: u64 = 3600;
/// Each connection holds a descriptor; no node has more.
const MAX_CONNECTIONS: u64 = 1_000_000;
/// MiB settings: 1 TiB, so that `v << 20` cannot wrap.
const MAX_MIB: u64 = 1 << 20;

fn at_most(key: &'static str, value: u64, max: u64) -> Result<u64, ConfigError> {
    if value > max {
        Err(ConfigError::TooLarge { key, value, max })
    } else {
        Ok(value)
    }
}

fn mib(key: &'static str, value: u64) -> Result<u64, ConfigError> {
    Ok(at_most(key, value, MAX_MIB)? << 20)
}

fn describe(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// One source of values (the YAML file or the environment), with its name for errors.
struct Source<'a> {
    file: Option<(&'a Path, &'a Value)>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Source<'_> {
    fn type_err(origin: String, key: &str, expected: &'static str, found: String) -> ConfigError {
        ConfigError::Type {
            origin,
            key: key.to_string(),
            expected,
            found,
        }
    }

    fn string(&self, key: &str, env: &str, out: &mut String) -> Result<(), ConfigError> {
        if let Some((path, root)) = self.file {
            if let Some(v) = lookup(root, key) {
                *out = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(Self::type_err(
                            path.display().to_string(),
                            key,
                            "a string",
                            describe(other),
                        ))
                    }
                };
            }
        }
        if let Some(v) = (self.env)(env) {
            *out = v;
        }
        Ok(())
    }

    fn bool(&self, key: &str, env: &str, out: &mut bool) -> Result<(), ConfigError> {
        if let Some((path, root)) = self.file {
            if let Some(v) = lookup(root, key) {
                *out = match v {
                    Value::Bool(b) => *b,
                    Value::String(s) => parse_bool(s).ok_or_else(|| {
                        Self::type_err(path.display().to_string(), key, "true or false", s.clone())
                    })?,
                    other => {
                        return Err(Self::type_err(
                            path.display().to_string(),
                            key,
                            "true or false",
                            describe(other),
                        ))
                    }
                };
            }
        }
        if let Some(v) = (self.env)(env) {
            *out = parse_bool(&v).ok_or_else(|| {
                Self::type_err(format!("environment {env}"), key, "true or false", v)
            })?;
        }
        Ok(())
    }

    fn u64(&self, key: &str, env: &str) -> Result<Option<u64>, ConfigError> {
        let mut out = None;
        if let Some((path, root)) = self.file {
            if let Some(v) = lookup(root, key) {
                out = Some(
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                        .ok_or_else(|| {
                            Self::type_err(
                                path.display().to_string(),
                                key,
                                "a non-negative integer",
                                describe(v),
                            )
                        })?,
                );
            }
        }
        if let Some(v) = (self.env)(env) {
            out = Some(v.trim().parse().map_err(|_| {
                Self::type_err(
                    format!("environment {env}"),
                    key,
                    "a non-negative integer",
                    v.clone(),
                )
            })?);
        }
        Ok(out)
    }

    fn strings(&self, key: &str, env: &str, out: &mut Vec<String>) -> Result<(), ConfigError> {
        if let Some((path, root)) = self.file {
            if let Some(v) = lookup(root, key) {
                let wrong = |v: &Value| {
                    Self::type_err(
                        path.display().to_string(),
                        key,
                        "a list of names",
                        describe(v),
                    )
                };
                *out = v
                    .as_sequence()
                    .ok_or_else(|| wrong(v))?
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned).ok_or_else(|| wrong(n)))
                    .collect::<Result<_, _>>()?;
            }
        }
        if let Some(v) = (self.env)(env) {
            *out = env_list(&v).map(str::to_owned).collect();
        }
        Ok(())
    }

    fn syscalls(&self, out: &mut Vec<i64>) -> Result<(), ConfigError> {
        let key = "allowed_syscalls";
        if let Some((path, root)) = self.file {
            if let Some(v) = lookup(root, key) {
                let seq = v.as_sequence().ok_or_else(|| {
                    Self::type_err(
                        path.display().to_string(),
                        key,
                        "a list of syscall numbers",
                        describe(v),
                    )
                })?;
                *out = seq
                    .iter()
                    .map(|n| {
                        n.as_i64().ok_or_else(|| {
                            Self::type_err(
                                path.display().to_string(),
                                key,
                                "a list of syscall numbers",
                                describe(n),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
        }
        if let Some(v) = (self.env)("ALLOWED_SYSCALLS") {
            *out = env_list(&v)
                .map(|s| {
                    s.parse().map_err(|_| {
                        Self::type_err(
                            "environment ALLOWED_SYSCALLS".into(),
                            key,
                            "comma-separated syscall numbers",
                            v.clone(),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }
}

impl Config {
    /// Load `path` (when given and present; `required` makes a missing file an error), then
    /// apply environment variables from `env`.
    pub fn load(
        path: Option<&Path>,
        required: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut doc = None;
        if let Some(p) = path {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    let v: Value =
                        serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Yaml {
                            path: p.to_path_buf(),
                            source,
                        })?;
                    doc = Some(v);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: p.to_path_buf(),
                        source,
                    })
                }
            }
        }
        let src = Source {
            file: path.zip(doc.as_ref()),
            env,
        };
        let mut c = Config::default();
        if let Some(p) = src.u64("app.port", "SANDBOX_PORT")? {
            c.port = u16::try_from(p).map_err(|_| ConfigError::Type {
                origin: "configuration".into(),
                key: "app.port".into(),
                expected: "a port number (0..=65535)",
                found: p.to_string(),
            })?;
        }
        src.string("app.key", "API_KEY", &mut c.key)?;
        src.bool("app.debug", "DEBUG", &mut c.debug)?;
        let mut format = String::from("text");
        src.string("log_format", "LOG_FORMAT", &mut format)?;
        c.log_json = match format.trim().to_ascii_lowercase().as_str() {
            "text" | "" => false,
            "json" => true,
            _ => {
                return Err(Source::type_err(
                    "log_format (LOG_FORMAT)".into(),
                    "log_format",
                    "text or json",
                    format,
                ))
            }
        };
        if let Some(v) = src.u64("max_workers", "MAX_WORKERS")? {
            c.max_workers = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = src.u64("max_requests", "MAX_REQUESTS")? {
            c.max_requests =
                usize::try_from(at_most("max_requests", v, MAX_REQUESTS)?).unwrap_or(usize::MAX);
        }
        if let Some(v) = src.u64("worker_timeout", "WORKER_TIMEOUT")? {
            c.worker_timeout = at_most("worker_timeout", v, MAX_WORKER_TIMEOUT)?;
        }
        src.bool("enable_network", "ENABLE_NETWORK", &mut c.enable_network)?;
        src.bool("enable_preload", "ENABLE_PRELOAD", &mut c.enable_preload)?;
        src.syscalls(&mut c.allowed_syscalls)?;
        src.string("proxy.socks5", "SOCKS5_PROXY", &mut c.proxy_socks5)?;
        src.string("proxy.http", "HTTP_PROXY", &mut c.proxy_http)?;
        src.string("proxy.https", "HTTPS_PROXY", &mut c.proxy_https)?;
        if let Some(v) = src.u64("limits.memory_mb", "SANDBOX_MEMORY_MB")? {
            c.limits.memory_bytes = mib("limits.memory_mb", v)?;
        }
        if let Some(v) = src.u64("limits.nodejs_memory_mb", "SANDBOX_NODEJS_MEMORY_MB")? {
            c.limits
                .memory_by_language
                .insert("nodejs".to_owned(), mib("limits.nodejs_memory_mb", v)?);
        }
        if let Some(v) = src.u64("limits.output_bytes", "SANDBOX_OUTPUT_BYTES")? {
            c.limits.output_bytes =
                usize::try_from(at_most("limits.output_bytes", v, MAX_OUTPUT_BYTES)?)
                    .unwrap_or(usize::MAX);
        }
        if let Some(v) = src.u64("limits.processes", "SANDBOX_MAX_PROCESSES")? {
            c.limits.processes = v;
        }
        if let Some(v) = src.u64("limits.tmp_mb", "SANDBOX_TMP_MB")? {
            c.limits.tmp_bytes = mib("limits.tmp_mb", v)?;
        }
        if let Some(v) = src.u64("limits.request_bytes", "SANDBOX_REQUEST_BYTES")? {
            c.request_bytes =
                usize::try_from(at_most("limits.request_bytes", v, MAX_OUTPUT_BYTES)?)
                    .unwrap_or(usize::MAX);
        }
        if let Some(v) = src.u64("limits.header_timeout", "SANDBOX_HEADER_TIMEOUT")? {
            c.header_timeout = at_most("limits.header_timeout", v, MAX_HEADER_TIMEOUT)?;
        }
        if let Some(v) = src.u64("limits.connections", "SANDBOX_MAX_CONNECTIONS")? {
            c.max_connections = usize::try_from(at_most("limits.connections", v, MAX_CONNECTIONS)?)
                .unwrap_or(usize::MAX);
        }
        // Runs cannot outlast their deadline, so by default the wait covers one.
        c.shutdown_timeout = c.worker_timeout.saturating_add(5);
        if let Some(v) = src.u64("shutdown_timeout", "SANDBOX_SHUTDOWN_TIMEOUT")? {
            c.shutdown_timeout = at_most("shutdown_timeout", v, MAX_WORKER_TIMEOUT)?;
        }
        let mut lock_dir = String::new();
        src.string("uid_lock_dir", "SANDBOX_UID_LOCK_DIR", &mut lock_dir)?;
        if !lock_dir.is_empty() {
            c.uid_lock_dir = Some(PathBuf::from(lock_dir));
        }
        src.bool("namespaces", "SANDBOX_NAMESPACES", &mut c.namespaces)?;
        src.bool("warm_pool", "SANDBOX_WARM_POOL", &mut c.warm.enabled)?;
        src.strings(
            "warm_pool_preload",
            "SANDBOX_WARM_POOL_PRELOAD",
            &mut c.warm.preload,
        )?;
        if let Some(v) = src.u64("warm_pool_max_forks", "SANDBOX_WARM_POOL_MAX_FORKS")? {
            c.warm.max_forks = v;
        }

        if c.key.is_empty() {
            return Err(ConfigError::EmptyKey);
        }
        for (name, v) in [
            ("max_workers", c.max_workers as u64),
            ("max_requests", c.max_requests as u64),
            ("worker_timeout", c.worker_timeout),
            ("limits.header_timeout", c.header_timeout),
            ("limits.connections", c.max_connections as u64),
            ("warm_pool_max_forks", c.warm.max_forks),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if c.key == "dify-sandbox" {
            c.warnings.push(
                "!!! the API key is the public default `dify-sandbox`: anyone who can reach this port can run code; set API_KEY to a secret !!!"
                    .into(),
            );
        }
        let max_uids = crate::contract::SANDBOX_UID_COUNT as usize;
        if c.max_workers > max_uids {
            c.warnings.push(format!(
                "max_workers {} is more than the {max_uids} sandbox uids; using {max_uids}",
                c.max_workers
            ));
            c.max_workers = max_uids;
        }
        if !c.allowed_syscalls.is_empty() {
            c.warnings.push(format!(
                "allowed_syscalls {:?} ignored: a seccomp filter can only narrow what an earlier one allows, so extra syscalls must be baked into the policy at build time (the image spec's seccomp section) and the image rebuilt",
                c.allowed_syscalls
            ));
        }
        let build_time: Vec<&str> = BUILD_TIME_KEYS
            .iter()
            .copied()
            .filter(|k| {
                src.file.is_some_and(|(_, root)| lookup(root, k).is_some())
                    || (src.env)(&env_name(k)).is_some()
            })
            .collect();
        if !build_time.is_empty() {
            c.warnings.push(format!(
                "{} ignored: prebake resolves interpreters, libraries and packages at build time; put them in the image spec and rebuild",
                build_time.join(", ")
            ));
        }
        Ok(c)
    }

    /// Environment for scripts that have network: the configured proxies.
    pub fn network_env(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (val, names) in [
            (&self.proxy_http, ["HTTP_PROXY", "http_proxy"]),
            (&self.proxy_https, ["HTTPS_PROXY", "https_proxy"]),
            (&self.proxy_socks5, ["ALL_PROXY", "all_proxy"]),
        ] {
            if !val.is_empty() {
                for n in names {
                    v.push((n.to_string(), val.clone()));
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn log_format_is_text_or_json() {
        let env = |_: &str| None;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yaml");
        for (text, json) in [
            ("log_format: json\n", Some(true)),
            ("log_format: Text\n", Some(false)),
            ("log_format: xml\n", None),
        ] {
            std::fs::write(&cfg, format!("app:\n  key: k\n{text}")).unwrap();
            match (Config::load(Some(&cfg), true, &env), json) {
                (Ok(c), Some(want)) => assert_eq!(c.log_json, want, "{text}"),
                (Err(e), None) => assert!(e.to_string().contains("log_format"), "{e}"),
                (other, _) => panic!("{text}: {:?}", other.map(|c| c.log_json)),
            }
        }
    }
    use super::*;

    #[test]
    fn file_then_env_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        std::fs::write(
            &p,
            "app:\n  port: 9000\n  debug: True\n  key: dify-sandbox\nmax_workers: 2\nenable_network: true\npython_path: /usr/bin/python3\nallowed_syscalls: [1, 2]\nproxy:\n  http: 'http://p:3128'\nlimits:\n  memory_mb: 256\n  nodejs_memory_mb: 1536\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "MAX_WORKERS" => Some("3".to_string()),
            _ => None,
        };
        let c = Config::load(Some(&p), true, &env).unwrap();
        assert_eq!(c.port, 9000);
        assert!(c.debug);
        assert_eq!(c.max_workers, 3);
        assert!(c.enable_network);
        assert_eq!(c.limits.memory_bytes, 256 << 20);
        assert_eq!(c.limits.memory_for("python3"), 256 << 20);
        assert_eq!(c.limits.memory_for("nodejs"), 1536 << 20);
        assert_eq!(c.allowed_syscalls, vec![1, 2]);
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c
            .network_env()
            .contains(&("HTTP_PROXY".into(), "http://p:3128".into())));

        let no_key = |_: &str| None;
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "max_workers: 1\n").unwrap();
        assert!(matches!(
            Config::load(Some(&empty), true, &no_key),
            Err(ConfigError::EmptyKey)
        ));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "app:\n  key: k\nmax_workers: many\n").unwrap();
        let e = Config::load(Some(&bad), true, &no_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_workers") && e.contains("bad.yaml"), "{e}");
    }

    #[test]
    fn defaults_match_dify_sandbox_where_dify_relies_on_them() {
        let env = |k: &str| (k == "API_KEY").then(|| "secret".to_string());
        let c = Config::load(None, false, &env).unwrap();
        assert!(
            c.enable_network,
            "Dify sends enable_network: true with every run"
        );
        assert!(c.limits.output_bytes >= 64 << 20);
        let off = |k: &str| match k {
            "API_KEY" => Some("secret".to_string()),
            "ENABLE_NETWORK" => Some("false".to_string()),
            _ => None,
        };
        assert!(!Config::load(None, false, &off).unwrap().enable_network);
    }

    #[test]
    fn huge_settings_are_errors_not_overflows() {
        for (name, value) in [
            ("WORKER_TIMEOUT", u64::MAX.to_string()),
            ("SANDBOX_MEMORY_MB", (1u64 << 50).to_string()),
            ("SANDBOX_TMP_MB", u64::MAX.to_string()),
            ("SANDBOX_NODEJS_MEMORY_MB", (1u64 << 45).to_string()),
            ("SANDBOX_OUTPUT_BYTES", u64::MAX.to_string()),
            ("SANDBOX_HEADER_TIMEOUT", "3601".to_string()),
            ("SANDBOX_MAX_CONNECTIONS", u64::MAX.to_string()),
            ("SANDBOX_SHUTDOWN_TIMEOUT", u64::MAX.to_string()),
        ] {
            let env = |k: &str| match k {
                "API_KEY" => Some("secret".to_string()),
                k if k == name => Some(value.clone()),
                _ => None,
            };
            let e = Config::load(None, false, &env).unwrap_err().to_string();
            assert!(e.contains("too large"), "{name}: {e}");
        }
    }

    #[test]
    fn connection_shutdown_and_lock_dir_settings() {
        let base = |k: &str| (k == "API_KEY").then(|| "secret".to_string());
        let c = Config::load(None, false, &base).unwrap();
        assert_eq!(
            (c.header_timeout, c.max_connections, c.uid_lock_dir),
            (10, 1024, None)
        );
        assert_eq!(c.shutdown_timeout, c.worker_timeout + 5);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        std::fs::write(
            &p,
            "app:\n  key: k\nworker_timeout: 20\nlimits:\n  header_timeout: 3\n  connections: 100\nuid_lock_dir: /node/locks\n",
        )
        .unwrap();
        let env = |k: &str| (k == "SANDBOX_SHUTDOWN_TIMEOUT").then(|| "7".to_string());
        let c = Config::load(Some(&p), true, &env).unwrap();
        assert_eq!((c.header_timeout, c.max_connections), (3, 100));
        assert_eq!(c.shutdown_timeout, 7);
        assert_eq!(c.uid_lock_dir, Some(PathBuf::from("/node/locks")));
        let c = Config::load(Some(&p), true, &|k: &str| {
            (k == "SANDBOX_UID_LOCK_DIR").then(|| "/other".to_string())
        })
        .unwrap();
        assert_eq!(c.shutdown_timeout, 25, "worker_timeout + 5 by default");
        assert_eq!(c.uid_lock_dir, Some(PathBuf::from("/other")));
        for zero in ["SANDBOX_HEADER_TIMEOUT", "SANDBOX_MAX_CONNECTIONS"] {
            let env = |k: &str| match k {
                "API_KEY" => Some("secret".to_string()),
                k if k == zero => Some("0".to_string()),
                _ => None,
            };
            let e = Config::load(None, false, &env).unwrap_err().to_string();
            assert!(e.contains("at least 1"), "{zero}: {e}");
        }
    }

    #[test]
    fn warm_pool_keys_file_then_env() {
        let key = |k: &str| (k == "API_KEY").then(|| "k".to_string());
        let c = Config::load(None, false, &key).unwrap();
        assert!(c.warm.enabled);
        assert_eq!(
            c.warm.preload,
            ["json", "base64", "jinja2", "requests", "httpx"]
        );
        assert_eq!(c.warm.max_forks, 1000);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        std::fs::write(
            &p,
            "app:\n  key: k\nwarm_pool: false\nwarm_pool_preload: [json, numpy]\nwarm_pool_max_forks: 50\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), true, &|_: &str| None).unwrap();
        assert!(!c.warm.enabled);
        assert_eq!(c.warm.preload, ["json", "numpy"]);
        assert_eq!(c.warm.max_forks, 50);
        let env = |k: &str| match k {
            "SANDBOX_WARM_POOL" => Some("on".to_string()),
            "SANDBOX_WARM_POOL_PRELOAD" => Some(" yaml , ,csv".to_string()),
            _ => None,
        };
        let c = Config::load(Some(&p), true, &env).unwrap();
        assert!(c.warm.enabled);
        assert_eq!(c.warm.preload, ["yaml", "csv"]);

        std::fs::write(&p, "app:\n  key: k\nwarm_pool_preload: json\n").unwrap();
        let e = Config::load(Some(&p), true, &|_: &str| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("warm_pool_preload") && e.contains("a list of names"),
            "{e}"
        );
        std::fs::write(&p, "app:\n  key: k\nwarm_pool_max_forks: 0\n").unwrap();
        let e = Config::load(Some(&p), true, &|_: &str| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("warm_pool_max_forks must be at least 1"), "{e}");
    }
}
