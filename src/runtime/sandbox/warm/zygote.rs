//! One zygote process: started through the cold run's child setup (same root, same /dev, no
//! identity change and no filter), asked for spares over its control socket, retired by
//! closing that socket and killing it. Runs go to its spares directly, never through it.

use super::super::sys::{code_fd, high_fd, os, pidfd_kill, pipe, read_full, wait_readable};
use super::super::SandboxError;
use super::prefault::Learned;
use crate::runtime::child::{self, ChildPlan, RootMode, Step};
use nix::sys::socket::{self, ControlMessage, MsgFlags};
use std::collections::VecDeque;
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
    /// What its sample runs taught (prefault.rs).
    #[serde(skip)]
    pub learned: CopyAhead,
}

/// What a zygote's spares copy ahead: learned from this many sample runs, this many pages.
#[derive(Debug, Default)]
pub(super) struct CopyAhead {
    pub samples: u32,
    pub pages: usize,
}

pub(super) struct Zygote {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    ctl: OwnedFd,
    pub forks: u64,
    /// The processes the zygote cloned ahead for the next runs, oldest first (announced, not
    /// yet used): our children (CLONE_PARENT), so ours to reap if no run takes them.
    spares: VecDeque<Spare>,
    /// Spares asked for and not announced yet.
    asked: usize,
}

/// A run's process cloned ahead, waiting for its plan on the other end of `sock`.
struct Spare {
    pid: libc::pid_t,
    sock: OwnedFd,
}

/// The zygote's announcement of a spare: `S` and its pid, with a socket connected to it.
const SPARE_TAG: u8 = b'S';
/// The zygote could not clone a spare: `F` and the errno.
const FAILED_TAG: u8 = b'F';
/// Our request for a spare (`SPARE_DUE` in zygote.py).
const SPARE_DUE: &[u8] = b"N";
/// A sample run stopped at its end (`L` and its pid): read its pages, then say `K`.
const SAMPLE_TAG: u8 = b'L';
const SAMPLE_READ: &[u8] = b"K";
/// No more samples: the zygote waits for the pages to copy (`P`, prefault.rs).
const SAMPLES_DONE: &[u8] = b"D";

/// One message from the zygote, and the descriptor it carried, if any.
struct Message {
    bytes: Vec<u8>,
    fd: Option<OwnedFd>,
}

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
            spares: VecDeque::new(),
            asked: 0,
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
        let answer = zygote
            .receive(Instant::now() + ready_within, ready_within, 1 << 16)?
            .bytes;
        let mut ready: Ready = serde_json::from_slice(&answer)
            .map_err(|e| ZygoteError::Protocol(format!("ready message: {e}")))?;
        ready.learned = zygote.learn(&r.language, ready_within)?;
        Ok((zygote, ready))
    }

    /// Read the zygote's sample runs one by one as each stops at its end, then send it the
    /// pages its spares copy ahead (prefault.rs). Where `/proc` cannot tell (no pagemap, not
    /// ours to read), nothing is learned and spares copy nothing: runs take their faults.
    fn learn(&self, language: &str, patience: Duration) -> Result<CopyAhead, ZygoteError> {
        let deadline = Instant::now() + patience;
        let mut learned = match Learned::of_zygote(self.pid) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::info!(language, "warm pool: spares copy nothing ahead: cannot read the zygote's memory map ({e})");
                None
            }
        };
        loop {
            let msg = self.receive(deadline, patience, 16)?;
            match tagged_value(&msg.bytes) {
                Some((SAMPLE_TAG, pid)) => {
                    if let Some(l) = learned.as_mut() {
                        if let Err(e) = l.sample(pid) {
                            tracing::info!(language, "warm pool: spares copy nothing ahead: cannot read a sample run's pages ({e})");
                            learned = None;
                        }
                    }
                    self.send(SAMPLE_READ, &[])?;
                }
                _ if msg.bytes == SAMPLES_DONE => break,
                _ => {
                    return Err(ZygoteError::Protocol(format!(
                        "{} bytes where a sample run was expected",
                        msg.bytes.len()
                    )))
                }
            }
        }
        let learned = learned.unwrap_or_default();
        self.send(&learned.ranges(), &[])?;
        Ok(CopyAhead {
            samples: learned.samples,
            pages: learned.pages(),
        })
    }

    fn send(&self, msg: &[u8], fds: &[RawFd]) -> Result<(), ZygoteError> {
        send_to(self.ctl.as_raw_fd(), msg, fds).map_err(|e| match e {
            nix::Error::EPIPE | nix::Error::ECONNRESET => ZygoteError::Closed,
            e => socket_err("write to the zygote")(e),
        })
    }

    /// One message, waited for until `deadline`; past it, the zygote did not answer within
    /// `patience` (the whole wait, of which this may be the last part).
    fn receive(
        &self,
        deadline: Instant,
        patience: Duration,
        max: usize,
    ) -> Result<Message, ZygoteError> {
        if !wait_readable(self.ctl.as_raw_fd(), deadline) {
            return Err(ZygoteError::Timeout(patience));
        }
        self.receive_now(max, MsgFlags::empty())?
            .ok_or(ZygoteError::Timeout(patience))
    }

    /// One message, `None` when there is none and `flags` says not to wait.
    fn receive_now(&self, max: usize, flags: MsgFlags) -> Result<Option<Message>, ZygoteError> {
        let mut buf = vec![0u8; max];
        loop {
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let received = socket::recvmsg::<()>(
                self.ctl.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                flags | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let (n, mut fds) = match received {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    let cmsgs = msg.cmsgs().map_err(|_| {
                        ZygoteError::Protocol("more descriptors than one in a message".into())
                    })?;
                    for cmsg in cmsgs {
                        if let socket::ControlMessageOwned::ScmRights(raw) = cmsg {
                            // SAFETY: received with SCM_RIGHTS: new descriptors, ours alone.
                            fds.extend(
                                raw.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                    (msg.bytes, fds)
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return Ok(None),
                Err(nix::Error::ECONNRESET) => return Err(ZygoteError::Closed),
                Err(e) => return Err(socket_err("read from the zygote")(e)),
            };
            if n == 0 {
                return Err(ZygoteError::Closed);
            }
            if fds.len() > 1 {
                return Err(ZygoteError::Protocol(format!(
                    "{} descriptors in a message",
                    fds.len()
                )));
            }
            buf.truncate(n);
            return Ok(Some(Message {
                bytes: buf,
                fd: fds.pop(),
            }));
        }
    }

    /// Take in what the zygote said about a spare: its announcement, or a failure to clone it.
    fn note(&mut self, msg: Message) -> Result<(), ZygoteError> {
        let Some((tag, value)) = tagged_value(&msg.bytes) else {
            return Err(ZygoteError::Protocol(format!(
                "{} bytes for a spare",
                msg.bytes.len()
            )));
        };
        self.asked = self.asked.saturating_sub(1);
        match (tag, msg.fd) {
            (SPARE_TAG, Some(sock)) if value > 0 => {
                self.spares.push_back(Spare { pid: value, sock });
                Ok(())
            }
            (FAILED_TAG, None) => Err(ZygoteError::Fork(std::io::Error::from_raw_os_error(value))),
            _ => Err(ZygoteError::Protocol("not a spare's announcement".into())),
        }
    }

    /// Announcements that arrived since the last look.
    fn take_announcements(&mut self) -> Result<(), ZygoteError> {
        while let Some(msg) = self.receive_now(16, MsgFlags::MSG_DONTWAIT)? {
            self.note(msg)?;
        }
        Ok(())
    }

    /// Ask the zygote for a spare.
    fn ask(&mut self) -> Result<(), ZygoteError> {
        self.send(SPARE_DUE, &[])?;
        self.asked += 1;
        Ok(())
    }

    /// Hand one run to the oldest spare: its plan (JSON) and descriptors. With no spare left,
    /// the zygote clones the run at once and answers its pid, within `timeout`. Returns the
    /// run's pid; the run is this process's child (CLONE_PARENT).
    pub fn fork(
        &mut self,
        plan: &[u8],
        fds: &[RawFd],
        timeout: Duration,
    ) -> Result<libc::pid_t, ZygoteError> {
        self.take_announcements()?;
        while let Some(spare) = self.spares.pop_front() {
            match send_to(spare.sock.as_raw_fd(), plan, fds) {
                Ok(()) => {
                    self.forks += 1;
                    return Ok(spare.pid);
                }
                // It died (killed from outside): the next one.
                Err(_) => reap_spare(spare.pid),
            }
        }
        self.send(plan, fds)?;
        let deadline = Instant::now() + timeout;
        let answer = loop {
            let msg = self.receive(deadline, timeout, 16)?;
            match pid_answer(&msg) {
                Some(answer) => break answer,
                None => self.note(msg)?,
            }
        };
        self.forks += 1;
        match answer {
            pid @ 1.. => Ok(pid),
            0 => Err(ZygoteError::Protocol("pid 0".into())),
            errno => Err(ZygoteError::Fork(std::io::Error::from_raw_os_error(
                errno.saturating_neg(),
            ))),
        }
    }

    /// Ask for a run's process to be cloned ahead, unless `keep` are there or on their way.
    /// The zygote clones at once, so ask when no run needs the CPU for its own start (see
    /// zygote.py).
    pub fn spare_due(&mut self, keep: usize) -> Result<(), ZygoteError> {
        self.take_announcements()?;
        // A spare killed from outside is found here, or when a run is handed to it.
        self.spares.retain(|spare| !reaped_if_gone(spare.pid));
        if self.spares.len() + self.asked < keep {
            self.ask()?;
        }
        Ok(())
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // What it cloned is ours to end: its unused spares, those it announced since the last
        // look, and a run it answered for too late (the gate kept it from the script). The
        // zygote is killed and reaped first, so it can send nothing more and everything it
        // sent is in the socket.
        pidfd_kill(&self.pidfd);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        while let Ok(Some(msg)) = self.receive_now(16, MsgFlags::MSG_DONTWAIT) {
            match pid_answer(&msg) {
                // A run it cloned and answered for too late: that run started cold.
                Some(pid @ 1..) => reap_spare(pid),
                Some(_) => {}
                None => {
                    let _ = self.note(msg);
                }
            }
        }
        for spare in std::mem::take(&mut self.spares) {
            reap_spare(spare.pid);
        }
    }
}

/// The zygote's answer for a run it cloned: the run's pid, or a negative errno (4 bytes, no
/// descriptor; an announcement has 5).
fn pid_answer(msg: &Message) -> Option<i32> {
    match (<[u8; 4]>::try_from(msg.bytes.as_slice()), &msg.fd) {
        (Ok(v), None) => Some(i32::from_le_bytes(v)),
        _ => None,
    }
}

/// A tag byte and a little-endian i32 (a pid or an errno): the zygote's announcements of a
/// spare (`S`), of a failure to clone one (`F`) and of a stopped sample run (`L`).
fn tagged_value(bytes: &[u8]) -> Option<(u8, i32)> {
    match bytes {
        [tag, v @ ..] => Some((*tag, i32::from_le_bytes(v.try_into().ok()?))),
        [] => None,
    }
}

/// One message on a SOCK_SEQPACKET socket, with descriptors.
fn send_to(sock: RawFd, msg: &[u8], fds: &[RawFd]) -> Result<(), nix::Error> {
    let iov = [std::io::IoSlice::new(msg)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match socket::sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(_) => return Err(nix::Error::EMSGSIZE),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
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
