//! Smoke test of benches/cold_start.sh: one short run with the test build's binaries must
//! print every figure, find the re-start with the stamp present faster than the cold start,
//! and leave nothing behind in its temporary directory. The figures themselves come from the
//! release build (see benches/README.md); this only keeps the command working.

use crate::support;
use std::process::Command;

#[test]
#[cfg_attr(
    not(all(have_root, have_chroot, have_tar, have_bash)),
    ignore = "needs root, chroot, tar and bash"
)]
fn cold_start_bench_prints_every_figure_and_cleans_up() {
    let _exclusive = support::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(support::repo_root().join("benches/cold_start.sh"))
        .env("PREBAKE", support::bin("prebake"))
        .env("RUNTIME", support::bin("runtime"))
        .env("BENCH_TMP", tmp.path())
        .env("RUNS", "1")
        .env("RESTARTS", "2")
        .env("UNPACKS", "2")
        // The per-process baselines take seconds; the in-process one exercises the same path.
        .env("BASELINES", "inproc")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
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
