//! RubyGems: `:sources:` in gemrc files, and, with none, the sources built
//! into RubyGems, read from its `defaults.rb`.

use super::files::{expand, Files};
use super::{homes, push, Env, Found, Tool};

const DEFAULTS: [&str; 3] = [
    "/usr/lib/ruby/*/rubygems/defaults.rb",
    "/usr/local/lib/ruby/*/rubygems/defaults.rb",
    "/usr/lib/ruby/vendor_ruby/rubygems/defaults.rb",
];

pub fn find(files: &dyn Files, env: &Env, found: &mut Vec<Found>) {
    let mut gemrcs = vec!["/etc/gemrc".to_owned()];
    gemrcs.extend(homes(env).iter().map(|h| format!("{h}/.gemrc")));
    let mut configured = false;
    for path in gemrcs {
        let Some(text) = files.read(&path) else {
            continue;
        };
        let Ok(serde_yaml::Value::Mapping(map)) = serde_yaml::from_str(&text) else {
            continue;
        };
        let sources = map.get(":sources").and_then(serde_yaml::Value::as_sequence);
        for url in sources
            .into_iter()
            .flatten()
            .filter_map(serde_yaml::Value::as_str)
        {
            configured = true;
            push(found, url, Tool::Gem, &path);
        }
    }
    if configured {
        return;
    }
    for path in DEFAULTS.iter().flat_map(|p| expand(files, p)) {
        let Some(text) = files.read(&path) else {
            continue;
        };
        let from = format!("gem built-in default ({path})");
        for url in default_sources(&text) {
            push(found, url, Tool::Gem, &from);
        }
    }
}

/// `def self.default_sources` … `%w[https://…/]` … `end`.
fn default_sources(text: &str) -> Vec<&str> {
    let Some(at) = text.find("def self.default_sources") else {
        return Vec::new();
    };
    let body = &text[at..];
    let body = &body[..body.find("\n  end").unwrap_or(body.len().min(300))];
    let Some(list) = body
        .split_once("%w[")
        .and_then(|(_, rest)| rest.split_once(']'))
    else {
        return Vec::new();
    };
    list.0.split_whitespace().collect()
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    fn hosts(fs: &Mem) -> Vec<String> {
        let mut found = Vec::new();
        find(fs, &Env::new(), &mut found);
        found.into_iter().map(|f| f.host).collect()
    }

    #[test]
    fn gemrc_sources_replace_the_built_in_ones() {
        let defaults = "/usr/lib/ruby/3.1.0/rubygems/defaults.rb";
        let rb = "module Gem\n  def self.default_sources\n    %w[https://gems.example.test/]\n  end\nend\n";
        assert_eq!(hosts(&Mem::with(&[(defaults, rb)])), ["gems.example.test"]);
        let fs = Mem::with(&[
            (defaults, rb),
            (
                "/root/.gemrc",
                "---\n:sources:\n- https://corp.example.test/gems/\n",
            ),
        ]);
        assert_eq!(hosts(&fs), ["corp.example.test"]);
    }
}
