//! A [`ResolvedPolicy`] to one BPF program, in seccompiler's instructions where they check
//! arguments.
//!
//! For each syscall number the program decides, in this order:
//!
//! 1. a call of another architecture (i386's `int 0x80`), and on x86_64 an x32 call
//!    (`__X32_SYSCALL_BIT`: the x32 ABI shares `AUDIT_ARCH_X86_64`, so the architecture check
//!    alone does not catch it), kills the process;
//! 2. the call's errno rules: `ERRNO(e)` when one matches (whatever the default);
//! 3. the call's allow rules: ALLOW when one matches;
//! 4. the default action.
//!
//! This is what a stack of one seccompiler program per action decided (one program has one
//! match action), which the build wrote until 2026-12-07; the tests hold the two equal. One
//! program is faster to install (see [`filter`]). The file format and the runtime still take
//! a stack (`contract::bpf`), and the runtime stacks a program of its own under this one
//! (`runfilter`).

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

/// The plan as one program (the file format and the runtime take a stack; one is the
/// fastest to install).
pub fn compile(plan: &ResolvedPolicy) -> Result<Vec<Vec<SockFilter>>, SeccompError> {
    let refused = plan.refused();
    let mut allowed = plan.allowed();
    for calls in refused.values() {
        for (&nr, when) in calls {
            merge(&mut allowed, nr, when);
        }
    }
    let program = filter(plan, &allowed, &refused, &default_action(plan))?;
    if program.len() > crate::contract::bpf::MAX_INSNS {
        return Err(compile_error(
            plan,
            format!("the program has {} instructions", program.len()),
        ));
    }
    Ok(vec![program])
}

/// What a call no rule allows gets.
fn default_action(plan: &ResolvedPolicy) -> SeccompAction {
    match (plan.variant, plan.default) {
        (Variant::Dig, _) => SeccompAction::Trace(TRACE_DENIED),
        (_, DefaultAction::Errno) => SeccompAction::Errno(libc::EPERM as u32),
        (_, DefaultAction::KillProcess) => SeccompAction::KillProcess,
        (_, DefaultAction::Log) => SeccompAction::Log,
    }
}

fn compile_error(plan: &ResolvedPolicy, message: String) -> SeccompError {
    SeccompError::Compile {
        language: plan.language,
        arch: plan.arch.as_str(),
        message,
    }
}

/// seccompiler's layout: arch check (3), load nr (1), per-call blocks, ret mismatch. The
/// blocks only jump forward within themselves or to the next block, so one call's block
/// followed by its `ret mismatch` is position independent.
const PREFIX: usize = 4;

/// The program: the architecture check, then a binary search on the syscall number down to
/// a leaf that decides.
///
/// Every run installs every program, and that costs time in proportion to its length: the
/// kernel checks it, converts it to eBPF and JIT-compiles it (~0.13 µs an instruction here),
/// then emulates it for every syscall number to build its "always allowed" cache; and each
/// program costs ~17 µs more, whatever its length. seccompiler's one linear chain spends
/// five instructions on every call, even an unconditional one, and has one match action, so
/// the errno rules were programs of their own. So the number line is cut into segments, each
/// one leaf: a run of consecutive unconditional calls is one `ret allow`, a gap between calls
/// one `ret default`, and a call with argument conditions its own seccompiler blocks (which
/// check the arguments, and the number again): first its errno rules' ([`refusal`]), then
/// its allowance. For Dify's Python policy with network that is one program of 402
/// instructions instead of four of 1,005 (seccompiler's chains of eight calls behind a
/// binary search, which this replaced), and installing it takes 0.13–0.15 ms instead of
/// 0.31–0.33 (`examples/seccomp_bench.rs`, with the old build's file).
fn filter(
    plan: &ResolvedPolicy,
    allowed: &BTreeMap<u32, When>,
    refused: &BTreeMap<u32, BTreeMap<u32, When>>,
    default: &SeccompAction,
) -> Result<Vec<SockFilter>, SeccompError> {
    let out_of_range =
        |nr: u32| compile_error(plan, format!("syscall number {nr} is out of range"));
    let ret = |action: &SeccompAction| vec![ret_k(u32::from(action.clone()))];
    let allow = ret(&SeccompAction::Allow);
    let mut segments: Vec<(u32, Vec<SockFilter>)> = Vec::new();
    let mut next = 0u32;
    for (&nr, when) in allowed {
        if nr > next {
            segments.push((next, ret(default)));
        }
        let mut code = Vec::new();
        let mut decided = false;
        // With one program per errno, the kernel ran them all and, of two ERRNO answers,
        // kept the last installed one's (the higher errno): they are asked in that order.
        for (&errno, calls) in refused.iter().rev() {
            let Some(rules) = calls.get(&nr) else {
                continue;
            };
            if rules.is_empty() {
                code.extend(ret(&SeccompAction::Errno(errno)));
                decided = true;
                break;
            }
            code.extend(refusal(plan, nr, rules, errno)?);
        }
        if !decided {
            if when.is_empty() {
                code.extend(allow.clone());
            } else {
                let single = BTreeMap::from([(nr, when.clone())]);
                let block = chain(plan, &single, default.clone(), SeccompAction::Allow)?;
                debug_assert_eq!(block[..PREFIX], arch_check(plan.arch));
                code.extend_from_slice(&block[PREFIX..]);
            }
        }
        let extends =
            code == allow && nr == next && segments.last().is_some_and(|(_, last)| *last == allow);
        if !extends {
            segments.push((nr, code));
        }
        next = nr.checked_add(1).ok_or_else(|| out_of_range(nr))?;
    }
    if plan.arch == Arch::X86_64 {
        if next > X32_SYSCALL_BIT {
            return Err(out_of_range(next - 1));
        }
        if next < X32_SYSCALL_BIT {
            segments.push((next, ret(default)));
        }
        segments.push((X32_SYSCALL_BIT, vec![ret_k(libc::SECCOMP_RET_KILL_PROCESS)]));
        next = X32_SYSCALL_BIT << 1;
    }
    segments.push((next, ret(default)));
    let mut out = arch_check(plan.arch);
    out.extend(tree(&segments));
    Ok(out)
}

/// `nr`'s errno rules as code that returns `ERRNO(errno)` when one matches and otherwise
/// goes on after itself with the number loaded again (the rules load the arguments): the
/// seccompiler block for them, with its `ret mismatch`es turned into jumps to its end.
fn refusal(
    plan: &ResolvedPolicy,
    nr: u32,
    rules: &When,
    errno: u32,
) -> Result<Vec<SockFilter>, SeccompError> {
    // A mismatch action no block returns otherwise.
    const GO_ON: SeccompAction = SeccompAction::Trace(0xfeed);
    let single = BTreeMap::from([(nr, rules.clone())]);
    let block = chain(plan, &single, GO_ON, SeccompAction::Errno(errno))?;
    debug_assert_eq!(block[..PREFIX], arch_check(plan.arch));
    let block = &block[PREFIX..];
    let (go_on, refuse) = (u32::from(GO_ON), u32::from(SeccompAction::Errno(errno)));
    let mut code = Vec::with_capacity(block.len() + 1);
    for (at, insn) in block.iter().enumerate() {
        let past = block.len() - at;
        match *insn {
            SockFilter { code: RET_K, k, .. } if k == go_on => code.push(SockFilter {
                code: JA,
                jt: 0,
                jf: 0,
                k: u32::try_from(past - 1).expect("a block is short"),
            }),
            SockFilter { code: RET_K, k, .. } if k != refuse => {
                return Err(compile_error(
                    plan,
                    format!("seccompiler's block for syscall {nr} returns {k:#x}"),
                ));
            }
            SockFilter { code: RET_K, .. } => code.push(*insn),
            SockFilter { code: JA, k, .. } if k as usize >= past => {
                return Err(compile_error(
                    plan,
                    format!("seccompiler's block for syscall {nr} jumps out of itself"),
                ));
            }
            SockFilter { jt, jf, .. } if usize::from(jt.max(jf)) >= past => {
                return Err(compile_error(
                    plan,
                    format!("seccompiler's block for syscall {nr} jumps out of itself"),
                ));
            }
            _ => code.push(*insn),
        }
    }
    code.push(SockFilter {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: 0, // seccomp_data.nr
    });
    Ok(code)
}

/// What seccompiler's programs start with: kill a call of another architecture (i386's
/// `int 0x80` from an x86_64 process), then load the syscall number.
fn arch_check(arch: Arch) -> Vec<SockFilter> {
    let s = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    vec![
        s(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        s(JEQ_K, 1, 0, arch.audit_arch()),
        ret_k(libc::SECCOMP_RET_KILL_PROCESS),
        s(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ]
}

/// x86_64's `__X32_SYSCALL_BIT`: x32 calls share `AUDIT_ARCH_X86_64`, so the architecture
/// check lets them through; the program kills the numbers that have it (and not the sign
/// bit: negative numbers, `syscall(-1)`, get the default like any unknown call).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// The classic BPF instructions this module writes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn ret_k(k: u32) -> SockFilter {
    SockFilter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A binary search over `segments` (sorted by the first syscall number each covers; the
/// first starts at 0, and each runs up to the next): `nr >= K` jumps over the left half's
/// code to the right half, otherwise falls into the left half. Conditional jumps reach only
/// 255 instructions; past that a 32-bit `ja` does the jump.
fn tree(segments: &[(u32, Vec<SockFilter>)]) -> Vec<SockFilter> {
    if let [(_, code)] = segments {
        return code.clone();
    }
    let (left, right) = segments.split_at(segments.len() / 2);
    let (left, right_start) = (tree(left), right[0].0);
    let mut out = Vec::with_capacity(left.len() + 2);
    match u8::try_from(left.len()) {
        Ok(over) => out.push(SockFilter {
            code: JGE_K,
            jt: over,
            jf: 0,
            k: right_start,
        }),
        Err(_) => {
            out.push(SockFilter {
                code: JGE_K,
                jt: 0,
                jf: 1,
                k: right_start,
            });
            out.push(SockFilter {
                code: JA,
                jt: 0,
                jf: 0,
                k: u32::try_from(left.len()).expect("a program is far below 2^32 instructions"),
            });
        }
    }
    out.extend(left);
    out.extend(tree(right));
    out
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

    /// Leaves longer than a conditional jump reaches (255 instructions) are jumped over with
    /// a `ja`; every number still reaches its own leaf.
    #[test]
    fn tree_reaches_every_leaf_past_long_ones() {
        let starts = [0u32, 5, 6, 40, 41, 300, 1000];
        let segments: Vec<(u32, Vec<SockFilter>)> = starts
            .iter()
            .enumerate()
            .map(|(i, &start)| {
                let mut code = vec![
                    SockFilter {
                        code: 0x20,
                        jt: 0,
                        jf: 0,
                        k: 0
                    };
                    97 * i
                ];
                code.push(ret_k(start));
                (start, code)
            })
            .collect();
        let mut prog = vec![SockFilter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        prog.extend(tree(&segments));
        assert!(
            prog.iter().any(|i| i.code == 0x05),
            "no long jump was needed"
        );
        for nr in 0..1100 {
            let want = *starts.iter().rev().find(|&&s| s <= nr).unwrap();
            assert_eq!(run(&prog, 0, nr, [0; 6]), want, "nr {nr}");
        }
        assert_eq!(run(&prog, 0, u32::MAX, [0; 6]), 1000);
    }

    /// On x86_64 the program kills every x32 number (bit 30 set) and lets negative ones
    /// get the default; the i386 ABI is killed by the architecture check.
    #[test]
    fn the_program_kills_x32_calls() {
        let policy = Policy::load(Language::Python3).unwrap();
        let plan = ResolvedPolicy::new(
            &policy,
            Arch::X86_64,
            &SeccompSpec::default(),
            Variant::Network,
        )
        .unwrap();
        let programs = compile(&plan).unwrap();
        let [program] = programs.as_slice() else {
            panic!("{} programs", programs.len())
        };
        let native = Arch::X86_64.audit_arch();
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        let getpid = 39;
        assert_eq!(
            run(program, native, getpid, [0; 6]),
            libc::SECCOMP_RET_ALLOW
        );
        for nr in [0, getpid, 0x3fff_ffff, 0x7fff_ffff] {
            assert_eq!(
                run(program, native, 0x4000_0000 | nr, [0; 6]),
                kill,
                "{nr:#x}"
            );
        }
        let default = run(program, native, 0x3fff_ffff, [0; 6]);
        assert_ne!(default, kill);
        assert_eq!(run(program, native, u32::MAX, [0; 6]), default);
        assert_eq!(run(program, native, 0x8000_0000, [0; 6]), default);
        assert_eq!(run(program, 0x4000_0003, getpid, [0; 6]), kill);
    }

    /// What the programs this module used to write decided together: the old x32 guard,
    /// one seccompiler chain per errno value (ERRNO for its rules, ALLOW otherwise), then the
    /// allowlist's chain; installed in that order and run the kernel's way (newest first,
    /// an answer replaced only by a strictly more severe one).
    fn stacked(plan: &ResolvedPolicy) -> (usize, impl Fn(u32, u32, [u64; 6]) -> u32) {
        let s = |code, jt, jf, k| SockFilter { code, jt, jf, k };
        let mut stack = Vec::new();
        if plan.arch == Arch::X86_64 {
            stack.push(vec![
                s(0x20, 0, 0, 4),
                s(0x15, 1, 0, plan.arch.audit_arch()),
                s(0x06, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
                s(0x20, 0, 0, 0),
                s(0x45, 2, 0, 0x8000_0000),
                s(0x45, 0, 1, 0x4000_0000),
                s(0x06, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
                s(0x06, 0, 0, libc::SECCOMP_RET_ALLOW),
            ]);
        }
        let mut allowed = plan.allowed();
        for (&errno, calls) in &plan.refused() {
            let on = SeccompAction::Errno(errno);
            stack.push(chain(plan, calls, SeccompAction::Allow, on).unwrap());
            for (&nr, when) in calls {
                merge(&mut allowed, nr, when);
            }
        }
        let default = default_action(plan);
        stack.push(chain(plan, &allowed, default, SeccompAction::Allow).unwrap());
        let length = stack.iter().map(Vec::len).sum();
        (length, move |arch, nr, args| {
            let severity = |r: u32| i32::from_ne_bytes((r & 0xffff_0000).to_ne_bytes());
            let mut answer = libc::SECCOMP_RET_ALLOW;
            for p in stack.iter().rev() {
                let r = run(p, arch, nr, args);
                if severity(r) < severity(answer) {
                    answer = r;
                }
            }
            answer
        })
    }

    /// The one program must decide exactly as the stack of seccompiler's linear chains did,
    /// for every number (listed or not, x32 and negative ones too), on the native and a
    /// foreign architecture, with argument values around every condition, whatever the
    /// default action and with a spec's additions; and be a fraction of their length.
    #[test]
    fn one_program_decides_as_the_stack_of_chains() {
        use crate::spec::SyscallRef;
        let specs = [
            SeccompSpec::default(),
            SeccompSpec {
                default_action: DefaultAction::KillProcess,
                allow: vec![SyscallRef::Name("getcpu".into()), SyscallRef::Number(450)],
            },
            SeccompSpec {
                default_action: DefaultAction::Log,
                allow: Vec::new(),
            },
        ];
        for (lang, spec) in [Language::Python3, Language::Nodejs]
            .into_iter()
            .flat_map(|lang| specs.iter().map(move |spec| (lang, spec)))
        {
            let policy = Policy::load(lang).unwrap();
            for arch in Arch::ALL {
                for variant in [Variant::NoNetwork, Variant::Network, Variant::Dig] {
                    let plan = ResolvedPolicy::new(&policy, arch, spec, variant).unwrap();
                    let (stack_length, reference) = stacked(&plan);
                    let programs = compile(&plan).unwrap();
                    let [one] = programs.as_slice() else {
                        panic!("{} programs", programs.len())
                    };
                    assert!(
                        one.len() * 2 < stack_length,
                        "{lang:?} {arch:?} {variant:?}: {} instructions, the chains had {}",
                        one.len(),
                        stack_length
                    );
                    let mut values: Vec<u64> = vec![0, 1, 2, 3, 10, 16, 0x5401, 0x5412, 0x10000];
                    values.extend((0..32).map(|b| 1u64 << b));
                    values.push(0x10000 | 0x20000);
                    let mut numbers: Vec<u32> = (0..arch.max_number() + 20).collect();
                    numbers.extend([0x4000_0000, 0x4000_0027, 0x7fff_ffff, 0x8000_0000, u32::MAX]);
                    for nr in numbers {
                        for &v in &values {
                            let args = [v, v, 0, 0, 0, 0];
                            for a in [arch.audit_arch(), 0x4000_0003] {
                                assert_eq!(
                                    reference(a, nr, args),
                                    run(one, a, nr, args),
                                    "{lang:?} {arch:?} {variant:?} {spec:?} nr {nr:#x} arg {v:#x}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
