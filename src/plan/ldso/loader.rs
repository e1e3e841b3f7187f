//! The loader emulation: one process's link maps, filled the way `_dl_map_object` and
//! `_dl_map_object_deps` fill them (RPATH inheritance, RUNPATH, the cache, the default
//! directories, glibc-hwcaps variants, `$ORIGIN`).

use super::arch::X86_64_HWCAPS;
use super::cache::HWCAP_EXTENSION;
use super::resolver::{
    Closure, Found, Lookup, MissingLibrary, ResolveError, ResolvedLibrary, Resolver, Target,
    TargetDirs,
};
use crate::plan::elf::{ElfClass, ElfInfo};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// The directory of `p` (`/` for `/` itself): an object's `$ORIGIN`.
fn parent_of(p: &Path) -> PathBuf {
    p.parent().unwrap_or(Path::new("/")).to_path_buf()
}

/// See [`Resolver::closure`].
pub(super) fn closure(
    r: &Resolver,
    main_executable: Option<&Path>,
    objects: &[PathBuf],
) -> Result<Closure, ResolveError> {
    let main = match main_executable {
        Some(m) => r.open_object(m)?,
        None => None,
    };
    closure_from(r, main, main_executable, objects)
}

/// See [`Resolver::closure_of_outside`].
pub(super) fn closure_of_outside(r: &Resolver, host: &Path) -> Result<Closure, ResolveError> {
    let main = r.open_outside(host)?;
    closure_from(r, main, None, &[])
}

fn closure_from(
    r: &Resolver,
    main: Option<Found>,
    main_executable: Option<&Path>,
    objects: &[PathBuf],
) -> Result<Closure, ResolveError> {
    let mut st = State {
        r,
        objs: Vec::new(),
        by_id: HashMap::new(),
        by_name: HashMap::new(),
        main: None,
        out: Closure::default(),
        dirs: HashMap::new(),
        queue: VecDeque::new(),
    };
    {
        if let Some(found) = main {
            // $ORIGIN of the main program comes from /proc/self/exe: symlinks resolved.
            let origin = parent_of(&found.real);
            let idx = st.add(found, None, origin, None);
            st.main = Some(idx);
            st.note_interp(idx);
            // ld.so is already mapped under its PT_INTERP name and its SONAME, so libc's
            // DT_NEEDED on ld-linux*.so.2 reuses it instead of searching.
            if let Some(interp) = st.objs[idx].info.interp.clone() {
                if let Ok(Lookup::Found(f)) =
                    r.open_verify(Path::new(&interp), Target::of(&st.objs[idx].info))
                {
                    let origin = parent_of(&f.path);
                    let i = st.add(f, None, origin, Some(interp.clone()));
                    st.queue.retain(|&q| q != i);
                }
            }
            st.run()?;
        }
    }
    for p in objects {
        if Some(p.as_path()) == main_executable {
            continue;
        }
        let Some(found) = r.open_object(p)? else {
            continue; // not ELF
        };
        if st.by_id.contains_key(&found.id) {
            continue; // already in the process (a dependency, or listed twice)
        }
        // dlopen'ed: the start of its own loader chain; $ORIGIN is the directory of the
        // path it was opened by.
        let origin = parent_of(&found.path);
        let idx = st.add(found, None, origin, None);
        st.note_interp(idx);
        st.run()?;
    }
    Ok(st.out)
}

struct Loaded {
    path: PathBuf,
    info: ElfInfo,
    origin: PathBuf,
    /// The object that first caused this one to be loaded (glibc's `l_loader`).
    loader: Option<usize>,
}

struct State<'r> {
    r: &'r Resolver,
    objs: Vec<Loaded>,
    by_id: HashMap<(u64, u64), usize>,
    /// Every name an object answers to: DT_NEEDED names it was loaded under, SONAME, path.
    by_name: HashMap<String, usize>,
    main: Option<usize>,
    out: Closure,
    dirs: HashMap<(ElfClass, u16), TargetDirs>,
    queue: VecDeque<usize>,
}

#[derive(Default)]
struct Search {
    searched: Vec<PathBuf>,
    rejected: Vec<(PathBuf, String)>,
    variants: Vec<(Found, String)>,
}

impl Search {
    fn searched(&mut self, p: &Path) {
        if !self.searched.iter().any(|s| s == p) {
            self.searched.push(p.to_path_buf());
        }
    }
}

impl State<'_> {
    fn add(
        &mut self,
        f: Found,
        loader: Option<usize>,
        origin: PathBuf,
        name: Option<String>,
    ) -> usize {
        let idx = self.objs.len();
        self.by_id.insert(f.id, idx);
        let mut names: Vec<String> = name.into_iter().collect();
        names.extend(f.info.soname.clone());
        names.push(f.path.to_string_lossy().into_owned());
        for n in names {
            self.by_name.entry(n).or_insert(idx);
        }
        self.objs.push(Loaded {
            path: f.path,
            info: f.info,
            origin,
            loader,
        });
        self.queue.push_back(idx);
        idx
    }

    fn note_interp(&mut self, idx: usize) {
        if let Some(i) = &self.objs[idx].info.interp {
            let p = PathBuf::from(i);
            if !self.out.interpreters.contains(&p) {
                self.out.interpreters.push(p);
            }
        }
    }

    fn target_dirs(&mut self, t: Target) -> TargetDirs {
        let r = self.r;
        self.dirs
            .entry((t.class, t.machine))
            .or_insert_with(|| r.target_dirs(t.class, t.machine))
            .clone()
    }

    /// Breadth-first over the queue, like `_dl_map_object_deps`.
    fn run(&mut self) -> Result<(), ResolveError> {
        while let Some(idx) = self.queue.pop_front() {
            let needed = self.objs[idx].info.needed.clone();
            for name in needed {
                self.map_object(&name, idx)?;
            }
        }
        Ok(())
    }

    /// Expand the dynamic string tokens of one RPATH/RUNPATH list for object `owner`.
    fn expand(&mut self, owner: usize, runpath: bool) -> Vec<PathBuf> {
        let t = Target::of(&self.objs[owner].info);
        let td = self.target_dirs(t);
        let o = &self.objs[owner];
        let list = if runpath {
            &o.info.runpath
        } else {
            &o.info.rpath
        };
        let origin = o.origin.to_string_lossy();
        let mut out: Vec<PathBuf> = Vec::new();
        for elem in list {
            // Empty elements mean the working directory, unknowable at build time.
            if elem.is_empty() {
                continue;
            }
            let s = substitute(elem, &origin, &td.lib, &td.platform);
            if !s.starts_with('/') {
                continue;
            }
            let trimmed = s.trim_end_matches('/');
            let d = PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed });
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    fn hwcaps_subdirs(&self, dir: &Path, x86_64: bool) -> Vec<String> {
        if x86_64 {
            return X86_64_HWCAPS.iter().map(|s| s.to_string()).collect();
        }
        // Other architectures: whatever the distro ships (glibc picks by CPU at run time).
        let base = dir.join("glibc-hwcaps");
        let Ok(Some(real)) = self.r.resolve_in_root(&base) else {
            return Vec::new();
        };
        let mut subs: Vec<String> = std::fs::read_dir(self.r.host_path(&real))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        subs.sort();
        subs.reverse();
        subs
    }

    /// One directory of a search list, glibc-hwcaps subdirectories first.
    fn try_dir(
        &mut self,
        dir: &Path,
        name: &str,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        s.searched(dir);
        let x86_64 = self.target_dirs(t).x86_64;
        for sub in self.hwcaps_subdirs(dir, x86_64) {
            let p = dir.join("glibc-hwcaps").join(&sub).join(name);
            match self.r.open_verify(&p, t)? {
                Lookup::Found(f) => {
                    if !s.variants.iter().any(|(v, _)| v.id == f.id) {
                        s.variants.push((f, sub));
                    }
                }
                Lookup::Rejected(p, why) => s.rejected.push((p, why)),
                Lookup::Absent => {}
            }
        }
        match self.r.open_verify(&dir.join(name), t)? {
            Lookup::Found(f) => Ok(Some(f)),
            Lookup::Rejected(p, why) => {
                s.rejected.push((p, why));
                Ok(None)
            }
            Lookup::Absent => Ok(None),
        }
    }

    fn try_list(
        &mut self,
        dirs: &[PathBuf],
        name: &str,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        for d in dirs {
            if let Some(f) = self.try_dir(d, name, t, s)? {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }

    fn try_cache(
        &mut self,
        name: &str,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        let r = self.r;
        let Some(cache_path) = &r.cache_path else {
            // No ld.so.cache in the sysroot: behave as if ldconfig had indexed ld.so.conf.
            let dirs = r.conf_dirs.clone();
            return self.try_list(&dirs, name, t, s);
        };
        s.searched(cache_path);
        let mut base = None;
        for e in r.cache.lookup(name, t.class, t.machine) {
            if e.hwcap & HWCAP_EXTENSION != 0 {
                let p = PathBuf::from(&e.value);
                let sub = hwcaps_name_of(&p).unwrap_or_else(|| format!("{:#x}", e.hwcap));
                match r.open_verify(&p, t)? {
                    Lookup::Found(f) if !s.variants.iter().any(|(v, _)| v.id == f.id) => {
                        s.variants.push((f, sub))
                    }
                    Lookup::Rejected(p, why) => s.rejected.push((p, why)),
                    _ => {}
                }
            } else if base.is_none() {
                base = Some(PathBuf::from(&e.value));
            }
        }
        // ld.so takes the first acceptable entry and only that one; if it cannot be opened
        // the search goes on in the default directories.
        match base {
            Some(p) => match r.open_verify(&p, t)? {
                Lookup::Found(f) => Ok(Some(f)),
                Lookup::Rejected(p, why) => {
                    s.rejected.push((p, why));
                    Ok(None)
                }
                Lookup::Absent => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// `_dl_map_object(loader = objs[req], name)`.
    fn map_object(&mut self, name: &str, req: usize) -> Result<(), ResolveError> {
        if self.by_name.contains_key(name) {
            return Ok(()); // already loaded under this name / SONAME / path
        }
        let t = Target::of(&self.objs[req].info);
        let mut s = Search::default();
        let found = if name.contains('/') {
            let p = PathBuf::from(name);
            if p.is_absolute() {
                s.searched(&p);
                match self.r.open_verify(&p, t)? {
                    Lookup::Found(f) => Some(f),
                    Lookup::Rejected(p, why) => {
                        s.rejected.push((p, why));
                        None
                    }
                    Lookup::Absent => None,
                }
            } else {
                s.rejected.push((
                    p,
                    "relative path: ld.so resolves it against the working directory at run time"
                        .into(),
                ));
                None
            }
        } else {
            self.search(name, req, t, &mut s)?
        };

        let needed_by = self.objs[req].path.clone();
        let mut chosen = Vec::new();
        if let Some(f) = found {
            chosen.push((f, None));
        } else if !s.variants.is_empty() {
            tracing::warn!(
                "{name} (needed by {}) exists only in glibc-hwcaps subdirectories; it loads only on CPUs that support them",
                needed_by.display()
            );
        }
        chosen.extend(s.variants.drain(..).map(|(f, sub)| (f, Some(sub))));
        if chosen.is_empty() {
            self.out.missing.push(MissingLibrary {
                name: name.to_owned(),
                needed_by,
                searched: s.searched,
                rejected: s.rejected,
            });
            return Ok(());
        }
        for (f, hwcaps) in chosen {
            if !self.out.libraries.iter().any(|l| l.path == f.path) {
                self.out.libraries.push(ResolvedLibrary {
                    name: name.to_owned(),
                    path: f.path.clone(),
                    needed_by: needed_by.clone(),
                    real: f.real.clone(),
                    hwcaps,
                });
            }
            match self.by_id.get(&f.id) {
                // Same file under another path: ld.so compares dev/ino and reuses the map.
                Some(&i) => {
                    self.by_name.entry(name.to_owned()).or_insert(i);
                }
                None => {
                    let origin = parent_of(&f.path);
                    self.add(f, Some(req), origin, Some(name.to_owned()));
                }
            }
        }
        Ok(())
    }

    fn search(
        &mut self,
        name: &str,
        req: usize,
        t: Target,
        s: &mut Search,
    ) -> Result<Option<Found>, ResolveError> {
        let requester = &self.objs[req].info;
        let (req_has_runpath, nodeflib) = (requester.has_runpath, requester.nodeflib);
        // (1) DT_RPATH of the requester and its loaders, then of the executable; skipped
        // entirely when the requester has DT_RUNPATH.
        if !req_has_runpath {
            let mut did_main = false;
            let mut l = Some(req);
            while let Some(i) = l {
                // An object with DT_RUNPATH has its DT_RPATH ignored even as a loader.
                if !self.objs[i].info.has_runpath && !self.objs[i].info.rpath.is_empty() {
                    let dirs = self.expand(i, false);
                    if let Some(f) = self.try_list(&dirs, name, t, s)? {
                        return Ok(Some(f));
                    }
                    did_main |= Some(i) == self.main;
                }
                l = self.objs[i].loader;
            }
            if let Some(m) = self.main {
                if !did_main && !self.objs[m].info.has_runpath {
                    let dirs = self.expand(m, false);
                    if let Some(f) = self.try_list(&dirs, name, t, s)? {
                        return Ok(Some(f));
                    }
                }
            }
        }
        // (2) LD_LIBRARY_PATH does not exist at build time.
        // (3) The requester's own DT_RUNPATH (never inherited).
        if req_has_runpath {
            let dirs = self.expand(req, true);
            if let Some(f) = self.try_list(&dirs, name, t, s)? {
                return Ok(Some(f));
            }
        }
        if nodeflib {
            return Ok(None);
        }
        // (4) ld.so.cache, (5) the built-in default directories.
        if let Some(f) = self.try_cache(name, t, s)? {
            return Ok(Some(f));
        }
        let defaults = self.target_dirs(t).default_dirs;
        self.try_list(&defaults, name, t, s)
    }
}

/// "x86-64-v3" from ".../glibc-hwcaps/x86-64-v3/libfoo.so".
fn hwcaps_name_of(p: &Path) -> Option<String> {
    let dir = p.parent()?;
    let gh = dir.parent()?;
    (gh.file_name()? == "glibc-hwcaps")
        .then(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))?
}

/// Replace $ORIGIN, $LIB, $PLATFORM (and the ${...} forms) like `_dl_dst_substitute`. Unknown
/// `$` sequences are kept literally, as glibc does.
fn substitute(s: &str, origin: &str, lib: &str, platform: &str) -> String {
    let mut out = String::with_capacity(s.len() + origin.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut matched = None;
        for (tok, val) in [("ORIGIN", origin), ("LIB", lib), ("PLATFORM", platform)] {
            let braced = format!("{{{tok}}}");
            if after.starts_with(&braced) {
                matched = Some((val, braced.len()));
                break;
            }
            if let Some(tail) = after.strip_prefix(tok) {
                // The bare form must end at a character that cannot continue a name.
                if !tail.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    matched = Some((val, tok.len()));
                    break;
                }
            }
        }
        match matched {
            Some((val, len)) => {
                out.push_str(val);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitute_tokens() {
        let s = substitute(
            "$ORIGIN/../${ORIGIN}x:$LIB/$PLATFORM:$ORIGINAL:$FOO",
            "/o",
            "lib64",
            "x86_64",
        );
        assert_eq!(s, "/o/..//ox:lib64/x86_64:$ORIGINAL:$FOO");
    }
}
