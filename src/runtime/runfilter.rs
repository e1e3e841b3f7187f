//! A small seccomp program the runtime stacks on the bundle's policy, for what only the
//! runtime knows: whether this platform gave runs a memory cgroup, and whether they have a
//! pid namespace.
//!
//! - No memory cgroup: `memfd_create` is refused (EPERM). Its pages count against no rlimit,
//!   so without a cgroup it is a way to hold unbounded RAM (see `sandbox`, Memory).
//! - No pid namespace (chroot-only mode): the calls the policy allows that take another
//!   process's pid (`tgkill`, `sched_getaffinity`, `sched_getparam`, `sched_getscheduler`)
//!   are confined to the run's own pid (or 0, "myself"). Their answers for other pids
//!   (ESRCH for none, EPERM or data for one) told a run which processes exist in the
//!   container and what they are allowed to run on. `capget` (node's start-up check of its
//!   own capabilities, which tolerates a refusal) takes its pid inside a struct the filter
//!   cannot read, so it is refused. `getppid` answers 0, as it does for the first process
//!   of a pid namespace, instead of the server's pid.
//!
//! The run's own pid is known only in the child, after `clone`: the program carries
//! [`SELF_PID`] where it goes, and the child patches it in ([`patch_self`]) into a copy on its
//! stack before installing it (no allocation after `clone`). The program is installed
//! before the policy's, which refuses `seccomp()` itself; the kernel applies the most
//! restrictive answer of all stacked programs, so this one can only narrow.

use crate::contract::bpf::SockFilter;

/// Placeholder for the run's pid in comparisons (no pid is `u32::MAX`).
pub const SELF_PID: u32 = u32::MAX;
/// Longest program [`build`] makes; the child's copy has this many slots.
pub const MAX_INSNS: usize = 20;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// `seccomp_data.nr`, and the low 32 bits of `args[0]` (little-endian).
const OFF_NR: u32 = 0;
const OFF_ARG0_LO: u32 = 16;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// A syscall number as `seccomp_data.nr` holds it (`libc` has them as `c_long`).
fn nr(sys: libc::c_long) -> u32 {
    u32::try_from(sys).expect("syscall numbers are small and non-negative")
}

/// The program for a run, or an empty one when there is nothing to add.
pub fn build(deny_memfd: bool, confine_pids: bool) -> Vec<SockFilter> {
    if !deny_memfd && !confine_pids {
        return Vec::new();
    }
    // Layout (all jumps forward, as classic BPF requires):
    //   ld nr; [jeq memfd -> eperm]; [jeq tgkill -> self]; [jeq sched_* -> zero_or_self];
    //   [jeq capget -> eperm]; [jeq getppid -> zero];
    //   ret allow;
    //   zero_or_self: ld arg0; jeq 0 -> allow2; jeq SELF -> allow2 : eperm;
    //   self: ld arg0; jeq SELF -> allow2 : eperm;
    //   eperm: ret EPERM; allow2: ret allow; [zero: ret ERRNO(0), i.e. "returns 0"]
    let sched: &[i64] = if confine_pids {
        &[
            libc::SYS_sched_getaffinity,
            libc::SYS_sched_getparam,
            libc::SYS_sched_getscheduler,
        ]
    } else {
        &[]
    };
    let checks = usize::from(deny_memfd) + 3 * usize::from(confine_pids) + sched.len();
    // Index of each block.
    let ret_allow = 1 + checks;
    let zero_or_self = ret_allow + 1;
    let self_only = zero_or_self + 3;
    let eperm = if confine_pids {
        self_only + 2
    } else {
        ret_allow + 1
    };
    let allow2 = eperm + 1;
    let zero = allow2 + 1;
    let off = |from: usize, to: usize| -> u8 {
        u8::try_from(to - from - 1).expect("a jump within MAX_INSNS instructions")
    };

    let mut p = vec![insn(LD_W_ABS, 0, 0, OFF_NR)];
    if deny_memfd {
        let i = p.len();
        p.push(insn(JEQ_K, off(i, eperm), 0, nr(libc::SYS_memfd_create)));
    }
    if confine_pids {
        let i = p.len();
        p.push(insn(JEQ_K, off(i, self_only), 0, nr(libc::SYS_tgkill)));
        for sys in sched {
            let i = p.len();
            p.push(insn(JEQ_K, off(i, zero_or_self), 0, nr(*sys)));
        }
        let i = p.len();
        p.push(insn(JEQ_K, off(i, eperm), 0, nr(libc::SYS_capget)));
        let i = p.len();
        p.push(insn(JEQ_K, off(i, zero), 0, nr(libc::SYS_getppid)));
    }
    debug_assert_eq!(p.len(), ret_allow);
    p.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    if confine_pids {
        p.push(insn(LD_W_ABS, 0, 0, OFF_ARG0_LO));
        let i = p.len();
        p.push(insn(JEQ_K, off(i, allow2), 0, 0));
        let i = p.len();
        p.push(insn(JEQ_K, off(i, allow2), off(i, eperm), SELF_PID));
        debug_assert_eq!(p.len(), self_only);
        p.push(insn(LD_W_ABS, 0, 0, OFF_ARG0_LO));
        let i = p.len();
        p.push(insn(JEQ_K, off(i, allow2), off(i, eperm), SELF_PID));
    }
    debug_assert_eq!(p.len(), eperm);
    p.push(insn(
        RET_K,
        0,
        0,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    ));
    p.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    if confine_pids {
        debug_assert_eq!(p.len(), zero);
        p.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO));
    }
    debug_assert!(p.len() <= MAX_INSNS);
    p
}

/// Copy `prog` into `out` with every [`SELF_PID`] comparison set to `pid`; returns the
/// length. Async-signal-safe (no allocation): called in the child.
pub fn patch_self(prog: &[SockFilter], pid: u32, out: &mut [SockFilter; MAX_INSNS]) -> usize {
    let n = prog.len().min(MAX_INSNS);
    for (slot, ins) in out.iter_mut().zip(&prog[..n]) {
        *slot = *ins;
        if ins.code == JEQ_K && ins.k == SELF_PID {
            slot.k = pid;
        }
    }
    n
}

/// The instructions [`patch_self`] patches: where a program that cannot call it (the warm
/// pool's Python zygote) writes the pid.
pub fn self_pid_slots(prog: &[SockFilter]) -> Vec<usize> {
    prog.iter()
        .enumerate()
        .filter(|(_, ins)| ins.code == JEQ_K && ins.k == SELF_PID)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions `build` uses.
    fn eval(p: &[SockFilter], nr: u32, arg0: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            match i.code {
                LD_W_ABS => acc = if i.k == OFF_NR { nr } else { arg0 },
                JEQ_K => {
                    pc += usize::from(if acc == i.k { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn every_combination_decides_as_documented() {
        assert!(build(false, false).is_empty());
        for (memfd, pids) in [(true, false), (false, true), (true, true)] {
            let mut buf = [SockFilter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            }; MAX_INSNS];
            let n = patch_self(&build(memfd, pids), 4242, &mut buf);
            let p = &buf[..n];
            let memfd_nr = nr(libc::SYS_memfd_create);
            assert_eq!(eval(p, memfd_nr, 0), if memfd { EPERM } else { ALLOW });
            assert_eq!(eval(p, nr(libc::SYS_read), 7), ALLOW);
            let tgkill = nr(libc::SYS_tgkill);
            assert_eq!(eval(p, tgkill, 4242), ALLOW);
            assert_eq!(eval(p, tgkill, 1), if pids { EPERM } else { ALLOW });
            assert_eq!(eval(p, tgkill, 0), if pids { EPERM } else { ALLOW });
            for sys in [
                libc::SYS_sched_getaffinity,
                libc::SYS_sched_getparam,
                libc::SYS_sched_getscheduler,
            ] {
                assert_eq!(eval(p, nr(sys), 0), ALLOW);
                assert_eq!(eval(p, nr(sys), 4242), ALLOW);
                assert_eq!(eval(p, nr(sys), 1), if pids { EPERM } else { ALLOW });
            }
            let capget = nr(libc::SYS_capget);
            assert_eq!(eval(p, capget, 0), if pids { EPERM } else { ALLOW });
            let getppid = nr(libc::SYS_getppid);
            let zero = libc::SECCOMP_RET_ERRNO;
            assert_eq!(eval(p, getppid, 0), if pids { zero } else { ALLOW });
        }
    }
}
