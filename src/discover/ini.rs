//! The INI dialect of pip's and yum's configuration files (Python's
//! `configparser`): `[section]`, `key = value` or `key: value`, values
//! continued on indented lines, `#` and `;` comment lines. Keys are lower
//! case; a continued value keeps its lines joined by `\n`.

/// Sections in file order, each with its (key, value) pairs.
pub fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut all: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = all.last_mut().and_then(|(_, keys)| keys.last_mut()) {
                value.push('\n');
                value.push_str(trimmed);
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            all.push((name.trim().to_owned(), Vec::new()));
            continue;
        }
        let split = trimmed.find(['=', ':']);
        if let (Some(at), Some((_, keys))) = (split, all.last_mut()) {
            let (key, value) = trimmed.split_at(at);
            keys.push((
                key.trim().to_ascii_lowercase(),
                value[1..].trim().to_owned(),
            ));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_values_and_both_separators() {
        let text = "; comment\n[global]\nindex-url = https://a.example.test/simple\n\
                    extra-index-url =\n    https://b.example.test/simple\n    https://c.example.test/simple\n\
                    [install]\nTimeout: 60\n";
        let s = sections(text);
        assert_eq!(s[0].0, "global");
        assert_eq!(
            s[0].1[0],
            ("index-url".into(), "https://a.example.test/simple".into())
        );
        assert_eq!(
            s[0].1[1].1,
            "\nhttps://b.example.test/simple\nhttps://c.example.test/simple"
        );
        assert_eq!(s[1].1, [("timeout".to_string(), "60".to_string())]);
    }
}
