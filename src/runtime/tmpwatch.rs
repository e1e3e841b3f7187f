//! Measuring a run's `/tmp` directory in chroot-only mode, where no tmpfs caps it.
//!
//! With a mount namespace each run's /tmp is a tmpfs of `tmp_mb` with 4096 inodes. Without
//! one (Docker's default capabilities) the run's directory lives on the container's disk,
//! and RLIMIT_FSIZE caps each file but not their sum. The supervisor therefore measures the
//! directory every [`INTERVAL`] and kills the run once it holds more than the same budget a
//! tmpfs would give: `tmp_mb` of file blocks, [`MAX_ENTRIES`] entries, [`MAX_DEPTH`] levels.
//! Between two looks a run can overshoot by what it writes in one interval; that, and a
//! walk racing the script's own changes, is why this is documented as the weaker guarantee.
//!
//! The walk never follows a symlink (`openat(O_NOFOLLOW|O_DIRECTORY)`, `fstatat` with
//! `AT_SYMLINK_NOFOLLOW`), never crosses to another filesystem, holds at most
//! [`MAX_DEPTH`] + 1 descriptors, and stops as soon as a budget is exceeded. Too deep is
//! treated as exceeded: data below the deepest level it looks at would otherwise be hidden.

use nix::dir::Dir;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, Mode};
use std::path::Path;
use std::time::Duration;

/// How often the supervisor measures.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Entries (files, directories, links) a run's /tmp may hold: the tmpfs's `nr_inodes`.
pub const MAX_ENTRIES: u64 = 4096;
/// Directory levels below the run's /tmp that are measured; deeper counts as exceeded.
pub const MAX_DEPTH: usize = 64;

/// What the walk found, up to the first budget it exceeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of blocks of regular files.
    pub bytes: u64,
    pub entries: u64,
    pub too_deep: bool,
}

/// Allowance for the filesystem's own blocks (ext4 extent blocks count in `st_blocks`), so a
/// single file at exactly RLIMIT_FSIZE (= the budget) is not itself over it.
pub const METADATA_SLACK: u64 = 1 << 20;

impl Usage {
    pub fn exceeds(&self, max_bytes: u64) -> bool {
        self.too_deep
            || self.entries > MAX_ENTRIES
            || self.bytes > max_bytes.saturating_add(METADATA_SLACK)
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Names in `dir` (without `.` and `..`), at most `max`.
fn names(dir: &mut Dir, max: u64) -> Vec<std::ffi::CString> {
    let mut out = Vec::new();
    for e in dir.iter().flatten() {
        let n = e.file_name();
        if n == c"." || n == c".." {
            continue;
        }
        out.push(n.to_owned());
        if out.len() as u64 > max {
            break;
        }
    }
    out
}

/// Measure the tree at `path`, stopping early once `max_bytes` or a limit of this module is
/// exceeded. An error (the directory vanished, a race with the script) means "unknown": the
/// caller measures again at the next interval.
pub fn measure(path: &Path, max_bytes: u64) -> nix::Result<Usage> {
    let top = Dir::open(path, DIR_FLAGS, Mode::empty())?;
    let dev = nix::sys::stat::fstat(&top)?.st_dev;
    let mut usage = Usage::default();
    // Each level: its directory and the names still to look at.
    let mut stack: Vec<(Dir, Vec<std::ffi::CString>)> = Vec::new();
    let mut top = top;
    let first = names(&mut top, MAX_ENTRIES);
    stack.push((top, first));
    loop {
        let depth = stack.len();
        let Some((dir, pending)) = stack.last_mut() else {
            break;
        };
        let Some(name) = pending.pop() else {
            stack.pop();
            continue;
        };
        usage.entries += 1;
        if usage.exceeds(max_bytes) {
            return Ok(usage);
        }
        let st = match fstatat(
            &*dir,
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            // Removed by the script since the listing.
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        match st.st_mode & libc::S_IFMT {
            // st_blocks is never negative.
            libc::S_IFREG => {
                usage.bytes += u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512);
            }
            libc::S_IFDIR if st.st_dev == dev => {
                if depth >= MAX_DEPTH {
                    usage.too_deep = true;
                    return Ok(usage);
                }
                let fd = match openat(&*dir, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(nix::Error::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                let mut sub = Dir::from_fd(fd)?;
                let left = MAX_ENTRIES.saturating_sub(usage.entries);
                let list = names(&mut sub, left);
                stack.push((sub, list));
            }
            _ => {}
        }
        if usage.exceeds(max_bytes) {
            return Ok(usage);
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_file_blocks_and_entries_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 1 << 20]).unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), vec![1u8; 64 << 10]).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("link")).unwrap();
        let u = measure(t.path(), u64::MAX).unwrap();
        // a, a/b, a/b/f, link
        assert_eq!(u.entries, 4);
        assert!(u.bytes >= 64 << 10 && u.bytes < 1 << 20, "{u:?}");
        assert!(!u.exceeds(0));
        assert!(Usage {
            bytes: (2 << 20) + 1,
            ..u
        }
        .exceeds(1 << 20));
    }

    #[test]
    fn too_many_entries_or_levels_exceed() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..(MAX_ENTRIES + 1) {
            std::fs::write(t.path().join(i.to_string()), b"").unwrap();
        }
        assert!(measure(t.path(), u64::MAX).unwrap().exceeds(u64::MAX));
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().to_path_buf();
        for _ in 0..(MAX_DEPTH + 1) {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        let u = measure(t.path(), u64::MAX).unwrap();
        assert!(u.too_deep, "{u:?}");
    }
}
