//! What of an installation stays out of the rootfs: the default excludes and the spec's own.

use super::PythonInstall;
use crate::plan::PlanningError;

/// The default excludes for a standard library at `stdlib`: test suites, GUI and packaging
/// helpers nobody runs in a sandbox, static archives, and bytecode we regenerate.
pub fn default_excludes(install: &PythonInstall) -> Vec<String> {
    let mut globs = vec!["**/__pycache__".to_owned(), "**/__pycache__/**".to_owned()];
    let mut stdlibs = vec![install.stdlib.clone()];
    if install.platstdlib != install.stdlib {
        stdlibs.push(install.platstdlib.clone());
    }
    for lib in stdlibs {
        let lib = globset::escape(&lib.to_string_lossy());
        for sub in [
            "test",
            "idlelib",
            "tkinter",
            "turtledemo",
            "ensurepip",
            "lib2to3",
            "config-*",
            "unittest/test",
            "ctypes/test",
            "sqlite3/test",
            "distutils/tests",
            "tkinter",
            "turtle.py",
            "lib-dynload/_tkinter*",
            "lib-dynload/_test*",
            "lib-dynload/_xxtestfuzz*",
            "lib-dynload/xxlimited*",
            "lib-dynload/_ctypes_test*",
            "site-packages",
            "dist-packages",
        ] {
            globs.push(format!("{lib}/{sub}"));
            globs.push(format!("{lib}/{sub}/**"));
        }
    }
    globs
}

/// One matcher for `globs` (`*` never crosses a `/`).
pub(super) fn matcher(globs: &[String]) -> Result<globset::GlobSet, PlanningError> {
    let mut b = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| PlanningError::Interpreter {
                name: "exclude".into(),
                message: format!("bad glob `{g}`: {e}"),
            })?;
        b.add(glob);
    }
    b.build().map_err(|e| PlanningError::Interpreter {
        name: "exclude".into(),
        message: e.to_string(),
    })
}
