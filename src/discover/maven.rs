//! Maven (and Gradle builds that use Maven repositories): mirrors and
//! repositories in `settings.xml`, global and per user, and, with no mirror
//! configured, the repository of Maven's super POM, read from the model
//! builder jar Maven ships.

use quick_xml::events::Event;
use quick_xml::Reader;

use std::io::Read;

use super::files::{expand, is_plain_absolute, Files, MAX_FILE};
use super::{homes, push, Env, Found, Tool};

const GLOBAL: [&str; 2] = [
    "/etc/maven/settings.xml",
    "/usr/share/maven/conf/settings.xml",
];

/// The jar holding the super POM, in common installs (the maven images'
/// `/usr/share/maven`, Debian's `maven`).
const MODEL_BUILDER: [&str; 3] = [
    "/usr/share/maven/lib/maven-model-builder*.jar",
    "/usr/share/java/maven3-model-builder.jar",
    "/opt/maven/lib/maven-model-builder*.jar",
];

/// The super POM inside it.
const SUPER_POM: &str = "org/apache/maven/model/pom-4.0.0.xml";

/// Largest jar read (the model builder is about 200 KB).
const MAX_JAR: u64 = 8 << 20;

pub fn find(files: &dyn Files, env: &Env, found: &mut Vec<Found>) {
    let mut paths: Vec<String> = GLOBAL.iter().map(|p| p.to_string()).collect();
    for name in ["MAVEN_HOME", "M2_HOME"] {
        if let Some(home) = env.get(name).filter(|p| is_plain_absolute(p)) {
            paths.push(format!("{}/conf/settings.xml", home.trim_end_matches('/')));
        }
    }
    let mut jars: Vec<String> = MODEL_BUILDER
        .iter()
        .flat_map(|p| expand(files, p))
        .collect();
    for name in ["MAVEN_HOME", "M2_HOME"] {
        if let Some(home) = env.get(name).filter(|p| is_plain_absolute(p)) {
            let pattern = format!(
                "{}/lib/maven-model-builder*.jar",
                home.trim_end_matches('/')
            );
            jars.extend(expand(files, &pattern));
        }
    }
    for home in homes(env) {
        paths.push(format!("{home}/.m2/settings.xml"));
    }
    let mut mirrored = false;
    for path in paths {
        if let Some(text) = files.read(&path) {
            for entry in entries(&text).iter().filter(|e| !e.blocked) {
                mirrored |= entry.stands_in_for_central();
                push(found, &entry.url, Tool::Maven, &path);
            }
        }
    }
    // A mirror stands in for the super POM's repository.
    if mirrored {
        return;
    }
    jars.dedup();
    for jar in jars {
        let Some(pom) = files.read_bytes(&jar, MAX_JAR).and_then(|b| super_pom(&b)) else {
            continue;
        };
        let from = format!("maven built-in default ({jar}!/{SUPER_POM})");
        for entry in entries(&pom) {
            push(found, &entry.url, Tool::Maven, &from);
        }
    }
}

/// The super POM's text, from the model builder jar's bytes.
fn super_pom(jar: &[u8]) -> Option<String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(jar)).ok()?;
    let entry = archive.by_name(SUPER_POM).ok()?;
    let mut text = String::new();
    entry.take(MAX_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// A `<mirror>`, `<repository>` or `<pluginRepository>` of a settings file
/// or POM.
#[derive(Debug, Default)]
struct Entry {
    kind: String,
    url: String,
    /// `<mirrorOf>`, for a mirror.
    mirror_of: String,
    /// `<blocked>true</blocked>` (Maven's stock blocker of plain-HTTP
    /// repositories is such a mirror).
    blocked: bool,
}

impl Entry {
    /// Whether this is a mirror Maven uses instead of the super POM's
    /// `central`: `mirrorOf` names `*`, `external:*` or `central`, and does
    /// not exclude it.
    fn stands_in_for_central(&self) -> bool {
        let names: Vec<&str> = self.mirror_of.split(',').map(str::trim).collect();
        self.kind == "mirror"
            && !self.blocked
            && names
                .iter()
                .any(|n| matches!(*n, "*" | "external:*" | "central"))
            && !names.contains(&"!central")
    }
}

/// Every mirror and repository (comments, where the stock file keeps its
/// examples, are skipped).
fn entries(xml: &str) -> Vec<Entry> {
    const KINDS: [&str; 3] = ["mirror", "repository", "pluginRepository"];
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if KINDS.contains(&name.as_str()) {
                    current = Some(Entry {
                        kind: name.clone(),
                        ..Entry::default()
                    });
                }
                stack.push(name);
            }
            Ok(Event::End(_)) => {
                let name = stack.pop().unwrap_or_default();
                if KINDS.contains(&name.as_str()) {
                    entries.extend(current.take());
                }
            }
            Ok(Event::Text(t)) => {
                let (Some(entry), [.., parent, field]) = (current.as_mut(), stack.as_slice())
                else {
                    continue;
                };
                if *parent != entry.kind {
                    continue;
                }
                let Ok(text) = t.unescape() else { continue };
                let text = text.trim();
                match field.as_str() {
                    "url" => entry.url = text.to_owned(),
                    "mirrorOf" => entry.mirror_of = text.to_owned(),
                    "blocked" => entry.blocked = text == "true",
                    _ => {}
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    entries
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

    fn jar(pom: &str) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut bytes);
        zip.start_file(SUPER_POM, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, pom.as_bytes()).unwrap();
        zip.finish().unwrap();
        bytes.into_inner()
    }

    #[test]
    fn the_super_poms_repository_unless_a_mirror_stands_in_for_it() {
        let pom = "<project><repositories><repository><id>central</id>\
                   <url>https://central.example.test/maven2</url></repository></repositories></project>";
        let path = "/usr/share/maven/lib/maven-model-builder-3.9.6.jar";
        let fs = Mem::with(&[]).with_bytes(path, jar(pom));
        let mut found = Vec::new();
        find(&fs, &Env::new(), &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].host, "central.example.test");
        assert!(
            found[0].from.starts_with("maven built-in default ("),
            "{}",
            found[0].from
        );

        // Maven's stock blocker of plain-HTTP repositories is no stand-in.
        let blocker = "<settings><mirrors><mirror><id>maven-default-http-blocker</id>\
                       <mirrorOf>external:http:*</mirrorOf><url>http://0.0.0.0/</url>\
                       <blocked>true</blocked></mirror></mirrors></settings>";
        let fs = Mem::with(&[("/etc/maven/settings.xml", blocker)]).with_bytes(path, jar(pom));
        let mut found = Vec::new();
        find(&fs, &Env::new(), &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].host, "central.example.test");

        let fs = Mem::with(&[(
            "/root/.m2/settings.xml",
            "<settings><mirrors><mirror><url>https://corp.example.test/m2</url>\
             <mirrorOf>*</mirrorOf></mirror></mirrors></settings>",
        )])
        .with_bytes(path, jar(pom));
        let mut found = Vec::new();
        find(&fs, &Env::new(), &mut found);
        let hosts: Vec<_> = found.iter().map(|f| f.host.as_str()).collect();
        assert_eq!(hosts, ["corp.example.test"]);
    }
}
