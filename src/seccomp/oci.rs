//! A [`ResolvedPolicy`] as OCI runtime-spec `linux.seccomp` JSON (libseccomp's vocabulary), for
//! runc and crun users and for reviewers.
//!
//! Written through our own structs rather than `oci_spec`'s so the bytes are deterministic:
//! fixed field order, entries sorted by (action, errno, arguments), names sorted. Tests check
//! that `oci_spec::runtime::LinuxSeccomp` reads it back unchanged.
//!
//! The JSON states the policy's meaning in one filter: errno entries (clone3 -> ENOSYS, clone
//! for processes -> EPERM...) and allow entries with their arguments are disjoint, so no
//! precedence between them is needed. libseccomp compares arguments on 64 bits where our BPF
//! compares the low 32 (the kernel's view of an `int`); for these values that only differs
//! when a caller puts garbage in the upper half, which the JSON then refuses.

use std::collections::BTreeMap;

use serde::Serialize;

use super::policy::{CmpOp, Cond, RuleAction};
use super::resolved::ResolvedPolicy;
use crate::spec::DefaultAction;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Seccomp {
    default_action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_errno_ret: Option<u32>,
    architectures: Vec<&'static str>,
    syscalls: Vec<Syscall>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    names: Vec<&'static str>,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno_ret: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<Arg>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_two: Option<u64>,
    op: &'static str,
}

fn arg(c: &Cond) -> Arg {
    let (op, value, value_two) = match c.op {
        CmpOp::Eq => ("SCMP_CMP_EQ", c.value, None),
        CmpOp::Ne => ("SCMP_CMP_NE", c.value, None),
        CmpOp::Lt => ("SCMP_CMP_LT", c.value, None),
        CmpOp::Le => ("SCMP_CMP_LE", c.value, None),
        CmpOp::Gt => ("SCMP_CMP_GT", c.value, None),
        CmpOp::Ge => ("SCMP_CMP_GE", c.value, None),
        CmpOp::MaskedEq(m) => ("SCMP_CMP_MASKED_EQ", m, Some(c.value)),
    };
    Arg {
        index: c.arg,
        value,
        value_two,
        op,
    }
}

pub fn to_json(plan: &ResolvedPolicy) -> Vec<u8> {
    // (errno or 0 for allow, args) -> names
    let mut groups: BTreeMap<(u32, Vec<Arg>), Vec<&'static str>> = BTreeMap::new();
    let allowed = plan.allowed();
    let mut add = |key: u32, nr: u32, when: &Vec<Vec<Cond>>| {
        let name = plan
            .arch
            .name(nr)
            .expect("plan numbers come from the table");
        if when.is_empty() {
            groups.entry((key, Vec::new())).or_default().push(name);
        }
        for alt in when {
            let args = alt.iter().map(arg).collect();
            groups.entry((key, args)).or_default().push(name);
        }
    };
    for (nr, when) in &allowed {
        add(0, *nr, when);
    }
    for (errno, calls) in plan.refused() {
        for (nr, when) in &calls {
            add(errno, *nr, when);
        }
    }
    let syscalls = groups
        .into_iter()
        .map(|((errno, args), mut names)| {
            names.sort_unstable();
            names.dedup();
            let action = if errno == 0 {
                RuleAction::Allow
            } else {
                RuleAction::Errno(errno)
            };
            Syscall {
                names,
                action: match action {
                    RuleAction::Allow => "SCMP_ACT_ALLOW",
                    RuleAction::Errno(_) => "SCMP_ACT_ERRNO",
                },
                errno_ret: (errno != 0).then_some(errno),
                args,
            }
        })
        .collect();
    let (default_action, default_errno_ret) = match plan.default {
        DefaultAction::Errno => ("SCMP_ACT_ERRNO", Some(libc::EPERM as u32)),
        DefaultAction::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
        DefaultAction::Log => ("SCMP_ACT_LOG", None),
    };
    let doc = Seccomp {
        default_action,
        default_errno_ret,
        architectures: vec![plan.arch.oci_name()],
        syscalls,
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("plain structs serialize");
    out.push(b'\n');
    out
}
