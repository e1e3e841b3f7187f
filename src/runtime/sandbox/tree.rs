//! Control of a run's process tree: the child behind a pidfd, killing the whole tree
//! (pid namespace, process group, then every process of the run's uid), reaping.

use super::sys::{os, pidfd_kill};
use super::{Exit, Isolation, SandboxError};
use crate::runtime::uidpool::Lease;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Kill every process of `uid`: a helper switches to that uid and sends SIGKILL to -1, which
/// reaches exactly the processes it may signal (those of the same uid) except itself. The
/// kernel walks the task list under a lock that fork also takes, so a fork bomb cannot slip
/// a new child in.
pub fn kill_uid(uid: u32) {
    // SAFETY: the forked child only makes raw syscalls and _exits (async-signal-safe).
    unsafe {
        let pid = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if pid == 0 {
            if libc::syscall(libc::SYS_setresgid, uid, uid, uid) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0
            {
                libc::kill(-1, libc::SIGKILL);
            }
            libc::_exit(0);
        }
        // A pid is an int (returned in a long); a negative one is the failure.
        if let Ok(pid @ 1..) = libc::pid_t::try_from(pid) {
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
}

/// The running child: its pid, a pidfd for race-free signalling and waiting.
pub(super) struct Child {
    pid: libc::pid_t,
    pub(super) pidfd: OwnedFd,
    uid: Option<u32>,
    pid_ns: bool,
    reaped: std::cell::Cell<Option<Exit>>,
}

impl Child {
    pub(super) fn new(
        pid: libc::pid_t,
        lease: &Lease<'_>,
        iso: Isolation,
    ) -> Result<Child, SandboxError> {
        // SAFETY: pidfd_open on our own unreaped child (its pid cannot be reused yet).
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // A descriptor is an int (returned in a long); a negative one is the failure.
        let fd = RawFd::try_from(rc).unwrap_or(-1);
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: we still own the child; kill and reap it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(os("open a pidfd (Linux >= 5.3 required)")(err));
        }
        Ok(Child {
            pid,
            // SAFETY: a fresh descriptor we own.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd) },
            uid: iso.setuid.then_some(lease.uid),
            pid_ns: iso.pid_ns,
            reaped: std::cell::Cell::new(None),
        })
    }

    /// Kill the whole tree: pid 1 of its pid namespace takes everything with it; without a
    /// pid namespace the process group and then every process of the run's uid.
    pub(super) fn kill(&self) {
        pidfd_kill(&self.pidfd);
        self.kill_rest();
    }

    /// Kill the child alone; [`Child::reap`] kills the rest of its tree once it is dead.
    pub(super) fn kill_leader(&self) {
        pidfd_kill(&self.pidfd);
    }

    fn kill_rest(&self) {
        if !self.pid_ns {
            // The group id is the child's pid (setsid); the group may outlive the leader.
            // Only while the child is unreaped: its zombie keeps the pid, and so the group
            // id, from being reused. After the reap the number may already name another
            // run's fresh group (pids wrap at pid_max, 32768 in many containers), and a
            // group kill then would SIGKILL a healthy run. Reaping kills the group first.
            if self.reaped.get().is_none() {
                // SAFETY: plain kill of a process group whose leader we have not reaped.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            }
            if let Some(uid) = self.uid {
                kill_uid(uid);
            }
        }
    }

    /// Wait for the child and return how it ended (idempotent).
    pub(super) fn reap(&self) -> Exit {
        if let Some(e) = self.reaped.get() {
            return e;
        }
        // Wait without reaping first, so the leftovers can be killed while the zombie still
        // holds the pid (see `kill_rest`), then reap. (`pid` is positive, from `clone`.)
        if let Ok(id) = libc::id_t::try_from(self.pid) {
            // SAFETY: waiting for our own child into a zeroed siginfo.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                while libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) < 0
                    && errno_is_eintr()
                {}
            }
        }
        // Leftovers outside a pid namespace (daemonized grandchildren) die with the run.
        self.kill_rest();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        let exit = if rc < 0 {
            Exit::Signal(libc::SIGKILL)
        } else if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal(libc::WTERMSIG(status))
        };
        self.reaped.set(Some(exit));
        exit
    }
}

fn errno_is_eintr() -> bool {
    std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
}

#[cfg(test)]
mod tests {
    use super::kill_uid;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command};

    fn sleeper(uid: u32) -> Child {
        let mut cmd = Command::new("sleep");
        cmd.arg("60").uid(uid).gid(uid);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.spawn().expect("spawn sleep")
    }

    /// Two processes of the uid, each in a session of its own (no group kill reaches both),
    /// die; a process of another uid and the caller (root, with the test harness's threads,
    /// whose memory the helper shares) do not.
    #[test]
    #[cfg_attr(not(have_root), ignore = "needs root")]
    fn kill_uid_kills_every_process_of_that_uid_and_no_other() {
        let (target, other) = (64_001, 64_002);
        let mut first = sleeper(target);
        let mut second = sleeper(target);
        let mut bystander = sleeper(other);
        let canary = vec![7u8; 1 << 20];
        kill_uid(target);
        for child in [&mut first, &mut second] {
            assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        }
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "a process of another uid was killed"
        );
        bystander.kill().unwrap();
        bystander.wait().unwrap();
        assert!(canary.iter().all(|&b| b == 7));
    }
}
