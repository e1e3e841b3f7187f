//! A content-addressed cache of compiled `.pyc` files, so a rebuild compiles only what
//! changed. The key covers everything a `.pyc`'s bytes depend on: the interpreter's exact
//! build (`sys.version`, bytecode magic), the name compiled into it (the rootfs path, which
//! tracebacks show), the invalidation mode and the source bytes. A cached file is therefore
//! the file the compiler would write, and cold and warm builds give the same rootfs (tested).

use crate::plan::lang::python::PythonInstall;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bump when anything about how prebake compiles changes.
const KEY_VERSION: &str = "prebake-pyc-v1 unchecked-hash optimize=-1";

pub struct PycCache {
    dir: Option<PathBuf>,
    identity: Vec<u8>,
}

impl PycCache {
    /// `dir` None disables the cache (every source is compiled).
    pub fn new(dir: Option<&Path>, install: &PythonInstall) -> Self {
        let identity = format!(
            "{KEY_VERSION}\n{}\n{}\n{}\n",
            install.sys_version,
            install.magic,
            install.real_executable.display()
        );
        PycCache {
            dir: dir.map(|d| d.join("pyc")),
            identity: identity.into_bytes(),
        }
    }

    /// The default location: `$PREBAKE_CACHE_DIR`, else `$XDG_CACHE_HOME/prebake`, else
    /// `~/.cache/prebake`.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("PREBAKE_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("prebake")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/prebake")))
    }

    pub fn key(&self, source: &[u8], dfile: &str) -> String {
        let mut h = Sha256::new();
        h.update(&self.identity);
        h.update(dfile.as_bytes());
        h.update([0]);
        h.update(source);
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(&key[..2]).join(format!("{key}.pyc")))
    }

    /// The cached file for `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<PathBuf> {
        self.path(key).filter(|p| p.is_file())
    }

    /// Store `compiled` under `key` (temp file + rename, so readers never see half a file).
    /// A cache that cannot be written is not an error: the build just compiles next time.
    pub fn put(&self, key: &str, compiled: &Path) {
        let Some(dest) = self.path(key) else { return };
        let Some(parent) = dest.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let Ok(tmp) = tempfile::NamedTempFile::new_in(parent) else {
            return;
        };
        if std::fs::copy(compiled, tmp.path()).is_ok() {
            let _ = tmp.persist(&dest);
        }
    }
}
