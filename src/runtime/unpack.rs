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

use crate::contract::{BundleManifest, Compression};
use crate::rootfs::hash::HashReader;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, Mode};
use nix::sys::time::TimeSpec;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the stamp file at the top of an unpacked tree.
pub const STAMP: &str = ".prebake-rootfs";
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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Bytes of regular file data written.
    pub bytes: u64,
    /// Digest and size of the archive as read (compressed stream).
    pub sha256_compressed: String,
    pub size_compressed: u64,
    /// Digest and size of the tar stream after decompression.
    pub sha256_uncompressed: String,
    pub size_uncompressed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rootfs archive entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("rootfs archive entry {entry:?}: {source}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("rootfs archive is corrupt or truncated: {0}")]
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
    #[error("{path}: cannot put the unpacked rootfs in place: {source}")]
    Swap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
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
    let stamp_line = format!("{}\n", info.sha256_compressed);
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
    let _lock = lock_root(parent, name)?;
    // Again under the lock: another unpacker may have finished while we waited for it.
    if present_and_sound(root, &stamp_line) {
        return Ok(UnpackOutcome::AlreadyPresent);
    }
    let prefix = format!(".{}.prebake-", name.to_string_lossy());
    // Under the lock, every temp tree of this root belongs to an unpack that was killed.
    remove_stale_temps(parent, &prefix);

    // TempDir removes itself on every early return below: a failed unpack leaves nothing.
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{prefix}new-"))
        .tempdir_in(parent)
        .map_err(io_at(parent))?;
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
    write_stamp(tmp.path(), &stamp_line)?;
    // mkdtemp made it 0700; the sandbox's unprivileged uids must be able to traverse it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(io_at(tmp.path()))?;
    swap_into_place(tmp, root, parent, &prefix)?;
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
    if read_stamp(root).as_deref() != Some(stamp_line.as_bytes()) {
        return false;
    }
    match check_runtime_paths(root) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "the unpacked rootfs fails the runtime's path checks; unpacking it again");
            false
        }
    }
}

fn read_stamp(root: &Path) -> Option<Vec<u8>> {
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

fn write_stamp(tree: &Path, line: &str) -> Result<(), UnpackError> {
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

/// Take the exclusive lock that serializes unpackers of the root `parent/name`, waiting for
/// it; released when the returned file is closed (also when the process dies).
fn lock_root(parent: &Path, name: &OsStr) -> Result<File, UnpackError> {
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

/// What a path the runtime touches must be, when it exists at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimePathKind {
    Dir,
    File,
}

impl RuntimePathKind {
    fn describe(self) -> &'static str {
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
/// [`super::netfiles`]); `proc`, `var`, `var/tmp`: mount points and temp directories that
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

fn runtime_path_kind(comps: &[Vec<u8>]) -> Option<(&'static str, RuntimePathKind)> {
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
/// The runtime calls it on a tree before working on it; [`unpack_bundle`] already does for
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

/// Temp trees left by an unpack that was killed (no destructor ran): they are ours by name,
/// and the caller holds the root's lock, so no live unpacker is writing them.
fn remove_stale_temps(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            let p = e.path();
            if let Err(err) = super::cleanup::remove_tree(&p) {
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
fn swap_into_place(
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
    if let Err(err) = super::cleanup::remove_tree(&old) {
        // The new tree is in place; a leftover old tree only costs disk and is removed by
        // the next unpack's stale-temp sweep.
        tracing::warn!(path = %old.display(), error = %err, "cannot remove the previous rootfs tree");
    }
    Ok(())
}

/// Safely extract a tar stream (`compression`: a [`Compression`] or its name, "zstd", "gzip"
/// or "none" for plain tar) into `dest`, an existing empty directory. Streams: the archive is
/// never copied or buffered whole. The returned digests cover the whole input, trailing bytes
/// included.
pub fn extract<R: Read>(
    archive: R,
    compression: impl Into<Compression>,
    dest: &Path,
) -> Result<ExtractStats, UnpackError> {
    let mut raw = HashReader::new(archive);
    let mut stats = {
        let decoded: Box<dyn Read + '_> = match compression.into() {
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(&mut raw).map_err(io_at(dest))?)
            }
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut raw)),
            Compression::None => Box::new(&mut raw),
            Compression::Unknown(name) => return Err(UnpackError::Compression(name)),
        };
        let mut tar_stream = HashReader::new(decoded);
        let mut stats = {
            let mut ex = Extractor::new(dest)?;
            let mut ar = tar::Archive::new(&mut tar_stream);
            ex.run(&mut ar)?;
            ex.finish()?
        };
        // Reading to the end also makes the zstd decoder verify its frame checksum.
        let (digest, size) = tar_stream
            .drain_and_finish()
            .map_err(UnpackError::Corrupt)?;
        stats.sha256_uncompressed = digest;
        stats.size_uncompressed = size;
        stats
    };
    let (digest, size) = raw.drain_and_finish().map_err(UnpackError::Corrupt)?;
    stats.sha256_compressed = digest;
    stats.size_compressed = size;
    Ok(stats)
}

type Comps = Vec<Vec<u8>>;

/// Lexically split an archive name into components, refusing anything that could leave the
/// root. `.` and empty components (from `./x` or `a//b`) are dropped; an empty result names
/// the root itself.
fn split_name(raw: &[u8]) -> Result<Comps, String> {
    if raw.is_empty() {
        return Err("empty name".into());
    }
    if raw[0] == b'/' {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("`..` path component".into()),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Whether a relative symlink target, resolved lexically from the directory at `depth`
/// below the root, climbs above the root.
fn escapes_root(target: &[u8], mut depth: usize) -> bool {
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

struct Extractor {
    root: OwnedFd,
    /// Regular files extracted so far: the only valid hardlink targets.
    files: HashSet<Comps>,
    /// Directories with their archive mode and mtime, applied at the end (children first) so
    /// read-only modes do not block extraction and later writes do not bump mtimes.
    dirs: Vec<(Comps, u32, i64)>,
    buf: Vec<u8>,
    stats: ExtractStats,
}

/// Everything the extractor needs from one archive member, read before its data.
/// Whether `comps` and `device` name one of the harmless nodes a rootfs may carry.
fn is_safe_device(comps: &[Vec<u8>], device: (u32, u32)) -> bool {
    let path: Vec<u8> = comps.iter().fold(Vec::new(), |mut acc, c| {
        acc.push(b'/');
        acc.extend_from_slice(c);
        acc
    });
    crate::contract::devices::SAFE_DEVICES
        .iter()
        .any(|(p, major, minor)| p.as_bytes() == path.as_slice() && device == (*major, *minor))
}

struct Member {
    name: String,
    comps: Comps,
    kind: tar::EntryType,
    mode: u32,
    mtime: i64,
    link: Option<Vec<u8>>,
    /// (major, minor) of a character device entry.
    device: (u32, u32),
}

impl Extractor {
    fn new(dest: &Path) -> Result<Self, UnpackError> {
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dest)
            .map(OwnedFd::from)
            .map_err(io_at(dest))?;
        Ok(Self {
            root,
            files: HashSet::new(),
            dirs: Vec::new(),
            buf: vec![0; CHUNK],
            stats: ExtractStats::default(),
        })
    }

    fn run<R: Read>(&mut self, ar: &mut tar::Archive<R>) -> Result<(), UnpackError> {
        let entries = ar.entries().map_err(UnpackError::Corrupt)?;
        for entry in entries {
            let mut entry = entry.map_err(UnpackError::Corrupt)?;
            let member = Self::member(&mut entry)?;
            self.one(&member, &mut entry)?;
        }
        Ok(())
    }

    fn member<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Member, UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason: String| UnpackError::Refused {
            entry: name.clone(),
            reason,
        };
        let comps = split_name(&raw).map_err(refuse)?;
        let h = entry.header();
        let mode = h
            .mode()
            .map_err(|e| refuse(format!("unreadable mode: {e}")))?;
        let mut mtime = h.mtime().unwrap_or(0) as i64;
        let kind = h.entry_type();
        let device = (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        );
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        // A PAX mtime (possibly fractional) overrides the header's.
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if ext.key_bytes() == b"mtime" {
                    let v = String::from_utf8_lossy(ext.value_bytes()).into_owned();
                    if let Ok(secs) = v.split('.').next().unwrap_or("").parse::<i64>() {
                        mtime = secs;
                    }
                }
            }
        }
        if mode & 0o6000 != 0 {
            return Err(refuse(format!(
                "mode {mode:04o} has the setuid or setgid bit"
            )));
        }
        // Neutralized, not refused (module docs): only the top-level tmp may stay sticky and
        // writable by others.
        let mode = if comps == [b"tmp".to_vec()] {
            mode & 0o1777
        } else {
            mode & 0o755
        };
        Ok(Member {
            name,
            comps,
            kind,
            mode,
            mtime,
            link,
            device,
        })
    }

    /// Open the directory `comps` (relative to the root) without following any symlink,
    /// creating missing directories on the way (archives may omit parent entries).
    fn open_dir(&self, comps: &[Vec<u8>], entry: &str) -> Result<OwnedFd, UnpackError> {
        let mut cur = self.root.try_clone().map_err(|source| UnpackError::Entry {
            entry: entry.to_owned(),
            source,
        })?;
        for c in comps {
            let name = OsStr::from_bytes(c);
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let next = match openat(cur.as_fd(), name, flags, Mode::empty()) {
                Err(Errno::ENOENT) => {
                    match mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(entry_err(entry, e)),
                    }
                    openat(cur.as_fd(), name, flags, Mode::empty())
                }
                other => other,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    return Err(UnpackError::Refused {
                        entry: entry.to_owned(),
                        reason: format!(
                            "its path goes through {:?}, which is a symlink or not a directory",
                            String::from_utf8_lossy(c)
                        ),
                    })
                }
                Err(e) => return Err(entry_err(entry, e)),
            };
        }
        Ok(cur)
    }

    fn one<R: Read>(&mut self, m: &Member, data: &mut R) -> Result<(), UnpackError> {
        use tar::EntryType as T;
        let refuse = |reason: &str| UnpackError::Refused {
            entry: m.name.clone(),
            reason: reason.to_owned(),
        };
        let Some((last, parent_comps)) = m.comps.split_last() else {
            // "./": the root itself, whose mode and time the caller owns.
            return match m.kind {
                T::Directory => Ok(()),
                _ => Err(refuse("names the archive root but is not a directory")),
            };
        };
        let name = OsStr::from_bytes(last);
        match m.kind {
            T::XGlobalHeader => return Ok(()),
            T::Char if is_safe_device(&m.comps, m.device) => {
                // Best effort: without CAP_MKNOD (rootless, some platforms) the node is
                // skipped and the sandbox binds the host's /dev/null etc. instead.
                let parent = self.open_dir(parent_comps, &m.name)?;
                match nix::sys::stat::mknodat(
                    parent.as_fd(),
                    name,
                    nix::sys::stat::SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o666),
                    nix::sys::stat::makedev(u64::from(m.device.0), u64::from(m.device.1)),
                ) {
                    Ok(()) => {
                        // mknod applies the umask; the node must be 0666 like on any host.
                        nix::sys::stat::fchmodat(
                            parent.as_fd(),
                            name,
                            Mode::from_bits_truncate(0o666),
                            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                        )
                        .map_err(|e| entry_err(&m.name, e))?;
                    }
                    Err(Errno::EPERM) | Err(Errno::EACCES) => {}
                    Err(Errno::EEXIST) => {
                        return Err(refuse("duplicate entry: the path already exists"))
                    }
                    Err(e) => return Err(entry_err(&m.name, e)),
                }
                return Ok(());
            }
            T::Char | T::Block => {
                return Err(refuse(
                    "device nodes are not allowed in a rootfs (only /dev/null, zero, full, random, urandom)",
                ))
            }
            T::Fifo => return Err(refuse("fifos are not allowed in a rootfs")),
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link => {}
            other => {
                return Err(refuse(&format!(
                    "unsupported entry type {:?}",
                    other.as_byte() as char
                )))
            }
        }
        if let Some((path, want)) = runtime_path_kind(&m.comps) {
            let (found, ok) = match m.kind {
                T::Directory => ("a directory", want == RuntimePathKind::Dir),
                T::Regular | T::Continuous | T::Link => {
                    ("a regular file", want == RuntimePathKind::File)
                }
                _ => ("a symlink", false),
            };
            if !ok {
                return Err(refuse(&format!(
                    "{found} at /{path}, where the runtime expects {want}: the runtime works on /{path} from outside the sandbox, and a symlink or another type there would redirect it to the host; rebuild the bundle so that /{path} is {want} (or absent)",
                    want = want.describe()
                )));
            }
        }
        let parent = self.open_dir(parent_comps, &m.name)?;
        let exists = |e: Errno| match e {
            Errno::EEXIST => refuse("duplicate entry: the path already exists"),
            e => entry_err(&m.name, e),
        };
        match m.kind {
            T::Regular | T::Continuous => {
                let fd = openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(exists)?;
                let mut file = File::from(fd);
                let written = copy_data(data, &mut file, &mut self.buf).map_err(|source| {
                    UnpackError::Entry {
                        entry: m.name.clone(),
                        source,
                    }
                })?;
                fchmod(file.as_fd(), Mode::from_bits_truncate(m.mode))
                    .and_then(|()| futimens(file.as_fd(), &ts(m.mtime), &ts(m.mtime)))
                    .map_err(|e| entry_err(&m.name, e))?;
                self.files.insert(m.comps.clone());
                self.stats.files += 1;
                self.stats.bytes += written;
            }
            T::Directory => {
                match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        // Fine only if it is a real directory (made implicitly earlier).
                        let st = nix::sys::stat::fstatat(
                            parent.as_fd(),
                            name,
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| entry_err(&m.name, e))?;
                        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                            return Err(refuse("duplicate entry: the path already exists"));
                        }
                    }
                    Err(e) => return Err(entry_err(&m.name, e)),
                }
                self.dirs.push((m.comps.clone(), m.mode, m.mtime));
                self.stats.dirs += 1;
            }
            T::Symlink => {
                let target = m
                    .link
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| refuse("symlink without a target"))?;
                if target.contains(&0) {
                    return Err(refuse("symlink target contains a NUL byte"));
                }
                if target[0] != b'/' && escapes_root(target, parent_comps.len()) {
                    return Err(refuse(&format!(
                        "symlink target {:?} climbs above the root",
                        String::from_utf8_lossy(target)
                    )));
                }
                nix::unistd::symlinkat(OsStr::from_bytes(target), parent.as_fd(), name)
                    .map_err(exists)?;
                nix::sys::stat::utimensat(
                    parent.as_fd(),
                    name,
                    &ts(m.mtime),
                    &ts(m.mtime),
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| entry_err(&m.name, e))?;
                self.stats.symlinks += 1;
            }
            T::Link => {
                let target = m.link.as_deref().unwrap_or_default();
                let tcomps = split_name(target).map_err(|r| {
                    refuse(&format!(
                        "hardlink target {:?}: {r}",
                        String::from_utf8_lossy(target)
                    ))
                })?;
                if !self.files.contains(&tcomps) {
                    return Err(refuse(&format!(
                        "hardlink target {:?} is not an earlier regular file of this archive",
                        String::from_utf8_lossy(target)
                    )));
                }
                let (tlast, tparent) = tcomps.split_last().expect("a file path is never empty");
                let tdir = self.open_dir(tparent, &m.name)?;
                // No AT_SYMLINK_FOLLOW: link the file itself (it is a regular file we made).
                nix::unistd::linkat(
                    tdir.as_fd(),
                    OsStr::from_bytes(tlast),
                    parent.as_fd(),
                    name,
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(exists)?;
                self.stats.hardlinks += 1;
            }
            _ => unreachable!("filtered above"),
        }
        Ok(())
    }

    /// Apply directory modes and mtimes, deepest first.
    fn finish(mut self) -> Result<ExtractStats, UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mode, mtime) in dirs.iter().rev() {
            let name = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
            let fd = self.open_dir(comps, &name)?;
            fchmod(fd.as_fd(), Mode::from_bits_truncate(*mode))
                .and_then(|()| futimens(fd.as_fd(), &ts(*mtime), &ts(*mtime)))
                .map_err(|e| entry_err(&name, e))?;
        }
        Ok(self.stats)
    }
}

fn ts(secs: i64) -> TimeSpec {
    TimeSpec::new(secs, 0)
}

fn entry_err(entry: &str, e: Errno) -> UnpackError {
    UnpackError::Entry {
        entry: entry.to_owned(),
        source: errno_io(e),
    }
}

fn copy_data<R: Read>(from: &mut R, to: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_checked() {
        assert_eq!(
            split_name(b"./usr//lib/").unwrap(),
            vec![b"usr".to_vec(), b"lib".to_vec()]
        );
        assert!(split_name(b"./").unwrap().is_empty());
        assert!(split_name(b"/etc/passwd").is_err());
        assert!(split_name(b"a/../../x").is_err());
        assert!(split_name(b"..").is_err());
        assert!(split_name(b"").is_err());
    }

    #[test]
    fn relative_symlink_escape_is_lexical() {
        assert!(!escapes_root(b"libfoo.so.1", 0));
        assert!(escapes_root(b"..", 0));
        assert!(!escapes_root(b"../lib", 1));
        assert!(escapes_root(b"../../..", 2));
        assert!(!escapes_root(b"a/../../x", 1));
        assert!(escapes_root(b"a/../../x", 0));
    }
}
