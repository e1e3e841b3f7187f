//! Bytecode: a `.pyc` planned beside every planned `.py`, compiled by the target interpreter
//! or taken from the content-addressed cache.

mod cache;
mod compile;

pub use cache::PycCache;
pub use compile::compile_pycs;

use super::lang::python::PythonInstall;
use super::{EntryKind, Plan, PlanningError, Source};
use std::path::{Path, PathBuf};

/// Plan a `.pyc` next to every planned `.py`: from the cache when it has it, otherwise
/// compiled by the interpreter into `staging` (and then cached).
pub fn add_pycs(
    plan: &mut Plan,
    install: &PythonInstall,
    cache: &PycCache,
    staging: &Path,
) -> Result<(usize, Vec<String>), PlanningError> {
    struct Pyc {
        target: String,
        source: String,
        key: String,
        file: PathBuf,
    }
    let mut pycs = Vec::new();
    let mut to_compile = Vec::new();
    for (path, e) in &plan.entries {
        let EntryKind::File {
            source: Source::Host(src),
        } = &e.kind
        else {
            continue;
        };
        let Some(stem) = path.strip_suffix(".py") else {
            continue;
        };
        let (dir, name) = stem.rsplit_once('/').expect("absolute path");
        let target = format!("{dir}/__pycache__/{name}.{}.pyc", install.cache_tag);
        let bytes = std::fs::read(src).map_err(super::io_err(src))?;
        let key = cache.key(&bytes, path);
        let file = match cache.get(&key) {
            Some(hit) => hit,
            None => {
                let out = staging.join(target.trim_start_matches('/'));
                to_compile.push((src.clone(), out.clone(), path.clone()));
                out
            }
        };
        pycs.push(Pyc {
            target,
            source: path.clone(),
            key,
            file,
        });
    }
    let failed = compile_pycs(&install.runner, &install.executable, &to_compile)?;
    let mut n = 0;
    for pyc in pycs {
        if !pyc.file.exists() {
            continue; // did not compile (Python 2 data files in some packages)
        }
        if pyc.file.starts_with(staging) {
            cache.put(&pyc.key, &pyc.file);
        }
        let why = format!("bytecode of {}", pyc.source);
        plan.add_host_file(&pyc.target, pyc.file, 0o644, &why)?;
        n += 1;
    }
    Ok((n, failed))
}
