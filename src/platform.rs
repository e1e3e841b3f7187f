//! The platform a build is for (`--platform linux/arm64`) and, for a platform other than the
//! build host's, the sysroot it is built from (`--sysroot DIR`): a directory that holds the
//! target's files at their absolute paths (`DIR/usr/bin/python3`, `DIR/lib/aarch64-linux-gnu`).
//!
//! Everything that depends on the architecture asks this module: the ELF machine the loader
//! emulation accepts, the seccomp tables, the OCI `architecture`, and how a target program
//! runs on this host (`qemu-aarch64-static -L SYSROOT` for another architecture).

use crate::contract::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The platforms `--platform` accepts, as OCI spells them.
pub const SUPPORTED: &str = "linux/amd64, linux/arm64";

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("--platform `{0}`: unknown platform; supported: {SUPPORTED}")]
    Unknown(String),
    #[error("--platform {platform} is not this machine's ({host}): give the target's files with --sysroot DIR (scripts/arm64-sysroot.sh makes one for linux/arm64)")]
    NeedsSysroot { platform: String, host: String },
    #[error("--sysroot {path}: not a directory")]
    BadSysroot { path: PathBuf },
    #[error("--platform {platform}: `{qemu}` is not on PATH; running the target's python (to ask it its layout and compile bytecode) needs it: apt-get install qemu-user-static")]
    NoEmulator { platform: String, qemu: String },
    #[error(transparent)]
    Host(#[from] crate::contract::arch::UnsupportedArch),
}

/// `linux/amd64` or `linux/arm64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub arch: Arch,
}

impl Platform {
    /// Parse `linux/amd64` or `linux/arm64` (also `linux/arm64/v8`, and the Rust names
    /// `linux/x86_64`, `linux/aarch64`).
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let arch = match s.trim() {
            "linux/amd64" | "linux/x86_64" => Arch::X86_64,
            "linux/arm64" | "linux/arm64/v8" | "linux/aarch64" => Arch::Aarch64,
            _ => return Err(PlatformError::Unknown(s.to_owned())),
        };
        Ok(Platform { arch })
    }

    pub fn host() -> Result<Platform, PlatformError> {
        Ok(Platform {
            arch: Arch::host()?,
        })
    }

    /// The OCI (Go) architecture name: `amd64`, `arm64`.
    pub fn oci_architecture(self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The ELF `e_machine` of this platform's programs.
    pub fn elf_machine(self) -> u16 {
        match self.arch {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    /// The Debian multiarch triplet (`aarch64-linux-gnu`).
    pub fn triplet(self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// The machine of this platform's wheel tags (`manylinux_2_17_aarch64`).
    pub fn wheel_machine(self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target the `runtime` binary is built for.
    pub fn rust_target(self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The user-mode emulator that runs this platform's programs on another machine.
    pub fn qemu(self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "qemu-x86_64-static",
            Arch::Aarch64 => "qemu-aarch64-static",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "linux/{}", self.oci_architecture())
    }
}

/// A build from a sysroot: where the target's files are and how to run its programs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub platform: Platform,
    pub sysroot: PathBuf,
    /// The emulator, when the platform is not the host's.
    pub emulator: Option<PathBuf>,
}

impl Target {
    /// Check `sysroot` and find the emulator `platform` needs on this machine.
    pub fn new(platform: Platform, sysroot: &Path) -> Result<Target, PlatformError> {
        if !sysroot.is_dir() {
            return Err(PlatformError::BadSysroot {
                path: sysroot.to_path_buf(),
            });
        }
        let sysroot = std::fs::canonicalize(sysroot).map_err(|_| PlatformError::BadSysroot {
            path: sysroot.to_path_buf(),
        })?;
        let emulator = if platform == Platform::host()? {
            None
        } else {
            Some(
                which_host(platform.qemu()).ok_or_else(|| PlatformError::NoEmulator {
                    platform: platform.to_string(),
                    qemu: platform.qemu().to_owned(),
                })?,
            )
        };
        Ok(Target {
            platform,
            sysroot,
            emulator,
        })
    }

    /// The host path of the target's absolute path `p`.
    pub fn host_path(&self, p: &Path) -> PathBuf {
        crate::fsutil::in_root::host_path_in(&self.sysroot, p)
    }
}

/// How the build runs a program of the target: directly, or under the emulator with the
/// sysroot as the prefix of its loader and libraries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runner {
    /// `(emulator, sysroot)`.
    pub emulated: Option<(PathBuf, PathBuf)>,
}

impl Runner {
    pub fn for_target(target: Option<&Target>) -> Runner {
        Runner {
            emulated: target.and_then(|t| t.emulator.clone().map(|e| (e, t.sysroot.clone()))),
        }
    }

    /// A command that runs the program at host path `program`.
    pub fn command(&self, program: &Path) -> Command {
        match &self.emulated {
            None => Command::new(program),
            Some((qemu, sysroot)) => {
                let mut c = Command::new(qemu);
                c.arg("-L").arg(sysroot).arg(program);
                c
            }
        }
    }
}

fn which_host(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!(p.arch, Arch::Aarch64);
        assert_eq!(p.to_string(), "linux/arm64");
        assert_eq!(Platform::parse("linux/amd64").unwrap().elf_machine(), 62);
        let e = Platform::parse("linux/s390x").unwrap_err().to_string();
        assert!(e.contains("--platform") && e.contains("linux/arm64"), "{e}");
    }
}
