//! Loading precompiled BPF programs at run time.
//!
//! File format of `seccomp/<language>{,-net}.bpf`: one or more programs, each a little-endian
//! `u32` instruction count followed by that many `struct sock_filter` (8 bytes each, native
//! layout: u16 code, u8 jt, u8 jf, u32 k). Several programs are stacked in file order, because
//! one seccompiler program has only one match action and the policy needs three (allow,
//! EPERM, ENOSYS for clone3); the kernel applies the most restrictive result of all of them.
//!
//! Parsing happens before fork; [`Programs::install`] only makes syscalls, so it is safe to
//! call between fork and exec in a child of a multi-threaded process.

/// One `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Kernel limit on instructions per program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("BPF file is empty: rebuild the bundle")]
    Empty,
    #[error("BPF file is truncated at byte {offset}: rebuild the bundle")]
    Truncated { offset: usize },
    #[error("BPF program {index} has {count} instructions (must be 1..={MAX_INSNS})")]
    BadCount { index: usize, count: usize },
}

/// Programs ready to install, in installation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    programs: Vec<Vec<SockFilter>>,
}

impl Programs {
    /// Parse the file format described in the module docs.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        if bytes.is_empty() {
            return Err(LoadError::Empty);
        }
        let mut programs = Vec::new();
        let mut off = 0usize;
        while off < bytes.len() {
            let head = bytes
                .get(off..off + 4)
                .ok_or(LoadError::Truncated { offset: off })?;
            let count = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
            if count == 0 || count > MAX_INSNS {
                return Err(LoadError::BadCount {
                    index: programs.len(),
                    count,
                });
            }
            off += 4;
            let body = bytes
                .get(off..off + count * 8)
                .ok_or(LoadError::Truncated { offset: off })?;
            let prog = body
                .chunks_exact(8)
                .map(|c| SockFilter {
                    code: u16::from_ne_bytes([c[0], c[1]]),
                    jt: c[2],
                    jf: c[3],
                    k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                })
                .collect();
            programs.push(prog);
            off += count * 8;
        }
        Ok(Programs { programs })
    }

    /// Serialize programs into the file format.
    pub fn to_bytes(programs: &[Vec<SockFilter>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in programs {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            for i in p {
                out.extend_from_slice(&i.code.to_ne_bytes());
                out.push(i.jt);
                out.push(i.jf);
                out.extend_from_slice(&i.k.to_ne_bytes());
            }
        }
        out
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
            let prog = libc::sock_fprog {
                len: p.len() as u16,
                filter: p.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: `prog` points at `p`, which outlives the call; the kernel copies it.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let p = vec![
            vec![SockFilter {
                code: 6,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000,
            }],
            vec![
                SockFilter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 4,
                },
                SockFilter {
                    code: 6,
                    jt: 1,
                    jf: 2,
                    k: 0x7fff_0000,
                },
            ],
        ];
        let bytes = Programs::to_bytes(&p);
        let parsed = Programs::from_bytes(&bytes).unwrap();
        assert_eq!(parsed.programs(), &p[..]);
        assert_eq!(parsed.instructions(), 3);
        assert!(matches!(
            Programs::from_bytes(&bytes[..bytes.len() - 1]),
            Err(LoadError::Truncated { .. })
        ));
        assert!(matches!(Programs::from_bytes(&[]), Err(LoadError::Empty)));
        assert!(matches!(
            Programs::from_bytes(&[0, 0, 0, 0]),
            Err(LoadError::BadCount { .. })
        ));
    }
}
