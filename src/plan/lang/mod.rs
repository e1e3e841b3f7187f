//! The language planners: each finds its interpreter on the build host, plans what it needs
//! and says how the sandbox starts it.

pub mod node;
pub mod python;

use super::{tree, Plan, PlanningError};
use crate::contract::LanguageInfo;
use crate::platform::Target;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Per-language facts gathered while planning, for the manifest.
pub struct LanguagePlan {
    pub info: LanguageInfo,
    /// The real ELF of the interpreter: the main object of the closure.
    pub main_executable: PathBuf,
    /// Python only: what the interpreter said about itself (it also compiles the `.pyc`s).
    pub python: Option<python::PythonInstall>,
}

/// The environment every interpreter gets in the sandbox (the runtime adds proxies to runs
/// with network). C.UTF-8 is built into glibc >= 2.35, so no locale files are needed.
pub(crate) fn sandbox_env() -> BTreeMap<String, String> {
    [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("HOME", "/tmp"),
        ("TZ", "UTC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `paths` with dify-sandbox's python_lib_path meaning.
pub(crate) fn add_spec_paths(
    plan: &mut Plan,
    language: &str,
    paths: &[PathBuf],
    skip: &dyn Fn(&Path) -> bool,
) -> Result<(), PlanningError> {
    for (i, p) in paths.iter().enumerate() {
        let why = format!("spec: languages.{language}.paths[{i}]");
        let meta = std::fs::symlink_metadata(p).map_err(|_| PlanningError::MissingPath {
            language: language.to_owned(),
            path: p.clone(),
        })?;
        if meta.is_dir() {
            tree::add_tree(plan, p, &why, skip)?;
        } else {
            plan.add_host_path(p, &why)?;
        }
    }
    Ok(())
}

/// An interpreter name that is neither a path nor found on PATH.
#[derive(Debug, thiserror::Error)]
#[error(
    "interpreter `{0}` not found on PATH; give an absolute path in `interpreter:` or install it"
)]
pub struct NotOnPath(pub String);

/// Look `name` up like a shell would: a name with a slash is a path, otherwise search PATH.
pub fn which(name: &str) -> Result<PathBuf, NotOnPath> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| NotOnPath(name.to_owned()))
}

/// `name` as a shell with `PATH=/usr/local/bin:/usr/bin:/bin` inside the sysroot finds it (a
/// name with a slash is an absolute path there). The host path of what was found, its last
/// symlink kept (`SYSROOT/usr/bin/python3`), so the rootfs has the same interpreter path.
pub(crate) fn which_in_sysroot(t: &Target, name: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![PathBuf::from(name)]
    } else {
        ["/usr/local/bin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .collect()
    };
    for c in candidates {
        if let Ok(Some(real)) = crate::fsutil::in_root::resolve_in_root(&t.sysroot, &c) {
            if is_executable(&t.host_path(&real)) {
                // An absolute last link would make the kernel (and qemu) leave the sysroot.
                let direct = t.host_path(&c);
                let escapes = std::fs::read_link(&direct).is_ok_and(|l| l.is_absolute());
                return Some(if escapes { t.host_path(&real) } else { direct });
            }
        }
    }
    None
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
