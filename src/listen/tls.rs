//! TLS on TCP listeners: the server certificate and key from PEM files,
//! optionally a CA that client certificates must chain to (mutual TLS), and
//! what a verified client certificate says about its holder.
//!
//! Everything that can be wrong with the files (unreadable, no PEM in them, a
//! key that does not belong to the certificate, a CA file without a usable
//! CA) is found when the configuration is loaded, so `cistern check-config`
//! reports it and `cistern serve` never starts with a listener it cannot
//! serve. The handshake itself runs per connection in the accept loop.
//!
//! Renewed files are read again on SIGHUP ([`Reloadable`]): new handshakes
//! use them, connections already open keep theirs, and files that are wrong
//! leave the listener serving the ones it had. Not here: revocation lists.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate, followed by any intermediates.
    pub cert: PathBuf,
    /// The server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With it, every client must present a certificate issued by one of the
    /// CAs in this file.
    pub client_ca: Option<PathBuf>,
}

/// Which file is wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TlsFileError {
    /// The key under `tls:` the problem belongs to: `cert`, `key` or
    /// `client_ca`.
    pub field: &'static str,
    pub message: String,
}

fn error(field: &'static str, message: String) -> TlsFileError {
    TlsFileError { field, message }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| error(field, format!("cannot read {}: {e}", path.display())))
}

fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(field, format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(
            field,
            format!(
                "{} holds no PEM certificate (BEGIN CERTIFICATE)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// Reads the files and builds the listener's rustls configuration (ring,
/// TLS 1.2 and 1.3). Without `client_ca` clients need no certificate; with
/// it, a handshake without a certificate issued by one of its CAs fails.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsFileError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("cert", &files.cert)?;
    let key_pem = read("key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        error(
            "key",
            format!(
                "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                files.key.display()
            ),
        )
    })?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("cert", format!("TLS setup: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client_ca", ca)? {
                roots.add(cert).map_err(|e| {
                    error(
                        "client_ca",
                        format!("{}: not a usable CA certificate: {e}", ca.display()),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| error("client_ca", format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => error(
            "key",
            format!(
                "the key in {} does not belong to the certificate in {}",
                files.key.display(),
                files.cert.display()
            ),
        ),
        other => error(
            "key",
            format!(
                "{} and {}: {other}",
                files.cert.display(),
                files.key.display()
            ),
        ),
    })?;
    Ok(Arc::new(config))
}

/// A TLS listener's configuration, replaced when its files are read again.
#[derive(Debug)]
pub struct Reloadable {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Reloadable {
    /// Starts with `config`, read from `files` when the configuration was
    /// loaded.
    pub fn new(files: TlsFiles, config: Arc<ServerConfig>) -> Self {
        Reloadable {
            files,
            current: RwLock::new(config),
        }
    }

    /// The configuration for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again; on any error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }
}

/// The names in a verified client certificate that can name a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientCert {
    /// The subject's first Common Name, as written, when it is a string.
    pub common_name: Option<String>,
    /// The DNS names of the subject alternative name extension, in order,
    /// lower-cased (DNS names are case-insensitive, RFC 4343).
    pub dns_names: Vec<String>,
}

impl ClientCert {
    /// Reads the end-entity certificate rustls verified. `None` when it
    /// cannot be parsed (rustls parsed it already, so in practice never).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        Some(dns.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(ClientCert {
            common_name,
            dns_names,
        })
    }

    /// The name shown in logs: the CN, else the first DNS name.
    pub fn display_name(&self) -> Option<&str> {
        self.common_name
            .as_deref()
            .or(self.dns_names.first().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Pki {
            Pki {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    fn self_signed(names: &[&str]) -> rcgen::CertifiedKey {
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
    }

    #[test]
    fn a_matching_certificate_and_key_make_a_config() {
        let pki = Pki::new();
        let server = self_signed(&["localhost"]);
        let ca = self_signed(&["ca.example"]);
        let files = TlsFiles {
            cert: pki.write("cert.pem", &server.cert.pem()),
            key: pki.write("key.pem", &server.key_pair.serialize_pem()),
            client_ca: Some(pki.write("ca.pem", &ca.cert.pem())),
        };
        server_config(&files).unwrap();
    }

    #[test]
    fn bad_files_name_the_field_and_the_problem() {
        let pki = Pki::new();
        let server = self_signed(&["localhost"]);
        let other = self_signed(&["other.example"]);
        let cert = pki.write("cert.pem", &server.cert.pem());
        let key = pki.write("key.pem", &server.key_pair.serialize_pem());
        let files = |cert: &Path, key: &Path, ca: Option<&Path>| TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: ca.map(Into::into),
        };

        let missing = pki.dir.path().join("missing.pem");
        let err = server_config(&files(&missing, &key, None)).unwrap_err();
        assert_eq!(err.field, "cert");
        assert!(err.message.starts_with("cannot read "), "{err}");

        let wrong_key = pki.write("other-key.pem", &other.key_pair.serialize_pem());
        let err = server_config(&files(&cert, &wrong_key, None)).unwrap_err();
        assert_eq!(err.field, "key");
        assert!(
            err.message.contains("does not belong to the certificate"),
            "{err}"
        );

        // The certificate where the key belongs, and the other way round.
        let err = server_config(&files(&key, &key, None)).unwrap_err();
        assert_eq!(err.field, "cert");
        assert!(err.message.contains("holds no PEM certificate"), "{err}");
        let err = server_config(&files(&cert, &cert, None)).unwrap_err();
        assert_eq!(err.field, "key");
        assert!(err.message.contains("no usable PEM private key"), "{err}");

        let err = server_config(&files(&cert, &key, Some(&key))).unwrap_err();
        assert_eq!(err.field, "client_ca");
    }

    #[test]
    fn client_names_come_from_the_subject_and_the_dns_sans() {
        let mut params = rcgen::CertificateParams::new(vec![
            "Runner-1.Example".to_string(),
            "runner-1.internal.example".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ci-runner");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let client = ClientCert::from_der(cert.der()).unwrap();
        assert_eq!(client.common_name.as_deref(), Some("ci-runner"));
        assert_eq!(
            client.dns_names,
            ["runner-1.example", "runner-1.internal.example"]
        );
        assert_eq!(client.display_name(), Some("ci-runner"));

        // rcgen's simple certificates have a fixed CN; build one without.
        let mut params = rcgen::CertificateParams::new(vec!["only-san.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        let client = ClientCert::from_der(cert.der()).unwrap();
        assert_eq!(client.common_name, None);
        assert_eq!(client.display_name(), Some("only-san.example"));
    }
}
