//! Seccomp policies: one source of truth per language (data under `templates/seccomp/`),
//! compiled at build time to OCI JSON and BPF; the runtime only loads bytes.
//!
//! Stages: [`policy`] parses the YAML (names, conditions, why) -> [`resolved`] resolves it
//! for one architecture and one variant (with or without network, or the `dig` variant),
//! merging the spec's `allow` -> [`bpf`] (seccompiler programs in the file format of
//! [`crate::contract::bpf`], loaded by [`install`]) and [`oci`] (runtime-spec JSON). [`show`]
//! prints the policy for reviewers (`prebake seccomp show`); [`tables`] are the generated
//! syscall number tables; [`dig`] finds what a script needs that the policy refuses.
//!
//! Precedence, the same in BPF and JSON: an `errno` entry (clone3 -> ENOSYS, fork -> EPERM,
//! network without network -> EPERM) wins over everything else for the calls it matches; then
//! `allow` entries (with their argument conditions) and the spec's `allow`; everything else
//! gets the default action. A call from another ABI (i386 `int 0x80`, x32) kills the process.

pub mod bpf;
pub mod dig;
pub mod install;
pub mod oci;
pub mod policy;
pub mod resolved;
pub mod show;
pub mod tables;

use crate::spec::{DefaultAction, Language, SeccompSpec};

pub use dig::{dig, DigReport};
pub use show::show_table;

// The architecture is part of the build/runtime contract (the manifest names it); what
// seccomp knows about each one (syscall tables, audit arch, names) is added here.
use crate::contract::Arch;

impl Arch {
    /// Syscall name -> number, from the kernel headers (see `templates/seccomp/gen_tables.py`).
    pub fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => tables::X86_64,
            Arch::Aarch64 => tables::AARCH64,
        }
    }

    pub fn number(self, name: &str) -> Option<u32> {
        self.table()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, nr)| nr)
    }

    pub fn name(self, nr: u32) -> Option<&'static str> {
        self.table()
            .iter()
            .find(|&&(_, n)| n == nr)
            .map(|&(name, _)| name)
    }

    /// Highest syscall number the tables know for this architecture.
    pub fn max_number(self) -> u32 {
        self.table().iter().map(|&(_, nr)| nr).max().unwrap_or(0)
    }

    /// `AUDIT_ARCH_*` value the kernel reports in `seccomp_data.arch`.
    pub fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => 0xc000_003e,
            Arch::Aarch64 => 0xc000_00b7,
        }
    }

    fn seccompiler(self) -> seccompiler::TargetArch {
        match self {
            Arch::X86_64 => seccompiler::TargetArch::x86_64,
            Arch::Aarch64 => seccompiler::TargetArch::aarch64,
        }
    }

    /// The libseccomp name used in OCI JSON.
    pub fn oci_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The policy data under templates/seccomp is inconsistent (a prebake bug, caught by tests).
    #[error("templates/seccomp/{language}.yaml: {message}")]
    Policy { language: String, message: String },
    #[error("seccomp.allow: `{entry}` is not a syscall name on {arch} (see `prebake seccomp show` for the names)")]
    UnknownSyscall { entry: String, arch: &'static str },
    #[error("seccomp.allow: syscall number {nr} is not a syscall on {arch} (the highest known number is {max})")]
    NumberOutOfRange {
        nr: u32,
        arch: &'static str,
        max: u32,
    },
    #[error("seccomp.allow: `{entry}` is refused by the {language} policy on purpose ({why}); remove it from seccomp.allow")]
    Refused {
        entry: String,
        language: &'static str,
        why: String,
    },
    #[error(
        "seccomp.default_action: `{0}` is not an action (use one of: errno, kill_process, log)"
    )]
    BadAction(String),
    #[error(transparent)]
    UnsupportedArch(#[from] crate::contract::arch::UnsupportedArch),
    #[error("compiling the {language} seccomp filter for {arch}: {message}")]
    Compile {
        language: &'static str,
        arch: &'static str,
        message: String,
    },
    #[error("dig: {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parse the spec's `seccomp.default_action` value.
pub fn parse_default_action(s: &str) -> Result<DefaultAction, SeccompError> {
    match s {
        "errno" | "eperm" | "errno_eperm" => Ok(DefaultAction::Errno),
        "kill_process" | "kill" => Ok(DefaultAction::KillProcess),
        "log" => Ok(DefaultAction::Log),
        other => Err(SeccompError::BadAction(other.to_string())),
    }
}

/// What the build writes into the bundle's `seccomp/` directory.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// `seccomp/<language>.json`: OCI `linux.seccomp` without network.
    pub oci_json: Vec<u8>,
    /// The same with the network set allowed (for runc/crun users who enable network).
    pub oci_json_net: Vec<u8>,
    /// `seccomp/<language>.bpf`, in the [`install`] file format.
    pub bpf: Vec<u8>,
    /// `seccomp/<language>-net.bpf`.
    pub bpf_net: Vec<u8>,
    pub arch: Arch,
    /// Total BPF instructions of (`bpf`, `bpf_net`).
    pub instructions: (usize, usize),
}

/// Compile the policy of `language` with the spec's additions, for the build host's arch.
pub fn compile(language: Language, spec: &SeccompSpec) -> Result<Artifacts, SeccompError> {
    compile_for(Arch::host()?, language, spec)
}

/// Compile for a given architecture (a build host can produce aarch64 policies).
pub fn compile_for(
    arch: Arch,
    language: Language,
    spec: &SeccompSpec,
) -> Result<Artifacts, SeccompError> {
    let policy = policy::Policy::load(language)?;
    let no_net = resolved::ResolvedPolicy::new(&policy, arch, spec, resolved::Variant::NoNetwork)?;
    let net = resolved::ResolvedPolicy::new(&policy, arch, spec, resolved::Variant::Network)?;
    let bpf = bpf::compile(&no_net)?;
    let bpf_net = bpf::compile(&net)?;
    let instructions = (count(&bpf), count(&bpf_net));
    Ok(Artifacts {
        oci_json: oci::to_json(&no_net),
        oci_json_net: oci::to_json(&net),
        bpf: install::Programs::to_bytes(&bpf),
        bpf_net: install::Programs::to_bytes(&bpf_net),
        arch,
        instructions,
    })
}

fn count(programs: &[Vec<crate::contract::bpf::SockFilter>]) -> usize {
    programs.iter().map(Vec::len).sum()
}
