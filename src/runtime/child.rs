//! The child side of a run: everything between `clone` and `execve`.
//!
//! # Fork safety (the choice, written down)
//! `runtime serve` is a multi-threaded tokio process. It does not fork itself into a zygote
//! (the warm pool's zygote is a Python process started through this same path, see
//! `sandbox::warm`); instead the child of `clone` runs only async-signal-safe code: raw syscalls through `libc::syscall` or thin
//! libc syscall wrappers, no allocation, no locks, no `std` I/O, no glibc functions that keep
//! process-wide state (glibc's `setresuid` would try to broadcast to threads that do not exist
//! in the child, so we issue the raw syscalls). Every path, argv/envp array, BPF program and
//! descriptor is prepared by the parent in a [`ChildPlan`] before `clone`, and the child only
//! reads it. On failure the child writes `(step, errno)` to a close-on-exec pipe and `_exit`s;
//! a successful `execve` closes that pipe, which is how the parent knows the exec happened.
//!
//! # Order of operations (nsjail/bubblewrap order)
//! namespaces (flags of `clone`, all signals blocked) -> descriptors -> own session, every
//! signal back to its default and unblocked -> new root (read-only bind + pivot_root, private
//! tmpfs /tmp and a minimal /dev; or plain chroot) -> hostname -> rlimits -> drop groups, gid,
//! uid -> parent-death signal -> no_new_privs -> seccomp -> execve.

use crate::contract::bpf::SockFilter;
use crate::seccomp::install::Programs;
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_ulong};

/// Defines [`Step`] from one table, so the variants, the wire numbers (1, 2, … in table
/// order) and the texts cannot drift apart.
macro_rules! steps {
    ($first:ident => $first_text:literal, $($name:ident => $text:literal,)*) => {
        /// Steps reported by a failing child; the parent turns them into text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Step {
            $first = 1,
            $($name,)*
        }

        impl Step {
            pub(crate) const ALL: &'static [Step] = &[Step::$first, $(Step::$name,)*];

            /// What the child failed to do, for the run's error.
            pub fn describe(self) -> &'static str {
                match self {
                    Step::$first => $first_text,
                    $(Step::$name => $text,)*
                }
            }
        }
    };
}

steps! {
    Fds => "set up the standard descriptors",
    MountPrivate => "make the mount namespace private",
    BindRoot => "bind-mount the rootfs",
    MountTmp => "mount the private /tmp (does the rootfs have /tmp?)",
    MountDev => "mount /dev (does the rootfs have /dev?)",
    DevNode => "create a device node mount point in /dev",
    BindDev => "bind-mount a host device into /dev",
    RemountDev => "remount /dev read-only",
    RemountRoot => "remount the rootfs read-only",
    PivotRoot => "pivot_root into the rootfs",
    Chroot => "chroot into the rootfs",
    Chdir => "change to the working directory",
    Hostname => "set the hostname",
    Rlimit => "set resource limits",
    Setgroups => "drop supplementary groups",
    Setgid => "switch to the sandbox gid",
    Setuid => "switch to the sandbox uid",
    Prctl => "set the parent-death signal",
    NoNewPrivs => "set no_new_privs",
    Seccomp => "install the seccomp filter",
    Exec => "execute the interpreter",
    Setsid => "start a new session",
    UnmountOldRoot => "detach the old root after pivot_root",
    Panic => "finish the sandbox setup (internal error in the child)",
    Cgroup => "join the run's cgroup",
    Netns => "join the network namespace of runs with network",
    MountResolver => "mount the resolver files over /etc/resolv.conf and /etc/hosts",
}

impl Step {
    /// The step a child reported on its error pipe; `None` for a number no step has.
    pub fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == v)
    }
}

/// How the new root is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootMode {
    /// New mount namespace: read-only bind of the rootfs, tmpfs /tmp and /dev, pivot_root.
    MountNs,
    /// No mount namespace: plain chroot into the tree (protected by ownership only).
    Chroot,
    /// `--insecure-no-sandbox` without chroot rights: stay in the host root.
    None,
}

/// Everything the child needs, prepared before `clone` (the child only reads it).
pub struct ChildPlan<'a> {
    pub clone_flags: c_int,
    pub root_mode: RootMode,
    pub rootfs: CString,
    pub tmp_target: CString,
    pub tmp_opts: CString,
    pub dev_target: CString,
    /// (host device, mount point inside the new /dev)
    pub devs: Vec<(CString, CString)>,
    /// Working directory after the root change.
    pub cwd: CString,
    pub hostname: Option<CString>,
    pub exe: CString,
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
    pub rlimits: Vec<(u32, libc::rlimit)>,
    /// (uid, gid) to switch to; None when not root (insecure mode).
    pub ids: Option<(u32, u32)>,
    pub seccomp: Option<&'a Programs>,
    /// The runtime's own filter stacked on `seccomp` ([`super::runfilter`]); the child
    /// patches its pid in.
    pub extra_filter: Option<&'a [SockFilter]>,
    /// `cgroup.procs` of the run's cgroups (-1: none); the child writes "0" (itself).
    pub cgroup_procs: [c_int; 2],
    /// The network namespace to join (runs with network behind pasta), or -1.
    pub netns: c_int,
    pub stdin: c_int,
    pub stdout: c_int,
    pub stderr: c_int,
    pub report: c_int,
    /// A descriptor kept open across `execve` at fd 4 (the warm pool's control socket for
    /// its zygote), or -1.
    pub keep: c_int,
    /// Detached read-only bind mounts of the container's resolver files and where each goes
    /// (`ROOTFS/etc/resolv.conf`...), moved into place in the run's mount namespace (see
    /// [`super::netfiles::ResolverCopies`]). Empty without a mount namespace.
    pub resolver: Vec<(c_int, CString)>,
}

/// move_mount(2): the source is the descriptor itself (a detached mount).
const MOVE_MOUNT_F_EMPTY_PATH: c_ulong = 0x4;

fn errno() -> i32 {
    // SAFETY: reading errno is async-signal-safe.
    unsafe { *libc::__errno_location() }
}

/// Report `(step, errno)` on fd 3 (or the original report fd before the dup) and exit.
fn fail(fd: c_int, step: Step, err: i32) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(step as u32).to_le_bytes());
    buf[4..].copy_from_slice(&err.to_le_bytes());
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), 8);
        libc::_exit(127);
    }
}

/// # Safety
/// Every non-null pointer must point at a NUL-terminated string that outlives the call.
unsafe fn mount(
    src: *const c_char,
    target: *const c_char,
    fstype: *const c_char,
    flags: c_ulong,
    data: *const c_char,
) -> bool {
    // SAFETY: the caller passes valid strings or null, as mount(2) accepts.
    unsafe { libc::mount(src, target, fstype, flags, data.cast()) == 0 }
}

/// Clone the child with `plan.clone_flags` (namespaces) and run [`child_main`] in it.
/// Returns the child's pid (in our pid namespace) or the errno of `clone`.
///
/// # Safety
/// The caller must not rely on anything in the child: it runs [`child_main`], which never
/// returns. All data in `plan` must stay valid (it is, the parent holds it until after clone).
pub unsafe fn spawn(plan: &ChildPlan) -> Result<libc::pid_t, i32> {
    // The CLONE_NEW* flags and SIGCHLD are all below bit 31: a negative value is no set of
    // them, and would reach the kernel sign-extended.
    let flags = c_ulong::try_from(plan.clone_flags | libc::SIGCHLD).map_err(|_| libc::EINVAL)?;
    // SAFETY: the signal mask calls take live sigsets; the clone child runs `child_entry`,
    // which never returns (see the function's contract).
    let rc = unsafe {
        // What posix_spawn does: every signal is blocked across the clone, so none of the
        // server's handlers (tokio's SIGTERM/SIGINT handlers write to the server's own signal
        // pipe) can run in the child; the child resets every disposition to the default and
        // only then unblocks (see `reset_signals`). The parent restores its mask right after.
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        // Raw clone with a NULL stack behaves like fork (the child continues on a copy of the
        // stack) but accepts namespace flags, so the child is pid 1 of a new pid namespace.
        let rc = libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize);
        if rc == 0 {
            child_entry(plan);
        }
        let err = errno();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if rc < 0 {
            return Err(err);
        }
        rc
    };
    // Cannot fail: the kernel's pids are ints (at most PID_MAX_LIMIT, 2^22).
    libc::pid_t::try_from(rc).map_err(|_| libc::EOVERFLOW)
}

/// Reset every signal disposition to the default and unblock everything (the child, with all
/// signals still blocked from [`spawn`]). An ignored signal survives `execve` (Rust ignores
/// SIGPIPE in the server), a handler would run the server's code in the child, and a blocked
/// mask would be inherited by the script.
///
/// # Safety
/// Raw `rt_sigaction`/`rt_sigprocmask` syscalls only (async-signal-safe).
unsafe fn reset_signals() {
    // The kernel's `struct sigaction` on x86_64 and aarch64: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let none: u64 = 0;
    // SAFETY: raw syscalls on live locals; the kernel only reads them.
    unsafe {
        // 1..=64; SIGKILL and SIGSTOP cannot be changed (EINVAL, ignored).
        for sig in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::addr_of!(dfl),
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            std::ptr::addr_of!(none),
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

/// The child's entry: it never returns and never unwinds. The child is a copy of one tokio
/// worker thread; unwinding a panic there would run the worker's destructors and resume the
/// server's code in the copy. A panic is caught and ends the child with `_exit(127)`, after
/// reporting [`Step::Panic`]; `extern "C"` aborts the process should anything still unwind
/// past the catch.
extern "C" fn child_entry(p: &ChildPlan) -> ! {
    let report = p.report;
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_main(p)));
    // Only reached after a panic. Before the descriptors were set up the report pipe is
    // still at `p.report`; after `close_range` it is closed there and lives on fd 3.
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(Step::Panic as u32).to_le_bytes());
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        if libc::write(report, buf.as_ptr().cast(), 8) < 0 && errno() == libc::EBADF {
            libc::write(3, buf.as_ptr().cast(), 8);
        }
        libc::_exit(127);
    }
}

/// Close every descriptor from `first` on: what a child forked from the multi-threaded server
/// must do before it lives on without exec, or it keeps whatever another thread had open at
/// the fork (a run's pipe held open means that run's output never ends).
///
/// # Safety
/// Raw syscalls only (async-signal-safe); the caller must own no descriptor from `first` on.
pub(crate) unsafe fn close_from(first: c_int) {
    // SAFETY: close_range and close on descriptors the caller gives up.
    unsafe {
        // close_range takes unsigned ints; `first` is small and non-negative.
        if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) != 0 {
            // Kernels before 5.9: close one by one up to a generous bound.
            for fd in first..65536 {
                libc::close(fd);
            }
        }
    }
}

/// The child: async-signal-safe only, see the module docs. Every path ends in `execve` or
/// `_exit` (through [`fail`]).
fn child_main(p: &ChildPlan) -> ! {
    // SAFETY: every call below is a raw syscall (or libc's thin wrapper for one) on data
    // prepared by the parent; nothing allocates or takes a lock.
    unsafe {
        // 0. Into the run's cgroups first, so everything after is charged to them.
        for fd in p.cgroup_procs {
            if fd >= 0 && libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                fail(p.report, Step::Cgroup, errno());
            }
        }
        if p.netns >= 0 && libc::setns(p.netns, libc::CLONE_NEWNET) != 0 {
            fail(p.report, Step::Netns, errno());
        }

        // 1. Descriptors: code on 0, output pipes on 1 and 2, the report pipe on 3
        //    (close-on-exec), `keep` on 4, everything else closed. The parent put all of them
        //    at >= 10.
        let r = p.report;
        if libc::dup2(p.stdin, 0) < 0
            || libc::dup2(p.stdout, 1) < 0
            || libc::dup2(p.stderr, 2) < 0
            || libc::dup3(r, 3, libc::O_CLOEXEC) < 0
            || (p.keep >= 0 && libc::dup2(p.keep, 4) < 0)
        {
            fail(r, Step::Fds, errno());
        }
        let report = 3;
        // The resolver mounts follow on the next descriptors, kept until they are moved into
        // place below. (At most two, and the parent put them at >= 10 too.)
        let resolver_fd0: c_int = if p.keep >= 0 { 5 } else { 4 };
        let mut next = resolver_fd0;
        for (fd, _) in &p.resolver {
            if libc::dup2(*fd, next) < 0 {
                fail(report, Step::Fds, errno());
            }
            next += 1;
        }
        close_from(next);
        // Its own session and process group in every mode: in a pid namespace too, the
        // child would otherwise stay in the server's group (a terminal's ^C or a kill of the
        // server's group would reach it), and without one the group is how leftovers are
        // killed.
        if libc::setsid() < 0 {
            fail(report, Step::Setsid, errno());
        }
        reset_signals();

        // 2. The new root.
        let null = std::ptr::null::<c_char>();
        match p.root_mode {
            RootMode::MountNs => {
                if !mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    null,
                ) {
                    fail(report, Step::MountPrivate, errno());
                }
                if !mount(
                    p.rootfs.as_ptr(),
                    p.rootfs.as_ptr(),
                    null,
                    libc::MS_BIND,
                    null,
                ) {
                    fail(report, Step::BindRoot, errno());
                }
                // Over the stubs, on the fresh bind (whose read-only remount below leaves
                // these mounts their own read-only flag); pivot_root takes them along.
                for (fd, (_, target)) in (resolver_fd0..).zip(p.resolver.iter()) {
                    if libc::syscall(
                        libc::SYS_move_mount,
                        fd,
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH,
                    ) != 0
                    {
                        fail(report, Step::MountResolver, errno());
                    }
                    libc::close(fd);
                }
                if !mount(
                    c"tmpfs".as_ptr(),
                    p.tmp_target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    p.tmp_opts.as_ptr(),
                ) {
                    fail(report, Step::MountTmp, errno());
                }
                if !mount(
                    c"tmpfs".as_ptr(),
                    p.dev_target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    c"size=64k,nr_inodes=64,mode=755".as_ptr(),
                ) {
                    fail(report, Step::MountDev, errno());
                }
                for (host, target) in &p.devs {
                    let fd = libc::open(
                        target.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o666,
                    );
                    if fd < 0 {
                        fail(report, Step::DevNode, errno());
                    }
                    libc::close(fd);
                    if !mount(host.as_ptr(), target.as_ptr(), null, libc::MS_BIND, null) {
                        fail(report, Step::BindDev, errno());
                    }
                }
                if !mount(
                    null,
                    p.dev_target.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
                    null,
                ) {
                    fail(report, Step::RemountDev, errno());
                }
                if !mount(
                    null,
                    p.rootfs.as_ptr(),
                    null,
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV,
                    null,
                ) {
                    fail(report, Step::RemountRoot, errno());
                }
                if libc::chdir(p.rootfs.as_ptr()) != 0 {
                    fail(report, Step::Chdir, errno());
                }
                // pivot_root(".", ".") stacks the old root under the new one; detaching it
                // leaves no path back to the host tree (unlike chroot, which a process with
                // CAP_SYS_CHROOT could escape; we drop that too, but belt and braces).
                // Only a refused pivot_root may fall back to chroot (it is refused when / is
                // the initramfs). Once pivot_root succeeded, "." is the old root stacked on
                // the new one: chroot(".") there would land in the host tree, so a failed
                // detach ends the run.
                if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0 {
                    if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
                        fail(report, Step::UnmountOldRoot, errno());
                    }
                } else if libc::chroot(c".".as_ptr()) != 0 {
                    fail(report, Step::PivotRoot, errno());
                }
            }
            RootMode::Chroot => {
                if libc::chroot(p.rootfs.as_ptr()) != 0 {
                    fail(report, Step::Chroot, errno());
                }
            }
            RootMode::None => {}
        }
        // Moved into place above, or never used (no mount namespace): not for the script.
        for fd in resolver_fd0..next {
            libc::close(fd);
        }
        if libc::chdir(c"/".as_ptr()) != 0 || libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(report, Step::Chdir, errno());
        }

        // 3. Hostname (only in a new uts namespace).
        if let Some(h) = &p.hostname {
            if libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0 {
                fail(report, Step::Hostname, errno());
            }
        }

        // 4. Resource limits (RLIMIT_NPROC counts per real uid, which is the run's own).
        for (res, lim) in &p.rlimits {
            if libc::setrlimit(*res, lim) != 0 {
                fail(report, Step::Rlimit, errno());
            }
        }

        // 5. Identity: raw syscalls, see the module docs.
        if let Some((uid, gid)) = p.ids {
            if libc::syscall(libc::SYS_setgroups, 0usize, 0usize) != 0 {
                fail(report, Step::Setgroups, errno());
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
                fail(report, Step::Setgid, errno());
            }
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                fail(report, Step::Setuid, errno());
            }
        }

        // 6. Die with the server (set after setuid, which clears it).
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0) != 0 {
            fail(report, Step::Prctl, errno());
        }

        // 7. no_new_privs, then seccomp as the very last step before execve.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) != 0 {
            fail(report, Step::NoNewPrivs, errno());
        }
        // The extra filter first: the policy's filter refuses seccomp() itself.
        if let Some(f) = p.extra_filter {
            let mut copy = [SockFilter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            }; super::runfilter::MAX_INSNS];
            // getpid cannot fail and a pid is positive: the fallback is never taken.
            let me = u32::try_from(libc::syscall(libc::SYS_getpid))
                .unwrap_or_else(|_| fail(report, Step::Seccomp, libc::EOVERFLOW));
            let len = super::runfilter::patch_self(f, me, &mut copy);
            // At most runfilter::MAX_INSNS (20): the fallback is never taken.
            let len =
                u16::try_from(len).unwrap_or_else(|_| fail(report, Step::Seccomp, libc::EINVAL));
            let prog = libc::sock_fprog {
                len,
                filter: copy.as_mut_ptr().cast::<libc::sock_filter>(),
            };
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                std::ptr::addr_of!(prog),
            ) != 0
            {
                fail(report, Step::Seccomp, errno());
            }
        }

        if let Some(progs) = p.seccomp {
            if let Err(e) = progs.install() {
                fail(report, Step::Seccomp, e);
            }
        }
        libc::execve(p.exe.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(report, Step::Exec, errno());
    }
}

#[cfg(test)]
mod tests {
    use super::Step;

    #[test]
    fn every_step_survives_the_error_pipe() {
        for (i, step) in Step::ALL.iter().enumerate() {
            let wire = *step as u32;
            assert_eq!(usize::try_from(wire).unwrap(), i + 1, "{step:?}");
            assert_eq!(Step::from_u32(wire), Some(*step));
            assert!(!step.describe().is_empty());
        }
        assert_eq!(Step::from_u32(0), None);
        let past_the_end = u32::try_from(Step::ALL.len() + 1).unwrap();
        assert_eq!(Step::from_u32(past_the_end), None);
    }
}
