//! What happens when things go wrong: the daemon is down or dies mid-stream,
//! clients send garbage or arrive all at once, cistern is told to stop.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::{busybox, raw_request, run, run_ok, unique, Cistern, Cleanup, PrivateDaemon};

const PING: &str = "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";

fn body_of(answer: &str) -> &str {
    answer.split("\r\n\r\n").nth(1).unwrap_or("")
}

#[test]
fn a_daemon_that_is_down_gives_a_502_json_error_and_cistern_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cistern = Cistern::start_upstream(&dir.path().join("no-daemon.sock"), "");
    for _ in 0..3 {
        let (status, answer) = raw_request(&cistern.socket, PING).unwrap();
        assert_eq!(status, 502, "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{answer}"
        );
        let body: serde_json::Value = serde_json::from_str(body_of(&answer).trim()).unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("cistern: cannot connect to the Docker daemon at unix://"),
            "{message}"
        );
    }
    let out = run(cistern.docker().args(["ps"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cistern: cannot connect to the Docker daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_daemon_stopped_mid_stream_ends_the_stream_and_cistern_recovers() {
    let mut daemon = PrivateDaemon::start();
    let cistern = Cistern::start_upstream(&daemon.socket, "");
    let mut events = cistern
        .docker()
        .args(["events", "--format", "{{.Status}}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        events.try_wait().unwrap().is_none(),
        "events stream should be open"
    );

    daemon.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = events.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the events stream did not end when the daemon stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "the client must see an error, not a clean end"
    );

    let (code, answer) = raw_request(&cistern.socket, PING).unwrap();
    assert_eq!(code, 502, "{answer}");

    daemon.restart();
    let (code, answer) = raw_request(&cistern.socket, PING).unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(body_of(&answer), "OK");
}

#[test]
fn two_hundred_concurrent_ping_clients_all_get_ok() {
    two_hundred_pings(&Cistern::start(""));
}

/// Started with a soft limit of 64 open files (a hard one of 4096), cistern
/// raises its own to the hard limit, and 200 clients at once are served.
#[test]
fn a_low_open_files_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let config = format!(
        "upstream:\n  unix: {}\nlisteners:\n  - unix:\n      path: {}\n",
        support::daemon().display(),
        socket.display()
    );
    let cistern = Cistern::start_under(&["prlimit", "--nofile=64:4096"], dir, socket, &config);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", cistern.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{open_files}");
    two_hundred_pings(&cistern);
}

fn two_hundred_pings(cistern: &Cistern) {
    let barrier = Arc::new(Barrier::new(200));
    let socket = cistern.socket.clone();
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let barrier = barrier.clone();
            let socket = socket.clone();
            std::thread::spawn(move || {
                barrier.wait();
                raw_request(&socket, PING)
            })
        })
        .collect();
    let mut ok = 0;
    for t in threads {
        let (status, answer) = t.join().unwrap().unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(body_of(&answer), "OK");
        ok += 1;
    }
    assert_eq!(ok, 200);
}

#[test]
fn malformed_or_oversized_http_gets_4xx_and_cistern_keeps_serving() {
    let cistern = Cistern::start("");
    let (status, _) = raw_request(&cistern.socket, "THIS IS NOT HTTP\r\n\r\n").unwrap();
    assert_eq!(status, 400);
    let (status, _) = raw_request(
        &cistern.socket,
        "GET /_ping HTTP/1.1\r\nBad Header Line\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 400);
    // Oversized heads: too many headers, too long a target, a chunk size
    // that overflows.
    let many: String = (0..500).map(|i| format!("X-{i}: y\r\n")).collect();
    let (status, _) = raw_request(
        &cistern.socket,
        &format!("GET /_ping HTTP/1.1\r\nHost: d\r\n{many}Connection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(status, 431);
    let long = "a".repeat(100_000);
    let (status, _) = raw_request(
        &cistern.socket,
        &format!("GET /{long} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(status, 414);
    let (status, answer) = raw_request(
        &cistern.socket,
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nfffffffffffffffffff\r\n",
    )
    .unwrap();
    assert_eq!(status, 400, "{answer}");
    // A 2 MB header line: the connection is cut off (or answered 431).
    let huge = "a".repeat(2_000_000);
    if let Ok((status, _)) = raw_request(
        &cistern.socket,
        &format!("GET /_ping HTTP/1.1\r\nHost: d\r\nX: {huge}\r\nConnection: close\r\n\r\n"),
    ) {
        assert!(status == 0 || status == 431, "{status}");
    }
    // Still serving afterwards.
    let (status, _) = raw_request(&cistern.socket, PING).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn sigterm_during_logs_follow_drains_then_exits_and_removes_the_socket() {
    let cistern_grace = "shutdown_grace: 3s\n";
    let mut cistern = Cistern::start(cistern_grace);
    let name = unique("sigterm");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        busybox(),
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); usleep 100000; done",
    ]));
    let mut logs = cistern
        .docker()
        .args(["logs", "-f", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();

    cistern.signal(nix::sys::signal::Signal::SIGTERM);
    let signalled = Instant::now();

    // New clients are turned away at once: the socket file is gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    while cistern.socket.exists() {
        assert!(
            Instant::now() < deadline,
            "socket file still there after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The stream already under way keeps flowing during the grace period.
    let mut after_signal = 0;
    for line in lines.by_ref() {
        if line.is_err() {
            break;
        }
        after_signal += 1;
        if signalled.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    assert!(
        after_signal >= 3,
        "stream stopped right after SIGTERM ({after_signal} lines)"
    );

    let status = cistern
        .wait_exit(Duration::from_secs(8))
        .expect("cistern did not exit after the grace period");
    assert!(status.success(), "{status}");
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "exited before the grace period: {elapsed:?}"
    );
    // The client's stream ends with cistern.
    for _ in lines {}
    let _ = logs.wait();
    assert!(
        cistern.logs().contains("grace period over"),
        "{}",
        cistern.logs()
    );
}

/// Reads (and drops) what `conn` sends until it is closed: true, or `limit`
/// passes first: false.
fn closed_within(conn: &mut UnixStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A keep-alive connection that has been answered one ping, and is kept.
/// Connections a client just closed may not be counted out yet, so a 429 is
/// retried for a few seconds.
fn pinged(socket: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = UnixStream::connect(socket).unwrap();
        let answer = ping_answer(&mut conn);
        if answer.starts_with("HTTP/1.1 200") {
            return conn;
        }
        assert!(
            answer.starts_with("HTTP/1.1 429") && Instant::now() < deadline,
            "{answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks for `/_ping` on a kept-alive connection: 200 and the connection
/// stays open.
fn ping_on(conn: &mut UnixStream) {
    let answer = ping_answer(conn);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Asks for `/_ping` on `conn` and reads the answer: a 200's whole, or
/// anything else up to the close.
fn ping_answer(conn: &mut UnixStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"\r\n\r\nOK") {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// With `clients.idle_timeout: 1s`: half a request head and an idle
/// keep-alive connection are closed, a client that keeps asking is served,
/// and an attach stream and a blocking wait that outlast the timeout run to
/// their end.
#[test]
fn stalled_or_idle_docker_clients_are_closed_and_long_streams_are_not() {
    let cistern = Cistern::start("clients:\n  idle_timeout: 1s\n");
    let mut half = UnixStream::connect(&cistern.socket).unwrap();
    half.write_all(b"GET /_ping HTTP/1.1\r\nHost: d").unwrap();
    let mut idle = pinged(&cistern.socket);
    assert!(
        closed_within(&mut half, Duration::from_secs(5)),
        "half a head"
    );
    assert!(closed_within(&mut idle, Duration::from_secs(5)), "idle");

    let mut busy = pinged(&cistern.socket);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        ping_on(&mut busy);
    }

    let name = unique("idle-stream");
    let _cleanup = Cleanup::container(&name);
    let out = run_ok(cistern.docker().args([
        "run",
        "--name",
        &name,
        busybox(),
        "sh",
        "-c",
        "sleep 3; echo done",
    ]));
    assert_eq!(out, "done\n");
}

/// With `clients.max_connections_per_client: 3`: a fourth connection gets
/// 429 with Docker's error body, a hijacked attach stream keeps its place
/// while it runs, and a closed connection frees one.
#[test]
fn a_docker_client_over_its_connection_cap_gets_429_and_attach_streams_count() {
    let cistern = Cistern::start("clients:\n  max_connections_per_client: 3\n");
    let name = unique("cap-attach");
    let _cleanup = Cleanup::container(&name);
    let id = run_ok(
        cistern
            .docker()
            .args(["run", "-d", "-i", "--name", &name, busybox(), "cat"]),
    )
    .trim()
    .to_string();

    let mut held: Vec<UnixStream> = (0..3).map(|_| pinged(&cistern.socket)).collect();
    let (status, answer) = raw_request(&cistern.socket, PING).unwrap();
    assert_eq!(status, 429, "{answer}");
    let body: serde_json::Value = serde_json::from_str(body_of(&answer).trim()).unwrap();
    assert_eq!(
        body["message"],
        "cistern: too many connections from this client: at most 3 at once (clients.max_connections_per_client); close some and retry"
    );
    let out = run(cistern
        .docker()
        .args(["version", "--format", "{{.Server.Version}}"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too many connections from this client"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for conn in &mut held {
        ping_on(conn);
    }

    // Two closed; an attach stream takes one of their places and keeps it.
    held.truncate(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut attach, head) = loop {
        let mut attach = UnixStream::connect(&cistern.socket).unwrap();
        attach
            .write_all(format!("POST /v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: docker\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n").as_bytes())
            .unwrap();
        attach
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && attach.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        // The closed ones may not have been counted out yet.
        if !head.starts_with("HTTP/1.1 429") || Instant::now() > deadline {
            break (attach, head);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    attach.write_all(b"through the stream\n").unwrap();
    let mut echoed = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&echoed).contains("through the stream") {
        let n = attach.read(&mut buf).unwrap();
        assert!(n > 0);
        echoed.extend_from_slice(&buf[..n]);
    }
    held.push(pinged(&cistern.socket));
    let (status, answer) = raw_request(&cistern.socket, PING).unwrap();
    assert_eq!(status, 429, "the attach stream holds a place: {answer}");

    // The stream ends: its place is free again.
    drop(attach);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = raw_request(&cistern.socket, PING).unwrap();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client that goes away while its request is in flight ends it.
/// `docker run -d` leaves a `wait` for the container's exit behind; it must
/// not hold a connection, and the daemon request behind it, for as long as
/// the container runs.
#[test]
fn a_client_that_leaves_during_a_long_request_frees_its_connection() {
    let cistern = Cistern::start("clients:\n  max_connections_per_client: 2\n");
    let names: Vec<String> = (0..3).map(|_| unique("left-wait")).collect();
    let _cleanup: Vec<Cleanup> = names.iter().map(|n| Cleanup::container(n)).collect();
    for name in &names {
        run_ok(
            cistern
                .docker()
                .args(["run", "-d", "--name", name, busybox(), "sleep", "300"]),
        );
    }
    // A raw one too: the wait is asked, then the client hangs up.
    let mut wait = UnixStream::connect(&cistern.socket).unwrap();
    wait.write_all(
        format!(
            "POST /v1.41/containers/{}/wait HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n",
            names[0]
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(wait);
    // Both places are free again.
    let _held = [pinged(&cistern.socket), pinged(&cistern.socket)];
}
