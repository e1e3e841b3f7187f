//! The per-root lock that serializes unpackers (module docs of [`super`]).

use super::error::{io_at, UnpackError};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Take the exclusive lock that serializes unpackers of the root `parent/name`, waiting for
/// it; released when the returned file is closed (also when the process dies).
pub(super) fn lock_root(parent: &Path, name: &OsStr) -> Result<File, UnpackError> {
    let mut lock_name = std::ffi::OsString::from(".");
    lock_name.push(name);
    lock_name.push(".prebake.lock");
    let path = parent.join(lock_name);
    // O_NOFOLLOW: the parent may be shared; a planted symlink must not make us create or
    // lock a file elsewhere.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_at(&path))?;
    loop {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(UnpackError::Io { path, source: err });
        }
    }
}
