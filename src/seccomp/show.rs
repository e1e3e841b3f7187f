//! `prebake seccomp show`: the effective policy as a table for reviewers.

use super::policy::{errno_name, Policy, RuleAction, Set};
use super::resolved::{resolve, ResolvedPolicy, Variant};
use super::{Arch, SeccompError};
use crate::spec::{DefaultAction, Language, SeccompSpec};

/// One row per policy entry, then the spec's additions, then the `never` list: name, number
/// on x86_64 and aarch64 (`-` where the syscall does not exist), action, conditions, why.
pub fn show_table(language: Language, spec: &SeccompSpec) -> Result<String, SeccompError> {
    let policy = Policy::load(language)?;
    // Same validation as the build, for every architecture.
    for arch in Arch::ALL {
        ResolvedPolicy::new(&policy, arch, spec, Variant::NoNetwork)?;
    }
    let nr = |arch: Arch, name: &str| {
        arch.number(name)
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    };
    let mut rows: Vec<[String; 6]> = Vec::new();
    for r in &policy.rules {
        let action = match (r.action, r.set) {
            (RuleAction::Allow, Set::Base) => "allow".to_string(),
            (RuleAction::Allow, Set::Network) => "allow if network, else EPERM".to_string(),
            (RuleAction::Errno(e), _) => format!("errno {}", errno_name(e)),
        };
        rows.push([
            r.name.clone(),
            nr(Arch::X86_64, &r.name),
            nr(Arch::Aarch64, &r.name),
            action,
            if r.when_src.is_empty() {
                "-".into()
            } else {
                r.when_src.join(" || ")
            },
            r.why.clone(),
        ]);
    }
    let host = Arch::host()?;
    for a in &spec.allow {
        let (name, _) = resolve(host, a)?;
        rows.push([
            name.to_string(),
            nr(Arch::X86_64, name),
            nr(Arch::Aarch64, name),
            "allow".into(),
            "-".into(),
            "added by the spec's seccomp.allow".into(),
        ]);
    }
    let default = match spec.default_action {
        DefaultAction::Errno => "errno EPERM",
        DefaultAction::KillProcess => "kill_process",
        DefaultAction::Log => "log (allowed)",
    };
    for n in &policy.never {
        rows.push([
            n.name.clone(),
            nr(Arch::X86_64, &n.name),
            nr(Arch::Aarch64, &n.name),
            format!("never ({default})"),
            "-".into(),
            n.why.clone(),
        ]);
    }
    let header = ["name", "x86_64", "aarch64", "action", "conditions", "why"].map(String::from);
    let mut width = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "# {} seccomp policy; anything not listed: {default}; other ABIs (i386, x32): kill\n",
        language.as_str()
    );
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(width) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        line.push_str(&row[5]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}
