//! The build pipeline: spec -> plan -> rootfs + seccomp -> bundle (stub).
