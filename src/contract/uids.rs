//! The sandbox uid range: the build names every uid in the rootfs's /etc/passwd and
//! /etc/group; the runtime leases them, one per concurrent run.

/// Scripts run as uids from this pool, one per concurrent run, so runs cannot signal or read
/// each other. The rootfs's /etc/passwd and /etc/group name every uid of the pool.
pub const SANDBOX_UID_BASE: u32 = 65537;
pub const SANDBOX_UID_COUNT: u32 = 64;
