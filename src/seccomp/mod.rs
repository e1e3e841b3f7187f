//! Seccomp policies: one source of truth per language (data under `templates/seccomp/`),
//! compiled at build time to OCI JSON and BPF; the runtime only loads bytes.

pub mod install;
