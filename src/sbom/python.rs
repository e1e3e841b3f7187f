//! Python distributions in the rootfs, found by their `*.dist-info` in a `site-packages` or
//! `dist-packages` directory of the plan however they got there: name, version and license
//! from `METADATA`, the files and their hashes from `RECORD`.

use super::license::{self, License};
use super::{purl_escape, Component, Ecosystem, SbomError};
use crate::plan::{normalize, Entry, EntryKind, Plan, Source};
use std::collections::BTreeMap;
use std::path::Path;

/// Trove license classifiers that name exactly one SPDX license ("BSD License" or "Apache
/// Software License" do not: they stay names).
const CLASSIFIER_TO_SPDX: &[(&str, &str)] = &[
    ("MIT License", "MIT"),
    ("ISC License (ISCL)", "ISC"),
    ("Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
    ("The Unlicense (Unlicense)", "Unlicense"),
    ("Python Software Foundation License", "PSF-2.0"),
    ("Zero-Clause BSD (0BSD)", "0BSD"),
];

#[derive(Debug, Clone)]
pub struct PyDist {
    pub name: String,
    pub version: String,
    pub license: Option<License>,
    /// Rootfs path -> the sha256 (hex) RECORD gives for it, if any (RECORD lists `.pyc`
    /// files and itself without one).
    pub files: BTreeMap<String, Option<String>>,
}

impl PyDist {
    /// The distribution as an SBOM component (`pkg:pypi/NAME@VERSION`, the name normalized).
    pub fn component(&self, plan: &Plan) -> Component {
        // The dist-info directory: where RECORD is (every RECORD lists itself).
        let location = self
            .files
            .keys()
            .find(|p| p.ends_with(".dist-info/RECORD") && plan.entries.contains_key(*p))
            .map(|p| p.trim_end_matches("/RECORD").to_owned())
            .unwrap_or_default();
        Component {
            ecosystem: Ecosystem::PyPI,
            name: self.name.clone(),
            version: self.version.clone(),
            purl: format!(
                "pkg:pypi/{}@{}",
                purl_escape(&crate::spec::normalize_package_name(&self.name)),
                purl_escape(&self.version)
            ),
            license: self.license.clone(),
            location,
            supplier: None,
            files: Vec::new(),
        }
    }
}

/// Every distribution whose `RECORD` is in the plan.
pub fn dists(plan: &Plan) -> Result<Vec<PyDist>, SbomError> {
    let mut out = Vec::new();
    for (path, entry) in &plan.entries {
        let Some(dist_info) = path.strip_suffix("/RECORD") else {
            continue;
        };
        let site = Path::new(dist_info).parent();
        let in_site = site
            .and_then(Path::file_name)
            .is_some_and(|n| n == "site-packages" || n == "dist-packages");
        let (Some(site), true, true) = (site, in_site, dist_info.ends_with(".dist-info")) else {
            continue;
        };
        let metadata_path = format!("{dist_info}/METADATA");
        let (Some(record), Some(metadata)) = (
            read_entry(entry)?,
            plan.entries
                .get(&metadata_path)
                .map(read_entry)
                .transpose()?
                .flatten(),
        ) else {
            continue;
        };
        let (name, version, license) = metadata_fields(&metadata);
        let (Some(name), Some(version)) = (name, version) else {
            return Err(SbomError::BadDistInfo {
                path: metadata_path,
                reason: "no Name: or Version: header".into(),
            });
        };
        out.push(PyDist {
            name,
            version,
            license,
            files: record_files(&record, site),
        });
    }
    Ok(out)
}

/// The bytes of a planned regular file.
fn read_entry(entry: &Entry) -> Result<Option<String>, SbomError> {
    match &entry.kind {
        EntryKind::File {
            source: Source::Host(p),
        } => std::fs::read(p)
            .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| SbomError::io(p, e)),
        EntryKind::File {
            source: Source::Inline(b),
        } => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        _ => Ok(None),
    }
}

/// Name, version and license from the METADATA headers. The license is the
/// `License-Expression` (core metadata 2.4), else a one-line `License:`, else the license
/// classifiers; a multi-line `License:` is a license text, not a name.
fn metadata_fields(text: &str) -> (Option<String>, Option<String>, Option<License>) {
    let mut name = None;
    let mut version = None;
    let mut expression = None;
    let mut license_field: Option<String> = None;
    let mut classifiers = Vec::new();
    let mut in_license = false;
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            // A continuation line: only a License: field is long enough to have them.
            if in_license {
                license_field = None;
            }
            continue;
        }
        in_license = false;
        let value = |prefix: &str| line.strip_prefix(prefix).map(|v| v.trim().to_owned());
        if let Some(v) = value("Name:") {
            name = Some(v);
        } else if let Some(v) = value("Version:") {
            version = Some(v);
        } else if let Some(v) = value("License-Expression:") {
            expression = Some(v);
        } else if let Some(v) = value("License:") {
            in_license = true;
            // setuptools writes UNKNOWN when the project gave none.
            license_field = Some(v).filter(|v| !v.is_empty() && v.len() <= 80 && v != "UNKNOWN");
        } else if let Some(v) = value("Classifier: License ::") {
            let last = v.rsplit("::").next().unwrap_or(&v).trim();
            if last != "OSI Approved" {
                let known = CLASSIFIER_TO_SPDX.iter().find(|(c, _)| *c == last);
                classifiers.push(known.map_or(last, |(_, id)| *id).to_owned());
            }
        }
    }
    let license = if let Some(e) = expression.or(license_field) {
        Some(license::parse(&e))
    } else {
        classifiers.sort();
        classifiers.dedup();
        let names: Vec<&str> = classifiers.iter().map(String::as_str).collect();
        license::all_of(&names)
    };
    (name, version, license)
}

/// RECORD's `path,sha256=<urlsafe base64>,size` rows as rootfs paths (relative to the
/// site-packages directory `site`) and hex digests.
fn record_files(text: &str, site: &Path) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        // A path with a comma is quoted (csv); hashes and sizes never are.
        let (path, rest) = match line.strip_prefix('"') {
            Some(q) => match q.split_once("\",") {
                Some((p, r)) => (p.replace("\"\"", "\""), r),
                None => continue,
            },
            None => match line.split_once(',') {
                Some((p, r)) => (p.to_owned(), r),
                None => (line.to_owned(), ""),
            },
        };
        let hash = rest
            .split(',')
            .next()
            .and_then(|h| h.strip_prefix("sha256="))
            .and_then(base64url_to_hex);
        let full = normalize(&site.join(path));
        out.insert(full.to_string_lossy().into_owned(), hash);
    }
    out
}

/// Unpadded URL-safe base64 (RECORD's hash encoding) to lowercase hex.
fn base64url_to_hex(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut bytes = Vec::with_capacity(s.len() * 3 / 4);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = ((bits << 6) | u32::from(v)) & 0xffff;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits).to_le_bytes()[0]);
        }
    }
    Some(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_rows_become_rootfs_paths_with_hex_digests() {
        // sha256 of the empty string, as pip writes it.
        let text = "jinja2/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n\"odd,name.py\",,\n../../../bin/tool,,12\n";
        let files = record_files(text, Path::new("/v/lib/python3.11/site-packages"));
        assert_eq!(
            files["/v/lib/python3.11/site-packages/jinja2/__init__.py"].as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(files["/v/lib/python3.11/site-packages/odd,name.py"], None);
        assert!(files.contains_key("/v/bin/tool"));
    }

    #[test]
    fn the_license_comes_from_the_most_precise_field() {
        let m = "Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.4\nClassifier: License :: OSI Approved :: BSD License\n\nbody";
        let (n, v, l) = metadata_fields(m);
        assert_eq!((n.unwrap(), v.unwrap()), ("Jinja2".into(), "3.1.4".into()));
        assert_eq!(l.unwrap().expression, "LicenseRef-BSD-License");
        let m = "Name: x\nVersion: 1\nLicense: Copyright (c) me\n  all rights\nLicense-Expression: MIT\n";
        assert_eq!(metadata_fields(m).2.unwrap().expression, "MIT");
        let m = "Name: x\nVersion: 1\nLicense: Copyright (c) me\n  all rights\n";
        assert_eq!(metadata_fields(m).2, None);
        let m = "Name: x\nVersion: 1\nLicense: UNKNOWN\nClassifier: License :: OSI Approved :: MIT License\n";
        assert_eq!(metadata_fields(m).2.unwrap().expression, "MIT");
    }
}
