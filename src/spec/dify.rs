//! Import of an existing dify-sandbox `config.yaml`, so users migrate with the file they have.
//!
//! Only the build-time keys shape the image (`python_path`, `python_lib_path`, `nodejs_path`,
//! `allowed_syscalls`); the run-time keys are accepted and left to `runtime serve`, which reads
//! the same file. A key dify-sandbox does not know is a warning naming file:line (an error with
//! `--strict`): dify-sandbox itself ignores it silently, which is how typos go unnoticed, but a
//! newer dify-sandbox may add keys, and its shipped file must build unchanged.
//!
//! The file's keys are described once, in [`crate::dify_config`]. As in dify-sandbox, `PYTHON_PATH`, `PYTHON_LIB_PATH` (comma-separated), `NODEJS_PATH` and
//! `ALLOWED_SYSCALLS` (comma-separated numbers) in the environment win over the file.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

use super::image::{absolute_path, parse_interpreter};
use super::yaml::{describe, At, Doc, KeyPath};
use super::{
    Compression, Extras, ImageSpec, Language, LanguageSpec, SeccompSpec, SpecError, SyscallRef,
};
use crate::dify_config::{env_list, APP_KEYS, PROXY_KEYS, TOP_KEYS};

/// The image name of an imported config (it has no name of its own).
pub const DIFY_IMAGE_NAME: &str = "dify-sandbox";

/// How a dify-sandbox config is imported.
pub struct DifyImport<'a> {
    /// Unknown keys are errors instead of warnings.
    pub strict: bool,
    /// The environment (dify-sandbox's overrides); `std::env::var` in the CLI.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Default for DifyImport<'_> {
    fn default() -> Self {
        DifyImport {
            strict: false,
            env: &|_| None,
        }
    }
}

pub(crate) fn parse(
    text: &str,
    origin: &Path,
    opts: &DifyImport,
) -> Result<(ImageSpec, Vec<String>), SpecError> {
    let doc = Doc { text, origin };
    let root_value = doc.parse()?;
    let root = KeyPath::root();
    let mut warnings = Vec::new();
    let mut python = LanguageSpec {
        interpreter: "python3".to_string(),
        packages: Vec::new(),
        requirements: None,
        paths: Vec::new(),
        exclude: Vec::new(),
        default_excludes: true,
        precompile: true,
        seccomp: SeccompSpec::default(),
    };
    let mut node: Option<LanguageSpec> = None;
    let mut syscalls: Vec<SyscallRef> = Vec::new();

    let top = if opts.strict {
        doc.mapping(&root_value, &root, TOP_KEYS)?
    } else {
        doc.mapping_lenient(&root_value, &root, TOP_KEYS, &mut warnings)?
    };
    for (key, v) in top {
        let p = root.key(&key);
        match key.as_str() {
            // A key with no value (null) falls through to the defaults below.
            "python_path" if !v.is_null() => {
                python.interpreter = parse_interpreter(&doc, v, &p)?;
            }
            "nodejs_path" if !v.is_null() => {
                node = Some(node_language(parse_interpreter(&doc, v, &p)?));
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
            "app" | "proxy" => {
                let allowed = if key == "app" { APP_KEYS } else { PROXY_KEYS };
                if opts.strict {
                    doc.mapping(v, &p, allowed)?;
                } else {
                    doc.mapping_lenient(v, &p, allowed, &mut warnings)?;
                }
            }
            // Run-time settings (and a null python_path/nodejs_path): `runtime serve` reads
            // them from the same file.
            _ => {}
        }
    }

    apply_env_overrides(opts.env, &mut python, &mut node, &mut syscalls)?;
    python.requirements = dependencies_file(origin);

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

/// dify-sandbox's environment overrides of the build-time keys, applied over the file.
fn apply_env_overrides(
    env: &dyn Fn(&str) -> Option<String>,
    python: &mut LanguageSpec,
    node: &mut Option<LanguageSpec>,
    syscalls: &mut Vec<SyscallRef>,
) -> Result<(), SpecError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let env_error = |name: &str, message: String| SpecError::Invalid {
        path: std::path::PathBuf::from(format!("${name}")),
        line: 1,
        column: 1,
        key: name.to_string(),
        message,
    };
    if let Some(v) = set("PYTHON_PATH") {
        python.interpreter = v.trim().to_string();
    }
    if let Some(v) = set("NODEJS_PATH") {
        let interpreter = v.trim().to_string();
        match node {
            Some(n) => n.interpreter = interpreter,
            None => *node = Some(node_language(interpreter)),
        }
    }
    if let Some(v) = set("PYTHON_LIB_PATH") {
        python.paths.clear();
        for item in env_list(&v) {
            let path = std::path::PathBuf::from(item);
            if !path.is_absolute() {
                return Err(env_error(
                    "PYTHON_LIB_PATH",
                    format!("`{item}` must be absolute"),
                ));
            }
            if std::fs::symlink_metadata(&path).is_ok() {
                python.paths.push(path);
            }
        }
    }
    if let Some(v) = set("ALLOWED_SYSCALLS") {
        syscalls.clear();
        for item in env_list(&v) {
            let n: u32 = item.parse().map_err(|_| {
                env_error(
                    "ALLOWED_SYSCALLS",
                    format!("`{item}` is not a syscall number (dify-sandbox takes numbers only)"),
                )
            })?;
            let r = SyscallRef::Number(n);
            if !syscalls.contains(&r) {
                syscalls.push(r);
            }
        }
    }
    Ok(())
}

/// The nodejs language of an imported config: the interpreter alone, as dify-sandbox has it.
fn node_language(interpreter: String) -> LanguageSpec {
    LanguageSpec {
        interpreter,
        packages: Vec::new(),
        requirements: None,
        paths: Vec::new(),
        exclude: Vec::new(),
        default_excludes: true,
        precompile: false,
        seccomp: SeccompSpec::default(),
    }
}

/// dify-sandbox's `dependencies/python-requirements.txt`, beside the `conf/` directory that holds
/// the config, when it lists anything: dify-sandbox pip-installs it at every start; prebake
/// installs it at build time, pinned and hashed like any spec's `requirements:`.
fn dependencies_file(config: &Path) -> Option<std::path::PathBuf> {
    let workdir = config.parent()?.parent()?;
    let file = workdir.join("dependencies/python-requirements.txt");
    let text = std::fs::read_to_string(&file).ok()?;
    text.lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#'))
        .then_some(file)
}
