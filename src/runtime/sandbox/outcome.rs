//! How a run ended, and the words dify-sandbox's API reports for it.

use super::Limits;
use std::time::Duration;

/// How the interpreter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One run's result.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Exit,
    pub timed_out: bool,
    pub truncated: Option<Stream>,
    pub duration: Duration,
    pub limits: Limits,
    /// The run's memory cgroup killed a process of it (limit reached).
    pub memory_killed: bool,
    /// Chroot mode: the run's /tmp grew past its budget and the run was killed.
    pub tmp_exceeded: bool,
}

impl RunOutcome {
    /// dify's `exit_code`: the exit status, or -1 when killed by a signal or the deadline.
    pub fn exit_code(&self) -> i32 {
        match self.exit {
            Exit::Code(c) if !self.timed_out => c,
            _ => -1,
        }
    }

    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
            && !self.timed_out
            && self.truncated.is_none()
            && !self.tmp_exceeded
    }

    /// How the run ended, in one word for logs and metrics labels, in the order
    /// [`RunOutcome::error_text`] explains it: `ok`, `timeout`, `output_limit`,
    /// `seccomp_denial`, `tmp_limit`, `memory_limit`, `killed` (another signal) or `error`
    /// (the script failed on its own).
    pub fn outcome(&self) -> &'static str {
        if self.success() {
            "ok"
        } else if self.timed_out {
            "timeout"
        } else if self.truncated.is_some() {
            "output_limit"
        } else if self.exit == Exit::Signal(libc::SIGSYS) {
            "seccomp_denial"
        } else if self.tmp_exceeded {
            "tmp_limit"
        } else if self.memory_killed || out_of_memory(&String::from_utf8_lossy(&self.stderr)) {
            "memory_limit"
        } else if matches!(self.exit, Exit::Signal(_)) {
            "killed"
        } else {
            "error"
        }
    }

    /// dify's `error` field: "" on success, else `process exited with code N\n`, at most one
    /// synthetic line, then the whole stderr.
    pub fn error_text(&self) -> String {
        if self.success() {
            return String::new();
        }
        let mut s = format!("process exited with code {}\n", self.exit_code());
        let stderr = String::from_utf8_lossy(&self.stderr);
        if self.timed_out {
            s.push_str("error: timeout\n");
        } else if let Some(stream) = self.truncated {
            let name = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            s.push_str(&format!(
                "error: output limit exceeded: {name} is longer than {} bytes and was truncated\n",
                self.limits.output_bytes
            ));
        } else if self.exit == Exit::Signal(libc::SIGSYS) {
            s.push_str("error: operation not permitted\n");
        } else if self.tmp_exceeded {
            s.push_str(&format!(
                "error: /tmp limit exceeded ({} MiB, {} entries, {} levels per script)\n",
                self.limits.tmp_bytes >> 20,
                crate::runtime::tmpwatch::MAX_ENTRIES,
                crate::runtime::tmpwatch::MAX_DEPTH
            ));
        } else if self.memory_killed || out_of_memory(&stderr) {
            s.push_str(&format!(
                "error: memory limit exceeded ({} MiB per script)\n",
                self.limits.memory_bytes >> 20
            ));
        } else if self.exit == Exit::Signal(libc::SIGXCPU) {
            s.push_str("error: cpu time limit exceeded\n");
        } else if self.exit == Exit::Signal(libc::SIGKILL) {
            s.push_str("error: killed (cpu time or memory limit)\n");
        } else if let Exit::Signal(sig) = self.exit {
            s.push_str(&format!("error: killed by signal {sig}\n"));
        }
        s.push_str(&stderr);
        s
    }
}

/// What interpreters print when an allocation fails: Python's MemoryError; V8's fatal heap
/// errors ("Reached heap limit", "CALL_AND_RETRY_LAST Allocation failed - JavaScript heap out
/// of memory", "Fatal process OOM in ..." when a reservation fails); Node's failed Buffer
/// allocation; C++'s bad_alloc thrown out of V8 or a native module.
fn out_of_memory(stderr: &str) -> bool {
    [
        "MemoryError",
        "JavaScript heap out of memory",
        "Fatal process OOM",
        "Array buffer allocation failed",
        "std::bad_alloc",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}
