//! The ELF closure: every library the planned ELF objects load, found with glibc's rules.

use super::elf::{is_elf, read_elf, ElfInfo};
use super::lang::LanguagePlan;
use super::{ldso, EntryKind, Plan, PlanningError, Source};
use crate::error::Chain;
use crate::spec::Language;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Add the closure of every ELF file in the plan. Returns the number of libraries added.
pub fn add_elf_closure(
    plan: &mut Plan,
    resolver: &ldso::Resolver,
    langs: &BTreeMap<Language, LanguagePlan>,
    allow_missing: bool,
    warnings: &mut Vec<String>,
) -> Result<usize, PlanningError> {
    // The resolver works in rootfs paths (inside its sysroot): the plan's keys.
    let mut objects = Vec::new();
    for (path, e) in &plan.entries {
        if let EntryKind::File {
            source: Source::Host(p),
        } = &e.kind
        {
            if is_elf(p).map_err(super::io_err(p))? {
                objects.push(PathBuf::from(path));
            }
        }
    }
    let mut n = 0;
    for lp in langs.values() {
        let main = plan.root_of(&lp.main_executable)?;
        let closure = resolver.closure(Some(&main), &objects)?;
        if !closure.missing.is_empty() {
            let list: Vec<String> = closure.missing.iter().map(|m| format!("  {m}")).collect();
            if allow_missing {
                warnings.extend(list);
            } else {
                return Err(PlanningError::MissingLibraries {
                    count: closure.missing.len(),
                    list: list.join("\n"),
                });
            }
        }
        for interp in &closure.interpreters {
            let host = plan.host_of(interp);
            plan.add_host_path(&host, "ELF interpreter (PT_INTERP)")?;
        }
        for lib in &closure.libraries {
            if resolver.is_placed(&lib.path) {
                continue; // already planned, from outside the sysroot
            }
            let why = format!("needed by {}", lib.needed_by.display());
            let host = plan.host_of(&lib.path);
            plan.add_host_path(&host, &why)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The ELF header of an interpreter: its class and machine pick the libraries that fit.
pub fn main_elf(main: &Path) -> Result<ElfInfo, PlanningError> {
    let bad = |message: String| PlanningError::Interpreter {
        name: main.display().to_string(),
        message,
    };
    read_elf(main)
        .map_err(|e| bad(Chain(&e).to_string()))?
        .ok_or_else(|| bad("not an ELF file".into()))
}

/// Find a library the way `dlopen("name")` from `main` (a host path) would without RPATHs:
/// the sysroot's ld.so.cache, then the loader's default directories. Returns the path inside
/// the sysroot.
pub fn find_library(
    resolver: &ldso::Resolver,
    name: &str,
    main: &Path,
) -> Result<Option<PathBuf>, PlanningError> {
    let info = main_elf(main)?;
    if let Some(e) = resolver
        .cache()
        .lookup(name, info.class, info.machine)
        .next()
    {
        return Ok(Some(PathBuf::from(&e.value)));
    }
    Ok(resolver
        .default_dirs(info.class, info.machine)
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| resolver.host_path(p).exists()))
}
