//! prebake's own image spec (`images/*.yaml`): the YAML walk that builds an [`ImageSpec`].
//! The format, with every key, is documented in docs/spec.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::yaml::{describe, At, Doc, KeyPath};
use super::{
    Compression, DefaultAction, Extras, ImageSpec, Language, LanguageSpec, SeccompSpec, SpecError,
    SyscallRef,
};

const TOP_KEYS: &[&str] = &[
    "name",
    "compression",
    "allow_missing",
    "languages",
    "extras",
];
const LANGUAGES: &[&str] = &["python3", "nodejs"];
const PYTHON_KEYS: &[&str] = &[
    "interpreter",
    "packages",
    "requirements",
    "paths",
    "exclude",
    "default_excludes",
    "precompile",
    "seccomp",
];
/// Keys that only mean something for Python; nodejs gets a message that says so.
const PYTHON_ONLY: &[&str] = &["packages", "requirements", "precompile"];
const NODE_KEYS: &[&str] = &[
    "interpreter",
    "paths",
    "exclude",
    "default_excludes",
    "seccomp",
];
const SECCOMP_KEYS: &[&str] = &["default_action", "allow"];
const ACTIONS: &[&str] = &["errno", "kill_process", "log"];
const COMPRESSIONS: &[&str] = &["zstd", "gzip"];
const EXTRAS_KEYS: &[&str] = &[
    "libgcc_s",
    "ca_certificates",
    "openssl_config",
    "zoneinfo",
    "etc_stubs",
    "tmp",
    "ld_so_cache",
    "locales",
];

pub(crate) fn parse(text: &str, origin: &Path) -> Result<ImageSpec, SpecError> {
    let doc = Doc { text, origin };
    let root_value = doc.parse()?;
    let root = KeyPath::root();
    let mut name = None;
    let mut compression = Compression::default();
    let mut allow_missing = false;
    let mut languages = BTreeMap::new();
    let mut extras = Extras::default();
    let mut saw_languages = false;

    for (key, v) in doc.mapping(&root_value, &root, TOP_KEYS)? {
        let p = root.key(&key);
        match key.as_str() {
            "name" => name = Some(parse_name(&doc, v, &p)?),
            "compression" => {
                compression = match doc.one_of(v, &p, COMPRESSIONS)? {
                    0 => Compression::Zstd,
                    _ => Compression::Gzip,
                }
            }
            "allow_missing" => allow_missing = doc.boolean(v, &p, false)?,
            "languages" => {
                saw_languages = true;
                languages = parse_languages(&doc, v, &p)?;
            }
            "extras" => extras = parse_extras(&doc, v, &p)?,
            _ => unreachable!("mapping() only returns allowed keys"),
        }
    }

    if languages.is_empty() {
        let p = root.key("languages");
        let message = if saw_languages {
            "no language given; add at least one of python3, nodejs with its `interpreter:`"
        } else {
            "missing `languages:`; add a mapping with at least one of python3, nodejs, e.g. \
             `languages: {python3: {interpreter: python3}}`"
        };
        return Err(doc.invalid(&p, At::Key, message));
    }

    let name = match name {
        Some(n) => n,
        None => default_name(&doc)?,
    };

    Ok(ImageSpec {
        origin: origin.to_path_buf(),
        digest: super::sha256_hex(text.as_bytes()),
        name,
        languages,
        extras,
        compression,
        allow_missing,
    })
}

/// The image name is used in the default tag, so it must be a valid OCI repository component.
fn parse_name(doc: &Doc<'_>, v: &Value, p: &KeyPath) -> Result<String, SpecError> {
    let name = doc.string(v, p)?;
    if !valid_name(&name) {
        return Err(doc.invalid(
            p,
            At::Value,
            format!(
                "`{name}` cannot be used in an image tag; use lowercase letters and digits, \
                 optionally separated by single `.`, `_` or `-` (e.g. `python3-numpy`)"
            ),
        ));
    }
    Ok(name)
}

/// Without `name:`, the spec's file stem names the image (images/python3.yaml -> python3).
fn default_name(doc: &Doc<'_>) -> Result<String, SpecError> {
    let stem = doc
        .origin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    if valid_name(&stem) {
        Ok(stem)
    } else {
        Err(doc.invalid(
            &KeyPath::root().key("name"),
            At::Key,
            format!(
                "no `name:` given and the file name `{stem}` is not a valid image name; add \
                 `name: <lowercase letters, digits, . _ ->`"
            ),
        ))
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    // OCI distribution spec repository component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    if name.is_empty() || name.len() > 128 {
        return false;
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    // Split into alternating runs of alphanumerics and separators; every separator run must
    // be one of the allowed forms and sit between two alphanumeric runs.
    let mut prev_alnum = false;
    let mut run = String::new();
    for c in name.chars() {
        if alnum(c) {
            if !run.is_empty() {
                if !prev_alnum
                    || !(run == "." || run == "_" || run == "__" || run.chars().all(|r| r == '-'))
                {
                    return false;
                }
                run.clear();
            }
            prev_alnum = true;
        } else if matches!(c, '.' | '_' | '-') {
            if run.is_empty() && !prev_alnum {
                return false;
            }
            run.push(c);
        } else {
            return false;
        }
    }
    run.is_empty()
}

fn parse_languages(
    doc: &Doc<'_>,
    v: &Value,
    p: &KeyPath,
) -> Result<BTreeMap<Language, LanguageSpec>, SpecError> {
    let mut out = BTreeMap::new();
    for (key, lv) in doc.mapping(v, p, LANGUAGES)? {
        let lang = match key.as_str() {
            "python3" => Language::Python3,
            _ => Language::Nodejs,
        };
        out.insert(lang, parse_language(doc, lang, lv, &p.key(&key))?);
    }
    Ok(out)
}

fn parse_language(
    doc: &Doc<'_>,
    lang: Language,
    v: &Value,
    p: &KeyPath,
) -> Result<LanguageSpec, SpecError> {
    let is_python = lang == Language::Python3;
    // Python-only keys under nodejs get a message that says why they are refused, instead of
    // a bare "unknown key".
    if !is_python {
        if let Value::Mapping(m) = v {
            for k in m.keys() {
                if let Some(key) = k.as_str().filter(|k| PYTHON_ONLY.contains(k)) {
                    return Err(doc.invalid(
                        &p.key(key),
                        At::Key,
                        format!(
                            "`{key}` only applies to python3; remove it from {} (valid keys \
                             here: {})",
                            lang.as_str(),
                            NODE_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    let allowed = if is_python { PYTHON_KEYS } else { NODE_KEYS };
    let mut spec = LanguageSpec {
        interpreter: String::new(),
        packages: Vec::new(),
        requirements: None,
        paths: Vec::new(),
        exclude: Vec::new(),
        default_excludes: true,
        precompile: is_python,
        seccomp: SeccompSpec::default(),
    };
    let mut interpreter = None;
    for (key, kv) in doc.mapping(v, p, allowed)? {
        let kp = p.key(&key);
        match key.as_str() {
            "interpreter" => interpreter = Some(parse_interpreter(doc, kv, &kp)?),
            "packages" => spec.packages = parse_packages(doc, kv, &kp)?,
            "requirements" => {
                let file = doc.string(kv, &kp)?;
                if file.trim().is_empty() {
                    return Err(doc.invalid(&kp, At::Value, "empty path; remove the key"));
                }
                let base = doc.origin.parent().unwrap_or(Path::new("."));
                let path = base.join(file.trim());
                if !path.is_file() {
                    return Err(doc.invalid(
                        &kp,
                        At::Value,
                        format!(
                            "{} is not a file (a relative path is taken from the spec's directory)",
                            path.display()
                        ),
                    ));
                }
                spec.requirements = Some(path);
            }
            "paths" => spec.paths = parse_paths(doc, kv, &kp)?,
            "exclude" => spec.exclude = parse_globs(doc, kv, &kp)?,
            "default_excludes" => spec.default_excludes = doc.boolean(kv, &kp, true)?,
            "precompile" => spec.precompile = doc.boolean(kv, &kp, true)?,
            "seccomp" => spec.seccomp = parse_seccomp(doc, kv, &kp)?,
            _ => unreachable!("mapping() only returns allowed keys"),
        }
    }
    spec.interpreter = interpreter.ok_or_else(|| {
        doc.invalid(
            &p.key("interpreter"),
            At::Key,
            format!(
                "missing `interpreter:` for {}; give a command name on PATH (e.g. `{}`) or an \
                 absolute path",
                lang.as_str(),
                default_interpreter(lang)
            ),
        )
    })?;
    Ok(spec)
}

pub(crate) fn default_interpreter(lang: Language) -> &'static str {
    match lang {
        Language::Python3 => "python3",
        Language::Nodejs => "node",
    }
}

/// A command name looked up on PATH, or an absolute path. A relative path with a slash would
/// depend on the directory the build runs in, so it is refused.
pub(crate) fn parse_interpreter(
    doc: &Doc<'_>,
    v: &Value,
    p: &KeyPath,
) -> Result<String, SpecError> {
    let s = match v {
        Value::Null => String::new(),
        other => doc.string(other, p)?,
    };
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(doc.invalid(
            p,
            At::Key,
            "the interpreter is empty; give a command name on PATH (e.g. `python3`, `node`) or \
             an absolute path (e.g. `/usr/bin/python3.11`)",
        ));
    }
    if s.contains('\0') {
        return Err(doc.invalid(p, At::Value, "the interpreter contains a NUL byte"));
    }
    if s.contains('/') && !s.starts_with('/') {
        return Err(doc.invalid(
            p,
            At::Value,
            format!(
                "`{s}` is a relative path; write an absolute path (e.g. `/opt/venv/bin/python3`) \
                 or a bare command name found on PATH"
            ),
        ));
    }
    Ok(s)
}

fn parse_packages(doc: &Doc<'_>, v: &Value, p: &KeyPath) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for (i, item) in doc.list(v, p)?.iter().enumerate() {
        let ip = p.index(i);
        let name = doc.string(item, &ip)?.trim().to_string();
        if name.is_empty() {
            return Err(doc.invalid(&ip, At::Value, "empty package name; remove the entry"));
        }
        if !valid_dist_name(&name) {
            let bare: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            let hint = if !bare.is_empty() && valid_dist_name(&bare) {
                format!(
                    "; packages are chosen by name from what is installed for the interpreter \
                     (install the version you want there), so write `{bare}`"
                )
            } else {
                String::new()
            };
            return Err(doc.invalid(
                &ip,
                At::Value,
                format!(
                    "`{name}` is not a Python distribution name (letters, digits, `.`, `_`, `-`, \
                     starting and ending with a letter or digit){hint}"
                ),
            ));
        }
        let norm = super::normalize_package_name(&name);
        if let Some(j) = out
            .iter()
            .position(|o| super::normalize_package_name(o) == norm)
        {
            return Err(doc.invalid(
                &ip,
                At::Value,
                format!(
                    "`{name}` is listed twice (also as `{}` at {}); names match after PEP 503 \
                     normalization, remove one",
                    out[j],
                    p.index(j)
                ),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// PEP 508 names: ASCII letters and digits, with `.`, `_`, `-` inside.
fn valid_dist_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Absolute paths only: a path keeps its host location inside the rootfs, so a relative one
/// has no meaning there.
pub(crate) fn parse_paths(
    doc: &Doc<'_>,
    v: &Value,
    p: &KeyPath,
) -> Result<Vec<PathBuf>, SpecError> {
    let mut out = Vec::new();
    for (i, item) in doc.list(v, p)?.iter().enumerate() {
        let ip = p.index(i);
        out.push(absolute_path(doc, item, &ip)?);
    }
    Ok(out)
}

pub(crate) fn absolute_path(doc: &Doc<'_>, v: &Value, p: &KeyPath) -> Result<PathBuf, SpecError> {
    let s = doc.string(v, p)?;
    if s.trim().is_empty() {
        return Err(doc.invalid(p, At::Value, "empty path; remove the entry"));
    }
    if s.contains('\0') {
        return Err(doc.invalid(p, At::Value, "the path contains a NUL byte"));
    }
    if !s.starts_with('/') {
        return Err(doc.invalid(
            p,
            At::Value,
            format!(
                "`{s}` is a relative path; paths must be absolute (each is copied to the same \
                 absolute location in the rootfs), e.g. `/{}`",
                s.trim_start_matches("./")
            ),
        ));
    }
    Ok(PathBuf::from(s))
}

fn parse_globs(doc: &Doc<'_>, v: &Value, p: &KeyPath) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::new();
    for (i, item) in doc.list(v, p)?.iter().enumerate() {
        let ip = p.index(i);
        let g = doc.string(item, &ip)?;
        if g.is_empty() {
            return Err(doc.invalid(&ip, At::Value, "empty glob; remove the entry"));
        }
        if let Err(e) = globset::Glob::new(&g) {
            return Err(doc.invalid(
                &ip,
                At::Value,
                format!("`{g}` is not a valid glob ({e}); see docs/spec.md for the syntax"),
            ));
        }
        out.push(g);
    }
    Ok(out)
}

fn parse_seccomp(doc: &Doc<'_>, v: &Value, p: &KeyPath) -> Result<SeccompSpec, SpecError> {
    let mut out = SeccompSpec::default();
    for (key, kv) in doc.mapping(v, p, SECCOMP_KEYS)? {
        let kp = p.key(&key);
        match key.as_str() {
            "default_action" => {
                out.default_action = match doc.one_of(kv, &kp, ACTIONS)? {
                    0 => DefaultAction::Errno,
                    1 => DefaultAction::KillProcess,
                    _ => DefaultAction::Log,
                }
            }
            "allow" => {
                for (i, item) in doc.list(kv, &kp)?.iter().enumerate() {
                    let r = parse_syscall(doc, item, &kp.index(i))?;
                    if !out.allow.contains(&r) {
                        out.allow.push(r);
                    }
                }
            }
            _ => unreachable!("mapping() only returns allowed keys"),
        }
    }
    Ok(out)
}

/// A syscall by name (`sysinfo`) or by number (`99`). Names are checked for shape here; the
/// seccomp stage resolves them against the target architecture's table.
fn parse_syscall(doc: &Doc<'_>, v: &Value, p: &KeyPath) -> Result<SyscallRef, SpecError> {
    match v {
        Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(SyscallRef::Number(n)),
            None => Err(doc.invalid(
                p,
                At::Value,
                format!("`{n}` is not a syscall number; use a non-negative integer or a name"),
            )),
        },
        Value::String(s) => {
            if let Ok(n) = s.parse::<u32>() {
                return Ok(SyscallRef::Number(n));
            }
            let ok = s
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if ok {
                Ok(SyscallRef::Name(s.clone()))
            } else {
                Err(doc.invalid(
                    p,
                    At::Value,
                    format!(
                        "`{s}` is not a syscall name; use the kernel's lowercase name (e.g. \
                         `sysinfo`) or its number (e.g. 99)"
                    ),
                ))
            }
        }
        other => Err(doc.invalid(
            p,
            At::Value,
            format!(
                "expected a syscall name or number, found {}",
                describe(other)
            ),
        )),
    }
}

fn parse_extras(doc: &Doc<'_>, v: &Value, p: &KeyPath) -> Result<Extras, SpecError> {
    let mut e = Extras::default();
    for (key, kv) in doc.mapping(v, p, EXTRAS_KEYS)? {
        let kp = p.key(&key);
        let slot = match key.as_str() {
            "libgcc_s" => &mut e.libgcc_s,
            "ca_certificates" => &mut e.ca_certificates,
            "openssl_config" => &mut e.openssl_config,
            "zoneinfo" => &mut e.zoneinfo,
            "etc_stubs" => &mut e.etc_stubs,
            "tmp" => &mut e.tmp,
            "ld_so_cache" => &mut e.ld_so_cache,
            "locales" => &mut e.locales,
            _ => unreachable!("mapping() only returns allowed keys"),
        };
        *slot = doc.boolean(kv, &kp, *slot)?;
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn oci_name_components() {
        for ok in ["python3", "python3-numpy", "a.b", "a__b", "a--b", "x1_2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "-a", "a-", "a..b", "a___b", "a-_b", "a._b", "a b", "a/b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
