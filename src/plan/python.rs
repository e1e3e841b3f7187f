//! Python: find the real interpreter behind a name (PATH shims, venvs), ask it where its
//! standard library lives, and select installed distributions by their `*.dist-info/RECORD`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the interpreter reports about itself (see `DISCOVER_SCRIPT`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PythonInstall {
    /// The path `sys.executable` reports: for a venv its `bin/python` (a symlink into the base
    /// install), for a pyenv shim the real versioned binary. Kept at this path in the rootfs so
    /// the interpreter finds `pyvenv.cfg` exactly as on the host.
    pub executable: PathBuf,
    /// The real ELF file behind `executable` (symlinks resolved): the ELF closure's main object.
    pub real_executable: PathBuf,
    pub version: String,
    pub prefix: PathBuf,
    pub base_prefix: PathBuf,
    pub stdlib: PathBuf,
    pub platstdlib: PathBuf,
    /// `lib-dynload` (extension modules of the stdlib), when the build has one.
    pub lib_dynload: Option<PathBuf>,
    /// site-packages directories in the order the interpreter searches them.
    pub site_packages: Vec<PathBuf>,
    /// `pyvenv.cfg` when the interpreter is a venv's.
    pub pyvenv_cfg: Option<PathBuf>,
    /// `sys.implementation.cache_tag` ("cpython-311"), for `__pycache__` names.
    pub cache_tag: String,
    /// OpenSSL's compiled-in default CA file and config directory, for the extras.
    pub ssl_cafile: Option<PathBuf>,
    pub ssl_capath: Option<PathBuf>,
    pub openssl_dir: Option<PathBuf>,
    /// `zoneinfo.TZPATH`.
    pub tzpath: Vec<PathBuf>,
    /// `sys.version` (exact build) and the bytecode magic, for the pyc cache key.
    pub sys_version: String,
    pub magic: String,
}

/// Run inside the interpreter with `-I` (no user site, no PYTHON* variables): prints JSON.
const DISCOVER_SCRIPT: &str = r#"
import os, sys, sysconfig, site
# Only cheap imports: this runs at the start of every build. _ssl, TZPATH and MAGIC_NUMBER are
# what ssl.get_default_verify_paths(), zoneinfo.TZPATH and importlib.util would report.
paths = sysconfig.get_paths()
# The standard library belongs to the base installation, also inside a venv (whose own
# platstdlib would be its lib/pythonX.Y, holding only site-packages).
base = sysconfig.get_paths(vars={'base': sys.base_prefix, 'platbase': sys.base_exec_prefix,
                                 'installed_base': sys.base_prefix,
                                 'installed_platbase': sys.base_exec_prefix})
dyn = [p for p in sys.path if os.path.basename(p) == 'lib-dynload']
try:
    import _ssl
    _, cafile, _, capath = _ssl.get_default_verify_paths()
    ossl_dir = os.path.dirname(cafile) if cafile else None
except Exception:
    cafile = capath = ossl_dir = None
tzpath = [p for p in (sysconfig.get_config_var('TZPATH') or '').split(os.pathsep) if p]
sp = []
for p in site.getsitepackages() + [paths['purelib'], paths['platlib']]:
    if p not in sp:
        sp.append(p)
cfg = os.path.join(sys.prefix, 'pyvenv.cfg')
from importlib._bootstrap_external import MAGIC_NUMBER
import json
print(json.dumps({
    'executable': sys.executable,
    'real_executable': os.path.realpath(getattr(sys, '_base_executable', sys.executable)),
    'version': '.'.join(map(str, sys.version_info[:3])),
    'prefix': sys.prefix,
    'base_prefix': sys.base_prefix,
    'stdlib': base['stdlib'],
    'platstdlib': base['platstdlib'],
    'lib_dynload': dyn[0] if dyn else None,
    'site_packages': sp,
    'pyvenv_cfg': cfg if sys.prefix != sys.base_prefix and os.path.isfile(cfg) else None,
    'cache_tag': sys.implementation.cache_tag,
    'ssl_cafile': cafile, 'ssl_capath': capath, 'openssl_dir': ossl_dir,
    'tzpath': tzpath,
    'sys_version': sys.version,
    'magic': MAGIC_NUMBER.hex(),
}))
"#;

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("interpreter `{0}` not found on PATH; give an absolute path in `interpreter:` or install it")]
    NotOnPath(String),
    #[error("interpreter {path}: does not exist or is not executable")]
    NotExecutable { path: PathBuf },
    #[error("interpreter {path}: could not run it: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interpreter {path}: discovery script failed ({status}): {stderr}")]
    Discovery {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("interpreter {path}: unexpected discovery output: {source}")]
    BadOutput {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("package `{name}` is not installed in {searched}; install it into that interpreter (pip install {name}) or remove it from `packages`")]
    NotInstalled { name: String, searched: String },
    #[error("{path}: {message}")]
    BadDistInfo { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pyc compilation failed: {0}")]
    Compile(String),
}

/// Look `name` up like a shell would: a name with a slash is a path, otherwise search PATH.
pub fn which(name: &str) -> Result<PathBuf, PythonError> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| PythonError::NotOnPath(name.to_owned()))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolve the interpreter (following PATH shims by asking the interpreter itself) and
/// report its layout.
pub fn discover(interpreter: &str) -> Result<PythonInstall, PythonError> {
    let path = which(interpreter)?;
    if !is_executable(&path) {
        return Err(PythonError::NotExecutable { path });
    }
    let out = Command::new(&path)
        .args(["-I", "-c", DISCOVER_SCRIPT])
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .output()
        .map_err(|source| PythonError::Spawn {
            path: path.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(PythonError::Discovery {
            path,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let mut install: PythonInstall =
        serde_json::from_slice(&out.stdout).map_err(|source| PythonError::BadOutput {
            path: path.clone(),
            source,
        })?;
    install.site_packages.retain(|p| p.is_dir());
    Ok(install)
}

/// The default excludes for a standard library at `stdlib`: test suites, GUI and packaging
/// helpers nobody runs in a sandbox, static archives, and bytecode we regenerate.
pub fn default_excludes(install: &PythonInstall) -> Vec<String> {
    let mut globs = vec!["**/__pycache__".to_owned(), "**/__pycache__/**".to_owned()];
    let mut stdlibs = vec![install.stdlib.clone()];
    if install.platstdlib != install.stdlib {
        stdlibs.push(install.platstdlib.clone());
    }
    for lib in stdlibs {
        let lib = globset::escape(&lib.to_string_lossy());
        for sub in [
            "test",
            "idlelib",
            "tkinter",
            "turtledemo",
            "ensurepip",
            "lib2to3",
            "config-*",
            "unittest/test",
            "ctypes/test",
            "sqlite3/test",
            "distutils/tests",
            "tkinter",
            "turtle.py",
            "lib-dynload/_tkinter*",
            "lib-dynload/_test*",
            "lib-dynload/_xxtestfuzz*",
            "lib-dynload/xxlimited*",
            "lib-dynload/_ctypes_test*",
            "site-packages",
            "dist-packages",
        ] {
            globs.push(format!("{lib}/{sub}"));
            globs.push(format!("{lib}/{sub}/**"));
        }
    }
    globs
}

/// One installed distribution.
#[derive(Debug, Clone)]
pub struct Dist {
    pub name: String,
    pub version: String,
    pub dist_info: PathBuf,
    /// Names of distributions it requires (no extras, markers not evaluated: an installed
    /// requirement is taken, an absent one skipped, so this is a safe superset).
    pub requires: Vec<String>,
}

pub use crate::spec::normalize_package_name as normalize_name;

/// Every `*.dist-info` in the site-packages directories, by normalized name (the first
/// site-packages that has it wins, as for import).
pub fn installed_dists(site_packages: &[PathBuf]) -> Result<BTreeMap<String, Dist>, PythonError> {
    let mut out = BTreeMap::new();
    for sp in site_packages {
        let mut names: Vec<PathBuf> = std::fs::read_dir(sp)
            .map_err(|source| PythonError::Io {
                path: sp.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "dist-info") && p.is_dir())
            .collect();
        names.sort();
        for dist_info in names {
            let dist = read_metadata(&dist_info)?;
            out.entry(normalize_name(&dist.name)).or_insert(dist);
        }
    }
    Ok(out)
}

/// Every distribution whose `*.dist-info/METADATA` sits in a `site-packages` or
/// `dist-packages` directory of the plan, however it got there (a selected package, or a spec
/// path such as dify's `python_lib_path` naming a whole site-packages).
pub fn dists_in_plan(plan: &super::Plan) -> Result<Vec<Dist>, PythonError> {
    let mut out = Vec::new();
    for (root_path, entry) in &plan.entries {
        let Some(dist_info) = root_path.strip_suffix("/METADATA") else {
            continue;
        };
        let in_site_packages = Path::new(dist_info)
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "site-packages" || n == "dist-packages");
        if !dist_info.ends_with(".dist-info") || !in_site_packages {
            continue;
        }
        if let super::EntryKind::File {
            source: super::Source::Host(host),
        } = &entry.kind
        {
            if let Some(dir) = host.parent() {
                out.push(read_metadata(dir)?);
            }
        }
    }
    Ok(out)
}

fn read_metadata(dist_info: &Path) -> Result<Dist, PythonError> {
    let path = dist_info.join("METADATA");
    let text = std::fs::read_to_string(&path).map_err(|source| PythonError::Io {
        path: path.clone(),
        source,
    })?;
    let mut name = None;
    let mut version = None;
    let mut requires = Vec::new();
    // Headers end at the first blank line; the body is the long description.
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Requires-Dist:") {
            let (req, marker) = v.split_once(';').unwrap_or((v, ""));
            if marker.contains("extra") {
                continue;
            }
            let req_name: String = req
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            if !req_name.is_empty() {
                requires.push(normalize_name(&req_name));
            }
        }
    }
    let bad = |m: &str| PythonError::BadDistInfo {
        path: path.clone(),
        message: m.to_owned(),
    };
    Ok(Dist {
        name: name.ok_or_else(|| bad("no Name: header"))?,
        version: version.ok_or_else(|| bad("no Version: header"))?,
        dist_info: dist_info.to_path_buf(),
        requires,
    })
}

/// The requested distributions and, transitively, their installed requirements.
pub fn select_dists(
    installed: &BTreeMap<String, Dist>,
    wanted: &[String],
    searched: &[PathBuf],
) -> Result<Vec<Dist>, PythonError> {
    let mut chosen = BTreeSet::new();
    let mut queue: Vec<String> = Vec::new();
    for w in wanted {
        let n = normalize_name(w);
        if !installed.contains_key(&n) {
            return Err(PythonError::NotInstalled {
                name: w.clone(),
                searched: searched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        queue.push(n);
    }
    while let Some(n) = queue.pop() {
        if !chosen.insert(n.clone()) {
            continue;
        }
        for r in &installed[&n].requires {
            if installed.contains_key(r) && !chosen.contains(r) {
                queue.push(r.clone());
            }
        }
    }
    Ok(chosen.into_iter().map(|n| installed[&n].clone()).collect())
}

/// The files a distribution installed inside its site-packages, from `RECORD`: absolute host
/// paths. Entries outside site-packages (console scripts in `bin/`) and bytecode are skipped:
/// the sandbox runs no scripts and we compile our own bytecode.
pub fn record_files(dist: &Dist) -> Result<Vec<PathBuf>, PythonError> {
    let record = dist.dist_info.join("RECORD");
    let site = dist
        .dist_info
        .parent()
        .expect("dist-info has a parent")
        .to_path_buf();
    let text = std::fs::read_to_string(&record).map_err(|source| PythonError::Io {
        path: record.clone(),
        source,
    })?;
    let mut files = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rel = parse_record_path(line).ok_or_else(|| PythonError::BadDistInfo {
            path: record.clone(),
            message: format!("line {}: cannot parse `{line}`", i + 1),
        })?;
        let p = Path::new(&rel);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || rel.contains("__pycache__/")
            || rel.ends_with(".pyc")
        {
            continue;
        }
        files.push(site.join(p));
    }
    Ok(files)
}

/// First CSV field of a RECORD line (quoted when it contains a comma).
fn parse_record_path(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        line.split(',').next().map(str::to_owned)
    }
}

/// Compiled by the target interpreter itself: unchecked-hash `.pyc` (never stat'ed against
/// the source, which is read-only anyway), with `dfile` set to the rootfs path so tracebacks
/// name the file as the sandbox sees it. Reads `src\tout` pairs on stdin, prints failures.
const COMPILE_SCRIPT: &str = r#"
import sys, py_compile, concurrent.futures as cf
def one(pair):
    src, out = pair
    try:
        py_compile.compile(src, cfile=out, dfile=src, doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        return None
    except Exception as e:
        return '%s: %s' % (src, str(e).splitlines()[0] if str(e) else type(e).__name__)
pairs = [l.rstrip('\n').split('\t') for l in sys.stdin if l.strip()]
workers = max(1, min(8, len(__import__('os').sched_getaffinity(0))))
if workers > 1 and len(pairs) > 64:
    with cf.ProcessPoolExecutor(workers) as ex:
        res = list(ex.map(one, pairs, chunksize=32))
else:
    res = [one(p) for p in pairs]
for r in res:
    if r: print(r)
"#;

/// Compile `(source, output)` pairs with the interpreter. Returns the sources that failed
/// (Python 2 files shipped as data by some packages); those simply get no `.pyc`.
pub fn compile_pycs(
    interpreter: &Path,
    pairs: &[(PathBuf, PathBuf)],
) -> Result<Vec<String>, PythonError> {
    use std::io::Write;
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new(interpreter)
        .args(["-I", "-c", COMPILE_SCRIPT])
        // Hash-based pycs do not depend on SOURCE_DATE_EPOCH, but py_compile switches modes on it.
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| PythonError::Spawn {
            path: interpreter.to_path_buf(),
            source,
        })?;
    let mut input = String::new();
    for (src, out) in pairs {
        input.push_str(&format!("{}\t{}\n", src.display(), out.display()));
    }
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|source| PythonError::Spawn {
            path: interpreter.to_path_buf(),
            source,
        })?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(PythonError::Compile(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines() {
        assert_eq!(
            parse_record_path("numpy/__init__.py,sha256=x,12").as_deref(),
            Some("numpy/__init__.py")
        );
        assert_eq!(
            parse_record_path("\"a,b.py\",sha256=x,1").as_deref(),
            Some("a,b.py")
        );
        assert_eq!(parse_record_path("\"unterminated"), None);
    }
}
