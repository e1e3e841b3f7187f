//! Device nodes in a rootfs: which ones the build writes, and which ones the unpacker lets
//! through (every other device node in an archive is refused).

/// The device nodes the build puts into a rootfs: the three every run gets, and the three the
/// docs promise, in both isolation modes (chroot-only mode sees the rootfs's own `/dev`).
pub const ROOTFS_DEVICES: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/urandom", 1, 9),
    ("/dev/zero", 1, 5),
];

/// The device nodes a rootfs may carry (what every container runtime creates): path, major,
/// minor. The unpacker refuses any other device; it still accepts `full` and `random`, which
/// bundles of earlier prebake versions carry and which are harmless.
pub const SAFE_DEVICES: &[(&str, u32, u32)] = &[
    ("/dev/full", 1, 7),
    ("/dev/null", 1, 3),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/zero", 1, 5),
];
