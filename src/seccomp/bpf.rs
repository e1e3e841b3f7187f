//! A [`Plan`] to stacked BPF programs (seccompiler), in the order they must be installed.
//!
//! One seccompiler program has one match action, and the policy needs up to four (allow,
//! EPERM, ENOSYS, the default), so the plan becomes a stack:
//!
//! 1. on x86_64, an x32 guard: kills calls with `__X32_SYSCALL_BIT` (the x32 ABI shares
//!    `AUDIT_ARCH_X86_64`, so the architecture check alone does not catch it);
//! 2. one program per errno value: `ERRNO(e)` for the calls its rules match, ALLOW otherwise;
//! 3. the allowlist: ALLOW for the allowed calls *and* for the calls an errno program
//!    refuses, with the same argument conditions (so that program's errno is what the caller
//!    sees, whatever the default), the default action otherwise.
//!
//! The kernel runs every program and keeps the most severe result (KILL > TRAP > ERRNO >
//! TRACE > LOG > ALLOW), so an errno rule wins over the allowlist's ALLOW, and a call that
//! no program allows gets the default. Results are independent of the order except for two
//! programs returning ERRNO for the same call (where the last installed wins): the errno
//! programs cover disjoint calls. Every program starts with seccompiler's architecture check
//! (`AUDIT_ARCH_*` mismatch: kill the process), which refuses i386 `int 0x80` calls. The
//! allowlist goes last because it refuses seccomp(2) itself, which installing the next
//! program would need.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use super::install::SockFilter;
use super::plan::{merge, Plan, Variant};
use super::policy::{CmpOp, When};
use super::{Arch, SeccompError};
use crate::spec::DefaultAction;

/// The value of SECCOMP_RET_TRACE's data for calls the policy would deny (see [`super::dig`]).
pub const TRACE_DENIED: u32 = 1;

pub fn compile(plan: &Plan) -> Result<Vec<Vec<SockFilter>>, SeccompError> {
    let err = |message: String| SeccompError::Compile {
        language: plan.language,
        arch: plan.arch.as_str(),
        message,
    };
    let mut programs = Vec::new();
    if plan.arch == Arch::X86_64 {
        programs.push(x32_guard(plan.arch));
    }
    let refused = plan.refused();
    let mut allowed = plan.allowed();
    for (&errno, calls) in &refused {
        programs.push(filter(
            plan,
            calls,
            SeccompAction::Allow,
            SeccompAction::Errno(errno),
        )?);
        for (&nr, when) in calls {
            merge(&mut allowed, nr, when);
        }
    }
    let default = match (plan.variant, plan.default) {
        (Variant::Dig, _) => SeccompAction::Trace(TRACE_DENIED),
        (_, DefaultAction::Errno) => SeccompAction::Errno(libc::EPERM as u32),
        (_, DefaultAction::KillProcess) => SeccompAction::KillProcess,
        (_, DefaultAction::Log) => SeccompAction::Log,
    };
    programs.push(filter(plan, &allowed, default, SeccompAction::Allow)?);
    for p in &programs {
        if p.len() > super::install::MAX_INSNS {
            return Err(err(format!("a program has {} instructions", p.len())));
        }
    }
    Ok(programs)
}

fn filter(
    plan: &Plan,
    calls: &BTreeMap<u32, When>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<Vec<SockFilter>, SeccompError> {
    let err = |message: String| SeccompError::Compile {
        language: plan.language,
        arch: plan.arch.as_str(),
        message,
    };
    let mut rules = BTreeMap::new();
    for (&nr, when) in calls {
        let chain = when
            .iter()
            .map(|alt| {
                let conds = alt
                    .iter()
                    .map(|c| {
                        let op = match c.op {
                            CmpOp::Eq => SeccompCmpOp::Eq,
                            CmpOp::Ne => SeccompCmpOp::Ne,
                            CmpOp::Lt => SeccompCmpOp::Lt,
                            CmpOp::Le => SeccompCmpOp::Le,
                            CmpOp::Gt => SeccompCmpOp::Gt,
                            CmpOp::Ge => SeccompCmpOp::Ge,
                            CmpOp::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                        };
                        SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, op, c.value)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                SeccompRule::new(conds)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("syscall {nr}: {e}")))?;
        rules.insert(i64::from(nr), chain);
    }
    let f = SeccompFilter::new(rules, mismatch, matched, plan.arch.seccompiler())
        .map_err(|e| err(e.to_string()))?;
    let prog: seccompiler::BpfProgram = f
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e.to_string()))?;
    Ok(prog
        .iter()
        .map(|i| SockFilter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

/// Kill x32 calls (number with bit 30 set); negative numbers (`syscall(-1)`) fall through to
/// the allowlist's default like any unknown call.
fn x32_guard(arch: Arch) -> Vec<SockFilter> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    let s = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    vec![
        s(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        s(JEQ_K, 1, 0, arch.audit_arch()),
        s(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        s(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        s(JSET_K, 2, 0, 0x8000_0000),
        s(JSET_K, 0, 1, 0x4000_0000),
        s(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        s(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}
