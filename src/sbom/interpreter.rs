//! The interpreters bundle.json names, as SBOM components: the interpreter binary and, when no
//! Debian package or Python distribution claims them, the files of its own installation.

use super::{purl_escape, Component, Ecosystem};
use crate::contract::BundleManifest;
use crate::plan::{EntryKind, Plan};
use std::path::Path;

/// An interpreter of bundle.json, and how to tell its files.
pub(super) struct Interpreter {
    language: String,
    version: String,
    /// The interpreter's file in the rootfs, symlinks resolved.
    real: String,
    /// Its installation prefix (`PREFIX/bin/python3.11`) when that is its own (pyenv's,
    /// `/opt/...`), not the system's `/usr` where every unpackaged file would look like its.
    prefix: Option<String>,
}

impl Interpreter {
    /// Files no package claimed: the interpreter itself and, for Python, what the plan took
    /// as its standard library.
    pub(super) fn claims(&self, path: &str, provenance: &str) -> bool {
        path == self.real
            || self.prefix.as_ref().is_some_and(|p| {
                path.strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            })
            || (self.language == "python3"
                && (provenance.starts_with("python ") || provenance.starts_with("interpreter:")))
    }

    pub(super) fn component(&self) -> Component {
        let (name, version) = match self.language.as_str() {
            "python3" => ("python", self.version.as_str()),
            "nodejs" => ("node", self.version.trim_start_matches('v')),
            other => (other, self.version.as_str()),
        };
        Component {
            ecosystem: Ecosystem::Interpreter,
            name: name.to_owned(),
            version: version.to_owned(),
            purl: format!("pkg:generic/{name}@{}", purl_escape(version)),
            license: None,
            location: self.real.clone(),
            supplier: None,
            files: Vec::new(),
        }
    }
}

pub(super) fn interpreters(plan: &Plan, manifest: &BundleManifest) -> Vec<Interpreter> {
    manifest
        .languages
        .iter()
        .map(|(language, info)| {
            let real = resolve_in_plan(plan, &info.interpreter);
            let prefix = Path::new(&real)
                .parent()
                .filter(|bin| bin.ends_with("bin"))
                .and_then(Path::parent)
                .and_then(Path::to_str)
                .filter(|p| !matches!(*p, "/" | "/usr" | "/usr/local"))
                .map(str::to_owned);
            Interpreter {
                language: language.clone(),
                version: info.version.clone(),
                real,
                prefix,
            }
        })
        .collect()
}

/// Follow the plan's symlinks from `path` (at most 40, like the kernel).
fn resolve_in_plan(plan: &Plan, path: &str) -> String {
    let mut cur = std::path::PathBuf::from(path);
    for _ in 0..40 {
        let Some(EntryKind::Symlink { target }) = cur
            .to_str()
            .and_then(|p| plan.entries.get(p))
            .map(|e| &e.kind)
        else {
            break;
        };
        let next = match cur.parent() {
            Some(parent) => parent.join(target),
            None => target.clone(),
        };
        cur = crate::plan::normalize(&next);
    }
    cur.to_string_lossy().into_owned()
}
