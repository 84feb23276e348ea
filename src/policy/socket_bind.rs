//! Docker socket binds: a container that bind-mounts the Docker socket gets a
//! cistern socket of its own instead.
//!
//! Resource reapers (testcontainers' Ryuk) and docker-in-docker style jobs ask
//! for `-v /var/run/docker.sock:/var/run/docker.sock`: the path as the *client*
//! knows its Docker socket. The daemon resolves a bind source on the host, so
//! forwarding it unchanged would hand the container the real daemon. This stage
//! rewrites the source of such a bind (`HostConfig.Binds` entry or `Mounts`
//! entry of type `bind`) to [`super::Sockets::to`]: the path of a socket that the
//! driver then serves for this container alone, with the creator's tenant
//! fixed ([`crate::tenancy::jobs`]), and records the entry in [`Ctx::mapped`]: the
//! mounts rule then lets exactly that bind through, and judges every other
//! bind as before. The target path and read-only flag stay the client's;
//! propagation is still judged.
//!
//! Why a socket of its own, and not the socket the create came through: on a
//! listener that identifies clients by their unix uid, the processes of a
//! container run as any uid they like (`--user`, root by default), so a
//! container holding the listener's socket could act as any tenant. A
//! container socket answers as its creator, whatever uid or credentials its
//! clients present.
//!
//! Which sources count as "the Docker socket" is the policy's `socket_binds`
//! (default `/var/run/docker.sock` and `/run/docker.sock`), plus the
//! connection's own socket path ([`super::Sockets::own`]) and, inside a
//! container with a socket of its own, where it sees that socket
//! ([`super::Sockets::seen_at`]); compared on lexically
//! cleaned paths. An empty list turns the mapping off: such binds are then
//! plain host binds, judged by the allowlist. Without a socket to map to
//! (`Sockets::to` is `None`) the bind is refused with rule `socket_bind`.
//!
//! This is a policy stage, not an ownership one: it decides *what* host path a
//! container may see, I/O-free, on the canonical body, and must run before the
//! mounts rule that would refuse the bind.

use super::{Ctx, Json, Refusal};
use crate::wire::mounts::{clean_components, split_bind};

/// The rule name of a refused Docker socket bind.
pub const RULE_SOCKET_BIND: &str = "socket_bind";

/// Indices of the `Binds` and `Mounts` entries mapped to the container's socket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub binds: Vec<usize>,
    pub mounts: Vec<usize>,
}

impl Mapped {
    /// Whether no bind was mapped.
    pub fn is_empty(&self) -> bool {
        self.binds.is_empty() && self.mounts.is_empty()
    }
}

/// Rewrites Docker socket binds in a create's `HostConfig` (see the module docs).
pub fn host_config(ctx: &mut Ctx<'_>, hc: &mut Json) -> Result<(), Refusal> {
    if ctx.policy.socket_binds.is_empty() {
        return Ok(());
    }
    if let Some(Json::Array(binds)) = hc.get_mut("Binds") {
        for (i, entry) in binds.iter_mut().enumerate() {
            let Json::String(spec) = entry else { continue };
            let Some((Some(source), _)) = split_bind(spec) else {
                continue;
            };
            if !is_docker_socket(ctx, source) {
                continue;
            }
            let field = format!("HostConfig.Binds[{i}]");
            // `source` is the spec's first part: the rest is `:target[:mode]`.
            let rest = spec[source.len()..].to_string();
            let source = source.to_string();
            if let Some(socket) = target(ctx, &field, &source)? {
                if socket.contains(':') {
                    ctx.deny(
                        RULE_SOCKET_BIND,
                        field,
                        format_args!("the cistern socket path {socket:?} cannot be written in a bind spec; use a mount of type bind"),
                    )?;
                    continue;
                }
                *spec = format!("{socket}{rest}");
                note(ctx, &field, &source, &socket);
                ctx.mapped.binds.push(i);
            }
        }
    }
    if let Some(Json::Array(mounts)) = hc.get_mut("Mounts") {
        for (i, m) in mounts.iter_mut().enumerate() {
            if m.get("Type").and_then(Json::as_str) != Some("bind") {
                continue;
            }
            let Some(source) = m.get("Source").and_then(Json::as_str) else {
                continue;
            };
            if !is_docker_socket(ctx, source) {
                continue;
            }
            let source = source.to_string();
            let field = format!("HostConfig.Mounts[{i}].Source");
            if let Some(socket) = target(ctx, &field, &source)? {
                m.set("Source", Json::string(socket.clone()));
                note(ctx, &field, &source, &socket);
                ctx.mapped.mounts.push(i);
            }
        }
    }
    Ok(())
}

/// Whether a bind source names the Docker socket as a client knows it.
fn is_docker_socket(ctx: &Ctx<'_>, source: &str) -> bool {
    if !source.starts_with('/') {
        return false;
    }
    let cleaned = clean_components(source);
    let same = |path: &str| clean_components(path) == cleaned;
    ctx.policy.socket_binds.iter().any(|p| same(p))
        || [ctx.sockets.own, ctx.sockets.seen_at]
            .into_iter()
            .flatten()
            .any(|s| s.to_str().is_some_and(same))
}

/// The host path to bind instead, or the refusal when there is none.
fn target(ctx: &mut Ctx<'_>, field: &str, source: &str) -> Result<Option<String>, Refusal> {
    match ctx.sockets.to.map(|s| s.to_str()) {
        Some(Some(socket)) => Ok(Some(socket.to_string())),
        Some(None) => ctx
            .deny(
                RULE_SOCKET_BIND,
                field,
                format_args!("the Docker socket {source:?} cannot be mapped: the cistern socket path is not UTF-8"),
            )
            .map(|()| None),
        None => ctx
            .deny(
                RULE_SOCKET_BIND,
                field,
                format_args!("a bind of the Docker socket {source:?} needs a cistern socket to map it to, and none can be made for this request"),
            )
            .map(|()| None),
    }
}

fn note(ctx: &mut Ctx<'_>, field: &str, source: &str, socket: &str) {
    tracing::info!(target: "cistern::policy", field, source, socket, "Docker socket bind mapped to the container's own cistern socket");
    ctx.notes.push(format!(
        "{field}: Docker socket {source} mapped to {socket}"
    ));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testutil::*;
    use super::super::{Policy, Sockets, Verdict};
    use super::*;

    /// The socket cistern would serve for the container.
    const SOCKET: &str = "/run/cistern/job-7.sock";
    /// The listener's socket the create came through.
    const OWN: &str = "/run/cistern/docker.sock";

    fn judge(policy: &Policy, body: &str, to: Option<&str>) -> Result<String, Refusal> {
        match policy.judge_body_on(
            &route("POST", "/v1.41/containers/create"),
            body.as_bytes(),
            Sockets {
                own: Some(Path::new(OWN)),
                seen_at: None,
                to: to.map(Path::new),
            },
        ) {
            Verdict::Allow(i) => Ok(String::from_utf8(i.body.to_bytes().to_vec()).expect("utf-8")),
            Verdict::Refuse { refusal, .. } => Err(refusal),
        }
    }

    #[test]
    fn binds_of_the_docker_socket_become_the_containers_socket() {
        let p = policy_yaml("limits: none"); // whole bodies compared
        for (bind, expected) in [
            (
                "/var/run/docker.sock:/var/run/docker.sock",
                "/run/cistern/job-7.sock:/var/run/docker.sock",
            ),
            (
                "/run/docker.sock:/d.sock:ro",
                "/run/cistern/job-7.sock:/d.sock:ro",
            ),
            (
                "/var/run/../run/docker.sock:/s",
                "/run/cistern/job-7.sock:/s",
            ),
            (
                "//var/run/docker.sock:/s:rw,z",
                "/run/cistern/job-7.sock:/s:rw,z",
            ),
            // The socket the client came through is its Docker socket too.
            ("/run/cistern/docker.sock:/s", "/run/cistern/job-7.sock:/s"),
        ] {
            let body = format!(r#"{{"Image":"x","HostConfig":{{"Binds":["{bind}"]}}}}"#);
            assert_eq!(
                judge(&p, &body, Some(SOCKET)).unwrap(),
                format!(r#"{{"Image":"x","HostConfig":{{"Binds":["{expected}"]}}}}"#),
                "{bind}"
            );
        }
    }

    #[test]
    fn mounts_of_type_bind_are_mapped_with_their_options_kept() {
        let p = policy_yaml("limits: none"); // whole bodies compared
        let body = r#"{"Image":"x","HostConfig":{"mounts":[{"type":"bind","source":"/var/run/docker.sock","target":"/var/run/docker.sock","readonly":true},{"Type":"volume","Source":"v","Target":"/v"}]}}"#;
        assert_eq!(
            judge(&p, body, Some(SOCKET)).unwrap(),
            r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/run/cistern/job-7.sock","Target":"/var/run/docker.sock","ReadOnly":true},{"Type":"volume","Source":"v","Target":"/v"}]}}"#
        );
    }

    #[test]
    fn only_the_mapped_entry_passes_the_mounts_rule() {
        let p = Policy::default();
        for (body, rule, field) in [
            // Another host path next to the socket is still a host bind.
            (
                r#"{"Image":"x","HostConfig":{"Binds":["/var/run/docker.sock:/s","/etc:/e"]}}"#,
                "bind_mount",
                "HostConfig.Binds[1]",
            ),
            // The socket's directory, or a path beside it, is not the socket.
            (
                r#"{"Image":"x","HostConfig":{"Binds":["/var/run:/r"]}}"#,
                "bind_mount",
                "HostConfig.Binds[0]",
            ),
            (
                r#"{"Image":"x","HostConfig":{"Binds":["/var/run/docker.sock.d:/r"]}}"#,
                "bind_mount",
                "HostConfig.Binds[0]",
            ),
            (
                r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/var/run/docker.sock","Target":"/s","BindOptions":{"Propagation":"rshared"}}]}}"#,
                "mount_propagation",
                "HostConfig.Mounts[0].BindOptions.Propagation",
            ),
            // A volume named like the socket is not a bind: the volume rules judge it.
            (
                r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"volume","Source":"/var/run/docker.sock","Target":"/s"}]}}"#,
                "bind_mount",
                "HostConfig.Mounts[0].Source",
            ),
            (
                r#"{"Image":"x","HostConfig":{"Privileged":true,"Binds":["/var/run/docker.sock:/s"]}}"#,
                "privileged",
                "HostConfig.Privileged",
            ),
        ] {
            let r = judge(&p, body, Some(SOCKET)).unwrap_err();
            assert_eq!((r.rule, r.field.as_str()), (rule, field), "{body}");
        }
    }

    #[test]
    fn without_a_socket_to_map_to_the_bind_is_refused_with_its_own_message() {
        let p = Policy::default();
        let r = judge(
            &p,
            r#"{"Image":"x","HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            (r.rule, r.field.as_str(), r.status),
            (
                RULE_SOCKET_BIND,
                "HostConfig.Binds[0]",
                http::StatusCode::FORBIDDEN
            )
        );
        assert_eq!(
            r.message,
            "cistern: a bind of the Docker socket \"/var/run/docker.sock\" needs a cistern socket to map it to, and none can be made for this request (policy conservative, HostConfig.Binds[0])"
        );
        let r = judge(
            &p,
            r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/run/docker.sock","Target":"/s"}]}}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(r.rule, RULE_SOCKET_BIND);
    }

    #[test]
    fn configured_paths_replace_the_defaults_and_empty_turns_mapping_off() {
        let p = policy_yaml("socket_binds: [/srv/ci/docker.sock]\nlimits: none");
        assert_eq!(
            judge(
                &p,
                r#"{"Image":"x","HostConfig":{"Binds":["/srv/ci/docker.sock:/s"]}}"#,
                Some(SOCKET)
            )
            .unwrap(),
            r#"{"Image":"x","HostConfig":{"Binds":["/run/cistern/job-7.sock:/s"]}}"#
        );
        let r = judge(
            &p,
            r#"{"Image":"x","HostConfig":{"Binds":["/var/run/docker.sock:/s"]}}"#,
            Some(SOCKET),
        )
        .unwrap_err();
        assert_eq!(r.rule, "bind_mount");
        let off = policy_yaml("socket_binds: []");
        for bind in ["/var/run/docker.sock:/s", "/run/cistern/docker.sock:/s"] {
            let body = format!(r#"{{"Image":"x","HostConfig":{{"Binds":["{bind}"]}}}}"#);
            assert_eq!(
                judge(&off, &body, Some(SOCKET)).unwrap_err().rule,
                "bind_mount",
                "{bind}"
            );
        }
    }

    #[test]
    fn audit_mode_forwards_the_unmapped_body_on_tcp() {
        let p = policy_yaml("audit: true");
        match p.judge_body(
            &route("POST", "/v1.41/containers/create"),
            br#"{"Image":"x","HostConfig":{"Binds":["/var/run/docker.sock:/s"]}}"#,
        ) {
            Verdict::Refuse { all, .. } => {
                let rules: Vec<_> = all.iter().map(|r| r.rule).collect();
                assert_eq!(rules, [RULE_SOCKET_BIND, "bind_mount"]);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn inside_a_container_the_socket_docker_host_names_is_the_docker_socket() {
        let p = policy_yaml("limits: none"); // whole bodies compared
        let judge_inside = |seen_at: Option<&str>| {
            match p.judge_body_on(
            &route("POST", "/v1.41/containers/create"),
            br#"{"Image":"x","HostConfig":{"Binds":["/run/cistern/docker.sock:/var/run/docker.sock"]}}"#,
            Sockets {
                own: Some(Path::new("/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock")),
                seen_at: seen_at.map(Path::new),
                to: Some(Path::new(SOCKET)),
            },
        ) {
            Verdict::Allow(i) => Ok(String::from_utf8(i.body.to_bytes().to_vec()).unwrap()),
            Verdict::Refuse { refusal, .. } => Err(refusal),
        }
        };
        assert_eq!(
            judge_inside(Some("/run/cistern/docker.sock")).unwrap(),
            r#"{"Image":"x","HostConfig":{"Binds":["/run/cistern/job-7.sock:/var/run/docker.sock"]}}"#
        );
        // Elsewhere that path is a host path like any other.
        assert_eq!(judge_inside(None).unwrap_err().rule, "bind_mount");
    }

    #[test]
    fn another_containers_socket_is_a_host_bind_not_the_docker_socket() {
        // A mapped body sent again names a container socket as its source:
        // that is some container's tenant, not the client's, so it is judged
        // as the host path it is.
        let p = Policy::default();
        let once = judge(
            &p,
            r#"{"Image":"x","HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock:ro"]}}"#,
            Some(SOCKET),
        )
        .unwrap();
        let r = judge(&p, &once, Some("/run/cistern/job-8.sock")).unwrap_err();
        assert_eq!(
            (r.rule, r.field.as_str()),
            ("bind_mount", "HostConfig.Binds[0]")
        );
    }
}
