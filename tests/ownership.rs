//! Ownership against the real daemon: two tenants on two listeners of one
//! cistern, HTTP credentials, peer credentials, restarts and cleanup.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use support::*;

const BEARER: &str = "s3cret-bearer-token";
const BASIC_USER: &str = "dave";
const BASIC_PASSWORD: &str = "hunter2";

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One cistern with listeners `alice`, `bob` (fixed identities), `tokens`
/// (bearer tenant `carol`, basic tenant `dave`) and `peer`; unique tenant and
/// instance names so concurrent tests never meet.
struct Tenants {
    cistern: Cistern,
    alice: String,
    bob: String,
    instance: String,
    config: PathBuf,
}

impl Tenants {
    fn start(cleanup: bool) -> Tenants {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, cleanup, &unique("own"))
    }

    fn start_in(dir: tempfile::TempDir, cleanup: bool, id: &str) -> Tenants {
        let d = dir.path().to_path_buf();
        let alice = format!("alice-{id}");
        let bob = format!("bob-{id}");
        let instance = format!("test-{id}");
        let config = format!(
            "instance: {instance}\nstate_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: alice\n    unix: {{path: {d}/alice.sock, mode: \"0600\"}}\n    identity: {{fixed: {alice}}}\n    cleanup: {cleanup}\n  - name: bob\n    unix: {{path: {d}/bob.sock, mode: \"0600\"}}\n    identity: {{fixed: {bob}}}\n  - name: tokens\n    unix: {{path: {d}/tokens.sock, mode: \"0600\"}}\n    identity:\n      tokens:\n        - {{tenant: carol-{id}, bearer_sha256: {bearer}}}\n        - {{tenant: dave-{id}, user: {BASIC_USER}, password_sha256: {password}}}\n  - name: peer\n    unix: {{path: {d}/peer.sock, mode: \"0600\"}}\n    identity: peer\n",
            state = d.join("state").display(),
            daemon = daemon().display(),
            d = d.display(),
            bearer = sha256_hex(BEARER),
            password = sha256_hex(BASIC_PASSWORD),
        );
        let config_path = d.join("cistern.yaml");
        // The last listener is bound last: when it answers, all do.
        let cistern = Cistern::start_with_config(dir, d.join("peer.sock"), &config);
        Tenants {
            cistern,
            alice,
            bob,
            instance,
            config: config_path,
        }
    }

    fn sock(&self, listener: &str) -> PathBuf {
        self.cistern.dir.path().join(format!("{listener}.sock"))
    }

    fn alice(&self) -> Command {
        docker_at(&self.sock("alice"))
    }

    fn bob(&self) -> Command {
        docker_at(&self.sock("bob"))
    }
}

fn stderr(cmd: &mut Command) -> (bool, String) {
    let out = run(cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One API request through a socket: status and body. (The docker CLI
/// answers a 404 on create with a pull attempt, as it does with the daemon.)
fn api(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_request(sock, &request).unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn label_on_daemon(kind: &str, name: &str, label: &str) -> String {
    run_ok(docker_direct().args([
        kind,
        "inspect",
        "--format",
        &format!(
            "{{{{index .{} \"{label}\"}}}}",
            if kind == "container" {
                "Config.Labels"
            } else {
                "Labels"
            }
        ),
        name,
    ]))
    .trim()
    .to_string()
}

fn exists_on_daemon(kind: &str, name: &str) -> bool {
    run(docker_direct().args([kind, "inspect", name]))
        .status
        .success()
}

/// Alice's container (running, with her volume mounted, on her network).
struct AlicesThings {
    container: String,
    id: String,
    volume: String,
    network: String,
    _cleanup: Cleanup,
}

fn alices_things(t: &Tenants) -> AlicesThings {
    let container = unique("own-alice-c");
    let volume = unique("own-alice-v");
    let network = unique("own-alice-n");
    let cleanup = Cleanup {
        containers: vec![container.clone()],
        volumes: vec![volume.clone()],
        networks: vec![network.clone()],
        images: vec![],
    };
    run_ok(t.alice().args(["network", "create", &network]));
    let id = run_ok(t.alice().args([
        "run",
        "-d",
        "--name",
        &container,
        "--network",
        &network,
        "-v",
        &format!("{volume}:/data"),
        busybox(),
        "sh",
        "-c",
        "echo alice-secret; sleep 300",
    ]))
    .trim()
    .to_string();
    assert_eq!(id.len(), 64, "{id}");
    AlicesThings {
        container,
        id,
        volume,
        network,
        _cleanup: cleanup,
    }
}

#[test]
fn creates_are_labelled_with_tenant_and_instance() {
    let t = Tenants::start(false);
    let a = alices_things(&t);
    for (kind, name) in [
        ("container", a.container.as_str()),
        ("volume", a.volume.as_str()),
        ("network", a.network.as_str()),
    ] {
        assert_eq!(
            label_on_daemon(kind, name, "io.cistern.tenant"),
            t.alice,
            "{kind}"
        );
        assert_eq!(
            label_on_daemon(kind, name, "io.cistern.instance"),
            t.instance,
            "{kind}"
        );
    }
    // A client-set tenant label loses.
    let forged = unique("own-forged");
    let _c = Cleanup::container(&forged);
    run_ok(t.bob().args([
        "create",
        "--name",
        &forged,
        "--label",
        &format!("io.cistern.tenant={}", t.alice),
        busybox(),
        "true",
    ]));
    assert_eq!(
        label_on_daemon("container", &forged, "io.cistern.tenant"),
        t.bob
    );
    let (ok, err) = stderr(t.alice().args(["container", "inspect", &forged]));
    assert!(!ok && err.contains("No such container"), "{err}");
}

#[test]
fn another_tenants_containers_are_invisible_by_id_prefix_and_name() {
    let t = Tenants::start(false);
    let a = alices_things(&t);
    let prefix = a.id[..12].to_string();
    // What the daemon says for a container that does not exist.
    let (_, direct) = stderr(docker_direct().args(["container", "inspect", "no-such-thing-x"]));
    for reference in [a.container.as_str(), a.id.as_str(), prefix.as_str()] {
        let (ok, err) = stderr(t.bob().args(["container", "inspect", reference]));
        assert!(!ok);
        assert_eq!(
            err.trim(),
            direct.trim().replace("no-such-thing-x", reference),
            "inspect {reference}"
        );
        let no_such = format!("No such container: {reference}");
        for args in [
            vec!["exec", reference, "echo", "hi"],
            vec!["logs", reference],
            vec!["stop", "-t", "1", reference],
            vec!["kill", reference],
            vec!["rm", "-f", reference],
            vec!["attach", "--no-stdin", reference],
            vec!["commit", reference],
            vec!["export", "-o", "/tmp/cistern-own-export.tar", reference],
            vec!["top", reference],
            vec!["rename", reference, "stolen"],
            vec!["pause", reference],
            vec!["update", "--cpu-shares", "512", reference],
            vec!["wait", reference],
            vec!["port", reference],
            vec!["diff", reference],
        ] {
            let (_, err) = stderr(t.bob().args(&args));
            assert!(err.contains(&no_such), "bob {args:?}: {err}");
            assert!(!err.contains("cistern"), "bob {args:?}: {err}");
        }
        let (ok, err) = stderr(
            t.bob()
                .args(["cp", &format!("{reference}:/etc/passwd"), "-"]),
        );
        assert!(
            !ok && err.contains("No such container"),
            "cp {reference}: {err}"
        );
    }
    // Bob's own network cannot take Alice's container, nor Alice's network his.
    let bobnet = unique("own-bob-n");
    let bobc = unique("own-bob-c");
    let _c = Cleanup {
        containers: vec![bobc.clone()],
        networks: vec![bobnet.clone()],
        volumes: vec![],
        images: vec![],
    };
    run_ok(t.bob().args(["network", "create", &bobnet]));
    run_ok(t.bob().args(["create", "--name", &bobc, busybox(), "true"]));
    let (ok, err) = stderr(t.bob().args(["network", "connect", &bobnet, &a.container]));
    assert!(
        !ok && err.contains(&format!("No such container: {}", a.container)),
        "{err}"
    );
    let (ok, err) = stderr(t.bob().args(["network", "connect", &a.network, &bobc]));
    assert!(!ok && err.contains("not found"), "{err}");
    // Nor can Bob mount Alice's volume or join her network at create.
    let (ok, err) = stderr(t.bob().args([
        "run",
        "--rm",
        "-v",
        &format!("{}:/x", a.volume),
        busybox(),
        "cat",
        "/x/y",
    ]));
    assert!(!ok && err.contains("in use by another tenant"), "{err}");
    for body in [
        format!(
            r#"{{"Image":"{}","HostConfig":{{"NetworkMode":"{}"}}}}"#,
            busybox(),
            a.network
        ),
        format!(
            r#"{{"Image":"{}","NetworkingConfig":{{"EndpointsConfig":{{"{}":{{}}}}}}}}"#,
            busybox(),
            a.network
        ),
        format!(
            r#"{{"Image":"{}","HostConfig":{{"Links":["{}:db"]}}}}"#,
            busybox(),
            a.container
        ),
    ] {
        let (status, answer) = api(&t.sock("bob"), "POST", "/v1.41/containers/create", &body);
        assert_eq!(status, 404, "{body}: {answer}");
        assert!(
            answer.contains(&format!("network {} not found", a.network))
                || answer.contains(&format!("No such container: {}", a.container)),
            "{body}: {answer}"
        );
    }
    let (ok, err) = stderr(t.bob().args(["volume", "rm", &a.volume]));
    assert!(
        !ok && err.contains(&format!("get {}: no such volume", a.volume)),
        "{err}"
    );
    let (ok, err) = stderr(t.bob().args(["network", "rm", &a.network]));
    assert!(!ok && err.contains("not found"), "{err}");
    // dockerd finds networks by ID prefix too; Alice's is not found that way.
    let net_id =
        run_ok(docker_direct().args(["network", "inspect", "--format", "{{.Id}}", &a.network]))
            .trim()
            .to_string();
    for reference in [net_id.as_str(), &net_id[..12], &net_id[..4]] {
        let (ok, err) = stderr(t.bob().args(["network", "inspect", reference]));
        assert!(
            !ok && err.contains(&format!("network {reference} not found")),
            "network inspect {reference}: {err}"
        );
        let (ok, err) = stderr(t.bob().args(["inspect", reference]));
        assert!(
            !ok && err.contains("No such object"),
            "inspect {reference}: {err}"
        );
    }
    // Alice's exec is not Bob's either.
    let exec = run_ok(Command::new("sh").arg("-c").arg(format!(
        "curl -s --unix-socket {} -H 'Content-Type: application/json' -d '{{\"Cmd\":[\"true\"]}}' http://d/v1.41/containers/{}/exec",
        t.sock("alice").display(),
        a.container
    )));
    let exec_id = serde_json::from_str::<serde_json::Value>(&exec).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = raw_request(
        &t.sock("bob"),
        &format!("GET /v1.41/exec/{exec_id}/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(status, 404);
    assert!(
        body.contains(&format!("No such exec instance: {exec_id}")),
        "{body}"
    );
    // Everything of Alice's is still there and still works for her.
    let state = run_ok(docker_direct().args([
        "inspect",
        "--format",
        "{{.State.Running}} {{.Name}}",
        &a.id,
    ]));
    assert_eq!(state.trim(), format!("true /{}", a.container));
    assert!(exists_on_daemon("volume", &a.volume));
    assert!(exists_on_daemon("network", &a.network));
    assert!(run_ok(t.alice().args(["logs", &prefix])).contains("alice-secret"));
    assert_eq!(
        run_ok(t.alice().args(["exec", &a.container, "echo", "hi"])).trim(),
        "hi"
    );
    run_ok(t.alice().args(["rm", "-f", &a.container]));
}

#[test]
fn listings_and_events_show_only_the_tenants_own() {
    let t = Tenants::start(false);
    let since = run_ok(docker_direct().args(["info", "--format", "{{.SystemTime}}"]))
        .trim()
        .to_string();
    let a = alices_things(&t);
    let bobc = unique("own-bob-c");
    let _c = Cleanup::container(&bobc);
    run_ok(t.bob().args(["create", "--name", &bobc, busybox(), "true"]));

    let names =
        |cmd: &mut Command| -> Vec<String> { run_ok(cmd).lines().map(str::to_string).collect() };
    assert_eq!(
        names(t.bob().args(["ps", "-a", "--format", "{{.Names}}"])),
        [bobc.as_str()]
    );
    assert_eq!(
        names(t.alice().args(["ps", "-a", "--format", "{{.Names}}"])),
        [a.container.as_str()]
    );
    assert!(names(t.bob().args(["volume", "ls", "-q"])).is_empty());
    assert_eq!(
        names(t.alice().args(["volume", "ls", "-q"])),
        [a.volume.as_str()]
    );
    assert!(names(t.bob().args(["network", "ls", "--format", "{{.Name}}"])).is_empty());
    assert_eq!(
        names(t.alice().args(["network", "ls", "--format", "{{.Name}}"])),
        [a.network.as_str()]
    );
    // A client filter narrows further, never widens.
    assert!(names(t.bob().args([
        "ps",
        "-a",
        "--filter",
        &format!("name={}", a.container),
        "--format",
        "{{.Names}}"
    ]))
    .is_empty());
    // Prune through Bob touches nothing of Alice's.
    run_ok(t.bob().args(["volume", "prune", "-f"]));
    run_ok(t.bob().args(["network", "prune", "-f"]));
    run_ok(t.bob().args(["container", "prune", "-f"]));
    assert!(exists_on_daemon("volume", &a.volume));
    assert!(exists_on_daemon("network", &a.network));
    assert!(
        !exists_on_daemon("container", &bobc),
        "bob's stopped container was pruned"
    );

    let until = run_ok(docker_direct().args(["info", "--format", "{{.SystemTime}}"]))
        .trim()
        .to_string();
    let events =
        |cmd: &mut Command| run_ok(cmd.args(["events", "--since", &since, "--until", &until]));
    let bob_events = events(&mut t.bob());
    assert!(!bob_events.contains(&a.container), "{bob_events}");
    assert!(!bob_events.contains(&a.id), "{bob_events}");
    assert!(bob_events.contains(&bobc), "{bob_events}");
    let alice_events = events(&mut t.alice());
    assert!(alice_events.contains(&a.id), "{alice_events}");
    assert!(!alice_events.contains(&bobc), "{alice_events}");
}

fn docker_with_header(sock: &Path, header: Option<&str>) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = match header {
        Some(h) => serde_json::json!({ "HttpHeaders": { "Authorization": h } }),
        None => serde_json::json!({}),
    };
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut cmd = docker_at(sock);
    cmd.env("DOCKER_CONFIG", dir.path());
    (cmd, dir)
}

#[test]
fn bearer_and_basic_credentials_name_the_tenant_and_wrong_ones_get_401() {
    let t = Tenants::start(false);
    let sock = t.sock("tokens");
    let id = t.alice.trim_start_matches("alice-").to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"))
    );
    for (header, tenant) in [
        (format!("Bearer {BEARER}"), format!("carol-{id}")),
        (basic, format!("dave-{id}")),
    ] {
        let name = unique("own-token");
        let _c = Cleanup::volume_named(&name);
        let (mut cmd, _dir) = docker_with_header(&sock, Some(&header));
        run_ok(cmd.args(["volume", "create", &name]));
        assert_eq!(
            label_on_daemon("volume", &name, "io.cistern.tenant"),
            tenant
        );
    }
    let wrong_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:wrong"))
    );
    for header in [Some("Bearer wrong".to_string()), Some(wrong_basic), None] {
        let (mut cmd, _dir) = docker_with_header(&sock, header.as_deref());
        let (ok, err) = stderr(cmd.args(["ps"]));
        assert!(!ok, "{header:?}");
        assert!(err.contains("cistern: "), "{header:?}: {err}");
        assert!(
            !err.contains(BEARER) && !err.contains(BASIC_PASSWORD),
            "{err}"
        );
    }
    let (status, answer) = raw_request(
        &sock,
        "GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer realm=\"cistern\""),
        "{answer}"
    );
    assert!(
        answer.contains("{\"message\":\"cistern: this listener needs credentials"),
        "{answer}"
    );
    let (status, _) = raw_request(
        &sock,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 401);
    assert!(
        !t.cistern.logs().contains(BEARER),
        "a credential reached the log"
    );
}

#[test]
fn peer_credentials_make_root_tenant_uid_0() {
    let t = Tenants::start(false);
    let name = unique("own-peer");
    let _c = Cleanup::container(&name);
    run_ok(docker_at(&t.sock("peer")).args(["create", "--name", &name, busybox(), "true"]));
    assert_eq!(
        label_on_daemon("container", &name, "io.cistern.tenant"),
        "uid-0"
    );
    let (ok, _) = stderr(t.alice().args(["container", "inspect", &name]));
    assert!(!ok);
}

fn build_image(cmd: &mut Command, tag: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        // Unique content: identical builds share one image ID.
        format!("FROM {}\nRUN echo {tag} > /built.txt\n", busybox()),
    )
    .unwrap();
    run_ok(
        cmd.env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", tag])
            .arg(ctx.path()),
    );
}

#[test]
fn images_belong_to_who_built_them_and_base_images_to_nobody() {
    let t = Tenants::start(false);
    let tag = format!("{}:v1", unique("own-img"));
    let _c = Cleanup::image(&tag);
    build_image(&mut t.alice(), &tag);
    let id = run_ok(docker_direct().args(["image", "inspect", "--format", "{{.Id}}", &tag]))
        .trim()
        .to_string();
    // Alice lists and inspects it; Bob sees base images only.
    let list =
        |cmd: &mut Command| run_ok(cmd.args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(list(&mut t.alice()).contains(&tag));
    let bobs = list(&mut t.bob());
    assert!(!bobs.contains(&tag), "{bobs}");
    assert!(bobs.contains(busybox()), "{bobs}");
    let (ok, err) = stderr(t.bob().args(["image", "inspect", &tag]));
    assert!(!ok && err.contains("No such image"), "{err}");
    let (ok, err) = stderr(t.bob().args(["rmi", &tag]));
    assert!(!ok && err.contains("No such image"), "{err}");
    let (ok, err) = stderr(t.bob().args(["tag", &tag, "bob/stolen:1"]));
    assert!(!ok && err.contains("No such image"), "{err}");
    let (status, answer) = api(
        &t.sock("bob"),
        "POST",
        "/v1.41/containers/create",
        &format!(r#"{{"Image":"{tag}"}}"#),
    );
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer.contains(&format!("No such image: {tag}")),
        "{answer}"
    );
    // Nobody deletes or retags a base image.
    let (ok, err) = stderr(t.alice().args(["rmi", busybox()]));
    assert!(!ok && err.contains("base image"), "{err}");
    let (ok, err) = stderr(t.alice().args(["tag", &tag, busybox()]));
    assert!(!ok && err.contains("base image"), "{err}");
    // Bob may tag a base image and remove his own tag again.
    let bobtag = format!("{}:1", unique("own-bobtag"));
    let _b = Cleanup::image(&bobtag);
    run_ok(t.bob().args(["tag", busybox(), &bobtag]));
    let (ok, err) = stderr(t.alice().args(["rmi", &bobtag]));
    assert!(!ok, "{err}");
    run_ok(t.bob().args(["rmi", &bobtag]));
    assert!(exists_on_daemon("image", busybox()));
    // The owner deletes; the state file forgets it.
    run_ok(t.alice().args(["rmi", &tag]));
    assert!(!exists_on_daemon("image", &id));
    let state = std::fs::read_to_string(t.cistern.dir.path().join("state/images.json")).unwrap();
    assert!(!state.contains(&id), "{state}");
}

#[test]
fn ownership_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    let id = unique("own");
    let mut t = Tenants::start_in(dir, false, &id);
    let a = alices_things(&t);
    let tag = format!("{}:v1", unique("own-img"));
    let _c = Cleanup::image(&tag);
    build_image(&mut t.alice(), &tag);
    t.cistern.signal(nix::sys::signal::Signal::SIGKILL);
    t.cistern
        .wait_exit(Duration::from_secs(10))
        .expect("cistern exited");
    // Start again on the same configuration and state directory (the stale
    // socket files of the killed process are replaced).
    let config = std::fs::read_to_string(&t.config).unwrap();
    let again = Cistern::start_with_config(
        tempfile::tempdir().unwrap(),
        keep.join("peer.sock"),
        &config,
    );
    let bob = || docker_at(&keep.join("bob.sock"));
    let alice = || docker_at(&keep.join("alice.sock"));
    let (ok, err) = stderr(bob().args(["container", "inspect", &a.container]));
    assert!(!ok && err.contains("No such container"), "{err}");
    let (ok, err) = stderr(bob().args(["rmi", &tag]));
    assert!(!ok && err.contains("No such image"), "{err}");
    run_ok(alice().args(["container", "inspect", &a.container]));
    run_ok(alice().args(["rm", "-f", &a.container]));
    run_ok(alice().args(["rmi", &tag]));
    drop(again);
    drop(t);
}

#[test]
fn orphans_of_a_killed_run_are_adopted_or_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    let id = unique("own");
    let mut t = Tenants::start_in(dir, true, &id);
    let config = std::fs::read_to_string(&t.config).unwrap();
    let kill = |c: &mut Cistern| {
        c.signal(nix::sys::signal::Signal::SIGKILL);
        c.wait_exit(Duration::from_secs(10))
            .expect("cistern exited");
    };
    let restart = |config: &str| {
        Cistern::start_with_config(tempfile::tempdir().unwrap(), keep.join("peer.sock"), config)
    };

    // adopt (the default): a killed run's things stay, owned, and go at the
    // next run's shutdown.
    let a = alices_things(&t);
    kill(&mut t.cistern);
    let mut again = restart(&config);
    run_ok(t.alice().args(["container", "inspect", &a.container]));
    again.signal(nix::sys::signal::Signal::SIGTERM);
    again
        .wait_exit(Duration::from_secs(60))
        .expect("cistern exited");
    assert!(!exists_on_daemon("container", &a.id));
    assert!(!exists_on_daemon("volume", &a.volume));
    assert!(!exists_on_daemon("network", &a.network));

    // reap: removed at start.
    let mut again = restart(&config);
    let b = alices_things(&t);
    kill(&mut again);
    let _reaper = restart(&format!("orphans: reap\n{config}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let left = || {
        exists_on_daemon("container", &b.id)
            || exists_on_daemon("volume", &b.volume)
            || exists_on_daemon("network", &b.network)
    };
    while left() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!exists_on_daemon("container", &b.id), "orphan not reaped");
    assert!(!exists_on_daemon("volume", &b.volume));
    assert!(!exists_on_daemon("network", &b.network));
}

#[test]
fn cleanup_on_shutdown_removes_the_tenants_resources() {
    let mut t = Tenants::start(true);
    let a = alices_things(&t);
    let tag = format!("{}:v1", unique("own-img"));
    let _c = Cleanup::image(&tag);
    build_image(&mut t.alice(), &tag);
    // Bob's listener is not marked: his things stay.
    let bobv = unique("own-bob-v");
    let _b = Cleanup::volume_named(&bobv);
    run_ok(t.bob().args(["volume", "create", &bobv]));
    t.cistern.signal(nix::sys::signal::Signal::SIGTERM);
    t.cistern
        .wait_exit(Duration::from_secs(60))
        .expect("cistern exited");
    assert!(!exists_on_daemon("container", &a.id));
    assert!(!exists_on_daemon("volume", &a.volume));
    assert!(!exists_on_daemon("network", &a.network));
    assert!(!exists_on_daemon("image", &tag));
    assert!(exists_on_daemon("volume", &bobv));
    assert!(exists_on_daemon("image", busybox()));
}

#[test]
fn tenants_command_lists_and_cleanup_command_removes_one_tenant() {
    let t = Tenants::start(false);
    let a = alices_things(&t);
    let bobv = unique("own-bob-v");
    let _b = Cleanup::volume_named(&bobv);
    run_ok(t.bob().args(["volume", "create", &bobv]));
    let listing = run_ok(
        Command::new(env!("CARGO_BIN_EXE_cistern"))
            .args(["tenants", "--config"])
            .arg(&t.config),
    );
    assert!(
        listing.contains(&t.alice) && listing.contains(&t.bob),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("container {}", a.container)),
        "{listing}"
    );
    assert!(listing.contains(&format!("volume {bobv}")), "{listing}");
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_cistern"))
            .args(["cleanup", "--tenant", &t.alice, "--config"])
            .arg(&t.config),
    );
    assert!(
        out.contains("1 container(s), 1 volume(s), 1 network(s)"),
        "{out}"
    );
    assert!(!exists_on_daemon("container", &a.id));
    assert!(!exists_on_daemon("volume", &a.volume));
    assert!(!exists_on_daemon("network", &a.network));
    assert!(exists_on_daemon("volume", &bobv));
}

/// testcontainers-node (in a container) reads the bridge gateway to find the
/// Docker host: the predefined networks can be read by all, without the
/// containers attached to them, and still changed by no one.
#[test]
fn predefined_networks_can_be_inspected_without_their_containers() {
    let t = Tenants::start(false);
    let name = unique("own-bridge");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        t.bob()
            .args(["run", "-d", "--name", &name, busybox(), "sleep", "60"]),
    );
    let direct = run_ok(docker_direct().args([
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}} {{len .Containers}}",
        "bridge",
    ]));
    let (gateway, attached) = direct.trim().split_once(' ').unwrap();
    assert!(attached.parse::<usize>().unwrap() >= 1, "{direct}");
    for network in ["bridge", "host", "none"] {
        let seen = run_ok(t.alice().args([
            "network",
            "inspect",
            "--format",
            "{{.Name}} {{range .IPAM.Config}}{{.Gateway}}{{end}} {{len .Containers}}",
            network,
        ]));
        let expected = if network == "bridge" {
            format!("bridge {gateway} 0")
        } else {
            format!("{network}  0")
        };
        assert_eq!(seen.trim(), expected);
    }
    let (ok, err) = stderr(t.alice().args(["network", "rm", "bridge"]));
    assert!(!ok);
    assert!(err.contains("network bridge not found"), "{err}");
    let (ok, err) = stderr(t.alice().args(["network", "disconnect", "bridge", &name]));
    assert!(!ok);
    assert!(
        err.contains("not found") || err.contains("No such container"),
        "{err}"
    );
}

/// `docker save` of `image` on the daemon directly, with `manifest.json`
/// saying `tags` and no `repositories` file.
fn saved_with_tags(image: &str, tags: &[&str]) -> Vec<u8> {
    let saved = run_ok_bytes(docker_direct().args(["save", image]));
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(&saved[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if path.to_str() == Some("repositories") {
            continue;
        }
        if path.to_str() == Some("manifest.json") {
            let mut m: serde_json::Value = serde_json::from_slice(&data).unwrap();
            m[0]["RepoTags"] = serde_json::json!(tags);
            data = serde_json::to_vec(&m).unwrap();
        }
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append_data(&mut header, &path, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

fn run_ok_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `docker load` through `cmd` of `archive`: success and stderr.
fn load(cmd: &mut Command, archive: &[u8]) -> (bool, String) {
    use std::io::Write as _;
    let mut child = cmd
        .arg("load")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let archive = archive.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&archive);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn image_id(name: &str) -> String {
    run_ok(docker_direct().args(["image", "inspect", "--format", "{{.Id}}", name]))
        .trim()
        .to_string()
}

#[test]
fn loads_and_imports_cannot_take_over_other_tenants_tags_or_base_images() {
    let t = Tenants::start(false);
    let alices = format!("{}:v1", unique("own-load-a"));
    let bobs = format!("{}:v1", unique("own-load-b"));
    let imported = format!("{}:v1", unique("own-import-b"));
    let mut cleanup = Cleanup::default();
    cleanup.images = vec![alices.clone(), bobs.clone(), imported.clone()];
    build_image(&mut t.alice(), &alices);
    let alices_id = image_id(&alices);
    let base = busybox().to_string();
    let base_id = image_id(&base);

    // Bob's archive of busybox claiming alice's tag, or the base image's
    // name for another image: refused, and nothing moved.
    for (image, tags) in [
        (base.as_str(), vec![alices.as_str()]),
        (alices.as_str(), vec![base.as_str()]),
    ] {
        let (ok, text) = load(&mut t.bob(), &saved_with_tags(image, &tags));
        assert!(!ok, "bob loaded {tags:?}: {text}");
        assert!(
            text.contains("is in use on this daemon and is not yours"),
            "{text}"
        );
    }
    assert_eq!(image_id(&alices), alices_id);
    assert_eq!(image_id(&base), base_id);
    // A compressed archive cannot be checked: refused.
    let mut gz = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let plain = saved_with_tags(&base, &[&bobs]);
    let mut stdin = gz.stdin.take().unwrap();
    std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &plain));
    let compressed = gz.wait_with_output().unwrap().stdout;
    let (ok, text) = load(&mut t.bob(), &compressed);
    assert!(
        !ok && text.contains("not an uncompressed tar archive"),
        "{text}"
    );

    // Re-loading the base image under its own name changes nothing: fine.
    let (ok, text) = load(&mut t.bob(), &saved_with_tags(&base, &[&base]));
    assert!(ok, "{text}");
    // A new name is bob's: listed for him only, and his to remove.
    let (ok, text) = load(&mut t.bob(), &saved_with_tags(&base, &[&bobs]));
    assert!(ok, "{text}");
    let listed = |cmd: &mut Command| {
        run_ok(cmd.args(["images", "--format", "{{.Repository}}:{{.Tag}}"]))
            .lines()
            .any(|l| l == bobs)
    };
    assert!(listed(&mut t.bob()));
    assert!(!listed(&mut t.alice()));
    let (ok, err) = stderr(t.alice().args(["rmi", &bobs]));
    assert!(!ok, "alice removed bob's tag: {err}");
    run_ok(t.bob().args(["rmi", &bobs]));

    // Imports: not onto alice's tag; a new name is bob's.
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("hello"), "hi").unwrap();
    let import = |tag: &str| {
        let mut tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(rootfs.path())
            .args(["-c", "."])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = t
            .bob()
            .args(["import", "-", tag])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        let _ = tar.wait();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = import(&alices);
    assert!(
        !ok && err.contains("is in use on this daemon and is not yours"),
        "{err}"
    );
    assert_eq!(image_id(&alices), alices_id);
    let (ok, err) = import(&imported);
    assert!(ok, "{err}");
    let (ok, err) = stderr(t.alice().args(["image", "inspect", &imported]));
    assert!(!ok && err.contains("No such image"), "{err}");
    run_ok(t.bob().args(["rmi", &imported]));
}
