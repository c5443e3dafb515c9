use switchyard_backend_api::MetadataCommand;
use switchyard_backend_api::security::ScramUpsertion;

use super::*;

fn state_with(user: &str, mechanism: ScramMechanism, password: &str, salt: &[u8]) -> MetadataState {
    let salted = salted_password(mechanism, password.as_bytes(), salt, 4096);
    let mut state = MetadataState::new();
    let command = MetadataCommand::AlterScramCredentials {
        upsertions: vec![ScramUpsertion {
            user: user.into(),
            mechanism,
            credential: credential(mechanism, &salted, salt, 4096),
        }],
        deletions: vec![],
    };
    if let Err(e) = state.apply(&command) {
        panic!("{e}");
    }
    state
}

/// The example exchange of RFC 7677 §3, byte for byte.
#[test]
fn rfc_7677_example_exchange() -> Result<(), Failure> {
    let salt = BASE64
        .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
        .unwrap_or_else(|e| panic!("{e}"));
    let state = state_with("user", ScramMechanism::Sha256, "pencil", &salt);
    let (server, first) = ScramServer::start(
        ScramMechanism::Sha256,
        &state,
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    )?;
    assert_eq!(
        String::from_utf8_lossy(&first),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let (user, last) = server.finish(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
          p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    )?;
    assert_eq!(user, "user");
    assert_eq!(
        String::from_utf8_lossy(&last),
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    Ok(())
}

#[test]
fn a_wrong_proof_an_unknown_user_and_a_replayed_nonce_fail() -> Result<(), Failure> {
    let salt = b"0123456789abcdef";
    let state = state_with("alice", ScramMechanism::Sha512, "right", salt);
    let unknown = ScramServer::start(ScramMechanism::Sha512, &state, b"n,,n=mallory,r=abc", "xyz");
    assert!(unknown.is_err());
    // Alice's credential for the other mechanism does not exist either.
    assert!(ScramServer::start(ScramMechanism::Sha256, &state, b"n,,n=alice,r=abc", "x").is_err());

    let (server, _) =
        ScramServer::start(ScramMechanism::Sha512, &state, b"n,,n=alice,r=abc", "xyz")?;
    let wrong = BASE64.encode([0u8; 64]);
    assert!(
        server
            .finish(format!("c=biws,r=abcxyz,p={wrong}").as_bytes())
            .is_err()
    );

    let (server, _) =
        ScramServer::start(ScramMechanism::Sha512, &state, b"n,,n=alice,r=abc", "xyz")?;
    assert!(
        server
            .finish(format!("c=biws,r=abcOTHER,p={wrong}").as_bytes())
            .is_err()
    );
    Ok(())
}

#[test]
fn plain_passwords_are_checked_against_the_scram_credential() {
    let state = state_with("alice", ScramMechanism::Sha256, "right", b"salt-salt-salt");
    let stored = state.scram_credential("alice", ScramMechanism::Sha256);
    let Some(stored) = stored else {
        panic!("no credential stored");
    };
    assert!(password_matches(ScramMechanism::Sha256, stored, b"right"));
    assert!(!password_matches(ScramMechanism::Sha256, stored, b"wrong"));
}

#[test]
fn user_names_unescape_as_rfc_5802_says() {
    assert_eq!(unescape_user("a=2Cb=3Dc").ok().as_deref(), Some("a,b=c"));
    assert!(unescape_user("a=b").is_err());
}
