use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn secret() -> ClusterSecret {
    ClusterSecret::generate()
}

/// Run both sides of one handshake on an in-memory pipe.
async fn handshake(
    client_secret: &ClusterSecret,
    server_secret: &ClusterSecret,
    me: Principal,
    target: NodeId,
    server: NodeId,
) -> (Result<(), AuthError>, Result<Principal, AuthError>) {
    let (mut a, mut b) = duplex(1024);
    // Each side drops its end when it finishes, as a caller closes a failed connection.
    tokio::join!(
        async move { connect(&mut a, client_secret, me, target, SECOND).await },
        async move { accept(&mut b, server_secret, server, SECOND).await }
    )
}

#[tokio::test]
async fn members_with_the_same_secret_learn_who_the_other_is() -> anyhow::Result<()> {
    let shared = secret();
    let (client, server) = handshake(
        &shared,
        &shared,
        Principal::Node(NodeId(2)),
        NodeId(1),
        NodeId(1),
    )
    .await;
    client?;
    ensure!(server? == Principal::Node(NodeId(2)));
    let (client, server) =
        handshake(&shared, &shared, Principal::Operator, NodeId(3), NodeId(3)).await;
    client?;
    ensure!(server? == Principal::Operator);
    Ok(())
}

#[tokio::test]
async fn a_different_secret_is_refused_by_both_sides() -> anyhow::Result<()> {
    let (client, server) = handshake(
        &secret(),
        &secret(),
        Principal::Node(NodeId(2)),
        NodeId(1),
        NodeId(1),
    )
    .await;
    ensure!(
        matches!(client, Err(AuthError::WrongSecret(_))),
        "{client:?}"
    );
    ensure!(
        matches!(server, Err(AuthError::WrongSecret(_))),
        "{server:?}"
    );
    Ok(())
}

/// What a stranger on the network saw of one good handshake: the client's two messages.
async fn record_a_handshake(shared: &ClusterSecret) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (mut client_end, mut tap) = duplex(1024);
    let (mut tap_server, mut server_end) = duplex(1024);
    let shared_for_server = shared.clone();
    let server = tokio::spawn(async move {
        accept(&mut server_end, &shared_for_server, NodeId(1), SECOND).await
    });
    let relay = async {
        let mut hello = vec![0; HELLO_LEN];
        tap.read_exact(&mut hello).await?;
        tap_server.write_all(&hello).await?;
        let mut challenge = vec![0; CHALLENGE_LEN];
        tap_server.read_exact(&mut challenge).await?;
        tap.write_all(&challenge).await?;
        let mut proof = vec![0; TAG];
        tap.read_exact(&mut proof).await?;
        tap_server.write_all(&proof).await?;
        let verdict = tap_server.read_u8().await?;
        tap.write_u8(verdict).await?;
        anyhow::Ok((hello, proof))
    };
    let (client, recorded) = tokio::join!(
        connect(
            &mut client_end,
            shared,
            Principal::Node(NodeId(2)),
            NodeId(1),
            SECOND
        ),
        relay
    );
    client?;
    ensure!(server.await?? == Principal::Node(NodeId(2)));
    recorded
}

/// Send `hello` and `proof` as a client would, without knowing the secret; the server's
/// result.
async fn replay(
    shared: &ClusterSecret,
    hello: &[u8],
    proof: impl FnOnce(&[u8]) -> Vec<u8>,
) -> anyhow::Result<(Result<Principal, AuthError>, u8)> {
    let (mut attacker, mut server_end): (DuplexStream, DuplexStream) = duplex(1024);
    let shared = shared.clone();
    let server =
        tokio::spawn(async move { accept(&mut server_end, &shared, NodeId(1), SECOND).await });
    attacker.write_all(hello).await?;
    let mut challenge = vec![0; CHALLENGE_LEN];
    attacker.read_exact(&mut challenge).await?;
    attacker.write_all(&proof(&challenge)).await?;
    let verdict = attacker.read_u8().await?;
    Ok((server.await?, verdict))
}

/// The server found the proof wrong and said so.
fn refused((result, verdict): (Result<Principal, AuthError>, u8)) -> anyhow::Result<()> {
    ensure!(
        matches!(result, Err(AuthError::WrongSecret(_))),
        "{result:?}"
    );
    ensure!(verdict == REFUSED);
    Ok(())
}

#[tokio::test]
async fn a_recorded_handshake_cannot_be_replayed() -> anyhow::Result<()> {
    let shared = secret();
    let (hello, proof) = record_a_handshake(&shared).await?;
    refused(replay(&shared, &hello, |_| proof.clone()).await?)
}

#[tokio::test]
async fn the_server_proof_cannot_be_reflected_as_a_client_proof() -> anyhow::Result<()> {
    let shared = secret();
    let (hello, _) = record_a_handshake(&shared).await?;
    refused(
        replay(&shared, &hello, |challenge| {
            challenge[CHALLENGE_LEN - TAG..].to_vec()
        })
        .await?,
    )
}

#[tokio::test]
async fn a_claimed_node_id_cannot_be_changed_without_the_secret() -> anyhow::Result<()> {
    let shared = secret();
    let (mut hello, proof) = record_a_handshake(&shared).await?;
    // Claim to be node 3 instead of node 2 and reuse the recorded proof.
    hello[6..14].copy_from_slice(&3u64.to_be_bytes());
    refused(replay(&shared, &hello, |_| proof.clone()).await?)
}

#[tokio::test]
async fn the_wrong_node_and_a_claim_to_be_the_listener_are_refused() -> anyhow::Result<()> {
    let shared = secret();
    let (client, server) = handshake(
        &shared,
        &shared,
        Principal::Node(NodeId(2)),
        NodeId(3),
        NodeId(1),
    )
    .await;
    ensure!(
        matches!(client, Err(AuthError::Misdirected(_))),
        "{client:?}"
    );
    ensure!(server.is_err(), "{server:?}");
    let (client, server) = handshake(
        &shared,
        &shared,
        Principal::Node(NodeId(1)),
        NodeId(1),
        NodeId(1),
    )
    .await;
    ensure!(matches!(client, Err(AuthError::Refused)), "{client:?}");
    ensure!(
        matches!(server, Err(AuthError::Misdirected(_))),
        "{server:?}"
    );
    Ok(())
}

#[tokio::test]
async fn another_protocol_is_refused_at_once() -> anyhow::Result<()> {
    let (mut stranger, mut server_end) = duplex(1024);
    // Five bytes are enough to tell: no wait for a whole hello.
    stranger.write_all(&[0; 5]).await?;
    let result = accept(&mut server_end, &secret(), NodeId(1), SECOND).await;
    ensure!(matches!(result, Err(AuthError::Protocol(_))), "{result:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out() -> anyhow::Result<()> {
    let (_silent, mut server_end) = duplex(1024);
    let result = accept(&mut server_end, &secret(), NodeId(1), HANDSHAKE_TIMEOUT).await;
    ensure!(matches!(result, Err(AuthError::Timeout(_))), "{result:?}");
    Ok(())
}

#[test]
fn a_short_secret_is_refused_and_the_error_says_how_to_make_one() -> anyhow::Result<()> {
    let error = ClusterSecret::from_bytes(b"  hunter2\n")
        .err()
        .context("a 7-byte secret was accepted")?;
    let message = error.to_string();
    ensure!(message.contains("/dev/urandom"), "{message}");
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), secret().to_file_contents())?;
    ClusterSecret::from_file(file.path())?;
    ensure!(format!("{:?}", secret()) == "ClusterSecret(..)");
    Ok(())
}
