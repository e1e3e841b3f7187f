//! Issue 13 item 4: `prebake push` to a real registry (Debian's `docker-registry`, the
//! distribution project's registry 2.8, started by each test on a free localhost port with its
//! own storage and killed at the end), read back with skopeo: the same manifest bytes and
//! digest, the same blobs; a second push uploads nothing; htpasswd Basic auth with docker's
//! config.json; an image index walked down to its image; an SBOM-like referrer pushed after its
//! subject and listed under the referrers tag (registry 2.8 has no referrers API); Bearer
//! tokens from a token service; cross-repository mounts; chunked uploads; plain http only for
//! localhost or with `--insecure`; `build --push` (with the shared build).

use crate::support;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EPOCH: &str = "1700000000";
const REPO: &str = "team/prebake-python";

/// A `docker-registry serve` of this test, on `ip`:`port` (127.0.0.1 unless asked).
pub(crate) struct Registry {
    child: Child,
    ip: std::net::Ipv4Addr,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `htpasswd` (user, password) it asks for Basic auth.
    pub(crate) fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_config(std::net::Ipv4Addr::LOCALHOST, htpasswd, "")
    }

    /// Starts a registry with `extra` appended to its config (an `auth:` section).
    fn start_with(extra: &str) -> Registry {
        Registry::start_config(std::net::Ipv4Addr::LOCALHOST, None, extra)
    }

    fn start_config(
        ip: std::net::Ipv4Addr,
        htpasswd: Option<(&str, &str)>,
        extra: &str,
    ) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = support::free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {ip}:{port}\n  secret: prebake-push-test\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = htpasswd {
            // bcrypt, the only hash registry 2.8 accepts, from apache2-utils' htpasswd.
            let line = support::run_stdout(Command::new("htpasswd").args(["-Bbn", user, password]));
            let file = dir.path().join("htpasswd");
            fs::write(&file, line.trim()).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: prebake-test\n    path: {}\n",
                file.display()
            ));
        }
        config.push_str(extra);
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            ip,
            port,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((self.ip, self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} in 20 s:\n{}",
            self.port,
            self.log()
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub(crate) fn reference(&self, tag: &str) -> String {
        format!("{}/{REPO}:{tag}", self.host())
    }

    /// GET of a registry API path, anonymous: (status, body).
    fn get(&self, path: &str, accept: &str) -> (u16, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(&format!("http://{}{path}", self.host()))
            .header("Accept", accept)
            .call()
            .unwrap();
        // Layers are larger than ureq's default 10 MB limit.
        let body = r.body_mut().with_config().limit(1 << 30).read_to_vec();
        (r.status().as_u16(), body.unwrap())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One image built by `prebake build` (python3 spec), shared by the tests. The build also
/// pushes it (`build --push`, to a registry of its own): the build is the slow part, so its
/// `--push` is checked here rather than by a build of its own.
fn built_layout() -> &'static Path {
    static S: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &S.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let spec = support::repo_root().join("images/python3.yaml");
        let registry = Registry::start(None);
        let reference = registry.reference("built");
        let mut c = support::prebake(&[
            "build",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--tag",
            "prebake-push-test:1",
            "--push",
            &reference,
        ]);
        let stdout = support::run_stdout(c.env("SOURCE_DATE_EPOCH", EPOCH));
        let layout = out.join("image");
        let digest = top_digest(&layout);
        assert_eq!(pushed_digest(&stdout), digest, "build --push:\n{stdout}");
        let (status, manifest) = registry.get(
            &format!("/v2/{REPO}/manifests/built"),
            "application/vnd.oci.image.manifest.v1+json",
        );
        assert_eq!(status, 200, "build --push left no tag");
        assert_eq!(format!("sha256:{}", support::sha256(&manifest)), digest);
        (tmp, layout)
    })
    .1
}

/// `prebake push ARGS` with `env` and no credentials unless `env` gives some (HOME and
/// DOCKER_CONFIG point at an empty directory).
fn push(args: &[&str], env: &[(&str, &str)]) -> Output {
    static EMPTY: OnceLock<tempfile::TempDir> = OnceLock::new();
    let empty = EMPTY.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let mut c = support::prebake(&["push"]);
    c.args(args)
        .env("HOME", empty)
        .env("DOCKER_CONFIG", empty)
        .env_remove("PREBAKE_REGISTRY_USER")
        .env_remove("PREBAKE_REGISTRY_PASSWORD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run prebake push")
}

pub(crate) fn push_ok(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = push(args, env);
    support::assert_success(&out, &format!("prebake push {args:?}"));
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `prebake push ARGS` that must fail; its stderr.
fn push_err(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = push(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "prebake push {args:?} {env:?} succeeded:\n{stderr}"
    );
    stderr
}

/// The environment that gives `prebake push` a username and password.
fn env_credentials<'a>(user: &'a str, password: &'a str) -> [(&'a str, &'a str); 2] {
    [
        ("PREBAKE_REGISTRY_USER", user),
        ("PREBAKE_REGISTRY_PASSWORD", password),
    ]
}

/// The registry's manifest at `reference`, read by skopeo as `user:password`, has `digest`.
fn assert_registry_digest(reference: &str, creds: &str, digest: &str) {
    let raw = skopeo_raw(reference, &["--creds", creds]);
    assert_eq!(
        format!("sha256:{}", support::sha256(&raw)),
        digest,
        "{reference}"
    );
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The digests of the blobs in a layout's `blobs/sha256`, sorted.
fn blob_names(layout: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
}

/// The digest of the image `index.json` lists: its one entry that is not a referrer (a
/// manifest with a `subject`, such as an SBOM attached to the image).
fn top_digest(layout: &Path) -> String {
    let index = read_json(&layout.join("index.json"));
    let mut images: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .filter(|d| read_json(&blob_path(layout, d))["subject"].is_null())
        .collect();
    images.dedup();
    assert_eq!(images.len(), 1, "{index}");
    images.remove(0)
}

/// The blobs of the image manifest `digest`: itself, its config and its layers, sorted.
fn image_blobs(layout: &Path, digest: &str) -> Vec<String> {
    let manifest = read_json(&blob_path(layout, digest));
    let mut names = vec![
        digest.to_owned(),
        manifest["config"]["digest"].as_str().unwrap().to_owned(),
    ];
    for layer in manifest["layers"].as_array().unwrap() {
        names.push(layer["digest"].as_str().unwrap().to_owned());
    }
    names.sort();
    names.dedup();
    names
}

/// A copy of `layout` at `dir` without its `index.json` (blobs hard-linked: they are large).
fn copy_layout(layout: &Path, dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        fs::hard_link(e.path(), blobs.join(e.file_name())).unwrap();
    }
    fs::copy(layout.join("oci-layout"), dir.join("oci-layout")).unwrap();
}

/// Adds `bytes` as a blob of the layout at `dir`; returns its digest.
fn add_blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = support::sha256(bytes);
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// The raw manifest at `reference` (`docker://…`), as skopeo sees it.
pub(crate) fn skopeo_raw(reference: &str, extra: &[&str]) -> Vec<u8> {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{reference}"));
    support::run(&mut c).stdout
}

/// The last stdout line of a push: `HOST/REPO@sha256:…`.
pub(crate) fn pushed_digest(stdout: &str) -> String {
    let last = stdout.lines().last().unwrap_or_default();
    let (_, digest) = last
        .rsplit_once('@')
        .unwrap_or_else(|| panic!("no NAME@DIGEST line in {stdout:?}"));
    digest.to_owned()
}

#[test]
#[cfg_attr(
    not(all(have_docker_registry, have_skopeo)),
    ignore = "needs docker-registry and skopeo"
)]
fn push_keeps_the_digests_and_a_second_push_uploads_nothing() {
    let _x = support::exclusive();
    let layout = built_layout();
    let registry = Registry::start(None);
    let digest = top_digest(layout);

    let reference = registry.reference("1.0");
    let (stdout, stderr) = push_ok(
        &[layout.to_str().unwrap(), &reference, "--tag", "latest"],
        &[],
    );
    assert_eq!(pushed_digest(&stdout), digest, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{}/{REPO}:latest", registry.host())),
        "{stdout}"
    );
    assert!(stderr.contains("uploaded"), "{stderr}");
    assert!(
        !stderr.contains("already there, skipped"),
        "a fresh registry had a blob:\n{stderr}"
    );

    let manifest_bytes = fs::read(blob_path(layout, &digest)).unwrap();
    for tag in ["1.0", "latest"] {
        let raw = skopeo_raw(&registry.reference(tag), &[]);
        assert_eq!(
            raw, manifest_bytes,
            "the registry's {tag} is not our manifest"
        );
        let pulled = tempfile::tempdir().unwrap();
        let dest = format!("oci:{}:{tag}", pulled.path().display());
        support::run(Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{}", registry.reference(tag)),
            &dest,
        ]));
        assert_eq!(top_digest(pulled.path()), digest, "skopeo's pull of {tag}");
        // The image's blobs, and nothing else: skopeo copies the image, not its referrers.
        assert_eq!(
            blob_names(pulled.path()),
            image_blobs(layout, &digest),
            "blobs of {tag}"
        );
        for name in blob_names(pulled.path()) {
            assert_eq!(
                support::sha256_file(&blob_path(pulled.path(), &name)),
                name.strip_prefix("sha256:").unwrap()
            );
        }
    }

    // Into another repository, mounting from the first: the registry links, nothing is sent.
    let copy = format!("{}/team/copy:1", registry.host());
    let (stdout, stderr) = push_ok(
        &[layout.to_str().unwrap(), &copy, "--mount-from", REPO],
        &[],
    );
    assert_eq!(pushed_digest(&stdout), digest);
    assert!(stderr.contains(&format!("mounted from {REPO}")), "{stderr}");
    assert!(stderr.contains("0 blobs uploaded"), "{stderr}");
    assert_eq!(skopeo_raw(&copy, &[]), manifest_bytes);

    // Into a third repository in chunks of 4 MiB (PATCH requests), as for a registry behind a
    // proxy that caps request sizes: the same digests, the bytes checked by the registry.
    let chunked = format!("{}/team/chunked:1", registry.host());
    let (stdout, stderr) = push_ok(
        &[layout.to_str().unwrap(), &chunked, "--chunk-size", "4"],
        &[],
    );
    assert_eq!(pushed_digest(&stdout), digest);
    let manifest = read_json(&blob_path(layout, &digest));
    for layer in manifest["layers"].as_array().unwrap() {
        let (layer_digest, size) = (
            layer["digest"].as_str().unwrap(),
            layer["size"].as_u64().unwrap(),
        );
        let line = format!("blob {layer_digest} uploaded, {size} bytes in");
        let line = stderr
            .lines()
            .find(|l| l.contains(&line))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(
            line.ends_with(&format!("({} chunks)", size.div_ceil(4 << 20))),
            "{line}"
        );
        let (status, body) = registry.get(&format!("/v2/team/chunked/blobs/{layer_digest}"), "*/*");
        assert_eq!(status, 200);
        assert_eq!(format!("sha256:{}", support::sha256(&body)), layer_digest);
    }
    assert_eq!(skopeo_raw(&chunked, &[]), manifest_bytes);

    // Again: the registry has everything; only the tags are PUT.
    let (stdout, stderr) = push_ok(
        &[layout.to_str().unwrap(), &reference, "--tag", "latest"],
        &[],
    );
    assert_eq!(pushed_digest(&stdout), digest);
    assert!(
        !stderr.contains(" uploading"),
        "the second push uploaded:\n{stderr}"
    );
    assert!(stderr.contains("0 blobs uploaded"), "{stderr}");
    assert!(stderr.contains("already there"), "{stderr}");
}

#[test]
#[cfg_attr(
    not(all(have_docker_registry, have_skopeo, have_htpasswd)),
    ignore = "needs docker-registry, skopeo and htpasswd (apache2-utils)"
)]
fn basic_auth_uses_docker_config_and_fails_clearly_without_it() {
    let _x = support::exclusive();
    let layout = built_layout();
    let registry = Registry::start(Some(("alice", "s3cret-pw")));
    let reference = registry.reference("auth");
    let layout_arg = layout.to_str().unwrap();

    // No credentials anywhere: refused before anything is sent, saying how to log in.
    let stderr = push_err(&[layout_arg, &reference], &[]);
    assert!(stderr.contains(&registry.host()), "{stderr}");
    assert!(stderr.contains("username and password"), "{stderr}");
    assert!(
        stderr.contains("docker login") && stderr.contains("PREBAKE_REGISTRY_PASSWORD"),
        "{stderr}"
    );

    // Wrong password from the environment: the registry's 401, and whose credentials failed.
    let stderr = push_err(
        &[layout_arg, &reference],
        &env_credentials("alice", "wrong"),
    );
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("UNAUTHORIZED"),
        "{stderr}"
    );
    assert!(
        stderr.contains("refused the credentials of alice"),
        "{stderr}"
    );

    // docker's config.json, as `docker login` writes it.
    let config = tempfile::tempdir().unwrap();
    let auth = support::run_stdout(
        Command::new("sh").args(["-c", "printf %s alice:s3cret-pw | base64 -w0"]),
    );
    fs::write(
        config.path().join("config.json"),
        json!({"auths": {registry.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let (stdout, stderr) = push_ok(
        &[layout_arg, &reference],
        &[("DOCKER_CONFIG", config.path().to_str().unwrap())],
    );
    assert!(stderr.contains("basic auth as alice"), "{stderr}");
    let digest = top_digest(layout);
    assert_eq!(pushed_digest(&stdout), digest);
    assert_registry_digest(&reference, "alice:s3cret-pw", &digest);
}

#[test]
#[cfg_attr(
    not(all(have_docker_registry, have_skopeo)),
    ignore = "needs docker-registry and skopeo"
)]
fn an_index_goes_up_after_its_image_and_referrers_after_their_subject() {
    let _x = support::exclusive();
    let layout = built_layout();
    let registry = Registry::start(None);
    let image_digest = top_digest(layout);
    let image_bytes = fs::read(blob_path(layout, &image_digest)).unwrap();
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    let index_type = "application/vnd.oci.image.index.v1+json";

    // An image index over the image (as a multi-platform build would write), and two SBOM-like
    // artifacts (SPDX and CycloneDX, sharing the empty config) whose subject is the index, all
    // listed in index.json (a referrer first, to show the order comes from the subject and
    // not from the list).
    let mut image_desc = descriptor(manifest_type, &image_digest, image_bytes.len());
    image_desc["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let index_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": index_type, "manifests": [image_desc],
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_layout(layout, dir.path());
    let index_digest = &add_blob(dir.path(), &index_bytes);
    let empty_digest = add_blob(dir.path(), b"{}");
    // (manifest digest, manifest bytes, document digest, document) of an artifact.
    let artifact = |media_type: &str, doc: &[u8]| {
        let doc_digest = add_blob(dir.path(), doc);
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "artifactType": media_type,
            "config": descriptor("application/vnd.oci.empty.v1+json", &empty_digest, 2),
            "layers": [descriptor(media_type, &doc_digest, doc.len())],
            "subject": descriptor(index_type, index_digest, index_bytes.len()),
            "annotations": {"org.opencontainers.image.created": "2023-11-14T22:13:20Z"},
        }))
        .unwrap();
        (
            add_blob(dir.path(), &bytes),
            bytes,
            doc_digest,
            doc.to_vec(),
        )
    };
    let spdx = artifact("application/spdx+json", br#"{"spdxVersion":"SPDX-2.3"}"#);
    let cdx = artifact(
        "application/vnd.cyclonedx+json",
        br#"{"bomFormat":"CycloneDX"}"#,
    );
    fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [
                descriptor(manifest_type, &spdx.0, spdx.1.len()),
                descriptor(index_type, index_digest, index_bytes.len()),
                descriptor(manifest_type, &cdx.0, cdx.1.len()),
            ],
        }))
        .unwrap(),
    )
    .unwrap();

    let reference = registry.reference("multi");
    let (stdout, stderr) = push_ok(&[dir.path().to_str().unwrap(), &reference], &[]);
    // The tag names the index, not the image or a referrer.
    assert_eq!(&pushed_digest(&stdout), index_digest, "{stderr}");
    assert_eq!(skopeo_raw(&reference, &[]), index_bytes);
    // Order: image, then the index, then the referrers.
    let at = |digest: &str| {
        stderr
            .find(&format!("manifest {digest} pushed"))
            .unwrap_or_else(|| panic!("{digest} not pushed:\n{stderr}"))
    };
    assert!(at(&image_digest) < at(index_digest), "{stderr}");
    assert!(at(index_digest) < at(&spdx.0), "{stderr}");
    assert!(at(index_digest) < at(&cdx.0), "{stderr}");
    // The shared empty config went up once, and nothing was checked twice.
    assert_eq!(
        stderr
            .matches(&format!("blob {empty_digest} uploaded"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("skipped"), "{stderr}");
    assert!(stderr.contains("6 blobs uploaded"), "{stderr}");

    // Everything is there by digest, byte for byte.
    let by_digest = |d: &str| format!("{}/{REPO}@{d}", registry.host());
    assert_eq!(skopeo_raw(&by_digest(&image_digest), &[]), image_bytes);
    for (digest, bytes, doc_digest, doc) in [&spdx, &cdx] {
        assert_eq!(&skopeo_raw(&by_digest(digest), &[]), bytes);
        let (status, body) = registry.get(&format!("/v2/{REPO}/blobs/{doc_digest}"), "*/*");
        assert_eq!((status, &body), (200, doc));
    }

    // Registry 2.8 has no referrers API (distribution added it in 3.0): prebake falls back
    // to the spec's referrers tag, where OCI 1.1 clients look on such registries.
    let (status, _) = registry.get(&format!("/v2/{REPO}/referrers/{index_digest}"), index_type);
    assert_eq!(
        status, 404,
        "registry 2.8 answered the referrers API; check its listing instead"
    );
    let tag = index_digest.replacen(':', "-", 1);
    assert!(stderr.contains(&format!("referrers tag {tag}")), "{stderr}");
    let referrers_tag = format!("{}/{REPO}:{tag}", registry.host());
    let listing: Value = serde_json::from_slice(&skopeo_raw(&referrers_tag, &[])).unwrap();
    let listed: Vec<(&str, &str, u64)> = listing["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap(),
                d["artifactType"].as_str().unwrap(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let len = |b: &[u8]| u64::try_from(b.len()).unwrap();
    assert_eq!(
        listed,
        [
            (spdx.0.as_str(), "application/spdx+json", len(&spdx.1)),
            (
                cdx.0.as_str(),
                "application/vnd.cyclonedx+json",
                len(&cdx.1)
            ),
        ],
        "{listing}"
    );

    // A second push keeps the referrers tag as it is.
    push_ok(&[dir.path().to_str().unwrap(), &reference], &[]);
    let again: Value = serde_json::from_slice(&skopeo_raw(&referrers_tag, &[])).unwrap();
    assert_eq!(again, listing);
}

#[test]
#[cfg_attr(not(have_docker_registry), ignore = "needs docker-registry")]
fn a_damaged_blob_is_named_and_nothing_is_tagged() {
    let _x = support::exclusive();
    let layout = built_layout();
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    copy_layout(layout, dir.path());
    fs::copy(layout.join("index.json"), dir.path().join("index.json")).unwrap();
    // Replace (not change: the blobs are hard links to the shared build) the config blob.
    let manifest = read_json(&blob_path(layout, &top_digest(layout)));
    let config = manifest["config"]["digest"].as_str().unwrap();
    let path = blob_path(dir.path(), config);
    fs::remove_file(&path).unwrap();
    fs::write(&path, b"{\"tampered\":true}").unwrap();

    let reference = registry.reference("bad");
    let stderr = push_err(&[dir.path().to_str().unwrap(), &reference], &[]);
    assert!(
        stderr.contains(config) && stderr.contains("damaged"),
        "{stderr}"
    );
    let (status, _) = registry.get(
        &format!("/v2/{REPO}/manifests/bad"),
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(status, 404, "the tag exists after a failed push");
}

/// A token service for a registry with `auth: token` (what Docker Hub, GHCR and Harbor run):
/// it answers `GET /token?scope=...&service=...` with a JWT signed by `openssl` (RS256, the
/// certificate in the `x5c` header, which the registry checks against its root bundle),
/// granting pull and push on the asked repository only to `user:password` sent as Basic auth.
struct TokenService {
    port: u16,
    dir: tempfile::TempDir,
    /// Each request: (path and query, whether it carried the right credentials).
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

impl TokenService {
    const SERVICE: &'static str = "prebake-test-registry";
    const ISSUER: &'static str = "prebake-test-issuer";

    fn start(user: &str, password: &str) -> TokenService {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        support::run(Command::new("openssl").current_dir(dir.path()).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=prebake-test-token",
        ]));
        let der = support::run(
            Command::new("openssl")
                .current_dir(dir.path())
                .args(["x509", "-in", "cert.pem", "-outform", "DER"]),
        )
        .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let key = dir.path().join("key.pem");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                Self::answer(stream, &expected, &x5c, &key, &seen);
            }
        });
        TokenService {
            port,
            dir,
            requests,
        }
    }

    fn answer(
        mut stream: std::net::TcpStream,
        expected: &str,
        x5c: &str,
        key: &Path,
        seen: &std::sync::Mutex<Vec<(String, bool)>>,
    ) {
        use std::io::{Read, Write};
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let authorized = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("authorization") && v.trim() == expected
            })
        });
        seen.lock().unwrap().push((path.clone(), authorized));
        let (status, body) = if authorized {
            let token = Self::token(&query_params(&path, "scope"), x5c, key);
            (
                "200 OK",
                json!({"token": token, "expires_in": 300}).to_string(),
            )
        } else {
            (
                "401 Unauthorized",
                json!({"details": "wrong credentials"}).to_string(),
            )
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    /// A JWT granting each of `scopes` (`repository:NAME:ACTIONS`).
    fn token(scopes: &[String], x5c: &str, key: &Path) -> String {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let access: Vec<Value> = scopes
            .iter()
            .map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()})
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
        let claims = json!({
            "iss": Self::ISSUER, "sub": "alice", "aud": Self::SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}"),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sign = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            sign.stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let signature = sign.wait_with_output().unwrap().stdout;
        format!("{input}.{}", b64(&signature))
    }

    /// The registry config's `auth:` section for this service.
    fn auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            self.port,
            Self::SERVICE,
            Self::ISSUER,
            self.dir.path().join("cert.pem").display()
        )
    }
}

/// The first percent-decoded value of `name` in the query of `path`.
fn query_param(path: &str, name: &str) -> Option<String> {
    query_params(path, name).into_iter().next()
}

/// Every percent-decoded value of `name` in the query of `path` (`scope` may repeat).
fn query_params(path: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|kv| percent_decode(kv.strip_prefix(name)?.strip_prefix('=')?))
        .collect()
}

fn percent_decode(raw: &str) -> Option<String> {
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[test]
#[cfg_attr(
    not(all(have_docker_registry, have_skopeo, have_openssl)),
    ignore = "needs docker-registry, skopeo and openssl"
)]
fn bearer_tokens_from_the_registrys_token_service() {
    let _x = support::exclusive();
    let layout = built_layout();
    let tokens = TokenService::start("alice", "t0ken-pw");
    let registry = Registry::start_with(&tokens.auth_config());
    let reference = registry.reference("bearer");
    let layout_arg = layout.to_str().unwrap();

    // A wrong password: the token service's 401, named, with whose credentials failed.
    let stderr = push_err(
        &[layout_arg, &reference],
        &env_credentials("alice", "wrong"),
    );
    assert!(
        stderr.contains("token for repository:team/prebake-python:pull,push"),
        "{stderr}"
    );
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("refused the credentials of alice"),
        "{stderr}"
    );

    let (stdout, stderr) = push_ok(
        &[layout_arg, &reference],
        &env_credentials("alice", "t0ken-pw"),
    );
    assert!(stderr.contains("bearer token as alice"), "{stderr}");
    let digest = top_digest(layout);
    assert_eq!(pushed_digest(&stdout), digest);
    let asked: Vec<(String, bool)> = tokens.requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|(path, ok)| *ok
            && query_param(path, "scope").as_deref()
                == Some("repository:team/prebake-python:pull,push")
            && query_param(path, "service").as_deref() == Some(TokenService::SERVICE)),
        "{asked:?}"
    );
    assert_registry_digest(&reference, "alice:t0ken-pw", &digest);

    // A mount needs pull on the other repository too: asked for in the same token request.
    let copy = format!("{}/team/copy:1", registry.host());
    let (_, stderr) = push_ok(
        &[layout_arg, &copy, "--mount-from", REPO],
        &env_credentials("alice", "t0ken-pw"),
    );
    assert!(stderr.contains(&format!("mounted from {REPO}")), "{stderr}");
    assert!(stderr.contains("0 blobs uploaded"), "{stderr}");
    let asked: Vec<(String, bool)> = tokens.requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|(path, _)| query_params(path, "scope")
            == [
                "repository:team/copy:pull,push".to_string(),
                format!("repository:{REPO}:pull")
            ]),
        "{asked:?}"
    );
    assert_registry_digest(&copy, "alice:t0ken-pw", &digest);
}

#[test]
#[cfg_attr(
    not(all(have_docker_registry, have_root)),
    ignore = "needs docker-registry and root (an address that is not loopback)"
)]
fn plain_http_only_for_localhost_or_with_insecure() {
    let _x = support::exclusive();
    let layout = built_layout();
    // A registry on an address of this machine that is not loopback: to prebake, a remote one.
    let registry = Registry::start_config(support::outside_ip(), None, "");
    let reference = registry.reference("http");
    let layout_arg = layout.to_str().unwrap();

    let stderr = push_err(&[layout_arg, &reference], &[]);
    assert!(
        stderr.contains(&format!("GET https://{}/v2/", registry.host())),
        "{stderr}"
    );
    assert!(stderr.contains("pass --insecure"), "{stderr}");
    assert!(
        !stderr.contains("http://"),
        "tried plain http unasked:\n{stderr}"
    );

    let (stdout, stderr) = push_ok(&[layout_arg, &reference, "--insecure"], &[]);
    assert!(
        stderr.contains(&format!("registry http://{}", registry.host())),
        "{stderr}"
    );
    assert_eq!(pushed_digest(&stdout), top_digest(layout));
}
