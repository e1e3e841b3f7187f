//! A warm run's exit status, told before its process exits, so that its answer does not wait
//! for the kernel to tear down its address space.
//!
//! A process's exit frees its memory before its parent can see that it exited. A run forked
//! from a zygote is a copy-on-write copy of an interpreter with its preload imported (40 MB
//! mapped for Dify's default list), and freeing that copy, with the reap after it, took 1.4 to
//! 2.3 ms on the machine this was measured on (`runtime_bench::bench_answer_before_exit`):
//! about a fifth of a warm `print(1)` run, on the path of every answer.
//!
//! So a warm run, once the interpreter's end is done (threads joined, atexit, the streams
//! flushed: see `zygote.py`'s `finish`), writes this record right after the script in its own
//! code memfd, its standard input, then closes its stdout and stderr and exits. When both
//! pipes reach end of file before the exit, the runtime reads the record: if it is there, the
//! run is answered with that exit code at once, and the kill of its tree, the reap and the
//! return of its uid follow the answer (see `Sandbox::run_answering`).
//!
//! The record is the run's own word: a script can write it too (its standard input is the
//! memfd, open for writing, in cold runs as well). All that buys it is an earlier answer to
//! its own request, after which its tree is killed at once, as at its deadline; what it wrote
//! to stdout and stderr is all the answer ever holds either way. A run that dies of a signal,
//! calls `os._exit` or keeps its output open writes no record and is answered after its exit,
//! as cold runs always are.

use super::Exit;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The record's first bytes; the exit status (0 to 255) follows as a little-endian u32. A NUL
/// first, so that no text a script could have meant as code is the record.
pub(super) const MAGIC: &[u8; 12] = b"\0prebake-end";

/// The record's length: the magic and the status.
const LEN: usize = MAGIC.len() + 4;

/// The exit status a run recorded in its code memfd `code`, whose script is `script_len`
/// bytes long; None when there is no valid record there.
pub(super) fn read(code: BorrowedFd<'_>, script_len: usize) -> Option<Exit> {
    let mut buf = [0u8; LEN + 1];
    let at = libc::off_t::try_from(script_len).ok()?;
    // SAFETY: pread into a live buffer of the length given.
    let n = unsafe { libc::pread(code.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), at) };
    // Exactly the record and nothing after it: anything else was not written by the zygote.
    if usize::try_from(n).ok()? != LEN || &buf[..MAGIC.len()] != MAGIC {
        return None;
    }
    let status = u32::from_le_bytes(buf[MAGIC.len()..LEN].try_into().ok()?);
    Some(Exit::Code(
        i32::try_from(status).ok().filter(|s| *s <= 255)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn memfd(content: &[u8]) -> std::fs::File {
        // SAFETY: memfd_create returns a new descriptor we own.
        let fd = unsafe { libc::memfd_create(c"test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor we own.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.write_all(content).unwrap();
        f
    }

    fn record(status: u32) -> Vec<u8> {
        let mut r = MAGIC.to_vec();
        r.extend_from_slice(&status.to_le_bytes());
        r
    }

    #[test]
    fn a_record_after_the_script_gives_its_status() {
        let script = b"print(1)\n";
        for status in [0u8, 3, 120, 255] {
            let f = memfd(&[script.as_slice(), &record(u32::from(status))].concat());
            assert_eq!(
                read(f.as_fd(), script.len()),
                Some(Exit::Code(i32::from(status)))
            );
        }
    }

    #[test]
    fn anything_but_exactly_a_record_there_is_none() {
        let script = b"print(1)\n";
        let cases: Vec<Vec<u8>> = vec![
            script.to_vec(),
            [script.as_slice(), &record(0)[..LEN - 1]].concat(),
            [script.as_slice(), &record(0), b"x"].concat(),
            [script.as_slice(), &record(256)].concat(),
            [script.as_slice(), b"\0prebake-enD\0\0\0\0"].concat(),
            // The record at another offset than the script's end.
            [b"x".as_slice(), script, &record(0)].concat(),
        ];
        for (i, content) in cases.iter().enumerate() {
            assert_eq!(read(memfd(content).as_fd(), script.len()), None, "case {i}");
        }
    }
}
