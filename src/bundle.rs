//! `bundle.json`: the manifest that ties the build's artifacts together and that `runtime`
//! reads at start. Structs serialize in declaration order and maps are BTreeMaps, so the same
//! manifest always gives the same bytes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped whenever a field changes meaning; `runtime` refuses bundles it does not know.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "bundle.json";
/// Where the bundle lives inside the OCI image, and `runtime`'s default `--bundle`.
pub const DEFAULT_BUNDLE_DIR: &str = "/opt/prebake/bundle";
/// `runtime`'s default sandbox root, the same as dify-sandbox's.
pub const DEFAULT_SANDBOX_ROOT: &str = "/var/sandbox/sandbox-python";

/// Scripts run as uids from this pool, one per concurrent run, so runs cannot signal or read
/// each other. The rootfs's /etc/passwd and /etc/group name every uid of the pool.
pub const SANDBOX_UID_BASE: u32 = 65537;
pub const SANDBOX_UID_COUNT: u32 = 64;

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
    /// "zstd", "gzip" or "none" (a directory).
    pub compression: String,
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
    /// Audit architecture the programs were compiled for ("x86_64", "aarch64").
    pub arch: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path} does not exist: no bundle there. Pass --bundle DIR, the bundle/ directory of a `prebake build` output (in the image it is /opt/prebake/bundle)")]
    Missing { path: std::path::PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a prebake bundle manifest: {source}")]
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
        // Check the version before the full parse so an old runtime says the useful thing.
        #[derive(Deserialize)]
        struct Probe {
            format_version: u32,
        }
        if let Ok(p) = serde_json::from_slice::<Probe>(&bytes) {
            if p.format_version != FORMAT_VERSION {
                return Err(BundleError::Version {
                    path,
                    found: p.format_version,
                });
            }
        }
        serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse { path, source })
    }

    /// Deterministic JSON bytes (2-space indent, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }
}
