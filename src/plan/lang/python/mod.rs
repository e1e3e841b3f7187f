//! Python: find the real interpreter behind a name (PATH shims, venvs), ask it where its
//! standard library lives, and plan it with the distributions selected by their
//! `*.dist-info/RECORD`.

mod discover;
mod dists;
mod excludes;
pub mod requirements;

use requirements::WheelTarget;

pub use discover::{discover, PythonInstall};
pub use dists::{dists_in_plan, installed_dists, normalize_name, record_files, select_dists, Dist};
pub use excludes::default_excludes;

use super::{add_spec_paths, sandbox_env, LanguagePlan};
use crate::contract::{Distribution, LanguageInfo};
use crate::plan::pyc::PycCache;
use crate::plan::{tree, Plan, PlanningError};
use crate::platform::Target;
use crate::spec::LanguageSpec;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error(transparent)]
    NotOnPath(#[from] super::NotOnPath),
    #[error("interpreter `{name}`: not found in the sysroot {sysroot} (its /usr/local/bin, /usr/bin, /bin); install it there or give its absolute path inside the sysroot")]
    NotInSysroot { name: String, sysroot: PathBuf },
    #[error("requirements: the target's C library is `{libc}`; wheels for another machine are installed only for glibc 2.17 or newer (manylinux2014); install the packages into the sysroot's python and name them in `packages`")]
    RequirementsNeedGlibc { libc: String },
    #[error("interpreter {path}: does not exist or is not executable")]
    NotExecutable { path: PathBuf },
    #[error("interpreter {path}: could not run it")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interpreter {path}: discovery script failed ({status}): {stderr}")]
    Discovery {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("interpreter {path}: unexpected discovery output")]
    BadOutput {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("package `{name}` is not installed in {searched}; install it into that interpreter (pip install {name}) or remove it from `packages`")]
    NotInstalled { name: String, searched: String },
    #[error("{path}: {message}")]
    BadDistInfo { path: PathBuf, message: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pyc compilation failed: {0}")]
    Compile(String),
}

/// Plan the interpreter `spec` names: its standard library, the selected distributions with
/// their requirements, and the spec's `paths`.
pub fn plan_python(
    plan: &mut Plan,
    spec: &LanguageSpec,
    target: Option<&Target>,
    warnings: &mut Vec<String>,
) -> Result<LanguagePlan, PlanningError> {
    let Resolved {
        install,
        packages,
        target_site,
    } = resolve_install(spec, target)?;
    let mut globs = Vec::new();
    if spec.default_excludes {
        globs.extend(default_excludes(&install));
    }
    globs.extend(spec.exclude.iter().cloned());
    let excludes = excludes::matcher(&globs)?;
    let skip = |p: &Path| excludes.is_match(p);

    add_interpreter(plan, &install, &skip)?;
    if let Some(dir) = &target_site {
        let purelib = plan.root_of(&install.purelib)?;
        add_target_site(plan, dir, &purelib.to_string_lossy(), &skip)?;
    }
    let installed = installed_dists(&install.site_packages)?;
    let dists = select_dists(&installed, &packages, &install.site_packages)?;
    add_dists(plan, &dists, &skip, warnings)?;
    add_spec_paths(plan, "python3", &spec.paths, &skip)?;

    let distributions = distributions(plan, &dists)?;
    let env = sandbox_env();
    Ok(LanguagePlan {
        info: LanguageInfo {
            interpreter: plan
                .root_of(&install.executable)?
                .to_string_lossy()
                .into_owned(),
            // -I: no user site, no PYTHON* variables, no script dir on sys.path; -B: the root
            // is read-only and bytecode is baked.
            args: vec!["-I".into(), "-B".into()],
            env,
            version: install.version.clone(),
            distributions,
            seccomp: None,
        },
        main_executable: install.real_executable.clone(),
        python: Some(install),
    })
}

/// What to plan for the interpreter: the install, the packages to select from its
/// site-packages, and for a cross build's `requirements` the directory its wheels were
/// unpacked into (its contents go into the target's purelib).
struct Resolved {
    install: PythonInstall,
    packages: Vec<String>,
    target_site: Option<PathBuf>,
}

/// The interpreter to plan and the packages to select: the spec's own, or with a
/// `requirements` file the venv that file is installed into, with every pinned package. For a
/// target of another machine, whose pip cannot run here, the build host's pip fetches the
/// target's wheels instead.
fn resolve_install(
    spec: &LanguageSpec,
    target: Option<&Target>,
) -> Result<Resolved, PlanningError> {
    let mut install = discover(&spec.interpreter, target)?;
    let mut packages = spec.packages.clone();
    let mut target_site = None;
    if let Some(file) = &spec.requirements {
        let reqs = requirements::parse(file)?;
        let cache = PycCache::default_dir().ok_or_else(|| {
            PlanningError::Requirements(requirements::RequirementsError::Cache {
                path: file.clone(),
                source: std::io::Error::other(
                    "no cache directory: set PREBAKE_CACHE_DIR (or HOME) to a directory outside /tmp",
                ),
            })
        })?;
        match target {
            Some(t) => {
                let wheels = wheel_target(&install, t)?;
                target_site = Some(requirements::ensure_target_site(&wheels, file, &cache)?);
            }
            None => {
                // Install the pinned file for this interpreter, then build from that venv as
                // if the spec had named it, with every pinned package selected.
                let python = requirements::ensure_venv(
                    &install.real_executable,
                    &install.version,
                    file,
                    &cache,
                )?;
                install = discover(&python.to_string_lossy(), None)?;
                packages.extend(reqs.into_iter().map(|r| r.name));
            }
        }
    }
    Ok(Resolved {
        install,
        packages,
        target_site,
    })
}

/// The wheel tags a target interpreter loads: its `X.Y`, machine and glibc version.
fn wheel_target(install: &PythonInstall, t: &Target) -> Result<WheelTarget, PythonError> {
    let glibc = install
        .libc
        .as_deref()
        .and_then(|l| l.strip_prefix("glibc "))
        .and_then(|v| {
            let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|&(major, minor)| major == 2 && minor >= 17)
        .ok_or_else(|| PythonError::RequirementsNeedGlibc {
            libc: install.libc.clone().unwrap_or_else(|| "none".into()),
        })?;
    let python = install
        .version
        .splitn(3, '.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    Ok(WheelTarget {
        python,
        machine: t.platform.wheel_machine(),
        glibc,
    })
}

/// The files a cross build's pip unpacked for the target (`dir`, per each distribution's
/// RECORD), at the same relative paths under the target's purelib.
fn add_target_site(
    plan: &mut Plan,
    dir: &Path,
    purelib: &str,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<(), PlanningError> {
    let installed = installed_dists(&[dir.to_path_buf()])?;
    for d in installed.values() {
        let why = format!("package {} {}", d.name, d.version);
        for f in record_files(d)? {
            let Ok(rel) = f.strip_prefix(dir) else {
                continue;
            };
            let at = Path::new(purelib).join(rel);
            if skip(&at) || !f.is_file() {
                continue;
            }
            plan.add_host_file(&at.to_string_lossy(), f.clone(), 0o644, &why)?;
        }
    }
    Ok(())
}

/// The interpreter, its venv configuration, the standard library and lib-dynload, and the
/// (empty) site-packages directories.
fn add_interpreter(
    plan: &mut Plan,
    install: &PythonInstall,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<(), PlanningError> {
    plan.add_host_path(&install.executable, "interpreter")?;
    if let Some(cfg) = &install.pyvenv_cfg {
        plan.add_host_path(cfg, "interpreter: venv configuration")?;
    }
    let mut stdlibs = vec![install.stdlib.clone()];
    if install.platstdlib != install.stdlib {
        stdlibs.push(install.platstdlib.clone());
    }
    for lib in &stdlibs {
        tree::add_tree(plan, lib, "python stdlib", skip)?;
    }
    if let Some(dynload) = &install.lib_dynload {
        if !stdlibs.iter().any(|s| dynload.starts_with(s)) {
            tree::add_tree(plan, dynload, "python lib-dynload", skip)?;
        }
    }
    // site-packages exist (empty) so `site` adds them to sys.path as on the host.
    for sp in &install.site_packages {
        plan.add_host_path(sp, "python site-packages")?;
    }
    Ok(())
}

/// Every file the selected distributions' RECORDs list; one missing on disk is a warning.
fn add_dists(
    plan: &mut Plan,
    dists: &[Dist],
    skip: &dyn Fn(&Path) -> bool,
    warnings: &mut Vec<String>,
) -> Result<(), PlanningError> {
    for d in dists {
        let why = format!("package {} {}", d.name, d.version);
        for f in record_files(d)? {
            if skip(&f) {
                continue;
            }
            match std::fs::symlink_metadata(&f) {
                Ok(_) => {
                    plan.add_host_path(&f, &why)?;
                }
                Err(_) => warnings.push(format!(
                    "{}: listed in RECORD of {} but missing on disk",
                    f.display(),
                    d.name
                )),
            }
        }
    }
    Ok(())
}

/// Every distribution the rootfs ends up holding, selected or brought in by a spec path
/// (GET /v1/sandbox/dependencies lists them all).
fn distributions(plan: &Plan, selected: &[Dist]) -> Result<Vec<Distribution>, PlanningError> {
    let in_rootfs = dists_in_plan(plan)?;
    let mut distributions: Vec<Distribution> = selected
        .iter()
        .chain(&in_rootfs)
        .map(|d| Distribution {
            name: d.name.clone(),
            version: d.version.clone(),
        })
        .collect();
    distributions.sort();
    distributions.dedup();
    Ok(distributions)
}
