//! The rootfs paths the runtime works on from outside the sandbox, and the check that each is
//! what the runtime expects (never a symlink).

use super::error::{errno_io, io_at, UnpackError};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What a path the runtime touches must be, when it exists at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimePathKind {
    Dir,
    File,
}

impl RuntimePathKind {
    pub(super) fn describe(self) -> &'static str {
        match self {
            RuntimePathKind::Dir => "a directory",
            RuntimePathKind::File => "a regular file",
        }
    }
}

/// The rootfs paths (relative, parents before children) that the runtime works on from
/// outside the sandbox, with the type each must have when present (absent is fine: the
/// runtime creates or skips them). `tmp`: chmod 0711 and per-run directories in chroot-only
/// mode, a tmpfs mount otherwise; `dev`: a tmpfs mount and bind mounts of the host's nodes;
/// `etc/resolv.conf`, `etc/hosts`: rewritten before runs with network (see
/// [`crate::runtime::netfiles`]); `proc`, `var`, `var/tmp`: mount points and temp directories that
/// scripts and later runtime versions rely on being plain directories of the rootfs.
pub const RUNTIME_PATHS: &[(&str, RuntimePathKind)] = &[
    ("dev", RuntimePathKind::Dir),
    ("etc", RuntimePathKind::Dir),
    ("etc/hosts", RuntimePathKind::File),
    ("etc/resolv.conf", RuntimePathKind::File),
    ("proc", RuntimePathKind::Dir),
    ("tmp", RuntimePathKind::Dir),
    ("var", RuntimePathKind::Dir),
    ("var/tmp", RuntimePathKind::Dir),
];

pub(super) fn runtime_path_kind(comps: &[Vec<u8>]) -> Option<(&'static str, RuntimePathKind)> {
    let joined = comps.join(&b'/');
    RUNTIME_PATHS
        .iter()
        .copied()
        .find(|(p, _)| p.as_bytes() == joined.as_slice())
}

fn describe_mode(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        libc::S_IFLNK => "a symlink",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFIFO => "a fifo",
        libc::S_IFSOCK => "a socket",
        _ => "of an unknown type",
    }
}

/// Check that every path of [`RUNTIME_PATHS`] in the tree at `root` is absent or of the
/// expected type, and never a symlink. Every lookup is anchored at a descriptor of `root`
/// and opens each directory with `O_NOFOLLOW`, so a symlink anywhere on the way is reported,
/// never followed. `root` itself is opened normally: it is the operator's path.
///
/// The runtime calls it on a tree before working on it; [`super::unpack_bundle`] already does for
/// the trees it returns (unpacked, already present or in place).
pub fn check_runtime_paths(root: &Path) -> Result<(), UnpackError> {
    let root_fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .map(OwnedFd::from)
        .map_err(io_at(root))?;
    for &(path, want) in RUNTIME_PATHS {
        let io_err = |e: Errno| UnpackError::Io {
            path: root.join(path),
            source: errno_io(e),
        };
        let (parent_path, name) = match path.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, path),
        };
        let mut dir = root_fd.try_clone().map_err(io_at(root))?;
        let mut parent_missing = false;
        for c in parent_path.into_iter().flat_map(|p| p.split('/')) {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match openat(dir.as_fd(), c, flags, Mode::empty()) {
                Ok(fd) => dir = fd,
                Err(Errno::ENOENT) => {
                    parent_missing = true;
                    break;
                }
                // The parent is itself in RUNTIME_PATHS and was checked first; this is a
                // tree changing under us.
                Err(e) => return Err(io_err(e)),
            }
        }
        if parent_missing {
            continue;
        }
        let st = match nix::sys::stat::fstatat(
            dir.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(io_err(e)),
        };
        let ok = match want {
            RuntimePathKind::Dir => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
            RuntimePathKind::File => st.st_mode & libc::S_IFMT == libc::S_IFREG,
        };
        if !ok {
            return Err(UnpackError::RuntimePath {
                root: root.to_path_buf(),
                path,
                found: describe_mode(st.st_mode),
                expected: want.describe(),
            });
        }
    }
    Ok(())
}
