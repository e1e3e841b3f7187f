//! The raw-syscall helpers a run needs: C strings, descriptors kept clear of 0..=3, the
//! sealed code memfd, and a read bounded by a deadline.

use super::SandboxError;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

pub(super) fn cstr(b: &[u8]) -> Result<CString, SandboxError> {
    CString::new(b).map_err(|_| SandboxError::Nul)
}

pub(super) fn path_c(p: &Path) -> Result<CString, SandboxError> {
    cstr(p.as_os_str().as_bytes())
}

pub(super) fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Os { what, source }
}

/// A descriptor at >= 10 so the child's dup2 onto 0..=3 never clobbers another one.
pub(super) fn high_fd(fd: RawFd) -> Result<OwnedFd, SandboxError> {
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

/// SIGKILL through a pidfd (it cannot hit a recycled pid).
pub(super) fn pidfd_kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a descriptor we own, with no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Make sure the pipe whose write end is `w` takes `len` bytes without blocking: its default
/// size is a page when the user is over `pipe-user-pages-soft`.
pub(super) fn fit_pipe(w: &OwnedFd, len: usize) -> Result<(), SandboxError> {
    // SAFETY: fcntl queries on a descriptor we own.
    let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if usize::try_from(size).is_ok_and(|size| size >= len) {
        return Ok(());
    }
    let want = libc::c_int::try_from(len).unwrap_or(libc::c_int::MAX);
    // SAFETY: as above; the kernel rounds the size up or refuses it.
    let grown = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    if usize::try_from(grown).is_ok_and(|size| size >= len) {
        Ok(())
    } else {
        Err(os("size a pipe for the run's environment")(
            std::io::Error::last_os_error(),
        ))
    }
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("create a pipe")(std::io::Error::last_os_error()));
    }
    Ok((high_fd(fds[0])?, high_fd(fds[1])?))
}

/// The script on a sealed-off memfd, read by the interpreter as stdin (never argv).
pub(super) fn code_fd(code: &[u8]) -> Result<OwnedFd, SandboxError> {
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
        // Negative: the failure.
        match usize::try_from(n) {
            Ok(n) if n > 0 => off += n,
            _ => return Err(os("write the code memfd")(std::io::Error::last_os_error())),
        }
    }
    // SAFETY: lseek on our descriptor.
    unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) };
    Ok(fd)
}

/// Wait until `fd` is readable (or in error, which the read that follows reports); false
/// when `deadline` passes first.
pub(super) fn wait_readable(fd: RawFd, deadline: Instant) -> bool {
    loop {
        let wait_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        let wait_ms = i32::try_from(wait_ms).unwrap_or(i32::MAX);
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
        return rc != 0;
    }
}

/// Read until `buf` is full or EOF; None when `deadline` passes first.
pub(super) fn read_full(fd: RawFd, buf: &mut [u8], deadline: Instant) -> Option<usize> {
    let mut off = 0;
    while off < buf.len() {
        if !wait_readable(fd, deadline) {
            return None;
        }
        // SAFETY: reading into a live buffer.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        // Negative: the failure; 0: end of file.
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            Err(_) => break,
        }
    }
    Some(off)
}
