//! Query strings read the way Go's `url.ParseQuery` / `Request.Form` reads them:
//! pairs split on `&`, key and value split at the first `=`, `+` is a space, `%XX`
//! escapes (an invalid escape is an error, which moby turns into a 400), and
//! `Form.Get` returns the **first** value of a repeated key. Go ≥ 1.17 refuses `;`
//! while older Go split on it too, so cistern refuses it. A key cistern inspects may
//! appear only once, so that no reader can pick a different occurrence.

use super::Refusal;

/// A parsed query string that remembers the raw pairs for rewriting.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// `(decoded key, decoded value, raw pair)`.
    pairs: Vec<(String, String, String)>,
}

fn bad(what: String) -> Refusal {
    Refusal::malformed(
        "query",
        String::new(),
        format!("cistern: malformed query string: {what}"),
    )
}

fn unescape(s: &str) -> Result<String, Refusal> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
                match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err(bad(format!("invalid escape in {s:?}"))),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad("invalid UTF-8".into()))
}

/// Percent-encodes a value for a query string.
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Query {
    pub fn parse(raw: &str) -> Result<Query, Refusal> {
        if raw.contains(';') {
            return Err(bad("';' is not a separator".into()));
        }
        let mut pairs = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((unescape(k)?, unescape(v)?, pair.to_string()));
        }
        Ok(Query { pairs })
    }

    /// The value of a key the policy inspects; a repeated key is refused.
    pub fn get(&self, key: &str) -> Result<Option<&str>, Refusal> {
        let mut it = self.pairs.iter().filter(|(k, _, _)| k == key);
        let first = it.next().map(|(_, v, _)| v.as_str());
        if it.next().is_some() {
            return Err(bad(format!("parameter {key:?} given more than once")));
        }
        Ok(first)
    }

    /// Every value of a key that may legitimately repeat (`extrahosts`, `t`), in
    /// order, as Go's `r.Form[key]` returns them.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }

    /// The query with `key` set to `value` (other pairs kept byte for byte).
    pub fn with(&self, key: &str, value: &str) -> Query {
        let mut pairs: Vec<_> = self
            .pairs
            .iter()
            .filter(|(k, _, _)| k != key)
            .cloned()
            .collect();
        pairs.push((
            key.to_string(),
            value.to_string(),
            format!("{}={}", escape(key), escape(value)),
        ));
        Query { pairs }
    }

    /// The query with every `key` replaced by `values`, in order.
    pub fn with_all(&self, key: &str, values: &[String]) -> Query {
        let mut pairs: Vec<_> = self
            .pairs
            .iter()
            .filter(|(k, _, _)| k != key)
            .cloned()
            .collect();
        for value in values {
            pairs.push((
                key.to_string(),
                value.clone(),
                format!("{}={}", escape(key), escape(value)),
            ));
        }
        Query { pairs }
    }

    /// The raw query string.
    pub fn encode(&self) -> String {
        self.pairs
            .iter()
            .map(|(_, _, raw)| raw.as_str())
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        let q = Query::parse("networkmode=host&t=a+b&x=%2F&empty&=v").unwrap();
        assert_eq!(q.get("networkmode").unwrap(), Some("host"));
        assert_eq!(q.get("t").unwrap(), Some("a b"));
        assert_eq!(q.get("x").unwrap(), Some("/"));
        assert_eq!(q.get("empty").unwrap(), Some(""));
        assert_eq!(q.get("missing").unwrap(), None);
        // Keys are case-sensitive in Go's Form.
        assert_eq!(q.get("NetworkMode").unwrap(), None);
    }

    #[test]
    fn ambiguous_queries_are_refused() {
        assert!(Query::parse("a=1;networkmode=host").is_err());
        assert!(Query::parse("a=%zz").is_err());
        assert!(Query::parse("a=%ff").is_err());
        let q = Query::parse("networkmode=default&networkmode=host").unwrap();
        assert!(q.get("networkmode").is_err());
        assert!(q.get("other").is_ok());
    }

    #[test]
    fn rewriting_keeps_other_pairs() {
        let q = Query::parse("t=x%3Alatest&memory=1").unwrap();
        assert_eq!(
            q.with("memory", "1024").encode(),
            "t=x%3Alatest&memory=1024"
        );
        assert_eq!(
            q.with("cgroupparent", "/ci slice").encode(),
            "t=x%3Alatest&memory=1&cgroupparent=%2Fci%20slice"
        );
    }
}
