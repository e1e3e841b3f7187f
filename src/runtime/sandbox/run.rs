//! One run, assembled and supervised: the child's plan (namespaces, root, rlimits, uid,
//! seccomp, descriptors), the spawn, the setup report, then [`super::supervise`], the answer,
//! and what is left to do after it.

use super::chroot_tmp::RunTmp;
use super::supervise::supervise;
use super::sys::{code_fd, cstr, high_fd, os, path_c, pipe, read_full};
use super::tree::{kill_uid, Child};
use super::warm::{Fork, SpareDue};
use super::{end_record, RunOutcome, Sandbox, SandboxError};
use crate::runtime::cgroup::RunCgroup;
use crate::runtime::child::{self, ChildPlan, RootMode, Step};
use crate::runtime::netfiles::GenerationHold;
use crate::runtime::uidpool::Lease;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

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

/// What is left of a run once it can be answered: a process that recorded its end and may
/// still be exiting (killed and reaped first, the rest of its tree with it), then the run's
/// cgroup, its /tmp directory and its uid, in that order, so that the uid goes back to the
/// pool only once nothing of the run is left; last, a warm run asks for the next spare.
struct Aftermath<'a> {
    exiting: Option<Child>,
    _resolver_hold: GenerationHold,
    _cgroup: Option<RunCgroup>,
    tmp: Option<RunTmp>,
    _lease: Lease<'a>,
    /// A warm run's request for the next spare, last: made once nothing of the run is left,
    /// so that the clone takes no CPU from it (nor from a run that starts meanwhile: see
    /// `warm`'s spares).
    _spare_due: Option<SpareDue<'a>>,
}

impl Drop for Aftermath<'_> {
    fn drop(&mut self) {
        if let Some(child) = &self.exiting {
            // Past its script, or a liar (see `end_record`): either way it goes now, and the
            // reap kills what is left of its tree, as after any exit.
            child.kill_leader();
            child.reap();
        }
    }
}

impl Sandbox {
    /// Run one script to completion (blocking; call from a blocking thread).
    pub fn run(&self, req: &RunRequest) -> Result<RunOutcome, SandboxError> {
        self.run_answering(req, |outcome| outcome)
    }

    /// [`Sandbox::run`], giving the outcome to `answer` as soon as it is known. For a process
    /// that recorded its end before exiting (see [`super::end_record`]), that is before it is
    /// killed with its tree and reaped, and its uid returned; for any other run, after.
    /// Returns what `answer` returned.
    pub fn run_answering<T>(
        &self,
        req: &RunRequest,
        answer: impl FnOnce(Result<RunOutcome, SandboxError>) -> T,
    ) -> T {
        match self.run_until_answer(req) {
            // Only a process still exiting is worth answering ahead of: otherwise the run's
            // /tmp directory and uid are back before the answer, as a client may expect.
            Ok((outcome, aftermath)) if aftermath.exiting.is_some() => {
                // Its /tmp directory is gone by the answer, as any run's is: the process
                // left is past its script (or, had it forged its record, it is killed before
                // its uid's next run, which removes whatever it wrote since).
                if let Some(tmp) = &aftermath.tmp {
                    tmp.remove();
                }
                let answered = answer(Ok(outcome));
                drop(aftermath);
                answered
            }
            Ok((outcome, aftermath)) => {
                drop(aftermath);
                answer(Ok(outcome))
            }
            Err(e) => answer(Err(e)),
        }
    }

    fn run_until_answer(
        &self,
        req: &RunRequest,
    ) -> Result<(RunOutcome, Aftermath<'_>), SandboxError> {
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
        let tmp_guard = match &run_tmp {
            Some(inside) => Some(RunTmp::create(
                &self.rootfs.join(inside.trim_start_matches('/')),
                uid,
                iso.setuid,
            )?),
            None => None,
        };

        let io = self.descriptors(req)?;

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

        let flags = iso.clone_flags(req.network);
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
        let devs = self.dev_binds()?;
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
        let mut plan = ChildPlan {
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
            netns: match req.network.then(|| self.network()).flatten() {
                Some(net) => net.fd(),
                None => -1,
            },
            stdin: -1,
            stdout: -1,
            stderr: -1,
            report: -1,
            keep: -1,
            resolver: Vec::new(),
        };
        io.give(&mut plan);

        let start = Instant::now();
        // A fork of the language's zygote where there is one ready (see `super::warm`),
        // else a fresh interpreter.
        let warm = self.warm.get().map_or(Fork::Unavailable, |pool| {
            pool.fork(&req.language, &plan, &env, req.network)
        });
        let (pid, io, spare_due) = match warm {
            Fork::Ready(pid, due) => (pid, io, Some(due)),
            cold => {
                // A zygote that failed with the plan may have used up its resolver mounts (a
                // mount moves once), and the process it made for the run, killed since, may
                // have written to its report pipe: the cold start gets descriptors of its own.
                let io = if matches!(cold, Fork::Failed) {
                    drop(io);
                    let fresh = self.descriptors(req)?;
                    fresh.give(&mut plan);
                    fresh
                } else {
                    io
                };
                // SAFETY: the plan and everything it points to live until after spawn
                // returns in the parent; the child never returns from spawn.
                let pid = unsafe { child::spawn(&plan) }.map_err(|e| {
                    os("clone the sandbox process")(std::io::Error::from_raw_os_error(e))
                })?;
                (pid, io, None)
            }
        };
        drop(plan);
        let Descriptors { theirs, ours } = io;
        drop(theirs);
        let child = Child::new(pid, &lease, iso)?;

        // Did the exec happen? EOF on the report pipe means yes.
        let mut rep = [0u8; 8];
        // Bounded by the run's deadline: a child stuck before exec (it is a copy of a
        // multi-threaded process) must not hold this worker and its uid forever.
        let Some(n) = read_full(ours.rep_r.as_raw_fd(), &mut rep, start + req.timeout) else {
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
        drop(ours.rep_r);

        let deadline = start + req.timeout;
        let tmp_watch = tmp_guard.as_ref().map(|t| (t.0.as_path(), l.tmp_bytes));
        let announced = || end_record::read(ours.code.as_fd(), req.code.len());
        let sup = supervise(
            &child,
            ours.out_r,
            ours.err_r,
            deadline,
            l.output_bytes,
            tmp_watch,
            &announced,
        );
        let (exit, exiting) = match sup.announced {
            Some(exit) => (exit, Some(child)),
            None => (child.reap(), None),
        };
        let outcome = RunOutcome {
            stdout: sup.stdout,
            stderr: sup.stderr,
            exit,
            timed_out: sup.timed_out,
            truncated: sup.truncated,
            duration: start.elapsed(),
            limits: l.clone(),
            memory_killed: cgroup.as_ref().is_some_and(|c| c.oom_killed()),
            tmp_exceeded: sup.tmp_exceeded,
        };
        let aftermath = Aftermath {
            exiting,
            _resolver_hold: ours.resolver_hold,
            _cgroup: cgroup,
            tmp: tmp_guard,
            _lease: lease,
            _spare_due: spare_due,
        };
        Ok((outcome, aftermath))
    }

    /// The descriptors one start of a run's process is given.
    fn descriptors(&self, req: &RunRequest) -> Result<Descriptors, SandboxError> {
        let code = code_fd(req.code.as_bytes())?;
        // Ours, to read a warm run's record of its end after its script (`end_record`).
        let code_ours = code.try_clone().map_err(os("duplicate the code memfd"))?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (rep_r, rep_w) = pipe()?;
        // Runs with network see the container's resolver files, mounted in their own mount
        // namespace (see `netfiles`).
        let (taken, resolver_hold) = match (&self.resolver, req.network && self.isolation.mount_ns)
        {
            (Some(copies), true) => copies.detached_mounts().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot make the resolver files' mounts; this run with network sees the build-time stubs and may not resolve names");
                Default::default()
            }),
            _ => Default::default(),
        };
        let mut resolver = Vec::with_capacity(taken.len());
        for (name, fd) in taken {
            // high_fd closes the descriptor it is given: hand over the ownership.
            let fd = high_fd(fd.into_raw_fd())?;
            resolver.push((fd, path_c(&self.rootfs.join("etc").join(name))?));
        }
        Ok(Descriptors {
            theirs: ChildEnds {
                code,
                out_w,
                err_w,
                rep_w,
                resolver,
            },
            ours: OurEnds {
                code: code_ours,
                out_r,
                err_r,
                rep_r,
                resolver_hold,
            },
        })
    }
}

/// The descriptors of one start of a run's process.
struct Descriptors {
    theirs: ChildEnds,
    ours: OurEnds,
}

/// What the child is given: the code, the write ends of its pipes, and the resolver mounts of
/// a run with network. Closed here once the child has them.
struct ChildEnds {
    code: OwnedFd,
    out_w: OwnedFd,
    err_w: OwnedFd,
    rep_w: OwnedFd,
    /// Each resolver mount and where it goes.
    resolver: Vec<(OwnedFd, CString)>,
}

/// What this process follows the run by, and the resolver copies the mounts were made from,
/// kept until the run has ended (see `netfiles`).
struct OurEnds {
    code: OwnedFd,
    out_r: OwnedFd,
    err_r: OwnedFd,
    rep_r: OwnedFd,
    resolver_hold: GenerationHold,
}

impl Descriptors {
    /// Point the child's plan at these descriptors.
    fn give(&self, plan: &mut ChildPlan) {
        let theirs = &self.theirs;
        plan.stdin = theirs.code.as_raw_fd();
        plan.stdout = theirs.out_w.as_raw_fd();
        plan.stderr = theirs.err_w.as_raw_fd();
        plan.report = theirs.rep_w.as_raw_fd();
        plan.resolver = theirs
            .resolver
            .iter()
            .map(|(fd, target)| (fd.as_raw_fd(), target.clone()))
            .collect();
    }
}
