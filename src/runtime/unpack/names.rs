//! Archive names, checked lexically: split into components, refusing anything that could
//! leave the root.

pub(super) type Comps = Vec<Vec<u8>>;

/// Lexically split an archive name into components, refusing anything that could leave the
/// root. `.` and empty components (from `./x` or `a//b`) are dropped; an empty result names
/// the root itself.
pub(super) fn split_name(raw: &[u8]) -> Result<Comps, String> {
    if raw.is_empty() {
        return Err("empty name".into());
    }
    if raw[0] == b'/' {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("`..` path component".into()),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Whether a relative symlink target, resolved lexically from the directory at `depth`
/// below the root, climbs above the root.
pub(super) fn escapes_root(target: &[u8], mut depth: usize) -> bool {
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_checked() {
        assert_eq!(
            split_name(b"./usr//lib/").unwrap(),
            vec![b"usr".to_vec(), b"lib".to_vec()]
        );
        assert!(split_name(b"./").unwrap().is_empty());
        assert!(split_name(b"/etc/passwd").is_err());
        assert!(split_name(b"a/../../x").is_err());
        assert!(split_name(b"..").is_err());
        assert!(split_name(b"").is_err());
    }

    #[test]
    fn relative_symlink_escape_is_lexical() {
        assert!(!escapes_root(b"libfoo.so.1", 0));
        assert!(escapes_root(b"..", 0));
        assert!(!escapes_root(b"../lib", 1));
        assert!(escapes_root(b"../../..", 2));
        assert!(!escapes_root(b"a/../../x", 1));
        assert!(escapes_root(b"a/../../x", 0));
    }
}
