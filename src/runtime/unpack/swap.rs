//! Putting a complete tree in place of the root: atomically where the filesystem can
//! exchange two directories, and sweeping the temp trees of killed unpacks.

use super::error::UnpackError;
use std::io;
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

fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // The raw syscall rather than glibc's wrapper, which musl builds may lack.
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Put the complete tree at `root`: atomically exchange it with the old tree when there is
/// one, then remove the old tree.
pub(super) fn swap_into_place(
    tmp: tempfile::TempDir,
    root: &Path,
    parent: &Path,
    prefix: &str,
) -> Result<(), UnpackError> {
    let swap_err = |source| UnpackError::Swap {
        path: root.to_path_buf(),
        source,
    };
    let exists = root.symlink_metadata().is_ok();
    if !exists {
        // rename(2) refuses to replace a non-empty directory, so a racing creator is not
        // clobbered; tmp is still removed on failure by its destructor.
        std::fs::rename(tmp.path(), root).map_err(swap_err)?;
        let _ = tmp.keep();
        return Ok(());
    }
    let old = match rename_exchange(tmp.path(), root) {
        Ok(()) => tmp.keep(),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            // The filesystem cannot exchange: move the old tree aside, then the new one in.
            // The root is briefly absent, never half-written.
            let aside = tempfile::Builder::new()
                .prefix(&format!("{prefix}old-"))
                .tempdir_in(parent)
                .map_err(swap_err)?
                .keep();
            std::fs::rename(root, &aside).map_err(swap_err)?;
            if let Err(e) = std::fs::rename(tmp.path(), root) {
                // Put the old tree back so the root is never left missing.
                let _ = std::fs::rename(&aside, root);
                return Err(swap_err(e));
            }
            let _ = tmp.keep();
            aside
        }
        Err(e) => return Err(swap_err(e)),
    };
    if let Err(err) = crate::runtime::cleanup::remove_tree(&old) {
        // The new tree is in place; a leftover old tree only costs disk and is removed by
        // the next unpack's stale-temp sweep.
        tracing::warn!(path = %old.display(), error = %err, "cannot remove the previous rootfs tree");
    }
    Ok(())
}
