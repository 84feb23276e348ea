//! BuildKit builds through cistern against the real daemon, with the docker
//! CLI's own BuildKit client (the 20.10 CLI with `DOCKER_BUILDKIT=1`: a
//! `/session` hijack serving the context, secrets and exports, and
//! `POST /build?version=2&session=...`): the Dockerfile features CI uses,
//! tenants' tags and sessions kept apart, refusals that run nothing on the
//! daemon, per-job sockets, cache routing, and the switch that turns
//! BuildKit off. Heredocs are not tested: the daemon's built-in Dockerfile
//! frontend (BuildKit 0.8) predates them.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The 20.10 CLI, which builds with BuildKit by itself (the newer one on
/// the machine has no buildx plugin).
const CLI: &str = "/usr/bin/docker";

/// A BuildKit `docker` command against `sock`.
fn bk(sock: &Path) -> Command {
    bk_at(&format!("unix://{}", sock.display()))
}

/// A BuildKit `docker` command against `DOCKER_HOST=host`.
fn bk_at(host: &str) -> Command {
    let mut cmd = Command::new(CLI);
    cmd.env("DOCKER_HOST", host)
        .env("DOCKER_BUILDKIT", "1")
        .env("BUILDKIT_PROGRESS", "plain")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY");
    cmd
}

/// A build context holding `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Tenants `alice` and `bob` on listeners of their own (`extra` is added to
/// both listeners' YAML), and `carol` on a listener whose policy turns
/// BuildKit off.
struct Tenants {
    cistern: Cistern,
    alice: String,
    bob: String,
    _cleanup: InstanceCleanup,
}

impl Tenants {
    fn start(extra: &str, log: &str) -> Tenants {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let id = unique("bk");
        let (alice, bob) = (format!("alice-{id}"), format!("bob-{id}"));
        let instance = format!("test-{id}");
        let config = format!(
            "instance: {instance}\nstate_dir: {d}/state\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: alice\n    unix: {{path: {d}/alice.sock, mode: \"0600\"}}\n    identity: {{fixed: {alice}}}\n{extra}  - name: bob\n    unix: {{path: {d}/bob.sock, mode: \"0600\"}}\n    identity: {{fixed: {bob}}}\n{extra}  - name: carol\n    unix: {{path: {d}/carol.sock, mode: \"0600\"}}\n    identity: {{fixed: carol-{id}}}\n    policy: {{groups: {{session: false}}}}\n",
            daemon = daemon().display(),
            d = d.display(),
        );
        let level = format!("RUST_LOG={log}");
        let cistern = Cistern::start_under(&["env", &level], dir, d.join("carol.sock"), &config);
        Tenants {
            cistern,
            alice,
            bob,
            _cleanup: InstanceCleanup(instance),
        }
    }

    fn sock(&self, who: &str) -> PathBuf {
        self.cistern.dir.path().join(format!("{who}.sock"))
    }
}

fn image_id(cmd: &mut Command, image: &str) -> Option<String> {
    let out = run(cmd.args(["image", "inspect", "--format", "{{.Id}}", image]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The descriptions of the daemon's build cache records (`mount / from
/// exec /bin/sh -c <RUN command>`): what BuildKit ran.
fn build_cache_descriptions() -> String {
    let (status, text) = raw_request(
        &daemon(),
        "GET /v1.41/system/df HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

#[test]
fn buildkit_builds_multi_stage_with_cache_mounts_secrets_args_targets_and_outputs() {
    busybox();
    let t = Tenants::start("    cleanup: true\n", "debug");
    let alice = t.sock("alice");
    let token = unique("greeting");
    let cache_id = unique("cache");
    let tag = format!("cistern-test/{}:1", unique("bk-features"));
    let _cleanup = Cleanup::image(&tag);
    let secret = format!("s3cr3t-{}", unique("value"));
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), &secret).unwrap();
    let ctx = context(&format!(
        "FROM {BUSYBOX} AS base\n\
         ARG GREETING=none\n\
         RUN --mount=type=cache,target=/cache,id={cache_id} echo \"$GREETING\" > /cache/g && cp /cache/g /greeting\n\
         FROM base AS secret\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sha\n\
         FROM {BUSYBOX} AS final\n\
         COPY --from=base /greeting /greeting\n\
         COPY --from=secret /tok.sha /tok.sha\n\
         FROM final AS never\n\
         RUN exit 3\n\
         FROM {BUSYBOX} AS reader\n\
         RUN --mount=type=cache,target=/cache,id={cache_id} cp /cache/g /from-cache\n\
         FROM scratch AS out\n\
         COPY --from=reader /from-cache /from-cache\n"
    ));
    let iid = ctx.path().join("iid");
    let out = run(bk(&alice)
        .args(["build", "--target", "final", "--build-arg"])
        .arg(format!("GREETING={token}"))
        .arg("--secret")
        .arg(format!("id=tok,src={}", secret_file.path().display()))
        .arg("--iidfile")
        .arg(&iid)
        .args(["-t", &tag])
        .arg(ctx.path()));
    assert!(
        out.status.success(),
        "{}\ncistern:\n{}",
        output(&out),
        t.cistern.logs()
    );
    // --iidfile names the image the tag points to, and the tenant sees it.
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(image_id(&mut bk(&alice), &tag).as_deref(), Some(id.trim()));
    // The build argument and the secret reached the RUN steps; the stage
    // past --target did not run.
    let shown = run_ok(docker_direct().args(["run", "--rm", &tag, "cat", "/greeting", "/tok.sha"]));
    assert_eq!(
        shown,
        format!("{token}\n{}\n", sha256_hex(secret.as_bytes()))
    );
    // Exports go to the client over its session: the cache mount kept what
    // the first build wrote.
    let local = tempfile::tempdir().unwrap();
    run_ok(
        bk(&alice)
            .args(["build", "--target", "out", "--output"])
            .arg(format!("type=local,dest={}", local.path().display()))
            .arg(ctx.path()),
    );
    assert_eq!(
        std::fs::read_to_string(local.path().join("from-cache")).unwrap(),
        format!("{token}\n")
    );
    let tar = local.path().join("out.tar");
    run_ok(
        bk(&alice)
            .args(["build", "--target", "out", "--output"])
            .arg(format!("type=tar,dest={}", tar.display()))
            .arg(ctx.path()),
    );
    let listed = run_ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(listed.lines().any(|l| l == "from-cache"), "{listed}");
    // The secret passed through cistern's session bytes, never its log.
    let logs = t.cistern.logs();
    assert!(logs.contains("BuildKit session opened"), "{logs}");
    assert!(!logs.contains(&secret), "the secret is in cistern's log");
    // The image is the tenant's: bob does not see it, and cleanup removes it.
    assert_eq!(image_id(&mut bk(&t.sock("bob")), &tag), None);
    t.cistern.signal(nix::sys::signal::Signal::SIGTERM);
    let mut t = t;
    t.cistern.wait_exit(Duration::from_secs(20)).unwrap();
    assert_eq!(
        image_id(&mut docker_direct(), &tag),
        None,
        "cleanup kept it"
    );
}

#[test]
fn refused_buildkit_builds_run_nothing_and_tags_stay_their_owners() {
    busybox();
    let t = Tenants::start("", "info");
    let (alice, bob) = (t.sock("alice"), t.sock("bob"));
    let tag = format!("cistern-test/{}:1", unique("bk-owned"));
    let _cleanup = Cleanup::image(&tag);
    // A build whose RUN step is marked: the daemon's build cache records it.
    let marked = |mark: &str| context(&format!("FROM {BUSYBOX}\nRUN echo {mark} > /mark\n"));
    let ran = unique("ran");
    run_ok(
        bk(&alice)
            .args(["build", "-t", &tag])
            .arg(marked(&ran).path()),
    );
    assert!(build_cache_descriptions().contains(&ran));
    let alices = image_id(&mut docker_direct(), &tag).unwrap();

    for (who, args, refusal) in [
        (&alice, vec!["--network=host"], "network mode"),
        (&bob, vec!["-t", tag.as_str()], "in use by another tenant"),
        (&bob, vec!["-t", BUSYBOX], "is a base image"),
    ] {
        let mark = unique("refused");
        let out = run(bk(who).arg("build").args(&args).arg(marked(&mark).path()));
        let text = output(&out);
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(text.contains(refusal), "{args:?}: {text}");
        assert!(
            !build_cache_descriptions().contains(&mark),
            "{args:?}: the refused build ran"
        );
    }
    assert_eq!(
        image_id(&mut docker_direct(), &tag).as_deref(),
        Some(alices.as_str())
    );
    // The build cache is every tenant's: no prune through cistern, and its
    // records (alice's RUN commands) are not shown.
    let out = run(bk(&bob).args(["builder", "prune", "-f"]));
    assert!(
        output(&out).contains("build cache is shared"),
        "{}",
        output(&out)
    );
    let (_, df) = raw_request(
        &bob,
        "GET /v1.41/system/df HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(
        df.contains(r#""BuildCache":[]"#) && !df.contains(&ran),
        "{df}"
    );
    // The classic builder still works beside BuildKit.
    let legacy = format!("cistern-test/{}:1", unique("bk-legacy"));
    let _legacy = Cleanup::image(&legacy);
    run_ok(
        bk(&alice)
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &legacy])
            .arg(marked("legacy").path()),
    );
}

/// Opens a `/session` hijack on `sock` with `id`; the stream stays open (the
/// session held) until dropped. Returns the status and the stream.
fn open_session(sock: &Path, id: &str) -> (u16, UnixStream) {
    let mut stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /session HTTP/1.1\r\nHost: d\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\
         X-Docker-Expose-Session-Uuid: {id}\r\nX-Docker-Expose-Session-Name: test\r\n\
         X-Docker-Expose-Session-Sharedkey: k\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, stream)
}

fn post(sock: &Path, path: &str) -> (u16, String) {
    raw_request(
        sock,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .unwrap()
}

/// The 20.10 CLI sends a BuildKit build while its session is still on its
/// way, and if the build fails first it serves that session forever (its
/// close runs before its start): a refusal is answered once the session
/// the build names is open (or after 5 s), as the daemon's build waits.
#[test]
fn a_refused_buildkit_build_is_answered_once_its_session_is_open() {
    let t = Tenants::start("", "info");
    let sock = t.sock("alice");
    let id = unique("late-session");
    let opener = {
        let (sock, id) = (sock.clone(), id.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            let sent = std::time::Instant::now();
            let (status, stream) = open_session(&sock, &id);
            (status, sent, stream)
        })
    };
    let (status, text) = post(
        &sock,
        &format!("/v1.41/build?version=2&session={id}&networkmode=host"),
    );
    let answered = std::time::Instant::now();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("network mode"), "{text}");
    let (opened_status, sent, _session) = opener.join().unwrap();
    assert_eq!(opened_status, 101);
    assert!(
        answered >= sent,
        "the refusal came {:?} before the session was even asked for",
        sent - answered
    );
}

#[test]
fn a_session_is_its_openers_and_buildkit_can_be_switched_off() {
    let t = Tenants::start("", "info");
    let (alice, bob, carol) = (t.sock("alice"), t.sock("bob"), t.sock("carol"));
    let id = unique("session");
    let (status, held) = open_session(&alice, &id);
    assert_eq!(status, 101);
    // Bob can neither take alice's session ID nor build with her session
    // (her context, secrets and SSH agent); nobody builds with a session
    // that is not open; cancels are for one's own builds.
    assert_eq!(open_session(&bob, &id).0, 403);
    let build = format!("/v1.41/build?version=2&remote=client-session&session={id}&buildid=b-{id}");
    let (status, text) = post(&bob, &build);
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains(r#"{"message":"cistern: BuildKit session"#),
        "{text}"
    );
    let (status, _) = post(
        &alice,
        "/v1.41/build?version=2&remote=client-session&session=not-open",
    );
    assert_eq!(status, 403);
    assert_eq!(post(&bob, &format!("/v1.41/build/cancel?id=b-{id}")).0, 404);
    // The session is released with its connection.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, again) = loop {
        let (status, stream) = open_session(&bob, &id);
        if status == 101 || Instant::now() > deadline {
            break (status, stream);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 101);
    drop(again);

    // Off by policy: pings say so, and the hijack and builds are refused.
    let ping = "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
    let header = |sock: &Path| {
        let (_, text) = raw_request(sock, ping).unwrap();
        text.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("builder-version:"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    };
    assert_eq!(header(&carol).as_deref(), Some("1"));
    assert_eq!(
        header(&alice),
        header(&daemon()),
        "the daemon's answer, as is"
    );
    assert_eq!(open_session(&carol, &unique("s")).0, 403);
    let (status, text) = post(&carol, "/v1.41/build?version=2");
    assert_eq!(status, 403);
    assert!(text.contains("BuildKit is not allowed"), "{text}");
}

#[test]
fn two_tenants_build_the_same_tag_name_at_once() {
    busybox();
    let t = Tenants::start("    namespaces: true\n", "info");
    let tag = format!("cistern-test/{}:1", unique("bk-same"));
    let daemon_names: Vec<String> = [&t.alice, &t.bob]
        .iter()
        .map(|who| format!("cistern-ns/{who}/{tag}"))
        .collect();
    let mut cleanup = Cleanup::default();
    cleanup.images.clone_from(&daemon_names);
    let contexts: Vec<_> = [&t.alice, &t.bob]
        .iter()
        .map(|who| context(&format!("FROM {BUSYBOX}\nRUN echo {who} > /who\n")))
        .collect();
    let children: Vec<_> = ["alice", "bob"]
        .iter()
        .zip(&contexts)
        .map(|(who, ctx)| {
            bk(&t.sock(who))
                .args(["build", "-q", "-t", &tag])
                .arg(ctx.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", output(&out));
    }
    for (who, name) in [("alice", &t.alice), ("bob", &t.bob)] {
        let shown = run_ok(bk(&t.sock(who)).args(["run", "--rm", &tag, "cat", "/who"]));
        assert_eq!(shown.trim(), name.as_str());
    }
    for name in &daemon_names {
        assert!(image_id(&mut docker_direct(), name).is_some(), "{name}");
    }
}

/// `RUN --mount=type=cache` directories are the daemon's, shared by every
/// build naming the same id: through cistern each tenant's are its own,
/// even when a build names another tenant's namespace itself.
#[test]
fn cache_mounts_are_each_tenants_own() {
    busybox();
    let t = Tenants::start("", "info");
    // Lists the cache mount's files, then leaves a file named by TOKEN.
    let ctx = context(&format!(
        "FROM {BUSYBOX}\nARG TOKEN\nRUN --mount=type=cache,target=/var/cache/zc echo \"seen:$(ls /var/cache/zc | tr '\\n' ' ')\" && touch /var/cache/zc/$TOKEN\n"
    ));
    let build = |who: &str, token: &str, extra: &[&str]| -> String {
        let out = run(bk(&t.sock(who))
            .args(["build", "--progress=plain", "--build-arg"])
            .arg(format!("TOKEN={token}"))
            .args(extra)
            .arg(ctx.path()));
        let text = output(&out);
        assert!(out.status.success(), "{text}");
        text.lines()
            .filter(|l| !l.contains("RUN"))
            .find_map(|l| {
                l.split_once("seen:")
                    .map(|(_, seen)| seen.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no listing in:\n{text}"))
    };
    let (a1, a2, b1, b2) = (unique("a1"), unique("a2"), unique("b1"), unique("b2"));
    assert_eq!(build("alice", &a1, &[]), "");
    // Alice's second build finds what her first left.
    assert_eq!(build("alice", &a2, &[]), a1);
    // Bob's does not, not even naming Alice's namespace himself.
    let alices = format!(
        "BUILDKIT_CACHE_MOUNT_NS=cistern/test-{}/{}",
        t.alice.trim_start_matches("alice-"),
        t.alice
    );
    assert_eq!(build("bob", &b1, &["--build-arg", &alices]), "");
    assert_eq!(build("bob", &b2, &[]), b1);
}

#[test]
fn a_job_builds_with_buildkit_through_its_socket_and_its_image_goes_with_it() {
    busybox();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let id = unique("bkjob");
    let instance = format!("test-{id}");
    let _instance = InstanceCleanup(instance.clone());
    let config = format!(
        "instance: {instance}\nstate_dir: {d}/state\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: runner\n    unix: {{path: {d}/runner.sock, mode: \"0600\"}}\n    identity: {{fixed: runner-{id}}}\njobs:\n  rules:\n    - label: ci.job.type=build\n      listeners: [runner]\n      ends: stop\n",
        daemon = daemon().display(),
        d = d.display(),
    );
    let cistern = Cistern::start_with_config(dir, d.join("runner.sock"), &config);
    let job = unique("bk-job");
    let _job = Cleanup::container(&job);
    let job_id = run_ok(docker_at(&cistern.socket).args([
        "run",
        "-d",
        "--name",
        &job,
        "--label",
        "ci.job.type=build",
        BUSYBOX,
        "sleep",
        "600",
    ]));
    let jobs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("state/jobs.json")).unwrap()).unwrap();
    let (short, entry) = jobs["jobs"].as_object().unwrap().iter().next().unwrap();
    let socket = PathBuf::from(entry["socket"].as_str().unwrap());
    // The job's socket, as the job's docker CLI would use it.
    let ctx = context(&format!("FROM {BUSYBOX}\nRUN echo job > /built\n"));
    run_ok(
        bk(&socket)
            .args(["build", "-t", "job-image"])
            .arg(ctx.path()),
    );
    let daemon_image = format!("cistern-ns/job-{short}/job-image");
    let _image = Cleanup::image(&daemon_image);
    assert!(image_id(&mut docker_direct(), &daemon_image).is_some());
    run_ok(docker_direct().args(["stop", "-t", "0", job_id.trim()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while image_id(&mut docker_direct(), &daemon_image).is_some() {
        assert!(
            Instant::now() < deadline,
            "the job's image outlived the job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// On a TCP listener too.
#[test]
fn buildkit_builds_get_the_cached_domains_as_extra_hosts() {
    busybox();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let port = free_port();
    let config = format!(
        "upstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix: {{path: {d}/docker.sock, mode: \"0600\"}}\n  - name: tcp\n    tcp: {{address: \"127.0.0.1:{port}\"}}\n\
         caching:\n  domains: [pkgs.example]\n  discover: {{host: false}}\n  state_dir: {d}/state\n  cache_dir: {d}/cache\n  \
         proxy: {{http: \"127.0.0.1:{http}\", https: \"127.0.0.1:{https}\"}}\n  inject: {{builds: true}}\n",
        daemon = daemon().display(),
        d = d.display(),
        http = free_port(),
        https = free_port(),
    );
    let cistern = Cistern::start_with_config(dir, d.join("docker.sock"), &config);
    let ctx = context(&format!(
        "FROM {BUSYBOX} AS hosts\nRUN grep pkgs.example /etc/hosts > /hosts.txt\nFROM scratch\nCOPY --from=hosts /hosts.txt /\n"
    ));
    let out = tempfile::tempdir().unwrap();
    let _cistern = cistern;
    run_ok(
        bk_at(&format!("tcp://127.0.0.1:{port}"))
            .args(["build", "--no-cache", "--output"])
            .arg(format!("type=local,dest={}", out.path().display()))
            .arg(ctx.path()),
    );
    let hosts = std::fs::read_to_string(out.path().join("hosts.txt")).unwrap();
    let fields: Vec<&str> = hosts.split_whitespace().collect();
    assert_eq!(fields.get(1), Some(&"pkgs.example"), "{hosts}");
    assert!(fields[0].parse::<std::net::IpAddr>().is_ok(), "{hosts}");
}
