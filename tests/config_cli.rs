//! `cistern check-config` and `cistern version` as an operator sees them.

use std::process::Command;

fn cistern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cistern"))
}

#[test]
fn every_shipped_config_file_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = cistern().arg("check-config").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

#[test]
fn an_unknown_key_is_reported_with_file_line_column_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "listeners:\n  - name: a\n    unix:\n      path: /run/x.sock\n      mdoe: \"0600\"\n",
    )
    .unwrap();
    let out = cistern().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:5:7: listeners[0].unix.mdoe: unknown field `mdoe`",
        file.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_bad_value_is_reported_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "log:\n  level: info\nshutdown_grace: soon\n").unwrap();
    let out = cistern().arg("check-config").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":3:1: shutdown_grace: `soon` is not a duration"),
        "{stderr}"
    );
}

#[test]
fn plain_tcp_on_a_public_address_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tcp.yaml");
    std::fs::write(&file, "listeners:\n  - tcp:\n      address: 0.0.0.0:2375\n").unwrap();
    let out = cistern().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listeners[0].tcp"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");

    std::fs::write(
        &file,
        "listeners:\n  - tcp:\n      address: 0.0.0.0:2375\n      insecure: true\n",
    )
    .unwrap();
    let out = cistern().arg("check-config").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_prints_the_package_version() {
    let out = cistern().arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("cistern {}\n", env!("CARGO_PKG_VERSION"))
    );
}
