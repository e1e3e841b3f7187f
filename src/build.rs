//! The build pipeline: spec -> plan -> rootfs + seccomp -> bundle (-> OCI image).
//!
//! Everything is written under a temporary directory beside `--out` and renamed into place
//! only when complete, so a failed or interrupted build leaves nothing half-written.

use crate::bundle::{self, BundleManifest, Distribution, LanguageInfo, SeccompFiles};
use crate::plan::pyc::PycCache;
use crate::plan::{
    self, extras, ldso, python, requirements, Entry, EntryKind, Plan, PlanError, Source,
};
use crate::spec::{ImageSpec, Language, LanguageSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Receives progress while a build runs; the CLI draws it, tests ignore it.
pub trait Progress {
    /// A new stage starts ("resolving libraries").
    fn stage(&self, _name: &str) {}
    /// Bytes of file data written to the rootfs so far, of `total`.
    fn bytes(&self, _done: u64, _total: u64) {}
    /// Something the user should know that does not stop the build.
    fn warn(&self, _message: &str) {}
}

/// Progress that goes nowhere.
pub struct Quiet;
impl Progress for Quiet {}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The output directory; `bundle/` (and later `image/`) go inside.
    pub out: PathBuf,
    /// Replace a non-empty `out`.
    pub force: bool,
    /// Missing libraries are warnings (also settable in the spec).
    pub allow_missing: bool,
    /// SOURCE_DATE_EPOCH: the mtime of every entry.
    pub mtime: u64,
    /// Where compiled `.pyc` files are kept between builds (content-addressed); `None`
    /// compiles everything afresh.
    pub cache_dir: Option<PathBuf>,
    /// Also write DIR/image (and maybe an archive); `None` writes the bundle alone.
    pub image: Option<crate::oci::ImageOptions>,
}

/// What a finished build reports in its one-screen summary.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub bundle_dir: PathBuf,
    pub manifest: BundleManifest,
    pub libraries: usize,
    pub pyc_compiled: usize,
    pub pyc_failed: Vec<String>,
    pub warnings: Vec<String>,
    pub seconds: f64,
    pub seccomp_instructions: BTreeMap<String, (usize, usize)>,
    /// The OCI image written beside the bundle, when asked for.
    pub image: Option<crate::oci::ImageReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: --force replaces only a previous prebake output (bundle/bundle.json or image/oci-layout), and this directory is not one; choose another --out or empty it yourself")]
    NotPreviousOutput { path: PathBuf },
    #[error("{path}: output directory exists and is not empty; pass --force to replace it or choose another --out")]
    OutExists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Python(#[from] python::PythonError),
    #[error(transparent)]
    Requirements(#[from] requirements::RequirementsError),
    #[error(transparent)]
    Ldso(#[from] ldso::ResolveError),
    #[error("{count} shared librar{ies} could not be found (pass --allow-missing or set allow_missing: true to build anyway):\n{list}",
        ies = if *count == 1 { "y" } else { "ies" })]
    MissingLibraries { count: usize, list: String },
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
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
    #[error(transparent)]
    Image(#[from] crate::oci::ImageError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Per-language facts gathered while planning, for the manifest.
struct LanguagePlan {
    info: LanguageInfo,
    /// The real ELF of the interpreter: the main object of the closure.
    main_executable: PathBuf,
    /// Python only: what the interpreter said about itself (it also compiles the `.pyc`s).
    python: Option<python::PythonInstall>,
}

/// Run the whole build.
pub fn build(
    spec: &ImageSpec,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    check_out_dir(&opts.out, opts.force)?;
    // A bad tag, a missing runtime or an existing archive fail before any work.
    if let Some(image) = &opts.image {
        crate::oci::image::check_options(image)?;
    }
    let parent = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".prebake-build-")
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    let mut warnings = Vec::new();

    // 1. Plan: languages, then the ELF closure of everything, then extras.
    let mut plan = Plan::new();
    let mut langs = BTreeMap::new();
    for (lang, lspec) in &spec.languages {
        progress.stage(&format!("planning {}", lang.as_str()));
        let lp = match lang {
            Language::Python3 => plan_python(&mut plan, lspec, &mut warnings)?,
            Language::Nodejs => plan_node(&mut plan, lspec, &mut warnings)?,
        };
        langs.insert(*lang, lp);
    }

    progress.stage("resolving shared libraries");
    let resolver = ldso::Resolver::new(Path::new("/"))?;
    let libraries = add_elf_closure(
        &mut plan,
        &resolver,
        &langs,
        spec.allow_missing || opts.allow_missing,
        &mut warnings,
    )?;

    check_masked_paths(&plan, &langs, &mut warnings)?;

    progress.stage("adding extras");
    add_extras(&mut plan, spec, &langs, &resolver, &mut warnings)?;

    // 2. Bytecode, compiled by the target interpreter into the temp dir.
    let (pyc_compiled, pyc_failed) = match langs.get(&Language::Python3) {
        Some(LanguagePlan {
            python: Some(install),
            ..
        }) if spec.languages[&Language::Python3].precompile => {
            progress.stage("compiling bytecode");
            let cache = PycCache::new(opts.cache_dir.as_deref(), install);
            add_pycs(&mut plan, install, &cache, &tmp.path().join("pyc"))?
        }
        _ => (0, Vec::new()),
    };
    for f in &pyc_failed {
        warnings.push(format!("no .pyc for {f}"));
    }

    // A rootfs-local ld.so.cache last, once every library is in the plan.
    if spec.extras.ld_so_cache {
        if let Some(main) = langs.values().next().map(|l| l.main_executable.clone()) {
            add_ld_so_cache(&mut plan, &resolver, &main)?;
        }
    }

    // 3. Artifacts into tmp/bundle.
    let bundle_dir = tmp.path().join("bundle");
    std::fs::create_dir_all(bundle_dir.join("seccomp")).map_err(io(&bundle_dir))?;
    let mut seccomp_instructions = BTreeMap::new();
    for (lang, lp) in langs.iter_mut() {
        progress.stage(&format!("compiling seccomp policy for {}", lang.as_str()));
        let art = crate::seccomp::compile(*lang, &spec.languages[lang].seccomp)?;
        let name = lang.as_str();
        let files = SeccompFiles {
            oci_json: format!("seccomp/{name}.json"),
            bpf: format!("seccomp/{name}.bpf"),
            bpf_net: format!("seccomp/{name}-net.bpf"),
            arch: art.arch.to_owned(),
        };
        for (rel, bytes) in [
            (&files.oci_json, &art.oci_json),
            (&files.bpf, &art.bpf),
            (&files.bpf_net, &art.bpf_net),
        ] {
            let p = bundle_dir.join(rel);
            std::fs::write(&p, bytes).map_err(io(&p))?;
        }
        seccomp_instructions.insert(name.to_owned(), art.instructions);
        lp.info.seccomp = Some(files);
    }

    progress.stage("writing rootfs");
    let file_name = crate::rootfs::file_name(Some(spec.compression));
    let total = plan_bytes(&plan);
    let tar_opts = crate::rootfs::TarOptions {
        compression: Some(spec.compression),
        mtime: opts.mtime,
        precompressed: false,
    };
    let stats = crate::rootfs::write_tar_file(
        &plan,
        &bundle_dir.join(file_name),
        &tar_opts,
        &mut |done| progress.bytes(done, total),
    )?;

    let manifest = BundleManifest {
        format_version: bundle::FORMAT_VERSION,
        prebake_version: env!("CARGO_PKG_VERSION").to_owned(),
        spec_digest: spec.digest.clone(),
        rootfs: crate::rootfs::rootfs_info(&stats, file_name, Some(spec.compression)),
        languages: langs
            .into_iter()
            .map(|(l, lp)| (l.as_str().to_owned(), lp.info))
            .collect(),
        provenance: plan
            .entries
            .iter()
            .map(|(p, e)| (p.clone(), e.provenance.clone()))
            .collect(),
    };
    let mpath = bundle_dir.join(bundle::MANIFEST_FILE);
    std::fs::write(&mpath, manifest.to_json()).map_err(io(&mpath))?;

    // 4. Into place: the staging pyc dir goes away, the rest is renamed.
    let pyc_dir = tmp.path().join("pyc");
    if pyc_dir.exists() {
        std::fs::remove_dir_all(&pyc_dir).map_err(io(&pyc_dir))?;
    }
    // 5. The image, staged in tmp too, so it lands atomically with the bundle.
    let mut image = match &opts.image {
        Some(image_opts) => {
            progress.stage("writing OCI image");
            let work = tmp.path().join("layers");
            std::fs::create_dir(&work).map_err(io(&work))?;
            let report = crate::oci::write_image(
                &bundle_dir,
                &tmp.path().join("image"),
                &work,
                &manifest,
                &spec.name,
                image_opts,
                opts.mtime,
            )?;
            std::fs::remove_dir(&work).map_err(io(&work))?;
            Some(report)
        }
        None => None,
    };
    if let Err(e) = commit_out_dir(tmp, &opts.out) {
        // The archive was written from the staged layout: without the layout it is an orphan.
        if let Some(archive) = image.as_ref().and_then(|i| i.archive.as_ref()) {
            let _ = std::fs::remove_file(archive);
        }
        return Err(e);
    }
    if let Some(i) = image.as_mut() {
        i.dir = opts.out.join("image");
    }
    Ok(BuildReport {
        bundle_dir: opts.out.join("bundle"),
        manifest,
        libraries,
        pyc_compiled,
        pyc_failed,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
        seccomp_instructions,
        image,
    })
}

/// Where the sandbox mounts its own filesystems over the rootfs: whatever the plan puts there
/// is invisible to scripts.
const MASKED_AT_RUN_TIME: &[&str] = &["/tmp", "/dev", "/proc"];

fn masked_by(path: &str) -> Option<&'static str> {
    MASKED_AT_RUN_TIME.iter().copied().find(|m| {
        path.strip_prefix(m)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// An interpreter under a run-time mount point is an error (nothing could run); other files
/// there (spec `paths` in a temp dir) only a warning, since a plain chroot still sees them.
fn check_masked_paths(
    plan: &Plan,
    langs: &BTreeMap<Language, LanguagePlan>,
    warnings: &mut Vec<String>,
) -> Result<(), BuildError> {
    for (lang, lp) in langs {
        for path in [
            &lp.info.interpreter,
            &lp.main_executable.display().to_string(),
        ] {
            if let Some(mount) = masked_by(path) {
                return Err(BuildError::MaskedInterpreter {
                    language: lang.as_str().to_owned(),
                    path: path.clone(),
                    mount,
                });
            }
        }
    }
    let hidden: Vec<&String> = plan
        .entries
        .keys()
        .filter(|p| masked_by(p).is_some())
        .collect();
    if let Some(first) = hidden.first() {
        warnings.push(format!(
            "{} planned path(s) lie under {}, which the sandbox mounts over at run time: scripts will not see them (first: {first})",
            hidden.len(),
            MASKED_AT_RUN_TIME.join(", ")
        ));
    }
    Ok(())
}

/// Refuse a non-empty output directory unless forced; a file at that path is never replaced.
fn check_out_dir(out: &Path, force: bool) -> Result<(), BuildError> {
    match std::fs::read_dir(out) {
        Ok(mut it) => {
            if it.next().is_none() {
                return Ok(());
            }
            if !force {
                return Err(BuildError::OutExists {
                    path: out.to_path_buf(),
                });
            }
            // --force replaces a previous build, never a directory that happens to be named.
            let previous = out
                .join("bundle")
                .join(crate::bundle::MANIFEST_FILE)
                .is_file()
                || out.join("image/oci-layout").is_file();
            if !previous {
                return Err(BuildError::NotPreviousOutput {
                    path: out.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BuildError::Io {
            path: out.to_path_buf(),
            source: e,
        }),
    }
}

/// Move the finished temp dir to `out`: an old `out` is moved aside first and removed only
/// after the new one is in place.
fn commit_out_dir(tmp: tempfile::TempDir, out: &Path) -> Result<(), BuildError> {
    let staged = tmp.keep();
    use std::os::unix::fs::PermissionsExt;
    // tempdir is 0700; the output is for everyone to read.
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(io(&staged))?;
    let old = if out.exists() {
        let aside = staged.with_extension("old");
        std::fs::rename(out, &aside).map_err(io(out))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&staged, out) {
        if let Some(aside) = &old {
            let _ = std::fs::rename(aside, out);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(BuildError::Io {
            path: out.to_path_buf(),
            source: e,
        });
    }
    if let Some(aside) = old {
        std::fs::remove_dir_all(&aside).map_err(io(&aside))?;
    }
    Ok(())
}

fn plan_bytes(plan: &Plan) -> u64 {
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

fn plan_python(
    plan: &mut Plan,
    spec: &LanguageSpec,
    warnings: &mut Vec<String>,
) -> Result<LanguagePlan, BuildError> {
    let mut install = python::discover(&spec.interpreter)?;
    let mut packages = spec.packages.clone();
    if let Some(file) = &spec.requirements {
        // Install the pinned file for this interpreter, then build from that venv as if the
        // spec had named it, with every pinned package selected.
        let reqs = requirements::parse(file)?;
        let cache = PycCache::default_dir().ok_or_else(|| {
            BuildError::Requirements(requirements::RequirementsError::Cache {
                path: file.clone(),
                source: std::io::Error::other(
                    "no cache directory: set PREBAKE_CACHE_DIR (or HOME) to a directory outside /tmp",
                ),
            })
        })?;
        let python =
            requirements::ensure_venv(&install.real_executable, &install.version, file, &cache)?;
        install = python::discover(&python.to_string_lossy())?;
        packages.extend(reqs.into_iter().map(|r| r.name));
    }
    let mut globs = Vec::new();
    if spec.default_excludes {
        globs.extend(python::default_excludes(&install));
    }
    globs.extend(spec.exclude.iter().cloned());
    let excludes = build_globset(&globs)?;
    let skip = |p: &Path| excludes.is_match(p);

    plan.add_host_path(&install.executable, "interpreter")?;
    if let Some(cfg) = &install.pyvenv_cfg {
        plan.add_host_path(cfg, "interpreter: venv configuration")?;
    }
    let mut stdlibs = vec![install.stdlib.clone()];
    if install.platstdlib != install.stdlib {
        stdlibs.push(install.platstdlib.clone());
    }
    for lib in &stdlibs {
        extras::add_tree(plan, lib, "python stdlib", &skip)?;
    }
    if let Some(dynload) = &install.lib_dynload {
        if !stdlibs.iter().any(|s| dynload.starts_with(s)) {
            extras::add_tree(plan, dynload, "python lib-dynload", &skip)?;
        }
    }
    // site-packages exist (empty) so `site` adds them to sys.path as on the host.
    for sp in &install.site_packages {
        plan.add_host_path(sp, "python site-packages")?;
    }

    let installed = python::installed_dists(&install.site_packages)?;
    let dists = python::select_dists(&installed, &packages, &install.site_packages)?;
    for d in &dists {
        let why = format!("package {} {}", d.name, d.version);
        for f in python::record_files(d)? {
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

    add_spec_paths(plan, "python3", &spec.paths, &skip)?;

    // Every distribution the rootfs ends up holding, selected or brought in by a spec path
    // (GET /v1/sandbox/dependencies lists them all).
    let in_rootfs = python::dists_in_plan(plan)?;
    let mut distributions: Vec<Distribution> = dists
        .iter()
        .chain(&in_rootfs)
        .map(|d| Distribution {
            name: d.name.clone(),
            version: d.version.clone(),
        })
        .collect();
    distributions.sort();
    distributions.dedup();
    let env = sandbox_env();
    Ok(LanguagePlan {
        info: LanguageInfo {
            interpreter: install.executable.to_string_lossy().into_owned(),
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

/// Node flags every sandboxed run gets, when this `node` knows them (probed at build time).
///
/// `--disable-wasm-trap-handler` (Node 20.15+/22.2+): by default every WebAssembly memory
/// reserves a 10 GiB guard region, which no sandbox address-space limit allows, and undici
/// (the engine of the global `fetch`) runs its HTTP parser as WebAssembly: without the flag
/// `fetch` fails with "Cannot allocate Wasm memory". V8 then compiles explicit bounds checks
/// instead, a little slower and exactly as safe.
const NODE_ARGS: &[(&str, &str)] = &[(
    "--disable-wasm-trap-handler",
    "WebAssembly (and `fetch`, whose HTTP parser is WebAssembly) fails under the sandbox's address-space limit",
)];

/// The environment every interpreter gets in the sandbox (the runtime adds proxies to runs
/// with network). C.UTF-8 is built into glibc >= 2.35, so no locale files are needed.
fn sandbox_env() -> BTreeMap<String, String> {
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

fn plan_node(
    plan: &mut Plan,
    spec: &LanguageSpec,
    warnings: &mut Vec<String>,
) -> Result<LanguagePlan, BuildError> {
    let path = python::which(&spec.interpreter).map_err(|e| BuildError::Interpreter {
        name: spec.interpreter.clone(),
        message: e.to_string(),
    })?;
    let real = std::fs::canonicalize(&path).map_err(io(&path))?;
    plan.add_host_path(&path, "interpreter")?;
    let out = std::process::Command::new(&real)
        .arg("--version")
        .output()
        .map_err(io(&real))?;
    if !out.status.success() {
        return Err(BuildError::Interpreter {
            name: spec.interpreter.clone(),
            message: format!(
                "`{} --version` failed: {}",
                real.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut args = Vec::new();
    for (flag, without) in NODE_ARGS {
        if node_accepts(&real, flag) {
            args.push((*flag).to_owned());
        } else {
            warnings.push(format!(
                "nodejs: {} {version} does not know {flag}: {without}",
                real.display()
            ));
        }
    }
    add_spec_paths(plan, "nodejs", &spec.paths, &|_| false)?;
    let env = sandbox_env();
    Ok(LanguagePlan {
        info: LanguageInfo {
            interpreter: path.to_string_lossy().into_owned(),
            args,
            env,
            version,
            distributions: vec![],
            seccomp: None,
        },
        main_executable: real,
        python: None,
    })
}

/// Whether `node FLAG -e 0` runs: node refuses unknown flags ("bad option") with exit 9.
fn node_accepts(node: &Path, flag: &str) -> bool {
    std::process::Command::new(node)
        .args([flag, "-e", "0"])
        .env_remove("NODE_OPTIONS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn build_globset(globs: &[String]) -> Result<globset::GlobSet, BuildError> {
    let mut b = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| BuildError::Interpreter {
                name: "exclude".into(),
                message: format!("bad glob `{g}`: {e}"),
            })?;
        b.add(glob);
    }
    b.build().map_err(|e| BuildError::Interpreter {
        name: "exclude".into(),
        message: e.to_string(),
    })
}

/// `paths` with dify-sandbox's python_lib_path meaning.
fn add_spec_paths(
    plan: &mut Plan,
    language: &str,
    paths: &[PathBuf],
    skip: &dyn Fn(&Path) -> bool,
) -> Result<(), BuildError> {
    for (i, p) in paths.iter().enumerate() {
        let why = format!("spec: languages.{language}.paths[{i}]");
        let meta = std::fs::symlink_metadata(p).map_err(|_| BuildError::MissingPath {
            language: language.to_owned(),
            path: p.clone(),
        })?;
        if meta.is_dir() {
            extras::add_tree(plan, p, &why, skip)?;
        } else {
            plan.add_host_path(p, &why)?;
        }
    }
    Ok(())
}

/// Add the closure of every ELF file in the plan. Returns the number of libraries added.
fn add_elf_closure(
    plan: &mut Plan,
    resolver: &ldso::Resolver,
    langs: &BTreeMap<Language, LanguagePlan>,
    allow_missing: bool,
    warnings: &mut Vec<String>,
) -> Result<usize, BuildError> {
    let mut objects = Vec::new();
    for e in plan.entries.values() {
        if let EntryKind::File {
            source: Source::Host(p),
        } = &e.kind
        {
            if crate::plan::elf::is_elf(p).map_err(io(p))? {
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
                return Err(BuildError::MissingLibraries {
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

fn add_extras(
    plan: &mut Plan,
    spec: &ImageSpec,
    langs: &BTreeMap<Language, LanguagePlan>,
    resolver: &ldso::Resolver,
    warnings: &mut Vec<String>,
) -> Result<(), BuildError> {
    let x = &spec.extras;
    if x.etc_stubs {
        extras::add_etc_stubs(plan)?;
    }
    if x.tmp {
        extras::add_mount_points(plan)?;
    }
    if x.libgcc_s {
        // pthread_exit / thread cancellation dlopen()s libgcc_s.so.1 to unwind.
        let mut found = false;
        for lp in langs.values() {
            if let Some(p) = find_library(resolver, "libgcc_s.so.1", &lp.main_executable)? {
                plan.add_host_path(&p, "extra: libgcc_s (dlopen'ed by glibc for thread exit)")?;
                found = true;
            }
        }
        if !found && !langs.is_empty() {
            warnings.push("extras.libgcc_s: libgcc_s.so.1 not found on this machine".into());
        }
    }
    let install = langs
        .get(&Language::Python3)
        .and_then(|l| l.python.as_ref());
    let ca_candidates: Vec<PathBuf> = install
        .iter()
        .filter_map(|i| i.ssl_cafile.clone())
        .chain([
            PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            PathBuf::from("/etc/pki/tls/certs/ca-bundle.crt"),
        ])
        .collect();
    if x.ca_certificates {
        let mut any = false;
        for c in &ca_candidates {
            any |= extras::add_if_exists(plan, c, "extra: ca_certificates")?;
        }
        if let Some(capath) = install.as_ref().and_then(|i| i.ssl_capath.clone()) {
            // The hashed-name directory: its chain, empty (the bundle file holds the certs).
            extras::add_if_exists(plan, &capath, "extra: ca_certificates")?;
        }
        if !any {
            warnings.push("extras.ca_certificates: no CA bundle found on this machine".into());
        }
    }
    if x.openssl_config {
        let dirs: Vec<PathBuf> = install
            .iter()
            .filter_map(|i| i.openssl_dir.clone())
            .chain([PathBuf::from("/usr/lib/ssl"), PathBuf::from("/etc/ssl")])
            .collect();
        for d in dirs {
            if extras::add_if_exists(plan, &d.join("openssl.cnf"), "extra: openssl_config")? {
                break;
            }
        }
    }
    if x.zoneinfo {
        let tzpath: Vec<PathBuf> = install
            .as_ref()
            .map(|i| i.tzpath.clone())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/share/zoneinfo")])
            .collect();
        match extras::first_existing(&tzpath) {
            Some(tz) => {
                // right/ repeats everything with leap seconds; nobody's sandbox needs it.
                let right = tz.join("right");
                extras::add_tree(plan, &tz, "extra: zoneinfo", &|p| p == right)?;
            }
            None => warnings.push("extras.zoneinfo: no zoneinfo directory found".into()),
        }
    }
    if x.locales {
        for d in ["/usr/lib/locale/C.utf8", "/usr/lib/x86_64-linux-gnu/gconv"] {
            let p = Path::new(d);
            if p.exists() {
                extras::add_tree(plan, p, "extra: locales", &|_| false)?;
            }
        }
    }
    if x.ld_so_cache {
        // ctypes.util.find_library runs `/sbin/ldconfig -p` against our cache.
        for c in ["/sbin/ldconfig", "/usr/sbin/ldconfig"] {
            if extras::add_if_exists(
                plan,
                Path::new(c),
                "extra: ld_so_cache (ldconfig -p for ctypes.util.find_library)",
            )? {
                break;
            }
        }
    }
    Ok(())
}

fn main_elf(main: &Path) -> Result<plan::elf::ElfInfo, BuildError> {
    let bad = |message: String| BuildError::Interpreter {
        name: main.display().to_string(),
        message,
    };
    plan::elf::read_elf(main)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("not an ELF file".into()))
}

/// Find a library the way `dlopen("name")` from `main` would without RPATHs: the host's
/// ld.so.cache, then the loader's default directories.
fn find_library(
    resolver: &ldso::Resolver,
    name: &str,
    main: &Path,
) -> Result<Option<PathBuf>, BuildError> {
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

/// Plan a `.pyc` next to every planned `.py`: from the cache when it has it, otherwise
/// compiled by the interpreter into `staging` (and then cached).
fn add_pycs(
    plan: &mut Plan,
    install: &python::PythonInstall,
    cache: &PycCache,
    staging: &Path,
) -> Result<(usize, Vec<String>), BuildError> {
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
        let bytes = std::fs::read(src).map_err(io(src))?;
        let key = cache.key(&bytes, path);
        let file = match cache.get(&key) {
            Some(hit) => hit,
            None => {
                let out = staging.join(target.trim_start_matches('/'));
                to_compile.push((src.clone(), out.clone()));
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
    let failed = python::compile_pycs(&install.executable, &to_compile)?;
    let mut n = 0;
    for pyc in pycs {
        if !pyc.file.exists() {
            continue; // did not compile (Python 2 data files in some packages)
        }
        if pyc.file.starts_with(staging) {
            cache.put(&pyc.key, &pyc.file);
        }
        let why = format!("bytecode of {}", pyc.source);
        plan.add_parents(&pyc.target, &why)?;
        plan.insert(
            pyc.target,
            Entry {
                kind: EntryKind::File {
                    source: Source::Host(pyc.file),
                },
                mode: 0o644,
                provenance: why,
            },
        )?;
        n += 1;
    }
    Ok((n, failed))
}

/// The rootfs's own /etc/ld.so.cache: every planned shared library with a SONAME.
fn add_ld_so_cache(
    plan: &mut Plan,
    resolver: &ldso::Resolver,
    main: &Path,
) -> Result<(), BuildError> {
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
            EntryKind::Symlink { .. } => match std::fs::canonicalize(path) {
                Ok(p) => p,
                Err(_) => continue,
            },
            _ => continue,
        };
        if let Ok(Some(info)) = crate::plan::elf::read_elf(&host) {
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
