//! What happens when things go wrong: the daemon is down or dies mid-stream,
//! clients send garbage or arrive all at once, cistern is told to stop.

mod support;

use std::io::{BufRead, BufReader};
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
fn malformed_http_gets_400() {
    let cistern = Cistern::start("");
    let (status, _) = raw_request(&cistern.socket, "THIS IS NOT HTTP\r\n\r\n").unwrap();
    assert_eq!(status, 400);
    let (status, _) = raw_request(
        &cistern.socket,
        "GET /_ping HTTP/1.1\r\nBad Header Line\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 400);
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
