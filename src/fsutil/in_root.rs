//! Paths inside a sysroot (the build host's `/`, or an unpacked rootfs): every symlink
//! resolved the way the kernel would resolve it if the sysroot were `/`. The build's loader
//! emulation and the runtime's interpreter check both need this, so it lives apart from both.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Symlink hops allowed while resolving one path (the kernel's MAXSYMLINKS).
pub const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: symlink loop or chain longer than {MAX_SYMLINK_HOPS} links; fix the link")]
    SymlinkLoop { path: PathBuf },
}

/// Resolve every symlink of `p` (absolute, inside the sysroot) the way the kernel would if
/// the sysroot were `/`: absolute link targets restart at the sysroot, `..` never leaves it.
/// `Ok(None)` when the path does not exist.
pub fn resolve_in_root(sysroot: &Path, p: &Path) -> Result<Option<PathBuf>, InRootError> {
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
            Err(source) => return Err(InRootError::Io { path: host, source }),
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(InRootError::SymlinkLoop {
                    path: host_path_in(sysroot, p),
                });
            }
            let target = std::fs::read_link(&host)
                .map_err(|source| InRootError::Io { path: host, source })?;
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
pub fn host_path_in(sysroot: &Path, p: &Path) -> PathBuf {
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
