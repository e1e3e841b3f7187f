//! A policy resolved for one architecture and one variant, with the spec's additions
//! ([`ResolvedPolicy`]; not the rootfs `plan::Plan`, hence the name): the single
//! intermediate form both the BPF and the OCI JSON are generated from.

use std::collections::BTreeMap;

use super::policy::{CmpOp, Cond, Policy, RuleAction, Set, When};
use super::{Arch, SeccompError};
use crate::spec::{DefaultAction, SeccompSpec, SyscallRef};

/// Which filter to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The network set answers EPERM (whatever the default action).
    NoNetwork,
    /// The network set is allowed.
    Network,
    /// For `dig`: everything the no-network variant would hand to the default action (and the
    /// network set) stops the tracee with SECCOMP_RET_TRACE instead; errno rules stay.
    Dig,
}

/// One resolved syscall rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: &'static str,
    pub nr: u32,
    pub action: RuleAction,
    /// Empty: unconditional.
    pub when: When,
}

#[derive(Debug, Clone)]
pub struct ResolvedPolicy {
    pub arch: Arch,
    pub language: &'static str,
    pub variant: Variant,
    pub default: DefaultAction,
    /// In policy order, then the spec's additions; one syscall may have several entries.
    pub entries: Vec<Entry>,
}

impl ResolvedPolicy {
    pub fn new(
        policy: &Policy,
        arch: Arch,
        spec: &SeccompSpec,
        variant: Variant,
    ) -> Result<ResolvedPolicy, SeccompError> {
        let mut entries = Vec::new();
        for r in &policy.rules {
            if r.arches.as_ref().is_some_and(|l| !l.contains(&arch)) {
                continue;
            }
            // Checked in Policy::parse: a name without `arch` exists on every architecture.
            let nr = arch.number(&r.name).ok_or_else(|| SeccompError::Policy {
                language: policy.language.as_str().to_string(),
                message: format!("`{}` is unknown on {}", r.name, arch.as_str()),
            })?;
            let name = arch.name(nr).expect("number came from the table");
            let action = match (r.set, variant) {
                (Set::Base, _) | (Set::Network, Variant::Network) => r.action,
                (Set::Network, Variant::NoNetwork) => RuleAction::Errno(libc::EPERM as u32),
                (Set::Network, Variant::Dig) => {
                    // glibc probes nscd's unix socket on every passwd/group lookup and falls
                    // back to files when that fails: refuse AF_UNIX sockets silently, as
                    // production does without network, so dig does not report that noise.
                    // Every other call of the network set goes to the default (traced).
                    if r.name == "socket" {
                        entries.push(Entry {
                            name,
                            nr,
                            action: RuleAction::Errno(libc::EPERM as u32),
                            when: vec![vec![Cond {
                                arg: 0,
                                op: CmpOp::Eq,
                                value: libc::AF_UNIX as u64,
                            }]],
                        });
                    }
                    continue;
                }
            };
            // Without network the network set is refused outright, conditions or not.
            let when = if action == r.action {
                r.when.clone()
            } else {
                Vec::new()
            };
            entries.push(Entry {
                name,
                nr,
                action,
                when,
            });
        }
        for a in &spec.allow {
            let (name, nr) = resolve(arch, a)?;
            if let Some(why) = policy.refusal(name) {
                return Err(SeccompError::Refused {
                    entry: display(a),
                    language: policy.language.as_str(),
                    why: why.to_string(),
                });
            }
            entries.push(Entry {
                name,
                nr,
                action: RuleAction::Allow,
                when: Vec::new(),
            });
        }
        Ok(ResolvedPolicy {
            arch,
            language: policy.language.as_str(),
            variant,
            default: spec.default_action,
            entries,
        })
    }

    /// Syscalls that are allowed (alternatives merged; an empty `When` means unconditional).
    pub fn allowed(&self) -> BTreeMap<u32, When> {
        let mut out: BTreeMap<u32, When> = BTreeMap::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.action == RuleAction::Allow)
        {
            merge(&mut out, e.nr, &e.when);
        }
        out
    }

    /// Errno rules by errno value, then syscall.
    pub fn refused(&self) -> BTreeMap<u32, BTreeMap<u32, When>> {
        let mut out: BTreeMap<u32, BTreeMap<u32, When>> = BTreeMap::new();
        for e in &self.entries {
            if let RuleAction::Errno(errno) = e.action {
                merge(out.entry(errno).or_default(), e.nr, &e.when);
            }
        }
        out
    }
}

/// OR `when` into the alternatives of `nr`; unconditional absorbs everything.
pub(crate) fn merge(map: &mut BTreeMap<u32, When>, nr: u32, when: &When) {
    match map.get_mut(&nr) {
        None => {
            map.insert(nr, when.clone());
        }
        Some(existing) if existing.is_empty() => {}
        Some(existing) if when.is_empty() => existing.clear(),
        Some(existing) => {
            for alt in when {
                if !existing.contains(alt) {
                    existing.push(alt.clone());
                }
            }
        }
    }
}

fn display(a: &SyscallRef) -> String {
    match a {
        SyscallRef::Name(n) => n.clone(),
        SyscallRef::Number(n) => n.to_string(),
    }
}

/// A spec entry to (name, number) on `arch`.
pub fn resolve(arch: Arch, a: &SyscallRef) -> Result<(&'static str, u32), SeccompError> {
    match a {
        SyscallRef::Name(n) => arch
            .number(n)
            .map(|nr| (arch.name(nr).expect("from the table"), nr))
            .ok_or_else(|| SeccompError::UnknownSyscall {
                entry: n.clone(),
                arch: arch.as_str(),
            }),
        SyscallRef::Number(nr) => {
            arch.name(*nr)
                .map(|name| (name, *nr))
                .ok_or(SeccompError::NumberOutOfRange {
                    nr: *nr,
                    arch: arch.as_str(),
                    max: arch.max_number(),
                })
        }
    }
}
