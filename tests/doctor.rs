//! `cistern doctor` as an operator sees it, against the real daemon.

mod support;

use std::process::{Command, Output};

use support::{bridge_address, busybox, daemon, free_port, Cistern};

fn doctor(config: &str) -> (Output, String, tempfile::TempDir) {
    doctor_with(config, &[])
}

/// Runs `cistern doctor` on `config` (`{dir}` replaced by a fresh temporary
/// directory) with extra arguments.
fn doctor_with(config: &str, args: &[&str]) -> (Output, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cistern.yaml");
    let mut config = config.replace("{dir}", &dir.path().display().to_string());
    // A port of its own for the admin listener: tests run side by side.
    if !config.lines().any(|l| l.starts_with("admin:")) {
        config = format!(
            "{}\nadmin:\n  tcp: 127.0.0.1:{}\n",
            config.trim_end(),
            free_port()
        );
    }
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cistern"))
        .arg("doctor")
        .arg("--config")
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout, dir)
}

#[test]
fn a_healthy_configuration_passes_every_check() {
    let config = format!(
        "state_dir: {{dir}}/state\nupstream:\n  unix: {}\nlisteners:\n  - name: jobs\n    unix: {{path: {{dir}}/run/docker.sock}}\n",
        daemon().display()
    );
    let (out, stdout, _dir) = doctor(&config);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for line in stdout.lines() {
        assert!(
            line.starts_with("ok ") || line.starts_with("warn "),
            "{stdout}"
        );
    }
    assert!(stdout.contains("ok    daemon: unix://"), "{stdout}");
    assert!(stdout.contains("ok    listener jobs: "), "{stdout}");
    assert!(stdout.contains("mode 0660"), "{stdout}");
    assert!(stdout.contains("ok    state dir: "), "{stdout}");
}

#[test]
fn a_missing_daemon_socket_fails_and_says_what_to_fix() {
    let (out, stdout, _dir) = doctor(
        "state_dir: {dir}/state\nupstream:\n  unix: {dir}/no-daemon.sock\nlisteners:\n  - unix: {path: {dir}/docker.sock}\n",
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  daemon: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("no-daemon.sock"), "{line}");
    assert!(line.contains("fix: "), "{line}");
    assert!(line.contains("start the Docker daemon"), "{line}");
}

#[test]
fn a_tcp_port_already_bound_fails_naming_the_port() {
    let port = free_port();
    let _held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let config = format!(
        "state_dir: {{dir}}/state\nupstream:\n  unix: {}\nlisteners:\n  - name: tcp\n    tcp: {{address: 127.0.0.1:{port}}}\n",
        daemon().display()
    );
    let (out, stdout, _dir) = doctor(&config);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  listener tcp: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&format!("port {port}")), "{line}");
    // This test process holds it, and /proc says so.
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
}

#[test]
fn an_invalid_configuration_fails_with_the_check_config_error() {
    let (out, stdout, _dir) =
        doctor("listeners:\n  - unix:\n      path: /x\n      mdoe: \"0600\"\n");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("FAIL  config: "), "{stdout}");
    assert!(
        stdout.contains(":4:7: listeners[0].unix.mdoe: unknown field"),
        "{stdout}"
    );
}

#[test]
fn with_caching_the_proxy_addresses_cache_dir_and_ca_are_checked() {
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        "admin:\n  tcp: 127.0.0.1:{admin}\nstate_dir: {{dir}}/state\nupstream:\n  unix: {}\nlisteners:\n  - unix: {{path: {{dir}}/docker.sock}}\ncaching:\n  domains: [deb.example.test, pypi.example.test]\n  state_dir: {{dir}}/state\n  cache_dir: {{dir}}/cache\n  proxy:\n    http: 127.0.0.1:{http}\n    https: 127.0.0.1:{https}\n",
        daemon().display()
    );
    let (out, stdout, _dir) = doctor(&config);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "ok    caching proxy http: 127.0.0.1:{http} can be bound"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ok    caching proxy https: 127.0.0.1:{https} can be bound"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("ok    cache dir: "), "{stdout}");
    assert!(
        stdout.contains(&format!("ok    admin: 127.0.0.1:{admin} can be bound")),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    caching domains: 2 domain(s): deb.example.test, pypi.example.test"),
        "{stdout}"
    );
    let ca = stdout
        .lines()
        .find(|l| l.starts_with("ok    CA: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(ca.contains("valid until"), "{ca}");
}

#[test]
fn a_served_listener_socket_fails_naming_who_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("busy.sock");
    let _served = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let config = format!(
        "state_dir: {{dir}}/state\nupstream:\n  unix: {}\nlisteners:\n  - name: busy\n    unix: {{path: {}}}\n",
        daemon().display(),
        sock.display()
    );
    let (out, stdout, _dir) = doctor(&config);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  listener busy: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("is served by"), "{line}");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
}

/// A caching section with the proxy on the default bridge's address, where
/// containers reach it through `host-gateway`.
fn bridge_caching(state: &str) -> String {
    let bridge = bridge_address();
    format!(
        "caching:\n  domains: [deb.example.test]\n  state_dir: {state}/state\n  cache_dir: {state}/cache\n  proxy:\n    http: {bridge}:{}\n    https: {bridge}:{}\n",
        free_port(),
        free_port()
    )
}

#[test]
fn the_container_check_is_skipped_while_cistern_is_not_running() {
    let config = format!(
        "state_dir: {{dir}}/state\nupstream:\n  unix: {}\nlisteners:\n  - unix: {{path: {{dir}}/docker.sock}}\n{}",
        daemon().display(),
        bridge_caching("{dir}")
    );
    let (out, stdout, _dir) = doctor_with(
        &config,
        &["--container-check", "--container-image", busybox()],
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warn  container reaches the caching proxy: skipped: "),
        "{stdout}"
    );
}

#[test]
fn with_cistern_running_a_container_reaches_the_caching_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let config = format!(
        "state_dir: {state}/state\nupstream:\n  unix: {}\nlisteners:\n  - unix: {{path: {}}}\n{}",
        daemon().display(),
        socket.display(),
        bridge_caching(&dir.path().display().to_string()),
        state = dir.path().display()
    );
    let cistern = Cistern::start_with_config(dir, socket, &config);
    // The Docker socket is bound first; the caching proxy follows once the
    // cached set is known and the CA loaded.
    let http = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("http: "))
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .expect("the proxy's http address");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(http).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the caching proxy did not listen on {http}:\n{}",
            cistern.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let file = cistern.dir.path().join("cistern.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_cistern"))
        .args([
            "doctor",
            "--container-check",
            "--container-image",
            busybox(),
        ])
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Its own socket and ports are held by cistern: warnings, not failures.
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("cistern is already running"), "{stdout}");
    assert!(
        stdout.contains("ok    container reaches the caching proxy: a container reached"),
        "{stdout}"
    );
}

#[test]
fn without_proxy_addresses_the_caching_proxy_is_checked_on_the_bridge_address() {
    let config = format!(
        "state_dir: {{dir}}/state\nupstream:\n  unix: {}\nlisteners:\n  - unix: {{path: {{dir}}/docker.sock}}\ncaching:\n  domains: [deb.example.test]\n  state_dir: {{dir}}/state\n  cache_dir: {{dir}}/cache\n",
        daemon().display()
    );
    let (_out, stdout, _dir) = doctor(&config);
    // Found as `serve` finds it: the daemon's bridge inspect. Whether the
    // ports are free depends on what else runs on this host.
    // (Free: "ADDRESS can be bound"; held: "ADDRESS: port ... is in use".)
    let bridge = bridge_address();
    for (name, port) in [("http", 80), ("https", 443)] {
        let at = format!("caching proxy {name}: {bridge}:{port}");
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!("{at} ")) || l.contains(&format!("{at}: "))),
            "{stdout}"
        );
    }
}
