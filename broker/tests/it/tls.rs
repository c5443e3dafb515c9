//! TLS listeners in-process (`SSL` with required client certificates, `SASL_SSL`), with
//! certificates made here by rcgen.

use std::path::{Path, PathBuf};

use anyhow::ensure;
use kafka_protocol::messages::DescribeClusterRequest;
use switchyard::kafka::client::PeerClient;
use switchyard::kafka::sasl::PeerCredentials;
use switchyard::kafka::tls::{ClientAuth, Tls, TlsClient, TlsFiles};
use switchyard::serve::Node;
use switchyard_backend_api::{ClusterSecret, Principal};
use switchyard_compat_tests::certs::TestCa;

use crate::support::{DEADLINE, start_secured};

/// A CA, a broker certificate for 127.0.0.1, and a client certificate for `CN=alice`, as PEM
/// files in a directory.
pub(crate) struct Certificates {
    pub(crate) ca: PathBuf,
    pub(crate) broker: (PathBuf, PathBuf),
    pub(crate) alice: (PathBuf, PathBuf),
}

pub(crate) fn certificates(dir: &Path) -> anyhow::Result<Certificates> {
    let ca = TestCa::new(dir, "test")?;
    Ok(Certificates {
        broker: ca.issue("broker", &["127.0.0.1", "localhost"])?,
        alice: ca.issue("alice", &[])?,
        ca: ca.ca.clone(),
    })
}

/// A memory-backed node whose listener speaks `protocol` with the broker certificate.
async fn tls_node(
    dir: &tempfile::TempDir,
    certs: &Certificates,
    protocol: &str,
    client_auth: &str,
) -> anyhow::Result<(Node, ClusterSecret)> {
    let path = |p: &Path| p.display().to_string();
    let settings = [
        ("security_protocol", protocol.to_owned()),
        ("ssl_certificate_location", path(&certs.broker.0)),
        ("ssl_key_location", path(&certs.broker.1)),
        ("ssl_truststore_location", path(&certs.ca)),
        ("ssl_client_auth", client_auth.to_owned()),
    ];
    start_secured(dir, &settings).await
}

fn client(node: &Node, tls: Option<TlsClient>) -> PeerClient {
    PeerClient::new(node.kafka_addr().to_string(), "test".into(), DEADLINE).with_tls(tls)
}

/// On an `SSL` listener that requires client certificates, a client without one never gets
/// past the handshake, a plaintext client gets nothing, and one with a certificate the CA
/// signed is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssl_listener_requires_a_signed_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = certificates(dir.path())?;
    let (node, _) = tls_node(&dir, &certs, "SSL", "required").await?;
    let describe = DescribeClusterRequest::default();

    let plaintext = client(&node, None).call(&describe, 0).await;
    ensure!(
        plaintext.is_err(),
        "a plaintext client was served: {plaintext:?}"
    );
    let anonymous = TlsClient::trusting(&certs.ca, None).map_err(anyhow::Error::msg)?;
    let refused = client(&node, Some(anonymous)).call(&describe, 0).await;
    ensure!(
        refused.is_err(),
        "a client without a certificate was served: {refused:?}"
    );

    let alice = Tls::load(&TlsFiles {
        certificate: certs.alice.0.clone(),
        key: certs.alice.1.clone(),
        truststore: certs.ca.clone(),
        client_auth: ClientAuth::None,
    })
    .map_err(anyhow::Error::msg)?;
    let answered = client(&node, Some(alice.client)).call(&describe, 0).await?;
    ensure!(answered.error_code == 0, "{answered:?}");
    // What `switchyard user|acl --ssl-certificate-location` presents.
    let operator = TlsClient::trusting(&certs.ca, Some((&certs.alice.0, &certs.alice.1)))
        .map_err(anyhow::Error::msg)?;
    let answered = client(&node, Some(operator)).call(&describe, 0).await?;
    ensure!(answered.error_code == 0, "{answered:?}");
    node.shutdown().await?;
    Ok(())
}

/// `SASL_SSL`: TLS first, then SASL; the operator's command authenticates over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_ssl_listener_authenticates_over_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = certificates(dir.path())?;
    let (node, secret) = tls_node(&dir, &certs, "SASL_SSL", "none").await?;
    let describe = DescribeClusterRequest::default();
    let trusting = TlsClient::trusting(&certs.ca, None).map_err(anyhow::Error::msg)?;
    let unauthenticated = client(&node, Some(trusting.clone()))
        .call(&describe, 0)
        .await;
    ensure!(unauthenticated.is_err(), "{unauthenticated:?}");
    let operator = client(&node, Some(trusting))
        .with_credentials(Some(PeerCredentials {
            secret,
            me: Principal::Operator,
        }))
        .call(&describe, 0)
        .await?;
    ensure!(operator.error_code == 0, "{operator:?}");
    node.shutdown().await?;
    Ok(())
}
