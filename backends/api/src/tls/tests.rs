use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::auth::{AuthError, ClusterCredentials, ClusterSecret, Principal};
use crate::ids::NodeId;

const DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn server_names_come_from_the_address_host() {
    assert!(matches!(
        server_name("127.0.0.1:9093"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("[::1]:9093"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("broker-1.example:9093"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(server_name("bad host:1").is_err());
}

/// A CA in `dir`; `leaf` issues certificates it signs.
struct Ca {
    dir: PathBuf,
    name: &'static str,
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &'static str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, params.self_signed(&key)?.pem())?;
        Ok(Self {
            dir: dir.to_owned(),
            name,
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// Credentials holding `secret` and a certificate for `sans`.
    fn credentials(
        &self,
        cn: &str,
        sans: &[&str],
        secret: &ClusterSecret,
    ) -> anyhow::Result<ClusterCredentials> {
        let key = KeyPair::generate()?;
        let params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        let cert_path = self.dir.join(format!("{}-{cn}.pem", self.name));
        let key_path = self.dir.join(format!("{}-{cn}.key", self.name));
        std::fs::write(&cert_path, certificate.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(ClusterCredentials {
            secret: secret.clone(),
            tls: Some(ClusterTls::load(&cert_path, &key_path, &self.pem)?),
        })
    }
}

/// Node 2 (`client`) dials node 1 (`server`) over loopback; both outcomes, and over a
/// connection both accepted, one byte each way.
async fn dial(
    client: &ClusterCredentials,
    server: &ClusterCredentials,
) -> anyhow::Result<(Result<(), AuthError>, Result<Principal, AuthError>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let dialled = tokio::net::TcpStream::connect(&addr).await?;
    let (accepted, _) = listener.accept().await?;
    let (connected, served) = tokio::join!(
        client.connect(
            dialled,
            &addr,
            Principal::Node(NodeId(2)),
            NodeId(1),
            DEADLINE
        ),
        server.accept(accepted, NodeId(1), DEADLINE)
    );
    match (connected, served) {
        (Ok(mut a), Ok((mut b, principal))) => {
            a.write_all(b"x").await?;
            ensure!(b.read_u8().await? == b'x');
            b.write_all(b"y").await?;
            ensure!(a.read_u8().await? == b'y');
            ensure!(matches!(a, ClusterStream::Tls(_)) == client.tls.is_some());
            Ok((Ok(()), Ok(principal)))
        }
        (connected, served) => Ok((connected.map(drop), served.map(|(_, p)| p))),
    }
}

#[tokio::test]
async fn nodes_with_certificates_from_the_cluster_ca_talk_over_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "cluster")?;
    let secret = ClusterSecret::generate();
    let one = ca.credentials("node-1", &["127.0.0.1"], &secret)?;
    let two = ca.credentials("node-2", &["127.0.0.1"], &secret)?;
    let (connected, served) = dial(&two, &one).await?;
    connected.context("connect")?;
    ensure!(served? == Principal::Node(NodeId(2)));
    Ok(())
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_both_ways() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "cluster")?;
    let foreign = Ca::new(dir.path(), "foreign")?;
    let secret = ClusterSecret::generate();
    let member = ca.credentials("node-1", &["127.0.0.1"], &secret)?;
    let stranger = foreign.credentials("node-2", &["127.0.0.1"], &secret)?;
    for (client, server) in [(&stranger, &member), (&member, &stranger)] {
        let (connected, served) = dial(client, server).await?;
        ensure!(
            matches!(served, Err(AuthError::Tls(_))),
            "served: {served:?}"
        );
        ensure!(connected.is_err(), "connected: {connected:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "cluster")?;
    let secret = ClusterSecret::generate();
    let elsewhere = ca.credentials("node-1", &["node-1.example"], &secret)?;
    let two = ca.credentials("node-2", &["127.0.0.1"], &secret)?;
    let (connected, _) = dial(&two, &elsewhere).await?;
    ensure!(
        matches!(&connected, Err(AuthError::Tls(e)) if e.to_string().contains("certificate")),
        "{connected:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_plaintext_peer_of_a_tls_node_is_refused_and_the_secret_still_counts()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "cluster")?;
    let secret = ClusterSecret::generate();
    let one = ca.credentials("node-1", &["127.0.0.1"], &secret)?;
    let plain = ClusterCredentials::from(secret.clone());
    let (connected, served) = dial(&plain, &one).await?;
    ensure!(matches!(served, Err(AuthError::Tls(_))), "{served:?}");
    ensure!(
        matches!(&connected, Err(e @ AuthError::HungUp) if e.to_string().contains("cluster TLS")),
        "{connected:?}"
    );

    // TLS from the right CA with the wrong secret: the handshake inside refuses it.
    let wrong = ca.credentials("node-2", &["127.0.0.1"], &ClusterSecret::generate())?;
    let (connected, served) = dial(&wrong, &one).await?;
    ensure!(
        matches!(connected, Err(AuthError::WrongSecret(_))),
        "{connected:?}"
    );
    ensure!(served.is_err(), "{served:?}");
    Ok(())
}

#[test]
fn incomplete_or_unreadable_files_name_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "")?;
    for path in [&missing, &empty] {
        let error = ClusterTls::load(path, path, path)
            .err()
            .context("loaded a certificate from nothing")?;
        ensure!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
    Ok(())
}
