//! Issue 13 item 1: the SBOMs every `prebake build` writes (bundle/sbom.spdx.json,
//! bundle/sbom.cdx.json) and attaches to the image, for images/python3.yaml (with its image)
//! and the default image, images/dify.yaml (Python distributions and node). Checked against the rootfs archive read
//! back member by member, the host's own `dpkg-query`, the fixture venv's own
//! `importlib.metadata`, the SPDX and CycloneDX validators from PyPI, and skopeo and umoci.

use crate::support;
use serde_json::Value;
use sha1::Digest as _;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const TAG: &str = "prebake-sbom:1.0";
const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
const MEDIA_SPDX: &str = "application/spdx+json";
const MEDIA_CDX: &str = "application/vnd.cyclonedx+json";

fn default_spec() -> PathBuf {
    support::repo_root().join("images/python3.yaml")
}

/// `prebake build SPEC --out OUT EXTRA...` under `umask`, at the fixed epoch.
fn build(spec: &Path, out: &Path, extra: &[&str], umask: &str, envs: &[(&str, &str)]) {
    let args = [
        &[
            "build",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        extra,
    ];
    let mut c = support::prebake_under_umask(umask, &args.concat());
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().expect("run prebake");
    support::assert_success(&o, "prebake build");
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A build with its image and archive, shared by the tests that only read it.
struct Built {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    archive: PathBuf,
}

impl Built {
    fn spdx(&self) -> Value {
        read_json(&self.out.join("bundle/sbom.spdx.json"))
    }
    fn cdx(&self) -> Value {
        read_json(&self.out.join("bundle/sbom.cdx.json"))
    }
}

fn default_build() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let archive = tmp.path().join("image.tar");
        build(
            &default_spec(),
            &out,
            &["--tag", TAG, "--archive", archive.to_str().unwrap()],
            "022",
            &[],
        );
        Built {
            _tmp: tmp,
            out,
            archive,
        }
    })
}

/// The default image (images/dify.yaml: python3 with Dify's pinned requirements, and node),
/// bundle only.
fn dify_build() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let spec = support::repo_root().join("images/dify.yaml");
        build(&spec, &out, &["--no-image"], "022", &[]);
        Built {
            archive: tmp.path().join("no-archive"),
            _tmp: tmp,
            out,
        }
    })
}

/// The fixture venv with jinja2 (and its requirement markupsafe), bundle only.
fn venv_build() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join("spec.yaml");
        fs::write(
            &spec,
            format!(
                "name: jinja\nlanguages:\n  python3:\n    interpreter: {}\n    packages: [jinja2]\n",
                support::fixture_venv_python().display()
            ),
        )
        .unwrap();
        let out = tmp.path().join("out");
        build(&spec, &out, &["--no-image"], "022", &[]);
        Built {
            archive: tmp.path().join("no-archive"),
            _tmp: tmp,
            out,
        }
    })
}

/// (sha1, sha256) of every regular file of the bundle's rootfs archive, hardlinks included,
/// by absolute path: what the SBOM must list.
fn rootfs_files(bundle: &Path) -> BTreeMap<String, (String, String)> {
    let f = fs::File::open(bundle.join("rootfs.tar.zst")).unwrap();
    let mut archive = tar::Archive::new(zstd::Decoder::new(f).unwrap());
    let mut files = BTreeMap::new();
    let mut links = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = format!("/{}", entry.path().unwrap().display());
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                let sums = (
                    hex::encode(sha1::Sha1::digest(&bytes)),
                    support::sha256(&bytes),
                );
                files.insert(path, sums);
            }
            tar::EntryType::Link => {
                let target = entry.link_name().unwrap().unwrap().display().to_string();
                links.push((path, format!("/{target}")));
            }
            _ => {}
        }
    }
    for (path, target) in links {
        let sums = files[&target].clone();
        files.insert(path, sums);
    }
    files
}

/// SPDX: every file as (path, sha1, sha256), in document order (duplicates kept).
fn spdx_files(doc: &Value) -> Vec<(String, String, String)> {
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let sum = |alg: &str| {
                f["checksums"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["algorithm"] == alg)
                    .map(|c| c["checksumValue"].as_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let name = f["fileName"].as_str().unwrap();
            let path = name.strip_prefix('.').unwrap_or(name).to_owned();
            (path, sum("SHA1"), sum("SHA256"))
        })
        .collect()
}

/// CycloneDX: every `file` component as (path, sha256, the bom-ref of the package it is
/// nested in, or None at the top level), in document order.
fn cdx_files(doc: &Value) -> Vec<(String, String, Option<String>)> {
    fn walk(list: &Value, parent: Option<&str>, out: &mut Vec<(String, String, Option<String>)>) {
        for c in list.as_array().into_iter().flatten() {
            if c["type"] == "file" {
                let sha256 = c["hashes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|h| h["alg"] == "SHA-256")
                    .map(|h| h["content"].as_str().unwrap().to_owned())
                    .unwrap_or_default();
                out.push((
                    c["name"].as_str().unwrap().to_owned(),
                    sha256,
                    parent.map(str::to_owned),
                ));
            }
            walk(&c["components"], c["bom-ref"].as_str(), out);
        }
    }
    let mut out = Vec::new();
    walk(&doc["components"], None, &mut out);
    out
}

/// SPDX: file SPDXID -> the packages that CONTAIN it.
fn spdx_containers(doc: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in doc["relationships"].as_array().unwrap() {
        if r["relationshipType"] == "CONTAINS" {
            out.entry(r["relatedSpdxElement"].as_str().unwrap().to_owned())
                .or_default()
                .push(r["spdxElementId"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// The SPDX package named `name` (case-insensitively).
fn spdx_package<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no package {name} in the SPDX document"))
}

fn purl(p: &Value) -> &str {
    p["externalRefs"][0]["referenceLocator"].as_str().unwrap()
}

/// Paths of the files the SPDX package `id` CONTAINS.
fn contained(doc: &Value, id: &str) -> Vec<String> {
    let ids: BTreeMap<&str, &str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["fileName"].as_str().unwrap();
            (f["SPDXID"].as_str().unwrap(), &name[1..])
        })
        .collect();
    doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "CONTAINS" && r["spdxElementId"] == id)
        .map(|r| ids[r["relatedSpdxElement"].as_str().unwrap()].to_owned())
        .collect()
}

fn assert_each_once<T: Ord + std::fmt::Debug>(what: &str, mut sorted: Vec<T>) -> Vec<T> {
    sorted.sort();
    for w in sorted.windows(2) {
        assert_ne!(w[0], w[1], "{what}: listed twice");
    }
    sorted
}

#[test]
fn every_rootfs_file_is_listed_once_with_its_digests() {
    let _exclusive = support::exclusive();
    for b in [default_build(), dify_build()] {
        files_listed_once_with_their_digests(b);
    }
}

fn files_listed_once_with_their_digests(b: &Built) {
    // Every distribution bundle.json reports is a PyPI package of the SBOM, same version.
    let m = read_json(&b.out.join("bundle/bundle.json"));
    let spdx = b.spdx();
    for d in m["languages"]["python3"]["distributions"]
        .as_array()
        .unwrap()
    {
        let p = spdx_package(&spdx, d["name"].as_str().unwrap());
        assert_eq!(p["versionInfo"], d["version"]);
        assert!(purl(p).starts_with("pkg:pypi/"), "{p}");
    }
    let want = rootfs_files(&b.out.join("bundle"));
    assert!(want.len() > 500, "{} files", want.len());

    let spdx = assert_each_once("SPDX files", spdx_files(&spdx));
    let got: BTreeMap<String, (String, String)> = spdx
        .into_iter()
        .map(|(p, s1, s256)| (p, (s1, s256)))
        .collect();
    assert_eq!(got.len(), want.len(), "SPDX lists another number of files");
    assert_eq!(
        got, want,
        "SPDX paths or digests differ from the rootfs archive"
    );

    let cdx = assert_each_once("CycloneDX files", cdx_files(&b.cdx()));
    let got: BTreeMap<String, String> = cdx.into_iter().map(|(p, s, _)| (p, s)).collect();
    let want256: BTreeMap<String, String> = want.into_iter().map(|(p, (_, s))| (p, s)).collect();
    assert_eq!(
        got, want256,
        "CycloneDX paths or digests differ from the rootfs archive"
    );
}

#[test]
fn debian_packages_are_the_hosts_dpkg_ones() {
    let _exclusive = support::exclusive();
    let b = default_build();
    let spdx = b.spdx();
    let arch = support::run_stdout(Command::new("dpkg").arg("--print-architecture"));
    let arch = arch.trim();
    let version = support::run_stdout(Command::new("dpkg-query").args([
        "-W",
        "-f=${Version}",
        &format!("libc6:{arch}"),
    ]));
    let libc = spdx_package(&spdx, "libc6");
    assert_eq!(libc["versionInfo"], version.as_str());
    let escape = |v: &str| {
        v.replace('%', "%25")
            .replace('+', "%2B")
            .replace(':', "%3A")
            .replace('@', "%40")
    };
    // The qualifiers grype and trivy match Debian's security data by: the distribution
    // (os-release) and the source package (dpkg's own ${source:Package}).
    let os_release = fs::read_to_string("/etc/os-release").unwrap();
    let os = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    let source = support::run_stdout(Command::new("dpkg-query").args([
        "-W",
        "-f=${source:Package} ${source:Version}",
        &format!("libc6:{arch}"),
    ]));
    let (src_name, src_version) = source.split_once(' ').unwrap();
    let upstream = if src_version == version {
        src_name.to_owned()
    } else {
        format!("{src_name}@{src_version}")
    };
    assert_eq!(
        purl(libc),
        format!(
            "pkg:deb/{}/libc6@{}?arch={arch}&distro={}-{}&upstream={}",
            os("ID"),
            escape(&version),
            os("ID"),
            os("VERSION_ID"),
            escape(&upstream)
        )
    );
    // Its supplier is its Debian maintainer (a team, on a mailing list).
    let maintainer = support::run_stdout(Command::new("dpkg-query").args([
        "-W",
        "-f=${Maintainer}",
        &format!("libc6:{arch}"),
    ]));
    let (who, rest) = maintainer.split_once(" <").unwrap();
    let email = rest.trim_end_matches('>');
    assert_eq!(libc["supplier"], format!("Organization: {who} ({email})"));
    let libc_files = contained(&spdx, libc["SPDXID"].as_str().unwrap());
    assert!(
        libc_files.iter().any(|p| p.ends_with("/libc.so.6")),
        "{libc_files:?}"
    );

    // Every Debian package's first file is that package's per the host's own dpkg-query,
    // under one of the two usrmerge spellings.
    let debs: Vec<&Value> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| purl(p).starts_with("pkg:deb/"))
        .collect();
    assert!(debs.len() >= 5, "{} Debian packages", debs.len());
    for p in debs {
        let name = p["name"].as_str().unwrap();
        let files = contained(&spdx, p["SPDXID"].as_str().unwrap());
        let first = files
            .first()
            .unwrap_or_else(|| panic!("{name} contains nothing"));
        let spellings = [
            first.clone(),
            first.strip_prefix("/usr").unwrap_or(first).to_owned(),
        ];
        let o = Command::new("dpkg-query")
            .arg("-S")
            .args(&spellings)
            .output()
            .unwrap();
        let owners = String::from_utf8_lossy(&o.stdout);
        let owned = owners.lines().any(|l| {
            let (pkgs, _) = l.split_once(": ").unwrap_or(("", ""));
            pkgs.split(", ")
                .any(|q| q == name || q.split(':').next() == Some(name))
        });
        assert!(owned, "dpkg-query -S {first}: {owners}");
    }

    // A generated file belongs to no package, and both documents say so.
    let containers = spdx_containers(&spdx);
    let cache = spdx["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == "./etc/ld.so.cache")
        .expect("ld.so.cache is listed");
    assert!(!containers.contains_key(cache["SPDXID"].as_str().unwrap()));
    assert!(
        cache["comment"].as_str().unwrap().contains("no package"),
        "{cache}"
    );
    let cdx = b.cdx();
    let top = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "/etc/ld.so.cache")
        .expect("ld.so.cache is a top-level CycloneDX component");
    assert_eq!(top["type"], "file");
    assert!(top["properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "prebake:package" && p["value"] == "none"));
    // The interpreter is a component of its own, with the version bundle.json reports.
    let m = read_json(&b.out.join("bundle/bundle.json"));
    let python = spdx_package(&spdx, "python");
    assert_eq!(python["versionInfo"], m["languages"]["python3"]["version"]);
    assert_eq!(spdx["creationInfo"]["created"], EPOCH_RFC3339);
    assert_eq!(cdx["metadata"]["timestamp"], EPOCH_RFC3339);
}

#[test]
#[cfg_attr(not(have_fixture_venv), ignore = "needs the fixture venv")]
fn python_distributions_come_with_their_record_hashes() {
    let _exclusive = support::exclusive();
    let b = venv_build();
    let spdx = b.spdx();
    // The venv's own view: version and RECORD hashes (as hex) of each distribution.
    let script = "import importlib.metadata as m, base64, sys\n\
        for name in sys.argv[1:]:\n\
        \x20   d = m.distribution(name)\n\
        \x20   print('V', name, d.version)\n\
        \x20   for f in d.files:\n\
        \x20       if f.hash:\n\
        \x20           h = base64.urlsafe_b64decode(f.hash.value + '==').hex()\n\
        \x20           print('F', name, f.locate().resolve(), h)\n";
    let listing = support::run_stdout(Command::new(support::fixture_venv_python()).args([
        "-c",
        script,
        "jinja2",
        "markupsafe",
    ]));
    let by_path: BTreeMap<String, (String, String)> = spdx_files(&spdx)
        .into_iter()
        .map(|(p, s1, s256)| (p, (s1, s256)))
        .collect();
    for name in ["jinja2", "markupsafe"] {
        let version = listing
            .lines()
            .find_map(|l| l.strip_prefix(&format!("V {name} ")))
            .unwrap();
        let p = spdx_package(&spdx, name);
        assert_eq!(p["versionInfo"], version);
        assert_eq!(purl(p), format!("pkg:pypi/{name}@{version}"));
        let files = contained(&spdx, p["SPDXID"].as_str().unwrap());
        let mut checked = 0;
        for l in listing
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("F {name} ")))
        {
            let (path, hash) = l.rsplit_once(' ').unwrap();
            let Some((_, sha256)) = by_path.get(path) else {
                continue; // left out by the default excludes
            };
            assert_eq!(sha256, hash, "{path}: SBOM digest is not RECORD's");
            assert!(
                files.iter().any(|f| f == path),
                "{name} does not contain {path}"
            );
            checked += 1;
        }
        assert!(
            checked >= 5,
            "{name}: only {checked} RECORD files in the SBOM"
        );
    }
    let jinja = spdx_package(&spdx, "jinja2");
    assert!(contained(&spdx, jinja["SPDXID"].as_str().unwrap())
        .iter()
        .any(|p| p.ends_with("/site-packages/jinja2/__init__.py")));
    // CycloneDX nests the same files under the same distribution.
    let cdx = b.cdx();
    let jinja_cdx = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["purl"] == purl(jinja))
        .expect("jinja2 in CycloneDX");
    let nested = cdx_files(&cdx)
        .into_iter()
        .filter(|(_, _, parent)| parent.as_deref() == jinja_cdx["bom-ref"].as_str())
        .count();
    assert_eq!(
        nested,
        contained(&spdx, jinja["SPDXID"].as_str().unwrap()).len()
    );
}

#[test]
fn same_inputs_give_the_same_sbom_bytes() {
    let _exclusive = support::exclusive();
    let a = default_build();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("elsewhere/out");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    build(
        &default_spec(),
        &out,
        &["--tag", TAG],
        "077",
        &[("TZ", "Pacific/Chatham"), ("LC_ALL", "C.UTF-8")],
    );
    for f in ["sbom.spdx.json", "sbom.cdx.json"] {
        assert!(
            fs::read(a.out.join("bundle").join(f)).unwrap()
                == fs::read(out.join("bundle").join(f)).unwrap(),
            "{f} differs between two builds of the same spec"
        );
    }
    // And so the referrers in the image: the same index.json.
    assert_eq!(
        fs::read(a.out.join("image/index.json")).unwrap(),
        fs::read(out.join("image/index.json")).unwrap()
    );
    let ns = a.spdx()["documentNamespace"].as_str().unwrap().to_owned();
    assert!(
        ns.starts_with("https://prebake.invalid/spdx/python3-"),
        "{ns}"
    );
    let serial = a.cdx()["serialNumber"].as_str().unwrap().to_owned();
    assert!(serial.starts_with("urn:uuid:"), "{serial}");
}

/// (descriptor, manifest) of each referrer in the layout's index.json, and the image's
/// descriptor.
fn referrers(layout: &Path, index: &Value) -> (Value, Vec<(Value, Value)>) {
    let manifests = index["manifests"].as_array().unwrap();
    let image = manifests[0].clone();
    assert!(image.get("artifactType").is_none(), "{index}");
    let refs = manifests[1..]
        .iter()
        .map(|d| {
            let hex = d["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            let bytes = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
            assert_eq!(support::sha256(&bytes), hex);
            (d.clone(), serde_json::from_slice(&bytes).unwrap())
        })
        .collect();
    (image, refs)
}

#[test]
fn the_image_and_its_archive_carry_both_sboms_as_referrers() {
    let _exclusive = support::exclusive();
    let b = default_build();
    let layout = b.out.join("image");
    let index = read_json(&layout.join("index.json"));
    let (image, refs) = referrers(&layout, &index);
    assert_eq!(
        image["annotations"]["org.opencontainers.image.ref.name"],
        "1.0"
    );
    let types: Vec<&str> = refs
        .iter()
        .map(|(d, _)| d["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(types, [MEDIA_SPDX, MEDIA_CDX]);
    for ((d, m), file) in refs.iter().zip(["sbom.spdx.json", "sbom.cdx.json"]) {
        assert!(
            d["annotations"].is_null(),
            "a referrer must not carry a tag: {d}"
        );
        assert_eq!(m["artifactType"], d["artifactType"]);
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(m["subject"]["digest"], image["digest"]);
        assert_eq!(m["subject"]["size"], image["size"]);
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        let config_hex = m["config"]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        assert_eq!(
            fs::read(layout.join("blobs/sha256").join(config_hex)).unwrap(),
            b"{}"
        );
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], d["artifactType"]);
        assert_eq!(
            layers[0]["annotations"]["org.opencontainers.image.title"],
            file
        );
        let hex = layers[0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        assert_eq!(
            fs::read(layout.join("blobs/sha256").join(hex)).unwrap(),
            fs::read(b.out.join("bundle").join(file)).unwrap(),
            "the {file} blob is not the bundle's"
        );
    }

    // The archive lists the same manifests and holds every blob they reference.
    let mut tar = tar::Archive::new(fs::File::open(&b.archive).unwrap());
    let mut members = BTreeMap::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        members.insert(name, bytes);
    }
    let archived: Value = serde_json::from_slice(&members["index.json"]).unwrap();
    assert_eq!(archived["manifests"], index["manifests"]);
    for (d, m) in &refs {
        let blobs = std::iter::once(&d["digest"])
            .chain(std::iter::once(&m["config"]["digest"]))
            .chain(m["layers"].as_array().unwrap().iter().map(|l| &l["digest"]));
        for digest in blobs {
            let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
            let member = &members[&format!("blobs/sha256/{hex}")];
            assert_eq!(support::sha256(member), hex);
        }
    }
}

#[test]
#[cfg_attr(
    not(all(have_root, have_skopeo, have_umoci)),
    ignore = "needs root, skopeo and umoci"
)]
fn skopeo_and_umoci_still_take_the_image_by_its_tag() {
    let _exclusive = support::exclusive();
    let b = default_build();
    let layout = b.out.join("image");
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    for r in [
        format!("oci:{}:1.0", layout.display()),
        format!("oci-archive:{}:1.0", b.archive.display()),
        format!("docker-archive:{}", b.archive.display()),
    ] {
        let inspected = support::skopeo(&["inspect", &r]);
        assert_eq!(
            inspected["Architecture"],
            prebake::oci::host_architecture().unwrap()
        );
        if !r.starts_with("docker-archive:") {
            assert_eq!(inspected["Digest"], digest, "{r}");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let copied = tmp.path().join("copied");
    support::run(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet"])
            .arg(format!("oci:{}:1.0", layout.display()))
            .arg(format!("oci:{}:1.0", copied.display())),
    );
    let unpacked = tmp.path().join("bundle");
    support::run(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:1.0", layout.display()))
            .arg(&unpacked),
    );
    assert!(unpacked
        .join("rootfs/opt/prebake/bundle/sbom.spdx.json")
        .is_file());
    assert!(unpacked.join("rootfs/usr/local/bin/runtime").is_file());
}

/// spdx-tools' validator (it checks the SPDX 2.3 schema and the spec's rules: SHA1 on every
/// file, known license ids, unique SPDXIDs, relationship targets).
fn pyspdxtools(file: &Path) -> Output {
    Command::new(support::validators_venv().join("bin/pyspdxtools"))
        .arg("-i")
        .arg(file)
        .output()
        .unwrap()
}

/// cyclonedx-python-lib's strict JSON-schema validator for CycloneDX 1.5; prints the first
/// error, exits 1 on one.
fn cyclonedx_validate(file: &Path) -> Output {
    let script = "import sys\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        from cyclonedx.schema import SchemaVersion\n\
        err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
        print(err if err is not None else 'valid')\n\
        sys.exit(1 if err is not None else 0)\n";
    Command::new(support::validators_venv().join("bin/python"))
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(not(have_sbom_venv), ignore = "needs the SBOM validators' venv")]
fn both_documents_validate_against_their_schemas() {
    let _exclusive = support::exclusive();
    let mut bundles = vec![
        default_build().out.join("bundle"),
        dify_build().out.join("bundle"),
    ];
    if cfg!(have_fixture_venv) {
        bundles.push(venv_build().out.join("bundle"));
    }
    for bundle in &bundles {
        let spdx = bundle.join("sbom.spdx.json");
        support::assert_success(
            &pyspdxtools(&spdx),
            &format!("pyspdxtools -i {}", spdx.display()),
        );
        let cdx = bundle.join("sbom.cdx.json");
        support::assert_success(
            &cyclonedx_validate(&cdx),
            &format!("validate {}", cdx.display()),
        );
    }

    // The validators do reject what the schemas forbid: a file without its SHA1, a
    // component of an unknown type.
    let tmp = tempfile::tempdir().unwrap();
    let mut spdx = default_build().spdx();
    spdx["files"][0]["checksums"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let bad = tmp.path().join("bad.spdx.json");
    fs::write(&bad, serde_json::to_vec(&spdx).unwrap()).unwrap();
    let o = pyspdxtools(&bad);
    assert!(!o.status.success(), "pyspdxtools took a file without SHA1");
    let mut cdx = default_build().cdx();
    cdx["components"][0]["type"] = "no-such-type".into();
    let bad = tmp.path().join("bad.cdx.json");
    fs::write(&bad, serde_json::to_vec(&cdx).unwrap()).unwrap();
    assert!(!cyclonedx_validate(&bad).status.success());
}

#[test]
#[cfg_attr(not(have_sbom_venv), ignore = "needs the SBOM validators' venv")]
fn cve_bin_tools_sbom_reader_sees_every_package_and_file() {
    let _exclusive = support::exclusive();
    let b = default_build();
    let bundle = b.out.join("bundle");
    // lib4sbom is how cve-bin-tool (and sbomaudit) read an SBOM: what it finds is what such
    // a scanner would look up.
    let script = "import sys\n\
        from lib4sbom.parser import SBOMParser\n\
        p = SBOMParser()\n\
        p.parse_file(sys.argv[1])\n\
        print('files', len(p.get_files()))\n\
        for x in p.get_packages():\n\
        \x20   ref = x.get('externalreference')\n\
        \x20   if ref:\n\
        \x20       print('package', x['name'], x['version'], ref[0][2])\n\
        \x20   else:\n\
        \x20       print('other', x['name'])\n";
    let spdx = b.spdx();
    let want_packages: Vec<String> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "package {} {} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap(),
                purl(p)
            )
        })
        .collect();
    let rootfs = rootfs_files(&bundle).len();
    for file in ["sbom.spdx.json", "sbom.cdx.json"] {
        let out = support::run_stdout(
            Command::new(support::validators_venv().join("bin/python"))
                .args(["-c", script])
                .arg(bundle.join(file)),
        );
        let mut got: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("package "))
            .map(str::to_owned)
            .collect();
        got.sort();
        let mut want = want_packages.clone();
        want.sort();
        assert_eq!(got, want, "{file}");
        // lib4sbom reads SPDX files as files, CycloneDX file components as packages.
        let files = if file.ends_with(".spdx.json") {
            out.lines()
                .find_map(|l| l.strip_prefix("files "))
                .unwrap()
                .parse()
                .unwrap()
        } else {
            out.lines().filter(|l| l.starts_with("other ")).count()
        };
        assert_eq!(
            files, rootfs,
            "{file}: lib4sbom sees another number of files"
        );
    }
}

#[test]
fn an_archive_refuses_an_artifact_of_another_image() {
    let _exclusive = support::exclusive();
    let b = default_build();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("image");
    support::run(
        Command::new("cp")
            .arg("-a")
            .arg(b.out.join("image"))
            .arg(&layout),
    );
    // A document about some other image, listed in this layout's index.json.
    let other = prebake::oci::ImageDigests {
        manifest: format!("sha256:{}", support::sha256(b"another image")),
        manifest_size: 13,
        config: format!("sha256:{}", support::sha256(b"its config")),
    };
    let doc = tmp.path().join("other.spdx.json");
    fs::write(&doc, b"{}").unwrap();
    let artifact = prebake::oci::referrer::Artifact {
        media_type: MEDIA_SPDX.to_owned(),
        file: doc,
    };
    let digests = prebake::oci::referrer::attach(&layout, &other, &[artifact]).unwrap();
    let out = tmp.path().join("image.tar");
    let err = prebake::oci::write_archive(&layout, &out, TAG)
        .unwrap_err()
        .to_string();
    let hex = digests[0].strip_prefix("sha256:").unwrap();
    assert!(
        err.contains(hex) && err.contains("does not refer to the image"),
        "{err}"
    );
    assert!(!out.exists(), "a refused archive was written anyway");
}
