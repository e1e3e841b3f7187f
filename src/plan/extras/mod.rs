//! What DT_NEEDED never shows but real code needs: found by building real chroots and
//! watching what failed (see design.md). Each item can be turned off in the spec's `extras`.

mod etc;

pub use etc::{add_etc_stubs, add_mount_points, group, passwd, HOSTS, NSSWITCH, RESOLV_CONF};

use super::closure::find_library;
use super::lang::python::PythonInstall;
use super::lang::LanguagePlan;
use super::tree::{add_if_exists, add_tree};
use super::{ldso, Plan, PlanningError};
use crate::spec::{ImageSpec, Language};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Add every extra the spec's `extras` turns on.
pub fn add_extras(
    plan: &mut Plan,
    spec: &ImageSpec,
    langs: &BTreeMap<Language, LanguagePlan>,
    resolver: &ldso::Resolver,
    triplet: &str,
    warnings: &mut Vec<String>,
) -> Result<(), PlanningError> {
    let x = &spec.extras;
    if x.etc_stubs {
        add_etc_stubs(plan)?;
    }
    if x.tmp {
        add_mount_points(plan)?;
    }
    if x.libgcc_s {
        add_libgcc_s(plan, langs, resolver, warnings)?;
    }
    // Python's OpenSSL and zoneinfo say where they look; the fixed paths are the distros'.
    let install = langs
        .get(&Language::Python3)
        .and_then(|l| l.python.as_ref());
    if x.ca_certificates {
        add_ca_certificates(plan, install, warnings)?;
    }
    if x.openssl_config {
        add_openssl_config(plan, install)?;
    }
    if x.zoneinfo {
        add_zoneinfo(plan, install, warnings)?;
    }
    if x.locales {
        add_locales(plan, triplet)?;
    }
    if x.ld_so_cache {
        add_ldconfig(plan)?;
    }
    Ok(())
}

/// pthread_exit / thread cancellation dlopen()s libgcc_s.so.1 to unwind.
fn add_libgcc_s(
    plan: &mut Plan,
    langs: &BTreeMap<Language, LanguagePlan>,
    resolver: &ldso::Resolver,
    warnings: &mut Vec<String>,
) -> Result<(), PlanningError> {
    let mut found = false;
    for lp in langs.values() {
        if let Some(p) = find_library(resolver, "libgcc_s.so.1", &lp.main_executable)? {
            let host = plan.host_of(&p);
            plan.add_host_path(
                &host,
                "extra: libgcc_s (dlopen'ed by glibc for thread exit)",
            )?;
            found = true;
        }
    }
    if !found && !langs.is_empty() {
        warnings.push("extras.libgcc_s: libgcc_s.so.1 not found on this machine".into());
    }
    Ok(())
}

/// Every CA bundle that exists, and OpenSSL's hashed-name directory.
fn add_ca_certificates(
    plan: &mut Plan,
    install: Option<&PythonInstall>,
    warnings: &mut Vec<String>,
) -> Result<(), PlanningError> {
    let ca_candidates: Vec<PathBuf> = install
        .iter()
        .filter_map(|i| i.ssl_cafile.clone())
        .chain([
            plan.host_of(Path::new("/etc/ssl/certs/ca-certificates.crt")),
            plan.host_of(Path::new("/etc/pki/tls/certs/ca-bundle.crt")),
        ])
        .collect();
    let mut any = false;
    for c in &ca_candidates {
        any |= add_if_exists(plan, c, "extra: ca_certificates")?;
    }
    if let Some(capath) = install.and_then(|i| i.ssl_capath.clone()) {
        // The hashed-name directory: its chain, empty (the bundle file holds the certs).
        add_if_exists(plan, &capath, "extra: ca_certificates")?;
    }
    if !any {
        warnings.push("extras.ca_certificates: no CA bundle found on this machine".into());
    }
    Ok(())
}

/// The first `openssl.cnf` found.
fn add_openssl_config(
    plan: &mut Plan,
    install: Option<&PythonInstall>,
) -> Result<(), PlanningError> {
    let dirs: Vec<PathBuf> = install
        .iter()
        .filter_map(|i| i.openssl_dir.clone())
        .chain([
            plan.host_of(Path::new("/usr/lib/ssl")),
            plan.host_of(Path::new("/etc/ssl")),
        ])
        .collect();
    for d in dirs {
        if add_if_exists(plan, &d.join("openssl.cnf"), "extra: openssl_config")? {
            break;
        }
    }
    Ok(())
}

/// The first zoneinfo directory of the interpreter's TZPATH (or the usual one).
fn add_zoneinfo(
    plan: &mut Plan,
    install: Option<&PythonInstall>,
    warnings: &mut Vec<String>,
) -> Result<(), PlanningError> {
    let tzpath: Vec<PathBuf> = install
        .map(|i| i.tzpath.clone())
        .unwrap_or_default()
        .into_iter()
        .chain([plan.host_of(Path::new("/usr/share/zoneinfo"))])
        .collect();
    match first_existing(&tzpath) {
        Some(tz) => {
            // right/ repeats everything with leap seconds; nobody's sandbox needs it.
            let right = tz.join("right");
            add_tree(plan, &tz, "extra: zoneinfo", &|p| p == right)?;
        }
        None => warnings.push("extras.zoneinfo: no zoneinfo directory found".into()),
    }
    Ok(())
}

/// The C.UTF-8 locale and the gconv modules, where the sysroot has them. The gconv path is
/// Debian's multiarch one (`triplet`); elsewhere it is simply absent.
fn add_locales(plan: &mut Plan, triplet: &str) -> Result<(), PlanningError> {
    let gconv = format!("/usr/lib/{triplet}/gconv");
    for d in ["/usr/lib/locale/C.utf8", gconv.as_str()] {
        let p = plan.host_of(Path::new(d));
        if p.exists() {
            add_tree(plan, &p, "extra: locales", &|_| false)?;
        }
    }
    Ok(())
}

/// ctypes.util.find_library runs `/sbin/ldconfig -p` against our cache.
fn add_ldconfig(plan: &mut Plan) -> Result<(), PlanningError> {
    for c in ["/sbin/ldconfig", "/usr/sbin/ldconfig"] {
        let host = plan.host_of(Path::new(c));
        if add_if_exists(
            plan,
            &host,
            "extra: ld_so_cache (ldconfig -p for ctypes.util.find_library)",
        )? {
            break;
        }
    }
    Ok(())
}

/// Candidate locations of things found by name only.
pub fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.exists()).cloned()
}
