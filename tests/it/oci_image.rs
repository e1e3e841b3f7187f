//! Issue 5 phase 2: the image `prebake build` writes (DIR/image, --archive), read and run by
//! the real tools: skopeo, umoci and runc from Debian. The container runs with Docker's
//! default capabilities only.

use crate::support;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TAG: &str = "prebake-test:1.0";
const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
const KEY: &str = "oci-image-test-key";

/// The capabilities Docker grants a container by default, and nothing else.
const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
];

fn default_spec() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/images/python3.yaml")
}

/// `prebake ARGS` with `umask` applied in a shell first (the umask is per process, so this
/// keeps parallel tests out of each other's way).
fn prebake(args: &[&str], umask: &str, envs: &[(&str, &str)]) -> Output {
    let mut c = support::prebake_under_umask(umask, args);
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run prebake")
}

fn ok(o: &Output, what: &str) -> String {
    support::assert_success(o, what);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn build(out: &Path, extra: &[&str], umask: &str, envs: &[(&str, &str)]) -> String {
    let mut args = vec!["build", default_spec(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&prebake(&args, umask, envs), "prebake build")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// (manifest digest, manifest, config) of the layout's only image; the other manifests
/// index.json lists are its SBOMs (artifacts whose subject it is, see sbom.rs).
fn image(layout: &Path) -> (String, Value, Value) {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    let images: Vec<&Value> = manifests
        .iter()
        .filter(|m| m.get("artifactType").is_none())
        .collect();
    assert_eq!(images.len(), 1, "{index}");
    assert_eq!(manifests[0], *images[0], "the image comes first: {index}");
    let digest = images[0]["digest"].as_str().unwrap().to_owned();
    let manifest = read_json(&blob(layout, &digest));
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    (digest, manifest, config)
}

/// One build (with --tag and --archive) shared by the tests that only read it.
struct Shared {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    archive: PathBuf,
    summary: String,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let archive = tmp.path().join("image.tar");
        let summary = build(
            &out,
            &["--tag", TAG, "--archive", archive.to_str().unwrap()],
            "022",
            &[],
        );
        Shared {
            _tmp: tmp,
            out,
            archive,
            summary,
        }
    })
}

/// The same spec built with `--image-rootfs tarball`, shared like [`shared`].
fn shared_tarball() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let summary = build(
            &out,
            &["--tag", TAG, "--image-rootfs", "tarball"],
            "022",
            &[],
        );
        Shared {
            archive: tmp.path().join("no-archive"),
            _tmp: tmp,
            out,
            summary,
        }
    })
}

/// `tar -tv` of the bundle layer (the second) of the image in `layout`.
fn bundle_layer_listing(layout: &Path) -> String {
    let (_, manifest, _) = image(layout);
    let b = blob(layout, manifest["layers"][1]["digest"].as_str().unwrap());
    let o = Command::new("tar").arg("-tvzf").arg(&b).output().unwrap();
    ok(&o, "tar -tvzf")
}

/// The tree in the default image is the rootfs archive entry for entry (owners, modes, device
/// nodes, sizes, mtimes, link targets), read back by GNU tar; the tarball form carries the
/// archive itself; the bundle beside the image is the same for both.
#[test]
fn the_image_tree_is_the_rootfs_archive_and_the_tarball_form_keeps_it() {
    let _exclusive = support::exclusive();
    let (tree, tarball) = (shared(), shared_tarball());
    let archive = tree.out.join("bundle/rootfs.tar.zst");
    assert_eq!(
        support::sha256_file(&archive),
        support::sha256_file(&tarball.out.join("bundle/rootfs.tar.zst")),
        "the image form changed the bundle"
    );
    let o = Command::new("tar")
        .args(["--zstd", "-tvf"])
        .arg(&archive)
        .output()
        .unwrap();
    let want = ok(&o, "tar --zstd -tvf");
    let prefix = "opt/prebake/bundle/rootfs/";
    let listing = bundle_layer_listing(&tree.out.join("image"));
    let got: Vec<String> = listing
        .lines()
        .filter(|l| l.contains(&format!(" {prefix}")) && !l.ends_with(&format!(" {prefix}")))
        .map(|l| l.replacen(&format!(" {prefix}"), " ", 1))
        // GNU tar shows hardlink targets as names in the archive.
        .map(|l| l.replace(&format!(" link to {prefix}"), " link to "))
        .collect();
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // The rootfs's own tmp keeps its mode where the tree lies (the runtime's tmp elsewhere).
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" opt/prebake/bundle/rootfs/tmp/")),
        "{listing}"
    );
    assert!(!listing.contains("rootfs.tar.zst"), "{listing}");
    assert!(
        tree.summary.contains("rootfs as a tree"),
        "{}",
        tree.summary
    );

    let listing = bundle_layer_listing(&tarball.out.join("image"));
    assert!(
        listing.contains(" opt/prebake/bundle/rootfs.tar.zst"),
        "{listing}"
    );
    assert!(!listing.contains(prefix), "{listing}");
    assert_ne!(
        image(&tree.out.join("image")).0,
        image(&tarball.out.join("image")).0
    );
}

#[test]
fn image_config_layers_and_summary() {
    let _exclusive = support::exclusive();
    let s = shared();
    let layout = s.out.join("image");
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = read_json(&layout.join("index.json"));
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], "1.0");
    assert_eq!(
        ann["io.containerd.image.name"],
        "docker.io/library/prebake-test:1.0"
    );
    let (digest, manifest, config) = image(&layout);
    let bundle = read_json(&s.out.join("bundle/bundle.json"));
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/runtime", "serve"]));
    assert_eq!(c["ExposedPorts"], json!({"8194/tcp": {}}));
    assert_eq!(c["WorkingDir"], "/opt/prebake");
    assert!(c["Env"][0]
        .as_str()
        .unwrap()
        .starts_with("PATH=/usr/local/sbin:/usr/local/bin"));
    assert_eq!(
        c["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        c["Labels"]["dev.prebake.spec.sha256"],
        bundle["spec_digest"]
    );
    assert_eq!(config["created"], EPOCH_RFC3339);
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["architecture"],
        prebake::oci::host_architecture().unwrap()
    );
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let b = blob(&layout, l["digest"].as_str().unwrap());
        assert_eq!(fs::metadata(&b).unwrap().len(), l["size"].as_u64().unwrap());
        assert_eq!(format!("sha256:{}", support::sha256_file(&b)), l["digest"]);
    }
    // The layers' contents, read back with GNU tar (an independent reader).
    let list = |i: usize| {
        let b = blob(&layout, layers[i]["digest"].as_str().unwrap());
        let o = Command::new("tar").arg("-tvzf").arg(&b).output().unwrap();
        ok(&o, "tar -tvzf")
    };
    let runtime_layer = list(0);
    for needle in [
        "usr/local/bin/runtime",
        "usr/lib64/ld-linux-x86-64.so.2",
        "libc.so.6",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "var/sandbox/",
    ] {
        if needle.contains("x86-64") && std::env::consts::ARCH != "x86_64" {
            continue;
        }
        assert!(
            runtime_layer.contains(needle),
            "{needle} missing:\n{runtime_layer}"
        );
    }
    assert!(
        runtime_layer
            .lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp/")),
        "/tmp is not 1777:\n{runtime_layer}"
    );
    let bundle_layer = list(1);
    for f in ["bundle.json", "rootfs/usr/", "seccomp/python3.bpf"] {
        assert!(
            bundle_layer.contains(&format!("opt/prebake/bundle/{f}")),
            "{f} missing:\n{bundle_layer}"
        );
    }
    // The summary reports the image and both layers.
    assert!(s.summary.contains(&digest), "{}", s.summary);
    assert_eq!(
        s.summary
            .lines()
            .filter(|l| l.starts_with("layer "))
            .count(),
        2,
        "{}",
        s.summary
    );
}

#[test]
fn image_digest_is_reproducible_and_follows_source_date_epoch() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a/out");
    let b = tmp.path().join("b/elsewhere/out");
    let c = tmp.path().join("c/out");
    let (aa, ba) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    build(
        &a,
        &["--archive", aa.to_str().unwrap()],
        "022",
        &[("TZ", "UTC")],
    );
    build(
        &b,
        &["--archive", ba.to_str().unwrap()],
        "077",
        &[("TZ", "Pacific/Chatham"), ("LC_ALL", "C.UTF-8")],
    );
    build(&c, &[], "022", &[("SOURCE_DATE_EPOCH", "1700000060")]);

    let (da, _, ca) = image(&a.join("image"));
    let (db, _, _) = image(&b.join("image"));
    let (dc, _, cc) = image(&c.join("image"));
    assert_eq!(
        da, db,
        "same inputs, different umask/TZ/dir: digests differ"
    );
    assert_eq!(
        fs::read(a.join("image/index.json")).unwrap(),
        fs::read(b.join("image/index.json")).unwrap()
    );
    assert_eq!(
        support::sha256_file(&aa),
        support::sha256_file(&ba),
        "archives differ"
    );
    // Another epoch: a different image whose only times are that epoch.
    assert_ne!(da, dc);
    assert_eq!(ca["created"], EPOCH_RFC3339);
    assert_eq!(cc["created"], "2023-11-14T22:14:20Z");
    for h in cc["history"].as_array().unwrap() {
        assert_eq!(h["created"], "2023-11-14T22:14:20Z");
    }
    // Files in the layout are 0644/0755 whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(b.join("image")) {
        let e = entry.unwrap();
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        let want = if e.file_type().is_dir() { 0o755 } else { 0o644 };
        assert_eq!(mode, want, "{}", e.path().display());
    }
}

#[test]
#[cfg_attr(not(have_skopeo), ignore = "needs skopeo")]
fn skopeo_reads_the_layout_and_the_archive() {
    let _exclusive = support::exclusive();
    let s = shared();
    let layout = s.out.join("image");
    let (digest, _, config_blob) = image(&layout);
    let oci_ref = format!("oci:{}:1.0", layout.display());
    let inspected = support::skopeo(&["inspect", &oci_ref]);
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(
        inspected["Architecture"],
        prebake::oci::host_architecture().unwrap()
    );
    let config = support::skopeo(&["inspect", "--config", &oci_ref]);
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/runtime", "serve"])
    );

    // The layout copies to a docker archive...
    let tmp = tempfile::tempdir().unwrap();
    let copied = tmp.path().join("copied.tar");
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", &oci_ref])
        .arg(format!("docker-archive:{}:{TAG}", copied.display()))
        .output()
        .unwrap();
    ok(&o, "skopeo copy");
    let d = support::skopeo(&["inspect", &format!("docker-archive:{}", copied.display())]);
    assert_eq!(d["Labels"], inspected["Labels"], "{d}");
    let o = Command::new("tar")
        .arg("-xOf")
        .arg(&copied)
        .arg("manifest.json")
        .output()
        .unwrap();
    let docker_manifest: Value = serde_json::from_str(&ok(&o, "tar -xOf manifest.json")).unwrap();
    assert_eq!(
        docker_manifest[0]["RepoTags"],
        json!([format!("docker.io/library/{TAG}")])
    );

    // ...and our own archive is both.
    let docker = support::skopeo(&[
        "inspect",
        &format!("docker-archive:{}", s.archive.display()),
    ]);
    // By tag: the archive's index.json also lists the image's SBOM artifacts, and skopeo
    // asks which image is meant when an index lists more than one manifest.
    let oci = support::skopeo(&[
        "inspect",
        &format!("oci-archive:{}:1.0", s.archive.display()),
    ]);
    assert_eq!(oci["Digest"], digest.as_str());
    // docker archives name layers by their uncompressed digests (the config's diff_ids).
    assert_eq!(docker["Layers"], config_blob["rootfs"]["diff_ids"]);
    assert_eq!(docker["Labels"], inspected["Labels"]);
    assert_eq!(oci["Layers"], inspected["Layers"]);
}

#[test]
#[cfg_attr(not(have_skopeo), ignore = "needs skopeo")]
fn zstd_layers_are_written_and_read() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    build(&out, &["--layer-compression", "zstd"], "022", &[]);
    let (_, manifest, _) = image(&out.join("image"));
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    let inspected = support::skopeo(&[
        "inspect",
        &format!("oci:{}:latest", out.join("image").display()),
    ]);
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    // The default tag is prebake-<spec name>.
    let index = read_json(&out.join("image/index.json"));
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/prebake-python3:latest"
    );
}

/// `umoci unpack` the shared image into a fresh runtime bundle and give it Docker's default
/// capabilities, no terminal and `args`.
fn runc_bundle(dir: &Path, args: &[&str]) -> (PathBuf, Value) {
    let s = shared();
    let (bundle, spec) = runc_bundle_of(&s.out.join("image"), "1.0", dir, args);
    // The default image carries the rootfs as a tree, and its bundle.json says so; the rest
    // of the manifest is the bundle's.
    let rootfs = bundle.join("rootfs");
    let mut in_image = read_json(&rootfs.join("opt/prebake/bundle/bundle.json"));
    let mut outside = read_json(&s.out.join("bundle/bundle.json"));
    assert_eq!(in_image["rootfs"]["file"], "rootfs");
    assert_eq!(in_image["rootfs"]["compression"], "none");
    assert_eq!(
        in_image["rootfs"]["sha256_compressed"],
        outside["rootfs"]["sha256_uncompressed"]
    );
    in_image["rootfs"] = Value::Null;
    outside["rootfs"] = Value::Null;
    assert_eq!(in_image, outside);
    assert!(rootfs
        .join("opt/prebake/bundle/rootfs/etc/passwd")
        .is_file());
    assert!(!rootfs.join("opt/prebake/bundle/rootfs.tar.zst").exists());
    (bundle, spec)
}

/// `umoci unpack` the image `layout:tag` into `dir/bundle` with Docker's default capabilities,
/// no terminal and `args`.
fn runc_bundle_of(layout: &Path, tag: &str, dir: &Path, args: &[&str]) -> (PathBuf, Value) {
    let bundle = dir.join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    ok(&o, "umoci unpack");
    let mut spec = read_json(&bundle.join("config.json"));
    let caps = json!(DOCKER_DEFAULT_CAPS);
    let p = &mut spec["process"];
    p["terminal"] = json!(false);
    p["args"] = json!(args);
    // Docker does not set no_new_privs by default; the runtime sets it for each script.
    p["noNewPrivileges"] = json!(false);
    p["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    (bundle, spec)
}

fn write_spec(bundle: &Path, spec: &Value) {
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(spec).unwrap(),
    )
    .unwrap();
}

/// Always `runc delete -f` the container, however the test ends.
struct Container(String);
impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.0])
            .output();
    }
}

fn container_id(what: &str) -> String {
    format!("prebake-oci-image-{what}-{}", std::process::id())
}

/// `runtime exec` of the host file `script` (bound read-only at /work/script.py) in the runc
/// bundle, to completion.
fn runc_exec(bundle: &Path, mut spec: Value, script: &Path, what: &str) -> Output {
    spec["process"]["args"] = json!(["/usr/local/bin/runtime", "exec", "/work/script.py"]);
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/work/script.py",
        "type": "bind",
        "source": script,
        "options": ["rbind", "ro"],
    }));
    write_spec(bundle, &spec);
    let c = Container(container_id(what));
    Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(&c.0)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(
    not(all(have_root, have_umoci, have_runc)),
    ignore = "needs root, umoci and runc"
)]
fn runc_runs_runtime_exec_with_docker_default_caps() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script.py");
    fs::write(
        &script,
        "import os, sys\nprint('hello from', sys.version_info[:2], 'uid', os.getuid() != 0)\nprint(sum(range(10)))\n",
    )
    .unwrap();
    let (bundle, spec) = runc_bundle(tmp.path(), &[]);
    let o = runc_exec(&bundle, spec, &script, "exec");
    let stdout = ok(&o, "runc run (runtime exec)");
    assert_eq!(stdout, "hello from (3, 11) uid True\n45\n");
}

/// The tarball form still runs: the runtime unpacks rootfs.tar.zst into the sandbox root.
#[test]
#[cfg_attr(
    not(all(have_root, have_umoci, have_runc)),
    ignore = "needs root, umoci and runc"
)]
fn runc_runs_the_tarball_form_unpacking_at_start() {
    let _exclusive = support::exclusive();
    let s = shared_tarball();
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, spec) = runc_bundle_of(&s.out.join("image"), "1.0", tmp.path(), &[]);
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read(rootfs.join("opt/prebake/bundle/bundle.json")).unwrap(),
        fs::read(s.out.join("bundle/bundle.json")).unwrap()
    );
    let script = tmp.path().join("script.py");
    fs::write(&script, "print(sum(range(10)))\n").unwrap();
    let o = runc_exec(&bundle, spec, &script, "tarball");
    assert_eq!(ok(&o, "runc run (tarball form)"), "45\n");
    assert!(rootfs
        .join("var/sandbox/sandbox-python/.prebake-rootfs")
        .is_file());
}

#[test]
#[cfg_attr(
    not(all(have_root, have_umoci, have_runc)),
    ignore = "needs root, umoci and runc"
)]
fn runtime_serve_under_runc_answers_the_host() {
    let _exclusive = support::exclusive();
    // With Docker's capabilities there are no namespaces to make: the probe says so, and
    // runs share the container's pid namespace.
    let caps_line = serve_under_runc("serve", &[], "False");
    assert!(caps_line.contains("mount_ns=no"), "{caps_line}");
    assert!(caps_line.contains("pid_ns=no"), "{caps_line}");
    assert!(caps_line.contains("chroot=yes"), "{caps_line}");
    assert!(caps_line.contains("setuid=yes"), "{caps_line}");
    assert!(caps_line.contains("seccomp=yes"), "{caps_line}");
}

/// What docs/oci.md promises for `--cap-add SYS_ADMIN`: full isolation, each run pid 1 of
/// its own pid namespace.
#[test]
#[cfg_attr(
    not(all(have_root, have_umoci, have_runc)),
    ignore = "needs root, umoci and runc"
)]
fn runtime_serve_under_runc_with_sys_admin_uses_namespaces() {
    let _exclusive = support::exclusive();
    let caps_line = serve_under_runc("serve-sysadmin", &["CAP_SYS_ADMIN"], "True");
    assert!(caps_line.contains("mount_ns=yes"), "{caps_line}");
    assert!(caps_line.contains("pid_ns=yes"), "{caps_line}");
}

/// Run the image's Entrypoint under runc with Docker's default capabilities plus
/// `extra_caps`, POST a script from the host, check its output (`pid_one` is Python's
/// `os.getpid() == 1` inside the sandbox) and return the runtime's capabilities log line.
fn serve_under_runc(what: &str, extra_caps: &[&str], pid_one: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    // The Entrypoint as the image has it; only env, capabilities and the network namespace
    // change.
    let (bundle, spec) = runc_bundle(tmp.path(), &["/usr/local/bin/runtime", "serve"]);
    let served = serve_bundle(tmp.path(), &bundle, spec, what, extra_caps, pid_one);
    let (caps_line, log) = (served.caps, served.log);
    // The runtime refreshed the tree's resolver file from the container's.
    assert!(
        served.resolv_seen.contains(RESOLV_MARK),
        "{}",
        served.resolv_seen
    );
    // The image's rootfs tree was used where the engine unpacked it: nothing was unpacked
    // into the sandbox root at start.
    assert!(
        log.contains("rootfs in place") && log.contains("opt/prebake/bundle/rootfs"),
        "{log}"
    );
    assert!(
        !bundle.join("rootfs/var/sandbox/sandbox-python").exists(),
        "the runtime unpacked a rootfs:\n{log}"
    );
    caps_line
}

/// [`serve_under_runc`] on a prepared runc bundle with the container's own resolv.conf: run it,
/// wait for /health, POST a script without and one with network, stop it.
fn serve_bundle(
    tmp: &Path,
    bundle: &Path,
    mut spec: Value,
    what: &str,
    extra_caps: &[&str],
    pid_one: &str,
) -> Served {
    let port = support::free_port();
    for set in ["bounding", "effective", "permitted"] {
        let list = spec["process"]["capabilities"][set].as_array_mut().unwrap();
        list.extend(extra_caps.iter().map(|c| json!(c)));
    }
    // The container's own resolver file, as Docker and Kubernetes mount one.
    let resolv = tmp.join("resolv.conf");
    fs::write(&resolv, format!("nameserver 192.0.2.53\n{RESOLV_MARK}\n")).unwrap();
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/etc/resolv.conf",
        "type": "bind",
        "source": resolv,
        "options": ["rbind", "ro"],
    }));
    let env = spec["process"]["env"].as_array_mut().unwrap();
    env.push(json!(format!("API_KEY={KEY}")));
    env.push(json!(format!("SANDBOX_PORT={port}")));
    // Sharing the host's network namespace makes the port reachable on 127.0.0.1.
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    write_spec(bundle, &spec);

    let log = tmp.join("serve.log");
    let c = Container(container_id(what));
    let mut child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(&c.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let started = Instant::now();
    let healthy = loop {
        if let Ok(r) = agent.get(&url("/health")).call() {
            if r.status() == 200 {
                break true;
            }
        }
        if started.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    assert!(healthy, "never healthy; log:\n{}", log_text());

    // A Python run through the API; its answer, checked for success.
    let run = |code: &str, network: bool| -> Value {
        let mut r = agent
            .post(&url("/v1/sandbox/run"))
            .header("X-Api-Key", KEY)
            .send_json(json!({
                "language": "python3",
                "code": code,
                "preload": "",
                "enable_network": network,
            }))
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.body_mut().read_json().unwrap();
        assert_eq!(body["code"], 0, "{body}\nlog:\n{}", log_text());
        assert_eq!(body["data"]["error"], "", "{body}");
        body
    };
    let body = run(
        "import os\nprint('sum', sum(range(101)), os.getuid() >= 65537, os.getpid() == 1)\n",
        false,
    );
    assert_eq!(
        body["data"]["stdout"],
        format!("sum 5050 True {pid_one}\n"),
        "{body}"
    );
    // A run with network sees the resolver file the runtime copied into the rootfs tree.
    let body = run("print(open('/etc/resolv.conf').read())\n", true);
    let resolv_seen = body["data"]["stdout"].as_str().unwrap().to_owned();

    let _ = Command::new("runc").args(["kill", &c.0, "TERM"]).output();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = log_text();
    let caps = text
        .lines()
        .find(|l| l.contains("capabilities:"))
        .unwrap_or_else(|| panic!("no capabilities line in the log:\n{text}"))
        .to_owned();
    Served {
        caps,
        log: text,
        resolv_seen,
    }
}

/// A line of the container's resolv.conf that survives pasta's rewrite of the nameservers.
const RESOLV_MARK: &str = "search prebake-oci.test";

/// What [`serve_bundle`] saw: the capabilities log line, the whole log, and the resolv.conf a
/// run with network read.
struct Served {
    caps: String,
    log: String,
    resolv_seen: String,
}

/// A read-only container root filesystem, as `readOnlyRootFilesystem: true` gives (and
/// templates/k8s/deployment.yaml sets), with only the writable paths the README lists:
/// `/tmp`, `/run` (the uid-pool locks) and, in chroot-only mode, the rootfs tree's `tmp`
/// (each run's `/tmp/run-<uid>`). Here they are host directories bound in, as an emptyDir is.
fn read_only_root(tmp: &Path, spec: &mut Value, rootfs_tmp: bool) {
    spec["root"]["readonly"] = json!(true);
    let mut writable = vec!["/tmp", "/run"];
    if rootfs_tmp {
        writable.push("/opt/prebake/bundle/rootfs/tmp");
    }
    for (i, dest) in writable.into_iter().enumerate() {
        let host = tmp.join(format!("writable-{i}"));
        fs::create_dir(&host).unwrap();
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": dest,
            "type": "bind",
            "source": host,
            "options": ["rbind", "rw"],
        }));
    }
}

#[test]
#[cfg_attr(
    not(all(have_root, have_umoci, have_runc)),
    ignore = "needs root, umoci and runc"
)]
fn serve_with_a_read_only_root_filesystem_in_both_modes() {
    let _exclusive = support::exclusive();
    for (what, caps, pid_one, mount_ns) in [
        ("ro-chroot", &[][..], "False", "mount_ns=no"),
        ("ro-ns", &["CAP_SYS_ADMIN"][..], "True", "mount_ns=yes"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (bundle, mut spec) = runc_bundle(tmp.path(), &["/usr/local/bin/runtime", "serve"]);
        // Namespace mode mounts a tmpfs over the tree's tmp: it needs no writable path there.
        read_only_root(tmp.path(), &mut spec, mount_ns == "mount_ns=no");
        let served = serve_bundle(tmp.path(), &bundle, spec, what, caps, pid_one);
        assert!(served.caps.contains(mount_ns), "{}", served.caps);
        assert!(served.log.contains("rootfs in place"), "{}", served.log);
        if mount_ns == "mount_ns=yes" {
            // Namespaces mode mounts the container's files over the stubs in the run's own
            // mount namespace: the read-only tree is never written.
            assert!(
                served.resolv_seen.contains(RESOLV_MARK),
                "{}\nlog:\n{}",
                served.resolv_seen,
                served.log
            );
            assert!(
                !served.log.contains("cannot copy /etc/resolv.conf"),
                "{}",
                served.log
            );
        } else {
            // What the README says: chroot-only mode copies into the tree, which cannot be
            // written here, so a run with network keeps the build-time stub, and the runtime
            // says why.
            assert!(
                !served.resolv_seen.contains(RESOLV_MARK)
                    && served.resolv_seen.contains("written by prebake"),
                "{}",
                served.resolv_seen
            );
            assert!(
                served.log.contains("cannot copy /etc/resolv.conf"),
                "{}",
                served.log
            );
        }
    }
}

#[test]
#[cfg_attr(
    not(all(have_root, have_umoci, have_runc)),
    ignore = "needs root, umoci and runc"
)]
fn read_only_root_without_the_rootfs_tmp_fails_in_chroot_mode_naming_it() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, mut spec) = runc_bundle(tmp.path(), &[]);
    read_only_root(tmp.path(), &mut spec, false);
    let script = tmp.path().join("script.py");
    fs::write(&script, "print(1)\n").unwrap();
    let o = runc_exec(&bundle, spec, &script, "ro-no-tmp");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("/opt/prebake/bundle/rootfs/tmp"),
        "the error does not name the path:\n{stderr}"
    );
}

/// A build that must fail before writing anything, with every needle in its stderr.
fn expect_failure(tmp: &Path, extra: &[&str], needles: &[&str]) {
    let out = tmp.join("out-fail");
    let mut args = vec!["build", default_spec(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let o = prebake(&args, "022", &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: {n:?} not in:\n{stderr}");
    }
    assert!(!out.exists(), "{args:?} left {}", out.display());
    // Checked before the spec is resolved: no rootfs was written.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{args:?} took {:?}",
        started.elapsed()
    );
    let leftovers: Vec<_> = fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".prebake-build-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_input_fails_before_any_work() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    expect_failure(
        t,
        &["--tag", "Prebake:1.0"],
        &["invalid image tag", "Prebake:1.0"],
    );
    expect_failure(t, &["--tag", "prebake:bad tag"], &["invalid image tag"]);
    let missing = t.join("no/such/runtime");
    expect_failure(
        t,
        &["--runtime", missing.to_str().unwrap()],
        &[
            missing.to_str().unwrap(),
            "cargo build --release --bin runtime",
        ],
    );
    let not_elf = t.join("runtime.txt");
    fs::write(&not_elf, "#!/bin/sh\n").unwrap();
    expect_failure(
        t,
        &["--runtime", not_elf.to_str().unwrap()],
        &[not_elf.to_str().unwrap(), "not an ELF"],
    );
    let archive = t.join("exists.tar");
    fs::write(&archive, "keep me").unwrap();
    expect_failure(
        t,
        &["--archive", archive.to_str().unwrap()],
        &[archive.to_str().unwrap(), "already exists"],
    );
    assert_eq!(fs::read(&archive).unwrap(), b"keep me");
    // An existing output directory is refused (without --force), and kept.
    let out = t.join("taken");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("precious"), "x").unwrap();
    let o = prebake(
        &["build", default_spec(), "--out", out.to_str().unwrap()],
        "022",
        &[],
    );
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(out.to_str().unwrap()) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs::read(out.join("precious")).unwrap(), b"x");
}

#[test]
fn no_image_writes_the_bundle_alone() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let summary = build(&out, &["--no-image"], "022", &[]);
    assert!(out.join("bundle/bundle.json").is_file());
    assert!(!out.join("image").exists());
    assert!(!summary.contains("image "), "{summary}");
}

/// The Containerfile's `prebake build` line only uses flags the CLI has.
#[test]
fn containerfile_uses_real_build_flags() {
    let _exclusive = support::exclusive();
    let text = fs::read_to_string(support::repo_root().join("Containerfile")).unwrap();
    // The RUN line (the comments mention `prebake build` too).
    let start = text
        .find("prebake build \"")
        .expect("a `prebake build \"SPEC\"` line");
    let mut line = String::new();
    for l in text[start..].lines() {
        line.push_str(l.trim_end_matches('\\'));
        if !l.ends_with('\\') {
            break;
        }
    }
    let help = Command::new(support::bin("prebake"))
        .args(["build", "--help"])
        .output()
        .unwrap();
    let help = ok(&help, "prebake build --help");
    let flags: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .collect();
    for f in ["--out", "--tag", "--runtime"] {
        assert!(flags.contains(&f), "{f} not in {line:?}");
    }
    for f in flags {
        assert!(
            help.contains(f),
            "Containerfile uses {f}, which `prebake build` lacks"
        );
    }
}
