//! The bundle this runtime serves: its manifest (checked for this machine's architecture) and
//! where its rootfs is on disk, unpacking it first when needed.

use super::unpack::{unpack_bundle, UnpackError, UnpackOutcome};
use crate::contract::{BundleError, BundleManifest};
use std::path::{Path, PathBuf};

/// Where the rootfs is and how it got there (for the startup log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub dir: PathBuf,
    /// "in place", "unpacked" or "already unpacked".
    pub how: &'static str,
}

/// Read `DIR/bundle.json` and refuse a bundle built for another architecture than this
/// machine's (its interpreters would not exec and its seccomp programs would kill every run).
pub fn load_manifest(bundle_dir: &Path) -> Result<BundleManifest, BundleError> {
    let manifest = BundleManifest::load(bundle_dir)?;
    manifest.check_arch()?;
    Ok(manifest)
}

/// The directory to use as the sandbox's `/`. A bundle whose rootfs is already a directory
/// (compression "none") is used in place; an archive is unpacked into `root` (once; a stamp
/// makes later starts skip it).
pub fn rootfs_dir(
    bundle_dir: &Path,
    manifest: &BundleManifest,
    root: &Path,
) -> Result<Located, UnpackError> {
    Ok(match unpack_bundle(bundle_dir, manifest, root)? {
        UnpackOutcome::InPlace(dir) => Located {
            dir,
            how: "in place",
        },
        UnpackOutcome::AlreadyPresent => Located {
            dir: root.to_path_buf(),
            how: "already unpacked",
        },
        UnpackOutcome::Unpacked { .. } => Located {
            dir: root.to_path_buf(),
            how: "unpacked",
        },
    })
}
