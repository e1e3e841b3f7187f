//! What differs between two lock records, one [`Change`] per entry, as human-readable lines
//! (`Display`) or JSON.

use super::PackageKind;
use serde::Serialize;
use std::fmt;

/// The package a changed file belongs to, and what happened to that package's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: PackageKind,
    pub name: String,
    /// Its version(s) in A and in B (empty on a side where it is not there).
    pub before: Vec<String>,
    pub after: Vec<String>,
}

impl Owner {
    pub fn version_changed(&self) -> bool {
        self.before != self.after
    }
}

/// One difference, entry by entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Change {
    PrebakeVersion {
        before: String,
        after: String,
    },
    SpecDigest {
        before: String,
        after: String,
    },
    SourceDateEpoch {
        before: String,
        after: String,
    },
    /// A language's interpreter path or version; `None` where the language is absent.
    Interpreter {
        language: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// A package added (`before` empty), removed (`after` empty) or of another version.
    Package {
        kind: PackageKind,
        name: String,
        before: Vec<String>,
        after: Vec<String>,
    },
    /// A regular file added, removed or with other content (`None`: absent on that side).
    File {
        path: String,
        before: Option<String>,
        after: Option<String>,
        /// The package that owns it (in B, else A); `None`: no package.
        owner: Option<Owner>,
    },
    /// A rootfs entry that is not a regular file (directory, symlink...) added or removed,
    /// or there for another reason.
    Entry {
        path: String,
        before: Option<String>,
        after: Option<String>,
    },
    Seccomp {
        file: String,
        before: Option<String>,
        after: Option<String>,
    },
    Rootfs {
        before: String,
        after: String,
        /// No file, entry or epoch difference explains it: what differs is what the record
        /// does not list (a symlink's target, a mode, an owner).
        unexplained: bool,
    },
}

/// Every difference between A and B; empty when they are the same.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub a: String,
    pub b: String,
    pub identical: bool,
    pub changes: Vec<Change>,
}

impl Report {
    /// The paths of the files that differ.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().filter_map(|c| match c {
            Change::File { path, .. } => Some(path.as_str()),
            _ => None,
        })
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }
}

fn versions(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::PrebakeVersion { before, after } => {
                write!(
                    f,
                    "prebake version: {before} -> {after} (a different prebake)"
                )
            }
            Change::SpecDigest { before, after } => write!(
                f,
                "spec digest: {before} -> {after} (built from a different spec)"
            ),
            Change::SourceDateEpoch { before, after } => write!(
                f,
                "SOURCE_DATE_EPOCH: {before} -> {after} (every entry's mtime differs)"
            ),
            Change::Interpreter {
                language,
                before,
                after,
            } => write!(
                f,
                "interpreter {language}: {} -> {}",
                before.as_deref().unwrap_or("absent"),
                after.as_deref().unwrap_or("absent")
            ),
            Change::Package {
                kind,
                name,
                before,
                after,
            } => match (before.is_empty(), after.is_empty()) {
                (true, _) => write!(f, "{} {name}: added, {}", kind.as_str(), versions(after)),
                (_, true) => write!(
                    f,
                    "{} {name}: removed, was {}",
                    kind.as_str(),
                    versions(before)
                ),
                _ => write!(
                    f,
                    "{} {name}: version {} -> {} (a newer or older package)",
                    kind.as_str(),
                    versions(before),
                    versions(after)
                ),
            },
            Change::File {
                path,
                before,
                after,
                owner,
            } => {
                let of = match owner {
                    Some(o) => format!("{} {}", o.kind.as_str(), o.name),
                    None => "no package".to_owned(),
                };
                match (before, after) {
                    (None, Some(_)) => write!(f, "file {path}: added ({of})"),
                    (Some(_), None) => write!(f, "file {path}: removed ({of})"),
                    (Some(b), Some(a)) => {
                        write!(
                            f,
                            "file {path}: changed, sha256 {} -> {}, ",
                            short(b),
                            short(a)
                        )?;
                        match owner {
                            Some(o) if o.version_changed() => write!(
                                f,
                                "{of} changed version {} -> {}",
                                versions(&o.before),
                                versions(&o.after)
                            ),
                            Some(o) => write!(
                                f,
                                "{of} is still {}: content changed while its package version did not (tampered or locally modified)",
                                versions(&o.after)
                            ),
                            None => write!(
                                f,
                                "no package, so no package version changed: content changed (tampered or locally modified)"
                            ),
                        }
                    }
                    (None, None) => write!(f, "file {path}"),
                }
            }
            Change::Entry {
                path,
                before,
                after,
            } => match (before, after) {
                (None, Some(why)) => write!(f, "entry {path}: added ({why})"),
                (Some(why), None) => write!(f, "entry {path}: removed (was: {why})"),
                (Some(b), Some(a)) => write!(f, "entry {path}: reason {b:?} -> {a:?}"),
                (None, None) => write!(f, "entry {path}"),
            },
            Change::Seccomp {
                file,
                before,
                after,
            } => match (before, after) {
                (None, Some(_)) => write!(f, "seccomp {file}: added"),
                (Some(_), None) => write!(f, "seccomp {file}: removed"),
                (Some(b), Some(a)) => write!(
                    f,
                    "seccomp {file}: changed, sha256 {} -> {}",
                    short(b),
                    short(a)
                ),
                (None, None) => write!(f, "seccomp {file}"),
            },
            Change::Rootfs {
                before,
                after,
                unexplained,
            } => {
                write!(f, "rootfs sha256 (uncompressed): {before} -> {after}")?;
                if *unexplained {
                    write!(f, " (no file's content differs: a symlink target, mode or owner does; compare the unpacked trees)")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.identical {
            return writeln!(f, "identical: {} and {}", self.a, self.b);
        }
        writeln!(f, "--- {}", self.a)?;
        writeln!(f, "+++ {}", self.b)?;
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        let files = self.files().count();
        writeln!(f, "{} differences ({files} files)", self.changes.len())
    }
}
