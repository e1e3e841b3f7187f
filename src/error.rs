//! Printing an error with its causes. A leaf: it imports nothing of the crate.
//!
//! Every error type of the crate says what failed and leaves the cause to `#[source]`
//! ("{path}: cannot read it", source: "No such file or directory"), so its `Display` alone
//! drops the cause. Wherever an error becomes text (a log field, an HTTP answer, another
//! error's message), print it through [`Chain`]; where the error is an `anyhow::Error`, `{:#}`
//! prints the same.

use std::error::Error;
use std::fmt;

/// Displays an error and then each of its causes, `: ` separated: "what failed: why: ...".
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: cannot read it")]
    struct Outer {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn prints_each_cause_once() {
        let e = Outer {
            path: "/x".into(),
            source: std::io::Error::other("gone"),
        };
        assert_eq!(e.to_string(), "/x: cannot read it");
        assert_eq!(Chain(&e).to_string(), "/x: cannot read it: gone");
        // An error wrapped into an io::Error keeps its own causes.
        let wrapped = std::io::Error::other(e);
        assert_eq!(Chain(&wrapped).to_string(), "/x: cannot read it: gone");
    }
}
