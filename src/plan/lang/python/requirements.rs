//! Packages from a pinned requirements file: the spec's `requirements:`.
//!
//! A fresh CI machine has no venv to take packages from, so the build installs them itself:
//! with the target interpreter's own pip, `--require-hashes` and binary wheels only, into a venv
//! keyed by the file's content and the interpreter, under the prebake cache (never under /tmp,
//! which the sandbox masks). The same file gives the same venv, hence the same rootfs bytes; a
//! finished venv is marked complete, so an interrupted install is redone, never used.
//! A cross build's target interpreter cannot run pip here: the build host's pip fetches the
//! target's wheels by tag instead ([`ensure_target_site`]), into a cache slot kept the same way.
//! pip honours `PIP_INDEX_URL` and `PIP_FIND_LINKS` from the environment (offline mirrors), and
//! `PIP_MIRROR_URL` (dify-sandbox's name) becomes `--index-url`.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One pinned requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// As written, without extras ("httpx").
    pub name: String,
    pub version: String,
    /// 1-based line of the requirement in the file.
    pub line: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RequirementsError {
    #[error("{path}: cannot read the requirements file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no requirements in the file")]
    Empty { path: PathBuf },
    #[error("{what} failed for {path}:\n{output}\n{hint}")]
    Install {
        path: PathBuf,
        what: &'static str,
        output: String,
        hint: &'static str,
    },
    #[error("{path}: cannot prepare the package cache")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Parse and check `path`: every requirement pinned with `==` and carrying a `--hash`.
pub fn parse(path: &Path) -> Result<Vec<Requirement>, RequirementsError> {
    let text = std::fs::read_to_string(path).map_err(|source| RequirementsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |line: usize, message: String| RequirementsError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    for (i, raw) in lines.iter().enumerate() {
        if logical.is_empty() {
            start = i + 1;
        }
        let content = raw.split_once(" #").map_or(*raw, |(c, _)| c);
        let content = if content.trim_start().starts_with('#') {
            ""
        } else {
            content
        };
        if let Some(cont) = content.trim_end().strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            if i + 1 < lines.len() {
                continue;
            }
        } else {
            logical.push_str(content);
        }
        let entry = std::mem::take(&mut logical);
        let mut tokens = entry.split_whitespace();
        let Some(first) = tokens.next() else { continue };
        if first.starts_with('-') {
            // Index options pass through to pip; anything that names other inputs cannot be
            // pinned by this file.
            if [
                "-e",
                "--editable",
                "-r",
                "--requirement",
                "-c",
                "--constraint",
            ]
            .iter()
            .any(|o| first == *o || first.starts_with(&format!("{o}=")))
            {
                return Err(invalid(
                    start,
                    format!("`{first}` is not supported: list every package pinned with == and --hash in this file"),
                ));
            }
            continue;
        }
        let Some((spec, version)) = first.split_once("==") else {
            return Err(invalid(
                start,
                format!("`{first}` is not pinned: write it as name==version with --hash=sha256:... (pip-compile --generate-hashes writes such files)"),
            ));
        };
        let name = spec.split('[').next().unwrap_or(spec).trim();
        if name.is_empty() || version.is_empty() || version.contains(['*', ',', ';']) {
            return Err(invalid(
                start,
                format!("`{first}` is not pinned to one exact version"),
            ));
        }
        let rest: Vec<&str> = tokens.collect();
        if !rest.iter().any(|t| t.starts_with("--hash")) {
            return Err(invalid(
                start,
                format!("`{first}` has no --hash=sha256:...: every requirement needs the hash of its wheel"),
            ));
        }
        out.push(Requirement {
            name: name.to_string(),
            version: version.to_string(),
            line: start,
        });
    }
    if out.is_empty() {
        return Err(RequirementsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// The venv holding `path`'s requirements for `interpreter` (a real executable, whose
/// `version` is part of the key), installed on first use under `cache_root/venvs/`. Returns
/// the venv's `bin/python`.
pub fn ensure_venv(
    interpreter: &Path,
    version: &str,
    path: &Path,
    cache_root: &Path,
) -> Result<PathBuf, RequirementsError> {
    let parts = [
        interpreter.as_os_str().as_encoded_bytes(),
        version.as_bytes(),
    ];
    let slot = cache_slot("venvs", &parts, path, cache_root)?;
    let python = slot.dir.join("bin/python");
    if slot.complete {
        return Ok(python);
    }
    slot.fill(|| {
        run(
            Command::new(interpreter).arg("-m").arg("venv").arg(&slot.dir),
            path,
            "creating the venv",
            "the interpreter needs its venv and ensurepip modules (Debian: apt-get install python3-venv)",
        )?;
        let mut pip = pip_install(&python, path);
        run(
            &mut pip,
            path,
            "pip install",
            "check the pins and hashes, that each package has a wheel for this interpreter, and that the index is reachable (PIP_INDEX_URL, PIP_MIRROR_URL or PIP_FIND_LINKS for an offline mirror)",
        )
    })?;
    Ok(python)
}

/// What a cross build installs a requirements file for: the target interpreter's version,
/// machine and C library, which pick the wheels.
#[derive(Debug, Clone)]
pub struct WheelTarget {
    /// `3.11`.
    pub python: String,
    /// `aarch64`, `x86_64`: the wheel tags' machine.
    pub machine: &'static str,
    /// glibc's version on the target, 2.17 or newer (`(2, 36)`): every `manylinux_2_17 ..=
    /// 2_36` wheel runs.
    pub glibc: (u32, u32),
}

impl WheelTarget {
    /// pip's `--platform` tags, newest last (pip does not widen `manylinux_2_N` itself).
    fn platform_tags(&self) -> Vec<String> {
        let mut tags = vec![format!("manylinux2014_{}", self.machine)];
        for minor in 17..=self.glibc.1 {
            tags.push(format!("manylinux_2_{minor}_{}", self.machine));
        }
        tags
    }
}

/// The requirements of `path` installed for a target interpreter that cannot run pip here
/// (another architecture, under qemu): the build host's `python3 -m pip` picks the target's
/// wheels by its version, ABI and platform tags (`--only-binary=:all:`, `--require-hashes`, so
/// no code of a package runs on this machine) and unpacks them with `--target` into a
/// directory under `cache_root/target-sites/`, keyed like the venvs. Returns that directory;
/// the planner puts its contents in the target's site-packages.
pub fn ensure_target_site(
    target: &WheelTarget,
    path: &Path,
    cache_root: &Path,
) -> Result<PathBuf, RequirementsError> {
    let host_python = crate::plan::lang::which("python3").map_err(|e| {
        RequirementsError::Install {
            path: path.to_path_buf(),
            what: "finding the build host's python3 (its pip downloads the target's wheels)",
            output: e.to_string(),
            hint: "install python3 with pip on the build machine (Debian: apt-get install python3-pip)",
        }
    })?;
    let tags = target.platform_tags();
    let joined = tags.join(",");
    let parts = [
        host_python.as_os_str().as_encoded_bytes(),
        target.python.as_bytes(),
        joined.as_bytes(),
    ];
    let slot = cache_slot("target-sites", &parts, path, cache_root)?;
    let site = slot.dir.join("site");
    if slot.complete {
        return Ok(site);
    }
    let abi = format!("cp{}", target.python.replace('.', ""));
    let mut pip = pip_install(&host_python, path);
    pip.args(["--implementation", "cp", "--python-version", &target.python])
        .args(["--abi", &abi, "--abi", "abi3", "--abi", "none"]);
    for tag in &tags {
        pip.arg("--platform").arg(tag);
    }
    pip.arg("--target").arg(&site);
    slot.fill(|| {
        run(
            &mut pip,
            path,
            "pip install for the target platform",
            "check that each pinned package has a wheel for the target (its --hash lines must include that wheel's sha256), that the build host's python3 has pip, and that the index is reachable (PIP_INDEX_URL, PIP_MIRROR_URL or PIP_FIND_LINKS for an offline mirror)",
        )
    })?;
    Ok(site)
}

/// A directory of the package cache: `cache_root/KIND/KEY`.
struct CacheSlot {
    dir: PathBuf,
    /// An earlier install there finished.
    complete: bool,
}

/// The slot for the requirements file `path` installed with `parts` (interpreter, version,
/// tags): KEY digests them, the file's bytes and the pip mirror. A slot whose install did not
/// finish is removed, to start over.
fn cache_slot(
    kind: &str,
    parts: &[&[u8]],
    path: &Path,
    cache_root: &Path,
) -> Result<CacheSlot, RequirementsError> {
    let text = std::fs::read(path).map_err(|source| RequirementsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    for part in parts
        .iter()
        .copied()
        .chain([mirror().unwrap_or_default().as_bytes(), &text[..]])
    {
        h.update(part);
        h.update([0]);
    }
    let key = &hex::encode(h.finalize())[..32];
    let dir = cache_root.join(kind).join(key);
    let complete = dir.join(COMPLETE).exists();
    if !complete {
        let cache_err = |source| RequirementsError::Cache {
            path: dir.clone(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(cache_err)?;
        }
        std::fs::create_dir_all(cache_root.join(kind)).map_err(cache_err)?;
    }
    Ok(CacheSlot { dir, complete })
}

/// Marks a slot whose install finished.
const COMPLETE: &str = ".prebake-complete";

impl CacheSlot {
    /// Run `install` into the slot: mark it complete, or remove what it left on failure.
    fn fill(
        &self,
        install: impl FnOnce() -> Result<(), RequirementsError>,
    ) -> Result<(), RequirementsError> {
        if let Err(e) = install() {
            let _ = std::fs::remove_dir_all(&self.dir);
            return Err(e);
        }
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(self.dir.join(COMPLETE), b""))
            .map_err(|source| RequirementsError::Cache {
                path: self.dir.clone(),
                source,
            })
    }
}

/// `PIP_MIRROR_URL` (dify-sandbox's name for the index), when set.
fn mirror() -> Option<String> {
    std::env::var("PIP_MIRROR_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// `python -m pip install` of the requirements file `path`, with the flags every install
/// takes: pinned and hashed, wheels only, no dependencies beyond the file's, no bytecode
/// (the build compiles it), the mirror as the index.
fn pip_install(python: &Path, path: &Path) -> Command {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--require-hashes",
        "--no-deps",
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        "1",
        "--timeout",
        "20",
    ]);
    if let Some(m) = mirror() {
        pip.arg("--index-url").arg(m);
    }
    pip.arg("-r").arg(path).env("PYTHONDONTWRITEBYTECODE", "1");
    pip
}

fn run(
    cmd: &mut Command,
    path: &Path,
    what: &'static str,
    hint: &'static str,
) -> Result<(), RequirementsError> {
    let fail = |output: String| RequirementsError::Install {
        path: path.to_path_buf(),
        what,
        output,
        hint,
    };
    let o = cmd.output().map_err(|e| fail(e.to_string()))?;
    if o.status.success() {
        Ok(())
    } else {
        let mut text = String::from_utf8_lossy(&o.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&o.stdout));
        Err(fail(text.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Requirement>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("requirements.txt");
        std::fs::write(&p, text).unwrap();
        parse(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn pinned_and_hashed_lines_parse() {
        let r = parse_text(
            "# comment\n--index-url https://mirror.example/simple\nhttpx[socks]==0.27.2 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n\nidna==3.10 --hash=sha256:cc  # trailing\n",
        )
        .unwrap();
        assert_eq!(
            r,
            [
                Requirement {
                    name: "httpx".into(),
                    version: "0.27.2".into(),
                    line: 3
                },
                Requirement {
                    name: "idna".into(),
                    version: "3.10".into(),
                    line: 7
                }
            ]
        );
    }

    #[test]
    fn unpinned_unhashed_and_indirect_lines_are_errors_naming_the_line() {
        let e = parse_text("idna==3.10 --hash=sha256:cc\nrequests>=2\n").unwrap_err();
        assert!(
            e.contains("requirements.txt:2: `requests>=2` is not pinned"),
            "{e}"
        );
        let e = parse_text("requests\n").unwrap_err();
        assert!(e.contains(":1: `requests` is not pinned"), "{e}");
        let e = parse_text("a==1 --hash=sha256:x\nb==2\n").unwrap_err();
        assert!(e.contains(":2: `b==2` has no --hash"), "{e}");
        let e = parse_text("-r other.txt\n").unwrap_err();
        assert!(e.contains(":1: `-r` is not supported"), "{e}");
        let e = parse_text("# nothing\n").unwrap_err();
        assert!(e.contains("no requirements"), "{e}");
    }

    #[test]
    fn a_target_takes_every_manylinux_tag_up_to_its_glibc() {
        let t = WheelTarget {
            python: "3.11".into(),
            machine: "aarch64",
            glibc: (2, 19),
        };
        assert_eq!(
            t.platform_tags(),
            [
                "manylinux2014_aarch64",
                "manylinux_2_17_aarch64",
                "manylinux_2_18_aarch64",
                "manylinux_2_19_aarch64"
            ]
        );
    }
}
