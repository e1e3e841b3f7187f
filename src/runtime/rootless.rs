//! Rootless mode: a `runtime` started by a non-root user enters a user namespace of its own
//! in which it is root, and from then on confines runs exactly as namespaces mode does.
//!
//! Inside that namespace the runtime's uid and gid are 0 (its own host ids, mapped), and the
//! sandbox uids and gids (`SANDBOX_UID_BASE..+SANDBOX_UID_COUNT`) are mapped onto the first
//! ids of the user's subordinate range from `/etc/subuid` and `/etc/subgid`. Every run thus
//! still gets a uid of its own that no other run, and not the runtime, has on the host. The
//! runtime holds every capability, but only over namespaces its user namespace owns: the
//! runs' mount, pid, ipc, uts and network namespaces, nothing of the host's.
//!
//! Only the setuid helpers `newuidmap` and `newgidmap` (Debian package `uidmap`) may map ids
//! other than one's own, and only from outside the namespace: so a child forked before the
//! `unshare` writes the maps for its parent. Without subordinate ids there is no second uid
//! to give a run, and the runtime refuses rather than run scripts under its own uid.
//!
//! The runtime also gets a mount namespace of its own (owned by the new user namespace, so
//! that it may mount at all). Host mounts it inherits are locked: a run cannot unmask them.

use crate::contract::{SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of subordinate ids, as `shadow` (useradd, newuidmap) reads them.
pub const SUBUID_FILE: &str = "/etc/subuid";
pub const SUBGID_FILE: &str = "/etc/subgid";

/// What rootless mode mapped, for the log and the probe's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rootless {
    /// The host uid and gid the runtime was started as (0 inside).
    pub host_uid: u32,
    pub host_gid: u32,
    /// The first host uid and gid of the sandbox ids (`SANDBOX_UID_BASE` inside).
    pub sub_uid: u32,
    pub sub_gid: u32,
}

impl std::fmt::Display for Rootless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user namespace: host uid {} gid {} is 0; sandbox uids {}.. are host uids {}.. and gids host gids {}..",
            self.host_uid, self.host_gid, SANDBOX_UID_BASE, self.sub_uid, self.sub_gid
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("cannot use {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} gives user {user} (uid {uid}) no range of at least {need} ids; rootless mode maps one \
         per sandbox uid. Add one, e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"
    )]
    NoRange {
        path: PathBuf,
        user: String,
        uid: u32,
        need: u32,
    },
    #[error(
        "{tool} not found in /usr/bin, /bin or /usr/sbin: rootless mode needs it to map the sandbox ids \
         (Debian/Ubuntu package uidmap)"
    )]
    NoTool { tool: &'static str },
    #[error(
        "cannot create a user namespace: {0}. Unprivileged user namespaces are off on this host \
         (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, or an AppArmor/seccomp \
         policy of the container engine): run as root instead"
    )]
    Unshare(std::io::Error),
    #[error("{tool} refused the map {map:?}: {detail}")]
    Map {
        tool: String,
        map: String,
        detail: String,
    },
    #[error(
        "{path} is not a directory of this user that only it can write (a symlink, another \
         user's, or group/world-writable): remove it, or set uid_lock_dir (SANDBOX_UID_LOCK_DIR) elsewhere"
    )]
    NotPrivate { path: PathBuf },
    #[error("cannot {what}: {source}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> RootlessError {
    move |source| RootlessError::Os { what, source }
}

/// The first id of a range in a subordinate-id file (`name_or_id:start:count` lines) that
/// belongs to `user` or `uid` and holds `need` ids.
pub fn find_range(text: &str, user: &str, uid: u32, need: u32) -> Option<u32> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split(':');
            let owner = parts.next()?;
            let start: u32 = parts.next()?.trim().parse().ok()?;
            let count: u32 = parts.next()?.trim().parse().ok()?;
            let mine = owner == user || owner.parse::<u32>().ok() == Some(uid);
            (mine && count >= need).then_some(start)
        })
        .next()
}

/// The user name of `uid` from the password database (None when it has no entry, as in
/// containers run with an arbitrary uid).
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes into our buffer and struct; both outlive the call.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc != 0 || out.is_null() || pw.pw_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned())
    }
}

fn tool(name: &'static str) -> Result<PathBuf, RootlessError> {
    ["/usr/bin", "/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or(RootlessError::NoTool { tool: name })
}

fn range_from(path: &str, user: &str, id: u32) -> Result<u32, RootlessError> {
    let text = std::fs::read_to_string(path).map_err(|source| RootlessError::Read {
        path: path.into(),
        source,
    })?;
    find_range(&text, user, id, SANDBOX_UID_COUNT).ok_or_else(|| RootlessError::NoRange {
        path: path.into(),
        user: user.to_owned(),
        uid: id,
        need: SANDBOX_UID_COUNT,
    })
}

/// The map arguments of newuidmap/newgidmap: `0 <own id> 1` and the sandbox ids.
fn map_args(own: u32, sub: u32) -> Vec<String> {
    [0, own, 1, SANDBOX_UID_BASE, sub, SANDBOX_UID_COUNT]
        .iter()
        .map(u32::to_string)
        .collect()
}

static ACTIVE: std::sync::OnceLock<Rootless> = std::sync::OnceLock::new();

/// What [`enter`] mapped, once it has.
pub fn active() -> Option<Rootless> {
    ACTIVE.get().copied()
}

/// Enter rootless mode. Call only when not root, and before any thread exists (`unshare` of
/// a user namespace refuses multi-threaded callers); it forks.
pub fn enter() -> Result<Rootless, RootlessError> {
    // SAFETY: plain id getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let user = user_name(uid).unwrap_or_else(|| uid.to_string());
    let sub_uid = range_from(SUBUID_FILE, &user, uid)?;
    let sub_gid = range_from(SUBGID_FILE, &user, uid)?;
    let newuidmap = tool("newuidmap")?;
    let newgidmap = tool("newgidmap")?;
    let maps = [
        ("newuidmap", newuidmap, map_args(uid, sub_uid)),
        ("newgidmap", newgidmap, map_args(gid, sub_gid)),
    ];

    // go: parent -> child, "unshared, map me"; done: child -> parent, the outcome.
    let (go_r, go_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the caller is single-threaded (documented), so the child may allocate and
    // spawn processes; it leaves through _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(os("fork the id mapper")(std::io::Error::last_os_error()));
    }
    if child == 0 {
        drop((go_w, done_r));
        let mut byte = [0u8; 1];
        let report = match std::fs::File::from(go_r).read_exact(&mut byte) {
            Err(_) => String::from("the runtime did not enter its user namespace"),
            Ok(()) => run_mappers(parent, &maps),
        };
        let _ = std::fs::File::from(done_w).write_all(report.as_bytes());
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop((go_r, done_w));
    // SAFETY: unshare of namespaces for this (single-threaded) process.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) };
    let unshare_err = (unshared != 0).then(std::io::Error::last_os_error);
    let mut go = std::fs::File::from(go_w);
    if unshare_err.is_none() {
        let _ = go.write_all(b"1");
    }
    drop(go);
    let mut report = String::new();
    let _ = std::fs::File::from(done_r).read_to_string(&mut report);
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    if let Some(e) = unshare_err {
        return Err(RootlessError::Unshare(e));
    }
    if let Some((tool, rest)) = report.split_once('\0') {
        let (map, detail) = rest.split_once('\0').unwrap_or((rest, ""));
        return Err(RootlessError::Map {
            tool: tool.to_owned(),
            map: map.to_owned(),
            detail: detail.trim().to_owned(),
        });
    }
    become_root()?;
    let mode = Rootless {
        host_uid: uid,
        host_gid: gid,
        sub_uid,
        sub_gid,
    };
    let _ = ACTIVE.set(mode);
    Ok(mode)
}

/// Create `dir` for this runtime alone (0700) unless it exists, and make sure it is a real
/// directory of ours that nobody else can write: a rootless default lives under the shared
/// /tmp, where another user could have made it first.
pub fn private_dir(dir: &Path) -> Result<(), RootlessError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(RootlessError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| RootlessError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    // Inside the namespace our own host uid reads as 0.
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(RootlessError::NotPrivate {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// In the child: run both mappers for `pid`; empty on success, else `tool\0map\0why`.
fn run_mappers(pid: libc::pid_t, maps: &[(&str, PathBuf, Vec<String>); 2]) -> String {
    for (name, path, args) in maps {
        let out = Command::new(path).arg(pid.to_string()).args(args).output();
        let why = match out {
            Ok(o) if o.status.success() => continue,
            Ok(o) => format!("{} ({})", String::from_utf8_lossy(&o.stderr), o.status),
            Err(e) => e.to_string(),
        };
        return format!("{name}\0{}\0{why}", args.join(" "));
    }
    String::new()
}

/// Inside the new namespace: drop the supplementary groups (unmapped, they would show as
/// nobody), take uid and gid 0 as real, effective and saved ids, and keep our mounts from
/// propagating anywhere.
fn become_root() -> Result<(), RootlessError> {
    // SAFETY: plain credential and mount syscalls on this process.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os("drop the supplementary groups")(
                std::io::Error::last_os_error(),
            ));
        }
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(os("take gid 0 in the user namespace")(
                std::io::Error::last_os_error(),
            ));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(os("take uid 0 in the user namespace")(
                std::io::Error::last_os_error(),
            ));
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(os("make the runtime's mounts private")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RootlessError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("create a pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The uid-pool lock directory of a rootless runtime when none is configured: the user's
/// runtime directory when the session has one, else a directory of its own under /tmp. All
/// rootless servers of one user share it, as their sandbox ids are the same host ids.
pub fn default_lock_dir(host_uid: u32) -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Path::new(&d).join("prebake-runtime"),
        _ => PathBuf::from(format!("/tmp/prebake-runtime-{host_uid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_found_by_name_or_uid_and_must_be_large_enough() {
        let text = "# comment\nalice:100000:65536\nbob:200000:10\n1001:300000:64\n";
        assert_eq!(find_range(text, "alice", 1000, 64), Some(100000));
        assert_eq!(
            find_range(text, "bob", 1002, 64),
            None,
            "10 ids are too few"
        );
        assert_eq!(find_range(text, "carol", 1001, 64), Some(300000));
        assert_eq!(find_range(text, "dave", 1003, 64), None);
        assert_eq!(find_range("alice:x:65536\n", "alice", 1000, 64), None);
    }

    #[test]
    fn the_maps_give_the_runtime_0_and_the_sandbox_ids_the_range() {
        assert_eq!(
            map_args(1000, 100000),
            [
                "0",
                "1000",
                "1",
                &SANDBOX_UID_BASE.to_string(),
                "100000",
                "64"
            ]
        );
    }
}
