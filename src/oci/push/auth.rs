//! Credentials for a registry, found where docker and podman users already keep them, and the
//! `WWW-Authenticate` challenges registries answer with.
//!
//! Order: the explicit username and password (the CLI's `PREBAKE_REGISTRY_USER` and
//! `PREBAKE_REGISTRY_PASSWORD`), then docker's `config.json`: a `credHelpers` entry for the
//! registry, an `auths` entry (`auth`, base64 `user:password`, or `username`/`password`), then
//! the `credsStore` helper. A helper is docker's `docker-credential-<name> get` protocol.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;

use super::target::DOCKER_HUB;
use super::PushError;

/// A username and password (or token) for one registry, and where they came from (for error
/// messages: "the credentials from ~/.docker/config.json were refused").
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the password, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization` value for HTTP Basic.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where to look for credentials.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// Explicit username and password (both or neither), used for any registry.
    pub explicit: Option<(String, String)>,
    /// docker's config.json; see [`docker_config_path`].
    pub docker_config: Option<PathBuf>,
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`: where `docker login`
/// writes (podman reads it too).
pub fn docker_config_path(docker_config_env: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    match (docker_config_env, home) {
        (Some(d), _) if !d.is_empty() => Some(Path::new(d).join("config.json")),
        (_, Some(h)) if !h.is_empty() => Some(Path::new(h).join(".docker/config.json")),
        _ => None,
    }
}

/// The credentials for `registry` (`host[:port]` as in the reference), or `None`.
pub fn find_credentials(
    registry: &str,
    sources: &CredentialSources,
) -> Result<Option<Credentials>, PushError> {
    if let Some((user, password)) = &sources.explicit {
        return Ok(Some(Credentials {
            username: user.clone(),
            password: password.clone(),
            source: "PREBAKE_REGISTRY_USER/PREBAKE_REGISTRY_PASSWORD".into(),
        }));
    }
    let Some(path) = &sources.docker_config else {
        return Ok(None);
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PushError::Io {
                path: path.clone(),
                source,
            })
        }
    };
    let bad = |reason: String| PushError::Credentials {
        path: path.clone(),
        reason,
    };
    let config: Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let source = path.display().to_string();

    if let Some(helper) = config["credHelpers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| same_registry(k, registry)))
        .and_then(|(_, v)| v.as_str())
    {
        return helper_get(helper, registry).map_err(bad);
    }
    if let Some(entries) = config["auths"].as_object() {
        for (key, entry) in entries {
            if !same_registry(key, registry) {
                continue;
            }
            if let Some(c) =
                auths_entry(entry, &source).map_err(|r| bad(format!("auths {key:?}: {r}")))?
            {
                return Ok(Some(c));
            }
        }
    }
    if let Some(store) = config["credsStore"].as_str().filter(|s| !s.is_empty()) {
        return helper_get(store, registry).map_err(bad);
    }
    Ok(None)
}

/// One `auths` entry: `auth` (base64 of `user:password`) or `username` and `password`. An
/// entry with only an `identitytoken` (an OAuth refresh token) is not supported.
fn auths_entry(entry: &Value, source: &str) -> Result<Option<Credentials>, String> {
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("\"auth\" is not base64: {e}"))?;
        let raw = String::from_utf8(raw).map_err(|_| "\"auth\" is not UTF-8 text".to_string())?;
        let (user, password) = raw
            .split_once(':')
            .ok_or("\"auth\" does not decode to user:password")?;
        return Ok(Some(Credentials {
            username: user.to_owned(),
            password: password.to_owned(),
            source: source.to_owned(),
        }));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
            source: source.to_owned(),
        })),
        _ if entry["identitytoken"].is_string() => Err(
            "only an \"identitytoken\" is stored, which prebake cannot use; set PREBAKE_REGISTRY_USER and PREBAKE_REGISTRY_PASSWORD".into(),
        ),
        _ => Ok(None),
    }
}

/// The host an `auths`/`credHelpers` key names: keys are written as `host`, `host:port` or a
/// URL (`https://index.docker.io/v1/`).
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn same_registry(key: &str, registry: &str) -> bool {
    let host = key_host(key);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host.eq_ignore_ascii_case(registry) || (registry == DOCKER_HUB && hub(host))
}

/// `docker-credential-<helper> get`, given the server on stdin, prints
/// `{"Username": ..., "Secret": ...}`; it exits non-zero when it has nothing for the server.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{helper}");
    let server = if registry == DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("names the credential helper {program:?}, which cannot run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading gives EPIPE here; its exit status says more.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        // "credentials not found in native keychain": nothing stored for this registry.
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{program} get printed something other than JSON: {e}"))?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) => Ok(Some(Credentials {
            username: u.to_owned(),
            password: s.to_owned(),
            source: format!("credential helper {program}"),
        })),
        _ => Err(format!("{program} get printed no Username and Secret")),
    }
}

/// A parsed `WWW-Authenticate` header: `Bearer realm="...",service="...",scope="..."` or
/// `Basic realm="..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercase: `bearer` or `basic`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses the first challenge of a `WWW-Authenticate` value (registries send one).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r.trim_start()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string: backslash escapes the next character.
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry \"x\"", charset=UTF-8"#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], r#"Registry "x""#);
        assert_eq!(c.params["charset"], "UTF-8");
        assert_eq!(parse_challenge("Basic").unwrap().params.len(), 0);
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn reads_docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        std::fs::write(
            &config,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"127.0.0.1:5000":{{"username":"bob","password":"bobs-secret-password"}},"bad.example":{{"auth":"***"}}}}}}"#
            ),
        )
        .unwrap();
        let sources = CredentialSources {
            explicit: None,
            docker_config: Some(config.clone()),
        };
        let hub = find_credentials("docker.io", &sources).unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3:cret")
        );
        let local = find_credentials("127.0.0.1:5000", &sources)
            .unwrap()
            .unwrap();
        assert_eq!(local.username, "bob");
        assert!(find_credentials("ghcr.io", &sources).unwrap().is_none());
        let err = find_credentials("bad.example", &sources).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        // (A long password: the source names the config file, whose random temp path could
        // hold any short string.)
        assert!(!format!("{local:?}").contains("bobs-secret-password"));
        let explicit = CredentialSources {
            explicit: Some(("u".into(), "p".into())),
            docker_config: Some(config),
        };
        assert_eq!(
            find_credentials("127.0.0.1:5000", &explicit)
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
    }
}
