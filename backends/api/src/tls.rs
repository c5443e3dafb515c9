//! TLS with rustls (ring provider, PEM files) for every listener: what the broker's Kafka
//! listener and the cluster ports share, and the cluster ports' own mutual TLS
//! ([`ClusterTls`]).
//!
//! Cluster TLS is mutual: every node presents its certificate (chain, leaf first) with its
//! key, and checks the other end's against the cluster's CA. A node dialling a peer verifies
//! the peer's certificate names the host it dialled (the peer's cluster address); a node
//! accepting a connection requires a certificate the CA signed. The cluster handshake
//! ([`crate::auth`]) then runs inside TLS, so a node still proves the cluster secret and
//! which member it is.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::MetadataError;

/// The crypto provider: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls marks its ring provider deprecated because ring has no post-quantum key
    // exchange; the provider that has one, aws-lc-rs, is a C/cmake build that would
    // dominate this workspace's build time. Classical ECDHE it is, and SECURITY.md says so.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in the PEM file `path` (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in the PEM file `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("reading the private key {}: {e}", path.display()))
}

/// The CA certificates in the PEM file `path`, as a trust store.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path)? {
        roots
            .add(ca)
            .map_err(|e| format!("a CA certificate in {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The name to verify a server at `addr` (`HOST:PORT`) by: its host, a DNS name or an IP.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))
}

/// Mutual TLS for cluster connections: this node's certificate and key, the cluster's CA.
#[derive(Clone)]
pub struct ClusterTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls(..)")
    }
}

impl ClusterTls {
    /// Load the PEM files (`cluster_tls_certificate`, `cluster_tls_key`, `cluster_tls_ca`);
    /// the error names the file and what is wrong with it.
    pub fn load(certificate: &Path, key: &Path, ca: &Path) -> Result<Self, MetadataError> {
        Self::build(certificate, key, ca)
            .map_err(|e| MetadataError::Config(format!("cluster TLS: {e}")))
    }

    fn build(certificate: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let provider = provider();
        let chain = certificates(certificate)?;
        let key_der = private_key(key)?;
        let roots = roots(ca)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
        let mismatch = |e: rustls::Error| {
            format!(
                "certificate {} with key {}: {e}",
                certificate.display(),
                key.display()
            )
        };
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(mismatch)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(mismatch)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// TLS over `tcp`, connected to the node at `addr`, whose certificate must name its host.
    pub(crate) async fn connect(&self, tcp: TcpStream, addr: &str) -> io::Result<ClusterStream> {
        let name = server_name(addr).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = self.connector.connect(name, tcp).await?;
        Ok(ClusterStream::Tls(Box::new(stream.into())))
    }

    /// TLS over `tcp`, accepted from a node whose certificate the CA signed.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<ClusterStream> {
        let stream = self.acceptor.accept(tcp).await?;
        Ok(ClusterStream::Tls(Box::new(stream.into())))
    }
}

/// A connection between nodes: plain TCP, or TLS over it when cluster TLS is on.
#[derive(Debug)]
pub enum ClusterStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (either end).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// The reading half of a [`ClusterStream`].
pub type ClusterReader = ReadHalf<ClusterStream>;

/// The writing half of a [`ClusterStream`].
pub type ClusterWriter = WriteHalf<ClusterStream>;

impl ClusterStream {
    /// Split into halves that can be used from two tasks; `ReadHalf::unsplit` joins them.
    pub fn split(self) -> (ClusterReader, ClusterWriter) {
        tokio::io::split(self)
    }
}

impl From<TcpStream> for ClusterStream {
    fn from(tcp: TcpStream) -> Self {
        Self::Plain(tcp)
    }
}

impl AsyncRead for ClusterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClusterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
