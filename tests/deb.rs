//! The Debian package built by `packaging/deb/build` from the binary under
//! test: what it installs and with which modes, its conffile, and what its
//! maintainer scripts do on install, upgrade, remove and purge, with dpkg in
//! a Debian container (`scripts/debian-image`, no registry).
//!
//! The container runs no systemd. As on any such host, the maintainer
//! scripts still enable the unit with deb-systemd-helper; for the start,
//! restart and stop they ask, the container has `/run/systemd/system` (so
//! the scripts take systemd for running) and a `policy-rc.d` that records
//! each request and forbids it (exit 101), as Debian's image builders do.
//!
//! Needs `dpkg-deb`, `objdump` and `strip` (binutils) and `systemd-analyze`.

#[path = "support/debian.rs"]
mod debian;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use debian::Debian;

const UNIT: &str = "/usr/lib/systemd/system/cistern.service";
const CONFFILE: &str = "/etc/cistern/cistern.yaml";

/// The two packages of the upgrade: the same build, two versions.
struct Debs {
    _dir: tempfile::TempDir,
    first: PathBuf,
    second: PathBuf,
}

fn debs() -> &'static Debs {
    static DEBS: OnceLock<Debs> = OnceLock::new();
    DEBS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let build = |version: &str| {
            let out = support::run_ok(
                Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/deb/build"))
                    .args(["--binary", env!("CARGO_BIN_EXE_cistern")])
                    .args(["--version", version, "--out"])
                    .arg(dir.path()),
            );
            PathBuf::from(out.trim())
        };
        let first = build("0.1.0-1");
        let second = build("0.1.0-2");
        Debs {
            _dir: dir,
            first,
            second,
        }
    })
}

/// The start/restart/stop requests the maintainer scripts made so far.
fn requests(debian: &Debian) -> Vec<String> {
    debian
        .sh("cat /var/log/policy-rc.d.log 2>/dev/null || true")
        .lines()
        .map(str::to_string)
        .collect()
}

/// dpkg's status of the package and its version.
fn status(debian: &Debian) -> String {
    debian.sh(
        "dpkg-query -W -f='${db:Status-Status} ${Version}' cistern 2>/dev/null || echo not-installed",
    )
}

#[test]
fn the_package_installs_upgrades_keeping_state_and_conffile_removes_and_purges() {
    let debs = debs();
    // The real daemon's socket where the configuration expects it, and
    // cistern's socket directory seen from here.
    let run = tempfile::tempdir().unwrap();
    let debian = Debian::start_with(&[
        "-v",
        &format!("{}:/var/run/docker.sock", support::daemon().display()),
        "-v",
        &format!("{}:/run/cistern", run.path().display()),
    ]);
    debian.copy_in(&debs.first, "/tmp/first.deb");
    debian.copy_in(&debs.second, "/tmp/second.deb");
    debian.sh(
        "mkdir -p /run/systemd/system
         printf '#!/bin/sh\\necho \"$*\" >>/var/log/policy-rc.d.log\\nexit 101\\n' >/usr/sbin/policy-rc.d
         chmod 0755 /usr/sbin/policy-rc.d",
    );

    // Install.
    debian.sh("dpkg -i /tmp/first.deb");
    assert_eq!(status(&debian), "installed 0.1.0-1");
    assert_eq!(debian.stat("/usr/bin/cistern"), "755 root:root");
    assert_eq!(debian.stat(CONFFILE), "600 root:root");
    assert_eq!(debian.stat(UNIT), "644 root:root");
    assert_eq!(
        debian.sh(&format!("cat {UNIT}")),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/systemd/cistern.service"
        ))
        .unwrap()
        .trim()
    );
    assert!(debian
        .sh("dpkg-query -W -f='${Conffiles}' cistern")
        .contains(CONFFILE));
    assert!(debian.sh("cistern version").contains("0.1.0"));
    // The shipped configuration is valid on the host it is installed on
    // (its socket's group exists there).
    debian.sh(&format!("cistern check-config {CONFFILE}"));
    assert!(debian.sh("getent group cistern").starts_with("cistern:"));
    assert!(!debian.sh_status("getent passwd cistern").0);
    assert_eq!(debian.stat("/var/lib/cistern"), "755 root:root");
    assert_eq!(debian.stat("/var/cache/cistern"), "755 root:root");
    // Enabled, and started (as far as policy-rc.d allowed).
    assert_eq!(
        debian.sh("readlink -f /etc/systemd/system/multi-user.target.wants/cistern.service"),
        UNIT
    );
    assert_eq!(requests(&debian), ["cistern.service start"]);
    // Started as the unit starts it, the packaged configuration serves the
    // `cistern` group.
    debian.sh(&format!(
        "/usr/bin/cistern serve --config {CONFFILE} >/var/log/cistern.log 2>&1 &"
    ));
    let socket = run.path().join("docker.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ping = "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";
    while !matches!(support::raw_request(&socket, ping), Ok((200, _))) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            debian.sh("cat /var/log/cistern.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(debian.stat("/run/cistern/docker.sock"), "660 root:cistern");
    debian.sh("kill $(pidof cistern)");

    // Upgrade, over an edited conffile and some state and cache.
    debian.sh(&format!(
        "echo '# edited here' >>{CONFFILE}
         echo '{{}}' >/var/lib/cistern/images.json
         echo blob >/var/cache/cistern/blob"
    ));
    let out = debian.sh("dpkg -i /tmp/second.deb </dev/null");
    assert_eq!(status(&debian), "installed 0.1.0-2", "{out}");
    assert!(debian
        .sh(&format!("tail -n1 {CONFFILE}"))
        .contains("# edited here"));
    assert!(!debian.exists(&format!("{CONFFILE}.dpkg-new")));
    assert!(!debian.exists(&format!("{CONFFILE}.dpkg-dist")));
    assert_eq!(debian.sh("cat /var/lib/cistern/images.json"), "{}");
    assert_eq!(debian.sh("cat /var/cache/cistern/blob"), "blob");
    assert_eq!(debian.stat(CONFFILE), "600 root:root");
    assert_eq!(
        requests(&debian),
        ["cistern.service start", "cistern.service restart"]
    );

    // Remove: the program goes, the configuration, state and cache stay.
    debian.sh("dpkg -r cistern");
    assert!(status(&debian).starts_with("config-files"));
    assert!(!debian.exists("/usr/bin/cistern"));
    assert!(!debian.exists(UNIT));
    assert!(debian
        .sh(&format!("tail -n1 {CONFFILE}"))
        .contains("# edited here"));
    assert_eq!(debian.sh("cat /var/lib/cistern/images.json"), "{}");
    assert_eq!(debian.sh("cat /var/cache/cistern/blob"), "blob");
    assert_eq!(
        requests(&debian).last().map(String::as_str),
        Some("cistern.service stop")
    );

    // Purge: all of it goes, the enablement too.
    debian.sh("dpkg -P cistern");
    assert_eq!(status(&debian), "not-installed");
    for gone in [
        "/etc/cistern",
        "/var/lib/cistern",
        "/var/cache/cistern",
        "/etc/systemd/system/multi-user.target.wants/cistern.service",
        "/etc/systemd/system/cistern.service",
    ] {
        assert!(!debian.exists(gone), "{gone} is left after purge");
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_as_packaged() {
    // The package's files, extracted: the unit as installed, with its
    // ExecStart pointed at the packaged binary (verify checks that it is
    // executable; /usr/bin/cistern is not on this host).
    let root = tempfile::tempdir().unwrap();
    support::run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&debs().first)
            .arg(root.path()),
    );
    let binary = root.path().join("usr/bin/cistern");
    let unit = std::fs::read_to_string(root.path().join(&UNIT[1..])).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/cistern serve --config /etc/cistern/cistern.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cistern.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/bin/cistern ",
            &format!("ExecStart={} ", binary.display()),
        ),
    )
    .unwrap();
    let out = support::run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.is_empty(),
        "systemd-analyze verify:\n{printed}"
    );
    // The packaged configuration is the one in the repository, as a conffile.
    assert_eq!(
        std::fs::read_to_string(root.path().join(&CONFFILE[1..])).unwrap(),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/deb/cistern.yaml"
        ))
        .unwrap()
    );
    let control = support::run_ok(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&debs().first)
            .args(["Package", "Version", "Depends"]),
    );
    assert!(control.contains("Package: cistern"), "{control}");
    assert!(control.contains("Version: 0.1.0-1"), "{control}");
    assert!(control.contains("Depends: libc6 (>= 2."), "{control}");
}
