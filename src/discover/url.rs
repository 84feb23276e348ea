//! From a repository URL to a host the caching proxy can stand in for.

/// The host of a repository URL, when the caching proxy can serve it: an
/// `http` or `https` URL (apt's `mirror+`/`tor+` and cargo's `sparse+`
/// prefixes allowed) on the scheme's default port, whose host is a DNS name
/// with at least one dot. Lower case, without a trailing dot.
///
/// Not an IP address (the proxy is reached by name through the containers'
/// extra hosts), not a name without a dot (`localhost`, a search-domain
/// short name), and not a URL on another port: containers' extra hosts send
/// every port of a name to the proxy, which listens on 80 and 443 only, so
/// routing such a name would cut it off.
pub fn host_of(url: &str) -> Option<String> {
    let url = url.trim().trim_matches(|c| c == '"' || c == '\'');
    let url = ["mirror+", "tor+", "sparse+", "registry+"]
        .iter()
        .fold(url, |u, prefix| u.strip_prefix(prefix).unwrap_or(u));
    let uri: http::Uri = url.parse().ok()?;
    let default_port = match uri.scheme_str()? {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        // Credentials in a URL: a private repository; not for a shared cache.
        return None;
    }
    if authority.port_u16().is_some_and(|p| p != default_port) {
        return None;
    }
    // A name a CA's name constraints can hold (no IP, labels of letters,
    // digits and inner hyphens), with at least one dot.
    let host = cistern_ca::domain_name(authority.host()).ok()?;
    host.contains('.').then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_give_their_host() {
        assert_eq!(
            host_of("http://deb.example.test/debian").as_deref(),
            Some("deb.example.test")
        );
        assert_eq!(
            host_of("https://Pkgs.Example.:443/x").as_deref(),
            Some("pkgs.example")
        );
        assert_eq!(
            host_of("mirror+http://mirrors.example.test/list").as_deref(),
            Some("mirrors.example.test")
        );
        assert_eq!(
            host_of("sparse+https://index.example.test/").as_deref(),
            Some("index.example.test")
        );
        assert_eq!(
            host_of("'https://q.example.test/simple'").as_deref(),
            Some("q.example.test")
        );
    }

    #[test]
    fn what_the_proxy_cannot_stand_in_for_is_not_a_host() {
        for url in [
            "http://deb.example.test:8080/debian",
            "https://pkgs.example.test:8443/",
            "http://10.0.0.5/debian",
            "http://[fd00::1]/debian",
            "http://localhost/debian",
            "file:///srv/repo",
            "cdrom:[Debian]/",
            "ftp://ftp.example.test/",
            "https://user:secret@private.example.test/simple",
            "https://$basearch.example.test/",
            "https://-bad.example.test/",
            "https://under_score.example.test/",
            "direct",
            "",
        ] {
            assert_eq!(host_of(url), None, "{url}");
        }
    }
}
