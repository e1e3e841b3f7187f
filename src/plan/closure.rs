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
    let mut objects = Vec::new();
    for e in plan.entries.values() {
        if let EntryKind::File {
            source: Source::Host(p),
        } = &e.kind
        {
            if is_elf(p).map_err(super::io_err(p))? {
                objects.push(p.clone());
            }
        }
    }
    let mut n = 0;
    for lp in langs.values() {
        let closure = resolver.closure(Some(&lp.main_executable), &objects)?;
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
            plan.add_host_path(interp, "ELF interpreter (PT_INTERP)")?;
        }
        for lib in &closure.libraries {
            let why = format!("needed by {}", lib.needed_by.display());
            plan.add_host_path(&lib.path, &why)?;
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

/// Find a library the way `dlopen("name")` from `main` would without RPATHs: the host's
/// ld.so.cache, then the loader's default directories.
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
