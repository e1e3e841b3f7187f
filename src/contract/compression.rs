//! How the bundle's rootfs is stored: `rootfs.compression` in bundle.json.

use serde::{Deserialize, Serialize};

/// The rootfs's compression, serialized as its name in bundle.json.
///
/// A name this prebake does not know is kept as [`Compression::Unknown`] rather than failing
/// the manifest parse: the unpacker refuses it by name at the point of use ("the bundle was
/// made by an incompatible prebake"), as it always has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Compression {
    /// `rootfs.tar.zst`.
    Zstd,
    /// `rootfs.tar.gz`.
    Gzip,
    /// A plain tar, or a directory used in place.
    None,
    /// Any other name, refused when the rootfs is unpacked.
    Unknown(String),
}

impl Compression {
    pub fn as_str(&self) -> &str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
            Compression::Unknown(name) => name,
        }
    }
}

impl From<&str> for Compression {
    fn from(name: &str) -> Compression {
        match name {
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => Compression::Unknown(other.to_owned()),
        }
    }
}

impl From<String> for Compression {
    fn from(name: String) -> Compression {
        Compression::from(name.as_str())
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.as_str().to_owned()
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
