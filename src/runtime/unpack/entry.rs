//! One archive member as the extractor sees it: its checked name, type, neutralized mode,
//! mtime, link target and device numbers, read from the tar header before its data.

use super::error::UnpackError;
use super::names::{split_name, Comps};
use std::io::Read;

/// Everything the extractor needs from one archive member, read before its data.
/// (Not `rootfs::header::Member`, which is what the tar writer emits.)
pub(super) struct ArchiveEntry {
    pub(super) name: String,
    pub(super) comps: Comps,
    pub(super) kind: tar::EntryType,
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) link: Option<Vec<u8>>,
    /// (major, minor) of a character device entry.
    pub(super) device: (u32, u32),
}

impl ArchiveEntry {
    pub(super) fn read<R: Read>(
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<ArchiveEntry, UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason: String| UnpackError::Refused {
            entry: name.clone(),
            reason,
        };
        let comps = split_name(&raw).map_err(refuse)?;
        let h = entry.header();
        let mode = h
            .mode()
            .map_err(|e| refuse(format!("unreadable mode: {e}")))?;
        let mtime = h.mtime().unwrap_or(0);
        let mut mtime =
            i64::try_from(mtime).map_err(|_| refuse(format!("mtime {mtime} is out of range")))?;
        let kind = h.entry_type();
        let device = (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        );
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        // A PAX mtime (possibly fractional) overrides the header's.
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if ext.key_bytes() == b"mtime" {
                    let v = String::from_utf8_lossy(ext.value_bytes()).into_owned();
                    if let Ok(secs) = v.split('.').next().unwrap_or("").parse::<i64>() {
                        mtime = secs;
                    }
                }
            }
        }
        if mode & 0o6000 != 0 {
            return Err(refuse(format!(
                "mode {mode:04o} has the setuid or setgid bit"
            )));
        }
        // Neutralized, not refused (module docs): only the top-level tmp may stay sticky and
        // writable by others.
        let mode = if comps == [b"tmp".to_vec()] {
            mode & 0o1777
        } else {
            mode & 0o755
        };
        Ok(ArchiveEntry {
            name,
            comps,
            kind,
            mode,
            mtime,
            link,
            device,
        })
    }
}

/// Whether `comps` and `device` name one of the harmless nodes a rootfs may carry.
pub(super) fn is_safe_device(comps: &[Vec<u8>], device: (u32, u32)) -> bool {
    let path: Vec<u8> = comps.iter().fold(Vec::new(), |mut acc, c| {
        acc.push(b'/');
        acc.extend_from_slice(c);
        acc
    });
    crate::contract::devices::SAFE_DEVICES
        .iter()
        .any(|(p, major, minor)| p.as_bytes() == path.as_slice() && device == (*major, *minor))
}
