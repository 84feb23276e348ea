//! The README's configuration table and `config/cistern.yaml` (the fully
//! commented example) document the same keys.
//!
//! Key paths are written as in the README: `listeners[].unix.path`, list
//! items as `[]`. A table row may name siblings after the first key
//! (`` `caching.proxy.http` / `https` ``) and may end in `.*`: the keys under
//! it are then listed by name in the row's meaning cell.

use std::collections::BTreeSet;

const README: &str = include_str!("../README.md");
const EXAMPLE: &str = include_str!("../config/cistern.yaml");

/// Keys that cannot be set in the example, because a set key excludes them
/// or cistern would read files that do not exist here: the example shows
/// them in comments instead (checked below), and the README lists them.
const SHOWN_IN_COMMENTS: &[&str] = &[
    // Exactly one of `upstream.unix` and `upstream.tcp`.
    "upstream.tcp",
    // TLS files are read by `cistern check-config`: the TLS listener, and the
    // certificate identity that needs it, are commented out.
    "listeners[].tcp.tls.cert",
    "listeners[].tcp.tls.key",
    "listeners[].tcp.tls.client_ca",
    "listeners[].identity.certificate.from",
    "listeners[].identity.certificate.map",
    "listeners[].identity.certificate.unmapped",
    // Their default is computed from the daemon's bridge; a value would
    // change it.
    "caching.proxy.http",
    "caching.proxy.https",
    // Its default, the listener's policy, cannot be written as a value.
    "jobs.rules[].policy",
    // Exactly one of `admin.tcp` and `admin.unix` (with its mode).
    "admin.unix",
    "admin.mode",
];

/// Subtrees the README documents by one `.*` row whose meaning does not list
/// the keys: every key is documented in the example only.
const ONLY_IN_THE_EXAMPLE: &[&str] = &[
    // Dozens of policy keys; the README's "Policy" section explains the
    // rules and points to the example for the keys.
    "listeners[].policy",
];

/// Every key path of the example, intermediate mappings included.
fn example_keys() -> BTreeSet<String> {
    fn walk(value: &serde_yaml::Value, at: &str, out: &mut BTreeSet<String>) {
        match value {
            serde_yaml::Value::Mapping(map) => {
                for (k, v) in map {
                    let k = k
                        .as_str()
                        .unwrap_or_else(|| panic!("{at}: a key is not a string"));
                    let path = if at.is_empty() {
                        k.to_string()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.insert(path.clone());
                    walk(v, &path, out);
                }
            }
            serde_yaml::Value::Sequence(items) => {
                for item in items {
                    walk(item, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let value: serde_yaml::Value = serde_yaml::from_str(EXAMPLE).unwrap();
    let mut out = BTreeSet::new();
    walk(&value, "", &mut out);
    out
}

/// The rows of the table in "## Configuration": the key cell and the
/// meaning cell.
fn table_rows() -> Vec<(String, String)> {
    let section = README
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<(String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            assert!(cells.len() >= 3, "not a table row: {l}");
            (
                cells[0].trim_start_matches("| ").to_string(),
                cells[cells.len() - 1].to_string(),
            )
        })
        .collect();
    assert!(rows.len() > 30, "the table was not found");
    rows
}

/// The backticked words of a cell.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The README's keys, and for each `.*` row its prefix and the keys its
/// meaning names.
fn readme_keys() -> (BTreeSet<String>, Vec<(String, BTreeSet<String>)>) {
    let mut keys = BTreeSet::new();
    let mut wildcards = Vec::new();
    for (key_cell, meaning) in table_rows() {
        let names = quoted(&key_cell);
        let first = names[0];
        if let Some(prefix) = first.strip_suffix(".*") {
            let children = quoted(&meaning)
                .into_iter()
                .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .map(|w| format!("{prefix}.{w}"))
                .collect();
            wildcards.push((prefix.to_string(), children));
            continue;
        }
        keys.insert(first.to_string());
        let parent = first.rsplit_once('.').map_or("", |(p, _)| p);
        for sibling in &names[1..] {
            keys.insert(format!("{parent}.{sibling}"));
        }
    }
    (keys, wildcards)
}

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[test]
fn the_readme_table_and_the_example_document_the_same_keys() {
    let example = example_keys();
    let (readme, wildcards) = readme_keys();
    let mut problems = Vec::new();

    // Every key of the example is in the table: named, a mapping above a
    // named key, or under a `.*` row.
    for path in &example {
        let named = readme.contains(path) || readme.iter().any(|k| under(k, path));
        let starred = wildcards.iter().any(|(prefix, children)| {
            if path == prefix {
                return true;
            }
            if !under(path, prefix) {
                return false;
            }
            ONLY_IN_THE_EXAMPLE.contains(&prefix.as_str())
                || children.iter().any(|c| c == path || under(path, c))
        });
        if !named && !starred {
            problems.push(format!("in config/cistern.yaml, not in the README: {path}"));
        }
    }

    // Every key of the table is in the example, set or (the allowances)
    // shown in a comment.
    for key in &readme {
        if SHOWN_IN_COMMENTS.contains(&key.as_str()) {
            continue;
        }
        if !example.contains(key) {
            problems.push(format!("in the README, not in config/cistern.yaml: {key}"));
        }
    }
    for (prefix, children) in &wildcards {
        if !example.contains(prefix) {
            problems.push(format!(
                "in the README, not in config/cistern.yaml: {prefix}.*"
            ));
        }
        if children.is_empty() && !ONLY_IN_THE_EXAMPLE.contains(&prefix.as_str()) {
            problems.push(format!("README: `{prefix}.*` names none of its keys"));
        }
        for child in children {
            if !example.contains(child) {
                problems.push(format!(
                    "in the README, not in config/cistern.yaml: {child}"
                ));
            }
        }
    }

    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn keys_shown_only_in_comments_are_there_and_in_the_readme() {
    let example = example_keys();
    let (readme, _) = readme_keys();
    for key in SHOWN_IN_COMMENTS {
        assert!(readme.contains(*key), "{key}: not in the README table");
        assert!(
            !example.contains(*key),
            "{key} is set in config/cistern.yaml: drop it from SHOWN_IN_COMMENTS"
        );
        let last = key.rsplit(['.', ']']).next().unwrap();
        let commented = EXAMPLE.lines().any(|l| {
            l.trim_start()
                .strip_prefix('#')
                .is_some_and(|rest| rest.trim_start().starts_with(&format!("{last}:")))
        });
        assert!(
            commented,
            "{key}: config/cistern.yaml has no `# {last}:` line"
        );
    }
}
