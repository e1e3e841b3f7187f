//! Once-only, safe unpacking of the bundle's rootfs into the sandbox root.
//!
//! The archive is treated as hostile even though prebake wrote it: a damaged or replaced
//! bundle must not be able to write outside the target directory, plant setuid binaries or
//! device nodes, or leave a half-written tree behind. Concretely:
//! - every name is checked lexically (no absolute paths, no `..`), and every directory on the
//!   way to an entry is opened with `O_NOFOLLOW` relative to the previous one, so a symlink
//!   the archive created earlier can never redirect a later write;
//! - files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` (nothing existing is ever reused or
//!   replaced, so a directory fd opened once stays valid for its path);
//! - relative symlink targets may not climb above the root (absolute ones are fine: they
//!   resolve inside the chroot), hardlinks may only point at earlier regular files of the same
//!   archive, device nodes, fifos and setuid/setgid bits are refused;
//! - the tree is built in a temp dir beside the root and swapped in only when complete and
//!   its digests match the manifest;
//! - modes are neutralized rather than refused: no entry but the top-level `tmp` keeps the
//!   sticky bit or write permission for group or others (they are cleared, so `var/tmp` 1777
//!   from a bundle of an earlier prebake, built from a venv under /var/tmp, comes out 0755).
//!   Otherwise such a directory would be writable by every chroot-only run and shared across
//!   runs. Clearing rather than refusing keeps those older bundles usable, and the digests
//!   still vouch for the archive as built;
//! - the paths the runtime itself touches on the host side ([`RUNTIME_PATHS`]: `tmp`, `dev`,
//!   `etc` and its resolver files, `proc`, `var`, `var/tmp`) must be what the runtime expects
//!   (a directory or a regular file), never a symlink: with `tmp -> /run`, chroot-only mode
//!   would chmod the host's `/run` and create run directories in it. Such an archive is
//!   refused, naming the entry. [`check_runtime_paths`] checks the same on any tree (an
//!   in-place rootfs, a tree unpacked earlier), through descriptors and without following
//!   a symlink.
//!
//! Unpackers of one root are serialized by an exclusive `flock` on `.<root name>.prebake.lock`
//! beside the root, held from the stamp check to the swap: `serve` and `exec` started together
//! on the same root would otherwise race, the second sweeping the first's temp tree as stale
//! while it was being written. The second waits, then finds the stamp and does nothing. A
//! tree already in place is recognized before the lock, without writing anything (the stamp
//! arrives with its complete tree in one rename). The lock file is never removed (removing a
//! lock file lets a third process lock a new inode while the second still holds the old one).
//!
//! The "already unpacked" stamp lives inside the tree (`<root>/.prebake-rootfs`, holding the
//! archive's sha256) rather than beside it: it is written into the temp tree before the swap,
//! so the stamp and the tree it describes change in the same atomic rename, and no crash can
//! leave a stamp that vouches for a different or partial tree. It is visible inside the
//! sandbox, which is harmless: it holds only the public digest of the image's own rootfs.

mod entry;
mod error;
mod extract;
mod lock;
mod names;
mod paths;
mod stamp;
mod swap;

pub use crate::contract::stamp::STAMP;
pub use error::UnpackError;
pub use extract::{extract, ExtractStats};
pub use paths::{check_runtime_paths, RuntimePathKind, RUNTIME_PATHS};

use crate::contract::{stamp::stamp_line, BundleManifest, Compression};
use crate::error::Chain;
use crate::fsutil::stage::StagedDir;
use error::io_at;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Copy buffer for file data, allocated once per extraction.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnpackOutcome {
    /// The root already holds this bundle's rootfs (its stamp matches).
    AlreadyPresent,
    /// The rootfs was extracted and swapped into place.
    Unpacked { files: u64, bytes: u64 },
    /// The bundle's rootfs is a directory, used where it is.
    InPlace(PathBuf),
}

/// Make `root` hold the bundle's rootfs, extracting it at most once per archive digest.
///
/// `manifest.rootfs.file` is relative to `bundle_dir`. With compression "none" a directory is
/// used in place; a regular file with "none" is a plain tar and is extracted like the others.
pub fn unpack_bundle(
    bundle_dir: &Path,
    manifest: &BundleManifest,
    root: &Path,
) -> Result<UnpackOutcome, UnpackError> {
    let info = &manifest.rootfs;
    let file = bundle_dir.join(&info.file);
    if let Compression::Unknown(name) = &info.compression {
        return Err(UnpackError::Compression(name.clone()));
    }
    if info.compression == Compression::None && file.is_dir() {
        // Not ours to fix: the operator's tree is used as it is, if it is safe to.
        check_runtime_paths(&file)?;
        return Ok(UnpackOutcome::InPlace(file));
    }
    let stamp_line = stamp_line(info);
    // The common case first, without the lock and without writing anything (the root's
    // parent may be read-only once the tree is there). Safe unlocked: the stamp lives in the
    // tree and arrives with it in one rename, so a matching stamp means a complete tree.
    if present_and_sound(root, &stamp_line) {
        return Ok(UnpackOutcome::AlreadyPresent);
    }

    let (parent, name) = match (root.parent(), root.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => (p, n),
        _ => {
            return Err(UnpackError::Io {
                path: root.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the sandbox root must be an absolute path below some directory",
                ),
            })
        }
    };
    std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    // Held until this function returns: stamp check, extraction and swap are one step for
    // every other unpacker of this root (module docs).
    let _lock = lock::lock_root(parent, name)?;
    // Again under the lock: another unpacker may have finished while we waited for it.
    if present_and_sound(root, &stamp_line) {
        return Ok(UnpackOutcome::AlreadyPresent);
    }
    let prefix = format!(".{}.prebake-", name.to_string_lossy());
    // Under the lock, every temp tree of this root belongs to an unpack that was killed.
    swap::remove_stale_temps(parent, &prefix);

    // TempDir removes itself on every early return below: a failed unpack leaves nothing.
    let tmp = StagedDir::new(root, &format!("{prefix}new-")).map_err(io_at(parent))?;
    let archive = File::open(&file).map_err(io_at(&file))?;
    let stats = extract(
        io::BufReader::with_capacity(CHUNK, archive),
        info.compression.clone(),
        tmp.path(),
    )?;
    for (what, expected, actual) in [
        (
            "compressed",
            &info.sha256_compressed,
            &stats.sha256_compressed,
        ),
        (
            "uncompressed",
            &info.sha256_uncompressed,
            &stats.sha256_uncompressed,
        ),
    ] {
        if expected != actual {
            return Err(UnpackError::Digest {
                file,
                what,
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
    }
    // The extractor refused bad entries at those paths already; this checks the result the
    // way the runtime will meet it, before anything vouches for it.
    check_runtime_paths(tmp.path())?;
    stamp::write_stamp(tmp.path(), &stamp_line)?;
    swap::swap_into_place(tmp, root)?;
    Ok(UnpackOutcome::Unpacked {
        files: stats.files + stats.hardlinks,
        bytes: stats.bytes,
    })
}

/// Whether `root` holds the tree `stamp_line` describes, fit for the runtime. A tree whose
/// stamp matches but that fails [`check_runtime_paths`] (unpacked by an earlier prebake that
/// did not check, or changed since) is not trusted: it is unpacked again, which refuses a bad
/// archive by entry name or repairs the tree.
fn present_and_sound(root: &Path, stamp_line: &str) -> bool {
    if stamp::read_stamp(root).as_deref() != Some(stamp_line.as_bytes()) {
        return false;
    }
    match check_runtime_paths(root) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %Chain(&err), "the unpacked rootfs fails the runtime's path checks; unpacking it again");
            false
        }
    }
}
