//! Installed distributions: their `*.dist-info` metadata, the requested ones with their
//! installed requirements, and the files each installed per its `RECORD`.

use super::PythonError;
use crate::plan::{EntryKind, Plan, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One installed distribution.
#[derive(Debug, Clone)]
pub struct Dist {
    pub name: String,
    pub version: String,
    pub dist_info: PathBuf,
    /// Names of distributions it requires (no extras, markers not evaluated: an installed
    /// requirement is taken, an absent one skipped, so this is a safe superset).
    pub requires: Vec<String>,
}

pub use crate::spec::normalize_package_name as normalize_name;

/// Every `*.dist-info` in the site-packages directories, by normalized name (the first
/// site-packages that has it wins, as for import).
pub fn installed_dists(site_packages: &[PathBuf]) -> Result<BTreeMap<String, Dist>, PythonError> {
    let mut out = BTreeMap::new();
    for sp in site_packages {
        let mut names: Vec<PathBuf> = std::fs::read_dir(sp)
            .map_err(|source| PythonError::Io {
                path: sp.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "dist-info") && p.is_dir())
            .collect();
        names.sort();
        for dist_info in names {
            let dist = read_metadata(&dist_info)?;
            out.entry(normalize_name(&dist.name)).or_insert(dist);
        }
    }
    Ok(out)
}

/// Every distribution whose `*.dist-info/METADATA` sits in a `site-packages` or
/// `dist-packages` directory of the plan, however it got there (a selected package, or a spec
/// path such as dify's `python_lib_path` naming a whole site-packages).
pub fn dists_in_plan(plan: &Plan) -> Result<Vec<Dist>, PythonError> {
    let mut out = Vec::new();
    for (root_path, entry) in &plan.entries {
        let Some(dist_info) = root_path.strip_suffix("/METADATA") else {
            continue;
        };
        let in_site_packages = Path::new(dist_info)
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "site-packages" || n == "dist-packages");
        if !dist_info.ends_with(".dist-info") || !in_site_packages {
            continue;
        }
        if let EntryKind::File {
            source: Source::Host(host),
        } = &entry.kind
        {
            if let Some(dir) = host.parent() {
                out.push(read_metadata(dir)?);
            }
        }
    }
    Ok(out)
}

fn read_metadata(dist_info: &Path) -> Result<Dist, PythonError> {
    let path = dist_info.join("METADATA");
    let text = std::fs::read_to_string(&path).map_err(|source| PythonError::Io {
        path: path.clone(),
        source,
    })?;
    let mut name = None;
    let mut version = None;
    let mut requires = Vec::new();
    // Headers end at the first blank line; the body is the long description.
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Requires-Dist:") {
            let (req, marker) = v.split_once(';').unwrap_or((v, ""));
            if marker.contains("extra") {
                continue;
            }
            let req_name: String = req
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            if !req_name.is_empty() {
                requires.push(normalize_name(&req_name));
            }
        }
    }
    let bad = |m: &str| PythonError::BadDistInfo {
        path: path.clone(),
        message: m.to_owned(),
    };
    Ok(Dist {
        name: name.ok_or_else(|| bad("no Name: header"))?,
        version: version.ok_or_else(|| bad("no Version: header"))?,
        dist_info: dist_info.to_path_buf(),
        requires,
    })
}

/// The requested distributions and, transitively, their installed requirements.
pub fn select_dists(
    installed: &BTreeMap<String, Dist>,
    wanted: &[String],
    searched: &[PathBuf],
) -> Result<Vec<Dist>, PythonError> {
    let mut chosen = BTreeSet::new();
    let mut queue: Vec<String> = Vec::new();
    for w in wanted {
        let n = normalize_name(w);
        if !installed.contains_key(&n) {
            return Err(PythonError::NotInstalled {
                name: w.clone(),
                searched: searched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        queue.push(n);
    }
    while let Some(n) = queue.pop() {
        if !chosen.insert(n.clone()) {
            continue;
        }
        for r in &installed[&n].requires {
            if installed.contains_key(r) && !chosen.contains(r) {
                queue.push(r.clone());
            }
        }
    }
    Ok(chosen.into_iter().map(|n| installed[&n].clone()).collect())
}

/// The files a distribution installed inside its site-packages, from `RECORD`: absolute host
/// paths. Entries outside site-packages (console scripts in `bin/`) and bytecode are skipped:
/// the sandbox runs no scripts and we compile our own bytecode.
pub fn record_files(dist: &Dist) -> Result<Vec<PathBuf>, PythonError> {
    let record = dist.dist_info.join("RECORD");
    let site = dist
        .dist_info
        .parent()
        .expect("dist-info has a parent")
        .to_path_buf();
    let text = std::fs::read_to_string(&record).map_err(|source| PythonError::Io {
        path: record.clone(),
        source,
    })?;
    let mut files = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rel = parse_record_path(line).ok_or_else(|| PythonError::BadDistInfo {
            path: record.clone(),
            message: format!("line {}: cannot parse `{line}`", i + 1),
        })?;
        let p = Path::new(&rel);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || rel.contains("__pycache__/")
            || rel.ends_with(".pyc")
        {
            continue;
        }
        files.push(site.join(p));
    }
    Ok(files)
}

/// First CSV field of a RECORD line (quoted when it contains a comma).
fn parse_record_path(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        line.split(',').next().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines() {
        assert_eq!(
            parse_record_path("numpy/__init__.py,sha256=x,12").as_deref(),
            Some("numpy/__init__.py")
        );
        assert_eq!(
            parse_record_path("\"a,b.py\",sha256=x,1").as_deref(),
            Some("a,b.py")
        );
        assert_eq!(parse_record_path("\"unterminated"), None);
    }
}
