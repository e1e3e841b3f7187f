//! Nothing half-written: every output (a build directory, a layout, an archive, a rootfs
//! tarball, an unpacked root) is written under a hidden name in its destination's directory,
//! then put in place with one rename, so a reader sees the old thing or the whole new one.
//! On any early return the staged copy removes itself.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directory `dest` will live in (`.` for a bare name).
pub fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The hidden name prefix of `dest`'s staged copies: `.<name>.<tag>-`, so a leftover of a
/// killed writer says what it was for and can be swept by prefix.
pub fn staging_prefix(dest: &Path, tag: &str) -> String {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.{tag}-")
}

/// A directory being written, next to its destination (same filesystem, so the final rename
/// is atomic).
pub struct StagedDir {
    tmp: tempfile::TempDir,
    /// The name prefix: a replaced tree is moved aside under `<prefix>old-`, so a sweep of
    /// the prefix finds it too.
    prefix: String,
}

impl StagedDir {
    /// Create `<parent of dest>/<prefix><random>`; `prefix` usually comes from
    /// [`staging_prefix`].
    pub fn new(dest: &Path, prefix: &str) -> io::Result<StagedDir> {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent_dir(dest))?;
        Ok(StagedDir {
            tmp,
            prefix: prefix.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Move the tree to `dest`, which must not exist: an entry that appeared meanwhile is
    /// never replaced (`AlreadyExists`). `mode` replaces the temp dir's 0700.
    pub fn commit_new(self, dest: &Path, mode: u32) -> io::Result<()> {
        fs::set_permissions(self.path(), fs::Permissions::from_mode(mode))?;
        rename_noreplace(self.path(), dest)?;
        let _ = self.tmp.keep();
        Ok(())
    }

    /// Put the tree at `dest`, replacing what is there. Returns the previous tree, now under
    /// a hidden name beside `dest` (this staging prefix), for the caller to remove in its own
    /// way (it may be large or hostile); `None` when there was none. `dest` is never missing
    /// or half-written: the two trees are exchanged atomically, or, where the filesystem
    /// cannot exchange, the old one is moved aside and put back if the new one cannot be
    /// moved in.
    pub fn commit_replace(self, dest: &Path, mode: u32) -> io::Result<Option<PathBuf>> {
        fs::set_permissions(self.path(), fs::Permissions::from_mode(mode))?;
        if dest.symlink_metadata().is_err() {
            rename_noreplace(self.path(), dest)?;
            let _ = self.tmp.keep();
            return Ok(None);
        }
        match rename_exchange(self.path(), dest) {
            Ok(()) => Ok(Some(self.tmp.keep())),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                let aside = tempfile::Builder::new()
                    .prefix(&format!("{}old-", self.prefix))
                    .tempdir_in(parent_dir(dest))?
                    .keep();
                fs::rename(dest, &aside)?;
                if let Err(e) = fs::rename(self.path(), dest) {
                    // Put the old tree back so `dest` is never left missing.
                    let _ = fs::rename(&aside, dest);
                    return Err(e);
                }
                let _ = self.tmp.keep();
                Ok(Some(aside))
            }
            Err(e) => Err(e),
        }
    }
}

/// A file being written, next to its destination.
pub struct StagedFile {
    tmp: tempfile::NamedTempFile,
}

impl StagedFile {
    pub fn new(dest: &Path, prefix: &str) -> io::Result<StagedFile> {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(parent_dir(dest))?;
        Ok(StagedFile { tmp })
    }

    pub fn file(&mut self) -> &mut fs::File {
        self.tmp.as_file_mut()
    }

    /// Flush to disk, set `mode` (the temp file's is 0600) and rename to `dest`, replacing a
    /// file there unless `replace` is false (then an existing `dest` is `AlreadyExists`).
    pub fn commit(self, dest: &Path, mode: u32, replace: bool) -> io::Result<()> {
        let file = self.tmp.as_file();
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        if replace {
            self.tmp.persist(dest).map_err(|e| e.error)?;
        } else {
            self.tmp.persist_noclobber(dest).map_err(|e| e.error)?;
        }
        Ok(())
    }
}

/// rename(2) that never replaces: rename(2) alone would silently replace an empty directory
/// (or any file) that appeared meanwhile; `RENAME_NOREPLACE` makes "must not exist" atomic.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        // Filesystems without RENAME_NOREPLACE (some network and overlay setups): check, then
        // rename; the window is tiny.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            if to.symlink_metadata().is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            Err(io::Error::from(io::ErrorKind::AlreadyExists))
        }
        other => other,
    }
}

/// Atomically swap two entries (`RENAME_EXCHANGE`); `EINVAL`/`ENOSYS` where the filesystem
/// cannot.
fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // The raw syscall rather than glibc's wrapper, which musl builds may lack.
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let staged = StagedDir::new(&dest, &staging_prefix(&dest, "partial")).unwrap();
        fs::write(staged.path().join("a"), b"new").unwrap();
        fs::create_dir(&dest).unwrap();
        let err = staged.commit_new(&dest, 0o755).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // The staged copy removed itself; the empty directory that was there stays.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
    }

    #[test]
    fn commit_replace_hands_back_the_old_tree() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("root");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("f"), b"old").unwrap();
        let staged = StagedDir::new(&dest, &staging_prefix(&dest, "new")).unwrap();
        fs::write(staged.path().join("f"), b"new").unwrap();
        let old = staged.commit_replace(&dest, 0o755).unwrap().unwrap();
        assert_eq!(fs::read(dest.join("f")).unwrap(), b"new");
        assert_eq!(fs::read(old.join("f")).unwrap(), b"old");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn staged_file_lands_whole_with_its_mode() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.tar");
        let mut staged = StagedFile::new(&dest, &staging_prefix(&dest, "partial")).unwrap();
        staged.file().write_all(b"bytes").unwrap();
        assert!(!dest.exists());
        staged.commit(&dest, 0o644, false).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"bytes");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        let again = StagedFile::new(&dest, "x").unwrap();
        let err = again.commit(&dest, 0o644, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
