//! What can fail while preparing the sandbox or a run.

use crate::runtime::child::Step;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("unsupported language")]
    UnsupportedLanguage,
    #[error("{path}: cannot read the seccomp program")]
    SeccompRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    SeccompParse {
        path: PathBuf,
        #[source]
        source: crate::contract::bpf::LoadError,
    },
    #[error("language {0}: the bundle has no seccomp programs and seccomp is required; rebuild the bundle or pass --insecure-no-sandbox")]
    NoSeccomp(String),
    #[error("language {language}: interpreter {path} is not in the rootfs")]
    Interpreter {
        language: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Prepare {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pool(#[from] crate::runtime::uidpool::PoolError),
    #[error("the code or an environment value contains a NUL byte")]
    Nul,
    #[error("cannot {what}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox setup failed: cannot {}: {}", step.describe(), std::io::Error::from_raw_os_error(*errno))]
    Child { step: Step, errno: i32 },
    #[error(transparent)]
    Cgroup(#[from] crate::runtime::cgroup::CgroupError),
}
