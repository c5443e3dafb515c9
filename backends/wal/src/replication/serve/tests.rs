use anyhow::{Context as _, bail, ensure};
use switchyard_backend_api::auth::Principal;
use switchyard_backend_api::{
    ClusterCredentials, ClusterSecret, MembershipChange, MetadataBackend, NodeId,
};
use switchyard_compat_tests::fixtures::{converges, create_topic_ok, register_all};
use switchyard_compat_tests::{RegistryHarness, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::membership::request_membership_change;
use crate::replication::client::request_promotion;

#[tokio::test]
async fn binding_a_taken_address_gives_up_at_its_deadline() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let result = bind_retrying(&addr, Duration::from_millis(200)).await;
    ensure!(
        result.is_err(),
        "bound an address another socket listens on"
    );
    drop(taken);
    ensure!(bind_retrying(&addr, Duration::from_secs(5)).await.is_ok());
    Ok(())
}

const IO: Duration = Duration::from_secs(5);

fn cluster_addr(cluster: &TestCluster<'_>, index: usize) -> anyhow::Result<String> {
    cluster
        .spec(index)?
        .identity
        .cluster_addr
        .clone()
        .context("no cluster address")
}

/// The node's epoch, primary and voters.
fn shape(node: &Arc<dyn MetadataBackend>) -> (u64, Option<NodeId>, usize) {
    let view = node.cluster().borrow().clone();
    (view.epoch, view.leader, view.members.len())
}

/// Every exchange a stranger on the network used against a wal cluster before its ports
/// were authenticated — a promotion, removing a voter, and posing as a member at a higher
/// epoch, with or without a secret of its own — is refused, and the cluster is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_without_the_secret_changes_nothing() -> anyhow::Result<()> {
    let harness = RegistryHarness::new("wal");
    let cluster = TestCluster::start(&harness, 3).await?;
    let primary = cluster.leader().await?;
    register_all(&primary, &[1]).await?;
    create_topic_ok(&primary, "kept", &[&[1]]).await?;
    let before = shape(&primary);
    let stranger = ClusterCredentials::from(ClusterSecret::generate());
    let follower = cluster_addr(&cluster, 1)?;

    let promoted = request_promotion(&follower, "switchyard", &stranger, NodeId(2), IO).await;
    ensure!(
        matches!(&promoted, Err(MetadataError::Network(reason)) if reason.contains("cluster secrets differ")),
        "{promoted:?}"
    );
    let nodes: Vec<(u64, String)> = (0..3)
        .map(|i| Ok((i as u64 + 1, cluster_addr(&cluster, i)?)))
        .collect::<anyhow::Result<_>>()?;
    let change = MembershipChange::RemoveNode { id: NodeId(3) };
    let removed = request_membership_change(&nodes, "switchyard", &stranger, change, IO).await;
    ensure!(removed.is_err(), "{removed:?}");

    // The pre-authentication exchange: a hello posing as member 1 at a higher epoch, then a
    // promotion, straight onto the port. The node answers nothing and closes.
    let mut raw = TcpStream::connect(&follower).await?;
    let mut bytes = Vec::new();
    for message in [
        Message::Hello {
            cluster_id: "switchyard".into(),
            from: NodeId(1),
            to: NodeId(2),
            epoch: before.0 + 10,
            purpose: Purpose::Replicate,
        },
        Message::Promote,
    ] {
        send(&mut bytes, &message, IO).await?;
    }
    raw.write_all(&bytes).await?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(IO, raw.read_to_end(&mut answer)).await;
    ensure!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the node answered an unauthenticated hello: {read:?} {answer:?}"
    );

    ensure!(
        shape(&primary) == before,
        "the cluster changed: {before:?} → {:?}",
        shape(&primary)
    );
    create_topic_ok(&primary, "after", &[&[1]]).await?;
    for index in 1..3 {
        converges(cluster.node(index)?, &primary.local()).await?;
        ensure!(shape(cluster.node(index)?).0 == before.0);
    }
    Ok(())
}

/// An authenticated connection must say hello as the member it proved to be, and an
/// operator may only ask (promote, change members), never replicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_peer_speaks_only_as_itself() -> anyhow::Result<()> {
    let harness = RegistryHarness::new("wal");
    let cluster = TestCluster::start(&harness, 3).await?;
    cluster.leader().await?;
    let credentials = cluster.spec(1)?.credentials.clone();
    let follower = cluster_addr(&cluster, 1)?;
    for (principal, from, purpose) in [
        (Principal::Node(NodeId(3)), NodeId(1), Purpose::Replicate),
        (Principal::Operator, NodeId(0), Purpose::Replicate),
        (Principal::Operator, NodeId(0), Purpose::Members),
    ] {
        let tcp = TcpStream::connect(&follower).await?;
        let mut stream = credentials
            .connect(tcp, &follower, principal, NodeId(2), IO)
            .await?;
        let hello = Message::Hello {
            cluster_id: "switchyard".into(),
            from,
            to: NodeId(2),
            epoch: 99,
            purpose,
        };
        send(&mut stream, &hello, IO).await?;
        match recv(&mut stream, 1 << 20, IO).await {
            Ok(Message::Refused { reason }) => {
                ensure!(reason.contains(&principal.to_string()), "{reason}");
            }
            other => bail!("{principal} opening {purpose:?} as {from}: {other:?}"),
        }
    }
    Ok(())
}
