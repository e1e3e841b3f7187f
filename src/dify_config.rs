//! dify-sandbox's `conf/config.yaml`: the one description of the file that both stages read.
//!
//! `prebake build --dify-config` takes the build-time keys from it ([`crate::spec`]: the
//! interpreters, library paths and extra syscalls that shape the image); `runtime serve
//! --config` takes the run-time keys ([`crate::runtime::config`]: port, key, workers, limits).
//! Which keys exist, which stage owns which, dify-sandbox's environment-list syntax and the
//! dotted key lookup live here, so the two readers cannot drift apart on what the file is.
//! Each reader turns values into its own type with its own errors, as before: the build
//! validates the whole file and reports `file:line:column: key`, the runtime names the file
//! (or environment variable) and the key.
//!
//! Top-level rather than under `spec/` or `contract/`: the file is an input of both stages,
//! written by neither prebake stage, and the runtime must not import the spec stage for it.

use serde_yaml_ng::Value;

/// dify-sandbox's default config path, relative to the working directory.
pub const DEFAULT_CONFIG: &str = "conf/config.yaml";

/// Every key of dify-sandbox 0.2.x's `DifySandboxGlobalConfigurations`.
pub const TOP_KEYS: &[&str] = &[
    "app",
    "max_workers",
    "max_requests",
    "worker_timeout",
    "python_path",
    "python_lib_path",
    "python_pip_mirror_url",
    "python_deps_update_interval",
    "nodejs_path",
    "enable_network",
    "enable_preload",
    "allowed_syscalls",
    "proxy",
    // Shipped in conf/config.yaml since 2025 (main branch); a run-time concern.
    "log_path",
];
/// The keys of `app:`.
pub const APP_KEYS: &[&str] = &["port", "debug", "key"];
/// The keys of `proxy:`.
pub const PROXY_KEYS: &[&str] = &["socks5", "http", "https"];

/// Keys dify-sandbox uses to build its chroot at start; prebake does that at build time, so
/// the runtime ignores them (with a warning). Each may also come from the environment, under
/// its upper-cased name ([`env_name`]).
pub const BUILD_TIME_KEYS: [&str; 5] = [
    "python_path",
    "python_lib_path",
    "nodejs_path",
    "python_deps_update_interval",
    "python_pip_mirror_url",
];

/// dify-sandbox's environment variable for a top-level key: the key upper-cased
/// (`python_path` -> `PYTHON_PATH`).
pub fn env_name(key: &str) -> String {
    key.to_ascii_uppercase()
}

/// The items of a comma-separated environment list (`PYTHON_LIB_PATH`, `ALLOWED_SYSCALLS`),
/// trimmed, empty ones dropped.
pub fn env_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The value at a dotted key path (`app.port`); `None` when absent or null.
pub fn lookup<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    let mut v = root;
    for part in key.split('.') {
        v = v.as_mapping()?.get(Value::String(part.to_string()))?;
    }
    if v.is_null() {
        None
    } else {
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_env_lists() {
        let v: Value = serde_yaml_ng::from_str("app:\n  port: 1\n  key: ~\n").unwrap();
        assert_eq!(lookup(&v, "app.port").and_then(Value::as_u64), Some(1));
        assert!(lookup(&v, "app.key").is_none());
        assert!(lookup(&v, "proxy.http").is_none());
        assert_eq!(env_list(" 1, ,2 ,").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(env_name("python_lib_path"), "PYTHON_LIB_PATH");
    }
}
