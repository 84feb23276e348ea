//! What a tenant may ask of BuildKit's `moby.buildkit.v1.Control` service:
//! the I/O-free judgement of one request message, before anything reaches
//! the daemon.
//!
//! `Solve` ([`judge_solve`]) is refused (gRPC `PERMISSION_DENIED`, the rule
//! named) for:
//! * the entitlements `network.host` and `security.insecure` (rule
//!   `buildkit_entitlement`), and any other (BuildKit knows no others);
//! * LLB (the request's `Definition`, each frontend input's, and each nested
//!   `BuildOp`'s), every `pb.Op` decoded: an `ExecOp` with network `HOST`
//!   (rule `buildkit_network_host`) or security `INSECURE` (rule
//!   `buildkit_insecure`); a `git://` source (rule `buildkit_git`: BuildKit
//!   runs `git` on the host, as the legacy builder's `remote` does, refused
//!   there as `build_remote`); a source of another scheme than
//!   `docker-image`, `local`, `http(s)` or `git` (rule `buildkit_source`);
//! * frontend attributes that reach the host: `force-network-mode=host` (rule
//!   `buildkit_network_host`), a git URL as `context` (rule `buildkit_git`),
//!   `build-arg:BUILDKIT_SYNTAX` (rule `buildkit_frontend`: the build would
//!   run a frontend image whose LLB cistern never sees); a frontend other
//!   than the built-in `dockerfile.v0` or none (rule `buildkit_frontend`).
//!
//! Each is allowed by the listener's `buildkit.allow` ([`Allow`]). What is
//! left for the driver, which needs state: the sessions the request names
//! (its own and each `local://` source's `local.session`) must be ones the
//! tenant opened, and the image names the `moby`/`image` exporter's `name`
//! gives must be the tenant's to point ([`Solve`]).
//!
//! `Prune` with `all` is refused (rule `buildkit_prune_all`) and
//! `DiskUsage` too (rule `buildkit_disk_usage`: its records describe other
//! tenants' build steps), unless allowed. The build cache is shared, as the
//! legacy `/build/prune` (passed as is) shares it: a prune without `all`
//! only drops cache no build uses.

use std::collections::BTreeSet;

use prost::Message;

use super::frame;
use super::proto::{self, Definition, SolveRequest};
pub use crate::policy::grpc::Allow;

/// gRPC status codes cistern answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 3,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unavailable = 14,
}

/// A refused request: the gRPC status the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub code: Code,
    pub rule: &'static str,
    /// `cistern: ... (policy <name>, rule <rule>)`.
    pub message: String,
}

impl Denied {
    /// A policy refusal.
    pub fn policy(policy: &str, rule: &'static str, what: impl std::fmt::Display) -> Denied {
        Denied {
            code: Code::PermissionDenied,
            rule,
            message: format!("cistern: {what} (policy {policy}, rule {rule})"),
        }
    }

    /// A request cistern cannot read.
    pub fn malformed(what: impl std::fmt::Display) -> Denied {
        Denied {
            code: Code::InvalidArgument,
            rule: "buildkit_malformed",
            message: format!("cistern: {what} (rule buildkit_malformed)"),
        }
    }

    /// Whether audit mode may log it and forward the request anyway.
    pub fn is_policy(&self) -> bool {
        self.code == Code::PermissionDenied
    }
}

/// What the driver still checks of an accepted `Solve`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Solve {
    /// The build's ref: `Status` for it is the tenant's.
    pub r#ref: String,
    /// Every session the build would read from (the request's own, each
    /// `local://` source's): each must be one the tenant opened.
    pub sessions: BTreeSet<String>,
    /// The image names the exporter would point, as the client wrote them.
    pub image_names: Vec<String>,
    /// Whether a frontend makes the build's LLB (cistern sees its
    /// attributes, not the LLB it makes inside the daemon).
    pub frontend: bool,
}

/// LLB nesting (`BuildOp` inside `BuildOp`) cistern follows.
const MAX_DEPTH: usize = 8;
/// Ops per request, over every definition.
const MAX_OPS: usize = 100_000;

/// The policy name and switches a request is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub policy: &'a str,
    pub allow: &'a Allow,
    /// The tenant's cache mount namespace: a cache mount's id must be
    /// under it (`<namespace>/...`, as the Dockerfile frontend makes them
    /// with `BUILDKIT_CACHE_MOUNT_NS`).
    pub cache_namespace: &'a str,
}

impl Rules<'_> {
    fn deny(&self, rule: &'static str, what: impl std::fmt::Display) -> Denied {
        Denied::policy(self.policy, rule, what)
    }
}

/// Decodes a unary request's one message.
pub fn message<M: Message + Default>(body: &[u8]) -> Result<M, Denied> {
    let msg = frame::single(body).map_err(Denied::malformed)?;
    M::decode(msg).map_err(|e| Denied::malformed(format_args!("unreadable request: {e}")))
}

/// `Control/Solve`: the request body (framed) judged; see the module docs.
pub fn judge_solve(rules: Rules<'_>, body: &[u8]) -> Result<Solve, Denied> {
    let req: SolveRequest = message(body)?;
    let mut out = Solve {
        r#ref: req.r#ref.clone(),
        frontend: !req.frontend.is_empty(),
        ..Solve::default()
    };
    if !req.session.is_empty() {
        out.sessions.insert(req.session.clone());
    }
    for e in &req.entitlements {
        let allowed = match e.as_str() {
            "network.host" => rules.allow.network_host,
            "security.insecure" => rules.allow.insecure,
            _ => false,
        };
        if !allowed {
            return Err(rules.deny(
                "buildkit_entitlement",
                format_args!("the build entitlement {e:?} is not allowed"),
            ));
        }
    }
    frontend(rules, &req)?;
    let mut ops = 0;
    if let Some(def) = &req.definition {
        definition(rules, def, 0, &mut ops, &mut out)?;
    }
    let mut inputs: Vec<_> = req.frontend_inputs.iter().collect();
    inputs.sort_by(|a, b| a.0.cmp(b.0));
    for (_, def) in inputs {
        definition(rules, def, 0, &mut ops, &mut out)?;
    }
    if matches!(req.exporter.as_str(), "moby" | "image") {
        if let Some(names) = req.exporter_attrs.get("name") {
            out.image_names = names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    Ok(out)
}

/// The frontend and its attributes.
fn frontend(rules: Rules<'_>, req: &SolveRequest) -> Result<(), Denied> {
    if !matches!(req.frontend.as_str(), "" | "dockerfile.v0") && !rules.allow.frontends {
        return Err(rules.deny(
            "buildkit_frontend",
            format_args!("the build frontend {:?} is not allowed", req.frontend),
        ));
    }
    let attrs = &req.frontend_attrs;
    if let Some(mode) = attrs.get("force-network-mode") {
        if mode.trim() == "host" && !rules.allow.network_host {
            return Err(rules.deny(
                "buildkit_network_host",
                "host networking for the build (force-network-mode=host) is not allowed",
            ));
        }
    }
    if attrs
        .get("build-arg:BUILDKIT_SYNTAX")
        .is_some_and(|s| !s.is_empty())
        && !rules.allow.frontends
    {
        return Err(rules.deny(
            "buildkit_frontend",
            "a frontend image (BUILDKIT_SYNTAX) is not allowed",
        ));
    }
    if attrs.get("context").is_some_and(|c| is_git_url(c)) && !rules.allow.git {
        return Err(rules.deny(
            "buildkit_git",
            "git build contexts fetched by the daemon are not allowed",
        ));
    }
    Ok(())
}

/// What the Dockerfile frontend of BuildKit eeb7b65ab7d6 takes for a git
/// context (`detectGitContext` and `gitutil`): `git://`, `git@`,
/// `github.com/`, or an http(s) URL whose path ends in `.git` (a `#ref`
/// may follow).
fn is_git_url(s: &str) -> bool {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("git://") || lower.starts_with("git@") || lower.starts_with("github.com/")
    {
        return true;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let path = lower.split('#').next().unwrap_or("");
        return path.ends_with(".git");
    }
    false
}

/// One definition: every op decoded and judged.
fn definition(
    rules: Rules<'_>,
    def: &Definition,
    depth: usize,
    ops: &mut usize,
    out: &mut Solve,
) -> Result<(), Denied> {
    if depth > MAX_DEPTH {
        return Err(Denied::malformed("build definitions nested too deep"));
    }
    for raw in &def.def {
        *ops += 1;
        if *ops > MAX_OPS {
            return Err(Denied::malformed("too many build operations"));
        }
        let op = proto::Op::decode(raw.as_slice())
            .map_err(|e| Denied::malformed(format_args!("unreadable build operation: {e}")))?;
        if let Some(exec) = &op.exec {
            if exec.network == proto::NET_MODE_HOST && !rules.allow.network_host {
                return Err(rules.deny(
                    "buildkit_network_host",
                    "a build step on the host's network is not allowed",
                ));
            }
            if !matches!(exec.network, 0..=2) {
                return Err(Denied::malformed(format_args!(
                    "unknown build network mode {}",
                    exec.network
                )));
            }
            if exec.security == proto::SECURITY_MODE_INSECURE && !rules.allow.insecure {
                return Err(rules.deny(
                    "buildkit_insecure",
                    "a privileged (insecure) build step is not allowed",
                ));
            }
            if !matches!(exec.security, 0 | 1) {
                return Err(Denied::malformed(format_args!(
                    "unknown build security mode {}",
                    exec.security
                )));
            }
            for mount in &exec.mounts {
                if mount.mount_type != proto::MOUNT_TYPE_CACHE {
                    continue;
                }
                let id = mount.cache_opt.as_ref().map_or("", |c| c.id.as_str());
                let own = id
                    .strip_prefix(rules.cache_namespace)
                    .is_some_and(|rest| rest.starts_with('/'));
                if !own {
                    return Err(rules.deny(
                        "buildkit_cache_mount",
                        format_args!(
                            "the cache mount {id:?} is not under this client's namespace {:?} (cache mounts are shared by every build that names them)",
                            rules.cache_namespace
                        ),
                    ));
                }
            }
        }
        if let Some(src) = &op.source {
            source(rules, src, out)?;
        }
        if let Some(build) = &op.build {
            if let Some(def) = &build.def {
                definition(rules, def, depth + 1, ops, out)?;
            }
        }
    }
    Ok(())
}

/// One source op.
fn source(rules: Rules<'_>, src: &proto::SourceOp, out: &mut Solve) -> Result<(), Denied> {
    let scheme = src
        .identifier
        .split_once("://")
        .map(|(s, _)| s)
        .unwrap_or("");
    match scheme {
        "docker-image" | "http" | "https" => Ok(()),
        "local" => {
            if let Some(session) = src.attrs.get("local.session").filter(|s| !s.is_empty()) {
                out.sessions.insert(session.clone());
            }
            Ok(())
        }
        "git" if rules.allow.git => Ok(()),
        "git" => Err(rules.deny(
            "buildkit_git",
            "git sources fetched by the daemon are not allowed",
        )),
        _ => Err(rules.deny(
            "buildkit_source",
            format_args!("the build source scheme {scheme:?} is not allowed"),
        )),
    }
}

/// `Control/Prune`: `all` only when allowed.
pub fn judge_prune(rules: Rules<'_>, body: &[u8]) -> Result<(), Denied> {
    let req: proto::PruneRequest = message(body)?;
    if req.all && !rules.allow.prune_all {
        return Err(rules.deny(
            "buildkit_prune_all",
            "pruning all of the shared build cache is not allowed",
        ));
    }
    Ok(())
}

/// `Control/Status`: the ref asked for.
pub fn status_ref(body: &[u8]) -> Result<String, Denied> {
    let req: proto::StatusRequest = message(body)?;
    Ok(req.r#ref)
}

/// `SolveRequest` bytes with the exporter's `name` replaced by `names`
/// (comma-joined): one map entry appended, which protobuf decoders take
/// over the client's (the last entry of a key wins); the client's bytes
/// before it are untouched.
pub fn with_image_names(message: &[u8], names: &[String]) -> Vec<u8> {
    let mut out = message.to_vec();
    append_entry(
        &mut out,
        proto::SOLVE_EXPORTER_ATTRS_TAG,
        "name",
        &names.join(","),
    );
    out
}

/// The frontend attribute that puts the Dockerfile's cache mounts under the
/// tenant's namespace (its value wins over the client's, appended last).
pub const CACHE_MOUNT_NS_ATTR: &str = "build-arg:BUILDKIT_CACHE_MOUNT_NS";

/// `SolveRequest` bytes with the frontend's cache mount namespace set to
/// `namespace`, as [`with_image_names`] sets names.
pub fn with_cache_namespace(message: &[u8], namespace: &str) -> Vec<u8> {
    let mut out = message.to_vec();
    append_entry(
        &mut out,
        proto::SOLVE_FRONTEND_ATTRS_TAG,
        CACHE_MOUNT_NS_ATTR,
        namespace,
    );
    out
}

/// Appends one `map<string, string>` entry of field `tag` to a message.
fn append_entry(out: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    prost::encoding::message::encode(
        tag,
        &proto::StringEntry {
            key: key.into(),
            value: value.into(),
        },
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildkit::proto::{BuildOp, ExecOp, Op, SourceOp};

    fn rules(allow: &Allow) -> Rules<'_> {
        Rules {
            policy: "conservative",
            allow,
            cache_namespace: "cistern/test/alice",
        }
    }

    fn op(op: Op) -> Vec<u8> {
        op.encode_to_vec()
    }

    fn exec(network: i32, security: i32) -> Vec<u8> {
        op(Op {
            exec: Some(ExecOp {
                network,
                security,
                ..ExecOp::default()
            }),
            ..Op::default()
        })
    }

    fn src(identifier: &str, attrs: &[(&str, &str)]) -> Vec<u8> {
        op(Op {
            source: Some(SourceOp {
                identifier: identifier.into(),
                attrs: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            ..Op::default()
        })
    }

    fn solve(req: SolveRequest) -> Vec<u8> {
        frame::encode(&req.encode_to_vec())
    }

    fn with_ops(ops: Vec<Vec<u8>>) -> SolveRequest {
        SolveRequest {
            r#ref: "ref1".into(),
            session: "sess1".into(),
            definition: Some(Definition { def: ops }),
            ..SolveRequest::default()
        }
    }

    fn rule(allow: &Allow, req: SolveRequest) -> &'static str {
        judge_solve(rules(allow), &solve(req)).unwrap_err().rule
    }

    #[test]
    fn a_plain_build_passes_with_what_the_driver_checks() {
        let mut req = with_ops(vec![
            src("docker-image://docker.io/cistern-test/busybox:latest", &[]),
            src("local://context", &[("local.session", "sess2")]),
            src("https://files.example/a.tgz", &[]),
            exec(0, 0),
            exec(2, 0),
        ]);
        req.exporter = "moby".into();
        req.exporter_attrs = [("name".into(), "app:1, app:2".into())].into();
        let out = judge_solve(rules(&Allow::default()), &solve(req)).unwrap();
        assert_eq!(out.r#ref, "ref1");
        assert_eq!(
            out.sessions,
            ["sess1".to_string(), "sess2".into()].into_iter().collect()
        );
        assert_eq!(out.image_names, ["app:1", "app:2"]);
    }

    #[test]
    fn host_reaching_requests_are_refused_with_their_rule() {
        let none = Allow::default();
        let mut req = with_ops(vec![]);
        req.entitlements = vec!["network.host".into()];
        assert_eq!(rule(&none, req.clone()), "buildkit_entitlement");
        req.entitlements = vec!["security.insecure".into()];
        assert_eq!(rule(&none, req), "buildkit_entitlement");
        assert_eq!(
            rule(&none, with_ops(vec![exec(1, 0)])),
            "buildkit_network_host"
        );
        assert_eq!(rule(&none, with_ops(vec![exec(0, 1)])), "buildkit_insecure");
        assert_eq!(
            rule(&none, with_ops(vec![src("git://git.example/r.git", &[])])),
            "buildkit_git"
        );
        assert_eq!(
            rule(&none, with_ops(vec![src("oci-layout://x", &[])])),
            "buildkit_source"
        );
        let mut req = with_ops(vec![]);
        req.frontend = "dockerfile.v0".into();
        req.frontend_attrs = [("force-network-mode".into(), "host".into())].into();
        assert_eq!(rule(&none, req.clone()), "buildkit_network_host");
        req.frontend_attrs = [("context".into(), "https://git.example/r.git#main".into())].into();
        assert_eq!(rule(&none, req.clone()), "buildkit_git");
        req.frontend_attrs = [("build-arg:BUILDKIT_SYNTAX".into(), "img.example/f".into())].into();
        assert_eq!(rule(&none, req.clone()), "buildkit_frontend");
        req.frontend_attrs = Default::default();
        req.frontend = "gateway.v0".into();
        assert_eq!(rule(&none, req), "buildkit_frontend");
    }

    #[test]
    fn nested_and_input_definitions_are_judged() {
        let nested = op(Op {
            build: Some(BuildOp {
                def: Some(Definition {
                    def: vec![exec(1, 0)],
                }),
                ..BuildOp::default()
            }),
            ..Op::default()
        });
        assert_eq!(
            rule(&Allow::default(), with_ops(vec![nested])),
            "buildkit_network_host"
        );
        let mut req = with_ops(vec![]);
        req.frontend_inputs = [(
            "context".into(),
            Definition {
                def: vec![exec(0, 1)],
            },
        )]
        .into();
        assert_eq!(rule(&Allow::default(), req), "buildkit_insecure");
    }

    #[test]
    fn the_listener_may_allow_each() {
        let all = Allow::parse([
            "network.host",
            "security.insecure",
            "git",
            "frontends",
            "prune_all",
            "disk_usage",
        ])
        .unwrap();
        let mut req = with_ops(vec![exec(1, 1), src("git://git.example/r.git", &[])]);
        req.entitlements = vec!["network.host".into(), "security.insecure".into()];
        req.frontend = "gateway.v0".into();
        req.frontend_attrs = [("force-network-mode".into(), "host".into())].into();
        assert!(judge_solve(rules(&all), &solve(req)).is_ok());
        let prune = frame::encode(
            &proto::PruneRequest {
                filter: vec![],
                all: true,
            }
            .encode_to_vec(),
        );
        assert!(judge_prune(rules(&all), &prune).is_ok());
        let denied = judge_prune(rules(&Allow::default()), &prune).unwrap_err();
        assert_eq!(denied.rule, "buildkit_prune_all");
        assert!(Allow::parse(["network"]).is_err());
    }

    #[test]
    fn refusals_name_the_policy_and_rule() {
        let mut req = with_ops(vec![]);
        req.entitlements = vec!["network.host".into()];
        let d = judge_solve(rules(&Allow::default()), &solve(req)).unwrap_err();
        assert_eq!(d.code, Code::PermissionDenied);
        assert_eq!(
            d.message,
            "cistern: the build entitlement \"network.host\" is not allowed (policy conservative, rule buildkit_entitlement)"
        );
    }

    #[test]
    fn unreadable_requests_are_malformed() {
        let none = Allow::default();
        for body in [
            vec![],
            vec![1, 0, 0, 0, 0],
            frame::encode(&[0xff, 0xff]),
            solve(with_ops(vec![vec![0x12, 0x05, 0x01]])),
            solve(with_ops(vec![exec(7, 0)])),
        ] {
            let d = judge_solve(rules(&none), &body).unwrap_err();
            assert_eq!(
                (d.code, d.rule),
                (Code::InvalidArgument, "buildkit_malformed")
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut inner = exec(0, 0);
        for _ in 0..(MAX_DEPTH + 2) {
            inner = op(Op {
                build: Some(BuildOp {
                    def: Some(Definition { def: vec![inner] }),
                    ..BuildOp::default()
                }),
                ..Op::default()
            });
        }
        let d = judge_solve(rules(&Allow::default()), &solve(with_ops(vec![inner]))).unwrap_err();
        assert_eq!(d.rule, "buildkit_malformed");
    }

    #[test]
    fn cache_mounts_of_raw_llb_must_be_under_the_tenants_namespace() {
        use crate::buildkit::proto::{CacheOpt, Mount};
        let cache = |id: &str| {
            op(Op {
                exec: Some(ExecOp {
                    mounts: vec![
                        Mount::default(),
                        Mount {
                            mount_type: proto::MOUNT_TYPE_CACHE,
                            cache_opt: Some(CacheOpt { id: id.into() }),
                        },
                    ],
                    ..ExecOp::default()
                }),
                ..Op::default()
            })
        };
        let none = Allow::default();
        let judge = |id: &str| judge_solve(rules(&none), &solve(with_ops(vec![cache(id)])));
        assert!(judge("cistern/test/alice/root/.cache").is_ok());
        for other in [
            "/root/.cache",
            "cistern/test/bob/root/.cache",
            "cistern/test/alice-x/root/.cache",
            "cistern/test/alice",
            "",
        ] {
            assert_eq!(
                judge(other).unwrap_err().rule,
                "buildkit_cache_mount",
                "{other}"
            );
        }
    }

    #[test]
    fn a_frontends_cache_mount_namespace_is_the_tenants_whatever_the_client_set() {
        let mut req = with_ops(vec![]);
        req.frontend = "dockerfile.v0".into();
        req.frontend_attrs = [
            (CACHE_MOUNT_NS_ATTR.into(), "cistern/test/bob".into()),
            ("target".into(), "app".into()),
        ]
        .into();
        let none = Allow::default();
        assert!(
            judge_solve(rules(&none), &solve(req.clone()))
                .unwrap()
                .frontend
        );
        let msg = req.encode_to_vec();
        let edited = with_cache_namespace(&msg, "cistern/test/alice");
        assert!(edited.starts_with(&msg));
        let back = SolveRequest::decode(edited.as_slice()).unwrap();
        assert_eq!(
            back.frontend_attrs[CACHE_MOUNT_NS_ATTR],
            "cistern/test/alice"
        );
        assert_eq!(back.frontend_attrs["target"], "app");
    }

    #[test]
    fn image_names_are_overridden_by_an_appended_entry() {
        let mut req = with_ops(vec![]);
        req.exporter = "moby".into();
        req.exporter_attrs = [
            ("name".into(), "app".into()),
            ("push".into(), "false".into()),
        ]
        .into();
        let msg = req.encode_to_vec();
        let edited = with_image_names(&msg, &["ns/t/app".into(), "ns/t/b".into()]);
        assert!(edited.starts_with(&msg));
        let back = SolveRequest::decode(edited.as_slice()).unwrap();
        assert_eq!(back.exporter_attrs["name"], "ns/t/app,ns/t/b");
        assert_eq!(back.exporter_attrs["push"], "false");
        assert_eq!(back.definition, req.definition);
    }

    #[test]
    fn git_urls_as_the_frontend_sees_them() {
        for g in [
            "git://h.example/r",
            "git@h.example:r.git",
            "github.com/o/r",
            "https://h.example/r.git",
            "https://h.example/r.git#main:dir",
        ] {
            assert!(is_git_url(g), "{g}");
        }
        for n in ["https://h.example/r.tgz", "context", ""] {
            assert!(!is_git_url(n), "{n}");
        }
    }
}
