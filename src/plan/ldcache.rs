//! The rootfs's own `/etc/ld.so.cache`, so `ctypes.util.find_library` (which runs
//! `ldconfig -p`) finds the libraries the plan holds.

use super::closure::main_elf;
use super::{elf, ldso, EntryKind, Plan, PlanningError, Source};
use std::path::Path;

/// The rootfs's own /etc/ld.so.cache: every planned shared library with a SONAME.
pub fn add_ld_so_cache(
    plan: &mut Plan,
    resolver: &ldso::Resolver,
    main: &Path,
) -> Result<(), PlanningError> {
    let main_info = main_elf(main)?;
    let mut lib_dirs = resolver.default_dirs(main_info.class, main_info.machine);
    lib_dirs.extend(resolver.conf_dirs().iter().cloned());
    let mut entries = Vec::new();
    for (path, e) in &plan.entries {
        let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
        if !lib_dirs.iter().any(|d| d == dir) || !path.contains(".so") {
            continue;
        }
        let host = match &e.kind {
            EntryKind::File {
                source: Source::Host(p),
            } => p.clone(),
            EntryKind::Symlink { .. } if resolver.sysroot() == Path::new("/") => {
                match std::fs::canonicalize(path) {
                    Ok(p) => p,
                    Err(_) => continue,
                }
            }
            EntryKind::Symlink { .. } => match resolver.resolve_in_root(Path::new(path)) {
                Ok(Some(real)) => resolver.host_path(&real),
                _ => continue,
            },
            _ => continue,
        };
        if let Ok(Some(info)) = elf::read_elf(&host) {
            if info.class != main_info.class || info.machine != main_info.machine {
                continue;
            }
            if let Some(soname) = info.soname {
                let name = Path::new(path).file_name().and_then(|n| n.to_str());
                // Index the soname link (libz.so.1), not every alias of the chain.
                if name == Some(soname.as_str()) {
                    entries.push((soname, path.clone()));
                }
            }
        }
    }
    entries.sort();
    entries.dedup();
    let bytes = ldso::write_cache(&entries, main_info.class, main_info.machine);
    plan.add_inline(
        "/etc/ld.so.cache",
        bytes,
        0o644,
        "extra: ld_so_cache (for ctypes.util.find_library)",
    )?;
    Ok(())
}
