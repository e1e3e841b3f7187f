//! Reading and writing the "already unpacked" stamp ([`crate::contract::stamp`]) without
//! following a symlink: the tree may be shared, and an archive may try to ship its own stamp.

use super::error::{io_at, UnpackError};
use crate::contract::stamp::STAMP;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub(super) fn read_stamp(root: &Path) -> Option<Vec<u8>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(root.join(STAMP))
        .ok()?;
    let mut buf = Vec::with_capacity(80);
    // A digest line is 65 bytes; never read more than a little past that.
    (&mut f).take(256).read_to_end(&mut buf).ok()?;
    Some(buf)
}

pub(super) fn write_stamp(tree: &Path, line: &str) -> Result<(), UnpackError> {
    let path = tree.join(STAMP);
    // O_EXCL: an archive that ships its own stamp is refused rather than trusted.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => UnpackError::Refused {
                entry: STAMP.to_owned(),
                reason: "the archive contains prebake's reserved stamp file".to_owned(),
            },
            _ => UnpackError::Io {
                path: path.clone(),
                source,
            },
        })?;
    f.write_all(line.as_bytes()).map_err(io_at(&path))
}
