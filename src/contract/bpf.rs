//! The file format of `seccomp/<language>{,-net}.bpf`, written by the build and loaded by the
//! runtime: one or more programs, each a little-endian `u32` instruction count followed by
//! that many `struct sock_filter` (8 bytes each, native layout: u16 code, u8 jt, u8 jf,
//! u32 k). Several programs are stacked in file order, and the kernel applies the most
//! restrictive result of all of them. The build writes one since 2026-12-07 (it wrote one
//! per action before, `seccomp::bpf`); a runtime still installs any stack.

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

/// Parse the file format described in the module docs into its programs, in file order.
pub fn decode(bytes: &[u8]) -> Result<Vec<Vec<SockFilter>>, LoadError> {
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
    Ok(programs)
}

/// Serialize programs into the file format.
pub fn encode(programs: &[Vec<SockFilter>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in programs {
        let count = u32::try_from(p.len()).expect("a program is far below 2^32 instructions");
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&program_bytes(p));
    }
    out
}

/// A program as the `struct sock_filter` array seccomp(2) takes (native byte order).
pub fn program_bytes(program: &[SockFilter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
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
        let bytes = encode(&p);
        assert_eq!(decode(&bytes).unwrap(), p);
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(LoadError::Truncated { .. })
        ));
        assert!(matches!(decode(&[]), Err(LoadError::Empty)));
        assert!(matches!(
            decode(&[0, 0, 0, 0]),
            Err(LoadError::BadCount { .. })
        ));
    }
}
