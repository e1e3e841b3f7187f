//! What a push sends, read from an OCI image layout: every manifest reachable from
//! `index.json` (image indexes are walked down to their manifests) with the blobs each names,
//! in an order a registry accepts: an index after its children, a referrer (a manifest with a
//! `subject`) after its subject.
//!
//! Manifests are kept as the layout's exact bytes, checked against their digest: a registry
//! names a manifest by the sha256 of the bytes it received, so re-serializing would change
//! the image's digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::PushError;
use crate::oci::is_sha256_hex;

/// The digest of `{}`, the empty config OCI artifacts use; written by its bytes if the layout
/// leaves it out.
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const EMPTY_JSON: &[u8] = b"{}";

/// A blob (config or layer) a manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// `blobs/sha256/<hex>` of the layout; may be absent for [`EMPTY_JSON_DIGEST`].
    pub path: PathBuf,
}

/// A manifest or image index to push, with its exact bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
    pub bytes: Vec<u8>,
    /// The blobs it names (none for an index).
    pub blobs: Vec<Blob>,
    /// The digest of its `subject`, for a referrer.
    pub subject: Option<String>,
}

/// Everything to push, in push order, and the manifest the tags name.
#[derive(Debug)]
pub struct PushSet {
    pub manifests: Vec<Manifest>,
    /// The one entry of `index.json` that is not a referrer: the image (or index) to tag.
    pub root: String,
}

impl PushSet {
    pub fn get(&self, digest: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.digest == digest)
    }
}

/// Reads the layout at `dir`.
pub fn read_layout(dir: &Path) -> Result<PushSet, PushError> {
    let bad = |reason: String| PushError::BadLayout {
        path: dir.to_owned(),
        reason,
    };
    let index_path = dir.join("index.json");
    let index_bytes = std::fs::read(&index_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            bad(
                "it has no index.json; give the image directory `prebake build` wrote (OUT/image)"
                    .into(),
            )
        } else {
            PushError::Io {
                path: index_path.clone(),
                source: e,
            }
        }
    })?;
    let index: Value = serde_json::from_slice(&index_bytes)
        .map_err(|e| bad(format!("index.json is not JSON: {e}")))?;
    let entries = descriptors(&index, "manifests").map_err(|r| bad(format!("index.json: {r}")))?;
    if entries.is_empty() {
        return Err(bad("index.json lists no manifests: nothing to push".into()));
    }

    let mut walk = Walk {
        dir,
        read: BTreeMap::new(),
        order: Vec::new(),
        visiting: Vec::new(),
    };
    let mut roots = Vec::new();
    for d in &entries {
        walk.visit(&d.digest, d.size, &d.media_type)?;
        if walk.read[&d.digest].subject.is_none() {
            roots.push(d.digest.clone());
        }
    }
    let root = match roots.as_slice() {
        [one] => one.clone(),
        [] => return Err(bad("every manifest of index.json is a referrer (has a `subject`): there is no image to tag".into())),
        many => {
            return Err(bad(format!(
                "index.json lists {} images ({}); prebake push tags one: put several platforms under one image index",
                many.len(),
                many.join(", ")
            )))
        }
    };
    let Walk {
        mut read, order, ..
    } = walk;
    let manifests = order.into_iter().filter_map(|d| read.remove(&d)).collect();
    Ok(PushSet { manifests, root })
}

/// A descriptor's three fields we need.
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

fn descriptor(v: &Value) -> Result<Descriptor, String> {
    let digest = v["digest"]
        .as_str()
        .ok_or("a descriptor has no \"digest\"")?;
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?}: only sha256 digests are supported"))?;
    if !is_sha256_hex(hex) {
        return Err(format!(
            "digest {digest:?} is not sha256:<64 lowercase hex digits>"
        ));
    }
    let size = v["size"]
        .as_u64()
        .ok_or_else(|| format!("{digest}: the descriptor has no valid \"size\""))?;
    Ok(Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_owned(),
        digest: digest.to_owned(),
        size,
    })
}

/// The descriptors in `v[key]` (absent: none).
fn descriptors(v: &Value, key: &str) -> Result<Vec<Descriptor>, String> {
    match &v[key] {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a.iter().map(descriptor).collect(),
        _ => Err(format!("\"{key}\" is not a list")),
    }
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    // Checked by `descriptor`: "sha256:" and 64 hex digits, so no path tricks.
    dir.join("blobs/sha256").join(&digest["sha256:".len()..])
}

struct Walk<'a> {
    dir: &'a Path,
    read: BTreeMap<String, Manifest>,
    order: Vec<String>,
    /// The manifests being visited, to report a cycle instead of recursing forever.
    visiting: Vec<String>,
}

impl Walk<'_> {
    /// Reads the manifest `digest` and what it needs pushed first, then appends it.
    fn visit(&mut self, digest: &str, size: u64, desc_media: &str) -> Result<(), PushError> {
        if self.read.contains_key(digest) {
            return Ok(());
        }
        let bad = |reason: String| PushError::BadLayout {
            path: self.dir.to_owned(),
            reason,
        };
        if self.visiting.iter().any(|d| d == digest) {
            return Err(bad(format!(
                "manifest {digest} refers to itself through {}",
                self.visiting.join(" -> ")
            )));
        }
        let path = blob_path(self.dir, digest);
        let bytes = std::fs::read(&path).map_err(|source| PushError::Io {
            path: path.clone(),
            source,
        })?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != digest || bytes.len() as u64 != size {
            return Err(bad(format!(
                "manifest {digest}: the file {} is {} bytes with digest {actual}, the descriptor says {size} bytes; the layout is damaged, rebuild it",
                path.display(),
                bytes.len()
            )));
        }
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("manifest {digest} is not JSON: {e}")))?;
        let in_manifest = |r: String| bad(format!("manifest {digest}: {r}"));
        let media_type = json["mediaType"]
            .as_str()
            .filter(|m| !m.is_empty())
            .unwrap_or(desc_media)
            .to_owned();
        if media_type.is_empty() {
            return Err(in_manifest("it has no mediaType (and neither has its descriptor); a registry needs one as the Content-Type".into()));
        }
        let subject = match &json["subject"] {
            Value::Null => None,
            s => Some(descriptor(s).map_err(in_manifest)?),
        };

        self.visiting.push(digest.to_owned());
        // An index: its manifests go first (they are walked for their own blobs too).
        for child in descriptors(&json, "manifests").map_err(in_manifest)? {
            self.visit(&child.digest, child.size, &child.media_type)?;
        }
        // A referrer goes after its subject, when the layout has the subject.
        if let Some(s) = &subject {
            if blob_path(self.dir, &s.digest).exists() {
                self.visit(&s.digest, s.size, &s.media_type)?;
            }
        }
        self.visiting.pop();

        let mut blobs = Vec::new();
        // "config" and "layers" of an image manifest; "blobs" of the older artifact manifest.
        let config = match &json["config"] {
            Value::Null => Vec::new(),
            c => vec![descriptor(c).map_err(in_manifest)?],
        };
        let layers = descriptors(&json, "layers").map_err(in_manifest)?;
        let artifact_blobs = descriptors(&json, "blobs").map_err(in_manifest)?;
        for d in config.into_iter().chain(layers).chain(artifact_blobs) {
            let path = blob_path(self.dir, &d.digest);
            if !path.exists() && d.digest != EMPTY_JSON_DIGEST {
                return Err(in_manifest(format!(
                    "its blob {} is missing from the layout ({}); rebuild the image",
                    d.digest,
                    path.display()
                )));
            }
            if !blobs.iter().any(|b: &Blob| b.digest == d.digest) {
                blobs.push(Blob {
                    digest: d.digest,
                    size: d.size,
                    path,
                });
            }
        }
        self.read.insert(
            digest.to_owned(),
            Manifest {
                digest: digest.to_owned(),
                media_type,
                // The referrers API's rule: the manifest's artifactType, else its config's type.
                artifact_type: json["artifactType"]
                    .as_str()
                    .or(json["config"]["mediaType"].as_str())
                    .map(str::to_owned),
                annotations: Some(json["annotations"].clone()).filter(|a| a.is_object()),
                bytes,
                blobs,
                subject: subject.map(|s| s.digest),
            },
        );
        self.order.push(digest.to_owned());
        Ok(())
    }
}
