//! Certificates for tests, made here by rcgen: a CA and leaf certificates it signs, written
//! as PEM files (no network, nothing from outside the test).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use switchyard_backend_api::tls::ClusterTls;
use switchyard_backend_api::{ClusterCredentials, ClusterSecret};

/// A certificate authority whose files live in a directory of the caller's.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub ca: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestCa({})", self.ca.display())
    }
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("switchyard test CA {name}"));
        let certificate = params.self_signed(&key)?;
        let ca = write(dir, &format!("{name}-ca.pem"), &certificate.pem())?;
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            ca,
        })
    }

    /// A leaf certificate for the subject `CN=<cn>` naming `sans` (DNS names or IPs), and its
    /// key: their PEM files.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let certificate = params.signed_by(&key, &self.issuer)?;
        let stem = format!("{}-{cn}", self.name);
        Ok((
            write(&self.dir, &format!("{stem}.pem"), &certificate.pem())?,
            write(&self.dir, &format!("{stem}.key"), &key.serialize_pem())?,
        ))
    }

    /// Cluster credentials for a node on the loopback interface: `secret`, and cluster TLS
    /// with a certificate this CA signed for `127.0.0.1` and `localhost`.
    pub fn cluster_credentials(
        &self,
        cn: &str,
        secret: &ClusterSecret,
    ) -> anyhow::Result<ClusterCredentials> {
        let (certificate, key) = self.issue(cn, &["127.0.0.1", "localhost"])?;
        Ok(ClusterCredentials {
            secret: secret.clone(),
            tls: Some(ClusterTls::load(&certificate, &key, &self.ca)?),
        })
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem)?;
    Ok(path)
}
