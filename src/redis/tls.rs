//! TLS to Redis, for `rediss://` URLs (managed Redis services often require it): rustls, with
//! Redis's certificate checked against the system's certificate authorities (which
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` replace, as they do for OpenSSL) or against those in a
//! PEM file the program names ([`RedisConfig::tls_ca_file`](super::RedisConfig::tls_ca_file)).
//! The setup is made once per node and every connection, reconnections included, shares it.
//! There is no way to skip the check: a Redis with a certificate of its own making is trusted
//! by naming its authority.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

/// A client TLS setup; cheap to clone.
#[derive(Clone)]
pub struct Tls(TlsConnector);

impl Tls {
    /// Trusts the authorities in `ca_file` (PEM), or the system's when there is none.
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, String> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "a system certificate authority could not be read");
                }
                roots.add_parsable_certificates(found.certs);
            }
        }
        if roots.is_empty() {
            return Err(match ca_file {
                Some(path) => format!("{}: no certificate in the file", path.display()),
                None => "no system certificate authority found (set SSL_CERT_FILE)".to_owned(),
            });
        }
        // The provider is named rather than taken from the process's default, which a program
        // linking another rustls provider as well would leave undecided.
        let config =
            ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Tls(TlsConnector::from(Arc::new(config))))
    }

    /// The TLS handshake over `stream`, checking that the certificate names `host` (a DNS name
    /// or an IP address).
    pub async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.0.connect(name, stream).await
    }
}
