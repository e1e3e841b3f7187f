//! The in-container runtime (stub).

pub mod unpack;
