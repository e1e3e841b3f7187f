//! Two lock records compared entry by entry.

use super::report::{Change, Owner, Report};
use super::{PackageKey, Record};
use std::collections::{BTreeMap, BTreeSet};

/// Every difference between `a` and `b`, in a fixed order: prebake, spec, epoch,
/// interpreters, packages, files, other entries, seccomp, the rootfs digest.
pub fn diff(a: &Record, b: &Record) -> Report {
    let (ma, mb) = (&a.manifest, &b.manifest);
    let mut changes = Vec::new();
    if ma.prebake_version != mb.prebake_version {
        changes.push(Change::PrebakeVersion {
            before: ma.prebake_version.clone(),
            after: mb.prebake_version.clone(),
        });
    }
    if ma.spec_digest != mb.spec_digest {
        changes.push(Change::SpecDigest {
            before: ma.spec_digest.clone(),
            after: mb.spec_digest.clone(),
        });
    }
    if a.created != b.created {
        changes.push(Change::SourceDateEpoch {
            before: a.created.clone(),
            after: b.created.clone(),
        });
    }
    let describe = |m: &crate::contract::BundleManifest, lang: &str| {
        m.languages
            .get(lang)
            .map(|l| format!("{} {}", l.interpreter, l.version))
    };
    for lang in keys(&ma.languages, &mb.languages) {
        let (before, after) = (describe(ma, lang), describe(mb, lang));
        if before != after {
            changes.push(Change::Interpreter {
                language: lang.clone(),
                before,
                after,
            });
        }
    }
    for key in keys(&a.packages, &b.packages) {
        let (before, after) = (versions(a, key), versions(b, key));
        if before != after {
            changes.push(Change::Package {
                kind: key.0,
                name: key.1.clone(),
                before,
                after,
            });
        }
    }
    for path in keys(&a.files, &b.files) {
        let (fa, fb) = (a.files.get(path), b.files.get(path));
        if fa.map(|f| &f.sha256) == fb.map(|f| &f.sha256) {
            continue;
        }
        let owner = fb
            .and_then(|f| f.owner.as_ref())
            .or_else(|| fa.and_then(|f| f.owner.as_ref()))
            .map(|key| Owner {
                kind: key.0,
                name: key.1.clone(),
                before: versions(a, key),
                after: versions(b, key),
            });
        changes.push(Change::File {
            path: path.clone(),
            before: fa.map(|f| f.sha256.clone()),
            after: fb.map(|f| f.sha256.clone()),
            owner,
        });
    }
    for path in keys(&ma.provenance, &mb.provenance) {
        if a.files.contains_key(path) || b.files.contains_key(path) {
            continue;
        }
        let (before, after) = (ma.provenance.get(path), mb.provenance.get(path));
        if before != after {
            changes.push(Change::Entry {
                path: path.clone(),
                before: before.cloned(),
                after: after.cloned(),
            });
        }
    }
    for file in keys(&a.seccomp, &b.seccomp) {
        let (before, after) = (a.seccomp.get(file), b.seccomp.get(file));
        if before != after {
            changes.push(Change::Seccomp {
                file: file.clone(),
                before: before.cloned(),
                after: after.cloned(),
            });
        }
    }
    if ma.rootfs.sha256_uncompressed != mb.rootfs.sha256_uncompressed {
        let explained = changes.iter().any(|c| {
            matches!(
                c,
                Change::File { .. } | Change::Entry { .. } | Change::SourceDateEpoch { .. }
            )
        });
        changes.push(Change::Rootfs {
            before: ma.rootfs.sha256_uncompressed.clone(),
            after: mb.rootfs.sha256_uncompressed.clone(),
            unexplained: !explained,
        });
    }
    Report {
        a: a.bundle_dir.display().to_string(),
        b: b.bundle_dir.display().to_string(),
        identical: changes.is_empty(),
        changes,
    }
}

fn versions(r: &Record, key: &PackageKey) -> Vec<String> {
    r.packages.get(key).cloned().unwrap_or_default()
}

/// The keys of both maps, sorted, each once.
fn keys<'m, K: Ord, V, W>(a: &'m BTreeMap<K, V>, b: &'m BTreeMap<K, W>) -> BTreeSet<&'m K> {
    a.keys().chain(b.keys()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{FileRecord, PackageKind};

    /// A record with one Debian package `libfoo` at `version` owning `/lib/libfoo.so` with
    /// content digest `sha256`.
    fn record(version: &str, sha256: &str) -> Record {
        let manifest: crate::contract::BundleManifest = serde_json::from_value(serde_json::json!({
            "format_version": crate::contract::FORMAT_VERSION,
            "prebake_version": "0.1.0",
            "spec_digest": "s",
            "rootfs": {
                "file": "rootfs.tar.zst", "compression": "zstd",
                "sha256_uncompressed": format!("root-{sha256}"), "sha256_compressed": "c",
                "size_uncompressed": 1, "size_compressed": 1,
                "files": 1, "dirs": 0, "symlinks": 0, "hardlinks": 0
            },
            "languages": {},
            "provenance": {"/lib/libfoo.so": "needed by /usr/bin/python3"}
        }))
        .unwrap();
        let key = (PackageKind::Deb, "libfoo".to_owned());
        Record {
            bundle_dir: "b".into(),
            manifest,
            packages: BTreeMap::from([(key.clone(), vec![version.to_owned()])]),
            files: BTreeMap::from([(
                "/lib/libfoo.so".to_owned(),
                FileRecord {
                    sha256: sha256.to_owned(),
                    owner: Some(key),
                },
            )]),
            created: "1970-01-01T00:00:00Z".into(),
            seccomp: BTreeMap::new(),
        }
    }

    #[test]
    fn same_record_is_identical() {
        let r = diff(&record("1.0", "aa"), &record("1.0", "aa"));
        assert!(r.identical && r.changes.is_empty(), "{r}");
    }

    #[test]
    fn new_content_under_the_same_version_is_called_tampered() {
        let r = diff(&record("1.0", "aa"), &record("1.0", "bb"));
        assert!(!r.identical);
        let text = r.to_string();
        assert!(
            text.contains("file /lib/libfoo.so: changed")
                && text.contains("Debian package libfoo is still 1.0")
                && text.contains("tampered or locally modified"),
            "{text}"
        );
        assert_eq!(r.files().collect::<Vec<_>>(), ["/lib/libfoo.so"]);
    }

    #[test]
    fn new_content_with_a_new_version_is_explained_by_it() {
        let r = diff(&record("1.0", "aa"), &record("1.1", "bb"));
        let text = r.to_string();
        assert!(
            text.contains("Debian package libfoo: version 1.0 -> 1.1"),
            "{text}"
        );
        assert!(
            text.contains("Debian package libfoo changed version 1.0 -> 1.1"),
            "{text}"
        );
        assert!(!text.contains("tampered"), "{text}");
        assert!(!text.contains("no file's content differs"), "{text}");
    }

    #[test]
    fn a_rootfs_digest_no_file_explains_says_so() {
        let mut b = record("1.0", "aa");
        b.manifest.rootfs.sha256_uncompressed = "other".into();
        let r = diff(&record("1.0", "aa"), &b);
        assert!(
            matches!(
                r.changes[..],
                [Change::Rootfs {
                    unexplained: true,
                    ..
                }]
            ),
            "{r}"
        );
        assert!(r.to_string().contains("no file's content differs"), "{r}");
    }
}
