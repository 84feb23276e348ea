//! Name namespaces against the real daemon: two tenants on two listeners with
//! `namespaces: true` use the same container, volume and network names at
//! once; every answer shows the names they chose, the daemon the prefixed ones.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

/// One cistern with namespaced listeners `alice` and `bob`.
struct Two {
    cistern: Cistern,
    alice: String,
    bob: String,
    _cleanup: InstanceCleanup,
}

impl Two {
    fn start() -> Two {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let id = unique("ns");
        let alice = format!("alice-{id}");
        let bob = format!("bob-{id}");
        let instance = format!("test-{id}");
        let config = format!(
            "instance: {instance}\nstate_dir: {d}/state\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: alice\n    unix: {{path: {d}/alice.sock, mode: \"0600\"}}\n    identity: {{fixed: {alice}}}\n    namespaces: true\n  - name: bob\n    unix: {{path: {d}/bob.sock, mode: \"0600\"}}\n    identity: {{fixed: {bob}}}\n    namespaces: true\n",
            daemon = daemon().display(),
            d = d.display(),
        );
        let cistern = Cistern::start_with_config(dir, d.join("bob.sock"), &config);
        Two {
            cistern,
            alice,
            bob,
            _cleanup: InstanceCleanup(instance),
        }
    }

    fn sock(&self, who: &str) -> PathBuf {
        self.cistern.dir.path().join(format!("{who}.sock"))
    }

    fn alice(&self) -> Command {
        docker_at(&self.sock("alice"))
    }

    fn bob(&self) -> Command {
        docker_at(&self.sock("bob"))
    }
}

fn lines(out: String) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn daemon_format(kind: &str, name: &str, format: &str) -> String {
    run_ok(docker_direct().args([kind, "inspect", "--format", format, name]))
        .trim()
        .to_string()
}

#[test]
fn two_tenants_use_the_same_names_at_once() {
    let t = Two::start();
    for (cmd, tenant) in [
        (Two::alice as fn(&Two) -> Command, &t.alice),
        (Two::bob, &t.bob),
    ] {
        run_ok(cmd(&t).args(["volume", "create", "cache"]));
        run_ok(cmd(&t).args(["network", "create", "net"]));
        run_ok(cmd(&t).args([
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "net",
            "-v",
            "cache:/data",
            busybox(),
            "sh",
            "-c",
            &format!("echo {tenant} > /data/owner; sleep 300"),
        ]));
    }
    // Each tenant sees its own, under the names it chose; `info` counts its own.
    for (cmd, tenant) in [
        (Two::alice as fn(&Two) -> Command, &t.alice),
        (Two::bob, &t.bob),
    ] {
        let info = run_ok(cmd(&t).args([
            "info",
            "--format",
            "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}}",
        ]));
        assert_eq!(info.trim(), "1 1 0", "{tenant}");
        assert_eq!(
            lines(run_ok(cmd(&t).args(["ps", "--format", "{{.Names}}"]))),
            ["db"]
        );
        assert_eq!(
            lines(run_ok(cmd(&t).args([
                "volume",
                "ls",
                "--format",
                "{{.Name}}"
            ]))),
            ["cache"]
        );
        let nets = lines(run_ok(cmd(&t).args([
            "network",
            "ls",
            "--format",
            "{{.Name}}",
        ])));
        assert!(nets.contains(&"net".to_string()), "{nets:?}");
        assert!(
            !nets.iter().any(|n| n.contains(tenant.as_str())),
            "{nets:?}"
        );
        let inspect = run_ok(cmd(&t).args([
            "inspect",
            "--format",
            "{{.Name}} {{.HostConfig.NetworkMode}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}} {{range .Mounts}}{{.Name}}{{end}}",
            "db",
        ]));
        assert_eq!(inspect.trim(), "/db net net cache");
        // The volume is the tenant's own: it holds what its container wrote.
        let owner = run_ok(cmd(&t).args([
            "run",
            "--rm",
            "-v",
            "cache:/data",
            busybox(),
            "cat",
            "/data/owner",
        ]));
        assert_eq!(owner.trim(), tenant.as_str());
        // On the daemon: the tenant's prefix and labels.
        let daemon_name = format!("{tenant}-db");
        assert_eq!(
            daemon_format(
                "container",
                &daemon_name,
                "{{index .Config.Labels \"io.cistern.tenant\"}}"
            ),
            tenant.as_str()
        );
        assert_eq!(
            daemon_format("volume", &format!("{tenant}-cache"), "{{.Name}}"),
            format!("{tenant}-cache")
        );
        assert_eq!(
            daemon_format("network", &format!("{tenant}-net"), "{{.Name}}"),
            format!("{tenant}-net")
        );
    }
    // Removing by name removes the tenant's own only.
    run_ok(t.alice().args(["rm", "-f", "db"]));
    assert!(
        !run(docker_direct().args(["inspect", &format!("{}-db", t.alice)]))
            .status
            .success()
    );
    assert_eq!(
        daemon_format("container", &format!("{}-db", t.bob), "{{.State.Running}}"),
        "true"
    );
    run_ok(t.alice().args(["volume", "rm", "cache"]));
    run_ok(t.alice().args(["network", "rm", "net"]));
    assert_eq!(
        lines(run_ok(t.bob().args([
            "volume",
            "ls",
            "--format",
            "{{.Name}}"
        ]))),
        ["cache"]
    );
}

#[test]
fn names_resolve_on_networks_links_and_namespaces_and_errors_name_them_as_chosen() {
    let t = Two::start();
    run_ok(t.alice().args(["network", "create", "net"]));
    run_ok(t.alice().args([
        "run",
        "-d",
        "--name",
        "pg",
        "--network",
        "net",
        busybox(),
        "sleep",
        "300",
    ]));
    // Neighbours reach it by the name the client gave.
    run_ok(t.alice().args([
        "run",
        "--rm",
        "--network",
        "net",
        busybox(),
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "pg",
    ]));
    // A link names the container as the client knows it.
    run_ok(t.alice().args([
        "run",
        "--rm",
        "--network",
        "net",
        "--link",
        "pg:pglink",
        busybox(),
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "pglink",
    ]));
    // Joining its own container's namespaces, and mounting its volumes.
    run_ok(t.alice().args([
        "run",
        "--rm",
        "--network",
        "container:pg",
        busybox(),
        "true",
    ]));
    run_ok(
        t.alice()
            .args(["run", "--rm", "--pid", "container:pg", busybox(), "true"]),
    );
    run_ok(
        t.alice()
            .args(["run", "--rm", "--volumes-from", "pg:ro", busybox(), "true"]),
    );
    // Bob has no `pg`: alice's is invisible to him under any name. (The name
    // is not hex on purpose: dockerd finds images and networks by ID prefix,
    // so a bare `inspect db` can rightly find a shared image `db…`.)
    let alices_id = run_ok(t.alice().args(["inspect", "--format", "{{.Id}}", "pg"]))
        .trim()
        .to_string();
    for target in [
        "pg".to_string(),
        alices_id.clone(),
        format!("{}-pg", t.alice),
    ] {
        let img = busybox();
        for body in [
            format!(r#"{{"Image":"{img}","HostConfig":{{"NetworkMode":"container:{target}"}}}}"#),
            format!(r#"{{"Image":"{img}","HostConfig":{{"PidMode":"container:{target}"}}}}"#),
            format!(r#"{{"Image":"{img}","HostConfig":{{"VolumesFrom":["{target}:ro"]}}}}"#),
        ] {
            let (status, text) = raw_request(
                &t.sock("bob"),
                &format!(
                    "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
            .unwrap();
            assert_eq!(status, 404, "bob {body}: {text}");
            assert!(
                text.contains(&format!("No such container: {target}")),
                "{text}"
            );
        }
        let out = run(t.bob().args(["inspect", &target]));
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("No such object"));
    }
    let bobs = run_ok(t.bob().args(["ps", "-aq"]));
    assert_eq!(bobs.trim(), "", "bob's creates left containers behind");
    // The daemon's conflict message names the container as the client did.
    let out = run(t
        .alice()
        .args(["create", "--name", "pg", busybox(), "true"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("The container name \"/pg\" is already in use"),
        "{err}"
    );
    assert!(!err.contains(&t.alice), "{err}");
    // Anchored name filters see the tenant's names.
    assert_eq!(
        run_ok(
            t.alice()
                .args(["ps", "--filter", "name=^/pg$", "--format", "{{.Names}}"])
        )
        .trim(),
        "pg"
    );
    // Rename works within the namespace.
    run_ok(t.alice().args(["rename", "pg", "pg2"]));
    assert_eq!(
        run_ok(t.alice().args(["inspect", "--format", "{{.Name}}", "pg2"])).trim(),
        "/pg2"
    );
    assert!(
        run(docker_direct().args(["inspect", &format!("{}-pg2", t.alice)]))
            .status
            .success()
    );
}

#[test]
fn events_show_the_names_the_tenant_chose() {
    let t = Two::start();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    run_ok(
        t.alice()
            .args(["run", "--rm", "--name", "ev", busybox(), "true"]),
    );
    let events = run_ok(
        t.alice().args([
            "events",
            "--since",
            &start.to_string(),
            "--until",
            &(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1)
            .to_string(),
            "--filter",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}}",
        ]),
    );
    assert_eq!(events.trim(), "ev");
}

/// docker-compose v1 in the compose test directory, against `sock`.
fn compose(sock: &std::path::Path, project: &str) -> Command {
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/compose"))
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env_remove("DOCKER_CONTEXT")
        .env("COMPOSE_PROJECT_NAME", project)
        .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
        .env("CISTERN_TEST_IMAGE", busybox());
    cmd
}

#[test]
fn two_tenants_run_the_same_compose_project_at_once() {
    let t = Two::start();
    let project = "shared";
    let who = ["alice", "bob"];
    // Both `up -d` at the same time.
    let ups: Vec<_> = who
        .iter()
        .map(|w| {
            compose(&t.sock(w), project)
                .args(["up", "-d"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (w, up) in who.iter().zip(ups) {
        let out = up.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{w}: docker-compose up failed:\n{}\ncistern log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            t.cistern.logs()
        );
    }
    for (w, tenant) in who.iter().zip([&t.alice, &t.bob]) {
        // Each project works on its own network, under its own names.
        let page = run_ok(compose(&t.sock(w), project).args([
            "exec",
            "-T",
            "client",
            "wget",
            "-q",
            "-O-",
            "http://web:8080/",
        ]));
        assert_eq!(page.trim(), "hello-from-web", "{w}");
        let ps = run_ok(docker_at(&t.sock(w)).args(["ps", "--format", "{{.Names}}"]));
        assert_eq!(lines(ps), ["shared_client_1", "shared_web_1"], "{w}");
        for (kind, name) in [
            ("container", "shared_web_1"),
            ("network", "shared_backend"),
            ("volume", "shared_data"),
        ] {
            assert_eq!(
                daemon_format(kind, &format!("{tenant}-{name}"), "{{.Name}}")
                    .trim_start_matches('/'),
                format!("{tenant}-{name}")
            );
        }
    }
    for w in who {
        run_ok(compose(&t.sock(w), project).args(["down", "-v", "-t", "1"]));
        assert_eq!(
            run_ok(docker_at(&t.sock(w)).args(["ps", "-aq"])).trim(),
            "",
            "{w}"
        );
    }
    for tenant in [&t.alice, &t.bob] {
        let left = run_ok(docker_direct().args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.cistern.tenant={tenant}"),
        ]));
        assert_eq!(left.trim(), "", "{tenant}: volumes left");
    }
}

/// Builds `tag` through `cmd` from a Dockerfile that writes `who`.
fn build(cmd: &mut Command, tag: &str, who: &str) {
    let dockerfile = format!("FROM {}\nRUN echo {who} > /who\n", busybox());
    build_with(cmd.arg("build").arg("-q"), tag, &dockerfile);
}

/// `cmd` (a `docker build` with its flags) of `dockerfile` with the classic
/// builder, tagged `tag`; what it printed.
fn build_with(cmd: &mut Command, tag: &str, dockerfile: &str) -> String {
    let mut child = cmd
        .env("DOCKER_BUILDKIT", "0")
        .args(["-t", tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tag of a namespaced tenant's build is mapped into its namespace on
/// the query as it is forwarded: the policy's caps, set on that query
/// before, stay.
#[test]
fn a_namespaced_tenants_tagged_build_keeps_the_memory_cap() {
    busybox();
    let t = Two::start();
    let _cleanup = Cleanup::image(&format!("cistern-ns/{}/capped:1", t.alice));
    let dockerfile = format!(
        "FROM {}\nRUN echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)\n",
        busybox()
    );
    let out = build_with(
        t.alice().args(["build", "--no-cache"]),
        "capped:1",
        &dockerfile,
    );
    let limit = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("limit="))
        .unwrap_or_else(|| panic!("no limit in:\n{out}"));
    let bytes: u64 = limit.parse().unwrap_or(u64::MAX);
    assert!(
        bytes <= 64 << 30,
        "the build ran without the memory cap: {limit}"
    );
}

#[test]
fn image_tags_are_namespaced_and_pushed_under_the_name_given() {
    let t = Two::start();
    let tag = "localhost:5999/app:v1";
    let mut images = Cleanup::default();
    for tenant in [&t.alice, &t.bob] {
        for v in ["v1", "v2"] {
            images
                .images
                .push(format!("cistern-ns/{tenant}/localhost__5999/app:{v}"));
        }
    }
    images.images.push(tag.to_string());
    for (cmd, who) in [
        (Two::alice as fn(&Two) -> Command, "alice"),
        (Two::bob, "bob"),
    ] {
        build(&mut cmd(&t), tag, who);
    }
    for (cmd, who, tenant) in [
        (Two::alice as fn(&Two) -> Command, "alice", &t.alice),
        (Two::bob, "bob", &t.bob),
    ] {
        // Each runs its own image under the same name.
        let got = run_ok(cmd(&t).args(["run", "--rm", tag, "cat", "/who"]));
        assert_eq!(got.trim(), who);
        let listed = run_ok(cmd(&t).args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
        assert!(listed.lines().any(|l| l == tag), "{who}: {listed}");
        assert!(
            !listed.contains(&format!("cistern-ns/{tenant}")),
            "{who}: {listed}"
        );
        let other = if who == "alice" { &t.bob } else { &t.alice };
        assert!(
            !listed.contains(&format!("cistern-ns/{other}")),
            "{who}: {listed}"
        );
        let inspect = run_ok(cmd(&t).args(["image", "inspect", "--format", "{{.RepoTags}}", tag]));
        assert_eq!(inspect.trim(), format!("[{tag}]"));
        // On the daemon: under the tenant's image namespace.
        run_ok(docker_direct().args([
            "image",
            "inspect",
            &format!("cistern-ns/{tenant}/localhost__5999/app:v1"),
        ]));
        // Retag and untag within the namespace.
        run_ok(cmd(&t).args(["tag", tag, "localhost:5999/app:v2"]));
        run_ok(cmd(&t).args(["rmi", "localhost:5999/app:v2"]));
    }
    assert!(
        !run(docker_direct().args(["image", "inspect", tag]))
            .status
            .success(),
        "the name the clients gave is not a tag on the daemon"
    );
    // A push sends the name the client gave (no registry listens there: the
    // push fails, after naming the repository), and the name is gone again.
    let out = run(t.alice().args(["push", tag]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("The push refers to repository [localhost:5999/app]"),
        "{text}"
    );
    assert!(!text.contains("cistern-ns"), "{text}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while run(docker_direct().args(["image", "inspect", tag]))
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the push's temporary tag stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Each removes its own.
    for cmd in [Two::alice as fn(&Two) -> Command, Two::bob] {
        run_ok(cmd(&t).args(["rmi", tag]));
    }
}

#[test]
fn a_build_from_the_tenants_own_image_uses_its_namespace() {
    let t = Two::start();
    let mut images = Cleanup::default();
    for tenant in [&t.alice, &t.bob] {
        for name in ["base:1", "app:1"] {
            images.images.push(format!("cistern-ns/{tenant}/{name}"));
        }
    }
    // Each tenant has its own `base:1`; each `app:1` is built FROM it.
    for (cmd, who) in [
        (Two::alice as fn(&Two) -> Command, "alice"),
        (Two::bob, "bob"),
    ] {
        build(&mut cmd(&t), "base:1", &format!("{who}-base"));
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile.app"),
            "FROM base:1 AS b\nRUN cat /who > /from-base\nFROM b\n",
        )
        .unwrap();
        run_ok(
            cmd(&t)
                .env("DOCKER_BUILDKIT", "0")
                .args(["build", "-q", "-f"])
                .arg(ctx.path().join("Dockerfile.app"))
                .args(["-t", "app:1"])
                .arg(ctx.path()),
        );
    }
    for (cmd, who) in [
        (Two::alice as fn(&Two) -> Command, "alice"),
        (Two::bob, "bob"),
    ] {
        let got = run_ok(cmd(&t).args(["run", "--rm", "app:1", "cat", "/from-base"]));
        assert_eq!(got.trim(), format!("{who}-base"));
    }
}

/// `docker save` of `image` through `cmd`.
fn save(cmd: &mut Command, image: &str) -> Vec<u8> {
    let out = cmd.args(["save", image]).output().unwrap();
    assert!(
        out.status.success(),
        "save {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `docker load` of `archive` through `cmd`: its output.
fn load(cmd: &mut Command, archive: Vec<u8>) -> String {
    use std::io::Write as _;
    let mut child = cmd
        .arg("load")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&archive);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    assert!(
        out.status.success(),
        "load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn saved_archives_name_the_tenants_tags_and_loads_go_to_the_loaders_namespace() {
    let t = Two::start();
    let mut images = Cleanup::default();
    for tenant in [&t.alice, &t.bob] {
        images.images.push(format!("cistern-ns/{tenant}/shipped:1"));
    }
    build(&mut t.alice(), "shipped:1", "alice-shipped");
    // Alice's archive names the tag as she does.
    let archive = save(&mut t.alice(), "shipped:1");
    let mut tar = tar::Archive::new(&archive[..]);
    let manifest = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|mut e| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
        .unwrap();
    assert!(manifest.contains(r#""shipped:1""#), "{manifest}");
    // Bob loads it: the tag is his, in his namespace; alice's is untouched.
    let out = load(&mut t.bob(), archive);
    assert!(out.contains("Loaded image: shipped:1"), "{out}");
    assert!(!out.contains("cistern-ns"), "{out}");
    let got = run_ok(t.bob().args(["run", "--rm", "shipped:1", "cat", "/who"]));
    assert_eq!(got.trim(), "alice-shipped");
    run_ok(docker_direct().args([
        "image",
        "inspect",
        &format!("cistern-ns/{}/shipped:1", t.bob),
    ]));
    run_ok(t.bob().args(["rmi", "shipped:1"]));
    run_ok(t.alice().args(["image", "inspect", "shipped:1"]));
}
