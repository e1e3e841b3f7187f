//! Figures for the README: BPF instruction counts per program, the time the kernel takes to
//! install them (every run pays it), and the start-up cost of a confined `python3 -I -c pass`
//! against an unconfined one (both fork+exec with no_new_privs), interleaved in one run.
//! `cargo run --release --example seccomp_bench [python] [runs] [OLD.bpf]`: with a
//! `python3-net.bpf` of another build (an older bundle's), its install time is measured
//! against this build's, interleaved.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prebake::seccomp::{self, install::Programs};
use prebake::spec::{Language, SeccompSpec};

fn run(exe: &str, args: &[&str], programs: Option<&Programs>) -> Duration {
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    let programs = programs.cloned();
    // SAFETY: only prctl and seccomp between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            match &programs {
                Some(p) => p.install().map_err(std::io::Error::from_raw_os_error),
                None => Ok(()),
            }
        });
    }
    let t = Instant::now();
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{exe} {args:?}: {st}");
    t.elapsed()
}

/// The time a fresh process (a fork, with no_new_privs) takes to install `programs`.
fn install_time(programs: &Programs) -> Duration {
    let mut fds = [0; 2];
    // SAFETY: a pipe for the child's one answer.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: this example has one thread; the child only makes syscalls and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: syscalls only, then _exit.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let start = Instant::now();
            let ok = programs.install().is_ok();
            let nanos = if ok {
                u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            } else {
                0
            };
            libc::write(fds[1], nanos.to_ne_bytes().as_ptr().cast(), 8);
            libc::_exit(0);
        }
    }
    let mut nanos = [0u8; 8];
    // SAFETY: reading the child's answer, reaping it, closing the pipe.
    unsafe {
        libc::close(fds[1]);
        assert_eq!(libc::read(fds[0], nanos.as_mut_ptr().cast(), 8), 8, "read");
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        libc::close(fds[0]);
    }
    let nanos = u64::from_ne_bytes(nanos);
    assert!(nanos > 0, "the programs did not install");
    Duration::from_nanos(nanos)
}

/// The median of `times`, which it leaves sorted (the first is the minimum).
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let python = argv.next().unwrap_or_else(|| "/usr/bin/python3.11".into());
    let runs: usize = argv.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    for lang in [Language::Python3, Language::Nodejs] {
        let a = seccomp::compile(lang, &SeccompSpec::default()).expect("compile");
        for (variant, bytes) in [("", &a.bpf), ("-net", &a.bpf_net)] {
            let p = Programs::from_bytes(bytes).expect("parse");
            let sizes: Vec<String> = p.programs().iter().map(|x| x.len().to_string()).collect();
            println!(
                "{}{variant}.bpf ({}): {} instructions in {} program(s) ({})",
                lang.as_str(),
                a.arch,
                p.instructions(),
                sizes.len(),
                sizes.join(" + ")
            );
        }
    }
    let a = seccomp::compile(Language::Python3, &SeccompSpec::default()).expect("compile");
    let p = Programs::from_bytes(&a.bpf).expect("parse");
    let net = Programs::from_bytes(&a.bpf_net).expect("parse");
    let old = argv.next().map(|path| {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let programs = Programs::from_bytes(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        (path, programs)
    });
    let (mut this, mut other) = (Vec::new(), Vec::new());
    for i in 0..runs + 5 {
        let t = install_time(&net);
        let o = old.as_ref().map(|(_, programs)| install_time(programs));
        if i >= 5 {
            this.push(t);
            other.extend(o);
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let this = us(median(&mut this));
    print!(
        "installing python3-net.bpf ({} instructions in {} program(s)): median {this:.0} µs",
        net.instructions(),
        net.programs().len()
    );
    match &old {
        Some((path, programs)) => {
            let other = us(median(&mut other));
            println!(
                "; {path} ({} instructions in {} program(s)): {other:.0} µs; ratio {:.2} ({runs} each, interleaved)",
                programs.instructions(),
                programs.programs().len(),
                this / other
            );
        }
        None => println!(" ({runs} runs)"),
    }
    for (exe, args) in [
        (python.as_str(), &["-I", "-c", "pass"][..]),
        ("/bin/true", &[][..]),
    ] {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for i in 0..runs + 5 {
            let w = run(exe, args, Some(&p));
            let wo = run(exe, args, None);
            if i >= 5 {
                with.push(w);
                without.push(wo);
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (mw, mwo) = (median(&mut with), median(&mut without));
        println!(
            "{exe} {}: median {:.2} ms confined vs {:.2} ms unconfined, ratio {:.3}; min {:.2} vs {:.2} ms, ratio {:.3} ({runs} runs each, interleaved)",
            args.join(" "),
            ms(mw),
            ms(mwo),
            ms(mw) / ms(mwo),
            ms(with[0]),
            ms(without[0]),
            ms(with[0]) / ms(without[0]),
        );
    }
}
