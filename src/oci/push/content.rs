//! What a push sends, read from an OCI image layout: every manifest reachable from
//! `index.json` (image indexes are walked down to their manifests) with the blobs each names,
//! in an order a registry accepts: an index after its children, a referrer (a manifest with a
//! `subject`) after its subject.
//!
//! Manifests are kept as the layout's exact bytes, checked against their digest: a registry
//! names a manifest by the sha256 of the bytes it received, so re-serializing would change
//! the image's digest.

use std::collections::{BTreeMap, BTreeSet};
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
        children: BTreeSet::new(),
    };
    for d in &entries {
        walk.visit(&d.digest, d.size, &d.media_type)?;
    }
    // The image to tag: an entry that is neither a referrer nor listed by an index of the
    // layout (a writer may list an index's platform manifests in index.json too).
    let mut roots: Vec<String> = entries
        .iter()
        .filter(|d| walk.read[&d.digest].subject.is_none() && !walk.children.contains(&d.digest))
        .map(|d| d.digest.clone())
        .collect();
    // The same image under several names (one entry per `ref.name`) is one image.
    roots.sort();
    roots.dedup();
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
    /// The manifests some index of the layout lists.
    children: BTreeSet<String>,
    /// No cycle is possible: a manifest names others by the digest of their bytes, which it
    /// would have to contain, and every digest is checked.
    order: Vec<String>,
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

        // An index: its manifests go first (they are walked for their own blobs too).
        for child in descriptors(&json, "manifests").map_err(in_manifest)? {
            self.children.insert(child.digest.clone());
            self.visit(&child.digest, child.size, &child.media_type)?;
        }
        // A referrer goes after its subject, when the layout has the subject.
        if let Some(s) = &subject {
            if blob_path(self.dir, &s.digest).exists() {
                self.visit(&s.digest, s.size, &s.media_type)?;
            }
        }

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANIFEST: &str = crate::oci::MEDIA_MANIFEST;
    const INDEX: &str = crate::oci::MEDIA_INDEX;

    /// A layout under construction: blobs by content, then `index.json`.
    struct Layout(tempfile::TempDir);

    impl Layout {
        fn new() -> Layout {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
            Layout(dir)
        }

        /// Stores `bytes`; returns its descriptor with `media_type`.
        fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
            let hex = hex::encode(Sha256::digest(bytes));
            std::fs::write(self.0.path().join("blobs/sha256").join(&hex), bytes).unwrap();
            json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
        }

        fn json(&self, media_type: &str, v: &Value) -> Value {
            self.blob(media_type, &serde_json::to_vec(v).unwrap())
        }

        fn image(&self, layer: &[u8]) -> Value {
            let config = self.blob(crate::oci::MEDIA_CONFIG, b"{\"os\":\"linux\"}");
            let layer = self.blob(crate::oci::MEDIA_LAYER_GZIP, layer);
            self.json(
                MANIFEST,
                &json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer]}),
            )
        }

        fn read(&self, entries: &[&Value]) -> Result<PushSet, PushError> {
            let index = json!({"schemaVersion": 2, "manifests": entries});
            std::fs::write(self.0.path().join("index.json"), index.to_string()).unwrap();
            read_layout(self.0.path())
        }
    }

    fn digest(d: &Value) -> String {
        d["digest"].as_str().unwrap().to_owned()
    }

    fn error(r: Result<PushSet, PushError>) -> String {
        crate::error::Chain(&r.expect_err("an error")).to_string()
    }

    #[test]
    fn children_before_their_index_and_referrers_after_their_subject() {
        let l = Layout::new();
        let (amd, arm) = (l.image(b"amd64"), l.image(b"arm64"));
        let index = l.json(
            INDEX,
            &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [amd, arm]}),
        );
        // An artifact with the empty config, which may be left out of the layout.
        let empty = json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_JSON_DIGEST, "size": 2});
        let sbom = l.blob("application/spdx+json", b"{}\n");
        let referrer = l.json(
            MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": "application/spdx+json",
                    "config": empty, "layers": [sbom], "subject": index}),
        );
        // index.json may list the platform manifests beside their index: the index is tagged.
        // The same index twice (two ref.name annotations) is one image.
        let set = l.read(&[&index, &referrer, &amd, &index]).unwrap();
        let order: Vec<String> = set.manifests.iter().map(|m| m.digest.clone()).collect();
        assert_eq!(
            order,
            [
                digest(&amd),
                digest(&arm),
                digest(&index),
                digest(&referrer)
            ]
        );
        assert_eq!(set.root, digest(&index));
        let r = set.get(&digest(&referrer)).unwrap();
        assert_eq!(r.subject.as_deref(), Some(digest(&index).as_str()));
        assert_eq!(r.artifact_type.as_deref(), Some("application/spdx+json"));
        assert_eq!(r.blobs.len(), 2);
        assert_eq!(set.get(&digest(&amd)).unwrap().blobs.len(), 2);
        assert!(set.get(&digest(&index)).unwrap().blobs.is_empty());
    }

    #[test]
    fn bad_layouts_are_refused_with_the_reason() {
        let l = Layout::new();
        let (a, b) = (l.image(b"a"), l.image(b"b"));
        assert!(error(l.read(&[&a, &b])).contains("lists 2 images"));
        assert!(error(l.read(&[])).contains("no manifests"));

        let mut wrong_size = a.clone();
        wrong_size["size"] = json!(1);
        assert!(error(l.read(&[&wrong_size])).contains("damaged"));

        let missing = l.json(
            MANIFEST,
            &json!({"mediaType": MANIFEST, "config": {"mediaType": "x", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1}}),
        );
        assert!(error(l.read(&[&missing])).contains("missing from the layout"));

        let sha512 = json!({"mediaType": MANIFEST, "digest": format!("sha512:{}", "0".repeat(128)), "size": 1});
        assert!(error(l.read(&[&sha512])).contains("only sha256"));

        // A referrer alone has nothing to tag.
        let referrer = l.json(MANIFEST, &json!({"mediaType": MANIFEST, "subject": a}));
        assert!(error(l.read(&[&referrer])).contains("no image to tag"));
    }
}
