//! Answering a client's own conditional and range headers from a cached
//! entry, without asking the origin.
//!
//! - [`evaluate_conditionals`]: `If-None-Match` (weak comparison), else
//!   `If-Modified-Since`, decide a `304 Not Modified` (RFC 9110 §13.2.2).
//! - [`evaluate_range`]: a single `Range: bytes=…` (with `If-Range`) becomes
//!   a `206` for one byte range, or `416`; multi-range requests get the whole
//!   body, which RFC 9110 §14.2 allows.
//! - [`content_length`]: a head's announced length, for the proxy and the
//!   store alike.

use std::time::SystemTime;

use http::header::{
    CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::HeaderMap;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// The `Content-Length` of a head, when it has a valid one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// What to do about a client's conditional headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditional {
    /// The client's copy is current: answer `304 Not Modified`.
    NotModified,
    /// Serve the entry.
    Proceed,
}

/// What part of the body to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// The whole body, `200`.
    Full,
    /// Bytes `start..=end`, `206` with the [`content_range`] header.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// `416 Range Not Satisfiable` with `Content-Range: bytes */size`.
    NotSatisfiable,
}

/// Evaluates `If-None-Match` / `If-Modified-Since` against the headers of
/// the response about to be served.
pub fn evaluate_conditionals(request: &HeaderMap, response: &HeaderMap) -> Conditional {
    if let Some(inm) = request.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = response.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return Conditional::Proceed;
        };
        let current = opaque(etag);
        let hit = inm
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || opaque(tag) == current);
        return if hit {
            Conditional::NotModified
        } else {
            Conditional::Proceed
        };
    }
    let since = request.get(IF_MODIFIED_SINCE).and_then(http_date);
    let modified = response.get(LAST_MODIFIED).and_then(http_date);
    match (since, modified) {
        (Some(since), Some(modified)) if modified <= since => Conditional::NotModified,
        _ => Conditional::Proceed,
    }
}

/// Evaluates `Range` and `If-Range` for a body of `size` bytes.
pub fn evaluate_range(request: &HeaderMap, response: &HeaderMap, size: u64) -> RangeDecision {
    let Some(range) = request.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeDecision::Full;
    };
    if let Some(if_range) = request.get(IF_RANGE).and_then(|v| v.to_str().ok()) {
        if !if_range_matches(if_range.trim(), response) {
            return RangeDecision::Full;
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return RangeDecision::Full;
    };
    if spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => return RangeDecision::NotSatisfiable,
            Some(n) if size > 0 => (size.saturating_sub(n), size - 1),
            Some(_) => return RangeDecision::NotSatisfiable,
            None => return RangeDecision::Full,
        },
        // bytes=N-: from N to the end.
        (false, true) => match parse(first) {
            Some(start) => (start, size.saturating_sub(1)),
            None => return RangeDecision::Full,
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(size.saturating_sub(1))),
            _ => return RangeDecision::Full,
        },
        (true, true) => return RangeDecision::Full,
    };
    if start >= size {
        return RangeDecision::NotSatisfiable;
    }
    RangeDecision::Partial { start, end }
}

/// The `Content-Range` value for a decision (`bytes a-b/size` or
/// `bytes */size`); `None` for [`RangeDecision::Full`].
pub fn content_range(decision: RangeDecision, size: u64) -> Option<String> {
    match decision {
        RangeDecision::Full => None,
        RangeDecision::Partial { start, end } => Some(format!("bytes {start}-{end}/{size}")),
        RangeDecision::NotSatisfiable => Some(format!("bytes */{size}")),
    }
}

/// `If-Range` needs a strong validator match (RFC 9110 §13.1.5).
fn if_range_matches(if_range: &str, response: &HeaderMap) -> bool {
    if if_range.starts_with('"') {
        let etag = response.get(ETAG).and_then(|v| v.to_str().ok());
        return etag.is_some_and(|e| !e.starts_with("W/") && e.trim() == if_range);
    }
    let wanted = OffsetDateTime::parse(if_range, &Rfc2822).ok();
    let modified = response.get(LAST_MODIFIED).and_then(http_date);
    matches!((wanted, modified), (Some(w), Some(m)) if SystemTime::from(w) == m)
}

/// An entity tag without its weakness marker, for weak comparison.
fn opaque(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?;
    OffsetDateTime::parse(text.trim(), &Rfc2822)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let res = headers(&[("etag", "\"abc\"")]);
        let hit = headers(&[("if-none-match", "W/\"abc\", \"x\"")]);
        let miss = headers(&[("if-none-match", "\"zzz\"")]);
        assert_eq!(evaluate_conditionals(&hit, &res), Conditional::NotModified);
        assert_eq!(evaluate_conditionals(&miss, &res), Conditional::Proceed);
    }

    #[test]
    fn if_modified_since_compares_dates() {
        let res = headers(&[("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let later = headers(&[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")]);
        let earlier = headers(&[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]);
        assert_eq!(
            evaluate_conditionals(&later, &res),
            Conditional::NotModified
        );
        assert_eq!(evaluate_conditionals(&earlier, &res), Conditional::Proceed);
    }

    #[test]
    fn byte_ranges_are_parsed() {
        let none = HeaderMap::new();
        let r = |v: &'static str| evaluate_range(&headers(&[("range", v)]), &none, 100);
        assert_eq!(r("bytes=0-9"), RangeDecision::Partial { start: 0, end: 9 });
        assert_eq!(
            r("bytes=90-"),
            RangeDecision::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            r("bytes=-10"),
            RangeDecision::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            r("bytes=50-500"),
            RangeDecision::Partial { start: 50, end: 99 }
        );
        assert_eq!(r("bytes=100-"), RangeDecision::NotSatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), RangeDecision::Full);
        assert_eq!(r("items=0-1"), RangeDecision::Full);
        assert_eq!(
            content_range(RangeDecision::Partial { start: 0, end: 9 }, 100).as_deref(),
            Some("bytes 0-9/100")
        );
    }

    #[test]
    fn if_range_mismatch_sends_the_whole_body() {
        let res = headers(&[("etag", "\"v2\"")]);
        let req = headers(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]);
        assert_eq!(evaluate_range(&req, &res, 10), RangeDecision::Full);
        let req = headers(&[("range", "bytes=0-1"), ("if-range", "\"v2\"")]);
        assert_eq!(
            evaluate_range(&req, &res, 10),
            RangeDecision::Partial { start: 0, end: 1 }
        );
    }
}
