//! Safe extraction of a (compressed) tar stream into an empty directory, with the digests of
//! what was read. Every rule of the module docs of [`super`] is enforced here, entry by entry.

use super::entry::{is_safe_device, ArchiveEntry};
use super::error::{entry_err, io_at, UnpackError};
use super::names::{escapes_root, split_name, Comps};
use super::paths::{runtime_path_kind, RuntimePathKind};
use super::CHUNK;
use crate::contract::Compression;
use crate::hashio::HashReader;
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
use std::path::Path;

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
            let member = ArchiveEntry::read(&mut entry)?;
            self.one(&member, &mut entry)?;
        }
        Ok(())
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

    fn one<R: Read>(&mut self, m: &ArchiveEntry, data: &mut R) -> Result<(), UnpackError> {
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
