//! One CA generation: its key, its self-signed certificate with name constraints, and
//! issuing a leaf for one host.
//!
//! What a generation looks like (checked by the tests in this file and in `tests/`):
//! - subject CN `cistern CA <id> <not-before RFC 3339>`, where `<id>` is the [`CaId`];
//! - basic constraints `CA:true, pathlen:0` (critical), key usage
//!   `keyCertSign, cRLSign` (critical);
//! - name constraints (critical) with one permitted dNSName subtree per cached domain, so a
//!   client that trusts this CA trusts it for nothing else, even if the key leaked;
//! - validity `[now - 5 min, now + lifetime]`.
//!
//! Not here: choosing which generation to use, caching leaves, files (see
//! [`crate::store`], [`crate::leaf`], `persist.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::KeyAlgorithm;
use crate::error::{Error, Result};
use crate::leaf::Leaf;
use crate::name;

/// How far a new CA's validity starts before its creation, for clocks that lag a little.
const CA_BACKDATE: time::Duration = time::Duration::minutes(5);
/// How far a leaf's validity starts before its issuance (never before its CA's).
const LEAF_BACKDATE: time::Duration = time::Duration::minutes(5);
/// Length of a [`CaId`] in hex digits (64 bits of the key's SHA-256).
const ID_LEN: usize = 16;

/// Identifies a CA generation: the first 16 hex digits of the SHA-256 of its public key
/// (SubjectPublicKeyInfo DER). It names the files on disk, appears in the certificate's CN,
/// and is what cistern records per container to pick the signing CA later.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaId(String);

impl CaId {
    /// Parses an id as recorded elsewhere (e.g. a container label); refuses anything that
    /// is not 16 lowercase hex digits, so it is also safe as a file name.
    pub fn parse(value: &str) -> Result<Self> {
        let ok = value.len() == ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(CaId(value.to_owned()))
        } else {
            Err(Error::InvalidCaId {
                value: value.to_owned(),
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of_public_key(spki_der: &[u8]) -> Self {
        let digest = Sha256::digest(spki_der);
        let mut hex = String::with_capacity(ID_LEN);
        for byte in &digest[..ID_LEN / 2] {
            hex.push_str(&format!("{byte:02x}"));
        }
        CaId(hex)
    }
}

impl fmt::Display for CaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaId({})", self.0)
    }
}

/// The public half of a CA generation: what a container is handed and what may be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    /// The generation's id.
    pub id: CaId,
    /// The certificate in PEM (one `CERTIFICATE` block).
    pub pem: String,
    /// The certificate in DER.
    pub der: CertificateDer<'static>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// One CA generation with its private key. `Debug` shows the id and validity, never the key.
pub struct CertificateAuthority {
    cert: CaCert,
    algorithm: KeyAlgorithm,
    domains: Vec<String>,
    /// rcgen's view of the certificate, used only as the issuer of leaves (subject DN and
    /// key identifier); for a loaded CA it is re-derived from the stored DER.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("id", &self.cert.id)
            .field("algorithm", &self.algorithm)
            .field("domains", &self.domains)
            .field("not_before", &self.cert.not_before)
            .field("not_after", &self.cert.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Truncates to whole seconds in UTC: X.509 times carry no fractions, and a stored CA must
/// compare equal to the one that was generated.
pub(crate) fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t)
}

/// `t + d`, saturating instead of panicking on absurd durations.
pub(crate) fn add(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

impl CertificateAuthority {
    /// Generates a new CA generation valid from `now - 5 min` to `now + lifetime`,
    /// constrained to `domains` (already normalised and non-empty).
    pub(crate) fn generate(
        algorithm: KeyAlgorithm,
        domains: &[String],
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Self> {
        if domains.is_empty() {
            return Err(Error::InvalidConfig {
                reason: "at least one cached domain is required".to_owned(),
            });
        }
        let now = whole_seconds(now);
        let key = KeyPair::generate_for(algorithm.rcgen())
            .map_err(Error::generate("generating the CA key"))?;
        let id = CaId::of_public_key(&key.public_key_der());
        let not_before = now - CA_BACKDATE;
        let not_after = add(now, lifetime);

        let mut params = CertificateParams::default();
        let stamp = not_before
            .format(&Rfc3339)
            .unwrap_or_else(|_| not_before.unix_timestamp().to_string());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("cistern CA {id} {stamp}"));
        dn.push(DnType::OrganizationName, "cistern");
        params.distinguished_name = dn;
        params.not_before = not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: domains
                .iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        let issuer = params
            .self_signed(&key)
            .map_err(Error::generate("self-signing the CA certificate"))?;
        let cert = CaCert {
            id,
            pem: issuer.pem(),
            der: issuer.der().clone(),
            not_before,
            not_after,
        };
        Ok(CertificateAuthority {
            cert,
            algorithm,
            domains: domains.to_vec(),
            issuer,
            key,
        })
    }

    /// Rebuilds a generation from its stored PEM files. Checks that the key matches the
    /// certificate and that the certificate is one of ours (CA with name constraints).
    /// The error is a reason for the log, free of key material.
    pub(crate) fn from_pem(cert_pem: &str, key_pem: &str) -> std::result::Result<Self, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|_| "unreadable private key".to_owned())?;
        let algorithm = KeyAlgorithm::from_rcgen(key.algorithm())
            .ok_or_else(|| "unsupported key algorithm".to_owned())?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err("certificate is not a CA".to_owned());
        }
        let domains: Vec<String> = params
            .name_constraints
            .as_ref()
            .map(|nc| {
                nc.permitted_subtrees
                    .iter()
                    .filter_map(|s| match s {
                        GeneralSubtree::DnsName(d) => Some(d.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if domains.is_empty() {
            return Err("certificate has no DNS name constraints".to_owned());
        }
        let der = pem_to_der(cert_pem).ok_or_else(|| "unreadable certificate PEM".to_owned())?;
        // Let rustls (webpki) compare the certificate's public key with the private key.
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(key.serialized_der().to_vec()),
        ))
        .map_err(|_| "private key refused by rustls".to_owned())?;
        CertifiedKey::new(vec![der.clone()], signing_key)
            .keys_match()
            .map_err(|_| "private key does not match the certificate".to_owned())?;

        let not_before = params.not_before;
        let not_after = params.not_after;
        let id = CaId::of_public_key(&key.public_key_der());
        let issuer = params
            .self_signed(&key)
            .map_err(|e| format!("cannot rebuild issuer: {e}"))?;
        Ok(CertificateAuthority {
            cert: CaCert {
                id,
                pem: cert_pem.to_owned(),
                der,
                not_before,
                not_after,
            },
            algorithm,
            domains,
            issuer,
            key,
        })
    }

    /// The generation's id.
    pub fn id(&self) -> &CaId {
        &self.cert.id
    }

    /// The public certificate.
    pub fn cert(&self) -> &CaCert {
        &self.cert
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.cert.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.cert.not_after
    }

    /// The key algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The permitted DNS subtrees in the certificate's name constraints.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Whether `now` lies in `[not_before, not_after)`.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.cert.not_before <= now && now < self.cert.not_after
    }

    /// Whether `host` (any case, optional trailing dot) is inside the name constraints.
    pub fn permits(&self, host: &str) -> bool {
        name::host(host).is_ok_and(|h| name::permits(&self.domains, &h))
    }

    /// The private key in PKCS#8 PEM, for the key file only.
    pub(crate) fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Fails unless the generation is valid at `now`.
    pub(crate) fn check_valid_at(&self, now: OffsetDateTime) -> Result<()> {
        if self.is_valid_at(now) {
            Ok(())
        } else {
            Err(Error::CaNotValid {
                id: self.cert.id.clone(),
                now,
                not_before: self.cert.not_before,
                not_after: self.cert.not_after,
            })
        }
    }

    /// Issues a fresh leaf for `host` (no caching): ECDSA P-256 key, SAN = `host`,
    /// EKU serverAuth, validity `[max(now - 5 min, CA not_before), min(now + leaf_lifetime,
    /// CA not_after)]`. Refuses hosts outside the name constraints and a CA that is not
    /// valid at `now`.
    pub fn issue(&self, host: &str, leaf_lifetime: Duration, now: OffsetDateTime) -> Result<Leaf> {
        let host = name::host(host)?;
        self.check_valid_at(now)?;
        if !name::permits(&self.domains, &host) {
            return Err(Error::NotPermitted {
                host,
                ca: self.cert.id.clone(),
            });
        }
        let now = whole_seconds(now);
        let not_before = (now - LEAF_BACKDATE).max(self.cert.not_before);
        let not_after = add(now, leaf_lifetime).min(self.cert.not_after);

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(Error::generate("generating a leaf key"))?;
        let mut params = CertificateParams::new(vec![host.clone()])
            .map_err(Error::generate("building leaf parameters"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.clone());
        params.distinguished_name = dn;
        params.not_before = not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(Error::generate("signing a leaf"))?;

        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        let signing_key =
            rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(key_der.clone_key()))
                .map_err(Error::rustls("leaf key"))?;
        let chain = vec![cert.der().clone(), self.cert.der.clone()];
        let certified = Arc::new(CertifiedKey::new(chain, signing_key));
        Ok(Leaf::new(
            self.cert.id.clone(),
            host,
            not_before,
            not_after,
            key_der,
            certified,
        ))
    }
}

/// Decodes the first `CERTIFICATE` block of a PEM text.
fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["example.test".to_owned()]
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2030-01-01 12:00:00.5 UTC)
    }

    fn day() -> Duration {
        Duration::from_secs(86_400)
    }

    #[test]
    fn ca_subject_names_id_and_start() {
        let ca = CertificateAuthority::generate(KeyAlgorithm::EcdsaP256, &domains(), day(), now())
            .unwrap();
        let params = CertificateParams::from_ca_cert_pem(&ca.cert().pem).unwrap();
        let cn = params
            .distinguished_name
            .get(&DnType::CommonName)
            .cloned()
            .unwrap();
        let rcgen::DnValue::Utf8String(cn) = cn else {
            panic!("unexpected CN encoding {cn:?}")
        };
        assert_eq!(cn, format!("cistern CA {} 2030-01-01T11:55:00Z", ca.id()));
        assert_eq!(params.is_ca, IsCa::Ca(BasicConstraints::Constrained(0)));
        assert_eq!(
            params.key_usages,
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
        );
        let nc = params.name_constraints.unwrap();
        assert_eq!(
            nc.permitted_subtrees,
            vec![GeneralSubtree::DnsName("example.test".into())]
        );
        assert_eq!(
            ca.not_after(),
            time::macros::datetime!(2030-01-02 12:00:00 UTC)
        );
    }

    #[test]
    fn every_algorithm_generates_and_reloads() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
        ] {
            let ca = CertificateAuthority::generate(alg, &domains(), day(), now()).unwrap();
            let back = CertificateAuthority::from_pem(&ca.cert().pem, &ca.key_pem()).unwrap();
            assert_eq!(back.algorithm(), alg);
            assert_eq!(back.cert(), ca.cert());
            assert_eq!(back.domains(), ca.domains());
        }
    }

    #[test]
    fn reload_refuses_a_key_of_another_ca() {
        let a = CertificateAuthority::generate(KeyAlgorithm::EcdsaP256, &domains(), day(), now())
            .unwrap();
        let b = CertificateAuthority::generate(KeyAlgorithm::EcdsaP256, &domains(), day(), now())
            .unwrap();
        let err = CertificateAuthority::from_pem(&a.cert().pem, &b.key_pem()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn leaf_validity_stays_inside_the_ca() {
        let ca = CertificateAuthority::generate(KeyAlgorithm::EcdsaP256, &domains(), day(), now())
            .unwrap();
        // Right after creation: starts at the CA's start, not earlier.
        let leaf = ca.issue("deb.example.test", day(), now()).unwrap();
        assert_eq!(leaf.not_before(), ca.not_before());
        assert_eq!(leaf.not_after(), ca.not_after());
        // Later: backdated five minutes, ends with the CA.
        let later = now() + time::Duration::hours(20);
        let leaf = ca.issue("deb.example.test", day(), later).unwrap();
        assert_eq!(
            leaf.not_before(),
            whole_seconds(later) - time::Duration::minutes(5)
        );
        assert_eq!(leaf.not_after(), ca.not_after());
        // A short leaf lifetime bounds it further.
        let leaf = ca
            .issue("deb.example.test", Duration::from_secs(3600), later)
            .unwrap();
        assert_eq!(
            leaf.not_after(),
            whole_seconds(later) + time::Duration::hours(1)
        );
    }

    #[test]
    fn issuing_outside_the_constraints_is_refused() {
        let ca = CertificateAuthority::generate(KeyAlgorithm::EcdsaP256, &domains(), day(), now())
            .unwrap();
        let err = ca.issue("evil.test", day(), now()).unwrap_err();
        assert!(matches!(err, Error::NotPermitted { .. }), "{err}");
        let err = ca.issue("10.0.0.1", day(), now()).unwrap_err();
        assert!(matches!(err, Error::InvalidHost { .. }), "{err}");
    }

    #[test]
    fn an_expired_ca_does_not_issue() {
        let ca = CertificateAuthority::generate(KeyAlgorithm::EcdsaP256, &domains(), day(), now())
            .unwrap();
        let err = ca.issue("example.test", day(), ca.not_after()).unwrap_err();
        assert!(matches!(err, Error::CaNotValid { .. }), "{err}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let ca = CertificateAuthority::generate(KeyAlgorithm::EcdsaP256, &domains(), day(), now())
            .unwrap();
        let debug = format!("{ca:?}");
        let key_pem = ca.key_pem();
        let key_body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&key_body[..24]));
        assert!(!debug.contains("PRIVATE"));
        let leaf = ca.issue("example.test", day(), now()).unwrap();
        let debug = format!("{leaf:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let leaf_key = leaf.private_key();
        let bytes = format!("{:?}", leaf_key.secret_der());
        assert!(!debug.contains(&bytes[..40]));
    }
}
