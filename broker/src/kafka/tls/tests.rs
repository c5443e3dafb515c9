use rcgen::{CertificateParams, DnType, KeyPair};

use super::*;

#[test]
fn a_certificate_subject_reads_as_kafka_writes_it() -> Result<(), rcgen::Error> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    // Encoded O first, then OU, then CN: RFC 2253 lists them the other way round.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "Payments");
    params.distinguished_name.push(DnType::CommonName, "alice");
    let certificate = params.self_signed(&KeyPair::generate()?)?;
    assert_eq!(
        subject_of(certificate.der()).as_deref(),
        Some("CN=alice,OU=Payments,O=Example")
    );
    Ok(())
}

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

#[test]
fn missing_and_malformed_files_are_named_in_the_error() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate")?;
    let files = TlsFiles {
        certificate: junk.clone(),
        key: dir.path().join("missing.key"),
        truststore: junk.clone(),
        client_auth: ClientAuth::None,
    };
    let error = Tls::load(&files).err().unwrap_or_default();
    assert!(error.contains("junk.pem"), "{error}");
    Ok(())
}
