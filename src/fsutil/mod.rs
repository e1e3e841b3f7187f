//! Filesystem helpers that both the build and the runtime use, so neither has to import the
//! other's modules for them.

pub mod in_root;
