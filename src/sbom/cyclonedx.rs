//! CycloneDX 1.5 JSON. Packages are components with their files nested as `file` components;
//! a file that belongs to no package is a top-level `file` component saying why it is there.

use super::{Component, Ecosystem, FileEntry, Sbom};
use serde_json::{json, Value};

pub fn document(sbom: &Sbom) -> Value {
    let mut components: Vec<Value> = sbom.components.iter().map(|c| component(sbom, c)).collect();
    components.extend(sbom.files.iter().filter(|f| f.owner.is_none()).map(|f| {
        let mut v = file(f);
        v["properties"] = json!([
            {"name": "prebake:package", "value": "none"},
            {"name": "prebake:provenance", "value": f.provenance},
        ]);
        v
    }));
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_from_hex(&sbom.content_digest())),
        "version": 1,
        "metadata": {
            "timestamp": sbom.created,
            "tools": {"components": [{
                "type": "application",
                "name": "prebake",
                "version": sbom.prebake_version,
            }]},
            "component": {
                "type": "container",
                "bom-ref": "rootfs",
                "name": format!("{} rootfs", sbom.name),
            },
        },
        "components": components,
    })
}

fn component(sbom: &Sbom, c: &Component) -> Value {
    let mut v = json!({
        "type": if c.ecosystem == Ecosystem::Interpreter { "application" } else { "library" },
        "bom-ref": c.id(),
        "name": c.name,
        "version": c.version,
        "purl": c.purl,
    });
    if let Some((name, _)) = &c.supplier {
        v["supplier"] = json!({"name": name});
    }
    if let Some(l) = &c.license {
        v["licenses"] = json!([{"expression": l.expression}]);
    }
    if !c.location.is_empty() {
        v["properties"] = json!([{"name": "prebake:location", "value": c.location}]);
    }
    if !c.files.is_empty() {
        v["components"] = c.files.iter().map(|&f| file(&sbom.files[f])).collect();
    }
    v
}

fn file(f: &FileEntry) -> Value {
    let mut v = json!({
        "type": "file",
        "bom-ref": format!("file:{}", f.path),
        "name": f.path,
        "hashes": [
            {"alg": "SHA-1", "content": f.sha1},
            {"alg": "SHA-256", "content": f.sha256},
        ],
    });
    if let Some(r) = &f.record_sha256_differs {
        v["properties"] = json!([{"name": "prebake:record-sha256", "value": r}]);
    }
    v
}

/// A version-5-shaped UUID from a hex digest: deterministic, unlike a random one.
fn uuid_from_hex(hex: &str) -> String {
    let mut b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0))
        .collect();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::uuid_from_hex;

    #[test]
    fn serial_numbers_are_version_5_shaped_uuids_of_the_digest() {
        let u = uuid_from_hex(&"ab".repeat(32));
        assert_eq!(u, "abababab-abab-5bab-abab-abababababab");
        assert_ne!(u, uuid_from_hex(&"ac".repeat(32)));
    }
}
