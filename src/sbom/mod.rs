//! The SBOM of the rootfs, written beside `bundle.json` as SPDX 2.3 ([`spdx`]) and
//! CycloneDX 1.5 ([`cyclonedx`]) JSON: every regular file of the plan exactly once with its
//! digests and the component it came from (a Debian package by the host's dpkg database, a
//! Python distribution by its RECORD, an interpreter by what the plan says of it), or none.
//!
//! Both documents are pure functions of the plan, the host's package metadata and the build's
//! SOURCE_DATE_EPOCH: no clock, no random identifiers (the SPDX namespace and the CycloneDX
//! serial number come from a digest of the content), everything in path or name order.

pub mod cyclonedx;
pub mod dpkg;
mod interpreter;
pub mod license;
pub mod python;
pub mod spdx;

use crate::contract::BundleManifest;
use crate::fsutil::stage::{staging_prefix, StagedFile};
use crate::plan::{EntryKind, Plan, Source};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use license::License;

/// File names inside the bundle directory.
pub const SPDX_FILE: &str = "sbom.spdx.json";
pub const CYCLONEDX_FILE: &str = "sbom.cdx.json";
/// Media types (the OCI artifact types the image's referrers carry).
pub const MEDIA_SPDX: &str = "application/spdx+json";
pub const MEDIA_CYCLONEDX: &str = "application/vnd.cyclonedx+json";

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("{path}: reading it for the SBOM")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}; reinstall the distribution or exclude its dist-info")]
    BadDistInfo { path: String, reason: String },
}

impl SbomError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> SbomError {
        SbomError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    /// An interpreter named in bundle.json (`python3`, `nodejs`).
    Interpreter,
    Deb,
    PyPI,
}

/// A package in the SBOM.
#[derive(Debug, Clone)]
pub struct Component {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub purl: String,
    pub license: Option<License>,
    /// Where it is installed, when one name may be there twice (a dist-info path).
    pub location: String,
    /// Who supplies it, as (name, email): a Debian package's `Maintainer`.
    pub supplier: Option<(String, Option<String>)>,
    /// Indexes into [`Sbom::files`], in path order.
    pub files: Vec<usize>,
}

/// A regular file of the rootfs.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Absolute rootfs path.
    pub path: String,
    pub sha1: String,
    pub sha256: String,
    /// Index into [`Sbom::components`]; `None`: it belongs to no package.
    pub owner: Option<usize>,
    /// Why it is in the rootfs (bundle.json's provenance).
    pub provenance: String,
    /// The sha256 its distribution's RECORD gives, when that differs from the file's.
    pub record_sha256_differs: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Sbom {
    /// The spec's name.
    pub name: String,
    /// SOURCE_DATE_EPOCH as RFC 3339: the documents' only time.
    pub created: String,
    pub prebake_version: String,
    pub components: Vec<Component>,
    pub files: Vec<FileEntry>,
}

impl Component {
    /// A short identifier unique in the document (two copies of a distribution differ by
    /// location), usable as SPDXID suffix and CycloneDX bom-ref.
    pub fn id(&self) -> String {
        let h = hex::encode(Sha256::digest(format!("{}\n{}", self.purl, self.location)));
        format!("Package-{}-{}", id_safe(&self.name), &h[..12])
    }
}

/// `name` with every character an SPDXID may not hold as `-`.
pub(crate) fn id_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Sbom {
    /// A digest of everything the documents say, for the identifiers that must differ between
    /// SBOMs and be the same for the same content.
    pub fn content_digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "{}\n{}\n{}\n",
            self.name, self.created, self.prebake_version
        ));
        for c in &self.components {
            let license = c.license.as_ref().map_or("", |l| l.expression.as_str());
            h.update(format!("c {} {} {license}\n", c.purl, c.location));
        }
        for f in &self.files {
            let owner = f.owner.map_or(String::new(), |o| self.components[o].id());
            h.update(format!(
                "f {} {} {owner} {}\n",
                f.path, f.sha256, f.provenance
            ));
        }
        hex::encode(h.finalize())
    }
}

/// Which component each kind of key names while files are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Dist(usize),
    Deb(usize),
    Lang(usize),
}

/// The component a file of the plan comes from. A distribution's RECORD is the most specific
/// claim (a Debian-packaged Python module is dpkg's too, but under its Python name and
/// version), then dpkg by the host file the bytes are read from or the rootfs path (they differ
/// where the plan resolved symlinks), then an interpreter by what the plan says of the file.
fn first_owner(
    path: &str,
    entry: &crate::plan::Entry,
    by_dist_path: &BTreeMap<&str, usize>,
    dpkg: &dpkg::Dpkg,
    langs: &[interpreter::Interpreter],
) -> Option<Owner> {
    if let Some(&d) = by_dist_path.get(path) {
        return Some(Owner::Dist(d));
    }
    let host = match &entry.kind {
        EntryKind::File {
            source: Source::Host(h),
        } => h.to_str(),
        _ => None,
    };
    if let Some(p) = host
        .and_then(|h| dpkg.owner(h))
        .or_else(|| dpkg.owner(path))
    {
        return Some(Owner::Deb(p));
    }
    langs
        .iter()
        .position(|l| l.claims(path, &entry.provenance))
        .map(Owner::Lang)
}

/// The SBOM of `plan` (the rootfs), with the packages of the dpkg database under `host_root`;
/// `created` is the build's SOURCE_DATE_EPOCH as RFC 3339, the documents' only time.
pub fn collect(
    plan: &Plan,
    manifest: &BundleManifest,
    spec_name: &str,
    created: &str,
    host_root: &Path,
) -> Result<Sbom, SbomError> {
    let dists = python::dists(plan)?;
    let dpkg = dpkg::Dpkg::load(host_root)?;
    let langs = interpreter::interpreters(plan, manifest);

    let mut by_dist_path: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, d) in dists.iter().enumerate() {
        for p in d.files.keys() {
            by_dist_path.entry(p.as_str()).or_insert(i);
        }
    }
    let mut files = Vec::new();
    let mut owners: Vec<Option<Owner>> = Vec::new();
    for (path, entry) in &plan.entries {
        let EntryKind::File { source } = &entry.kind else {
            continue;
        };
        let (sha1, sha256) = digests(source)?;
        let owner = first_owner(path, entry, &by_dist_path, &dpkg, &langs);
        let record_sha256_differs = match owner {
            Some(Owner::Dist(d)) => dists[d].files[path.as_str()]
                .clone()
                .filter(|r| *r != sha256),
            _ => None,
        };
        files.push(FileEntry {
            path: path.clone(),
            sha1,
            sha256,
            owner: None,
            provenance: entry.provenance.clone(),
            record_sha256_differs,
        });
        owners.push(owner);
    }
    // Bytecode prebake compiled belongs where its source does.
    let index: BTreeMap<String, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.clone(), i))
        .collect();
    for i in 0..files.len() {
        if owners[i].is_none() {
            owners[i] = pyc_source(&files[i].path)
                .and_then(|src| index.get(&src))
                .and_then(|&j| owners[j]);
        }
    }

    // Components in a fixed order (interpreters, Debian, Python; each by name), each listed
    // only if something of it is in the rootfs, interpreters always.
    let mut keyed: BTreeMap<Owner, Component> = BTreeMap::new();
    for (i, l) in langs.iter().enumerate() {
        keyed.insert(Owner::Lang(i), l.component());
    }
    for (i, owner) in owners.iter().enumerate() {
        let Some(owner) = *owner else { continue };
        keyed
            .entry(owner)
            .or_insert_with(|| match owner {
                Owner::Dist(d) => dists[d].component(plan),
                Owner::Deb(p) => dpkg.packages[p].component(),
                Owner::Lang(l) => langs[l].component(),
            })
            .files
            .push(i);
    }
    let mut components: Vec<(Owner, Component)> = keyed.into_iter().collect();
    components.sort_by(|(_, a), (_, b)| {
        (a.ecosystem, &a.name, &a.version, &a.location).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.location,
        ))
    });
    let position: BTreeMap<Owner, usize> = components
        .iter()
        .enumerate()
        .map(|(i, (o, _))| (*o, i))
        .collect();
    for (f, o) in files.iter_mut().zip(&owners) {
        f.owner = o.map(|o| position[&o]);
    }
    Ok(Sbom {
        name: spec_name.to_owned(),
        created: created.to_owned(),
        prebake_version: manifest.prebake_version.clone(),
        components: components.into_iter().map(|(_, c)| c).collect(),
        files,
    })
}

/// Write both documents into `bundle_dir` (each to a temporary file, then renamed).
pub fn write(sbom: &Sbom, bundle_dir: &Path) -> Result<(), SbomError> {
    for (name, doc) in [
        (SPDX_FILE, spdx::document(sbom)),
        (CYCLONEDX_FILE, cyclonedx::document(sbom)),
    ] {
        let mut bytes = serde_json::to_vec_pretty(&doc).expect("JSON values serialize");
        bytes.push(b'\n');
        let path = bundle_dir.join(name);
        let io = |e| SbomError::io(&path, e);
        let mut staged = StagedFile::new(&path, &staging_prefix(&path, "partial")).map_err(io)?;
        staged.file().write_all(&bytes).map_err(io)?;
        staged.commit(&path, 0o644, true).map_err(io)?;
    }
    Ok(())
}

/// (sha1, sha256) hex of a planned file's bytes. SPDX 2.3 requires the SHA1 of every file.
fn digests(source: &Source) -> Result<(String, String), SbomError> {
    let mut s1 = sha1::Sha1::new();
    let mut s256 = Sha256::new();
    match source {
        Source::Inline(b) => {
            s1.update(b);
            s256.update(b);
        }
        Source::Host(p) => {
            let mut f = std::fs::File::open(p).map_err(|e| SbomError::io(p, e))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).map_err(|e| SbomError::io(p, e))?;
                if n == 0 {
                    break;
                }
                s1.update(&buf[..n]);
                s256.update(&buf[..n]);
            }
        }
    }
    Ok((hex::encode(s1.finalize()), hex::encode(s256.finalize())))
}

/// `d/__pycache__/m.cpython-311.pyc` -> `d/m.py`.
fn pyc_source(path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once("/__pycache__/")?;
    let stem = file.strip_suffix(".pyc")?;
    let module = stem.split('.').next()?;
    Some(format!("{dir}/{module}.py"))
}

/// Percent-encoding of a purl name or version: everything but unreserved characters.
pub(crate) fn purl_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_escape_what_the_spec_reserves() {
        assert_eq!(purl_escape("2.36-9+deb12u7"), "2.36-9%2Bdeb12u7");
        assert_eq!(purl_escape("1:2.0"), "1%3A2.0");
        assert_eq!(
            pyc_source("/a/b/__pycache__/m.cpython-311.opt-1.pyc").as_deref(),
            Some("/a/b/m.py")
        );
    }
}
