//! Seccomp policies (stub).
