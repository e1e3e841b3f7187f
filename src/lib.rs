//! prebake: resolve a language runtime and everything it loads at build time, write it as a
//! reproducible rootfs + seccomp profile + OCI image, and run untrusted scripts in it.
//!
//! The stages, each a module that takes the previous stage's value:
//! `spec` (what the user asked for) -> `plan` (every path that goes in, and why) ->
//! `rootfs` (deterministic tarball) + `seccomp` (policy artifacts) + `sbom` (what is in the
//! rootfs, SPDX and CycloneDX) -> the bundle, whose format is `contract` (everything the build
//! writes and the runtime reads) -> `oci`; `build` runs
//! that pipeline. At run time: `runtime` unpacks the bundle once and runs each script in a
//! sandbox. `verify` reads the lock record a build leaves (bundle.json and the SBOM) to
//! compare two builds, or a build with its rebuild. `fsutil`, `ustar`, `hashio`, `dify_config`
//! and `error` are leaves every stage may use.

pub mod build;
pub mod contract;
pub mod dify_config;
pub mod error;
pub mod fsutil;
pub mod hashio;
pub mod oci;
pub mod plan;
pub mod platform;
pub mod rootfs;
pub mod runtime;
pub mod sbom;
pub mod seccomp;
pub mod spec;
pub mod ustar;
pub mod verify;
