//! The record of a start-up probe that passed, so that a re-start can be healthy at once.
//!
//! `runtime serve` proves each interpreter works before `/health` turns 200: one isolated probe
//! run per language, 25 ms for Python and 55 ms for Node on the default image. On a re-start
//! (a crashed or rescheduled container on the same node, the rootfs already there) nothing
//! that decides that run's outcome has changed: the same runtime build, the same bundle files,
//! the same rootfs, the same platform and limits. This record names all of those; when a start
//! finds its record, the server is ready before probing and the probes run right after, in the
//! background. A probe that then fails removes the record and stops the server, as a failed
//! probe at start does: a broken interpreter still takes the pod down, only some milliseconds
//! later.
//!
//! The record is a claim about health, not about security: every run gets its confinement
//! whatever the record says, so a forged record can at worst delay the discovery of a broken
//! interpreter until the background probe. It lives in the uid-pool lock directory, the
//! runtime's own root-owned state that outlives the container (a `hostPath` on Kubernetes) and
//! is cleared at boot (a tmpfs), which is also why the boot id is part of what it names.
//!
//! What it names is compared as text, so a record is readable by whoever wonders why a start
//! probed: the runtime's ELF build id, the identity (inode, size, mtime and ctime) of
//! `bundle.json`, of each seccomp program file, of the rootfs' stamp and of each interpreter,
//! and the rootfs directory's inode, size and mtime; the rootfs digest; the platform's
//! capabilities and the isolation and limits in force; the kernel release, boot id and
//! effective uid. Any difference means a fresh probe before ready. A runtime without a build
//! id never skips a probe.
//!
//! A new container of the same image on the same node counts as a re-start too. Its engine
//! extracted the image's layers once, at pull; each container sees them through an overlay of
//! its own, which shows a lower file's inode and times but a device number of that mount's,
//! and copies a directory up (a new ctime) when something is first created below it, as a
//! chroot-only run's `/tmp/run-UID` is below the rootfs directory. So identities leave out the
//! device, and the rootfs directory's leaves out the ctime: an unpack, which makes a new rootfs
//! directory, also writes a new stamp, whose ctime is named. With the lock directory shared
//! from the node, as it must be for the uid pool, only a node's first pod of an image probes
//! before it is ready.
//!
//! The directory is cleared only at boot, and a node may start many images (and versions of
//! them) before its next: each start that writes its record removes the others that no start
//! wrote or matched for [`KEEP_UNMATCHED`]. A record that goes too early only costs a probe
//! before ready.

use crate::contract::stamp::STAMP;
use crate::contract::BundleManifest;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a record that no start wrote or matched is kept (see [`ReadyRecord::write`]).
pub const KEEP_UNMATCHED: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The facts a start's probes depend on, as `name = value` lines.
pub struct ReadyRecord {
    path: PathBuf,
    text: String,
}

impl ReadyRecord {
    /// The record for this start in `dir` (created when written), from `facts`. None when this
    /// build of the runtime has no ELF build id: two builds could not be told apart.
    pub fn new(dir: &Path, facts: &[(String, String)]) -> Option<ReadyRecord> {
        let id = own_build_id()?;
        let mut text = format!("runtime build id = {}\n", hex::encode(id));
        for (name, value) in facts {
            let _ = writeln!(text, "{name} = {value}");
        }
        let name = {
            use sha2::{Digest, Sha256};
            hex::encode(&Sha256::digest(text.as_bytes())[..16])
        };
        Some(ReadyRecord {
            path: dir.join("ready").join(name),
            text,
        })
    }

    /// Where the record is (or would be) kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an earlier start with exactly these facts passed its probes. A match makes the
    /// record young again: its age is the time since a start last wrote or matched it.
    pub fn present(&self) -> bool {
        let matched = std::fs::read(&self.path).is_ok_and(|have| have == self.text.as_bytes());
        if matched {
            let _ = std::fs::File::options()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
        matched
    }

    /// Keep the record for later starts: written to a temporary file and renamed, so a crash
    /// never leaves half a record (which would not match anyway, and be rewritten). Then the
    /// records (and temporary files of interrupted writes) that no start wrote or matched for
    /// [`KEEP_UNMATCHED`] are removed.
    pub fn write(&self) -> std::io::Result<()> {
        use std::io::Write;
        let dir = self
            .path
            .parent()
            .expect("the record's path has a directory");
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(self.text.as_bytes())?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        prune(dir, &self.path, SystemTime::now());
        Ok(())
    }

    /// Forget the record (its probe failed after all).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Remove from `dir` the records and temporary files, but `keep`, last modified more than
/// [`KEEP_UNMATCHED`] before `now`. Best effort: another runtime on the node may be removing
/// the same files, and whatever else is in the directory is not ours.
fn prune(dir: &Path, keep: &Path, now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep || !is_ours(&entry.file_name()) {
            continue;
        }
        // Not followed: a link is not a record.
        let stale = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > KEEP_UNMATCHED);
        if stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A record's name (32 lowercase hex digits, see [`ReadyRecord::new`]) or a temporary file of
/// its write (`tempfile`'s `.tmp` prefix).
fn is_ours(name: &OsStr) -> bool {
    name.to_str().is_some_and(|name| {
        name.starts_with(".tmp")
            || (name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    })
}

/// The identity of the file at `path` as one value: a rewritten, replaced or touched file
/// changes it (ctime moves on every change to the inode), "absent" when there is none. No
/// device number: each container's overlay has its own (see the module's comment).
pub fn file_identity(path: &Path) -> String {
    identity(path, true)
}

/// [`file_identity`] with `ctime` or without it.
fn identity(path: &Path, ctime: bool) -> String {
    match std::fs::metadata(path) {
        Ok(m) => {
            let mut id = format!(
                "ino {} size {} mtime {}.{:09}",
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            );
            if ctime {
                let _ = write!(id, " ctime {}.{:09}", m.ctime(), m.ctime_nsec());
            }
            id
        }
        Err(e) => format!("absent ({})", e.kind()),
    }
}

/// What a start's probes depend on, besides the runtime build: the bundle's files, the rootfs
/// in `rootfs`, the kernel, and `platform` (capabilities, isolation, limits, uid: the caller's
/// to say, as `Debug` text).
pub fn start_facts(
    bundle_dir: &Path,
    manifest: &BundleManifest,
    rootfs: &Path,
    platform: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut facts = vec![
        (
            "bundle.json".to_owned(),
            file_identity(&bundle_dir.join("bundle.json")),
        ),
        (
            "rootfs digest".to_owned(),
            manifest.rootfs.sha256_uncompressed.clone(),
        ),
        ("rootfs".to_owned(), rootfs.display().to_string()),
        // Without its ctime, which a container's overlay moves when it copies the directory
        // up; a new rootfs directory comes with a new stamp.
        ("rootfs directory".to_owned(), identity(rootfs, false)),
        (
            "rootfs stamp".to_owned(),
            file_identity(&rootfs.join(STAMP)),
        ),
    ];
    for (name, lang) in &manifest.languages {
        let inside = lang.interpreter.trim_start_matches('/');
        facts.push((
            format!("{name} interpreter {}", lang.interpreter),
            file_identity(&rootfs.join(inside)),
        ));
        for file in lang.seccomp.iter().flat_map(|s| [&s.bpf, &s.bpf_net]) {
            facts.push((
                format!("{name} seccomp {file}"),
                file_identity(&bundle_dir.join(file)),
            ));
        }
    }
    let read = |p: &str| {
        std::fs::read_to_string(p).map_or_else(
            |e| format!("unknown ({})", e.kind()),
            |s| s.trim().to_owned(),
        )
    };
    facts.push(("kernel release".into(), read("/proc/sys/kernel/osrelease")));
    facts.push(("boot id".into(), read("/proc/sys/kernel/random/boot_id")));
    facts.extend(platform);
    facts
}

/// The GNU build id of the running executable (`ld --build-id`, on by default in Debian's
/// toolchain): a different build of the runtime has a different one.
fn own_build_id() -> Option<Vec<u8>> {
    // The notes sit right after the program headers, in the file's first pages.
    let mut head = Vec::with_capacity(16 << 10);
    std::fs::File::open("/proc/self/exe")
        .ok()?
        .take(16 << 10)
        .read_to_end(&mut head)
        .ok()?;
    gnu_build_id(&head)
}

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;

/// The build id note of a little-endian ELF64 file whose first bytes are `elf`.
fn gnu_build_id(elf: &[u8]) -> Option<Vec<u8>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| {
        let v = u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, usize::from(u16_at(0x36)?), u16_at(0x38)?);
    for i in 0..usize::from(phnum) {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_NOTE {
            continue;
        }
        let (start, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
        let notes = elf.get(start..start.checked_add(size)?)?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let word = |o: usize| u32::from_le_bytes(notes[o..o + 4].try_into().unwrap());
            let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8));
            let name_at = at + 12;
            let desc_at = name_at + usize::try_from(namesz).ok()?.next_multiple_of(4);
            let desc_end = desc_at + usize::try_from(descsz).ok()?;
            if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + 4) == Some(b"GNU\0") {
                return notes.get(desc_at..desc_end).map(<[u8]>::to_vec);
            }
            at = desc_end.next_multiple_of(4);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_build_id_readelf_shows() {
        // The test binary is linked like the runtime; readelf is binutils', on every machine
        // with a C toolchain (the ELF fixtures need one anyway).
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output()
            .expect("readelf (binutils) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let want = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("the test binary has a build id");
        let head = std::fs::read(&exe).unwrap();
        assert_eq!(hex::encode(gnu_build_id(&head).unwrap()), want);
        assert_eq!(hex::encode(own_build_id().unwrap()), want);
    }

    #[test]
    fn no_build_id_in_other_bytes() {
        assert_eq!(gnu_build_id(b"#!/bin/sh\n"), None);
        assert_eq!(gnu_build_id(b"\x7fELF\x02\x01"), None);
        let mut truncated = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        truncated.truncate(0x40);
        assert_eq!(gnu_build_id(&truncated), None);
    }

    #[test]
    fn a_record_matches_only_the_same_facts() {
        let dir = tempfile::tempdir().unwrap();
        let facts = |v: &str| vec![("rootfs".to_owned(), v.to_owned())];
        let a = ReadyRecord::new(dir.path(), &facts("one")).unwrap();
        assert!(!a.present());
        a.write().unwrap();
        assert!(a.present());
        assert!(ReadyRecord::new(dir.path(), &facts("one"))
            .unwrap()
            .present());
        let b = ReadyRecord::new(dir.path(), &facts("two")).unwrap();
        assert_ne!(a.path(), b.path());
        assert!(!b.present());
        // A record whose text differs under the same name (a hash collision, or an edit) is
        // not a match.
        std::fs::write(a.path(), "runtime build id = 00\n").unwrap();
        assert!(!a.present());
        a.write().unwrap();
        a.remove();
        assert!(!a.present());
    }

    /// Set `path`'s mtime to `age` ago.
    fn age(path: &Path, age: Duration) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    #[test]
    fn a_start_that_writes_its_record_removes_those_unmatched_for_a_week() {
        let dir = tempfile::tempdir().unwrap();
        let facts = |v: &str| vec![("rootfs".to_owned(), v.to_owned())];
        let stale = ReadyRecord::new(dir.path(), &facts("last month")).unwrap();
        let recent = ReadyRecord::new(dir.path(), &facts("yesterday")).unwrap();
        stale.write().unwrap();
        recent.write().unwrap();
        let ready = stale.path().parent().unwrap().to_owned();
        let interrupted = ready.join(".tmpAbC123");
        let foreign = ready.join("notes.txt");
        let upper = ready.join("ABCDEF0123456789ABCDEF0123456789");
        for (path, days) in [
            (stale.path(), 30),
            (recent.path(), 1),
            (interrupted.as_path(), 8),
            (foreign.as_path(), 30),
            (upper.as_path(), 30),
        ] {
            if !path.exists() {
                std::fs::write(path, "x").unwrap();
            }
            age(path, Duration::from_secs(days * 24 * 60 * 60));
        }
        let own = ReadyRecord::new(dir.path(), &facts("today")).unwrap();
        own.write().unwrap();
        assert!(own.present());
        assert!(!stale.path().exists(), "unmatched for 30 days: removed");
        assert!(!interrupted.exists(), "an old temporary file: removed");
        assert!(recent.present(), "unmatched for a day: kept");
        assert!(
            foreign.exists() && upper.exists(),
            "not a record's name: left alone"
        );
    }

    #[test]
    fn a_matched_record_is_young_again() {
        let dir = tempfile::tempdir().unwrap();
        let facts = |v: &str| vec![("rootfs".to_owned(), v.to_owned())];
        let used = ReadyRecord::new(dir.path(), &facts("in use")).unwrap();
        used.write().unwrap();
        age(used.path(), Duration::from_secs(30 * 24 * 60 * 60));
        // A pod of that image starts again: its start matches the record.
        assert!(used.present());
        let age = SystemTime::now()
            .duration_since(std::fs::metadata(used.path()).unwrap().modified().unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "still {age:?} old");
        ReadyRecord::new(dir.path(), &facts("another image"))
            .unwrap()
            .write()
            .unwrap();
        assert!(used.present(), "a record matched today was removed");
    }

    #[test]
    fn a_changed_file_has_another_identity() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bundle.json");
        std::fs::write(&f, "{}").unwrap();
        let before = file_identity(&f);
        assert_eq!(before, file_identity(&f));
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(&f, "{}").unwrap();
        assert_ne!(before, file_identity(&f));
        assert!(file_identity(&dir.path().join("none")).starts_with("absent"));
    }
}
