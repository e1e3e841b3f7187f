//! `prebake push`: an OCI image layout to a registry over the OCI distribution API, keeping
//! the digest: the layout's manifest bytes and blobs go up exactly as they are, so the
//! registry's `name@sha256:…` is the digest `prebake build` printed.
//!
//! Order: for each manifest (children of an index first, a referrer after its subject), its
//! blobs (HEAD, skipped when present; else POST + PUT), then the manifest by digest; last, the
//! tags. A referrer (a manifest with a `subject`, such as an SBOM) is also added to the
//! referrers tag (`sha256-<hex>` of the subject) when the registry does not index referrers
//! itself (no `OCI-Subject` answer), as the distribution spec 1.1 asks of clients: that is
//! where OCI 1.1 clients (oras) look on registries without the referrers API.

pub mod auth;
pub mod client;
pub mod content;
pub mod target;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use auth::{docker_config_path, CredentialSources, Credentials};
pub use target::Target;

use client::{Client, Settings, Upload};
use content::{Blob, Manifest, EMPTY_JSON, EMPTY_JSON_DIGEST};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid push reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("{path}: cannot push this layout: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("reading blob {digest} from the layout")]
    ReadBlob {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry {registry}: {what}: HTTP {status}: {message}; {hint}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        /// The registry's error body (its `errors` codes and messages).
        message: String,
        hint: String,
    },
    /// The cause is in the message, before the hint, rather than a `#[source]` printed after
    /// it: "connection refused; check that the registry runs" reads in order.
    #[error("registry {registry}: {what}: {cause}; {hint}")]
    Transport {
        registry: String,
        what: String,
        hint: String,
        /// Boxed: ureq's error is large, and every result of the module carries this type.
        cause: Box<ureq::Error>,
    },
    /// Authentication failed, or the registry answered something unusable.
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("registry {registry}: {what}: the registry computed the digest {got}, the layout has {want}; the registry changed the manifest, so the image would not keep its digest")]
    DigestChanged {
        registry: String,
        what: String,
        got: String,
        want: String,
    },
}

/// What to push where.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// `[host[:port]/]repository[:tag]`.
    pub reference: String,
    /// More tags for the same image (bare tags).
    pub tags: Vec<String>,
    /// Allow plain http and unverified TLS. Localhost registries may use plain http without it.
    pub insecure: bool,
    pub credentials: CredentialSources,
    /// A repository of the same registry that may have the blobs already (cross-repository
    /// mount: the registry links them instead of receiving them again).
    pub mount_from: Option<String>,
    /// Send blobs larger than this many bytes in chunks of it (PATCH requests), for a
    /// registry or proxy that caps one request's size; `None`: each blob in one PUT.
    pub chunk_size: Option<u64>,
}

/// What a push reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum PushEvent<'a> {
    Connected {
        registry: &'a str,
    },
    BlobSkipped {
        digest: &'a str,
        size: u64,
    },
    BlobUploading {
        digest: &'a str,
        size: u64,
    },
    BlobUploaded {
        digest: &'a str,
        size: u64,
        seconds: f64,
        /// How many PATCH requests carried it (0: one PUT).
        chunks: u64,
    },
    BlobMounted {
        digest: &'a str,
        size: u64,
        from: &'a str,
    },
    /// The registry has the manifest already, so it has its blobs too.
    ManifestSkipped {
        digest: &'a str,
        blobs: usize,
    },
    ManifestPushed {
        reference: &'a str,
        digest: &'a str,
    },
    ReferrersTag {
        tag: &'a str,
        referrer: &'a str,
    },
}

pub trait PushProgress {
    fn event(&self, event: &PushEvent<'_>);
}

impl PushProgress for () {
    fn event(&self, _: &PushEvent<'_>) {}
}

/// The outcome of [`push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// `host/repository`.
    pub name: String,
    /// The tagged manifest's digest, `sha256:…`.
    pub digest: String,
    pub tags: Vec<String>,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    pub manifests: usize,
    /// Digests of the referrers pushed (manifests with a `subject`).
    pub referrers: Vec<String>,
}

/// Pushes the layout at `layout` to `options.reference`.
pub fn push(
    layout: &Path,
    options: &PushOptions,
    progress: &dyn PushProgress,
) -> Result<PushReport, PushError> {
    let target = Target::parse(&options.reference, &options.tags)?;
    let set = content::read_layout(layout)?;
    let credentials = auth::find_credentials(&target.registry, &options.credentials)?;
    // Plain http to this machine is as private as https (and what docker allows too); an
    // unverified certificate is never assumed, only asked for.
    let allow_http = options.insecure || target.is_localhost();
    let mount_from = options
        .mount_from
        .clone()
        .filter(|from| *from != target.repository);
    let mut client = Client::connect(
        &target,
        Settings {
            allow_http,
            insecure: options.insecure,
            credentials,
            mount_from,
            chunk_size: options.chunk_size.filter(|&n| n > 0),
        },
    )?;
    progress.event(&PushEvent::Connected {
        registry: &client.describe(),
    });

    let mut report = PushReport {
        name: target.name(),
        digest: set.root.clone(),
        tags: target.tags.clone(),
        blobs_uploaded: 0,
        blobs_skipped: 0,
        blobs_mounted: 0,
        bytes_uploaded: 0,
        manifests: set.manifests.len(),
        referrers: Vec::new(),
    };
    // Blobs this push has seen in the registry or sent: a blob several manifests share (the
    // empty config of every artifact) is checked once.
    let mut seen = BTreeSet::new();
    for manifest in &set.manifests {
        let indexed = push_manifest(
            &mut client,
            &target,
            manifest,
            &mut report,
            &mut seen,
            progress,
        )?;
        if let Some(subject) = &manifest.subject {
            report.referrers.push(manifest.digest.clone());
            if !indexed {
                update_referrers_tag(&mut client, &target, manifest, subject, progress)?;
            }
        }
    }
    // read_layout picks the root among the manifests it read; a miss would be its bug.
    let root = set.get(&set.root).ok_or_else(|| PushError::BadLayout {
        path: layout.to_owned(),
        reason: format!("the image to tag, {}, was not read", set.root),
    })?;
    for tag in &target.tags {
        put_checked(&mut client, &target, root, tag)?;
        progress.event(&PushEvent::ManifestPushed {
            reference: tag,
            digest: &root.digest,
        });
    }
    Ok(report)
}

/// The manifest's blobs, then the manifest by digest; all skipped when the registry has it,
/// except that a referrer is always PUT (the same bytes again: idempotent): only a PUT's
/// answer says whether the registry indexes referrers (`OCI-Subject`), which is returned.
fn push_manifest(
    client: &mut Client,
    target: &Target,
    manifest: &Manifest,
    report: &mut PushReport,
    seen: &mut BTreeSet<String>,
    progress: &dyn PushProgress,
) -> Result<bool, PushError> {
    if client.manifest_exists(&manifest.digest, &manifest.media_type)? {
        for blob in &manifest.blobs {
            if seen.insert(blob.digest.clone()) {
                report.blobs_skipped += 1;
            }
        }
        progress.event(&PushEvent::ManifestSkipped {
            digest: &manifest.digest,
            blobs: manifest.blobs.len(),
        });
        if manifest.subject.is_none() {
            return Ok(false);
        }
        return put_checked(client, target, manifest, &manifest.digest);
    }
    for blob in &manifest.blobs {
        if !seen.insert(blob.digest.clone()) {
            continue;
        }
        if client.blob_exists(&blob.digest)? {
            report.blobs_skipped += 1;
            progress.event(&PushEvent::BlobSkipped {
                digest: &blob.digest,
                size: blob.size,
            });
            continue;
        }
        progress.event(&PushEvent::BlobUploading {
            digest: &blob.digest,
            size: blob.size,
        });
        let started = Instant::now();
        match upload(client, blob)? {
            Upload::Mounted { from } => {
                report.blobs_mounted += 1;
                progress.event(&PushEvent::BlobMounted {
                    digest: &blob.digest,
                    size: blob.size,
                    from: &from,
                });
            }
            Upload::Sent { chunks } => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += blob.size;
                progress.event(&PushEvent::BlobUploaded {
                    digest: &blob.digest,
                    size: blob.size,
                    seconds: started.elapsed().as_secs_f64(),
                    chunks,
                });
            }
        }
    }
    let indexed = put_checked(client, target, manifest, &manifest.digest)?;
    progress.event(&PushEvent::ManifestPushed {
        reference: &manifest.digest,
        digest: &manifest.digest,
    });
    Ok(indexed)
}

/// Uploads a blob after checking the layout's file against its digest: a damaged file
/// would otherwise be refused by the registry with a less telling message.
fn upload(client: &mut Client, blob: &Blob) -> Result<Upload, PushError> {
    if !blob.path.exists() && blob.digest == EMPTY_JSON_DIGEST {
        return client.upload_blob(&blob.digest, EMPTY_JSON.len() as u64, &|| {
            Ok(Box::new(EMPTY_JSON))
        });
    }
    let io = |source| PushError::Io {
        path: blob.path.clone(),
        source,
    };
    let (digest, size) = hash_file(&blob.path).map_err(io)?;
    if digest != blob.digest || size != blob.size {
        return Err(PushError::BadLayout {
            path: blob.path.clone(),
            reason: format!(
                "the blob is {size} bytes with digest {digest}, its manifest says {} bytes, {}; the layout is damaged, rebuild it",
                blob.size, blob.digest
            ),
        });
    }
    let path = blob.path.clone();
    client.upload_blob(&blob.digest, blob.size, &move || {
        Ok(Box::new(std::fs::File::open(&path)?) as Box<dyn Read>)
    })
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// PUTs the manifest under `reference` and checks the registry kept its digest; returns
/// whether the registry answered `OCI-Subject` (it indexes referrers itself).
fn put_checked(
    client: &mut Client,
    target: &Target,
    manifest: &Manifest,
    reference: &str,
) -> Result<bool, PushError> {
    let (digest, subject) =
        client.put_manifest(reference, &manifest.media_type, &manifest.bytes)?;
    if let Some(got) = digest.filter(|d| *d != manifest.digest) {
        return Err(PushError::DigestChanged {
            registry: target.registry.clone(),
            what: format!("PUT manifest {reference}"),
            got,
            want: manifest.digest.clone(),
        });
    }
    Ok(subject)
}

/// Adds `referrer` to the image index tagged `sha256-<hex of subject>` (made if absent).
fn update_referrers_tag(
    client: &mut Client,
    target: &Target,
    referrer: &Manifest,
    subject: &str,
    progress: &dyn PushProgress,
) -> Result<(), PushError> {
    let tag = subject.replacen(':', "-", 1);
    let existing = client.get_index(&tag)?;
    let mut index: Value = match &existing {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| PushError::Registry {
            registry: target.registry.clone(),
            reason: format!("the referrers tag {tag} holds something other than an image index ({e}); delete that tag and push again"),
        })?,
        None => json!({"schemaVersion": 2, "mediaType": crate::oci::MEDIA_INDEX, "manifests": []}),
    };
    let mut descriptor = json!({
        "mediaType": referrer.media_type,
        "digest": referrer.digest,
        "size": referrer.bytes.len(),
    });
    if let Some(t) = &referrer.artifact_type {
        descriptor["artifactType"] = json!(t);
    }
    if let Some(a) = &referrer.annotations {
        descriptor["annotations"] = a.clone();
    }
    let Some(list) = index["manifests"].as_array_mut() else {
        return Err(PushError::Registry {
            registry: target.registry.clone(),
            reason: format!("the referrers tag {tag} is an index without a manifests list; delete that tag and push again"),
        });
    };
    if list.iter().any(|d| d["digest"] == referrer.digest.as_str()) {
        return Ok(());
    }
    list.push(descriptor);
    let bytes = crate::oci::canonical::to_vec(&index);
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let made = Manifest {
        digest,
        media_type: crate::oci::MEDIA_INDEX.into(),
        artifact_type: None,
        annotations: None,
        bytes,
        blobs: Vec::new(),
        subject: None,
    };
    put_checked(client, target, &made, &tag)?;
    progress.event(&PushEvent::ReferrersTag {
        tag: &tag,
        referrer: &referrer.digest,
    });
    Ok(())
}
