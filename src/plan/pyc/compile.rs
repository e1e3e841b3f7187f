//! Compiling `.py` files with the target interpreter itself.

use crate::plan::lang::python::PythonError;
use crate::platform::Runner;
use std::path::{Path, PathBuf};

/// Compiled by the target interpreter itself: unchecked-hash `.pyc` (never stat'ed against
/// the source, which is read-only anyway), with `dfile` set to the rootfs path so tracebacks
/// name the file as the sandbox sees it. Reads `src\tout\tdfile` lines on stdin, prints
/// failures.
const COMPILE_SCRIPT: &str = r#"
import sys, py_compile, concurrent.futures as cf
def one(triple):
    src, out, dfile = triple
    try:
        py_compile.compile(src, cfile=out, dfile=dfile, doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        return None
    except Exception as e:
        return '%s: %s' % (src, str(e).splitlines()[0] if str(e) else type(e).__name__)
pairs = [l.rstrip('\n').split('\t') for l in sys.stdin if l.strip()]
workers = max(1, min(8, len(__import__('os').sched_getaffinity(0))))
if workers > 1 and len(pairs) > 64:
    with cf.ProcessPoolExecutor(workers) as ex:
        res = list(ex.map(one, pairs, chunksize=32))
else:
    res = [one(p) for p in pairs]
for r in res:
    if r: print(r)
"#;

/// Compile `(source, output, rootfs path)` triples with the interpreter (run by `runner`).
/// Returns the sources that failed (Python 2 files shipped as data by some packages); those
/// simply get no `.pyc`.
pub fn compile_pycs(
    runner: &Runner,
    interpreter: &Path,
    pairs: &[(PathBuf, PathBuf, String)],
) -> Result<Vec<String>, PythonError> {
    use std::io::Write;
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = runner
        .command(interpreter)
        .args(["-I", "-c", COMPILE_SCRIPT])
        // Hash-based pycs do not depend on SOURCE_DATE_EPOCH, but py_compile switches modes on it.
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| PythonError::Spawn {
            path: interpreter.to_path_buf(),
            source,
        })?;
    let mut input = String::new();
    for (src, out, dfile) in pairs {
        input.push_str(&format!("{}\t{}\t{dfile}\n", src.display(), out.display()));
    }
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|source| PythonError::Spawn {
            path: interpreter.to_path_buf(),
            source,
        })?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(PythonError::Compile(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}
