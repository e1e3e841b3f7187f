//! The integration tests: one test binary, one module per theme, and [`support`] for what
//! they share.
//!
//! Tests that need root or a tool this machine lacks are `#[ignore]`d with the reason, decided
//! at build time by the package's `build.rs` (the `have_*` cfgs); with `PREBAKE_NO_SKIP=1`
//! (set by `.ci/run`) a missing requirement fails the build instead, naming the tests that
//! need it. Every test takes [`support::exclusive`]: tests of two modules never run at the
//! same time, as when each module was a test binary of its own.

mod support;

mod bench_cold_start;
mod bench_warm_profile;
mod bench_warm_timeline;
mod build_python;
mod dify_dropin;
mod elf_resolve;
mod k8s_templates;
mod multiarch;
mod node;
mod oci_image;
mod oci_layout;
mod push;
mod rootfs_tar;
mod runtime_bench;
mod runtime_concurrency;
mod runtime_disconnect;
mod runtime_dns;
mod runtime_exec;
mod runtime_hardening;
mod runtime_health;
mod runtime_hostile;
mod runtime_restart;
mod runtime_rootless;
mod runtime_serve;
mod sbom;
mod seccomp;
mod spec;
mod unpack;
mod verify;
mod warm_pool;
