//! A registry client for one repository: the calls of the OCI distribution API a push needs
//! (blob HEAD, monolithic POST + PUT upload, manifest HEAD/GET/PUT), authenticated as the
//! registry asks (Basic, or a Bearer token from its token service), with errors that name the
//! registry, the object, the HTTP status and the registry's own message.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;
use ureq::http::Response;
use ureq::Body;

use super::auth::{parse_challenge, Challenge, Credentials};
use super::target::Target;
use super::PushError;

/// The most of an error body kept for a message.
const ERROR_BODY_LIMIT: usize = 2000;

/// Connected to one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host[:port]` or `http://host[:port]`.
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    /// A repository of the same registry to mount blobs from instead of uploading them.
    mount_from: Option<String>,
    /// Send blobs larger than this in PATCH chunks of this size; `None`: one PUT.
    chunk_size: Option<u64>,
    /// The `Authorization` value to send, once the registry asked for one.
    authorization: Option<String>,
}

/// How to reach a registry and what to send it.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Try plain http after https (localhost, or `--insecure`).
    pub allow_http: bool,
    /// Accept TLS certificates that do not verify (`--insecure`; covers the token service).
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    pub mount_from: Option<String>,
    pub chunk_size: Option<u64>,
}

/// How a blob got into the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// Sent in `chunks` PATCH requests, or in the final PUT when 0.
    Sent { chunks: u64 },
    /// Linked from another repository of the registry; no bytes sent.
    Mounted { from: String },
}

/// A request made again after a 401: the body is built anew each time.
type Call<'a> = dyn FnMut(&ureq::Agent, Option<&str>) -> Result<Response<Body>, ureq::Error> + 'a;

impl Client {
    /// Finds how to talk to the registry (`GET /v2/`) and authenticates if it asks: https
    /// first, plain http only when [`Settings::allow_http`].
    pub fn connect(target: &Target, settings: Settings) -> Result<Client, PushError> {
        let Settings {
            allow_http,
            insecure,
            credentials,
            mount_from,
            chunk_size,
        } = settings;
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(insecure)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .user_agent(concat!("prebake/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        let host = target.api_host();
        let schemes: &[&str] = if allow_http {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for scheme in schemes {
            let base = format!("{scheme}://{host}");
            match agent.get(&format!("{base}/v2/")).call() {
                Ok(response) => {
                    let mut client = Client {
                        agent,
                        base,
                        registry: target.registry.clone(),
                        repository: target.repository.clone(),
                        credentials,
                        mount_from,
                        chunk_size,
                        authorization: None,
                    };
                    client.after_ping(response)?;
                    return Ok(client);
                }
                Err(e) => last = Some((base, e)),
            }
        }
        let (base, source) = last.expect("at least one scheme is tried");
        let hint = if allow_http {
            "check that the registry runs and the host and port are right; for a self-signed certificate pass --insecure".to_string()
        } else {
            "check that the registry runs and serves https; for a registry with plain http or a self-signed certificate pass --insecure (localhost registries may use plain http without it)".to_string()
        };
        Err(PushError::Transport {
            registry: target.registry.clone(),
            what: format!("GET {base}/v2/"),
            hint,
            cause: Box::new(source),
        })
    }

    /// What the registry calls itself in messages, and its base URL.
    pub fn describe(&self) -> String {
        let auth = match self.authorization.as_deref() {
            None => "no authentication",
            Some(a) if a.starts_with("Basic ") => "basic auth",
            Some(_) => "bearer token",
        };
        // Credentials the registry never asked for were not used: not named.
        let who = self
            .credentials
            .as_ref()
            .filter(|_| self.authorization.is_some())
            .map(|c| format!(" as {} (from {})", c.username, c.source))
            .unwrap_or_default();
        format!("{} ({auth}{who})", self.base)
    }

    fn after_ping(&mut self, mut response: Response<Body>) -> Result<(), PushError> {
        match response.status().as_u16() {
            200..=299 => Ok(()),
            401 => {
                let challenge = challenge_of(&response);
                self.authenticate(challenge, "GET /v2/")?;
                // Try the credentials (or token) at once: wrong ones fail here, clearly,
                // instead of at the first blob.
                let url = format!("{}/v2/", self.base);
                let what = "GET /v2/ with credentials";
                let mut again = self.send(what, &mut |agent, auth| {
                    with_auth(agent.get(&url), auth).call()
                })?;
                if again.status().is_success() {
                    Ok(())
                } else {
                    Err(self.status_error(what.into(), &mut again))
                }
            }
            _ => {
                Err(self.status_error("GET /v2/ (is this an OCI registry?)".into(), &mut response))
            }
        }
    }

    fn authenticate(&mut self, challenge: Option<Challenge>, what: &str) -> Result<(), PushError> {
        let Some(challenge) = challenge else {
            return Err(PushError::Registry {
                registry: self.registry.clone(),
                reason: format!(
                    "{what}: 401 without a WWW-Authenticate challenge prebake understands"
                ),
            });
        };
        match challenge.scheme.as_str() {
            "basic" => {
                let creds = self.credentials.as_ref().ok_or_else(|| PushError::Registry {
                    registry: self.registry.clone(),
                    reason: format!("{what}: the registry asks for a username and password and none were found; {}", login_hint(&self.registry)),
                })?;
                self.authorization = Some(creds.basic());
                Ok(())
            }
            "bearer" => {
                let token = self.token(&challenge)?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(PushError::Registry {
                registry: self.registry.clone(),
                reason: format!("{what}: the registry asks for {other:?} authentication; prebake speaks Basic and Bearer"),
            }),
        }
    }

    /// A token from the challenge's realm for pull and push on our repository (docker's token
    /// flow; with credentials, sent as Basic auth to the token service).
    fn token(&self, challenge: &Challenge) -> Result<String, PushError> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| PushError::Registry {
                registry: self.registry.clone(),
                reason: "the Bearer challenge names no realm (token service)".into(),
            })?;
        let scope = format!("repository:{}:pull,push", self.repository);
        let mut request = self.agent.get(realm).query("scope", &scope);
        if let Some(from) = &self.mount_from {
            // A mount reads the other repository.
            request = request.query("scope", format!("repository:{from}:pull"));
        }
        if let Some(service) = challenge.params.get("service") {
            request = request.query("service", service);
        }
        if let Some(c) = &self.credentials {
            request = request.header("Authorization", &c.basic());
        }
        let what = format!("token for {scope} from {realm}");
        let mut response = request.call().map_err(|source| PushError::Transport {
            registry: self.registry.clone(),
            what: what.clone(),
            hint: "the registry's token service did not answer: check the network, or the realm it names".into(),
            cause: Box::new(source),
        })?;
        if !response.status().is_success() {
            return Err(self.status_error(what, &mut response));
        }
        let v: Value = response
            .body_mut()
            .read_json()
            .map_err(|source| PushError::Transport {
                registry: self.registry.clone(),
                what: what.clone(),
                hint: "the token service's answer is not JSON".into(),
                cause: Box::new(source),
            })?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| PushError::Registry {
                registry: self.registry.clone(),
                reason: format!("{what}: the answer has no token"),
            })
    }

    /// Runs `call`; on a 401 it authenticates by the answer's challenge and runs it once more.
    fn send(&mut self, what: &str, call: &mut Call<'_>) -> Result<Response<Body>, PushError> {
        let mut retried = false;
        loop {
            let response = call(&self.agent, self.authorization.as_deref()).map_err(|source| {
                PushError::Transport {
                    registry: self.registry.clone(),
                    what: what.to_owned(),
                    hint: "check the network and push again (blobs already in the registry are skipped)".into(),
                    cause: Box::new(source),
                }
            })?;
            if response.status().as_u16() != 401 || retried {
                return Ok(response);
            }
            retried = true;
            let before = self.authorization.clone();
            self.authenticate(challenge_of(&response), what)?;
            if self.authorization == before {
                // The same Basic credentials again would be refused again.
                return Ok(response);
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// Whether the repository has the blob (HEAD).
    pub fn blob_exists(&mut self, digest: &str) -> Result<bool, PushError> {
        self.exists(&format!("blobs/{digest}"), &format!("blob {digest}"), None)
    }

    /// Whether the repository has the manifest `reference` (a digest or tag).
    pub fn manifest_exists(
        &mut self,
        reference: &str,
        media_type: &str,
    ) -> Result<bool, PushError> {
        self.exists(
            &format!("manifests/{reference}"),
            &format!("manifest {reference}"),
            Some(media_type),
        )
    }

    fn exists(&mut self, path: &str, what: &str, accept: Option<&str>) -> Result<bool, PushError> {
        let url = self.url(path);
        let what = format!("HEAD {what}");
        let mut response = self.send(&what, &mut |agent, auth| {
            let mut r = with_auth(agent.head(&url), auth);
            if let Some(m) = accept {
                r = r.header("Accept", m);
            }
            r.call()
        })?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(what, &mut response)),
        }
    }

    /// Uploads a blob in one piece: POST for an upload URL, then PUT of the bytes with the
    /// digest, which the registry checks. `open` gives the bytes (again, after a 401). With a
    /// repository to mount from, the POST asks for a mount first: a registry that has the blob
    /// there links it (201) and nothing is sent; else it answers as to a plain POST (202).
    pub fn upload_blob(
        &mut self,
        digest: &str,
        size: u64,
        open: &dyn Fn() -> std::io::Result<Box<dyn Read>>,
    ) -> Result<Upload, PushError> {
        let start = self.url("blobs/uploads/");
        let what = format!("POST blob upload for {digest}");
        let mount = self.mount_from.clone();
        let mut response = self.send(&what, &mut |agent, auth| {
            let mut r = agent.post(&start);
            if let Some(from) = &mount {
                r = r.query("mount", digest).query("from", from);
            }
            with_auth(r, auth)
                .header("Content-Length", "0")
                .send_empty()
        })?;
        if let (201, Some(from)) = (response.status().as_u16(), &self.mount_from) {
            return Ok(Upload::Mounted { from: from.clone() });
        }
        if response.status().as_u16() != 202 {
            return Err(self.status_error(what, &mut response));
        }
        let Some(location) = response
            .headers()
            .get("Location")
            .and_then(|l| l.to_str().ok())
            .map(|l| self.resolve(l))
        else {
            return Err(self.status_error(
                format!("{what}: 202 without a Location header"),
                &mut response,
            ));
        };
        let (location, chunks, body_size) = match self.chunk_size {
            Some(chunk) if size > chunk => {
                let mut reader = open().map_err(|source| PushError::ReadBlob {
                    digest: digest.to_owned(),
                    source,
                })?;
                let location = self.patch_chunks(digest, location, chunk, &mut reader)?;
                (location, size.div_ceil(chunk), 0)
            }
            _ => (location, 0, size),
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        // ':' in the digest is percent-encoded as the spec's examples do.
        let put = format!("{location}{sep}digest={}", digest.replace(':', "%3A"));
        let what = format!("PUT blob {digest} ({size} bytes)");
        let mut response = self.send(&what, &mut |agent, auth| {
            let r = with_auth(agent.put(&put), auth)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", &body_size.to_string());
            if body_size == 0 {
                // The chunks carried the bytes: the PUT only closes the upload.
                return r.send_empty();
            }
            let mut reader = open()?;
            r.send(ureq::SendBody::from_reader(&mut reader))
        })?;
        if response.status().as_u16() != 201 {
            return Err(self.status_error(what, &mut response));
        }
        Ok(Upload::Sent { chunks })
    }

    /// Sends the blob in PATCH requests of `chunk` bytes (each with its `Content-Range`, each
    /// to the Location the previous one answered); returns the Location for the closing PUT.
    /// For registries or proxies that cap the size of one request.
    fn patch_chunks(
        &mut self,
        digest: &str,
        mut location: String,
        chunk: u64,
        reader: &mut dyn Read,
    ) -> Result<String, PushError> {
        let mut offset = 0u64;
        loop {
            let mut buf = Vec::new();
            reader
                .take(chunk)
                .read_to_end(&mut buf)
                .map_err(|source| PushError::ReadBlob {
                    digest: digest.to_owned(),
                    source,
                })?;
            if buf.is_empty() {
                return Ok(location);
            }
            let end = offset + buf.len() as u64 - 1;
            let what = format!("PATCH blob {digest} bytes {offset}-{end}");
            let url = location.clone();
            let mut response = self.send(&what, &mut |agent, auth| {
                with_auth(agent.patch(&url), auth)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", &format!("{offset}-{end}"))
                    .header("Content-Length", &buf.len().to_string())
                    .send(&buf[..])
            })?;
            if response.status().as_u16() != 202 {
                return Err(self.status_error(what, &mut response));
            }
            location = match response
                .headers()
                .get("Location")
                .and_then(|l| l.to_str().ok())
            {
                Some(l) => self.resolve(l),
                None => {
                    return Err(self.status_error(
                        format!("{what}: 202 without a Location header"),
                        &mut response,
                    ))
                }
            };
            offset = end + 1;
        }
    }

    /// PUTs a manifest's exact bytes under `reference` (its digest or a tag); returns the
    /// digest the registry computed (`Docker-Content-Digest`) and whether it answered with
    /// `OCI-Subject` (it indexes referrers itself).
    pub fn put_manifest(
        &mut self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(Option<String>, bool), PushError> {
        let url = self.url(&format!("manifests/{reference}"));
        let what = format!("PUT manifest {reference} ({media_type})");
        let mut response = self.send(&what, &mut |agent, auth| {
            with_auth(agent.put(&url), auth)
                .header("Content-Type", media_type)
                .send(bytes)
        })?;
        if response.status().as_u16() != 201 {
            return Err(self.status_error(what, &mut response));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok((
            header("Docker-Content-Digest"),
            header("OCI-Subject").is_some(),
        ))
    }

    /// GETs a manifest (as the image index type), or `None` when the registry has none.
    pub fn get_index(&mut self, reference: &str) -> Result<Option<Vec<u8>>, PushError> {
        let url = self.url(&format!("manifests/{reference}"));
        let what = format!("GET manifest {reference}");
        let mut response = self.send(&what, &mut |agent, auth| {
            with_auth(agent.get(&url), auth)
                .header("Accept", crate::oci::MEDIA_INDEX)
                .call()
        })?;
        match response.status().as_u16() {
            200 => response
                .body_mut()
                .read_to_vec()
                .map(Some)
                .map_err(|source| PushError::Transport {
                    registry: self.registry.clone(),
                    what,
                    hint: "reading the registry's answer failed: push again".into(),
                    cause: Box::new(source),
                }),
            404 => Ok(None),
            _ => Err(self.status_error(what, &mut response)),
        }
    }

    /// A Location header may be relative to the registry.
    fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    fn status_error(&self, what: String, response: &mut Response<Body>) -> PushError {
        let status = response.status().as_u16();
        let mut body = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_LIMIT as u64)
            .read_to_end(&mut body);
        PushError::Status {
            registry: self.registry.clone(),
            what,
            status,
            message: registry_message(&body),
            hint: self.hint(status),
        }
    }

    /// What to do about an HTTP status.
    fn hint(&self, status: u16) -> String {
        match (status, &self.credentials) {
            (401, None) => format!("the registry wants credentials: {}", login_hint(&self.registry)),
            (401, Some(c)) => format!(
                "the registry refused the credentials of {} from {}: check the username and password",
                c.username, c.source
            ),
            (403, Some(c)) => format!(
                "{} (from {}) may not push to {}: check the account's permissions",
                c.username, c.source, self.repository
            ),
            (403, None) => format!("pushing to {} is forbidden without credentials: {}", self.repository, login_hint(&self.registry)),
            (404, _) => format!(
                "the registry does not know the repository {}: some registries need it created first",
                self.repository
            ),
            (405, _) => "the registry does not accept pushes here (read-only, or a pull-through cache)".into(),
            (413, _) => "the registry refuses an object that large".into(),
            (429, _) => "the registry is rate limiting: wait and push again".into(),
            (500.., _) => "the registry failed: try again later, or look at its logs".into(),
            _ => "the registry rejected the request (see its message)".into(),
        }
    }
}

/// `r` with the `Authorization` header, when there is one to send.
fn with_auth<B>(r: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("Authorization", a),
        None => r,
    }
}

/// Where credentials go, for error messages.
pub fn login_hint(registry: &str) -> String {
    format!(
        "run `docker login {registry}` (prebake reads $DOCKER_CONFIG/config.json or ~/.docker/config.json) or set PREBAKE_REGISTRY_USER and PREBAKE_REGISTRY_PASSWORD"
    )
}

fn challenge_of(response: &Response<Body>) -> Option<Challenge> {
    response
        .headers()
        .get("WWW-Authenticate")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_challenge)
}

/// The registry's error body in a line: the spec's `{"errors":[{"code","message","detail"}]}`,
/// else the text as it came.
fn registry_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(errors) = v["errors"].as_array() {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let mut s = format!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    );
                    if !e["detail"].is_null() {
                        s.push_str(&format!(" ({})", e["detail"]));
                    }
                    s
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no message".into()
    } else {
        text.to_owned()
    }
}
