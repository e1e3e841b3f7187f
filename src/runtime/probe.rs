//! Capability probe: what this platform lets us do, decided once at startup.
//!
//! The probe forks a throw-away child (at startup, while the process is still single-threaded)
//! that tries each operation for real — unshare of each namespace type, a tmpfs mount inside
//! its private mount namespace, chroot, setresuid to a pool uid, no_new_privs + a seccomp
//! filter — and reports a bit mask through a pipe. Nothing it does is visible outside it.

use crate::contract::SANDBOX_UID_BASE;
use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub root: bool,
    pub mount_ns: bool,
    pub pid_ns: bool,
    pub ipc_ns: bool,
    pub uts_ns: bool,
    pub net_ns: bool,
    pub tmpfs: bool,
    pub chroot: bool,
    pub setuid: bool,
    pub seccomp: bool,
    pub pidfd: bool,
    /// Root only inside a user namespace of its own (see [`crate::runtime::rootless`]).
    pub rootless: bool,
}

const B_MNT: u32 = 1;
const B_PID: u32 = 2;
const B_IPC: u32 = 4;
const B_UTS: u32 = 8;
const B_NET: u32 = 16;
const B_TMPFS: u32 = 32;
const B_CHROOT: u32 = 64;
const B_SETUID: u32 = 128;
const B_SECCOMP: u32 = 256;

impl Capabilities {
    /// Run the probe. Call before starting threads (it forks).
    pub fn probe() -> Capabilities {
        Self::probe_while(|| ()).0
    }

    /// [`Capabilities::probe`], doing `work` meanwhile: the probe child takes a millisecond
    /// or more (it makes and drops five namespaces), which a start spends reading its bundle.
    /// Call before starting threads (it forks); `work` may start none either.
    pub fn probe_while<T>(work: impl FnOnce() -> T) -> (Capabilities, T) {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let (bits, done) = probe_child(work);
        let bits = bits.unwrap_or(0);
        let pidfd = pidfd_works();
        let caps = Capabilities {
            root,
            mount_ns: bits & B_MNT != 0,
            pid_ns: bits & B_PID != 0,
            ipc_ns: bits & B_IPC != 0,
            uts_ns: bits & B_UTS != 0,
            net_ns: bits & B_NET != 0,
            tmpfs: bits & B_TMPFS != 0,
            chroot: bits & B_CHROOT != 0,
            setuid: bits & B_SETUID != 0,
            seccomp: bits & B_SECCOMP != 0,
            pidfd,
            rootless: crate::runtime::rootless::active().is_some(),
        };
        (caps, done)
    }

    /// Why code must not run here, or None when the platform gives the minimum the security
    /// model needs (chroot, a uid switch and seccomp).
    pub fn refusal(&self) -> Option<String> {
        let mut missing = Vec::new();
        if !self.chroot {
            missing.push("chroot (needs CAP_SYS_CHROOT)");
        }
        if !self.setuid {
            missing.push("switching to a sandbox uid (needs root: CAP_SETUID/CAP_SETGID)");
        }
        if !self.seccomp {
            missing.push("seccomp filters (the platform already forbids them, e.g. AWS Lambda)");
        }
        if !self.pidfd {
            missing.push("pidfd_open (Linux >= 5.3)");
        }
        if missing.is_empty() {
            None
        } else {
            Some(format!(
                "this platform does not allow {}; refusing to run untrusted code. \
                 Run the container as root with the default capabilities, or accept the risk \
                 with --insecure-no-sandbox (PREBAKE_INSECURE_NO_SANDBOX=1)",
                missing.join(", ")
            ))
        }
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "root={} mount_ns={} pid_ns={} ipc_ns={} uts_ns={} net_ns={} tmpfs={} chroot={} setuid={} seccomp={} pidfd={} rootless={}",
            yn(self.root),
            yn(self.mount_ns),
            yn(self.pid_ns),
            yn(self.ipc_ns),
            yn(self.uts_ns),
            yn(self.net_ns),
            yn(self.tmpfs),
            yn(self.chroot),
            yn(self.setuid),
            yn(self.seccomp),
            yn(self.pidfd),
            yn(self.rootless)
        )
    }
}

fn pidfd_works() -> bool {
    // SAFETY: pidfd_open on our own pid; the descriptor is closed right away.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
        // A descriptor is an int (returned in a long); a negative one is the failure.
        match libc::c_int::try_from(fd) {
            Ok(fd) if fd >= 0 => {
                libc::close(fd);
                true
            }
            _ => false,
        }
    }
}

/// The probe child's bits (None when it could not run), and `work`'s result, done while the
/// child probes.
fn probe_child<T>(work: impl FnOnce() -> T) -> (Option<u32>, T) {
    let mut fds = [0i32; 2];
    // SAFETY: plain pipe/fork/wait; the child only makes syscalls and _exits.
    let pid = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return (None, work());
        }
        let pid = libc::fork();
        if pid < 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            return (None, work());
        }
        if pid == 0 {
            let bits = child_bits();
            libc::write(fds[1], std::ptr::addr_of!(bits).cast(), 4);
            libc::_exit(0);
        }
        pid
    };
    let done = work();
    // SAFETY: our own pipe and child.
    let bits = unsafe {
        libc::close(fds[1]);
        let mut bits = 0u32;
        let n = libc::read(fds[0], std::ptr::addr_of_mut!(bits).cast(), 4);
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        (n == 4).then_some(bits)
    };
    (bits, done)
}

/// In the probe child: try everything, keep what worked.
///
/// # Safety
/// Only in a forked child that `_exit`s afterwards: it changes the process's namespaces,
/// root, ids and seccomp filter for good.
unsafe fn child_bits() -> u32 {
    // SAFETY: raw syscalls (or libc's thin wrappers) on constants and live locals.
    unsafe {
        let mut bits = 0;
        for (flag, bit) in [
            (libc::CLONE_NEWPID, B_PID),
            (libc::CLONE_NEWIPC, B_IPC),
            (libc::CLONE_NEWUTS, B_UTS),
            (libc::CLONE_NEWNET, B_NET),
            (libc::CLONE_NEWNS, B_MNT),
        ] {
            if libc::unshare(flag) == 0 {
                bits |= bit;
            }
        }
        if bits & B_MNT != 0 {
            let null = std::ptr::null::<libc::c_char>();
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
                && libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"size=4k".as_ptr().cast(),
                ) == 0
            {
                bits |= B_TMPFS;
            }
        }
        if libc::chroot(c"/".as_ptr()) == 0 {
            bits |= B_CHROOT;
        }
        let uid = SANDBOX_UID_BASE;
        if libc::syscall(libc::SYS_setgroups, 0usize, 0usize) == 0
            && libc::syscall(libc::SYS_setresgid, uid, uid, uid) == 0
            && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0
        {
            bits |= B_SETUID;
        }
        // A one-instruction allow-all filter: proves the kernel accepts filters from us.
        let allow = [libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        }];
        let prog = libc::sock_fprog {
            len: 1,
            filter: allow.as_ptr() as *mut libc::sock_filter,
        };
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                std::ptr::addr_of!(prog),
            ) == 0
        {
            bits |= B_SECCOMP;
        }
        bits
    }
}
