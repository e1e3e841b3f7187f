//! The container's resolver files for runs with network.
//!
//! The rootfs carries stub `/etc/resolv.conf` and `/etc/hosts` written at build time; the real
//! ones belong to the container and are only known at run time (Kubernetes and Docker write
//! them at pod start and may rewrite them later). Before each run with network, the runtime
//! copies the container's current two files, and nothing else of the host's `/etc`:
//!
//! - in namespaces mode into a private directory of its own ([`ResolverCopies`]), and each run
//!   with network gets them mounted over the stubs in its own mount namespace (a read-only
//!   detached bind made with `open_tree`, which the run's process moves into place). The
//!   rootfs is never written, so this works with the image's rootfs tree on a read-only
//!   container root filesystem. (A rootfs without the stubs as plain files, built with
//!   `etc_stubs: false`, gets copies as in chroot-only mode);
//! - in chroot-only mode, which has no mount namespace, over the stubs in the rootfs itself,
//!   which must then be writable to the runtime.
//!
//! Either way the files are read-only to scripts (a read-only mount, or root-owned files in a
//! root-owned tree).
//!
//! The rootfs's `etc` directory is opened without following symlinks and the files are replaced
//! by an atomic rename anchored at that directory, so a tree whose `etc` or `resolv.conf` is a
//! symlink can never make the runtime write outside the rootfs.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The files a resolver reads, copied from the container into the rootfs.
pub const RESOLVER_FILES: [&str; 2] = ["resolv.conf", "hosts"];

/// Copy `host_etc`'s resolver files (normally `/etc`) into `rootfs/etc` where their content
/// differs. A file the container lacks leaves the build-time stub in place.
///
/// `behind_pasta`: runs with network live in the namespace of [`super::netns`], where a
/// resolver on the container's loopback is unreachable; resolv.conf then names pasta's DNS
/// forwarder instead (see [`super::netns::rewrite_resolv_conf`]).
pub fn sync(host_etc: &Path, rootfs: &Path, behind_pasta: bool) -> std::io::Result<()> {
    let etc = open_dir_nofollow(&rootfs.join("etc"))?;
    for (name, want) in wanted_files(host_etc, behind_pasta) {
        let cname = CString::new(name).expect("static name without NUL");
        if read_at(&etc, &cname).is_some_and(|have| have == want) {
            continue;
        }
        replace_at(&etc, &cname, &want)?;
    }
    Ok(())
}

/// [`sync`] from the container's `/etc`, before a run with network. A failure is logged and the
/// run goes on: it keeps the files of the previous sync, or the build-time stubs.
pub fn sync_from_container(rootfs: &Path, behind_pasta: bool) {
    if let Err(e) = sync(Path::new("/etc"), rootfs, behind_pasta) {
        tracing::warn!(error = %e, rootfs = %rootfs.display(), "cannot copy /etc/resolv.conf and /etc/hosts into the rootfs; name resolution may fail in runs with network");
    }
}

/// The runtime's private copies of the container's resolver files (namespaces mode), in a
/// directory of its own removed when dropped.
///
/// The copies come in generations, `DIR/N/etc/{resolv.conf,hosts}`, and a generation is never
/// rewritten: a run's detached bind mount refers to the file it was made from, and
/// `move_mount` refuses (ENOENT) a source that was unlinked in between, which a rename over it
/// does. So a changed container file makes a new generation, and an old one is removed when the
/// last run that took mounts of it has ended.
pub struct ResolverCopies {
    dir: tempfile::TempDir,
    /// The newest generation (`None` until the first sync). The lock also serialises syncs, so
    /// runs starting together never each write the same change.
    current: Mutex<Option<Arc<Generation>>>,
    next: AtomicU64,
}

/// One generation of copies: the content of each file the container had, and where.
struct Generation {
    dir: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        // Nothing refers to it any more: the newest generation is another one and no run holds
        // it. A failure leaves a stale copy in the runtime's private directory, removed with it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A detached mount one run moves over its stub, with the name of that `/etc` file.
pub type ResolverMount = (&'static str, OwnedFd);

/// A run's hold on the generation of copies its mounts were made from: keep it until the run
/// has ended, so that no sync removes their source first (see [`ResolverCopies`]).
#[derive(Default)]
pub struct GenerationHold {
    _generation: Option<Arc<Generation>>,
}

impl ResolverCopies {
    /// A fresh private directory under the runtime's temporary directory (`/tmp`, writable
    /// even with a read-only container root: see the README).
    pub fn new() -> std::io::Result<ResolverCopies> {
        let dir = tempfile::Builder::new()
            .prefix("prebake-resolver-")
            .tempdir()?;
        Ok(ResolverCopies {
            dir,
            current: Mutex::new(None),
            next: AtomicU64::new(0),
        })
    }

    /// Bring the copies up to date with the container's `/etc`, before a run with network. A
    /// failure is logged and the run goes on with the copies of the previous sync (or none:
    /// the build-time stubs).
    pub fn sync_from_container(&self, behind_pasta: bool) {
        if let Err(e) = self.sync(Path::new("/etc"), behind_pasta) {
            tracing::warn!(error = %e, copies = %self.dir.path().display(), "cannot copy /etc/resolv.conf and /etc/hosts; name resolution may fail in runs with network");
        }
    }

    /// Make a new generation from `host_etc`'s resolver files if they differ from the newest.
    fn sync(&self, host_etc: &Path, behind_pasta: bool) -> std::io::Result<()> {
        let want = wanted_files(host_etc, behind_pasta);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().map_or(&[][..], |g| &g.files[..]) == want.as_slice() {
            return Ok(());
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let generation = Generation {
            dir: self.dir.path().join(n.to_string()),
            files: want,
        };
        // Fresh and private to the runtime: plain writes suffice; a half-made generation is
        // removed by its drop and never becomes the current one.
        let etc = generation.dir.join("etc");
        std::fs::create_dir_all(&etc)?;
        for (name, content) in &generation.files {
            std::fs::write(etc.join(name), content)?;
        }
        *current = Some(Arc::new(generation));
        Ok(())
    }

    /// One detached read-only bind mount of each copy there is, for one run to move over the
    /// stub of the same name in its `/etc` (a mount moved into place is used up, so each run
    /// gets its own). A file the container lacks has no copy: the stub stays. With them, the
    /// hold on the generation they were made from.
    pub fn detached_mounts(&self) -> std::io::Result<(Vec<ResolverMount>, GenerationHold)> {
        let generation = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut mounts = Vec::new();
        if let Some(g) = &generation {
            for (name, _) in &g.files {
                mounts.push((
                    *name,
                    detached_read_only_bind(&g.dir.join("etc").join(name))?,
                ));
            }
        }
        Ok((
            mounts,
            GenerationHold {
                _generation: generation,
            },
        ))
    }
}

/// The resolver files `host_etc` has, in [`RESOLVER_FILES`] order, as runs should see them.
fn wanted_files(host_etc: &Path, behind_pasta: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    for name in RESOLVER_FILES {
        let Ok(mut content) = std::fs::read(host_etc.join(name)) else {
            continue;
        };
        if behind_pasta && name == "resolv.conf" {
            content =
                super::netns::rewrite_resolv_conf(&String::from_utf8_lossy(&content)).into_bytes();
        }
        files.push((name, content));
    }
    files
}

/// `open_tree(OPEN_TREE_CLONE)` of `path`: a bind mount of it attached nowhere yet, made
/// read-only, nosuid, nodev and noexec.
fn detached_read_only_bind(path: &Path) -> std::io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    let fd = libc::c_int::try_from(fd).unwrap_or(-1);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the detached mount's descriptor, an empty path with AT_EMPTY_PATH, and a live
    // struct of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn open_dir_nofollow(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The content of a regular file `name` in `dir`, never through a symlink.
fn read_at(dir: &OwnedFd, name: &CStr) -> Option<Vec<u8>> {
    // SAFETY: dir is open, name is NUL-terminated.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor we own.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut buf).ok()?;
    Some(buf)
}

/// Write `content` to a new file beside `name` and rename it over `name`: a concurrent run
/// sees the old file or the new one, never half of one.
fn replace_at(dir: &OwnedFd, name: &CStr, content: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = CString::new(format!(
        ".{}.prebake-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
    .expect("no NUL in the temp name");
    // SAFETY: dir is open, tmp is NUL-terminated; O_EXCL|O_NOFOLLOW never opens what exists.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let written = file.write_all(content).and_then(|()| {
        nix::sys::stat::fchmod(&file, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .map_err(std::io::Error::from)
    });
    drop(file);
    let renamed = written.and_then(|()| {
        // SAFETY: both names are NUL-terminated and relative to the same open directory.
        let rc = unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    if renamed.is_err() {
        // SAFETY: as above; a failed cleanup leaves a hidden temp file, nothing worse.
        unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_changes_only_and_refuses_a_symlinked_etc() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/resolv.conf"), "# stub\n").unwrap();
        std::fs::write(host.path().join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        sync(host.path(), root.path(), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/resolv.conf")).unwrap(),
            "nameserver 127.0.0.53\n"
        );
        // No hosts on the "host": nothing written for it.
        assert!(!root.path().join("etc/hosts").exists());
        // The container rewrites its file: the next sync follows.
        std::fs::write(host.path().join("resolv.conf"), "nameserver 10.96.0.10\n").unwrap();
        sync(host.path(), root.path(), false).unwrap();
        assert!(std::fs::read_to_string(root.path().join("etc/resolv.conf"))
            .unwrap()
            .contains("10.96.0.10"));
        // A planted symlink at resolv.conf is replaced, never written through.
        let victim = host.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::remove_file(root.path().join("etc/resolv.conf")).unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("etc/resolv.conf")).unwrap();
        sync(host.path(), root.path(), false).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(
            !std::fs::symlink_metadata(root.path().join("etc/resolv.conf"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // An `etc` that is a symlink is refused.
        let other = tempfile::tempdir().unwrap();
        std::fs::remove_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(other.path(), root.path().join("etc")).unwrap();
        assert!(sync(host.path(), root.path(), false).is_err());
        assert!(!other.path().join("resolv.conf").exists());
    }

    fn generations(copies: &ResolverCopies) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(copies.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn copies_change_by_generation_and_old_ones_go_with_their_last_run() {
        let host = tempfile::tempdir().unwrap();
        let copies = ResolverCopies::new().unwrap();
        // Nothing to copy: no generation, no mounts.
        copies.sync(host.path(), false).unwrap();
        assert!(generations(&copies).is_empty());
        std::fs::write(host.path().join("resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        copies.sync(host.path(), false).unwrap();
        // Unchanged: the same generation, not a rewrite.
        copies.sync(host.path(), false).unwrap();
        assert_eq!(generations(&copies), ["0"]);
        assert_eq!(
            std::fs::read(copies.dir.path().join("0/etc/resolv.conf")).unwrap(),
            b"nameserver 10.0.0.1\n"
        );
        // A run holds generation 0 while the container's file changes.
        let held = copies.current.lock().unwrap().clone();
        std::fs::write(host.path().join("resolv.conf"), "nameserver 10.0.0.2\n").unwrap();
        std::fs::write(host.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
        copies.sync(host.path(), false).unwrap();
        assert_eq!(generations(&copies), ["0", "1"]);
        assert_eq!(
            std::fs::read(copies.dir.path().join("0/etc/resolv.conf")).unwrap(),
            b"nameserver 10.0.0.1\n",
            "a generation a run holds is never rewritten"
        );
        drop(held);
        assert_eq!(generations(&copies), ["1"]);
        let dir = copies.dir.path().to_path_buf();
        drop(copies);
        assert!(!dir.exists());
    }

    #[test]
    #[cfg_attr(not(have_root), ignore = "needs root")]
    fn a_run_s_mounts_outlive_a_change_of_the_container_s_files() {
        // The race behind a rare "cannot mount the resolver files ... (os error 2)": a run takes
        // its detached mounts, then a sync for another run replaces the copies. The run's
        // move_mount must still succeed, and show the content it was made from.
        let host = tempfile::tempdir().unwrap();
        let copies = ResolverCopies::new().unwrap();
        std::fs::write(host.path().join("resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        copies.sync(host.path(), false).unwrap();
        let (mut mounts, _hold) = copies.detached_mounts().unwrap();
        assert_eq!(mounts.len(), 1);
        std::fs::write(host.path().join("resolv.conf"), "nameserver 10.0.0.2\n").unwrap();
        copies.sync(host.path(), false).unwrap();

        let target = tempfile::NamedTempFile::new().unwrap();
        let target_c = CString::new(target.path().as_os_str().as_encoded_bytes()).unwrap();
        let (_, fd) = mounts.pop().unwrap();
        // In a child with a private mount namespace, as a run's setup does.
        // SAFETY: the child only makes raw syscalls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: raw syscalls on live descriptors and NUL-terminated paths.
            unsafe {
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        c"none".as_ptr(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0
                    && libc::syscall(
                        libc::SYS_move_mount,
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        target_c.as_ptr(),
                        0x4, // MOVE_MOUNT_F_EMPTY_PATH
                    ) == 0;
                if !ok {
                    libc::_exit(*libc::__errno_location());
                }
                let mut buf = [0u8; 64];
                let f = libc::open(target_c.as_ptr(), libc::O_RDONLY);
                let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
                let want = b"nameserver 10.0.0.1\n";
                libc::_exit(
                    if usize::try_from(n) == Ok(want.len()) && &buf[..want.len()] == want {
                        0
                    } else {
                        200
                    },
                );
            }
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        let code = libc::WEXITSTATUS(status);
        assert_eq!(
            code,
            0,
            "move_mount of the run's resolv.conf in its namespace: {}",
            if code == 200 {
                "it shows other content than the run's generation".to_string()
            } else {
                std::io::Error::from_raw_os_error(code).to_string()
            }
        );
    }
}
