//! The planning stage as a whole: the planners in the order their inputs exist (languages, the
//! ELF closure of what they brought, extras, bytecode, the rootfs's ld.so.cache), giving the
//! finished plan that every later stage only reads.

use super::lang::{self, LanguagePlan};
use super::pyc::{add_pycs, PycCache};
use super::{closure, extras, ldcache, ldso, masked, EntryKind, Plan, PlanError, Source};
use crate::contract::LanguageInfo;
use crate::platform::Target;
use crate::spec::{ImageSpec, Language};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What planning needs beyond the spec.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions<'a> {
    /// Missing libraries are warnings, not errors.
    pub allow_missing: bool,
    /// The `.pyc` cache; `None` compiles everything afresh.
    pub pyc_cache_dir: Option<&'a Path>,
    /// Where freshly compiled `.pyc` files are written; the plan names them there, so it must
    /// outlive the rootfs writer.
    pub pyc_staging: &'a Path,
    /// Build from this sysroot for its platform (`--sysroot`, `--platform`); `None`: the
    /// build host's own `/`.
    pub target: Option<&'a Target>,
}

/// The finished plan and what planning found out on the way.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub plan: Plan,
    /// How the sandbox starts each language (its `seccomp` files are still to be written).
    pub languages: BTreeMap<Language, LanguageInfo>,
    /// Shared libraries the ELF closure added.
    pub libraries: usize,
    pub pyc_compiled: usize,
    pub pyc_failed: Vec<String>,
    pub warnings: Vec<String>,
    /// Bytes of file content in the plan (for progress while the rootfs is written).
    pub content_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    /// Also every I/O error of planning ([`PlanError::Io`]).
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Python(#[from] lang::python::PythonError),
    #[error(transparent)]
    Requirements(#[from] lang::python::requirements::RequirementsError),
    #[error(transparent)]
    Ldso(#[from] ldso::ResolveError),
    #[error("{count} shared librar{ies} could not be found (pass --allow-missing or set allow_missing: true to build anyway):\n{list}",
        ies = if *count == 1 { "y" } else { "ies" })]
    MissingLibraries { count: usize, list: String },
    #[error("spec path `{path}` (languages.{language}.paths) does not exist; fix or remove it")]
    MissingPath { language: String, path: PathBuf },
    #[error("interpreter `{name}`: {message}")]
    Interpreter { name: String, message: String },
    #[error("{language}: the interpreter {path} lies under {mount}, which the sandbox mounts over at run time, so scripts could never start; install it (or its venv) somewhere else, e.g. under /opt")]
    MaskedInterpreter {
        language: String,
        path: String,
        mount: &'static str,
    },
    #[error("{language}: the interpreter {path} is an ELF file for e_machine {found}, not {platform} (e_machine {want}); check --platform and the sysroot")]
    WrongArchitecture {
        language: String,
        path: PathBuf,
        found: u16,
        want: u16,
        platform: String,
    },
}

/// Plan the whole rootfs of `spec`; `stage` hears the name of each step as it starts.
pub fn plan_image(
    spec: &ImageSpec,
    opts: &PlanOptions,
    stage: &dyn Fn(&str),
) -> Result<ImagePlan, PlanningError> {
    let sysroot = opts.target.map_or(Path::new("/"), |t| t.sysroot.as_path());
    let mut plan = Plan::with_sysroot(sysroot);
    let mut warnings = Vec::new();
    let mut langs = BTreeMap::new();
    for (language, lspec) in &spec.languages {
        stage(&format!("planning {}", language.as_str()));
        let lp = match language {
            Language::Python3 => {
                lang::python::plan_python(&mut plan, lspec, opts.target, &mut warnings)?
            }
            Language::Nodejs => {
                lang::node::plan_node(&mut plan, lspec, opts.target, &mut warnings)?
            }
        };
        if let Some(t) = opts.target {
            check_machine(*language, &lp.main_executable, t)?;
        }
        langs.insert(*language, lp);
    }

    stage("resolving shared libraries");
    let mut resolver = ldso::Resolver::new(sysroot)?;
    for (at, host) in plan.placed_files() {
        resolver.place(at, host);
    }
    let libraries = closure::add_elf_closure(
        &mut plan,
        &resolver,
        &langs,
        opts.allow_missing,
        &mut warnings,
    )?;

    masked::check_masked_paths(&plan, &langs, &mut warnings)?;

    stage("adding extras");
    let triplet = opts
        .target
        .map_or("x86_64-linux-gnu", |t| t.platform.triplet());
    extras::add_extras(&mut plan, spec, &langs, &resolver, triplet, &mut warnings)?;

    let (pyc_compiled, pyc_failed) = plan_bytecode(&mut plan, spec, &langs, opts, stage)?;
    for f in &pyc_failed {
        warnings.push(format!("no .pyc for {f}"));
    }

    // A rootfs-local ld.so.cache last, once every library is in the plan.
    if spec.extras.ld_so_cache {
        if let Some(main) = langs.values().next().map(|l| l.main_executable.clone()) {
            ldcache::add_ld_so_cache(&mut plan, &resolver, &main)?;
        }
    }

    let content_bytes = content_bytes(&plan);
    Ok(ImagePlan {
        plan,
        languages: langs.into_iter().map(|(l, lp)| (l, lp.info)).collect(),
        libraries,
        pyc_compiled,
        pyc_failed,
        warnings,
        content_bytes,
    })
}

/// The interpreter is a program of the target platform: the loader emulation then accepts
/// only that machine's objects, as ld.so would.
fn check_machine(language: Language, main: &Path, t: &Target) -> Result<(), PlanningError> {
    let info = closure::main_elf(main)?;
    let want = t.platform.elf_machine();
    if info.machine != want {
        return Err(PlanningError::WrongArchitecture {
            language: language.as_str().to_owned(),
            path: main.to_path_buf(),
            found: info.machine,
            want,
            platform: t.platform.to_string(),
        });
    }
    Ok(())
}

/// Bytecode, compiled by the target interpreter, when the spec asks for it.
fn plan_bytecode(
    plan: &mut Plan,
    spec: &ImageSpec,
    langs: &BTreeMap<Language, LanguagePlan>,
    opts: &PlanOptions,
    stage: &dyn Fn(&str),
) -> Result<(usize, Vec<String>), PlanningError> {
    match langs.get(&Language::Python3) {
        Some(LanguagePlan {
            python: Some(install),
            ..
        }) if spec.languages[&Language::Python3].precompile => {
            stage("compiling bytecode");
            let cache = PycCache::new(opts.pyc_cache_dir, install);
            add_pycs(plan, install, &cache, opts.pyc_staging)
        }
        _ => Ok((0, Vec::new())),
    }
}

fn content_bytes(plan: &Plan) -> u64 {
    plan.entries
        .values()
        .map(|e| match &e.kind {
            EntryKind::File {
                source: Source::Host(p),
            } => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            EntryKind::File {
                source: Source::Inline(b),
            } => b.len() as u64,
            _ => 0,
        })
        .sum()
}
