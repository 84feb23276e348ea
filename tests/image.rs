//! The container image (`Dockerfile`), built and run here as the README's
//! "Container image" section says, on the real daemon.
//!
//! No registry is reachable: `scripts/debian-image` makes the runtime base
//! (`debian:<suite>-slim`) with debootstrap, and the image is built with
//! `CISTERN_BINARY`, from this checkout's binary (the test run's, or
//! `$CISTERN_IMAGE_BINARY`) rather than compiled in a Rust image. The
//! runtime stage is the one users get. The test then checks, through the
//! containerised cistern's socket, what a CI job sees: the policy, its
//! tenant, the cache injection and a download served from the cache; and
//! that `docker stop` ends cistern cleanly.

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use origin::{random_bytes, File, Origin, TestCa};
use support::{docker_at, docker_direct, run, run_ok, unique, Cleanup, InstanceCleanup};

/// The cached domain of the test (a placeholder; its origin is on loopback).
const DEB: &str = "deb.example.test";

/// The checkout: the build context, as in `docker build .`.
fn checkout() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The host's Debian suite, the image's `DEBIAN_SUITE`.
fn suite() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

/// The binary the image packages: `$CISTERN_IMAGE_BINARY` (e.g. a release
/// build), else the one this test run built and every other integration
/// test runs. A release build from nothing costs CI minutes of compiling
/// that the debug build has spent already; the image does not care which.
fn binary() -> PathBuf {
    std::env::var_os("CISTERN_IMAGE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cistern")))
}

/// A copy of the binary in the checkout's `dist/`, stripped as the `build`
/// stage strips what it compiles, for `CISTERN_BINARY`; deleted when dropped.
struct DistBinary(PathBuf);

impl DistBinary {
    fn new(binary: &Path, name: &str) -> DistBinary {
        let dist = checkout().join("dist");
        std::fs::create_dir_all(&dist).unwrap();
        let path = dist.join(name);
        run_ok(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(binary)
                .arg(&path),
        );
        DistBinary(path)
    }
}

impl Drop for DistBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The image's `/etc/cistern/cistern.yaml` as the README says to extend it:
/// with a `caching:` section, here for the local origin, and with the host
/// directory shared at the same path as `/run/cistern` (a test directory, so
/// as not to take the host's `/run/cistern`).
fn test_config(image: &str, run_dir: &Path, instance: &str, caching: &str) -> String {
    let image_config = run_ok(docker_direct().args([
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        image,
        "/etc/cistern/cistern.yaml",
    ]));
    assert!(
        image_config.contains("/run/cistern/"),
        "the image's config puts its sockets under /run/cistern"
    );
    assert!(
        image_config.contains("caching:\n  # Caches with no configuration"),
        "the image's config caches without domains:\n{image_config}"
    );
    // The image's `caching:` section (the last) gives way to the test's.
    let (image_config, _) = image_config.split_once("caching:\n").unwrap();
    format!(
        "{}instance: {instance}\n{caching}",
        image_config.replace("/run/cistern", &run_dir.display().to_string())
    )
}

fn inspect(format: &str, what: &str) -> String {
    run_ok(docker_direct().args(["inspect", "--format", format, what]))
        .trim()
        .to_string()
}

/// Waits until cistern in the container listens on `socket`.
fn wait_listening(socket: &Path, container: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        let running = inspect("{{.State.Running}}", container);
        assert!(
            Instant::now() < deadline && running == "true",
            "cistern in the container does not listen (running: {running}):\n{}",
            logs(container)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn logs(container: &str) -> String {
    let out = run(docker_direct().args(["logs", container]));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The size in the classic builder's `Sending build context to Docker
/// daemon  3.146MB`.
fn context_bytes(line: &str) -> Option<u64> {
    let size = line.split_whitespace().last()?;
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &size[digits.len()..] {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((digits.parse::<f64>().ok()? * unit) as u64)
}

/// `VmRSS` of a host process, in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// One download in a container created through cistern: whether the
/// container holds cistern's CA at `/etc/cistern/ca.pem`, curl's exit code
/// (curl verifies against the system bundle the CA was appended to), the
/// status, `x-cistern-cache` and the file's sha256.
fn download(sock: &Path, name: &str, image: &str, url: &str) -> (String, String) {
    let script = format!(
        "export PATH=/bin:/usr/bin
ca=$(grep -c 'BEGIN CERTIFICATE' /etc/cistern/ca.pem)
code=$(curl -sS --max-time 30 -o /tmp/f -D /tmp/h -w '%{{http_code}}' {url})
rc=$?
cache=$(tr -d '\\r' </tmp/h | grep -i '^x-cistern-cache:' | cut -d: -f2 | tr -d ' ')
echo \"got ca=$ca $rc $code ${{cache:--}} $(sha256sum /tmp/f | cut -d' ' -f1)\""
    );
    let out = run(docker_at(sock).args(["run", "--name", name, image, "/bin/sh", "-c", &script]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name}: {text}");
    let got = text
        .lines()
        .find_map(|l| l.strip_prefix("got "))
        .unwrap_or_else(|| panic!("{name}: {text}"))
        .to_string();
    (got, text)
}

#[test]
fn the_image_runs_cistern_as_pid_1_with_policy_tenancy_and_caching_and_stops_cleanly() {
    let daemon = support::daemon();
    let suite = suite();
    support::debian_image(&[&format!("debian:{suite}-slim")]);
    let curl = support::curl_image();
    let docker_cli = support::docker_cli_image();
    let busybox = support::busybox();

    let id = unique("image");
    let tag = format!("cistern-test/cistern:{id}");
    let build_tag = format!("cistern-test/cistern-build:{id}");
    let apt_image = format!("cistern-test/image-apt:{id}");
    let container = format!("cistern-{id}");
    let (state, cache) = (format!("{id}-state"), format!("{id}-cache"));
    let instance = id.clone();
    let jobs = [
        format!("{id}-get1"),
        format!("{id}-get2"),
        format!("{id}-cli"),
    ];
    let _instance_cleanup = InstanceCleanup(instance.clone());
    let _cleanup = Cleanup {
        containers: [vec![container.clone()], jobs.to_vec()].concat(),
        volumes: vec![state.clone(), cache.clone()],
        networks: vec![],
        images: vec![tag.clone(), build_tag.clone(), apt_image.clone()],
    };

    // Build: the runtime stage users get, with this checkout's binary.
    // The `build` stage is built and tagged first, so that it can be
    // removed: the classic builder leaves a multi-stage build's other stages
    // as untagged images.
    let binary = DistBinary::new(&binary(), &format!("cistern-{id}"));
    let started = Instant::now();
    let build = |tag: &str, target: Option<&str>| {
        let mut cmd = docker_direct();
        cmd.env("DOCKER_BUILDKIT", "0")
            .args(["build", "--force-rm", "-t", tag])
            .args(target.map(|t| format!("--target={t}")))
            .arg(format!("--build-arg=DEBIAN_SUITE={suite}"))
            .arg(format!("--build-arg=BUILD_IMAGE=debian:{suite}-slim"))
            .arg(format!(
                "--build-arg=CISTERN_BINARY=dist/{}",
                binary.0.file_name().unwrap().to_string_lossy()
            ))
            .arg(checkout());
        run_ok(&mut cmd)
    };
    let out = build(&build_tag, Some("build"));
    build(&tag, None);
    drop(binary);
    let size: u64 = inspect("{{.Size}}", &tag).parse().unwrap();
    eprintln!(
        "image built in {:.1}s: {:.1} MB",
        started.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    // `.dockerignore` keeps target/ (gigabytes where CARGO_TARGET_DIR is
    // the default) out of the context.
    let context = out
        .lines()
        .find(|l| l.starts_with("Sending build context"))
        .unwrap_or_else(|| panic!("no context line in:\n{out}"));
    let sent = context_bytes(context).unwrap_or_else(|| panic!("{context}"));
    assert!(
        sent < 100_000_000,
        "the build context is too large: {context}"
    );

    // What the image says about itself.
    assert_eq!(
        inspect("{{json .Config.Entrypoint}} {{json .Config.Cmd}}", &tag),
        r#"["/usr/local/bin/cistern"] ["serve","--config","/etc/cistern/cistern.yaml"]"#
    );
    let volumes = inspect("{{json .Config.Volumes}}", &tag);
    for volume in ["/var/lib/cistern", "/var/cache/cistern"] {
        assert!(volumes.contains(volume), "{volume} in {volumes}");
    }
    let checked = run_ok(docker_direct().args([
        "run",
        "--rm",
        &tag,
        "check-config",
        "/etc/cistern/cistern.yaml",
    ]));
    assert!(checked.contains(": ok ("), "{checked}");

    // A local HTTPS origin for the cached domain, on the host's loopback
    // (cistern shares the host's network).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let test_ca = TestCa::new(&[DEB]);
    let origin: Origin = rt.block_on(Origin::start(Some(test_ca.server.clone())));
    let path = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    let body = random_bytes(300_000, 7);
    origin.put(path, File::new(body.clone()));
    let sha256 = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&body))
    };

    // The host directory shared with the container, and the configuration
    // mounted over the image's.
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("origin-ca.pem"), &test_ca.ca_pem).unwrap();
    let gateway = support::bridge_address();
    let https_port = support::free_port();
    let caching = format!(
        "admin:\n  tcp: 127.0.0.1:{admin}\ncaching:\n  discover: {{host: false}}\n  proxy:\n    http: {gateway}:{http}\n    https: {gateway}:{https_port}\n  upstream:\n    extra_roots: [/etc/cistern/origin-ca.pem]\n    overrides:\n      {DEB}: {origin}\n",
        http = support::free_port(),
        admin = support::free_port(),
        origin = origin.addr,
    );
    let config = test_config(&tag, &run_dir, &instance, &caching);
    std::fs::write(etc.join("cistern.yaml"), &config).unwrap();
    let checked = run_ok(
        docker_direct()
            .args(["run", "--rm", "-v"])
            .arg(format!("{}:/etc/cistern:ro", etc.display()))
            .args([&tag, "check-config", "/etc/cistern/cistern.yaml"]),
    );
    assert!(checked.contains(": ok ("), "{checked}");

    // The README's `docker run` line, with the test's directory, volumes
    // and configuration, and the daemon's data root where it is (the
    // scripts' private daemon keeps it elsewhere than /var/lib/docker).
    let data_root = run_ok(docker_direct().args(["info", "--format", "{{.DockerRootDir}}"]));
    let data_root = data_root.trim();
    let shared = format!("{0}:{0}", run_dir.display());
    run_ok(
        docker_direct()
            .args(["run", "-d", "--name", &container])
            .args(["--restart", "unless-stopped", "--network", "host"])
            .args(["--stop-timeout", "40", "--read-only"])
            .args(["--cap-drop", "ALL", "--cap-add", "CHOWN"])
            .args(["--cap-add", "DAC_OVERRIDE", "--cap-add", "NET_BIND_SERVICE"])
            .args(["--security-opt", "no-new-privileges"])
            .arg("-v")
            .arg(format!("{}:/var/run/docker.sock", daemon.display()))
            .args(["-v", &shared])
            .args(["-v", &format!("{data_root}:{data_root}:ro")])
            .args(["-v", &format!("{state}:/var/lib/cistern")])
            .args(["-v", &format!("{cache}:/var/cache/cistern")])
            .arg("-v")
            .arg(format!("{}:/etc/cistern:ro", etc.display()))
            .arg(&tag),
    );
    let sock = run_dir.join("docker.sock");
    wait_listening(&sock, &container);

    // cistern is PID 1 in the container (exec-form entrypoint, no shell).
    let pid = inspect("{{.State.Pid}}", &container);
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(
        cmdline,
        "/usr/local/bin/cistern\0serve\0--config\0/etc/cistern/cistern.yaml\0"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap_or_default();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "NSpid: {nspid}");
    eprintln!("cistern's RSS after start: {} KiB", rss_kib(&pid));

    // The policy: a privileged create is refused, Docker-shaped.
    let create = format!(r#"{{"Image":"{busybox}","HostConfig":{{"Privileged":true}}}}"#);
    let request = format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{create}",
        create.len()
    );
    let (status, answer) = support::raw_request(&sock, &request).unwrap();
    assert_eq!(status, 403, "{answer}");
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let message: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| {
        panic!("{e}: {answer}");
    });
    assert!(
        message["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cistern: privileged containers are not allowed")),
        "{answer}"
    );
    let out = run(docker_at(&sock).args(["create", "--privileged", busybox, "true"]));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Error response from daemon: cistern: privileged containers are not allowed"),
        "{out:?}"
    );

    // A download through the caching proxy from a container created through
    // cistern, twice: the second is served from the cache. No domain is
    // configured: the host is learned from the image's apt sources, read
    // through the daemon's data root mounted into cistern's container.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("sources.list"),
        format!("deb https://{DEB}/debian {suite} main\n"),
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {curl}\nCOPY sources.list /etc/apt/sources.list\n"),
    )
    .unwrap();
    run_ok(
        docker_direct()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &apt_image])
            .arg(ctx.path()),
    );
    let url = format!("https://{DEB}:{https_port}{path}");
    let (first, text) = download(&sock, &jobs[0], &apt_image, &url);
    assert_eq!(
        first,
        format!("ca=1 0 200 miss {sha256}"),
        "{text}\n{}",
        logs(&container)
    );
    let (second, text) = download(&sock, &jobs[1], &apt_image, &url);
    assert_eq!(second, format!("ca=1 0 200 hit {sha256}"), "{text}");
    assert_eq!(origin.counts(path).requests, 1);

    // The container carries its tenant and got the injection.
    assert_eq!(
        inspect(r#"{{index .Config.Labels "io.cistern.tenant"}}"#, &jobs[0]),
        "uid-0"
    );
    assert!(!inspect(r#"{{index .Config.Labels "cistern.ca"}}"#, &jobs[0]).is_empty());
    let hosts = inspect("{{json .HostConfig.ExtraHosts}}", &jobs[0]);
    assert!(
        hosts.contains(&format!(r#""{DEB}:host-gateway""#)),
        "{hosts}"
    );

    // A container that binds the Docker socket gets a socket of its own,
    // which the daemon finds at the same path on the host.
    let out = run_ok(
        docker_at(&sock)
            .args(["run", "--name", &jobs[2]])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
            .args([docker_cli, "docker", "ps", "-a", "--format", "{{.Names}}"]),
    );
    let names: Vec<&str> = out.lines().collect();
    assert!(names.contains(&jobs[2].as_str()), "{out}");
    assert!(names.contains(&jobs[0].as_str()), "{out}");

    eprintln!("cistern's RSS after the checks: {} KiB", rss_kib(&pid));

    // `docker stop`: SIGTERM to PID 1, a clean exit well within the grace,
    // the listener socket removed.
    let started = Instant::now();
    run_ok(docker_direct().args(["stop", &container]));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "docker stop took {took:?}");
    assert_eq!(
        inspect("{{.State.ExitCode}} {{.State.OOMKilled}}", &container),
        "0 false",
        "{}",
        logs(&container)
    );
    assert!(!sock.exists(), "the listener socket is left behind");
    let logs = logs(&container);
    assert!(logs.contains("SIGTERM"), "{logs}");
}
