//! The README's first two commands, as a user copies them onto a fresh
//! Debian host: such a host has no `sudo` (root runs them as written), so a
//! command may not start with it; each names an executable script of the
//! repository that takes root itself where it needs it, and parses.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The command lines of the README's first `sh` block, comments cut off.
fn first_commands(readme: &str) -> Vec<String> {
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README starts with a sh block");
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_readme_starts_with_two_commands_that_need_no_sudo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = first_commands(&readme);
    assert_eq!(commands, ["scripts/run", "scripts/test"], "{commands:?}");
    for command in &commands {
        let script = root.join(command);
        let mode = std::fs::metadata(&script)
            .unwrap_or_else(|e| panic!("{command}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{command} is not executable");
        let text = std::fs::read_to_string(&script).unwrap();
        // Root runs it directly; anyone else takes root through sudo, and
        // only when not root.
        for line in text.lines().filter(|l| l.contains("sudo ")) {
            let line = line.trim_start();
            assert!(
                line.starts_with('#') || line.contains("id -u") || line.contains("exec sudo"),
                "{command} calls sudo without checking for root: {line}"
            );
        }
        let parsed = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap();
        assert!(parsed.success(), "{command} does not parse");
    }
}

/// As root, the scripts' way of taking root runs the command itself: a
/// `sudo` first on the `PATH` that only fails is never called.
#[test]
fn as_root_needs_no_sudo_for_root() {
    if !nix::unistd::geteuid().is_root() {
        return; // the test suite runs as root (scripts/test takes it)
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = tempfile::tempdir().unwrap();
    let sudo = bin.path().join("sudo");
    std::fs::write(&sudo, "#!/bin/sh\necho 'sudo called' >&2\nexit 97\n").unwrap();
    std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("/bin/bash")
        .current_dir(root)
        .env("PATH", path)
        .args(["-c", ". scripts/lib.sh && as_root /bin/echo ran"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
}
