//! The poll loop that watches a running script: both output pipes with their cap, the
//! deadline, the interpreter's exit (or a warm run's record of it, see
//! [`super::end_record`]) and, in chroot mode, the size of its /tmp.

use super::tree::Child;
use super::{Exit, Stream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

pub(super) struct Supervised {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) timed_out: bool,
    pub(super) truncated: Option<Stream>,
    pub(super) tmp_exceeded: bool,
    /// How the run ended, by its own record, when it closed its output before its exit: the
    /// process may still be exiting (the caller kills and reaps it after answering).
    pub(super) announced: Option<Exit>,
}

/// Read both pipes until EOF while watching the deadline, the output caps and, in chroot
/// mode, the size of the run's /tmp directory (`tmp`: its path and byte budget; see
/// [`crate::runtime::tmpwatch`]). When both pipes are at EOF before the interpreter's exit,
/// `announced` is asked once for the run's record of its end; with one, the wait ends there.
pub(super) fn supervise(
    child: &Child,
    out: OwnedFd,
    err: OwnedFd,
    deadline: Instant,
    cap: usize,
    tmp: Option<(&Path, u64)>,
    announced: &dyn Fn() -> Option<Exit>,
) -> Supervised {
    let mut res = Supervised {
        stdout: Vec::new(),
        stderr: Vec::new(),
        timed_out: false,
        truncated: None,
        tmp_exceeded: false,
        announced: None,
    };
    let mut next_tmp_check = Instant::now() + crate::runtime::tmpwatch::INTERVAL;
    let mut open = [true, true];
    let mut exited = false;
    let mut killed = false;
    let mut asked = false;
    let mut buf = vec![0u8; 64 * 1024];
    let fds = [out.as_raw_fd(), err.as_raw_fd()];
    // Until both pipes are at EOF *and* the interpreter has exited or recorded its end (the
    // break below): a script that closes its stdout and stderr and then sleeps must still
    // meet the deadline.
    while open[0] || open[1] || !exited {
        if !open[0] && !open[1] && !exited && !killed && !asked {
            asked = true;
            res.announced = announced();
            if res.announced.is_some() {
                break;
            }
        }
        let now = Instant::now();
        if now >= deadline && !killed {
            res.timed_out = true;
            child.kill();
            killed = true;
        }
        if let Some((dir, max)) = tmp {
            if !killed && now >= next_tmp_check {
                next_tmp_check = now + crate::runtime::tmpwatch::INTERVAL;
                if crate::runtime::tmpwatch::measure(dir, max).is_ok_and(|u| u.exceeds(max)) {
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
            let ms = until.saturating_duration_since(now).as_millis().max(1);
            i32::try_from(ms).unwrap_or(i32::MAX)
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
            // Negative: the failure; 0: end of file.
            let n = match usize::try_from(n) {
                Ok(n) if n > 0 => n,
                _ => {
                    if n < 0
                        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                    {
                        continue;
                    }
                    open[i] = false;
                    continue;
                }
            };
            let target = if i == 0 {
                &mut res.stdout
            } else {
                &mut res.stderr
            };
            let room = cap.saturating_sub(target.len());
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
    // Owned: the read ends close here, before the caller reaps (a leftover writing to them
    // gets SIGPIPE rather than blocking on a pipe nobody reads).
    drop(out);
    drop(err);
    res
}
