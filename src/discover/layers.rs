//! An image's files, read from the daemon's overlay2 layer directories on
//! this host (the `GraphDriver` of `GET /images/{name}/json`), without
//! starting or creating anything.
//!
//! Paths are resolved the way the container will see them: the topmost
//! layer holding a name wins, an overlay whiteout (a character device 0:0)
//! hides the name in the layers below, and symbolic links are followed
//! *inside the image* (an absolute target starts again at the image's
//! root), never on the host: every file is opened without following links
//! and every directory on the way is checked to be a real one. So an image
//! cannot make cistern read a file of the host. Opaque directories (an
//! overlay extended attribute) are not read; a file they hide may be seen,
//! at worst naming a repository host the image no longer uses.

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use super::files::Files;

/// Links followed in one lookup at most (as the kernel's 40, but lower:
/// configuration paths are short).
const MAX_LINKS: usize = 16;

/// The layers of one image, topmost first.
#[derive(Debug, Clone)]
pub struct Layers {
    dirs: Vec<PathBuf>,
}

impl Layers {
    /// The layers of an overlay2 image: `UpperDir`, then each of `LowerDir`
    /// (`:`-separated, topmost first). `None` unless every one is an
    /// absolute path to a directory on this host.
    pub fn overlay2(upper: Option<&str>, lower: Option<&str>) -> Option<Layers> {
        let dirs: Vec<PathBuf> = upper
            .into_iter()
            .chain(lower.into_iter().flat_map(|l| l.split(':')))
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        let usable = !dirs.is_empty()
            && dirs
                .iter()
                .all(|d| d.is_absolute() && std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()));
        usable.then_some(Layers { dirs })
    }

    /// Whether `comps` is a real directory in layer `layer` (no link on the
    /// way), `Some(false)` when something else is there, `None` when nothing.
    fn real_dir(&self, layer: usize, comps: &[String]) -> Option<bool> {
        let mut path = self.dirs[layer].clone();
        for c in comps {
            path.push(c);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Some(false),
                Err(_) => return None,
            }
        }
        Some(true)
    }

    /// The topmost entry `name` in directory `dir`: its layer and metadata;
    /// `None` when no layer has it or a whiteout hides it.
    fn entry(&self, dir: &[String], name: &str) -> Option<(usize, Metadata)> {
        for layer in 0..self.dirs.len() {
            match self.real_dir(layer, dir) {
                Some(true) => {}
                // A file or link over the directory hides the layers below.
                Some(false) => return None,
                None => continue,
            }
            let path = self.host_path(layer, dir).join(name);
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if is_whiteout(&meta) {
                    return None;
                }
                return Some((layer, meta));
            }
        }
        None
    }

    fn host_path(&self, layer: usize, comps: &[String]) -> PathBuf {
        let mut path = self.dirs[layer].clone();
        path.extend(comps);
        path
    }

    /// Resolves `path` inside the image: its layer, its components with no
    /// link left, and its metadata.
    fn resolve(&self, path: &str) -> Option<(usize, Vec<String>, Metadata)> {
        let mut pending: Vec<String> = components(path).rev().map(str::to_owned).collect();
        let mut done: Vec<String> = Vec::new();
        let mut found = None;
        let mut links = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let (layer, meta) = self.entry(&done, &c)?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = std::fs::read_link(self.host_path(layer, &done).join(&c)).ok()?;
                let target = target.to_str()?.to_owned();
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(components(&target).rev().map(str::to_owned));
                found = None;
                continue;
            }
            if !pending.is_empty() && !meta.is_dir() {
                return None;
            }
            done.push(c);
            found = Some((layer, meta));
        }
        // `None` for the root itself, or a path ending in a link to it.
        found.map(|(layer, meta)| (layer, done, meta))
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// overlayfs marks a deleted name with a character device 0:0.
fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

impl Files for Layers {
    fn read_bytes(&self, path: &str, max: u64) -> Option<Vec<u8>> {
        let (layer, comps, meta) = self.resolve(path)?;
        if !meta.is_file() || meta.len() > max {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(self.host_path(layer, &comps))
            .ok()?;
        let mut bytes = Vec::new();
        file.take(max).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let comps: Vec<String> = if components(dir).next().is_none() {
            Vec::new()
        } else {
            match self.resolve(dir) {
                Some((_, comps, meta)) if meta.is_dir() => comps,
                _ => return Vec::new(),
            }
        };
        let mut names = Vec::new();
        let mut hidden = Vec::new();
        for layer in 0..self.dirs.len() {
            match self.real_dir(layer, &comps) {
                Some(true) => {}
                Some(false) => break,
                None => continue,
            }
            let entries = std::fs::read_dir(self.host_path(layer, &comps))
                .into_iter()
                .flatten();
            for entry in entries.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if names.contains(&name) || hidden.contains(&name) {
                    continue;
                }
                match entry.metadata() {
                    Ok(meta) if is_whiteout(&meta) => hidden.push(name),
                    Ok(_) => names.push(name),
                    Err(_) => {}
                }
            }
        }
        names.sort();
        names
    }
}

/// For tests: layers from plain directories.
#[cfg(test)]
impl Layers {
    fn of(dirs: &[&std::path::Path]) -> Layers {
        Layers {
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_topmost_layer_wins_and_directories_merge() {
        let (top, bottom) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(bottom.path(), "/etc/apt/sources.list", "old");
        write(bottom.path(), "/etc/apt/sources.list.d/a.list", "a");
        write(top.path(), "/etc/apt/sources.list", "new");
        write(top.path(), "/etc/apt/sources.list.d/b.list", "b");
        let layers = Layers::of(&[top.path(), bottom.path()]);
        assert_eq!(layers.read("/etc/apt/sources.list").as_deref(), Some("new"));
        assert_eq!(layers.list("/etc/apt/sources.list.d"), ["a.list", "b.list"]);
        assert_eq!(
            layers.read("/etc/apt/sources.list.d/a.list").as_deref(),
            Some("a")
        );
        assert_eq!(layers.read("/etc/none"), None);
        assert_eq!(layers.list("/"), ["etc"]);
    }

    #[test]
    fn links_resolve_inside_the_image_never_on_the_host() {
        let (top, bottom) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let host = tempfile::tempdir().unwrap();
        write(
            host.path(),
            "/secret.conf",
            "[global]\nindex-url = https://host-only.example.test/\n",
        );
        write(bottom.path(), "/usr/share/pip/pip.conf", "image");
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        // An absolute link restarts at the image's root, in any layer.
        symlink("/usr/share/pip/pip.conf", top.path().join("etc/pip.conf")).unwrap();
        // A link whose target exists only on the host leads nowhere.
        symlink(
            host.path().join("secret.conf"),
            top.path().join("etc/evil.conf"),
        )
        .unwrap();
        // A relative link climbing above the root stays at the root.
        symlink(
            "../../../../../../..".to_owned() + host.path().to_str().unwrap() + "/secret.conf",
            top.path().join("etc/climb.conf"),
        )
        .unwrap();
        // A directory link inside the image.
        symlink("/usr/share/pip", top.path().join("etc/pipdir")).unwrap();
        let layers = Layers::of(&[top.path(), bottom.path()]);
        assert_eq!(layers.read("/etc/pip.conf").as_deref(), Some("image"));
        assert_eq!(
            layers.read("/etc/pipdir/pip.conf").as_deref(),
            Some("image")
        );
        assert_eq!(layers.read("/etc/evil.conf"), None);
        assert_eq!(layers.read("/etc/climb.conf"), None);
        // A loop ends.
        symlink("/etc/loop", top.path().join("etc/loop")).unwrap();
        assert_eq!(layers.read("/etc/loop"), None);
    }

    #[test]
    fn a_whiteout_hides_the_name_in_the_layers_below() {
        let (top, bottom) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(bottom.path(), "/etc/apt/sources.list.d/gone.list", "x");
        write(bottom.path(), "/etc/apt/sources.list.d/kept.list", "y");
        std::fs::create_dir_all(top.path().join("etc/apt/sources.list.d")).unwrap();
        let whiteout = top.path().join("etc/apt/sources.list.d/gone.list");
        let made = nix::sys::stat::mknod(
            &whiteout,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        );
        if made.is_err() {
            eprintln!("skipped: mknod needs CAP_MKNOD (the suite runs as root)");
            return;
        }
        let layers = Layers::of(&[top.path(), bottom.path()]);
        assert_eq!(layers.read("/etc/apt/sources.list.d/gone.list"), None);
        assert_eq!(layers.list("/etc/apt/sources.list.d"), ["kept.list"]);
    }

    #[test]
    fn a_lower_layer_link_under_an_upper_directory_is_not_followed_on_the_host() {
        let (top, bottom) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let host = tempfile::tempdir().unwrap();
        write(host.path(), "/pip.conf", "host");
        std::fs::create_dir_all(top.path().join("etc/xdg")).unwrap();
        std::fs::create_dir_all(bottom.path().join("etc")).unwrap();
        // The lower layer's `/etc/xdg` is a link to a host directory.
        symlink(host.path(), bottom.path().join("etc/xdg")).unwrap();
        let layers = Layers::of(&[top.path(), bottom.path()]);
        assert_eq!(layers.read("/etc/xdg/pip.conf"), None);
        assert_eq!(layers.list("/etc/xdg"), Vec::<String>::new());
    }
}
