//! The output directory: refused when it holds something else, staged beside itself and
//! renamed into place only when complete.

use super::{io, BuildError};
use std::path::{Path, PathBuf};

/// A fresh temporary directory beside `out` (same filesystem, so the final rename is atomic);
/// dropped, it removes itself and whatever a failed build left in it.
pub(super) fn staging_dir(out: &Path) -> Result<tempfile::TempDir, BuildError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    tempfile::Builder::new()
        .prefix(".prebake-build-")
        .tempdir_in(&parent)
        .map_err(io(&parent))
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
                .join(crate::bundle::MANIFEST_FILE)
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

/// Move the finished temp dir to `out`: an old `out` is moved aside first and removed only
/// after the new one is in place.
pub(super) fn commit_out_dir(tmp: tempfile::TempDir, out: &Path) -> Result<(), BuildError> {
    let staged = tmp.keep();
    use std::os::unix::fs::PermissionsExt;
    // tempdir is 0700; the output is for everyone to read.
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(io(&staged))?;
    let old = if out.exists() {
        let aside = staged.with_extension("old");
        std::fs::rename(out, &aside).map_err(io(out))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&staged, out) {
        if let Some(aside) = &old {
            let _ = std::fs::rename(aside, out);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(BuildError::Io {
            path: out.to_path_buf(),
            source: e,
        });
    }
    if let Some(aside) = old {
        std::fs::remove_dir_all(&aside).map_err(io(&aside))?;
    }
    Ok(())
}
