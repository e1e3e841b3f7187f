//! Loading precompiled BPF programs at run time, from the file format of
//! [`crate::contract::bpf`] (stacked programs, installed in file order).
//!
//! Parsing happens before fork; [`Programs::install`] only makes syscalls, so it is safe to
//! call between fork and exec in a child of a multi-threaded process.

use crate::contract::bpf::{LoadError, SockFilter};

/// Programs ready to install, in installation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    programs: Vec<Vec<SockFilter>>,
}

impl Programs {
    /// Parse the file format ([`crate::contract::bpf`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        Ok(Programs {
            programs: crate::contract::bpf::decode(bytes)?,
        })
    }

    /// Serialize programs into the file format.
    pub fn to_bytes(programs: &[Vec<SockFilter>]) -> Vec<u8> {
        crate::contract::bpf::encode(programs)
    }

    pub fn programs(&self) -> &[Vec<SockFilter>] {
        &self.programs
    }

    /// Total instruction count over all programs.
    pub fn instructions(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }

    /// Install every program on the calling thread (and its future children), in order.
    /// The caller must have set `PR_SET_NO_NEW_PRIVS` (or hold CAP_SYS_ADMIN).
    /// Async-signal-safe: no allocation, only the seccomp syscall. Returns the errno on failure.
    pub fn install(&self) -> Result<(), i32> {
        for p in &self.programs {
            // `decode` keeps programs at most `MAX_INSNS` (4096) long: never taken.
            let len = u16::try_from(p.len()).map_err(|_| libc::EINVAL)?;
            let prog = libc::sock_fprog {
                len,
                filter: p.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: `prog` points at `p`, which outlives the call; the kernel copies it.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    std::ptr::addr_of!(prog),
                )
            };
            if rc != 0 {
                // SAFETY: reading errno is async-signal-safe.
                return Err(unsafe { *libc::__errno_location() });
            }
        }
        Ok(())
    }
}
