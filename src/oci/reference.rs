//! Image references `name[:tag]`, validated against the grammar of distribution/reference
//! (what docker, podman, skopeo and containerd accept), so a bad `--tag` fails at build time
//! with a reason instead of at `docker load` time with a cryptic one.
//!
//! ```text
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := host [':' port];  host := domain-component ['.' domain-component]* | '[' ipv6 ']'
//! domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! path-component   := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
//! tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! ```
//! The name is at most 255 characters. Digests (`@sha256:…`) are not accepted: we are naming
//! an image we write, not pointing at one.

use super::OciError;

/// A parsed `name:tag`; the tag defaults to `latest` as docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub tag: String,
}

impl Reference {
    pub fn parse(reference: &str) -> Result<Reference, OciError> {
        let bad = |reason: String| OciError::InvalidTag {
            tag: reference.to_owned(),
            reason,
        };
        if reference.is_empty() {
            return Err(bad(
                "it is empty; use name[:tag], e.g. prebake-python:1.0".into()
            ));
        }
        if reference.contains('@') {
            return Err(bad(
                "digest references (@sha256:...) cannot name an image being written; use name[:tag]"
                    .into(),
            ));
        }
        // The tag is after the last ':' unless that ':' belongs to a registry port
        // (`localhost:5000/app`), which is the case when a '/' follows it.
        let (name, tag) = match reference.rfind(':') {
            Some(i) if !reference[i + 1..].contains('/') => {
                (&reference[..i], Some(&reference[i + 1..]))
            }
            _ => (reference, None),
        };
        check_name(name).map_err(&bad)?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(&bad)?;
        }
        Ok(Reference {
            name: name.to_owned(),
            tag: tag.unwrap_or("latest").to_owned(),
        })
    }

    /// `name:tag`, the form for `RepoTags` and `io.containerd.image.name`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// `name:tag` with docker's defaults made explicit (`prebake:1` ->
    /// `docker.io/library/prebake:1`): containerd stores images under this form and the
    /// kubelet looks them up by it, so a short name would never match a pod's `image:`.
    pub fn qualified(&self) -> String {
        // Docker's rule: the first component is a registry host only if it has a '.' or ':'
        // or is "localhost" (or has upper case, which a repository name cannot).
        let has_domain = match self.name.split_once('/') {
            Some((first, _)) => {
                first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase())
            }
            None => false,
        };
        if has_domain {
            self.full()
        } else if self.name.contains('/') {
            format!("docker.io/{}", self.full())
        } else {
            format!("docker.io/library/{}", self.full())
        }
    }
}

/// Checks `tag` (a full reference, `name[:tag]`) without keeping the parse.
pub fn validate_tag(tag: &str) -> Result<(), OciError> {
    Reference::parse(tag).map(|_| ())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the repository name before ':' is empty".into());
    }
    if name.len() > 255 {
        return Err(format!(
            "the repository name is {} characters long; the limit is 255",
            name.len()
        ));
    }
    let components: Vec<&str> = name.split('/').collect();
    for (i, component) in components.iter().enumerate() {
        // Only the first of several components may be a registry host (upper case, port).
        let may_be_domain = i == 0 && components.len() > 1;
        if may_be_domain && is_domain(component) {
            continue;
        }
        check_path_component(component).map_err(|why| {
            if may_be_domain {
                format!("{why} (and it is not a valid registry host either)")
            } else {
                why
            }
        })?;
    }
    Ok(())
}

fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("empty path component (leading, trailing or double '/')".into());
    }
    if let Some(ch) = c.chars().find(|ch| ch.is_ascii_uppercase()) {
        return Err(format!(
            "uppercase {ch:?} in {c:?}: repository names must be lowercase"
        ));
    }
    if let Some(ch) = c
        .chars()
        .find(|ch| !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(format!(
            "character {ch:?} in {c:?} is not allowed: repository names use a-z, 0-9 and the separators '.', '_', '__', '-'"
        ));
    }
    // Separators must sit between alphanumeric runs: "a-b", "a__b", "a---b" but not "a..b",
    // "a___b", "-a" or "a.".
    let bytes = c.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run_start = i;
        let alnum = bytes[i].is_ascii_alphanumeric();
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() == alnum {
            i += 1;
        }
        if alnum {
            continue;
        }
        if run_start == 0 {
            return Err(format!("{c:?} must start with a letter or digit"));
        }
        let run = &c[run_start..i];
        let separator = run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-');
        if !separator {
            return Err(format!(
                "{run:?} in {c:?} is not a separator: use one '.', one or two '_', or dashes"
            ));
        }
    }
    if !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(format!("{c:?} must end with a letter or digit"));
    }
    Ok(())
}

fn is_domain(c: &str) -> bool {
    let (host, port) = if c.starts_with('[') {
        // "[v6]" or "[v6]:port": the colons inside the brackets belong to the address.
        let Some(close) = c.find(']') else {
            return false;
        };
        match &c[close + 1..] {
            "" => (&c[..=close], None),
            rest => match rest.strip_prefix(':') {
                Some(p) => (&c[..=close], Some(p)),
                None => return false,
            },
        }
    } else {
        match c.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (c, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !host.is_empty()
        && host.split('.').all(|dc| {
            let b = dc.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    if tag.len() > 128 {
        return Err(format!(
            "the tag is {} characters long; the limit is 128",
            tag.len()
        ));
    }
    if let Some(ch) = tag
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-')))
    {
        return Err(format!(
            "character {ch:?} is not allowed in the tag {tag:?}: tags use A-Z, a-z, 0-9, '_', '.', '-'"
        ));
    }
    if matches!(tag.as_bytes()[0], b'.' | b'-') {
        return Err(format!(
            "the tag {tag:?} must start with a letter, digit or '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(r: &str) -> (String, String) {
        let p = Reference::parse(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        (p.name, p.tag)
    }

    fn reason(r: &str) -> String {
        match Reference::parse(r) {
            Err(OciError::InvalidTag { reason, .. }) => reason,
            other => panic!("{r}: expected InvalidTag, got {other:?}"),
        }
    }

    #[test]
    fn accepts_what_docker_accepts() {
        assert_eq!(ok("prebake"), ("prebake".into(), "latest".into()));
        assert_eq!(ok("prebake:1.0"), ("prebake".into(), "1.0".into()));
        assert_eq!(
            ok("localhost:5000/team/py_3-x:V1.2_rc-1"),
            ("localhost:5000/team/py_3-x".into(), "V1.2_rc-1".into())
        );
        assert_eq!(
            ok("Registry.Example.com/a__b/c---d.e"),
            ("Registry.Example.com/a__b/c---d.e".into(), "latest".into())
        );
        assert_eq!(ok("[::1]:5000/x:y"), ("[::1]:5000/x".into(), "y".into()));
        assert_eq!(ok("my_org/app:_t"), ("my_org/app".into(), "_t".into()));
        ok(&format!("a:{}", "t".repeat(128)));
    }

    #[test]
    fn qualifies_like_docker() {
        let q = |r: &str| Reference::parse(r).unwrap().qualified();
        assert_eq!(q("prebake"), "docker.io/library/prebake:latest");
        assert_eq!(q("team/prebake:1"), "docker.io/team/prebake:1");
        assert_eq!(q("ghcr.io/team/prebake:1"), "ghcr.io/team/prebake:1");
        assert_eq!(q("localhost/p:1"), "localhost/p:1");
        assert_eq!(q("localhost:5000/p:1"), "localhost:5000/p:1");
    }

    #[test]
    fn rejects_with_a_reason() {
        assert!(reason("").contains("empty"));
        assert!(reason("Prebake:1").contains("lowercase"));
        assert!(reason("pre bake").contains("' '"));
        assert!(reason("prebake:1.0!").contains("'!'"));
        assert!(reason("prebake:").contains("empty"));
        assert!(reason("prebake:-x").contains("must start"));
        assert!(reason("a..b").contains("separator"));
        assert!(reason("a___b").contains("separator"));
        assert!(reason("-a").contains("start"));
        assert!(reason("a-").contains("end"));
        assert!(reason("a//b").contains("empty path component"));
        assert!(reason("x/").contains("empty path component"));
        assert!(reason("x@sha256:00").contains("digest"));
        assert!(reason(&format!("a:{}", "t".repeat(129))).contains("128"));
        assert!(reason(&"a".repeat(256)).contains("255"));
        assert!(reason("under_score.Host/x").contains("registry host"));
    }
}
