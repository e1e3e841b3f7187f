//! What a spare copies before its run comes: the zygote's pages that runs write.
//!
//! A run is a copy-on-write copy of the zygote, and CPython writes to nearly every object it
//! touches (reference counts), so a run's first write to each of the zygote's pages is a
//! page fault and a 4 KiB copy. On this kind of VM that is 4–6 µs a page, and a warm
//! `print(1)` takes about 300 of them, Dify's Jinja2 runner about 1,000: the largest part of
//! what is left of a warm run. `madvise(MADV_POPULATE_WRITE)` makes the same copies ahead, in
//! one call a range (or one `process_madvise` call for many, [`vectored_populate`]), for less
//! than a fault costs; a spare does it while it waits for its run.
//!
//! Which pages: at start, the zygote runs each of a few fixed sample scripts (below: the
//! shapes of Dify's runners; never user code) in a process of its own that runs it the way a
//! run does (the run filter and the policy, `no_new_privs`, the same script runner; not the
//! run's namespaces, `/tmp`, hostname, limits or uid: they would reach beyond that process,
//! and the uid would make it unreadable to us), and stops it at its end. We read which of the
//! zygote's writable pages that process holds alone (`/proc/PID/pagemap`: present and mapped
//! exclusively, that is, copied or newly filled), and send the union back, the pages most
//! samples wrote first. What the samples teach is the same for every run of this zygote;
//! nothing a user's run does is ever learned from, so no run can tell anything of another
//! from what its spare copied.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

/// Dify's Python runner (its `Python3TemplateTransformer`, inputs as base64 JSON, the result
/// between `<<RESULT>>` markers), around a small `main`.
const PYTHON_RUNNER: &str = r#"def main(name: str, items: list) -> dict:
    return {"hello": name.title(), "total": sum(i["v"] for i in items), "keys": [i["k"] for i in items]}
import json
from base64 import b64decode
inputs_obj = json.loads(b64decode('eyJuYW1lIjogIlpvXHUwMGViIiwgIml0ZW1zIjogW3siayI6ICJhIiwgInYiOiAxfSwgeyJrIjogImIiLCAidiI6IDJ9XX0=').decode('utf-8'))
output_obj = main(**inputs_obj)
output_json = json.dumps(output_obj, indent=4)
result = f'''<<RESULT>>{output_json}<<RESULT>>'''
print(result)
"#;

/// Dify's Jinja2 runner (its `Jinja2TemplateTransformer`), with a template that uses what
/// templates commonly do: output, filters, a loop, a condition, arithmetic, attributes.
const JINJA2_RUNNER: &str = r#"def main(**inputs):
    import jinja2
    template = jinja2.Template('''Hi {{ name | upper }}!{% for i in items %} {{ loop.index }}:{{ i.k | default("-") }}={{ i.v * 10 }}{% if not loop.last %},{% endif %}{% endfor %} {{ items | length }} {{ items | map(attribute="k") | join("/") | trim }}''')
    return template.render(**inputs)
import json
from base64 import b64decode
inputs_obj = json.loads(b64decode('eyJuYW1lIjogIlpvXHUwMGViIiwgIml0ZW1zIjogW3siayI6ICJhIiwgInYiOiAxfSwgeyJrIjogImIiLCAidiI6IDJ9XX0=').decode('utf-8'))
output = main(**inputs_obj)
result = f'''<<RESULT>>{output}<<RESULT>>'''
print(result)
"#;

/// The sample scripts, with the module each needs (a zygote without it skips the sample).
pub(super) fn samples() -> serde_json::Value {
    serde_json::json!([
        {"needs": null, "code": "print(1)\n"},
        {"needs": "json", "code": PYTHON_RUNNER},
        {"needs": "jinja2", "code": JINJA2_RUNNER},
    ])
}

/// The page size `pagemap` indexes by: 4 KiB on x86-64, 4, 16 or 64 KiB on arm64 kernels.
fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// Whether a spare can copy many ranges ahead in one call: `process_madvise(2)` on its own
/// address space with `MADV_POPULATE_WRITE`, which Linux allows since 6.13 (before, only the
/// few hints it accepts for other processes). The spare then makes one call per
/// `COPY_BETWEEN_LOOKS` (zygote.py) instead of one per range: about 800 calls fewer for
/// Dify's preload, half a millisecond of CPU per spare. Probed here on a page of our own; a
/// seccomp profile around the container that refuses either call refuses it to the spare
/// too, and spares then copy range by range as before.
pub(super) fn vectored_populate() -> bool {
    let Ok(page) = usize::try_from(page_size()) else {
        return false;
    };
    // SAFETY: a fresh private anonymous mapping, ours alone; nothing else refers to it, and it
    // is unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    let copied = match libc::c_int::try_from(pidfd) {
        Ok(fd) if fd >= 0 => {
            // SAFETY: the descriptor just opened, ours alone; closed when dropped.
            let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            let iov = libc::iovec {
                iov_base: addr,
                iov_len: page,
            };
            // SAFETY: one iovec, alive across the call, naming the page mapped above; the
            // call only faults that page in.
            unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    pidfd.as_raw_fd(),
                    std::ptr::from_ref(&iov),
                    1usize,
                    libc::MADV_POPULATE_WRITE,
                    0u32,
                )
            }
        }
        _ => -1,
    };
    // SAFETY: the mapping made above, of that length.
    unsafe { libc::munmap(addr, page) };
    usize::try_from(copied) == Ok(page)
}

/// At most this many ranges (64 KiB of message; Dify's preload makes about 500): one
/// datagram, whatever the samples touched. The first ones are the ones that matter most.
const MAX_RANGES: usize = 4096;
/// `/proc/PID/pagemap`: the page is present, and mapped by this process alone.
const PRESENT: u64 = 1 << 63;
const EXCLUSIVE: u64 = 1 << 56;

/// The pages the samples wrote, counted per page.
pub(super) struct Learned {
    /// The zygote's private writable mappings (start, end), read once.
    writable: Vec<(u64, u64)>,
    /// Page number → how many samples wrote it.
    pages: BTreeMap<u64, u32>,
    page: u64,
    pub samples: u32,
}

impl Default for Learned {
    fn default() -> Learned {
        Learned {
            writable: Vec::new(),
            pages: BTreeMap::new(),
            page: page_size(),
            samples: 0,
        }
    }
}

impl Learned {
    /// Start with the zygote's mappings: only its own pages are worth copying ahead (a run's
    /// new mappings are new in every run).
    pub fn of_zygote(pid: libc::pid_t) -> std::io::Result<Learned> {
        Ok(Learned {
            writable: private_writable(pid)?,
            ..Learned::default()
        })
    }

    /// Take in one stopped sample's pages.
    pub fn sample(&mut self, pid: libc::pid_t) -> std::io::Result<()> {
        let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
        let mut entries = Vec::new();
        for &(start, end) in &self.writable {
            let first = start / self.page;
            let Ok(pages) = usize::try_from((end - start) / self.page) else {
                continue; // larger than this machine can index: not a real mapping
            };
            entries.resize(pages * 8, 0);
            // A range the sample unmapped reads as absent pages, or short: the rest is absent.
            let n = read_at_most(&pagemap, &mut entries, first * 8)?;
            for (i, entry) in entries[..n - n % 8].chunks_exact(8).enumerate() {
                let entry = u64::from_le_bytes(entry.try_into().expect("8 bytes"));
                if entry & (PRESENT | EXCLUSIVE) == PRESENT | EXCLUSIVE {
                    *self.pages.entry(first + i as u64).or_default() += 1;
                }
            }
        }
        self.samples += 1;
        Ok(())
    }

    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// The `P` message for the zygote: (start, length) in bytes, little-endian u64 pairs,
    /// contiguous pages merged; the pages most samples wrote first, so that a spare handed
    /// its run half-way has copied what every run needs. At most [`MAX_RANGES`].
    pub fn ranges(&self) -> Vec<u8> {
        let mut by_count: BTreeMap<std::cmp::Reverse<u32>, Vec<u64>> = BTreeMap::new();
        for (&page, &count) in &self.pages {
            by_count
                .entry(std::cmp::Reverse(count))
                .or_default()
                .push(page);
        }
        let mut out = vec![b'P'];
        for pages in by_count.values() {
            let mut run: Option<(u64, u64)> = None;
            for &page in pages {
                run = match run {
                    Some((first, n)) if first + n == page => Some((first, n + 1)),
                    Some((first, n)) => {
                        push_range(&mut out, self.page, first, n);
                        Some((page, 1))
                    }
                    None => Some((page, 1)),
                };
            }
            if let Some((first, n)) = run {
                push_range(&mut out, self.page, first, n);
            }
        }
        out.truncate(1 + 16 * MAX_RANGES);
        out
    }
}

fn push_range(out: &mut Vec<u8>, page: u64, first_page: u64, pages: u64) {
    out.extend_from_slice(&(first_page * page).to_le_bytes());
    out.extend_from_slice(&(pages * page).to_le_bytes());
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A process's private writable mappings (`rw-p`), but the kernel's own.
fn private_writable(pid: libc::pid_t) -> std::io::Result<Vec<(u64, u64)>> {
    let maps = BufReader::new(File::open(format!("/proc/{pid}/maps"))?);
    let mut ranges = Vec::new();
    for line in maps.lines() {
        let line = line?;
        let mut fields = line.split_ascii_whitespace();
        let (Some(span), Some("rw-p")) = (fields.next(), fields.next()) else {
            continue;
        };
        if matches!(
            fields.nth(3),
            Some("[vvar]" | "[vsyscall]" | "[vvar_vclock]")
        ) {
            continue;
        }
        let parsed = span.split_once('-').and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        });
        if let Some((start, end)) = parsed.filter(|(s, e)| s < e) {
            ranges.push((start, end));
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_put_the_pages_most_samples_wrote_first_and_merge_neighbours() {
        let mut l = Learned::default();
        for (page, count) in [(10, 1), (11, 1), (12, 3), (13, 3), (20, 3), (21, 1)] {
            l.pages.insert(page, count);
        }
        let msg = l.ranges();
        assert_eq!(msg[0], b'P');
        let pairs: Vec<(u64, u64)> = msg[1..]
            .chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().unwrap()) / l.page,
                    u64::from_le_bytes(c[8..].try_into().unwrap()) / l.page,
                )
            })
            .collect();
        assert_eq!(pairs, [(12, 2), (20, 1), (10, 2), (21, 1)]);
    }

    #[test]
    fn ranges_stop_at_the_most_one_message_carries() {
        let mut l = Learned::default();
        for page in 0..(MAX_RANGES as u64 + 10) {
            l.pages.insert(page * 2, if page < 5 { 2 } else { 1 });
        }
        let msg = l.ranges();
        assert_eq!(msg.len(), 1 + 16 * MAX_RANGES);
        // The pages more samples wrote are kept.
        assert_eq!(u64::from_le_bytes(msg[1..9].try_into().unwrap()), 0);
    }

    #[test]
    fn a_process_s_own_writes_read_as_its_exclusive_pages() {
        // This test process's own heap: a page it wrote is present and exclusive.
        let mut buf = vec![1u8; 64 * 65536];
        buf[0] = 2;
        let pid = libc::pid_t::try_from(std::process::id()).expect("a pid");
        let mut l = Learned::of_zygote(pid).expect("our own maps");
        l.sample(pid).expect("our own pagemap");
        let page = buf.as_ptr() as u64 / l.page + 1;
        assert_eq!(l.pages.get(&page), Some(&1), "{page:#x}");
        std::hint::black_box(&buf);
    }

    /// `process_madvise(2)` took `MADV_POPULATE_WRITE` for the caller itself in Linux 6.13;
    /// the probe must say so on this kernel, whichever side of 6.13 it is.
    #[test]
    fn vectored_populate_is_there_from_linux_6_13() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        assert_eq!(vectored_populate(), version >= (6, 13), "kernel {release}");
    }
}
