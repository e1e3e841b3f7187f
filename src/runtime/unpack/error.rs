//! What can go wrong while unpacking, and the small converters the unpack modules share.

use nix::errno::Errno;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rootfs archive entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("rootfs archive entry {entry:?}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("rootfs archive is corrupt or truncated")]
    Corrupt(#[source] io::Error),
    #[error("unknown rootfs compression {0:?} (expected \"zstd\", \"gzip\" or \"none\"); the bundle was made by an incompatible prebake")]
    Compression(String),
    #[error("{file}: {what} sha256 is {actual} but the bundle manifest says {expected}; the bundle is damaged or was modified, rebuild or re-pull the image")]
    Digest {
        file: PathBuf,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{root}: {path} is {found}, but the runtime expects {expected} there (it works on that path from outside the sandbox, and a symlink or another type would redirect it outside the rootfs); rebuild the bundle, or fix the rootfs, so that {path} is {expected} (or absent)")]
    RuntimePath {
        root: PathBuf,
        path: &'static str,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path}: cannot put the unpacked rootfs in place")]
    Swap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

pub(super) fn entry_err(entry: &str, e: Errno) -> UnpackError {
    UnpackError::Entry {
        entry: entry.to_owned(),
        source: errno_io(e),
    }
}
