//! Filesystem helpers that both the build and the runtime use, so neither has to import the
//! other's modules for them: resolving a path inside a root without leaving it, and staging
//! output beside its destination to put it in place with one rename.

pub mod in_root;
pub mod stage;
