//! OCI image layout and archive: reproducible bytes, and real container tools (skopeo, umoci,
//! runc) accept and run what we write.

use crate::support;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::{Compression, GzBuilder};
use prebake::oci::{self, ImageConfig, Layer, LayerMedia, OciError};
use sha2::{Digest, Sha256};

const TAG: &str = "prebake-test:1.0";
const EPOCH: u64 = 1_700_000_000;

/// One file of a test layer: path inside the image, mode, contents.
type FileSpec<'a> = (&'a str, u32, &'a [u8]);

/// A deterministic gzip layer: explicit ustar headers (root-owned, mtime 0, parents first),
/// gzip with a zero mtime and no file name.
fn make_layer(dir: &Path, name: &str, files: &[FileSpec], created_by: &str) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs_done = std::collections::BTreeSet::new();
    for (path, mode, bytes) in files {
        let mut parent = String::new();
        for comp in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            parent.push_str(comp);
            parent.push('/');
            if dirs_done.insert(parent.clone()) {
                let mut h = tar::Header::new_ustar();
                h.set_path(&parent).unwrap();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(0);
                h.set_cksum();
                tar.append(&h, std::io::empty()).unwrap();
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        tar.append(&h, *bytes).unwrap();
    }
    let tar_bytes = tar.into_inner().unwrap();
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(6));
    gz.write_all(&tar_bytes).unwrap();
    let blob = gz.finish().unwrap();
    let path = dir.join(format!("{name}.tar.gz"));
    fs::write(&path, &blob).unwrap();
    Layer {
        blob: path,
        media_type: LayerMedia::Gzip,
        digest: hex::encode(Sha256::digest(&blob)),
        diff_id: hex::encode(Sha256::digest(&tar_bytes)),
        size: blob.len() as u64,
        created_by: created_by.to_owned(),
    }
}

fn sample_layers(dir: &Path, extra: &[FileSpec]) -> Vec<Layer> {
    let base = make_layer(
        dir,
        "base",
        &[
            ("etc/hello.txt", 0o644, b"hello from layer one\n"),
            ("etc/passwd", 0o644, b"root:x:0:0:root:/:/sbin/nologin\n"),
        ],
        "prebake: runtime and its libraries",
    );
    let mut app_files: Vec<FileSpec> = vec![("opt/prebake/bundle.json", 0o644, b"{}\n")];
    app_files.extend_from_slice(extra);
    let app = make_layer(dir, "app", &app_files, "prebake: bundle");
    vec![base, app]
}

/// The sample layers and config (entrypoint `/runtime serve`) written as a layout at
/// `tmp/image`, tagged `tag`.
fn sample_image(tmp: &Path, tag: &str) -> (PathBuf, Vec<Layer>, oci::ImageDigests) {
    let layers = sample_layers(tmp, &[]);
    let dir = tmp.join("image");
    let config = sample_config(EPOCH, &["/runtime", "serve"]);
    let digests = oci::write_layout(&dir, &layers, &config, tag).unwrap();
    (dir, layers, digests)
}

fn sample_config(epoch: u64, entrypoint: &[&str]) -> ImageConfig {
    ImageConfig {
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: vec!["serve".into()],
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "LANG=C.UTF-8".into(),
        ],
        exposed_ports: vec!["8194/tcp".into()],
        working_dir: "/opt/prebake".into(),
        labels: BTreeMap::from([
            ("org.opencontainers.image.version".into(), "0.1.0".into()),
            ("io.prebake.spec-digest".into(), "sha256:abc".into()),
            ("a.first".into(), "sorted".into()),
        ]),
        created_epoch: epoch,
        os: "linux".into(),
        architecture: oci::host_architecture().unwrap().into(),
    }
}

/// Every file of a tree as (relative path, mode, bytes), for byte-for-byte comparison.
fn snapshot(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
        let bytes = if e.file_type().is_file() {
            fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        out.push((rel, mode, bytes));
    }
    out
}

/// Not a test on its own: the body of the child processes of
/// `identical_bytes_across_umask_tz_and_directories` (umask and TZ are per process, so they
/// must be set in a process of their own).
#[test]
fn child_process_writes_layout() {
    let _exclusive = support::exclusive();
    let Some(out) = std::env::var_os("PREBAKE_OCI_CHILD_OUT") else {
        return;
    };
    let umask: u32 = std::env::var("PREBAKE_OCI_CHILD_UMASK")
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: umask has no preconditions; this process runs only this test.
    unsafe { libc::umask(umask as libc::mode_t) };
    let out = PathBuf::from(out);
    let scratch = out.with_extension("layers");
    fs::create_dir(&scratch).unwrap();
    let layers = sample_layers(&scratch, &[]);
    let digests = oci::write_layout(
        &out.join("image"),
        &layers,
        &sample_config(EPOCH, &["/x"]),
        TAG,
    )
    .unwrap();
    fs::write(out.join("digest"), digests.manifest).unwrap();
}

#[test]
fn identical_bytes_across_umask_tz_and_directories() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (i, (umask, tz)) in [("18", "UTC"), ("63", "Pacific/Chatham")]
        .iter()
        .enumerate()
    {
        // Different depths and names, so no path can leak into the output unnoticed.
        let out = tmp.path().join(format!("run{i}")).join("x".repeat(i + 1));
        fs::create_dir_all(&out).unwrap();
        support::run(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    &support::sibling_test("child_process_writes_layout"),
                ])
                .arg("--test-threads=1")
                .env("PREBAKE_OCI_CHILD_OUT", &out)
                .env("PREBAKE_OCI_CHILD_UMASK", umask)
                .env("TZ", tz),
        );
        results.push((
            fs::read_to_string(out.join("digest")).unwrap(),
            snapshot(&out.join("image")),
        ));
    }
    assert!(results[0].0.starts_with("sha256:"));
    assert_eq!(results[0].0, results[1].0, "manifest digests differ");
    assert_eq!(results[0].1, results[1].1, "layout trees differ");
    // Modes were set explicitly, not inherited from the umask (077 would give 0600/0700).
    let modes: Vec<u32> = results[1].1.iter().map(|(_, m, _)| *m).collect();
    assert!(
        modes.iter().all(|m| *m == 0o644 || *m == 0o755),
        "{modes:?}"
    );
    let index = &results[0]
        .1
        .iter()
        .find(|(p, ..)| p == "index.json")
        .unwrap()
        .2;
    assert!(
        String::from_utf8_lossy(index).contains(&results[0].0),
        "index.json does not name the manifest digest"
    );
}

#[test]
fn created_epoch_changes_digest_and_only_the_time() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let layers = sample_layers(tmp.path(), &[]);
    let a = oci::write_layout(
        &tmp.path().join("a"),
        &layers,
        &sample_config(EPOCH, &["/x"]),
        TAG,
    )
    .unwrap();
    let b = oci::write_layout(
        &tmp.path().join("b"),
        &layers,
        &sample_config(EPOCH + 1, &["/x"]),
        TAG,
    )
    .unwrap();
    let again = oci::write_layout(
        &tmp.path().join("c"),
        &layers,
        &sample_config(EPOCH, &["/x"]),
        TAG,
    )
    .unwrap();
    assert_ne!(a.manifest, b.manifest);
    assert_ne!(a.config, b.config);
    assert_eq!(a, again);
    let config = |dir: &str, d: &str| {
        let hex = d.strip_prefix("sha256:").unwrap();
        fs::read_to_string(tmp.path().join(dir).join("blobs/sha256").join(hex)).unwrap()
    };
    let (ca, cb) = (config("a", &a.config), config("b", &b.config));
    assert!(ca.contains("\"created\":\"2023-11-14T22:13:20Z\""), "{ca}");
    assert!(cb.contains("\"created\":\"2023-11-14T22:13:21Z\""), "{cb}");
    assert_eq!(
        ca.replace("20Z", "21Z"),
        cb,
        "something besides the time changed"
    );
}

#[test]
fn blobs_parse_with_oci_spec_and_match_their_names() {
    let _exclusive = support::exclusive();
    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, OciLayout};
    let tmp = tempfile::tempdir().unwrap();
    let (dir, layers, digests) = sample_image(tmp.path(), TAG);

    assert_eq!(
        OciLayout::from_file(dir.join("oci-layout"))
            .unwrap()
            .image_layout_version(),
        "1.0.0"
    );
    let blob = |digest: &str| {
        dir.join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = fs::read(e.path()).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            e.file_name().to_str().unwrap()
        );
    }

    let index = ImageIndex::from_file(dir.join("index.json")).unwrap();
    assert_eq!(index.manifests().len(), 1);
    let desc = &index.manifests()[0];
    assert_eq!(desc.digest().to_string(), digests.manifest);
    assert_eq!(desc.size(), digests.manifest_size);
    let ann = desc.annotations().as_ref().unwrap();
    assert_eq!(ann["org.opencontainers.image.ref.name"], "1.0");
    assert_eq!(
        ann["io.containerd.image.name"],
        "docker.io/library/prebake-test:1.0"
    );
    let platform = desc.platform().as_ref().unwrap();
    assert_eq!(platform.os().to_string(), "linux");

    let manifest = ImageManifest::from_file(blob(&digests.manifest)).unwrap();
    assert_eq!(manifest.config().digest().to_string(), digests.config);
    assert_eq!(manifest.layers().len(), 2);
    for (d, l) in manifest.layers().iter().zip(&layers) {
        assert_eq!(d.digest().to_string(), format!("sha256:{}", l.digest));
        assert_eq!(d.size(), l.size);
        assert_eq!(
            d.media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }

    let config = ImageConfiguration::from_file(blob(&digests.config)).unwrap();
    let c = config.config().as_ref().unwrap();
    assert_eq!(
        c.entrypoint().as_deref(),
        Some(&["/runtime".to_string(), "serve".to_string()][..])
    );
    assert_eq!(
        c.exposed_ports().as_deref(),
        Some(&["8194/tcp".to_string()][..])
    );
    assert_eq!(c.working_dir().as_deref(), Some("/opt/prebake"));
    assert_eq!(
        c.labels().as_ref().unwrap()["io.prebake.spec-digest"],
        "sha256:abc"
    );
    assert_eq!(config.created().as_deref(), Some("2023-11-14T22:13:20Z"));
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", l.diff_id))
        .collect();
    assert_eq!(config.rootfs().diff_ids(), &diff_ids);
    let history = config.history().as_ref().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].created_by().as_deref(), Some("prebake: bundle"));

    // Canonical: what we wrote is exactly the sorted, compact form of itself.
    for path in [
        dir.join("index.json"),
        blob(&digests.manifest),
        blob(&digests.config),
    ] {
        let text = fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            text.as_bytes(),
            oci::canonical::to_vec(&v),
            "{}",
            path.display()
        );
        assert!(!text.contains('\n'));
    }
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing_behind() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let layers = sample_layers(&scratch, &[]);
    let config = sample_config(EPOCH, &["/x"]);
    let out = tmp.path().join("out");

    let err = oci::write_layout(&out, &layers, &config, "Prebake:1").unwrap_err();
    assert!(matches!(err, OciError::InvalidTag { .. }), "{err}");
    assert!(err.to_string().contains("lowercase"), "{err}");
    let err = oci::write_layout(&out, &layers, &config, "prebake:v1$").unwrap_err();
    assert!(err.to_string().contains("'$'"), "{err}");

    fs::create_dir(&out).unwrap();
    let err = oci::write_layout(&out, &layers, &config, TAG).unwrap_err();
    assert!(matches!(err, OciError::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    fs::remove_dir(&out).unwrap();

    let err =
        oci::write_layout(&tmp.path().join("no/such/dir"), &layers, &config, TAG).unwrap_err();
    // The cause is the error's source: printed as the binaries print it.
    let text = prebake::error::Chain(&err).to_string();
    assert!(text.contains("parent directory does not exist"), "{text}");

    let mut tampered = layers.clone();
    tampered[1].digest = "0".repeat(64);
    let err = oci::write_layout(&out, &tampered, &config, TAG).unwrap_err();
    assert!(matches!(err, OciError::BadLayer { index: 1, .. }), "{err}");
    assert!(
        err.to_string().contains("changed after it was written"),
        "{err}"
    );
    let mut prefixed = layers.clone();
    prefixed[0].diff_id = format!("sha256:{}", layers[0].diff_id);
    let err = oci::write_layout(&out, &prefixed, &config, TAG).unwrap_err();
    assert!(
        err.to_string().contains("without a \"sha256:\" prefix"),
        "{err}"
    );
    let mut missing = layers.clone();
    missing[0].blob = scratch.join("gone.tar.gz");
    let err = oci::write_layout(&out, &missing, &config, TAG).unwrap_err();
    assert!(err.to_string().contains("gone.tar.gz"), "{err}");

    let mut bad_port = config.clone();
    bad_port.exposed_ports = vec!["http".into()];
    let err = oci::write_layout(&out, &layers, &bad_port, TAG).unwrap_err();
    assert!(err.to_string().contains("exposed_ports"), "{err}");

    // Failures cleaned up their staging directories and never created the output.
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec!["scratch".to_string()]);

    // Archives: invalid tag, existing output, a path that is not a layout.
    oci::write_layout(&out, &layers, &config, TAG).unwrap();
    let archive = tmp.path().join("image.tar");
    let err = oci::write_archive(&out, &archive, "a:b:c").unwrap_err();
    assert!(matches!(err, OciError::InvalidTag { .. }), "{err}");
    fs::write(&archive, b"keep me").unwrap();
    let err = oci::write_archive(&out, &archive, TAG).unwrap_err();
    assert!(matches!(err, OciError::OutputExists { .. }), "{err}");
    assert_eq!(fs::read(&archive).unwrap(), b"keep me");
    fs::remove_file(&archive).unwrap();
    let err = oci::write_archive(&scratch, &archive, TAG).unwrap_err();
    assert!(err.to_string().contains("oci-layout"), "{err}");
    assert!(!archive.exists());
}

#[test]
fn archive_is_deterministic_and_holds_both_formats() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let layers = sample_layers(tmp.path(), &[]);
    let dir = tmp.path().join("image");
    let digests = oci::write_layout(&dir, &layers, &sample_config(EPOCH, &["/x"]), TAG).unwrap();
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    oci::write_archive(&dir, &a, TAG).unwrap();
    oci::write_archive(&dir, &b, TAG).unwrap();
    let bytes = fs::read(&a).unwrap();
    assert_eq!(bytes, fs::read(&b).unwrap());

    let mut ar = tar::Archive::new(bytes.as_slice());
    let mut names = Vec::new();
    let mut docker_manifest = None;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header();
        assert_eq!(
            (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
            (0, 0, 0)
        );
        let name = e.path().unwrap().display().to_string();
        if name == "manifest.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            docker_manifest = Some(s);
        }
        names.push(name);
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are not in path order");
    assert!(names.contains(&"oci-layout".to_string()));
    assert!(names.contains(&"index.json".to_string()));
    let m: serde_json::Value = serde_json::from_str(&docker_manifest.unwrap()).unwrap();
    assert_eq!(m[0]["RepoTags"][0], TAG);
    assert_eq!(
        m[0]["Config"],
        format!(
            "blobs/sha256/{}",
            digests.config.strip_prefix("sha256:").unwrap()
        )
    );
    assert_eq!(
        m[0]["Layers"][1],
        format!("blobs/sha256/{}", layers[1].digest)
    );
}

#[test]
#[cfg_attr(not(have_skopeo), ignore = "needs skopeo")]
fn skopeo_reads_the_layout_and_copies_it_to_a_docker_archive() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, digests) = sample_image(tmp.path(), TAG);
    let src = format!("oci:{}:1.0", dir.display());
    let info = support::skopeo(&["inspect", &src]);
    assert_eq!(info["Digest"], digests.manifest.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let config = support::skopeo(&["inspect", "--config", &src]);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/runtime", "serve"])
    );
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");

    let archive = tmp.path().join("copied.tar");
    support::run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        &src,
        &format!("docker-archive:{}:{TAG}", archive.display()),
    ]));
    let copied = support::skopeo(&["inspect", &format!("docker-archive:{}", archive.display())]);
    assert_eq!(copied["Layers"].as_array().unwrap().len(), 2);
    let copied_config = support::skopeo(&[
        "inspect",
        "--config",
        &format!("docker-archive:{}", archive.display()),
    ]);
    assert_eq!(copied_config["rootfs"], config["rootfs"]);
}

#[test]
#[cfg_attr(not(have_skopeo), ignore = "needs skopeo")]
fn skopeo_reads_our_archive_as_docker_and_as_oci() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    // The layout is tagged differently: the archive must rename it.
    let (dir, layers, digests) = sample_image(tmp.path(), "old-name:0");
    let archive = tmp.path().join("image.tar");
    oci::write_archive(&dir, &archive, TAG).unwrap();
    let path = archive.display().to_string();

    let docker = support::skopeo(&["inspect", &format!("docker-archive:{path}")]);
    assert_eq!(docker["Layers"].as_array().unwrap().len(), 2);
    let docker_config =
        support::skopeo(&["inspect", "--config", &format!("docker-archive:{path}")]);
    assert_eq!(
        docker_config["config"]["Entrypoint"],
        serde_json::json!(["/runtime", "serve"])
    );

    let oci_info = support::skopeo(&["inspect", &format!("oci-archive:{path}")]);
    assert_eq!(oci_info["Digest"], digests.manifest.as_str());
    let by_tag = support::skopeo(&["inspect", &format!("oci-archive:{path}:1.0")]);
    assert_eq!(by_tag["Digest"], digests.manifest.as_str());

    // Read every layer through each half, as `docker load`/`podman load` do. Through
    // manifest.json, containers/image hands out the layers decompressed (named by diff_id);
    // through index.json, as our exact blobs. Either way the config is ours, byte for byte.
    let config_hex = digests.config.strip_prefix("sha256:").unwrap();
    for (i, src) in [
        format!("docker-archive:{path}"),
        format!("oci-archive:{path}"),
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("copy{i}"));
        support::run(Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            src,
            &format!("dir:{}", out.display()),
        ]));
        assert_eq!(
            fs::read(out.join(config_hex)).unwrap(),
            fs::read(dir.join("blobs/sha256").join(config_hex)).unwrap(),
            "{src}: config"
        );
        for l in &layers {
            if i == 0 {
                let tar = fs::read(out.join(&l.diff_id)).unwrap();
                assert_eq!(hex::encode(Sha256::digest(&tar)), l.diff_id, "{src}");
            } else {
                assert_eq!(
                    fs::read(out.join(&l.digest)).unwrap(),
                    fs::read(&l.blob).unwrap(),
                    "{src}"
                );
            }
        }
    }
}

/// A static C program that proves the container really ran our layer's code.
fn static_hello(dir: &Path) -> Option<Vec<u8>> {
    let src = dir.join("hello.c");
    fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void){char b[256];\
         printf(\"hello from a prebake layer, cwd=%s\\n\", getcwd(b,sizeof b)?b:\"?\");return 0;}\n",
    )
    .unwrap();
    let exe = dir.join("hello");
    let ok = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| fs::read(&exe).unwrap())
}

#[test]
#[cfg_attr(
    not(all(have_root, have_umoci, have_runc, have_cc, have_static_libc)),
    ignore = "needs root, umoci, runc, cc and a static libc"
)]
fn umoci_unpacks_and_runc_runs_the_image() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let hello = static_hello(tmp.path()).expect("cc -static, which build.rs found working");
    let layers = sample_layers(tmp.path(), &[("usr/bin/hello", 0o755, &hello)]);
    let dir = tmp.path().join("image");
    let mut config = sample_config(EPOCH, &["/usr/bin/hello"]);
    config.cmd.clear();
    oci::write_layout(&dir, &layers, &config, TAG).unwrap();

    let bundle = tmp.path().join("bundle");
    support::run(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:1.0", dir.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/hello.txt")).unwrap(),
        "hello from layer one\n"
    );
    assert_eq!(
        fs::read(rootfs.join("opt/prebake/bundle.json")).unwrap(),
        b"{}\n"
    );
    let mode = fs::metadata(rootfs.join("usr/bin/hello"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&spec_path).unwrap()).unwrap();
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["/usr/bin/hello"])
    );
    assert_eq!(spec["process"]["cwd"], "/opt/prebake");
    // umoci asks for a terminal by default; a test has none, and we want stdout in a pipe.
    spec["process"]["terminal"] = serde_json::json!(false);
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();

    let id = format!("prebake-oci-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    assert!(
        out.status.success(),
        "runc run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a prebake layer, cwd=/opt/prebake\n"
    );
}

fn yaml(name: &str) -> serde_json::Value {
    let path = support::repo_root().join("templates/k8s").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The Kubernetes examples and the Containerfile name the same port, paths, secret and
/// capabilities as the image we write; a drift here would ship a pod that never gets ready.
#[test]
fn k8s_templates_and_containerfile_agree_with_the_image() {
    let _exclusive = support::exclusive();
    let port = u64::from(oci::IMAGE_PORT);
    let deploy = yaml("deployment.yaml");
    assert_eq!(deploy["kind"], "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"],
        deploy["spec"]["template"]["metadata"]["labels"]
    );
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"], c["ports"][0]["name"],
            "{probe}"
        );
    }
    let env = c["env"].as_array().unwrap();
    let api_key = env.iter().find(|e| e["name"] == "API_KEY").unwrap();
    let secret_ref = &api_key["valueFrom"]["secretKeyRef"];
    let secret = yaml("secret.example.yaml");
    assert_eq!(secret_ref["name"], secret["metadata"]["name"]);
    let key = secret_ref["key"].as_str().unwrap();
    assert!(
        secret["stringData"].get(key).is_some(),
        "secret lacks {key}"
    );
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(c["resources"]["limits"]["cpu"].is_string());

    let sc = &c["securityContext"];
    let caps = strings(&sc["capabilities"]["add"]);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    for needed in ["SYS_ADMIN", "SYS_CHROOT", "SETUID", "SETGID", "KILL"] {
        assert!(caps.iter().any(|c| c == needed), "missing {needed}");
    }
    // Kubernetes rejects allowPrivilegeEscalation: false together with SYS_ADMIN.
    assert_eq!(sc["allowPrivilegeEscalation"], true);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    let sandbox_root = Path::new(prebake::contract::DEFAULT_SANDBOX_ROOT);
    assert!(
        mounts.iter().any(|m| sandbox_root.starts_with(m)),
        "readOnlyRootFilesystem needs a writable volume over {}",
        sandbox_root.display()
    );
    // The default image's rootfs tree: chroot-only mode makes each run's directory in its tmp.
    let tree_tmp = format!(
        "{}/{}/tmp",
        prebake::contract::DEFAULT_BUNDLE_DIR,
        prebake::contract::TREE_ROOTFS_DIR
    );
    assert!(
        mounts.contains(&tree_tmp.as_str()),
        "no volume over the rootfs tree's {tree_tmp}"
    );

    // The uid-pool locks are node-wide: every replica on a node mounts the same hostPath
    // where the runtime looks for them (sandbox uids and RLIMIT_NPROC are per node).
    let lock_dir = env
        .iter()
        .find(|e| e["name"] == "SANDBOX_UID_LOCK_DIR")
        .and_then(|e| e["value"].as_str())
        .unwrap_or(prebake::runtime::uidpool::DEFAULT_LOCK_DIR);
    let lock_mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == lock_dir)
        .unwrap_or_else(|| panic!("no volume mounted at the uid lock dir {lock_dir}"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == lock_mount["name"])
        .unwrap();
    assert!(
        volume["hostPath"]["path"].is_string(),
        "the uid lock dir must be a hostPath shared by the node's replicas: {volume}"
    );
    // The reduced-isolation variant stays within Docker's default capability set.
    let docker_default = [
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SYS_CHROOT",
        "MKNOD",
        "AUDIT_WRITE",
        "SETFCAP",
    ];
    let reduced = yaml("reduced-isolation.patch.yaml");
    let rc = &reduced["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(rc["name"], c["name"]);
    for cap in strings(&rc["securityContext"]["capabilities"]["add"]) {
        assert!(
            docker_default.contains(&cap.as_str()),
            "{cap} is not in Docker's default set"
        );
    }

    let service = yaml("service.yaml");
    assert_eq!(service["spec"]["ports"][0]["port"], port);
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        c["ports"][0]["name"]
    );
    assert_eq!(
        service["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    let kustomization = yaml("kustomization.yaml");
    for r in strings(&kustomization["resources"]) {
        yaml(&r);
    }

    let containerfile = fs::read_to_string(support::repo_root().join("Containerfile")).unwrap();
    assert!(containerfile.contains(&format!(
        "ENTRYPOINT [\"{}\", \"serve\"]",
        oci::IMAGE_RUNTIME_PATH
    )));
    assert!(containerfile.contains(&format!("WORKDIR {}", oci::IMAGE_WORKDIR)));
    assert!(containerfile.contains(&format!("EXPOSE {port}/tcp")));
    assert!(prebake::contract::DEFAULT_BUNDLE_DIR.starts_with(oci::IMAGE_WORKDIR));
    let dockerignore = fs::read_to_string(support::repo_root().join(".dockerignore")).unwrap();
    assert!(dockerignore.lines().any(|l| l == "target/"));
}

#[test]
#[cfg_attr(not(have_skopeo), ignore = "needs skopeo")]
fn zstd_layers_get_the_zstd_media_type_and_survive_a_copy() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let mut layers = sample_layers(tmp.path(), &[]);
    // Recompress the second layer as zstd (same tar, so the same diff_id).
    let gz = fs::read(&layers[1].blob).unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut tar).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&tar)), layers[1].diff_id);
    let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
    let zpath = tmp.path().join("app.tar.zst");
    fs::write(&zpath, &zst).unwrap();
    layers[1] = Layer {
        blob: zpath,
        media_type: LayerMedia::Zstd,
        digest: hex::encode(Sha256::digest(&zst)),
        size: zst.len() as u64,
        ..layers[1].clone()
    };
    let dir = tmp.path().join("image");
    let digests = oci::write_layout(&dir, &layers, &sample_config(EPOCH, &["/x"]), TAG).unwrap();
    let manifest = oci_spec::image::ImageManifest::from_file(
        dir.join("blobs/sha256")
            .join(digests.manifest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let types: Vec<String> = manifest
        .layers()
        .iter()
        .map(|d| d.media_type().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );

    let out = tmp.path().join("copy");
    support::run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        &format!("oci:{}:1.0", dir.display()),
        &format!("dir:{}", out.display()),
    ]));
    assert_eq!(fs::read(out.join(&layers[1].digest)).unwrap(), zst);
}

/// The Kubernetes templates validate, strictly (no unknown field), against the API schemas of
/// the oldest version they claim (1.30: `appArmorProfile` in the security context) and of the
/// newest kubernetes-validate knows; and 1.29 rejects them, which shows the check bites.
#[test]
#[cfg_attr(
    not(have_kubernetes_validate),
    ignore = "needs kubernetes-validate (the validators' venv of .ci/run)"
)]
fn k8s_templates_validate_for_the_versions_they_claim() {
    let _exclusive = support::exclusive();
    let dir = support::repo_root().join("templates/k8s");
    let mut files: Vec<String> = strings(&yaml("kustomization.yaml")["resources"]);
    files.push("secret.example.yaml".into());
    let validate = |version: &str| {
        Command::new(support::validators_venv().join("bin/kubernetes-validate"))
            .args(["--strict", "-k", version])
            .args(&files)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    for version in ["1.30", "1.37"] {
        let o = validate(version);
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{version}:\n{text}");
        assert_eq!(
            text.matches(" passed ").count(),
            files.len(),
            "{version}:\n{text}"
        );
    }
    let o = validate("1.29");
    assert!(!o.status.success(), "1.29 accepted the 1.30 fields");
}

/// templates/compose/docker-compose.prebake.yaml merged over Dify's compose services (a
/// fixture of the parts that meet the sandbox) by docker-compose itself: the `sandbox` service
/// keeps Dify's name, environment, port, volumes and network, and gets prebake's image, the
/// capability of namespaces mode, the node's uid-lock directory and a health check the image
/// can run (it has no curl).
#[test]
#[cfg_attr(not(have_docker_compose), ignore = "needs docker-compose")]
fn compose_override_replaces_difys_sandbox_service() {
    let _exclusive = support::exclusive();
    let root = support::repo_root();
    let o = Command::new("docker-compose")
        .arg("-f")
        .arg(root.join("tests/fixtures/dify-compose/docker-compose.yaml"))
        .arg("-f")
        .arg(root.join("templates/compose/docker-compose.prebake.yaml"))
        .arg("config")
        .env_remove("PREBAKE_SANDBOX_IMAGE")
        .env_remove("SANDBOX_API_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let merged: serde_json::Value = serde_yaml_ng::from_str(&stdout).unwrap();
    let sandbox = &merged["services"]["sandbox"];
    assert_eq!(sandbox["image"], "prebake-dify:latest", "{stdout}");
    let env = &sandbox["environment"];
    for (name, value) in [
        ("API_KEY", "dify-sandbox"),
        ("WORKER_TIMEOUT", "15"),
        ("ENABLE_NETWORK", "true"),
        ("HTTP_PROXY", "http://ssrf_proxy:3128"),
        ("HTTPS_PROXY", "http://ssrf_proxy:3128"),
        ("SANDBOX_PORT", "8194"),
    ] {
        assert_eq!(env[name], value, "{name}: {stdout}");
    }
    assert!(
        sandbox["networks"].get("ssrf_proxy_network").is_some(),
        "{stdout}"
    );
    assert_eq!(strings(&sandbox["cap_add"]), ["SYS_ADMIN"]);
    assert_eq!(strings(&sandbox["security_opt"]), ["apparmor=unconfined"]);
    let volumes = sandbox["volumes"].to_string();
    for target in ["/conf", "/dependencies", "/run/prebake-runtime"] {
        assert!(
            volumes.contains(&format!("\"target\":\"{target}\""))
                || volumes.contains(&format!(":{target}")),
            "{target}: {volumes}"
        );
    }
    // The health check runs the image's own binary, at the path the image puts it.
    let test = strings(&sandbox["healthcheck"]["test"]);
    assert_eq!(test, ["CMD", oci::IMAGE_RUNTIME_PATH, "health"]);
    // The services that call the sandbox are untouched.
    assert_eq!(
        merged["services"]["api"]["environment"]["CODE_EXECUTION_ENDPOINT"],
        "http://sandbox:8194"
    );
}
