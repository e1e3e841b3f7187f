//! The in-container runtime: unpack the bundle once, probe what the platform allows, run each
//! script in an isolated process ([`sandbox`], [`child`]) and serve dify-sandbox's HTTP API
//! ([`server`]).

pub mod cgroup;
pub mod child;
pub mod cleanup;
pub mod config;
pub mod listen;
pub mod locate;
pub mod metrics;
pub mod netfiles;
pub mod netns;
pub mod probe;
pub mod ready_record;
pub mod rootless;
pub mod runfilter;
pub mod sandbox;
pub mod server;
pub mod tmpwatch;
pub mod uidpool;
pub mod unpack;
