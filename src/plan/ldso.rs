//! glibc's shared-library search rules (dl-load.c `_dl_map_object`), its ld.so.cache format,
//! and the closure of a set of ELF objects computed with them inside a sysroot.
//!
//! The closure models one process: the main executable is mapped first (its PT_INTERP is
//! already "loaded" as ld.so itself), its DT_NEEDED tree is loaded breadth-first, then every
//! other object is dlopen'ed in order. Names already loaded (by DT_NEEDED name, SONAME or path)
//! and files already loaded (same inode) are reused, exactly as ld.so reuses link maps, so the
//! result is what the loader would open, not what a naive per-file walk would find.

use crate::plan::elf::{read_elf, ElfClass, ElfError, ElfInfo};
use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// ld.so.cache
// ---------------------------------------------------------------------------------------------

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_HEADER: usize = 16; // magic[11] + pad + nlibs
const OLD_ENTRY: usize = 12; // flags, key, value
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24; // flags, key, value, osversion, hwcap
/// `cache_file_new.flags` endianness values (dl-cache.h).
const ENDIAN_UNSET: u8 = 0;
const ENDIAN_LITTLE: u8 = 2;
const ENDIAN_BIG: u8 = 3;
/// Bit 62 of `hwcap` marks an entry of a glibc-hwcaps subdirectory (DL_CACHE_HWCAP_EXTENSION).
pub const HWCAP_EXTENSION: u64 = 1 << 62;

/// FLAG_ELF_LIBC6 and the per-architecture "required" flags of dl-cache.h.
const FLAG_ELF: i32 = 0x0001;
const FLAG_ELF_LIBC6: i32 = 0x0003;

const EM_386: u16 = 3;
const EM_SPARCV9: u16 = 43;
const EM_PPC: u16 = 20;
const EM_PPC64: u16 = 21;
const EM_S390: u16 = 22;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const EM_RISCV: u16 = 243;
const EM_LOONGARCH: u16 = 258;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub flags: i32,
    /// The SONAME (file name) looked up.
    pub key: String,
    /// Absolute path of the library.
    pub value: String,
    pub hwcap: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdCache {
    /// In file order (ldconfig's order: descending by `_dl_cache_libcmp` of the key).
    pub entries: Vec<CacheEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("not an ld.so.cache: the file starts with neither \"glibc-ld.so.cache1.1\" nor \"ld.so-1.7.0\"; regenerate it with ldconfig")]
    BadMagic,
    #[error("truncated ld.so.cache: {0}; regenerate it with ldconfig")]
    Truncated(String),
    #[error("corrupt ld.so.cache: {0}; regenerate it with ldconfig")]
    Corrupt(String),
}

/// The `flags` value ldconfig writes for libraries of this class/machine (`_DL_CACHE_DEFAULT_ID`).
pub fn cache_flags(class: ElfClass, machine: u16) -> i32 {
    let required = match (class, machine) {
        (ElfClass::Elf64, EM_SPARCV9) => 0x0100,
        (ElfClass::Elf64, EM_S390) => 0x0400,
        (ElfClass::Elf64, EM_PPC64) => 0x0500,
        (ElfClass::Elf64, EM_X86_64) => 0x0300,
        (ElfClass::Elf32, EM_X86_64) => 0x0800, // x32
        (ElfClass::Elf32, EM_ARM) => 0x0900,    // hard-float, what Debian armhf ships
        (ElfClass::Elf64, EM_AARCH64) => 0x0a00,
        (ElfClass::Elf64, EM_RISCV) => 0x1000, // double-float ABI
        (ElfClass::Elf64, EM_LOONGARCH) => 0x1200,
        _ => 0,
    };
    FLAG_ELF_LIBC6 | required
}

/// `_dl_cache_check_flags`: which cache entries a process of this class/machine accepts.
fn cache_flags_ok(flags: i32, class: ElfClass, machine: u16) -> bool {
    let want = cache_flags(class, machine);
    // x86-64 accepts only its own id; the generic rule also takes plain FLAG_ELF entries.
    flags == want || (flags == FLAG_ELF && !(class == ElfClass::Elf64 && machine == EM_X86_64))
}

fn big_endian_machine(machine: u16) -> bool {
    matches!(machine, EM_S390 | EM_SPARCV9 | EM_PPC)
}

impl LdCache {
    /// Entries for `name` usable by a process of this class/machine, in cache order.
    pub fn lookup<'a>(
        &'a self,
        name: &'a str,
        class: ElfClass,
        machine: u16,
    ) -> impl Iterator<Item = &'a CacheEntry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.key == name && cache_flags_ok(e.flags, class, machine))
    }
}

/// glibc's `_dl_cache_libcmp`: like strcmp, but runs of digits compare numerically, and a digit
/// sorts after a non-digit.
pub fn libcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    while at(a, i) != 0 {
        let (c1, c2) = (at(a, i), at(b, j));
        if c1.is_ascii_digit() {
            if !c2.is_ascii_digit() {
                return Ordering::Greater;
            }
            let (mut v1, mut v2) = (0u128, 0u128);
            while at(a, i).is_ascii_digit() {
                v1 = v1
                    .saturating_mul(10)
                    .saturating_add(u128::from(at(a, i) - b'0'));
                i += 1;
            }
            while at(b, j).is_ascii_digit() {
                v2 = v2
                    .saturating_mul(10)
                    .saturating_add(u128::from(at(b, j) - b'0'));
                j += 1;
            }
            if v1 != v2 {
                return v1.cmp(&v2);
            }
        } else if c2.is_ascii_digit() {
            return Ordering::Less;
        } else if c1 != c2 {
            return c1.cmp(&c2);
        } else {
            i += 1;
            j += 1;
        }
    }
    0u8.cmp(&at(b, j))
}

struct Bytes<'a> {
    b: &'a [u8],
    big: bool,
}

impl Bytes<'_> {
    fn u32(&self, at: usize, what: &str) -> Result<u32, CacheError> {
        let s = self
            .b
            .get(at..at + 4)
            .ok_or_else(|| CacheError::Truncated(format!("{what} at offset {at}")))?;
        let arr = [s[0], s[1], s[2], s[3]];
        Ok(if self.big {
            u32::from_be_bytes(arr)
        } else {
            u32::from_le_bytes(arr)
        })
    }
    fn u64(&self, at: usize, what: &str) -> Result<u64, CacheError> {
        let lo = u64::from(self.u32(at, what)?);
        let hi = u64::from(self.u32(at + 4, what)?);
        Ok(if self.big {
            (lo << 32) | hi
        } else {
            (hi << 32) | lo
        })
    }
    /// NUL-terminated string at `base + off`, which must stay inside the file.
    fn string(&self, base: usize, off: u32, what: &str) -> Result<String, CacheError> {
        let start = base
            .checked_add(off as usize)
            .filter(|&s| s < self.b.len())
            .ok_or_else(|| {
                CacheError::Corrupt(format!("{what} string offset {off} is past the end"))
            })?;
        let rest = &self.b[start..];
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| CacheError::Corrupt(format!("{what} string is not NUL-terminated")))?;
        String::from_utf8(rest[..end].to_vec())
            .map_err(|_| CacheError::Corrupt(format!("{what} string is not UTF-8")))
    }
}

/// Parse an ld.so.cache: the "glibc-ld.so.cache1.1" format, alone or after the old
/// "ld.so-1.7.0" table (the compat format), or the old format alone.
pub fn parse_cache(bytes: &[u8]) -> Result<LdCache, CacheError> {
    if bytes.starts_with(NEW_MAGIC) {
        return parse_new(bytes, 0);
    }
    if !bytes.starts_with(OLD_MAGIC) {
        return Err(CacheError::BadMagic);
    }
    let le = Bytes {
        b: bytes,
        big: false,
    };
    let nlibs = le.u32(12, "old-format nlibs")? as usize;
    let old_end = nlibs
        .checked_mul(OLD_ENTRY)
        .and_then(|n| n.checked_add(OLD_HEADER))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| CacheError::Truncated(format!("{nlibs} old-format entries")))?;
    // The new table follows, aligned like `struct cache_file_new` (8 bytes).
    let new_at = (old_end + 7) & !7;
    if bytes
        .get(new_at..)
        .is_some_and(|b| b.starts_with(NEW_MAGIC))
    {
        return parse_new(bytes, new_at);
    }
    // Old format only: string offsets are relative to the end of the entry table.
    let mut entries = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let at = OLD_HEADER + i * OLD_ENTRY;
        let flags = le.u32(at, "entry flags")? as i32;
        let key = le.u32(at + 4, "entry key")?;
        let value = le.u32(at + 8, "entry value")?;
        entries.push(CacheEntry {
            flags,
            key: le.string(old_end, key, &format!("entry {i} key"))?,
            value: le.string(old_end, value, &format!("entry {i} value"))?,
            hwcap: 0,
        });
    }
    Ok(LdCache { entries })
}

fn parse_new(bytes: &[u8], base: usize) -> Result<LdCache, CacheError> {
    let flags = *bytes
        .get(base + 28)
        .ok_or_else(|| CacheError::Truncated("new-format header".into()))?;
    let big = match flags {
        ENDIAN_UNSET | ENDIAN_LITTLE => false,
        ENDIAN_BIG => true,
        other => return Err(CacheError::Corrupt(format!("endianness flag {other}"))),
    };
    let r = Bytes { b: bytes, big };
    let nlibs = r.u32(base + 20, "nlibs")? as usize;
    // Check the table size up front so a corrupt count cannot make us allocate.
    nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|n| n.checked_add(base + NEW_HEADER))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| CacheError::Truncated(format!("{nlibs} entries do not fit")))?;
    let mut entries = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let at = base + NEW_HEADER + i * NEW_ENTRY;
        let flags = r.u32(at, "entry flags")? as i32;
        let key = r.u32(at + 4, "entry key")?;
        let value = r.u32(at + 8, "entry value")?;
        let hwcap = r.u64(at + 16, "entry hwcap")?;
        // In the new format string offsets count from the start of the new header.
        entries.push(CacheEntry {
            flags,
            key: r.string(base, key, &format!("entry {i} key"))?,
            value: r.string(base, value, &format!("entry {i} value"))?,
            hwcap,
        });
    }
    Ok(LdCache { entries })
}

/// Write a "glibc-ld.so.cache1.1" cache (no old-format table, no extensions) listing
/// `entries` as (soname, absolute path). The bytes depend only on the input: entries are
/// sorted as ldconfig sorts them (descending `_dl_cache_libcmp`, stable, so for equal sonames
/// the earlier input wins, like ldconfig's earlier directory), strings are deduplicated in
/// first-use order.
pub fn write_cache<'a>(entries: &'a [(String, String)], class: ElfClass, machine: u16) -> Vec<u8> {
    let big = big_endian_machine(machine);
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let flags = cache_flags(class, machine);

    let mut order: Vec<&'a (String, String)> = entries.iter().collect();
    order.sort_by(|a, b| libcmp(&b.0, &a.0));

    let strings_base = NEW_HEADER + order.len() * NEW_ENTRY;
    let mut strings: Vec<u8> = Vec::new();
    let mut offsets: HashMap<&str, u32> = HashMap::new();
    let mut table = Vec::with_capacity(order.len() * NEW_ENTRY);
    for &(key, value) in &order {
        let mut intern = |s: &'a str| -> u32 {
            *offsets.entry(s).or_insert_with(|| {
                let o = (strings_base + strings.len()) as u32;
                strings.extend_from_slice(s.as_bytes());
                strings.push(0);
                o
            })
        };
        let k = intern(key.as_str());
        let v = intern(value.as_str());
        table.extend_from_slice(&u32b(flags as u32));
        table.extend_from_slice(&u32b(k));
        table.extend_from_slice(&u32b(v));
        table.extend_from_slice(&u32b(0)); // osversion (unused)
        table.extend_from_slice(&[0u8; 8]); // hwcap 0 reads the same in both byte orders
    }

    let mut out = Vec::with_capacity(strings_base + strings.len());
    out.extend_from_slice(NEW_MAGIC);
    out.extend_from_slice(&u32b(order.len() as u32));
    out.extend_from_slice(&u32b(strings.len() as u32));
    out.push(if big { ENDIAN_BIG } else { ENDIAN_LITTLE });
    out.extend_from_slice(&[0u8; 3]); // padding
    out.extend_from_slice(&u32b(0)); // extension_offset: none
    out.extend_from_slice(&[0u8; 12]); // unused
    debug_assert_eq!(out.len(), NEW_HEADER);
    out.extend_from_slice(&table);
    out.extend_from_slice(&strings);
    out
}

// ---------------------------------------------------------------------------------------------
// Resolver
// ---------------------------------------------------------------------------------------------

/// Symlink hops allowed while resolving one path (the kernel's MAXSYMLINKS).
const MAX_SYMLINK_HOPS: usize = 40;
/// Depth of nested `include` in ld.so.conf before we call it a loop.
const MAX_CONF_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: symlink loop or chain longer than {MAX_SYMLINK_HOPS} links; fix the link")]
    SymlinkLoop { path: PathBuf },
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error("{path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: CacheError,
    },
    #[error("{path}: {reason}")]
    Conf { path: PathBuf, reason: String },
    #[error("{path}: does not exist in the sysroot {sysroot}; check the path")]
    NotFound { path: PathBuf, sysroot: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedLibrary {
    /// The DT_NEEDED string.
    pub name: String,
    /// The path as the loader opens it (symlinks kept, e.g. /lib/x86_64-linux-gnu/libz.so.1).
    pub path: PathBuf,
    /// The object whose DT_NEEDED caused the load (its path as loaded).
    pub needed_by: PathBuf,
    /// Symlink-free path of the file inside the sysroot.
    pub real: PathBuf,
    /// Set for a glibc-hwcaps variant ("x86-64-v3"): returned in addition to the baseline
    /// library because the CPU that will pick between them is unknown at build time.
    pub hwcaps: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLibrary {
    pub name: String,
    pub needed_by: PathBuf,
    /// Directories (and the cache file) searched, in order.
    pub searched: Vec<PathBuf>,
    /// Files that exist under the name but the loader would skip, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
}

impl fmt::Display for MissingLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (needed by {}) not found; searched: ",
            self.name,
            self.needed_by.display()
        )?;
        if self.searched.is_empty() {
            f.write_str("nothing (no search path applies)")?;
        }
        for (i, d) in self.searched.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", d.display())?;
        }
        for (i, (p, why)) in self.rejected.iter().enumerate() {
            f.write_str(if i == 0 { "; skipped: " } else { ", " })?;
            write!(f, "{} ({why})", p.display())?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// In load order, one entry per distinct path opened.
    pub libraries: Vec<ResolvedLibrary>,
    /// PT_INTERP strings as written, in order of first appearance.
    pub interpreters: Vec<PathBuf>,
    pub missing: Vec<MissingLibrary>,
}

/// Where a distro keeps libraries for one class/machine, and the values of $LIB / $PLATFORM.
#[derive(Debug, Clone)]
struct TargetDirs {
    default_dirs: Vec<PathBuf>,
    lib: String,
    platform: String,
    x86_64: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Target {
    class: ElfClass,
    machine: u16,
    little: bool,
}

impl Target {
    fn of(info: &ElfInfo) -> Self {
        Target {
            class: info.class,
            machine: info.machine,
            little: info.little_endian,
        }
    }
}

fn multiarch_triplet(class: ElfClass, machine: u16) -> Option<&'static str> {
    Some(match (class, machine) {
        (ElfClass::Elf64, EM_X86_64) => "x86_64-linux-gnu",
        (ElfClass::Elf32, EM_X86_64) => "x86_64-linux-gnux32",
        (ElfClass::Elf32, EM_386) => "i386-linux-gnu",
        (ElfClass::Elf64, EM_AARCH64) => "aarch64-linux-gnu",
        (ElfClass::Elf32, EM_ARM) => "arm-linux-gnueabihf",
        (ElfClass::Elf64, EM_PPC64) => "powerpc64le-linux-gnu",
        (ElfClass::Elf64, EM_S390) => "s390x-linux-gnu",
        (ElfClass::Elf64, EM_RISCV) => "riscv64-linux-gnu",
        (ElfClass::Elf64, EM_LOONGARCH) => "loongarch64-linux-gnu",
        _ => return None,
    })
}

fn platform_name(class: ElfClass, machine: u16) -> &'static str {
    match (class, machine) {
        (ElfClass::Elf64, EM_X86_64) => "x86_64",
        (_, EM_386) => "i686",
        (_, EM_AARCH64) => "aarch64",
        (_, EM_ARM) => "v7l",
        (_, EM_PPC64) => "power9",
        (_, EM_S390) => "z13",
        (_, EM_RISCV) => "riscv64",
        _ => "",
    }
}

/// glibc-hwcaps subdirectories glibc 2.33+ knows for x86-64, in priority order.
const X86_64_HWCAPS: [&str; 3] = ["x86-64-v4", "x86-64-v3", "x86-64-v2"];

#[derive(Debug)]
pub struct Resolver {
    sysroot: PathBuf,
    cache: LdCache,
    /// "/etc/ld.so.cache" when the sysroot has one.
    cache_path: Option<PathBuf>,
    conf_dirs: Vec<PathBuf>,
}

/// A file that exists at a candidate path and that the loader would accept.
#[derive(Debug, Clone)]
struct Found {
    path: PathBuf,
    real: PathBuf,
    id: (u64, u64),
    info: ElfInfo,
}

enum Probe {
    Absent,
    Rejected(PathBuf, String),
    Found(Found),
}

impl Resolver {
    pub fn new(sysroot: &Path) -> Result<Self, ResolveError> {
        let mut r = Resolver {
            sysroot: sysroot.to_path_buf(),
            cache: LdCache::default(),
            cache_path: None,
            conf_dirs: Vec::new(),
        };
        let cache_file = Path::new("/etc/ld.so.cache");
        if let Some(real) = r.resolve_in_root(cache_file)? {
            let host = r.host_path(&real);
            let bytes = std::fs::read(&host).map_err(|source| ResolveError::Io {
                path: host.clone(),
                source,
            })?;
            r.cache = parse_cache(&bytes).map_err(|source| ResolveError::Cache {
                path: host.clone(),
                source,
            })?;
            r.cache_path = Some(cache_file.to_path_buf());
        }
        let mut dirs = Vec::new();
        r.read_conf(Path::new("/etc/ld.so.conf"), 0, &mut dirs)?;
        r.conf_dirs = dirs;
        Ok(r)
    }

    pub fn host_path(&self, p: &Path) -> PathBuf {
        host_path_in(&self.sysroot, p)
    }

    pub fn sysroot(&self) -> &Path {
        &self.sysroot
    }

    pub fn cache(&self) -> &LdCache {
        &self.cache
    }

    /// Directories listed by <sysroot>/etc/ld.so.conf (includes expanded), in order. ld.so never
    /// reads them; they stand in for the cache when the sysroot has no ld.so.cache (as if
    /// ldconfig had run), and tell the build which directories a rootfs-local cache covers.
    pub fn conf_dirs(&self) -> &[PathBuf] {
        &self.conf_dirs
    }

    /// The loader's built-in search directories for this class/machine in this sysroot.
    pub fn default_dirs(&self, class: ElfClass, machine: u16) -> Vec<PathBuf> {
        self.target_dirs(class, machine).default_dirs
    }

    fn is_dir_in_root(&self, p: &Path) -> bool {
        matches!(self.resolve_in_root(p), Ok(Some(real)) if self.host_path(&real).is_dir())
    }

    fn target_dirs(&self, class: ElfClass, machine: u16) -> TargetDirs {
        let platform = platform_name(class, machine).to_owned();
        let x86_64 = class == ElfClass::Elf64 && machine == EM_X86_64;
        // Debian/Ubuntu multiarch: slibdir=/lib/<triplet>, libdir=/usr/lib/<triplet>, then the
        // plain dirs (`ld.so --help` on Debian 12 lists exactly these four).
        if let Some(t) = multiarch_triplet(class, machine) {
            let lib = format!("/lib/{t}");
            let usr = format!("/usr/lib/{t}");
            if self.is_dir_in_root(Path::new(&lib)) || self.is_dir_in_root(Path::new(&usr)) {
                return TargetDirs {
                    default_dirs: vec![lib.into(), usr.into(), "/lib".into(), "/usr/lib".into()],
                    lib: format!("lib/{t}"),
                    platform,
                    x86_64,
                };
            }
        }
        // Fedora/RHEL/SUSE: 64-bit libraries in lib64.
        if class == ElfClass::Elf64
            && (self.is_dir_in_root(Path::new("/lib64"))
                || self.is_dir_in_root(Path::new("/usr/lib64")))
        {
            return TargetDirs {
                default_dirs: vec!["/lib64".into(), "/usr/lib64".into()],
                lib: "lib64".into(),
                platform,
                x86_64,
            };
        }
        TargetDirs {
            default_dirs: vec!["/lib".into(), "/usr/lib".into()],
            lib: "lib".into(),
            platform,
            x86_64,
        }
    }

    /// Resolve every symlink of `p` inside the sysroot; see [`resolve_in_root`].
    pub fn resolve_in_root(&self, p: &Path) -> Result<Option<PathBuf>, ResolveError> {
        resolve_in_root(&self.sysroot, p)
    }

    /// Remove `.` and `//`, and apply `..` physically (after resolving the symlinks before it),
    /// as the kernel does when ld.so opens "$ORIGIN/../lib/x". `Ok(None)` when a directory
    /// before a `..` does not exist.
    fn physical_clean(&self, p: &Path) -> Result<Option<PathBuf>, ResolveError> {
        let mut out = PathBuf::from("/");
        for c in p.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::ParentDir => match self.resolve_in_root(&out)? {
                    Some(real) => {
                        out = real;
                        out.pop();
                    }
                    None => return Ok(None),
                },
                _ => {}
            }
        }
        Ok(Some(out))
    }

    fn read_conf(
        &self,
        file: &Path,
        depth: usize,
        out: &mut Vec<PathBuf>,
    ) -> Result<(), ResolveError> {
        if depth > MAX_CONF_DEPTH {
            return Err(ResolveError::Conf {
                path: self.host_path(file),
                reason: format!("more than {MAX_CONF_DEPTH} nested includes (include loop?)"),
            });
        }
        let Some(real) = self.resolve_in_root(file)? else {
            return Ok(());
        };
        let host = self.host_path(&real);
        if host.is_dir() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&host).map_err(|source| ResolveError::Io {
            path: host.clone(),
            source,
        })?;
        let conf_dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if first == "include" {
                for pattern in words {
                    let pat = conf_dir.join(pattern);
                    for inc in self.glob_in_root(&pat, &host)? {
                        self.read_conf(&inc, depth + 1, out)?;
                    }
                }
                continue;
            }
            if first == "hwcap" {
                continue; // legacy ldconfig directive, irrelevant to paths
            }
            // Old syntax "dir=libc5" names a library type after '='.
            let dir = line.split('=').next().unwrap_or("").trim();
            if dir.starts_with('/') {
                let d = PathBuf::from(dir.trim_end_matches('/'));
                let d = if d.as_os_str().is_empty() {
                    PathBuf::from("/")
                } else {
                    d
                };
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        Ok(())
    }

    /// Expand a glob whose wildcards are in the last component (what ld.so.conf uses), inside
    /// the sysroot, sorted like glob(3).
    fn glob_in_root(&self, pat: &Path, conf: &Path) -> Result<Vec<PathBuf>, ResolveError> {
        let (Some(dir), Some(name)) = (pat.parent(), pat.file_name()) else {
            return Ok(Vec::new());
        };
        let name = name.to_string_lossy();
        if !name.contains(['*', '?', '[']) {
            return Ok(vec![pat.to_path_buf()]);
        }
        let matcher = globset::GlobBuilder::new(&name)
            .literal_separator(true)
            .build()
            .map_err(|e| ResolveError::Conf {
                path: conf.to_path_buf(),
                reason: format!("bad include pattern {}: {e}", pat.display()),
            })?
            .compile_matcher();
        let Some(real_dir) = self.resolve_in_root(dir)? else {
            return Ok(Vec::new());
        };
        let host_dir = self.host_path(&real_dir);
        let rd = match std::fs::read_dir(&host_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ResolveError::Io {
                    path: host_dir,
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|source| ResolveError::Io {
                path: host_dir.clone(),
                source,
            })?;
            let n = ent.file_name();
            // glob(3) does not match dot files with '*'.
            if n.to_string_lossy().starts_with('.') {
                continue;
            }
            if matcher.is_match(Path::new(&n)) {
                names.push(n);
            }
        }
        names.sort();
        Ok(names.into_iter().map(|n| dir.join(n)).collect())
    }

    /// Check one candidate file the way `open_verify` does.
    fn probe(&self, path: &Path, want: Target) -> Result<Probe, ResolveError> {
        let Some(clean) = self.physical_clean(path)? else {
            return Ok(Probe::Absent);
        };
        let Some(real) = self.resolve_in_root(&clean)? else {
            return Ok(Probe::Absent);
        };
        let host = self.host_path(&real);
        let meta = match std::fs::metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Absent),
            Err(source) => return Err(ResolveError::Io { path: host, source }),
        };
        if !meta.is_file() {
            return Ok(Probe::Rejected(clean, "not a regular file".into()));
        }
        let Some(info) = read_elf(&host)? else {
            return Ok(Probe::Rejected(clean, "not an ELF file".into()));
        };
        if info.class != want.class {
            let why = format!(
                "{}-bit ELF, need {}-bit",
                info.class.bits(),
                want.class.bits()
            );
            return Ok(Probe::Rejected(clean, why));
        }
        if info.machine != want.machine {
            let why = format!("e_machine {}, need {}", info.machine, want.machine);
            return Ok(Probe::Rejected(clean, why));
        }
        if info.little_endian != want.little {
            return Ok(Probe::Rejected(clean, "wrong byte order".into()));
        }
        Ok(Probe::Found(Found {
            path: clean,
            real,
            id: (meta.dev(), meta.ino()),
            info,
        }))
    }

    /// The object at `p` as the loader maps it (`Ok(None)` when not ELF); an error when it does
    /// not exist. Symlinks are followed inside the sysroot, never on the host.
    fn open_object(&self, p: &Path) -> Result<Option<Found>, ResolveError> {
        // With the host as sysroot the kernel resolves symlinks exactly as we would, so the
        // cheap magic check can come first: most files of a stdlib are not ELF.
        if self.sysroot == Path::new("/") {
            match crate::plan::elf::is_elf(p) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                // Directories, missing files, loops: let the full resolution report them.
                Err(_) => {}
            }
        }
        let real = self
            .resolve_in_root(p)?
            .ok_or_else(|| ResolveError::NotFound {
                path: p.to_path_buf(),
                sysroot: self.sysroot.clone(),
            })?;
        let host = self.host_path(&real);
        let meta = std::fs::metadata(&host).map_err(|source| ResolveError::Io {
            path: host.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Ok(None);
        }
        let Some(info) = read_elf(&host)? else {
            return Ok(None);
        };
        Ok(Some(Found {
            path: p.to_path_buf(),
            real,
            id: (meta.dev(), meta.ino()),
            info,
        }))
    }

    pub fn closure(
        &self,
        main_executable: Option<&Path>,
        objects: &[PathBuf],
    ) -> Result<Closure, ResolveError> {
        let mut st = State {
            r: self,
            objs: Vec::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            main: None,
            out: Closure::default(),
            dirs: HashMap::new(),
            queue: VecDeque::new(),
        };
        if let Some(main) = main_executable {
            if let Some(found) = self.open_object(main)? {
                // $ORIGIN of the main program comes from /proc/self/exe: symlinks resolved.
                let origin = parent_of(&found.real);
                let idx = st.add(found, None, origin, None);
                st.main = Some(idx);
                st.note_interp(idx);
                // ld.so is already mapped under its PT_INTERP name and its SONAME, so libc's
                // DT_NEEDED on ld-linux*.so.2 reuses it instead of searching.
                if let Some(interp) = st.objs[idx].info.interp.clone() {
                    if let Ok(Probe::Found(f)) =
                        self.probe(Path::new(&interp), Target::of(&st.objs[idx].info))
                    {
                        let origin = parent_of(&f.path);
                        let i = st.add(f, None, origin, Some(interp.clone()));
                        st.queue.retain(|&q| q != i);
                    }
                }
                st.run()?;
            }
        }
        for p in objects {
            if Some(p.as_path()) == main_executable {
                continue;
            }
            let Some(found) = self.open_object(p)? else {
                continue; // not ELF
            };
            if st.by_id.contains_key(&found.id) {
                continue; // already in the process (a dependency, or listed twice)
            }
            // dlopen'ed: the start of its own loader chain; $ORIGIN is the directory of the
            // path it was opened by.
            let origin = parent_of(&found.path);
            let idx = st.add(found, None, origin, None);
            st.note_interp(idx);
            st.run()?;
        }
        Ok(st.out)
    }
}

/// Resolve every symlink of `p` (absolute, inside the sysroot) the way the kernel would if
/// the sysroot were `/`: absolute link targets restart at the sysroot, `..` never leaves it.
/// `Ok(None)` when the path does not exist.
pub fn resolve_in_root(sysroot: &Path, p: &Path) -> Result<Option<PathBuf>, ResolveError> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, p);
    let mut resolved = PathBuf::from("/");
    let mut hops = 0usize;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&c);
        let host = host_path_in(sysroot, &candidate);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(None)
            }
            Err(source) => return Err(ResolveError::Io { path: host, source }),
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(ResolveError::SymlinkLoop {
                    path: host_path_in(sysroot, p),
                });
            }
            let target = std::fs::read_link(&host)
                .map_err(|source| ResolveError::Io { path: host, source })?;
            if target.as_os_str().is_empty() {
                return Ok(None);
            }
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            push_components(&mut pending, &target);
        } else {
            if !meta.is_dir() && !pending.is_empty() {
                return Ok(None); // ENOTDIR
            }
            resolved = candidate;
        }
    }
    Ok(Some(resolved))
}

/// `sysroot` joined with the absolute in-root path `p`.
fn host_path_in(sysroot: &Path, p: &Path) -> PathBuf {
    sysroot.join(p.strip_prefix("/").unwrap_or(p))
}

fn push_components(pending: &mut Vec<OsString>, p: &Path) {
    // `pending` is a stack: push in reverse so the first component pops first.
    let comps: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    pending.extend(comps.into_iter().rev());
}

fn parent_of(p: &Path) -> PathBuf {
    p.parent().unwrap_or(Path::new("/")).to_path_buf()
}

struct Loaded {
    path: PathBuf,
    info: ElfInfo,
    origin: PathBuf,
    /// The object that first caused this one to be loaded (glibc's `l_loader`).
    loader: Option<usize>,
}

struct State<'r> {
    r: &'r Resolver,
    objs: Vec<Loaded>,
    by_id: HashMap<(u64, u64), usize>,
    /// Every name an object answers to: DT_NEEDED names it was loaded under, SONAME, path.
    by_name: HashMap<String, usize>,
    main: Option<usize>,
    out: Closure,
    dirs: HashMap<(ElfClass, u16), TargetDirs>,
    queue: VecDeque<usize>,
}

#[derive(Default)]
struct Search {
    searched: Vec<PathBuf>,
    rejected: Vec<(PathBuf, String)>,
    variants: Vec<(Found, String)>,
}

impl Search {
    fn searched(&mut self, p: &Path) {
        if !self.searched.iter().any(|s| s == p) {
            self.searched.push(p.to_path_buf());
        }
    }
}

impl State<'_> {
    fn add(
        &mut self,
        f: Found,
        loader: Option<usize>,
        origin: PathBuf,
        name: Option<String>,
    ) -> usize {
        let idx = self.objs.len();
        self.by_id.insert(f.id, idx);
        let mut names: Vec<String> = name.into_iter().collect();
        names.extend(f.info.soname.clone());
        names.push(f.path.to_string_lossy().into_owned());
        for n in names {
            self.by_name.entry(n).or_insert(idx);
        }
        self.objs.push(Loaded {
            path: f.path,
            info: f.info,
            origin,
            loader,
        });
        self.queue.push_back(idx);
        idx
    }

    fn note_interp(&mut self, idx: usize) {
        if let Some(i) = &self.objs[idx].info.interp {
            let p = PathBuf::from(i);
            if !self.out.interpreters.contains(&p) {
                self.out.interpreters.push(p);
            }
        }
    }

    fn target_dirs(&mut self, t: Target) -> TargetDirs {
        let r = self.r;
        self.dirs
            .entry((t.class, t.machine))
            .or_insert_with(|| r.target_dirs(t.class, t.machine))
            .clone()
    }

    /// Breadth-first over the queue, like `_dl_map_object_deps`.
    fn run(&mut self) -> Result<(), ResolveError> {
        while let Some(idx) = self.queue.pop_front() {
            let needed = self.objs[idx].info.needed.clone();
            for name in needed {
                self.map_object(&name, idx)?;
            }
        }
        Ok(())
    }

    /// Expand the dynamic string tokens of one RPATH/RUNPATH list for object `owner`.
    fn expand(&mut self, owner: usize, runpath: bool) -> Vec<PathBuf> {
        let t = Target::of(&self.objs[owner].info);
        let td = self.target_dirs(t);
        let o = &self.objs[owner];
        let list = if runpath {
            &o.info.runpath
        } else {
            &o.info.rpath
        };
        let origin = o.origin.to_string_lossy();
        let mut out: Vec<PathBuf> = Vec::new();
        for elem in list {
            // Empty elements mean the working directory, unknowable at build time.
            if elem.is_empty() {
                continue;
            }
            let s = substitute(elem, &origin, &td.lib, &td.platform);
            if !s.starts_with('/') {
                continue;
            }
            let trimmed = s.trim_end_matches('/');
            let d = PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed });
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    fn hwcaps_subdirs(&self, dir: &Path, x86_64: bool) -> Vec<String> {
        if x86_64 {
            return X86_64_HWCAPS.iter().map(|s| s.to_string()).collect();
        }
        // Other architectures: whatever the distro ships (glibc picks by CPU at run time).
        let base = dir.join("glibc-hwcaps");
        let Ok(Some(real)) = self.r.resolve_in_root(&base) else {
            return Vec::new();
        };
        let mut subs: Vec<String> = std::fs::read_dir(self.r.host_path(&real))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        subs.sort();
        subs.reverse();
        subs
    }

    /// One directory of a search list, glibc-hwcaps subdirectories first.
    fn try_dir(
        &mut self,
        dir: &Path,
        name: &str,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        s.searched(dir);
        let x86_64 = self.target_dirs(t).x86_64;
        for sub in self.hwcaps_subdirs(dir, x86_64) {
            let p = dir.join("glibc-hwcaps").join(&sub).join(name);
            match self.r.probe(&p, t)? {
                Probe::Found(f) => {
                    if !s.variants.iter().any(|(v, _)| v.id == f.id) {
                        s.variants.push((f, sub));
                    }
                }
                Probe::Rejected(p, why) => s.rejected.push((p, why)),
                Probe::Absent => {}
            }
        }
        match self.r.probe(&dir.join(name), t)? {
            Probe::Found(f) => Ok(Some(f)),
            Probe::Rejected(p, why) => {
                s.rejected.push((p, why));
                Ok(None)
            }
            Probe::Absent => Ok(None),
        }
    }

    fn try_list(
        &mut self,
        dirs: &[PathBuf],
        name: &str,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        for d in dirs {
            if let Some(f) = self.try_dir(d, name, t, s)? {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }

    fn try_cache(
        &mut self,
        name: &str,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        let r = self.r;
        let Some(cache_path) = &r.cache_path else {
            // No ld.so.cache in the sysroot: behave as if ldconfig had indexed ld.so.conf.
            let dirs = r.conf_dirs.clone();
            return self.try_list(&dirs, name, t, s);
        };
        s.searched(cache_path);
        let mut base = None;
        for e in r.cache.lookup(name, t.class, t.machine) {
            if e.hwcap & HWCAP_EXTENSION != 0 {
                let p = PathBuf::from(&e.value);
                let sub = hwcaps_name_of(&p).unwrap_or_else(|| format!("{:#x}", e.hwcap));
                match r.probe(&p, t)? {
                    Probe::Found(f) if !s.variants.iter().any(|(v, _)| v.id == f.id) => {
                        s.variants.push((f, sub))
                    }
                    Probe::Rejected(p, why) => s.rejected.push((p, why)),
                    _ => {}
                }
            } else if base.is_none() {
                base = Some(PathBuf::from(&e.value));
            }
        }
        // ld.so takes the first acceptable entry and only that one; if it cannot be opened
        // the search goes on in the default directories.
        match base {
            Some(p) => match r.probe(&p, t)? {
                Probe::Found(f) => Ok(Some(f)),
                Probe::Rejected(p, why) => {
                    s.rejected.push((p, why));
                    Ok(None)
                }
                Probe::Absent => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// `_dl_map_object(loader = objs[req], name)`.
    fn map_object(&mut self, name: &str, req: usize) -> Result<(), ResolveError> {
        if self.by_name.contains_key(name) {
            return Ok(()); // already loaded under this name / SONAME / path
        }
        let t = Target::of(&self.objs[req].info);
        let mut s = Search::default();
        let found = if name.contains('/') {
            let p = PathBuf::from(name);
            if p.is_absolute() {
                s.searched(&p);
                match self.r.probe(&p, t)? {
                    Probe::Found(f) => Some(f),
                    Probe::Rejected(p, why) => {
                        s.rejected.push((p, why));
                        None
                    }
                    Probe::Absent => None,
                }
            } else {
                s.rejected.push((
                    p,
                    "relative path: ld.so resolves it against the working directory at run time"
                        .into(),
                ));
                None
            }
        } else {
            self.search(name, req, t, &mut s)?
        };

        let needed_by = self.objs[req].path.clone();
        let mut chosen = Vec::new();
        if let Some(f) = found {
            chosen.push((f, None));
        } else if !s.variants.is_empty() {
            tracing::warn!(
                "{name} (needed by {}) exists only in glibc-hwcaps subdirectories; it loads only on CPUs that support them",
                needed_by.display()
            );
        }
        chosen.extend(s.variants.drain(..).map(|(f, sub)| (f, Some(sub))));
        if chosen.is_empty() {
            self.out.missing.push(MissingLibrary {
                name: name.to_owned(),
                needed_by,
                searched: s.searched,
                rejected: s.rejected,
            });
            return Ok(());
        }
        for (f, hwcaps) in chosen {
            if !self.out.libraries.iter().any(|l| l.path == f.path) {
                self.out.libraries.push(ResolvedLibrary {
                    name: name.to_owned(),
                    path: f.path.clone(),
                    needed_by: needed_by.clone(),
                    real: f.real.clone(),
                    hwcaps,
                });
            }
            match self.by_id.get(&f.id) {
                // Same file under another path: ld.so compares dev/ino and reuses the map.
                Some(&i) => {
                    self.by_name.entry(name.to_owned()).or_insert(i);
                }
                None => {
                    let origin = parent_of(&f.path);
                    self.add(f, Some(req), origin, Some(name.to_owned()));
                }
            }
        }
        Ok(())
    }

    fn search(
        &mut self,
        name: &str,
        req: usize,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        let requester = &self.objs[req].info;
        let (req_has_runpath, nodeflib) = (requester.has_runpath, requester.nodeflib);
        // (1) DT_RPATH of the requester and its loaders, then of the executable; skipped
        // entirely when the requester has DT_RUNPATH.
        if !req_has_runpath {
            let mut did_main = false;
            let mut l = Some(req);
            while let Some(i) = l {
                // An object with DT_RUNPATH has its DT_RPATH ignored even as a loader.
                if !self.objs[i].info.has_runpath && !self.objs[i].info.rpath.is_empty() {
                    let dirs = self.expand(i, false);
                    if let Some(f) = self.try_list(&dirs, name, t, s)? {
                        return Ok(Some(f));
                    }
                    did_main |= Some(i) == self.main;
                }
                l = self.objs[i].loader;
            }
            if let Some(m) = self.main {
                if !did_main && !self.objs[m].info.has_runpath {
                    let dirs = self.expand(m, false);
                    if let Some(f) = self.try_list(&dirs, name, t, s)? {
                        return Ok(Some(f));
                    }
                }
            }
        }
        // (2) LD_LIBRARY_PATH does not exist at build time.
        // (3) The requester's own DT_RUNPATH (never inherited).
        if req_has_runpath {
            let dirs = self.expand(req, true);
            if let Some(f) = self.try_list(&dirs, name, t, s)? {
                return Ok(Some(f));
            }
        }
        if nodeflib {
            return Ok(None);
        }
        // (4) ld.so.cache, (5) the built-in default directories.
        if let Some(f) = self.try_cache(name, t, s)? {
            return Ok(Some(f));
        }
        let defaults = self.target_dirs(t).default_dirs;
        self.try_list(&defaults, name, t, s)
    }
}

/// "x86-64-v3" from ".../glibc-hwcaps/x86-64-v3/libfoo.so".
fn hwcaps_name_of(p: &Path) -> Option<String> {
    let dir = p.parent()?;
    let gh = dir.parent()?;
    (gh.file_name()? == "glibc-hwcaps")
        .then(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))?
}

/// Replace $ORIGIN, $LIB, $PLATFORM (and the ${...} forms) like `_dl_dst_substitute`. Unknown
/// `$` sequences are kept literally, as glibc does.
fn substitute(s: &str, origin: &str, lib: &str, platform: &str) -> String {
    let mut out = String::with_capacity(s.len() + origin.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut matched = None;
        for (tok, val) in [("ORIGIN", origin), ("LIB", lib), ("PLATFORM", platform)] {
            let braced = format!("{{{tok}}}");
            if after.starts_with(&braced) {
                matched = Some((val, braced.len()));
                break;
            }
            if let Some(tail) = after.strip_prefix(tok) {
                // The bare form must end at a character that cannot continue a name.
                if !tail.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    matched = Some((val, tok.len()));
                    break;
                }
            }
        }
        match matched {
            Some((val, len)) => {
                out.push_str(val);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libcmp_matches_glibc() {
        assert_eq!(libcmp("libz.so.1", "libz.so.1"), Ordering::Equal);
        assert_eq!(libcmp("libfoo.so.10", "libfoo.so.9"), Ordering::Greater);
        assert_eq!(libcmp("libfoo.so", "libfoo.so.1"), Ordering::Less);
        assert_eq!(libcmp("lib2", "liba"), Ordering::Greater); // digit sorts after non-digit
        assert_eq!(libcmp("liba", "lib2"), Ordering::Less);
    }

    #[test]
    fn substitute_tokens() {
        let s = substitute(
            "$ORIGIN/../${ORIGIN}x:$LIB/$PLATFORM:$ORIGINAL:$FOO",
            "/o",
            "lib64",
            "x86_64",
        );
        assert_eq!(s, "/o/..//ox:lib64/x86_64:$ORIGINAL:$FOO");
    }

    #[test]
    fn cache_round_trip() {
        let entries = vec![
            ("libz.so.1".to_string(), "/lib/libz.so.1".to_string()),
            ("libc.so.6".to_string(), "/lib/libc.so.6".to_string()),
            ("libz.so.1".to_string(), "/usr/lib/libz.so.1".to_string()),
        ];
        let bytes = write_cache(&entries, ElfClass::Elf64, EM_X86_64);
        let c = parse_cache(&bytes).unwrap();
        let got: Vec<_> = c
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("libz.so.1", "/lib/libz.so.1"),
                ("libz.so.1", "/usr/lib/libz.so.1"),
                ("libc.so.6", "/lib/libc.so.6"),
            ]
        );
        // Garbage never panics.
        for n in 0..bytes.len() {
            let _ = parse_cache(&bytes[..n]);
        }
    }
}
