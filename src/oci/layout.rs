//! The OCI image layout directory: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! The layout is assembled in a hidden sibling directory and renamed into place only when
//! complete (with RENAME_NOREPLACE), so a crash or error never leaves a half-written image
//! where a tool could pick it up, and an existing path is never overwritten.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::fsutil::stage::{staging_prefix, StagedDir};

use super::reference::Reference;
use super::{
    canonical, is_sha256_hex, time, ImageConfig, ImageDigests, Layer, OciError,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST,
};

/// File modes are set explicitly, never left to the umask, so two builds are identical
/// down to `ls -l`.
pub(crate) const FILE_MODE: u32 = 0o644;
pub(crate) const DIR_MODE: u32 = 0o755;

/// Write an OCI image layout into `dir`, which must not exist (its parent must). The layer
/// blobs are copied in and verified against their declared digest and size. Returns the
/// digests of what was written.
pub fn write_layout(
    dir: &Path,
    layers: &[Layer],
    config: &ImageConfig,
    tag: &str,
) -> Result<ImageDigests, OciError> {
    let reference = Reference::parse(tag)?;
    for (index, layer) in layers.iter().enumerate() {
        check_layer(index, layer)?;
    }
    let config_blob = canonical::to_vec(&config_json(layers, config)?);

    let staging = stage(dir)?;
    let root = staging.path().to_owned();
    let blobs = root.join("blobs").join("sha256");
    make_dir(&root.join("blobs"))?;
    make_dir(&blobs)?;

    for (index, layer) in layers.iter().enumerate() {
        copy_layer(index, layer, &blobs)?;
    }
    let (config_hex, config_size) = write_blob(&blobs, &config_blob)?;
    let manifest_blob = canonical::to_vec(&manifest_json(&config_hex, config_size, layers));
    let (manifest_hex, manifest_size) = write_blob(&blobs, &manifest_blob)?;

    let index = index_json(&manifest_hex, manifest_size, config, &reference);
    write_file(&root.join("index.json"), &canonical::to_vec(&index))?;
    write_file(&root.join("oci-layout"), &oci_layout_json())?;

    staging
        .commit_new(dir, DIR_MODE)
        .map_err(commit_error(dir))?;
    Ok(ImageDigests {
        manifest: format!("sha256:{manifest_hex}"),
        manifest_size,
        config: format!("sha256:{config_hex}"),
    })
}

pub(crate) fn oci_layout_json() -> Vec<u8> {
    canonical::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))
}

fn check_layer(index: usize, layer: &Layer) -> Result<(), OciError> {
    let bad = |reason: String| OciError::BadLayer {
        index,
        blob: layer.blob.clone(),
        reason,
    };
    for (what, value) in [("digest", &layer.digest), ("diff_id", &layer.diff_id)] {
        if !is_sha256_hex(value) {
            return Err(bad(format!(
                "{what} {value:?} is not 64 lowercase hex digits (give the bare sha256, without a \"sha256:\" prefix)"
            )));
        }
    }
    if layer.created_by.is_empty() {
        return Err(bad(
            "created_by is empty; say what made the layer (shown by `docker history`)".into(),
        ));
    }
    Ok(())
}

/// The image configuration (`application/vnd.oci.image.config.v1+json`). Empty optional
/// fields are left out rather than written as empty values, as docker does.
fn config_json(layers: &[Layer], config: &ImageConfig) -> Result<Value, OciError> {
    let bad = |field: &'static str, reason: String| OciError::BadConfig { field, reason };
    if config.os.is_empty() {
        return Err(bad("os", "empty; use \"linux\"".into()));
    }
    if config.architecture.is_empty() {
        return Err(bad(
            "architecture",
            "empty; use the host's (oci::host_architecture())".into(),
        ));
    }
    let mut exec = Map::new();
    if !config.entrypoint.is_empty() {
        exec.insert("Entrypoint".into(), json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        exec.insert("Cmd".into(), json!(config.cmd));
    }
    if !config.env.is_empty() {
        if let Some(e) = config
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(bad("env", format!("{e:?} is not KEY=value")));
        }
        exec.insert("Env".into(), json!(config.env));
    }
    if !config.exposed_ports.is_empty() {
        let mut ports = Map::new();
        for p in &config.exposed_ports {
            ports.insert(
                normalize_port(p).map_err(|r| bad("exposed_ports", r))?,
                json!({}),
            );
        }
        exec.insert("ExposedPorts".into(), Value::Object(ports));
    }
    if !config.working_dir.is_empty() {
        if !config.working_dir.starts_with('/') {
            return Err(bad(
                "working_dir",
                format!("{:?} is not an absolute path", config.working_dir),
            ));
        }
        exec.insert("WorkingDir".into(), json!(config.working_dir));
    }
    if !config.labels.is_empty() {
        exec.insert("Labels".into(), json!(config.labels));
    }

    let created = time::rfc3339_utc(config.created_epoch);
    let history: Vec<Value> = layers
        .iter()
        .map(|l| json!({"created": created, "created_by": l.created_by}))
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", l.diff_id))
        .collect();
    Ok(json!({
        "architecture": config.architecture,
        "os": config.os,
        "created": created,
        "config": exec,
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
}

/// "8194/tcp" stays, "8194" becomes "8194/tcp"; anything else is an error.
fn normalize_port(p: &str) -> Result<String, String> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok_port = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|n| n > 0);
    if !ok_port || !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(format!(
            "{p:?} is not PORT[/tcp|udp|sctp] with PORT in 1..65535"
        ));
    }
    Ok(format!("{port}/{proto}"))
}

fn descriptor(media_type: &str, hex: &str, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size})
}

fn manifest_json(config_hex: &str, config_size: u64, layers: &[Layer]) -> Value {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| descriptor(l.media_type.media_type(), &l.digest, l.size))
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, config_hex, config_size),
        "layers": layers,
    })
}

/// `index.json` with one manifest, named for skopeo/umoci (`ref.name` = the tag) and for
/// containerd (`io.containerd.image.name` = the fully qualified name, which is what the CRI
/// looks images up by).
fn index_json(
    manifest_hex: &str,
    manifest_size: u64,
    config: &ImageConfig,
    reference: &Reference,
) -> Value {
    let mut manifest = descriptor(MEDIA_MANIFEST, manifest_hex, manifest_size);
    manifest["platform"] = json!({"architecture": config.architecture, "os": config.os});
    manifest["annotations"] = name_annotations(reference);
    json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest]})
}

pub(crate) fn name_annotations(reference: &Reference) -> Value {
    json!({
        ANNOTATION_REF_NAME: reference.tag,
        ANNOTATION_CONTAINERD_NAME: reference.qualified(),
    })
}

/// Copy a layer blob to `blobs/sha256/<digest>`, hashing as we go: a blob that changed since
/// its digest was computed would otherwise produce an image that every puller rejects.
fn copy_layer(index: usize, layer: &Layer, blobs: &Path) -> Result<(), OciError> {
    let dest = blobs.join(&layer.digest);
    if dest.exists() {
        // The same layer twice (legal in OCI): already copied and verified.
        return Ok(());
    }
    let mut src = fs::File::open(&layer.blob).map_err(OciError::io(&layer.blob))?;
    let mut out = fs::File::create(&dest).map_err(OciError::io(&dest))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read(&mut buf).map_err(OciError::io(&layer.blob))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(OciError::io(&dest))?;
        size += n as u64;
    }
    out.sync_all().map_err(OciError::io(&dest))?;
    set_mode(&dest, FILE_MODE)?;
    let actual = hex::encode(hasher.finalize());
    let bad = |reason: String| OciError::BadLayer {
        index,
        blob: layer.blob.clone(),
        reason,
    };
    if actual != layer.digest {
        return Err(bad(format!(
            "its sha256 is {actual} but the layer says {}; the file changed after it was written",
            layer.digest
        )));
    }
    if size != layer.size {
        return Err(bad(format!(
            "it is {size} bytes but the layer says {}",
            layer.size
        )));
    }
    Ok(())
}

/// Write `bytes` as a content-addressed blob; returns (hex digest, size).
pub(crate) fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, u64), OciError> {
    let hex = hex::encode(Sha256::digest(bytes));
    write_file(&blobs.join(&hex), bytes)?;
    Ok((hex, bytes.len() as u64))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let mut f = fs::File::create(path).map_err(OciError::io(path))?;
    f.write_all(bytes).map_err(OciError::io(path))?;
    f.sync_all().map_err(OciError::io(path))?;
    set_mode(path, FILE_MODE)
}

pub(crate) fn make_dir(path: &Path) -> Result<(), OciError> {
    fs::create_dir(path).map_err(OciError::io(path))?;
    set_mode(path, DIR_MODE)
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), OciError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(OciError::io(path))
}

/// Refuse an existing output path before doing any work, with a clear error.
pub(crate) fn ensure_absent(path: &Path) -> Result<(), OciError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(OciError::OutputExists {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OciError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// The parent directory of an output path ("." for a bare name), which must exist.
pub(crate) fn parent_of(path: &Path) -> Result<PathBuf, OciError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if path.file_name().is_none() {
        return Err(OciError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "output path has no file name",
            ),
        });
    }
    if !parent.is_dir() {
        return Err(OciError::Io {
            path: parent,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the output's parent directory does not exist; create it first",
            ),
        });
    }
    Ok(parent)
}

/// Map a commit's "already exists" to the clear error the rest of this module gives.
pub(crate) fn commit_error(dest: &Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OciError::OutputExists {
                path: dest.to_owned(),
            }
        } else {
            OciError::Io {
                path: dest.to_owned(),
                source: e,
            }
        }
    }
}

/// Stage `dest` (which must not exist yet) in a hidden directory beside it.
pub(crate) fn stage(dest: &Path) -> Result<StagedDir, OciError> {
    ensure_absent(dest)?;
    let parent = parent_of(dest)?;
    StagedDir::new(dest, &staging_prefix(dest, "partial")).map_err(OciError::io(&parent))
}
