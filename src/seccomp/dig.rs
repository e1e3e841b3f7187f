//! `prebake dig`: run a script once under the policy and list every syscall the policy would
//! deny, with a snippet to paste into the image spec.
//!
//! Mechanism: the policy's own BPF, compiled in a variant whose default action is
//! `SECCOMP_RET_TRACE` instead of EPERM/kill (and where the network set is not special), with
//! a ptrace tracer that follows every thread and child (`PTRACE_O_TRACECLONE/FORK/VFORK`).
//! Why this and not the alternatives:
//! - the kernel decides what is denied, with the very filter the build produces (same errno
//!   programs, same argument conditions), so dig cannot disagree with production the way a
//!   userspace re-implementation of the policy could;
//! - only would-be-denied calls stop the tracee (`PTRACE_O_TRACESECCOMP`): allowed calls run at
//!   full speed, unlike `PTRACE_SYSCALL` stepping with two stops per call;
//! - the denied call is then let through, so one run finds everything a script needs instead
//!   of stopping at the first refusal (dify-sandbox's rebuild-and-retry loop);
//! - `SECCOMP_RET_LOG` needs the kernel log (not readable in most containers), and
//!   `SECCOMP_RET_USER_NOTIF` needs the listener fd passed back out of the child and kernel
//!   5.5+ to continue calls; ptrace only needs the parent relationship.
//!
//! Calls the policy refuses on purpose with an errno (clone3 -> ENOSYS, fork -> EPERM) get
//! that errno as in production and are not reported: allowing them is not an option. The
//! network set is reported (marked as needing network), except `socket(AF_UNIX)`, which is
//! refused as in production: glibc probes nscd's socket on every passwd lookup and falls
//! back to files, so reporting it would be noise.
//! The would-be-denied calls really run: dig is for scripts you would run anyway, in the
//! bundle's rootfs (chroot), with the environment you give it.
//!
//! The tracer waits with `waitpid(-pgid)` on a process group of the tracee's own, so it never
//! reaps children of the rest of the calling process (tests run in parallel threads).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::install::Programs;
use super::policy::Policy;
use super::resolved::{ResolvedPolicy, Variant};
use super::{bpf, Arch, SeccompError};
use crate::spec::{Language, SeccompSpec};

/// A syscall the policy would have denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub name: String,
    pub nr: u32,
    /// How many times the script made it.
    pub count: u64,
    /// In the policy's network set: the request needs network, not an `allow`.
    pub network: bool,
    /// Allowed by the policy, but not with these arguments (e.g. an ioctl request or a socket
    /// family outside its conditions).
    pub conditional: bool,
}

#[derive(Debug, Clone)]
pub struct DigReport {
    pub language: &'static str,
    pub arch: &'static str,
    pub script: PathBuf,
    /// Sorted by number.
    pub denied: Vec<Denied>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl DigReport {
    pub fn names(&self) -> Vec<&str> {
        self.denied.iter().map(|d| d.name.as_str()).collect()
    }

    /// The `seccomp:` snippet for the image spec (only what `allow` can fix).
    pub fn yaml(&self) -> Option<String> {
        let names: Vec<&str> = self
            .denied
            .iter()
            .filter(|d| !d.network)
            .map(|d| d.name.as_str())
            .collect();
        // Where it goes in an image spec: under its language, so multi-language specs work.
        (!names.is_empty()).then(|| {
            format!(
                "languages:\n  {}:\n    seccomp:\n      allow: [{}]\n",
                self.language,
                names.join(", ")
            )
        })
    }
}

impl fmt::Display for DigReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(s)) => format!("was killed by signal {s}"),
            _ => "ended".to_string(),
        };
        writeln!(
            f,
            "dig: {} ({} policy, {}) {how}",
            self.script.display(),
            self.language,
            self.arch
        )?;
        if self.denied.is_empty() {
            return writeln!(
                f,
                "nothing to add: every syscall it made is inside the policy"
            );
        }
        writeln!(f, "the policy would deny {} syscall(s):", self.denied.len())?;
        let w = self.denied.iter().map(|d| d.name.len()).max().unwrap_or(0);
        for d in &self.denied {
            let times = if d.count == 1 { "call" } else { "calls" };
            let note = if d.network {
                "  (network set: run the request with network instead of allowing it)"
            } else if d.conditional {
                "  (allowed only with other arguments)"
            } else {
                ""
            };
            writeln!(
                f,
                "  {:<w$}  {:>4}  {} {times}{note}",
                d.name, d.nr, d.count
            )?;
        }
        if let Some(y) = self.yaml() {
            writeln!(f, "add to the image spec:\n{}", y.trim_end())?;
        }
        Ok(())
    }
}

/// Run `interpreter args... -` with `script` on stdin, chrooted into `root` (no chroot when
/// `root` is `/`), under the `language` policy's dig variant, and report what it would deny.
/// `interpreter` is a path inside `root`. Needs root for the chroot.
pub fn dig(
    root: &Path,
    interpreter: &Path,
    args: &[String],
    env: &[(String, String)],
    script: &Path,
    language: Language,
    spec: &SeccompSpec,
) -> Result<DigReport, SeccompError> {
    let io = |what: String| move |source| SeccompError::Io { what, source };
    let arch = Arch::host()?;
    let policy = Policy::load(language)?;
    let plan = ResolvedPolicy::new(&policy, arch, spec, Variant::Dig)?;
    let programs = Programs::from_bytes(&Programs::to_bytes(&bpf::compile(&plan)?))
        .expect("freshly compiled programs parse");
    let allowed = plan.allowed();
    let network: Vec<u32> = policy
        .rules
        .iter()
        .filter(|r| r.set == super::policy::Set::Network)
        .filter_map(|r| arch.number(&r.name))
        .collect();

    let stdin = std::fs::File::open(script).map_err(io(format!("opening {}", script.display())))?;
    let mut out = tempfile::tempfile().map_err(io("creating a temporary file".into()))?;
    let mut err = tempfile::tempfile().map_err(io("creating a temporary file".into()))?;
    let root_c = CString::new(root.as_os_str().as_bytes()).map_err(|_| SeccompError::Io {
        what: format!("root {}", root.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let do_chroot = root != Path::new("/");

    let mut cmd = Command::new(interpreter);
    cmd.args(args)
        .arg("-")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(out.try_clone().map_err(io("dup".into()))?))
        .stderr(Stdio::from(err.try_clone().map_err(io("dup".into()))?));
    // SAFETY: the closure only makes syscalls (async-signal-safe); `Programs::install` does
    // not allocate.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_long| {
                if rc != 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // A process group of its own, so the tracer can wait for exactly its tasks.
            check(libc::c_long::from(libc::setpgid(0, 0)))?;
            // Stops with SIGTRAP after execve, before the interpreter's first instruction.
            check(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0))?;
            if do_chroot {
                check(libc::c_long::from(libc::chroot(root_c.as_ptr())))?;
                check(libc::c_long::from(libc::chdir(c"/".as_ptr())))?;
            }
            check(libc::c_long::from(libc::prctl(
                libc::PR_SET_NO_NEW_PRIVS,
                1,
                0,
                0,
                0,
            )))?;
            programs
                .install()
                .map_err(std::io::Error::from_raw_os_error)
        });
    }
    let child = cmd.spawn().map_err(io(format!(
        "starting {} in {}",
        interpreter.display(),
        root.display()
    )))?;
    let pid = Pid::from_raw(
        libc::pid_t::try_from(child.id()).expect("std hands out a positive pid_t as a u32"),
    );
    let guard = KillGroup(pid);

    let (counts, exit_code, signal) = trace(pid)?;
    drop(guard);

    let mut stdout = String::new();
    let mut stderr = String::new();
    for (f, s) in [(&mut out, &mut stdout), (&mut err, &mut stderr)] {
        use std::io::Seek;
        f.rewind().map_err(io("reading output".into()))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(io("reading output".into()))?;
        *s = String::from_utf8_lossy(&buf).into_owned();
    }
    let denied = counts
        .into_iter()
        .map(|(nr, count)| Denied {
            name: arch
                .name(nr)
                .map_or_else(|| format!("unknown_{nr}"), str::to_string),
            nr,
            count,
            network: network.contains(&nr),
            conditional: allowed.contains_key(&nr),
        })
        .collect();
    Ok(DigReport {
        language: language.as_str(),
        arch: arch.as_str(),
        script: script.to_path_buf(),
        denied,
        exit_code,
        signal,
        stdout,
        stderr,
    })
}

/// Kills the tracee's process group if dig returns early.
struct KillGroup(Pid);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = signal::killpg(self.0, Signal::SIGKILL);
        // Reap what is left; ECHILD ends it.
        while waitpid(Pid::from_raw(-self.0.as_raw()), Some(WaitPidFlag::__WALL)).is_ok() {}
    }
}

type Traced = (BTreeMap<u32, u64>, Option<i32>, Option<i32>);

/// The tracer loop: count seccomp stops by syscall number until every task has exited.
fn trace(pid: Pid) -> Result<Traced, SeccompError> {
    let perr = |what: &str, e: Errno| SeccompError::Io {
        what: format!("ptrace {what}"),
        source: std::io::Error::from_raw_os_error(e as i32),
    };
    // The post-execve SIGTRAP.
    match waitpid(pid, Some(WaitPidFlag::__WALL)).map_err(|e| perr("waiting for exec", e))? {
        WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
        other => {
            return Err(SeccompError::Io {
                what: format!("the script did not start (wait status {other:?})"),
                source: std::io::Error::other("unexpected wait status"),
            })
        }
    }
    ptrace::setoptions(
        pid,
        ptrace::Options::PTRACE_O_TRACESECCOMP
            | ptrace::Options::PTRACE_O_TRACECLONE
            | ptrace::Options::PTRACE_O_TRACEFORK
            | ptrace::Options::PTRACE_O_TRACEVFORK
            | ptrace::Options::PTRACE_O_EXITKILL,
    )
    .map_err(|e| perr("setoptions", e))?;
    ptrace::cont(pid, None).map_err(|e| perr("cont", e))?;

    let group = Pid::from_raw(-pid.as_raw());
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::from([pid]);
    let (mut exit_code, mut signal) = (None, None);
    loop {
        let status = match waitpid(group, Some(WaitPidFlag::__WALL)) {
            Ok(s) => s,
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => break,
            Err(e) => return Err(perr("wait", e)),
        };
        // A task may vanish (SIGKILL of its group) between the stop and our request: ESRCH
        // is not an error then.
        let cont = |p: Pid, sig: Option<Signal>| match ptrace::cont(p, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(perr("cont", e)),
        };
        match status {
            WaitStatus::Exited(p, code) if p == pid => exit_code = Some(code),
            WaitStatus::Signaled(p, sig, _) if p == pid => signal = Some(sig as i32),
            WaitStatus::PtraceEvent(p, _, ev) if ev == libc::PTRACE_EVENT_SECCOMP => {
                match seccomp_nr(p) {
                    Ok(Some(nr)) => *counts.entry(nr).or_default() += 1,
                    Ok(None) | Err(Errno::ESRCH) => {}
                    Err(e) => return Err(perr("get_syscall_info", e)),
                }
                cont(p, None)?;
            }
            WaitStatus::PtraceEvent(p, _, _) => cont(p, None)?,
            // New threads and children start with a SIGSTOP that is ours, not the script's.
            WaitStatus::Stopped(p, Signal::SIGSTOP) if seen.insert(p) => cont(p, None)?,
            WaitStatus::Stopped(p, sig) => {
                seen.insert(p);
                cont(p, Some(sig))?
            }
            _ => {}
        }
    }
    Ok((counts, exit_code, signal))
}

/// The syscall number at a seccomp stop. PTRACE_GET_SYSCALL_INFO (Linux 5.3) is portable across
/// architectures, unlike reading registers. nix's wrapper passes a zero buffer size (the kernel
/// then copies nothing), hence the direct call.
fn seccomp_nr(pid: Pid) -> Result<Option<u32>, Errno> {
    let mut info = std::mem::MaybeUninit::<libc::ptrace_syscall_info>::zeroed();
    // SAFETY: the kernel writes at most `size_of` bytes into `info`.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GET_SYSCALL_INFO,
            pid.as_raw(),
            std::mem::size_of::<libc::ptrace_syscall_info>(),
            info.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: zero-initialised plain data, partly filled in by the kernel.
    let info = unsafe { info.assume_init() };
    if info.op != libc::PTRACE_SYSCALL_INFO_SECCOMP {
        return Ok(None);
    }
    // SAFETY: op == SECCOMP says the `seccomp` member is the one filled in.
    let nr = unsafe { info.u.seccomp.nr };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the kernel widens seccomp_data.nr, an int, into this u64: its low 32 bits \
                  are the number as a filter sees it (negative numbers included)"
    )]
    let nr = nr as u32;
    Ok(Some(nr))
}
