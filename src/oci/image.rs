//! The image `prebake build` writes next to the bundle: two layers, each a [`Plan`] written by
//! the same deterministic tar writer as the rootfs, then [`write_layout`] (and optionally
//! [`write_archive`]).
//!
//! 1. **runtime**: the `runtime` binary at [`IMAGE_RUNTIME_PATH`] with its own shared-library
//!    closure (found by the project's ELF resolver, like the sandbox's), its PT_INTERP, the
//!    minimal `/etc` glibc reads for it, and the directories it writes (`/tmp`, `/run`,
//!    `/var/sandbox`).
//! 2. **bundle**: the finished bundle directory at [`DEFAULT_BUNDLE_DIR`], `runtime`'s default
//!    `--bundle`, as plain files. With [`ImageRootfs::Tree`] (the default) the rootfs goes in
//!    as a tree, `DEFAULT_BUNDLE_DIR/rootfs`, written from the same plan by the same tar writer
//!    as `rootfs.tar.zst` (same owners, modes, device nodes and mtimes), and the image's
//!    bundle.json names that directory with compression "none": the engine unpacks it when it
//!    pulls the image, and the runtime uses it in place, so a container starts with nothing to
//!    unpack. With [`ImageRootfs::Tarball`] the layer holds `rootfs.tar.zst` and the runtime
//!    unpacks it into the sandbox root at start.
//!
//! The bundle's SBOMs are attached to the image as OCI referrers ([`super::referrer`]).
//!
//! The runtime layer comes first because it changes less often than the bundle (a new
//! package rebuilds only the bundle layer), so registries and nodes keep it cached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::layout::{ensure_absent, parent_of};
use super::reference::Reference;
use super::referrer::Artifact;
use super::{
    write_archive, write_layout, ImageConfig, ImageDigests, Layer, LayerMedia, OciError,
    IMAGE_PORT, IMAGE_RUNTIME_PATH, IMAGE_WORKDIR,
};
use crate::contract::{
    BundleManifest, DEFAULT_BUNDLE_DIR, DEFAULT_SANDBOX_ROOT, MANIFEST_FILE, TREE_ROOTFS_DIR,
};
use crate::plan::{ldso, Entry, EntryKind, Plan, PlanError, Source};
use crate::rootfs::{RootfsError, TarOptions};
use crate::spec::Compression;

/// Label holding `bundle.json`'s `spec_digest` (sha256 of the spec file), so an image can be
/// traced back to the spec it was built from.
pub const LABEL_SPEC_DIGEST: &str = "dev.prebake.spec.sha256";
/// Label holding the spec's `name`.
pub const LABEL_SPEC_NAME: &str = "dev.prebake.spec.name";
/// The standard OCI label for the version; here the prebake version that wrote the image.
pub const LABEL_VERSION: &str = "org.opencontainers.image.version";
/// `PATH` in the image config (Docker's default for a root user).
pub const IMAGE_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the CLI asks for beyond the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// `name[:tag]`, validated with [`Reference::parse`].
    pub tag: String,
    /// The `runtime` binary to put in the image (a host ELF file).
    pub runtime: PathBuf,
    /// Layer compression (gzip for the widest compatibility).
    pub compression: LayerMedia,
    /// Also write the combined OCI + docker archive here (must not exist).
    pub archive: Option<PathBuf>,
    /// pasta (Debian's `passt`) to put at [`IMAGE_PASTA_PATH`], with its closure: the
    /// network namespace of runs with network (`runtime::netns`). `None`: runs with network
    /// share the container's namespace.
    pub pasta: Option<PathBuf>,
    /// How the bundle layer carries the rootfs.
    pub rootfs: ImageRootfs,
}

/// How the image's bundle layer carries the rootfs (`prebake build --image-rootfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageRootfs {
    /// A tree at `DEFAULT_BUNDLE_DIR/rootfs`, used in place: nothing to unpack at start
    /// (README, "Image rootfs": 0.1 s against 2.2 s from `runc run` to a healthy server on
    /// the same loaded machine, for a pull 2–5 % larger).
    #[default]
    Tree,
    /// `rootfs.tar.zst`, unpacked into the sandbox root when the container starts.
    Tarball,
}

/// The tar path of the tree rootfs in the bundle layer (no leading slash):
/// `DEFAULT_BUNDLE_DIR/TREE_ROOTFS_DIR`, spelled out because [`TarOptions::rootfs_at`] wants a
/// `&'static str` (a unit test keeps them in step).
pub const TREE_ROOTFS_TAR_PATH: &str = "opt/prebake/bundle/rootfs";

/// Where the image carries pasta (the runtime looks there first).
pub const IMAGE_PASTA_PATH: &str = "/usr/bin/pasta";

/// One layer as written, for the build summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    pub created_by: String,
    /// `sha256:<hex>` of the compressed blob.
    pub digest: String,
    pub size_compressed: u64,
    pub size_uncompressed: u64,
    pub entries: usize,
}

/// What [`write_image`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageReport {
    /// The layout directory (where it was written; the build moves it into place).
    pub dir: PathBuf,
    /// The normalized reference (`name:tag`).
    pub tag: String,
    pub digests: ImageDigests,
    pub layers: Vec<LayerReport>,
    pub archive: Option<PathBuf>,
    /// (artifact type, `sha256:` manifest digest) of each document attached to the image as
    /// an OCI referrer: the bundle's SBOMs.
    pub referrers: Vec<(String, String)>,
    /// Wall time of the image step alone (layers, layout, archive).
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: the `runtime` binary is for e_machine {found}, not {platform} (e_machine {want}); build it for the target (`cargo build --release --target {rust_target} --bin runtime`) and pass it with --runtime (docs/multiarch.md)")]
    RuntimeArchitecture {
        path: PathBuf,
        found: u16,
        want: u16,
        platform: String,
        rust_target: &'static str,
    },
    #[error("{path}: the `runtime` binary is not there; build it first (`cargo build --release --bin runtime`), pass --runtime PATH, or pass --no-image to write the bundle alone")]
    RuntimeMissing { path: PathBuf },
    #[error("{path}: the `runtime` binary is not an ELF executable for this machine; pass --runtime with the path of the built `runtime`")]
    RuntimeNotElf { path: PathBuf },
    #[error("{path}: {count} shared librar{ies} of the `runtime` binary could not be found on this machine:\n{list}",
        ies = if *count == 1 { "y" } else { "ies" })]
    RuntimeLibraries {
        path: PathBuf,
        count: usize,
        list: String,
    },
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Resolve(#[from] ldso::ResolveError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The tag used when the user gives none: `prebake-<spec name>:latest`.
pub fn default_tag(spec_name: &str) -> String {
    format!("prebake-{}:latest", spec_name.to_ascii_lowercase())
}

/// Everything that can be wrong with the options, checked before the build does any work:
/// the tag, the runtime binary, the archive path.
pub fn check_options(opts: &ImageOptions) -> Result<(), ImageError> {
    Reference::parse(&opts.tag)?;
    match std::fs::metadata(&opts.runtime) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(ImageError::RuntimeNotElf {
                path: opts.runtime.clone(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::RuntimeMissing {
                path: opts.runtime.clone(),
            })
        }
        Err(e) => return Err(io(&opts.runtime)(e)),
    }
    if !matches!(crate::plan::elf::read_elf(&opts.runtime), Ok(Some(_))) {
        return Err(ImageError::RuntimeNotElf {
            path: opts.runtime.clone(),
        });
    }
    if let Some(archive) = &opts.archive {
        ensure_absent(archive)?;
        parent_of(archive)?;
    }
    Ok(())
}

/// The `runtime` binary is a program of `platform` (checked before a build for another
/// platform does any work, and again when its image is written).
pub fn check_runtime_platform(
    opts: &ImageOptions,
    platform: crate::platform::Platform,
) -> Result<(), ImageError> {
    let found = crate::plan::elf::read_elf(&opts.runtime)
        .ok()
        .flatten()
        .map_or(0, |i| i.machine);
    let want = platform.elf_machine();
    if found != want {
        return Err(ImageError::RuntimeArchitecture {
            path: opts.runtime.clone(),
            found,
            want,
            platform: platform.to_string(),
            rust_target: platform.rust_target(),
        });
    }
    Ok(())
}

/// Plan of layer 1: the runtime, its closure and the few files and directories it needs.
/// With a sysroot resolver (a build for another platform), the runtime is a binary built for
/// that platform outside the sysroot and its libraries come from the sysroot.
pub fn runtime_plan(
    runtime: &Path,
    pasta: Option<&Path>,
    resolver: &ldso::Resolver,
) -> Result<Plan, ImageError> {
    let mut plan = Plan::with_sysroot(resolver.sysroot());
    add_executable(
        &mut plan,
        runtime,
        IMAGE_RUNTIME_PATH,
        "runtime",
        "image: the runtime binary",
        resolver,
    )?;
    // pasta's `.avx2` twin is left out: pasta runs the generic build when it is absent.
    if let Some(pasta) = pasta {
        add_executable(
            &mut plan,
            pasta,
            IMAGE_PASTA_PATH,
            "pasta",
            "image: pasta, the network of runs with network",
            resolver,
        )?;
    }

    // glibc resolves "root" for the runtime's own logs and getpwuid; the pool uids only need
    // names inside the sandbox rootfs, which has its own /etc.
    let why = "image: minimal /etc for the runtime";
    plan.add_inline(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_vec(),
        0o644,
        why,
    )?;
    plan.add_inline(
        "/etc/group",
        b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        0o644,
        why,
    )?;
    plan.add_inline(
        "/etc/nsswitch.conf",
        crate::plan::extras::NSSWITCH.as_bytes().to_vec(),
        0o644,
        why,
    )?;
    // Written at run time: /tmp by anyone, /run for the uid-pool locks, /var/sandbox for the
    // unpacked rootfs (the default sandbox root's parent). Engines mount /proc, /dev and /sys
    // themselves, creating the mount points if needed.
    plan.add_dir("/tmp", 0o1777, "image: /tmp")?;
    plan.add_dir("/run", 0o755, "image: uid-pool lock directory's parent")?;
    let sandbox_parent = Path::new(DEFAULT_SANDBOX_ROOT)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or("/var/sandbox");
    plan.add_dir(sandbox_parent, 0o755, "image: the sandbox root's parent")?;
    Ok(plan)
}

/// A host executable at `image_path`, with its ELF interpreter and libraries; a file already
/// planned (the runtime's libc, when pasta needs it too) is planned once.
fn add_executable(
    plan: &mut Plan,
    host: &Path,
    image_path: &str,
    name: &str,
    provenance: &str,
    resolver: &ldso::Resolver,
) -> Result<(), ImageError> {
    let closure = if resolver.sysroot() == Path::new("/") {
        resolver.closure(Some(host), &[])?
    } else {
        resolver.closure_of_outside(host)?
    };
    if !closure.missing.is_empty() {
        let list: Vec<String> = closure.missing.iter().map(|m| format!("  {m}")).collect();
        return Err(ImageError::RuntimeLibraries {
            path: host.to_path_buf(),
            count: list.len(),
            list: list.join("\n"),
        });
    }
    let real = std::fs::canonicalize(host).map_err(io(host))?;
    plan.add_parents(image_path, &format!("image: {name}"))?;
    plan.insert(
        image_path.to_owned(),
        Entry {
            kind: EntryKind::File {
                source: Source::Host(real),
            },
            mode: 0o755,
            provenance: provenance.into(),
        },
    )?;
    let planned = |plan: &Plan, p: &Path| plan.entries.contains_key(p.to_string_lossy().as_ref());
    for interp in &closure.interpreters {
        if !planned(plan, interp) {
            plan.add_host_path(
                &plan.host_of(interp),
                &format!("image: ELF interpreter of {name} (PT_INTERP)"),
            )?;
        }
    }
    for lib in &closure.libraries {
        if planned(plan, &lib.path) {
            continue;
        }
        // Provenance in image terms: the host path of the binary means nothing here.
        let by = if lib.needed_by == host {
            image_path.to_owned()
        } else {
            lib.needed_by.display().to_string()
        };
        plan.add_host_path(&plan.host_of(&lib.path), &format!("image: needed by {by}"))?;
    }
    Ok(())
}

/// Plan of layer 2: every file of `bundle_dir` under [`DEFAULT_BUNDLE_DIR`], and the working
/// directory. With `tree` (the rootfs plan and the bundle's manifest), the rootfs goes in as a
/// tree at `DEFAULT_BUNDLE_DIR/rootfs` instead of the archive, and bundle.json says so.
pub fn bundle_plan(
    bundle_dir: &Path,
    tree: Option<(&Plan, &BundleManifest)>,
) -> Result<Plan, ImageError> {
    let mut plan = Plan::new();
    plan.add_dir(IMAGE_WORKDIR, 0o755, "image: working directory")?;
    plan.add_dir(DEFAULT_BUNDLE_DIR, 0o755, "image: the bundle")?;
    // In the tree form, the archive and the bundle.json that names it stay out.
    let mut skip: Vec<String> = Vec::new();
    if let Some((rootfs, manifest)) = tree {
        skip.push(MANIFEST_FILE.to_owned());
        skip.push(manifest.rootfs.file.clone());
        let mut in_image = manifest.clone();
        in_image.rootfs = manifest.rootfs.as_tree(TREE_ROOTFS_DIR);
        plan.add_inline(
            &format!("{DEFAULT_BUNDLE_DIR}/{MANIFEST_FILE}"),
            in_image.to_json(),
            0o644,
            "image: the bundle's manifest, naming the rootfs tree",
        )?;
        add_rerooted(&mut plan, rootfs, &format!("/{TREE_ROOTFS_TAR_PATH}"))?;
    }
    let walker = walkdir::WalkDir::new(bundle_dir)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = entry.map_err(|e| {
            let (path, source) = crate::plan::walk_error(e, bundle_dir);
            ImageError::Io { path, source }
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(bundle_dir)
            .expect("walkdir yields paths under its root");
        let rel = rel.to_str().ok_or_else(|| PlanError::NonUtf8 {
            path: entry.path().to_path_buf(),
        })?;
        if skip.iter().any(|s| s == rel) {
            continue;
        }
        let path = format!("{DEFAULT_BUNDLE_DIR}/{rel}");
        let ft = entry.file_type();
        if ft.is_dir() {
            plan.add_dir(&path, 0o755, "image: the bundle")?;
        } else if ft.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let meta = entry.metadata().map_err(|e| {
                let (path, source) = crate::plan::walk_error(e, entry.path());
                ImageError::Io { path, source }
            })?;
            plan.add_parents(&path, "image: the bundle")?;
            plan.insert(
                path,
                Entry {
                    kind: EntryKind::File {
                        source: Source::Host(entry.path().to_path_buf()),
                    },
                    mode: meta.permissions().mode() & 0o777,
                    provenance: "image: the bundle".into(),
                },
            )?;
        } else {
            // The bundle is ours and holds only files and directories.
            return Err(ImageError::Io {
                path: entry.path().to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "unexpected file type in the bundle (only files and directories belong there)",
                ),
            });
        }
    }
    Ok(plan)
}

/// Every entry of `rootfs` (a rootfs plan) into `plan` under `at`, unchanged but for the path:
/// the tar writer then gives each the header it has in the rootfs archive.
fn add_rerooted(plan: &mut Plan, rootfs: &Plan, at: &str) -> Result<(), ImageError> {
    plan.add_dir(at, 0o755, "image: the rootfs tree")?;
    for (path, entry) in &rootfs.entries {
        if path == "/" {
            continue;
        }
        plan.insert(format!("{at}{path}"), entry.clone())?;
    }
    Ok(())
}

/// The image configuration for a bundle.
/// `platform`: the target's (`None`: this machine's).
pub fn image_config(
    manifest: &BundleManifest,
    spec_name: &str,
    mtime: u64,
    platform: Option<crate::platform::Platform>,
) -> Result<ImageConfig, ImageError> {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_VERSION.to_owned(), manifest.prebake_version.clone());
    labels.insert(LABEL_SPEC_DIGEST.to_owned(), manifest.spec_digest.clone());
    labels.insert(LABEL_SPEC_NAME.to_owned(), spec_name.to_owned());
    Ok(ImageConfig {
        entrypoint: vec![IMAGE_RUNTIME_PATH.to_owned(), "serve".to_owned()],
        cmd: Vec::new(),
        env: vec![IMAGE_PATH_ENV.to_owned()],
        exposed_ports: vec![format!("{IMAGE_PORT}/tcp")],
        working_dir: IMAGE_WORKDIR.to_owned(),
        labels,
        created_epoch: mtime,
        os: "linux".to_owned(),
        architecture: match platform {
            Some(p) => p.oci_architecture().to_owned(),
            None => super::host_architecture()?.to_owned(),
        },
    })
}

/// How one layer is written: its media type and the tar options that are not the media's.
struct LayerSpec {
    media: LayerMedia,
    mtime: u64,
    /// See [`TarOptions::precompressed`].
    precompressed: bool,
    /// See [`TarOptions::rootfs_at`].
    rootfs_at: &'static str,
}

fn write_layer(
    plan: &Plan,
    blob: &Path,
    spec: &LayerSpec,
    created_by: String,
) -> Result<(Layer, LayerReport), ImageError> {
    let media = spec.media;
    let compression = match media {
        LayerMedia::Gzip => Compression::Gzip,
        LayerMedia::Zstd => Compression::Zstd,
    };
    let opts = TarOptions {
        compression: Some(compression),
        mtime: spec.mtime,
        precompressed: spec.precompressed,
        rootfs_at: spec.rootfs_at,
    };
    let stats = crate::rootfs::write_tar_file(plan, blob, &opts, &mut |_| {})?;
    let report = LayerReport {
        created_by: created_by.clone(),
        digest: format!("sha256:{}", stats.sha256_compressed),
        size_compressed: stats.size_compressed,
        size_uncompressed: stats.size_uncompressed,
        entries: plan.entries.len(),
    };
    Ok((
        Layer {
            blob: blob.to_path_buf(),
            media_type: media,
            digest: stats.sha256_compressed,
            diff_id: stats.sha256_uncompressed,
            size: stats.size_compressed,
            created_by,
        },
        report,
    ))
}

/// Write the image for the finished bundle at `bundle_dir` into `image_dir` (which must not
/// exist), using `work` (an existing scratch directory) for the layer blobs before they are
/// copied into the layout. With `opts.archive`, also write the archive. `rootfs` is the plan
/// the bundle's rootfs archive was written from (the tree form writes it again, as a tree;
/// its host sources must still be there).
#[allow(clippy::too_many_arguments)]
pub fn write_image(
    bundle_dir: &Path,
    rootfs: &Plan,
    image_dir: &Path,
    work: &Path,
    manifest: &BundleManifest,
    spec_name: &str,
    opts: &ImageOptions,
    mtime: u64,
    target: Option<&crate::platform::Target>,
) -> Result<ImageReport, ImageError> {
    let started = Instant::now();
    let reference = Reference::parse(&opts.tag)?;
    let version = &manifest.prebake_version;
    let ext = match opts.compression {
        LayerMedia::Gzip => "tar.gz",
        LayerMedia::Zstd => "tar.zst",
    };

    if let Some(t) = target {
        check_runtime_platform(opts, t.platform)?;
    }
    let sysroot = target.map_or(Path::new("/"), |t| t.sysroot.as_path());
    let resolver = ldso::Resolver::new(sysroot)?;
    let runtime = runtime_plan(&opts.runtime, opts.pasta.as_deref(), &resolver)?;
    let tree = opts.rootfs == ImageRootfs::Tree;
    let bundle = bundle_plan(bundle_dir, tree.then_some((rootfs, manifest)))?;
    let layer = |precompressed, rootfs_at| LayerSpec {
        media: opts.compression,
        mtime,
        precompressed,
        rootfs_at,
    };
    let (l1, r1) = write_layer(
        &runtime,
        &work.join(format!("runtime.{ext}")),
        &layer(false, ""),
        format!("prebake {version}: {IMAGE_RUNTIME_PATH} and its shared libraries"),
    )?;
    let (l2, r2) = if tree {
        write_layer(
            &bundle,
            &work.join(format!("bundle.{ext}")),
            &layer(false, TREE_ROOTFS_TAR_PATH),
            format!(
                "prebake {version}: bundle of spec {spec_name} at {DEFAULT_BUNDLE_DIR}, rootfs as a tree"
            ),
        )?
    } else {
        write_layer(
            &bundle,
            &work.join(format!("bundle.{ext}")),
            // Almost all of it is the already-compressed rootfs archive.
            &layer(true, ""),
            format!("prebake {version}: bundle of spec {spec_name} at {DEFAULT_BUNDLE_DIR}"),
        )?
    };
    let config = image_config(manifest, spec_name, mtime, target.map(|t| t.platform))?;
    let digests = write_layout(image_dir, &[l1.clone(), l2.clone()], &config, &opts.tag)?;
    // The SBOMs the build wrote into the bundle, where scanners and registries look for them.
    let artifacts: Vec<Artifact> = [
        (crate::sbom::MEDIA_SPDX, crate::sbom::SPDX_FILE),
        (crate::sbom::MEDIA_CYCLONEDX, crate::sbom::CYCLONEDX_FILE),
    ]
    .into_iter()
    .map(|(media_type, file)| Artifact {
        media_type: media_type.to_owned(),
        file: bundle_dir.join(file),
    })
    .collect();
    let referrer_digests = super::referrer::attach(image_dir, &digests, &artifacts)?;
    let referrers = artifacts
        .into_iter()
        .map(|a| a.media_type)
        .zip(referrer_digests)
        .collect();
    // The blobs are in the layout now; the scratch copies would only double the disk use.
    for l in [&l1, &l2] {
        std::fs::remove_file(&l.blob).map_err(io(&l.blob))?;
    }
    if let Some(archive) = &opts.archive {
        write_archive(image_dir, archive, &opts.tag)?;
    }
    Ok(ImageReport {
        dir: image_dir.to_path_buf(),
        tag: reference.full(),
        digests,
        layers: vec![r1, r2],
        archive: opts.archive.clone(),
        referrers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_lies_where_the_image_bundle_json_says() {
        assert_eq!(
            format!("/{TREE_ROOTFS_TAR_PATH}"),
            format!("{DEFAULT_BUNDLE_DIR}/{TREE_ROOTFS_DIR}")
        );
    }
}
