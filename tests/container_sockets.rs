//! Containers that bind the Docker socket, against the real daemon: each gets
//! a cistern socket of its own, on which every client is the tenant that
//! created the container, whatever uid its processes run as or credentials
//! they present; the socket goes with the container and survives a restart
//! of cistern.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::*;

/// A local uid with no account: peer credentials are all cistern reads.
const USER_UID: u32 = 4242;

/// Cistern with one listener described by `listener_yaml` (under `- name:
/// test`), its socket at `<dir>/docker.sock` and state in `<dir>/state`.
fn start(dir: tempfile::TempDir, id: &str, listener_yaml: &str) -> Cistern {
    let d = dir.path().to_path_buf();
    let config = format!(
        "instance: cs-{id}\nstate_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix: {{path: {sock}, mode: \"0666\"}}\n{listener_yaml}",
        state = d.join("state").display(),
        daemon = daemon().display(),
        sock = d.join("docker.sock").display(),
    );
    Cistern::start_with_config(dir, d.join("docker.sock"), &config)
}

/// A temporary directory others can traverse (its socket is for every uid).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The docker CLI on `socket`, run as `uid` with a config directory of its own.
fn docker_as(uid: u32, socket: &Path, config: &Path) -> Command {
    let mut cmd = docker_at(socket);
    cmd.env("DOCKER_CONFIG", config).env("HOME", config);
    if uid != 0 {
        cmd.uid(uid).gid(uid);
    }
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stdout of a command that must have succeeded (else its output and
/// cistern's log).
fn succeeded(out: &Output, cistern: &Cistern) -> String {
    let text = stdout(out);
    assert!(
        out.status.success(),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cistern.logs()
    );
    text
}

/// The names a `docker ps -a` inside the container printed as `seen <name>`.
fn seen(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("seen "))
        .collect()
}

fn label_of(container: &str, label: &str) -> String {
    run_ok(docker_direct().args([
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{label}\"}}}}"),
        container,
    ]))
    .trim()
    .to_string()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The container's socket on the host, from its label.
fn socket_of(state: &Path, container: &str) -> PathBuf {
    let id = label_of(container, "io.cistern.socket");
    assert_eq!(id.len(), 12, "no socket label on {container}: {id:?}");
    state.join("jobs").join(id).join("sock/docker.sock")
}

/// Two local users share one socket (mode 0666, identity by peer uid), each
/// its own tenant. A container that got the Docker socket acts as the
/// tenant that created it, whichever uid runs inside: the user's container
/// running as root does not see root's containers, and root's container
/// running as the user's uid does not see the user's.
#[test]
fn a_container_with_the_docker_socket_acts_as_its_creator_whatever_uid_runs_inside() {
    let dir = open_dir();
    let config_root = tempfile::tempdir().unwrap();
    let config_user = tempfile::tempdir().unwrap();
    std::fs::set_permissions(config_user.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let cistern = start(dir, &unique("uids"), "");
    let root = |args: &[&str]| run(docker_as(0, &cistern.socket, config_root.path()).args(args));
    let user =
        |args: &[&str]| run(docker_as(USER_UID, &cistern.socket, config_user.path()).args(args));
    let (root_db, user_db) = (unique("uids-root-db"), unique("uids-user-db"));
    let (user_job, root_job) = (unique("uids-user-job"), unique("uids-root-job"));
    let mut _cleanup = Cleanup::default();
    _cleanup.containers = vec![
        root_db.clone(),
        user_db.clone(),
        user_job.clone(),
        root_job.clone(),
    ];
    let cli = docker_cli_image();
    for (out, name) in [
        (
            root(&["create", "--name", &root_db, busybox(), "true"]),
            &root_db,
        ),
        (
            user(&["create", "--name", &user_db, busybox(), "true"]),
            &user_db,
        ),
    ] {
        assert!(
            out.status.success(),
            "create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A container with the Docker socket, run by `as_creator` with `extra`
    // options: inside, it lists what it sees and tries to remove and inspect
    // `other`; it must see exactly `own` and not reach `other`.
    let check = |as_creator: &dyn Fn(&[&str]) -> Output,
                 job: &str,
                 extra: &[&str],
                 other: &str,
                 own: [&str; 2],
                 what: &str| {
        let script = format!(
            "docker ps -a --format 'seen {{{{.Names}}}}'; docker rm {other} >/dev/null 2>&1 && echo removed-{other}; docker inspect --format 'found {{{{.Name}}}}' {other} 2>/dev/null; true"
        );
        let mut args = vec!["run", "--rm", "--name", job];
        args.extend_from_slice(extra);
        args.extend([
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            cli,
            "sh",
            "-c",
            &script,
        ]);
        let out = as_creator(&args);
        let text = succeeded(&out, &cistern);
        let mut names = seen(&text);
        names.sort();
        let mut expected = own.to_vec();
        expected.sort();
        assert_eq!(names, expected, "{what} saw:\n{text}");
        assert!(
            !text.contains("removed-") && !text.contains("found "),
            "{text}"
        );
    };
    // The user's container, its processes root (the image's default).
    check(
        &user,
        &user_job,
        &[],
        &root_db,
        [&user_db, &user_job],
        "the user's container running as root",
    );
    // Root's container, its processes the user's uid.
    let uid = USER_UID.to_string();
    check(
        &root,
        &root_job,
        &["--user", &uid],
        &user_db,
        [&root_db, &root_job],
        "root's container running as the user",
    );

    // Both tenants' containers are still there, each its creator's.
    assert_eq!(label_of(&root_db, "io.cistern.tenant"), "uid-0");
    assert_eq!(
        label_of(&user_db, "io.cistern.tenant"),
        format!("uid-{USER_UID}")
    );
}

/// On a listener that identifies clients by bearer token, the container's
/// socket needs no token and ignores one: a client inside that presents
/// another tenant's token is still its creator.
#[test]
fn a_container_socket_ignores_credentials_presented_inside() {
    let id = unique("tok");
    let (alice, bob) = (format!("alice-{id}"), format!("bob-{id}"));
    let hash = |t: &str| format!("{:x}", Sha256::digest(t.as_bytes()));
    let listener = format!(
        "    identity:\n      tokens:\n        - {{tenant: {alice}, bearer_sha256: {}}}\n        - {{tenant: {bob}, bearer_sha256: {}}}\n",
        hash("alice-token"),
        hash("bob-token")
    );
    let cistern = start(tempfile::tempdir().unwrap(), &id, &listener);
    let with_token = |token: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"HttpHeaders":{{"Authorization":"Bearer {token}"}}}}"#),
        )
        .unwrap();
        dir
    };
    let (alice_cfg, bob_cfg) = (with_token("alice-token"), with_token("bob-token"));
    let (bobs, job) = (unique("tok-bob"), unique("tok-job"));
    let mut _cleanup = Cleanup::default();
    _cleanup.containers = vec![bobs.clone(), job.clone()];
    run_ok(docker_as(0, &cistern.socket, bob_cfg.path()).args([
        "create",
        "--name",
        &bobs,
        busybox(),
        "true",
    ]));
    let script = "docker ps -a --format 'seen {{.Names}}'; mkdir -p /tmp/bob && echo '{\"HttpHeaders\":{\"Authorization\":\"Bearer bob-token\"}}' > /tmp/bob/config.json && DOCKER_CONFIG=/tmp/bob docker ps -a --format 'as-bob {{.Names}}'";
    let out = run(docker_as(0, &cistern.socket, alice_cfg.path()).args([
        "run",
        "--rm",
        "--name",
        &job,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        docker_cli_image(),
        "sh",
        "-c",
        script,
    ]));
    let text = succeeded(&out, &cistern);
    assert_eq!(seen(&text), [job.as_str()], "{text}");
    let as_bob: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("as-bob "))
        .collect();
    assert_eq!(
        as_bob,
        [job.as_str()],
        "bob's token switched tenants inside:\n{text}"
    );
}

/// The bind the daemon gets names the container's own socket (the client's
/// target and options kept), with the socket's directory beside it; the
/// socket exists while the container does and goes with it.
#[test]
fn the_docker_socket_bind_is_mapped_to_a_socket_of_the_containers_own() {
    let cistern = start(tempfile::tempdir().unwrap(), &unique("map"), "");
    let state = cistern.dir.path().join("state");
    let name = unique("sock-map");
    let _cleanup = Cleanup::container(&name);
    let mut sockets = Vec::new();
    for (bind, mode) in [
        ("/var/run/docker.sock:/var/run/docker.sock:ro", ":ro"),
        ("/run/docker.sock:/docker.sock", ""),
    ] {
        run_ok(
            cistern
                .docker()
                .args(["create", "--name", &name, "-v", bind, busybox(), "true"]),
        );
        let socket = socket_of(&state, &name);
        let binds = run_ok(docker_direct().args([
            "inspect",
            "--format",
            "{{json .HostConfig.Binds}}",
            &name,
        ]));
        let target = bind.split(':').nth(1).unwrap();
        let expected = serde_json::json!([
            format!("{}:{target}{mode}", socket.display()),
            format!("{}:/run/cistern:ro", socket.parent().unwrap().display()),
        ]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&binds).unwrap(),
            expected,
            "{bind}"
        );
        assert!(
            std::fs::symlink_metadata(&socket).is_ok(),
            "{} is missing",
            socket.display()
        );
        run_ok(cistern.docker().args(["rm", &name]));
        wait_until(
            "the socket to go with its container",
            Duration::from_secs(10),
            || !socket.parent().unwrap().parent().unwrap().exists(),
        );
        sockets.push(socket);
    }
    assert_ne!(sockets[0], sockets[1], "two containers shared a socket");
    // The same through --mount (a Mounts entry of type bind).
    run_ok(cistern.docker().args([
        "create",
        "--name",
        &name,
        "--mount",
        "type=bind,source=/var/run/docker.sock,target=/s,readonly",
        busybox(),
        "true",
    ]));
    let mounts = run_ok(docker_direct().args([
        "inspect",
        "--format",
        "{{range .HostConfig.Mounts}}{{.Source}} {{.Target}} {{.ReadOnly}}{{end}}",
        &name,
    ]));
    assert_eq!(
        mounts.trim(),
        format!("{} /s true", socket_of(&state, &name).display())
    );
}

/// A TCP client (here the listener's fixed tenant) gets a socket too: the
/// container's clients act as that tenant.
#[test]
fn a_docker_socket_bind_through_tcp_gets_a_socket_fixed_to_the_tcp_tenant() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let config = format!(
        "state_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: unix\n    unix: {{path: {sock}, mode: \"0600\"}}\n  - name: tcp\n    tcp:\n      address: 127.0.0.1:{port}\n",
        state = d.join("state").display(),
        daemon = daemon().display(),
        sock = d.join("docker.sock").display(),
    );
    let cistern = Cistern::start_with_config(dir, d.join("docker.sock"), &config);
    let (job, other) = (unique("sock-tcp"), unique("sock-tcp-other"));
    let mut _cleanup = Cleanup::default();
    _cleanup.containers = vec![job.clone(), other.clone()];
    // Another tenant's container, through the unix listener (uid-0).
    run_ok(
        cistern
            .docker()
            .args(["create", "--name", &other, busybox(), "true"]),
    );
    let out = run(Command::new("docker")
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .env_remove("DOCKER_CONTEXT")
        .args([
            "run",
            "--rm",
            "--name",
            &job,
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            docker_cli_image(),
            "sh",
            "-c",
            "docker ps -a --format 'seen {{.Names}}'",
        ]));
    let text = succeeded(&out, &cistern);
    let names = seen(&text);
    assert!(names.contains(&job.as_str()), "{text}");
    assert!(!names.contains(&other.as_str()), "{text}");
}

/// After cistern restarts on the same state directory, the container's
/// socket is served again: its clients (following DOCKER_HOST into the
/// socket's directory) carry on as the same tenant.
#[test]
fn a_container_socket_survives_a_restart_of_cistern() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let id = unique("restart");
    let mut cistern = start(dir, &id, "    identity: {fixed: keeper}\n");
    let name = unique("sock-keep");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        docker_cli_image(),
        "sleep",
        "600",
    ]));
    let ps = |c: &Cistern| {
        run(c
            .docker()
            .args(["exec", &name, "docker", "ps", "--format", "{{.Names}}"]))
    };
    let before = ps(&cistern);
    assert_eq!(stdout(&before).trim(), name, "{}", cistern.logs());

    cistern.signal(nix::sys::signal::Signal::SIGKILL);
    cistern.wait_exit(Duration::from_secs(5)).unwrap();
    let config = std::fs::read_to_string(d.join("cistern.yaml")).unwrap();
    let _ = std::fs::remove_file(d.join("docker.sock"));
    let restarted =
        Cistern::start_with_config(tempfile::tempdir().unwrap(), d.join("docker.sock"), &config);
    let mut after = ps(&restarted);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !after.status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = ps(&restarted);
    }
    assert_eq!(
        stdout(&after).trim(),
        name,
        "{}\n{}",
        String::from_utf8_lossy(&after.stderr),
        restarted.logs()
    );
    run_ok(restarted.docker().args(["rm", "-f", &name]));
    let socket_dir = d.join("state/jobs");
    wait_until(
        "the socket to go with its container",
        Duration::from_secs(10),
        || std::fs::read_dir(&socket_dir).map_or(true, |mut e| e.next().is_none()),
    );
    drop(cistern);
}

/// A reaper started from inside a container binds the socket `DOCKER_HOST`
/// names there (`/run/cistern/docker.sock`): it gets a socket of its own in
/// the same tenant, not the host path of that name.
#[test]
fn a_bind_of_the_socket_docker_host_names_inside_gets_a_socket_too() {
    let cistern = start(
        tempfile::tempdir().unwrap(),
        &unique("inside"),
        &format!("    identity: {{fixed: {}}}\n", unique("nested")),
    );
    let (outer, inner) = (unique("sock-outer"), unique("sock-inner"));
    let mut cleanup = Cleanup::default();
    cleanup.containers = vec![outer.clone(), inner.clone()];
    let cli = docker_cli_image();
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &outer,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        cli,
        "sleep",
        "600",
    ]));
    let out = run(cistern.docker().args([
        "exec",
        &outer,
        "docker",
        "run",
        "--name",
        &inner,
        "-v",
        "/run/cistern/docker.sock:/var/run/docker.sock",
        cli,
        "docker",
        "-H",
        "unix:///var/run/docker.sock",
        // `-a`: the daemon may list a container as running only after its
        // process has started.
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
    ]));
    let text = succeeded(&out, &cistern);
    let mut names: Vec<&str> = text.lines().collect();
    names.sort();
    let mut expected = vec![outer.as_str(), inner.as_str()];
    expected.sort();
    assert_eq!(names, expected, "{text}");
    let state = cistern.dir.path().join("state");
    let socket = socket_of(&state, &inner);
    let binds = run_ok(docker_direct().args([
        "inspect",
        "--format",
        "{{index .HostConfig.Binds 0}}",
        &inner,
    ]));
    assert_eq!(
        binds.trim(),
        format!("{}:/var/run/docker.sock", socket.display())
    );
}
