//! The files discovery reads: a view of a root file system by absolute path,
//! so the same parsers read the host's files and an image's.

use std::path::{Path, PathBuf};

use cistern_cache::pattern::Glob;

/// Largest file read: configuration files are small, and a tool's source
/// file holding its default index is too.
pub const MAX_FILE: u64 = 1 << 20;

/// Read access to a file system by absolute path (`/etc/apt/sources.list`).
pub trait Files {
    /// The bytes of a regular file, `None` when it is missing, unreadable
    /// or larger than `max`.
    fn read_bytes(&self, path: &str, max: u64) -> Option<Vec<u8>>;
    /// The names of a directory's entries, sorted; empty when it is missing.
    fn list(&self, dir: &str) -> Vec<String>;

    /// The text of a regular file, `None` when it is missing, unreadable,
    /// not UTF-8 or larger than [`MAX_FILE`].
    fn read(&self, path: &str) -> Option<String> {
        String::from_utf8(self.read_bytes(path, MAX_FILE)?).ok()
    }
}

/// A directory as the root of the file system: `/` for the host. Symbolic
/// links are followed wherever they point, so a tree someone else wrote (an
/// image's) must not be read through this.
#[derive(Debug, Clone)]
pub struct Root {
    root: PathBuf,
}

impl Root {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Root { root: root.into() }
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Files for Root {
    fn read_bytes(&self, path: &str, max: u64) -> Option<Vec<u8>> {
        let path = self.path(path);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > max {
            return None;
        }
        std::fs::read(path).ok()
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(dir))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

/// No files at all: discovery from an environment alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

impl Files for NoFiles {
    fn read_bytes(&self, _: &str, _: u64) -> Option<Vec<u8>> {
        None
    }

    fn list(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
}

/// The paths matching `pattern`, an absolute path whose segments may hold
/// `*` (any run of characters within the segment), in sorted order.
pub fn expand(files: &dyn Files, pattern: &str) -> Vec<String> {
    let mut paths = vec![String::new()];
    for segment in pattern.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for dir in &paths {
            if Glob::is_glob(segment) {
                let glob = Glob::new(segment);
                let parent = if dir.is_empty() { "/" } else { dir.as_str() };
                for name in files.list(parent) {
                    if glob.matches(&name) {
                        next.push(format!("{dir}/{name}"));
                    }
                }
            } else {
                next.push(format!("{dir}/{segment}"));
            }
        }
        paths = next;
    }
    paths
}

/// The files of `dir` whose names end with `suffix`, as absolute paths.
pub fn with_suffix(files: &dyn Files, dir: &str, suffix: &str) -> Vec<String> {
    files
        .list(dir)
        .into_iter()
        .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect()
}

/// Whether `path` is absolute and free of `..` segments.
pub fn is_plain_absolute(path: &str) -> bool {
    Path::new(path).is_absolute() && !path.split('/').any(|s| s == "..")
}

#[cfg(test)]
pub mod fixture {
    //! An in-memory file system for the parsers' tests.
    use std::collections::BTreeMap;

    use super::Files;

    /// Text files, and binary ones.
    #[derive(Default)]
    pub struct Mem(pub BTreeMap<String, String>, pub BTreeMap<String, Vec<u8>>);

    impl Mem {
        pub fn with(files: &[(&str, &str)]) -> Self {
            Mem(
                files
                    .iter()
                    .map(|(p, t)| (p.to_string(), t.to_string()))
                    .collect(),
                BTreeMap::new(),
            )
        }

        pub fn with_bytes(mut self, path: &str, bytes: Vec<u8>) -> Self {
            self.1.insert(path.to_owned(), bytes);
            self
        }
    }

    impl Files for Mem {
        fn read_bytes(&self, path: &str, max: u64) -> Option<Vec<u8>> {
            self.0
                .get(path)
                .map(|t| t.as_bytes().to_vec())
                .or_else(|| self.1.get(path).cloned())
                .filter(|b| b.len() as u64 <= max)
        }

        fn list(&self, dir: &str) -> Vec<String> {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            let mut names: Vec<String> = self
                .0
                .keys()
                .chain(self.1.keys())
                .filter_map(|p| p.strip_prefix(&prefix))
                .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
                .collect();
            names.sort();
            names.dedup();
            names
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::Mem;
    use super::*;

    #[test]
    fn expand_follows_stars_segment_by_segment() {
        let fs = Mem::with(&[
            ("/usr/lib/python3.11/site-packages/pip/x.py", ""),
            ("/usr/lib/python3.12/site-packages/pip/x.py", ""),
            ("/usr/lib/node/x.py", ""),
        ]);
        assert_eq!(
            expand(&fs, "/usr/lib/python3*/site-packages/pip/x.py"),
            [
                "/usr/lib/python3.11/site-packages/pip/x.py",
                "/usr/lib/python3.12/site-packages/pip/x.py"
            ]
        );
        assert_eq!(expand(&fs, "/etc/none/*.list"), Vec::<String>::new());
    }

    #[test]
    fn root_reads_under_its_directory_only_by_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/apk")).unwrap();
        std::fs::write(dir.path().join("etc/apk/repositories"), "x").unwrap();
        let root = Root::new(dir.path());
        assert_eq!(root.read("/etc/apk/repositories").as_deref(), Some("x"));
        assert_eq!(root.list("/etc"), ["apk"]);
        assert_eq!(root.read("/etc/apk"), None);
        assert!(!is_plain_absolute("/etc/../x"));
        assert!(is_plain_absolute("/etc/x"));
    }
}
