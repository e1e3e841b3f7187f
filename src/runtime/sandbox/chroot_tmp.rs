//! /tmp without a mount namespace (chroot-only mode, see the module docs of [`super`]): the
//! shared /tmp made traverse-only, and each run's own directory in it.

use super::SandboxError;
use crate::runtime::cleanup;
use std::path::{Path, PathBuf};

/// Make the rootfs's /tmp a root-owned, traverse-only directory (chroot mode, module docs).
/// Through descriptors opened with `O_NOFOLLOW`, so a `tmp` symlink can never redirect the
/// chmod to a host directory.
pub(super) fn prepare_shared_tmp(rootfs: &Path) -> Result<(), SandboxError> {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::{fchmod, mkdirat, Mode};
    use nix::unistd::fchown;
    let tmp = rootfs.join("tmp");
    let prep = |what| {
        let tmp = tmp.clone();
        move |e: nix::Error| SandboxError::Prepare {
            path: tmp,
            what,
            source: std::io::Error::from_raw_os_error(e as i32),
        }
    };
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let root = open(rootfs, dir_flags, Mode::empty()).map_err(prep("open the rootfs"))?;
    match mkdirat(&root, "tmp", Mode::from_bits_truncate(0o711)) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(prep("create /tmp in the rootfs")(e)),
    }
    let fd = openat(&root, "tmp", dir_flags, Mode::empty())
        .map_err(prep("open /tmp in the rootfs (is it a symlink?)"))?;
    fchown(&fd, Some(0.into()), Some(0.into())).map_err(prep("give /tmp to root"))?;
    fchmod(&fd, Mode::from_bits_truncate(0o711)).map_err(prep("make /tmp traverse-only"))?;
    Ok(())
}

/// The per-run /tmp directory of chroot mode; removed on drop.
pub(super) struct RunTmp(pub(super) PathBuf);

impl RunTmp {
    pub(super) fn create(path: &Path, uid: u32, chown: bool) -> Result<RunTmp, SandboxError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let prep = |what| {
            let p = path.to_path_buf();
            move |source| SandboxError::Prepare {
                path: p,
                what,
                source,
            }
        };
        // A leftover of this uid (a crashed run, or a tree the last cleanup could not remove):
        // remove it, or at least set it aside, so this run can create its directory.
        if let Err(e) = cleanup::remove_tree(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover run directory; setting it aside");
            cleanup::set_aside(path).map_err(prep("set aside a leftover run directory"))?;
        }
        // Trees set aside earlier for this uid (only its lease holder touches them).
        if let Err(e) = cleanup::empty_trash(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a set-aside run directory yet");
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(prep("create the run's /tmp directory"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(prep("set the run's /tmp mode"))?;
        if chown {
            std::os::unix::fs::chown(path, Some(uid), Some(uid))
                .map_err(prep("give the run's /tmp to its uid"))?;
        }
        Ok(RunTmp(path.to_path_buf()))
    }

    /// Remove the run's tree without recursion, never following symlinks or crossing mounts
    /// (see [`cleanup`]); if that fails, set it aside so the uid's next run starts clean.
    /// Never panics: this runs on a server worker thread. Also on drop.
    pub(super) fn remove(&self) {
        let path = &self.0;
        let done = std::panic::catch_unwind(|| {
            if let Err(e) = cleanup::remove_tree(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the run's /tmp directory; setting it aside");
                if let Err(e) = cleanup::set_aside(path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot set the run's /tmp directory aside");
                }
            }
        });
        if done.is_err() {
            tracing::error!(path = %path.display(), "internal error while removing the run's /tmp directory");
        }
    }
}

impl Drop for RunTmp {
    fn drop(&mut self) {
        self.remove();
    }
}
