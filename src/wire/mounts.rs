//! Bind specs and host paths as the daemon reads them: `Binds` entries split
//! like its `splitRawSpec`, paths cleaned like Go's `filepath.Clean`.

/// The modes a `Binds` entry may carry, comma-separated.
const MODES: &[&str] = &[
    "ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// Whether a `Binds` mode is one the daemon accepts.
pub fn valid_mode(mode: &str) -> bool {
    mode.is_empty() || mode.split(',').all(|m| MODES.contains(&m))
}

/// Splits a `Binds` entry like the daemon's `splitRawSpec` (at most two colons,
/// non-empty first part): the source when there is one (absolute: a host path,
/// otherwise a volume name) and the mode; `None` when the daemon would refuse it.
pub fn split_bind(spec: &str) -> Option<(Option<&str>, &str)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, mode) = match parts.as_slice() {
        [_target] => (None, ""),
        [_, mode] if valid_mode(mode) => (None, *mode),
        [src, _dst] => (Some(*src), ""),
        [src, _dst, mode] => (Some(*src), *mode),
        _ => return None,
    };
    if parts.first().is_some_and(|p| p.is_empty()) || !valid_mode(mode) {
        return None;
    }
    Some((source, mode))
}

/// Lexically cleans an absolute path into components (Go's `filepath.Clean`).
pub fn clean_components(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
