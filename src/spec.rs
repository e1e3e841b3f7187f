//! The image spec: what the user asked for, validated, with errors that name the file, line
//! and key. Two sources: prebake's own YAML (`images/python3.yaml`) and an existing
//! dify-sandbox `config.yaml` (`--dify-config`), so users migrate with the file they have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod dify;
mod image;
mod yaml;

pub use dify::{DifyImport, DIFY_IMAGE_NAME};

/// A language the sandbox serves, by dify's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Language {
    Python3,
    Nodejs,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python3 => "python3",
            Language::Nodejs => "nodejs",
        }
    }
}

/// What the policy does with a syscall it does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// Fail with EPERM: the script sees a PermissionError naming the operation.
    #[default]
    Errno,
    /// dify-sandbox's behaviour: the process dies by SIGSYS.
    KillProcess,
    /// Allow but log (for finding what a script needs; never for production).
    Log,
}

/// A syscall named in a spec: by name ("getloadavg" is not one; "sysinfo" is) or by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyscallRef {
    Name(String),
    Number(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeccompSpec {
    pub default_action: DefaultAction,
    /// Added to the baked policy (never replaces it). dify's `allowed_syscalls` lands here.
    pub allow: Vec<SyscallRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageSpec {
    /// A name looked up on PATH ("python3") or an absolute path.
    pub interpreter: String,
    /// Python distributions selected by name from the interpreter's site-packages, with their
    /// installed requirements.
    pub packages: Vec<String>,
    /// A pinned requirements file (versions and `--hash`es), resolved against the spec's
    /// directory: the build installs it into a cache venv and takes every package in it.
    pub requirements: Option<PathBuf>,
    /// Extra paths, with dify-sandbox's `python_lib_path` meaning: directories recursively,
    /// single files, symlinks kept as symlinks, kept at the same absolute path.
    pub paths: Vec<PathBuf>,
    /// Globs (matched against absolute host paths) never to include, added to the defaults.
    pub exclude: Vec<String>,
    /// Whether the default stdlib excludes (test suites, idlelib, tkinter...) apply.
    pub default_excludes: bool,
    /// Precompile every included `.py` to an unchecked-hash `.pyc`.
    pub precompile: bool,
    pub seccomp: SeccompSpec,
}

/// What ELF scanning cannot see; each can be turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extras {
    pub libgcc_s: bool,
    pub ca_certificates: bool,
    pub openssl_config: bool,
    pub zoneinfo: bool,
    /// /etc/passwd, /etc/group (with the sandbox uid pool), /etc/hosts, /etc/nsswitch.conf,
    /// /etc/resolv.conf.
    pub etc_stubs: bool,
    /// /tmp with mode 1777, /dev as a mount point.
    pub tmp: bool,
    /// A rootfs-local /etc/ld.so.cache so `ctypes.util.find_library` works.
    pub ld_so_cache: bool,
    /// gconv modules and the C.UTF-8 locale (off by default).
    pub locales: bool,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            libgcc_s: true,
            ca_certificates: true,
            openssl_config: true,
            zoneinfo: true,
            etc_stubs: true,
            tmp: true,
            ld_so_cache: true,
            locales: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Where the spec came from (for messages and the spec digest).
    pub origin: PathBuf,
    /// sha256 hex of the spec file's bytes.
    pub digest: String,
    pub name: String,
    pub languages: BTreeMap<Language, LanguageSpec>,
    pub extras: Extras,
    pub compression: Compression,
    /// Missing libraries are warnings instead of errors.
    pub allow_missing: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax errors, unknown keys, wrong types: always with line and column when the
    /// parser knows them, and the key path ("languages.python3.packages[2]").
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

impl ImageSpec {
    /// Parse prebake's own spec file (format: docs/spec.md).
    pub fn load(path: &Path) -> Result<ImageSpec, SpecError> {
        let text = read_text(path)?;
        Self::from_yaml(&text, path)
    }

    /// Parse spec text; `origin` names it in messages and sets the default image name.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<ImageSpec, SpecError> {
        image::parse(text, origin)
    }

    /// Import a dify-sandbox `config.yaml`. Returns the spec and warnings (one per
    /// `python_lib_path` entry that does not exist here and was skipped).
    pub fn from_dify_config(path: &Path) -> Result<(ImageSpec, Vec<String>), SpecError> {
        Self::from_dify_config_with(path, &DifyImport::default())
    }

    /// [`ImageSpec::from_dify_config`] with strictness and dify-sandbox's environment overrides.
    pub fn from_dify_config_with(
        path: &Path,
        opts: &DifyImport,
    ) -> Result<(ImageSpec, Vec<String>), SpecError> {
        let text = read_text(path)?;
        Self::from_dify_yaml(&text, path, opts)
    }

    /// [`ImageSpec::from_dify_config_with`] on text already read.
    pub fn from_dify_yaml(
        text: &str,
        origin: &Path,
        opts: &DifyImport,
    ) -> Result<(ImageSpec, Vec<String>), SpecError> {
        dify::parse(text, origin, opts)
    }

    /// Add syscalls to every language's allow list (merged, duplicates dropped, never
    /// replacing what is there), as dify's `allowed_syscalls` should have been.
    pub fn add_allowed_syscalls(&mut self, extra: &[SyscallRef]) {
        for lang in self.languages.values_mut() {
            for r in extra {
                if !lang.seccomp.allow.contains(r) {
                    lang.seccomp.allow.push(r.clone());
                }
            }
        }
    }
}

/// PEP 503 normalization: lowercase, runs of `-`, `_`, `.` become one `-`. Distribution names
/// in `packages` match installed `*.dist-info` names after this.
pub fn normalize_package_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read_text(path: &Path) -> Result<String, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| SpecError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e}); save the file as UTF-8"),
        ),
    })
}
