//! `caching.inject.skip_images`: image patterns whose containers get no
//! injection (distroless images without a shell or trust store a job wants
//! untouched, say).
//!
//! A pattern is a glob over the `Image` string as the client wrote it: `*`
//! matches any run of characters (`/` and `:` included), `?` one character,
//! everything else itself. `*/distroless/*` matches `gcr.example/distroless/base:1`.

/// Whether `image` matches the glob `pattern`.
pub fn glob_match(pattern: &str, image: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = image.chars().collect();
    // Iterative matcher with backtracking to the last `*`: linear in practice,
    // never exponential.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether any of `patterns` matches `image`.
pub fn skipped(patterns: &[String], image: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("busybox*", "busybox:latest"));
        assert!(glob_match(
            "*/distroless/*",
            "gcr.example/distroless/base:1"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("busybox", "busybox:latest"));
        assert!(glob_match("*a*b*c", "xxaxxbxxbxc"));
        assert!(!glob_match("*a*b*c", "xxaxxbxxbx"));
        assert!(skipped(
            &["x".into(), "cistern-test/*".into()],
            "cistern-test/img:1"
        ));
    }
}
