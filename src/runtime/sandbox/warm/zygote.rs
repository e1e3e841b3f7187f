//! One zygote process: started through the cold run's child setup (same root, same /dev, no
//! identity change and no filter), handed runs over its control socket, retired by closing
//! that socket and killing it.

use super::super::sys::{code_fd, high_fd, os, pidfd_kill, pipe, read_full, wait_readable};
use super::super::SandboxError;
use crate::runtime::child::{self, ChildPlan, RootMode, Step};
use nix::sys::socket::{self, ControlMessage, MsgFlags};
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The zygote program; the bootstrap reads it from the control socket.
const ZYGOTE_SOURCE: &str = include_str!("zygote.py");

/// The `-c` program: keep a copy of the fresh `__main__` dictionary (before the bootstrap
/// binds any name: `_t` is bound after the copy is made), then run the zygote program read
/// from the control socket, in a namespace of its own.
const BOOTSTRAP: &str = "_t=dict(globals());import os;exec(compile(os.read(4,1<<20),'<prebake-zygote>','exec'),{'__builtins__':__builtins__,'__name__':'prebake_zygote','MAIN_TEMPLATE':_t})";

/// What can go wrong with a zygote. None of it fails a run: the run starts cold instead.
#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error(transparent)]
    Prepare(#[from] SandboxError),
    #[error("the zygote failed to start: cannot {}: {}", step.describe(), std::io::Error::from_raw_os_error(*errno))]
    Setup { step: Step, errno: i32 },
    #[error("the zygote did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the zygote closed its control socket (see its log lines above)")]
    Closed,
    #[error("cannot {what}")]
    Socket {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("the zygote's answer is not what the protocol says: {0}")]
    Protocol(String),
    #[error("the zygote could not fork")]
    Fork(#[source] std::io::Error),
}

/// Everything needed to start a zygote for one language (owned: the pool's manager thread
/// starts zygotes long after the sandbox was prepared).
pub(super) struct Recipe {
    pub language: String,
    pub clone_flags: libc::c_int,
    pub root_mode: RootMode,
    pub rootfs: CString,
    pub tmp_target: CString,
    pub dev_target: CString,
    pub devs: Vec<(CString, CString)>,
    pub exe: CString,
    /// The interpreter and its arguments, without the script (`-`).
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// The setup message (JSON): steps, syscall numbers, filters, preload list.
    pub setup: Vec<u8>,
}

/// What the zygote said once ready.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Ready {
    pub imported: Vec<String>,
    pub missing: Vec<String>,
}

pub(super) struct Zygote {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    ctl: OwnedFd,
    pub forks: u64,
    /// The processes the zygote cloned ahead for the next runs (announced, not yet used): our
    /// children (CLONE_PARENT), so ours to reap if no run takes them.
    spares: Vec<libc::pid_t>,
}

/// The zygote's announcement of a spare: `S` and its pid.
const SPARE_TAG: u8 = b'S';
/// Our request for a spare (`SPARE_DUE` in zygote.py).
const SPARE_DUE: &[u8] = b"N";

fn socket_err(what: &'static str) -> impl FnOnce(nix::Error) -> ZygoteError {
    move |source| ZygoteError::Socket { what, source }
}

impl Zygote {
    /// Start a zygote and wait until it has imported its preload list and is ready to fork.
    pub fn spawn(r: &Recipe, ready_within: Duration) -> Result<(Zygote, Ready), ZygoteError> {
        let (ours, theirs) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(socket_err("create the zygote's control socket"))?;
        let theirs = high_fd(theirs.into_raw_fd())?;
        // An empty file as stdin, as a cold run's stdin is the code's file: the interpreter
        // builds `sys.stdin` for a seekable file in both.
        let stdin = code_fd(b"")?;
        let (log_r, log_w) = pipe()?;
        let (rep_r, rep_w) = pipe()?;
        let mut argv = r.argv.clone();
        argv.push(c"-c".into());
        argv.push(CString::new(BOOTSTRAP).map_err(|_| SandboxError::Nul)?);
        let argv_ptrs: Vec<*const libc::c_char> = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs: Vec<*const libc::c_char> = r
            .env
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let plan = ChildPlan {
            clone_flags: r.clone_flags,
            root_mode: r.root_mode,
            rootfs: r.rootfs.clone(),
            tmp_target: r.tmp_target.clone(),
            // The zygote's own /tmp is never used: each run mounts its own over it.
            tmp_opts: c"size=64k,nr_inodes=16,mode=1777".into(),
            dev_target: r.dev_target.clone(),
            devs: r.devs.clone(),
            cwd: c"/".into(),
            hostname: None,
            exe: r.exe.clone(),
            argv: argv_ptrs,
            envp: envp_ptrs,
            rlimits: Vec::new(),
            ids: None,
            seccomp: None,
            extra_filter: None,
            cgroup_procs: [-1, -1],
            netns: -1,
            stdin: stdin.as_raw_fd(),
            stdout: log_w.as_raw_fd(),
            stderr: log_w.as_raw_fd(),
            report: rep_w.as_raw_fd(),
            keep: theirs.as_raw_fd(),
            resolver: Vec::new(),
        };
        // SAFETY: the plan and everything it points to live until after spawn returns in
        // the parent; the child never returns from spawn.
        let pid = unsafe { child::spawn(&plan) }
            .map_err(|e| os("clone the zygote")(std::io::Error::from_raw_os_error(e)))?;
        drop(plan);
        drop((theirs, stdin, log_w, rep_w));
        // SAFETY: pidfd_open on our own unreaped child.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = match RawFd::try_from(rc) {
            // SAFETY: a fresh descriptor we own.
            Ok(fd) if fd >= 0 => unsafe { OwnedFd::from_raw_fd(fd) },
            _ => {
                let err = std::io::Error::last_os_error();
                // SAFETY: our own child: kill and reap it.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(os("open a pidfd for the zygote")(err).into());
            }
        };
        // From here on, dropping `zygote` kills and reaps the process.
        let zygote = Zygote {
            pid,
            pidfd,
            ctl: ours,
            forks: 0,
            spares: Vec::new(),
        };
        log_lines(&r.language, log_r);

        let mut rep = [0u8; 8];
        match read_full(rep_r.as_raw_fd(), &mut rep, Instant::now() + ready_within) {
            None => return Err(ZygoteError::Timeout(ready_within)),
            Some(8) => {
                let step = u32::from_le_bytes(rep[..4].try_into().expect("4 bytes"));
                let errno = i32::from_le_bytes(rep[4..].try_into().expect("4 bytes"));
                return Err(ZygoteError::Setup {
                    step: Step::from_u32(step).unwrap_or(Step::Exec),
                    errno,
                });
            }
            Some(_) => {}
        }
        zygote.send(ZYGOTE_SOURCE.as_bytes(), &[])?;
        zygote.send(&r.setup, &[])?;
        let answer = zygote.receive(ready_within, 1 << 16)?;
        let ready: Ready = serde_json::from_slice(&answer)
            .map_err(|e| ZygoteError::Protocol(format!("ready message: {e}")))?;
        Ok((zygote, ready))
    }

    fn send(&self, msg: &[u8], fds: &[RawFd]) -> Result<(), ZygoteError> {
        let iov = [std::io::IoSlice::new(msg)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        loop {
            match socket::sendmsg::<()>(
                self.ctl.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) if n == msg.len() => return Ok(()),
                Ok(_) => return Err(ZygoteError::Protocol("a short send".into())),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EPIPE | nix::Error::ECONNRESET) => return Err(ZygoteError::Closed),
                Err(e) => return Err(socket_err("write to the zygote")(e)),
            }
        }
    }

    fn receive(&self, timeout: Duration, max: usize) -> Result<Vec<u8>, ZygoteError> {
        if !wait_readable(self.ctl.as_raw_fd(), Instant::now() + timeout) {
            return Err(ZygoteError::Timeout(timeout));
        }
        self.receive_now(max, MsgFlags::empty())?
            .ok_or(ZygoteError::Timeout(timeout))
    }

    /// One message, `None` when there is none and `flags` says not to wait.
    fn receive_now(&self, max: usize, flags: MsgFlags) -> Result<Option<Vec<u8>>, ZygoteError> {
        let mut buf = vec![0u8; max];
        loop {
            match socket::recv(self.ctl.as_raw_fd(), &mut buf, flags) {
                Ok(0) => return Err(ZygoteError::Closed),
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return Ok(None),
                Err(nix::Error::ECONNRESET) => return Err(ZygoteError::Closed),
                Err(e) => return Err(socket_err("read from the zygote")(e)),
            }
        }
    }

    /// Take in a spare's announcement; false for any other message.
    fn note_spare(&mut self, msg: &[u8]) -> bool {
        match msg {
            [SPARE_TAG, pid @ ..] if pid.len() == 4 => {
                let pid = i32::from_le_bytes(pid.try_into().expect("4 bytes"));
                self.spares.push(pid);
                true
            }
            _ => false,
        }
    }

    /// The zygote answered for a run with `pid`: if that was a spare, it is a spare no
    /// longer.
    fn answered(&mut self, pid: libc::pid_t) {
        self.spares.retain(|&spare| spare != pid);
    }

    /// Announcements that arrived since the last run.
    fn take_announcements(&mut self) -> Result<(), ZygoteError> {
        while let Some(msg) = self.receive_now(16, MsgFlags::MSG_DONTWAIT)? {
            if !self.note_spare(&msg) {
                return Err(ZygoteError::Protocol(format!(
                    "{} unexpected bytes between runs",
                    msg.len()
                )));
            }
        }
        Ok(())
    }

    /// Hand the zygote one run: its plan (JSON) and descriptors. Returns the run's pid; the
    /// run is this process's child (CLONE_PARENT).
    pub fn fork(
        &mut self,
        plan: &[u8],
        fds: &[RawFd],
        timeout: Duration,
    ) -> Result<libc::pid_t, ZygoteError> {
        self.take_announcements()?;
        self.send(plan, fds)?;
        let deadline = Instant::now() + timeout;
        let answer = loop {
            let msg = self.receive(deadline.saturating_duration_since(Instant::now()), 16)?;
            if !self.note_spare(&msg) {
                break msg;
            }
        };
        let answer = pid_answer(&answer)
            .ok_or_else(|| ZygoteError::Protocol(format!("{} bytes for a pid", answer.len())))?;
        self.forks += 1;
        match answer {
            pid @ 1.. => {
                self.answered(pid);
                Ok(pid)
            }
            0 => Err(ZygoteError::Protocol("pid 0".into())),
            errno => Err(ZygoteError::Fork(std::io::Error::from_raw_os_error(
                errno.saturating_neg(),
            ))),
        }
    }

    /// Ask for a run's process to be cloned ahead (the zygote does when it has fewer spares
    /// than it keeps). It clones at once, so ask when no run needs the CPU for its own start
    /// (see zygote.py).
    pub fn spare_due(&mut self) -> Result<(), ZygoteError> {
        self.take_announcements()?;
        // A spare that died (killed from outside) is dropped by the zygote when it finds its
        // socket closed; here it is reaped.
        self.spares.retain(|&pid| !reaped_if_gone(pid));
        self.send(SPARE_DUE, &[])
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // The runs it answered for are not its children (CLONE_PARENT) and live on: their
        // runs wait for them. What else it cloned is ours to end: its unused spare, and a run
        // it was handed but did not answer for in time (that run started cold; the gate kept
        // this one from the script). The zygote is killed and reaped first, so it can send
        // nothing more and everything it sent is in the socket.
        pidfd_kill(&self.pidfd);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        while let Ok(Some(msg)) = self.receive_now(16, MsgFlags::MSG_DONTWAIT) {
            if self.note_spare(&msg) {
                continue;
            }
            if let Some(pid @ 1..) = pid_answer(&msg) {
                self.answered(pid);
                reap_spare(pid);
            }
        }
        for spare in std::mem::take(&mut self.spares) {
            reap_spare(spare);
        }
    }
}

/// The zygote's answer for a run it was handed: the run's pid, or a negative errno.
fn pid_answer(msg: &[u8]) -> Option<i32> {
    <[u8; 4]>::try_from(msg).ok().map(i32::from_le_bytes)
}

/// Kill and reap a spare no run took, or a run no run waits for. It is our child and
/// unreaped, so its pid cannot have been reused.
fn reap_spare(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Reap `pid` if it has exited: our child, unreaped, so its pid cannot have been reused.
fn reaped_if_gone(pid: libc::pid_t) -> bool {
    // SAFETY: waiting, without blocking, for our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == pid }
}

/// The zygote's stdout and stderr, one log line each (it prints only when something is
/// wrong: a failed start, a broken preload).
fn log_lines(language: &str, fd: OwnedFd) {
    let language = language.to_owned();
    let spawned = std::thread::Builder::new()
        .name("zygote-log".into())
        .spawn(move || {
            for line in BufReader::new(std::fs::File::from(fd)).lines() {
                match line {
                    Ok(line) => tracing::warn!(language = %language, "zygote: {line}"),
                    Err(_) => break,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the zygote's log reader: {e}");
    }
}
