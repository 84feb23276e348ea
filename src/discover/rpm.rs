//! yum and dnf: `[repo]` sections of `/etc/yum.repos.d/*.repo` (and
//! `/etc/distro.repos.d`), their `baseurl`, `mirrorlist` and `metalink`.

use super::files::{with_suffix, Files};
use super::ini::sections;
use super::{push, Found, Tool};

const DIRS: [&str; 2] = ["/etc/yum.repos.d", "/etc/distro.repos.d"];

pub fn find(files: &dyn Files, found: &mut Vec<Found>) {
    for path in DIRS.iter().flat_map(|d| with_suffix(files, d, ".repo")) {
        let Some(text) = files.read(&path) else {
            continue;
        };
        for (_, keys) in sections(&text) {
            let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            if get("enabled").is_some_and(|v| v.trim() == "0") {
                continue;
            }
            for key in ["baseurl", "mirrorlist", "metalink"] {
                for url in get(key).unwrap_or_default().split([' ', '\n', ',']) {
                    push(found, url, Tool::Rpm, &path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    #[test]
    fn enabled_repos_base_urls_and_mirror_lists() {
        let fs = Mem::with(&[(
            "/etc/yum.repos.d/example.repo",
            "[base]\nname=Base\nbaseurl=https://rpm.example.test/9/BaseOS/x86_64/os/\n\
             \thttps://rpm2.example.test/9/BaseOS/\nenabled=1\n\n\
             [updates]\nmetalink=https://mirrors.example.test/metalink?repo=updates-$releasever\n\n\
             [debug]\nbaseurl=https://debug.example.test/\nenabled=0\n\n\
             [vars]\nbaseurl=https://$contentdir.example.test/\n",
        )]);
        let mut found = Vec::new();
        find(&fs, &mut found);
        let hosts: Vec<_> = found.iter().map(|f| f.host.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "rpm.example.test",
                "rpm2.example.test",
                "mirrors.example.test"
            ]
        );
    }
}
