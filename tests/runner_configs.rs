//! The runner configurations shipped in `packaging/runners/` parse and say
//! what cistern expects: the runner's Docker host is cistern's listener, no
//! host Docker socket or privileged mode is asked for, and cistern's job rule
//! matches the containers the runner labels. (`tests/gitlab_runner.rs` and
//! `tests/github_runner.rs` run jobs through the shipped cistern configs.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn shipped(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/runners")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(shipped(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn toml(path: &str) -> toml::Value {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `cistern check-config` accepts the file; its first listener's socket.
fn cistern_socket(path: &str) -> (serde_yaml::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cistern"))
        .arg("check-config")
        .arg(shipped(path))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = yaml(path);
    let socket = config["listeners"][0]["unix"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    (config, socket)
}

/// Whether a bind or volume definition (`src:dst[:mode]` or `dst`) puts
/// something at a Docker socket path.
fn binds_docker_socket(volume: &str) -> bool {
    volume
        .split(':')
        .any(|part| part.trim_end_matches('/').ends_with("docker.sock"))
}

/// The `[runners.docker]` keys both GitLab executors share.
fn check_gitlab_docker(path: &str, runner: &toml::Value) {
    let docker = &runner["docker"];
    assert_eq!(
        docker["privileged"].as_bool(),
        Some(false),
        "{path}: privileged"
    );
    let volumes = docker["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().any(|v| v.as_str() == Some("/cache")),
        "{path}: the /cache volume"
    );
    for v in volumes {
        assert!(
            !binds_docker_socket(v.as_str().unwrap()),
            "{path}: {v:?} binds a docker socket into every container the runner makes; cistern mounts the job's own into the build container"
        );
    }
    assert_eq!(
        runner["feature_flags"]["FF_NETWORK_PER_BUILD"].as_bool(),
        Some(true),
        "{path}: services are reached by alias on a network per job"
    );
    assert!(
        runner
            .get("environment")
            .and_then(toml::Value::as_array)
            .map_or(true, |env| !env.iter().any(|e| e
                .as_str()
                .is_some_and(|e| e.starts_with("DOCKER_HOST=")))),
        "{path}: a DOCKER_HOST in the job's environment wins over the job's socket"
    );
}

#[test]
fn the_gitlab_docker_executor_config_points_at_cisterns_socket() {
    let (cistern, socket) = cistern_socket("gitlab/cistern.yaml");
    let rule = &cistern["jobs"]["rules"][0];
    assert_eq!(rule["label"], "com.gitlab.gitlab-runner.type=build");
    assert_eq!(
        rule["ends"], "remove",
        "the runner starts the build container again for after_script"
    );
    assert_eq!(rule["listeners"][0], cistern["listeners"][0]["name"]);

    let config = toml("gitlab/config.toml");
    let runner = &config["runners"][0];
    assert_eq!(runner["executor"].as_str(), Some("docker"));
    assert_eq!(
        runner["docker"]["host"].as_str(),
        Some(format!("unix://{socket}").as_str())
    );
    check_gitlab_docker("gitlab/config.toml", runner);
}

#[test]
fn the_gitlab_docker_machine_config_leaves_the_host_to_each_machine() {
    let config = toml("gitlab/config.docker-machine.toml");
    let runner = &config["runners"][0];
    assert_eq!(runner["executor"].as_str(), Some("docker+machine"));
    assert!(
        runner["docker"].get("host").is_none(),
        "docker+machine ignores `host`: each VM's engine address is used"
    );
    assert_eq!(runner["docker"]["tls_verify"].as_bool(), Some(true));
    check_gitlab_docker("gitlab/config.docker-machine.toml", runner);
    let machine = &runner["machine"];
    assert_eq!(machine["MaxBuilds"].as_integer(), Some(1));
    assert!(machine["MachineName"].as_str().unwrap().contains("%s"));
    assert!(!machine["MachineOptions"].as_array().unwrap().is_empty());
}

#[test]
fn the_github_runner_setup_points_at_cisterns_socket_and_allows_its_directories() {
    let (cistern, socket) = cistern_socket("github/cistern.yaml");
    // The runner's `.env`.
    let env = read("github/runner.env");
    assert!(
        env.lines()
            .any(|l| l == format!("DOCKER_HOST=unix://{socket}")),
        "{env}"
    );
    // The runner binds its _work and externals directories into job
    // containers.
    let binds = cistern["listeners"][0]["policy"]["bind_mounts"]
        .as_sequence()
        .unwrap();
    let allowed = |path: &str, read_only: bool| {
        binds.iter().any(|b| {
            b["path"].as_str() == Some(path)
                && b["read_only"].as_bool().unwrap_or(false) == read_only
        })
    };
    assert!(allowed("/opt/actions-runner/_work", false), "{binds:?}");
    assert!(allowed("/opt/actions-runner/externals", true), "{binds:?}");
    // The rule's label is the runner's instance label: six hex digits.
    let label = cistern["jobs"]["rules"][0]["label"].as_str().unwrap();
    assert!(
        label.len() == 6 && label.bytes().all(|b| b.is_ascii_hexdigit()),
        "{label}"
    );

    let workflow = yaml("github/workflow.yml");
    let jobs = workflow["jobs"].as_mapping().unwrap();
    assert!(!jobs.is_empty());
    for (name, job) in jobs {
        assert!(job["container"]["image"].is_string(), "{name:?}: container");
        assert!(job["services"].is_mapping(), "{name:?}: services");
        let mut options: Vec<&str> = vec![job["container"]["options"].as_str().unwrap_or("")];
        for (_, service) in job["services"].as_mapping().unwrap() {
            assert!(service["image"].is_string());
            options.push(service["options"].as_str().unwrap_or(""));
        }
        for option in options {
            for refused in [
                "--privileged",
                "-v ",
                "--volume",
                "--network host",
                "--cap-add",
            ] {
                assert!(
                    !option.contains(refused),
                    "{name:?}: cistern refuses {refused}"
                );
            }
        }
        let steps = job["steps"].as_sequence().unwrap();
        assert!(steps.iter().any(|s| s["run"]
            .as_str()
            .is_some_and(|r| r.contains("docker build"))));
    }
}
