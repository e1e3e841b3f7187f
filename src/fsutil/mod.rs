//! Filesystem helpers every stage shares: staging output beside its destination and putting
//! it in place with one rename.

pub mod stage;
