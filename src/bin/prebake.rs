//! `prebake`: the build-time CLI. Parses arguments, calls the library, prints.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use prebake::build::{self, BuildOptions, Progress};
use prebake::oci::{ImageOptions, ImageRootfs, LayerMedia};
use prebake::spec::{ImageSpec, Language};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Build reproducible sandbox rootfs, seccomp profiles and OCI images for dify-sandbox
/// compatible code execution.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_SPEC: &str = "images/dify.yaml";

#[derive(Subcommand)]
enum Command {
    /// Resolve the spec and write DIR/bundle (rootfs.tar.zst, seccomp/, bundle.json) and
    /// DIR/image (an OCI image layout: the runtime and the bundle).
    Build(BuildArgs),
    /// Push an OCI image layout (DIR/image of `prebake build`) to a registry, keeping its
    /// digest; with its referrers (manifests with a `subject`, such as an SBOM).
    ///
    /// Credentials: PREBAKE_REGISTRY_USER and PREBAKE_REGISTRY_PASSWORD, else docker's
    /// config.json ($DOCKER_CONFIG/config.json or ~/.docker/config.json: `docker login`),
    /// including its credential helpers.
    Push(PushArgs),
    /// Assemble the images of several platforms (each a `prebake build` output or its image/
    /// directory, one per platform: `--platform linux/arm64 --sysroot DIR`) into one OCI
    /// image layout whose image index lists each with its platform. Deterministic.
    Index(IndexArgs),
    /// Rebuild a build output from its recorded inputs on this machine (into a temporary
    /// directory, removed afterwards) and compare it with the record, entry by entry.
    ///
    /// Exit status: 0 when the rebuild is identical, 1 when anything differs (each differing
    /// file is named, with its package and whether that package's version changed), 2 on
    /// error (such as a spec whose digest is not the recorded one).
    Verify(VerifyArgs),
    /// Compare two build outputs (OUT directories or their bundle/ directories) entry by
    /// entry: prebake version, spec digest, interpreters, Debian packages, Python
    /// distributions, every rootfs file by sha256 with its package, the rootfs digest.
    ///
    /// Exit status: 0 when they are identical, 1 when they differ, 2 on error.
    Diff(DiffArgs),
    /// Seccomp policy tools.
    Seccomp {
        #[command(subcommand)]
        command: SeccompCommand,
    },
    /// Run a script in a bundle's rootfs and list the syscalls its policy would deny.
    Dig {
        /// The bundle directory (DIR/bundle of `prebake build`).
        #[arg(long)]
        bundle: PathBuf,
        /// Language of the script.
        #[arg(long, default_value = "python3")]
        language: String,
        /// The spec the bundle was built from, for its `seccomp` additions (default: none,
        /// the baked policy alone).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// The script to run.
        script: PathBuf,
    },
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The build output to verify (OUT of `prebake build`, or its bundle/ directory).
    out: PathBuf,
    /// The spec it was built from; its digest must be the one bundle.json records. Default:
    /// images/dify.yaml, as for `build`.
    #[arg(long, value_name = "PATH")]
    spec: Option<PathBuf>,
    /// The build was made with --dify-config: this config, checked against the recorded
    /// digest the same way.
    #[arg(long, value_name = "PATH", conflicts_with = "spec")]
    dify_config: Option<PathBuf>,
    /// With --dify-config: as `build --strict`.
    #[arg(long, requires = "dify_config")]
    strict: bool,
    /// The sysroot a `build --platform ... --sysroot DIR` was made from: the rebuild is for the
    /// recorded platform, from it (needed when that platform is not this machine's).
    #[arg(long, value_name = "DIR")]
    sysroot: Option<PathBuf>,
    /// Rebuild even when a shared library cannot be found, as `build --allow-missing`.
    #[arg(long)]
    allow_missing: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct DiffArgs {
    /// A build output (OUT) or bundle directory.
    a: PathBuf,
    /// Another one.
    b: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct PushArgs {
    /// The OCI image layout to push (OUT/image).
    layout: PathBuf,
    /// Where: [HOST[:PORT]/]REPOSITORY[:TAG], e.g. ghcr.io/team/prebake-python:1.0. Without a
    /// host, Docker Hub.
    #[arg(value_name = "REF")]
    reference: String,
    /// Another tag for the same image, in REF's repository (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A repository of the same registry that has the blobs already: the registry links them
    /// (cross-repository mount) instead of receiving them again.
    #[arg(long, value_name = "REPOSITORY")]
    mount_from: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to reach and log in to a registry (`push`, `build --push`).
#[derive(clap::Args)]
struct RegistryArgs {
    /// Allow plain http and TLS certificates that do not verify (self-signed). Registries on
    /// localhost (localhost, 127.0.0.0/8, [::1]) may use plain http without the flag;
    /// elsewhere it sends your credentials and image unprotected, so use it only for a
    /// registry you trust.
    #[arg(long)]
    insecure: bool,
    /// Send blobs larger than MIB mebibytes in chunks of that size (PATCH requests), for a
    /// registry or proxy that caps the size of one request. Default: each blob in one PUT.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    chunk_size: Option<u64>,
    /// Username for the registry (with PREBAKE_REGISTRY_PASSWORD from the environment);
    /// overrides docker's config.json.
    #[arg(long, env = "PREBAKE_REGISTRY_USER", value_name = "USER")]
    username: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LayerCompression {
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImageRootfsArg {
    Tree,
    Tarball,
}

#[derive(clap::Args)]
struct IndexArgs {
    /// The per-platform images: `prebake build` output directories or OCI layouts.
    #[arg(required = true, value_name = "OUT")]
    images: Vec<PathBuf>,
    /// The layout to write (must not exist).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,
    /// Name of the index, NAME[:TAG]. Default: the first image's name.
    #[arg(long, value_name = "NAME:TAG")]
    tag: Option<String>,
}

fn cmd_index(args: &IndexArgs) -> Result<()> {
    let report = prebake::oci::index::write_index(&args.images, &args.out, args.tag.as_deref())
        .with_context(|| format!("writing the image index {}", args.out.display()))?;
    println!("index      {}  {}", report.dir.display(), report.tag);
    println!("digest     {} ({} bytes)", report.digest, report.size);
    for (platform, digest) in &report.images {
        println!("image      {platform:<14} {digest}");
    }
    Ok(())
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Image spec (YAML). Default: images/dify.yaml (python3 with jinja2, requests, httpx; nodejs).
    spec: Option<PathBuf>,
    /// Use an existing dify-sandbox config.yaml as the spec instead.
    #[arg(long, conflicts_with = "spec")]
    dify_config: Option<PathBuf>,
    /// With --dify-config: a key dify-sandbox does not know is an error, not a warning.
    #[arg(long, requires = "dify_config")]
    strict: bool,
    /// Output directory.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Replace a non-empty output directory.
    #[arg(long)]
    force: bool,
    /// Build even when a shared library cannot be found (warns instead).
    #[arg(long)]
    allow_missing: bool,
    /// Compile every .pyc afresh instead of reusing the cache (PREBAKE_CACHE_DIR, else
    /// ~/.cache/prebake).
    #[arg(long)]
    no_cache: bool,
    /// Build for this platform (linux/amd64, linux/arm64). Another machine's platform needs
    /// --sysroot and runs the target's python under qemu-user-static. Default: this machine's.
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    /// Take every file from this directory, which holds the target's files at their absolute
    /// paths (scripts/arm64-sysroot.sh makes one for linux/arm64). Default: /.
    #[arg(long, value_name = "DIR")]
    sysroot: Option<PathBuf>,
    #[command(flatten)]
    image: ImageArgs,
    /// After the build, push the image to this reference (repeatable; see `prebake push`;
    /// later references in the first one's registry mount its blobs).
    #[arg(long, value_name = "REF", conflicts_with = "no_image")]
    push: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// The image flags of `build`.
#[derive(clap::Args)]
struct ImageArgs {
    /// Image name, NAME[:TAG]. Default: prebake-<spec name>:latest.
    #[arg(long, value_name = "NAME:TAG")]
    tag: Option<String>,
    /// Also write the image as one tar that is both an OCI layout and a docker archive
    /// (`docker load`, `podman load`, `skopeo ... oci-archive:/docker-archive:`).
    #[arg(long, value_name = "FILE", conflicts_with = "no_image")]
    archive: Option<PathBuf>,
    /// Compression of the image layers: gzip (every engine) or zstd (smaller; Docker >= 23,
    /// containerd >= 1.5, podman).
    #[arg(long, value_enum, default_value = "gzip")]
    layer_compression: LayerCompression,
    /// How the image carries the rootfs: tree (unpacked by the engine at pull time and used
    /// in place: nothing to unpack when a container starts) or tarball (rootfs.tar.zst,
    /// unpacked into the sandbox root at every fresh start; a smaller pull).
    #[arg(long, value_enum, default_value = "tree")]
    image_rootfs: ImageRootfsArg,
    /// The `runtime` binary to put in the image. Default: `runtime` next to this
    /// `prebake` executable.
    #[arg(long, value_name = "PATH")]
    runtime: Option<PathBuf>,
    /// pasta (Debian's `passt` package) to put in the image: runs with network get a network
    /// namespace of their own behind it (no pod loopback). Default: /usr/bin/pasta when this
    /// machine has it.
    #[arg(long, value_name = "PATH", conflicts_with = "no_pasta")]
    pasta: Option<PathBuf>,
    /// Leave pasta out of the image (runs with network then share the container's network
    /// namespace).
    #[arg(long)]
    no_pasta: bool,
    /// Write only DIR/bundle, no image.
    #[arg(long, conflicts_with_all = ["tag", "runtime"])]
    no_image: bool,
}

#[derive(Subcommand)]
enum SeccompCommand {
    /// Print the effective policy of a spec as a table.
    Show {
        /// Image spec (YAML). Default: images/dify.yaml (python3 with jinja2, requests, httpx; nodejs).
        spec: Option<PathBuf>,
        /// Only this language.
        #[arg(long)]
        language: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `verify` and `diff` exit 1 for "they differ": their errors are 2.
    let error = match cli.command {
        Command::Verify(_) | Command::Diff(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            error
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // Every command but `verify` and `diff` either works or fails.
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Verify(args) => cmd_verify(&args),
        Command::Diff(args) => cmd_diff(&args),
        Command::Build(args) => done(cmd_build(args)),
        Command::Push(args) => done(cmd_push(&args)),
        Command::Index(args) => done(cmd_index(&args)),
        Command::Seccomp {
            command: SeccompCommand::Show { spec, language },
        } => done(cmd_seccomp_show(spec, language.as_deref())),
        Command::Dig {
            bundle,
            language,
            spec,
            script,
        } => done(cmd_dig(&bundle, &language, spec, &script)),
    }
}

fn load_spec(spec: Option<PathBuf>) -> Result<ImageSpec> {
    let path = spec.unwrap_or_else(|| PathBuf::from(DEFAULT_SPEC));
    Ok(ImageSpec::load(&path)?)
}

/// The spec of `build` and `verify`: prebake's YAML, or an imported dify-sandbox config.
fn load_build_spec(
    spec: Option<PathBuf>,
    dify_config: Option<&Path>,
    strict: bool,
) -> Result<ImageSpec> {
    match dify_config {
        Some(cfg) => {
            let env = |name: &str| std::env::var(name).ok();
            let opts = prebake::spec::DifyImport { strict, env: &env };
            let (spec, warnings) = ImageSpec::from_dify_config_with(cfg, &opts)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            Ok(spec)
        }
        None => load_spec(spec),
    }
}

fn parse_language(name: &str) -> Result<Language> {
    match name {
        "python3" => Ok(Language::Python3),
        "nodejs" => Ok(Language::Nodejs),
        other => anyhow::bail!("unknown language `{other}`: use python3 or nodejs"),
    }
}

/// Draws a bar on a terminal; prints stage lines otherwise so CI logs show progress.
struct CliProgress {
    bar: ProgressBar,
    tty: bool,
    started: std::time::Instant,
}

impl Progress for CliProgress {
    fn stage(&self, name: &str) {
        if self.tty {
            self.bar.set_message(name.to_owned());
        } else {
            eprintln!(
                "prebake: [{:6.2}s] {name}",
                self.started.elapsed().as_secs_f64()
            );
        }
    }
    fn bytes(&self, done: u64, total: u64) {
        if self.tty {
            self.bar.set_length(total.max(done));
            self.bar.set_position(done);
        }
    }
    fn warn(&self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
}

/// A bar on a terminal, stage lines on stderr otherwise.
fn cli_progress() -> (ProgressBar, CliProgress) {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {bytes}/{total_bytes}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let progress = CliProgress {
        bar: bar.clone(),
        tty,
        started: std::time::Instant::now(),
    };
    (bar, progress)
}

fn cmd_build(args: BuildArgs) -> Result<()> {
    let BuildArgs {
        spec,
        dify_config,
        strict,
        out,
        force,
        allow_missing,
        no_cache,
        platform,
        sysroot,
        image: image_args,
        push,
        registry,
    } = args;
    let target = build_target(platform.as_deref(), sysroot.as_deref())?;
    let spec = load_build_spec(spec, dify_config.as_deref(), strict)?;
    let image = image_options(&image_args, &spec.name, target.as_ref())?;
    let mtime = prebake::rootfs::source_date_epoch()?;
    let (bar, progress) = cli_progress();
    let report = build::build(
        &spec,
        &BuildOptions {
            out: out.clone(),
            force,
            allow_missing,
            mtime,
            cache_dir: if no_cache {
                None
            } else {
                prebake::plan::pyc::PycCache::default_dir()
            },
            image,
            target,
        },
        &progress,
    )
    .with_context(|| format!("building {}", spec.origin.display()))?;
    bar.finish_and_clear();
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    print_summary(&report);
    if let Some(image) = &report.image {
        // Later references in the first one's registry mount its blobs instead of sending
        // them again.
        let first = push
            .first()
            .and_then(|r| prebake::oci::push::Target::parse(r, &[]).ok());
        for reference in &push {
            let mount_from = match (&first, prebake::oci::push::Target::parse(reference, &[])) {
                (Some(f), Ok(t)) if f.registry == t.registry => Some(f.repository.clone()),
                _ => None,
            };
            push_layout(&image.dir, reference, &[], &registry, mount_from)?;
        }
    }
    Ok(())
}

/// Print a verify or diff report; exit 0 when identical, 1 when not.
fn print_report(report: &prebake::verify::Report, json: bool) -> ExitCode {
    if json {
        print!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    if report.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cmd_verify(args: &VerifyArgs) -> Result<ExitCode> {
    let spec = load_build_spec(args.spec.clone(), args.dify_config.as_deref(), args.strict)?;
    let (bar, progress) = cli_progress();
    let report = prebake::verify::verify(
        &args.out,
        &prebake::verify::VerifyOptions {
            spec: &spec,
            sysroot: args.sysroot.as_deref(),
            allow_missing: args.allow_missing,
        },
        &progress,
    )
    .with_context(|| format!("verifying {}", args.out.display()))?;
    bar.finish_and_clear();
    Ok(print_report(&report, args.json))
}

fn cmd_diff(args: &DiffArgs) -> Result<ExitCode> {
    let load = |p: &Path| {
        prebake::verify::Record::load(p).with_context(|| format!("reading {}", p.display()))
    };
    let report = prebake::verify::diff(&load(&args.a)?, &load(&args.b)?);
    Ok(print_report(&report, args.json))
}

fn cmd_push(args: &PushArgs) -> Result<()> {
    push_layout(
        &args.layout,
        &args.reference,
        &args.tags,
        &args.registry,
        args.mount_from.clone(),
    )
}

fn push_layout(
    layout: &Path,
    reference: &str,
    tags: &[String],
    registry: &RegistryArgs,
    mount_from: Option<String>,
) -> Result<()> {
    use prebake::oci::push::{self, CredentialSources, PushOptions};
    let explicit = match (&registry.username, std::env::var("PREBAKE_REGISTRY_PASSWORD")) {
        (Some(user), Ok(password)) => Some((user.clone(), password)),
        (Some(_), Err(_)) => anyhow::bail!(
            "a registry username is given (--username or PREBAKE_REGISTRY_USER) but PREBAKE_REGISTRY_PASSWORD is not set"
        ),
        (None, Ok(_)) => anyhow::bail!(
            "PREBAKE_REGISTRY_PASSWORD is set but no username: set PREBAKE_REGISTRY_USER (or --username) too, or unset it to use docker's config.json"
        ),
        (None, Err(_)) => None,
    };
    let options = PushOptions {
        reference: reference.to_owned(),
        tags: tags.to_vec(),
        insecure: registry.insecure,
        credentials: CredentialSources {
            explicit,
            docker_config: push::docker_config_path(
                std::env::var("DOCKER_CONFIG").ok().as_deref(),
                std::env::var("HOME").ok().as_deref(),
            ),
        },
        mount_from,
        chunk_size: registry.chunk_size.map(|mib| mib << 20),
    };
    let report = push::push(layout, &options, &PushLines)
        .with_context(|| format!("pushing {} to {reference}", layout.display()))?;
    eprintln!(
        "prebake: pushed {} manifests: {} blobs uploaded ({:.1} MiB), {} mounted, {} already there{}",
        report.manifests,
        report.blobs_uploaded,
        report.bytes_uploaded as f64 / 1048576.0,
        report.blobs_mounted,
        report.blobs_skipped,
        if report.referrers.is_empty() {
            String::new()
        } else {
            format!(", {} referrers", report.referrers.len())
        }
    );
    for tag in &report.tags {
        println!("{}:{tag}", report.name);
    }
    println!("{}@{}", report.name, report.digest);
    Ok(())
}

/// One stderr line per step of a push, for terminals and CI logs alike.
struct PushLines;

impl prebake::oci::push::PushProgress for PushLines {
    fn event(&self, event: &prebake::oci::push::PushEvent<'_>) {
        use prebake::oci::push::PushEvent as E;
        let mib = |n: u64| n as f64 / 1048576.0;
        match event {
            E::Connected { registry } => eprintln!("prebake: registry {registry}"),
            E::BlobSkipped { digest, size } => {
                eprintln!("prebake: blob {digest} ({:.1} MiB) already there, skipped", mib(*size))
            }
            E::BlobUploading { digest, size } => {
                eprintln!("prebake: blob {digest} ({:.1} MiB) uploading", mib(*size))
            }
            E::BlobMounted { digest, size, from } => eprintln!(
                "prebake: blob {digest} ({:.1} MiB) mounted from {from}, nothing sent",
                mib(*size)
            ),
            E::BlobUploaded {
                digest,
                size,
                seconds,
                chunks,
            } => eprintln!(
                "prebake: blob {digest} uploaded, {size} bytes in {seconds:.1} s{}",
                if *chunks > 0 {
                    format!(" ({chunks} chunks)")
                } else {
                    String::new()
                }
            ),
            E::ManifestSkipped { digest, blobs } => eprintln!(
                "prebake: manifest {digest} already there (with its {blobs} blobs), skipped"
            ),
            E::ManifestPushed { reference, digest } if reference == digest => {
                eprintln!("prebake: manifest {digest} pushed")
            }
            E::ManifestPushed { reference, digest } => {
                eprintln!("prebake: tag {reference} -> {digest}")
            }
            E::ReferrersTag { tag, referrer } => eprintln!(
                "prebake: referrer {referrer} added to the referrers tag {tag} (the registry has no referrers API)"
            ),
        }
    }
}

/// The image options, or `None` for `--no-image`. The tag is checked here so that a typo
/// fails before the spec is resolved (the build checks everything again).
/// `--platform` and `--sysroot` as a build target; `None` for this machine from its own `/`.
fn build_target(
    platform: Option<&str>,
    sysroot: Option<&Path>,
) -> Result<Option<prebake::platform::Target>> {
    use prebake::platform::{Platform, PlatformError, Target};
    let host = Platform::host()?;
    let platform = platform.map(Platform::parse).transpose()?;
    match (platform, sysroot) {
        (None, None) => Ok(None),
        (Some(p), None) if p == host => Ok(None),
        (Some(p), None) => Err(PlatformError::NeedsSysroot {
            platform: p.to_string(),
            host: host.to_string(),
        }
        .into()),
        (p, Some(dir)) => Ok(Some(Target::new(p.unwrap_or(host), dir)?)),
    }
}

fn image_options(
    args: &ImageArgs,
    spec_name: &str,
    target: Option<&prebake::platform::Target>,
) -> Result<Option<ImageOptions>> {
    if args.no_image {
        return Ok(None);
    }
    let tag = args
        .tag
        .clone()
        .unwrap_or_else(|| prebake::oci::image::default_tag(spec_name));
    prebake::oci::validate_tag(&tag)?;
    let cross = target.filter(|t| t.emulator.is_some());
    let runtime = match (&args.runtime, cross) {
        (Some(p), _) => p.clone(),
        (None, None) => std::env::current_exe()
            .context("cannot find the running prebake executable; pass --runtime PATH")?
            .with_file_name("runtime"),
        // cargo's layout: target/release/prebake and target/<triple>/release/runtime.
        (None, Some(t)) => {
            let exe = std::env::current_exe()
                .context("cannot find the running prebake executable; pass --runtime PATH")?;
            let profile = exe.parent().and_then(Path::file_name).unwrap_or_default();
            exe.parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."))
                .join(t.platform.rust_target())
                .join(profile)
                .join("runtime")
        }
    };
    Ok(Some(ImageOptions {
        tag,
        runtime,
        compression: match args.layer_compression {
            LayerCompression::Gzip => LayerMedia::Gzip,
            LayerCompression::Zstd => LayerMedia::Zstd,
        },
        archive: args.archive.clone(),
        rootfs: match args.image_rootfs {
            ImageRootfsArg::Tree => ImageRootfs::Tree,
            ImageRootfsArg::Tarball => ImageRootfs::Tarball,
        },
        // The host's pasta is of the host's architecture; another platform's comes with --pasta.
        pasta: if args.no_pasta || (cross.is_some() && args.pasta.is_none()) {
            None
        } else {
            args.pasta.clone().or_else(|| {
                let p = PathBuf::from(prebake::oci::image::IMAGE_PASTA_PATH);
                p.exists().then_some(p)
            })
        },
    }))
}

fn print_summary(r: &build::BuildReport) {
    let m = &r.manifest;
    let f = &m.rootfs;
    println!("bundle     {}", r.bundle_dir.display());
    println!(
        "rootfs     {}  {} files, {} dirs, {} symlinks, {} hardlinks",
        f.file, f.files, f.dirs, f.symlinks, f.hardlinks
    );
    println!(
        "size       {:.1} MiB uncompressed, {:.1} MiB {}",
        f.size_uncompressed as f64 / 1048576.0,
        f.size_compressed as f64 / 1048576.0,
        f.compression
    );
    println!("sha256     {} ({})", f.sha256_compressed, f.compression);
    println!("libraries  {} resolved by ELF scanning", r.libraries);
    println!(
        "bytecode   {} .pyc compiled{}",
        r.pyc_compiled,
        if r.pyc_failed.is_empty() {
            String::new()
        } else {
            format!(", {} sources skipped (see warnings)", r.pyc_failed.len())
        }
    );
    for (lang, info) in &m.languages {
        println!(
            "{lang:10} {} {} ({} packages)",
            info.interpreter,
            info.version,
            info.distributions.len()
        );
    }
    for (lang, (a, b)) in &r.seccomp_instructions {
        println!("seccomp    {lang}: {a} BPF instructions, {b} with network");
    }
    println!(
        "sbom       {} (SPDX 2.3), {} (CycloneDX 1.5)",
        prebake::sbom::SPDX_FILE,
        prebake::sbom::CYCLONEDX_FILE
    );
    if let Some(i) = &r.image {
        println!("image      {}  {}", i.dir.display(), i.tag);
        println!("digest     {}", i.digests.manifest);
        for (media_type, digest) in &i.referrers {
            println!("referrer   {digest}  {media_type}");
        }
        for l in &i.layers {
            println!(
                "layer      {:.1} MiB compressed ({:.1} MiB tar)  {}",
                l.size_compressed as f64 / 1048576.0,
                l.size_uncompressed as f64 / 1048576.0,
                l.created_by
            );
        }
        if let Some(a) = &i.archive {
            println!("archive    {}", a.display());
        }
        println!(
            "time       {:.2} s ({:.2} s bundle, {:.2} s image)",
            r.seconds,
            r.seconds - i.seconds,
            i.seconds
        );
    } else {
        println!("time       {:.2} s", r.seconds);
    }
}

fn cmd_seccomp_show(spec_path: Option<PathBuf>, language: Option<&str>) -> Result<()> {
    let spec = load_spec(spec_path)?;
    let only = language.map(parse_language).transpose()?;
    // A language the spec does not name is shown with the baked policy alone.
    let languages: Vec<(Language, prebake::spec::SeccompSpec)> = match only {
        Some(lang) => vec![(
            lang,
            spec.languages
                .get(&lang)
                .map(|l| l.seccomp.clone())
                .unwrap_or_default(),
        )],
        None => spec
            .languages
            .iter()
            .map(|(l, s)| (*l, s.seccomp.clone()))
            .collect(),
    };
    for (lang, seccomp) in languages {
        println!("# {}", lang.as_str());
        print!("{}", prebake::seccomp::show_table(lang, &seccomp)?);
    }
    Ok(())
}

fn cmd_dig(bundle: &Path, language: &str, spec: Option<PathBuf>, script: &Path) -> Result<()> {
    use prebake::contract::BundleManifest;
    use prebake::runtime::unpack::{unpack_bundle, UnpackOutcome};
    let lang = parse_language(language)?;
    let seccomp = match spec {
        Some(p) => {
            let spec = ImageSpec::load(&p)?;
            spec.languages
                .get(&lang)
                .map(|l| l.seccomp.clone())
                .with_context(|| format!("{}: has no `{language}` language", p.display()))?
        }
        None => Default::default(),
    };
    let manifest = BundleManifest::load(bundle)?;
    let info = manifest.languages.get(language).with_context(|| {
        format!(
            "{}: the bundle has no `{language}` language",
            bundle.display()
        )
    })?;
    // The script runs in a private copy of the rootfs, removed afterwards.
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let root = match unpack_bundle(bundle, &manifest, &tmp.path().join("root"))
        .with_context(|| format!("unpacking {}", bundle.display()))?
    {
        UnpackOutcome::InPlace(dir) => dir,
        _ => tmp.path().join("root"),
    };
    let env: Vec<(String, String)> = info.env.clone().into_iter().collect();
    let report = prebake::seccomp::dig::dig(
        &root,
        Path::new(&info.interpreter),
        &info.args,
        &env,
        script,
        lang,
        &seccomp,
    )
    .with_context(|| format!("digging {}", script.display()))?;
    print!("{report}");
    Ok(())
}
