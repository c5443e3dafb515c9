//! TLS for the Kafka listener (`SSL`, `SASL_SSL`) and for this broker's connections to the
//! others' listeners: rustls with the ring provider, certificates and keys from PEM files.
//!
//! The listener presents `ssl_certificate_location` (a chain, leaf first) with
//! `ssl_key_location`; client certificates are checked against `ssl_truststore_location`
//! when `ssl_client_auth` is `requested` or `required` (Kafka's `ssl.client.auth`), and a
//! verified one names the connection's principal on an `SSL` listener: `User:` and the
//! certificate subject as Kafka writes it (RFC 2253: `CN=alice,OU=…,O=…`, [`subject_of`]). Connecting to
//! another broker, this broker verifies it against the same trust store and presents its own
//! certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use switchyard_backend_api::tls::{certificates, private_key, provider, roots};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// Asked for; a client without one is served as `User:ANONYMOUS`.
    Requested,
    /// A verified client certificate is required.
    Required,
}

impl ClientAuth {
    /// The setting named `name` (`none`, `requested`, `required`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "requested" => Some(Self::Requested),
            "required" => Some(Self::Required),
            _ => None,
        }
    }
}

/// Where the listener's certificate, key and trust store are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates: what client certificates and other brokers are checked against.
    pub truststore: PathBuf,
    /// Whether clients must present certificates.
    pub client_auth: ClientAuth,
}

/// Ready-made TLS configurations, both directions.
#[derive(Clone)]
pub struct Tls {
    /// Accepts client connections.
    pub acceptor: TlsAcceptor,
    /// Connects to other brokers.
    pub client: TlsClient,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// The client side: connects to listeners it verifies against a trust store.
#[derive(Clone)]
pub struct TlsClient(pub TlsConnector);

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient(..)")
    }
}

impl TlsClient {
    /// A client that trusts the CA certificates in `truststore` and presents `identity`
    /// (certificate chain and key files), if given: an operator's command against an `SSL` or
    /// `SASL_SSL` listener.
    pub fn trusting(truststore: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, String> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots(truststore)?);
        let config = match identity {
            Some((certificate, key)) => builder
                .with_client_auth_cert(certificates(certificate)?, private_key(key)?)
                .map_err(|e| {
                    format!(
                        "client certificate {} with key {}: {e}",
                        certificate.display(),
                        key.display()
                    )
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self(TlsConnector::from(Arc::new(config))))
    }
}

impl Tls {
    /// Load the files and build both configurations; the error names the file and why.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let provider = provider();
        let chain = certificates(&files.certificate)?;
        let key = private_key(&files.key)?;
        let roots = roots(&files.truststore)?;
        let verifier = match files.client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::Requested => WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&roots),
                Arc::clone(&provider),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client certificate verifier: {e}"))?,
            ClientAuth::Required => WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("client certificate verifier: {e}"))?,
        };
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                format!(
                    "certificate {} with key {}: {e}",
                    files.certificate.display(),
                    files.key.display()
                )
            })?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            client: TlsClient(TlsConnector::from(Arc::new(client))),
        })
    }
}

/// The subject of `certificate`, RFC 2253 style (last RDN first, `,` between attributes), as
/// Kafka's default principal builder names an SSL client (`User:` and this).
pub fn subject_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let mut parts = Vec::new();
    for rdn in parsed
        .subject()
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        for attribute in rdn.iter() {
            let name = x509_parser::objects::oid2abbrev(
                attribute.attr_type(),
                x509_parser::objects::oid_registry(),
            )
            .map_or_else(|_| attribute.attr_type().to_id_string(), str::to_owned);
            let value = attribute.as_str().ok()?;
            parts.push(format!("{name}={value}"));
        }
    }
    Some(parts.join(","))
}

#[cfg(test)]
mod tests;
