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

    /// The namespaces a run is cloned into: each one the platform gives, the network one
    /// only for a run without network (a run with network joins the runs' shared namespace
    /// behind pasta, or stays in the server's).
    pub fn clone_flags(&self, network: bool) -> libc::c_int {
        let mut flags = 0;
        if self.mount_ns {
            flags |= libc::CLONE_NEWNS;
        }
        if self.pid_ns {
            flags |= libc::CLONE_NEWPID;
        }
        if self.ipc_ns {
            flags |= libc::CLONE_NEWIPC;
        }
        if self.uts_ns {
            flags |= libc::CLONE_NEWUTS;
        }
        if self.net_ns && !network {
            flags |= libc::CLONE_NEWNET;
        }
        flags
    }
}
