//! Where a push goes: `REF` (`[host[:port]/]path[:tag]`) split into the registry host, the
//! repository and the tags, with docker's defaults for names without a host.

use super::PushError;
use crate::oci::reference::{validate_tag, Reference};

/// Docker Hub's name in references, in config.json (`https://index.docker.io/v1/`) and its API.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed push destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` as written (`docker.io` for names without a host).
    pub registry: String,
    /// The repository inside the registry (`library/x` for a bare Docker Hub name).
    pub repository: String,
    /// Tags to point at the pushed image: REF's own, then each `--tag`, without repeats.
    pub tags: Vec<String>,
}

impl Target {
    /// Parses `reference` and adds `extra_tags` (bare tags, `1.0`, not `name:1.0`). A reference
    /// without a tag gets `latest` only when no `--tag` is given, as `docker push` would.
    pub fn parse(reference: &str, extra_tags: &[String]) -> Result<Target, PushError> {
        let bad = |reason: String| PushError::BadReference {
            reference: reference.to_owned(),
            reason,
        };
        let parsed =
            Reference::parse(reference).map_err(|e| bad(crate::error::Chain(&e).to_string()))?;
        let explicit_tag = parsed.full() == reference;
        let mut tags: Vec<String> = Vec::new();
        if explicit_tag || extra_tags.is_empty() {
            tags.push(parsed.tag.clone());
        }
        for t in extra_tags {
            if t.contains([':', '/', '@']) {
                return Err(bad(format!(
                    "--tag {t:?}: give a bare tag (e.g. --tag 1.0); the repository comes from REF"
                )));
            }
            validate_tag(&format!("x:{t}")).map_err(|e| bad(format!("--tag {t:?}: {e}")))?;
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let (registry, repository) = split_registry(&parsed.name);
        Ok(Target {
            registry,
            repository,
            tags,
        })
    }

    /// `https://` or `http://` plus the host the API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `host/repository` as a user would write it (`docker.io/library/x`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether the registry is on this machine, where plain http is as safe as https and what
    /// docker also allows without configuration.
    pub fn is_localhost(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            // "[::1]:5000" or "host:5000"; a bare "[::1]" has its colons inside brackets.
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => h,
            _ => self.registry.as_str(),
        };
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Docker's rule: the first component is a registry host only if it has a '.' or ':', is
/// `localhost`, or has upper case (which a repository cannot).
fn split_registry(name: &str) -> (String, String) {
    if let Some((first, rest)) = name.split_once('/') {
        if first.contains(['.', ':', '['])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase())
        {
            let registry = if first == "index.docker.io" {
                DOCKER_HUB
            } else {
                first
            };
            let repository = if registry == DOCKER_HUB && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_owned()
            };
            return (registry.to_owned(), repository);
        }
        return (DOCKER_HUB.to_owned(), name.to_owned());
    }
    (DOCKER_HUB.to_owned(), format!("library/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(r: &str, tags: &[&str]) -> Target {
        let tags: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
        Target::parse(r, &tags).unwrap_or_else(|e| panic!("{r}: {e}"))
    }

    #[test]
    fn splits_like_docker() {
        let x = t("127.0.0.1:5000/team/app:1", &[]);
        assert_eq!(
            (x.registry.as_str(), x.repository.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        assert_eq!(x.tags, ["1"]);
        assert!(x.is_localhost());
        let hub = t("app", &[]);
        assert_eq!(hub.name(), "docker.io/library/app");
        assert_eq!(hub.tags, ["latest"]);
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert!(!hub.is_localhost());
        assert_eq!(t("team/app", &[]).repository, "team/app");
        assert_eq!(t("ghcr.io/o/a:v", &[]).registry, "ghcr.io");
        assert!(t("localhost/a", &[]).is_localhost());
        assert!(t("[::1]:5000/a", &[]).is_localhost());
        assert!(!t("registry.example.com:443/a", &[]).is_localhost());
    }

    #[test]
    fn tags_come_from_ref_and_flags() {
        assert_eq!(t("h:1/a:1.0", &["latest", "1.0"]).tags, ["1.0", "latest"]);
        // No tag in REF: only the --tags, not an implicit "latest".
        assert_eq!(t("h:1/a", &["v2"]).tags, ["v2"]);
        let err = Target::parse("h:1/a", &["h:1/a:v2".into()]).unwrap_err();
        assert!(err.to_string().contains("bare tag"), "{err}");
        let err = Target::parse("h:1/a", &["-bad".into()]).unwrap_err();
        assert!(err.to_string().contains("-bad"), "{err}");
        assert!(Target::parse("a/Bad", &[]).is_err());
    }
}
