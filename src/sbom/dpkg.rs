//! The host's dpkg database: which installed Debian package owns a file, its version and
//! architecture (`/var/lib/dpkg/status`, `/var/lib/dpkg/info/*.list`), and the license its
//! machine-readable `/usr/share/doc/NAME/copyright` declares.

use super::license::{self, License};
use super::{purl_escape, Component, Ecosystem, SbomError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One installed package (`Status: install ok installed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// From a DEP-5 copyright file only: free-form ones are not machine-readable.
    pub license: Option<License>,
    /// The `Source:` field (`glibc`, `bzip2 (1.0.8-5)`) when it is not the package itself:
    /// security trackers list vulnerabilities by source package.
    pub source: Option<String>,
    /// The host's distribution (`/etc/os-release`): `ID` and `ID-VERSION_ID` (`debian`,
    /// `debian-12`), which vulnerability databases key Debian's fixes on.
    pub distro: Option<(String, String)>,
    /// `Maintainer:` (`GNU Libc Maintainers <debian-glibc@lists.debian.org>`): who supplies
    /// the package, as SBOM minimum-element guidance (NTIA) asks.
    pub maintainer: Option<String>,
}

/// The database, read once per build.
#[derive(Debug, Default)]
pub struct Dpkg {
    pub packages: Vec<DebPackage>,
    /// Path as dpkg lists it -> index into `packages`.
    owners: BTreeMap<String, usize>,
}

/// The directories `/usr` absorbed in Debian's usrmerge: dpkg may list `/lib/x.so` for what is
/// `/usr/lib/x.so` on disk (and the plan holds the real, `/usr`, spelling).
const MERGED: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

impl Dpkg {
    /// Read the database under `root` (`/` on the build host). A host without dpkg has no
    /// packages: every file is then reported as belonging to none.
    pub fn load(root: &Path) -> Result<Dpkg, SbomError> {
        let admin = root.join("var/lib/dpkg");
        let status_path = admin.join("status");
        let status = match std::fs::read_to_string(&status_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Dpkg::default()),
            Err(source) => return Err(SbomError::io(&status_path, source)),
        };
        let mut packages = parse_status(&status);
        let distro = os_release(root);
        for p in &mut packages {
            p.distro.clone_from(&distro);
            let copyright = root.join("usr/share/doc").join(&p.name).join("copyright");
            p.license = match std::fs::read_to_string(&copyright) {
                Ok(text) => dep5_license(&text),
                // Not every package ships one (or the doc dir is excluded): no license then.
                Err(_) => None,
            };
        }
        packages.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
        let mut db = Dpkg {
            packages,
            owners: BTreeMap::new(),
        };
        let info = admin.join("info");
        let mut lists: Vec<PathBuf> = match std::fs::read_dir(&info) {
            Ok(d) => d
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "list"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(SbomError::io(&info, source)),
        };
        // Sorted, so a path two packages list (a shared directory, a diverted file) always
        // goes to the same one.
        lists.sort();
        for list in lists {
            let Some(index) = list
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|stem| db.package_of_list(stem))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&list).map_err(|e| SbomError::io(&list, e))?;
            for line in text.lines().filter(|l| l.starts_with('/')) {
                db.owners.entry(line.to_owned()).or_insert(index);
            }
        }
        Ok(db)
    }

    /// `NAME` or `NAME:ARCH` (the file stem of a `.list`) -> the installed package.
    fn package_of_list(&self, stem: &str) -> Option<usize> {
        let (name, arch) = match stem.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (stem, None),
        };
        self.packages
            .iter()
            .position(|p| p.name == name && arch.map_or(true, |a| a == p.arch))
    }

    /// The package that installed `path`, under either usrmerge spelling.
    pub fn owner(&self, path: &str) -> Option<usize> {
        if let Some(i) = self.owners.get(path) {
            return Some(*i);
        }
        let alternate = match path.strip_prefix("/usr") {
            Some(rest) if is_merged(rest) => rest.to_owned(),
            _ if is_merged(path) => format!("/usr{path}"),
            _ => return None,
        };
        self.owners.get(&alternate).copied()
    }
}

fn is_merged(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    path.starts_with('/') && MERGED.contains(&first)
}

impl DebPackage {
    /// The package as an SBOM component: `pkg:deb/debian/NAME@VERSION?arch=ARCH`, with the
    /// `distro` and `upstream` (source package) qualifiers scanners such as grype and trivy
    /// match Debian's security data by (qualifiers in key order, as purl wants).
    pub fn component(&self) -> Component {
        let (namespace, distro) = match &self.distro {
            Some((id, versioned)) => (id.as_str(), Some(versioned)),
            None => ("debian", None),
        };
        let mut purl = format!(
            "pkg:deb/{}/{}@{}?arch={}",
            purl_escape(namespace),
            purl_escape(&self.name),
            purl_escape(&self.version),
            purl_escape(&self.arch)
        );
        if let Some(d) = distro {
            purl.push_str(&format!("&distro={}", purl_escape(d)));
        }
        if let Some(src) = &self.source {
            // `bzip2 (1.0.8-5)` -> `bzip2@1.0.8-5`, as syft writes it.
            let upstream = match src.split_once(" (") {
                Some((name, version)) => format!("{name}@{}", version.trim_end_matches(')')),
                None => src.clone(),
            };
            purl.push_str(&format!("&upstream={}", purl_escape(&upstream)));
        }
        Component {
            ecosystem: Ecosystem::Deb,
            name: self.name.clone(),
            version: self.version.clone(),
            purl,
            license: self.license.clone(),
            location: String::new(),
            supplier: self.maintainer.as_deref().map(split_maintainer),
            files: Vec::new(),
        }
    }
}

/// `Name <email>` -> (name, email). Parentheses go: SPDX's actor syntax keeps them for the
/// email.
fn split_maintainer(m: &str) -> (String, Option<String>) {
    let (name, email) = match m.split_once('<') {
        Some((n, rest)) => (n, rest.split_once('>').map(|(e, _)| e.trim().to_owned())),
        None => (m, None),
    };
    let name: String = name.chars().filter(|c| !matches!(c, '(' | ')')).collect();
    (name.trim().to_owned(), email.filter(|e| !e.is_empty()))
}

/// `(ID, ID-VERSION_ID)` from the os-release file under `root`, if it names both.
fn os_release(root: &Path) -> Option<(String, String)> {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|f| std::fs::read_to_string(root.join(f)).ok())?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    };
    let id = field("ID")?;
    let version = field("VERSION_ID")?;
    Some((id.clone(), format!("{id}-{version}")))
}

/// The installed packages of a `status` file.
fn parse_status(text: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(version), Some(arch)) = (
            installed,
            field("Package"),
            field("Version"),
            field("Architecture"),
        ) {
            out.push(DebPackage {
                source: field("Source").filter(|s| *s != name),
                name,
                version,
                arch,
                license: None,
                distro: None,
                maintainer: field("Maintainer"),
            });
        }
    }
    out
}

/// The licenses a DEP-5 copyright file names (every `License:` short name, each once), as one
/// expression; `None` for a free-form file.
fn dep5_license(text: &str) -> Option<License> {
    let first = text.lines().next()?;
    if !first.starts_with("Format:") {
        return None;
    }
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("License:"))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    license::all_of(&names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_at(status: &str, lists: &[(&str, &str)]) -> (tempfile::TempDir, Dpkg) {
        let root = tempfile::tempdir().unwrap();
        let info = root.path().join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(root.path().join("var/lib/dpkg/status"), status).unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
        )
        .unwrap();
        for (name, text) in lists {
            std::fs::write(info.join(format!("{name}.list")), text).unwrap();
        }
        let db = Dpkg::load(root.path()).unwrap();
        (root, db)
    }

    const STATUS: &str = "Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nMaintainer: Foo Team (libs) <foo@example.org>\nSource: foo (2.0-3)\nVersion: 1:2.0-3+deb12u1\n\nPackage: gone\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1\n\nPackage: tool\nStatus: install ok installed\nArchitecture: all\nVersion: 5\n";

    #[test]
    fn owners_follow_both_usrmerge_spellings_and_skip_removed_packages() {
        let (_root, db) = db_at(
            STATUS,
            &[
                (
                    "libfoo1:amd64",
                    "/.\n/lib\n/lib/x86_64-linux-gnu/libfoo.so.1\n",
                ),
                ("tool", "/usr/bin/tool\n"),
                ("gone", "/etc/gone.conf\n"),
            ],
        );
        let names: Vec<&str> = db.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libfoo1", "tool"]);
        let foo = db.owner("/usr/lib/x86_64-linux-gnu/libfoo.so.1").unwrap();
        assert_eq!(db.packages[foo].version, "1:2.0-3+deb12u1");
        assert_eq!(
            db.packages[foo].component().supplier,
            Some(("Foo Team libs".into(), Some("foo@example.org".into())))
        );
        assert_eq!(
            db.packages[foo].component().purl,
            "pkg:deb/debian/libfoo1@1%3A2.0-3%2Bdeb12u1?arch=amd64&distro=debian-12&upstream=foo%402.0-3"
        );
        assert_eq!(db.owner("/lib/x86_64-linux-gnu/libfoo.so.1"), Some(foo));
        let tool = db.owner("/usr/bin/tool").unwrap();
        assert_eq!(db.owner("/bin/tool"), Some(tool));
        assert_eq!(db.owner("/etc/gone.conf"), None);
        assert_eq!(db.owner("/usr/share/tool"), None);
    }

    #[test]
    fn a_host_without_dpkg_has_no_packages() {
        let root = tempfile::tempdir().unwrap();
        let db = Dpkg::load(root.path()).unwrap();
        assert!(db.packages.is_empty());
        assert_eq!(db.owner("/usr/lib/x86_64-linux-gnu/libc.so.6"), None);
    }

    #[test]
    fn only_a_dep5_copyright_gives_a_license() {
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+\n\nFiles: lib/*\nLicense: LGPL-2.1+ or BSD-3-clause\n text\n\nLicense: GPL-2+\n full text\n";
        let l = dep5_license(dep5).unwrap();
        assert_eq!(
            l.expression,
            "GPL-2.0-or-later AND (LGPL-2.1-or-later OR BSD-3-Clause)"
        );
        assert_eq!(
            dep5_license("This is the Debian prepackaged version\n"),
            None
        );
    }
}
