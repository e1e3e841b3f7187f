//! The resolver: one sysroot's loader configuration (ld.so.cache, ld.so.conf, default
//! directories) and the checks ld.so makes on each candidate file.

use super::arch::{multiarch_triplet, platform_name, EM_X86_64};
use super::cache::{parse_cache, CacheError, LdCache};
use super::conf::read_conf;
use crate::fsutil::in_root::{host_path_in, InRootError};
use crate::plan::elf::{read_elf, ElfClass, ElfError, ElfInfo};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path of the sysroot that cannot be resolved (a symlink loop, an unreadable link).
    #[error(transparent)]
    InRoot(#[from] InRootError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error("{path}")]
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
pub(super) struct TargetDirs {
    pub(super) default_dirs: Vec<PathBuf>,
    pub(super) lib: String,
    pub(super) platform: String,
    pub(super) x86_64: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Target {
    pub(super) class: ElfClass,
    pub(super) machine: u16,
    pub(super) little: bool,
}

impl Target {
    pub(super) fn of(info: &ElfInfo) -> Self {
        Target {
            class: info.class,
            machine: info.machine,
            little: info.little_endian,
        }
    }
}

#[derive(Debug)]
pub struct Resolver {
    pub(super) sysroot: PathBuf,
    pub(super) cache: LdCache,
    /// "/etc/ld.so.cache" when the sysroot has one.
    pub(super) cache_path: Option<PathBuf>,
    pub(super) conf_dirs: Vec<PathBuf>,
    /// Files the rootfs holds at a path whose bytes come from outside the sysroot (a cross
    /// build's wheels, unpacked by the host's pip): rootfs path -> host path.
    pub(super) placed: std::collections::BTreeMap<PathBuf, PathBuf>,
}

/// A file that exists at a candidate path and that the loader would accept.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) real: PathBuf,
    pub(super) id: (u64, u64),
    pub(super) info: ElfInfo,
}

/// What one candidate path holds, as ld.so's `open_verify` sees it.
pub(super) enum Lookup {
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
            placed: Default::default(),
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
        read_conf(&r.sysroot, Path::new("/etc/ld.so.conf"), 0, &mut dirs)?;
        r.conf_dirs = dirs;
        Ok(r)
    }

    pub fn host_path(&self, p: &Path) -> PathBuf {
        host_path_in(&self.sysroot, p)
    }

    /// The rootfs will hold `host`'s bytes at `at` (normally a path with no file in the
    /// sysroot; one there is shadowed): the loader emulation finds them there.
    pub fn place(&mut self, at: PathBuf, host: PathBuf) {
        self.placed.insert(at, host);
    }

    /// Whether `p` is a file given to [`Resolver::place`].
    pub fn is_placed(&self, p: &Path) -> bool {
        self.placed.contains_key(p)
    }

    /// Where the file at rootfs path `p` really is: its rootfs path with symlinks resolved
    /// inside the sysroot, and the host path of its bytes (a placed file is its own real
    /// path). `None` when there is nothing there.
    fn locate(&self, p: &Path) -> Result<Option<(PathBuf, PathBuf)>, ResolveError> {
        if let Some(host) = self.placed.get(p) {
            return Ok(Some((p.to_path_buf(), host.clone())));
        }
        Ok(self.resolve_in_root(p)?.map(|real| {
            let host = self.host_path(&real);
            (real, host)
        }))
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

    pub(super) fn target_dirs(&self, class: ElfClass, machine: u16) -> TargetDirs {
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

    /// Resolve every symlink of `p` inside the sysroot; see
    /// [`crate::fsutil::in_root::resolve_in_root`].
    pub fn resolve_in_root(&self, p: &Path) -> Result<Option<PathBuf>, ResolveError> {
        Ok(crate::fsutil::in_root::resolve_in_root(&self.sysroot, p)?)
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

    /// Check one candidate file the way `open_verify` does.
    pub(super) fn open_verify(&self, path: &Path, want: Target) -> Result<Lookup, ResolveError> {
        let Some(clean) = self.physical_clean(path)? else {
            return Ok(Lookup::Absent);
        };
        let Some((real, host)) = self.locate(&clean)? else {
            return Ok(Lookup::Absent);
        };
        let meta = match std::fs::metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::Absent),
            Err(source) => return Err(ResolveError::Io { path: host, source }),
        };
        if !meta.is_file() {
            return Ok(Lookup::Rejected(clean, "not a regular file".into()));
        }
        let Some(info) = read_elf(&host)? else {
            return Ok(Lookup::Rejected(clean, "not an ELF file".into()));
        };
        if info.class != want.class {
            let why = format!(
                "{}-bit ELF, need {}-bit",
                info.class.bits(),
                want.class.bits()
            );
            return Ok(Lookup::Rejected(clean, why));
        }
        if info.machine != want.machine {
            let why = format!("e_machine {}, need {}", info.machine, want.machine);
            return Ok(Lookup::Rejected(clean, why));
        }
        if info.little_endian != want.little {
            return Ok(Lookup::Rejected(clean, "wrong byte order".into()));
        }
        Ok(Lookup::Found(Found {
            path: clean,
            real,
            id: (meta.dev(), meta.ino()),
            info,
        }))
    }

    /// The object at `p` as the loader maps it (`Ok(None)` when not ELF); an error when it does
    /// not exist. Symlinks are followed inside the sysroot, never on the host.
    pub(super) fn open_object(&self, p: &Path) -> Result<Option<Found>, ResolveError> {
        // With the host as sysroot the kernel resolves symlinks exactly as we would, so the
        // cheap magic check can come first: most files of a stdlib are not ELF. Not for a
        // placed file, whose bytes are elsewhere than at its path.
        if self.sysroot == Path::new("/") && !self.placed.contains_key(p) {
            match crate::plan::elf::is_elf(p) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                // Directories, missing files, loops: let the full resolution report them.
                Err(_) => {}
            }
        }
        let (real, host) = self.locate(p)?.ok_or_else(|| ResolveError::NotFound {
            path: p.to_path_buf(),
            sysroot: self.sysroot.clone(),
        })?;
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

    /// The object at host path `host`, outside the sysroot (a binary built for the target,
    /// such as the image's `runtime`), as the loader would map it if it were inside.
    pub(super) fn open_outside(&self, host: &Path) -> Result<Option<Found>, ResolveError> {
        let meta = std::fs::metadata(host).map_err(|source| ResolveError::Io {
            path: host.to_path_buf(),
            source,
        })?;
        let Some(info) = read_elf(host)? else {
            return Ok(None);
        };
        Ok(Some(Found {
            path: host.to_path_buf(),
            real: host.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            info,
        }))
    }

    /// The libraries the program at host path `host` loads, found in this sysroot although
    /// the program itself is not in it (the image's `runtime`, built for the target).
    pub fn closure_of_outside(&self, host: &Path) -> Result<Closure, ResolveError> {
        super::loader::closure_of_outside(self, host)
    }

    /// The libraries a process loads: `main_executable` with its DT_NEEDED tree first, then
    /// each of `objects` as if dlopen'ed in order (see [`super::loader`]).
    pub fn closure(
        &self,
        main_executable: Option<&Path>,
        objects: &[PathBuf],
    ) -> Result<Closure, ResolveError> {
        super::loader::closure(self, main_executable, objects)
    }
}
