//! The "already unpacked" stamp: a file at the top of an unpacked tree holding the digest of
//! the archive it came from. The unpacker writes it into the tree before the tree is swapped
//! into place and later starts compare it with bundle.json, so a bundle whose rootfs changed
//! is unpacked again (the reading and writing, safe against symlinks, are the runtime's:
//! `runtime::unpack::stamp`).

use super::manifest::RootfsInfo;

/// Name of the stamp file at the top of an unpacked tree.
pub const STAMP: &str = ".prebake-rootfs";

/// The stamp's whole content for a rootfs: its compressed sha256 and a newline.
pub fn stamp_line(rootfs: &RootfsInfo) -> String {
    format!("{}\n", rootfs.sha256_compressed)
}
