//! npm: `registry` and `@scope:registry` in its npmrc files and
//! environment, and, with none, the registry built into npm, read from
//! npm's own source in the file system.

use super::files::{expand, is_plain_absolute, Files};
use super::{homes, push, Env, Found, Tool};

/// npm's built-in npmrc and the global npmrc in common installs.
const NPMRCS: [&str; 6] = [
    "/usr/lib/node_modules/npm/npmrc",
    "/usr/local/lib/node_modules/npm/npmrc",
    "/usr/share/nodejs/npm/npmrc",
    "/etc/npmrc",
    "/usr/etc/npmrc",
    "/usr/local/etc/npmrc",
];

/// Where npm's config definitions (holding the default registry) live: npm 8
/// and later (`@npmcli/config`), Debian's split package, and npm 7.
const DEFINITIONS: [&str; 5] = [
    "/usr/lib/node_modules/npm/node_modules/@npmcli/config/lib/definitions/definitions.js",
    "/usr/local/lib/node_modules/npm/node_modules/@npmcli/config/lib/definitions/definitions.js",
    "/usr/share/nodejs/@npmcli/config/lib/definitions/definitions.js",
    "/usr/lib/node_modules/npm/lib/utils/config/definitions.js",
    "/usr/local/lib/node_modules/npm/lib/utils/config/definitions.js",
];

pub fn find(files: &dyn Files, env: &Env, found: &mut Vec<Found>) {
    let mut npmrcs: Vec<String> = NPMRCS.iter().map(|p| p.to_string()).collect();
    for home in homes(env) {
        npmrcs.push(format!("{home}/.npmrc"));
    }
    for (name, value) in env {
        let lower = name.to_ascii_lowercase();
        if (lower == "npm_config_userconfig" || lower == "npm_config_globalconfig")
            && is_plain_absolute(value)
        {
            npmrcs.push(value.clone());
        }
    }
    let mut replaced = false;
    for path in npmrcs {
        let Some(text) = files.read(&path) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key == "registry" || (key.starts_with('@') && key.ends_with(":registry")) {
                replaced |= key == "registry";
                push(found, value.trim(), Tool::Npm, &path);
            }
        }
    }
    for (name, value) in env {
        let lower = name.to_ascii_lowercase();
        if lower == "npm_config_registry"
            || (lower.starts_with("npm_config_@") && lower.ends_with(":registry"))
        {
            replaced |= lower == "npm_config_registry";
            push(found, value, Tool::Npm, &format!("env {name}"));
        }
    }
    if replaced {
        return;
    }
    for path in DEFINITIONS.iter().flat_map(|p| expand(files, p)) {
        if let Some(url) = files.read(&path).as_deref().and_then(default_registry) {
            push(
                found,
                &url,
                Tool::Npm,
                &format!("npm built-in default ({path})"),
            );
        }
    }
}

/// The `default:` of the `registry` definition:
/// `registry: new Definition('registry', { default: 'https://…/', …`.
fn default_registry(text: &str) -> Option<String> {
    let at = text
        .find("Definition('registry'")
        .or_else(|| text.find("Definition(\"registry\""))?;
    let rest = &text[at..];
    let rest = &rest[..rest.len().min(600)];
    let after = &rest[rest.find("default:")? + "default:".len()..];
    let after = after.trim_start();
    let quote = after
        .chars()
        .next()
        .filter(|c| matches!(c, '\'' | '"' | '`'))?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    const DEFS: &str = "const definitions = {\n  'read-only': new Definition('read-only', { default: false }),\n\
        registry: new Definition('registry', {\n    default: 'https://registry.example.test/',\n    type: url,\n  }),\n}\n";

    fn hosts(fs: &Mem, env: &Env) -> Vec<String> {
        let mut found = Vec::new();
        find(fs, env, &mut found);
        found.into_iter().map(|f| f.host).collect()
    }

    #[test]
    fn the_built_in_registry_unless_one_is_configured() {
        let defs = "/usr/share/nodejs/@npmcli/config/lib/definitions/definitions.js";
        let fs = Mem::with(&[(defs, DEFS)]);
        assert_eq!(hosts(&fs, &Env::new()), ["registry.example.test"]);
        let fs = Mem::with(&[
            (defs, DEFS),
            (
                "/root/.npmrc",
                "@corp:registry=https://npm.corp.example.test/\n",
            ),
        ]);
        assert_eq!(
            hosts(&fs, &Env::new()),
            ["npm.corp.example.test", "registry.example.test"]
        );
        let env = Env::from([(
            "NPM_CONFIG_REGISTRY".into(),
            "https://mirror.example.test/".into(),
        )]);
        assert_eq!(
            hosts(&fs, &env),
            ["npm.corp.example.test", "mirror.example.test"]
        );
        let fs = Mem::with(&[
            (defs, DEFS),
            ("/etc/npmrc", "registry = https://local.example.test/npm/\n"),
        ]);
        assert_eq!(hosts(&fs, &Env::new()), ["local.example.test"]);
    }
}
