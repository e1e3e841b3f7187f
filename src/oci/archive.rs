//! One tar that is both an OCI image layout (`oci-layout`, `index.json`, `blobs/`) and a
//! docker archive (`manifest.json` whose `Config`/`Layers` point at the same blob files).
//!
//! Docker before 25 only understands `manifest.json`; podman, skopeo (`oci-archive:` and
//! `docker-archive:`) and newer Docker read either half. Sharing the blobs costs nothing.
//! Tar headers are written field by field (ustar, uid/gid 0, no user names, mtime 0, fixed
//! modes, entries in bytewise path order), so the archive bytes depend only on the layout.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::fsutil::stage::{staging_prefix, StagedFile};
use crate::hashio::HashReader;
use crate::ustar::{self, Member, TypeFlag};

use super::layout::{
    commit_error, ensure_absent, name_annotations, oci_layout_json, parent_of, DIR_MODE,
};
use super::reference::Reference;
use super::referrer::is_referrer;
use super::{canonical, is_sha256_hex, OciError, MEDIA_MANIFEST};

/// Write `out` (which must not exist) from the single-image layout at `layout_dir`, naming the
/// image `tag` in both `index.json` and `manifest.json`'s `RepoTags`. The image's referrers
/// (its SBOMs) come along in `index.json` and `blobs/`; docker's `manifest.json` knows only
/// the image.
pub fn write_archive(layout_dir: &Path, out: &Path, tag: &str) -> Result<(), OciError> {
    let reference = Reference::parse(tag)?;
    ensure_absent(out)?;
    let parent = parent_of(out)?;
    let image = read_layout(layout_dir)?;

    let blob_path = |hex: &str| format!("blobs/sha256/{hex}");
    let docker_manifest = json!([{
        "Config": blob_path(&image.config),
        "RepoTags": [reference.full()],
        "Layers": image.layers.iter().map(|h| blob_path(h)).collect::<Vec<_>>(),
    }]);
    // Same manifest descriptor, renamed for this tag (the layout may have been written
    // under another one).
    let mut descriptor = image.descriptor.clone();
    let annotations = descriptor
        .as_object_mut()
        .and_then(|d| {
            d.entry("annotations")
                .or_insert_with(|| json!({}))
                .as_object_mut()
        })
        .ok_or_else(|| {
            bad_layout(
                layout_dir,
                "index.json: manifest descriptor is not an object",
            )
        })?;
    if let Value::Object(names) = name_annotations(&reference) {
        annotations.extend(names);
    }
    let mut manifests = vec![descriptor];
    manifests.extend(image.referrers.iter().map(|r| r.descriptor.clone()));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": super::MEDIA_INDEX,
        "manifests": manifests,
    });

    let mut blobs: Vec<&String> = std::iter::once(&image.manifest)
        .chain(std::iter::once(&image.config))
        .chain(image.layers.iter())
        .chain(image.referrers.iter().flat_map(|r| {
            std::iter::once(&r.manifest)
                .chain(std::iter::once(&r.config))
                .chain(r.layers.iter())
        }))
        .collect();
    blobs.sort();
    blobs.dedup();

    let mut staged =
        StagedFile::new(out, &staging_prefix(out, "partial")).map_err(OciError::io(&parent))?;
    {
        let mut file = io::BufWriter::with_capacity(1 << 20, staged.file());
        // Bytewise path order: "blobs/" < "blobs/sha256/" < "blobs/sha256/<hex>" <
        // "index.json" < "manifest.json" < "oci-layout".
        for dir in ["blobs/", "blobs/sha256/"] {
            ustar::append(&mut file, &dir_member(dir), &mut io::empty())
                .map_err(OciError::io(out))?;
        }
        for hex in &blobs {
            let name = blob_path(hex);
            let path = layout_dir.join(&name);
            let blob = fs::File::open(&path).map_err(OciError::io(&path))?;
            let size = blob.metadata().map_err(OciError::io(&path))?.len();
            // Hash what the tar writer reads, so each blob is verified in the pass that copies it.
            let mut reader = HashReader::new(blob);
            ustar::append(&mut file, &file_member(&name, size), &mut reader)
                .map_err(OciError::io(out))?;
            let (actual, read) = reader.drain_and_finish().map_err(OciError::io(&path))?;
            if actual != **hex || read != size {
                return Err(bad_layout(
                    layout_dir,
                    &format!("blob {hex} is corrupt: its content hashes to {actual}"),
                ));
            }
        }
        for (name, bytes) in [
            ("index.json", canonical::to_vec(&index)),
            ("manifest.json", canonical::to_vec(&docker_manifest)),
            ("oci-layout", oci_layout_json()),
        ] {
            ustar::append(
                &mut file,
                &file_member(name, bytes.len() as u64),
                &mut bytes.as_slice(),
            )
            .map_err(OciError::io(out))?;
        }
        file.write_all(&ustar::END).map_err(OciError::io(out))?;
        file.flush().map_err(OciError::io(out))?;
    }
    staged
        .commit(out, 0o644, false)
        .map_err(commit_error(out))?;
    Ok(())
}

/// What the archive needs from a layout: its one image manifest, the artifacts that refer to
/// it (its SBOMs), and the blobs they reference.
struct LayoutImage {
    /// The manifest descriptor from `index.json`, kept whole (platform, other annotations).
    descriptor: Value,
    manifest: String,
    config: String,
    layers: Vec<String>,
    referrers: Vec<LayoutImage>,
}

fn read_layout(dir: &Path) -> Result<LayoutImage, OciError> {
    let read_json = |name: &str| -> Result<Value, OciError> {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(OciError::io(&path))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| bad_layout(dir, &format!("{name} is not valid JSON: {e}")))
    };
    let layout = read_json("oci-layout")?;
    if layout["imageLayoutVersion"] != "1.0.0" {
        return Err(bad_layout(
            dir,
            "oci-layout: imageLayoutVersion is not 1.0.0",
        ));
    }
    let index = read_json("index.json")?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| bad_layout(dir, "index.json has no \"manifests\" array"))?;
    let (referrers, images): (Vec<&Value>, Vec<&Value>) =
        manifests.iter().partition(|d| is_referrer(d));
    let [descriptor] = images.as_slice() else {
        return Err(bad_layout(
            dir,
            &format!(
                "index.json lists {} images; an archive holds exactly one (and the artifacts that refer to it)",
                images.len()
            ),
        ));
    };
    let mut image = read_manifest(dir, descriptor)?;
    for r in referrers {
        let referrer = read_manifest(dir, r)?;
        if referrer.subject.as_deref() != Some(image.manifest.as_str()) {
            return Err(bad_layout(
                dir,
                &format!(
                    "artifact manifest {} does not refer to the image {}; an archive holds only the image's own artifacts",
                    referrer.manifest, image.manifest
                ),
            ));
        }
        image.image.referrers.push(referrer.image);
    }
    Ok(image.image)
}

/// A manifest of the layout and the digest of its `subject`, if it has one.
struct ReadManifest {
    image: LayoutImage,
    manifest: String,
    subject: Option<String>,
}

fn read_manifest(dir: &Path, descriptor: &Value) -> Result<ReadManifest, OciError> {
    if descriptor["mediaType"] != MEDIA_MANIFEST {
        return Err(bad_layout(
            dir,
            &format!(
                "index.json points at a {} rather than an image manifest",
                descriptor["mediaType"]
            ),
        ));
    }
    let manifest = digest_hex(dir, &descriptor["digest"], "index.json manifest")?;
    let manifest_path = dir.join("blobs/sha256").join(&manifest);
    let manifest_bytes = fs::read(&manifest_path).map_err(OciError::io(&manifest_path))?;
    if hex::encode(Sha256::digest(&manifest_bytes)) != manifest {
        return Err(bad_layout(
            dir,
            &format!("manifest blob {manifest} is corrupt"),
        ));
    }
    let m: Value = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| bad_layout(dir, &format!("manifest {manifest} is not JSON: {e}")))?;
    let config = digest_hex(dir, &m["config"]["digest"], "manifest config")?;
    let layers = m["layers"]
        .as_array()
        .ok_or_else(|| bad_layout(dir, "manifest has no \"layers\" array"))?
        .iter()
        .map(|l| digest_hex(dir, &l["digest"], "manifest layer"))
        .collect::<Result<Vec<_>, _>>()?;
    let subject = match m.get("subject") {
        Some(s) => Some(digest_hex(dir, &s["digest"], "manifest subject")?),
        None => None,
    };
    Ok(ReadManifest {
        image: LayoutImage {
            descriptor: descriptor.clone(),
            manifest: manifest.clone(),
            config,
            layers,
            referrers: Vec::new(),
        },
        manifest,
        subject,
    })
}

fn digest_hex(dir: &Path, v: &Value, what: &str) -> Result<String, OciError> {
    v.as_str()
        .and_then(|s| s.strip_prefix("sha256:"))
        .filter(|h| is_sha256_hex(h))
        .map(str::to_owned)
        .ok_or_else(|| bad_layout(dir, &format!("{what} digest {v} is not sha256:<64 hex>")))
}

fn bad_layout(dir: &Path, reason: &str) -> OciError {
    OciError::BadLayout {
        path: dir.to_owned(),
        reason: reason.to_owned(),
    }
}

fn dir_member(path: &str) -> Member<'_> {
    Member {
        name: path.as_bytes(),
        link: b"",
        flag: TypeFlag::Dir,
        mode: DIR_MODE,
        size: 0,
        mtime: 0,
    }
}

fn file_member(path: &str, size: u64) -> Member<'_> {
    Member {
        name: path.as_bytes(),
        link: b"",
        flag: TypeFlag::Regular,
        mode: super::layout::FILE_MODE,
        size,
        mtime: 0,
    }
}
