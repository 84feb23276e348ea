//! The status page at `/`: one self-contained HTML file (`status.html`
//! beside this file: its script and styles inline, no external assets),
//! drawn in the browser from the JSON API. It answers at a glance whether
//! the cache pays off (hit ratio and bytes saved, now and over the last
//! hours), and shows the busiest domains, tenants, job sockets, the latest
//! refusals and when the CAs expire.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The page.
pub const HTML: &str = include_str!("status.html");

/// Nothing but this page's own inline script and style, and requests back
/// to the admin listener, is allowed.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

/// `GET /`.
pub fn response() -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(HTML.as_bytes())));
    *res.status_mut() = StatusCode::OK;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "//cdn", "src=\"http"] {
            assert!(!HTML.contains(outside), "{outside}");
        }
        assert!(HTML.contains("api/v1/cache"));
    }
}
