//! Injection: values a listener adds to every container it creates. Runs after the
//! rules (so injected values are never refused) and wins where it conflicts:
//!
//! * `labels` into `Labels` (cistern's value replaces the client's).
//! * `env` into `Env`: the client's entries with the same name (`NAME=...` or a bare
//!   `NAME`) are removed. Injected environment is operator configuration (proxy,
//!   cache endpoints, CI metadata) that must read the same in every job.
//! * `extra_hosts` into `HostConfig.ExtraHosts`: here the **client's** entry for the
//!   same host name wins. `/etc/hosts` is no security boundary (root in the
//!   container can rewrite it), so injected hosts are defaults, and a job that maps a
//!   name deliberately (a test double for the cache, say) keeps working.
//! * `cgroup_parent` into `HostConfig.CgroupParent` (clients may not set it).
//! * `no_new_privileges`: `no-new-privileges` into `HostConfig.SecurityOpt`,
//!   replacing any client `no-new-privileges=...` entry.
//! * `init`: `HostConfig.Init: true`.
//!
//! Forced resource limits are applied by [`super::limits`].

use super::security_opt::split_opt;
use super::{Ctx, Json, Refusal};

/// What a listener injects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inject {
    pub labels: Vec<(String, String)>,
    pub cgroup_parent: Option<String>,
    /// `NAME=VALUE` entries.
    pub env: Vec<String>,
    /// `HOST:IP` entries.
    pub extra_hosts: Vec<String>,
    pub no_new_privileges: bool,
    pub init: bool,
}

fn strings(v: Option<&Json>) -> Vec<String> {
    v.map(|a| a.strings().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Host name of an `ExtraHosts` entry (`host:ip`, or `host=ip` in current moby).
fn host_name(entry: &str) -> &str {
    let cut = entry.find([':', '=']).unwrap_or(entry.len());
    &entry[..cut]
}

/// Applies the listener's injections to a canonical container create body.
pub fn container_create(ctx: &mut Ctx<'_>, body: &mut Json) -> Result<(), Refusal> {
    let inject = ctx.policy.inject.clone();
    if !inject.labels.is_empty() {
        let labels = body.object_mut("Labels");
        for (k, v) in &inject.labels {
            labels.set(k, Json::string(v.clone()));
        }
        ctx.notes
            .push(format!("injected {} label(s)", inject.labels.len()));
    }
    if !inject.env.is_empty() {
        let names: Vec<&str> = inject
            .env
            .iter()
            .map(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n))
            .collect();
        let mut env: Vec<String> = strings(body.get("Env"))
            .into_iter()
            .filter(|e| !names.contains(&e.split_once('=').map_or(e.as_str(), |(n, _)| n)))
            .collect();
        env.extend(inject.env.iter().cloned());
        body.set("Env", Json::string_array(env));
        ctx.notes.push(format!(
            "injected {} environment variable(s)",
            inject.env.len()
        ));
    }
    let hc = body.object_mut("HostConfig");
    if !inject.extra_hosts.is_empty() {
        let mut hosts = strings(hc.get("ExtraHosts"));
        for h in &inject.extra_hosts {
            if !hosts.iter().any(|c| host_name(c) == host_name(h)) {
                hosts.push(h.clone());
            }
        }
        hc.set("ExtraHosts", Json::string_array(hosts));
    }
    if let Some(cg) = &inject.cgroup_parent {
        hc.set("CgroupParent", Json::string(cg.clone()));
        ctx.notes.push(format!("cgroup parent set to {cg}"));
    }
    if inject.no_new_privileges {
        let mut opts: Vec<String> = strings(hc.get("SecurityOpt"))
            .into_iter()
            .filter(|o| !matches!(split_opt(o), Some(("no-new-privileges", _))))
            .collect();
        opts.push("no-new-privileges".into());
        hc.set("SecurityOpt", Json::string_array(opts));
    }
    if inject.init {
        hc.set("Init", Json::Bool(true));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const INJECT: &str = "inject: {labels: {ci.job: '42', owner: cistern}, env: ['HTTP_PROXY=http://cache:3128', 'CI=true'], extra_hosts: ['cache:10.0.0.2', 'registry:10.0.0.3'], cgroup_parent: /ci.slice, no_new_privileges: true, init: true}";

    #[test]
    fn injected_values_win_except_extra_hosts() {
        let p = policy_yaml(INJECT);
        let v = create(&p, r#"{"Image":"x","Env":["HTTP_PROXY=http://evil","KEEP=1","CI"],"Labels":{"owner":"me","mine":"1"},"HostConfig":{"ExtraHosts":["cache:127.0.0.1"],"SecurityOpt":["no-new-privileges=false"],"Init":false}}"#).unwrap();
        assert_eq!(
            v.get("Env").unwrap().strings().collect::<Vec<_>>(),
            ["KEEP=1", "HTTP_PROXY=http://cache:3128", "CI=true"]
        );
        let labels = v.get("Labels").unwrap();
        assert_eq!(labels.get("owner").and_then(Json::as_str), Some("cistern"));
        assert_eq!(labels.get("mine").and_then(Json::as_str), Some("1"));
        assert_eq!(labels.get("ci.job").and_then(Json::as_str), Some("42"));
        let hc = v.get("HostConfig").unwrap();
        assert_eq!(
            hc.get("ExtraHosts").unwrap().strings().collect::<Vec<_>>(),
            ["cache:127.0.0.1", "registry:10.0.0.3"]
        );
        assert_eq!(
            hc.get("SecurityOpt").unwrap().strings().collect::<Vec<_>>(),
            ["no-new-privileges"]
        );
        assert_eq!(
            hc.get("CgroupParent").and_then(Json::as_str),
            Some("/ci.slice")
        );
        assert_eq!(hc.get("Init"), Some(&Json::Bool(true)));
    }

    #[test]
    fn injection_does_not_make_a_client_cgroup_parent_legal() {
        let p = policy_yaml(INJECT);
        assert_eq!(
            refused(&p, r#"{"Image":"x","HostConfig":{"CgroupParent":"/"}}"#).rule,
            "cgroup_parent"
        );
        // A bare body gets everything.
        let v = create(&p, r#"{"Image":"x"}"#).unwrap();
        assert_eq!(v.at(&["HostConfig", "Init"]), Some(&Json::Bool(true)));
    }
}
