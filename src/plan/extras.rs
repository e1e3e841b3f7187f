//! What DT_NEEDED never shows but real code needs (stub).
