//! Maven (and Gradle builds that use Maven repositories): mirrors and
//! repositories in `settings.xml`, global and per user.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::files::{is_plain_absolute, Files};
use super::{homes, push, Env, Found, Tool};

const GLOBAL: [&str; 2] = [
    "/etc/maven/settings.xml",
    "/usr/share/maven/conf/settings.xml",
];

pub fn find(files: &dyn Files, env: &Env, found: &mut Vec<Found>) {
    let mut paths: Vec<String> = GLOBAL.iter().map(|p| p.to_string()).collect();
    for name in ["MAVEN_HOME", "M2_HOME"] {
        if let Some(home) = env.get(name).filter(|p| is_plain_absolute(p)) {
            paths.push(format!("{}/conf/settings.xml", home.trim_end_matches('/')));
        }
    }
    for home in homes(env) {
        paths.push(format!("{home}/.m2/settings.xml"));
    }
    for path in paths {
        if let Some(text) = files.read(&path) {
            for url in urls(&text) {
                push(found, &url, Tool::Maven, &path);
            }
        }
    }
}

/// The `<url>` of every `<mirror>`, `<repository>` and `<pluginRepository>`
/// (comments, where the stock file keeps its examples, are skipped).
fn urls(xml: &str) -> Vec<String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut urls = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(Event::End(_)) => {
                stack.pop();
            }
            Ok(Event::Text(t)) => {
                let in_url = stack.last().is_some_and(|s| s == "url")
                    && stack.len() >= 2
                    && matches!(
                        stack[stack.len() - 2].as_str(),
                        "mirror" | "repository" | "pluginRepository"
                    );
                if in_url {
                    if let Ok(text) = t.unescape() {
                        urls.push(text.trim().to_owned());
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::super::files::fixture::Mem;
    use super::*;

    #[test]
    fn mirrors_and_repositories_but_not_commented_examples() {
        let fs = Mem::with(&[(
            "/root/.m2/settings.xml",
            "<settings>\n<!--\n<mirror><url>http://example-only.example.test/repo</url></mirror>\n-->\n\
             <mirrors><mirror><id>corp</id><url>https://maven.example.test/repo</url><mirrorOf>*</mirrorOf></mirror></mirrors>\n\
             <profiles><profile><repositories><repository><url>https://repo.example.test/m2</url></repository></repositories>\n\
             <pluginRepositories><pluginRepository><url>https://plugins.example.test/m2</url></pluginRepository></pluginRepositories>\n\
             </profile></profiles><proxies><proxy><url>http://not-a-repo.example.test</url></proxy></proxies></settings>\n",
        )]);
        let mut found = Vec::new();
        find(&fs, &Env::new(), &mut found);
        let hosts: Vec<_> = found.iter().map(|f| f.host.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "maven.example.test",
                "repo.example.test",
                "plugins.example.test"
            ]
        );
    }
}
