//! OCI image output: an image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`)
//! and a single tar that is both an OCI layout and a `docker load` archive.
//!
//! We write every byte ourselves instead of going through a daemon or oci-spec's serializers:
//! JSON is canonical (sorted keys, no whitespace, see [`canonical`]) and tar headers are built
//! explicitly, so identical inputs give identical digests on any machine, under any umask or TZ.
//! The layers are [`crate::plan::Plan`]s written by the rootfs tar writer ([`image`]); the
//! layout and archive writers only verify and place the finished blobs.

pub mod archive;
pub mod canonical;
pub mod image;
pub mod index;
pub mod layout;
pub mod push;
pub mod reference;
pub mod referrer;
pub(crate) mod time;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use archive::write_archive;
pub use image::{write_image, ImageError, ImageOptions, ImageReport, ImageRootfs};
pub use layout::write_layout;
pub use reference::{validate_tag, Reference};

/// Compression of a layer blob; selects the layer media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerMedia {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`: every engine reads it (Docker 20.10 too).
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`: smaller and faster, but needs
    /// Docker >= 23 / containerd >= 1.5 / podman.
    Zstd,
}

impl LayerMedia {
    pub fn media_type(self) -> &'static str {
        match self {
            LayerMedia::Gzip => MEDIA_LAYER_GZIP,
            LayerMedia::Zstd => MEDIA_LAYER_ZSTD,
        }
    }
}

pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Annotation that `skopeo oci:DIR:TAG` and `umoci --image DIR:TAG` look up (the tag part).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation that `ctr image import` uses for the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Where things live in the image. The Containerfile and templates/k8s use the same paths
/// (tests/it/oci_layout.rs checks that they agree).
pub const IMAGE_RUNTIME_PATH: &str = "/usr/local/bin/runtime";
/// The image's WorkingDir; the bundle is `crate::contract::DEFAULT_BUNDLE_DIR` beneath it.
pub const IMAGE_WORKDIR: &str = "/opt/prebake";
/// The port `runtime serve` listens on by default (dify-sandbox's).
pub const IMAGE_PORT: u16 = 8194;

/// A finished, compressed layer tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The compressed file; copied into the layout (the caller keeps it).
    pub blob: PathBuf,
    pub media_type: LayerMedia,
    /// sha256 hex (64 lowercase digits, no `sha256:` prefix) of the blob bytes.
    pub digest: String,
    /// sha256 hex of the uncompressed tar (goes into the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Shown by `docker history`, e.g. "prebake: runtime binary and its libraries".
    pub created_by: String,
}

/// What goes into the image configuration blob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// `"8194/tcp"`; a bare port number means tcp.
    pub exposed_ports: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch (`SOURCE_DATE_EPOCH`): the only time in the image.
    pub created_epoch: u64,
    /// `linux`.
    pub os: String,
    /// OCI/Go architecture name (`amd64`, `arm64`), see [`host_architecture`].
    pub architecture: String,
}

/// Digests of what [`write_layout`] wrote, each as `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigests {
    /// The image manifest: what `index.json` points at and what registries call the image
    /// digest (`name@sha256:…`).
    pub manifest: String,
    pub manifest_size: u64,
    /// The config blob, which is what `docker images` shows as IMAGE ID.
    pub config: String,
}

/// The OCI architecture name of the machine we run on. The image holds host binaries (the
/// `runtime` and the resolved interpreter), so the image architecture is the host's.
pub fn host_architecture() -> Result<&'static str, OciError> {
    oci_architecture(std::env::consts::ARCH).ok_or(OciError::UnknownArchitecture {
        arch: std::env::consts::ARCH,
    })
}

/// Maps Rust's `target_arch` names to the Go names that OCI configs use.
pub fn oci_architecture(rust_arch: &str) -> Option<&'static str> {
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid image tag {tag:?}: {reason}")]
    InvalidTag { tag: String, reason: String },
    #[error("{path}: already exists; remove it or choose another output path")]
    OutputExists { path: PathBuf },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {index} ({blob}): {reason}")]
    BadLayer {
        index: usize,
        blob: PathBuf,
        reason: String,
    },
    #[error("image config: {field}: {reason}")]
    BadConfig { field: &'static str, reason: String },
    #[error("{path}: not a valid OCI image layout: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    #[error("unsupported host architecture {arch:?}: no OCI name known for it")]
    UnknownArchitecture { arch: &'static str },
}

impl OciError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }
}

/// sha256 hex as the layout names blobs (lowercase, 64 digits).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
