//! The warm pool: per Python language, a zygote (an interpreter started once inside the
//! sandbox root, its start-up done and the preload list imported) that forks each run.
//!
//! # What a run gets
//! The zygote never runs user code. It clones itself ahead of the runs, with `CLONE_PARENT`
//! and the runs' namespace flags (so a run is pid 1 of its own pid namespace and this
//! process's child, as a cold run is), and announces each such *spare* with its pid and a
//! socket connected to it, of which it keeps no copy. For each run the runtime prepares
//! exactly what it prepares for a cold run (uid lease, private /tmp directory or tmpfs
//! options, pipes, code memfd, rlimits, environment, cgroup and network-namespace
//! descriptors) and sends the plan and descriptors to the oldest spare itself; a run that
//! finds no spare goes to the zygote, which clones it on its path and answers its pid. The
//! run's process applies the cold run's steps in the cold run's order
//! ([`crate::runtime::child`]): cgroup, network namespace, descriptors (all closed but its
//! pipes), own session, its tmpfs `/tmp`, working directory, hostname, rlimits, groups, gid,
//! uid, parent-death signal, `no_new_privs`, a clean environment, the run filter and the
//! policy's seccomp filter last. Then it runs the script as `python -` runs its standard
//! input (`zygote.py`). The runtime keeps the deadline, the process-tree kill, the output
//! caps and the reaping, unchanged.
//!
//! The zygote keeps [`SPARES`] spares, each waiting in its new mount, pid, ipc and uts
//! namespaces for a plan, so the clone and the interpreter's after-fork work are off the
//! runs' path; a run without network enters its empty network namespace first thing, as the
//! clone flag would have. A spare is replaced once the run that took it is over and its
//! process gone ([`SpareDue`]), not at the hand-over, where the clone took the CPU from the
//! run. A spare no run took is killed and reaped with its zygote. The hand-over to a spare
//! does not pass through the zygote: one wake-up fewer on the run's path. While it waits, a
//! spare copies the zygote's pages that runs write (learned once from fixed sample runs,
//! [`prefault`]), so that the run does not take a fault for each.
//!
//! Whatever a zygote holds, every later run of it can read (ctypes reads memory). So the
//! per-run plan it may see names only flags, limits, ids and paths; the environment (with the
//! proxy settings only runs with network may have) travels on a pipe of its own that only
//! the run reads, after its whole confinement (the seccomp filter included), right before the
//! script. That pipe is also the run's gate, written once the run's pid is known. A zygote
//! that takes longer than [`FORK_WITHIN`] to answer for a run it clones is killed with its
//! spares and the run started cold, with descriptors of its own; the process the zygote made
//! for the run finds no `GO` and exits without running the script a second time, and is
//! killed and reaped with its zygote.
//!
//! # What the zygote shares between runs
//! Every run forked from one zygote starts from the same memory image, as Android's and
//! Chromium's zygotes do: the same address-space layout (ASLR is randomised once per zygote,
//! not per run), the same `str` hash secret, and the same already-imported modules. No run
//! can change what the next one sees: each is a copy-on-write fork of the untouched zygote.
//! A run can learn the layout and the hash secret its successors will have, which matters to
//! an exploit that needs both a memory-corruption bug and a leaked address in another run. The
//! respawn policy bounds that: a zygote serves at most `warm_pool_max_forks` runs (it is
//! replaced in the background, without a run waiting), and is replaced whenever it
//! misbehaves. `random` is reseeded in every run (CPython's after-fork hook).
//!
//! # Differences a script can see
//! `sys.modules` already holds the preload list and what the zygote needs (`ctypes`,
//! `socket`, `json`, `struct`); jinja2's default environment for templates made from strings
//! exists already (built once, as Dify's Jinja2 preload builds it); the stack below the
//! script's `<module>` frame has the zygote's frames (`traceback.print_stack()` shows them;
//! tracebacks of exceptions do not); the interpreter's final module teardown is skipped
//! after the script's globals are cleared and collected, `atexit` ran and the streams were
//! flushed.
//!
//! # Failure
//! A zygote that cannot be started, dies, or answers wrongly costs a run only its latency:
//! the run starts cold, the zygote is killed, and a new one is started in the background (at
//! most one attempt per [`RETRY_AFTER`] when starting keeps failing).

mod prefault;
mod zygote;

use super::{Sandbox, SandboxError};
use crate::contract::bpf::program_bytes;
use crate::runtime::child::{ChildPlan, RootMode, Step};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zygote::{Recipe, Zygote};

/// What Dify's runners import (its Python runner: json, base64; its Jinja2 runner: jinja2)
/// and the HTTP clients scripts use most; absent ones are skipped.
pub const DEFAULT_PRELOAD: &[&str] = &["json", "base64", "jinja2", "requests", "httpx"];
/// Runs one zygote serves before it is replaced.
pub const DEFAULT_MAX_FORKS: u64 = 1000;
/// Runs' processes a zygote keeps cloned ahead. Each is asked for once a run is over (see
/// [`SpareDue`]), so a run that comes while the last one's process is still exiting needs a
/// second; more would only hold memory on a 2-core machine.
const SPARES: usize = 2;
/// How long a zygote may take to import its preload list.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The longest the zygote may take to answer for a run it clones before it counts as stuck.
const FORK_WITHIN: Duration = Duration::from_secs(2);
/// The first byte on a run's gate: the runtime has its pid, it may run (see `zygote.py`).
const GO: &[u8] = b"G";
/// After a failed start, the next attempt waits this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The operator's choice (config keys `warm_pool`, `warm_pool_preload`,
/// `warm_pool_max_forks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmConfig {
    pub enabled: bool,
    pub preload: Vec<String>,
    pub max_forks: u64,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            enabled: true,
            preload: DEFAULT_PRELOAD.iter().map(|s| (*s).to_owned()).collect(),
            max_forks: DEFAULT_MAX_FORKS,
        }
    }
}

struct Slot {
    recipe: Recipe,
    /// The namespace flags of a spare: a run's without `CLONE_NEWNET` (see zygote.py).
    spare_flags: libc::c_int,
    zygote: Mutex<Option<Zygote>>,
    /// A start is queued or under way.
    starting: AtomicBool,
    /// No start before this (after a failed one).
    retry_at: Mutex<Option<Instant>>,
}

pub(super) struct WarmPool {
    slots: BTreeMap<String, Slot>,
    starts: mpsc::Sender<String>,
    max_forks: u64,
}

/// A language served by an interpreter that can be a zygote: CPython.
fn is_python(language: &str, interpreter: &str) -> bool {
    language.starts_with("python")
        || std::path::Path::new(interpreter)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("python"))
}

fn hex_programs(progs: Option<&crate::seccomp::install::Programs>) -> Vec<String> {
    progs.map_or_else(Vec::new, |p| {
        p.programs()
            .iter()
            .map(|prog| hex::encode(program_bytes(prog)))
            .collect()
    })
}

fn to_str(c: &CString) -> &str {
    // Every string here came from UTF-8 (paths and options the runtime formatted).
    c.to_str().unwrap_or_default()
}

impl Sandbox {
    /// Start the warm pool (in the background) for the bundle's Python languages. Runs start
    /// cold until their zygote is ready.
    pub fn start_warm_pool(&self, config: &WarmConfig) -> Result<(), SandboxError> {
        if !config.enabled {
            tracing::info!("warm pool off: every run starts a fresh interpreter");
            return Ok(());
        }
        if !self.isolation.chroot {
            tracing::warn!("warm pool off: it needs the sandbox root (chroot) to confine runs");
            return Ok(());
        }
        let steps: BTreeMap<String, u32> = Step::ALL
            .iter()
            .map(|s| (format!("{s:?}"), *s as u32))
            .collect();
        let self_pid_slots = crate::runtime::runfilter::self_pid_slots(&self.run_filter);
        // A spare is cloned before its run is known: as for a run with network, the run
        // without enters a network namespace of its own first (see zygote.py).
        let spare_flags = self.isolation.clone_flags(true);
        let vectored_copy = prefault::vectored_populate();
        tracing::info!(
            vectored_copy,
            "warm pool: spares copy pages ahead {}",
            if vectored_copy {
                "with one process_madvise call per 256 KiB"
            } else {
                "with one madvise call per range (process_madvise cannot populate here: Linux before 6.13, or refused)"
            }
        );
        let mut slots = BTreeMap::new();
        for (name, lang) in &self.languages {
            if !is_python(name, to_str(&lang.interpreter)) {
                continue;
            }
            let mut argv = vec![lang.interpreter.clone()];
            argv.extend(lang.args.iter().cloned());
            let mut cold_argv: Vec<&str> = argv.iter().map(to_str).collect();
            cold_argv.push("-");
            let setup = serde_json::json!({
                "steps": steps,
                "sys_clone": libc::SYS_clone,
                "spare_flags": spare_flags,
                "spares": SPARES,
                "sys_seccomp": libc::SYS_seccomp,
                "sys_move_mount": libc::SYS_move_mount,
                "sys_pidfd_open": libc::SYS_pidfd_open,
                "sys_process_madvise": libc::SYS_process_madvise,
                "vectored_copy": vectored_copy,
                "argv": cold_argv,
                "policies": {
                    "plain": hex_programs(lang.seccomp.as_ref()),
                    "net": hex_programs(lang.seccomp_net.as_ref()),
                },
                "run_filter": hex::encode(program_bytes(&self.run_filter)),
                "self_pid_slots": self_pid_slots,
                "end_record": hex::encode(super::end_record::MAGIC),
                "preload": config.preload,
                "samples": prefault::samples(),
            });
            let dev = self.rootfs.join("dev");
            let devs = self.dev_binds()?;
            let recipe = Recipe {
                language: name.clone(),
                clone_flags: if self.isolation.mount_ns {
                    libc::CLONE_NEWNS
                } else {
                    0
                },
                root_mode: if self.isolation.mount_ns {
                    RootMode::MountNs
                } else {
                    RootMode::Chroot
                },
                rootfs: super::sys::path_c(&self.rootfs)?,
                tmp_target: super::sys::path_c(&self.rootfs.join("tmp"))?,
                dev_target: super::sys::path_c(&dev)?,
                devs,
                exe: lang.interpreter.clone(),
                argv,
                env: lang.env.clone(),
                setup: setup.to_string().into_bytes(),
            };
            slots.insert(
                name.clone(),
                Slot {
                    recipe,
                    spare_flags,
                    zygote: Mutex::new(None),
                    starting: AtomicBool::new(false),
                    retry_at: Mutex::new(None),
                },
            );
        }
        if slots.is_empty() {
            tracing::info!("warm pool: no Python language in this bundle, nothing to warm");
            return Ok(());
        }
        let (tx, rx) = mpsc::channel();
        let pool = Arc::new(WarmPool {
            slots,
            starts: tx,
            max_forks: config.max_forks.max(1),
        });
        let manager = pool.clone();
        // A thread of its own that lives as long as the process: zygotes (and, through
        // CLONE_PARENT, every warm run) have it as their parent thread, and their
        // parent-death signal fires when that thread ends.
        std::thread::Builder::new()
            .name("warm-pool".into())
            .spawn(move || manager.manage(&rx))
            .map_err(|source| SandboxError::Os {
                what: "start the warm pool's thread",
                source,
            })?;
        for name in pool.slots.keys() {
            pool.request_start(name);
        }
        let _ = self.warm.set(pool);
        Ok(())
    }
}

impl WarmPool {
    /// Each warm language, and whether its zygote is up now.
    pub fn zygotes(&self) -> Vec<(String, bool)> {
        self.slots
            .iter()
            .map(|(name, slot)| {
                let up = slot.zygote.lock().is_ok_and(|z| z.is_some());
                (name.clone(), up)
            })
            .collect()
    }

    /// `language`'s zygote is to clone the next run's process now (see [`SpareDue`]).
    fn spare_due(&self, language: &str) {
        let Some(slot) = self.slots.get(language) else {
            return;
        };
        // Held by a fork under way: its run asks in turn when it is over.
        let Ok(mut guard) = slot.zygote.try_lock() else {
            return;
        };
        let Some(zygote) = guard.as_mut() else {
            return;
        };
        if let Err(e) = zygote.spare_due(SPARES) {
            self.replace_broken(language, guard, &e, "the zygote is replaced");
        }
    }

    /// Take `language`'s broken zygote out of its slot, say why (`e`, then `consequence`) and
    /// start another in the background. The broken one is killed, with what it made, after
    /// the slot's lock is let go, so that no other run waits for that.
    fn replace_broken(
        &self,
        language: &str,
        mut slot: MutexGuard<'_, Option<Zygote>>,
        e: &zygote::ZygoteError,
        consequence: &str,
    ) {
        let broken = slot.take();
        drop(slot);
        tracing::warn!(
            language = %language,
            "warm pool: {}; {consequence}",
            crate::error::Chain(e)
        );
        drop(broken);
        self.request_start(language);
    }

    fn request_start(&self, language: &str) {
        let Some(slot) = self.slots.get(language) else {
            return;
        };
        if let Ok(at) = slot.retry_at.lock() {
            if at.is_some_and(|t| Instant::now() < t) {
                return;
            }
        }
        if slot.starting.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.starts.send(language.to_owned());
    }

    /// The manager thread: starts (and replaces) zygotes on request, one at a time.
    fn manage(&self, requests: &mpsc::Receiver<String>) {
        for language in requests {
            let Some(slot) = self.slots.get(&language) else {
                continue;
            };
            let start = Instant::now();
            match Zygote::spawn(&slot.recipe, READY_WITHIN) {
                Ok((zygote, ready)) => {
                    let ready_ms = start.elapsed().as_secs_f64() * 1000.0;
                    let pid = zygote.pid();
                    let old = slot.zygote.lock().ok().and_then(|mut z| z.replace(zygote));
                    if let Ok(mut at) = slot.retry_at.lock() {
                        *at = None;
                    }
                    slot.starting.store(false, Ordering::Release);
                    // Killed and reaped outside the lock; its runs are not its children.
                    // Before the line below, so that "ready" also means the worn one is gone.
                    drop(old);
                    tracing::info!(
                        language = %language,
                        pid,
                        preloaded = ?ready.imported,
                        absent = ?ready.missing,
                        samples = ready.learned.samples,
                        prefault_pages = ready.learned.pages,
                        "warm pool: zygote ready in {ready_ms:.1} ms",
                    );
                }
                Err(e) => {
                    tracing::warn!(
                        language = %language,
                        "warm pool: cannot start a zygote ({}); runs start cold, next attempt in {}s",
                        crate::error::Chain(&e),
                        RETRY_AFTER.as_secs()
                    );
                    if let Ok(mut at) = slot.retry_at.lock() {
                        *at = Some(Instant::now() + RETRY_AFTER);
                    }
                    slot.starting.store(false, Ordering::Release);
                }
            }
        }
    }

    /// Fork a run from `language`'s zygote (see [`Fork`]).
    pub(super) fn fork(
        &self,
        language: &str,
        plan: &ChildPlan,
        env: &[CString],
        network: bool,
    ) -> Fork<'_> {
        let Some(slot) = self.slots.get(language) else {
            return Fork::Unavailable;
        };
        // Spares are cloned before their runs are known, with all but the network flag.
        if plan.clone_flags & !libc::CLONE_NEWNET != slot.spare_flags {
            return Fork::Unavailable;
        }
        let message = run_message(plan, network);
        // The environment never passes through the zygote (see `zygote.py`): it comes on a
        // pipe only the run reads, after its confinement, written once the run's pid is
        // known. That pipe is the run's gate: a run the zygote cloned but did not answer for
        // in time is started cold instead, and the one it made must never run the script.
        let mut given = GO.to_vec();
        for e in env {
            given.extend_from_slice(e.as_bytes());
            given.push(0);
        }
        let (gate_r, gate_w) = match super::sys::pipe().and_then(|(r, w)| {
            super::sys::fit_pipe(&w, given.len())?;
            Ok((r, w))
        }) {
            Ok(gate) => gate,
            Err(e) => {
                tracing::warn!(
                    "warm pool: {}; this run starts cold",
                    crate::error::Chain(&e)
                );
                return Fork::Unavailable;
            }
        };
        let mut fds: Vec<RawFd> = vec![
            plan.stdin,
            plan.stdout,
            plan.stderr,
            plan.report,
            gate_r.as_raw_fd(),
        ];
        if plan.netns >= 0 {
            fds.push(plan.netns);
        }
        fds.extend(plan.resolver.iter().map(|(fd, _)| *fd));
        fds.extend(plan.cgroup_procs.iter().copied().filter(|fd| *fd >= 0));
        let Ok(mut guard) = slot.zygote.lock() else {
            return Fork::Unavailable;
        };
        let Some(zygote) = guard.as_mut() else {
            return Fork::Unavailable;
        };
        match zygote.fork(&message, &fds, FORK_WITHIN) {
            Ok(pid) => {
                let worn = zygote.forks >= self.max_forks;
                drop(guard);
                drop(gate_r);
                // Fits without blocking (see above). A failure means the run is gone already:
                // its report pipe says why.
                let _ = std::io::Write::write_all(&mut std::fs::File::from(gate_w), &given);
                if worn {
                    self.request_start(language);
                }
                Fork::Ready(
                    pid,
                    SpareDue {
                        pool: self,
                        language: language.to_owned(),
                    },
                )
            }
            Err(e) => {
                self.replace_broken(
                    language,
                    guard,
                    &e,
                    "this run starts cold and the zygote is replaced",
                );
                Fork::Failed
            }
        }
    }
}

/// What became of a run handed to the warm pool.
pub(super) enum Fork<'a> {
    /// Forked from the zygote: the run's pid, and its claim on the next spare (drop it once
    /// the run is answered).
    Ready(libc::pid_t, SpareDue<'a>),
    /// No zygote was ready (or none could be asked): nothing was handed over, the caller
    /// starts the run cold with the same descriptors.
    Unavailable,
    /// The zygote failed (it did not answer in time, or broke; it is killed with what it
    /// made): the caller starts the run cold, with descriptors of its own.
    Failed,
}

/// A warm run's request for the next run's process, made when it is dropped: once the run is
/// over (its process reaped, its uid returned), or has failed. The zygote clones a spare as
/// soon as it is asked, and the clone (a millisecond of copying page tables) must not take
/// the CPU of a run that is starting: asked for at the hand-over, it delayed every run by
/// about as much (zygote.py).
pub(super) struct SpareDue<'a> {
    pool: &'a WarmPool,
    language: String,
}

impl Drop for SpareDue<'_> {
    fn drop(&mut self) {
        self.pool.spare_due(&self.language);
    }
}

/// The per-run message: what the child does after the fork, taken from the cold run's plan
/// so the two cannot differ.
fn run_message(plan: &ChildPlan, network: bool) -> Vec<u8> {
    let rlimits: Vec<[u64; 3]> = plan
        .rlimits
        .iter()
        .map(|(res, l)| [u64::from(*res), l.rlim_cur, l.rlim_max])
        .collect();
    serde_json::json!({
        "flags": plan.clone_flags,
        "tmp_opts": (plan.root_mode == RootMode::MountNs).then(|| to_str(&plan.tmp_opts)),
        "cwd": to_str(&plan.cwd),
        "hostname": plan.hostname.as_ref().map(to_str),
        "rlimits": rlimits,
        "ids": plan.ids,
        "policy": plan.seccomp.map(|_| if network { "net" } else { "plain" }),
        "run_filter": plan.extra_filter.is_some(),
        "netns": plan.netns >= 0,
        // Where each resolver mount goes, seen from inside the root (the zygote's `/`).
        "resolver": plan
            .resolver
            .iter()
            .map(|(_, target)| {
                let inside = std::path::Path::new(to_str(target))
                    .strip_prefix(to_str(&plan.rootfs))
                    .unwrap_or(std::path::Path::new(""));
                format!("/{}", inside.display())
            })
            .collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}
