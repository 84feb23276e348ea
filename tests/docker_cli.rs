//! The docker CLI, pointed at cistern, works as it does against dockerd.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::{busybox, docker_direct, run, run_ok, unique, Cistern, Cleanup};

fn trimmed(cmd: &mut Command) -> String {
    run_ok(cmd).trim().to_string()
}

#[test]
fn version_and_info_match_the_daemon() {
    let cistern = Cistern::start("");
    let fmt = "{{.Server.Version}} {{.Server.APIVersion}}";
    assert_eq!(
        trimmed(cistern.docker().args(["version", "--format", fmt])),
        trimmed(docker_direct().args(["version", "--format", fmt]))
    );
    assert_eq!(
        trimmed(
            cistern
                .docker()
                .args(["info", "--format", "{{.ID}} {{.Name}}"])
        ),
        trimmed(docker_direct().args(["info", "--format", "{{.ID}} {{.Name}}"]))
    );
}

#[test]
fn run_rm_prints_the_container_output() {
    let cistern = Cistern::start("");
    let out =
        run_ok(
            cistern
                .docker()
                .args(["run", "--rm", busybox(), "echo", "hello from a container"]),
        );
    assert_eq!(out, "hello from a container\n");
}

#[test]
fn run_interactive_passes_stdin_and_its_eof() {
    let cistern = Cistern::start("");
    // `cat` only exits when stdin reaches EOF: the half-close must get through.
    let mut child = cistern
        .docker()
        .args(["run", "-i", "--rm", busybox(), "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    // A few megabytes through sha256sum: every byte arrives, in order.
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut child = cistern
        .docker()
        .args(["run", "-i", "--rm", busybox(), "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data).map(|_| data));
    let out = child.wait_with_output().unwrap();
    let data = writer.join().unwrap().unwrap();
    let expected = format!("{:x}", Sha256::digest(&data));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&expected),
        "got {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn detached_run_then_logs_follow_reads_to_the_end() {
    let cistern = Cistern::start("");
    let name = unique("logs");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        busybox(),
        "sh",
        "-c",
        "i=1; while [ $i -le 300 ]; do echo line $i; i=$((i+1)); usleep 2000; done",
    ]));
    let out = run_ok(cistern.docker().args(["logs", "-f", &name]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 300, "{out}");
    assert_eq!(lines[0], "line 1");
    assert_eq!(lines[299], "line 300");
}

#[test]
fn exec_interactive_and_exit_codes() {
    let cistern = Cistern::start("");
    let name = unique("exec");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["run", "-d", "--name", &name, busybox(), "sleep", "300"]),
    );
    let mut child = cistern
        .docker()
        .args(["exec", "-i", &name, "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through exec\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through exec\ndone\n");

    let status = run(cistern.docker().args(["exec", &name, "sh", "-c", "exit 3"])).status;
    assert_eq!(status.code(), Some(3));
}

#[test]
fn attach_streams_output_and_exit_code() {
    let cistern = Cistern::start("");
    let name = unique("attach");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        busybox(),
        "sh",
        "-c",
        "sleep 2; echo attached output; exit 7",
    ]));
    let out = run(cistern.docker().args(["attach", &name]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attached output\n");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn wait_returns_exit_codes() {
    let cistern = Cistern::start("");
    let name = unique("wait");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        busybox(),
        "sh",
        "-c",
        "exit 42",
    ]));
    assert_eq!(trimmed(cistern.docker().args(["wait", &name])), "42");
}

#[test]
fn cp_in_and_out_keeps_a_20mb_file_intact() {
    let cistern = Cistern::start("");
    let name = unique("cp");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["run", "-d", "--name", &name, busybox(), "sleep", "300"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    let mut data = vec![0u8; 20 * 1024 * 1024];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for byte in data.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *byte = seed as u8;
    }
    std::fs::write(&src, &data).unwrap();
    let expected = format!("{:x}", Sha256::digest(&data));

    run_ok(
        cistern
            .docker()
            .arg("cp")
            .arg(&src)
            .arg(format!("{name}:/tmp/big.bin")),
    );
    let inside = trimmed(
        cistern
            .docker()
            .args(["exec", &name, "sha256sum", "/tmp/big.bin"]),
    );
    assert!(inside.starts_with(&expected), "{inside}");

    let back = dir.path().join("back.bin");
    run_ok(
        cistern
            .docker()
            .arg("cp")
            .arg(format!("{name}:/tmp/big.bin"))
            .arg(&back),
    );
    let mut copied = Vec::new();
    std::fs::File::open(&back)
        .unwrap()
        .read_to_end(&mut copied)
        .unwrap();
    assert_eq!(format!("{:x}", Sha256::digest(&copied)), expected);
}

#[test]
fn build_with_a_dockerfile_then_run_the_image() {
    let cistern = Cistern::start("");
    let tag = format!("cistern-test/built:{}", unique("b"));
    let _cleanup = Cleanup::image(&tag);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("greeting.txt"), "built through cistern\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY greeting.txt /greeting.txt\nRUN cat /greeting.txt > /copy.txt\nCMD [\"cat\", \"/copy.txt\"]\n",
            busybox()
        ),
    )
    .unwrap();
    run_ok(
        cistern
            .docker()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &tag])
            .arg(ctx.path()),
    );
    let out = run_ok(cistern.docker().args(["run", "--rm", &tag]));
    assert_eq!(out, "built through cistern\n");
}

#[test]
fn events_show_start_and_die() {
    let cistern = Cistern::start("");
    let name = unique("events");
    let _cleanup = Cleanup::container(&name);
    let mut events = cistern
        .docker()
        .args([
            "events",
            "--filter",
            &format!("container={name}"),
            "--format",
            "{{.Status}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    run_ok(
        cistern
            .docker()
            .args(["run", "--name", &name, busybox(), "true"]),
    );
    std::thread::sleep(Duration::from_millis(500));
    events.kill().unwrap();
    let _ = events.wait();
    let mut out = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let statuses: Vec<&str> = out.lines().collect();
    assert!(statuses.contains(&"start"), "{statuses:?}");
    assert!(statuses.contains(&"die"), "{statuses:?}");
}

#[test]
fn volumes_and_networks_connect_two_containers_by_name() {
    let cistern = Cistern::start("");
    let net = unique("net");
    let vol = unique("vol");
    let server = unique("srv");
    let mut cleanup = Cleanup::container(&server);
    cleanup.networks.push(net.clone());
    cleanup.volumes.push(vol.clone());
    run_ok(cistern.docker().args(["network", "create", &net]));
    run_ok(cistern.docker().args(["volume", "create", &vol]));
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &server,
        "--network",
        &net,
        "-v",
        &format!("{vol}:/www"),
        busybox(),
        "sh",
        "-c",
        "echo shared payload > /www/f; httpd -f -p 8080 -h /www",
    ]));
    let out = run_ok(cistern.docker().args([
        "run", "--rm", "--network", &net, "-v", &format!("{vol}:/www:ro"), busybox(), "sh", "-c",
        &format!("for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://{server}:8080/f && break; sleep 0.3; done; cat /www/f"),
    ]));
    assert_eq!(out, "shared payload\nshared payload\n");

    run_ok(cistern.docker().args(["rm", "-f", &server]));
    run_ok(cistern.docker().args(["network", "rm", &net]));
    run_ok(cistern.docker().args(["volume", "rm", &vol]));
    let nets = run_ok(docker_direct().args(["network", "ls", "--format", "{{.Name}}"]));
    let vols = run_ok(docker_direct().args(["volume", "ls", "--format", "{{.Name}}"]));
    assert!(!nets.lines().any(|n| n == net));
    assert!(!vols.lines().any(|v| v == vol));
    cleanup.containers.clear();
}

#[test]
fn published_port_is_reachable_from_the_host() {
    let cistern = Cistern::start("");
    let name = unique("port");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        "127.0.0.1::8080",
        busybox(),
        "sh",
        "-c",
        "mkdir /www; echo published > /www/index.html; httpd -f -p 8080 -h /www",
    ]));
    let port = trimmed(cistern.docker().args(["port", &name, "8080/tcp"]));
    let addr = port.lines().next().unwrap().to_string();
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
            stream
                .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            body.clear();
            let _ = stream.read_to_string(&mut body);
            if body.contains("published") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(body.ends_with("published\n"), "{body}");
}

#[test]
fn ps_stats_and_top_see_a_running_container() {
    let cistern = Cistern::start("");
    let name = unique("top");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["run", "-d", "--name", &name, busybox(), "sleep", "300"]),
    );
    let ps = run_ok(cistern.docker().args(["ps", "--format", "{{.Names}}"]));
    assert!(ps.lines().any(|n| n == name), "{ps}");
    let stats =
        trimmed(
            cistern
                .docker()
                .args(["stats", "--no-stream", "--format", "{{.Name}}", &name]),
        );
    assert_eq!(stats, name);
    let top = run_ok(cistern.docker().args(["top", &name]));
    assert!(top.contains("sleep 300"), "{top}");
}
