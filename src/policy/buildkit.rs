//! BuildKit through the classic build API: the docker CLI's own BuildKit
//! client (`DOCKER_BUILDKIT=1` with a 20.10 CLI, or any CLI whose daemon
//! answers `/_ping` with `Builder-Version: 2`) opens a `/session` hijack
//! (its file server: context, Dockerfile, secrets, SSH agent, exports) and
//! sends `POST /build?version=2&session=<id>&remote=client-session`.
//!
//! BuildKit is on while the listener's policy allows the `session` endpoint
//! group (the default; `groups: {session: false}` turns it off). Off, the
//! `/session` hijack and `version=2` builds are refused with rule `buildkit`,
//! and `/_ping` answers `Builder-Version: 1` so that clients build with the
//! classic builder instead of failing ([`ping_builder_version`]).
//!
//! On, a `version=2` build passes the classic build checks
//! ([`super::build::build_query`]: network mode, cgroup parent, limits,
//! remote contexts) and these, read from moby 20.10's
//! `builder/builder-next/builder.go`:
//! * `outputs` (API 1.40; at most one exporter, JSON `[{"Type", "Attrs"}]`):
//!   `local` and `tar` write to the client through its own session, and
//!   `cacheonly` exports nothing; anything else is refused (rule
//!   `build_output`): the `moby` exporter takes image names from its `name`
//!   attribute, past the tags that ownership checks (`t`).
//! * `remote`: only `client-session` (the context comes over the session);
//!   `upload-request` and `buildid=upload-request:<id>` (a second request
//!   feeding another build's context by its ID) are refused.
//!
//! The limits [`super::build::build_query`] sets do not reach BuildKit's
//! `RUN` steps: builder-next reads none of `memory`, `cpuquota`, `shmsize`,
//! `ulimits`, `cgroupparent` (its steps run under the daemon's own
//! `cgroup-parent`); the README says so.
//!
//! Which tenant may use which session and build ID is ownership's business
//! ([`crate::tenancy::sessions`]).
//!
//! The `/grpc` hijack (BuildKit's control API itself, buildx) is in the same
//! group and judged call by call ([`crate::buildkit`]).

use http::HeaderValue;

use super::json::{self, go_fold_eq, Json};
use super::query::Query;
use super::{Ctx, Policy, Refusal};
use crate::wire::route::Group;

/// The rule named when BuildKit is switched off.
pub const RULE: &str = "buildkit";

/// Exporters whose output goes to the client's own session, or nowhere.
const OUTPUTS: [&str; 3] = ["local", "tar", "cacheonly"];

/// Whether the policy lets BuildKit clients in (`/session`, `version=2`).
pub fn enabled(policy: &Policy) -> bool {
    policy.allowed_groups.contains(&Group::Session)
}

/// The `Builder-Version` a `/_ping` answer must carry instead of the
/// daemon's, if any: `1` when BuildKit is off, so that clients fall back to
/// the classic builder; otherwise the daemon's value goes through as it is.
pub fn ping_builder_version(policy: &Policy) -> Option<HeaderValue> {
    (!enabled(policy)).then(|| HeaderValue::from_static("1"))
}

/// The refusal of a BuildKit request on a policy that turned it off.
pub fn off(policy: &Policy, what: &str) -> Refusal {
    Refusal::policy(
        RULE,
        "session".into(),
        format!(
            "cistern: BuildKit is not allowed ({what}; build with the classic builder, DOCKER_BUILDKIT=0) (policy {})",
            policy.name
        ),
    )
}

/// Whether a build query asks for BuildKit (`version=2`).
pub fn is_buildkit(q: &Query) -> Result<bool, Refusal> {
    Ok(q.get("version")?.is_some_and(|v| v == "2"))
}

/// `POST /build?version=2`: what BuildKit reads beyond the classic builder.
pub fn build_query(ctx: &mut Ctx<'_>, q: &Query) -> Result<(), Refusal> {
    if !enabled(ctx.policy) {
        ctx.deny(
            RULE,
            "version",
            "BuildKit is not allowed (build with the classic builder, DOCKER_BUILDKIT=0)",
        )?;
    }
    if q.get("buildid")?
        .is_some_and(|id| id.starts_with("upload-request:"))
    {
        ctx.deny(
            "build_remote",
            "buildid",
            "uploading a context for another build request is not allowed",
        )?;
    }
    if let Some(raw) = q.get("outputs")?.filter(|o| !o.is_empty()) {
        for kind in output_types(raw)? {
            if !OUTPUTS.contains(&kind.as_str()) {
                ctx.deny(
                    "build_output",
                    "outputs",
                    format_args!(
                        "build output type {kind:?} is not allowed (local, tar; images are named with -t)"
                    ),
                )?;
            }
        }
    }
    Ok(())
}

/// Every exporter type `outputs` names, as Go's `encoding/json` would fill
/// `[]ImageBuildOutput` (keys folded; every duplicate is returned, so the
/// last one, which Go keeps, is judged too).
fn output_types(raw: &str) -> Result<Vec<String>, Refusal> {
    let bad = |why: &str| {
        Refusal::malformed(
            "json_type",
            "outputs".into(),
            format!("cistern: build outputs: {why}"),
        )
    };
    let outputs = match json::parse(raw.as_bytes())? {
        Json::Null => return Ok(Vec::new()),
        Json::Array(items) => items,
        _ => return Err(bad("not a list")),
    };
    let mut kinds = Vec::new();
    for item in outputs {
        let Json::Object(members) = item else {
            return Err(bad("an entry is not an object"));
        };
        let mut typed = false;
        for (key, value) in members {
            if go_fold_eq(&key, "Type") {
                match value {
                    Json::String(kind) => kinds.push(kind),
                    _ => return Err(bad("Type is not a string")),
                }
                typed = true;
            }
        }
        if !typed {
            kinds.push(String::new());
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;

    fn build(p: &Policy, query: &str) -> Result<Option<String>, super::Refusal> {
        p.inspect_query(&route("POST", &format!("/v1.41/build?{query}")))
    }

    fn outputs(json: &str) -> String {
        format!(
            "version=2&session=s1&remote=client-session&outputs={}",
            crate::wire::query::escape(json)
        )
    }

    #[test]
    fn buildkit_builds_pass_the_classic_checks_and_their_own() {
        let p = policy_yaml("limits: none");
        let ok = "version=2&session=abc&buildid=def&remote=client-session&t=app%3A1&target=x&buildargs=%7B%7D";
        assert_eq!(build(&p, ok).unwrap(), None);
        for json in [
            r#"[{"Type":"local","Attrs":{}}]"#,
            r#"[{"type":"tar"}]"#,
            r#"[{"Type":"cacheonly"}]"#,
            "null",
        ] {
            assert_eq!(build(&p, &outputs(json)).unwrap(), None, "{json}");
        }
        for (q, rule) in [
            (
                "version=2&networkmode=host".to_string(),
                "build_network_mode",
            ),
            ("version=2&cgroupparent=%2F".into(), "cgroup_parent"),
            (
                "version=2&remote=https%3A%2F%2Fexample.test%2Fctx.git".into(),
                "build_remote",
            ),
            ("version=2&remote=upload-request".into(), "build_remote"),
            (
                "version=2&buildid=upload-request%3Ab1".into(),
                "build_remote",
            ),
            (
                outputs(r#"[{"Type":"moby","Attrs":{"name":"x"}}]"#),
                "build_output",
            ),
            (outputs(r#"[{"Type":"image"}]"#), "build_output"),
            (
                outputs(r#"[{"Type":"local","TYPE":"moby"}]"#),
                "build_output",
            ),
            (outputs(r#"[{"Attrs":{"name":"x"}}]"#), "build_output"),
            (outputs(r#"{"Type":"local"}"#), "json_type"),
            (outputs(r#"[{"Type":1}]"#), "json_type"),
            (outputs("[{"), "json_malformed"),
        ] {
            assert_eq!(build(&p, &q).unwrap_err().rule, rule, "{q}");
        }
    }

    #[test]
    fn buildkit_is_refused_when_the_session_group_is_off() {
        let p = policy_yaml("groups: {session: false}");
        let r = build(&p, "version=2&session=abc").unwrap_err();
        assert_eq!(r.rule, "buildkit");
        assert!(r.message.contains("DOCKER_BUILDKIT=0"), "{}", r.message);
        assert_eq!(
            super::ping_builder_version(&p).unwrap(),
            http::HeaderValue::from_static("1")
        );
        assert_eq!(super::ping_builder_version(&Policy::default()), None);
        let r = p.authorize(&route("POST", "/v1.41/session")).unwrap_err();
        assert_eq!(r.rule, "buildkit");
        assert!(Policy::default()
            .authorize(&route("POST", "/session"))
            .is_ok());
        // The control API goes with the group (its calls are judged by
        // `crate::buildkit`).
        assert!(Policy::default().authorize(&route("POST", "/grpc")).is_ok());
        let r = p.authorize(&route("POST", "/grpc")).unwrap_err();
        assert_eq!(r.rule, "buildkit");
    }
}
