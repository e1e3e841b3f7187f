//! Per-run memory and process limits through cgroups, where the container's cgroup tree is
//! writable.
//!
//! RLIMIT_AS bounds what a script maps, but not pages that belong to a file: `memfd_create`
//! files, a tmpfs `/tmp`, pipe buffers. A memory cgroup charges all of them to the process
//! that touched them, so a run in its own cgroup with `memory.max` cannot hold more than that,
//! however it allocates. `pids.max` bounds its processes and threads independently of
//! RLIMIT_NPROC (which counts per uid across the whole node).
//!
//! # Where it works
//! - cgroup v2: the server's own cgroup must be writable and offer the `memory` and `pids`
//!   controllers. v2 forbids processes in a cgroup whose controllers are delegated to
//!   children, so at start the server moves itself into a `prebake-server` leaf and enables
//!   the controllers for its siblings; this works when the server is the only process of its
//!   cgroup (the container's entrypoint). Docker `--privileged`, `--cgroupns=private` with a
//!   writable `/sys/fs/cgroup`, and Kubernetes pods whose cgroup is delegated are such
//!   platforms; Docker's default (`/sys/fs/cgroup` read-only) and most Kubernetes pods are not.
//! - cgroup v1 (older hosts, and hybrid hosts like this project's CI): the `memory` and
//!   `pids` hierarchies must be mounted and the server's directory in them writable.
//!
//! Where neither works, the runtime says so at start and closes the memfd path by policy
//! (see `sandbox`: `memfd_create` is refused); a tmpfs `/tmp` is bounded by its size and pipe
//! buffers by the kernel's per-user pipe quota (`fs.pipe-user-pages-soft`, per pool uid).
//!
//! # Layout
//! One cgroup per pool uid and server process (`prebake-<server pid>-uid-<N>`: servers of one
//! node may share the cgroup tree, and each removes only its own at exit), created on first
//! use and reused: a uid runs
//! one script at a time, the cgroup is empty between runs (the run's processes are all
//! killed before the uid goes back to the pool), and reusing it saves a mkdir and rmdir per
//! run. The child joins by writing "0" to the cgroup's `cgroup.procs` through a descriptor
//! the parent opened before `clone` (no path lookup in the child).

use crate::error::Chain;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Which cgroup version, and the server's directories in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// One directory whose children get `memory` and `pids`.
    V2(PathBuf),
    /// The server's directories in the memory and pids hierarchies.
    V1 { memory: PathBuf, pids: PathBuf },
}

/// The cgroups the runs of this server use.
#[derive(Debug)]
pub struct Cgroups {
    tree: Tree,
    /// Per-uid cgroups already created (and configured with these limits).
    made: Mutex<std::collections::BTreeMap<u32, (u64, u64)>>,
}

/// One run's cgroup membership: descriptors of `cgroup.procs` for the child to write "0" to,
/// and the OOM-kill counter before the run.
pub struct RunCgroup {
    procs: Vec<OwnedFd>,
    events: PathBuf,
    oom_before: u64,
}

fn write_file(path: &Path, value: &str, what: &'static str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io_err(path, what))
}

fn read_to_string(path: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    Some(s)
}

/// Mount points of cgroup filesystems, from `/proc/self/mountinfo`: (mount point, fs type,
/// super options).
fn cgroup_mounts() -> Vec<(PathBuf, String, String)> {
    let Some(info) = read_to_string(Path::new("/proc/self/mountinfo")) else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            // "... mount_point options [optional fields] - fstype source super_options"
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let _source = r.next();
            let opts = r.next().unwrap_or("");
            (fstype == "cgroup" || fstype == "cgroup2").then(|| {
                (
                    PathBuf::from(mount_point),
                    fstype.to_string(),
                    opts.to_string(),
                )
            })
        })
        .collect()
}

/// The server's cgroup path in the hierarchy that has `controller` ("" for v2), from
/// `/proc/self/cgroup`.
fn own_path(controller: &str) -> Option<String> {
    let text = read_to_string(Path::new("/proc/self/cgroup"))?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        let matches = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_string())
    })
}

/// The directory of our cgroup under `mount`: the path from /proc/self/cgroup, or the mount
/// itself when that path does not exist there (a cgroup namespace shows "/" or a path that
/// is relative to a root the mount does not show).
fn own_dir(mount: &Path, path: &str) -> PathBuf {
    let full = mount.join(path.trim_start_matches('/'));
    if full.is_dir() {
        full
    } else {
        mount.to_path_buf()
    }
}

impl Cgroups {
    /// Find a writable cgroup tree with memory and pids controllers, preparing it for
    /// per-run children. `Err` says why none is usable (for the start-up log).
    pub fn detect() -> Result<Cgroups, String> {
        let mounts = cgroup_mounts();
        let mut why = Vec::new();
        if let Some((mount, _, _)) = mounts.iter().find(|(_, t, _)| t == "cgroup2") {
            let path = own_path("").unwrap_or_else(|| "/".into());
            let dir = own_dir(mount, &path);
            match Self::prepare_v2(&dir) {
                Ok(base) => return Ok(Self::new(Tree::V2(base))),
                Err(e) => why.push(format!("cgroup v2 at {}: {e}", dir.display())),
            }
        }
        let v1 = |ctrl: &str| {
            mounts
                .iter()
                .find(|(_, t, o)| t == "cgroup" && o.split(',').any(|c| c == ctrl))
                .map(|(m, _, _)| own_dir(m, &own_path(ctrl).unwrap_or_else(|| "/".into())))
        };
        match (v1("memory"), v1("pids")) {
            (Some(memory), Some(pids)) => match Self::prepare_v1(&memory, &pids) {
                Ok(tree) => return Ok(Self::new(tree)),
                Err(e) => why.push(format!("cgroup v1: {e}")),
            },
            _ => why.push("no cgroup v1 memory and pids hierarchies".into()),
        }
        Err(why.join("; "))
    }

    fn new(tree: Tree) -> Cgroups {
        Cgroups {
            tree,
            made: Mutex::new(Default::default()),
        }
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// v2: move this process into a leaf and delegate memory and pids to siblings.
    fn prepare_v2(dir: &Path) -> Result<PathBuf, String> {
        let controllers = read_to_string(&dir.join("cgroup.controllers"))
            .ok_or("cannot read cgroup.controllers")?;
        for c in ["memory", "pids"] {
            if !controllers.split_whitespace().any(|x| x == c) {
                return Err(format!("the {c} controller is not available"));
            }
        }
        let enabled = read_to_string(&dir.join("cgroup.subtree_control")).unwrap_or_default();
        let has = |c: &str| enabled.split_whitespace().any(|x| x == c);
        if !(has("memory") && has("pids")) {
            let leaf = dir.join("prebake-server");
            std::fs::create_dir_all(&leaf).map_err(|e| format!("mkdir prebake-server: {e}"))?;
            write_file(
                &leaf.join("cgroup.procs"),
                &std::process::id().to_string(),
                "move the server into its leaf",
            )
            .map_err(|e| Chain(&e).to_string())?;
            write_file(
                &dir.join("cgroup.subtree_control"),
                "+memory +pids",
                "enable memory and pids for children (other processes share the cgroup?)",
            )
            .map_err(|e| Chain(&e).to_string())?;
        }
        Ok(dir.to_path_buf())
    }

    fn prepare_v1(memory: &Path, pids: &Path) -> Result<Tree, String> {
        // Writable? Create and remove a probe directory in each.
        for d in [memory, pids] {
            let probe = d.join(format!("prebake-probe-{}", std::process::id()));
            std::fs::create_dir(&probe).map_err(|e| format!("{}: {e}", d.display()))?;
            let _ = std::fs::remove_dir(&probe);
        }
        Ok(Tree::V1 {
            memory: memory.to_path_buf(),
            pids: pids.to_path_buf(),
        })
    }

    fn dirs(&self, uid: u32) -> Vec<PathBuf> {
        let name = format!("prebake-{}-uid-{uid}", std::process::id());
        match &self.tree {
            Tree::V2(d) => vec![d.join(name)],
            Tree::V1 { memory, pids } => vec![memory.join(&name), pids.join(name)],
        }
    }

    /// The cgroup of `uid`, created and limited on first use, ready for one run.
    pub fn for_run(&self, uid: u32, memory: u64, pids: u64) -> Result<RunCgroup, CgroupError> {
        let dirs = self.dirs(uid);
        let v2 = matches!(self.tree, Tree::V2(_));
        {
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            if made.get(&uid) != Some(&(memory, pids)) {
                for d in &dirs {
                    match std::fs::create_dir(d) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err(d, "create the run's cgroup")(e)),
                    }
                }
                if v2 {
                    write_file(
                        &dirs[0].join("memory.max"),
                        &memory.to_string(),
                        "set memory.max",
                    )?;
                    // No swap: a run's memory is what it holds in RAM.
                    let _ =
                        write_file(&dirs[0].join("memory.swap.max"), "0", "set memory.swap.max");
                    write_file(&dirs[0].join("pids.max"), &pids.to_string(), "set pids.max")?;
                } else {
                    // v1 refuses a memory limit above the memory+swap limit (EINVAL), which
                    // the previous language's run may have set lower: lift that one first.
                    let _ = write_file(
                        &dirs[0].join("memory.memsw.limit_in_bytes"),
                        "-1",
                        "lift memory.memsw.limit_in_bytes",
                    );
                    write_file(
                        &dirs[0].join("memory.limit_in_bytes"),
                        &memory.to_string(),
                        "set memory.limit_in_bytes",
                    )?;
                    let _ = write_file(
                        &dirs[0].join("memory.memsw.limit_in_bytes"),
                        &memory.to_string(),
                        "set memory.memsw.limit_in_bytes",
                    );
                    write_file(&dirs[1].join("pids.max"), &pids.to_string(), "set pids.max")?;
                }
                made.insert(uid, (memory, pids));
            }
        }
        let mut procs = Vec::new();
        for d in &dirs {
            let p = d.join("cgroup.procs");
            let f = OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(io_err(&p, "open cgroup.procs"))?;
            procs.push(OwnedFd::from(f));
        }
        let events = if v2 {
            dirs[0].join("memory.events")
        } else {
            dirs[0].join("memory.oom_control")
        };
        let oom_before = oom_kills(&events);
        Ok(RunCgroup {
            procs,
            events,
            oom_before,
        })
    }
}

impl Drop for Cgroups {
    /// Remove the per-uid cgroups this server made (they are empty once its runs are reaped;
    /// one still in use by another server on the same tree stays, rmdir refuses it).
    fn drop(&mut self) {
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        for uid in made.keys() {
            for d in self.dirs(*uid) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// The `oom_kill` counter of a memory cgroup (v2 memory.events, v1 memory.oom_control).
fn oom_kills(events: &Path) -> u64 {
    read_to_string(events)
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

impl RunCgroup {
    /// Descriptors the child writes "0" to (at most two: v1's memory and pids).
    pub fn procs_fds(&self) -> [RawFd; 2] {
        let mut out = [-1; 2];
        for (i, fd) in self.procs.iter().take(2).enumerate() {
            out[i] = fd.as_raw_fd();
        }
        out
    }

    /// Did the kernel kill a process of this run for exceeding the memory limit?
    pub fn oom_killed(&self) -> bool {
        oom_kills(&self.events) > self.oom_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_dir_falls_back_to_the_mount() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        assert_eq!(own_dir(t.path(), "/a/b"), t.path().join("a/b"));
        assert_eq!(own_dir(t.path(), "/not/here"), t.path());
        assert_eq!(own_dir(t.path(), "/"), t.path());
    }

    #[test]
    fn oom_counter_is_read_from_either_format() {
        let t = tempfile::tempdir().unwrap();
        let v2 = t.path().join("memory.events");
        std::fs::write(&v2, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(oom_kills(&v2), 2);
        let v1 = t.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n").unwrap();
        assert_eq!(oom_kills(&v1), 5);
        assert_eq!(oom_kills(&t.path().join("missing")), 0);
    }
}
