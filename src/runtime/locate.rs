//! Where the rootfs of a bundle is on disk, unpacking it first when needed.

use crate::bundle::BundleManifest;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{path}: the bundle's rootfs directory is missing: {source}")]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the bundle's rootfs (compression \"none\") is not a directory")]
    NotDir { path: PathBuf },
    #[error("{0}")]
    Unpack(String),
}

/// Where the rootfs is and how it got there (for the startup log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub dir: PathBuf,
    /// "in place", "unpacked" or "already unpacked".
    pub how: &'static str,
}

/// The directory to use as the sandbox's `/`. A bundle whose rootfs is already a directory
/// (compression "none") is used in place; an archive is unpacked into `root` (once; a stamp
/// makes later starts skip it).
pub fn rootfs_dir(
    bundle_dir: &Path,
    manifest: &BundleManifest,
    root: &Path,
) -> Result<Located, LocateError> {
    if manifest.rootfs.compression == "none" {
        let path = bundle_dir.join(&manifest.rootfs.file);
        let meta = std::fs::metadata(&path).map_err(|source| LocateError::Missing {
            path: path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(LocateError::NotDir { path });
        }
        return Ok(Located {
            dir: path,
            how: "in place",
        });
    }
    unpack_archive(bundle_dir, manifest, root)
}

/// Thin seam over the unpacker (`super::unpack`, another module), so it can change without
/// touching callers. Once `unpack::unpack_bundle` is in this branch, the body becomes:
/// `match unpack_bundle(..)? { InPlace(p) => (p, "in place"), AlreadyPresent => (root,
/// "already unpacked"), Unpacked { .. } => (root, "unpacked") }`.
fn unpack_archive(
    _bundle_dir: &Path,
    manifest: &BundleManifest,
    root: &Path,
) -> Result<Located, LocateError> {
    Err(LocateError::Unpack(format!(
        "{}: unpacking {} archives is not available in this build yet; use a bundle whose rootfs is a directory",
        root.display(),
        manifest.rootfs.compression
    )))
}
