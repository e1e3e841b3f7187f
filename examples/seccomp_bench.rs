//! Figures for the README: BPF instruction counts per program and the start-up cost of a
//! confined `python3 -I -c pass` against an unconfined one (both fork+exec with no_new_privs),
//! interleaved in one run. `cargo run --release --example seccomp_bench [python] [runs]`.

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
        with.sort();
        without.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (mw, mwo) = (with[runs / 2], without[runs / 2]);
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
