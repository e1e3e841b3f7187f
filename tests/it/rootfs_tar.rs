//! The rootfs tarball writer against real readers: GNU tar, Python's tarfile, the zstd and
//! gzip command-line tools, and reproducibility across runs, copies, umasks and epochs.

use crate::support;
use prebake::plan::{Entry, EntryKind, Plan, Source};
use prebake::rootfs::{write_tar, write_tar_file, RootfsError, TarOptions, TarStats};
use prebake::spec::Compression;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A component long enough that three of them overflow ustar's 100-byte name field and six
/// overflow 255 bytes (each stays under NAME_MAX).
fn long_component(c: char) -> String {
    c.to_string().repeat(60)
}

fn long_dir() -> String {
    (0..3)
        .map(|i| long_component((b'a' + i) as char))
        .collect::<Vec<_>>()
        .join("/")
}

fn longer_dir() -> String {
    (0..5)
        .map(|i| long_component((b'k' + i) as char))
        .collect::<Vec<_>>()
        .join("/")
}

/// Relative paths of the test tree in creation order, with what each one is.
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(&'static str),
    Hard(&'static str),
}

fn tree_nodes() -> Vec<(String, Node)> {
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13).to_le_bytes()[0])
        .collect();
    vec![
        ("usr".into(), Node::Dir(0o755)),
        ("usr/bin".into(), Node::Dir(0o700)),
        (
            "usr/bin/tool".into(),
            Node::File(0o700, b"#!/bin/sh\necho hi\n".to_vec()),
        ),
        (
            "usr/bin/su".into(),
            Node::File(0o4755, b"setuid\n".to_vec()),
        ),
        ("usr/lib".into(), Node::Dir(0o755)),
        (
            "usr/lib/data.txt".into(),
            Node::File(0o600, b"plain data\n".to_vec()),
        ),
        ("usr/lib/big.bin".into(), Node::File(0o644, big)),
        (
            "usr/lib/libfoo.so.1".into(),
            Node::File(0o755, b"\x7fELF pretend\n".to_vec()),
        ),
        (
            "usr/lib/libfoo-hard.so.1".into(),
            Node::Hard("usr/lib/libfoo.so.1"),
        ),
        ("usr/lib/libfoo.so".into(), Node::Link("libfoo.so.1")),
        ("tmp".into(), Node::Dir(0o1777)),
        (long_dir(), Node::Dir(0o755)),
        (
            format!("{}/file-in-long-dir", long_dir()),
            Node::File(0o644, b"long\n".to_vec()),
        ),
        (longer_dir(), Node::Dir(0o755)),
        (
            format!("{}/deep-file", longer_dir()),
            Node::File(0o644, b"deeper\n".to_vec()),
        ),
        // Points at the file >255 bytes away: the link target needs a PAX linkpath.
        ("usr/lib/long-link".into(), Node::Link("LONG_TARGET")),
    ]
}

fn long_target() -> String {
    format!("../../{}/deep-file", longer_dir())
}

/// Create the tree under `root`, in `order` (indices into tree_nodes), narrowing every mode
/// with `mask` the way a umask would.
fn make_tree(root: &Path, reverse: bool, mask: u32) {
    let mut nodes = tree_nodes();
    // Directories first (files need them), each group in the requested order.
    nodes.sort_by_key(|(_, n)| !matches!(n, Node::Dir(_)));
    if reverse {
        let (dirs, rest): (Vec<_>, Vec<_>) = nodes
            .into_iter()
            .partition(|(_, n)| matches!(n, Node::Dir(_)));
        // Reverse creation order: deepest/last directories first (create_dir_all makes
        // their parents on the way), then files last-to-first. Hardlink targets must exist
        // first, so hardlinks go after everything else.
        let (hard, rest): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(_, n)| matches!(n, Node::Hard(_)));
        nodes = dirs
            .into_iter()
            .rev()
            .chain(rest.into_iter().rev())
            .chain(hard)
            .collect();
    }
    for (rel, node) in &nodes {
        let p = root.join(rel);
        match node {
            Node::Dir(_) => fs::create_dir_all(&p).unwrap(),
            Node::File(_, bytes) => fs::write(&p, bytes).unwrap(),
            Node::Link(t) => {
                let t = if *t == "LONG_TARGET" {
                    long_target()
                } else {
                    t.to_string()
                };
                symlink(t, &p).unwrap()
            }
            Node::Hard(t) => fs::hard_link(root.join(t), &p).unwrap(),
        }
    }
    // Modes last, deepest first, so restrictive directory modes do not block creation.
    for (rel, node) in nodes.iter().rev() {
        let mode = match node {
            Node::Dir(m) | Node::File(m, _) => *m,
            _ => continue,
        };
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode & !mask)).unwrap();
    }
}

/// The plan for the tree at `root`: rootfs path "/<rel>" for each host path, plus an inline
/// file, as the build stages would make it.
fn plan_of(root: &Path) -> Plan {
    let mut plan = Plan::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap();
        let meta = e.path().symlink_metadata().unwrap();
        let kind = if meta.file_type().is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(e.path()).unwrap(),
            }
        } else if meta.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File {
                source: Source::Host(e.path().to_path_buf()),
            }
        };
        plan.insert(
            format!("/{rel}"),
            Entry {
                kind,
                mode: meta.permissions().mode() & 0o7777,
                provenance: "test tree".into(),
            },
        )
        .unwrap();
    }
    plan.add_inline(
        "/etc/passwd",
        b"root:x:0:0::/:/bin/sh\n".to_vec(),
        0o600,
        "inline",
    )
    .unwrap();
    plan
}

fn tar_bytes(plan: &Plan, compression: Option<Compression>, mtime: u64) -> (Vec<u8>, TarStats) {
    let mut out = Vec::new();
    let stats = write_tar(
        plan,
        &mut out,
        &TarOptions {
            compression,
            mtime,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    (out, stats)
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    plan: Plan,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    fs::create_dir(&root).unwrap();
    make_tree(&root, false, 0o022);
    let plan = plan_of(&root);
    Fixture {
        _dir: dir,
        root,
        plan,
    }
}

/// (name, mode, type char, link target) for every entry the plan should produce.
fn expected_members() -> Vec<(String, u32, char, String)> {
    let mut v = vec![
        ("etc/".to_string(), 0o755, 'd', String::new()),
        ("etc/passwd".into(), 0o644, '-', String::new()),
        ("tmp/".into(), 0o1777, 'd', String::new()),
        ("usr/".into(), 0o755, 'd', String::new()),
        ("usr/bin/".into(), 0o755, 'd', String::new()),
        ("usr/bin/su".into(), 0o755, '-', String::new()),
        ("usr/bin/tool".into(), 0o755, '-', String::new()),
        ("usr/lib/".into(), 0o755, 'd', String::new()),
        ("usr/lib/big.bin".into(), 0o644, '-', String::new()),
        ("usr/lib/data.txt".into(), 0o644, '-', String::new()),
        // libfoo-hard sorts before libfoo.so ('-' < '.'), so it is the first path of the
        // inode and the file; libfoo.so.1 becomes the hardlink.
        ("usr/lib/libfoo-hard.so.1".into(), 0o755, '-', String::new()),
        ("usr/lib/libfoo.so".into(), 0o777, 'l', "libfoo.so.1".into()),
        (
            "usr/lib/libfoo.so.1".into(),
            0o755,
            'h',
            "usr/lib/libfoo-hard.so.1".into(),
        ),
        ("usr/lib/long-link".into(), 0o777, 'l', long_target()),
    ];
    for (dir, file) in [
        (long_dir(), "file-in-long-dir"),
        (longer_dir(), "deep-file"),
    ] {
        let mut acc = String::new();
        for c in dir.split('/') {
            acc = if acc.is_empty() {
                c.to_string()
            } else {
                format!("{acc}/{c}")
            };
            v.push((format!("{acc}/"), 0o755, 'd', String::new()));
        }
        v.push((format!("{dir}/{file}"), 0o644, '-', String::new()));
    }
    v.sort();
    v
}

#[test]
fn same_bytes_on_every_run_and_every_compression() {
    let _exclusive = support::exclusive();
    let f = fixture();
    for c in [None, Some(Compression::Zstd), Some(Compression::Gzip)] {
        let (a, sa) = tar_bytes(&f.plan, c, 0);
        let (b, sb) = tar_bytes(&f.plan, c, 0);
        assert_eq!(support::sha256(&a), support::sha256(&b), "{c:?}");
        assert_eq!(sa, sb);
        assert_eq!(sa.sha256_compressed, support::sha256(&a));
        assert_eq!(sa.size_compressed, a.len() as u64);
    }
    let (plain, stats) = tar_bytes(&f.plan, None, 0);
    assert_eq!(stats.sha256_uncompressed, support::sha256(&plain));
    assert_eq!(plain.len() % 512, 0);
    assert!(
        plain[plain.len() - 1024..].iter().all(|&b| b == 0),
        "end-of-archive blocks"
    );
    let dirs = expected_members().iter().filter(|m| m.2 == 'd').count() as u64;
    assert_eq!(
        (stats.files, stats.dirs, stats.symlinks, stats.hardlinks),
        (8, dirs, 2, 1)
    );
}

#[test]
fn same_bytes_from_a_copy_made_in_reverse_order_with_another_umask() {
    let _exclusive = support::exclusive();
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("a-different-place");
    fs::create_dir(&copy).unwrap();
    make_tree(&copy, true, 0o077);
    // The host modes really differ, so the equality below is the normalization's doing.
    let m = |p: &Path| p.metadata().unwrap().permissions().mode() & 0o7777;
    assert_ne!(
        m(&f.root.join("usr/lib/big.bin")),
        m(&copy.join("usr/lib/big.bin"))
    );
    let plan2 = plan_of(&copy);
    for c in [None, Some(Compression::Zstd), Some(Compression::Gzip)] {
        let (a, _) = tar_bytes(&f.plan, c, 1_700_000_000);
        let (b, _) = tar_bytes(&plan2, c, 1_700_000_000);
        assert!(a == b, "{c:?}: archives of the copied tree differ");
    }
}

/// Offsets of every header block in a plain tar (PAX headers included).
fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= tar.len() && tar[pos..pos + 512].iter().any(|&b| b != 0) {
        out.push(pos);
        let size_field = std::str::from_utf8(&tar[pos + 124..pos + 135]).unwrap();
        let size = usize::from_str_radix(size_field.trim_end_matches('\0'), 8).unwrap();
        pos += 512 + size.div_ceil(512) * 512;
    }
    out
}

#[test]
fn source_date_epoch_changes_only_mtimes() {
    let _exclusive = support::exclusive();
    let f = fixture();
    let (a, _) = tar_bytes(&f.plan, None, 0);
    let (b, _) = tar_bytes(&f.plan, None, 1_700_000_000);
    assert_eq!(a.len(), b.len());
    let headers = header_offsets(&a);
    assert_eq!(headers, header_offsets(&b));
    let mut changed_headers = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x == y {
            continue;
        }
        let h = i - i % 512;
        assert!(headers.contains(&h), "byte {i} differs outside a header");
        let field = i - h;
        assert!(
            (136..156).contains(&field),
            "byte {field} of header at {h} differs: only mtime and checksum may"
        );
        if field == 136 {
            changed_headers += 1;
        }
    }
    assert!(changed_headers > 0);
    for &h in &headers {
        assert_eq!(
            &b[h + 136..h + 148],
            format!("{:011o}\0", 1_700_000_000).as_bytes()
        );
    }
}

fn write_to(dir: &Path, name: &str, plan: &Plan, c: Option<Compression>) -> (PathBuf, TarStats) {
    let path = dir.join(name);
    let stats = write_tar_file(
        plan,
        &path,
        &TarOptions {
            compression: c,
            mtime: 0,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    (path, stats)
}

#[test]
#[cfg_attr(not(have_tar), ignore = "needs tar")]
fn gnu_tar_lists_the_expected_members() {
    let _exclusive = support::exclusive();
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = write_to(out.path(), "rootfs.tar", &f.plan, None);
    let o = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "tar warned: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listing = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    let expected = expected_members();
    assert_eq!(lines.len(), expected.len(), "{listing}");
    for (name, mode, kind, link) in expected {
        let perms = perm_string(kind, mode);
        let tail = match kind {
            'l' => format!("{name} -> {link}"),
            'h' => format!("{name} link to {link}"),
            _ => name.clone(),
        };
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{perms} 0/0 ")) && l.ends_with(&tail)),
            "no `{perms} 0/0 ... {tail}` in\n{listing}"
        );
    }
}

fn perm_string(kind: char, mode: u32) -> String {
    let mut s = String::new();
    s.push(kind);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    if mode & 0o1000 != 0 {
        s.pop();
        s.push('t');
    }
    s
}

/// name, mode, kind, linkname, uid, gid, uname, gname, mtime, size as tarfile sees them.
type PyMember = (
    String,
    u32,
    String,
    String,
    u32,
    u32,
    String,
    String,
    u64,
    u64,
);

#[test]
fn python_tarfile_reads_names_modes_links_and_owner() {
    let _exclusive = support::exclusive();
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = write_to(
        out.path(),
        "rootfs.tar.gz",
        &f.plan,
        Some(Compression::Gzip),
    );
    let script = r#"
import json, sys, tarfile
out = []
with tarfile.open(sys.argv[1], "r:gz") as t:
    for m in t.getmembers():
        kind = "d" if m.isdir() else "l" if m.issym() else "h" if m.islnk() else "-" if m.isreg() else "?"
        name = m.name + ("/" if m.isdir() else "")
        out.append([name, m.mode, kind, m.linkname, m.uid, m.gid, m.uname, m.gname, m.mtime, m.size])
print(json.dumps(out))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<PyMember> = serde_json::from_slice(&o.stdout).unwrap();
    let mut names: Vec<(String, u32, char, String)> = got
        .iter()
        .map(|g| (g.0.clone(), g.1, g.2.chars().next().unwrap(), g.3.clone()))
        .collect();
    names.sort();
    assert_eq!(names, expected_members());
    for g in &got {
        assert_eq!(
            (g.4, g.5, g.6.as_str(), g.7.as_str(), g.8),
            (0, 0, "", "", 0),
            "{}",
            g.0
        );
    }
    let big = got.iter().find(|g| g.0 == "usr/lib/big.bin").unwrap();
    assert_eq!(big.9, 3_000_000);
}

#[test]
#[cfg_attr(not(all(have_zstd, have_gzip)), ignore = "needs zstd and gzip")]
fn compressed_outputs_decompress_to_the_digested_tar() {
    let _exclusive = support::exclusive();
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let (plain_path, plain) = write_to(out.path(), "rootfs.tar", &f.plan, None);
    let plain_bytes = fs::read(&plain_path).unwrap();
    assert_eq!(support::sha256(&plain_bytes), plain.sha256_uncompressed);
    for (tool, name, c) in [
        ("zstd", "rootfs.tar.zst", Compression::Zstd),
        ("gzip", "rootfs.tar.gz", Compression::Gzip),
    ] {
        let (path, stats) = write_to(out.path(), name, &f.plan, Some(c));
        let compressed = fs::read(&path).unwrap();
        assert_eq!(
            support::sha256(&compressed),
            stats.sha256_compressed,
            "{tool}"
        );
        assert_eq!(compressed.len() as u64, stats.size_compressed, "{tool}");
        assert!(stats.size_compressed < stats.size_uncompressed, "{tool}");
        if c == Compression::Zstd {
            // Frame header descriptor: checksum on, no dictionary id, no content size.
            assert_eq!(&compressed[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
            let fhd = compressed[4];
            assert_eq!(fhd & 0b100, 0b100, "checksum flag");
            assert_eq!(fhd & 0b11, 0, "dictionary id flag");
            assert_eq!(fhd >> 6, 0, "content size flag");
        } else {
            // gzip header: no FNAME or other optional fields, mtime 0, OS byte 255.
            assert_eq!(&compressed[..3], &[0x1f, 0x8b, 8]);
            assert_eq!(compressed[3], 0, "flags");
            assert_eq!(&compressed[4..8], &[0, 0, 0, 0], "mtime");
            assert_eq!(compressed[9], 255, "OS byte");
        }
        let o = Command::new(tool).arg("-dc").arg(&path).output().unwrap();
        assert!(
            o.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            support::sha256(&o.stdout),
            stats.sha256_uncompressed,
            "{tool}"
        );
        assert_eq!(
            stats.sha256_uncompressed, plain.sha256_uncompressed,
            "{tool}"
        );
        assert_eq!(o.stdout.len() as u64, stats.size_uncompressed, "{tool}");
    }
    // Nothing but the finished tarballs is left in the output directory.
    let mut names: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.iter().all(|n| n.starts_with("rootfs.tar")),
        "{names:?}"
    );
}

#[test]
fn a_source_that_grows_while_read_is_an_error_and_leaves_no_file() {
    let _exclusive = support::exclusive();
    // /proc files report size 0 but have content: exactly a file whose size is not what the
    // header promised.
    let mut plan = Plan::new();
    plan.insert(
        "/status".into(),
        Entry {
            kind: EntryKind::File {
                source: Source::Host("/proc/self/status".into()),
            },
            mode: 0o644,
            provenance: "test".into(),
        },
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("rootfs.tar.zst");
    let opts = TarOptions {
        compression: Some(Compression::Zstd),
        mtime: 0,
        ..Default::default()
    };
    let err = write_tar_file(&plan, &target, &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(err, RootfsError::Changed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("/proc/self/status") && msg.contains("/status"),
        "{msg}"
    );
    assert_eq!(
        fs::read_dir(out.path()).unwrap().count(),
        0,
        "temp file left behind"
    );
}

#[test]
fn a_missing_source_names_the_file_and_the_entry() {
    let _exclusive = support::exclusive();
    let mut plan = Plan::new();
    plan.add_parents("/usr/lib/gone.so", "test").unwrap();
    plan.insert(
        "/usr/lib/gone.so".into(),
        Entry {
            kind: EntryKind::File {
                source: Source::Host("/nonexistent/gone.so".into()),
            },
            mode: 0o644,
            provenance: "test".into(),
        },
    )
    .unwrap();
    let err = write_tar(&plan, Vec::new(), &TarOptions::default(), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/gone.so") && msg.contains("/usr/lib/gone.so"),
        "{msg}"
    );
}

#[test]
fn progress_reports_all_file_data() {
    let _exclusive = support::exclusive();
    let f = fixture();
    let mut last = 0;
    let mut calls = 0;
    write_tar(&f.plan, std::io::sink(), &TarOptions::default(), &mut |n| {
        assert!(n >= last);
        last = n;
        calls += 1;
    })
    .unwrap();
    let total: u64 = tree_nodes()
        .iter()
        .map(|(_, n)| match n {
            Node::File(_, b) => b.len() as u64,
            _ => 0,
        })
        .sum::<u64>()
        + b"root:x:0:0::/:/bin/sh\n".len() as u64;
    assert_eq!(last, total);
    assert!(calls > 3);
}

/// Issue 10: a venv built under /var/tmp (mode 1777 on the host) used to carry `var/tmp` into
/// the rootfs as 1777, writable by every chroot-only run and shared across runs. Only the
/// top-level `tmp` may stay sticky and world-writable; nothing else may keep o+w, g+w or the
/// sticky bit, whatever the host had.
#[test]
fn no_world_writable_entry_but_tmp() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("var/tmp");
    let venv = shared.join("venv");
    fs::create_dir_all(venv.join("lib")).unwrap();
    fs::write(venv.join("lib/mod.py"), b"x = 1\n").unwrap();
    fs::write(venv.join("lib/open.txt"), b"anyone\n").unwrap();
    fs::create_dir(venv.join("drop")).unwrap();
    // What the host had: a sticky world-writable parent (like /var/tmp), a world-writable
    // directory and file, a group-writable directory.
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(venv.join("drop"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(venv.join("lib"), fs::Permissions::from_mode(0o775)).unwrap();
    fs::set_permissions(venv.join("lib/open.txt"), fs::Permissions::from_mode(0o666)).unwrap();

    let mut plan = Plan::new();
    // The build adds host paths with their ancestors' host modes (add_host_path) and walks
    // trees (add_walked): both ways in.
    plan.add_host_path(&venv.join("lib/mod.py"), "test")
        .unwrap();
    plan.add_walked(&venv.join("lib/open.txt"), "test").unwrap();
    plan.add_walked(&venv.join("drop"), "test").unwrap();
    plan.add_dir("/tmp", 0o1777, "extra: tmp").unwrap();
    let (tar, _) = tar_bytes(&plan, None, 0);

    let mut seen = Vec::new();
    let mut ar = tar::Archive::new(&tar[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mode = e.header().mode().unwrap();
        seen.push((name, mode));
    }
    let mode_of = |suffix: &str| {
        seen.iter()
            .find(|(n, _)| n.trim_end_matches('/').ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} not in {seen:?}"))
            .1
    };
    assert!(seen.contains(&("tmp/".into(), 0o1777)), "{seen:?}");
    for (name, mode) in &seen {
        if name == "tmp/" {
            continue;
        }
        assert_eq!(
            mode & 0o1022,
            0,
            "{name} is {mode:04o}: only tmp/ may be writable by others or sticky"
        );
    }
    // The host's 1777 parent is an ordinary directory in the rootfs.
    assert_eq!(mode_of("var/tmp"), 0o755, "{seen:?}");
    assert_eq!(mode_of("venv/drop"), 0o755, "{seen:?}");
    assert_eq!(mode_of("venv/lib"), 0o755, "{seen:?}");
    assert_eq!(mode_of("lib/open.txt"), 0o644, "{seen:?}");
}
