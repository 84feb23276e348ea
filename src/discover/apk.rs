//! apk: `/etc/apk/repositories`, one repository URL per line, optionally
//! tagged (`@edge https://...`).

use super::files::Files;
use super::{push, Found, Tool};

const PATH: &str = "/etc/apk/repositories";

pub fn find(files: &dyn Files, found: &mut Vec<Found>) {
    let Some(text) = files.read(PATH) else { return };
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let url = match line.strip_prefix('@') {
            Some(tagged) => tagged.split_whitespace().nth(1).unwrap_or_default(),
            None => line,
        };
        push(found, url, Tool::Apk, PATH);
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    #[test]
    fn repositories_plain_and_tagged() {
        let fs = Mem::with(&[(
            PATH,
            "https://apk.example.test/alpine/v3.20/main\n#https://old.example.test/x\n\
             @edge https://edge.example.test/alpine/edge/testing\n/media/cdrom/apks\n",
        )]);
        let mut found = Vec::new();
        find(&fs, &mut found);
        let hosts: Vec<_> = found.iter().map(|f| f.host.as_str()).collect();
        assert_eq!(hosts, ["apk.example.test", "edge.example.test"]);
    }
}
