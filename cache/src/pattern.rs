//! Glob patterns for rules and `purge`.
//!
//! Small on purpose: `**/` matches zero or more whole path segments (so
//! `**/pool/**/*.deb` matches `/pool/x.deb` as well as `/pool/a/b/x.deb`),
//! any other `**` matches any run of characters including `/`, `*` matches a
//! run without `/`, `?` matches one character other than `/`.
//! Everything else matches itself. Matching is by byte, so it works on
//! percent-encoded paths as they arrive.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    /// Compiles a glob.
    pub fn new(pattern: &str) -> Self {
        Glob {
            pattern: pattern.to_owned(),
        }
    }

    /// Whether the text contains any glob metacharacters.
    pub fn is_glob(text: &str) -> bool {
        text.contains(['*', '?'])
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        matches_at(self.pattern.as_bytes(), text.as_bytes())
    }
}

fn matches_at(pat: &[u8], text: &[u8]) -> bool {
    match pat {
        [] => text.is_empty(),
        // Zero segments, or any number of them each ending in `/`.
        [b'*', b'*', b'/', rest @ ..] => {
            matches_at(rest, text)
                || text
                    .iter()
                    .enumerate()
                    .any(|(i, &c)| c == b'/' && matches_at(rest, &text[i + 1..]))
        }
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| matches_at(rest, &text[i..])),
        [b'*', rest @ ..] => {
            let limit = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=limit).any(|i| matches_at(rest, &text[i..]))
        }
        [b'?', rest @ ..] => matches!(text, [c, tail @ ..] if *c != b'/' && matches_at(rest, tail)),
        [p, rest @ ..] => matches!(text, [c, tail @ ..] if c == p && matches_at(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_star_stays_within_a_segment() {
        let g = Glob::new("/pool/*.deb");
        assert!(g.matches("/pool/hello.deb"));
        assert!(!g.matches("/pool/h/hello.deb"));
    }

    #[test]
    fn double_star_crosses_segments() {
        let g = Glob::new("**/pool/**/*.deb");
        assert!(g.matches("/debian/pool/main/h/hello/hello_1.0_amd64.deb"));
        assert!(!g.matches("/debian/dists/stable/Release"));
        assert!(Glob::new("**/Release").matches("/Release"));
    }

    #[test]
    fn double_star_slash_matches_zero_segments() {
        let g = Glob::new("**/pool/**/*.deb");
        assert!(g.matches("/debian/pool/x.deb"));
        assert!(g.matches("/pool/x.deb"));
        assert!(!g.matches("/debian/pool.deb"));
        assert!(!g.matches("/debian/xpool/x.deb"));
        assert!(Glob::new("/a/**/b").matches("/a/b"));
        assert!(!Glob::new("/a/**/b").matches("/ab"));
    }

    #[test]
    fn question_mark_is_one_character() {
        let g = Glob::new("/a?c");
        assert!(g.matches("/abc"));
        assert!(!g.matches("/a/c"));
        assert!(!g.matches("/abbc"));
    }
}
