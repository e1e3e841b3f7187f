//! Reading the few ELF facts the library resolver needs: class, machine, PT_INTERP and the
//! dynamic section's NEEDED / RPATH / RUNPATH / SONAME / FLAGS_1.
//!
//! Only the ELF header, the program headers, PT_INTERP, PT_DYNAMIC and the dynamic string table
//! are read (with positioned reads), never the whole file: the resolver meets multi-hundred-MB
//! libraries (torch) and is called on every file of a Python stdlib. Everything is located
//! through program headers, the way ld.so does it, so stripped files (no section headers) work.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::dynamic::{
    Dynamic, DF_1_NODEFLIB, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ,
    DT_STRTAB,
};
use goblin::elf::program_header::{ProgramHeader, PT_DYNAMIC, PT_INTERP, PT_LOAD};
use goblin::elf::Elf;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// Upper bounds for the tables we read, far above anything real, so that a corrupt header
/// cannot make us allocate gigabytes.
const MAX_DYNAMIC_BYTES: u64 = 1 << 20;
const MAX_STRTAB_BYTES: u64 = 64 << 20;
const MAX_INTERP_BYTES: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

impl ElfClass {
    pub fn bits(self) -> u32 {
        match self {
            ElfClass::Elf32 => 32,
            ElfClass::Elf64 => 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub class: ElfClass,
    pub machine: u16,
    /// PT_INTERP as written in the file (not resolved).
    pub interp: Option<String>,
    pub needed: Vec<String>,
    /// DT_RPATH split on ':' (tokens like $ORIGIN not expanded; empty elements kept).
    pub rpath: Vec<String>,
    /// DT_RUNPATH split on ':' (same as `rpath`).
    pub runpath: Vec<String>,
    pub soname: Option<String>,
    /// True when DT_RUNPATH is present at all (even empty): glibc then ignores DT_RPATH.
    pub has_runpath: bool,
    /// DF_1_NODEFLIB: the object forbids ld.so.cache and the default directories.
    pub nodeflib: bool,
    /// True for little-endian files.
    pub little_endian: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt or truncated ELF file: {reason}; the file cannot be loaded, replace or exclude it")]
    Malformed { path: PathBuf, reason: String },
}

/// Cheap check: does the file start with the ELF magic? Short files are simply not ELF.
pub fn is_elf(path: &Path) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.read(&mut magic[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(magic == ELF_MAGIC)
}

/// Parse the dynamic-linking facts of `path`. `Ok(None)` when the file is not ELF.
pub fn read_elf(path: &Path) -> Result<Option<ElfInfo>, ElfError> {
    let io = |source| ElfError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !is_elf(path).map_err(io)? {
        return Ok(None);
    }
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let reader = Reader {
        file: &file,
        len,
        path,
    };
    reader.parse().map(Some)
}

struct Reader<'a> {
    file: &'a File,
    len: u64,
    path: &'a Path,
}

impl Reader<'_> {
    fn bad(&self, reason: impl Into<String>) -> ElfError {
        ElfError::Malformed {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Read exactly `size` bytes at `offset`, or report the file as truncated.
    fn read_at(&self, offset: u64, size: u64, what: &str) -> Result<Vec<u8>, ElfError> {
        let end = offset
            .checked_add(size)
            .ok_or_else(|| self.bad(format!("{what} offset overflows")))?;
        if end > self.len {
            return Err(self.bad(format!(
                "{what} at offset {offset:#x} size {size:#x} runs past the end of the file ({:#x} bytes)",
                self.len
            )));
        }
        let len = usize::try_from(size)
            .map_err(|_| self.bad(format!("{what} size {size:#x} does not fit in memory")))?;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| ElfError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        Ok(buf)
    }

    fn parse(&self) -> Result<ElfInfo, ElfError> {
        // e_ident is 16 bytes; the rest of the header is 36 (ELF32) or 48 (ELF64) bytes.
        if self.len < 16 {
            return Err(self.bad("shorter than the 16-byte ELF identification"));
        }
        let ident = self.read_at(0, 16, "ELF identification")?;
        let class = match ident[4] {
            1 => ElfClass::Elf32,
            2 => ElfClass::Elf64,
            c => return Err(self.bad(format!("invalid EI_CLASS {c}"))),
        };
        if ident[5] != 1 && ident[5] != 2 {
            return Err(self.bad(format!("invalid EI_DATA {}", ident[5])));
        }
        let ehsize = if class == ElfClass::Elf64 { 64 } else { 52 };
        let hbytes = self.read_at(0, ehsize, "ELF header")?;
        let header = Elf::parse_header(&hbytes).map_err(|e| self.bad(e.to_string()))?;
        let container = match class {
            ElfClass::Elf32 => Container::Little,
            ElfClass::Elf64 => Container::Big,
        };
        let little_endian = ident[5] == 1;
        let endian = if little_endian {
            Endian::Little
        } else {
            Endian::Big
        };
        let ctx = Ctx::new(container, endian);

        let phentsize: u64 = if class == ElfClass::Elf64 { 56 } else { 32 };
        let phnum = u64::from(header.e_phnum);
        let mut info = ElfInfo {
            class,
            machine: header.e_machine,
            interp: None,
            needed: Vec::new(),
            rpath: Vec::new(),
            runpath: Vec::new(),
            soname: None,
            has_runpath: false,
            nodeflib: false,
            little_endian,
        };
        if phnum == 0 {
            // Relocatable objects and the like: nothing to load.
            return Ok(info);
        }
        if u64::from(header.e_phentsize) != phentsize {
            return Err(self.bad(format!(
                "e_phentsize is {}, expected {phentsize}",
                header.e_phentsize
            )));
        }
        let phbytes = self.read_at(header.e_phoff, phnum * phentsize, "program headers")?;
        let phdrs = ProgramHeader::parse(&phbytes, 0, usize::from(header.e_phnum), ctx)
            .map_err(|e| self.bad(format!("program headers: {e}")))?;

        if let Some(ph) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
            if ph.p_filesz > MAX_INTERP_BYTES {
                return Err(self.bad(format!("PT_INTERP is {} bytes long", ph.p_filesz)));
            }
            let raw = self.read_at(ph.p_offset, ph.p_filesz, "PT_INTERP")?;
            info.interp = Some(self.c_string(&raw, 0, "PT_INTERP")?);
        }

        let Some(dynph) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
            return Ok(info); // statically linked
        };
        if dynph.p_filesz > MAX_DYNAMIC_BYTES {
            return Err(self.bad(format!("PT_DYNAMIC is {} bytes long", dynph.p_filesz)));
        }
        let dynbytes = self.read_at(dynph.p_offset, dynph.p_filesz, "PT_DYNAMIC")?;
        // goblin's Dynamic::parse reads PT_DYNAMIC from a whole-file buffer; hand it just the
        // dynamic bytes and a copy of the header rebased to offset 0.
        let mut rebased = dynph.clone();
        rebased.p_offset = 0;
        let dynamic = Dynamic::parse(&dynbytes, &[rebased], ctx)
            .map_err(|e| self.bad(format!("dynamic section: {e}")))?
            .ok_or_else(|| self.bad("PT_DYNAMIC vanished"))?;

        let mut strtab_addr = None;
        let mut strsz = None;
        for d in &dynamic.dyns {
            match d.d_tag {
                DT_STRTAB => strtab_addr = Some(d.d_val),
                DT_STRSZ => strsz = Some(d.d_val),
                DT_FLAGS_1 => info.nodeflib = d.d_val & DF_1_NODEFLIB != 0,
                DT_RUNPATH => info.has_runpath = true,
                _ => {}
            }
        }
        let wants_strings = dynamic
            .dyns
            .iter()
            .any(|d| matches!(d.d_tag, DT_NEEDED | DT_RPATH | DT_RUNPATH | DT_SONAME));
        if !wants_strings {
            return Ok(info);
        }
        let (Some(addr), Some(size)) = (strtab_addr, strsz) else {
            return Err(self.bad("dynamic section has names but no DT_STRTAB/DT_STRSZ"));
        };
        if size > MAX_STRTAB_BYTES {
            return Err(self.bad(format!("DT_STRSZ is {size} bytes")));
        }
        let offset = vaddr_to_offset(&phdrs, addr)
            .ok_or_else(|| self.bad(format!("DT_STRTAB {addr:#x} is not inside any PT_LOAD")))?;
        let strtab = self.read_at(offset, size, "dynamic string table")?;

        for d in &dynamic.dyns {
            let what = match d.d_tag {
                DT_NEEDED => "DT_NEEDED",
                DT_RPATH => "DT_RPATH",
                DT_RUNPATH => "DT_RUNPATH",
                DT_SONAME => "DT_SONAME",
                _ => continue,
            };
            let s = self.c_string(&strtab, d.d_val, what)?;
            match d.d_tag {
                DT_NEEDED => info.needed.push(s),
                DT_RPATH => info.rpath.extend(s.split(':').map(str::to_owned)),
                DT_RUNPATH => info.runpath.extend(s.split(':').map(str::to_owned)),
                _ => info.soname = Some(s),
            }
        }
        Ok(info)
    }

    /// NUL-terminated UTF-8 string at `offset` of `table`.
    fn c_string(&self, table: &[u8], offset: u64, what: &str) -> Result<String, ElfError> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o < table.len())
            .ok_or_else(|| {
                self.bad(format!(
                    "{what} string offset {offset:#x} outside the string table"
                ))
            })?;
        let rest = &table[start..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.bad(format!("{what} string is not NUL-terminated")))?;
        String::from_utf8(rest[..end].to_vec())
            .map_err(|_| self.bad(format!("{what} string is not valid UTF-8")))
    }
}

/// Map a virtual address to a file offset through the PT_LOAD segments, as ld.so sees it.
fn vaddr_to_offset(phdrs: &[ProgramHeader], addr: u64) -> Option<u64> {
    phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .find(|p| addr >= p.p_vaddr && addr - p.p_vaddr < p.p_filesz)
        .and_then(|p| (addr - p.p_vaddr).checked_add(p.p_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let info = read_elf(&exe).unwrap().expect("test binary is ELF");
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
    }

    /// Flip bytes of a real shared object's headers: every outcome is Ok or Err, never a panic.
    #[test]
    fn mutated_headers_never_panic() {
        let lib = [
            "/lib/x86_64-linux-gnu/libz.so.1",
            "/lib64/ld-linux-x86-64.so.2",
        ]
        .iter()
        .map(Path::new)
        .find(|p| p.exists());
        let Some(lib) = lib else { return };
        let good = std::fs::read(lib).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.so");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..1000 {
            let mut bytes = good.clone();
            for _ in 0..(1 + next() % 8) {
                // Mostly the ELF and program headers, sometimes anywhere.
                let span = if next() % 4 == 0 { bytes.len() } else { 1024 };
                let i = 4 + usize::try_from(next() % (span as u64 - 4)).unwrap();
                bytes[i] = next().to_le_bytes()[0];
            }
            if next() % 5 == 0 {
                bytes.truncate(usize::try_from(next() % bytes.len() as u64).unwrap());
            }
            std::fs::write(&p, &bytes).unwrap();
            let _ = read_elf(&p);
        }
    }

    #[test]
    fn non_elf_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.py");
        std::fs::write(&p, b"print(1)\n").unwrap();
        assert!(read_elf(&p).unwrap().is_none());
        let short = dir.path().join("s");
        std::fs::write(&short, b"\x7fE").unwrap();
        assert!(!is_elf(&short).unwrap());
    }
}
