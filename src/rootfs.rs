//! Deterministic tar writer (stub).
