//! Import of an existing dify-sandbox `config.yaml`, so users migrate with the file they have.
//!
//! Only the build-time keys shape the image (`python_path`, `python_lib_path`, `nodejs_path`,
//! `allowed_syscalls`); the run-time keys are accepted and left to `runtime serve`, which reads
//! the same file. Keys dify-sandbox does not know are errors: dify-sandbox itself ignores them
//! silently, which is how typos go unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

use super::image::{absolute_path, parse_interpreter};
use super::yaml::{describe, At, Doc, KeyPath};
use super::{
    Compression, Extras, ImageSpec, Language, LanguageSpec, SeccompSpec, SpecError, SyscallRef,
};

/// Every key of dify-sandbox 0.2.x's `DifySandboxGlobalConfigurations`.
const TOP_KEYS: &[&str] = &[
    "app",
    "max_workers",
    "max_requests",
    "worker_timeout",
    "python_path",
    "python_lib_path",
    "python_pip_mirror_url",
    "python_deps_update_interval",
    "nodejs_path",
    "enable_network",
    "enable_preload",
    "allowed_syscalls",
    "proxy",
];
const APP_KEYS: &[&str] = &["port", "debug", "key"];
const PROXY_KEYS: &[&str] = &["socks5", "http", "https"];

/// The image name of an imported config (it has no name of its own).
pub const DIFY_IMAGE_NAME: &str = "dify-sandbox";

pub(crate) fn parse(text: &str, origin: &Path) -> Result<(ImageSpec, Vec<String>), SpecError> {
    let doc = Doc { text, origin };
    let root_value = doc.parse()?;
    let root = KeyPath::root();
    let mut warnings = Vec::new();
    let mut python = LanguageSpec {
        interpreter: "python3".to_string(),
        packages: Vec::new(),
        paths: Vec::new(),
        exclude: Vec::new(),
        default_excludes: true,
        precompile: true,
        seccomp: SeccompSpec::default(),
    };
    let mut node: Option<LanguageSpec> = None;
    let mut syscalls: Vec<SyscallRef> = Vec::new();

    for (key, v) in doc.mapping(&root_value, &root, TOP_KEYS)? {
        let p = root.key(&key);
        match key.as_str() {
            // A key with no value (null) falls through to the defaults below.
            "python_path" if !v.is_null() => {
                python.interpreter = parse_interpreter(&doc, v, &p)?;
            }
            "nodejs_path" if !v.is_null() => {
                node = Some(LanguageSpec {
                    interpreter: parse_interpreter(&doc, v, &p)?,
                    packages: Vec::new(),
                    paths: Vec::new(),
                    exclude: Vec::new(),
                    default_excludes: true,
                    precompile: false,
                    seccomp: SeccompSpec::default(),
                });
            }
            "python_lib_path" => {
                for (i, item) in doc.list(v, &p)?.iter().enumerate() {
                    let ip = p.index(i);
                    let path = absolute_path(&doc, item, &ip)?;
                    // symlink_metadata: a symlink is kept as a symlink, even a dangling one.
                    if std::fs::symlink_metadata(&path).is_ok() {
                        python.paths.push(path);
                    } else {
                        warnings.push(doc.warning(
                            &ip,
                            &format!(
                                "{} does not exist on this machine; skipped (dify's default \
                                 list names alternatives for several distributions, so some \
                                 are always missing)",
                                path.display()
                            ),
                        ));
                    }
                }
            }
            "allowed_syscalls" => {
                for (i, item) in doc.list(v, &p)?.iter().enumerate() {
                    let n = match item {
                        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                        _ => None,
                    };
                    let Some(n) = n else {
                        return Err(doc.invalid(
                            &p.index(i),
                            At::Value,
                            format!(
                                "expected a syscall number (dify-sandbox takes numbers only), \
                                 found {}",
                                describe(item)
                            ),
                        ));
                    };
                    let r = SyscallRef::Number(n);
                    if !syscalls.contains(&r) {
                        syscalls.push(r);
                    }
                }
            }
            "app" => {
                doc.mapping(v, &p, APP_KEYS)?;
            }
            "proxy" => {
                doc.mapping(v, &p, PROXY_KEYS)?;
            }
            // Run-time settings (and a null python_path/nodejs_path): `runtime serve` reads
            // them from the same file.
            _ => {}
        }
    }

    let mut languages = BTreeMap::new();
    languages.insert(Language::Python3, python);
    if let Some(node) = node {
        languages.insert(Language::Nodejs, node);
    }
    let mut spec = ImageSpec {
        origin: origin.to_path_buf(),
        digest: super::sha256_hex(text.as_bytes()),
        name: DIFY_IMAGE_NAME.to_string(),
        languages,
        extras: Extras::default(),
        compression: Compression::default(),
        allow_missing: false,
    };
    spec.add_allowed_syscalls(&syscalls);
    Ok((spec, warnings))
}
