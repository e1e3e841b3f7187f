//! Documents about the image (its SBOMs) attached the way OCI 1.1 registries and tools find
//! them: each an artifact manifest (an image manifest with `artifactType`, the empty config
//! and the document as its one layer) whose `subject` is the image manifest. `index.json`
//! lists them after the image, with their `artifactType` and without a `ref.name`, so
//! `oci:DIR:TAG` (skopeo, umoci) still finds the image alone while `oras discover` and
//! registries' referrers API (after a push) find the documents.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::fsutil::stage::{staging_prefix, StagedFile};

use super::layout::{write_blob, FILE_MODE};
use super::{canonical, ImageDigests, OciError, MEDIA_MANIFEST};

/// The empty config every artifact manifest points at (`{}`), per image-spec 1.1.
pub const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The file name a layer unpacks to (`oras pull` writes it under this name).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// One document to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Its media type, also the manifest's `artifactType` (`application/spdx+json`).
    pub media_type: String,
    /// The file; its name becomes the layer's title.
    pub file: PathBuf,
}

/// Whether an `index.json` descriptor is a referrer rather than an image.
pub fn is_referrer(descriptor: &Value) -> bool {
    descriptor.get("artifactType").is_some()
}

/// Attach `artifacts` to the image `subject` in the layout at `dir`: their blobs and manifests
/// go into `blobs/`, their descriptors into `index.json` (rewritten through a temporary file).
/// Returns the `sha256:` digests of the artifact manifests, in the order given.
pub fn attach(
    dir: &Path,
    subject: &ImageDigests,
    artifacts: &[Artifact],
) -> Result<Vec<String>, OciError> {
    let blobs = dir.join("blobs").join("sha256");
    let index_path = dir.join("index.json");
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(&index_path).map_err(OciError::io(&index_path))?)
            .map_err(|e| OciError::BadLayout {
                path: dir.to_owned(),
                reason: format!("index.json is not valid JSON: {e}"),
            })?;
    let (empty_hex, empty_size) = write_blob(&blobs, b"{}")?;
    let mut digests = Vec::new();
    for a in artifacts {
        let bytes = std::fs::read(&a.file).map_err(OciError::io(&a.file))?;
        let (hex, size) = write_blob(&blobs, &bytes)?;
        let title = a
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "artifactType": a.media_type,
            "config": {"mediaType": MEDIA_EMPTY, "digest": format!("sha256:{empty_hex}"), "size": empty_size},
            "layers": [{
                "mediaType": a.media_type,
                "digest": format!("sha256:{hex}"),
                "size": size,
                "annotations": {ANNOTATION_TITLE: title},
            }],
            "subject": {"mediaType": MEDIA_MANIFEST, "digest": subject.manifest, "size": subject.manifest_size},
        });
        let (m_hex, m_size) = write_blob(&blobs, &canonical::to_vec(&manifest))?;
        let descriptor = json!({
            "mediaType": MEDIA_MANIFEST,
            "artifactType": a.media_type,
            "digest": format!("sha256:{m_hex}"),
            "size": m_size,
        });
        index["manifests"]
            .as_array_mut()
            .ok_or_else(|| OciError::BadLayout {
                path: dir.to_owned(),
                reason: "index.json has no \"manifests\" array".into(),
            })?
            .push(descriptor);
        digests.push(format!("sha256:{m_hex}"));
    }
    let mut staged = StagedFile::new(&index_path, &staging_prefix(&index_path, "partial"))
        .map_err(OciError::io(dir))?;
    staged
        .file()
        .write_all(&canonical::to_vec(&index))
        .map_err(OciError::io(&index_path))?;
    staged
        .commit(&index_path, FILE_MODE, true)
        .map_err(OciError::io(&index_path))?;
    Ok(digests)
}
