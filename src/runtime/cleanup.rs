//! Removing a directory tree that a sandboxed run controlled (chroot mode's `/tmp/run-<uid>`).
//!
//! `std::fs::remove_dir_all` recurses once per directory level: a script that nests 20,000
//! directories overflows the stack of the thread that cleans up (and aborts the server), and
//! at a few thousand levels it runs out of descriptors and leaves the tree behind. Here the
//! walk is a loop over at most three descriptors (the tree's top, the current directory, and
//! a transient one), with a small stack of `(st_dev, st_ino)` of the ancestors:
//!
//! * every name is resolved relative to a directory descriptor, one component at a time
//!   (`openat` with `O_NOFOLLOW | O_DIRECTORY`, `fstatat` with `AT_SYMLINK_NOFOLLOW`,
//!   `unlinkat`), so a symlink is removed as a link and never followed;
//! * a directory is entered only if it is on the tree's filesystem (`st_dev`) and the opened
//!   descriptor is the inode `fstatat` saw; going back up through `..` must land on the
//!   recorded parent, else the walk stops. A mount point inside the tree is never entered
//!   (and `rmdir` refuses it with `EBUSY`), so nothing outside the tree is touched;
//! * depth is bounded: a subtree deeper than [`MAX_DEPTH`] is renamed to the tree's top
//!   level and removed from there, so the ancestor stack stays small however deep the tree;
//! * work is bounded by a budget of operations; past it the removal gives up with an error.
//!
//! Nothing here panics. When a removal fails, [`set_aside`] renames the tree out of the way
//! (root-owned, mode 0700) so the next run of the same uid can still create its directory,
//! and [`empty_trash`] retries the removal later.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Deepest level entered below the tree's top before a subtree is moved up to the top.
pub const MAX_DEPTH: usize = 64;

/// Operations (directory listings and entries handled) one removal may spend.
pub const DEFAULT_BUDGET: u64 = 2_000_000;

/// Names read per listing of a directory.
const BATCH: usize = 1024;

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn cvt(rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(last_err())
    } else {
        Ok(rc)
    }
}

fn is_errno(e: &io::Error, errno: c_int) -> bool {
    e.raw_os_error() == Some(errno)
}

/// Open the directory `name` in `dir` without following a symlink.
fn open_dir_at(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: openat on a live descriptor and a NUL-terminated name; we own the result.
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY
                | libc::O_DIRECTORY
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC
                | libc::O_NONBLOCK
                | libc::O_NOCTTY,
        )
    })?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a live descriptor into a live struct.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat on a live descriptor, a NUL-terminated name, a live struct.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn unlink_at(dir: RawFd, name: &CStr, flags: c_int) -> io::Result<()> {
    // SAFETY: unlinkat on a live descriptor and a NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(|_| ())
}

/// `renameat2(.., RENAME_NOREPLACE)`: never replaces an existing entry.
fn rename_noreplace(from_dir: RawFd, from: &CStr, to_dir: RawFd, to: &CStr) -> io::Result<()> {
    // SAFETY: renameat2 on live descriptors and NUL-terminated names.
    cvt(unsafe {
        libc::renameat2(
            from_dir,
            from.as_ptr(),
            to_dir,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
    .map(|_| ())
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn same(a: &libc::stat, b: &libc::stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Up to `max` names of `dir` other than `.` and `..`, read from the start.
fn list(dir: RawFd, max: usize, buf: &mut [u8]) -> io::Result<Vec<CString>> {
    // SAFETY: lseek on a live descriptor.
    if unsafe { libc::lseek(dir, 0, libc::SEEK_SET) } < 0 {
        return Err(last_err());
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: getdents64 into a live buffer of the given length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        // Negative: the failure.
        let Ok(n) = usize::try_from(n) else {
            return Err(last_err());
        };
        let n = n.min(buf.len());
        if n == 0 {
            return Ok(names);
        }
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        let mut off = 0;
        while off < n {
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed getdents64 record");
            let reclen = buf
                .get(off + 16..off + 18)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize)
                .ok_or_else(bad)?;
            let rec = buf
                .get(off..off + reclen)
                .filter(|_| reclen > 19)
                .ok_or_else(bad)?;
            off += reclen;
            let raw = &rec[19..];
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            if name.is_empty() || name == b"." || name == b".." {
                continue;
            }
            // No NUL inside: cut at the first one above.
            if let Ok(c) = CString::new(name) {
                names.push(c);
            }
            if names.len() >= max {
                return Ok(names);
            }
        }
    }
}

struct Walk {
    budget: u64,
    spent: u64,
    flattened: u64,
}

impl Walk {
    fn spend(&mut self) -> io::Result<()> {
        self.spent += 1;
        if self.spent > self.budget {
            return Err(io::Error::other(format!(
                "gave up after {} operations (tree too large)",
                self.budget
            )));
        }
        Ok(())
    }
}

/// Remove `name` in the directory `parent` and everything below it (see the module docs).
/// A missing `name` is success; a non-directory is unlinked.
pub fn remove_tree_at(parent: RawFd, name: &CStr, budget: u64) -> io::Result<()> {
    let top_st = match lstat_at(parent, name) {
        Ok(st) => st,
        Err(e) if is_errno(&e, libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !is_dir(&top_st) {
        return match unlink_at(parent, name, 0) {
            Err(e) if !is_errno(&e, libc::ENOENT) => Err(e),
            _ => Ok(()),
        };
    }
    if top_st.st_dev != fstat(parent)?.st_dev {
        // The tree's top is itself a mount point: not ours to empty.
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    match unlink_at(parent, name, libc::AT_REMOVEDIR) {
        Ok(()) => return Ok(()),
        Err(e) if is_errno(&e, libc::ENOENT) => return Ok(()),
        Err(e) if is_errno(&e, libc::ENOTEMPTY) || is_errno(&e, libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let top = open_dir_at(parent, name)?;
    if !same(&fstat(top.as_raw_fd())?, &top_st) {
        return Err(io::Error::other(
            "the directory was replaced during removal",
        ));
    }
    let dev = top_st.st_dev;
    let mut walk = Walk {
        budget,
        spent: 0,
        flattened: 0,
    };
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: F_DUPFD_CLOEXEC on a live descriptor; we own the duplicate.
    let mut cur = unsafe {
        OwnedFd::from_raw_fd(cvt(libc::fcntl(top.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0))?)
    };
    let mut cur_st = top_st;
    // (st_dev, st_ino) of the ancestors of `cur` below and including the top.
    let mut ancestors: Vec<libc::stat> = Vec::new();
    'walk: loop {
        walk.spend()?;
        let names = list(cur.as_raw_fd(), BATCH, &mut buf)?;
        if names.is_empty() {
            let Some(expected) = ancestors.pop() else {
                break 'walk;
            };
            // Back up one level; the now-empty directory is removed on the next listing.
            let up = open_dir_at(cur.as_raw_fd(), c"..")?;
            let up_st = fstat(up.as_raw_fd())?;
            if !same(&up_st, &expected) {
                return Err(io::Error::other("the tree was moved during removal"));
            }
            cur = up;
            cur_st = up_st;
            continue;
        }
        for name in &names {
            walk.spend()?;
            let dir = cur.as_raw_fd();
            let st = match lstat_at(dir, name) {
                Ok(st) => st,
                Err(e) if is_errno(&e, libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            if !is_dir(&st) {
                match unlink_at(dir, name, 0) {
                    Err(e) if !is_errno(&e, libc::ENOENT) => return Err(e),
                    _ => continue,
                }
            }
            if st.st_dev != dev {
                // Another filesystem mounted inside the tree: never cross into it.
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            match unlink_at(dir, name, libc::AT_REMOVEDIR) {
                Ok(()) => continue,
                Err(e) if is_errno(&e, libc::ENOENT) => continue,
                Err(e) if is_errno(&e, libc::ENOTEMPTY) || is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            if ancestors.len() + 1 >= MAX_DEPTH {
                // Too deep: move the subtree up to the top level, remove it from there.
                flatten(dir, name, top.as_raw_fd(), &mut walk)?;
                continue;
            }
            let child = open_dir_at(dir, name)?;
            let child_st = fstat(child.as_raw_fd())?;
            if !same(&child_st, &st) {
                return Err(io::Error::other("a directory was replaced during removal"));
            }
            ancestors.push(cur_st);
            cur = child;
            cur_st = child_st;
            continue 'walk;
        }
    }
    drop(cur);
    drop(top);
    match unlink_at(parent, name, libc::AT_REMOVEDIR) {
        Err(e) if !is_errno(&e, libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// Rename `name` in `dir` to a fresh name in the tree's top directory.
fn flatten(dir: RawFd, name: &CStr, top: RawFd, walk: &mut Walk) -> io::Result<()> {
    for _ in 0..1000 {
        walk.flattened += 1;
        let to = CString::new(format!(".flat-{}", walk.flattened)).map_err(io::Error::other)?;
        match rename_noreplace(dir, name, top, &to) {
            Ok(()) => return Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => walk.spend()?,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name to move a deep subtree to"))
}

/// Open the directory `path` (its last component must not be a symlink).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    open_dir_at(libc::AT_FDCWD, &c)
}

fn split(path: &Path) -> io::Result<(&Path, CString)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "no parent directory");
    let parent = path.parent().ok_or_else(invalid)?;
    let name = path.file_name().ok_or_else(invalid)?;
    Ok((
        parent,
        CString::new(name.as_bytes()).map_err(io::Error::other)?,
    ))
}

/// Remove the tree at `path` (see [`remove_tree_at`]); a missing `path` is success.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (parent, name) = split(path)?;
    let parent = open_dir(parent)?;
    remove_tree_at(parent.as_raw_fd(), &name, DEFAULT_BUDGET)
}

/// Rename the tree at `path` out of the way, to `.trash-<name>-<unique>` beside it, owned by
/// root with mode 0700 (nobody else can enter it again). Returns the new name.
pub fn set_aside(path: &Path) -> io::Result<String> {
    let (parent_path, name) = split(path)?;
    let parent = open_dir(parent_path)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let base = format!(
        ".trash-{}-{}-{stamp}",
        name.to_string_lossy(),
        std::process::id()
    );
    for i in 0..100u32 {
        let new = format!("{base}-{i}");
        let to = CString::new(new.as_bytes()).map_err(io::Error::other)?;
        match rename_noreplace(parent.as_raw_fd(), &name, parent.as_raw_fd(), &to) {
            Ok(()) => {
                if let Ok(fd) = open_dir_at(parent.as_raw_fd(), &to) {
                    // SAFETY: fchmod/fchown on a live descriptor.
                    unsafe {
                        libc::fchmod(fd.as_raw_fd(), 0o700);
                        libc::fchown(fd.as_raw_fd(), 0, 0);
                    }
                }
                return Ok(new);
            }
            Err(e) if is_errno(&e, libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name to set the tree aside"))
}

/// Remove every `.trash-<name>-*` entry that [`set_aside`] left beside `path`; returns the
/// first error (the entries that could not be removed stay for a later call).
pub fn empty_trash(path: &Path) -> io::Result<()> {
    let (parent_path, name) = split(path)?;
    let parent = open_dir(parent_path)?;
    let prefix = format!(".trash-{}-", name.to_string_lossy());
    let mut buf = vec![0u8; 32 * 1024];
    // The parent may hold many other runs' directories: read it whole, bounded.
    let names = list(parent.as_raw_fd(), 1 << 16, &mut buf)?;
    let mut result = Ok(());
    for n in names
        .iter()
        .filter(|n| n.as_bytes().starts_with(prefix.as_bytes()))
    {
        if let Err(e) = remove_tree_at(parent.as_raw_fd(), n, DEFAULT_BUDGET) {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_a_deep_tree_without_recursion() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("run");
        std::fs::create_dir(&top).unwrap();
        // 20,000 levels, built relative to a directory descriptor (the path is too long).
        let mut fd = open_dir(&top).unwrap();
        for i in 0..20_000 {
            // SAFETY: mkdirat on a live descriptor.
            let rc = unsafe { libc::mkdirat(fd.as_raw_fd(), c"d".as_ptr(), 0o700) };
            assert_eq!(rc, 0);
            if i % 1000 == 0 {
                let f = CString::new("f").unwrap();
                // SAFETY: openat on a live descriptor.
                let ffd = unsafe {
                    libc::openat(
                        fd.as_raw_fd(),
                        f.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o600,
                    )
                };
                assert!(ffd >= 0);
                // SAFETY: closing our descriptor.
                unsafe { libc::close(ffd) };
            }
            fd = open_dir_at(fd.as_raw_fd(), c"d").unwrap();
        }
        drop(fd);
        // Run on a thread with a small stack: nothing may recurse.
        let p = top.clone();
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || remove_tree(&p))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(!top.exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn never_follows_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let top = t.path().join("run");
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        symlink(&outside, top.join("a/b/link")).unwrap();
        symlink(&outside, top.join("link")).unwrap();
        std::fs::write(top.join("a/file"), "y").unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        assert!(outside.join("keep").exists());
        // A symlink as the tree's top is removed as a link.
        symlink(&outside, &top).unwrap();
        remove_tree(&top).unwrap();
        assert!(std::fs::symlink_metadata(&top).is_err());
        assert!(outside.join("keep").exists());
        // Missing is fine.
        remove_tree(&top).unwrap();
    }

    #[test]
    fn never_crosses_a_mount() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("run");
        let m = top.join("a/m");
        std::fs::create_dir_all(&m).unwrap();
        let mc = CString::new(m.as_os_str().as_bytes()).unwrap();
        // SAFETY: mounting a tmpfs on our own temp directory.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                mc.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            eprintln!("SKIP never_crosses_a_mount: cannot mount a tmpfs (not root?)");
            return;
        }
        std::fs::create_dir_all(m.join("inside/deeper")).unwrap();
        std::fs::write(m.join("inside/keep"), "x").unwrap();
        let r = remove_tree(&top);
        let kept = m.join("inside/keep").exists();
        // SAFETY: unmounting what we mounted.
        unsafe { libc::umount2(mc.as_ptr(), libc::MNT_DETACH) };
        assert!(r.is_err());
        assert!(kept);
        remove_tree(&top).unwrap();
        assert!(!top.exists());
    }

    #[test]
    fn budget_and_set_aside() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("run-1");
        std::fs::create_dir_all(top.join("a/b/c")).unwrap();
        let (parent, name) = split(&top).unwrap();
        let parent = open_dir(parent).unwrap();
        assert!(remove_tree_at(parent.as_raw_fd(), &name, 2).is_err());
        let new = set_aside(&top).unwrap();
        assert!(new.starts_with(".trash-run-1-"), "{new}");
        assert!(!top.exists());
        // Another uid's trash is not touched.
        std::fs::create_dir_all(t.path().join(".trash-run-10-x/y")).unwrap();
        empty_trash(&top).unwrap();
        let left: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(".trash-run-10-x")]);
    }
}
