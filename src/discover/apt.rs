//! apt: `/etc/apt/sources.list` and `sources.list.d/*.list` (one-line
//! format) and `sources.list.d/*.sources` (deb822).

use super::files::{with_suffix, Files};
use super::{push, Found, Tool};

const DIR: &str = "/etc/apt/sources.list.d";

pub fn find(files: &dyn Files, found: &mut Vec<Found>) {
    let mut one_line = vec!["/etc/apt/sources.list".to_owned()];
    one_line.extend(with_suffix(files, DIR, ".list"));
    for path in one_line {
        if let Some(text) = files.read(&path) {
            for uri in one_line_uris(&text) {
                push(found, uri, Tool::Apt, &path);
            }
        }
    }
    for path in with_suffix(files, DIR, ".sources") {
        if let Some(text) = files.read(&path) {
            for uri in deb822_uris(&text) {
                push(found, &uri, Tool::Apt, &path);
            }
        }
    }
}

/// The URIs of `deb`/`deb-src` lines: `deb [ options ] uri suite [components]`.
fn one_line_uris(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line
                .strip_prefix("deb-src")
                .or_else(|| line.strip_prefix("deb"))?;
            if !rest.starts_with(char::is_whitespace) {
                return None;
            }
            let rest = rest.trim_start();
            // The options block may hold spaces: `[ arch=amd64 signed-by=... ]`.
            let rest = match rest.strip_prefix('[') {
                Some(opts) => opts.split_once(']')?.1.trim_start(),
                None => rest,
            };
            rest.split_whitespace().next()
        })
        .collect()
}

/// The `URIs` of each enabled deb822 stanza.
fn deb822_uris(text: &str) -> Vec<String> {
    let mut uris = Vec::new();
    for stanza in stanzas(text) {
        let enabled = !field(&stanza, "Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no"));
        if let (true, Some(value)) = (enabled, field(&stanza, "URIs")) {
            uris.extend(value.split_whitespace().map(str::to_owned));
        }
    }
    uris
}

/// Stanzas as (field, value) lists; continuation lines join their field.
fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
            }
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

fn field<'a>(stanza: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    fn hosts(fs: &Mem) -> Vec<(String, String)> {
        let mut found = Vec::new();
        find(fs, &mut found);
        found.into_iter().map(|f| (f.host, f.from)).collect()
    }

    #[test]
    fn one_line_sources_with_and_without_options() {
        let fs = Mem::with(&[(
            "/etc/apt/sources.list",
            "# deb http://commented.example.test/debian bookworm main\n\
             deb http://deb.example.test/debian bookworm main\n\
             deb-src [ arch=amd64 signed-by=/usr/share/keyrings/k.gpg ] https://src.example.test/debian bookworm main\n\
             deb [trusted=yes] file:/srv/local ./\n\
             debian http://not-a-source.example.test/\n",
        )]);
        assert_eq!(
            hosts(&fs),
            [
                ("deb.example.test".into(), "/etc/apt/sources.list".into()),
                ("src.example.test".into(), "/etc/apt/sources.list".into())
            ]
        );
    }

    #[test]
    fn deb822_stanzas_skip_disabled_ones() {
        let fs = Mem::with(&[(
            "/etc/apt/sources.list.d/debian.sources",
            "Types: deb\nURIs: http://deb.example.test/debian\n  http://mirror.example.test/debian\nSuites: bookworm\n\n\
             # a comment\nTypes: deb\nURIs: http://off.example.test/debian\nEnabled: no\n\n\
             Types: deb deb-src\nURIs: mirror+file:/etc/apt/mirrors.txt\n",
        )]);
        let found: Vec<String> = hosts(&fs).into_iter().map(|(h, _)| h).collect();
        assert_eq!(found, ["deb.example.test", "mirror.example.test"]);
    }
}
