//! Which isolation runs get, decided once from the probe and the operator's choices.

use crate::runtime::probe::Capabilities;

/// What isolation runs get, decided from the probe and the operator's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    pub mount_ns: bool,
    pub pid_ns: bool,
    pub ipc_ns: bool,
    pub uts_ns: bool,
    pub net_ns: bool,
    pub chroot: bool,
    pub setuid: bool,
    pub seccomp: bool,
}

impl Isolation {
    /// Everything the probe allows; `namespaces: false` turns namespaces off (to test or to
    /// mimic Docker's default profile).
    pub fn from_caps(caps: &Capabilities, namespaces: bool) -> Isolation {
        let mount_ns = namespaces && caps.mount_ns && caps.tmpfs;
        Isolation {
            mount_ns,
            pid_ns: namespaces && caps.pid_ns,
            ipc_ns: namespaces && caps.ipc_ns,
            uts_ns: namespaces && caps.uts_ns,
            net_ns: namespaces && caps.net_ns,
            chroot: caps.chroot,
            setuid: caps.setuid,
            seccomp: caps.seccomp,
        }
    }
}
