//! Cache keys: which stored entry a request maps to.
//!
//! A key is the request method plus the normalised absolute URL, e.g.
//! `GET https://deb.example.test/pool/main/h/hello/hello_1.0_amd64.deb`.
//! `HEAD` requests map to the `GET` key, because a stored `GET` response
//! answers a `HEAD` (RFC 9110 §9.3.2).
//!
//! Request headers named by `Vary` are not part of the plain key: the first
//! response stored for a URL sits under it, and http-cache-semantics decides
//! whether it matches a request (see `policy.rs`). A request it does not
//! match (another `Accept`, another `Accept-Encoding`) is stored and looked
//! up under a *variant key*: the plain key plus ` vary:` and a hash of the
//! request's values of the headers the stored response varies on
//! ([`CacheKey::variant`]). Several clients with different headers then
//! each get their own entry instead of replacing each other's. A space never
//! occurs in a request URL, so the suffix cannot be confused with one.
//!
//! Normalisation is deliberately small: lower-case scheme and host, drop the
//! scheme's default port, an empty path becomes `/`. Percent-encoding and the
//! query string are kept byte for byte, because package indexes are not
//! guaranteed to treat `%2F` and `/` alike (npm scoped packages do not).

use std::fmt;

use http::header::HOST;
use http::{request, Method};

use crate::error::{Error, Result};

/// The key a request is stored and looked up under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    key: String,
    host_start: usize,
    path_start: usize,
    query_start: usize,
    /// End of the URL: the start of the variant suffix, if any.
    url_end: usize,
}

/// What separates a variant key's selector from its URL.
const VARIANT: &str = " vary:";

impl CacheKey {
    /// Builds the key for a request.
    ///
    /// The URI should be absolute (the proxy knows the scheme, including for
    /// intercepted TLS). An origin-form URI (`/path`) falls back to the `Host`
    /// header and the `http` scheme.
    pub fn from_request(req: &request::Parts) -> Result<Self> {
        let method = if req.method == Method::HEAD {
            Method::GET
        } else {
            req.method.clone()
        };
        let scheme = req.uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        let authority = match req.uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => req
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or(Error::InvalidKey(
                    "request has neither an absolute URI nor a Host",
                ))?
                .to_owned(),
        };
        let authority = authority
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host)| host)
            .to_ascii_lowercase();
        if authority.is_empty() {
            return Err(Error::InvalidKey("empty host"));
        }
        let default_port = match scheme.as_str() {
            "http" => Some(":80"),
            "https" => Some(":443"),
            _ => None,
        };
        let host = match default_port {
            Some(port) => authority.strip_suffix(port).unwrap_or(&authority),
            None => &authority,
        };
        let path = match req.uri.path() {
            "" => "/",
            p => p,
        };
        let prefix = format!("{method} {scheme}://");
        let host_start = prefix.len();
        let path_start = host_start + host.len();
        let query_start = path_start + path.len();
        let mut key = format!("{prefix}{host}{path}");
        if let Some(query) = req.uri.query() {
            key.push('?');
            key.push_str(query);
        }
        Ok(CacheKey {
            url_end: key.len(),
            key,
            host_start,
            path_start,
            query_start,
        })
    }

    /// The key of one variant of this URL: `selector` names the request's
    /// values of the headers the stored response varies on (see
    /// `Policy::variant_key`). Only its hash goes into the key.
    pub fn variant(&self, selector: &str) -> CacheKey {
        let hash = twox_hash::XxHash3_128::oneshot(selector.as_bytes());
        CacheKey {
            key: format!("{}{VARIANT}{hash:032x}", &self.key[..self.url_end]),
            ..self.clone()
        }
    }

    /// Whether this is a variant key.
    pub fn is_variant(&self) -> bool {
        self.url_end < self.key.len()
    }

    /// Rebuilds a key from its string form (as stored in the index).
    pub fn parse(key: &str) -> Option<Self> {
        let (_, url) = key.split_once(' ')?;
        let url_end = key.len() - url.len() + url.find(VARIANT).unwrap_or(url.len());
        let (_, rest) = key[..url_end].split_once("://")?;
        let host_start = url_end - rest.len();
        let host_len = rest.find('/').unwrap_or(rest.len());
        let path_start = host_start + host_len;
        let query_start = key[path_start..url_end]
            .find('?')
            .map_or(url_end, |i| path_start + i);
        Some(CacheKey {
            key: key.to_owned(),
            host_start,
            path_start,
            query_start,
            url_end,
        })
    }

    /// The key as stored in the index.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The normalised URL, without the method (nor a variant's selector).
    pub fn url(&self) -> &str {
        let method_end = self.key.find(' ').map_or(0, |i| i + 1);
        &self.key[method_end..self.url_end]
    }

    /// The lower-cased host, with a non-default port if any.
    pub fn host(&self) -> &str {
        &self.key[self.host_start..self.path_start]
    }

    /// The host without any port, for matching rules.
    pub fn hostname(&self) -> &str {
        let host = self.host();
        if host.starts_with('[') {
            return host.split_inclusive(']').next().unwrap_or(host);
        }
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.key[self.path_start..self.query_start]
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn key(method: Method, uri: &str, host: Option<&str>) -> CacheKey {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        CacheKey::from_request(&b.body(()).unwrap().into_parts().0).unwrap()
    }

    #[test]
    fn absolute_uris_are_normalised() {
        let k = key(
            Method::GET,
            "HTTPS://Deb.Example.TEST:443/dists/stable/InRelease",
            None,
        );
        assert_eq!(
            k.as_str(),
            "GET https://deb.example.test/dists/stable/InRelease"
        );
        assert_eq!(k.host(), "deb.example.test");
        assert_eq!(k.path(), "/dists/stable/InRelease");
    }

    #[test]
    fn head_shares_the_get_key() {
        let get = key(Method::GET, "http://a.example.test/x", None);
        let head = key(Method::HEAD, "http://a.example.test/x", None);
        assert_eq!(get, head);
    }

    #[test]
    fn origin_form_uses_the_host_header() {
        let k = key(
            Method::GET,
            "/simple/pkg/?a=1",
            Some("Py.Example.Test:8080"),
        );
        assert_eq!(
            k.as_str(),
            "GET http://py.example.test:8080/simple/pkg/?a=1"
        );
        assert_eq!(k.hostname(), "py.example.test");
        assert_eq!(k.path(), "/simple/pkg/");
    }

    #[test]
    fn percent_encoding_is_preserved() {
        let k = key(Method::GET, "https://npm.example.test/@scope%2fpkg", None);
        assert_eq!(k.path(), "/@scope%2fpkg");
    }

    #[test]
    fn parse_round_trips() {
        let k = key(
            Method::GET,
            "https://npm.example.test/a/-/a-1.tgz?x=y",
            None,
        );
        let p = CacheKey::parse(k.as_str()).unwrap();
        assert_eq!(p, k);
        assert_eq!(p.url(), "https://npm.example.test/a/-/a-1.tgz?x=y");
    }

    #[test]
    fn variants_keep_the_url_and_differ_by_selector() {
        let k = key(Method::GET, "https://npm.example.test/pkg?x=y", None);
        let json = k.variant("accept:application/json\n");
        let abbreviated = k.variant("accept:application/vnd.npm.install-v1+json\n");
        assert_ne!(json, abbreviated);
        assert_ne!(json, k);
        assert_eq!(json, k.variant("accept:application/json\n"));
        assert!(json.is_variant() && !k.is_variant());
        // A variant of a variant is a variant of the URL.
        assert_eq!(json.variant("accept:a\n"), k.variant("accept:a\n"));
        for v in [&json, &abbreviated] {
            assert!(v
                .as_str()
                .starts_with("GET https://npm.example.test/pkg?x=y vary:"));
            let p = CacheKey::parse(v.as_str()).unwrap();
            assert_eq!(&p, v);
            assert_eq!(p.url(), "https://npm.example.test/pkg?x=y");
            assert_eq!(p.path(), "/pkg");
            assert_eq!(p.hostname(), "npm.example.test");
        }
    }
}
