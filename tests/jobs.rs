//! Per-job sockets against the real daemon: a CI runner (tenant `runner-*`)
//! creates a job container with the rule's label; the container gets its own
//! docker socket, a docker CLI inside it works through that socket as the
//! job's tenant, and when the job container stops everything the job created
//! is gone within seconds.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

struct Runner {
    cistern: Cistern,
    dir: PathBuf,
    _cleanup: InstanceCleanup,
}

const RULE: &str = "ci.job.type=build";

fn config(d: &Path, runner: &str, instance: &str, ends: &str) -> String {
    format!(
        "instance: {instance}\nstate_dir: {d}/state\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: runner\n    unix: {{path: {d}/runner.sock, mode: \"0600\"}}\n    identity: {{fixed: {runner}}}\n    policy:\n      groups: {{exec: true}}\njobs:\n  rules:\n    - label: {RULE}\n      listeners: [runner]\n      ends: {ends}\n",
        daemon = daemon().display(),
        d = d.display(),
    )
}

impl Runner {
    fn start() -> Runner {
        Runner::start_ending_on("stop")
    }

    /// A runner whose jobs end as `ends` says (`stop` or `remove`).
    fn start_ending_on(ends: &str) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let id = unique("job");
        let runner = format!("runner-{id}");
        let instance = format!("test-{id}");
        let cistern = Cistern::start_with_config(
            dir,
            d.join("runner.sock"),
            &config(&d, &runner, &instance, ends),
        );
        Runner {
            cistern,
            dir: d,
            _cleanup: InstanceCleanup(instance),
        }
    }

    fn docker(&self) -> Command {
        docker_at(&self.dir.join("runner.sock"))
    }

    /// Starts a job container (the docker CLI image, idle) named `name`.
    fn job(&self, name: &str) -> String {
        let image = docker_cli_image();
        run_ok(
            self.docker()
                .args(["run", "-d", "--name", name, "--label", RULE, "-e"])
                .arg(format!("BASE={}", busybox()))
                .args([image, "sleep", "600"]),
        )
        .trim()
        .to_string()
    }

    /// Runs a shell command inside the job container (its docker CLI talks
    /// to the job's socket at /var/run/docker.sock).
    fn in_job(&self, job: &str, script: &str) -> String {
        run_ok(self.docker().args(["exec", job, "sh", "-c", script]))
    }

    fn jobs_json(&self) -> serde_json::Value {
        std::fs::read(self.dir.join("state/jobs.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(serde_json::json!({"jobs": {}}))
    }
}

/// Everything on the daemon labelled with this tenant: containers, volumes,
/// networks (`kind ls` with a label filter), as names.
fn owned_by(tenant: &str) -> Vec<String> {
    let filter = format!("label=io.cistern.tenant={tenant}");
    let mut all = Vec::new();
    for args in [
        vec!["ps", "-a", "--format", "container {{.Names}}"],
        vec!["volume", "ls", "--format", "volume {{.Name}}"],
        vec!["network", "ls", "--format", "network {{.Name}}"],
    ] {
        let out = run_ok(docker_direct().args(&args).args(["--filter", &filter]));
        all.extend(out.lines().map(str::to_string));
    }
    all
}

fn job_tenant(container: &str) -> String {
    let id = run_ok(docker_direct().args([
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.cistern.job\"}}",
        container,
    ]));
    format!("job-{}", id.trim())
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {timeout:?}");
}

#[test]
fn a_job_uses_its_own_socket_and_everything_it_made_goes_when_it_stops() {
    let r = Runner::start();
    let job = unique("job-c");
    let job_id = r.job(&job);
    let tenant = job_tenant(&job);
    assert!(tenant.len() == "job-".len() + 12, "{tenant}");

    // Inside the job: the socket is cistern's, as the job's own tenant.
    r.in_job(&job, "docker run -d --name db $BASE sleep 600");
    r.in_job(
        &job,
        "docker volume create cache && docker network create net",
    );
    r.in_job(
        &job,
        "printf 'FROM %s\\nRUN echo built > /built\\n' $BASE | DOCKER_BUILDKIT=0 docker build -q -t job-image -",
    );
    let ps = r.in_job(&job, "docker ps -a --format '{{.Names}}'");
    assert_eq!(ps.trim(), "db", "the job sees its own containers only");
    // The CLI followed DOCKER_HOST into the socket's directory; the socket
    // at /var/run/docker.sock is the same, for clients that do not.
    assert_eq!(
        r.in_job(&job, "echo $DOCKER_HOST").trim(),
        "unix:///run/cistern/docker.sock"
    );
    let ps = r.in_job(
        &job,
        "docker -H unix:///var/run/docker.sock ps -a --format '{{.Names}}'",
    );
    assert_eq!(ps.trim(), "db");
    let images = r.in_job(&job, "docker images --format '{{.Repository}}'");
    assert!(images.lines().any(|l| l == "job-image"), "{images}");
    // The runner does not see the job's things, nor the job the runner's.
    let runner_ps = run_ok(r.docker().args(["ps", "-a", "--format", "{{.Names}}"]));
    assert_eq!(runner_ps.trim(), job);
    assert!(
        !run(r.docker().args(["inspect", &format!("{tenant}-db")]))
            .status
            .success(),
        "the runner can see the job's container"
    );
    // On the daemon: the job's tenant, namespaced names.
    let mut owned = owned_by(&tenant);
    owned.sort();
    assert_eq!(
        owned,
        [
            format!("container {tenant}-db"),
            format!("network {tenant}-net"),
            format!("volume {tenant}-cache"),
        ]
    );
    // The job's image, under its tenant's image namespace on the daemon.
    let daemon_image = format!("cistern-ns/{tenant}/job-image");
    run_ok(docker_direct().args(["image", "inspect", &daemon_image]));
    let socket = PathBuf::from(
        r.jobs_json()["jobs"][&tenant["job-".len()..]]["socket"]
            .as_str()
            .unwrap(),
    );
    assert!(socket.exists());
    let job_dir = socket.parent().unwrap().parent().unwrap().to_path_buf();
    assert_eq!(socket.parent().unwrap().file_name().unwrap(), "sock");

    // The job container stops: all of it goes, within 5 seconds.
    run_ok(docker_direct().args(["stop", "-t", "0", &job_id]));
    let took = wait_until("job cleanup", Duration::from_secs(5), || {
        owned_by(&tenant).is_empty()
            && !run(docker_direct().args(["image", "inspect", &daemon_image]))
                .status
                .success()
            && !socket.exists()
            && !job_dir.exists()
    });
    println!("job cleaned up {took:?} after its container stopped");
    assert_eq!(r.jobs_json()["jobs"], serde_json::json!({}));
    // The job container itself is the runner's, and stays for it to remove.
    run_ok(r.docker().args(["rm", &job]));
}

#[test]
fn two_jobs_use_the_same_names_and_a_removed_job_container_ends_its_job() {
    let r = Runner::start();
    let (a, b) = (unique("job-a"), unique("job-b"));
    r.job(&a);
    r.job(&b);
    for job in [&a, &b] {
        r.in_job(job, "docker network create app_default && docker run -d --name web --network app_default $BASE sleep 600");
        assert_eq!(
            r.in_job(job, "docker ps --format '{{.Names}}'").trim(),
            "web"
        );
    }
    let ta = job_tenant(&a);
    let tb = job_tenant(&b);
    assert_ne!(ta, tb);
    // Removing (not just stopping) a job container ends its job too.
    run_ok(r.docker().args(["rm", "-f", &a]));
    wait_until("job a cleanup", Duration::from_secs(5), || {
        owned_by(&ta).is_empty()
    });
    assert_eq!(owned_by(&tb).len(), 2, "job b lost its things");
    assert_eq!(
        r.in_job(&b, "docker ps --format '{{.Names}}'").trim(),
        "web"
    );
}

#[test]
fn a_job_outlives_a_kill_9_of_cistern_and_is_cleaned_up_after_the_restart() {
    let mut r = Runner::start();
    let (live, gone) = (unique("job-live"), unique("job-gone"));
    r.job(&live);
    r.job(&gone);
    r.in_job(&live, "docker run -d --name db $BASE sleep 600");
    r.in_job(&gone, "docker run -d --name db $BASE sleep 600");
    let (t_live, t_gone) = (job_tenant(&live), job_tenant(&gone));

    r.cistern.signal(nix::sys::signal::Signal::SIGKILL);
    r.cistern.wait_exit(Duration::from_secs(5)).unwrap();
    // While cistern is down, one job container goes away.
    run_ok(docker_direct().args(["rm", "-f", &gone]));
    // Restart on the same state directory.
    let config = std::fs::read_to_string(r.dir.join("cistern.yaml")).unwrap();
    let _ = std::fs::remove_file(r.dir.join("runner.sock"));
    let dir = tempfile::tempdir().unwrap();
    let restarted = Cistern::start_with_config(dir, r.dir.join("runner.sock"), &config);
    // The orphaned job is reaped; the live one keeps what it owns.
    wait_until("orphaned job reaped", Duration::from_secs(10), || {
        owned_by(&t_gone).is_empty()
    });
    assert_eq!(owned_by(&t_live), [format!("container {t_live}-db")]);
    // The runner still owns its job container.
    let ps = run_ok(r.docker().args(["ps", "--format", "{{.Names}}"]));
    assert_eq!(ps.trim(), live);
    // The job's clients carry on through the socket's directory, which sees
    // the socket bound again; the file mounted at /var/run/docker.sock is
    // the old socket, dead.
    assert_eq!(
        r.in_job(&live, "docker ps --format '{{.Names}}'").trim(),
        "db"
    );
    let pinned = run(r.docker().args([
        "exec",
        &live,
        "docker",
        "-H",
        "unix:///var/run/docker.sock",
        "ps",
    ]));
    assert!(!pinned.status.success());
    // The live job ends normally after the restart.
    run_ok(r.docker().args(["rm", "-f", &live]));
    wait_until(
        "live job cleanup after restart",
        Duration::from_secs(5),
        || owned_by(&t_live).is_empty(),
    );
    drop(restarted);
}

/// A reaper (or docker-in-docker style step) inside a job binds the Docker
/// socket as the job knows it: it gets a socket of its own in the job's
/// tenant, so it sees and reaps only the job's containers, and its socket
/// goes when the job ends.
#[test]
fn a_docker_socket_bind_inside_a_job_gets_a_socket_in_the_jobs_tenant() {
    let r = Runner::start();
    let job = unique("job-sock");
    r.job(&job);
    let tenant = job_tenant(&job);
    let socket = r.jobs_json()["jobs"][&tenant["job-".len()..]]["socket"]
        .as_str()
        .unwrap()
        .to_string();
    r.in_job(&job, "docker create --name leftover $BASE true");
    r.in_job(
        &job,
        &format!(
            "docker run -d --name reaper -v /var/run/docker.sock:/var/run/docker.sock {} sleep 600",
            docker_cli_image()
        ),
    );
    let reaper = format!("{tenant}-reaper");
    let binds = run_ok(docker_direct().args([
        "inspect",
        "--format",
        "{{json .HostConfig.Binds}}",
        &reaper,
    ]));
    let own = run_ok(docker_direct().args([
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.cistern.socket\"}}",
        &reaper,
    ]));
    // `<socket_dir>/<job>/sock/docker.sock` beside `<socket_dir>/<own>/sock`.
    let socket_dir = Path::new(&socket).ancestors().nth(3).unwrap();
    let own_dir = socket_dir.join(own.trim());
    assert_ne!(own.trim(), &tenant["job-".len()..]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&binds).unwrap(),
        serde_json::json!([
            format!(
                "{}:/var/run/docker.sock",
                own_dir.join("sock/docker.sock").display()
            ),
            format!("{}:/run/cistern:ro", own_dir.join("sock").display()),
        ])
    );
    // The reaper lists the job's containers (not the job container, which is
    // the runner's) and removes one.
    let seen = r.in_job(
        &job,
        "docker exec reaper sh -c \"docker ps -a --format '{{.Names}}' | sort && docker rm leftover\"",
    );
    assert_eq!(seen, "leftover\nreaper\nleftover\n");
    assert_eq!(owned_by(&tenant), [format!("container {tenant}-reaper")]);
    run_ok(r.docker().args(["rm", "-f", &job]));
    wait_until("job cleanup", Duration::from_secs(5), || {
        owned_by(&tenant).is_empty()
    });
    wait_until("the reaper's socket to go", Duration::from_secs(5), || {
        !own_dir.exists()
    });
}

#[test]
fn a_spoofed_job_label_neither_sticks_nor_ends_the_job() {
    let r = Runner::start();
    let job = unique("job-s");
    r.job(&job);
    r.in_job(&job, "docker volume create keep");
    let tenant = job_tenant(&job);
    let id = &tenant["job-".len()..];
    // Another container claiming the job's label, stopped at once.
    let spoof = unique("job-spoof");
    run_ok(r.docker().args([
        "run",
        "--name",
        &spoof,
        "--label",
        &format!("io.cistern.job={id}"),
        busybox(),
        "true",
    ]));
    let label = run_ok(docker_direct().args([
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.cistern.job\"}}",
        &spoof,
    ]));
    assert_eq!(label.trim(), "", "a client set cistern's job label");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(owned_by(&tenant), [format!("volume {tenant}-keep")]);
}

/// GitLab Runner starts its build container again for each stage of a job:
/// with `ends: remove`, the job and its socket outlive the container's stops
/// (a restart of cistern meanwhile included), and end when it is removed.
#[test]
fn a_job_that_ends_on_removal_keeps_its_socket_across_stops_and_ends_when_removed() {
    let mut r = Runner::start_ending_on("remove");
    let job = unique("job-rm");
    r.job(&job);
    let tenant = job_tenant(&job);
    r.in_job(&job, "docker run -d --name db $BASE sleep 600");
    run_ok(r.docker().args(["stop", "-t", "0", &job]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(owned_by(&tenant), [format!("container {tenant}-db")]);
    run_ok(r.docker().args(["start", &job]));
    assert_eq!(
        r.in_job(&job, "docker ps --format '{{.Names}}'").trim(),
        "db"
    );

    // Stopped while cistern is down: the restarted cistern serves the
    // socket again, and the container's next start binds it.
    run_ok(r.docker().args(["stop", "-t", "0", &job]));
    r.cistern.signal(nix::sys::signal::Signal::SIGKILL);
    r.cistern.wait_exit(Duration::from_secs(5)).unwrap();
    let config = std::fs::read_to_string(r.dir.join("cistern.yaml")).unwrap();
    let _ = std::fs::remove_file(r.dir.join("runner.sock"));
    let restarted = Cistern::start_with_config(
        tempfile::tempdir().unwrap(),
        r.dir.join("runner.sock"),
        &config,
    );
    run_ok(r.docker().args(["start", &job]));
    assert_eq!(
        r.in_job(
            &job,
            "docker -H unix:///var/run/docker.sock ps --format '{{.Names}}'"
        )
        .trim(),
        "db"
    );

    run_ok(r.docker().args(["rm", "-f", &job]));
    wait_until("job cleanup", Duration::from_secs(5), || {
        owned_by(&tenant).is_empty()
    });
    drop(restarted);
}
