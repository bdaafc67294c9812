//! TLS to Redis, for `rediss://` URLs (managed Redis services often require it): rustls, with
//! Redis's certificate checked against the system's certificate authorities (which
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` replace, as they do for OpenSSL) or against those in a
//! PEM file the program names ([`RedisConfig::tls_ca_file`](super::RedisConfig::tls_ca_file)).
//! The setup is made once per node and every connection, reconnections included, shares it.
//! There is no way to skip the check: a Redis with a certificate of its own making is trusted
//! by naming its authority. A Redis that asks clients for a certificate (its default,
//! `tls-auth-clients yes`) is shown the one of
//! [`RedisConfig::tls_client_cert`](super::RedisConfig::tls_client_cert).

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

/// A client TLS setup; cheap to clone.
#[derive(Clone)]
pub struct Tls(TlsConnector);

impl Tls {
    /// Trusts the authorities in `ca_file` (PEM), or the system's when there is none; shows
    /// the certificate chain and key of `client` (PEM files) to a Redis that asks for one.
    pub fn new(ca_file: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<Tls, String> {
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
                .with_root_certificates(roots);
        let config = match client {
            None => config.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = CertificateDer::pem_file_iter(cert_file)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("{}: {e}", cert_file.display()))?;
                if chain.is_empty() {
                    return Err(format!(
                        "{}: no certificate in the file",
                        cert_file.display()
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|e| format!("{}: {e}", key_file.display()))?;
                config
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{}: {e}", key_file.display()))?
            }
        };
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
