//! The architecture a bundle is built for. The build writes it (as the seccomp programs'
//! `arch` in bundle.json); the runtime refuses a bundle of another architecture, whose
//! interpreters would not run and whose BPF programs check a different audit arch.

use serde::{Deserialize, Serialize};

/// An architecture prebake builds bundles and seccomp policies for. Serialized as its name
/// ("x86_64", "aarch64"), the name Rust and the kernel's `uname -m` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Arch {
    X86_64,
    Aarch64,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "architecture `{0}` is not supported (prebake builds seccomp policies for x86_64 and aarch64)"
)]
pub struct UnsupportedArch(pub String);

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture of this machine, if prebake supports it.
    pub fn host() -> Result<Arch, UnsupportedArch> {
        Arch::from_name(std::env::consts::ARCH)
    }

    pub fn from_name(name: &str) -> Result<Arch, UnsupportedArch> {
        match name {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(UnsupportedArch(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Arch {
    type Error = UnsupportedArch;
    fn try_from(name: String) -> Result<Arch, UnsupportedArch> {
        Arch::from_name(&name)
    }
}

impl From<Arch> for &'static str {
    fn from(arch: Arch) -> &'static str {
        arch.as_str()
    }
}
