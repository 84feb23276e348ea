//! Listener set-up: socket files, permissions, stale and live sockets, TCP.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use support::{daemon, docker_at, run_ok, Cistern};

fn cistern_cmd(config: &str, dir: &std::path::Path) -> Command {
    let path = dir.join("cistern.yaml");
    let config = match config.contains("\nadmin:") {
        true => config.to_owned(),
        false => format!("{config}admin: none\n"),
    };
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cistern"));
    cmd.args(["serve", "--config"]).arg(path);
    cmd
}

fn unix_config(socket: &std::path::Path, mode: &str) -> String {
    format!(
        "upstream:\n  unix: {}\nlisteners:\n  - name: t\n    unix:\n      path: {}\n      mode: \"{mode}\"\n",
        daemon().display(),
        socket.display()
    )
}

#[test]
fn the_socket_file_gets_the_configured_mode() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sub/dir/docker.sock");
    let cistern = Cistern::start_with_config(dir, socket.clone(), &unix_config(&socket, "0640"));
    let mode = std::fs::metadata(&cistern.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let cistern = Cistern::start_with_config(dir, socket.clone(), &unix_config(&socket, "0600"));
    run_ok(docker_at(&cistern.socket).args(["version"]));
}

#[test]
fn a_live_socket_of_another_process_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let _live = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = cistern_cmd(&unix_config(&socket, "0600"), dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is in use: another process is serving it"),
        "{stderr}"
    );
    assert!(socket.exists(), "the other process's socket must stay");
}

/// A port in use stops cistern with one line naming the listener, the address
/// and the OS error once; the caching proxy's listeners say the same.
#[test]
fn a_port_in_use_is_an_error_that_says_so_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let docker_tcp = format!(
        "{}  - name: tcp\n    tcp:\n      address: {address}\n",
        unix_config(&socket, "0600")
    );
    let forward = format!(
        "{}caching:\n  domains: [deb.example.test]\n  state_dir: {state}\n  cache_dir: {cache}\n  proxy: {{http: 127.0.0.1:0, https: 127.0.0.1:0}}\n  forward_proxy:\n    listen: {address}\n",
        unix_config(&socket, "0600"),
        state = dir.path().join("state").display(),
        cache = dir.path().join("cache").display(),
    );
    let admin = format!("{}admin:\n  tcp: {address}\n", unix_config(&socket, "0600"));
    for (config, what) in [
        (docker_tcp, format!("listener tcp: cannot bind {address}")),
        (admin, format!("listener admin: cannot bind {address}")),
        (
            forward,
            format!("cannot listen on {address} (forward proxy)"),
        ),
    ] {
        let out = cistern_cmd(&config, dir.path()).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with("error: ") && last.contains(&what),
            "{stderr}"
        );
        assert_eq!(
            last.matches("Address already in use").count(),
            1,
            "{stderr}"
        );
        assert!(!socket.exists(), "nothing is left listening: {stderr}");
    }
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    std::fs::write(&socket, "precious").unwrap();
    let out = cistern_cmd(&unix_config(&socket, "0600"), dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
}

#[test]
fn several_listeners_serve_at_once_including_tcp() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.sock");
    let b = dir.path().join("b.sock");
    let config = format!(
        "upstream:\n  unix: {}\nlisteners:\n  - name: a\n    unix:\n      path: {}\n  - name: b\n    unix:\n      path: {}\n  - name: tcp\n    tcp:\n      address: 127.0.0.1:{port}\n",
        daemon().display(),
        a.display(),
        b.display()
    );
    let cistern = Cistern::start_with_config(dir, a.clone(), &config);
    let fmt = ["version", "--format", "{{.Server.APIVersion}}"];
    let via_a = run_ok(docker_at(&a).args(fmt));
    let via_b = run_ok(docker_at(&b).args(fmt));
    let mut tcp = Command::new("docker");
    tcp.env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .args(fmt);
    let mut via_tcp = String::new();
    for _ in 0..50 {
        let out = tcp.output().unwrap();
        if out.status.success() {
            via_tcp = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(via_a, via_b);
    assert_eq!(via_a, via_tcp);
    let logs = cistern.logs();
    for listener in ["listener=a", "listener=b", "listener=tcp"] {
        assert!(
            logs.contains(listener),
            "no request logged on {listener}:\n{logs}"
        );
    }
}

#[test]
fn json_logs_have_one_event_per_request_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let config = format!("log:\n  format: json\n{}", unix_config(&socket, "0600"));
    let cistern = Cistern::start_with_config(dir, socket.clone(), &config);
    run_ok(docker_at(&socket).args(["version"]));
    std::thread::sleep(Duration::from_millis(200));
    let logs = cistern.logs();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["message"] == "request")
        .collect();
    let version = events
        .iter()
        .find(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/version")))
        .unwrap_or_else(|| panic!("no /version event in:\n{logs}"));
    assert_eq!(version["listener"], "t");
    assert_eq!(version["method"], "GET");
    assert_eq!(version["status"], 200);
    assert!(version["bytes_out"].as_u64().unwrap() > 100);
    assert!(version["duration_ms"].as_f64().is_some());
}

#[test]
fn a_tcp_upstream_works_including_hijacked_streams() {
    // cistern A serves TCP in front of the daemon; cistern B uses A as its
    // TCP upstream. A run with stdin crosses both, hijacked, over TCP.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let dir_a = tempfile::tempdir().unwrap();
    let a_sock = dir_a.path().join("a.sock");
    let config_a = format!(
        "upstream:\n  unix: {}\nlisteners:\n  - name: a\n    unix:\n      path: {}\n  - name: tcp\n    tcp:\n      address: 127.0.0.1:{port}\n",
        daemon().display(),
        a_sock.display()
    );
    let _a = Cistern::start_with_config(dir_a, a_sock, &config_a);
    let dir_b = tempfile::tempdir().unwrap();
    let b_sock = dir_b.path().join("b.sock");
    let config_b = format!(
        // B's tenant is the one A gives its TCP listener: A relabels what B
        // creates, and B must still own it.
        "upstream:\n  tcp: 127.0.0.1:{port}\nlisteners:\n  - name: b\n    unix:\n      path: {}\n    identity: {{fixed: tcp-tcp}}\n",
        b_sock.display()
    );
    let b = Cistern::start_with_config(dir_b, b_sock.clone(), &config_b);
    let mut child = docker_at(&b_sock)
        .args(["run", "-i", "--rm", support::busybox(), "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"over tcp\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "OVER TCP\n",
        "{}",
        b.logs()
    );
}
