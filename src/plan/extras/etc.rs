//! Generated `/etc` files and the run-time mount points.

use crate::contract::{SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
use crate::plan::{Entry, EntryKind, Plan, PlanError};

/// `/etc/passwd` naming root, nobody and every uid of the sandbox pool, so `getpwuid()`
/// (getpass.getuser, os.path.expanduser("~")) works for whichever pool uid a run gets.
pub fn passwd() -> String {
    let mut s = String::from(
        "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    );
    for i in 0..SANDBOX_UID_COUNT {
        let id = SANDBOX_UID_BASE + i;
        s.push_str(&format!(
            "sandbox{i}:x:{id}:{id}:sandbox:/tmp:/usr/sbin/nologin\n"
        ));
    }
    s
}

/// `/etc/group` matching [`passwd`].
pub fn group() -> String {
    let mut s = String::from("root:x:0:\nnogroup:x:65534:\n");
    for i in 0..SANDBOX_UID_COUNT {
        let id = SANDBOX_UID_BASE + i;
        s.push_str(&format!("sandbox{i}:x:{id}:\n"));
    }
    s
}

pub const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
/// glibc >= 2.34 has files and dns built in, so no libnss_* modules are needed.
pub const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";
/// Replaced at run time by the container's own resolver configuration when a run has
/// network; without network there is nothing to resolve.
pub const RESOLV_CONF: &str =
    "# written by prebake; the runtime provides the real one to runs with network\n";

/// Add the /etc stubs, /tmp and /dev mount points.
pub fn add_etc_stubs(plan: &mut Plan) -> Result<(), PlanError> {
    let why = "extra: etc_stubs";
    plan.add_inline("/etc/passwd", passwd().into_bytes(), 0o644, why)?;
    plan.add_inline("/etc/group", group().into_bytes(), 0o644, why)?;
    plan.add_inline("/etc/hosts", HOSTS.as_bytes().to_vec(), 0o644, why)?;
    plan.add_inline(
        "/etc/nsswitch.conf",
        NSSWITCH.as_bytes().to_vec(),
        0o644,
        why,
    )?;
    plan.add_inline(
        "/etc/resolv.conf",
        RESOLV_CONF.as_bytes().to_vec(),
        0o644,
        why,
    )?;
    Ok(())
}

/// `/tmp` (1777, the runtime mounts a private tmpfs on it) and `/dev` (a mount point for the
/// runtime's null, zero and urandom).
pub fn add_mount_points(plan: &mut Plan) -> Result<(), PlanError> {
    plan.add_dir("/tmp", 0o1777, "extra: tmp")?;
    plan.add_dir("/dev", 0o755, "extra: tmp")?;
    for (path, major, minor) in crate::contract::devices::ROOTFS_DEVICES {
        plan.insert(
            (*path).to_owned(),
            Entry {
                kind: EntryKind::CharDevice {
                    major: *major,
                    minor: *minor,
                },
                mode: 0o666,
                provenance: "extra: tmp (device node; the runtime binds the host's)".into(),
            },
        )?;
    }
    plan.add_dir("/proc", 0o555, "extra: tmp")?;
    Ok(())
}
