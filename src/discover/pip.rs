//! pip: its configuration files and environment, and, with neither, the
//! index built into pip, read from pip's own source in the file system.

use super::files::{expand, is_plain_absolute, Files};
use super::ini::sections;
use super::{homes, push, Env, Found, Tool};

/// Where pip's `models/index.py` lives in common installs (Debian's
/// python3-pip, the python images' `/usr/local`, distribution Pythons).
const BUILT_IN: [&str; 4] = [
    "/usr/lib/python3/dist-packages/pip/_internal/models/index.py",
    "/usr/lib/python3*/site-packages/pip/_internal/models/index.py",
    "/usr/local/lib/python3*/site-packages/pip/_internal/models/index.py",
    "/usr/local/lib/python3*/dist-packages/pip/_internal/models/index.py",
];

const KEYS: [&str; 2] = ["index-url", "extra-index-url"];

pub fn find(files: &dyn Files, env: &Env, found: &mut Vec<Found>) {
    let mut configs = vec![
        "/etc/pip.conf".to_owned(),
        "/etc/xdg/pip/pip.conf".to_owned(),
    ];
    for home in homes(env) {
        configs.push(format!("{home}/.pip/pip.conf"));
        configs.push(format!("{home}/.config/pip/pip.conf"));
    }
    configs.extend(
        env.get("PIP_CONFIG_FILE")
            .filter(|p| is_plain_absolute(p))
            .cloned(),
    );
    // pip uses its built-in index unless an `index-url` replaces it; extra
    // indexes add to it.
    let mut replaced = env
        .get("PIP_INDEX_URL")
        .is_some_and(|v| !v.trim().is_empty());
    for path in configs {
        let Some(text) = files.read(&path) else {
            continue;
        };
        for (_, keys) in sections(&text) {
            for (key, value) in keys.iter().filter(|(k, _)| KEYS.contains(&k.as_str())) {
                replaced |= key == "index-url" && !value.trim().is_empty();
                for url in value.split_whitespace() {
                    push(found, url, Tool::Pip, &path);
                }
            }
        }
    }
    for name in ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"] {
        for url in env
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
            .split_whitespace()
        {
            push(found, url, Tool::Pip, &format!("env {name}"));
        }
    }
    if replaced {
        return;
    }
    for path in BUILT_IN.iter().flat_map(|p| expand(files, p)) {
        if let Some(text) = files.read(&path) {
            built_in(&text, &path, found);
        }
    }
}

/// `PyPI = PackageIndex("https://…/", file_storage_domain="…")`: the index
/// and the host its files are downloaded from.
fn built_in(text: &str, path: &str, found: &mut Vec<Found>) {
    let Some(line) = text
        .lines()
        .find(|l| l.trim_start().starts_with("PyPI = PackageIndex("))
    else {
        return;
    };
    let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    let from = format!("pip built-in default ({path})");
    if let Some(index) = quoted.first() {
        push(found, index, Tool::Pip, &from);
    }
    if let Some(files_host) = quoted.get(1) {
        push(found, &format!("https://{files_host}/"), Tool::Pip, &from);
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    const INDEX_PY: &str = "class PackageIndex:\n    pass\n\n\
        PyPI = PackageIndex(\"https://index.example.test/\", file_storage_domain=\"files.example.test\")\n\
        TestPyPI = PackageIndex(\"https://test.example.test/\", file_storage_domain=\"test-files.example.test\")\n";

    fn hosts(fs: &Mem, env: &Env) -> Vec<String> {
        let mut found = Vec::new();
        find(fs, env, &mut found);
        found.into_iter().map(|f| f.host).collect()
    }

    #[test]
    fn the_built_in_index_and_its_files_host_when_nothing_replaces_it() {
        let fs = Mem::with(&[(
            "/usr/local/lib/python3.12/site-packages/pip/_internal/models/index.py",
            INDEX_PY,
        )]);
        assert_eq!(
            hosts(&fs, &Env::new()),
            ["index.example.test", "files.example.test"]
        );
    }

    #[test]
    fn a_configured_index_replaces_the_built_in_one_and_extras_add_to_it() {
        let fs = Mem::with(&[
            (
                "/usr/lib/python3/dist-packages/pip/_internal/models/index.py",
                INDEX_PY,
            ),
            (
                "/etc/pip.conf",
                "[global]\nextra-index-url = https://extra.example.test/simple\n",
            ),
        ]);
        assert_eq!(
            hosts(&fs, &Env::new()),
            [
                "extra.example.test",
                "index.example.test",
                "files.example.test"
            ]
        );
        let env = Env::from([(
            "PIP_INDEX_URL".into(),
            "https://mirror.example.test/simple".into(),
        )]);
        assert_eq!(
            hosts(&fs, &env),
            ["extra.example.test", "mirror.example.test"]
        );
        let fs = Mem::with(&[
            (
                "/usr/lib/python3/dist-packages/pip/_internal/models/index.py",
                INDEX_PY,
            ),
            (
                "/root/.config/pip/pip.conf",
                "[global]\nindex-url = https://corp.example.test/simple\n",
            ),
        ]);
        assert_eq!(hosts(&fs, &Env::new()), ["corp.example.test"]);
    }
}
