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
