//! Re-starts (issue 12, item 4): a start whose every input matches an earlier start that
//! passed its probes is healthy before probing, and probes right after; any changed input
//! means probing first; a probe that fails after all stops the server and forgets the record.
//!
//! Over a private copy of the Python fixture's root (the tests change it), with the shared
//! uid lock directory, where the records are kept.

use crate::support;
use crate::support::runtime::{python_fixture, Fixture, Server};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const READY: &str = "sandbox ready";
const PROBED: &str = "probe run of python3 ok";
const AT_ONCE: &str = "ready now, probing in the background";

/// The position of `line` in the server's log, with the log for the message.
fn at(log: &str, line: &str) -> usize {
    log.find(line)
        .unwrap_or_else(|| panic!("no {line:?} in the log:\n{log}"))
}

/// The record a start named in its log (`record=PATH`).
fn record_named(log: &str) -> PathBuf {
    let i = at(log, "record=");
    let rest = &log[i + "record=".len()..];
    PathBuf::from(rest.split_whitespace().next().unwrap())
}

/// A fresh unpacked copy of the Python fixture's rootfs, and the fixture pointing at it.
fn private_fixture(dir: &Path) -> Fixture {
    let bundle = python_fixture().bundle;
    let root = dir.join("root");
    let manifest = prebake::contract::BundleManifest::load(bundle).unwrap();
    prebake::runtime::unpack::unpack_bundle(bundle, &manifest, &root).unwrap();
    Fixture {
        bundle,
        root: Box::leak(root.into_boxed_path()),
    }
}

/// Wait until the server process has ended; its exit status.
fn wait_exit(s: &mut Server, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            return st;
        }
        assert!(start.elapsed() < within, "still running; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_restart_with_the_same_inputs_is_ready_before_its_probes() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let fixture = private_fixture(dir.path());

    // First start: probes, then ready, and a record kept.
    let s = Server::start_over(fixture, "", &[]);
    let log = s.log();
    assert!(at(&log, PROBED) < at(&log, READY), "{log}");
    assert!(!log.contains(AT_ONCE), "{log}");
    let record = record_named(&log);
    assert!(record.exists(), "{log}");
    s.stop();

    // Same inputs: ready before the probe, which still runs (and the warm pool after it).
    let s = Server::start_over(fixture, "", &[]);
    let log = s.log();
    assert!(at(&log, AT_ONCE) < at(&log, READY), "{log}");
    assert!(at(&log, READY) < at(&log, PROBED), "{log}");
    assert_eq!(record_named(&log), record);
    assert_eq!(s.run_py("print(6 * 7)")["stdout"], "42\n");
    s.stop();

    // Other limits: a record of its own, probed first.
    let s = Server::start_over(fixture, "", &[("SANDBOX_TMP_MB", "33")]);
    let log = s.log();
    assert!(at(&log, PROBED) < at(&log, READY), "{log}");
    assert_ne!(record_named(&log), record, "{log}");
    let _ = std::fs::remove_file(record_named(&log));
    s.stop();

    // The interpreter's file touched (its ctime moves): probed first again.
    let manifest = prebake::contract::BundleManifest::load(fixture.bundle).unwrap();
    let interp = fixture.root.join(
        manifest.languages["python3"]
            .interpreter
            .trim_start_matches('/'),
    );
    let mode = std::fs::metadata(&interp).unwrap().permissions();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::set_permissions(&interp, mode).unwrap();
    let s = Server::start_over(fixture, "", &[]);
    let log = s.log();
    assert!(at(&log, PROBED) < at(&log, READY), "{log}");
    let record = record_named(&log);
    s.stop();

    // A broken standard library behind an unchanged interpreter file: the record matches, the
    // server is ready at once, and its background probe then fails: the server stops and
    // forgets the record, so the next start probes first and never becomes healthy.
    let encodings = walkdir::WalkDir::new(fixture.root)
        .into_iter()
        .flatten()
        .find(|e| e.file_name() == "encodings" && e.path().join("__init__.py").exists())
        .expect("the rootfs has the encodings package")
        .into_path();
    std::fs::rename(&encodings, encodings.with_file_name("encodings-gone")).unwrap();
    let mut s = Server::spawn_over(fixture, "", &[]);
    let st = wait_exit(&mut s, Duration::from_secs(60));
    let log = s.log();
    assert!(!st.success(), "{log}");
    assert!(
        at(&log, AT_ONCE) < at(&log, "the probe run of python3 failed"),
        "{log}"
    );
    assert!(
        !record.exists(),
        "the record outlived its failed probe: {log}"
    );
    let mut s = Server::spawn_over(fixture, "", &[]);
    let st = wait_exit(&mut s, Duration::from_secs(60));
    let log = s.log();
    assert!(!st.success(), "{log}");
    assert!(!log.contains(AT_ONCE), "{log}");
    assert!(!log.contains(READY), "{log}");
    assert!(log.contains("the probe run of python3 failed"), "{log}");
}

/// A mount, lazily unmounted when dropped (a failed test leaves none behind).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `mount -t overlay` of `lower` at `at`, with a fresh upper layer under `scratch`: what a
/// container engine's overlay snapshotter gives each container of an image.
fn overlay(lower: &Path, scratch: &Path, at: &Path) -> Mounted {
    let upper = tempfile::tempdir_in(scratch).unwrap().keep();
    let work = tempfile::tempdir_in(scratch).unwrap().keep();
    std::fs::create_dir_all(at).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    support::assert_success(
        &support::run(
            std::process::Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(at),
        ),
        "mount -t overlay",
    );
    Mounted(at.to_owned())
}

/// A node's second container of an image starts over the same extracted layer through an
/// overlay of its own: another device number, and in chroot-only mode its rootfs directory
/// copied up (a new ctime) as soon as the first run makes its `/tmp/run-UID`. It is ready
/// before its probes, on the record the first container left in the shared lock directory.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn a_second_container_of_the_same_image_is_ready_before_its_probes() {
    let _exclusive = support::exclusive();
    let dir = tempfile::tempdir().unwrap();
    // The image's layer holds the rootfs in a directory, as the bundle layer does: the
    // mount's own root directory is the upper layer's.
    let layer = dir.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    private_fixture(&layer);
    let container = dir.path().join("container");
    let fixture = Fixture {
        bundle: python_fixture().bundle,
        root: Box::leak(container.join("root").into_boxed_path()),
    };
    let first_gone = dir.path().join("first-container");
    for ns in [false, true] {
        let config = format!("namespaces: {ns}\n");
        let mut first = overlay(&layer, dir.path(), &container);
        let s = Server::start_over(fixture, &config, &[]);
        let log = s.log();
        assert!(at(&log, PROBED) < at(&log, READY), "namespaces {ns}: {log}");
        let record = record_named(&log);
        assert_eq!(s.run_py("print(6 * 7)")["stdout"], "42\n");
        s.stop();
        // The first container's overlay stays mounted (elsewhere), so the second one's
        // cannot have its device number.
        std::fs::create_dir_all(&first_gone).unwrap();
        support::assert_success(
            &support::run(
                std::process::Command::new("mount")
                    .arg("--move")
                    .arg(&container)
                    .arg(&first_gone),
            ),
            "mount --move",
        );
        first.0 = first_gone.clone();
        let first_dev = std::fs::metadata(first_gone.join("root/usr"))
            .unwrap()
            .dev();
        let _second = overlay(&layer, dir.path(), &container);
        assert_ne!(
            first_dev,
            std::fs::metadata(fixture.root.join("usr")).unwrap().dev(),
            "the second overlay has the first one's device"
        );
        let s = Server::start_over(fixture, &config, &[]);
        let log = s.log();
        assert!(
            at(&log, AT_ONCE) < at(&log, READY),
            "namespaces {ns}: {log}"
        );
        assert!(at(&log, READY) < at(&log, PROBED), "namespaces {ns}: {log}");
        assert_eq!(record_named(&log), record, "namespaces {ns}: {log}");
        assert_eq!(s.run_py("print(6 * 7)")["stdout"], "42\n");
        s.stop();
        let _ = std::fs::remove_file(&record);
    }
}

/// The runs' network namespace holder is forked from the multi-threaded server and lives on
/// without exec: it must hold none of the server's descriptors. It once kept whatever was
/// open at its fork, and since pasta comes up while the first runs start, a run's output pipe
/// held there never ended (the run hung until its deadline).
#[test]
#[cfg_attr(not(all(have_root, have_pasta)), ignore = "needs root and pasta")]
fn the_network_namespace_holder_keeps_no_descriptor() {
    let _exclusive = support::exclusive();
    let s = Server::start("", &[]);
    let server = s.child.id();
    let own_net = std::fs::read_link(format!("/proc/{server}/ns/net")).unwrap();
    let exe = std::fs::read_link(format!("/proc/{server}/exe")).unwrap();
    let holder = support::runtime::children(server)
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
                && std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|n| n != own_net)
        })
        .unwrap_or_else(|| panic!("no holder among the server's children; log:\n{}", s.log()));
    let fds: Vec<u32> = std::fs::read_dir(format!("/proc/{holder}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    assert!(fds.is_empty(), "the holder keeps descriptors {fds:?}");
    assert_eq!(s.run_lang("python3", "print('up')", true)["stdout"], "up\n");
}

/// pasta starts in the background, and until it is up a bind mount of the runs' network
/// namespace sits in /run. A server stopped right after it became ready (a re-start is ready
/// in milliseconds) waits for that start to finish and leaves nothing behind.
#[test]
#[cfg_attr(not(all(have_root, have_pasta)), ignore = "needs root and pasta")]
fn a_server_stopped_while_pasta_starts_leaves_nothing_in_run() {
    let _exclusive = support::exclusive();
    for _ in 0..3 {
        let s = Server::spawn("warm_pool: false\n", &[]);
        s.wait_healthy();
        let pid = s.child.id();
        assert_eq!(s.stop().code(), Some(0));
        let left = support::runtime::leftover_mounts_and_run_files(python_fixture().root, pid);
        assert!(left.is_empty(), "left behind {left:?}");
    }
}

/// A server killed while pasta was starting leaves its mount point (and, through the mount,
/// its namespace); the next server's start removes it.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root")]
fn stale_namespace_mount_points_are_swept_at_start() {
    let _exclusive = support::exclusive();
    // pid_max is at most 2^22: no process has this pid.
    let stale = Path::new("/run/prebake-netns-4194305-1");
    std::fs::write(stale, b"").unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["--bind", "/proc/self/ns/net"])
        .arg(stale)
        .status()
        .unwrap();
    assert!(mounted.success());
    let s = Server::start("", &[]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let still = stale.exists() || mounts.contains(stale.to_str().unwrap());
    if still {
        let _ = std::process::Command::new("umount").arg(stale).status();
        let _ = std::fs::remove_file(stale);
    }
    assert!(!still, "not swept; log:\n{}", s.log());
}
