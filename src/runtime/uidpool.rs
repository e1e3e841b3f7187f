//! The pool of sandbox uids: one uid per concurrent run, never shared.
//!
//! Within one process a mutex-guarded free list hands out uids; across processes (a `serve`
//! and an `exec` on the same host, or two servers) an exclusive `flock` on
//! `LOCK_DIR/uid-N.lock` makes the lease exclusive. Nothing is written to /etc/passwd: the
//! kernel needs no user database to run as a uid, and the rootfs's own /etc/passwd names the
//! pool for `getpwuid`.

use crate::contract::{SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default directory for the cross-process lease locks.
pub const DEFAULT_LOCK_DIR: &str = "/run/prebake-runtime";

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{path}: cannot create the uid lock directory")]
    LockDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("all {SANDBOX_UID_COUNT} sandbox uids ({SANDBOX_UID_BASE}..) are in use by this or another runtime process; lower max_workers")]
    Exhausted,
}

pub struct UidPool {
    lock_dir: PathBuf,
    /// Free uids, and for each uid whether this process already swept it once.
    state: Mutex<PoolState>,
}

struct PoolState {
    free: Vec<u32>,
    swept: Vec<bool>,
}

/// A leased uid; returned to the pool on drop (the flock is released with the file).
pub struct Lease<'a> {
    pool: &'a UidPool,
    pub uid: u32,
    /// The caller must sweep leftovers of this uid before use (first use in this process).
    pub needs_sweep: bool,
    _lock: File,
}

impl UidPool {
    /// Uids this process holds now (leased to runs).
    pub fn leased(&self) -> usize {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (crate::contract::SANDBOX_UID_COUNT as usize).saturating_sub(st.free.len())
    }

    pub fn new(lock_dir: &Path) -> Result<Self, PoolError> {
        std::fs::create_dir_all(lock_dir).map_err(|source| PoolError::LockDir {
            path: lock_dir.to_path_buf(),
            source,
        })?;
        // Lowest uid first out of the Vec's end.
        let free = (SANDBOX_UID_BASE..SANDBOX_UID_BASE + SANDBOX_UID_COUNT)
            .rev()
            .collect();
        Ok(UidPool {
            lock_dir: lock_dir.to_path_buf(),
            state: Mutex::new(PoolState {
                free,
                swept: vec![false; SANDBOX_UID_COUNT as usize],
            }),
        })
    }

    pub fn acquire(&self) -> Result<Lease<'_>, PoolError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Try each free uid; one locked by another process stays in the free list.
        for i in (0..st.free.len()).rev() {
            let uid = st.free[i];
            let path = self.lock_dir.join(format!("uid-{uid}.lock"));
            let Ok(file) = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            else {
                continue;
            };
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                continue;
            }
            st.free.remove(i);
            let idx = (uid - SANDBOX_UID_BASE) as usize;
            let needs_sweep = !st.swept[idx];
            st.swept[idx] = true;
            return Ok(Lease {
                pool: self,
                uid,
                needs_sweep,
                _lock: file,
            });
        }
        Err(PoolError::Exhausted)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        st.free.push(self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_exclusive_within_and_across_pools() {
        let dir = tempfile::tempdir().unwrap();
        let a = UidPool::new(dir.path()).unwrap();
        let b = UidPool::new(dir.path()).unwrap();
        let l1 = a.acquire().unwrap();
        let l2 = a.acquire().unwrap();
        // A second pool over the same lock dir (another process, in effect) skips both.
        let l3 = b.acquire().unwrap();
        assert_eq!(l1.uid, SANDBOX_UID_BASE);
        assert_eq!(l2.uid, SANDBOX_UID_BASE + 1);
        assert_eq!(l3.uid, SANDBOX_UID_BASE + 2);
        assert!(l1.needs_sweep);
        let uid = l1.uid;
        drop(l1);
        let again = a.acquire().unwrap();
        assert_eq!(again.uid, uid);
        assert!(!again.needs_sweep, "swept once per process");
        drop((l2, l3, again));
        let all: Vec<_> = (0..SANDBOX_UID_COUNT)
            .map(|_| a.acquire().unwrap())
            .collect();
        assert!(matches!(a.acquire(), Err(PoolError::Exhausted)));
        drop(all);
    }
}
