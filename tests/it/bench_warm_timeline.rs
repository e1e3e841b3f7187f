//! benches/warm_timeline.sh times the steps of a warm run with marks that are not in the
//! product: it applies benches/warm_timeline.patch to a scratch worktree and builds that
//! (minutes: too long for the suite). What rots first is the patch, so the patch must keep
//! applying to this tree.

use crate::support;
use std::process::Command;

#[test]
#[cfg_attr(not(have_git), ignore = "needs git")]
fn the_timeline_patch_applies_to_this_tree() {
    let _exclusive = support::exclusive();
    let out = Command::new("git")
        .args(["-c", "safe.directory=*", "apply", "--check", "--verbose"])
        .arg("benches/warm_timeline.patch")
        .current_dir(support::repo_root())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "benches/warm_timeline.patch no longer applies: refresh it (benches/warm_timeline.sh says how)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // All three files, the server's and the run's marks: a patch that lost a part would
    // still apply.
    let checked = String::from_utf8_lossy(&out.stderr);
    for file in [
        "src/runtime/server.rs",
        "src/runtime/sandbox/run.rs",
        "src/runtime/sandbox/warm/zygote.py",
    ] {
        assert!(
            checked.contains(&format!("Checking patch {file}")),
            "the patch does not touch {file}:\n{checked}"
        );
    }
}
