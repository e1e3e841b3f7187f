//! The image spec: the shipped images parse, every bad input is reported with the file, the
//! line and the key path, and dify-sandbox's config.yaml imports.

use crate::support;
use std::path::{Path, PathBuf};

use prebake::spec::{
    normalize_package_name, Compression, DefaultAction, DifyImport, Extras, ImageSpec, Language,
    SpecError, SyscallRef,
};
use sha2::{Digest, Sha256};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Write `text` to `<tmp>/<file>` and load it, so messages carry a real file name.
fn load_text(file: &str, text: &str) -> (tempfile::TempDir, Result<ImageSpec, SpecError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    let r = ImageSpec::load(&path);
    (dir, r)
}

/// Asserts the error is `Invalid` at `line` for `key`, and its message mentions every hint.
fn expect_invalid(text: &str, line: usize, key: &str, hints: &[&str]) {
    let (_dir, r) = load_text("bad-spec.yaml", text);
    let err = match r {
        Ok(spec) => panic!("expected an error for:\n{text}\ngot {spec:?}"),
        Err(e) => e,
    };
    let shown = err.to_string();
    match &err {
        SpecError::Invalid {
            path,
            line: l,
            key: k,
            message,
            ..
        } => {
            assert!(path.ends_with("bad-spec.yaml"), "{shown}");
            assert_eq!(*l, line, "wrong line in `{shown}` for:\n{text}");
            assert_eq!(k, key, "wrong key in `{shown}`");
            for h in hints {
                assert!(message.contains(h), "`{shown}` lacks `{h}`");
            }
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // The one-line form names file, line and key, for the CLI.
    assert!(shown.contains(&format!("bad-spec.yaml:{line}:")), "{shown}");
    assert!(shown.contains(key), "{shown}");
}

#[test]
fn shipped_images_parse() {
    let _exclusive = support::exclusive();
    let py = ImageSpec::load(&repo("images/python3.yaml")).unwrap();
    assert_eq!(py.name, "python3");
    assert_eq!(py.languages.len(), 1);
    let l = &py.languages[&Language::Python3];
    assert_eq!(l.interpreter, "python3");
    assert!(l.packages.is_empty() && l.paths.is_empty() && l.exclude.is_empty());
    assert!(l.default_excludes && l.precompile);
    assert_eq!(l.seccomp.default_action, DefaultAction::Errno);
    assert_eq!(py.extras, Extras::default());
    assert_eq!(py.compression, Compression::Zstd);
    assert!(!py.allow_missing);

    let np = ImageSpec::load(&repo("images/numpy.yaml")).unwrap();
    assert_eq!(
        np.languages[&Language::Python3].packages,
        ["numpy", "requests", "httpx", "jinja2"]
    );

    let node = ImageSpec::load(&repo("images/nodejs.yaml")).unwrap();
    assert_eq!(node.name, "nodejs");
    assert_eq!(
        node.languages.keys().collect::<Vec<_>>(),
        [&Language::Nodejs]
    );
    assert_eq!(node.languages[&Language::Nodejs].interpreter, "node");
    assert!(!node.languages[&Language::Nodejs].precompile);
}

#[test]
fn digest_is_sha256_of_the_file_bytes() {
    let _exclusive = support::exclusive();
    let path = repo("images/numpy.yaml");
    let spec = ImageSpec::load(&path).unwrap();
    let want = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    assert_eq!(spec.digest, want);
    assert_eq!(spec.origin, path);
}

#[test]
fn every_key_of_the_full_example() {
    let _exclusive = support::exclusive();
    let text = r#"
name: full.example-1
compression: gzip
allow_missing: true
languages:
  python3:
    interpreter: /opt/venv/bin/python3
    packages: [requests, Jinja2]
    paths: [/usr/share/dict]
    exclude: ["**/tests/**"]
    default_excludes: false
    precompile: false
    seccomp:
      default_action: kill_process
      allow: [sysinfo, 99, "99", sysinfo, "7"]
  nodejs:
    interpreter: node
    seccomp: {default_action: log}
extras: { libgcc_s: false, ca_certificates: false, openssl_config: false, zoneinfo: false,
          etc_stubs: false, tmp: false, ld_so_cache: false, locales: true }
"#;
    let (_d, r) = load_text("full.yaml", text);
    let s = r.unwrap();
    assert_eq!(s.name, "full.example-1");
    assert_eq!(s.compression, Compression::Gzip);
    assert!(s.allow_missing);
    let py = &s.languages[&Language::Python3];
    assert_eq!(py.interpreter, "/opt/venv/bin/python3");
    assert_eq!(py.packages, ["requests", "Jinja2"]);
    assert_eq!(py.paths, [PathBuf::from("/usr/share/dict")]);
    assert_eq!(py.exclude, ["**/tests/**"]);
    assert!(!py.default_excludes && !py.precompile);
    assert_eq!(py.seccomp.default_action, DefaultAction::KillProcess);
    // Duplicates (by name, or a number written as a string) collapse.
    assert_eq!(
        py.seccomp.allow,
        [
            SyscallRef::Name("sysinfo".into()),
            SyscallRef::Number(99),
            SyscallRef::Number(7)
        ]
    );
    let node = &s.languages[&Language::Nodejs];
    assert_eq!(node.seccomp.default_action, DefaultAction::Log);
    assert!(node.seccomp.allow.is_empty());
    let e = &s.extras;
    assert!(!e.libgcc_s && !e.ca_certificates && !e.openssl_config && !e.zoneinfo);
    assert!(!e.etc_stubs && !e.tmp && !e.ld_so_cache && e.locales);
}

#[test]
fn name_defaults_to_the_file_stem_and_nulls_mean_defaults() {
    let _exclusive = support::exclusive();
    let text = "languages:\n  python3:\n    interpreter: python3\n    packages:\n    exclude:\n    precompile:\nextras:\n";
    let (_d, r) = load_text("my-image.yaml", text);
    let s = r.unwrap();
    assert_eq!(s.name, "my-image");
    assert!(s.languages[&Language::Python3].precompile);
    assert_eq!(s.extras, Extras::default());

    // A file name that cannot be a tag needs an explicit name.
    let (_d, r) = load_text(
        "My Image.yaml",
        "languages: {nodejs: {interpreter: node}}\n",
    );
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("My Image.yaml:1:1: name:") && e.contains("add `name:"),
        "{e}"
    );
}

#[test]
fn yaml_syntax_error_has_line() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "name: x\nlanguages:\n  python3:\n    interpreter: python3\n   packages: [a]\n",
        5,
        "(yaml syntax)",
        &["not valid YAML"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: \"python3\n",
        4,
        "(yaml syntax)",
        &["quoted scalar"],
    );
}

#[test]
fn unknown_keys_list_the_valid_ones() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "name: x\nlanguage:\n  python3: {interpreter: python3}\n",
        2,
        "language",
        &[
            "unknown key `language`",
            "did you mean `languages`",
            "name, compression, allow_missing, languages, extras",
        ],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    pakages: [numpy]\n",
        4,
        "languages.python3.pakages",
        &[
            "did you mean `packages`",
            "interpreter, packages, requirements, paths",
        ],
    );
    expect_invalid(
        "languages:\n  ruby:\n    interpreter: ruby\n",
        2,
        "languages.ruby",
        &["python3, nodejs"],
    );
    expect_invalid(
        "languages: {python3: {interpreter: python3}}\nextras:\n  tmp: true\n  zonefino: false\n",
        4,
        "extras.zonefino",
        &["did you mean `zoneinfo`", "locales"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    seccomp:\n      allowed: [1]\n",
        5,
        "languages.python3.seccomp.allowed",
        &["default_action, allow"],
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    packages: numpy\n",
        4,
        "languages.python3.packages",
        &["expected a list", "the string \"numpy\""],
    );
    expect_invalid(
        "allow_missing: yes\nlanguages: {python3: {interpreter: python3}}\n",
        1,
        "allow_missing",
        &["expected true or false"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    packages: [requests, 42]\n",
        4,
        "languages.python3.packages[1]",
        &["expected a string", "quotes"],
    );
    expect_invalid(
        "languages:\n  - python3\n",
        2,
        "languages",
        &["expected a mapping", "python3, nodejs"],
    );
    expect_invalid("- a\n- b\n", 1, "(top level)", &["expected a mapping"]);
}

#[test]
fn bad_enum_values_list_the_allowed_ones() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "compression: xz\nlanguages: {python3: {interpreter: python3}}\n",
        1,
        "compression",
        &["`xz` is not allowed", "zstd | gzip"],
    );
    expect_invalid(
        "languages:\n  nodejs:\n    interpreter: node\n    seccomp:\n      default_action: allow\n",
        5,
        "languages.nodejs.seccomp.default_action",
        &["errno | kill_process | log"],
    );
}

#[test]
fn interpreter_must_be_given_and_not_relative() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "languages:\n  python3:\n    interpreter: \"\"\n",
        3,
        "languages.python3.interpreter",
        &["interpreter is empty", "absolute path"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter:\n    packages: [numpy]\n",
        3,
        "languages.python3.interpreter",
        &["interpreter is empty"],
    );
    expect_invalid(
        "languages:\n  python3:\n    packages: [numpy]\n",
        2,
        "languages.python3.interpreter",
        &["missing `interpreter:`", "python3"],
    );
    expect_invalid(
        "languages:\n  nodejs:\n    interpreter: bin/node\n",
        3,
        "languages.nodejs.interpreter",
        &["relative path", "absolute"],
    );
}

#[test]
fn relative_paths_are_refused() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    paths:\n      - /usr/share/dict\n      - lib/python3\n",
        6,
        "languages.python3.paths[1]",
        &["relative path", "must be absolute", "/lib/python3"],
    );
}

#[test]
fn python_only_keys_under_nodejs() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "languages:\n  nodejs:\n    interpreter: node\n    packages: [lodash]\n",
        4,
        "languages.nodejs.packages",
        &["only applies to python3", "interpreter, paths, exclude"],
    );
    expect_invalid(
        "languages:\n  nodejs:\n    interpreter: node\n    precompile: true\n",
        4,
        "languages.nodejs.precompile",
        &["only applies to python3"],
    );
}

#[test]
fn at_least_one_language() {
    let _exclusive = support::exclusive();
    expect_invalid("name: empty\n", 1, "languages", &["missing `languages:`"]);
    expect_invalid(
        "name: empty\nlanguages: {}\n",
        2,
        "languages",
        &["at least one"],
    );
    // An empty file is a spec without languages, not a crash.
    expect_invalid("", 1, "languages", &["missing `languages:`"]);
}

#[test]
fn package_names_and_other_values() {
    let _exclusive = support::exclusive();
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    packages:\n      - requests\n      - numpy==1.26\n",
        6,
        "languages.python3.packages[1]",
        &["not a Python distribution name", "write `numpy`"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    packages: [Jinja2, requests, jinja_2, jinja2]\n",
        4,
        "languages.python3.packages[3]",
        &["listed twice", "`Jinja2` at languages.python3.packages[0]"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    exclude: [\"a[b\"]\n",
        4,
        "languages.python3.exclude[0]",
        &["not a valid glob"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    seccomp:\n      allow:\n        - sysinfo\n        - -1\n",
        7,
        "languages.python3.seccomp.allow[1]",
        &["not a syscall number"],
    );
    expect_invalid(
        "languages:\n  python3:\n    interpreter: python3\n    seccomp:\n      allow: [Sys Info]\n",
        5,
        "languages.python3.seccomp.allow[0]",
        &["not a syscall name"],
    );
    expect_invalid(
        "name: My Image\nlanguages: {python3: {interpreter: python3}}\n",
        1,
        "name",
        &["cannot be used in an image tag"],
    );
}

#[test]
fn duplicate_keys_are_errors() {
    let _exclusive = support::exclusive();
    let (_d, r) = load_text(
        "dup.yaml",
        "languages:\n  python3:\n    interpreter: python3\n    interpreter: python3.11\n",
    );
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("dup.yaml:3:5: languages.python3: duplicate entry with key \"interpreter\""),
        "{e}"
    );
    assert!(e.contains("only once"), "{e}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let _exclusive = support::exclusive();
    let e = ImageSpec::load(Path::new("/nonexistent/prebake/spec.yaml")).unwrap_err();
    assert!(matches!(e, SpecError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/prebake/spec.yaml"));
}

#[test]
fn pep503_normalization() {
    let _exclusive = support::exclusive();
    assert_eq!(normalize_package_name("Jinja2"), "jinja2");
    assert_eq!(
        normalize_package_name("typing_extensions"),
        "typing-extensions"
    );
    assert_eq!(normalize_package_name("zope.interface"), "zope-interface");
    assert_eq!(normalize_package_name("A__b-._C"), "a-b-c");
}

// ---- dify-sandbox config.yaml ----

/// dify-sandbox's python_lib_path defaults (internal/static/config_default_amd64.go) plus
/// one path that exists on no machine.
const DIFY_LIB_PATHS: &[&str] = &[
    "/usr/local/lib/python3.10",
    "/usr/lib/python3.10",
    "/usr/lib/python3",
    "/usr/lib/x86_64-linux-gnu",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/run/systemd/resolve/stub-resolv.conf",
    "/run/resolvconf/resolv.conf",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/timezone",
    "/nonexistent/prebake-test/lib",
];

/// dify-sandbox's conf/config.yaml, with python_lib_path, allowed_syscalls and nodejs_path.
fn dify_config() -> String {
    let mut s = String::from(
        "app:\n  port: 8194\n  debug: True\n  key: dify-sandbox\nmax_workers: 4\n\
         max_requests: 50\nworker_timeout: 5\npython_path: /usr/local/bin/python3\n\
         nodejs_path: /usr/local/bin/node\n\
         enable_network: True # please make sure there is no network risk in your environment\n\
         enable_preload: false\npython_deps_update_interval: 30m\npython_pip_mirror_url: ''\n\
         python_lib_path:\n",
    );
    for p in DIFY_LIB_PATHS {
        s.push_str(&format!("  - {p}\n"));
    }
    s.push_str(
        "allowed_syscalls: # please leave it empty if you have no idea how seccomp works\n  - 1\n  - 2\n  - 1\n\
         proxy:\n  socks5: ''\n  http: ''\n  https: ''\n",
    );
    s
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn dify_default_config_imports() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let text = dify_config();
    let path = write(dir.path(), "config.yaml", &text);
    let (spec, warnings) = ImageSpec::from_dify_config(&path).unwrap();

    assert_eq!(spec.name, "dify-sandbox");
    assert_eq!(spec.digest, hex::encode(Sha256::digest(text.as_bytes())));
    let py = &spec.languages[&Language::Python3];
    assert_eq!(py.interpreter, "/usr/local/bin/python3");
    let node = &spec.languages[&Language::Nodejs];
    assert_eq!(node.interpreter, "/usr/local/bin/node");

    // Existing entries become paths, in order; missing ones are warnings naming file and line.
    let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
    let want: Vec<PathBuf> = DIFY_LIB_PATHS
        .iter()
        .filter(|p| exists(p))
        .map(PathBuf::from)
        .collect();
    assert_eq!(py.paths, want);
    let missing: Vec<(usize, &str)> = DIFY_LIB_PATHS
        .iter()
        .enumerate()
        .filter(|(_, p)| !exists(p))
        .map(|(i, p)| (i, *p))
        .collect();
    assert!(!missing.is_empty());
    assert_eq!(warnings.len(), missing.len(), "{warnings:#?}");
    // python_lib_path: is line 14; its items follow.
    for ((i, p), w) in missing.iter().zip(&warnings) {
        let at = format!("config.yaml:{}:", 15 + i);
        assert!(w.contains(&at), "`{w}` lacks `{at}`");
        assert!(w.contains(&format!("python_lib_path[{i}]")), "{w}");
        assert!(w.contains(p) && w.contains("does not exist"), "{w}");
    }

    // allowed_syscalls is added to every language, deduplicated, never a replacement.
    for lang in [Language::Python3, Language::Nodejs] {
        let l = &spec.languages[&lang];
        assert_eq!(
            l.seccomp.allow,
            [SyscallRef::Number(1), SyscallRef::Number(2)],
            "{lang:?}"
        );
        assert_eq!(l.seccomp.default_action, DefaultAction::Errno);
    }
}

#[test]
fn dify_config_as_shipped_by_dify_sandbox() {
    let _exclusive = support::exclusive();
    // The file exactly as dify-sandbox ships it: empty allowed_syscalls, no lib paths, no node.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config.yaml",
        "app:\n  port: 8194\n  debug: True\n  key: dify-sandbox\nmax_workers: 4\nmax_requests: 50\n\
         worker_timeout: 5\npython_path: /usr/local/bin/python3\nenable_network: True\n\
         allowed_syscalls: # please leave it empty if you have no idea how seccomp works\n\
         proxy:\n  socks5: ''\n  http: ''\n  https: ''\n",
    );
    let (spec, warnings) = ImageSpec::from_dify_config(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec.languages.len(), 1);
    let py = &spec.languages[&Language::Python3];
    assert!(py.seccomp.allow.is_empty() && py.paths.is_empty());

    // Without python_path, the python3 on PATH is used.
    let path = write(dir.path(), "min.yaml", "max_workers: 2\n");
    let (spec, _) = ImageSpec::from_dify_config(&path).unwrap();
    assert_eq!(spec.languages[&Language::Python3].interpreter, "python3");
}

#[test]
fn dify_allowed_syscalls_merge_into_an_existing_spec() {
    let _exclusive = support::exclusive();
    let (_d, r) = load_text(
        "both.yaml",
        "languages:\n  python3:\n    interpreter: python3\n    seccomp: {allow: [sysinfo, 2]}\n  nodejs: {interpreter: node}\n",
    );
    let mut spec = r.unwrap();
    spec.add_allowed_syscalls(&[SyscallRef::Number(1), SyscallRef::Number(2)]);
    assert_eq!(
        spec.languages[&Language::Python3].seccomp.allow,
        [
            SyscallRef::Name("sysinfo".into()),
            SyscallRef::Number(2),
            SyscallRef::Number(1)
        ]
    );
    assert_eq!(
        spec.languages[&Language::Nodejs].seccomp.allow,
        [SyscallRef::Number(1), SyscallRef::Number(2)]
    );
}

fn dify_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "config.yaml", text);
    let strict = DifyImport {
        strict: true,
        ..DifyImport::default()
    };
    match ImageSpec::from_dify_config_with(&path, &strict) {
        Ok(s) => panic!("expected an error for:\n{text}\ngot {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn dify_unknown_keys_are_warnings_unless_strict() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config.yaml",
        "app:\n  port: 8194\n  keys: abc\nmax_worker: 4\nfuture_key: 1\n",
    );
    let (_, warnings) = ImageSpec::from_dify_config(&path).unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    let has = |parts: &[&str]| warnings.iter().any(|w| parts.iter().all(|p| w.contains(p)));
    assert!(
        has(&["config.yaml:3:", "app.keys: unknown key"]),
        "{warnings:#?}"
    );
    assert!(
        has(&["config.yaml:4:", "did you mean `max_workers`"]),
        "{warnings:#?}"
    );
    assert!(
        has(&["config.yaml:5:", "future_key", "--strict"]),
        "{warnings:#?}"
    );
}

#[test]
fn dify_sandbox_shipped_configs_import_without_warnings() {
    let _exclusive = support::exclusive();
    for version in ["main", "0.2.10"] {
        let path = support::repo_root()
            .join("tests/fixtures/dify-sandbox")
            .join(version)
            .join("conf/config.yaml");
        for strict in [false, true] {
            let opts = DifyImport {
                strict,
                ..DifyImport::default()
            };
            let (spec, warnings) = ImageSpec::from_dify_config_with(&path, &opts)
                .unwrap_or_else(|e| panic!("{version} strict={strict}: {e}"));
            assert!(warnings.is_empty(), "{version}: {warnings:?}");
            assert_eq!(spec.languages.len(), 1, "{version}");
        }
    }
}

#[test]
fn dify_environment_overrides_the_file() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config.yaml",
        "python_path: /opt/python/bin/python3\nallowed_syscalls: [1]\n",
    );
    let env = |k: &str| match k {
        "PYTHON_PATH" => Some("/usr/bin/python3.11".to_string()),
        "NODEJS_PATH" => Some("/usr/bin/node".to_string()),
        "PYTHON_LIB_PATH" => Some("/etc/hosts, /nonexistent/prebake".to_string()),
        "ALLOWED_SYSCALLS" => Some("7,8,7".to_string()),
        _ => None,
    };
    let opts = DifyImport {
        strict: false,
        env: &env,
    };
    let (spec, _) = ImageSpec::from_dify_config_with(&path, &opts).unwrap();
    let py = &spec.languages[&Language::Python3];
    assert_eq!(py.interpreter, "/usr/bin/python3.11");
    assert_eq!(py.paths, [PathBuf::from("/etc/hosts")]);
    assert_eq!(
        spec.languages[&Language::Nodejs].interpreter,
        "/usr/bin/node"
    );
    assert_eq!(
        py.seccomp.allow,
        [SyscallRef::Number(7), SyscallRef::Number(8)]
    );
    let bad = |k: &str| (k == "ALLOWED_SYSCALLS").then(|| "1,read".to_string());
    let opts = DifyImport {
        strict: false,
        env: &bad,
    };
    let e = ImageSpec::from_dify_config_with(&path, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ALLOWED_SYSCALLS") && e.contains("`read`"),
        "{e}"
    );
}

#[test]
fn dify_unknown_keys_are_errors_when_strict() {
    let _exclusive = support::exclusive();
    let e = dify_err("app:\n  port: 8194\nmax_worker: 4\n");
    assert!(
        e.contains("config.yaml:3:1: max_worker: unknown key `max_worker`"),
        "{e}"
    );
    assert!(e.contains("did you mean `max_workers`"), "{e}");
    assert!(e.contains("allowed_syscalls"), "{e}");

    let e = dify_err("app:\n  port: 8194\n  keys: abc\n");
    assert!(e.contains("config.yaml:3:3: app.keys: unknown key"), "{e}");
    assert!(e.contains("port, debug, key"), "{e}");

    let e = dify_err("proxy:\n  ftp: x\n");
    assert!(e.contains("config.yaml:2:3: proxy.ftp"), "{e}");
}

#[test]
fn dify_bad_values_are_errors() {
    let _exclusive = support::exclusive();
    let e = dify_err("python_lib_path:\n  - /etc/hosts\n  - usr/lib/python3\n");
    assert!(e.contains("config.yaml:3:5: python_lib_path[1]"), "{e}");
    assert!(e.contains("must be absolute"), "{e}");

    let e = dify_err("allowed_syscalls: [1, read]\n");
    assert!(e.contains("config.yaml:1:23: allowed_syscalls[1]"), "{e}");
    assert!(e.contains("numbers only"), "{e}");

    let e = dify_err("python_path: ''\n");
    assert!(
        e.contains("config.yaml:1:1: python_path: the interpreter is empty"),
        "{e}"
    );
}

#[test]
fn dify_dependencies_file_becomes_the_requirements() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::create_dir_all(dir.path().join("dependencies")).unwrap();
    let cfg = write(&dir.path().join("conf"), "config.yaml", "max_workers: 2\n");
    let deps = dir.path().join("dependencies/python-requirements.txt");
    // As shipped: empty (or comments only), so no packages.
    std::fs::write(&deps, "# none\n").unwrap();
    let (spec, _) = ImageSpec::from_dify_config(&cfg).unwrap();
    assert_eq!(spec.languages[&Language::Python3].requirements, None);
    std::fs::write(&deps, "idna==3.10 --hash=sha256:00\n").unwrap();
    let (spec, _) = ImageSpec::from_dify_config(&cfg).unwrap();
    assert_eq!(
        spec.languages[&Language::Python3].requirements.as_deref(),
        Some(deps.as_path())
    );
}
