//! Real Docker clients through cistern, unchanged on the client side: each
//! client runs its own script from `tests/clients/` with `DOCKER_HOST` on a
//! cistern in front of the real daemon, and the results are checked on the
//! daemon directly (tenant labels on what was created, nothing left behind
//! after the client's own cleanup).
//!
//! - docker-py (`tests/clients/docker_py_flows.py`): run with remove/detach/
//!   streamed logs, exec and attach through its own socket hijacking,
//!   put/get archive, build from a file object, decoded events.
//! - docker-compose v1 (`tests/clients/compose/docker-compose.yml`): `up -d`
//!   with a network, a named volume, `depends_on` a healthcheck, `logs`,
//!   `exec -T`, `run --rm`, `down -v`.
//!
//! `scripts/test` installs both clients when they are missing.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A cistern whose one listener gives every client the tenant `tenant`, with
/// its own instance name and state directory.
struct Tenant {
    cistern: Cistern,
    tenant: String,
}

impl Tenant {
    fn start(id: &str) -> Tenant {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let tenant = format!("client-{id}");
        let config = format!(
            "instance: test-{id}\nstate_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix: {{path: {sock}, mode: \"0600\"}}\n    identity: {{fixed: {tenant}}}\n",
            state = d.join("state").display(),
            daemon = daemon().display(),
            sock = d.join("docker.sock").display(),
        );
        let cistern = Cistern::start_with_config(dir, d.join("docker.sock"), &config);
        Tenant { cistern, tenant }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.cistern.socket.display())
    }
}

/// A client command pointed at `host`, with no inherited Docker settings.
fn client(program: &str, host: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("DOCKER_HOST", host)
        .env("CISTERN_TEST_IMAGE", busybox())
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("COMPOSE_API_VERSION");
    cmd
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The value of label `key` on a container, volume or network, read from the
/// daemon directly; `None` when the object does not exist.
fn label_on_daemon(kind: &str, id: &str, key: &str) -> Option<String> {
    let out = run(docker_direct().args([
        kind,
        "inspect",
        "--format",
        &format!("{{{{index .{} \"{key}\"}}}}", labels_path(kind)),
        id,
    ]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn labels_path(kind: &str) -> &'static str {
    match kind {
        "container" => "Config.Labels",
        _ => "Labels",
    }
}

/// IDs the daemon lists for `kind` (`container`, `volume`, `network`) with
/// the given label filter.
fn listed_on_daemon(kind: &str, label: &str) -> Vec<String> {
    let mut cmd = docker_direct();
    match kind {
        "container" => cmd.args(["ps", "-a", "-q"]),
        "volume" => cmd.args(["volume", "ls", "-q"]),
        _ => cmd.args(["network", "ls", "-q"]),
    };
    run_ok(cmd.args(["--filter", &format!("label={label}")]))
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_tenant_owns(t: &Tenant, kind: &str, id: &str) {
    assert_eq!(
        label_on_daemon(kind, id, "io.cistern.tenant").as_deref(),
        Some(t.tenant.as_str()),
        "{kind} {id} on the daemon does not carry the tenant label\ncistern log:\n{}",
        t.cistern.logs()
    );
}

#[test]
fn docker_py_flows_work_through_cistern_and_leave_nothing_behind() {
    let id = unique("py");
    let t = Tenant::start(&id);
    let name = format!("cistern-py-{id}");
    let tag = format!("{name}-built:latest");
    let mut cleanup = Cleanup::image(&tag);
    for c in ["chatty", "box", "cat", "short"] {
        cleanup.containers.push(format!("{name}-{c}"));
    }

    let script = clients_dir().join("docker_py_flows.py");
    let mut child = client("python3", &t.docker_host())
        .arg(&script)
        .env("CISTERN_TEST_NAME", &name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (scripts/test installs docker-py)");
    let mut stdin = child.stdin.take().unwrap();
    let mut transcript = Vec::new();
    let mut ready = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        println!("docker-py: {line}");
        transcript.push(line.clone());
        if let Some(json) = line.strip_prefix("ready ") {
            ready = Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
            break;
        }
    }
    let Some(ready) = ready else {
        let out = child.wait_with_output().unwrap();
        panic!(
            "docker-py flows failed through cistern ({}):\n{}\n{}\ncistern log:\n{}",
            out.status,
            transcript.join("\n"),
            String::from_utf8_lossy(&out.stderr),
            t.cistern.logs()
        );
    };

    // While the client holds them: everything it created is the tenant's.
    let containers: Vec<String> = ready["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(containers.len(), 4, "{ready}");
    for c in &containers {
        assert_tenant_owns(&t, "container", c);
    }
    let owned = listed_on_daemon("container", &format!("io.cistern.tenant={}", t.tenant));
    assert_eq!(owned.len(), containers.len(), "{owned:?}");
    // The built image is the tenant's: listed through cistern by its tag.
    let listed = run_ok(t.cistern.docker().args(["images", "-q", &tag]));
    assert!(
        !listed.trim().is_empty(),
        "built image not listed: {listed}"
    );

    // Let the client clean up after itself; then the daemon holds nothing.
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    for line in &rest {
        println!("docker-py: {line}");
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && rest.last().map(String::as_str) == Some("done"),
        "docker-py cleanup failed ({}):\n{}\n{}\ncistern log:\n{}",
        out.status,
        rest.join("\n"),
        String::from_utf8_lossy(&out.stderr),
        t.cistern.logs()
    );
    for c in &containers {
        assert_eq!(label_on_daemon("container", c, "io.cistern.tenant"), None);
    }
    assert!(listed_on_daemon("container", &format!("io.cistern.tenant={}", t.tenant)).is_empty());
    assert!(listed_on_daemon("volume", &format!("io.cistern.tenant={}", t.tenant)).is_empty());
    let images = run_ok(docker_direct().args(["images", "-q", &tag]));
    assert!(
        images.trim().is_empty(),
        "built image left behind: {images}"
    );
}

/// Runs `docker-compose down -v` on the daemon directly when dropped, so a
/// failing test leaves nothing behind.
struct ComposeDown(String);

impl Drop for ComposeDown {
    fn drop(&mut self) {
        let _ = compose(&daemon_host(), &self.0)
            .args(["down", "-v", "--remove-orphans"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn daemon_host() -> String {
    format!("unix://{}", daemon().display())
}

fn compose(host: &str, project: &str) -> Command {
    let mut cmd = client("docker-compose", host);
    cmd.current_dir(clients_dir().join("compose"))
        .env("COMPOSE_PROJECT_NAME", project)
        .env("COMPOSE_INTERACTIVE_NO_CLI", "1");
    cmd
}

#[test]
fn docker_compose_up_exec_run_down_work_through_cistern() {
    let id = unique("compose");
    let t = Tenant::start(&id);
    // Compose v1 keeps [-_a-z0-9] of the project name.
    let project = format!("cistern{}", id.replace('-', ""));
    let _guard = ComposeDown(project.clone());
    let host = t.docker_host();
    let version = run_ok(compose(&host, &project).args(["version", "--short"]));
    println!("docker-compose {}", version.trim());

    let ok = |args: &[&str]| -> String {
        let out = run(compose(&host, &project).args(args));
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed through cistern ({}):\nstdout: {}\nstderr: {}\ncistern log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            t.cistern.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    ok(&["up", "-d"]);
    let project_label = format!("com.docker.compose.project={project}");
    let containers = listed_on_daemon("container", &project_label);
    assert_eq!(containers.len(), 2, "{containers:?}");
    for c in &containers {
        assert_tenant_owns(&t, "container", c);
    }
    assert_tenant_owns(&t, "network", &format!("{project}_backend"));
    assert_tenant_owns(&t, "volume", &format!("{project}_data"));

    // The client started once web was healthy and fetched its page.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = ok(&["logs", "--no-color", "client"]);
        if logs.contains("hello-from-web") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client never got the page:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let page = ok(&["exec", "-T", "web", "cat", "/www/index.html"]);
    assert_eq!(page.trim(), "hello-from-web");
    let fetched = ok(&[
        "run",
        "--rm",
        "client",
        "wget",
        "-q",
        "-O-",
        "http://web:8080/",
    ]);
    assert!(fetched.contains("hello-from-web"), "{fetched}");
    let after_run = listed_on_daemon("container", &project_label);
    assert_eq!(
        after_run.len(),
        2,
        "run --rm left its container: {after_run:?}"
    );

    ok(&["down", "-v"]);
    assert!(listed_on_daemon("container", &project_label).is_empty());
    assert!(listed_on_daemon("network", &project_label).is_empty());
    assert!(listed_on_daemon("volume", &project_label).is_empty());
    assert_eq!(
        label_on_daemon("volume", &format!("{project}_data"), "io.cistern.tenant"),
        None
    );
    assert!(listed_on_daemon("container", &format!("io.cistern.tenant={}", t.tenant)).is_empty());
}
