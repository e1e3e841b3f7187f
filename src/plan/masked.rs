//! Paths the sandbox mounts over at run time: what the plan puts there scripts never see.

use super::lang::LanguagePlan;
use super::{Plan, PlanningError};
use crate::spec::Language;
use std::collections::BTreeMap;

/// Where the sandbox mounts its own filesystems over the rootfs: whatever the plan puts there
/// is invisible to scripts.
const MASKED_AT_RUN_TIME: &[&str] = &["/tmp", "/dev", "/proc"];

fn masked_by(path: &str) -> Option<&'static str> {
    MASKED_AT_RUN_TIME.iter().copied().find(|m| {
        path.strip_prefix(m)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// An interpreter under a run-time mount point is an error (nothing could run); other files
/// there (spec `paths` in a temp dir) only a warning, since a plain chroot still sees them.
pub fn check_masked_paths(
    plan: &Plan,
    langs: &BTreeMap<Language, LanguagePlan>,
    warnings: &mut Vec<String>,
) -> Result<(), PlanningError> {
    for (lang, lp) in langs {
        for path in [
            &lp.info.interpreter,
            &lp.main_executable.display().to_string(),
        ] {
            if let Some(mount) = masked_by(path) {
                return Err(PlanningError::MaskedInterpreter {
                    language: lang.as_str().to_owned(),
                    path: path.clone(),
                    mount,
                });
            }
        }
    }
    let hidden: Vec<&String> = plan
        .entries
        .keys()
        .filter(|p| masked_by(p).is_some())
        .collect();
    if let Some(first) = hidden.first() {
        warnings.push(format!(
            "{} planned path(s) lie under {}, which the sandbox mounts over at run time: scripts will not see them (first: {first})",
            hidden.len(),
            MASKED_AT_RUN_TIME.join(", ")
        ));
    }
    Ok(())
}
