//! The ELF closure resolver against real files: fixtures compiled with `cc` into a temporary
//! sysroot, the host's own ld.so.cache checked against `ldconfig -p`, and host binaries
//! checked against `ldd`.

use crate::support;
use prebake::fsutil::in_root::InRootError;
use prebake::plan::elf::{is_elf, read_elf, ElfClass};
use prebake::plan::ldso::{parse_cache, write_cache, Closure, ResolveError, Resolver};
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

const EM_X86_64: u16 = 62;

/// A temporary directory used as the root of a distro.
struct Root {
    dir: tempfile::TempDir,
    src: PathBuf,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("_src");
        std::fs::create_dir_all(&src).unwrap();
        Root { dir, src }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of an in-root absolute path.
    fn at(&self, p: &str) -> PathBuf {
        self.root().join(p.trim_start_matches('/'))
    }

    fn mkdir(&self, p: &str) {
        std::fs::create_dir_all(self.at(p)).unwrap();
    }

    fn symlink(&self, target: &str, link: &str) {
        let l = self.at(link);
        std::fs::create_dir_all(l.parent().unwrap()).unwrap();
        symlink(target, l).unwrap();
    }

    /// Compile a shared library without libc (so every DT_NEEDED is a fixture) at in-root path
    /// `out`, with DT_SONAME `soname` (if any), linked against the host files `deps`.
    fn so(&self, out: &str, soname: Option<&str>, deps: &[&Path], flags: &[&str]) -> PathBuf {
        let src = self.src.join("lib.c");
        std::fs::write(&src, "int fixture_fn(void) { return 42; }\n").unwrap();
        let host = self.at(out);
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        let mut cmd = Command::new("cc");
        cmd.args(["-shared", "-fPIC", "-nostdlib", "-o"])
            .arg(&host)
            .arg(&src);
        if let Some(s) = soname {
            cmd.arg(format!("-Wl,-soname,{s}"));
        }
        cmd.args(flags).arg("-Wl,--no-as-needed").args(deps);
        support::run_stdout(&mut cmd);
        host
    }

    /// A dynamically linked executable (no libc, its own _start) at in-root path `out`.
    fn exe(&self, out: &str, deps: &[&Path], flags: &[&str]) -> PathBuf {
        let src = self.src.join("main.c");
        std::fs::write(&src, "void _start(void) { for (;;) {} }\n").unwrap();
        let host = self.at(out);
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        let mut cmd = Command::new("cc");
        cmd.args(["-nostdlib", "-o"]).arg(&host).arg(&src);
        cmd.args(flags).arg("-Wl,--no-as-needed").args(deps);
        support::run_stdout(&mut cmd);
        host
    }

    fn resolver(&self) -> Resolver {
        Resolver::new(self.root()).unwrap()
    }
}

fn lib_paths(c: &Closure) -> Vec<(String, String)> {
    c.libraries
        .iter()
        .map(|l| (l.name.clone(), l.path.display().to_string()))
        .collect()
}

fn missing_names(c: &Closure) -> Vec<String> {
    c.missing.iter().map(|m| m.name.clone()).collect()
}

/// Copy a built file to another in-root place (the linker needs the file at build time; the
/// sysroot test then moves it where only the search rules can find it).
fn mv(r: &Root, from: &Path, to: &str) {
    let dest = r.at(to);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::rename(from, dest).unwrap();
}

/// Turn the DT_SONAME entry of `path` into DT_RUNPATH, so the object ends up with both
/// DT_RPATH and DT_RUNPATH (modern ld never emits both).
fn soname_to_runpath(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let dynph = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_DYNAMIC)
        .unwrap();
    let off = usize::try_from(dynph.p_offset).unwrap();
    let size = usize::try_from(dynph.p_filesz).unwrap();
    drop(elf);
    let mut patched = false;
    for e in (off..off + size).step_by(16) {
        let tag = u64::from_le_bytes(bytes[e..e + 8].try_into().unwrap());
        if tag == 14 {
            bytes[e..e + 8].copy_from_slice(&29u64.to_le_bytes());
            patched = true;
        }
    }
    assert!(patched, "no DT_SONAME in {}", path.display());
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------

#[test]
#[cfg_attr(not(have_ldconfig), ignore = "needs ldconfig")]
fn host_cache_matches_ldconfig_p() {
    let _exclusive = support::exclusive();
    let bytes = std::fs::read("/etc/ld.so.cache").unwrap();
    let cache = parse_cache(&bytes).unwrap();
    let out = support::run_stdout(Command::new("ldconfig").arg("-p"));
    let mut expected = Vec::new();
    for line in out.lines().filter(|l| l.starts_with('\t')) {
        let (left, path) = line.trim().split_once(" => ").unwrap();
        let name = left.split(" (").next().unwrap();
        expected.push((name.to_owned(), path.to_owned()));
    }
    let got: Vec<_> = cache
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    assert!(!got.is_empty());
    assert_eq!(got, expected);
}

#[test]
#[cfg_attr(not(have_ldconfig), ignore = "needs ldconfig")]
fn write_cache_round_trips_through_parser_and_ldconfig() {
    let _exclusive = support::exclusive();
    let entries: Vec<(String, String)> = [
        ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        ("libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"),
        ("libfoo.so.10", "/opt/foo/libfoo.so.10"),
        ("libfoo.so.9", "/opt/foo/libfoo.so.9"),
        ("libfoo.so", "/opt/foo/libfoo.so"),
        ("libz.so.1", "/opt/other/libz.so.1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let bytes = write_cache(&entries, ElfClass::Elf64, EM_X86_64);
    // Deterministic: same input, same bytes; input order of distinct names does not matter.
    let mut shuffled = entries.clone();
    shuffled.swap(0, 2);
    assert_eq!(bytes, write_cache(&shuffled, ElfClass::Elf64, EM_X86_64));

    let parsed = parse_cache(&bytes).unwrap();
    let got: Vec<_> = parsed
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    // ldconfig order: descending, numbers compared as numbers; ties keep input order.
    let want = vec![
        ("libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"),
        ("libz.so.1", "/opt/other/libz.so.1"),
        ("libfoo.so.10", "/opt/foo/libfoo.so.10"),
        ("libfoo.so.9", "/opt/foo/libfoo.so.9"),
        ("libfoo.so", "/opt/foo/libfoo.so"),
        ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
    ];
    assert_eq!(got, want);
    assert!(parsed
        .entries
        .iter()
        .all(|e| e.flags == 0x0303 && e.hwcap == 0));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ld.so.cache");
    std::fs::write(&file, &bytes).unwrap();
    let out = support::run_stdout(Command::new("ldconfig").arg("-p").arg("-C").arg(&file));
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("6 libs found in cache `{}'", file.display())
    );
    let printed: Vec<String> = lines.map(str::to_owned).collect();
    let want_lines: Vec<String> = want
        .iter()
        .map(|(k, v)| format!("\t{k} (libc6,x86-64) => {v}"))
        .collect();
    assert_eq!(printed, want_lines);
}

#[test]
fn corrupt_caches_are_errors() {
    let _exclusive = support::exclusive();
    assert!(parse_cache(b"hello").is_err());
    let bytes = write_cache(
        &[("libz.so.1".into(), "/lib/libz.so.1".into())],
        ElfClass::Elf64,
        EM_X86_64,
    );
    for n in 0..bytes.len() {
        assert!(parse_cache(&bytes[..n]).is_err(), "prefix of {n} bytes");
    }
    // A string offset pointing past the end.
    let mut bad = bytes.clone();
    bad[52..56].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let err = parse_cache(&bad).unwrap_err().to_string();
    assert!(err.contains("past the end"), "{err}");
}

/// The new format preceded by the old "ld.so-1.7.0" table (ldconfig -c compat).
#[test]
fn cache_in_compat_format() {
    let _exclusive = support::exclusive();
    let new = write_cache(
        &[("libz.so.1".into(), "/lib/libz.so.1".into())],
        ElfClass::Elf64,
        EM_X86_64,
    );
    let mut compat = Vec::new();
    compat.extend_from_slice(b"ld.so-1.7.0\0");
    compat.extend_from_slice(&1u32.to_le_bytes());
    compat.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // one old entry
    while compat.len() % 8 != 0 {
        compat.push(0);
    }
    compat.extend_from_slice(&new);
    let c = parse_cache(&compat).unwrap();
    assert_eq!(c.entries.len(), 1);
    assert_eq!(c.entries[0].value, "/lib/libz.so.1");
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn rpath_is_inherited_runpath_is_not() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let b = r.so("/build/libB.so.1", Some("libB.so.1"), &[], &[]);
    let a = r.so(
        "/opt/a/libA.so.1",
        Some("libA.so.1"),
        &[&b],
        &["-Wl,--disable-new-dtags", "-Wl,-rpath,/x"],
    );
    mv(&r, &b, "/y/libB.so.1");
    r.mkdir("/x");
    // Executable with DT_RPATH: its RPATH serves A's lookup of B too.
    let exe = r.exe(
        "/bin/app-rpath",
        &[&a],
        &["-Wl,--disable-new-dtags", "-Wl,-rpath,/opt/a:/y"],
    );
    let info = read_elf(&exe).unwrap().unwrap();
    assert_eq!(info.rpath, vec!["/opt/a", "/y"]);
    assert!(!info.has_runpath);
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/app-rpath")), &[])
        .unwrap();
    assert_eq!(
        lib_paths(&c),
        vec![
            ("libA.so.1".into(), "/opt/a/libA.so.1".into()),
            ("libB.so.1".into(), "/y/libB.so.1".into()),
        ]
    );
    assert_eq!(c.libraries[1].needed_by, PathBuf::from("/opt/a/libA.so.1"));
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    assert_eq!(
        c.interpreters,
        vec![PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
    );

    // Same with DT_RUNPATH: A is found (direct dependency), B is not (no inheritance).
    r.exe(
        "/bin/app-runpath",
        &[&r.at("/opt/a/libA.so.1")],
        &["-Wl,--enable-new-dtags", "-Wl,-rpath,/opt/a:/y"],
    );
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/app-runpath")), &[])
        .unwrap();
    assert_eq!(
        lib_paths(&c),
        vec![("libA.so.1".into(), "/opt/a/libA.so.1".into())]
    );
    assert_eq!(missing_names(&c), vec!["libB.so.1"]);
    let m = &c.missing[0];
    assert_eq!(m.needed_by, PathBuf::from("/opt/a/libA.so.1"));
    assert!(m.searched.contains(&PathBuf::from("/x")), "{m}");
    assert!(!m.searched.contains(&PathBuf::from("/y")), "{m}");
    assert!(m.searched.contains(&PathBuf::from("/usr/lib")), "{m}");
    let msg = m.to_string();
    assert!(
        msg.starts_with("libB.so.1 (needed by /opt/a/libA.so.1) not found; searched: /x, "),
        "{msg}"
    );
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn rpath_is_ignored_when_runpath_is_present() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let d = r.so("/build/libD.so.1", Some("libD.so.1"), &[], &[]);
    // C gets DT_RPATH=/y from the linker and DT_RUNPATH=/z by patching its DT_SONAME.
    let c_lib = r.so(
        "/p/libC.so",
        Some("/z"),
        &[&d],
        &["-Wl,--disable-new-dtags", "-Wl,-rpath,/y"],
    );
    soname_to_runpath(&c_lib);
    let info = read_elf(&c_lib).unwrap().unwrap();
    assert_eq!(info.rpath, vec!["/y"]);
    assert_eq!(info.runpath, vec!["/z"]);
    mv(&r, &d, "/y/libD.so.1");
    r.mkdir("/z");
    // C has no SONAME left, so link it by -l (a path would be recorded verbatim as NEEDED).
    let search = format!("-L{}", r.at("/p").display());
    r.exe(
        "/bin/app",
        &[Path::new(&search), Path::new("-l:libC.so")],
        &["-Wl,--disable-new-dtags", "-Wl,-rpath,/p"],
    );
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/app")), &[])
        .unwrap();
    assert_eq!(missing_names(&c), vec!["libD.so.1"]);
    let m = &c.missing[0];
    assert!(m.searched.contains(&PathBuf::from("/z")), "{m}");
    assert!(!m.searched.contains(&PathBuf::from("/y")), "{m}");
    // glibc skips even the executable's RPATH for a requester with RUNPATH.
    assert!(!m.searched.contains(&PathBuf::from("/p")), "{m}");

    // Put D where RUNPATH points: found.
    std::fs::rename(r.at("/y/libD.so.1"), r.at("/z/libD.so.1")).unwrap();
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/app")), &[])
        .unwrap();
    assert!(c.missing.is_empty());
    assert_eq!(c.libraries[1].path, PathBuf::from("/z/libD.so.1"));
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn origin_for_wheel_style_libs_and_main_executable() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let dep = r.so(
        "/build/libdep-ab12cd.so",
        Some("libdep-ab12cd.so"),
        &[],
        &[],
    );
    let dep2 = r.so("/build/libdep2.so", Some("libdep2.so"), &[], &[]);
    r.so(
        "/site/pkg/_mod.so",
        None,
        &[&dep],
        &["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../pkg.libs"],
    );
    r.so(
        "/site/pkg/sub/_mod2.so",
        None,
        &[&dep2],
        &["-Wl,--disable-new-dtags", "-Wl,-rpath,${ORIGIN}/libs2"],
    );
    mv(&r, &dep, "/site/pkg.libs/libdep-ab12cd.so");
    mv(&r, &dep2, "/site/pkg/sub/libs2/libdep2.so");
    // A non-ELF file in the list is skipped.
    std::fs::write(r.at("/site/pkg/__init__.py"), "x = 1\n").unwrap();
    let objects = vec![
        PathBuf::from("/site/pkg/__init__.py"),
        PathBuf::from("/site/pkg/_mod.so"),
        PathBuf::from("/site/pkg/sub/_mod2.so"),
    ];
    let c = r.resolver().closure(None, &objects).unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    assert_eq!(
        lib_paths(&c),
        vec![
            (
                "libdep-ab12cd.so".into(),
                "/site/pkg.libs/libdep-ab12cd.so".into()
            ),
            ("libdep2.so".into(), "/site/pkg/sub/libs2/libdep2.so".into()),
        ]
    );
    assert!(c.interpreters.is_empty());

    // The main executable's $ORIGIN is its real location (/proc/self/exe), not the symlink's.
    let l = r.so("/build/libapp.so.1", Some("libapp.so.1"), &[], &[]);
    r.exe(
        "/usr/libexec/app/app-real",
        &[&l],
        &["-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/lib"],
    );
    mv(&r, &l, "/usr/libexec/app/lib/libapp.so.1");
    r.symlink("../libexec/app/app-real", "/usr/bin/app");
    let c = r
        .resolver()
        .closure(Some(Path::new("/usr/bin/app")), &[])
        .unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    assert_eq!(
        c.libraries[0].path,
        PathBuf::from("/usr/libexec/app/lib/libapp.so.1")
    );
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn symlink_chains_and_directory_symlinks_stay_inside_the_root() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    // Debian layout: /lib -> usr/lib, libraries in the multiarch directory.
    r.symlink("usr/lib", "/lib");
    let z = r.so("/build/libz.so.1", Some("libz.so.1"), &[], &[]);
    let q = r.so("/build/libq.so.1", Some("libq.so.1"), &[], &[]);
    let exe = r.exe("/usr/bin/app", &[&z, &q], &[]);
    mv(&r, &z, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13");
    r.symlink("libz.so.1.2.13", "/usr/lib/x86_64-linux-gnu/libz.so.1");
    // An absolute link target: must be read inside the root, not on the host.
    mv(&r, &q, "/usr/lib/x86_64-linux-gnu/libq.so.1.0");
    r.symlink(
        "/usr/lib/x86_64-linux-gnu/libq.so.1.0",
        "/usr/lib/x86_64-linux-gnu/libq.so.1",
    );
    assert!(is_elf(&exe).unwrap());
    let res = r.resolver();
    assert_eq!(
        res.default_dirs(ElfClass::Elf64, EM_X86_64),
        [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib",
            "/usr/lib"
        ]
        .map(PathBuf::from)
    );
    let c = res.closure(Some(Path::new("/usr/bin/app")), &[]).unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    assert_eq!(
        lib_paths(&c),
        vec![
            ("libz.so.1".into(), "/lib/x86_64-linux-gnu/libz.so.1".into()),
            ("libq.so.1".into(), "/lib/x86_64-linux-gnu/libq.so.1".into()),
        ]
    );
    assert_eq!(
        c.libraries[0].real,
        PathBuf::from("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13")
    );
    assert_eq!(
        c.libraries[1].real,
        PathBuf::from("/usr/lib/x86_64-linux-gnu/libq.so.1.0")
    );
    assert_eq!(
        res.resolve_in_root(Path::new(
            "/lib/x86_64-linux-gnu/../x86_64-linux-gnu/libz.so.1"
        ))
        .unwrap(),
        Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"))
    );
    // The main executable behind an absolute link that only exists inside the root.
    r.symlink("/usr/bin/app", "/usr/local/bin/app-link");
    let c2 = res
        .closure(Some(Path::new("/usr/local/bin/app-link")), &[])
        .unwrap();
    assert_eq!(lib_paths(&c2), lib_paths(&c));
    // `..` cannot climb out of the root.
    assert_eq!(
        res.resolve_in_root(Path::new("/../../../usr/bin/app"))
            .unwrap(),
        Some(PathBuf::from("/usr/bin/app"))
    );
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn missing_corrupt_and_looping_files() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let gone = r.so("/build/libgone.so.1", Some("libgone.so.1"), &[], &[]);
    let lp = r.so("/build/libloop.so.1", Some("libloop.so.1"), &[], &[]);
    r.exe("/bin/needs-gone", &[&gone], &[]);
    r.exe("/bin/needs-loop", &[&lp], &[]);
    std::fs::remove_file(&gone).unwrap();
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/needs-gone")), &[])
        .unwrap();
    assert_eq!(missing_names(&c), vec!["libgone.so.1"]);
    assert_eq!(
        c.missing[0].to_string(),
        "libgone.so.1 (needed by /bin/needs-gone) not found; searched: /lib, /usr/lib"
    );

    // Symlink loop on the search path: an error naming the path, not a hang.
    r.symlink("libloop.so.1b", "/usr/lib/libloop.so.1");
    r.symlink("libloop.so.1", "/usr/lib/libloop.so.1b");
    let err = r
        .resolver()
        .closure(Some(Path::new("/bin/needs-loop")), &[])
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::InRoot(InRootError::SymlinkLoop { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("libloop.so.1"), "{err}");

    // Truncated ELF and random bytes after the magic: Err naming the file, no panic.
    let good = std::fs::read(&lp).unwrap();
    let trunc = r.at("/site/trunc.so");
    std::fs::create_dir_all(trunc.parent().unwrap()).unwrap();
    for n in [5, 20, 64, 100, 300] {
        std::fs::write(&trunc, &good[..n]).unwrap();
        let err = read_elf(&trunc).unwrap_err().to_string();
        assert!(err.contains("trunc.so"), "{n}: {err}");
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..200 {
        let mut bytes = b"\x7fELF".to_vec();
        for _ in 0..(round * 7 % 500) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state.to_le_bytes()[0]);
        }
        std::fs::write(&trunc, &bytes).unwrap();
        let _ = read_elf(&trunc); // Err or (rarely) Ok, never a panic
    }
    // A plausible header over random program headers.
    let mut mangled = good.clone();
    for b in mangled.iter_mut().skip(64).take(400) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state.to_le_bytes()[0];
    }
    std::fs::write(&trunc, &mangled).unwrap();
    let _ = read_elf(&trunc);
    std::fs::write(&trunc, &good[..100]).unwrap();
    let err = r
        .resolver()
        .closure(None, &[PathBuf::from("/site/trunc.so")])
        .unwrap_err();
    assert!(err.to_string().contains("trunc.so"), "{err}");
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn wrong_class_and_machine_candidates_are_skipped() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let w = r.so("/build/libw.so.1", Some("libw.so.1"), &[], &[]);
    r.exe("/bin/app", &[&w], &[]);
    mv(&r, &w, "/usr/lib/libw.so.1");
    // A 32-bit build when the compiler can, else a copy with EI_CLASS flipped; and a copy
    // with another e_machine. Both sit in /lib, searched before /usr/lib.
    r.mkdir("/lib");
    let m32 = Command::new("cc")
        .args([
            "-m32",
            "-shared",
            "-fPIC",
            "-nostdlib",
            "-Wl,-soname,libw.so.1",
            "-o",
        ])
        .arg(r.at("/lib/libw.so.1"))
        .arg(r.src.join("lib.c"))
        .status()
        .is_ok_and(|s| s.success());
    if !m32 {
        let mut bytes = std::fs::read(r.at("/usr/lib/libw.so.1")).unwrap();
        bytes[4] = 1; // EI_CLASS = ELFCLASS32
        std::fs::write(r.at("/lib/libw.so.1"), bytes).unwrap();
    }
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/app")), &[])
        .unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    assert_eq!(c.libraries[0].path, PathBuf::from("/usr/lib/libw.so.1"));

    let mut bytes = std::fs::read(r.at("/usr/lib/libw.so.1")).unwrap();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    std::fs::write(r.at("/usr/lib/libw.so.1"), bytes).unwrap();
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/app")), &[])
        .unwrap();
    assert_eq!(missing_names(&c), vec!["libw.so.1"]);
    let msg = c.missing[0].to_string();
    assert!(
        msg.contains("/lib/libw.so.1 (32-bit ELF, need 64-bit)"),
        "{msg}"
    );
    assert!(
        msg.contains("/usr/lib/libw.so.1 (e_machine 183, need 62)"),
        "{msg}"
    );
}

#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn cache_conf_and_hwcaps_in_a_sysroot() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let a = r.so("/build/libcached.so.1", Some("libcached.so.1"), &[], &[]);
    let b = r.so("/build/libconf.so.1", Some("libconf.so.1"), &[], &[]);
    let h = r.so("/build/libh.so.1", Some("libh.so.1"), &[], &[]);
    r.exe("/bin/app", &[&a, &b, &h], &[]);
    mv(&r, &a, "/opt/cached/libcached.so.1");
    mv(&r, &b, "/opt/conf/libconf.so.1");
    r.mkdir("/usr/lib/glibc-hwcaps/x86-64-v3");
    std::fs::copy(&h, r.at("/usr/lib/glibc-hwcaps/x86-64-v3/libh.so.1")).unwrap();
    mv(&r, &h, "/usr/lib/libh.so.1");

    // No cache: ld.so.conf (with an include glob) stands in for it.
    r.mkdir("/etc/ld.so.conf.d");
    std::fs::write(
        r.at("/etc/ld.so.conf"),
        "# comment\ninclude /etc/ld.so.conf.d/*.conf\n",
    )
    .unwrap();
    std::fs::write(r.at("/etc/ld.so.conf.d/b.conf"), "/opt/conf\n").unwrap();
    std::fs::write(r.at("/etc/ld.so.conf.d/a.conf"), "/opt/cached/\n").unwrap();
    std::fs::write(r.at("/etc/ld.so.conf.d/skip.txt"), "/nope\n").unwrap();
    let res = r.resolver();
    assert_eq!(
        res.conf_dirs(),
        [PathBuf::from("/opt/cached"), PathBuf::from("/opt/conf")]
    );
    let c = res.closure(Some(Path::new("/bin/app")), &[]).unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);

    // With a cache, ld.so.conf no longer matters: only the cache and default dirs do.
    let cache = write_cache(
        &[("libcached.so.1".into(), "/opt/cached/libcached.so.1".into())],
        ElfClass::Elf64,
        EM_X86_64,
    );
    std::fs::write(r.at("/etc/ld.so.cache"), cache).unwrap();
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/app")), &[])
        .unwrap();
    assert_eq!(missing_names(&c), vec!["libconf.so.1"]);
    assert_eq!(
        c.missing[0].searched,
        ["/etc/ld.so.cache", "/lib", "/usr/lib"].map(PathBuf::from)
    );
    let got = lib_paths(&c);
    assert!(got.contains(&("libcached.so.1".into(), "/opt/cached/libcached.so.1".into())));
    // hwcaps: the baseline and every variant that exists (the loader picks by CPU).
    let h: Vec<_> = c
        .libraries
        .iter()
        .filter(|l| l.name == "libh.so.1")
        .collect();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0].path, PathBuf::from("/usr/lib/libh.so.1"));
    assert_eq!(h[0].hwcaps, None);
    assert_eq!(
        h[1].path,
        PathBuf::from("/usr/lib/glibc-hwcaps/x86-64-v3/libh.so.1")
    );
    assert_eq!(h[1].hwcaps.as_deref(), Some("x86-64-v3"));
}

/// The cache we write is read by the real glibc ld.so: a library only the cache knows about
/// is found when a program runs in a chroot.
#[test]
#[cfg_attr(not(all(have_root, have_cc)), ignore = "needs root and cc")]
fn written_cache_is_used_by_glibc_in_a_chroot() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let lsrc = r.src.join("cached.c");
    std::fs::write(&lsrc, "int cached_answer(void) { return 42; }\n").unwrap();
    let lib = r.at("/opt/cached/libcached.so.1");
    std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
    support::run_stdout(
        Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libcached.so.1", "-o"])
            .arg(&lib)
            .arg(&lsrc),
    );
    let msrc = r.src.join("m.c");
    std::fs::write(
        &msrc,
        "#include <stdio.h>\nint cached_answer(void);\nint main(void) { printf(\"answer=%d\\n\", cached_answer()); return 0; }\n",
    )
    .unwrap();
    r.mkdir("/bin");
    support::run_stdout(
        Command::new("cc")
            .arg("-o")
            .arg(r.at("/bin/m"))
            .arg(&msrc)
            .arg(&lib),
    );
    // libc and ld.so from the host, found through our own resolver.
    let host = Resolver::new(Path::new("/")).unwrap();
    let c = host.closure(Some(&r.at("/bin/m")), &[]).unwrap();
    let mut entries = Vec::new();
    for l in c.libraries.iter().filter(|l| l.name != "libcached.so.1") {
        let dest = r.at(&l.path.display().to_string());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&l.real, &dest).unwrap();
        entries.push((l.name.clone(), l.path.display().to_string()));
    }
    for i in &c.interpreters {
        let dest = r.at(&i.display().to_string());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(i).unwrap(), &dest).unwrap();
    }
    // Without the cache entry the program cannot start ...
    std::fs::create_dir_all(r.at("/etc")).unwrap();
    std::fs::write(
        r.at("/etc/ld.so.cache"),
        write_cache(&entries, ElfClass::Elf64, EM_X86_64),
    )
    .unwrap();
    let out = Command::new("chroot")
        .arg(r.root())
        .arg("/bin/m")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // ... with it, it runs.
    entries.push(("libcached.so.1".into(), "/opt/cached/libcached.so.1".into()));
    std::fs::write(
        r.at("/etc/ld.so.cache"),
        write_cache(&entries, ElfClass::Elf64, EM_X86_64),
    )
    .unwrap();
    let out = support::run_stdout(Command::new("chroot").arg(r.root()).arg("/bin/m"));
    assert_eq!(out, "answer=42\n");
}

// ---------------------------------------------------------------------------------------------
// The real host.

const PYENV: &str = "/root/.pyenv/versions/3.11.7";

fn real_set(c: &Closure) -> BTreeSet<PathBuf> {
    c.libraries
        .iter()
        .map(|l| std::fs::canonicalize(&l.path).unwrap())
        .chain(
            c.interpreters
                .iter()
                .map(|i| std::fs::canonicalize(i).unwrap()),
        )
        .collect()
}

fn ldd_set(path: &Path) -> BTreeSet<PathBuf> {
    let out = support::run_stdout(Command::new("ldd").arg(path));
    let mut set = BTreeSet::new();
    for line in out.lines() {
        let line = line.trim();
        let p = match line.split_once(" => ") {
            Some((_, rest)) => rest.split(" (").next().unwrap(),
            None => line.split(" (").next().unwrap(),
        };
        assert!(p != "not found", "ldd: {line}");
        if p.starts_with('/') {
            set.insert(std::fs::canonicalize(p).unwrap());
        }
    }
    set
}

#[test]
#[cfg_attr(not(have_pyenv_python), ignore = "needs pyenv's python 3.11.7")]
fn pyenv_python_and_its_ssl_module() {
    let _exclusive = support::exclusive();
    let python = PathBuf::from(format!("{PYENV}/bin/python3.11"));
    let r = Resolver::new(Path::new("/")).unwrap();
    let c = r.closure(Some(&python), &[]).unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    let paths: Vec<_> = c.libraries.iter().map(|l| l.path.clone()).collect();
    assert!(
        paths.contains(&PathBuf::from(format!("{PYENV}/lib/libpython3.11.so.1.0"))),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.ends_with("libc.so.6")), "{paths:?}");
    assert_eq!(
        c.interpreters,
        vec![PathBuf::from("/lib64/ld-linux-x86-64.so.2")]
    );

    let dynload = PathBuf::from(format!("{PYENV}/lib/python3.11/lib-dynload"));
    let ssl: Vec<PathBuf> = std::fs::read_dir(&dynload)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("_ssl.")
        })
        .collect();
    assert_eq!(ssl.len(), 1);
    let c = r.closure(Some(&python), &ssl).unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    let names: Vec<_> = c.libraries.iter().map(|l| l.name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("libssl.so")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("libcrypto.so")),
        "{names:?}"
    );
    let ssl_lib = c
        .libraries
        .iter()
        .find(|l| l.name.starts_with("libssl"))
        .unwrap();
    assert_eq!(ssl_lib.needed_by, ssl[0]);
}

#[test]
#[cfg_attr(not(have_ldd), ignore = "needs ldd")]
fn host_binaries_match_ldd() {
    let _exclusive = support::exclusive();
    let r = Resolver::new(Path::new("/")).unwrap();
    let mut checked = 0;
    let candidates = [
        format!("{PYENV}/bin/python3.11"),
        format!("{PYENV}/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"),
        "/usr/bin/python3.11".to_string(),
        "/bin/ls".to_string(),
        "/usr/bin/ssh".to_string(),
        "/usr/bin/git".to_string(),
        "/usr/bin/curl".to_string(),
    ];
    for p in candidates.iter().map(PathBuf::from).filter(|p| p.exists()) {
        // ldd treats its argument as the main program, so do the same.
        let c = r.closure(Some(&p), &[]).unwrap();
        assert!(c.missing.is_empty(), "{}: {:?}", p.display(), c.missing);
        assert_eq!(real_set(&c), ldd_set(&p), "{}", p.display());
        checked += 1;
    }
    assert!(checked >= 2, "too few host binaries to compare");
}

/// Every extension module of the pyenv stdlib, dlopen'ed into one python process: the
/// closure is complete and every library it names is an ELF file of the host.
#[test]
#[cfg_attr(not(have_pyenv_python), ignore = "needs pyenv's python 3.11.7")]
fn pyenv_lib_dynload_closure() {
    let _exclusive = support::exclusive();
    let python = PathBuf::from(format!("{PYENV}/bin/python3.11"));
    let mut objects: Vec<PathBuf> = walk(Path::new(&format!("{PYENV}/lib/python3.11")));
    objects.sort();
    let t = std::time::Instant::now();
    let c = Resolver::new(Path::new("/"))
        .unwrap()
        .closure(Some(&python), &objects)
        .unwrap();
    eprintln!(
        "{} files, {} libraries, {:?}",
        objects.len(),
        c.libraries.len(),
        t.elapsed()
    );
    let missing: Vec<String> = c.missing.iter().map(ToString::to_string).collect();
    assert!(missing.is_empty(), "{missing:#?}");
    assert!(c.libraries.len() > 5);
    // Reused names are not searched twice: each path appears once.
    let paths: BTreeSet<_> = c.libraries.iter().map(|l| &l.path).collect();
    assert_eq!(paths.len(), c.libraries.len());
    for l in &c.libraries {
        assert!(is_elf(&l.path).unwrap(), "{}", l.path.display());
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// glibc's main_map rule (the executable's DT_RPATH serves every lookup, dlopen'ed modules
/// included, unless the requester has DT_RUNPATH) and DF_1_NODEFLIB.
#[test]
#[cfg_attr(not(have_cc), ignore = "needs cc")]
fn executable_rpath_serves_dlopened_modules_and_nodeflib() {
    let _exclusive = support::exclusive();
    let r = Root::new();
    let q = r.so("/build/libq.so.1", Some("libq.so.1"), &[], &[]);
    r.so("/site/m.so", None, &[&q], &[]);
    r.so(
        "/site/m_runpath.so",
        None,
        &[&q],
        &["-Wl,--enable-new-dtags", "-Wl,-rpath,/elsewhere"],
    );
    r.exe(
        "/bin/python",
        &[],
        &["-Wl,--disable-new-dtags", "-Wl,-rpath,/mainrpath"],
    );
    mv(&r, &q, "/mainrpath/libq.so.1");
    let objects = [PathBuf::from("/site/m.so")];
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/python")), &objects)
        .unwrap();
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    assert_eq!(c.libraries[0].path, PathBuf::from("/mainrpath/libq.so.1"));
    assert_eq!(c.libraries[0].needed_by, PathBuf::from("/site/m.so"));
    // Without the executable the module alone cannot find it.
    let c = r.resolver().closure(None, &objects).unwrap();
    assert_eq!(missing_names(&c), vec!["libq.so.1"]);
    // A requester with DT_RUNPATH skips the executable's DT_RPATH.
    let c = r
        .resolver()
        .closure(
            Some(Path::new("/bin/python")),
            &[PathBuf::from("/site/m_runpath.so")],
        )
        .unwrap();
    assert_eq!(missing_names(&c), vec!["libq.so.1"]);
    assert_eq!(
        c.missing[0].searched,
        ["/elsewhere", "/lib", "/usr/lib"].map(PathBuf::from)
    );

    // DF_1_NODEFLIB: no cache, no default directories.
    let n = r.so("/build/libn.so.1", Some("libn.so.1"), &[], &[]);
    r.exe("/bin/nodeflib", &[&n], &["-Wl,-z,nodefaultlib"]);
    mv(&r, &n, "/usr/lib/libn.so.1");
    assert!(read_elf(&r.at("/bin/nodeflib")).unwrap().unwrap().nodeflib);
    let c = r
        .resolver()
        .closure(Some(Path::new("/bin/nodeflib")), &[])
        .unwrap();
    assert_eq!(missing_names(&c), vec!["libn.so.1"]);
    assert!(c.missing[0].searched.is_empty());
    assert!(c.missing[0].to_string().contains("searched: nothing"));
}

#[test]
fn a_placed_object_is_read_from_its_bytes_not_from_its_path_on_the_host() {
    // With the host as sysroot, the resolver's cheap "is it ELF?" look at a path must not
    // stand in for a placed file: the host may hold something else there.
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("not-elf-on-the-host");
    std::fs::write(&at, "#!/bin/sh\n").unwrap();
    let mut r = Resolver::new(Path::new("/")).unwrap();
    r.place(at.clone(), std::fs::canonicalize("/bin/true").unwrap());
    let c = r.closure(None, std::slice::from_ref(&at)).unwrap();
    assert!(
        c.libraries.iter().any(|l| l.name == "libc.so.6"),
        "{:?}",
        lib_paths(&c)
    );
}
