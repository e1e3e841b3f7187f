//! Ask the interpreter where it lives and what it was built with.

use super::PythonError;
use crate::plan::lang::{is_executable, which, which_in_sysroot};
use crate::platform::{Runner, Target};
use std::path::PathBuf;

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
    /// Where pip installs for this interpreter (`sysconfig`'s purelib; Debian's python:
    /// `/usr/local/lib/python3.11/dist-packages`), whether it exists yet or not.
    pub purelib: PathBuf,
    /// The C library's version (`os.confstr('CS_GNU_LIBC_VERSION')`: `glibc 2.36`), if glibc.
    pub libc: Option<String>,
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
    /// How the build runs this interpreter (under qemu for another architecture's).
    #[serde(skip)]
    pub runner: Runner,
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
    'purelib': paths['purelib'],
    'libc': os.confstr('CS_GNU_LIBC_VERSION') if 'CS_GNU_LIBC_VERSION' in os.confstr_names else None,
    'pyvenv_cfg': cfg if sys.prefix != sys.base_prefix and os.path.isfile(cfg) else None,
    'cache_tag': sys.implementation.cache_tag,
    'ssl_cafile': cafile, 'ssl_capath': capath, 'openssl_dir': ossl_dir,
    'tzpath': tzpath,
    'sys_version': sys.version,
    'magic': MAGIC_NUMBER.hex(),
}))
"#;

/// Resolve the interpreter (following PATH shims by asking the interpreter itself) and
/// report its layout.
/// With a `target`, the interpreter is the sysroot's (looked up in its /usr/local/bin,
/// /usr/bin and /bin) and run under the target's runner; every path of the answer is a host
/// path inside the sysroot.
pub fn discover(interpreter: &str, target: Option<&Target>) -> Result<PythonInstall, PythonError> {
    let path = match target {
        None => which(interpreter)?,
        Some(t) => which_in_sysroot(t, interpreter).ok_or_else(|| PythonError::NotInSysroot {
            name: interpreter.to_owned(),
            sysroot: t.sysroot.clone(),
        })?,
    };
    if !is_executable(&path) {
        return Err(PythonError::NotExecutable { path });
    }
    let runner = Runner::for_target(target);
    let out = runner
        .command(&path)
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
    if let Some(t) = target {
        install.rebase_into_sysroot(t);
    }
    install.runner = runner;
    install.site_packages.retain(|p| p.is_dir());
    Ok(install)
}

impl PythonInstall {
    /// Paths the interpreter printed as the target sees them (its compiled-in ones, such as
    /// OpenSSL's, or any that qemu mapped into the sysroot) become host paths in the sysroot.
    fn rebase_into_sysroot(&mut self, t: &Target) {
        let fix = |p: &mut PathBuf| {
            if !p.starts_with(&t.sysroot) {
                *p = t.host_path(p);
            }
        };
        for p in [
            &mut self.executable,
            &mut self.real_executable,
            &mut self.prefix,
            &mut self.base_prefix,
            &mut self.stdlib,
            &mut self.platstdlib,
            &mut self.purelib,
        ] {
            fix(p);
        }
        for p in self
            .lib_dynload
            .iter_mut()
            .chain(self.pyvenv_cfg.iter_mut())
            .chain(self.ssl_cafile.iter_mut())
            .chain(self.ssl_capath.iter_mut())
            .chain(self.openssl_dir.iter_mut())
            .chain(self.site_packages.iter_mut())
            .chain(self.tzpath.iter_mut())
        {
            fix(p);
        }
    }
}
