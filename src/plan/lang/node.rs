//! Node.js: the interpreter, its version, and the flags every sandboxed run gets.

use super::{add_spec_paths, sandbox_env, which, LanguagePlan};
use crate::contract::LanguageInfo;
use crate::plan::{Plan, PlanningError};
use crate::spec::LanguageSpec;
use std::path::Path;

/// Node flags every sandboxed run gets, when this `node` knows them (probed at build time).
///
/// `--disable-wasm-trap-handler` (Node 20.15+/22.2+): by default every WebAssembly memory
/// reserves a 10 GiB guard region, which no sandbox address-space limit allows, and undici
/// (the engine of the global `fetch`) runs its HTTP parser as WebAssembly: without the flag
/// `fetch` fails with "Cannot allocate Wasm memory". V8 then compiles explicit bounds checks
/// instead, a little slower and exactly as safe.
const NODE_ARGS: &[(&str, &str)] = &[(
    "--disable-wasm-trap-handler",
    "WebAssembly (and `fetch`, whose HTTP parser is WebAssembly) fails under the sandbox's address-space limit",
)];

pub fn plan_node(
    plan: &mut Plan,
    spec: &LanguageSpec,
    warnings: &mut Vec<String>,
) -> Result<LanguagePlan, PlanningError> {
    let path = which(&spec.interpreter).map_err(|e| PlanningError::Interpreter {
        name: spec.interpreter.clone(),
        message: e.to_string(),
    })?;
    let real = std::fs::canonicalize(&path).map_err(crate::plan::io_err(&path))?;
    plan.add_host_path(&path, "interpreter")?;
    let out = std::process::Command::new(&real)
        .arg("--version")
        .output()
        .map_err(crate::plan::io_err(&real))?;
    if !out.status.success() {
        return Err(PlanningError::Interpreter {
            name: spec.interpreter.clone(),
            message: format!(
                "`{} --version` failed: {}",
                real.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut args = Vec::new();
    for (flag, without) in NODE_ARGS {
        if node_accepts(&real, flag) {
            args.push((*flag).to_owned());
        } else {
            warnings.push(format!(
                "nodejs: {} {version} does not know {flag}: {without}",
                real.display()
            ));
        }
    }
    add_spec_paths(plan, "nodejs", &spec.paths, &|_| false)?;
    let env = sandbox_env();
    Ok(LanguagePlan {
        info: LanguageInfo {
            interpreter: path.to_string_lossy().into_owned(),
            args,
            env,
            version,
            distributions: vec![],
            seccomp: None,
        },
        main_executable: real,
        python: None,
    })
}

/// Whether `node FLAG -e 0` runs: node refuses unknown flags ("bad option") with exit 9.
fn node_accepts(node: &Path, flag: &str) -> bool {
    std::process::Command::new(node)
        .args([flag, "-e", "0"])
        .env_remove("NODE_OPTIONS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
