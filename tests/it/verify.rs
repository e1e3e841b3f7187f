//! Issue 13 item 2: `prebake verify` (rebuild from the recorded inputs, compare with the
//! record) and `prebake diff` (two builds entry by entry), on real builds of Debian's
//! python3.11. What is tampered with is the test's own: a shared library it compiles with `cc`
//! into a temporary directory and adds through the spec's `paths`, and a distribution it
//! writes into a venv it makes; the machine's libraries are never touched.

use crate::support;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PYTHON: &str = "/usr/bin/python3.11";
const EPOCH: &str = "1700000000";

/// A temporary directory under /var/tmp: a build refuses interpreters under /tmp (the
/// sandbox mounts its own /tmp), and the paths a spec adds keep their host path.
fn var_tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("prebake-verify-test-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    fs::write(&p, text).unwrap();
    p
}

/// `prebake build SPEC --out OUT --no-image` at `epoch`; panics unless it succeeds.
fn build(spec: &Path, out: &Path, epoch: &str) {
    let o = support::prebake(&[
        "build",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-image",
    ])
    .env("SOURCE_DATE_EPOCH", epoch)
    .output()
    .expect("run prebake");
    support::assert_success(&o, "prebake build");
}

/// `prebake ARGS` with `TMPDIR` set (where verify puts its rebuild).
fn prebake(args: &[&str], tmpdir: &Path) -> Output {
    support::prebake(args)
        .env("TMPDIR", tmpdir)
        .output()
        .expect("run prebake")
}

/// `prebake verify OUT --spec SPEC EXTRA...`, its rebuild under `tmpdir`.
fn verify(out: &Path, spec: &Path, extra: &[&str], tmpdir: &Path) -> Output {
    let args = [
        &[
            "verify",
            out.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
        ],
        extra,
    ];
    prebake(&args.concat(), tmpdir)
}

/// The report line about the file `path`.
fn line_naming(text: &str, path: &Path) -> String {
    let prefix = format!("file {}:", path.display());
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{} is not named:\n{text}", path.display()))
        .to_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The exit code, with the output when it is not `want`.
fn assert_code(o: &Output, want: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: not JSON:\n{}", stdout(o)))
}

/// The `file` entries of a JSON report, by path.
fn file_changes(report: &Value) -> Vec<(String, Value)> {
    report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["entry"] == "file")
        .map(|c| (c["path"].as_str().unwrap().to_owned(), c.clone()))
        .collect()
}

/// A shared library compiled from C that returns `value`.
fn compile_library(dir: &Path, value: u32) -> PathBuf {
    let src = dir.join("tamper.c");
    fs::write(
        &src,
        format!("int tamper_value(void) {{ return {value}; }}\n"),
    )
    .unwrap();
    let lib = dir.join("libtamper.so");
    support::run(Command::new("cc").args([
        "-shared",
        "-fPIC",
        "-o",
        lib.to_str().unwrap(),
        src.to_str().unwrap(),
    ]));
    lib
}

/// A venv of Debian's python with a distribution `tamperme` 1.0 written by hand (METADATA,
/// RECORD and its module); returns the venv's python and the module's path.
fn venv_with_distribution(dir: &Path) -> (PathBuf, PathBuf) {
    let venv = dir.join("venv");
    support::run(
        Command::new(PYTHON)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv),
    );
    let site = venv.join("lib/python3.11/site-packages");
    let info = site.join("tamperme-1.0.dist-info");
    fs::create_dir_all(site.join("tamperme")).unwrap();
    fs::create_dir_all(&info).unwrap();
    let module = site.join("tamperme/__init__.py");
    fs::write(&module, "VALUE = 1\n").unwrap();
    fs::write(
        info.join("METADATA"),
        "Metadata-Version: 2.1\nName: tamperme\nVersion: 1.0\n",
    )
    .unwrap();
    fs::write(
        info.join("RECORD"),
        "tamperme/__init__.py,,\ntamperme-1.0.dist-info/METADATA,,\ntamperme-1.0.dist-info/RECORD,,\n",
    )
    .unwrap();
    (venv.join("bin/python"), module)
}

fn debian_spec(dir: &Path) -> PathBuf {
    write_spec(
        dir,
        "debian",
        &format!("name: debian\nlanguages:\n  python3:\n    interpreter: {PYTHON}\n"),
    )
}

/// Nothing is left of verify's rebuild in its TMPDIR.
fn assert_empty(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "verify left {left:?}");
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn an_untouched_build_verifies() {
    let _exclusive = support::exclusive();
    let tmp = var_tmp();
    let spec = debian_spec(tmp.path());
    let out = tmp.path().join("out");
    // Not epoch 0: verify must take the build's SOURCE_DATE_EPOCH from its record.
    build(&spec, &out, EPOCH);
    let rebuild_tmp = tmp.path().join("rebuild-tmp");
    fs::create_dir(&rebuild_tmp).unwrap();

    let o = verify(&out, &spec, &[], &rebuild_tmp);
    assert_code(&o, 0, "verify of an untouched build");
    assert!(stdout(&o).starts_with("identical:"), "{}", stdout(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("writing rootfs"), "no progress: {stderr}");
    assert_empty(&rebuild_tmp);

    // The bundle directory itself is accepted too, and --json says the same.
    let o = verify(&out.join("bundle"), &spec, &["--json"], &rebuild_tmp);
    assert_code(&o, 0, "verify --json");
    let report = json(&o);
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["changes"], serde_json::json!([]));
    assert_empty(&rebuild_tmp);
}

#[test]
#[cfg_attr(
    not(all(have_debian_python, have_cc)),
    ignore = "needs /usr/bin/python3.11 and cc"
)]
fn a_tampered_library_fails_verify_naming_the_file() {
    let _exclusive = support::exclusive();
    let tmp = var_tmp();
    let libdir = tmp.path().join("lib");
    fs::create_dir(&libdir).unwrap();
    let lib = compile_library(&libdir, 1);
    let spec = write_spec(
        tmp.path(),
        "tamper",
        &format!(
            "name: tamper\nlanguages:\n  python3:\n    interpreter: {PYTHON}\n    paths: [{}]\n",
            lib.display()
        ),
    );
    let out = tmp.path().join("out");
    build(&spec, &out, EPOCH);
    let before = support::sha256_file(&lib);

    // The library changes after the build; its package (none) cannot have a new version.
    compile_library(&libdir, 2);
    let after = support::sha256_file(&lib);
    assert_ne!(before, after, "the recompiled library has the same bytes");

    let o = verify(&out, &spec, &[], tmp.path());
    assert_code(&o, 1, "verify after tampering");
    let text = stdout(&o);
    let line = line_naming(&text, &lib);
    assert!(line.contains("changed"), "{line}");
    assert!(line.contains("no package"), "{line}");
    assert!(line.contains("tampered or locally modified"), "{line}");
    assert!(
        line.contains(&before[..12]) && line.contains(&after[..12]),
        "{line}"
    );

    // The JSON report: that file and no other, with the recorded and the rebuilt digests.
    let o = verify(&out, &spec, &["--json"], tmp.path());
    assert_code(&o, 1, "verify --json after tampering");
    let report = json(&o);
    let files = file_changes(&report);
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, [lib.to_str().unwrap()], "{report}");
    let change = &files[0].1;
    assert_eq!(change["before"], before.as_str());
    assert_eq!(change["after"], after.as_str());
    assert_eq!(change["owner"], Value::Null);
    let recorded: Value =
        serde_json::from_slice(&fs::read(out.join("bundle/bundle.json")).unwrap()).unwrap();
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["entry"] == "rootfs"
                && c["before"] == recorded["rootfs"]["sha256_uncompressed"]),
        "{report}"
    );
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn a_modified_distribution_file_is_named_with_its_unchanged_version() {
    let _exclusive = support::exclusive();
    let tmp = var_tmp();
    let (python, module) = venv_with_distribution(tmp.path());
    let spec = write_spec(
        tmp.path(),
        "venv",
        &format!(
            "name: venv\nlanguages:\n  python3:\n    interpreter: {}\n    packages: [tamperme]\n",
            python.display()
        ),
    );
    let out = tmp.path().join("out");
    build(&spec, &out, EPOCH);
    fs::write(&module, "VALUE = 2\n").unwrap();

    let o = verify(&out, &spec, &["--json"], tmp.path());
    assert_code(&o, 1, "verify after modifying a distribution");
    let report = json(&o);
    let files = file_changes(&report);
    let (_, change) = files
        .iter()
        .find(|(p, _)| Path::new(p) == module)
        .unwrap_or_else(|| panic!("{} is not named: {report}", module.display()));
    let owner = &change["owner"];
    assert_eq!(owner["kind"], "pypi", "{change}");
    assert_eq!(owner["name"], "tamperme", "{change}");
    assert_eq!(owner["before"], serde_json::json!(["1.0"]), "{change}");
    assert_eq!(owner["after"], owner["before"], "{change}");
    // No package changed version: nothing else explains the new content.
    assert!(
        !report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["entry"] == "package"),
        "{report}"
    );

    let o = verify(&out, &spec, &[], tmp.path());
    assert_code(&o, 1, "verify after modifying a distribution");
    let text = stdout(&o);
    let line = line_naming(&text, &module);
    assert!(
        line.contains("Python distribution tamperme is still 1.0")
            && line.contains("tampered or locally modified"),
        "{line}"
    );
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn verify_refuses_a_spec_other_than_the_recorded_one() {
    let _exclusive = support::exclusive();
    let tmp = var_tmp();
    let spec = debian_spec(tmp.path());
    let out = tmp.path().join("out");
    build(&spec, &out, EPOCH);
    let other = write_spec(
        tmp.path(),
        "other",
        &format!("name: other\nlanguages:\n  python3:\n    interpreter: {PYTHON}\n"),
    );
    let o = verify(&out, &other, &[], tmp.path());
    assert_code(&o, 2, "verify with another spec");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let recorded: Value =
        serde_json::from_slice(&fs::read(out.join("bundle/bundle.json")).unwrap()).unwrap();
    assert!(
        stderr.contains(recorded["spec_digest"].as_str().unwrap())
            && stderr.contains(other.to_str().unwrap())
            && stderr.contains("--spec"),
        "{stderr}"
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));

    // The exit statuses the scripts that call it rely on are in the help of both commands.
    for command in ["verify", "diff"] {
        let help = support::run_stdout(&mut support::prebake(&[command, "--help"]));
        assert!(
            help.contains("0 when") && help.contains("1 when") && help.contains("2 on error"),
            "{help}"
        );
    }
}

#[test]
#[cfg_attr(
    not(all(have_debian_python, have_cc)),
    ignore = "needs /usr/bin/python3.11 and cc"
)]
fn diff_of_different_specs_lists_added_and_removed_files_and_packages() {
    let _exclusive = support::exclusive();
    let tmp = var_tmp();
    let lib = compile_library(tmp.path(), 7);
    let (python, _) = venv_with_distribution(tmp.path());
    // A file of a Debian package the plain build does not take, and the package that owns it,
    // as this machine's dpkg says.
    let tool = "/usr/bin/sha256sum";
    let owner = support::run_stdout(Command::new("dpkg-query").args(["-S", tool]));
    let deb = owner.split(':').next().unwrap().trim().to_owned();
    let version =
        support::run_stdout(Command::new("dpkg-query").args(["-W", "-f", "${Version}", &deb]));

    let a_spec = debian_spec(tmp.path());
    let b_spec = write_spec(
        tmp.path(),
        "more",
        &format!(
            "name: more\nlanguages:\n  python3:\n    interpreter: {}\n    packages: [tamperme]\n    paths: [{tool}, {}]\n",
            python.display(),
            lib.display()
        ),
    );
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    build(&a_spec, &a, EPOCH);
    build(&b_spec, &b, EPOCH);

    let o = prebake(
        &["diff", a.to_str().unwrap(), b.to_str().unwrap()],
        tmp.path(),
    );
    assert_code(&o, 1, "diff of different builds");
    let text = stdout(&o);
    for want in [
        "spec digest: ".to_owned(),
        format!("interpreter python3: {PYTHON} 3.11"),
        format!("Debian package {deb}: added, {version}"),
        "Python distribution tamperme: added, 1.0".to_owned(),
        format!("file {tool}: added (Debian package {deb})"),
        format!("file {}: added (no package)", lib.display()),
        "rootfs sha256 (uncompressed): ".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&want)),
            "no line `{want}...` in:\n{text}"
        );
    }
    // B's files and packages are A's and more (directories may differ: the venv's
    // interpreter has other site directories than Debian's).
    assert!(
        !text
            .lines()
            .any(|l| !l.starts_with("entry ") && l.contains(": removed")),
        "B only adds files and packages to A, yet one is removed:\n{text}"
    );

    // The other way round, everything added is removed; the JSON says so entry by entry.
    let o = prebake(
        &["diff", "--json", b.to_str().unwrap(), a.to_str().unwrap()],
        tmp.path(),
    );
    assert_code(&o, 1, "diff B A");
    let report = json(&o);
    let changes = report["changes"].as_array().unwrap();
    let package = |name: &str| {
        changes
            .iter()
            .find(|c| c["entry"] == "package" && c["name"] == name)
            .unwrap_or_else(|| panic!("no package {name}: {report}"))
    };
    assert_eq!(package(&deb)["before"], serde_json::json!([version]));
    assert_eq!(package(&deb)["after"], serde_json::json!([]));
    assert_eq!(package("tamperme")["kind"], "pypi");
    assert_eq!(package("tamperme")["after"], serde_json::json!([]));
    let files = file_changes(&report);
    for path in [tool, lib.to_str().unwrap()] {
        let (_, c) = files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not in {report}"));
        assert!(c["before"].is_string() && c["after"].is_null(), "{c}");
    }
    assert!(
        files.iter().all(|(_, c)| c["after"].is_null()),
        "a file of A is not in B or differs: {report}"
    );
}

#[test]
#[cfg_attr(not(have_debian_python), ignore = "needs /usr/bin/python3.11")]
fn diff_of_identical_builds_exits_0() {
    let _exclusive = support::exclusive();
    let tmp = var_tmp();
    let spec = debian_spec(tmp.path());
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    build(&spec, &a, EPOCH);
    build(&spec, &b, EPOCH);
    let o = prebake(
        &[
            "diff",
            a.to_str().unwrap(),
            b.join("bundle").to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_code(&o, 0, "diff of two builds of one spec");
    assert!(stdout(&o).starts_with("identical:"), "{}", stdout(&o));

    // The same spec at another SOURCE_DATE_EPOCH: only the epoch and the rootfs digest differ.
    build(&spec, &c, "1600000000");
    let o = prebake(
        &["diff", "--json", a.to_str().unwrap(), c.to_str().unwrap()],
        tmp.path(),
    );
    assert_code(&o, 1, "diff of builds at two epochs");
    let report = json(&o);
    let entries: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["entry"].as_str().unwrap())
        .collect();
    assert_eq!(entries, ["source_date_epoch", "rootfs"], "{report}");

    // Not a build output: an error, exit 2.
    let o = prebake(
        &["diff", a.to_str().unwrap(), tmp.path().to_str().unwrap()],
        tmp.path(),
    );
    assert_code(&o, 2, "diff with a directory that is no build");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("neither a `prebake build` output"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
