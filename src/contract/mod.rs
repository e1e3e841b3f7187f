//! The contract between `prebake build` and `runtime`: everything the build writes that the
//! runtime reads. The manifest (`bundle.json`) and its format version, how the rootfs is
//! compressed, the architecture (checked at run time), the BPF file format, the unpack stamp,
//! the device nodes a rootfs may carry, the sandbox uid range.
//!
//! A leaf: it imports nothing of the crate, so the runtime can depend on it without pulling in
//! the planner, and a change here is, by construction, a change of the bundle format.

pub mod arch;
pub mod bpf;
pub mod compression;
pub mod devices;
pub mod manifest;
pub mod stamp;
pub mod uids;

pub use arch::Arch;
pub use compression::Compression;
pub use manifest::{
    BundleError, BundleManifest, Distribution, LanguageInfo, RootfsInfo, SeccompFiles,
    DEFAULT_BUNDLE_DIR, DEFAULT_SANDBOX_ROOT, FORMAT_VERSION, MANIFEST_FILE, TREE_ROOTFS_DIR,
};
pub use uids::{SANDBOX_UID_BASE, SANDBOX_UID_COUNT};
