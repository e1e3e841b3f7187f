//! `bundle.json`: the manifest that ties the build's artifacts together and that `runtime`
//! reads at start. Structs serialize in declaration order and maps are BTreeMaps, so the same
//! manifest always gives the same bytes.

use super::{Arch, Compression};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped whenever a field changes meaning; `runtime` refuses bundles it does not know.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "bundle.json";
/// Where the bundle lives inside the OCI image, and `runtime`'s default `--bundle`.
pub const DEFAULT_BUNDLE_DIR: &str = "/opt/prebake/bundle";
/// The rootfs as a tree inside the image's bundle (`DEFAULT_BUNDLE_DIR/rootfs`): the
/// bundle.json beside it names it with compression "none", and the runtime uses it in place.
pub const TREE_ROOTFS_DIR: &str = "rootfs";
/// `runtime`'s default sandbox root, the same as dify-sandbox's.
pub const DEFAULT_SANDBOX_ROOT: &str = "/var/sandbox/sandbox-python";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub format_version: u32,
    pub prebake_version: String,
    /// sha256 of the spec file's bytes (or of the dify config it was imported from).
    pub spec_digest: String,
    pub rootfs: RootfsInfo,
    /// Keyed by dify language name: "python3", "nodejs".
    pub languages: BTreeMap<String, LanguageInfo>,
    /// Rootfs path -> why it is there.
    pub provenance: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RootfsInfo {
    /// File name inside the bundle directory ("rootfs.tar.zst"), or a directory name for a
    /// bundle whose rootfs is already unpacked.
    pub file: String,
    /// "zstd", "gzip" or "none" (a directory, or a plain tar).
    pub compression: Compression,
    pub sha256_uncompressed: String,
    pub sha256_compressed: String,
    pub size_uncompressed: u64,
    pub size_compressed: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LanguageInfo {
    /// Absolute path of the interpreter inside the rootfs.
    pub interpreter: String,
    /// Arguments placed before the script ("-I", "-B" for Python).
    pub args: Vec<String>,
    /// Environment the interpreter needs inside the sandbox (PATH, LANG, PYTHONHOME...).
    pub env: BTreeMap<String, String>,
    /// Interpreter version ("3.11.7", "v20.20.2").
    pub version: String,
    /// Distributions baked in (Python packages), sorted by name.
    pub distributions: Vec<Distribution>,
    /// Seccomp artifacts inside the bundle, relative to the bundle directory.
    pub seccomp: Option<SeccompFiles>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeccompFiles {
    /// OCI runtime-spec `linux.seccomp` JSON.
    pub oci_json: String,
    /// Raw BPF (array of `struct sock_filter`, native endian) for runs without network.
    pub bpf: String,
    /// Raw BPF for runs with network.
    pub bpf_net: String,
    /// Audit architecture the programs were compiled for ("x86_64", "aarch64"): the
    /// architecture of the whole bundle, checked by [`BundleManifest::check_arch`].
    pub arch: Arch,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path} does not exist: no bundle there. Pass --bundle DIR, the bundle/ directory of a `prebake build` output (in the image it is /opt/prebake/bundle)")]
    Missing { path: std::path::PathBuf },
    #[error("{path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a prebake bundle manifest")]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: bundle format version {found}, this runtime reads {FORMAT_VERSION}; rebuild the bundle with a matching prebake")]
    Version {
        path: std::path::PathBuf,
        found: u32,
    },
    /// The runtime is not the architecture the bundle's interpreters and seccomp programs were
    /// built for: the interpreters would not exec, and the BPF programs check the audit arch.
    #[error("the bundle was built for {bundle}, but this machine runs {host}: build the image on (or for) {host}, or run this one on {bundle} hardware")]
    Arch { bundle: Arch, host: String },
}

impl RootfsInfo {
    /// The same rootfs carried as a directory `dir` (relative to the bundle) instead of an
    /// archive: compression "none", and the digests and size of the plain tar the tree was
    /// written from (the archive's uncompressed stream), which stay a faithful description
    /// of its content. The runtime uses such a tree in place and unpacks nothing.
    pub fn as_tree(&self, dir: &str) -> RootfsInfo {
        RootfsInfo {
            file: dir.to_owned(),
            compression: Compression::None,
            sha256_compressed: self.sha256_uncompressed.clone(),
            size_compressed: self.size_uncompressed,
            ..self.clone()
        }
    }
}

impl BundleManifest {
    /// Read and check `DIR/bundle.json`.
    pub fn load(bundle_dir: &std::path::Path) -> Result<Self, BundleError> {
        let path = bundle_dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BundleError::Missing { path: path.clone() }
            } else {
                BundleError::Io {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let source = match serde_json::from_slice::<Self>(&bytes) {
            Ok(m) if m.format_version == FORMAT_VERSION => return Ok(m),
            Ok(m) => {
                return Err(BundleError::Version {
                    path,
                    found: m.format_version,
                })
            }
            Err(e) => e,
        };
        // Another format version fails the parse above in other places first: an old
        // runtime should say the useful thing, the version, rather than a field it lacks.
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        match serde_json::from_slice::<VersionOnly>(&bytes) {
            Ok(v) if v.format_version != FORMAT_VERSION => Err(BundleError::Version {
                path,
                found: v.format_version,
            }),
            _ => Err(BundleError::Parse { path, source }),
        }
    }

    /// The architecture the bundle was built for: the one its seccomp programs were compiled
    /// for (every language's is the host's at build time). `None` for a bundle without any.
    pub fn arch(&self) -> Option<Arch> {
        self.languages
            .values()
            .find_map(|l| l.seccomp.as_ref().map(|s| s.arch))
    }

    /// Refuse a bundle built for another architecture than the running one, naming both.
    /// The runtime calls it after [`BundleManifest::load`]; `prebake` itself does not, since
    /// reading a manifest of another architecture is fine.
    pub fn check_arch(&self) -> Result<(), BundleError> {
        self.check_arch_for(std::env::consts::ARCH)
    }

    /// [`BundleManifest::check_arch`] against a given host architecture name.
    pub fn check_arch_for(&self, host: &str) -> Result<(), BundleError> {
        let foreign = self.languages.values().filter_map(|l| l.seccomp.as_ref());
        for files in foreign {
            if files.arch.as_str() != host {
                return Err(BundleError::Arch {
                    bundle: files.arch,
                    host: host.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Deterministic JSON bytes (2-space indent, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(arch: Arch) -> BundleManifest {
        let seccomp = SeccompFiles {
            oci_json: "seccomp/python3.json".into(),
            bpf: "seccomp/python3.bpf".into(),
            bpf_net: "seccomp/python3-net.bpf".into(),
            arch,
        };
        let python = LanguageInfo {
            interpreter: "/usr/bin/python3".into(),
            args: vec!["-I".into()],
            env: BTreeMap::new(),
            version: "3.11.2".into(),
            distributions: Vec::new(),
            seccomp: Some(seccomp),
        };
        BundleManifest {
            format_version: FORMAT_VERSION,
            prebake_version: "0".into(),
            spec_digest: "0".repeat(64),
            rootfs: RootfsInfo {
                file: "rootfs.tar.zst".into(),
                compression: Compression::Zstd,
                sha256_uncompressed: String::new(),
                sha256_compressed: String::new(),
                size_uncompressed: 0,
                size_compressed: 0,
                files: 0,
                dirs: 0,
                symlinks: 0,
                hardlinks: 0,
            },
            languages: BTreeMap::from([("python3".to_owned(), python)]),
            provenance: BTreeMap::new(),
        }
    }

    #[test]
    fn a_bundle_of_another_arch_is_refused_naming_both() {
        let m = manifest_for(Arch::Aarch64);
        assert_eq!(m.arch(), Some(Arch::Aarch64));
        assert!(m.check_arch_for("aarch64").is_ok());
        let err = m.check_arch_for("x86_64").unwrap_err().to_string();
        assert!(
            err.contains("built for aarch64") && err.contains("runs x86_64"),
            "{err}"
        );
        assert!(err.contains("build the image on (or for) x86_64"), "{err}");
    }

    #[test]
    fn a_tree_rootfs_is_described_by_its_plain_tar() {
        let mut m = manifest_for(Arch::X86_64);
        m.rootfs.sha256_uncompressed = "u".repeat(64);
        m.rootfs.sha256_compressed = "c".repeat(64);
        m.rootfs.size_uncompressed = 300;
        m.rootfs.size_compressed = 100;
        m.rootfs.files = 7;
        let tree = m.rootfs.as_tree(TREE_ROOTFS_DIR);
        assert_eq!(tree.file, "rootfs");
        assert_eq!(tree.compression, Compression::None);
        assert_eq!(tree.sha256_compressed, tree.sha256_uncompressed);
        assert_eq!(tree.sha256_uncompressed, m.rootfs.sha256_uncompressed);
        assert_eq!((tree.size_compressed, tree.size_uncompressed), (300, 300));
        assert_eq!(tree.files, 7);
    }

    #[test]
    fn enums_serialize_as_the_names_of_format_1() {
        let m = manifest_for(Arch::X86_64);
        let json = String::from_utf8(m.to_json()).unwrap();
        assert!(json.contains("\"compression\": \"zstd\""), "{json}");
        assert!(json.contains("\"arch\": \"x86_64\""), "{json}");
        let back: BundleManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
