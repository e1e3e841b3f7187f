//! Safe, once-only rootfs unpacking (stub).
