//! `/etc/ld.so.conf` inside a sysroot: the directories it lists, `include` globs expanded.

use super::ResolveError;
use crate::fsutil::in_root::{host_path_in, resolve_in_root};
use std::path::{Path, PathBuf};

/// Depth of nested `include` in ld.so.conf before we call it a loop.
const MAX_CONF_DEPTH: usize = 16;

/// Append the directories `file` (an in-root path) lists to `out`, in order, without
/// repeats; a missing file lists none.
pub(super) fn read_conf(
    sysroot: &Path,
    file: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
) -> Result<(), ResolveError> {
    if depth > MAX_CONF_DEPTH {
        return Err(ResolveError::Conf {
            path: host_path_in(sysroot, file),
            reason: format!("more than {MAX_CONF_DEPTH} nested includes (include loop?)"),
        });
    }
    let Some(real) = resolve_in_root(sysroot, file)? else {
        return Ok(());
    };
    let host = host_path_in(sysroot, &real);
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
                for inc in glob_in_root(sysroot, &pat, &host)? {
                    read_conf(sysroot, &inc, depth + 1, out)?;
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
fn glob_in_root(sysroot: &Path, pat: &Path, conf: &Path) -> Result<Vec<PathBuf>, ResolveError> {
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
    let Some(real_dir) = resolve_in_root(sysroot, dir)? else {
        return Ok(Vec::new());
    };
    let host_dir = host_path_in(sysroot, &real_dir);
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
