//! The systemd unit in `packaging/systemd/`: systemd accepts every line of it,
//! it keeps the hardening the README describes, and its paths are the ones
//! cistern's defaults use.
//!
//! Needs `systemd-analyze` (Debian's `systemd` package; `scripts/test`
//! installs it) and `setpriv` (util-linux). systemd does not have to be
//! running.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cistern::config::{ListenerKind, UpstreamEndpoint};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/systemd/cistern.service"
);

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).unwrap()
}

/// Every `Key=value` line of the unit, comments skipped, in order.
fn keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not a key: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The values of `key` (a key may appear on several lines).
fn values(key: &str) -> Vec<String> {
    keys(&unit_text())
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

fn one(key: &str) -> String {
    let v = values(key);
    assert_eq!(v.len(), 1, "{key} should be set once, is {v:?}");
    v.into_iter().next().unwrap()
}

/// Runs `systemd-analyze verify` on `text` saved as `cistern.service`, with
/// `/usr/bin/cistern` in `ExecStart` replaced by the binary under test (verify
/// checks that the command exists). Returns everything it printed.
fn verify(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("cistern.service");
    let text = text.replace(
        "ExecStart=/usr/bin/cistern ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_cistern")),
    );
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install Debian's `systemd` package")
        });
    let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && printed.is_empty() {
        printed = format!("exited with {}", out.status);
    }
    printed
}

#[test]
fn systemd_analyze_verify_reports_nothing_on_the_unit() {
    let printed = verify(&unit_text());
    assert!(printed.is_empty(), "systemd-analyze verify:\n{printed}");
}

#[test]
fn systemd_analyze_verify_reports_a_misspelt_line() {
    // So that the silence above means something.
    let text = unit_text().replace(
        "ProtectSystem=strict",
        "ProtectSystem=strikt\nProtectHomme=yes",
    );
    let printed = verify(&text);
    assert!(printed.contains("strikt"), "{printed}");
    assert!(printed.contains("ProtectHomme"), "{printed}");
}

#[test]
fn the_unit_keeps_its_hardening() {
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
        ("Restart", "on-failure"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        (
            "CapabilityBoundingSet",
            "CAP_CHOWN CAP_DAC_OVERRIDE CAP_NET_BIND_SERVICE",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(values("After").iter().any(|v| v.contains("docker.service")));
    assert!(values("Wants").iter().any(|v| v.contains("docker.service")));
    // Nothing makes the whole file system writable again.
    assert!(values("ReadWritePaths").is_empty());
}

/// `/<base>/<name>` for a `*Directory=<name>` key.
fn directory(key: &str, base: &str) -> PathBuf {
    Path::new(base).join(one(key))
}

#[test]
fn the_unit_paths_are_the_default_configuration_paths() {
    // ExecStart: `cistern serve --config <file>` in ConfigurationDirectory.
    let exec = one("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        args[..3],
        ["/usr/bin/cistern", "serve", "--config"],
        "{exec}"
    );
    let config = Path::new(args[3]);
    assert_eq!(
        config.parent(),
        Some(directory("ConfigurationDirectory", "/etc").as_path())
    );
    assert_eq!(config.file_name().unwrap(), "cistern.yaml");

    let state = directory("StateDirectory", "/var/lib");
    let cache = directory("CacheDirectory", "/var/cache");
    let runtime = directory("RuntimeDirectory", "/run");

    // The embedded default (config/default.yaml): its one socket is in the
    // runtime directory, its state (job and container sockets included) in
    // the state directory, and it forwards to the daemon the unit follows.
    let cfg = cistern::config::embedded_default();
    let [listener] = &cfg.listeners[..] else {
        panic!("the default has one listener")
    };
    let ListenerKind::Unix(unix) = &listener.kind else {
        panic!("the default listener is a unix socket")
    };
    assert_eq!(
        unix.path.parent(),
        Some(runtime.as_path()),
        "{}",
        unix.path.display()
    );
    assert_eq!(cfg.state_dir, state);
    assert!(cfg.jobs.socket_dir.starts_with(&state));
    assert_eq!(
        cfg.upstream.endpoint,
        UpstreamEndpoint::Unix("/var/run/docker.sock".into())
    );

    // The caching section's defaults: the CA under the state directory, the
    // disk cache in the cache directory.
    let cfg = cistern::config::parse("caching.yaml", "caching:\n  domains: [packages.example]\n")
        .unwrap();
    let caching = cfg.caching.unwrap();
    assert_eq!(caching.state_dir, state);
    assert_eq!(caching.cache_dir, cache);
}

/// `setpriv` arguments that run a command with the unit's capability
/// bounding set, no inheritable capabilities and no new privileges, as
/// systemd runs `ExecStart` (root keeps the bounding set as its capabilities).
fn as_the_unit() -> Vec<String> {
    let caps: Vec<String> = one("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(one("NoNewPrivileges"), "yes");
    vec![
        "setpriv".into(),
        "--bounding-set".into(),
        format!("-all,{}", caps.join(",")),
        "--inh-caps".into(),
        "-all".into(),
        "--no-new-privs".into(),
    ]
}

#[test]
fn with_the_unit_capabilities_cistern_chowns_its_socket_and_keeps_it_from_a_second_instance() {
    // A socket handed to another user (here nobody): cistern chowns it
    // (CAP_CHOWN), and a second cistern started on the same file must see
    // it is live, which takes connecting to a socket root does not own
    // (CAP_DAC_OVERRIDE). Without that capability the second one would take
    // it for a stale file and replace it.
    let wrapper = as_the_unit();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("docker.sock");
    let config = format!(
        "state_dir: {}\nupstream:\n  unix: {}\nlisteners:\n  - name: default\n    unix:\n      path: {}\n      mode: \"0660\"\n      owner: \"65534\"\n      group: \"65534\"\n",
        dir.path().join("state").display(),
        support::daemon().display(),
        socket.display()
    );
    let cistern = support::Cistern::start_under(&wrapper, dir, socket.clone(), &config);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    let (status, _) = support::raw_request(
        &socket,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200, "{}", cistern.logs());

    // Taking the socket over, the second one would serve on: give it 15 s.
    let mut second = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(env!("CARGO_BIN_EXE_cistern"))
        .args(["serve", "--config"])
        .arg(cistern.dir.path().join("cistern.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let out = second.wait_with_output().unwrap();
            panic!(
                "a second cistern took over the live socket:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use"), "{stderr}");
    // The first one still serves the same file.
    assert_eq!(std::fs::metadata(&socket).unwrap().ino(), meta.ino());
    let (status, _) = support::raw_request(
        &socket,
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
}
