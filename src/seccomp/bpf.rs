//! A [`ResolvedPolicy`] to stacked BPF programs (seccompiler), in the order they must be installed.
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

use super::policy::{CmpOp, When};
use super::resolved::{merge, ResolvedPolicy, Variant};
use super::{Arch, SeccompError};
use crate::contract::bpf::SockFilter;
use crate::spec::DefaultAction;

/// The value of SECCOMP_RET_TRACE's data for calls the policy would deny (see [`super::dig`]).
pub const TRACE_DENIED: u32 = 1;

pub fn compile(plan: &ResolvedPolicy) -> Result<Vec<Vec<SockFilter>>, SeccompError> {
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
            &SeccompAction::Allow,
            &SeccompAction::Errno(errno),
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
    programs.push(filter(plan, &allowed, &default, &SeccompAction::Allow)?);
    for p in &programs {
        if p.len() > crate::contract::bpf::MAX_INSNS {
            return Err(err(format!("a program has {} instructions", p.len())));
        }
    }
    Ok(programs)
}

/// Calls per linear chain. seccompiler emits one chain that tests the syscall number against
/// every entry in turn; the kernel then spends ~0.4 ms at install time emulating an 870-entry
/// chain for each syscall number (to build its per-syscall "always allow" cache), which alone
/// made a confined `python3 -c pass` ~7% slower. So the calls are split into chains of this
/// size, each compiled by seccompiler, behind a binary search on the number.
const CHAIN: usize = 8;

fn filter(
    plan: &ResolvedPolicy,
    calls: &BTreeMap<u32, When>,
    mismatch: &SeccompAction,
    matched: &SeccompAction,
) -> Result<Vec<SockFilter>, SeccompError> {
    let whole = chain(plan, calls, mismatch.clone(), matched.clone())?;
    if calls.len() <= CHAIN {
        return Ok(whole);
    }
    // seccompiler's layout: arch check (3), load nr (1), per-call blocks, ret mismatch. The
    // blocks only jump forward within themselves or to the next block, so a chain of
    // consecutive blocks followed by its `ret mismatch` is position independent.
    const PREFIX: usize = 4;
    debug_assert_eq!((whole[3].code, whole[3].k), (0x20, 0));
    let entries: Vec<(&u32, &When)> = calls.iter().collect();
    let mut leaves = Vec::new();
    for part in entries.chunks(CHAIN) {
        let sub: BTreeMap<u32, When> = part.iter().map(|(n, w)| (**n, (*w).clone())).collect();
        let prog = chain(plan, &sub, mismatch.clone(), matched.clone())?;
        leaves.push((*part[0].0, prog[PREFIX..].to_vec()));
    }
    let mut out = whole[..PREFIX].to_vec();
    tree(&leaves, &mut out);
    Ok(out)
}

/// Emit a binary search over `leaves` (sorted by their first syscall number): `nr >= K`
/// jumps (through a 32-bit `ja`, since conditional jumps reach only 255 instructions) to the
/// right half, otherwise falls into the left half.
fn tree(leaves: &[(u32, Vec<SockFilter>)], out: &mut Vec<SockFilter>) {
    const JGE_K: u16 = 0x35;
    const JA: u16 = 0x05;
    if let [(_, code)] = leaves {
        out.extend_from_slice(code);
        return;
    }
    let (left, right) = leaves.split_at(leaves.len() / 2);
    out.push(SockFilter {
        code: JGE_K,
        jt: 0,
        jf: 1,
        k: right[0].0,
    });
    let ja = out.len();
    out.push(SockFilter {
        code: JA,
        jt: 0,
        jf: 0,
        k: 0,
    });
    tree(left, out);
    out[ja].k =
        u32::try_from(out.len() - ja - 1).expect("a program is far below 2^32 instructions");
    tree(right, out);
}

/// One seccompiler program: a linear chain over `calls`.
fn chain(
    plan: &ResolvedPolicy,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::policy::Policy;
    use crate::spec::{Language, SeccompSpec};

    /// A classic-BPF interpreter for the instructions seccompiler and `tree` emit.
    fn run(prog: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes()); // instruction pointer
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    let k = i.k as usize;
                    a = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x54 => a &= i.k,
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let hit = match i.code {
                        0x15 => a == i.k,
                        0x25 => a > i.k,
                        0x35 => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += if hit { i.jt } else { i.jf } as usize;
                }
                0x06 => return i.k,
                other => panic!("unexpected BPF opcode {other:#x}"),
            }
        }
    }

    /// The binary search must decide exactly like seccompiler's single linear chain, for every
    /// number (listed or not) and argument values around every condition.
    #[test]
    fn tree_matches_linear_chain() {
        for lang in [Language::Python3, Language::Nodejs] {
            let policy = Policy::load(lang).unwrap();
            for arch in Arch::ALL {
                for variant in [Variant::NoNetwork, Variant::Network, Variant::Dig] {
                    let plan = ResolvedPolicy::new(&policy, arch, &SeccompSpec::default(), variant)
                        .unwrap();
                    let mut allowed = plan.allowed();
                    for calls in plan.refused().values() {
                        for (&nr, when) in calls {
                            merge(&mut allowed, nr, when);
                        }
                    }
                    let (mm, m) = (SeccompAction::Errno(1), SeccompAction::Allow);
                    let linear = chain(&plan, &allowed, mm.clone(), m.clone()).unwrap();
                    let fast = filter(&plan, &allowed, &mm, &m).unwrap();
                    assert!(fast.len() > linear.len() && fast.len() < linear.len() + 200);
                    let mut values: Vec<u64> = vec![0, 1, 2, 3, 10, 16, 0x5401, 0x5412, 0x10000];
                    values.extend((0..32).map(|b| 1u64 << b));
                    values.push(0x10000 | 0x20000);
                    for nr in 0..arch.max_number() + 20 {
                        for &v in &values {
                            let args = [v, v, 0, 0, 0, 0];
                            for a in [arch.audit_arch(), 0x4000_0003] {
                                assert_eq!(
                                    run(&linear, a, nr, args),
                                    run(&fast, a, nr, args),
                                    "{lang:?} {arch:?} nr {nr} arg {v:#x}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
