//! Adding host files and whole host directory trees to a plan.

use super::{Plan, PlanError};
use std::path::Path;

/// Add a host file (with its symlink chain) when it exists; report whether it did.
pub fn add_if_exists(plan: &mut Plan, path: &Path, why: &str) -> Result<bool, PlanError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    plan.add_host_path(path, why)?;
    Ok(true)
}

/// Add a host directory tree recursively (symlinks kept as symlinks), skipping what
/// `skip` says.
pub fn add_tree(
    plan: &mut Plan,
    root: &Path,
    why: &str,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<u64, PlanError> {
    let real_root = plan.add_host_path(root, why)?;
    let mut n = 0;
    let walker = walkdir::WalkDir::new(&real_root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !skip(e.path()));
    for entry in walker {
        let entry = entry.map_err(|e| {
            let (path, source) = super::walk_error(e, &real_root);
            PlanError::Io { path, source }
        })?;
        if entry.depth() == 0 {
            continue;
        }
        plan.add_walked(entry.path(), why)?;
        n += 1;
    }
    Ok(n)
}
