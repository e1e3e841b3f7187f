//! The runtime's rootfs unpacker against hostile archives (hand-built headers, since
//! well-behaved builders refuse bad names) and against real bundles made by the writer.

use crate::support;
use prebake::contract::{BundleManifest, FORMAT_VERSION};
use prebake::plan::{Entry, EntryKind, Plan, Source};
use prebake::rootfs::{file_name, rootfs_info, write_tar_file, TarOptions};
use prebake::runtime::unpack::{
    check_runtime_paths, extract, unpack_bundle, UnpackError, UnpackOutcome, STAMP,
};
use prebake::spec::Compression;
use sha2::Digest;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

// ---- hand-built archives ------------------------------------------------------------------

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    field[..w].copy_from_slice(format!("{v:0w$o}").as_bytes());
    field[w] = 0;
}

/// One raw ustar header; `name` and `link` are truncated to 100 bytes like a naive writer.
fn header(name: &[u8], flag: u8, mode: u32, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 1000); // a non-root owner: the unpacker must not care
    octal(&mut h[116..124], 1000);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_234_567_890);
    h[156] = flag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

fn pad(v: &mut Vec<u8>) {
    v.resize(v.len().div_ceil(512) * 512, 0);
}

struct Tar(Vec<u8>);

impl Tar {
    fn new() -> Self {
        Tar(Vec::new())
    }
    fn member(mut self, name: &str, flag: u8, mode: u32, link: &str, data: &[u8]) -> Self {
        self.0.extend(header(
            name.as_bytes(),
            flag,
            mode,
            data.len() as u64,
            link.as_bytes(),
        ));
        self.0.extend_from_slice(data);
        pad(&mut self.0);
        self
    }
    fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.member(name, b'0', mode, "", data)
    }
    fn dir(self, name: &str) -> Self {
        self.member(name, b'5', 0o755, "", b"")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.member(name, b'2', 0o777, target, b"")
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.member(name, b'1', 0o644, target, b"")
    }
    /// An extension member (`x` PAX or `L` GNU long name) carrying `body`.
    fn extension(mut self, flag: u8, body: &[u8]) -> Self {
        let name: &[u8] = if flag == b'L' {
            b"././@LongLink"
        } else {
            b"././@PaxHeader"
        };
        self.0
            .extend(header(name, flag, 0o644, body.len() as u64, b""));
        self.0.extend_from_slice(body);
        pad(&mut self.0);
        self
    }
    fn pax_path(self, path: &str) -> Self {
        let rec = format!(" path={path}\n");
        let mut len = rec.len() + 1;
        while format!("{len}{rec}").len() != len {
            len += 1;
        }
        self.extension(b'x', format!("{len}{rec}").as_bytes())
    }
    fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// A base dir holding an empty `dest/` and a `sentinel/keep` that must never change.
struct Arena {
    _dir: tempfile::TempDir,
    base: PathBuf,
}

impl Arena {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        fs::create_dir(base.join("dest")).unwrap();
        fs::create_dir(base.join("sentinel")).unwrap();
        fs::write(base.join("sentinel/keep"), b"untouched").unwrap();
        Arena { _dir: dir, base }
    }
    fn dest(&self) -> PathBuf {
        self.base.join("dest")
    }
    fn sentinel(&self) -> PathBuf {
        self.base.join("sentinel")
    }
    fn assert_outside_untouched(&self) {
        let names = |p: &Path| {
            let mut v: Vec<String> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&self.base), ["dest", "sentinel"]);
        assert_eq!(names(&self.sentinel()), ["keep"]);
        assert_eq!(
            fs::read(self.sentinel().join("keep")).unwrap(),
            b"untouched"
        );
        let meta = fs::metadata(self.sentinel().join("keep")).unwrap();
        assert_eq!(meta.nlink(), 1, "sentinel gained a hardlink");
    }
}

fn assert_refused(what: &str, archive: &[u8], entry: &str) {
    let arena = Arena::new();
    let err = extract(archive, "none", &arena.dest()).expect_err(what);
    match &err {
        UnpackError::Refused { entry: e, .. } => assert_eq!(e, entry, "{what}: {err}"),
        other => panic!("{what}: expected a refusal naming {entry:?}, got {other}"),
    }
    eprintln!("{what}: {err}");
    assert!(err.to_string().contains(entry), "{what}: {err}");
    arena.assert_outside_untouched();
}

#[test]
fn hostile_archives_are_refused_and_write_nothing_outside() {
    let _exclusive = support::exclusive();
    let a = Arena::new();
    let sentinel_abs = a.sentinel().to_str().unwrap().to_owned();
    let sentinel_rel = sentinel_abs.trim_start_matches('/').to_owned();
    // Each case runs in a fresh arena; the paths aim at that arena's sentinel via `..`,
    // which resolves to the same relative place in every arena.
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "absolute path",
            Tar::new()
                .file(&format!("{sentinel_abs}/pwned"), 0o644, b"x")
                .end(),
            format!("{sentinel_abs}/pwned"),
        ),
        (
            "dot-dot",
            Tar::new().file("../sentinel/pwned", 0o644, b"x").end(),
            "../sentinel/pwned".into(),
        ),
        (
            "dot-dot in the middle",
            Tar::new()
                .dir("a/")
                .file("a/../../sentinel/pwned", 0o644, b"x")
                .end(),
            "a/../../sentinel/pwned".into(),
        ),
        (
            "write through a symlink to /",
            Tar::new()
                .symlink("evil", "/")
                .file(&format!("evil/{sentinel_rel}/pwned"), 0o644, b"x")
                .end(),
            format!("evil/{sentinel_rel}/pwned"),
        ),
        (
            "mkdir through a symlink",
            Tar::new().symlink("evil", "/").dir("evil/etc/").end(),
            "evil/etc/".into(),
        ),
        (
            "relative symlink escaping the root",
            Tar::new()
                .dir("a/")
                .dir("a/b/")
                .symlink("a/b/evil", "../../..")
                .end(),
            "a/b/evil".into(),
        ),
        (
            "symlink escaping the root, then written through",
            Tar::new()
                .symlink("evil", "../sentinel")
                .file("evil/pwned", 0o644, b"x")
                .end(),
            "evil".into(),
        ),
        (
            "hardlink to /etc/passwd",
            Tar::new().hardlink("passwd", "/etc/passwd").end(),
            "passwd".into(),
        ),
        (
            "hardlink out of the root",
            Tar::new().hardlink("keep", "../sentinel/keep").end(),
            "keep".into(),
        ),
        (
            "hardlink to a file not in the archive",
            Tar::new().hardlink("passwd", "etc/passwd").end(),
            "passwd".into(),
        ),
        (
            "hardlink to a symlink",
            Tar::new()
                .symlink("s", "/etc/passwd")
                .hardlink("h", "s")
                .end(),
            "h".into(),
        ),
        (
            "hardlink to a later file",
            Tar::new().hardlink("h", "f").file("f", 0o644, b"x").end(),
            "h".into(),
        ),
        (
            "character device that is not a safe /dev node (dev/null as 0:0)",
            Tar::new()
                .dir("dev/")
                .member("dev/null", b'3', 0o666, "", b"")
                .end(),
            "dev/null".into(),
        ),
        (
            "block device",
            Tar::new().member("sda", b'4', 0o660, "", b"").end(),
            "sda".into(),
        ),
        (
            "fifo",
            Tar::new().member("pipe", b'6', 0o644, "", b"").end(),
            "pipe".into(),
        ),
        (
            "setuid file",
            Tar::new().file("su", 0o4755, b"#!/bin/sh\n").end(),
            "su".into(),
        ),
        (
            "setgid directory",
            Tar::new().member("g/", b'5', 0o2755, "", b"").end(),
            "g/".into(),
        ),
        (
            "duplicate entry replacing a file with a symlink",
            Tar::new()
                .file("f", 0o644, b"x")
                .symlink("f", "/etc/shadow")
                .end(),
            "f".into(),
        ),
        (
            "PAX path overriding an innocent ustar name",
            Tar::new()
                .pax_path("../sentinel/pwned")
                .file("innocent", 0o644, b"x")
                .end(),
            "../sentinel/pwned".into(),
        ),
        (
            "GNU long name with dot-dot",
            Tar::new()
                .extension(
                    b'L',
                    format!("{}/../../sentinel/pwned\0", "d".repeat(120)).as_bytes(),
                )
                .file("innocent", 0o644, b"x")
                .end(),
            format!("{}/../../sentinel/pwned", "d".repeat(120)),
        ),
    ];
    drop(a);
    for (what, archive, entry) in cases {
        assert_refused(what, &archive, &entry);
    }
}

#[test]
fn long_names_from_pax_and_gnu_headers_are_honoured() {
    let _exclusive = support::exclusive();
    let arena = Arena::new();
    let long = format!("{}/{}", "p".repeat(120), "q".repeat(150));
    let gnu = format!("{}/file", "g".repeat(130));
    let archive = Tar::new()
        .pax_path(&format!("{}/", "p".repeat(120)))
        .dir("ignored-short-name/")
        .pax_path(&long)
        .file("ignored-too", 0o644, b"pax")
        .extension(b'L', format!("{gnu}\0").as_bytes())
        .file("ignored-three", 0o755, b"gnu")
        .end();
    let stats = extract(&archive[..], "none", &arena.dest()).unwrap();
    assert_eq!(fs::read(arena.dest().join(&long)).unwrap(), b"pax");
    assert_eq!(fs::read(arena.dest().join(&gnu)).unwrap(), b"gnu");
    assert!(!arena.dest().join("ignored-too").exists());
    assert_eq!((stats.files, stats.dirs), (2, 1));
    // Archive uid 1000 is not reproduced: files belong to the extracting user.
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(fs::metadata(arena.dest().join(&long)).unwrap().uid(), uid);
    arena.assert_outside_untouched();
}

// ---- archives from the real writer --------------------------------------------------------

const EPOCH: u64 = 1_600_000_000;

fn entry(kind: EntryKind, mode: u32) -> Entry {
    Entry {
        kind,
        mode,
        provenance: "test".into(),
    }
}

/// A small rootfs plan: host files (one exec, one hardlinked pair), inline files, symlinks
/// (relative, absolute, long), sticky /tmp, a long path.
fn sample_plan(host: &Path, flavour: &str) -> Plan {
    fs::create_dir_all(host).unwrap();
    fs::write(host.join("python"), b"\x7fELF python").unwrap();
    fs::set_permissions(host.join("python"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(host.join("libz.so.1.3"), vec![7u8; 200_000]).unwrap();
    let _ = fs::remove_file(host.join("libz-copy"));
    fs::hard_link(host.join("libz.so.1.3"), host.join("libz-copy")).unwrap();
    let mut plan = Plan::new();
    let host_file = |p: &str| EntryKind::File {
        source: Source::Host(host.join(p)),
    };
    plan.add_dir("/usr/bin", 0o755, "t").unwrap();
    plan.add_dir("/usr/lib", 0o755, "t").unwrap();
    plan.add_dir("/tmp", 0o1777, "t").unwrap();
    plan.insert("/usr/bin/python3".into(), entry(host_file("python"), 0o755))
        .unwrap();
    plan.insert(
        "/usr/lib/libz.so.1.3".into(),
        entry(host_file("libz.so.1.3"), 0o644),
    )
    .unwrap();
    plan.insert(
        "/usr/lib/libz.so.1.3-hard".into(),
        entry(host_file("libz-copy"), 0o644),
    )
    .unwrap();
    plan.insert(
        "/usr/lib/libz.so.1".into(),
        entry(
            EntryKind::Symlink {
                target: "libz.so.1.3".into(),
            },
            0o777,
        ),
    )
    .unwrap();
    plan.insert(
        "/usr/bin/python".into(),
        entry(
            EntryKind::Symlink {
                target: "/usr/bin/python3".into(),
            },
            0o777,
        ),
    )
    .unwrap();
    let long = format!("/usr/lib/{}/{}", "x".repeat(90), "y".repeat(90));
    plan.add_inline(&long, b"deep".to_vec(), 0o644, "t")
        .unwrap();
    plan.add_inline("/etc/flavour", flavour.as_bytes().to_vec(), 0o644, "t")
        .unwrap();
    plan
}

fn check_sample_tree(root: &Path, flavour: &str) {
    let mode = |p: &str| {
        fs::symlink_metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        fs::read(root.join("usr/bin/python3")).unwrap(),
        b"\x7fELF python"
    );
    assert_eq!(mode("usr/bin/python3"), 0o755);
    assert_eq!(mode("usr/lib/libz.so.1.3"), 0o644);
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("usr"), 0o755);
    assert_eq!(
        fs::read_link(root.join("usr/lib/libz.so.1")).unwrap(),
        Path::new("libz.so.1.3")
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/python")).unwrap(),
        Path::new("/usr/bin/python3")
    );
    let a = fs::metadata(root.join("usr/lib/libz.so.1.3")).unwrap();
    let b = fs::metadata(root.join("usr/lib/libz.so.1.3-hard")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "hardlink pair");
    assert_eq!(a.len(), 200_000);
    let long = format!("usr/lib/{}/{}", "x".repeat(90), "y".repeat(90));
    assert_eq!(fs::read(root.join(long)).unwrap(), b"deep");
    assert_eq!(
        fs::read_to_string(root.join("etc/flavour")).unwrap(),
        flavour
    );
    for p in ["usr", "usr/lib", "usr/bin/python3", "tmp", "etc/flavour"] {
        assert_eq!(
            fs::metadata(root.join(p)).unwrap().mtime(),
            i64::try_from(EPOCH).unwrap(),
            "{p}"
        );
    }
    let link = fs::symlink_metadata(root.join("usr/bin/python")).unwrap();
    assert_eq!(link.mtime(), i64::try_from(EPOCH).unwrap());
}

#[test]
fn archives_from_the_writer_extract_exactly() {
    let _exclusive = support::exclusive();
    for c in [None, Some(Compression::Zstd), Some(Compression::Gzip)] {
        let dir = tempfile::tempdir().unwrap();
        let plan = sample_plan(&dir.path().join("host"), "one");
        let path = dir.path().join(file_name(c));
        let opts = TarOptions {
            compression: c,
            mtime: EPOCH,
            ..Default::default()
        };
        let written = write_tar_file(&plan, &path, &opts, &mut |_| {}).unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let name = prebake::rootfs::compression_name(c);
        let got = extract(fs::File::open(&path).unwrap(), name, &dest).unwrap();
        check_sample_tree(&dest, "one");
        assert_eq!(got.sha256_compressed, written.sha256_compressed, "{c:?}");
        assert_eq!(
            got.sha256_uncompressed, written.sha256_uncompressed,
            "{c:?}"
        );
        assert_eq!(got.size_compressed, written.size_compressed);
        assert_eq!(
            (got.files, got.dirs, got.symlinks, got.hardlinks),
            (
                written.files,
                written.dirs,
                written.symlinks,
                written.hardlinks
            ),
            "{c:?}"
        );
    }
}

/// A bundle directory holding a zstd rootfs of `sample_plan(flavour)` and its manifest.
fn make_bundle(dir: &Path, flavour: &str) -> BundleManifest {
    fs::create_dir_all(dir).unwrap();
    let plan = sample_plan(&dir.join("host"), flavour);
    let c = Some(Compression::Zstd);
    let opts = TarOptions {
        compression: c,
        mtime: EPOCH,
        ..Default::default()
    };
    let stats = write_tar_file(&plan, &dir.join(file_name(c)), &opts, &mut |_| {}).unwrap();
    BundleManifest {
        format_version: FORMAT_VERSION,
        prebake_version: "test".into(),
        spec_digest: "0".repeat(64),
        rootfs: rootfs_info(&stats, file_name(c), c),
        languages: BTreeMap::new(),
        provenance: BTreeMap::new(),
    }
}

/// The unpackers' lock file beside a root named `root` (never removed: see the module docs).
const LOCK: &str = ".root.prebake.lock";

fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn unpack_once_then_already_present_then_replace() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let bundle_a = dir.path().join("bundle-a");
    let manifest_a = make_bundle(&bundle_a, "one");
    let sandbox = dir.path().join("sandbox");
    let root = sandbox.join("root");

    let first = unpack_bundle(&bundle_a, &manifest_a, &root).unwrap();
    assert!(
        matches!(first, UnpackOutcome::Unpacked { files: 5, bytes } if bytes > 200_000),
        "{first:?}"
    );
    check_sample_tree(&root, "one");
    assert_eq!(
        fs::read_to_string(root.join(STAMP)).unwrap(),
        format!("{}\n", manifest_a.rootfs.sha256_compressed)
    );
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);

    let t = Instant::now();
    let again = unpack_bundle(&bundle_a, &manifest_a, &root).unwrap();
    let took = t.elapsed();
    assert_eq!(again, UnpackOutcome::AlreadyPresent);
    assert!(took.as_millis() < 10, "AlreadyPresent took {took:?}");

    // A different bundle replaces the whole tree and leaves no temp dir behind.
    fs::write(root.join("left-by-old-tree"), b"x").unwrap();
    let bundle_b = dir.path().join("bundle-b");
    let manifest_b = make_bundle(&bundle_b, "two");
    assert_ne!(
        manifest_a.rootfs.sha256_compressed,
        manifest_b.rootfs.sha256_compressed
    );
    let replaced = unpack_bundle(&bundle_b, &manifest_b, &root).unwrap();
    assert!(matches!(replaced, UnpackOutcome::Unpacked { .. }));
    check_sample_tree(&root, "two");
    assert!(!root.join("left-by-old-tree").exists());
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);

    // A manifest whose digest does not match its archive is refused; the tree stays.
    let mut bad = manifest_a.clone();
    bad.rootfs.sha256_compressed = "f".repeat(64);
    let err = unpack_bundle(&bundle_a, &bad, &root).unwrap_err();
    assert!(matches!(err, UnpackError::Digest { .. }), "{err}");
    assert!(err.to_string().contains("rootfs.tar.zst"), "{err}");
    check_sample_tree(&root, "two");
    assert_eq!(
        fs::read_to_string(root.join(STAMP)).unwrap(),
        format!("{}\n", manifest_b.rootfs.sha256_compressed)
    );
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);
    assert_eq!(
        unpack_bundle(&bundle_b, &manifest_b, &root).unwrap(),
        UnpackOutcome::AlreadyPresent
    );
}

#[test]
fn a_hostile_bundle_leaves_the_old_tree_and_no_temp_dir() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = make_bundle(&bundle, "one");
    let sandbox = dir.path().join("sandbox");
    let root = sandbox.join("root");
    unpack_bundle(&bundle, &manifest, &root).unwrap();

    let evil = dir.path().join("evil");
    fs::create_dir(&evil).unwrap();
    let archive = Tar::new()
        .file("ok", 0o644, b"fine")
        .file("../escape", 0o644, b"x")
        .end();
    fs::write(evil.join("rootfs.tar"), &archive).unwrap();
    let mut m = manifest.clone();
    m.rootfs.file = "rootfs.tar".into();
    m.rootfs.compression = "none".into();
    // The manifest vouches for the archive (an attacker who swaps one swaps both): the
    // extractor's own checks must stop it.
    let digest = hex::encode(sha2::Sha256::digest(&archive));
    m.rootfs.sha256_compressed = digest.clone();
    m.rootfs.sha256_uncompressed = digest;
    let err = unpack_bundle(&evil, &m, &root).unwrap_err();
    assert!(err.to_string().contains("../escape"), "{err}");
    check_sample_tree(&root, "one");
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);
}

#[test]
fn stale_temp_dirs_from_a_killed_unpack_are_swept() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = make_bundle(&bundle, "one");
    let sandbox = dir.path().join("sandbox");
    fs::create_dir_all(sandbox.join(".root.prebake-new-abc123/usr")).unwrap();
    let root = sandbox.join("root");
    unpack_bundle(&bundle, &manifest, &root).unwrap();
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);
}

#[test]
fn an_empty_existing_root_is_replaced() {
    let _exclusive = support::exclusive();
    // Images often create the sandbox directory empty; the exchange must handle it.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = make_bundle(&bundle, "one");
    let root = dir.path().join("sandbox/root");
    fs::create_dir_all(&root).unwrap();
    unpack_bundle(&bundle, &manifest, &root).unwrap();
    check_sample_tree(&root, "one");
}

#[test]
fn an_uncompressed_directory_bundle_is_used_in_place() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    fs::create_dir_all(bundle.join("rootfs/usr")).unwrap();
    let mut manifest = make_bundle(&dir.path().join("other"), "one");
    manifest.rootfs.file = "rootfs".into();
    manifest.rootfs.compression = "none".into();
    let root = dir.path().join("sandbox/root");
    let got = unpack_bundle(&bundle, &manifest, &root).unwrap();
    assert_eq!(got, UnpackOutcome::InPlace(bundle.join("rootfs")));
    assert!(!root.exists());
}

#[test]
fn an_unknown_compression_is_refused_by_name() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = make_bundle(&dir.path().join("bundle"), "one");
    manifest.rootfs.compression = "xz".into();
    let err =
        unpack_bundle(&dir.path().join("bundle"), &manifest, &dir.path().join("r")).unwrap_err();
    assert!(err.to_string().contains("\"xz\""), "{err}");
}

#[test]
fn a_truncated_archive_is_an_error() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let plan = sample_plan(&dir.path().join("host"), "one");
    let path = dir.path().join("r.tar.zst");
    let opts = TarOptions {
        compression: Some(Compression::Zstd),
        mtime: 0,
        ..Default::default()
    };
    write_tar_file(&plan, &path, &opts, &mut |_| {}).unwrap();
    let bytes = fs::read(&path).unwrap();
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let err = extract(&bytes[..bytes.len() / 2], "zstd", &dest).unwrap_err();
    assert!(
        matches!(err, UnpackError::Corrupt(_) | UnpackError::Entry { .. }),
        "{err}"
    );
}

/// The harmless /dev nodes the plan may carry come back as real device nodes (as root), and
/// the same path with other device numbers is refused.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn safe_dev_nodes_are_created_and_others_refused() {
    let _exclusive = support::exclusive();
    use std::os::unix::fs::FileTypeExt;
    let mut plan = Plan::new();
    plan.add_dir("/dev", 0o755, "t").unwrap();
    plan.insert(
        "/dev/null".into(),
        entry(EntryKind::CharDevice { major: 1, minor: 3 }, 0o666),
    )
    .unwrap();
    let mut tar = Vec::new();
    prebake::rootfs::write_tar(&plan, &mut tar, &Default::default(), &mut |_| {}).unwrap();
    let dest = tempfile::tempdir().unwrap();
    prebake::runtime::unpack::extract(&tar[..], "none", dest.path()).unwrap();
    let meta = fs::metadata(dest.path().join("dev/null")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    assert_eq!(meta.rdev(), libc::makedev(1, 3));

    let mut bad = Plan::new();
    bad.add_dir("/dev", 0o755, "t").unwrap();
    bad.insert(
        "/dev/null".into(),
        entry(EntryKind::CharDevice { major: 8, minor: 0 }, 0o666),
    )
    .unwrap();
    let mut tar = Vec::new();
    prebake::rootfs::write_tar(&bad, &mut tar, &Default::default(), &mut |_| {}).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = prebake::runtime::unpack::extract(&tar[..], "none", dest.path()).unwrap_err();
    assert!(err.to_string().contains("dev/null"), "{err}");
    assert!(!dest.path().join("dev/null").exists());
}

// ---- issue 10: hardening ------------------------------------------------------------------

fn mode_at(root: &Path, p: &str) -> u32 {
    fs::symlink_metadata(root.join(p))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// A world-writable or sticky entry anywhere but the top-level `tmp` would be writable by
/// every chroot-only run and shared across runs (bundles of earlier prebake versions carry a
/// 1777 `var/tmp` when the venv lived under /var/tmp): it is unpacked without o+w, g+w and
/// the sticky bit. `tmp` keeps its 1777.
#[test]
fn world_writable_and_sticky_modes_are_neutralized_except_tmp() {
    let _exclusive = support::exclusive();
    let arena = Arena::new();
    let archive = Tar::new()
        .member("tmp/", b'5', 0o1777, "", b"")
        .member("var/", b'5', 0o777, "", b"")
        .member("var/tmp/", b'5', 0o1777, "", b"")
        .member("usr/", b'5', 0o775, "", b"")
        .member("usr/tmp/", b'5', 0o1777, "", b"")
        .member("srv/", b'5', 0o1755, "", b"")
        .file("usr/open.txt", 0o666, b"x")
        .file("usr/tool", 0o777, b"#!/bin/sh\n")
        .file("usr/sticky", 0o1644, b"x")
        .end();
    extract(&archive[..], "none", &arena.dest()).unwrap();
    let d = arena.dest();
    assert_eq!(mode_at(&d, "tmp"), 0o1777);
    for (p, want) in [
        ("var", 0o755),
        ("var/tmp", 0o755),
        ("usr", 0o755),
        ("usr/tmp", 0o755),
        ("srv", 0o755),
        ("usr/open.txt", 0o644),
        ("usr/tool", 0o755),
        ("usr/sticky", 0o644),
    ] {
        assert_eq!(mode_at(&d, p), want, "{p}");
    }
    arena.assert_outside_untouched();
}

/// The runtime writes on the host side at `tmp` (chmod, per-run directories), mounts on
/// `tmp` and `dev`, and rewrites `etc/resolv.conf` and `etc/hosts`: a symlink there (or on
/// the way there) would redirect those writes to the host (`tmp -> /run` made chroot mode
/// chmod the host's /run). Such archives are refused, naming the entry.
#[test]
fn symlinks_and_wrong_types_at_runtime_paths_are_refused() {
    let _exclusive = support::exclusive();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "tmp -> /run",
            Tar::new().symlink("tmp", "/run").end(),
            "tmp",
        ),
        (
            "./tmp -> /run",
            Tar::new().dir("./").symlink("./tmp", "/run").end(),
            "./tmp",
        ),
        (
            "tmp -> relative",
            Tar::new().dir("run/").symlink("tmp", "run").end(),
            "tmp",
        ),
        (
            "dev -> /dev",
            Tar::new().symlink("dev", "/dev").end(),
            "dev",
        ),
        (
            "etc -> /etc",
            Tar::new().symlink("etc", "/etc").end(),
            "etc",
        ),
        (
            "var -> /run",
            Tar::new().symlink("var", "/run").end(),
            "var",
        ),
        (
            "var/tmp -> /run",
            Tar::new().dir("var/").symlink("var/tmp", "/run").end(),
            "var/tmp",
        ),
        (
            "proc -> /proc",
            Tar::new().symlink("proc", "/proc").end(),
            "proc",
        ),
        (
            "etc/resolv.conf -> /etc/resolv.conf",
            Tar::new()
                .dir("etc/")
                .symlink("etc/resolv.conf", "/etc/resolv.conf")
                .end(),
            "etc/resolv.conf",
        ),
        (
            "etc/hosts -> hosts.real",
            Tar::new()
                .dir("etc/")
                .file("etc/hosts.real", 0o644, b"x")
                .symlink("etc/hosts", "hosts.real")
                .end(),
            "etc/hosts",
        ),
        (
            "tmp as a regular file",
            Tar::new().file("tmp", 0o644, b"").end(),
            "tmp",
        ),
        (
            "dev as a hardlink",
            Tar::new().file("f", 0o644, b"").hardlink("dev", "f").end(),
            "dev",
        ),
        (
            "etc/hosts as a directory",
            Tar::new().dir("etc/").dir("etc/hosts/").end(),
            "etc/hosts/",
        ),
    ];
    for (what, archive, entry) in cases {
        assert_refused(what, &archive, entry);
    }
    // The message says what is wrong and what to do.
    let arena = Arena::new();
    let err = extract(
        &Tar::new().symlink("tmp", "/run").end()[..],
        "none",
        &arena.dest(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("symlink") && err.contains("rebuild"),
        "unhelpful message: {err}"
    );
}

/// A rootfs of `n` small files: big enough that its extraction takes a while.
fn many_files_bundle(dir: &Path, n: usize) -> BundleManifest {
    fs::create_dir_all(dir).unwrap();
    let mut plan = Plan::new();
    plan.add_dir("/tmp", 0o1777, "t").unwrap();
    for i in 0..n {
        plan.add_inline(
            &format!("/usr/lib/d{}/f{i}", i % 50),
            format!("file {i}\n").into_bytes(),
            0o644,
            "t",
        )
        .unwrap();
    }
    let c = Some(Compression::Zstd);
    let opts = TarOptions {
        compression: c,
        mtime: EPOCH,
        ..Default::default()
    };
    let stats = write_tar_file(&plan, &dir.join(file_name(c)), &opts, &mut |_| {}).unwrap();
    BundleManifest {
        format_version: FORMAT_VERSION,
        prebake_version: "test".into(),
        spec_digest: "0".repeat(64),
        rootfs: rootfs_info(&stats, file_name(c), c),
        languages: BTreeMap::new(),
        provenance: BTreeMap::new(),
    }
}

/// `serve` and `exec` on the same root at the same time: the second unpacker used to sweep
/// the first one's temp tree as "stale" mid-extraction. Now it waits for the first and finds
/// the tree present.
#[test]
fn concurrent_unpacks_of_one_root_both_succeed() {
    let _exclusive = support::exclusive();
    const N: usize = 4000;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = many_files_bundle(&bundle, N);
    let sandbox = dir.path().join("sandbox");
    let root = sandbox.join("root");

    let first = {
        let (b, m, r) = (bundle.clone(), manifest.clone(), root.clone());
        std::thread::spawn(move || unpack_bundle(&b, &m, &r))
    };
    // Start the second one while the first is extracting (its temp tree exists).
    let t = Instant::now();
    while !first.is_finished() && t.elapsed().as_secs() < 60 {
        let extracting = fs::read_dir(&sandbox).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".root.prebake-new-")
            })
        });
        if extracting {
            break;
        }
        std::thread::yield_now();
    }
    let second = {
        let (b, m, r) = (bundle.clone(), manifest.clone(), root.clone());
        std::thread::spawn(move || unpack_bundle(&b, &m, &r))
    };
    let a = first.join().unwrap();
    let b = second.join().unwrap();
    let (a, b) = (
        a.unwrap_or_else(|e| panic!("first unpack: {e}")),
        b.unwrap_or_else(|e| panic!("second unpack: {e}")),
    );
    assert!(
        matches!(a, UnpackOutcome::Unpacked { files, .. } if files == N as u64),
        "{a:?}"
    );
    assert_eq!(b, UnpackOutcome::AlreadyPresent);
    let files: usize = walkdir::WalkDir::new(root.join("usr/lib"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(files, N);
    assert_eq!(
        fs::read_to_string(root.join("usr/lib/d7/f1007")).unwrap(),
        "file 1007\n"
    );
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);
}

/// The runtime's path check on a tree it did not unpack: through descriptors, never following
/// a link, naming the path; absent paths are fine.
#[test]
fn check_runtime_paths_finds_symlinks_and_wrong_types_without_following_them() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host-run");
    fs::create_dir(&host).unwrap();
    let root = dir.path().join("rootfs");
    fs::create_dir_all(root.join("usr")).unwrap();
    // Nothing of RUNTIME_PATHS present: fine.
    check_runtime_paths(&root).unwrap();
    for d in ["tmp", "dev", "proc", "etc", "var/tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/hosts"), b"").unwrap();
    fs::write(root.join("etc/resolv.conf"), b"").unwrap();
    check_runtime_paths(&root).unwrap();

    let expect = |path: &str, found: &str| {
        let err = check_runtime_paths(&root).unwrap_err();
        match &err {
            UnpackError::RuntimePath {
                path: p, found: f, ..
            } => {
                assert_eq!((*p, *f), (path, found), "{err}")
            }
            other => panic!("{path}: expected a RuntimePath error, got {other}"),
        }
        assert!(err.to_string().contains(path), "{err}");
    };
    let swap_for_link = |p: &str, target: &Path| {
        let at = root.join(p);
        if at.is_dir() {
            fs::remove_dir(&at).unwrap();
        } else {
            fs::remove_file(&at).unwrap();
        }
        std::os::unix::fs::symlink(target, &at).unwrap();
    };
    swap_for_link("tmp", &host);
    expect("tmp", "a symlink");
    fs::remove_file(root.join("tmp")).unwrap();
    fs::write(root.join("tmp"), b"").unwrap();
    expect("tmp", "a regular file");
    fs::remove_file(root.join("tmp")).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();

    swap_for_link("var/tmp", &host);
    expect("var/tmp", "a symlink");
    fs::remove_file(root.join("var/tmp")).unwrap();
    fs::remove_dir(root.join("var")).unwrap();
    // var -> host/ with a real `tmp` directory behind it: reported at var, never followed.
    fs::create_dir(host.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&host, root.join("var")).unwrap();
    expect("var", "a symlink");
    fs::remove_file(root.join("var")).unwrap();

    swap_for_link("etc/resolv.conf", &host.join("resolv.conf"));
    expect("etc/resolv.conf", "a symlink");
    fs::remove_file(root.join("etc/resolv.conf")).unwrap();
    swap_for_link("dev", Path::new("/dev"));
    expect("dev", "a symlink");
    fs::remove_file(root.join("dev")).unwrap();
    check_runtime_paths(&root).unwrap();
    assert_eq!(dir_names(&host), ["tmp"], "the check wrote through a link");
}

/// An in-place rootfs (a directory bundle) with `tmp -> /run` is refused before the runtime
/// uses it.
#[test]
fn an_in_place_rootfs_with_a_symlinked_tmp_is_refused() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    fs::create_dir_all(bundle.join("rootfs/usr")).unwrap();
    std::os::unix::fs::symlink("/run", bundle.join("rootfs/tmp")).unwrap();
    let mut manifest = make_bundle(&dir.path().join("other"), "one");
    manifest.rootfs.file = "rootfs".into();
    manifest.rootfs.compression = "none".into();
    let err = unpack_bundle(&bundle, &manifest, &dir.path().join("sandbox/root")).unwrap_err();
    assert!(
        matches!(err, UnpackError::RuntimePath { path: "tmp", .. }),
        "{err}"
    );
}

/// A tree whose stamp matches but that was unpacked without the path checks (an earlier
/// prebake) or changed since is not trusted: it is unpacked again, and the host directory a
/// planted link pointed at is left alone.
#[test]
fn a_present_tree_with_a_symlinked_tmp_is_unpacked_again() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = make_bundle(&bundle, "one");
    let sandbox = dir.path().join("sandbox");
    let root = sandbox.join("root");
    unpack_bundle(&bundle, &manifest, &root).unwrap();
    let host = dir.path().join("host-run");
    fs::create_dir(&host).unwrap();
    fs::remove_dir(root.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&host, root.join("tmp")).unwrap();

    let got = unpack_bundle(&bundle, &manifest, &root).unwrap();
    assert!(matches!(got, UnpackOutcome::Unpacked { .. }), "{got:?}");
    check_sample_tree(&root, "one");
    check_runtime_paths(&root).unwrap();
    assert!(dir_names(&host).is_empty());
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);
    assert_eq!(
        unpack_bundle(&bundle, &manifest, &root).unwrap(),
        UnpackOutcome::AlreadyPresent
    );
}

/// The same race between two real `runtime unpack` processes (what `serve` and `exec`
/// started together do): both succeed, one unpacks, the other finds the tree.
#[test]
fn concurrent_runtime_unpack_processes_both_succeed() {
    let _exclusive = support::exclusive();
    const N: usize = 4000;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = many_files_bundle(&bundle, N);
    fs::write(
        bundle.join(prebake::contract::MANIFEST_FILE),
        manifest.to_json(),
    )
    .unwrap();
    let sandbox = dir.path().join("sandbox");
    let root = sandbox.join("root");
    let spawn = || {
        std::process::Command::new(support::bin("runtime"))
            .arg("unpack")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--root")
            .arg(&root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    let t = Instant::now();
    while first.try_wait().unwrap().is_none() && t.elapsed().as_secs() < 60 {
        let extracting = fs::read_dir(&sandbox).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".root.prebake-new-")
            })
        });
        if extracting {
            break;
        }
        std::thread::yield_now();
    }
    let second = spawn();
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut hows = Vec::new();
    for o in &outs {
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "runtime unpack failed: {}\n{stdout}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        hows.push(if stdout.contains("already unpacked") {
            "already"
        } else {
            "unpacked"
        });
    }
    hows.sort();
    assert_eq!(hows, ["already", "unpacked"]);
    let files = walkdir::WalkDir::new(root.join("usr/lib"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(files, N);
    assert_eq!(dir_names(&sandbox), [LOCK, "root"]);
}

/// With the tree already there, the unpacker takes no lock and writes nothing beside the
/// root, so it works where the root's parent is read-only once the tree is in place.
#[test]
fn an_already_present_tree_needs_no_write_beside_the_root() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let manifest = make_bundle(&bundle, "one");
    let sandbox = dir.path().join("sandbox");
    let root = sandbox.join("root");
    unpack_bundle(&bundle, &manifest, &root).unwrap();
    fs::remove_file(sandbox.join(LOCK)).unwrap();
    assert_eq!(
        unpack_bundle(&bundle, &manifest, &root).unwrap(),
        UnpackOutcome::AlreadyPresent
    );
    assert_eq!(dir_names(&sandbox), ["root"]);
}
