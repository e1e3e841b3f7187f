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

mod chroot_tmp;
mod end_record;
mod error;
mod isolation;
mod limits;
mod outcome;
mod run;
mod supervise;
mod sys;
mod tree;
mod warm;

pub use error::SandboxError;
pub use isolation::Isolation;
pub use limits::{Limits, NODEJS_MEMORY_BYTES};
pub use outcome::{Exit, RunOutcome, Stream};
pub use run::RunRequest;
pub use tree::kill_uid;
pub use warm::WarmConfig;

use super::cgroup::Cgroups;
use super::uidpool::UidPool;
use crate::contract::bpf::SockFilter;
use crate::contract::BundleManifest;
use crate::seccomp::install::Programs;
use chroot_tmp::prepare_shared_tmp;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use sys::{cstr, path_c};

/// One language's prepared interpreter.
struct Language {
    interpreter: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    seccomp: Option<Programs>,
    seccomp_net: Option<Programs>,
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
    /// The namespace runs with network join (`serve` sets one up behind pasta, in the
    /// background), or None: they share the server's. Runs with network wait until it is
    /// decided (see [`Sandbox::attach_network`]); runs without never look.
    net: Decided<Option<super::netns::SandboxNet>>,
    /// Zygotes that fork Python runs (see [`warm`]), once started.
    warm: OnceLock<std::sync::Arc<warm::WarmPool>>,
    /// The private copies of the container's resolver files that runs with network get
    /// mounted (namespaces mode); None: they are copied into the rootfs instead.
    resolver: Option<super::netfiles::ResolverCopies>,
}

/// A value set once, possibly after the sandbox is shared between threads; readers wait for
/// it. (`OnceLock::wait` does this from Rust 1.86; this crate supports 1.81.)
struct Decided<T> {
    value: OnceLock<T>,
    lock: std::sync::Mutex<()>,
    set: std::sync::Condvar,
}

impl<T> Default for Decided<T> {
    fn default() -> Self {
        Decided {
            value: OnceLock::new(),
            lock: std::sync::Mutex::new(()),
            set: std::sync::Condvar::new(),
        }
    }
}

impl<T> Decided<T> {
    /// Set the value; a second call is ignored.
    fn set(&self, value: T) {
        if self.value.set(value).is_ok() {
            // Under the lock: a reader between its check and its wait holds it, so the
            // notification cannot fall in between.
            let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.set.notify_all();
        }
    }

    /// Wait at most `within` for the value to be set; whether it is.
    fn wait_for(&self, within: std::time::Duration) -> bool {
        let held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _held = self
            .set
            .wait_timeout_while(held, within, |()| self.value.get().is_none())
            .unwrap_or_else(|e| e.into_inner());
        self.value.get().is_some()
    }

    /// The value, once set.
    fn wait(&self) -> &T {
        if let Some(v) = self.value.get() {
            return v;
        }
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = self.value.get() {
                return v;
            }
            held = self.set.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }
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
            let real =
                crate::fsutil::in_root::resolve_in_root(rootfs, Path::new(&info.interpreter))
                    .map_err(|e| missing(std::io::Error::other(e)))?
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
        // The mounts go over the build's stubs, which must be plain files: a rootfs built
        // without them (`etc_stubs: false`), or with a symlink there, gets copies instead.
        let stubs = super::netfiles::RESOLVER_FILES.iter().all(|name| {
            std::fs::symlink_metadata(rootfs.join("etc").join(name)).is_ok_and(|m| m.is_file())
        });
        let resolver = if isolation.mount_ns && stubs {
            match super::netfiles::ResolverCopies::new() {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make a private directory for the resolver files; runs with network get them copied into the rootfs, which must then be writable");
                    None
                }
            }
        } else {
            None
        };
        Ok(Sandbox {
            rootfs: rootfs.to_path_buf(),
            languages,
            isolation,
            limits,
            pool: UidPool::new(lock_dir)?,
            cgroups,
            run_filter,
            net: Decided::default(),
            warm: OnceLock::new(),
            resolver,
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

    /// Decide where runs with network go: `net`'s namespace, or the server's with None. Call
    /// it exactly once, before or after runs start: until then a run with network waits.
    /// Later calls are ignored.
    pub fn attach_network(&self, net: Option<super::netns::SandboxNet>) {
        self.net.set(net);
    }

    /// Wait at most `within` until the network of runs is decided (a pasta start under way has
    /// finished, and cleaned up after itself); whether it is.
    pub fn settle_network(&self, within: std::time::Duration) -> bool {
        self.net.wait_for(within)
    }

    /// The namespace of runs with network, once [`Sandbox::attach_network`] decided it.
    fn network(&self) -> Option<&super::netns::SandboxNet> {
        self.net.wait().as_ref()
    }

    /// Each language with a warm pool and whether its zygote is up (empty: no warm pool).
    pub fn warm_zygotes(&self) -> Vec<(String, bool)> {
        self.warm.get().map(|w| w.zygotes()).unwrap_or_default()
    }

    /// Sandbox uids this server holds now.
    pub fn uids_leased(&self) -> usize {
        self.pool.leased()
    }

    /// Bring the resolver files runs with network see up to date with the container's (see
    /// [`super::netfiles`]); call before each run with network.
    pub fn sync_resolver_files(&self) {
        match &self.resolver {
            Some(copies) => copies.sync_from_container(self.behind_pasta()),
            None => super::netfiles::sync_from_container(&self.rootfs, self.behind_pasta()),
        }
    }

    /// Whether runs with network are behind pasta (see [`super::netns`]); waits like a run
    /// with network does.
    pub fn behind_pasta(&self) -> bool {
        self.network().is_some()
    }

    /// The host device nodes a run's private `/dev` binds (host path, mount point): the ones
    /// the build puts into every rootfs.
    fn dev_binds(&self) -> Result<Vec<(CString, CString)>, SandboxError> {
        crate::contract::devices::ROOTFS_DEVICES
            .iter()
            .map(|(path, _, _)| {
                let inside = path.trim_start_matches('/');
                Ok((cstr(path.as_bytes())?, path_c(&self.rootfs.join(inside))?))
            })
            .collect()
    }

    /// Whether runs get a memory cgroup (else memfd_create is refused).
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }
}
