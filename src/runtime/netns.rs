//! The network namespace of runs with network, behind pasta (`runtime serve`, namespace mode).
//!
//! Sharing the server's network namespace gave a run everything the pod has: the pod's
//! loopback (the API itself, sidecars such as a metrics agent or a database proxy listening
//! on 127.0.0.1), the pod's own address, and the namespace's abstract unix sockets. Instead,
//! runs with network join one namespace the server creates at start, whose only way out is
//! pasta (Debian's `passt` package, podman's user-space network stack):
//!
//! - pasta copies the pod's address and default route into the namespace and turns every
//!   connection into a socket of its own in the pod's namespace, so the outside world (and the
//!   `ssrf_proxy`, DNS servers, other services) is reachable as before;
//! - `--no-map-gw`: the gateway address is not mapped to the pod's loopback, and the
//!   namespace's own loopback and own copy of the pod's address are local to it, so neither
//!   the pod's loopback nor the pod's address reaches the pod;
//! - no inbound port forwarding (`-t none -u none -T none -U none`);
//! - DNS: a resolver on the pod's loopback (Docker's 127.0.0.11) is not reachable from the
//!   namespace, so pasta answers on [`DNS_FORWARD`] and forwards to the pod's first resolver,
//!   and the rootfs's resolv.conf names that address as its only nameserver (see `netfiles`).
//!   Only: with `--dns-forward` on, Debian 12's pasta (2023-03-09) drops the answers to
//!   queries sent straight to a real resolver (getaddrinfo's AAAA query times out), so all
//!   of DNS goes through the forwarder.
//!
//! All runs with network share this one namespace (joining it is one `setns`, microseconds;
//! starting pasta per run would cost tens of milliseconds). They cannot reach each other
//! through it: the policy refuses `bind`, `listen`, `accept` and unix sockets.
//!
//! pasta needs `/dev/net/tun` (created at start if missing; Docker's default device rules
//! allow it, Kubernetes needs a privileged pod or a device plugin for it). Where pasta cannot
//! start, the server logs why and runs with network share its namespace.
//!
//! The namespace is held by a tiny child process (it only `pause`s, and dies with the
//! server); pasta gets it as a bind-mounted namespace file, because pasta drops the
//! privileges it would need to open `/proc/<pid>/ns/net`. The mount point and pasta's log
//! exist in /run only while pasta starts: once the namespace is configured, pasta holds it
//! open (`--no-netns-quit`), the mount is detached and both files are unlinked, so a server
//! that ends without cleaning up (`std::process::exit`, SIGKILL) leaves nothing in /run.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where pasta answers DNS inside the namespace: link-local, never a real resolver.
pub const DNS_FORWARD: Ipv4Addr = Ipv4Addr::new(169, 254, 53, 53);

/// How long pasta may take to configure the namespace.
const START_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pasta ({pasta}) did not set up the runs' network namespace within {}s; its output: {log}", START_TIMEOUT.as_secs())]
    Timeout { pasta: PathBuf, log: String },
    #[error("pasta ({pasta}) exited ({status}) while setting up the runs' network namespace; its output: {log}")]
    Exited {
        pasta: PathBuf,
        status: std::process::ExitStatus,
        log: String,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::Io { what, source }
}

/// pasta to use: `SANDBOX_PASTA` (a path, or `off`), else the first of the usual places.
pub fn find_pasta() -> Option<PathBuf> {
    match std::env::var_os("SANDBOX_PASTA") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => ["/usr/bin/pasta", "/usr/local/bin/pasta", "/bin/pasta"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
    }
}

/// The runs' network namespace: its holder, pasta, and a descriptor to `setns` into.
pub struct SandboxNet {
    holder: libc::pid_t,
    pasta: std::process::Child,
    netns: OwnedFd,
}

/// Fork the holder: a child in a new network namespace that waits until killed, or dies
/// with the server (parent-death signal).
fn spawn_holder() -> Result<libc::pid_t, NetError> {
    // SAFETY: the child makes raw syscalls only (close_range, prctl, pause): async-signal-safe
    // in a copy of a multi-threaded process.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io("create the runs' network namespace")(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            // It lives on without exec: keep nothing of the server's. Runs start while pasta
            // comes up, and a run's pipe held open here would never reach end of file.
            super::child::close_from(3);
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            loop {
                libc::pause();
            }
        }
    }
    // The kernel's pids are ints (at most PID_MAX_LIMIT, 2^22): the error is never taken.
    libc::pid_t::try_from(pid).map_err(|_| {
        io("create the runs' network namespace")(std::io::Error::from_raw_os_error(libc::EOVERFLOW))
    })
}

/// Where the namespace's mount point and pasta's log live while pasta starts: `/run`, or what
/// [`set_state_dir`] chose (a rootless runtime cannot write `/run`).
static STATE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use `dir` instead of `/run`; call once, at start, before [`sweep_stale_mounts`].
pub fn set_state_dir(dir: &Path) {
    let _ = STATE_DIR.set(dir.to_path_buf());
}

fn state_dir() -> &'static Path {
    STATE_DIR.get().map_or(Path::new("/run"), PathBuf::as_path)
}

/// Remove the namespace mount points (`/run/prebake-netns-<pid>-<nanos>`) of servers that
/// are gone: one killed while pasta was starting leaves its bind mount there, and the mount
/// keeps that network namespace alive. A point whose pid is another live process is left
/// alone; this process has made none yet when it calls this, at start.
pub fn sweep_stale_mounts() {
    let Ok(entries) = std::fs::read_dir(state_dir()) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("prebake-netns-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        if let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) {
            // SAFETY: detaching a mount at a path we name; failure (not a mount) is fine.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed the network namespace mount point of a server that is gone")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove a stale network namespace mount point: {e}")
            }
        }
    }
}

/// pasta's tap device comes from `/dev/net/tun`, which container engines allow (Docker's
/// default device rules include it) but do not always create: make the node if it is missing.
/// A failure is left for pasta to report.
fn ensure_tun() {
    let tun = Path::new("/dev/net/tun");
    if tun.exists() {
        return;
    }
    let _ = std::fs::create_dir_all("/dev/net");
    // SAFETY: mknod of a fixed path; character device 10:200 is the tun/tap clone device.
    unsafe {
        libc::mknod(
            c"/dev/net/tun".as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(10, 200),
        );
    }
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Does the namespace of `holder` have a default route yet (pasta's `--config-net` done)?
fn has_default_route(holder: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{holder}/net/route")).is_ok_and(|t| {
        t.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
    })
}

impl SandboxNet {
    /// Create the namespace and start `pasta` for it; returns once the namespace has its
    /// address and default route.
    ///
    /// Both processes die with the server through the parent-death signal, which the kernel
    /// sends when the *thread* that created them ends, not the process: they are created
    /// from a thread of their own that lives as long as the server (a worker of tokio's
    /// blocking pool ends after ten idle seconds, and took the network with it).
    pub fn start(pasta: &Path) -> Result<SandboxNet, NetError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let pasta = pasta.to_path_buf();
        std::thread::Builder::new()
            .name("prebake-netns".into())
            .spawn(move || {
                let _ = tx.send(Self::start_here(&pasta));
                loop {
                    std::thread::park();
                }
            })
            .map_err(io("start the network namespace's keeper thread"))?;
        rx.recv().unwrap_or_else(|_| {
            Err(io("start the runs' network namespace")(
                std::io::Error::other("the keeper thread ended"),
            ))
        })
    }

    fn start_here(pasta: &Path) -> Result<SandboxNet, NetError> {
        ensure_tun();
        let holder = spawn_holder()?;
        match Self::attach(pasta, holder) {
            Ok(net) => Ok(net),
            Err(e) => {
                kill_and_reap(holder);
                Err(e)
            }
        }
    }

    fn attach(pasta: &Path, holder: libc::pid_t) -> Result<SandboxNet, NetError> {
        let ns_path = format!("/proc/{holder}/ns/net");
        let netns =
            std::fs::File::open(&ns_path).map_err(io("open the runs' network namespace"))?;
        // Unique per start: a server that exited without cleaning up (std::process::exit,
        // SIGKILL) leaves its mount point behind, and pids are reused.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let me = format!("{}-{nanos}", std::process::id());
        let mount = state_dir().join(format!("prebake-netns-{me}"));
        let log = state_dir().join(format!("prebake-pasta-{me}.log"));
        std::fs::write(&mount, b"").map_err(io("create the namespace's mount point"))?;
        let src = CString::new(ns_path).expect("no NUL");
        let dst = CString::new(mount.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: a plain bind mount of two valid paths.
        if unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        } != 0
        {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&mount);
            return Err(io("bind-mount the runs' network namespace")(e));
        }
        let cleanup_mount = |mount: &Path| {
            // SAFETY: detaching our own bind mount.
            unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_file(mount);
        };
        // pasta writes to the file; we read it through a second descriptor after unlinking it.
        let (log_file, mut log_reader) = match open_unlinked_log(&log) {
            Ok(files) => files,
            Err(e) => {
                cleanup_mount(&mount);
                return Err(io("create pasta's log file")(e));
            }
        };
        let mut cmd = Command::new(pasta);
        cmd.args([
            "--foreground",
            "--quiet",
            // pasta would drop to "nobody", which cannot join the namespace.
            "--runas",
            "0:0",
            "--config-net",
            "--no-map-gw",
            "--dns-forward",
            &DNS_FORWARD.to_string(),
            "-t",
            "none",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
            "--netns-only",
            // The mount point is removed once pasta has the namespace open.
            "--no-netns-quit",
            "--netns",
        ])
        .arg(&mount)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
        // SAFETY: prctl is async-signal-safe; pasta dies with the server.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                cleanup_mount(&mount);
                return Err(io("start pasta")(e));
            }
        };
        let mut read_log = || {
            use std::io::{Read, Seek};
            let mut text = String::new();
            let _ = log_reader.rewind();
            let _ = log_reader.read_to_string(&mut text);
            text.lines()
                .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let start = Instant::now();
        loop {
            if has_default_route(holder) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log_text = read_log();
                cleanup_mount(&mount);
                return Err(NetError::Exited {
                    pasta: pasta.to_path_buf(),
                    status,
                    log: log_text,
                });
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                let log_text = read_log();
                cleanup_mount(&mount);
                return Err(NetError::Timeout {
                    pasta: pasta.to_path_buf(),
                    log: log_text,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // pasta has the namespace open (it configured it): the file is no longer needed.
        cleanup_mount(&mount);
        // SAFETY: a descriptor we own, moved out of the File.
        let netns = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(netns)) };
        Ok(SandboxNet {
            holder,
            pasta: child,
            netns,
        })
    }

    /// The descriptor a run's child joins with `setns(fd, CLONE_NEWNET)`.
    pub fn fd(&self) -> RawFd {
        self.netns.as_raw_fd()
    }
}

impl Drop for SandboxNet {
    fn drop(&mut self) {
        let _ = self.pasta.kill();
        let _ = self.pasta.wait();
        kill_and_reap(self.holder);
    }
}

/// pasta's log: a file for its stderr and a reader of the same file, unlinked at once so
/// that it never outlives the server.
fn open_unlinked_log(path: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let reader = std::fs::File::open(path);
    let _ = std::fs::remove_file(path);
    Ok((writer, reader?))
}

/// The container's resolv.conf as runs in the namespace must see it: the nameservers become
/// one, [`DNS_FORWARD`] (pasta forwards to the container's first); search and options stay.
pub fn rewrite_resolv_conf(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut forwarded = false;
    for line in text.lines() {
        if line.split_whitespace().next() == Some("nameserver") {
            if !forwarded {
                out.push_str(&format!("nameserver {DNS_FORWARD}\n"));
                forwarded = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nameservers_become_the_forward_address_once() {
        let t = "# docker\nnameserver 127.0.0.11\nnameserver ::1\nnameserver 10.0.0.2\nsearch svc.local\noptions ndots:5\n";
        assert_eq!(
            rewrite_resolv_conf(t),
            "# docker\nnameserver 169.254.53.53\nsearch svc.local\noptions ndots:5\n"
        );
        let k8s = "search default.svc.cluster.local\nnameserver 10.96.0.10\n";
        assert_eq!(
            rewrite_resolv_conf(k8s),
            "search default.svc.cluster.local\nnameserver 169.254.53.53\n"
        );
        // No nameserver: none added (the resolver's default, loopback, fails as before).
        assert_eq!(rewrite_resolv_conf("search x\n"), "search x\n");
    }
}
