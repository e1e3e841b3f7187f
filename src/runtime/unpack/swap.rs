//! Putting a complete tree in place of the root (with [`crate::fsutil::stage`]), and sweeping
//! the temp trees of killed unpacks.

use super::error::UnpackError;
use crate::fsutil::stage::StagedDir;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Temp trees left by an unpack that was killed (no destructor ran): they are ours by name,
/// and the caller holds the root's lock, so no live unpacker is writing them.
pub(super) fn remove_stale_temps(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            let p = e.path();
            if let Err(err) = crate::runtime::cleanup::remove_tree(&p) {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove a stale rootfs temp dir");
            }
        }
    }
}

/// Put the complete tree at `root` (exchanged atomically with the old tree where the
/// filesystem can), then remove the old tree. mkdtemp made the tree 0700; the sandbox's
/// unprivileged uids must be able to traverse it, so it lands 0755.
pub(super) fn swap_into_place(tmp: StagedDir, root: &Path) -> Result<(), UnpackError> {
    let old = tmp
        .commit_replace(root, 0o755)
        .map_err(|source| UnpackError::Swap {
            path: root.to_path_buf(),
            source,
        })?;
    if let Some(old) = old {
        if let Err(err) = crate::runtime::cleanup::remove_tree(&old) {
            // The new tree is in place; a leftover old tree only costs disk and is removed by
            // the next unpack's stale-temp sweep.
            tracing::warn!(path = %old.display(), error = %err, "cannot remove the previous rootfs tree");
        }
    }
    Ok(())
}
