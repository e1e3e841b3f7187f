//! The ld.so.cache file: glibc's `cache_file_new` format (and the old `ld.so-1.7.0` one),
//! read as ld.so reads it and written as ldconfig writes it.

use super::arch::{
    big_endian_machine, EM_AARCH64, EM_ARM, EM_LOONGARCH, EM_PPC64, EM_RISCV, EM_S390, EM_SPARCV9,
    EM_X86_64,
};
use crate::plan::elf::ElfClass;
use std::cmp::Ordering;
use std::collections::HashMap;

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
    /// An `int32_t` field (the entry flags): the same four bytes, read as signed.
    fn i32(&self, at: usize, what: &str) -> Result<i32, CacheError> {
        self.u32(at, what)
            .map(|v| i32::from_ne_bytes(v.to_ne_bytes()))
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
        let flags = le.i32(at, "entry flags")?;
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
        let flags = r.i32(at, "entry flags")?;
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
    // Offsets and counts of the format are 32-bit; a cache of a rootfs is far below 4 GiB.
    let u32_of = |n: usize| u32::try_from(n).expect("ld.so.cache is far below 4 GiB");
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
                let o = u32_of(strings_base + strings.len());
                strings.extend_from_slice(s.as_bytes());
                strings.push(0);
                o
            })
        };
        let k = intern(key.as_str());
        let v = intern(value.as_str());
        table.extend_from_slice(&u32b(u32::from_ne_bytes(flags.to_ne_bytes())));
        table.extend_from_slice(&u32b(k));
        table.extend_from_slice(&u32b(v));
        table.extend_from_slice(&u32b(0)); // osversion (unused)
        table.extend_from_slice(&[0u8; 8]); // hwcap 0 reads the same in both byte orders
    }

    let mut out = Vec::with_capacity(strings_base + strings.len());
    out.extend_from_slice(NEW_MAGIC);
    out.extend_from_slice(&u32b(u32_of(order.len())));
    out.extend_from_slice(&u32b(u32_of(strings.len())));
    out.push(if big { ENDIAN_BIG } else { ENDIAN_LITTLE });
    out.extend_from_slice(&[0u8; 3]); // padding
    out.extend_from_slice(&u32b(0)); // extension_offset: none
    out.extend_from_slice(&[0u8; 12]); // unused
    debug_assert_eq!(out.len(), NEW_HEADER);
    out.extend_from_slice(&table);
    out.extend_from_slice(&strings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ldso::arch::EM_X86_64;

    #[test]
    fn libcmp_matches_glibc() {
        assert_eq!(libcmp("libz.so.1", "libz.so.1"), Ordering::Equal);
        assert_eq!(libcmp("libfoo.so.10", "libfoo.so.9"), Ordering::Greater);
        assert_eq!(libcmp("libfoo.so", "libfoo.so.1"), Ordering::Less);
        assert_eq!(libcmp("lib2", "liba"), Ordering::Greater); // digit sorts after non-digit
        assert_eq!(libcmp("liba", "lib2"), Ordering::Less);
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
