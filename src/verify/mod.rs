//! The lock record of a build and what checks it: `prebake diff A B` compares two records
//! entry by entry ([`diff`]), `prebake verify OUT` rebuilds from the recorded inputs and
//! compares the rebuild with the record ([`verify`]); [`report`] says what differs and why.
//!
//! The record is what every build writes already: `bundle.json` (prebake's version, the spec's
//! digest, the rootfs digests, each language's interpreter and version, every rootfs path and
//! why it is there) and the CycloneDX SBOM (every regular file with its sha256 and the
//! package, and that package's version, it came from; the build's SOURCE_DATE_EPOCH as its
//! timestamp). Nothing is added to either, so builds stay byte-for-byte what they were.

pub mod diff;
pub mod report;

use crate::build::{BuildOptions, Progress};
use crate::contract::{BundleError, BundleManifest};
use crate::platform::{Platform, Target};
use crate::spec::ImageSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diff::diff;
pub use report::{Change, Report};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: neither a `prebake build` output (OUT/bundle/bundle.json) nor a bundle directory (bundle.json)")]
    NotABundle { path: PathBuf },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a CycloneDX SBOM of prebake: {reason}")]
    Sbom { path: PathBuf, reason: String },
    #[error("{spec}: this spec's digest is {found}, but the build was made from a spec with digest {recorded}; pass the spec it was built from (--spec PATH, or --dify-config PATH for an imported dify-sandbox config)")]
    SpecMismatch {
        spec: PathBuf,
        found: String,
        recorded: String,
    },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("rebuilding from the recorded inputs")]
    Build(#[source] Box<crate::build::BuildError>),
    #[error("the build was made for {platform}, not this machine's platform: give the sysroot it was built from (--sysroot DIR) to rebuild it")]
    NeedsSysroot { platform: String },
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
}

/// A package of the SBOM: a Debian package, a Python distribution or an interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    Interpreter,
    Deb,
    Pypi,
}

impl PackageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Interpreter => "interpreter",
            PackageKind::Deb => "Debian package",
            PackageKind::Pypi => "Python distribution",
        }
    }
}

/// A package's identity across two records: kind and name (its version is what may change).
pub type PackageKey = (PackageKind, String);

/// A regular file of the rootfs, as the SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub sha256: String,
    /// The package it came from; `None`: no package.
    pub owner: Option<PackageKey>,
}

/// One build's lock record, read back from its bundle directory.
#[derive(Debug, Clone)]
pub struct Record {
    pub bundle_dir: PathBuf,
    pub manifest: BundleManifest,
    /// Package -> its versions (one, unless the rootfs holds two copies of it).
    pub packages: BTreeMap<PackageKey, Vec<String>>,
    /// Rootfs path -> file.
    pub files: BTreeMap<String, FileRecord>,
    /// The SBOM's timestamp: the build's SOURCE_DATE_EPOCH as RFC 3339.
    pub created: String,
    /// Bundle-relative path of each seccomp artifact -> its sha256.
    pub seccomp: BTreeMap<String, String>,
}

/// The bundle directory of `path`: `path/bundle` of a build output, or `path` itself.
pub fn bundle_dir(path: &Path) -> Result<PathBuf, VerifyError> {
    let inner = path.join("bundle");
    if inner.join(crate::contract::MANIFEST_FILE).is_file() {
        Ok(inner)
    } else if path.join(crate::contract::MANIFEST_FILE).is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(VerifyError::NotABundle {
            path: path.to_path_buf(),
        })
    }
}

impl Record {
    /// Read the record of the build output (or bundle directory) at `path`.
    pub fn load(path: &Path) -> Result<Record, VerifyError> {
        let bundle_dir = bundle_dir(path)?;
        let manifest = BundleManifest::load(&bundle_dir)?;
        let sbom_path = bundle_dir.join(crate::sbom::CYCLONEDX_FILE);
        let bytes = std::fs::read(&sbom_path).map_err(|source| VerifyError::Io {
            path: sbom_path.clone(),
            source,
        })?;
        let bad = |reason: &str| VerifyError::Sbom {
            path: sbom_path.clone(),
            reason: reason.to_owned(),
        };
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
        let (packages, files) = read_cyclonedx(&doc).map_err(|r| bad(&r))?;
        let created = doc["metadata"]["timestamp"]
            .as_str()
            .ok_or_else(|| bad("no metadata.timestamp"))?
            .to_owned();
        let mut seccomp = BTreeMap::new();
        for info in manifest.languages.values() {
            let Some(s) = &info.seccomp else { continue };
            for rel in [&s.oci_json, &s.bpf, &s.bpf_net] {
                let p = bundle_dir.join(rel);
                let bytes = std::fs::read(&p).map_err(|source| VerifyError::Io {
                    path: p.clone(),
                    source,
                })?;
                seccomp.insert(rel.clone(), hex::encode(Sha256::digest(&bytes)));
            }
        }
        Ok(Record {
            bundle_dir,
            manifest,
            packages,
            files,
            created,
            seccomp,
        })
    }

    /// The build's SOURCE_DATE_EPOCH, from the SBOM's timestamp.
    pub fn source_date_epoch(&self) -> Option<u64> {
        parse_rfc3339_utc(&self.created)
    }
}

type Packages = BTreeMap<PackageKey, Vec<String>>;
type Files = BTreeMap<String, FileRecord>;

/// Packages and files of a CycloneDX document as `crate::sbom::cyclonedx` writes it:
/// packages at the top with their files nested, files of no package at the top.
fn read_cyclonedx(doc: &Value) -> Result<(Packages, Files), String> {
    let mut packages: Packages = BTreeMap::new();
    let mut files: Files = BTreeMap::new();
    let empty = Vec::new();
    let top = doc["components"].as_array().ok_or("no components")?;
    for c in top {
        if c["type"] == "file" {
            let (path, sha256) = file_of(c)?;
            files.insert(
                path,
                FileRecord {
                    sha256,
                    owner: None,
                },
            );
            continue;
        }
        let purl = c["purl"].as_str().ok_or("a component without a purl")?;
        let kind = if purl.starts_with("pkg:deb/") {
            PackageKind::Deb
        } else if purl.starts_with("pkg:pypi/") {
            PackageKind::Pypi
        } else {
            PackageKind::Interpreter
        };
        let name = c["name"].as_str().ok_or("a component without a name")?;
        let version = c["version"].as_str().unwrap_or_default();
        let key = (kind, name.to_owned());
        let versions = packages.entry(key.clone()).or_default();
        if !versions.iter().any(|v| v == version) {
            versions.push(version.to_owned());
            versions.sort();
        }
        for f in c["components"].as_array().unwrap_or(&empty) {
            let (path, sha256) = file_of(f)?;
            files.insert(
                path,
                FileRecord {
                    sha256,
                    owner: Some(key.clone()),
                },
            );
        }
    }
    Ok((packages, files))
}

/// (path, sha256) of a `file` component.
fn file_of(c: &Value) -> Result<(String, String), String> {
    let path = c["name"].as_str().ok_or("a file without a name")?;
    let sha256 = c["hashes"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["alg"] == "SHA-256"))
        .and_then(|h| h["content"].as_str())
        .ok_or_else(|| format!("{path}: no SHA-256"))?;
    Ok((path.to_owned(), sha256.to_owned()))
}

/// `YYYY-MM-DDTHH:MM:SSZ` -> seconds since the epoch (the inverse of
/// `crate::oci::time::rfc3339_utc`).
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// What `prebake verify` needs besides the build output.
pub struct VerifyOptions<'a> {
    /// The spec the build was made from; its digest must be the recorded one.
    pub spec: &'a ImageSpec,
    /// The sysroot a build for another platform was made from (`build --sysroot`): the
    /// rebuild is for the recorded platform, from it. Required when that platform is not
    /// this machine's.
    pub sysroot: Option<&'a Path>,
    /// Missing libraries are warnings in the rebuild, as `build --allow-missing`.
    pub allow_missing: bool,
}

/// Rebuild `out`'s bundle from its recorded inputs (the spec, the SOURCE_DATE_EPOCH) on this
/// machine into a temporary directory, removed afterwards, and compare the record with the
/// rebuild. The rebuild compiles every `.pyc` afresh: a cache is an input of its own.
pub fn verify(
    out: &Path,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<Report, VerifyError> {
    let recorded = Record::load(out)?;
    if opts.spec.digest != recorded.manifest.spec_digest {
        return Err(VerifyError::SpecMismatch {
            spec: opts.spec.origin.clone(),
            found: opts.spec.digest.clone(),
            recorded: recorded.manifest.spec_digest.clone(),
        });
    }
    let mtime = recorded
        .source_date_epoch()
        .ok_or_else(|| VerifyError::Sbom {
            path: recorded.bundle_dir.join(crate::sbom::CYCLONEDX_FILE),
            reason: format!(
                "metadata.timestamp `{}` is not RFC 3339 UTC",
                recorded.created
            ),
        })?;
    let target = rebuild_target(&recorded.manifest, opts.sysroot)?;
    let tmp = tempfile::Builder::new()
        .prefix("prebake-verify-")
        .tempdir()
        .map_err(|source| VerifyError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let rebuild_out = tmp.path().join("out");
    let rebuild = crate::build::build(
        opts.spec,
        &BuildOptions {
            out: rebuild_out.clone(),
            force: false,
            allow_missing: opts.allow_missing,
            mtime,
            cache_dir: None,
            image: None,
            target,
        },
        progress,
    )
    .map_err(|e| VerifyError::Build(Box::new(e)))?;
    for w in &rebuild.warnings {
        progress.warn(w);
    }
    progress.stage("comparing the rebuild with the record");
    let rebuilt = Record::load(&rebuild_out)?;
    let mut report = diff(&recorded, &rebuilt);
    // The rebuild's directory is gone when the report is read.
    report.b = "the rebuild on this machine".to_owned();
    Ok(report)
}

/// What the rebuild is for: the recorded platform, from `sysroot` when one is given; this
/// machine without one, which must then be the recorded platform.
fn rebuild_target(
    manifest: &BundleManifest,
    sysroot: Option<&Path>,
) -> Result<Option<Target>, VerifyError> {
    let host = Platform::host()?;
    let recorded = manifest.arch().map_or(host, |arch| Platform { arch });
    match sysroot {
        Some(dir) => Ok(Some(Target::new(recorded, dir)?)),
        None if recorded == host => Ok(None),
        None => Err(VerifyError::NeedsSysroot {
            platform: recorded.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_back_to_the_epoch_it_was_made_from() {
        for epoch in [0, 1_700_000_000, 951_782_400, 4_102_444_799] {
            let s = crate::oci::time::rfc3339_utc(epoch);
            assert_eq!(parse_rfc3339_utc(&s), Some(epoch), "{s}");
        }
        assert_eq!(parse_rfc3339_utc("2023-11-14 22:13:20Z"), None);
        assert_eq!(parse_rfc3339_utc("2023-13-14T22:13:20Z"), None);
    }
}
