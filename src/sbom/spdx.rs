//! SPDX 2.3 JSON. Packages are described by the document and CONTAIN their files; a file that
//! belongs to no package has no CONTAINS relationship and says why it is there in its comment.

use super::{id_safe, Component, Ecosystem, Sbom};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Namespaces must be unique URIs; `.invalid` is reserved, so this one can never resolve to
/// someone else's document. The digest makes it unique per content and the same for the same.
const NAMESPACE_BASE: &str = "https://prebake.invalid/spdx";

pub fn document(sbom: &Sbom) -> Value {
    let file_ids: Vec<String> = sbom
        .files
        .iter()
        .map(|f| {
            let h = hex::encode(Sha256::digest(f.path.as_bytes()));
            format!("SPDXRef-File-{}-{}", id_safe(short_name(&f.path)), &h[..16])
        })
        .collect();
    let mut relationships = Vec::new();
    let mut packages = Vec::new();
    for c in &sbom.components {
        let id = format!("SPDXRef-{}", c.id());
        relationships.push(relationship("SPDXRef-DOCUMENT", "DESCRIBES", &id));
        for &f in &c.files {
            relationships.push(relationship(&id, "CONTAINS", &file_ids[f]));
        }
        packages.push(package(sbom, c, &id));
    }
    let files: Vec<Value> = sbom
        .files
        .iter()
        .zip(&file_ids)
        .map(|(f, id)| {
            let mut v = json!({
                "SPDXID": id,
                "fileName": format!(".{}", f.path),
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": f.sha1},
                    {"algorithm": "SHA256", "checksumValue": f.sha256},
                ],
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            });
            let comment = match (&f.owner, &f.record_sha256_differs) {
                (None, _) => Some(format!(
                    "Belongs to no package; in the rootfs because: {}",
                    f.provenance
                )),
                (Some(_), Some(r)) => Some(format!(
                    "Differs from its distribution's RECORD, which gives sha256 {r}"
                )),
                (Some(_), None) => None,
            };
            if let Some(c) = comment {
                v["comment"] = json!(c);
            }
            v
        })
        .collect();
    let mut refs: Vec<(String, String)> = sbom
        .components
        .iter()
        .filter_map(|c| c.license.as_ref())
        .flat_map(|l| l.refs.iter().cloned())
        .collect();
    refs.sort();
    refs.dedup_by(|a, b| a.0 == b.0);
    let extracted: Vec<Value> = refs
        .iter()
        .map(|(id, name)| {
            json!({
                "licenseId": id,
                "name": name,
                "extractedText": format!("The package names its license \"{name}\" (no SPDX identifier is certain for that name); see the package's own license file for the text."),
            })
        })
        .collect();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} rootfs", sbom.name),
        "documentNamespace": format!("{NAMESPACE_BASE}/{}-{}", id_safe(&sbom.name), sbom.content_digest()),
        "creationInfo": {
            "created": sbom.created,
            "creators": [format!("Tool: prebake-{}", sbom.prebake_version)],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = json!(extracted);
    }
    doc
}

/// The last path component, to make file ids readable.
fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

fn package(sbom: &Sbom, c: &Component, id: &str) -> Value {
    let mut p = json!({
        "SPDXID": id,
        "name": c.name,
        "versionInfo": c.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": !c.files.is_empty(),
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": c.license.as_ref().map_or("NOASSERTION", |l| l.expression.as_str()),
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": if c.ecosystem == Ecosystem::Interpreter { "APPLICATION" } else { "LIBRARY" },
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": c.purl,
        }],
    });
    if let Some((name, email)) = &c.supplier {
        // Debian maintainers are teams (on mailing lists) or single people; SPDX asks which,
        // and only the name and address tell.
        let lower = name.to_lowercase();
        let team = [
            "team",
            "maintainers",
            "group",
            "project",
            "packagers",
            "support",
        ]
        .iter()
        .any(|w| lower.contains(w))
            || email.as_deref().is_some_and(|e| {
                ["lists.", "tracker.", "packages.", "support@"]
                    .iter()
                    .any(|w| e.contains(w))
            });
        let kind = if team { "Organization" } else { "Person" };
        p["supplier"] = json!(match email {
            Some(e) => format!("{kind}: {name} ({e})"),
            None => format!("{kind}: {name}"),
        });
    }
    if !c.files.is_empty() {
        // SPDX 2.3 section 7.9: sha1 over the sorted sha1s of the package's files.
        let mut sums: Vec<&str> = c
            .files
            .iter()
            .map(|&f| sbom.files[f].sha1.as_str())
            .collect();
        sums.sort_unstable();
        let code = hex::encode(sha1::Sha1::digest(sums.concat().as_bytes()));
        p["packageVerificationCode"] = json!({"packageVerificationCodeValue": code});
    }
    let comment = match c.ecosystem {
        Ecosystem::Deb => "Installed Debian package of the build host (dpkg database); its files in the rootfs are the ones it CONTAINS.".to_owned(),
        Ecosystem::PyPI => format!("Python distribution at {}; files from its RECORD.", c.location),
        Ecosystem::Interpreter => format!("The interpreter at {} with the files no Debian package or Python distribution claims.", c.location),
    };
    p["comment"] = json!(comment);
    p
}
