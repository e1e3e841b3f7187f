//! The rootfs tarball: a [`Plan`] written as a byte-for-byte reproducible tar, optionally
//! compressed, with the digests and sizes of both streams computed in the same pass.
//!
//! Reproducibility rests on three things: entries come in the plan's order (bytewise path
//! order, parents first); every header field is decided here from the plan and the options
//! alone (mtime = SOURCE_DATE_EPOCH, owner 0:0 without names, normalized modes, no
//! atime/ctime/xattrs); and compressor settings are fixed (see [`TarOptions`]).

use crate::contract::RootfsInfo;
use crate::fsutil::stage::StagedFile;
use crate::hashio::HashWriter;
use crate::plan::{EntryKind, Plan, Source};
use crate::spec::Compression;
use crate::ustar::{self as header, Member, TypeFlag, BLOCK};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Reading and writing happen in chunks of this size: big enough that syscalls and
/// compressor calls are amortized, allocated once per archive.
const CHUNK: usize = 1 << 20;
/// zstd level: 3 is zstd's default and a good speed/ratio balance for a rootfs.
const ZSTD_LEVEL: i32 = 3;
/// gzip level 6 is gzip(1)'s default.
const GZIP_LEVEL: u32 = 6;
/// gzip header OS byte: 255 ("unknown"), so the output does not depend on the build host.
const GZIP_OS_UNKNOWN: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TarOptions {
    /// `None` writes a plain tar (for tests and for callers that compress elsewhere).
    ///
    /// zstd: level 3, single-threaded, frame checksum on, no content size in the frame header
    /// (it is streamed), no dictionary id, no long-distance matching. gzip: flate2's Rust
    /// backend at level 6, header mtime 0, no file name, OS byte 255. The exact compressed
    /// bytes are pinned by the compressor library versions in Cargo.lock.
    pub compression: Option<Compression>,
    /// Modification time of every entry, in seconds since the epoch (SOURCE_DATE_EPOCH).
    pub mtime: u64,
    /// The files are already compressed (an image layer holding rootfs.tar.zst): gzip then
    /// writes stored deflate blocks (level 0) instead of searching for matches that are not
    /// there: about the same size in a fraction of the time. zstd is unaffected (it stores
    /// incompressible blocks raw by itself).
    pub precompressed: bool,
    /// Where the rootfs's `/` lies in the archive, as a tar path without leading or trailing
    /// slash: "" for the rootfs tarball, `opt/prebake/bundle/rootfs` for an image layer that
    /// carries the rootfs as a tree among other files (the plan's paths are then already
    /// under it). Only the rootfs's own top-level `tmp` keeps its sticky bit, wherever that
    /// lies; every other header field is the same as in the tarball.
    pub rootfs_at: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TarStats {
    pub sha256_uncompressed: String,
    pub sha256_compressed: String,
    pub size_uncompressed: u64,
    pub size_compressed: u64,
    /// Regular file entries with content (hardlinks not included).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path}: cannot read the source of rootfs entry {entry}")]
    Read {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the source of rootfs entry {entry} changed while it was archived ({what}); build again when nothing writes to it")]
    Changed {
        entry: String,
        path: PathBuf,
        what: String,
    },
    #[error(
        "{path}: the source of rootfs entry {entry} is not a regular file any more; build again"
    )]
    NotRegular { entry: String, path: PathBuf },
    #[error("rootfs entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    #[error("writing the rootfs tarball")]
    Write(#[source] io::Error),
    #[error("{path}: cannot write the rootfs tarball")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds since 1970; unset it or set it to e.g. the last commit's time (git log -1 --format=%ct)")]
    SourceDateEpoch { value: String },
}

/// The value of SOURCE_DATE_EPOCH (<https://reproducible-builds.org/specs/source-date-epoch/>):
/// unset or empty means 0.
pub fn source_date_epoch() -> Result<u64, RootfsError> {
    parse_source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH").as_deref())
}

/// [`source_date_epoch`] for a given value (separate so it can be tested without touching
/// the process environment).
pub fn parse_source_date_epoch(value: Option<&std::ffi::OsStr>) -> Result<u64, RootfsError> {
    match value {
        None => Ok(0),
        Some(v) if v.is_empty() => Ok(0),
        Some(v) => {
            let s = v.to_string_lossy();
            s.trim()
                .parse::<u64>()
                .map_err(|_| RootfsError::SourceDateEpoch {
                    value: s.into_owned(),
                })
        }
    }
}

/// The conventional file name of the rootfs tarball for a compression.
pub fn file_name(compression: Option<Compression>) -> &'static str {
    match compression {
        Some(Compression::Zstd) => "rootfs.tar.zst",
        Some(Compression::Gzip) => "rootfs.tar.gz",
        None => "rootfs.tar",
    }
}

/// The manifest's name for a compression ("zstd", "gzip", "none" for a plain tar).
pub fn compression_name(compression: Option<Compression>) -> &'static str {
    match compression {
        Some(Compression::Zstd) => "zstd",
        Some(Compression::Gzip) => "gzip",
        None => "none",
    }
}

/// The bundle manifest's description of a tarball written by [`write_tar`].
pub fn rootfs_info(stats: &TarStats, file: &str, compression: Option<Compression>) -> RootfsInfo {
    RootfsInfo {
        file: file.to_owned(),
        compression: compression_name(compression).into(),
        sha256_uncompressed: stats.sha256_uncompressed.clone(),
        sha256_compressed: stats.sha256_compressed.clone(),
        size_uncompressed: stats.size_uncompressed,
        size_compressed: stats.size_compressed,
        files: stats.files,
        dirs: stats.dirs,
        symlinks: stats.symlinks,
        hardlinks: stats.hardlinks,
    }
}

/// Normalized modes: what a reader of the rootfs needs, nothing the build host happened to
/// have. setuid/setgid never survive (a sandbox root must not contain privilege escalators).
fn file_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// The one directory of a rootfs that may be world-writable: the top-level `tmp`, and only
/// when the plan made it sticky (extras.tmp plans it 1777).
const SHARED_TMP: &str = "tmp";

/// Every directory is 0755 except a sticky top-level `tmp` (1777). A sticky or world-writable
/// directory anywhere else is a leftover of the build host (a venv built under /var/tmp made
/// `var/tmp` 1777), and in chroot-only mode it would be writable by every run and shared
/// across runs: it loses those bits here. Decided by the tar name alone, so it stays
/// deterministic.
fn dir_mode(name: &str, mode: u32, rootfs_at: &str) -> u32 {
    let in_rootfs = if rootfs_at.is_empty() {
        Some(name)
    } else {
        name.strip_prefix(rootfs_at)
            .and_then(|rest| rest.strip_prefix('/'))
    };
    if in_rootfs == Some(SHARED_TMP) && mode & 0o1000 != 0 {
        0o1777
    } else {
        0o755
    }
}

/// "/usr/lib/x" -> "usr/lib/x", refusing anything that is not an absolute, normalized path.
fn tar_name(path: &str) -> Result<&str, RootfsError> {
    let bad = |reason: &str| RootfsError::BadEntry {
        entry: path.to_owned(),
        reason: reason.to_owned(),
    };
    let rel = path
        .strip_prefix('/')
        .ok_or_else(|| bad("path is not absolute"))?;
    if rel.contains('\0') {
        return Err(bad("path contains a NUL byte"));
    }
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("path is not normalized (empty, `.` or `..` component)"));
    }
    Ok(rel)
}

/// Write `plan` as a tar to `out`, compressed per `opts`. `progress` is called with the
/// number of bytes of file data written so far.
pub fn write_tar<W: Write + Send>(
    plan: &Plan,
    out: W,
    opts: &TarOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TarStats, RootfsError> {
    let compressed = HashWriter::new(BufWriter::with_capacity(CHUNK, out));
    match opts.compression {
        None => {
            let mut tar = compressed;
            let mut stats = write_entries(plan, &mut tar, opts, progress)?;
            let (mut buf, digest, size) = tar.finish();
            buf.flush().map_err(RootfsError::Write)?;
            stats.sha256_uncompressed = digest.clone();
            stats.sha256_compressed = digest;
            stats.size_uncompressed = size;
            stats.size_compressed = size;
            Ok(stats)
        }
        Some(Compression::Zstd) => {
            let enc = zstd_encoder(compressed).map_err(RootfsError::Write)?;
            let ((stats, digest, size), enc) =
                pipelined(enc, |tx| tar_into(plan, tx, opts, progress))?;
            let compressed = enc.finish().map_err(RootfsError::Write)?;
            finish(stats, digest, size, compressed)
        }
        Some(Compression::Gzip) => {
            let enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(GZIP_OS_UNKNOWN)
                .write(
                    compressed,
                    flate2::Compression::new(if opts.precompressed { 0 } else { GZIP_LEVEL }),
                );
            let ((stats, digest, size), enc) =
                pipelined(enc, |tx| tar_into(plan, tx, opts, progress))?;
            let compressed = enc.finish().map_err(RootfsError::Write)?;
            finish(stats, digest, size, compressed)
        }
    }
}

/// The uncompressed tar stream of `plan` into `out`, with its sha256 and size.
fn tar_into(
    plan: &Plan,
    out: &mut ChunkSender,
    opts: &TarOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(TarStats, String, u64), RootfsError> {
    let mut tar = HashWriter::new(out);
    let stats = write_entries(plan, &mut tar, opts, progress)?;
    let (_, digest, size) = tar.finish();
    Ok((stats, digest, size))
}

/// Feeds a compressor on a second thread through a bounded channel of chunks, so reading and
/// hashing files overlaps with compression (the two dominate a build). The compressed bytes
/// are the same as with one thread: the compressor sees the same stream in the same order.
struct ChunkSender {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            // The receiver only goes away when the compressor failed; its error is reported.
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "compressor stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run `produce` with a writer whose bytes reach `sink` on another thread; return what
/// `produce` returned and the sink, once every byte has been written to it.
fn pipelined<E: Write + Send, T>(
    sink: E,
    produce: impl FnOnce(&mut ChunkSender) -> Result<T, RootfsError>,
) -> Result<(T, E), RootfsError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let worker = scope.spawn(move || -> io::Result<E> {
            let mut sink = sink;
            for chunk in rx {
                sink.write_all(&chunk)?;
            }
            Ok(sink)
        });
        let mut sender = ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let produced = produce(&mut sender).and_then(|t| {
            sender.send().map_err(RootfsError::Write)?;
            Ok(t)
        });
        drop(sender); // closes the channel: the worker drains it and returns the sink
        let sink = worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (produced, sink) {
            (Ok(t), Ok(sink)) => Ok((t, sink)),
            // A compressor error explains a BrokenPipe on our side: report it first.
            (_, Err(e)) => Err(RootfsError::Write(e)),
            (Err(e), Ok(_)) => Err(e),
        }
    })
}

fn zstd_encoder<W: Write>(w: W) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
    // Every parameter that changes the output bytes is set explicitly rather than left to
    // library defaults that could move.
    enc.include_checksum(true)?;
    enc.include_contentsize(false)?;
    enc.include_dictid(false)?;
    enc.long_distance_matching(false)?;
    Ok(enc)
}

fn finish<W: Write>(
    mut stats: TarStats,
    digest: String,
    size: u64,
    compressed: HashWriter<BufWriter<W>>,
) -> Result<TarStats, RootfsError> {
    let (mut buf, cdigest, csize) = compressed.finish();
    buf.flush().map_err(RootfsError::Write)?;
    stats.sha256_uncompressed = digest;
    stats.size_uncompressed = size;
    stats.sha256_compressed = cdigest;
    stats.size_compressed = csize;
    Ok(stats)
}

/// One member's header fields; every member of the archive has the one `mtime`.
fn member<'a>(
    name: &'a [u8],
    link: &'a [u8],
    flag: TypeFlag,
    mode: u32,
    size: u64,
    mtime: u64,
) -> Member<'a> {
    Member {
        name,
        link,
        flag,
        mode,
        size,
        mtime,
    }
}

fn write_entries<W: Write>(
    plan: &Plan,
    tar: &mut W,
    opts: &TarOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TarStats, RootfsError> {
    let (mtime, rootfs_at) = (opts.mtime, opts.rootfs_at);
    let mut stats = TarStats::default();
    let mut buf = vec![0u8; CHUNK];
    let mut data_written = 0u64;
    // (dev, inode) of host files already archived -> tar name of the first path, so later
    // paths of the same inode become hardlinks to it (plan order makes "first" deterministic).
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let w = |tar: &mut W, bytes: &[u8]| tar.write_all(bytes).map_err(RootfsError::Write);

    for (path, entry) in &plan.entries {
        if path == "/" {
            continue;
        }
        let name = tar_name(path)?;
        match &entry.kind {
            EntryKind::Dir => {
                let dname = format!("{name}/");
                w(
                    tar,
                    &header::encode(&member(
                        dname.as_bytes(),
                        b"",
                        TypeFlag::Dir,
                        dir_mode(name, entry.mode, rootfs_at),
                        0,
                        mtime,
                    )),
                )?;
                stats.dirs += 1;
            }
            EntryKind::CharDevice { major, minor } => {
                w(
                    tar,
                    &header::encode(&member(
                        name.as_bytes(),
                        b"",
                        TypeFlag::Char {
                            major: *major,
                            minor: *minor,
                        },
                        0o666,
                        0,
                        mtime,
                    )),
                )?;
            }
            EntryKind::Symlink { target } => {
                let link = target.as_os_str().as_bytes();
                if link.is_empty() || link.contains(&0) {
                    return Err(RootfsError::BadEntry {
                        entry: path.clone(),
                        reason: "symlink target is empty or contains a NUL byte".into(),
                    });
                }
                w(
                    tar,
                    &header::encode(&member(
                        name.as_bytes(),
                        link,
                        TypeFlag::Symlink,
                        0o777,
                        0,
                        mtime,
                    )),
                )?;
                stats.symlinks += 1;
            }
            EntryKind::File {
                source: Source::Inline(bytes),
            } => {
                w(
                    tar,
                    &header::encode(&member(
                        name.as_bytes(),
                        b"",
                        TypeFlag::Regular,
                        file_mode(entry.mode),
                        bytes.len() as u64,
                        mtime,
                    )),
                )?;
                w(tar, bytes)?;
                w(tar, &[0u8; BLOCK][..header::padding(bytes.len() as u64)])?;
                data_written += bytes.len() as u64;
                progress(data_written);
                stats.files += 1;
            }
            EntryKind::File {
                source: Source::Host(host),
            } => {
                let read_err = |source| RootfsError::Read {
                    entry: path.clone(),
                    path: host.clone(),
                    source,
                };
                // O_NOFOLLOW: the plan resolved symlinks already; a symlink here now means
                // the host changed under us, and following it could archive anything.
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(host)
                    .map_err(read_err)?;
                let before = file.metadata().map_err(read_err)?;
                if !before.is_file() {
                    return Err(RootfsError::NotRegular {
                        entry: path.clone(),
                        path: host.clone(),
                    });
                }
                let key = (before.dev(), before.ino());
                if let Some(first) = inodes.get(&key) {
                    w(
                        tar,
                        &header::encode(&member(
                            name.as_bytes(),
                            first.as_bytes(),
                            TypeFlag::HardLink,
                            file_mode(entry.mode),
                            0,
                            mtime,
                        )),
                    )?;
                    stats.hardlinks += 1;
                    continue;
                }
                inodes.insert(key, name.to_owned());
                let size = before.len();
                w(
                    tar,
                    &header::encode(&member(
                        name.as_bytes(),
                        b"",
                        TypeFlag::Regular,
                        file_mode(entry.mode),
                        size,
                        mtime,
                    )),
                )?;
                copy_exact(
                    &mut file,
                    tar,
                    size,
                    &mut buf,
                    &mut data_written,
                    progress,
                    path,
                    host,
                )?;
                // mtime, not ctime: ctime also moves for harmless metadata changes (another
                // process hardlinking or chmod'ing a system library while we read it), and
                // the size is checked as the data is copied.
                let after = file.metadata().map_err(read_err)?;
                if (after.mtime(), after.mtime_nsec(), after.len())
                    != (before.mtime(), before.mtime_nsec(), before.len())
                {
                    return Err(RootfsError::Changed {
                        entry: path.clone(),
                        path: host.clone(),
                        what: "modified".into(),
                    });
                }
                w(tar, &[0u8; BLOCK][..header::padding(size)])?;
                stats.files += 1;
            }
        }
    }
    // End of archive: two zero blocks.
    w(tar, &header::END)?;
    Ok(stats)
}

/// Copy exactly `size` bytes of `file` into `tar`, failing (rather than writing a corrupt
/// archive whose header promised another size) if the file is shorter or longer now.
#[allow(clippy::too_many_arguments)]
fn copy_exact<W: Write>(
    file: &mut File,
    tar: &mut W,
    size: u64,
    buf: &mut [u8],
    data_written: &mut u64,
    progress: &mut dyn FnMut(u64),
    entry: &str,
    host: &Path,
) -> Result<(), RootfsError> {
    let read_err = |source| RootfsError::Read {
        entry: entry.to_owned(),
        path: host.to_path_buf(),
        source,
    };
    let changed = |what: String| RootfsError::Changed {
        entry: entry.to_owned(),
        path: host.to_path_buf(),
        what,
    };
    let mut remaining = size;
    while remaining > 0 {
        // More than fits in a usize is more than the buffer.
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = match file.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        if n == 0 {
            return Err(changed(format!(
                "shrank from {size} bytes to {} while being read",
                size - remaining
            )));
        }
        tar.write_all(&buf[..n]).map_err(RootfsError::Write)?;
        remaining -= n as u64;
        *data_written += n as u64;
        progress(*data_written);
    }
    let mut probe = [0u8; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(changed(format!(
                    "grew beyond {size} bytes while being read"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        }
    }
}

/// [`write_tar`] into `path`, through a temporary file in the same directory that is renamed
/// over `path` only on success: a failed or interrupted build never leaves a truncated
/// tarball under the final name.
pub fn write_tar_file(
    plan: &Plan,
    path: &Path,
    opts: &TarOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TarStats, RootfsError> {
    let werr = |source| RootfsError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let mut staged = StagedFile::new(path, ".rootfs-").map_err(werr)?;
    let stats = write_tar(plan, staged.file(), opts, progress).map_err(|e| match e {
        RootfsError::Write(source) => werr(source),
        other => other,
    })?;
    staged.commit(path, 0o644, true).map_err(werr)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_normalized() {
        assert_eq!(file_mode(0o4755), 0o755);
        assert_eq!(file_mode(0o2700), 0o755);
        assert_eq!(file_mode(0o600), 0o644);
        assert_eq!(file_mode(0o4600), 0o644);
        assert_eq!(dir_mode("usr", 0o700, ""), 0o755);
        assert_eq!(dir_mode("tmp", 0o1777, ""), 0o1777);
        assert_eq!(dir_mode("tmp", 0o3775, ""), 0o1777);
        // A rootfs carried as a tree inside an image layer: its own tmp, and nothing else.
        assert_eq!(dir_mode("opt/r/tmp", 0o1777, "opt/r"), 0o1777);
        assert_eq!(dir_mode("tmp", 0o1777, "opt/r"), 0o755);
        assert_eq!(dir_mode("opt/rx/tmp", 0o1777, "opt/r"), 0o755);
        // Only the top-level tmp keeps its sticky, world-writable mode.
        assert_eq!(dir_mode("var/tmp", 0o1777, ""), 0o755);
        assert_eq!(dir_mode("usr/tmp", 0o1777, ""), 0o755);
        assert_eq!(dir_mode("srv", 0o777, ""), 0o755);
        assert_eq!(dir_mode("tmp", 0o777, ""), 0o755);
    }

    #[test]
    fn source_date_epoch_parses_or_names_the_variable() {
        use std::ffi::OsStr;
        assert_eq!(parse_source_date_epoch(None).unwrap(), 0);
        assert_eq!(parse_source_date_epoch(Some(OsStr::new(""))).unwrap(), 0);
        assert_eq!(
            parse_source_date_epoch(Some(OsStr::new("1700000000"))).unwrap(),
            1_700_000_000
        );
        for bad in ["-1", "yesterday", "1.5"] {
            let e = parse_source_date_epoch(Some(OsStr::new(bad))).unwrap_err();
            assert!(e.to_string().contains("SOURCE_DATE_EPOCH"), "{e}");
        }
    }

    #[test]
    fn tar_names_must_be_normalized_absolute_paths() {
        assert_eq!(tar_name("/usr/lib").unwrap(), "usr/lib");
        for bad in ["usr", "/a//b", "/a/./b", "/a/../b", "/a/"] {
            assert!(tar_name(bad).is_err(), "{bad}");
        }
    }
}
