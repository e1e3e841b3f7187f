//! Smoke test of benches/warm_profile.sh: one short profile of warm-pool runs with the test
//! build's binaries must charge samples to the runs' own exit and page faults and to the
//! zygote's clone (so its attribution still finds the processes it names), print the ceiling
//! it derives, and leave nothing behind. The figures come from the release build (see
//! benches/README.md); this only keeps the command working.

use crate::support;

#[test]
#[cfg_attr(
    not(all(have_root, have_bash, have_perf, have_python3)),
    ignore = "needs root, bash, perf and python3"
)]
fn warm_profile_bench_charges_the_runs_and_cleans_up() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let spec = support::repo_root().join("images/python3.yaml");
    let stdout = support::run_bench(
        "warm_profile.sh",
        &[spec.to_str().unwrap()],
        &[("TMPDIR", tmp.path().as_os_str()), ("RUNS", "40".as_ref())],
    );
    assert!(
        !stdout.contains("SKIPPED"),
        "the bench skipped itself:\n{stdout}"
    );
    let ms = |part: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("cpu per run ") && l.contains(part))
            .unwrap_or_else(|| panic!("no line for {part:?} in:\n{stdout}"));
        line.trim_end_matches(" ms")
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {line:?}"))
    };
    for part in [
        "run: exit",
        "run: page faults",
        "zygote: clone of the next run",
    ] {
        assert!(ms(part) > 0.0, "nothing charged to {part:?}:\n{stdout}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("latency p50 ")),
        "no latency line:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("throughput ceiling on ") && l.ends_with(" runs/s")),
        "no ceiling line:\n{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the bench left {left:?} behind");
}
