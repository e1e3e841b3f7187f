//! Smoke test of benches/cold_start.sh: one short run with the test build's binaries must
//! print every figure, find the re-start with the stamp present faster than the cold start,
//! and leave nothing behind in its temporary directory. The figures themselves come from the
//! release build (see benches/README.md); this only keeps the command working.

use crate::support;

#[test]
#[cfg_attr(
    not(all(have_root, have_chroot, have_tar, have_bash)),
    ignore = "needs root, chroot, tar and bash"
)]
fn cold_start_bench_prints_every_figure_and_cleans_up() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let stdout = support::run_bench(
        "cold_start.sh",
        &[],
        &[
            ("BENCH_TMP", tmp.path().as_os_str()),
            ("RUNS", "1".as_ref()),
            ("RESTARTS", "2".as_ref()),
            ("UNPACKS", "2".as_ref()),
            // The per-process baselines take seconds; the in-process one exercises the same path.
            ("BASELINES", "inproc".as_ref()),
        ],
    );
    for prefix in [
        "file set: ",
        "cold start, empty root -> /health 200",
        "baseline in-process walk",
        "reference: tar --zstd -x",
        "re-start, stamp present -> /health 200",
        "runtime unpack, stamp present: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(prefix)),
            "no line starting {prefix:?} in:\n{stdout}"
        );
    }
    // "re-start ... -> 12.3x faster than cold": the stamp must make the second start cheaper.
    let restart = stdout.lines().find(|l| l.starts_with("re-start")).unwrap();
    assert!(
        restart.contains("x faster than cold"),
        "re-start not faster than the cold start: {restart}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the bench left {left:?} behind");
}
