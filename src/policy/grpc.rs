//! The listener's switches for BuildKit's `/grpc` calls (`buildkit.allow`):
//! what [`crate::buildkit`] lets through that it refuses by default. (The
//! `/session` hijack and `POST /build?version=2` are [`super::buildkit`].)
//!
//! ```yaml
//! buildkit:
//!   allow: [network.host, security.insecure, git, frontends, prune_all, disk_usage]
//! ```

/// The listener's `buildkit.allow` switches; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    /// `network.host`: the entitlement, host-network RUN steps,
    /// `force-network-mode=host`.
    pub network_host: bool,
    /// `security.insecure`: the entitlement and privileged RUN steps.
    pub insecure: bool,
    /// `git`: git sources and git build contexts.
    pub git: bool,
    /// `frontends`: frontends other than the built-in Dockerfile one
    /// (`gateway.v0`, `BUILDKIT_SYNTAX`).
    pub frontends: bool,
    /// `prune_all`: `Prune` with `all`.
    pub prune_all: bool,
    /// `disk_usage`: `DiskUsage` of the shared build cache.
    pub disk_usage: bool,
}

impl Allow {
    /// The switches named in a config list.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Allow, String> {
        let mut a = Allow::default();
        for name in names {
            let flag = match name {
                "network.host" => &mut a.network_host,
                "security.insecure" => &mut a.insecure,
                "git" => &mut a.git,
                "frontends" => &mut a.frontends,
                "prune_all" => &mut a.prune_all,
                "disk_usage" => &mut a.disk_usage,
                other => {
                    return Err(format!(
                        "unknown buildkit.allow entry {other:?} (network.host, security.insecure, git, frontends, prune_all, disk_usage)"
                    ))
                }
            };
            *flag = true;
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    fn policy(yaml: &str) -> Result<crate::policy::Policy, crate::policy::PolicyError> {
        let config: PolicyConfig = serde_yaml::from_str(yaml).unwrap();
        config.validate()
    }

    #[test]
    fn the_config_lists_what_is_allowed() {
        assert_eq!(policy("{}").unwrap().grpc, Allow::default());
        let p = policy("buildkit: { allow: [network.host, prune_all] }").unwrap();
        assert_eq!(
            p.grpc,
            Allow {
                network_host: true,
                prune_all: true,
                ..Allow::default()
            }
        );
        let err = policy("buildkit: { allow: [host] }").unwrap_err();
        assert!(
            err.to_string().contains("unknown buildkit.allow entry"),
            "{err}"
        );
    }
}
