//! Old path of the manifest types and constants, now in [`crate::contract`]; kept so that
//! library users (and `build`, until it imports the contract) keep compiling.

pub use crate::contract::manifest::*;
pub use crate::contract::uids::{SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
