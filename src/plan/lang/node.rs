//! Node.js: the interpreter, its version, and the flags every sandboxed run gets.

use super::{add_spec_paths, sandbox_env, which, which_in_sysroot, LanguagePlan};
use crate::contract::LanguageInfo;
use crate::plan::{Plan, PlanningError};
use crate::platform::{Runner, Target};
use crate::spec::LanguageSpec;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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

/// Asks node its version and the builtin modules it loads from disk at run time. Debian's
/// nodejs is built with `--shared-builtin-*-path`: acorn, cjs-module-lexer and undici (the
/// engine of `fetch`) are not compiled in but read from `/usr/share/nodejs` when first used.
/// No ELF scan sees those files; the build configuration node carries names each one.
const PROBE_SCRIPT: &str = r#"const d = (process.config.target_defaults || {}).defines || [];
console.log(JSON.stringify({
  version: process.version,
  builtins: d.filter((x) => /^NODE_SHARED_BUILTIN_\w+_PATH=\//.test(x))
             .map((x) => x.slice(x.indexOf("=") + 1)),
}));"#;

#[derive(serde::Deserialize)]
struct Probe {
    version: String,
    builtins: Vec<PathBuf>,
}

/// Plan node. With a `target`, the interpreter is the sysroot's, run under the target's
/// runner (qemu) to ask it its version and flags.
pub fn plan_node(
    plan: &mut Plan,
    spec: &LanguageSpec,
    target: Option<&Target>,
    warnings: &mut Vec<String>,
) -> Result<LanguagePlan, PlanningError> {
    let interpreter_err = |message: String| PlanningError::Interpreter {
        name: spec.interpreter.clone(),
        message,
    };
    let path = match target {
        None => which(&spec.interpreter).map_err(|e| interpreter_err(e.to_string()))?,
        Some(t) => which_in_sysroot(t, &spec.interpreter).ok_or_else(|| {
            interpreter_err(format!(
                "not found in the sysroot {} (its /usr/local/bin, /usr/bin, /bin); install it there (scripts/arm64-sysroot.sh installs Debian's nodejs) or give its absolute path inside the sysroot",
                t.sysroot.display()
            ))
        })?,
    };
    let real = std::fs::canonicalize(&path).map_err(crate::plan::io_err(&path))?;
    plan.add_host_path(&path, "interpreter")?;
    let runner = Runner::for_target(target);
    let out = runner
        .command(&real)
        .args(["-e", PROBE_SCRIPT])
        .env_remove("NODE_OPTIONS")
        .stdin(Stdio::null())
        .output()
        .map_err(crate::plan::io_err(&real))?;
    if !out.status.success() {
        return Err(interpreter_err(format!(
            "`{} -e <probe>` failed: {}",
            real.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let probe: Probe = serde_json::from_slice(&out.stdout).map_err(|e| {
        interpreter_err(format!(
            "`{} -e <probe>` printed no version and builtins ({e}): {}",
            real.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    })?;
    let version = probe.version;
    for builtin in &probe.builtins {
        let host = plan.host_of(builtin);
        if host.is_file() {
            plan.add_host_path(&host, "nodejs: builtin module node loads from disk")?;
        } else {
            warnings.push(format!(
                "nodejs: {} {version} loads the builtin {} from disk, and it is missing: install the package that holds it",
                real.display(),
                builtin.display()
            ));
        }
    }
    let mut args = Vec::new();
    for (flag, without) in NODE_ARGS {
        if node_accepts(&runner, &real, flag) {
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
            interpreter: plan.root_of(&path)?.to_string_lossy().into_owned(),
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
fn node_accepts(runner: &Runner, node: &Path, flag: &str) -> bool {
    runner
        .command(node)
        .args([flag, "-e", "0"])
        .env_remove("NODE_OPTIONS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
