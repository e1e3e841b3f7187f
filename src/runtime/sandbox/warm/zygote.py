# prebake's Python zygote: see src/runtime/sandbox/warm/mod.rs for the design.
#
# Started by the runtime inside the sandbox root, as root, with no seccomp filter. It never
# runs user code: it imports the preload list once, then clones runs' processes ahead
# (spares) and waits on its control socket (fd 4, AF_UNIX SOCK_SEQPACKET; fd 0 is an empty
# file, as a cold run's stdin is a file) for the runtime's request for the next one, or a
# run that found none. It clones itself with CLONE_PARENT plus the runs' namespace flags, so
# the runtime, not the zygote, is a run's parent: it waits for it, kills its tree and keeps
# its deadline, as for a cold run. The zygote announces each spare's pid with a socket
# connected to it, and keeps no copy: the runtime hands the spare its run (one message, a
# JSON plan with the run's descriptors) itself, one wake-up fewer on the run's path. A run
# that found no spare comes to the zygote, which clones it at once and answers its pid. The
# run's process applies the cold run's confinement in the cold run's order (child.rs) and
# reports a failed step on the report pipe as child.rs does; it closes the report pipe when
# it is done (the runtime reads that end of file as a cold run's execve), then runs the code
# the way `python -` would: a fresh `__main__`, "<stdin>" as the file name, the same exit
# codes and the same end-of-interpreter steps a script can observe (non-daemon threads
# joined, atexit, flushed streams, exit code 120 when stdout cannot be flushed). Its exit
# status it writes after the script in its code memfd, and closes its output, before it
# exits: the runtime answers on that, without waiting for the kernel to free the run's copy
# of the zygote (end_record.rs).
#
# The zygote clones `spares` of them when it is ready, then one each time the runtime asks
# (SPARE_DUE), which it does once a run is over and its process gone. Not at the hand-over:
# a clone is a millisecond of copying page tables, and made then it took the CPU the run had
# just been woken on (the wake-up of a socket's reader is placed on its writer's CPU). The
# second spare is for the run that comes while the last one's process is still exiting.
#
# The environment reaches a run on a pipe of its own, never through the zygote: what the
# zygote holds, later runs could read. That pipe is also the run's gate: the runtime writes
# it once it has the run's pid, so a run cloned by a zygote that then stalled past the
# runtime's patience (the runtime starts the run cold instead) never runs its script: it
# reads end of file and exits, and the runtime kills it.
#
# A run is a copy-on-write copy of the zygote, and CPython writes to nearly every object it
# touches: a run's first write to each page is a fault and a copy, the largest part of what is
# left of a warm run. So before spares, the zygote runs a few fixed sample scripts (the shapes
# of Dify's runners, from the runtime; never user code), each in a process of its own that
# runs it the way a run does (the run filter and the policy, no_new_privs, the same script
# runner; not its namespaces, /tmp, hostname, limits or uid), stopped at its end; the runtime
# reads which pages each wrote and sends the union back (prefault.rs). A spare copies those
# pages ahead while it waits (MADV_POPULATE_WRITE), the most-written first, and stops as soon
# as its run comes: under load, spares are taken early and copy little. Where the kernel lets
# a process populate many ranges of its own in one process_madvise(2) (Linux 6.13), a spare
# makes one call per COPY_BETWEEN_LOOKS instead of one per range.
#
# Everything the child needs is prepared before the fork; the runtime sends the step numbers,
# syscall numbers and BPF programs, so nothing here is specific to an architecture or can
# drift from the Rust side.

import ctypes
import gc
import json
import os
import socket
import struct
import sys

# MAIN_TEMPLATE is given by the bootstrap (`-c`): this interpreter's fresh `__main__`
# dictionary, taken before the bootstrap defined anything. A run's `__main__` starts as it.
CONTROL_FD = 4
# A run's record of its end (end_record.rs): the magic from the runtime, and where the run
# writes it (its script's length, taken before the script runs).
END_MAGIC = b""
END_AT = None
# Set in a sample run (Zygote.learn): it stops at its end for its pages to be read.
SAMPLE = False
# After-fork hooks of the standard library that the zygote's clones need not run (see
# preload_without_fork_hooks): "module.function" of the hook run in the child.
DEFERRABLE_FORK_HOOKS = ("threading._after_fork", "logging._after_at_fork_child_reinit_locks")
# Their registrations, held back while the preload list was imported; each run makes them.
DEFERRED_FORK_HOOKS = []

CLONE_PARENT = 0x00008000
SIGCHLD = 17
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
SIGKILL = 9
SIGSTOP = 19
WUNTRACED = 2
MADV_POPULATE_WRITE = 23
EINVAL = 22
EPERM = 1
ENOSYS = 38
# The most ranges one process_madvise call takes (UIO_MAXIOV).
MAX_IOV = 1024
MSG_PEEK = 2
MSG_DONTWAIT = 0x40
# What a spare copies between two looks for its plan: 64 pages of 4 KiB.
COPY_BETWEEN_LOOKS = 256 << 10
SECCOMP_SET_MODE_FILTER = 1
CLONE_NEWNET = 0x40000000
AT_FDCWD = -100
F_DUPFD = 0
GO = b"G"
# The runtime's request for a spare (any other message is a plan, JSON).
SPARE_DUE = b"N"
MOVE_MOUNT_F_EMPTY_PATH = 4


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]


# PyDLL: the GIL stays held across the clone, as os.fork holds it.
LIBC = ctypes.PyDLL(None, use_errno=True)
API = ctypes.pythonapi
for _name in ("syscall", "mount", "setns", "unshare", "sethostname", "setrlimit", "prctl", "fcntl"):
    getattr(LIBC, _name).restype = ctypes.c_long
LIBC.madvise.restype = ctypes.c_int
LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
LIBC.recv.restype = ctypes.c_long
LIBC.recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class StepFailed(Exception):
    def __init__(self, step, errno):
        self.step = step
        self.errno = errno


def check(rc, step):
    if rc != 0:
        raise StepFailed(step, ctypes.get_errno())


def program(raw):
    """A BPF program (`struct sock_filter` bytes) ready for seccomp(2): the fprog and the
    buffer it points into, which must be kept alive with it."""
    buf = ctypes.create_string_buffer(raw, len(raw))
    return SockFprog(len(raw) // 8, ctypes.addressof(buf)), buf


class Zygote:
    def __init__(self, setup, sock):
        self.sock = sock
        self.steps = setup["steps"]
        self.sys_clone = setup["sys_clone"]
        self.spare_flags = setup["spare_flags"]
        self.spares = setup["spares"]
        self.sys_move_mount = setup["sys_move_mount"]
        self.sys_seccomp = setup["sys_seccomp"]
        self.orig_argv = setup["argv"]
        self.policies = {
            name: [program(bytes.fromhex(p)) for p in progs] for name, progs in setup["policies"].items()
        }
        # Every ctypes object a run's process needs is made here, once: building a ctypes
        # array type (`c_char * n`, which create_string_buffer does for a length no live
        # object has) costs 30-70 µs and writes pages all over the heap, in every run. The
        # run filter's buffer is patched in place with the run's pid in the run's own copy.
        self.run_filter = program(bytes.fromhex(setup["run_filter"]))
        self.self_pid_slots = setup["self_pid_slots"]
        self.peek = ctypes.create_string_buffer(1)
        _ = API.PyOS_AfterFork_Child  # looked up (dlsym) once, not in every clone
        self.samples = setup["samples"]
        self.sys_pidfd_open = setup["sys_pidfd_open"]
        self.sys_process_madvise = setup["sys_process_madvise"]
        self.vectored = setup["vectored_copy"]
        # (start, length) pairs, little-endian u64: what a spare copies ahead.
        self.prefault = b""
        # The same pairs as an array of struct iovec (two 64-bit words each on the 64-bit
        # machines we build for), and the batches a spare passes to process_madvise: the
        # address of a batch's first iovec and its ranges' lengths.
        self.iov = None
        self.batches = []
        global END_MAGIC
        END_MAGIC = bytes.fromhex(setup["end_record"])

    # The parent side.

    def learn(self):
        """Run each sample script in a process of its own and let the runtime read what it
        wrote, then take the pages to copy ahead. Returns "run" only in a sample's process."""
        # The plan of a run with network, as Dify sends every run, without what would reach
        # outside the sample's own process from the zygote's namespaces: no /tmp mount, no
        # hostname, no uid (the runtime reads a process of its own uid).
        plan = {
            "flags": 0, "netns": False, "resolver": [], "tmp_opts": None, "cwd": "/",
            "hostname": None, "rlimits": [], "ids": None, "run_filter": self.run_filter[0].len > 0,
            "policy": "net" if self.policies.get("net") else None,
        }
        for sample in self.samples:
            if sample["needs"] is not None and sample["needs"] not in sys.modules:
                continue
            opened = []
            try:
                code = os.memfd_create("sample")
                opened.append(code)
                os.write(code, sample["code"].encode())
                os.lseek(code, 0, os.SEEK_SET)
                gate_r, gate_w = os.pipe()
                opened += [gate_r, gate_w]
                os.write(gate_w, GO)
                null = os.open("/dev/null", os.O_RDWR)
                opened.append(null)
                os.close(gate_w)
                opened.remove(gate_w)
                pid = self.clone(0, parent=False)
            except OSError:
                pid = None  # nothing learned from this one
            if pid == 0:
                global SAMPLE
                SAMPLE = True
                self.child(plan, [code, null, null, null, gate_r])
                return "run"
            for fd in opened:
                os.close(fd)
            if pid is None:
                continue
            _, status = os.waitpid(pid, WUNTRACED)
            if os.WIFSTOPPED(status):
                self.sock.send(b"L" + struct.pack("<i", pid))
                self.sock.recv(16)
            if not os.WIFEXITED(status) and not os.WIFSIGNALED(status):
                os.kill(pid, SIGKILL)
                os.waitpid(pid, 0)
        self.sock.send(b"D")
        ranges = self.sock.recv(1 << 22)
        if ranges[:1] != b"P" or len(ranges) % 16 != 1:
            raise SystemExit("the runtime's pages to copy ahead are not what the protocol says")
        self.prefault = ranges[1:]
        if self.vectored:
            self.iov = ctypes.create_string_buffer(self.prefault, len(self.prefault))
            address = ctypes.addressof(self.iov)
            lengths = []
            size = 0
            for _start, length in struct.iter_unpack("<QQ", self.prefault):
                lengths.append(length)
                size += length
                if size >= COPY_BETWEEN_LOOKS or len(lengths) == MAX_IOV:
                    self.batches.append((address, lengths))
                    address += 16 * len(lengths)
                    lengths = []
                    size = 0
            if lengths:
                self.batches.append((address, lengths))
        return None

    def copy_ahead(self, sock):
        """In a spare: copy the pages runs write now, until done or the plan arrives."""
        if self.vectored and self.copy_ahead_vectored(sock):
            return
        done = 0
        peek = self.peek
        for start, length in struct.iter_unpack("<QQ", self.prefault):
            if LIBC.madvise(start, length, MADV_POPULATE_WRITE) != 0 and ctypes.get_errno() == EINVAL:
                return  # EINVAL: a kernel before 5.14
            done += length
            if done >= COPY_BETWEEN_LOOKS:
                done = 0
                if LIBC.recv(sock.fileno(), peek, 1, MSG_PEEK | MSG_DONTWAIT) >= 0:
                    return

    def copy_ahead_vectored(self, sock):
        """copy_ahead with one process_madvise(2) call per batch. False if the first call is
        refused as a whole (a kernel or seccomp profile that does not allow it after all): the
        caller then copies range by range."""
        pidfd = LIBC.syscall(ctypes.c_long(self.sys_pidfd_open), ctypes.c_long(os.getpid()), ctypes.c_ulong(0))
        if pidfd < 0:
            return False
        peek = self.peek
        first = True
        try:
            for address, lengths in self.batches:
                while lengths:
                    copied = LIBC.syscall(
                        ctypes.c_long(self.sys_process_madvise),
                        ctypes.c_long(pidfd),
                        ctypes.c_ulong(address),
                        ctypes.c_ulong(len(lengths)),
                        ctypes.c_long(MADV_POPULATE_WRITE),
                        ctypes.c_ulong(0),
                    )
                    if copied < 0 and first and ctypes.get_errno() in (EINVAL, ENOSYS, EPERM):
                        return False
                    first = False
                    # A short count: the ranges before it were copied and the next one failed
                    # (a mapping the zygote no longer has, say). Skip that one, as one
                    # madvise a range would, and go on with the rest.
                    copied = max(copied, 0)
                    skip = 0
                    while skip < len(lengths) and copied >= lengths[skip]:
                        copied -= lengths[skip]
                        skip += 1
                    skip = min(skip + 1, len(lengths))
                    address += 16 * skip
                    lengths = lengths[skip:]
                if LIBC.recv(sock.fileno(), peek, 1, MSG_PEEK | MSG_DONTWAIT) >= 0:
                    return True
            return True
        finally:
            os.close(pidfd)

    def serve(self):
        """Clone spares until retired; returns only in a run's process."""
        sock = self.sock
        for _ in range(self.spares):
            if self.make_spare() == "run":
                return
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 16)
            except InterruptedError:
                continue
            if not msg:
                # The runtime closed its end: this zygote is retired (its spares, whose
                # sockets the runtime holds, are killed with it).
                os._exit(0)
            if msg == SPARE_DUE:
                for fd in fds:
                    os.close(fd)
                if self.make_spare() == "run":
                    return
                continue
            # A run that found no spare: cloned now, on its path. The zygote answers its pid.
            plan = json.loads(msg)
            try:
                reply = self.clone(self.spare_flags)
            except OSError as e:
                reply = -(e.errno or 1)
            if reply == 0:
                # The run: confined, it returns all the way up and runs the script at the
                # top of the stack (see the end of this file).
                self.child(plan, fds)
                return
            for fd in fds:
                os.close(fd)
            sock.send(struct.pack("<i", reply))

    def make_spare(self):
        """Clone a run's process now, off that run's path, and announce it with a socket
        connected to it: it waits in its namespaces for the plan the runtime sends there,
        then confines itself as any run does."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = self.clone(self.spare_flags)
        except OSError as e:
            mine.close()
            theirs.close()
            self.sock.send(b"F" + struct.pack("<i", e.errno or 1))
            return None
        if pid == 0:
            mine.close()
            # Not a holder of the zygote's control socket: the runtime must see it close
            # when the zygote dies.
            self.sock.detach()
            os.close(CONTROL_FD)
            LIBC.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(SIGKILL), 0, 0, 0)
            self.copy_ahead(theirs)
            try:
                msg, fds, _flags, _addr = socket.recv_fds(theirs, 1 << 16, 16)
            except OSError:
                os._exit(0)
            if not msg:
                os._exit(0)
            theirs.detach()  # closed with the others by child()
            self.child(json.loads(msg), fds)
            return "run"
        theirs.close()
        # The zygote keeps no copy: the spare's socket closes when the runtime lets it go.
        socket.send_fds(self.sock, [b"S" + struct.pack("<i", pid)], [mine.fileno()])
        mine.close()
        return None

    def clone(self, flags, parent=True):
        API.PyOS_BeforeFork()
        # A raw clone with no stack behaves like fork, and it takes CLONE_PARENT and the
        # namespace flags in one step: the run is pid 1 of its namespace, as a cold run is.
        # (A sample run is the zygote's own child: the zygote waits for it to stop.)
        pid = LIBC.syscall(
            ctypes.c_long(self.sys_clone),
            ctypes.c_ulong(flags | (CLONE_PARENT if parent else 0) | SIGCHLD),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        if pid == 0:
            API.PyOS_AfterFork_Child()
            # The hooks the zygote held back, registered as the imports made them: a fork in
            # this run (which the baked policies refuse, but nothing here relies on that)
            # then resets threading's and logging's locks as it would in a cold run.
            for hooks in DEFERRED_FORK_HOOKS:
                os.register_at_fork(**hooks)
            return 0
        err = ctypes.get_errno()
        API.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(err, os.strerror(err))
        return pid

    # The child side: confinement, in child.rs's order.

    def child(self, plan, fds):
        report = fds[3]
        step = "Panic"
        # The control socket is closed with the other descriptors below; the object must not
        # close whatever a script opens under its number later.
        self.sock.detach()
        try:
            if plan["flags"] & CLONE_NEWNET:
                # A spare is cloned before its run is known: the one namespace that depends
                # on the run (network off) is entered now, first, as clone would have.
                check(LIBC.unshare(ctypes.c_int(CLONE_NEWNET)), "Netns")
            first_resolver = 5 + (1 if plan["netns"] else 0)
            resolver = list(zip(fds[first_resolver:], plan["resolver"]))
            cgroup_fds = fds[first_resolver + len(resolver):]
            step = "Cgroup"
            for fd in cgroup_fds:
                os.write(fd, b"0")
            if plan["netns"]:
                check(LIBC.setns(fds[5], CLONE_NEWNET), "Netns")
            # The container's resolver files over the stubs, in this run's own mount
            # namespace (the zygote's root is the rootfs: the targets are /etc/...).
            for fd, target in resolver:
                check(
                    LIBC.syscall(
                        ctypes.c_long(self.sys_move_mount),
                        ctypes.c_int(fd),
                        b"",
                        ctypes.c_int(AT_FDCWD),
                        target.encode(),
                        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
                    ),
                    "MountResolver",
                )
            step = "Fds"
            # The gate, kept above the run's four descriptors.
            gate = LIBC.fcntl(ctypes.c_int(fds[4]), ctypes.c_int(F_DUPFD), ctypes.c_int(4))
            if gate < 0:
                raise OSError(ctypes.get_errno(), "fcntl")
            os.dup2(fds[0], 0)
            os.dup2(fds[1], 1)
            os.dup2(fds[2], 2)
            os.dup2(report, 3)
            report = 3
            os.closerange(4, gate)
            os.closerange(gate + 1, 1 << 20)
            step = "Setsid"
            os.setsid()
            if plan["tmp_opts"] is not None:
                check(
                    LIBC.mount(
                        b"tmpfs",
                        b"/tmp",
                        b"tmpfs",
                        ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC),
                        plan["tmp_opts"].encode(),
                    ),
                    "MountTmp",
                )
            step = "Chdir"
            os.chdir(plan["cwd"])
            if plan["hostname"] is not None:
                name = plan["hostname"].encode()
                check(LIBC.sethostname(name, ctypes.c_size_t(len(name))), "Hostname")
            for res, soft, hard in plan["rlimits"]:
                check(LIBC.setrlimit(ctypes.c_int(res), ctypes.byref(Rlimit(soft, hard))), "Rlimit")
            if plan["ids"] is not None:
                uid, gid = plan["ids"]
                step = "Setgroups"
                os.setgroups([])
                step = "Setgid"
                os.setresgid(gid, gid, gid)
                step = "Setuid"
                os.setresuid(uid, uid, uid)
            check(LIBC.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(SIGKILL), 0, 0, 0), "Prctl")
            check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0), "NoNewPrivs")
            if plan["run_filter"]:
                self.install_prog(self.patched_run_filter(os.getpid()))
            if plan["policy"] is not None:
                for fprog, _buf in self.policies[plan["policy"]]:
                    self.install_prog(fprog)
            # The gate, last (the runtime writes it when the zygote's answer reaches it; the
            # later the read, the less a run waits for that): the environment, read here
            # only (what a zygote holds, every later run could read, and proxy settings are
            # for runs with network), after GO. Without GO the runtime gave this run to a
            # cold start: it must never run the script. Nothing here makes a syscall the
            # policy refuses (read, close, exit_group).
            step = "Fds"
            given = read_to_end(gate)
            os.close(gate)
            if not given.startswith(GO):
                os._exit(0)
            self.reset_python_state(given[len(GO):].split(b"\0"))
            global END_AT
            END_AT = os.fstat(0).st_size
            step = "Panic"
        except StepFailed as e:
            self.fail(report, e.step, e.errno)
        except OSError as e:
            self.fail(report, step, e.errno or 0)
        except BaseException:
            self.fail(report, "Panic", 0)
        # The runtime takes the end of file as "setup done", like a cold run's execve.
        os.close(3)

    def patched_run_filter(self, pid):
        """The run filter with this run's pid where it goes (in this process's copy)."""
        fprog, buf = self.run_filter
        for slot in self.self_pid_slots:
            struct.pack_into("<I", buf, slot * 8 + 4, pid)
        return fprog

    def install_prog(self, fprog):
        rc = LIBC.syscall(
            ctypes.c_long(self.sys_seccomp),
            ctypes.c_long(SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(0),
            ctypes.byref(fprog),
        )
        check(rc, "Seccomp")

    def reset_python_state(self, env):
        os.environ.clear()
        for item in env:
            if item:
                key, _, value = os.fsdecode(item).partition("=")
                os.environ[key] = value
        tempfile = sys.modules.get("tempfile")
        if tempfile is not None:
            tempfile.tempdir = None

    def fail(self, fd, step, errno):
        try:
            os.write(fd, struct.pack("<Ii", self.steps[step], errno))
        finally:
            os._exit(127)


def read_to_end(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def system_exit_code(e):
    """The interpreter's handling of an uncaught SystemExit (handle_system_exit)."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code))
        sys.stderr.write("\n")
    except BaseException:
        pass
    return 1


def unraisable(exc, obj):
    """PyErr_WriteUnraisable(obj) for `exc`: the hook a script may have set, else the default."""
    # Raised in C, where the interpreter meets it: no traceback.
    exc.__traceback__ = None
    args = UNRAISABLE_ARGS((type(exc), exc, None, None, obj))
    try:
        sys.unraisablehook(args)
    except BaseException:
        sys.__unraisablehook__(args)


def flush_std_files(report=True):
    """As the interpreter flushes at exit: a failure on stdout is reported, on stderr not."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", True):
            continue
        try:
            stream.flush()
        except BaseException as e:
            if report and stream is sys.stdout:
                unraisable(e, stream)
            ok = False
    return ok


def finish(main, exitcode, interrupted):
    """Py_FinalizeEx as far as a script can observe it, then the exit."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException as e:
            unraisable(e, threading)
    import atexit

    atexit._run_exitfuncs()
    if not flush_std_files():
        exitcode = 120
    # Module teardown, as far as the script's own objects go: what only its globals hold is
    # finalized (a __del__ may print).
    main.__dict__.clear()
    gc.collect()
    # The interpreter's second flush comes after teardown has cleared `sys`: what its
    # finalizers printed is written, and a failure is neither reported nor counted.
    flush_std_files(report=False)
    if interrupted:
        import signal

        # exit_sigint(): die of SIGINT with the default action, else exit 128 + SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except OSError:
            pass
        exitcode = 128 + signal.SIGINT
    announce_end(exitcode)
    if SAMPLE:
        # A sample run (Zygote.learn): stopped, read, killed. raise() is tgkill on itself,
        # which the run filter allows.
        import _signal

        _signal.raise_signal(SIGSTOP)
    os._exit(exitcode)


def announce_end(exitcode):
    """Record the exit status right after the script in the code memfd (fd 0), then close
    stdout and stderr: the runtime, at end of file of both, answers with it while the kernel
    still frees this process's memory (end_record.rs). Any failure: no record, and the runtime
    answers after the exit, as for a cold run."""
    if END_AT is None:
        return
    # The interpreter's own C module, loaded at start-up: `signal` is not preloaded, and its
    # import (enums built at import time) would cost every run a millisecond.
    import _signal

    # Past RLIMIT_FSIZE (which a script may have lowered) the write must fail, not kill.
    _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGXFSZ])
    try:
        os.pwrite(0, END_MAGIC + struct.pack("<I", exitcode & 0xFF), END_AT)
    except OSError:
        return
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:
            pass


def unraisable_args_type():
    """sys.UnraisableHookArgs, which Python does not export: caught from one unraisable."""
    seen = []
    hook, sys.unraisablehook = sys.unraisablehook, seen.append

    class Probe:
        def __del__(self):
            raise RuntimeError

    Probe()
    sys.unraisablehook = hook
    return type(seen[0])


def preload_without_fork_hooks(names):
    """preload(), holding back the after-fork hooks in DEFERRABLE_FORK_HOOKS. threading's
    and logging's reset locks that another thread may have held across a fork (logging's
    also takes its lock before each fork). The zygote has no other thread (main() checks)
    and clones holding none of those locks, so in its clones the hooks would change nothing
    a run can see, yet they touch objects all over the heap: about 130 page copies in every
    run's process (0.5 ms of CPU; 3-5% of runs/s at concurrency 8). Other hooks (random's
    reseed, above all) are registered as usual."""
    real = os.register_at_fork

    def register_at_fork(**hooks):
        child = hooks.get("after_in_child")
        name = "%s.%s" % (getattr(child, "__module__", ""), getattr(child, "__qualname__", ""))
        if name in DEFERRABLE_FORK_HOOKS:
            DEFERRED_FORK_HOOKS.append(hooks)
        else:
            real(**hooks)

    os.register_at_fork = register_at_fork
    try:
        return preload(names)
    finally:
        os.register_at_fork = real


def preload(names):
    imported, missing = [], []
    for name in names:
        try:
            __import__(name)
            imported.append(name)
        except Exception as e:  # an image without the module: nothing to warm
            missing.append("%s (%s)" % (name, type(e).__name__))
    if "jinja2" in imported:
        # What Dify's own Jinja2 preload does before each template: a template built from a
        # string makes jinja2's shared default environment and its lexer once (both cached),
        # a fifth of a small template's cost. Fixed text; the same state in every run.
        try:
            sys.modules["jinja2"].Template("{{ s }}").render(s="")
        except Exception:
            pass  # a jinja2 that cannot: its runs will say why
    return imported, missing


def main():
    """The zygote; returns only in a run's child, confined and ready to run the script."""
    sock = socket.socket(fileno=CONTROL_FD)
    setup = json.loads(sock.recv(1 << 20))
    imported, missing = preload_without_fork_hooks(setup["preload"])
    # Without importing threading (its after-fork hook would then run in every run).
    if len(sys._current_frames()) != 1:
        raise SystemExit("a preloaded module started a thread: cannot fork safely")
    zygote = Zygote(setup, sock)
    global UNRAISABLE_ARGS
    UNRAISABLE_ARGS = unraisable_args_type()
    LIBC.fdopen.restype = ctypes.c_void_p
    API.PyRun_FileExFlags.restype = ctypes.py_object
    API.PyRun_FileExFlags.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.py_object,
        ctypes.py_object,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    # Nothing of the zygote's own start-up is collected again in the runs: a collection in
    # a run would write to every object's header and copy every page.
    gc.collect()
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    sock.send(json.dumps({"imported": imported, "missing": missing}).encode())
    if zygote.learn() != "run":
        zygote.serve()
    return zygote.orig_argv


# Only a run's child gets past main(). From here on this is `python -` running its standard
# input, at the top of the stack (the fewest frames below the script's: tracebacks and the
# recursion limit are as close to a cold run's as they can be). CPython's own file runner
# reads and compiles the script from fd 0 as it does for `python -`, so encoding and syntax
# errors read the same; exceptions are printed as PyErr_Print prints them, without the frames
# below; the end is the interpreter's end as a script can observe it: threads joined, atexit,
# the streams flushed (exit code 120 and the same message when stdout cannot be), the
# script's globals finalized, SIGINT for an unhandled KeyboardInterrupt. The interpreter's
# module teardown is skipped: with the preload list imported it costs more than the run.
_orig_argv = main()
_main = type(sys)("__main__")
_main.__dict__.update(MAIN_TEMPLATE)
_main.__dict__["__file__"] = "<stdin>"
_main.__dict__["__cached__"] = None
sys.modules["__main__"] = _main
sys.argv[:] = ["-"]
sys.orig_argv[:] = _orig_argv
del _orig_argv, MAIN_TEMPLATE
_exitcode = 0
_interrupted = False
try:
    API.PyRun_FileExFlags(LIBC.fdopen(0, b"r"), b"<stdin>", 257, _main.__dict__, _main.__dict__, 0, None)
except SystemExit as _e:
    _exitcode = system_exit_code(_e)
    del _e
except BaseException as _e:
    # As PyErr_Print prints it, without this frame.
    _tb = _e.__traceback__.tb_next if _e.__traceback__ is not None else None
    _e.__traceback__ = _tb
    sys.last_type, sys.last_value, sys.last_traceback = type(_e), _e, _tb
    try:
        sys.excepthook(type(_e), _e, _tb)
    except BaseException:
        sys.__excepthook__(type(_e), _e, _tb)
    _interrupted = type(_e) is KeyboardInterrupt
    _exitcode = 1
    del _e, _tb
    _main.__dict__.pop("__file__", None)
    _main.__dict__.pop("__cached__", None)
else:
    _main.__dict__.pop("__file__", None)
    _main.__dict__.pop("__cached__", None)
finish(_main, _exitcode, _interrupted)
