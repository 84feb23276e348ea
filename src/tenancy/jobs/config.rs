//! The `jobs:` section: which new containers get a docker socket of their own.
//!
//! Raw (as serde reads it) → [`RawJobs::validate`] → [`JobsConfig`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::policy::{Json, Policy, PolicyConfig};

/// Where a job's socket is mounted when the rule does not say.
pub const DEFAULT_MOUNT: &str = "/var/run/docker.sock";

/// `jobs:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    /// Directory of the job sockets. Default `<state_dir>/jobs`.
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
    #[serde(default)]
    pub rules: Vec<RawJobRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobRule {
    /// `key` or `key=value`: the container label that makes a job.
    pub label: String,
    /// Listeners whose creates the rule applies to. Default: all.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Where the socket appears inside the job container.
    #[serde(default)]
    pub mount: Option<PathBuf>,
    /// The policy of the job's socket. Default: the listener's.
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// When the job ends. Default: `stop`.
    #[serde(default)]
    pub ends: JobEnd,
}

/// When a job ends, and everything it made goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobEnd {
    /// When its container stops (dies) or is removed: for runners that run
    /// each job container once.
    #[default]
    Stop,
    /// Only when its container is removed: for runners that start the same
    /// container again for each stage of a job (GitLab Runner's docker
    /// executor runs `script` and `after_script` as two starts of the build
    /// container) and remove it when the job is over.
    Remove,
}

/// Validated `jobs:`.
#[derive(Debug, Clone, Default)]
pub struct JobsConfig {
    pub socket_dir: PathBuf,
    pub rules: Vec<JobRule>,
}

/// One rule: containers created through `listeners` with `label` become jobs.
#[derive(Debug, Clone)]
pub struct JobRule {
    pub label_key: String,
    pub label_value: Option<String>,
    /// Empty: every listener.
    pub listeners: Vec<String>,
    pub mount: PathBuf,
    pub policy: Option<Arc<Policy>>,
    pub ends: JobEnd,
}

impl RawJobs {
    /// Checks the rules against the listener names.
    pub fn validate(self, state_dir: &Path, listeners: &[&str]) -> Result<JobsConfig, String> {
        let socket_dir = match self.socket_dir {
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => return Err(format!("socket_dir: `{}` is not absolute", dir.display())),
            None => state_dir.join("jobs"),
        };
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, raw) in self.rules.into_iter().enumerate() {
            let at = |key: &str| format!("rules[{i}].{key}");
            let (key, value) = match raw.label.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (raw.label.clone(), None),
            };
            if key.is_empty() {
                return Err(format!("{}: the label key is empty", at("label")));
            }
            for l in &raw.listeners {
                if !listeners.contains(&l.as_str()) {
                    return Err(format!("{}: no listener is named `{l}`", at("listeners")));
                }
            }
            let mount = raw.mount.unwrap_or_else(|| PathBuf::from(DEFAULT_MOUNT));
            if !mount.is_absolute() {
                return Err(format!(
                    "{}: `{}` is not absolute",
                    at("mount"),
                    mount.display()
                ));
            }
            let text = mount.to_string_lossy();
            let components = crate::wire::mounts::clean_components(&text);
            let dir = crate::wire::mounts::clean_components(super::SOCKET_DIR_MOUNT);
            if components.starts_with(&dir) || dir.starts_with(&components) {
                return Err(format!(
                    "{}: `{}` overlaps {}, where the socket's directory is mounted",
                    at("mount"),
                    mount.display(),
                    super::SOCKET_DIR_MOUNT
                ));
            }
            let policy = match raw.policy {
                Some(p) => Some(Arc::new(
                    p.validate()
                        .map_err(|err| format!("{}: {err}", at("policy")))?,
                )),
                None => None,
            };
            rules.push(JobRule {
                label_key: key,
                label_value: value,
                listeners: raw.listeners,
                mount,
                policy,
                ends: raw.ends,
            });
        }
        Ok(JobsConfig { socket_dir, rules })
    }
}

impl JobsConfig {
    /// The first rule a container create (its canonical body) on `listener`
    /// matches, with its index.
    pub fn rule_for(&self, listener: &str, body: &Json) -> Option<(usize, &JobRule)> {
        let labels = body.get("Labels");
        self.rules.iter().enumerate().find(|(_, r)| {
            (r.listeners.is_empty() || r.listeners.iter().any(|l| l == listener))
                && labels
                    .and_then(|l| l.get(&r.label_key))
                    .and_then(Json::as_str)
                    .is_some_and(|v| r.label_value.as_deref().map_or(true, |want| want == v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json;

    fn jobs(yaml: &str) -> Result<JobsConfig, String> {
        let raw: RawJobs = serde_yaml::from_str(yaml).unwrap();
        raw.validate(Path::new("/var/lib/cistern"), &["runner", "other"])
    }

    #[test]
    fn rules_match_label_and_listener() {
        let j =
            jobs("rules:\n  - {label: ci.job=build, listeners: [runner]}\n  - {label: any.job}\n")
                .unwrap();
        assert_eq!(j.socket_dir, Path::new("/var/lib/cistern/jobs"));
        let body = |labels: &str| {
            json::parse(format!(r#"{{"Image":"x","Labels":{labels}}}"#).as_bytes()).unwrap()
        };
        let build = body(r#"{"ci.job":"build"}"#);
        assert_eq!(j.rule_for("runner", &build).unwrap().1.label_key, "ci.job");
        assert!(j.rule_for("other", &build).is_none());
        assert!(j
            .rule_for("runner", &body(r#"{"ci.job":"service"}"#))
            .is_none());
        let (_, any) = j.rule_for("other", &body(r#"{"any.job":""}"#)).unwrap();
        assert_eq!(any.mount, Path::new(DEFAULT_MOUNT));
        assert_eq!(any.ends, JobEnd::Stop);
        let j = jobs("rules:\n  - {label: ci.job, ends: remove}\n").unwrap();
        assert_eq!(j.rules[0].ends, JobEnd::Remove);
        assert!(j.rule_for("runner", &body("null")).is_none());
    }

    #[test]
    fn bad_rules_are_named() {
        assert!(jobs("rules:\n  - {label: x, listeners: [nope]}\n")
            .unwrap_err()
            .contains("rules[0].listeners"));
        assert!(jobs("rules:\n  - {label: =v}\n")
            .unwrap_err()
            .contains("label key is empty"));
        assert!(jobs("rules:\n  - {label: x, mount: rel/sock}\n")
            .unwrap_err()
            .contains("rules[0].mount"));
        for overlapping in [
            "/run/cistern/docker.sock",
            "/run",
            "/run/./cistern/../cistern",
        ] {
            let err =
                jobs(&format!("rules:\n  - {{label: x, mount: {overlapping}}}\n")).unwrap_err();
            assert!(
                err.contains("rules[0].mount") && err.contains("overlaps /run/cistern"),
                "{err}"
            );
        }
        assert!(jobs("rules:\n  - {label: x, mount: /run/docker.sock}\n").is_ok());
        assert!(serde_yaml::from_str::<RawJobs>("rules:\n  - {label: x, ends: exit}\n").is_err());
        assert!(jobs("socket_dir: rel\n")
            .unwrap_err()
            .contains("socket_dir"));
    }
}
