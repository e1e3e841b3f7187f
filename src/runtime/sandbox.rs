//! The isolation sequence for one run (parent side): prepare everything, clone the child
//! (see [`super::child`] for the child side and the fork-safety choice), then supervise it:
//! a wall-clock deadline that kills the whole process tree, stdout and stderr captured
//! separately with byte caps, and everything reaped before the uid goes back to the pool.
//!
//! # /tmp without a mount namespace
//! With a mount namespace each run gets a fresh tmpfs on /tmp (size-capped, noexec, nosuid,
//! nodev, mode 1777) that disappears with the namespace. Without one (Docker's default
//! profile forbids `unshare`), the rootfs's `/tmp` is made root-owned mode 0711 at startup
//! (nobody can list or create entries in it), and each run gets `/tmp/run-<uid>` owned by
//! its pool uid, mode 0700, as working directory and `TMPDIR`/`HOME`. It must live inside the
//! rootfs because nothing outside is reachable after chroot. The directory is deleted before
//! and after the run (iteratively, through directory descriptors, never following a symlink
//! or crossing a mount: see [`super::cleanup`]; a tree that cannot be removed is set aside,
//! root-owned, and retried by the uid's next run); its size is bounded per file by
//! RLIMIT_FSIZE only (no tmpfs to cap the total), which is documented as the weaker
//! guarantee of that mode. Scripts that write to `/tmp/name` directly fail in that mode;
//! `tempfile`, `TMPDIR` and relative paths work.
//!
//! # Environment
//! The manifest's `env` for the language, `HOME` (the working directory, unless the manifest
//! sets it), `TMPDIR` in chroot mode, and the proxy variables only for runs with network.
//!
//! # Leftover processes
//! With a pid namespace the interpreter is pid 1: when it exits or is killed, the kernel
//! kills every other process of the namespace before the parent can reap it. Without one, the
//! run leads its own session; after it ends the process group is killed and then every
//! process of its uid (see [`kill_uid`]). A uid is also swept once before its first use by a
//! process, for leftovers of a crashed predecessor.
//!
//! # Memory
//! RLIMIT_AS bounds what a script maps. With `SANDBOX_CGROUPS=on`, where the container's
//! cgroup tree is writable, each uid also has a cgroup (see [`super::cgroup`]) with
//! `memory.max` = the address-space limit plus the /tmp size (so memfd files, the tmpfs /tmp
//! and pipe buffers count too) and `pids.max` = the process limit; a kill by the cgroup's OOM
//! killer is reported as the memory limit. It is off by default because joining a cgroup
//! costs each run a kernel RCU grace period (+8 ms p50 measured here). Without cgroups,
//! `memfd_create` is refused by the runtime's own stacked filter
//! ([`super::runfilter`]): the one way to hold unbounded RAM outside RLIMIT_AS that the policy
//! would otherwise allow.

use super::cgroup::Cgroups;
use super::child::{self, ChildPlan, RootMode, Step};
use super::cleanup;
use super::probe::Capabilities;
use super::uidpool::{Lease, UidPool};
use crate::contract::BundleManifest;
use crate::seccomp::install::{Programs, SockFilter};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Limits applied to every run.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// RLIMIT_AS in bytes, for languages without an entry in `memory_by_language`.
    pub memory_bytes: u64,
    /// RLIMIT_AS in bytes per language, where the interpreter's own address-space floor
    /// differs a lot from Python's. Node's V8 reserves about 700 MiB of address space before
    /// running a line (a 512 MiB code range, 64 MiB malloc arenas, thread stacks) and each
    /// worker thread another 800 MiB, so Python's 1 GiB would leave a Node script about
    /// 90 MiB of heap. Reservations are not memory in use; the limit still bounds what a
    /// script can touch, just from a higher floor.
    pub memory_by_language: BTreeMap<String, u64>,
    /// Cap on each of stdout and stderr; beyond it the run is killed and truncation reported.
    pub output_bytes: usize,
    /// RLIMIT_NPROC (processes and threads of the run's uid).
    pub processes: u64,
    /// Size of the private /tmp tmpfs, and RLIMIT_FSIZE.
    pub tmp_bytes: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
}

/// The default address-space limit of `nodejs` runs (see [`Limits::memory_by_language`]):
/// about 1.3 GiB above V8's reservations, so a JavaScript heap of 1 GiB fits and a memory
/// bomb ends in V8's own "JavaScript heap out of memory".
pub const NODEJS_MEMORY_BYTES: u64 = 2048 << 20;

impl Limits {
    /// RLIMIT_AS of a run of `language`.
    pub fn memory_for(&self, language: &str) -> u64 {
        self.memory_by_language
            .get(language)
            .copied()
            .unwrap_or(self.memory_bytes)
    }

    /// The limits one run of `language` gets: `memory_bytes` is that language's.
    pub fn for_language(&self, language: &str) -> Limits {
        Limits {
            memory_bytes: self.memory_for(language),
            memory_by_language: BTreeMap::new(),
            ..self.clone()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1024 << 20,
            memory_by_language: BTreeMap::from([("nodejs".to_owned(), NODEJS_MEMORY_BYTES)]),
            output_bytes: 64 << 20,
            processes: 64,
            tmp_bytes: 64 << 20,
            open_files: 256,
        }
    }
}

/// What isolation runs get, decided from the probe and the operator's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    pub mount_ns: bool,
    pub pid_ns: bool,
    pub ipc_ns: bool,
    pub uts_ns: bool,
    pub net_ns: bool,
    pub chroot: bool,
    pub setuid: bool,
    pub seccomp: bool,
}

impl Isolation {
    /// Everything the probe allows; `namespaces: false` turns namespaces off (to test or to
    /// mimic Docker's default profile).
    pub fn from_caps(caps: &Capabilities, namespaces: bool) -> Isolation {
        let mount_ns = namespaces && caps.mount_ns && caps.tmpfs;
        Isolation {
            mount_ns,
            pid_ns: namespaces && caps.pid_ns,
            ipc_ns: namespaces && caps.ipc_ns,
            uts_ns: namespaces && caps.uts_ns,
            net_ns: namespaces && caps.net_ns,
            chroot: caps.chroot,
            setuid: caps.setuid,
            seccomp: caps.seccomp,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("unsupported language")]
    UnsupportedLanguage,
    #[error("{path}: cannot read the seccomp program: {source}")]
    SeccompRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    SeccompParse {
        path: PathBuf,
        #[source]
        source: crate::seccomp::install::LoadError,
    },
    #[error("language {0}: the bundle has no seccomp programs and seccomp is required; rebuild the bundle or pass --insecure-no-sandbox")]
    NoSeccomp(String),
    #[error("language {language}: interpreter {path} is not in the rootfs: {source}")]
    Interpreter {
        language: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}: {source}")]
    Prepare {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pool(#[from] super::uidpool::PoolError),
    #[error("the code or an environment value contains a NUL byte")]
    Nul,
    #[error("cannot {what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox setup failed: cannot {}: {}", step.describe(), std::io::Error::from_raw_os_error(*errno))]
    Child { step: Step, errno: i32 },
    #[error(transparent)]
    Cgroup(#[from] super::cgroup::CgroupError),
}

/// One language's prepared interpreter.
struct Language {
    interpreter: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    seccomp: Option<Programs>,
    seccomp_net: Option<Programs>,
}

/// One run's input.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub language: String,
    pub code: String,
    pub network: bool,
    pub timeout: Duration,
    /// Extra environment for runs with network (proxy variables).
    pub network_env: Vec<(String, String)>,
}

/// How the interpreter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One run's result.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Exit,
    pub timed_out: bool,
    pub truncated: Option<Stream>,
    pub duration: Duration,
    pub limits: Limits,
    /// The run's memory cgroup killed a process of it (limit reached).
    pub memory_killed: bool,
    /// Chroot mode: the run's /tmp grew past its budget and the run was killed.
    pub tmp_exceeded: bool,
}

impl RunOutcome {
    /// dify's `exit_code`: the exit status, or -1 when killed by a signal or the deadline.
    pub fn exit_code(&self) -> i32 {
        match self.exit {
            Exit::Code(c) if !self.timed_out => c,
            _ => -1,
        }
    }

    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
            && !self.timed_out
            && self.truncated.is_none()
            && !self.tmp_exceeded
    }

    /// Short word for logs.
    pub fn outcome(&self) -> &'static str {
        if self.timed_out {
            "timeout"
        } else if self.truncated.is_some() {
            "truncated"
        } else if self.exit == Exit::Signal(libc::SIGSYS) {
            "seccomp"
        } else if self.success() {
            "ok"
        } else {
            "error"
        }
    }

    /// dify's `error` field: "" on success, else `process exited with code N\n`, at most one
    /// synthetic line, then the whole stderr.
    pub fn error_text(&self) -> String {
        if self.success() {
            return String::new();
        }
        let mut s = format!("process exited with code {}\n", self.exit_code());
        let stderr = String::from_utf8_lossy(&self.stderr);
        if self.timed_out {
            s.push_str("error: timeout\n");
        } else if let Some(stream) = self.truncated {
            let name = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            s.push_str(&format!(
                "error: output limit exceeded: {name} is longer than {} bytes and was truncated\n",
                self.limits.output_bytes
            ));
        } else if self.exit == Exit::Signal(libc::SIGSYS) {
            s.push_str("error: operation not permitted\n");
        } else if self.tmp_exceeded {
            s.push_str(&format!(
                "error: /tmp limit exceeded ({} MiB, {} entries, {} levels per script)\n",
                self.limits.tmp_bytes >> 20,
                super::tmpwatch::MAX_ENTRIES,
                super::tmpwatch::MAX_DEPTH
            ));
        } else if self.memory_killed || out_of_memory(&stderr) {
            s.push_str(&format!(
                "error: memory limit exceeded ({} MiB per script)\n",
                self.limits.memory_bytes >> 20
            ));
        } else if self.exit == Exit::Signal(libc::SIGXCPU) {
            s.push_str("error: cpu time limit exceeded\n");
        } else if self.exit == Exit::Signal(libc::SIGKILL) {
            s.push_str("error: killed (cpu time or memory limit)\n");
        } else if let Exit::Signal(sig) = self.exit {
            s.push_str(&format!("error: killed by signal {sig}\n"));
        }
        s.push_str(&stderr);
        s
    }
}

/// What interpreters print when an allocation fails: Python's MemoryError; V8's fatal heap
/// errors ("Reached heap limit", "CALL_AND_RETRY_LAST Allocation failed - JavaScript heap out
/// of memory", "Fatal process OOM in ..." when a reservation fails); Node's failed Buffer
/// allocation; C++'s bad_alloc thrown out of V8 or a native module.
fn out_of_memory(stderr: &str) -> bool {
    [
        "MemoryError",
        "JavaScript heap out of memory",
        "Fatal process OOM",
        "Array buffer allocation failed",
        "std::bad_alloc",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// The sandbox: a rootfs, its languages, the isolation the platform allows, a uid pool.
pub struct Sandbox {
    rootfs: PathBuf,
    languages: BTreeMap<String, Language>,
    pub isolation: Isolation,
    pub limits: Limits,
    pool: UidPool,
    /// Per-uid memory and pids cgroups, where the platform allows them.
    cgroups: Option<Cgroups>,
    /// Stacked on the policy's filter (see [`super::runfilter`]): memfd_create without
    /// cgroups, other processes' pids without a pid namespace.
    run_filter: Vec<SockFilter>,
    /// The namespace runs with network join, where the server set one up (`serve`).
    net: Option<super::netns::SandboxNet>,
}

fn cstr(b: &[u8]) -> Result<CString, SandboxError> {
    CString::new(b).map_err(|_| SandboxError::Nul)
}

fn path_c(p: &Path) -> Result<CString, SandboxError> {
    cstr(p.as_os_str().as_bytes())
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Os { what, source }
}

/// A descriptor at >= 10 so the child's dup2 onto 0..=3 never clobbers another one.
fn high_fd(fd: RawFd) -> Result<OwnedFd, SandboxError> {
    // SAFETY: fd is a valid descriptor we own; the duplicate is owned by the result.
    unsafe {
        let new = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if new < 0 {
            return Err(SandboxError::Os {
                what: "duplicate a descriptor",
                source: err,
            });
        }
        Ok(OwnedFd::from_raw_fd(new))
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("create a pipe")(std::io::Error::last_os_error()));
    }
    Ok((high_fd(fds[0])?, high_fd(fds[1])?))
}

/// The script on a sealed-off memfd, read by the interpreter as stdin (never argv).
fn code_fd(code: &[u8]) -> Result<OwnedFd, SandboxError> {
    // SAFETY: memfd_create returns a new descriptor we own.
    let fd = unsafe { libc::memfd_create(c"prebake-code".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(os("create the code memfd")(std::io::Error::last_os_error()));
    }
    let fd = high_fd(fd)?;
    let mut off = 0;
    while off < code.len() {
        // SAFETY: writing from a live slice.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                code[off..].as_ptr().cast(),
                code.len() - off,
            )
        };
        if n <= 0 {
            return Err(os("write the code memfd")(std::io::Error::last_os_error()));
        }
        off += n as usize;
    }
    // SAFETY: lseek on our descriptor.
    unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) };
    Ok(fd)
}

fn load_programs(bundle: &Path, rel: &str) -> Result<Programs, SandboxError> {
    let path = bundle.join(rel);
    let bytes = std::fs::read(&path).map_err(|source| SandboxError::SeccompRead {
        path: path.clone(),
        source,
    })?;
    Programs::from_bytes(&bytes).map_err(|source| SandboxError::SeccompParse { path, source })
}

impl Sandbox {
    /// Prepare a sandbox over an unpacked `rootfs` for the bundle's languages.
    pub fn new(
        bundle_dir: &Path,
        manifest: &BundleManifest,
        rootfs: &Path,
        isolation: Isolation,
        limits: Limits,
        lock_dir: &Path,
    ) -> Result<Sandbox, SandboxError> {
        // Absolute, symlink-free: the child chdirs and mounts by this path.
        let rootfs = &std::fs::canonicalize(rootfs).map_err(|source| SandboxError::Prepare {
            path: rootfs.to_path_buf(),
            what: "resolve the rootfs path",
            source,
        })?;
        // Host-side code below (and per run) works on the rootfs's tmp, dev and etc by path:
        // none of them may be a symlink, whatever unpacked the tree.
        super::unpack::check_runtime_paths(rootfs).map_err(|e| SandboxError::Prepare {
            path: rootfs.to_path_buf(),
            what: "check the rootfs's tmp, dev, etc and var (no symlinks)",
            source: std::io::Error::other(e),
        })?;
        let mut languages = BTreeMap::new();
        for (name, info) in &manifest.languages {
            // Resolved inside the rootfs: its symlinks (a venv's bin/python -> /usr/bin/...)
            // point into the rootfs, never at the host.
            let missing = |source| SandboxError::Interpreter {
                language: name.clone(),
                path: PathBuf::from(&info.interpreter),
                source,
            };
            let real = crate::plan::ldso::resolve_in_root(rootfs, Path::new(&info.interpreter))
                .map_err(|e| missing(std::io::Error::other(e.to_string())))?
                .ok_or_else(|| missing(std::io::ErrorKind::NotFound.into()))?;
            let rel = real.strip_prefix("/").unwrap_or(&real).to_owned();
            std::fs::metadata(rootfs.join(&rel)).map_err(missing)?;
            let (seccomp, seccomp_net) = match (&info.seccomp, isolation.seccomp) {
                (Some(files), true) => (
                    Some(load_programs(bundle_dir, &files.bpf)?),
                    Some(load_programs(bundle_dir, &files.bpf_net)?),
                ),
                (None, true) => return Err(SandboxError::NoSeccomp(name.clone())),
                (_, false) => (None, None),
            };
            // Without chroot (insecure mode only) the interpreter is reached through the
            // host path of the rootfs.
            let interpreter = if isolation.chroot {
                cstr(info.interpreter.as_bytes())?
            } else {
                path_c(&rootfs.join(&rel))?
            };
            let mut env = Vec::new();
            for (k, v) in &info.env {
                env.push(cstr(format!("{k}={v}").as_bytes())?);
            }
            languages.insert(
                name.clone(),
                Language {
                    interpreter,
                    args: info
                        .args
                        .iter()
                        .map(|a| cstr(a.as_bytes()))
                        .collect::<Result<_, _>>()?,
                    env,
                    seccomp,
                    seccomp_net,
                },
            );
        }
        if isolation.chroot && !isolation.mount_ns {
            prepare_shared_tmp(rootfs)?;
        }
        // SANDBOX_CGROUPS=on: per-uid cgroups where the tree is writable. Off by default:
        // moving each run's process into its cgroup waits for an RCU grace period in the
        // kernel (cgroup_threadgroup_rwsem), measured at +8 ms p50 per run on this project's
        // machine (cgroup v1), ten times the rest of the API's overhead; refusing memfd_create
        // closes the same hole at no cost.
        let cgroups_on = std::env::var("SANDBOX_CGROUPS").is_ok_and(|v| v == "on");
        let cgroups = if isolation.setuid && cgroups_on {
            match Cgroups::detect() {
                Ok(c) => {
                    tracing::info!(tree = ?c.tree(), "per-run memory and pids cgroups");
                    Some(c)
                }
                Err(why) => {
                    tracing::warn!(
                        "no writable cgroup tree ({why}): memory is bounded by RLIMIT_AS and the tmpfs size, and memfd_create is refused"
                    );
                    None
                }
            }
        } else {
            None
        };
        let run_filter = if isolation.seccomp {
            super::runfilter::build(cgroups.is_none(), !isolation.pid_ns)
        } else {
            Vec::new()
        };
        Ok(Sandbox {
            rootfs: rootfs.to_path_buf(),
            languages,
            isolation,
            limits,
            pool: UidPool::new(lock_dir)?,
            cgroups,
            run_filter,
            net: None,
        })
    }

    pub fn has_language(&self, name: &str) -> bool {
        self.languages.contains_key(name)
    }

    /// The languages this bundle serves, sorted.
    pub fn language_names(&self) -> Vec<&str> {
        self.languages.keys().map(String::as_str).collect()
    }

    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// From now on runs with network join `net`'s namespace instead of the server's.
    pub fn attach_network(&mut self, net: super::netns::SandboxNet) {
        self.net = Some(net);
    }

    /// Whether runs with network are behind pasta (see [`super::netns`]).
    pub fn behind_pasta(&self) -> bool {
        self.net.is_some()
    }

    /// Whether runs get a memory cgroup (else memfd_create is refused).
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Run one script to completion (blocking; call from a blocking thread).
    pub fn run(&self, req: &RunRequest) -> Result<RunOutcome, SandboxError> {
        let lang = self
            .languages
            .get(&req.language)
            .ok_or(SandboxError::UnsupportedLanguage)?;
        let lease = self.pool.acquire()?;
        let iso = self.isolation;
        let uid = lease.uid;
        if lease.needs_sweep && iso.setuid {
            kill_uid(uid);
        }
        // Without a mount namespace: the per-run /tmp directory (see the module docs).
        let run_tmp = (iso.chroot && !iso.mount_ns).then(|| format!("/tmp/run-{uid}"));
        let _tmp_guard = match &run_tmp {
            Some(inside) => Some(RunTmp::create(
                &self.rootfs.join(inside.trim_start_matches('/')),
                uid,
                iso.setuid,
            )?),
            None => None,
        };

        let code = code_fd(req.code.as_bytes())?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (rep_r, rep_w) = pipe()?;

        let cwd = run_tmp.clone().unwrap_or_else(|| {
            if iso.chroot {
                "/tmp".into()
            } else {
                "/".into()
            }
        });
        let mut env: Vec<CString> = lang.env.clone();
        let has = |env: &[CString], k: &str| {
            env.iter()
                .any(|e| e.as_bytes().starts_with(format!("{k}=").as_bytes()))
        };
        if !has(&env, "HOME") {
            env.push(cstr(format!("HOME={cwd}").as_bytes())?);
        }
        if run_tmp.is_some() {
            env.push(cstr(format!("TMPDIR={cwd}").as_bytes())?);
        }
        if req.network {
            for (k, v) in &req.network_env {
                env.push(cstr(format!("{k}={v}").as_bytes())?);
            }
        }
        let mut argv: Vec<CString> = vec![lang.interpreter.clone()];
        argv.extend(lang.args.iter().cloned());
        argv.push(c"-".into());

        let mut flags = 0;
        if iso.mount_ns {
            flags |= libc::CLONE_NEWNS;
        }
        if iso.pid_ns {
            flags |= libc::CLONE_NEWPID;
        }
        if iso.ipc_ns {
            flags |= libc::CLONE_NEWIPC;
        }
        if iso.uts_ns {
            flags |= libc::CLONE_NEWUTS;
        }
        if iso.net_ns && !req.network {
            flags |= libc::CLONE_NEWNET;
        }
        let root_mode = if iso.mount_ns {
            RootMode::MountNs
        } else if iso.chroot {
            RootMode::Chroot
        } else {
            RootMode::None
        };
        let secs = req.timeout.as_secs() + 1;
        let lim = |soft: u64, hard: u64| libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        let l = &self.limits.for_language(&req.language);
        let rlimits = vec![
            (libc::RLIMIT_AS, lim(l.memory_bytes, l.memory_bytes)),
            (libc::RLIMIT_CPU, lim(secs, secs + 1)),
            (libc::RLIMIT_FSIZE, lim(l.tmp_bytes, l.tmp_bytes)),
            (libc::RLIMIT_NOFILE, lim(l.open_files, l.open_files)),
            (libc::RLIMIT_NPROC, lim(l.processes, l.processes)),
            (libc::RLIMIT_CORE, lim(0, 0)),
        ];
        let cgroup = match &self.cgroups {
            Some(c) => {
                Some(c.for_run(uid, l.memory_bytes.saturating_add(l.tmp_bytes), l.processes)?)
            }
            None => None,
        };
        let rootfs_c = path_c(&self.rootfs)?;
        let dev = self.rootfs.join("dev");
        let devs = ["null", "zero", "urandom"]
            .iter()
            .map(|d| Ok((path_c(&Path::new("/dev").join(d))?, path_c(&dev.join(d))?)))
            .collect::<Result<Vec<_>, SandboxError>>()?;
        let seccomp = if req.network {
            lang.seccomp_net.as_ref()
        } else {
            lang.seccomp.as_ref()
        };
        let argv_ptrs: Vec<*const libc::c_char> = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs: Vec<*const libc::c_char> = env
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let plan = ChildPlan {
            clone_flags: flags,
            root_mode,
            rootfs: rootfs_c,
            tmp_target: path_c(&self.rootfs.join("tmp"))?,
            tmp_opts: cstr(format!("size={},nr_inodes=4096,mode=1777", l.tmp_bytes).as_bytes())?,
            dev_target: path_c(&dev)?,
            devs,
            cwd: cstr(cwd.as_bytes())?,
            hostname: iso.uts_ns.then(|| c"sandbox".into()),
            exe: lang.interpreter.clone(),
            argv: argv_ptrs,
            envp: envp_ptrs,
            rlimits,
            ids: iso.setuid.then_some((uid, uid)),
            seccomp,
            extra_filter: (!self.run_filter.is_empty() && seccomp.is_some())
                .then_some(self.run_filter.as_slice()),
            cgroup_procs: cgroup.as_ref().map_or([-1, -1], |c| c.procs_fds()),
            netns: match (&self.net, req.network) {
                (Some(net), true) => net.fd(),
                _ => -1,
            },
            stdin: code.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            report: rep_w.as_raw_fd(),
        };

        let start = Instant::now();
        // SAFETY: the plan and everything it points to live until after spawn returns in the
        // parent; the child never returns from spawn.
        let pid = unsafe { child::spawn(&plan) }
            .map_err(|e| os("clone the sandbox process")(std::io::Error::from_raw_os_error(e)))?;
        drop(plan);
        drop((code, out_w, err_w, rep_w));
        let child = Child::new(pid, &lease, iso)?;

        // Did the exec happen? EOF on the report pipe means yes.
        let mut rep = [0u8; 8];
        // Bounded by the run's deadline: a child stuck before exec (it is a copy of a
        // multi-threaded process) must not hold this worker and its uid forever.
        let Some(n) = read_full(rep_r.as_raw_fd(), &mut rep, start + req.timeout) else {
            child.kill();
            child.reap();
            return Err(SandboxError::Os {
                what: "finish the sandbox setup before the deadline",
                source: std::io::ErrorKind::TimedOut.into(),
            });
        };
        if n == 8 {
            let step = u32::from_le_bytes(rep[..4].try_into().expect("4 bytes"));
            let errno = i32::from_le_bytes(rep[4..].try_into().expect("4 bytes"));
            child.kill();
            child.reap();
            return Err(SandboxError::Child {
                step: Step::from_u32(step).unwrap_or(Step::Exec),
                errno,
            });
        }
        drop(rep_r);

        let deadline = start + req.timeout;
        let tmp_watch = _tmp_guard.as_ref().map(|t| (t.0.as_path(), l.tmp_bytes));
        let sup = supervise(&child, out_r, err_r, deadline, l.output_bytes, tmp_watch);
        let exit = child.reap();
        Ok(RunOutcome {
            stdout: sup.stdout,
            stderr: sup.stderr,
            exit,
            timed_out: sup.timed_out,
            truncated: sup.truncated,
            duration: start.elapsed(),
            limits: l.clone(),
            memory_killed: cgroup.as_ref().is_some_and(|c| c.oom_killed()),
            tmp_exceeded: sup.tmp_exceeded,
        })
    }
}

/// Make the rootfs's /tmp a root-owned, traverse-only directory (chroot mode, module docs).
/// Through descriptors opened with `O_NOFOLLOW`, so a `tmp` symlink can never redirect the
/// chmod to a host directory.
fn prepare_shared_tmp(rootfs: &Path) -> Result<(), SandboxError> {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::{fchmod, mkdirat, Mode};
    use nix::unistd::fchown;
    let tmp = rootfs.join("tmp");
    let prep = |what| {
        let tmp = tmp.clone();
        move |e: nix::Error| SandboxError::Prepare {
            path: tmp,
            what,
            source: std::io::Error::from_raw_os_error(e as i32),
        }
    };
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let root = open(rootfs, dir_flags, Mode::empty()).map_err(prep("open the rootfs"))?;
    match mkdirat(&root, "tmp", Mode::from_bits_truncate(0o711)) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(prep("create /tmp in the rootfs")(e)),
    }
    let fd = openat(&root, "tmp", dir_flags, Mode::empty())
        .map_err(prep("open /tmp in the rootfs (is it a symlink?)"))?;
    fchown(&fd, Some(0.into()), Some(0.into())).map_err(prep("give /tmp to root"))?;
    fchmod(&fd, Mode::from_bits_truncate(0o711)).map_err(prep("make /tmp traverse-only"))?;
    Ok(())
}

/// The per-run /tmp directory of chroot mode; removed on drop.
struct RunTmp(PathBuf);

impl RunTmp {
    fn create(path: &Path, uid: u32, chown: bool) -> Result<RunTmp, SandboxError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let prep = |what| {
            let p = path.to_path_buf();
            move |source| SandboxError::Prepare {
                path: p,
                what,
                source,
            }
        };
        // A leftover of this uid (a crashed run, or a tree the last cleanup could not remove):
        // remove it, or at least set it aside, so this run can create its directory.
        if let Err(e) = cleanup::remove_tree(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover run directory; setting it aside");
            cleanup::set_aside(path).map_err(prep("set aside a leftover run directory"))?;
        }
        // Trees set aside earlier for this uid (only its lease holder touches them).
        if let Err(e) = cleanup::empty_trash(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a set-aside run directory yet");
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(prep("create the run's /tmp directory"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(prep("set the run's /tmp mode"))?;
        if chown {
            std::os::unix::fs::chown(path, Some(uid), Some(uid))
                .map_err(prep("give the run's /tmp to its uid"))?;
        }
        Ok(RunTmp(path.to_path_buf()))
    }
}

impl Drop for RunTmp {
    /// Remove the run's tree without recursion, never following symlinks or crossing mounts
    /// (see [`cleanup`]); if that fails, set it aside so the uid's next run starts clean.
    /// Never panics: this runs on a server worker thread.
    fn drop(&mut self) {
        let path = &self.0;
        let done = std::panic::catch_unwind(|| {
            if let Err(e) = cleanup::remove_tree(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the run's /tmp directory; setting it aside");
                if let Err(e) = cleanup::set_aside(path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot set the run's /tmp directory aside");
                }
            }
        });
        if done.is_err() {
            tracing::error!(path = %path.display(), "internal error while removing the run's /tmp directory");
        }
    }
}

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
        if pid > 0 {
            let mut st = 0;
            libc::waitpid(pid as libc::pid_t, &mut st, 0);
        }
    }
}

/// The running child: its pid, a pidfd for race-free signalling and waiting.
struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    uid: Option<u32>,
    pid_ns: bool,
    reaped: std::cell::Cell<Option<Exit>>,
}

impl Child {
    fn new(pid: libc::pid_t, lease: &Lease<'_>, iso: Isolation) -> Result<Child, SandboxError> {
        // SAFETY: pidfd_open on our own unreaped child (its pid cannot be reused yet).
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
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
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
            uid: iso.setuid.then_some(lease.uid),
            pid_ns: iso.pid_ns,
            reaped: std::cell::Cell::new(None),
        })
    }

    /// Kill the whole tree: pid 1 of its pid namespace takes everything with it; without a
    /// pid namespace the process group and then every process of the run's uid.
    fn kill(&self) {
        // SAFETY: signalling through the pidfd cannot hit a recycled pid.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        self.kill_rest();
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
    fn reap(&self) -> Exit {
        if let Some(e) = self.reaped.get() {
            return e;
        }
        // Wait without reaping first, so the leftovers can be killed while the zombie still
        // holds the pid (see `kill_rest`), then reap.
        // SAFETY: waiting for our own child into a zeroed siginfo.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            while libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            ) < 0
                && errno_is_eintr()
            {}
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

/// Read until `buf` is full or EOF; None when `deadline` passes first.
fn read_full(fd: RawFd, buf: &mut [u8], deadline: Instant) -> Option<usize> {
    let mut off = 0;
    while off < buf.len() {
        let wait_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if rc < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if rc == 0 {
            return None;
        }
        // SAFETY: reading into a live buffer.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        off += n as usize;
    }
    Some(off)
}

struct Supervised {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    timed_out: bool,
    truncated: Option<Stream>,
    tmp_exceeded: bool,
}

/// Read both pipes until EOF while watching the deadline, the output caps and, in chroot
/// mode, the size of the run's /tmp directory (`tmp`: its path and byte budget; see
/// [`super::tmpwatch`]).
fn supervise(
    child: &Child,
    out: OwnedFd,
    err: OwnedFd,
    deadline: Instant,
    cap: usize,
    tmp: Option<(&Path, u64)>,
) -> Supervised {
    let mut res = Supervised {
        stdout: Vec::new(),
        stderr: Vec::new(),
        timed_out: false,
        truncated: None,
        tmp_exceeded: false,
    };
    let mut next_tmp_check = Instant::now() + super::tmpwatch::INTERVAL;
    let mut open = [true, true];
    let mut exited = false;
    let mut killed = false;
    let mut buf = vec![0u8; 64 * 1024];
    let fds = [out.as_raw_fd(), err.as_raw_fd()];
    // Until both pipes are at EOF *and* the interpreter has exited: a script that closes its
    // stdout and stderr and then sleeps must still meet the deadline.
    while open[0] || open[1] || !exited {
        let now = Instant::now();
        if now >= deadline && !killed {
            res.timed_out = true;
            child.kill();
            killed = true;
        }
        if let Some((dir, max)) = tmp {
            if !killed && now >= next_tmp_check {
                next_tmp_check = now + super::tmpwatch::INTERVAL;
                if super::tmpwatch::measure(dir, max).is_ok_and(|u| u.exceeds(max)) {
                    res.tmp_exceeded = true;
                    child.kill();
                    killed = true;
                }
            }
        }
        let mut pfds = vec![];
        for (i, fd) in fds.iter().enumerate() {
            if open[i] {
                pfds.push(libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        if !exited {
            pfds.push(libc::pollfd {
                fd: child.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let wait_ms = if killed {
            // After SIGKILL of the whole tree the pipes close promptly.
            1000
        } else {
            let until = match tmp {
                Some(_) => deadline.min(next_tmp_check),
                None => deadline,
            };
            until
                .saturating_duration_since(now)
                .as_millis()
                .clamp(1, i32::MAX as u128) as i32
        };
        // SAFETY: poll on a live array.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
        if rc < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if rc == 0 && killed {
            // Nothing closes the pipes even after the kill: give up on them.
            break;
        }
        for p in &pfds {
            if p.revents == 0 {
                continue;
            }
            if p.fd == child.pidfd.as_raw_fd() {
                exited = true;
                // The interpreter ended: reap it and kill what is left, so that pipes held
                // open by leftover processes close.
                child.reap();
                continue;
            }
            let i = if p.fd == fds[0] { 0 } else { 1 };
            // SAFETY: reading into a live buffer.
            let n = unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                open[i] = false;
                continue;
            }
            let target = if i == 0 {
                &mut res.stdout
            } else {
                &mut res.stderr
            };
            let room = cap.saturating_sub(target.len());
            let n = n as usize;
            target.extend_from_slice(&buf[..n.min(room)]);
            if n > room && res.truncated.is_none() {
                res.truncated = Some(if i == 0 {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                });
                if !killed {
                    child.kill();
                    killed = true;
                }
            }
        }
    }
    res
}
