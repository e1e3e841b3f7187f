//! The build pipeline: spec -> plan -> rootfs + seccomp -> bundle with its SBOM (-> OCI image).
//!
//! Everything is written under a temporary directory beside `--out` and renamed into place
//! only when complete, so a failed or interrupted build leaves nothing half-written.

mod output;

use crate::contract::{self, BundleManifest, LanguageInfo, SeccompFiles};
use crate::plan::{ImagePlan, PlanOptions, PlanningError};
use crate::spec::{ImageSpec, Language};
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
    /// Build for another platform from its sysroot (`--platform`, `--sysroot`); `None`: for
    /// this machine from its own `/`.
    pub target: Option<crate::platform::Target>,
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
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Planning(#[from] PlanningError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Image(#[from] crate::oci::ImageError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Run the whole build.
pub fn build(
    spec: &ImageSpec,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    output::check_out_dir(&opts.out, opts.force)?;
    // A bad tag, a missing runtime or an existing archive fail before any work.
    if let Some(image) = &opts.image {
        crate::oci::image::check_options(image)?;
        if let Some(t) = &opts.target {
            crate::oci::image::check_runtime_platform(image, t.platform)?;
        }
    }
    let tmp = output::staging_dir(&opts.out)?;

    // 1. Plan: everything that goes in, decided from the host once.
    let pyc_dir = tmp.path().join("pyc");
    let plan_opts = PlanOptions {
        allow_missing: spec.allow_missing || opts.allow_missing,
        pyc_cache_dir: opts.cache_dir.as_deref(),
        pyc_staging: &pyc_dir,
        target: opts.target.as_ref(),
    };
    let planned = crate::plan::plan_image(spec, &plan_opts, &|name| progress.stage(name))?;

    // 2. Artifacts into tmp/bundle.
    let bundle_dir = tmp.path().join("bundle");
    let arch = match &opts.target {
        Some(t) => t.platform.arch,
        None => crate::contract::Arch::host().map_err(crate::seccomp::SeccompError::from)?,
    };
    let (manifest, seccomp_instructions) =
        write_bundle(spec, opts.mtime, arch, &planned, &bundle_dir, progress)?;

    // 3. The image is staged in tmp too, so it lands atomically with the bundle. Its tree
    // form reads the plan's sources again, freshly compiled .pyc files included: the staging
    // pyc dir goes away only after it.
    let mut image = match &opts.image {
        Some(image_opts) => Some(write_image(
            spec,
            opts.mtime,
            image_opts,
            &manifest,
            &planned.plan,
            tmp.path(),
            opts.target.as_ref(),
            progress,
        )?),
        None => None,
    };
    if pyc_dir.exists() {
        std::fs::remove_dir_all(&pyc_dir).map_err(io(&pyc_dir))?;
    }

    // 4. Into place.
    if let Err(e) = output::commit_out_dir(tmp, &opts.out) {
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
        libraries: planned.libraries,
        pyc_compiled: planned.pyc_compiled,
        pyc_failed: planned.pyc_failed,
        warnings: planned.warnings,
        seconds: started.elapsed().as_secs_f64(),
        seccomp_instructions,
        image,
    })
}

/// BPF instructions per language: (without network, with network).
type InstructionCounts = BTreeMap<String, (usize, usize)>;

/// The seccomp files, the rootfs tarball and `bundle.json` into `bundle_dir`.
fn write_bundle(
    spec: &ImageSpec,
    mtime: u64,
    arch: crate::contract::Arch,
    planned: &ImagePlan,
    bundle_dir: &Path,
    progress: &dyn Progress,
) -> Result<(BundleManifest, InstructionCounts), BuildError> {
    std::fs::create_dir_all(bundle_dir.join("seccomp")).map_err(io(bundle_dir))?;
    let mut languages = planned.languages.clone();
    let mut seccomp_instructions = BTreeMap::new();
    for (lang, info) in languages.iter_mut() {
        progress.stage(&format!("compiling seccomp policy for {}", lang.as_str()));
        let instructions = write_seccomp(spec, arch, *lang, info, bundle_dir)?;
        seccomp_instructions.insert(lang.as_str().to_owned(), instructions);
    }

    progress.stage("writing rootfs");
    let file_name = crate::rootfs::file_name(Some(spec.compression));
    let total = planned.content_bytes;
    let tar_opts = crate::rootfs::TarOptions {
        compression: Some(spec.compression),
        mtime,
        precompressed: false,
        rootfs_at: "",
    };
    let stats = crate::rootfs::write_tar_file(
        &planned.plan,
        &bundle_dir.join(file_name),
        &tar_opts,
        &mut |done| progress.bytes(done, total),
    )?;

    let manifest = BundleManifest {
        format_version: contract::FORMAT_VERSION,
        prebake_version: env!("CARGO_PKG_VERSION").to_owned(),
        spec_digest: spec.digest.clone(),
        rootfs: crate::rootfs::rootfs_info(&stats, file_name, Some(spec.compression)),
        languages: languages
            .into_iter()
            .map(|(l, info)| (l.as_str().to_owned(), info))
            .collect(),
        provenance: planned
            .plan
            .entries
            .iter()
            .map(|(p, e)| (p.clone(), e.provenance.clone()))
            .collect(),
    };
    let mpath = bundle_dir.join(contract::MANIFEST_FILE);
    std::fs::write(&mpath, manifest.to_json()).map_err(io(&mpath))?;

    progress.stage("writing SBOM");
    let created = crate::oci::time::rfc3339_utc(mtime);
    let sbom = crate::sbom::collect(
        &planned.plan,
        &manifest,
        &spec.name,
        &created,
        planned.plan.sysroot(),
    )?;
    crate::sbom::write(&sbom, bundle_dir)?;
    Ok((manifest, seccomp_instructions))
}

/// Compile `lang`'s policy, write its three files and name them in `info`. Returns the
/// instruction counts (without, with network).
fn write_seccomp(
    spec: &ImageSpec,
    arch: crate::contract::Arch,
    lang: Language,
    info: &mut LanguageInfo,
    bundle_dir: &Path,
) -> Result<(usize, usize), BuildError> {
    let art = crate::seccomp::compile_for(arch, lang, &spec.languages[&lang].seccomp)?;
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
    info.seccomp = Some(files);
    Ok(art.instructions)
}

/// The OCI image of the staged bundle, written to `staging/image`.
#[allow(clippy::too_many_arguments)]
fn write_image(
    spec: &ImageSpec,
    mtime: u64,
    image_opts: &crate::oci::ImageOptions,
    manifest: &BundleManifest,
    rootfs: &crate::plan::Plan,
    staging: &Path,
    target: Option<&crate::platform::Target>,
    progress: &dyn Progress,
) -> Result<crate::oci::ImageReport, BuildError> {
    progress.stage("writing OCI image");
    let work = staging.join("layers");
    std::fs::create_dir(&work).map_err(io(&work))?;
    let report = crate::oci::write_image(
        &staging.join("bundle"),
        rootfs,
        &staging.join("image"),
        &work,
        manifest,
        &spec.name,
        image_opts,
        mtime,
        target,
    )?;
    std::fs::remove_dir(&work).map_err(io(&work))?;
    Ok(report)
}
