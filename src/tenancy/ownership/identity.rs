//! Identity: who is asking, as a tenant name.
//!
//! Each listener says how its clients are identified ([`Identity`]):
//!
//! * `peer` (the default for unix listeners): the unix peer credentials of the
//!   connecting process; the tenant is `uid-<uid>`. A connection without
//!   credentials is refused.
//! * `fixed: NAME` (the default for TCP listeners, as `tcp-<listener name>`):
//!   every client of the listener is the same tenant.
//! * `tokens:` HTTP `Authorization` credentials checked against SHA-256 hashes
//!   from the configuration: `{tenant, bearer_sha256}` for
//!   `Authorization: Bearer <token>`, `{tenant, user, password_sha256}` for
//!   `Authorization: Basic`. Every entry is compared, in constant time, so the
//!   answer time does not tell which part matched. A missing or wrong
//!   credential is a `401` with a `WWW-Authenticate` challenge.
//! * `certificate` (the default for TLS listeners with `client_ca`): the
//!   client certificate rustls verified during the handshake names the
//!   tenant ([`CertificateIdentity`]).
//!
//! This stage is synchronous and I/O-free: the handshake and the parsing of
//! the certificate happened in the listener ([`crate::listen::tls`]), which
//! hands over the names in [`Peer::Tls`]. Credentials are never logged: the
//! errors here say only what kind of credential was missing or wrong.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::listen::{ClientCert, Peer};

/// A tenant: the owner of containers, volumes, networks and images.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    /// A tenant from a validated name (see [`check_name`]).
    pub fn new(name: impl Into<String>) -> Result<Tenant, String> {
        let name = name.into();
        check_name(&name)?;
        Ok(Tenant(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tenant and instance names: 1 to 64 of `[A-Za-z0-9_.-]`, starting with a
/// letter or digit. They end up in label values and filter expressions, so
/// nothing that could split one (`=`, `,`, quotes) is allowed.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name (1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit)"
        ))
    }
}

/// How a listener identifies its clients.
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    /// Unix peer credentials: tenant `uid-<uid>`.
    Peer,
    /// One tenant for every client.
    Fixed(Tenant),
    /// HTTP credentials, each mapped to a tenant.
    Tokens(Vec<Token>),
    /// The verified TLS client certificate.
    Certificate(CertificateIdentity),
}

/// How a verified client certificate names a tenant.
///
/// The *candidates* are the certificate's names that [`CertName`] selects, in
/// order. The first candidate the `map` lists gives the tenant. When none is
/// listed, the first candidate is the tenant itself if `unmapped` is
/// [`Unmapped::Name`] and it is a valid tenant name ([`check_name`]);
/// otherwise the request is refused with a `401`. A refusal is not a failed
/// handshake: the certificate is genuine (the CA vouched for it), cistern
/// just cannot make a tenant of it, and a `401` carries a message the docker
/// CLI prints where a handshake alert would only say "bad certificate".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateIdentity {
    pub from: CertName,
    /// Certificate name (ASCII-lower-cased) → tenant. Names are compared
    /// without regard to ASCII case.
    pub map: BTreeMap<String, Tenant>,
    pub unmapped: Unmapped,
}

/// Which names of the client certificate are candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertName {
    /// The subject Common Name; when the subject has none, the DNS names of
    /// the subject alternative names (config `cn_or_san`, the default).
    #[default]
    CommonNameOrDns,
    /// The subject Common Name only (config `cn`).
    CommonName,
    /// The DNS subject alternative names only, in order (config `san`).
    Dns,
}

/// What a candidate the map does not list becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmapped {
    /// The name itself is the tenant (when it is a valid tenant name).
    #[default]
    Name,
    /// Refused: only names the map lists get in.
    Refuse,
}

impl CertificateIdentity {
    fn candidates<'c>(&self, cert: &'c ClientCert) -> Vec<&'c str> {
        let cn = cert.common_name.as_deref();
        let dns = cert.dns_names.iter().map(String::as_str);
        match (self.from, cn) {
            (CertName::CommonNameOrDns | CertName::CommonName, Some(cn)) => vec![cn],
            (CertName::CommonNameOrDns | CertName::Dns, _) => dns.collect(),
            (CertName::CommonName, None) => Vec::new(),
        }
    }

    /// The tenant a verified client certificate names.
    pub fn tenant(&self, cert: &ClientCert) -> Result<Tenant, AuthError> {
        let candidates = self.candidates(cert);
        let Some(first) = candidates.first() else {
            return Err(AuthError::CertificateUnnamed(self.from));
        };
        if let Some(tenant) = candidates
            .iter()
            .find_map(|name| self.map.get(&name.to_ascii_lowercase()))
        {
            return Ok(tenant.clone());
        }
        match self.unmapped {
            Unmapped::Refuse => Err(AuthError::CertificateUnmapped(shown(first))),
            Unmapped::Name => {
                Tenant::new(*first).map_err(|_| AuthError::CertificateBadName(shown(first)))
            }
        }
    }
}

/// A certificate name as quoted in an error: at most 80 characters.
fn shown(name: &str) -> String {
    let mut out: String = name.chars().take(80).collect();
    if out.len() < name.len() {
        out.push_str("...");
    }
    out
}

/// Hashes only, and never printed.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Peer => f.write_str("Peer"),
            Identity::Fixed(t) => write!(f, "Fixed({t})"),
            Identity::Tokens(tokens) => write!(f, "Tokens({} entries)", tokens.len()),
            Identity::Certificate(c) => write!(
                f,
                "Certificate({:?}, {} mapped, unmapped {:?})",
                c.from,
                c.map.len(),
                c.unmapped
            ),
        }
    }
}

/// One accepted credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub tenant: Tenant,
    pub credential: Credential,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>` with SHA-256(token) = this.
    Bearer { sha256: [u8; 32] },
    /// `Authorization: Basic` with this user and SHA-256(password) = this.
    Basic { user: String, sha256: [u8; 32] },
}

/// Removes a client's credentials from a request bound for the daemon: its
/// `Authorization` is its credential for cistern (the listener's identity),
/// which the daemon never sees.
pub fn strip_credentials(headers: &mut HeaderMap) {
    headers.remove(http::header::AUTHORIZATION);
}

/// Parses a SHA-256 written as 64 hex digits.
pub fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err("must be 64 hex digits (a SHA-256)".into());
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => return Err("must be 64 hex digits (a SHA-256)".into()),
        }
    }
    Ok(out)
}

/// Why a client could not be identified: always a `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("cistern: this listener needs credentials (Authorization: Bearer or Basic)")]
    Missing,
    #[error("cistern: the credentials were not accepted")]
    Wrong,
    #[error("cistern: cannot identify the client: the connection has no peer credentials")]
    NoPeer,
    #[error("cistern: this listener needs a TLS client certificate")]
    NoCertificate,
    #[error("cistern: the client certificate has {}, which this listener takes the tenant from", match .0 {
        CertName::CommonNameOrDns => "neither a subject common name nor a DNS name",
        CertName::CommonName => "no subject common name",
        CertName::Dns => "no DNS subject alternative name",
    })]
    CertificateUnnamed(CertName),
    #[error("cistern: the client certificate's name {0:?} is not a valid tenant name (1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit); map it to one in the listener's identity.certificate.map")]
    CertificateBadName(String),
    #[error("cistern: the client certificate's name {0:?} is not in this listener's identity map")]
    CertificateUnmapped(String),
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl Identity {
    /// The tenant of a request (stage `identify`).
    pub fn identify(&self, peer: &Peer, headers: &HeaderMap) -> Result<Tenant, AuthError> {
        match self {
            Identity::Fixed(t) => Ok(t.clone()),
            Identity::Peer => match peer {
                Peer::Unix { uid, .. } => Ok(Tenant(format!("uid-{uid}"))),
                _ => Err(AuthError::NoPeer),
            },
            Identity::Tokens(tokens) => identify_token(tokens, headers),
            Identity::Certificate(c) => match peer {
                Peer::Tls {
                    client: Some(cert), ..
                } => c.tenant(cert),
                _ => Err(AuthError::NoCertificate),
            },
        }
    }

    /// The `WWW-Authenticate` challenge of a `401` from this listener.
    pub fn challenge(&self) -> &'static str {
        match self {
            Identity::Tokens(tokens)
                if tokens
                    .iter()
                    .all(|t| matches!(t.credential, Credential::Basic { .. })) =>
            {
                "Basic realm=\"cistern\""
            }
            Identity::Tokens(tokens)
                if tokens
                    .iter()
                    .any(|t| matches!(t.credential, Credential::Basic { .. })) =>
            {
                "Bearer realm=\"cistern\", Basic realm=\"cistern\""
            }
            _ => "Bearer realm=\"cistern\"",
        }
    }
}

fn identify_token(tokens: &[Token], headers: &HeaderMap) -> Result<Tenant, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Wrong);
    }
    let value = value.to_str().map_err(|_| AuthError::Wrong)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Wrong)?;
    let rest = rest.trim();
    // Compare against every entry, whatever matched, so timing tells nothing.
    let mut found: Option<&Tenant> = None;
    if scheme.eq_ignore_ascii_case("bearer") {
        let digest = sha256(rest.as_bytes());
        for t in tokens {
            if let Credential::Bearer { sha256 } = &t.credential {
                if same(sha256, &digest) && found.is_none() {
                    found = Some(&t.tenant);
                }
            }
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| AuthError::Wrong)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Wrong)?;
        let (user, password) = decoded.split_once(':').ok_or(AuthError::Wrong)?;
        let digest = sha256(password.as_bytes());
        let user_digest = sha256(user.as_bytes());
        for t in tokens {
            if let Credential::Basic { user, sha256 } = &t.credential {
                let user_ok = same(&sha256_of(user), &user_digest);
                let pass_ok = same(sha256, &digest);
                if user_ok & pass_ok && found.is_none() {
                    found = Some(&t.tenant);
                }
            }
        }
    } else {
        return Err(AuthError::Wrong);
    }
    found.cloned().ok_or(AuthError::Wrong)
}

fn sha256_of(s: &str) -> [u8; 32] {
    sha256(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn tokens() -> Identity {
        Identity::Tokens(vec![
            Token {
                tenant: Tenant::new("alice").unwrap(),
                credential: Credential::Bearer {
                    sha256: parse_sha256(&hex(sha256(b"s3cret"))).unwrap(),
                },
            },
            Token {
                tenant: Tenant::new("bob").unwrap(),
                credential: Credential::Basic {
                    user: "bob".into(),
                    sha256: sha256(b"hunter2"),
                },
            },
        ])
    }

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn peer_credentials_name_the_uid() {
        let peer = Peer::Unix {
            uid: 0,
            gid: 0,
            pid: Some(1),
        };
        let t = Identity::Peer.identify(&peer, &HeaderMap::new()).unwrap();
        assert_eq!(t.as_str(), "uid-0");
        assert_eq!(
            Identity::Peer.identify(&Peer::Unknown, &HeaderMap::new()),
            Err(AuthError::NoPeer)
        );
    }

    #[test]
    fn bearer_and_basic_tokens() {
        let id = tokens();
        let peer = Peer::Unknown;
        assert_eq!(
            id.identify(&peer, &auth("Bearer s3cret")).unwrap().as_str(),
            "alice"
        );
        assert_eq!(
            id.identify(&peer, &auth("bearer s3cret")).unwrap().as_str(),
            "alice"
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:hunter2");
        assert_eq!(
            id.identify(&peer, &auth(&format!("Basic {basic}")))
                .unwrap()
                .as_str(),
            "bob"
        );
        for wrong in [
            "Bearer s3cre",
            "Bearer hunter2",
            "Token s3cret",
            "Basic !!",
            "s3cret",
        ] {
            assert_eq!(
                id.identify(&peer, &auth(wrong)),
                Err(AuthError::Wrong),
                "{wrong}"
            );
        }
        let other_user = base64::engine::general_purpose::STANDARD.encode("alice:hunter2");
        assert_eq!(
            id.identify(&peer, &auth(&format!("Basic {other_user}"))),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            id.identify(&peer, &HeaderMap::new()),
            Err(AuthError::Missing)
        );
        assert_eq!(
            id.challenge(),
            "Bearer realm=\"cistern\", Basic realm=\"cistern\""
        );
    }

    fn tls_peer(cn: Option<&str>, dns: &[&str]) -> Peer {
        Peer::Tls {
            addr: "127.0.0.1:5000".parse().unwrap(),
            client: Some(std::sync::Arc::new(ClientCert {
                common_name: cn.map(str::to_string),
                dns_names: dns.iter().map(|s| s.to_string()).collect(),
            })),
        }
    }

    fn cert_identity(from: CertName, map: &[(&str, &str)], unmapped: Unmapped) -> Identity {
        Identity::Certificate(CertificateIdentity {
            from,
            map: map
                .iter()
                .map(|(k, v)| (k.to_string(), Tenant::new(*v).unwrap()))
                .collect(),
            unmapped,
        })
    }

    fn tenant_of(id: &Identity, peer: &Peer) -> Result<String, AuthError> {
        id.identify(peer, &HeaderMap::new())
            .map(|t| t.as_str().to_string())
    }

    #[test]
    fn certificates_name_the_tenant_by_cn_then_dns_name() {
        let id = Identity::Certificate(CertificateIdentity::default());
        assert_eq!(
            tenant_of(&id, &tls_peer(Some("ci-runner"), &["a.example"])).unwrap(),
            "ci-runner"
        );
        assert_eq!(
            tenant_of(&id, &tls_peer(None, &["a.example", "b.example"])).unwrap(),
            "a.example"
        );
        assert_eq!(
            tenant_of(&id, &tls_peer(None, &[])),
            Err(AuthError::CertificateUnnamed(CertName::CommonNameOrDns))
        );
        // A CN that cannot be a tenant is refused; it is not skipped for a SAN.
        let err = tenant_of(&id, &tls_peer(Some("Jane Doe"), &["jane.example"])).unwrap_err();
        assert_eq!(err, AuthError::CertificateBadName("Jane Doe".into()));
        assert!(err
            .to_string()
            .contains("\"Jane Doe\" is not a valid tenant name"));
        // No certificate (plain TCP, or TLS without client_ca): refused.
        let no_cert = Peer::Tls {
            addr: "127.0.0.1:5000".parse().unwrap(),
            client: None,
        };
        assert_eq!(tenant_of(&id, &no_cert), Err(AuthError::NoCertificate));
        assert_eq!(
            tenant_of(&id, &Peer::Tcp("127.0.0.1:5000".parse().unwrap())),
            Err(AuthError::NoCertificate)
        );
    }

    #[test]
    fn certificate_names_can_be_chosen_and_mapped() {
        let peer = tls_peer(Some("Jane Doe"), &["jane.example", "runner-1.example"]);
        let cn_only = cert_identity(CertName::CommonName, &[], Unmapped::Name);
        assert!(matches!(
            tenant_of(&cn_only, &tls_peer(None, &["a.example"])),
            Err(AuthError::CertificateUnnamed(CertName::CommonName))
        ));
        let san = cert_identity(CertName::Dns, &[], Unmapped::Name);
        assert_eq!(tenant_of(&san, &peer).unwrap(), "jane.example");
        // The first DNS name the map lists wins, whatever its position.
        let mapped = cert_identity(
            CertName::Dns,
            &[("runner-1.example", "ci-runners")],
            Unmapped::Refuse,
        );
        assert_eq!(tenant_of(&mapped, &peer).unwrap(), "ci-runners");
        assert_eq!(
            tenant_of(&mapped, &tls_peer(None, &["other.example"])),
            Err(AuthError::CertificateUnmapped("other.example".into()))
        );
        // A mapped CN may be anything, and matches ignoring ASCII case.
        let by_cn = cert_identity(
            CertName::CommonNameOrDns,
            &[("jane doe", "jane")],
            Unmapped::Name,
        );
        assert_eq!(tenant_of(&by_cn, &peer).unwrap(), "jane");
        assert_eq!(
            tenant_of(&by_cn, &tls_peer(Some("bob"), &[])).unwrap(),
            "bob"
        );
        let long = "x".repeat(200);
        let err = tenant_of(&by_cn, &tls_peer(Some(&long), &[])).unwrap_err();
        assert_eq!(
            err,
            AuthError::CertificateBadName(format!("{}...", "x".repeat(80)))
        );
    }

    #[test]
    fn debug_output_shows_no_hashes() {
        assert_eq!(format!("{:?}", tokens()), "Tokens(2 entries)");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("tcp-ci.runner_1").is_ok());
        for bad in ["", "-a", "a=b", "a,b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(parse_sha256("zz").is_err());
    }
}
