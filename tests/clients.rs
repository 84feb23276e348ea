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
//!   with a network, a named volume, a published port, a restart policy, no
//!   devices, `depends_on` a healthcheck, `logs`,
//!   `exec -T`, `run --rm`, `down -v`.
//! - testcontainers-python (`tests/clients/testcontainers_flows.py`) and
//!   testcontainers-node (`tests/clients/node/flows.js`): a generic container
//!   from the local image, log-line and port wait strategies, exec, copy in
//!   and out; Ryuk disabled (its image cannot be pulled here).
//! - The docker CLI 28 and Debian's 20.10 (negotiated, and pinned to API
//!   1.30): version, run, ps, exec, logs, cp, build, inspect, rm.
//! - The docker CLI inside a container that binds the Docker socket (a reaper
//!   or docker-in-docker style job): mapped to a socket of the container's
//!   own, as its creator's tenant (more in `tests/container_sockets.rs`); a
//!   listed reaper image started privileged runs unprivileged.
//!
//! - docker-py (`tests/clients/docker_py_run_options.py`),
//!   testcontainers-python (`tests/clients/testcontainers_run_options.py`) and
//!   testcontainers-node with dockerode (`tests/clients/node/run_options.js`):
//!   run/create on a network (aliases, `network=`), a published port, a named
//!   volume, a healthcheck, no devices, a restart policy, and dockerode's run
//!   and commit: the bodies these clients send as they come.
//! - docker-py again, and bollard (`tests/bollard_client.rs`), with
//!   `clients.idle_timeout: 1s`: their pools open new connections when
//!   cistern has closed the idle ones.
//!
//! `scripts/test` installs the clients when they are missing.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
        Self::start_with(id, "")
    }

    /// With extra YAML for the listener (indented under `listeners: - `).
    fn start_with(id: &str, listener_yaml: &str) -> Tenant {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let tenant = format!("client-{id}");
        let config = format!(
            "instance: test-{id}\nstate_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix: {{path: {sock}, mode: \"0600\"}}\n    identity: {{fixed: {tenant}}}\n{listener_yaml}",
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

/// A client's flows script (see `tests/clients/`) running through cistern:
/// it printed `ready <json>` and now waits for a line on stdin to clean up.
struct Flows {
    label: &'static str,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    ready: serde_json::Value,
}

impl Flows {
    /// Runs `cmd` until it prints `ready <json>`; panics with its output and
    /// cistern's log if it fails first.
    fn spawn(t: &Tenant, label: &'static str, mut cmd: Command) -> Flows {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {label} ({e}); scripts/test installs it"));
        let stdin = child.stdin.take().unwrap();
        let mut transcript = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            println!("{label}: {line}");
            transcript.push(line.clone());
            if let Some(json) = line.strip_prefix("ready ") {
                let ready = serde_json::from_str(json).unwrap();
                return Flows {
                    label,
                    child,
                    stdin,
                    lines,
                    ready,
                };
            }
        }
        let out = child.wait_with_output().unwrap();
        panic!(
            "{label} flows failed through cistern ({}):\n{}\n{}\ncistern log:\n{}",
            out.status,
            transcript.join("\n"),
            String::from_utf8_lossy(&out.stderr),
            t.cistern.logs()
        );
    }

    /// The container IDs the script holds.
    fn containers(&self) -> Vec<String> {
        self.ids("containers")
    }

    /// The IDs (or names) the script holds under `key`; none when absent.
    fn ids(&self, key: &str) -> Vec<String> {
        self.ready[key]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Lets the script clean up after itself; panics unless it says `done`.
    fn finish(mut self, t: &Tenant) {
        self.stdin.write_all(b"go\n").unwrap();
        drop(self.stdin);
        let rest: Vec<String> = self.lines.map(Result::unwrap).collect();
        for line in &rest {
            println!("{}: {line}", self.label);
        }
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success() && rest.last().map(String::as_str) == Some("done"),
            "{} cleanup failed ({}):\n{}\n{}\ncistern log:\n{}",
            self.label,
            out.status,
            rest.join("\n"),
            String::from_utf8_lossy(&out.stderr),
            t.cistern.logs()
        );
    }
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
    let mut cmd = client("python3", &t.docker_host());
    cmd.arg(&script).env("CISTERN_TEST_NAME", &name);
    let flows = Flows::spawn(&t, "docker-py", cmd);

    // While the client holds them: everything it created is the tenant's.
    let containers = flows.containers();
    assert_eq!(containers.len(), 4, "{}", flows.ready);
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
    flows.finish(&t);
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

    // What the web service asked for, on the daemon.
    let web = format!("{project}_web_1");
    assert_eq!(
        inspect_on_daemon(
            "container",
            &web,
            "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}} {{len .HostConfig.Devices}} {{.State.Health.Status}}",
        ),
        "on-failure:3 0 healthy"
    );
    let port = ok(&["port", "web", "8080"]);
    assert!(
        port.trim().starts_with("127.0.0.1:"),
        "web's port is not published: {port}"
    );

    let page = ok(&["exec", "-T", "web", "cat", "/www/index.html"]);
    assert_eq!(page.trim(), "hello-from-web");
    // The one-off container's exit status carries the result: compose v1
    // attaches to a `run` container without `logs=1` just before starting it,
    // so its first output can be missed under load (exec output above covers
    // the attached stream).
    ok(&[
        "run",
        "--rm",
        "client",
        "sh",
        "-c",
        "wget -q -O- http://web:8080/ | grep -q hello-from-web",
    ]);
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

/// The docker CLI inside a container that bind-mounts the Docker socket as
/// its client knows it (a reaper, a docker-in-docker style job).
fn job_with_socket(t: &Tenant, name: &str, image: &str, extra: &[&str], script: &str) -> Output {
    run(t
        .cistern
        .docker()
        .args(["run", "--rm", "--name", name])
        .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
        .args(["-e", &format!("IMAGE={}", busybox())])
        .args(extra)
        .args([image, "sh", "-c", script]))
}

#[test]
fn a_docker_socket_bind_gives_the_container_its_own_tenant_through_cistern() {
    let a = Tenant::start(&unique("sock-a"));
    let b = Tenant::start(&unique("sock-b"));
    let mine = unique("sock-mine");
    let theirs = unique("sock-theirs");
    let job = unique("sock-job");
    let inner = unique("sock-inner");
    let mut cleanup = Cleanup::default();
    cleanup.containers = vec![mine.clone(), theirs.clone(), job.clone(), inner.clone()];
    docker_cli_image();
    run_ok(
        a.cistern
            .docker()
            .args(["create", "--name", &mine, busybox(), "true"]),
    );
    run_ok(
        b.cistern
            .docker()
            .args(["create", "--name", &theirs, busybox(), "true"]),
    );

    // Inside: list everything, start a container, show its bind as the daemon has it.
    let script = format!(
        "docker ps -a --format 'seen {{{{.Names}}}}' && docker run -d --name {inner} $IMAGE sleep 300 >/dev/null && echo started"
    );
    let out = job_with_socket(&a, &job, docker_cli_image(), &[], &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "job failed ({}):\n{stdout}\n{}\ncistern log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        a.cistern.logs()
    );
    let seen: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("seen "))
        .collect();
    assert!(seen.contains(&mine.as_str()), "{stdout}");
    assert!(seen.contains(&job.as_str()), "{stdout}");
    assert!(
        !seen.contains(&theirs.as_str()),
        "another tenant's container is visible:\n{stdout}"
    );
    assert!(
        seen.iter().all(|n| *n == mine || *n == job),
        "containers of others listed: {seen:?}"
    );
    assert!(stdout.contains("started"), "{stdout}");
    // What the job created is the tenant's, on the daemon.
    assert_tenant_owns(&a, "container", &inner);
    // And through the other tenant's cistern it does not exist.
    let out = run(b.cistern.docker().args(["container", "inspect", &inner]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such container"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With name namespaces, the job inside the container uses the names its
/// tenant chose (two tenants' jobs can both run a container named `db`).
#[test]
fn a_docker_socket_bind_under_name_namespaces_uses_the_tenants_names() {
    let a = Tenant::start_with(&unique("sock-ns-a"), "    namespaces: true\n");
    let b = Tenant::start_with(&unique("sock-ns-b"), "    namespaces: true\n");
    let mut cleanup = Cleanup::default();
    for t in [&a, &b] {
        for n in ["db", "job", "inner"] {
            cleanup.containers.push(format!("{}-{n}", t.tenant));
        }
    }
    docker_cli_image();
    for t in [&a, &b] {
        run_ok(
            t.cistern
                .docker()
                .args(["create", "--name", "db", busybox(), "true"]),
        );
        let out = job_with_socket(
            t,
            "job",
            docker_cli_image(),
            &[],
            "docker ps -a --format 'seen {{.Names}}' | sort && docker run -d --name inner $IMAGE sleep 300 >/dev/null && docker inspect --format '{{.Name}}' inner",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "job failed ({}):\n{stdout}\n{}\ncistern log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            t.cistern.logs()
        );
        assert_eq!(stdout, "seen db\nseen job\n/inner\n", "{}", t.tenant);
        let inner = format!("{}-inner", t.tenant);
        assert_tenant_owns(t, "container", &inner);
    }
}

#[test]
fn a_listed_reaper_image_asking_privileged_runs_unprivileged() {
    let reaper = "cistern-test/reaper";
    let tag = format!("{reaper}:{}", unique("r"));
    let _image = Cleanup::image(&tag);
    run_ok(docker_direct().args(["tag", docker_cli_image(), &tag]));
    let with_rule = Tenant::start_with(
        &unique("reaper"),
        &format!("    policy: {{unprivileged_images: [{reaper}]}}\n"),
    );
    let without = Tenant::start(&unique("noreaper"));
    let name = unique("reaper");
    let _cleanup = Cleanup::container(&name);

    let out = run(without.cistern.docker().args([
        "run",
        "-d",
        "--privileged",
        "--name",
        &name,
        &tag,
        "sleep",
        "60",
    ]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "cistern: privileged containers are not allowed (policy conservative, HostConfig.Privileged)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!run(docker_direct().args(["inspect", &name]))
        .status
        .success());

    // A reaper: privileged, with the socket, reaping the tenant's leftovers
    // and unable to touch another tenant's.
    let leftover = unique("reaper-leftover");
    let theirs = unique("reaper-theirs");
    let mut containers = Cleanup::default();
    containers.containers = vec![leftover.clone(), theirs.clone()];
    run_ok(
        with_rule
            .cistern
            .docker()
            .args(["create", "--name", &leftover, busybox(), "true"]),
    );
    run_ok(
        without
            .cistern
            .docker()
            .args(["create", "--name", &theirs, busybox(), "true"]),
    );
    let out = job_with_socket(
        &with_rule,
        &name,
        &tag,
        &["--privileged"],
        &format!(
            "docker ps -a --format '{{{{.Names}}}}' && docker rm -f {leftover} && \
             if docker rm {theirs}; then echo reaped-theirs; fi; grep CapEff /proc/self/status"
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reaper failed ({}):\n{stdout}\n{}\ncistern log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        with_rule.cistern.logs()
    );
    assert!(stdout.lines().any(|l| l == name), "{stdout}");
    assert!(stdout.lines().any(|l| l == leftover), "{stdout}");
    assert!(!stdout.contains(&theirs), "{stdout}");
    assert!(!stdout.contains("reaped-theirs"), "{stdout}");
    assert!(
        !run(docker_direct().args(["container", "inspect", &leftover]))
            .status
            .success()
    );
    assert!(run(docker_direct().args(["container", "inspect", &theirs]))
        .status
        .success());
    // Not privileged: the default capability set, not all of them.
    assert!(stdout.contains("CapEff:\t00000000a80425fb"), "{stdout}");
    assert!(
        with_rule
            .cistern
            .logs()
            .contains("privileged create of a listed image: running it unprivileged"),
        "{}",
        with_rule.cistern.logs()
    );
    // The same create, detached, inspected on the daemon.
    run_ok(with_rule.cistern.docker().args([
        "create",
        "--privileged",
        "--name",
        &name,
        &tag,
        "true",
    ]));
    let privileged =
        run_ok(docker_direct().args(["inspect", "--format", "{{.HostConfig.Privileged}}", &name]));
    assert_eq!(privileged.trim(), "false");
}

/// Runs a testcontainers flows script (two containers: a log-line wait and a
/// port wait, exec, copy in and out) and checks the daemon while it holds
/// them and after its own cleanup.
fn testcontainers_flows(label: &'static str, mut cmd: Command, name: &str, t: &Tenant) {
    let mut cleanup = Cleanup::default();
    cleanup.containers = vec![format!("{name}-logs"), format!("{name}-web")];
    // The Ryuk image cannot be pulled here (no registry): no reaper.
    cmd.env("CISTERN_TEST_NAME", name)
        .env("TESTCONTAINERS_RYUK_DISABLED", "true");
    let flows = Flows::spawn(t, label, cmd);
    let containers = flows.containers();
    assert_eq!(containers.len(), 2, "{}", flows.ready);
    for c in &containers {
        assert_tenant_owns(t, "container", c);
        // The client's own labels are kept next to cistern's.
        assert_eq!(
            label_on_daemon("container", c, "org.testcontainers").as_deref(),
            Some("true")
        );
    }
    let owned = listed_on_daemon("container", &format!("io.cistern.tenant={}", t.tenant));
    assert_eq!(owned.len(), 2, "{owned:?}");
    flows.finish(t);
    for c in &containers {
        assert_eq!(label_on_daemon("container", c, "io.cistern.tenant"), None);
    }
    assert!(listed_on_daemon("container", &format!("io.cistern.tenant={}", t.tenant)).is_empty());
    assert!(listed_on_daemon("volume", &format!("io.cistern.tenant={}", t.tenant)).is_empty());
    assert!(listed_on_daemon("network", &format!("io.cistern.tenant={}", t.tenant)).is_empty());
}

#[test]
fn testcontainers_python_flows_work_through_cistern_and_leave_nothing_behind() {
    let id = unique("tcpy");
    let t = Tenant::start(&id);
    let mut cmd = client("python3", &t.docker_host());
    cmd.arg(clients_dir().join("testcontainers_flows.py"));
    testcontainers_flows("testcontainers-python", cmd, &format!("cistern-{id}"), &t);
}

#[test]
fn testcontainers_node_flows_work_through_cistern_and_leave_nothing_behind() {
    let dir = clients_dir().join("node");
    assert!(
        dir.join("node_modules/testcontainers").is_dir(),
        "testcontainers-node is not installed: run `npm ci` in {} (scripts/test does)",
        dir.display()
    );
    let id = unique("tcnode");
    let t = Tenant::start(&id);
    let mut cmd = client("node", &t.docker_host());
    cmd.arg("flows.js").current_dir(&dir);
    testcontainers_flows("testcontainers-node", cmd, &format!("cistern-{id}"), &t);
}

/// The docker CLI at `program`, at `host`, optionally pinned to an API version.
fn cli(program: &str, host: &str, api: Option<&str>) -> Command {
    let mut cmd = client(program, host);
    cmd.env("DOCKER_CLI_HINTS", "false")
        .env("DOCKER_BUILDKIT", "0");
    if let Some(v) = api {
        cmd.env("DOCKER_API_VERSION", v);
    }
    cmd
}

/// version, run -d, ps, exec, logs, cp both ways, build (classic builder),
/// inspect, rm and rmi with one docker CLI through one tenant's cistern.
fn cli_core_flows(t: &Tenant, program: &str, api: Option<&str>) {
    let host = t.docker_host();
    let label = format!("{program} (API {})", api.unwrap_or("negotiated"));
    let docker = || cli(program, &host, api);
    let ok = |cmd: &mut Command| -> String {
        let out = run(cmd);
        assert!(
            out.status.success(),
            "{label}: {cmd:?} failed through cistern ({}):\nstdout: {}\nstderr: {}\ncistern log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            t.cistern.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let version = ok(docker().args([
        "version",
        "--format",
        "{{.Client.Version}} {{.Client.APIVersion}} {{.Server.APIVersion}}",
    ]));
    println!(
        "{label}: client, client API, server API: {}",
        version.trim()
    );
    let fields: Vec<&str> = version.split_whitespace().collect();
    assert_eq!(
        fields[1..],
        [api.unwrap_or("1.41"), "1.41"],
        "{label}: {version}"
    );

    let name = unique("cli");
    let tag = format!("cistern-test/{name}:latest");
    let mut cleanup = Cleanup::container(&name);
    cleanup.images.push(tag.clone());
    ok(docker().args([
        "run",
        "-d",
        "--name",
        &name,
        busybox(),
        "sh",
        "-c",
        "echo hello-log; exec sleep 300",
    ]));
    assert_tenant_owns(t, "container", &name);
    let listed = ok(docker().args([
        "ps",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Names}}",
    ]));
    assert_eq!(listed.trim(), name, "{label}");
    assert_eq!(
        ok(docker().args(["exec", &name, "echo", "exec-ok"])).trim(),
        "exec-ok"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(docker().args(["logs", &name])).contains("hello-log") {
        assert!(Instant::now() < deadline, "{label}: no log line");
        std::thread::sleep(Duration::from_millis(100));
    }

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, format!("copied in by {label}\n")).unwrap();
    ok(docker()
        .arg("cp")
        .arg(&input)
        .arg(format!("{name}:/tmp/in.txt")));
    assert_eq!(
        ok(docker().args(["exec", &name, "cat", "/tmp/in.txt"])),
        format!("copied in by {label}\n")
    );
    let output = dir.path().join("out.txt");
    ok(docker()
        .arg("cp")
        .arg(format!("{name}:/tmp/in.txt"))
        .arg(&output));
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        format!("copied in by {label}\n")
    );

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nRUN echo built-by-cli > /built\n", busybox()),
    )
    .unwrap();
    ok(docker().args(["build", "-q", "-t", &tag]).arg(&ctx));
    assert_eq!(
        ok(docker().args(["run", "--rm", &tag, "cat", "/built"])).trim(),
        "built-by-cli"
    );

    let state = ok(docker().args(["inspect", "--format", "{{.State.Running}} {{.Name}}", &name]));
    assert_eq!(state.trim(), format!("true /{name}"));
    ok(docker().args(["rm", "-f", &name]));
    ok(docker().args(["rmi", &tag]));
    assert!(!run(docker_direct().args(["container", "inspect", &name]))
        .status
        .success());
    assert!(!run(docker_direct().args(["image", "inspect", &tag]))
        .status
        .success());
    if let Some(v) = api {
        // The pinned client spoke the old API: its requests carried the prefix.
        assert!(
            t.cistern
                .logs()
                .contains(&format!("path=/v{v}/containers/create")),
            "{label}: no /v{v}/ request in the log"
        );
    }
}

#[test]
fn old_and_new_docker_clis_run_the_core_flows_through_cistern() {
    let t = Tenant::start(&unique("clis"));
    for (program, api) in [
        ("/usr/local/bin/docker", None),
        ("/usr/bin/docker", None),
        ("/usr/bin/docker", Some("1.30")),
    ] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing (scripts/test installs docker.io)"
        );
        cli_core_flows(&t, program, api);
    }
    assert!(listed_on_daemon("container", &format!("io.cistern.tenant={}", t.tenant)).is_empty());
}

/// docker-py keeps connections in a pool; when cistern closes the idle ones
/// (`clients.idle_timeout`), its next requests open new ones and succeed.
#[test]
fn docker_py_carries_on_when_idle_pooled_connections_are_closed() {
    let t = Tenant::start_with(&unique("py-idle"), "clients:\n  idle_timeout: 1s\n");
    let script = [
        "import docker, time",
        "c = docker.from_env()",
        "for _ in range(3):",
        "    assert c.ping()",
        "    print(len(c.containers.list(all=True)))",
        "    time.sleep(1.5)",
    ]
    .join("\n");
    let out = client("python3", &t.docker_host())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        t.cistern.logs()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n0\n0\n");
}

/// Removes, on the daemon directly, whatever carries one tenant's label when
/// dropped, so a failing flow leaves nothing behind.
struct TenantLeftovers(String);

impl Drop for TenantLeftovers {
    fn drop(&mut self) {
        let label = format!("io.cistern.tenant={}", self.0);
        for (kind, rm) in [
            ("container", &["rm", "-f", "-v"][..]),
            ("network", &["network", "rm"][..]),
            ("volume", &["volume", "rm"][..]),
        ] {
            let ids = listed_on_daemon(kind, &label);
            if !ids.is_empty() {
                let _ = docker_direct()
                    .args(rm)
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A `docker inspect` template's output for `id`, read on the daemon directly.
fn inspect_on_daemon(kind: &str, id: &str, format: &str) -> String {
    run_ok(docker_direct().args([kind, "inspect", "--format", format, id]))
        .trim()
        .to_string()
}

/// Runs a client's run-options flows script (see `tests/clients/*run_options*`)
/// and checks on the daemon what the client asked for while the script holds
/// it: the tenant's containers, network and volume, `<name>-web` attached to
/// the network with its port published, a healthcheck, no devices and an
/// `on-failure:3` restart policy; then that the client's own cleanup leaves
/// nothing behind.
fn run_options_flows(label: &'static str, mut cmd: Command, name: &str, t: &Tenant) {
    let _leftovers = TenantLeftovers(t.tenant.clone());
    // testcontainers-node commits the web container under this name.
    let committed = format!("{name}-committed:latest");
    let _image = Cleanup::image(&committed);
    cmd.env("CISTERN_TEST_NAME", name)
        .env("TESTCONTAINERS_RYUK_DISABLED", "true");
    let flows = Flows::spawn(t, label, cmd);
    let containers = flows.containers();
    let networks = flows.ids("networks");
    let volumes = flows.ids("volumes");
    assert!(!containers.is_empty(), "{}", flows.ready);
    assert_eq!(networks.len(), 1, "{}", flows.ready);
    assert_eq!(volumes, [format!("{name}-data")], "{}", flows.ready);
    for c in &containers {
        assert_tenant_owns(t, "container", c);
    }
    assert_tenant_owns(t, "network", &networks[0]);
    assert_tenant_owns(t, "volume", &volumes[0]);

    let web = format!("{name}-web");
    let attached = inspect_on_daemon(
        "network",
        &networks[0],
        "{{range .Containers}}{{.Name}} {{end}}",
    );
    assert!(
        attached.split_whitespace().any(|n| n == web),
        "{label}: {web} is not on the network: {attached}"
    );
    let port = inspect_on_daemon(
        "container",
        &web,
        "{{with index .NetworkSettings.Ports \"8080/tcp\"}}{{(index . 0).HostPort}}{{end}}",
    );
    assert!(
        port.parse::<u16>().is_ok_and(|p| p > 0),
        "{label}: 8080/tcp not published: {port:?}"
    );
    assert_eq!(
        inspect_on_daemon("container", &web, "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","wget","-q","-O","/dev/null","http://127.0.0.1:8080/"]"#,
        "{label}"
    );
    // A commit pauses the container; dockerd reports it unhealthy until the
    // next probe after the unpause.
    let deadline = Instant::now() + Duration::from_secs(20);
    while inspect_on_daemon("container", &web, "{{.State.Health.Status}}") != "healthy" {
        assert!(
            Instant::now() < deadline,
            "{label}: {web} is not healthy: {}",
            inspect_on_daemon("container", &web, "{{json .State.Health}}")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mounts = inspect_on_daemon(
        "container",
        &web,
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}",
    );
    assert_eq!(mounts, format!("volume {name}-data /www"), "{label}");
    let restart: Vec<String> = containers
        .iter()
        .map(|c| {
            inspect_on_daemon(
                "container",
                c,
                "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}} {{len .HostConfig.Devices}}",
            )
        })
        .collect();
    assert!(
        restart.iter().any(|r| r == "on-failure:3 0"),
        "{label}: no container with restart policy on-failure:3 and no devices: {restart:?}"
    );

    flows.finish(t);
    for c in &containers {
        assert_eq!(label_on_daemon("container", c, "io.cistern.tenant"), None);
    }
    let tenant = format!("io.cistern.tenant={}", t.tenant);
    for kind in ["container", "network", "volume"] {
        assert!(
            listed_on_daemon(kind, &tenant).is_empty(),
            "{label}: a {kind} is left behind"
        );
    }
    assert!(
        !run(docker_direct().args(["image", "inspect", &committed]))
            .status
            .success(),
        "{label}: image {committed} left behind"
    );
}

#[test]
fn docker_py_runs_on_a_network_with_a_port_volume_healthcheck_and_restart_policy() {
    let id = unique("pyrun");
    let t = Tenant::start(&id);
    let mut cmd = client("python3", &t.docker_host());
    cmd.arg(clients_dir().join("docker_py_run_options.py"));
    run_options_flows("docker-py run options", cmd, &format!("cistern-{id}"), &t);
}

#[test]
fn testcontainers_python_runs_on_a_network_with_a_port_volume_healthcheck_and_restart_policy() {
    let id = unique("tcpyrun");
    let t = Tenant::start(&id);
    let mut cmd = client("python3", &t.docker_host());
    cmd.arg(clients_dir().join("testcontainers_run_options.py"));
    run_options_flows(
        "testcontainers-python run options",
        cmd,
        &format!("cistern-{id}"),
        &t,
    );
}

#[test]
fn testcontainers_node_and_dockerode_run_on_a_network_with_a_port_volume_healthcheck_and_restart_policy(
) {
    let dir = clients_dir().join("node");
    assert!(
        dir.join("node_modules/testcontainers").is_dir(),
        "testcontainers-node is not installed: run `npm ci` in {} (scripts/test does)",
        dir.display()
    );
    let id = unique("tcnoderun");
    let t = Tenant::start(&id);
    let mut cmd = client("node", &t.docker_host());
    cmd.arg("run_options.js").current_dir(&dir);
    run_options_flows(
        "testcontainers-node run options",
        cmd,
        &format!("cistern-{id}"),
        &t,
    );
}
