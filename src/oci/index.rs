//! One OCI image layout holding the images of several platforms (`prebake index`): their
//! blobs, an image index (`application/vnd.oci.image.index.v1+json`) that lists each image
//! manifest with its `platform`, and `index.json` naming that index by the tag. Engines pull
//! the manifest of their own platform from it.
//!
//! Deterministic: the images are listed in platform order whatever the order of the inputs,
//! every JSON document is canonical, and nothing but the inputs' bytes goes in.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::layout::{
    make_dir, name_annotations, set_mode, stage, write_blob, write_file, DIR_MODE, FILE_MODE,
};
use super::reference::Reference;
use super::referrer::is_referrer;
use super::{canonical, is_sha256_hex, OciError, MEDIA_INDEX, MEDIA_MANIFEST};

/// One input image, read from its layout.
struct Input {
    layout: PathBuf,
    /// The image manifest's descriptor, with `platform` set from its config.
    image: Value,
    /// Its referrers' descriptors (the SBOMs), as its `index.json` lists them.
    referrers: Vec<Value>,
    /// (os, architecture, variant): the sort key and the check for duplicates.
    platform: (String, String, String),
    /// `io.containerd.image.name` of the input, for the default tag.
    name: Option<String>,
}

/// What [`write_index`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexReport {
    pub dir: PathBuf,
    /// The normalized reference (`name:tag`).
    pub tag: String,
    /// `sha256:` digest of the image index: what a registry calls the multi-platform image.
    pub digest: String,
    pub size: u64,
    /// (`os/architecture[/variant]`, `sha256:` manifest digest), in index order.
    pub images: Vec<(String, String)>,
}

/// Write the layout `dest` (which must not exist) holding every image of `layouts` (each an
/// OCI layout directory with one image, or a `prebake build` output directory holding
/// `image/`) under one image index tagged `tag` (default: the first input's name).
pub fn write_index(
    layouts: &[PathBuf],
    dest: &Path,
    tag: Option<&str>,
) -> Result<IndexReport, OciError> {
    if layouts.is_empty() {
        return Err(OciError::BadLayout {
            path: dest.to_path_buf(),
            reason: "no input images; name at least one layout".into(),
        });
    }
    let mut inputs = layouts
        .iter()
        .map(|l| read_input(l))
        .collect::<Result<Vec<_>, _>>()?;
    inputs.sort_by(|a, b| a.platform.cmp(&b.platform));
    for pair in inputs.windows(2) {
        if pair[0].platform == pair[1].platform {
            return Err(OciError::BadLayout {
                path: pair[1].layout.clone(),
                reason: format!(
                    "its platform {} is also the platform of {}; an index holds one image per platform",
                    platform_name(&pair[1].platform),
                    pair[0].layout.display()
                ),
            });
        }
    }
    let tag = match tag {
        Some(t) => t.to_owned(),
        None => inputs
            .iter()
            .find_map(|i| i.name.clone())
            .ok_or_else(|| OciError::InvalidTag {
                tag: String::new(),
                reason: "the inputs name no image; pass --tag".into(),
            })?,
    };
    let reference = Reference::parse(&tag)?;

    let staging = stage(dest)?;
    let root = staging.path().to_owned();
    let blobs = root.join("blobs").join("sha256");
    make_dir(&root.join("blobs"))?;
    make_dir(&blobs)?;
    for input in &inputs {
        copy_blobs(&input.layout, &blobs)?;
    }
    let manifests: Vec<Value> = inputs.iter().map(|i| i.image.clone()).collect();
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests});
    let (hex, size) = write_blob(&blobs, &canonical::to_vec(&index))?;
    let mut top =
        json!({"mediaType": MEDIA_INDEX, "digest": format!("sha256:{hex}"), "size": size});
    top["annotations"] = name_annotations(&reference);
    let mut listed = vec![top];
    for input in &inputs {
        listed.extend(input.referrers.iter().cloned());
    }
    let index_json = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": listed});
    write_file(&root.join("index.json"), &canonical::to_vec(&index_json))?;
    write_file(&root.join("oci-layout"), &super::layout::oci_layout_json())?;
    staging
        .commit_new(dest, DIR_MODE)
        .map_err(super::layout::commit_error(dest))?;
    Ok(IndexReport {
        dir: dest.to_path_buf(),
        tag: reference.full(),
        digest: format!("sha256:{hex}"),
        size,
        images: inputs
            .iter()
            .map(|i| {
                let digest = i.image["digest"].as_str().unwrap_or_default().to_owned();
                (platform_name(&i.platform), digest)
            })
            .collect(),
    })
}

fn platform_name((os, arch, variant): &(String, String, String)) -> String {
    if variant.is_empty() {
        format!("{os}/{arch}")
    } else {
        format!("{os}/{arch}/{variant}")
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> OciError {
    OciError::BadLayout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_json(path: &Path) -> Result<Value, OciError> {
    let bytes = fs::read(path).map_err(OciError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("not JSON: {e}")))
}

/// The blob a descriptor names, under `layout`.
fn blob_path(layout: &Path, descriptor: &Value) -> Result<PathBuf, OciError> {
    let hex = descriptor["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .filter(|h| is_sha256_hex(h))
        .ok_or_else(|| bad(layout, "a descriptor without a sha256 digest"))?;
    Ok(layout.join("blobs").join("sha256").join(hex))
}

fn read_input(path: &Path) -> Result<Input, OciError> {
    // A `prebake build` output directory holds the layout at image/.
    let layout = if path.join("image").join("oci-layout").is_file() {
        path.join("image")
    } else {
        path.to_path_buf()
    };
    if !layout.join("oci-layout").is_file() {
        return Err(bad(
            path,
            "no oci-layout file here or in image/; name a `prebake build` output or its image/ directory",
        ));
    }
    let index = read_json(&layout.join("index.json"))?;
    let listed = index["manifests"]
        .as_array()
        .ok_or_else(|| bad(&layout, "index.json has no manifests"))?;
    let (referrers, images): (Vec<&Value>, Vec<&Value>) =
        listed.iter().partition(|d| is_referrer(d));
    let image = match images.as_slice() {
        [one] if one["mediaType"] == MEDIA_MANIFEST => (*one).clone(),
        [one] => {
            return Err(bad(
                &layout,
                format!(
                    "index.json names a {} rather than an image manifest; an index of indexes is not supported",
                    one["mediaType"]
                ),
            ))
        }
        _ => {
            return Err(bad(
                &layout,
                format!(
                    "index.json lists {} images; each input must hold exactly one",
                    images.len()
                ),
            ))
        }
    };
    let manifest = read_json(&blob_path(&layout, &image)?)?;
    let config = read_json(&blob_path(&layout, &manifest["config"])?)?;
    let field = |k: &str| config[k].as_str().unwrap_or_default().to_owned();
    let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
    if os.is_empty() || arch.is_empty() {
        return Err(bad(&layout, "the image config names no os or architecture"));
    }
    let mut platform = json!({"architecture": arch, "os": os});
    if !variant.is_empty() {
        platform["variant"] = json!(variant);
    }
    let name = image["annotations"][super::ANNOTATION_CONTAINERD_NAME]
        .as_str()
        .map(str::to_owned);
    let descriptor = json!({
        "mediaType": MEDIA_MANIFEST,
        "digest": image["digest"],
        "size": image["size"],
        "platform": platform,
    });
    Ok(Input {
        layout,
        image: descriptor,
        referrers: referrers.into_iter().cloned().collect(),
        platform: (os, arch, variant),
        name,
    })
}

/// Every blob of `layout` into `blobs`, each checked against its name (a blob two images
/// share, such as the SBOMs' empty config, is copied once).
fn copy_blobs(layout: &Path, blobs: &Path) -> Result<(), OciError> {
    let src_dir = layout.join("blobs").join("sha256");
    let mut names: Vec<PathBuf> = fs::read_dir(&src_dir)
        .map_err(OciError::io(&src_dir))?
        .map(|e| e.map(|e| e.path()).map_err(OciError::io(&src_dir)))
        .collect::<Result<_, _>>()?;
    names.sort();
    for src in names {
        let Some(hex) = src.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !is_sha256_hex(hex) {
            return Err(bad(
                layout,
                format!("blobs/sha256/{hex}: not a sha256 name"),
            ));
        }
        let dest = blobs.join(hex);
        if dest.exists() {
            continue;
        }
        let mut hasher = Sha256::new();
        let mut input = fs::File::open(&src).map_err(OciError::io(&src))?;
        let mut out = fs::File::create(&dest).map_err(OciError::io(&dest))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = input.read(&mut buf).map_err(OciError::io(&src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(OciError::io(&dest))?;
        }
        out.sync_all().map_err(OciError::io(&dest))?;
        set_mode(&dest, FILE_MODE)?;
        if hex::encode(hasher.finalize()) != hex {
            return Err(bad(
                layout,
                format!("blobs/sha256/{hex}: its content does not match its name"),
            ));
        }
    }
    Ok(())
}
