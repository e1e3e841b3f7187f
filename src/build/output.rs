//! The output directory: refused when it holds something else, staged beside itself and
//! renamed into place only when complete.

use super::{io, BuildError};
use crate::fsutil::stage::{parent_dir, StagedDir};
use std::path::Path;

/// A fresh hidden directory beside `out` (same filesystem, so the final rename is atomic);
/// dropped, it removes itself and whatever a failed build left in it.
pub(super) fn staging_dir(out: &Path) -> Result<StagedDir, BuildError> {
    let parent = parent_dir(out);
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    StagedDir::new(out, ".prebake-build-").map_err(io(&parent))
}

/// Refuse a non-empty output directory unless forced; a file at that path is never replaced.
pub(super) fn check_out_dir(out: &Path, force: bool) -> Result<(), BuildError> {
    match std::fs::read_dir(out) {
        Ok(mut it) => {
            if it.next().is_none() {
                return Ok(());
            }
            if !force {
                return Err(BuildError::OutExists {
                    path: out.to_path_buf(),
                });
            }
            // --force replaces a previous build, never a directory that happens to be named.
            let previous = out
                .join("bundle")
                .join(crate::contract::MANIFEST_FILE)
                .is_file()
                || out.join("image/oci-layout").is_file();
            if !previous {
                return Err(BuildError::NotPreviousOutput {
                    path: out.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BuildError::Io {
            path: out.to_path_buf(),
            source: e,
        }),
    }
}

/// Put the finished build at `out`: exchanged atomically with a previous build, which is
/// removed only once the new one is in place.
pub(super) fn commit_out_dir(staged: StagedDir, out: &Path) -> Result<(), BuildError> {
    // The staged dir is 0700; the output is for everyone to read.
    if let Some(old) = staged.commit_replace(out, 0o755).map_err(io(out))? {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}
