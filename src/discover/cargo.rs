//! cargo: sparse registries in its configuration files and environment, and
//! the registries cargo has already used, from its own index cache (its
//! built-in default lives in the cargo binary).

use super::files::{expand, is_plain_absolute, Files};
use super::{homes, push, Env, Found, Tool};

pub fn find(files: &dyn Files, env: &Env, found: &mut Vec<Found>) {
    let mut cargo_homes: Vec<String> = homes(env).iter().map(|h| format!("{h}/.cargo")).collect();
    if let Some(home) = env.get("CARGO_HOME").filter(|p| is_plain_absolute(p)) {
        cargo_homes.insert(0, home.trim_end_matches('/').to_owned());
    }
    let mut replaced = false;
    for home in &cargo_homes {
        for name in ["config.toml", "config"] {
            let path = format!("{home}/{name}");
            if let Some(text) = files.read(&path) {
                replaced |= from_config(&text, &path, found);
            }
        }
        index_cache(files, home, found);
    }
    if !replaced {
        let mut binaries: Vec<String> = BINARIES.iter().flat_map(|p| expand(files, p)).collect();
        let mut rustup_homes: Vec<String> =
            homes(env).iter().map(|h| format!("{h}/.rustup")).collect();
        rustup_homes.extend(
            env.get("RUSTUP_HOME")
                .filter(|p| is_plain_absolute(p))
                .cloned(),
        );
        for home in rustup_homes {
            binaries.extend(expand(
                files,
                &format!("{}/toolchains/*/bin/cargo", home.trim_end_matches('/')),
            ));
        }
        binaries.sort();
        binaries.dedup();
        for binary in binaries {
            built_in(files, &binary, found);
        }
    }
    for (name, value) in env {
        let is_index = name == "CARGO_REGISTRY_INDEX"
            || (name.starts_with("CARGO_REGISTRIES_") && name.ends_with("_INDEX"));
        if is_index {
            sparse(value, &format!("env {name}"), found);
        }
    }
}

/// `[source.NAME] registry = "sparse+https://…"` (source replacement) and
/// `[registries.NAME] index = "sparse+https://…"`. Returns whether the default
/// registry is replaced (`[source.crates-io] replace-with`).
fn from_config(text: &str, path: &str, found: &mut Vec<Found>) -> bool {
    let Ok(config) = text.parse::<toml::Table>() else {
        return false;
    };
    for (table, key) in [("source", "registry"), ("registries", "index")] {
        let entries = config.get(table).and_then(toml::Value::as_table);
        for entry in entries.into_iter().flat_map(|t| t.values()) {
            if let Some(url) = entry.get(key).and_then(toml::Value::as_str) {
                sparse(url, path, found);
            }
        }
    }
    config
        .get("source")
        .and_then(|s| s.get("crates-io"))
        .and_then(|c| c.get("replace-with"))
        .is_some()
}

/// Where cargo itself lives in common installs (Debian's `cargo`, the rust
/// images' toolchain under `/usr/local/rustup`); rustup's toolchains under
/// each home are added.
const BINARIES: [&str; 2] = ["/usr/bin/cargo", "/usr/local/rustup/toolchains/*/bin/cargo"];

/// Largest cargo binary read.
const MAX_BINARY: u64 = 128 << 20;

/// cargo's built-in default registry index, read from the cargo binary: the host of
/// each `sparse+https://` string in it (cargo since 1.70 defaults to the
/// sparse protocol; an older cargo holds a git URL only, which is not
/// cached). Strings run into each other in a binary: only the host is taken,
/// and a host without a dot is no host.
fn built_in(files: &dyn Files, binary: &str, found: &mut Vec<Found>) {
    const PREFIX: &[u8] = b"sparse+https://";
    let Some(bytes) = files.read_bytes(binary, MAX_BINARY) else {
        return;
    };
    let from = format!("cargo built-in default ({binary})");
    for at in memchr::memmem::find_iter(&bytes, PREFIX) {
        let host: String = bytes[at + PREFIX.len()..]
            .iter()
            .take(253)
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            .map(|&b| b as char)
            .collect();
        push(found, &format!("https://{host}/"), Tool::Cargo, &from);
    }
}

/// Only sparse registries are plain HTTP downloads a cache can serve; a git
/// index is fetched over git.
fn sparse(url: &str, from: &str, found: &mut Vec<Found>) {
    if url.starts_with("sparse+") {
        push(found, url, Tool::Cargo, from);
    }
}

/// `registry/index/<host>-<hash>/` is where cargo keeps each sparse
/// registry it used; its `config.json` names the download host (`dl`).
fn index_cache(files: &dyn Files, home: &str, found: &mut Vec<Found>) {
    let dir = format!("{home}/registry/index");
    for name in files.list(&dir) {
        let Some((host, hash)) = name.rsplit_once('-') else {
            continue;
        };
        if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let config = format!("{dir}/{name}/config.json");
        let Some(text) = files.read(&config) else {
            continue;
        };
        // Only a sparse index has a config.json at its root in the cache.
        push(found, &format!("https://{host}/"), Tool::Cargo, &config);
        found.extend(index_config(text.as_bytes(), &config));
    }
}

/// The download host a sparse registry's `config.json` names (`dl`; a
/// template such as `https://static.example/crates/{crate}/{version}` is
/// cut at its first marker), found `from` that file: the registry's own
/// configuration, which cargo reads before any download. Not JSON, or no
/// `dl`: nothing.
pub fn index_config(json: &[u8], from: &str) -> Vec<Found> {
    let mut found = Vec::new();
    let dl = serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("dl")?.as_str().map(str::to_owned));
    if let Some(dl) = dl {
        let dl = dl.split('{').next().unwrap_or("");
        push(&mut found, dl, Tool::Cargo, from);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    fn hosts(fs: &Mem, env: &Env) -> Vec<String> {
        let mut found = Vec::new();
        find(fs, env, &mut found);
        found.into_iter().map(|f| f.host).collect()
    }

    #[test]
    fn sparse_registries_from_config_environment_and_the_index_cache() {
        let fs = Mem::with(&[
            (
                "/usr/local/cargo/config.toml",
                "[source.crates-io]\nreplace-with = \"mirror\"\n[source.mirror]\nregistry = \"sparse+https://mirror.example.test/index/\"\n\
                 [registries.corp]\nindex = \"sparse+https://corp.example.test/\"\n[registries.git]\nindex = \"https://git.example.test/index.git\"\n",
            ),
            (
                "/root/.cargo/registry/index/index.example.test-0123456789abcdef/config.json",
                r#"{"dl":"https://static.example.test/crates","api":"https://api.example.test"}"#,
            ),
            ("/root/.cargo/registry/index/git.example.test-0123456789abcdef/.git/HEAD", "x"),
        ]);
        let env = Env::from([
            ("CARGO_HOME".into(), "/usr/local/cargo".into()),
            (
                "CARGO_REGISTRIES_OTHER_INDEX".into(),
                "sparse+https://other.example.test/".into(),
            ),
        ]);
        assert_eq!(
            hosts(&fs, &env),
            [
                "mirror.example.test",
                "corp.example.test",
                "index.example.test",
                "static.example.test",
                "other.example.test"
            ]
        );
    }

    #[test]
    fn an_index_config_names_its_download_host_even_as_a_template() {
        let hosts = |json: &str| -> Vec<String> {
            index_config(json.as_bytes(), "https://index.example.test/config.json")
                .into_iter()
                .map(|f| f.host)
                .collect()
        };
        assert_eq!(
            hosts(r#"{"dl":"https://static.example.test/crates/{crate}/{version}/download"}"#),
            ["static.example.test"]
        );
        assert_eq!(
            hosts(
                r#"{"dl":"https://dl.example.test/api/v1/crates","api":"https://api.example.test"}"#
            ),
            ["dl.example.test"]
        );
        assert!(hosts(r#"{"dl":"https://user:pw@dl.example.test/"}"#).is_empty());
        assert!(hosts(r#"{"dl":"https://dl.example.test:8443/"}"#).is_empty());
        assert!(hosts(r#"{"api":"https://api.example.test"}"#).is_empty());
        assert!(hosts("<html>not json</html>").is_empty());
    }

    #[test]
    fn the_built_in_index_from_the_cargo_binary_unless_the_default_registry_is_replaced() {
        let mut binary =
            b"\x7fELF...sparse+https://iints\0..sparse+https://index.example.test/\x01".to_vec();
        binary.extend_from_slice(b"registry+https://github.example.test/index");
        let path = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/cargo";
        let fs = Mem::with(&[]).with_bytes(path, binary.clone());
        assert_eq!(hosts(&fs, &Env::new()), ["index.example.test"]);
        let fs = Mem::with(&[(
            "/root/.cargo/config.toml",
            "[source.crates-io]\nreplace-with = \"corp\"\n[source.corp]\nregistry = \"sparse+https://corp.example.test/\"\n",
        )])
        .with_bytes(path, binary);
        assert_eq!(hosts(&fs, &Env::new()), ["corp.example.test"]);
    }
}
