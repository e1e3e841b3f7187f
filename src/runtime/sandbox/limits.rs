//! The resource limits of a run (rlimits, output cap, /tmp size), per language where the
//! interpreters' floors differ.

use std::collections::BTreeMap;

/// Limits applied to every run.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// RLIMIT_AS in bytes, for languages without an entry in `memory_by_language`.
    pub memory_bytes: u64,
    /// RLIMIT_AS in bytes per language, where the interpreter's own address-space floor
    /// differs a lot from Python's. Node's V8 reserves about 700 MiB of address space before
    /// running a line (a 512 MiB code range, 64 MiB malloc arenas, thread stacks) and each
    /// worker thread another 800 MiB, so Python's 1 GiB would leave a Node script about
    /// 90 MiB of heap. Reservations are not memory in use; the limit still bounds what a
    /// script can touch, just from a higher floor.
    pub memory_by_language: BTreeMap<String, u64>,
    /// Cap on each of stdout and stderr; beyond it the run is killed and truncation reported.
    pub output_bytes: usize,
    /// RLIMIT_NPROC (processes and threads of the run's uid).
    pub processes: u64,
    /// Size of the private /tmp tmpfs, and RLIMIT_FSIZE.
    pub tmp_bytes: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
}

/// The default address-space limit of `nodejs` runs (see [`Limits::memory_by_language`]):
/// about 1.3 GiB above V8's reservations, so a JavaScript heap of 1 GiB fits and a memory
/// bomb ends in V8's own "JavaScript heap out of memory".
pub const NODEJS_MEMORY_BYTES: u64 = 2048 << 20;

impl Limits {
    /// RLIMIT_AS of a run of `language`.
    pub fn memory_for(&self, language: &str) -> u64 {
        self.memory_by_language
            .get(language)
            .copied()
            .unwrap_or(self.memory_bytes)
    }

    /// The limits one run of `language` gets: `memory_bytes` is that language's.
    pub fn for_language(&self, language: &str) -> Limits {
        Limits {
            memory_bytes: self.memory_for(language),
            memory_by_language: BTreeMap::new(),
            ..self.clone()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1024 << 20,
            memory_by_language: BTreeMap::from([("nodejs".to_owned(), NODEJS_MEMORY_BYTES)]),
            output_bytes: 64 << 20,
            processes: 64,
            tmp_bytes: 64 << 20,
            open_files: 256,
        }
    }
}
