//! Cluster ports: a stranger without the cluster secret changes nothing, whether it asks as
//! an operator would or writes straight onto a port; and cluster TLS — every connection
//! between nodes runs inside mutual TLS when the nodes are given certificates, the cluster
//! works through it, and a node whose certificate the cluster's CA did not sign takes no part
//! until it is given one that is.

use anyhow::{Context, ensure};
use figment::Figment;
use switchyard_backend_api::{
    AdminContext, ClusterCredentials, ClusterSecret, MembershipChange, NodeId, find_backend,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::certs::TestCa;
use crate::fixtures::{converges, create_topic_ok, register_all};
use crate::harness::{BackendHarness, DEADLINE, TestCluster};

/// A stranger with a secret of its own asks every node to promote one and to remove node 3,
/// through the backend's own administration entry points, then writes a forged handshake
/// onto every cluster port: all refused, the membership and the state unchanged, writes go
/// on.
pub async fn a_stranger_without_the_secret_changes_nothing(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    if h.max_nodes() < 3 {
        return Ok(());
    }
    let cluster = TestCluster::start(h, 3).await?;
    let leader = cluster.leader().await?;
    register_all(&leader, &[1]).await?;
    create_topic_ok(&leader, "kept", &[&[1]]).await?;
    let members = |view: &switchyard_backend_api::ClusterView| {
        view.members.iter().map(|m| m.id).collect::<Vec<_>>()
    };
    let before = members(&leader.cluster().borrow());
    let peers = cluster.spec(0)?.identity.peers.clone();
    let stranger = AdminContext {
        config: Figment::new(),
        peers: peers.clone(),
        credentials: ClusterSecret::generate().into(),
    };
    let admin = find_backend(h.backend())?.admin;
    if let Some(promote) = admin.promote {
        for id in peers.keys() {
            let promoted = promote(stranger.clone(), *id).await;
            ensure!(
                promoted.is_err(),
                "a stranger promoted node {id}: {promoted:?}"
            );
        }
    }
    if let Some(change) = admin.change_membership {
        let removed = change(
            stranger.clone(),
            MembershipChange::RemoveNode { id: NodeId(3) },
        )
        .await;
        ensure!(removed.is_err(), "a stranger removed node 3: {removed:?}");
    }
    // A forged handshake (a hello from node 1 with a made-up proof) is answered with at most
    // a challenge, then the connection is closed.
    for addr in peers.values() {
        let mut raw = TcpStream::connect(addr).await?;
        let mut forged = b"SYCA\x01\x01".to_vec();
        forged.extend_from_slice(&1u64.to_be_bytes());
        forged.extend_from_slice(&2u64.to_be_bytes());
        forged.extend_from_slice(&[7; 32 + 32 + 1024]);
        let _ = raw.write_all(&forged).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut answer))
            .await
            .with_context(|| format!("{addr} kept a forged connection open"))?;
        ensure!(
            read.is_err() || answer.len() < 200,
            "{addr} answered a forged handshake with {} bytes",
            answer.len()
        );
    }
    let leader = cluster.leader().await?;
    ensure!(
        members(&leader.cluster().borrow()) == before,
        "the membership changed"
    );
    ensure!(leader.local().state.topic("kept").is_some());
    create_topic_ok(&leader, "after", &[&[1]]).await?;
    for index in 0..3 {
        converges(cluster.node(index)?, &leader.local()).await?;
    }
    Ok(())
}

/// A node started with another secret never joins: the others form the quorum and write
/// without it, and it receives nothing. Restarted with the cluster's secret, it catches up.
pub async fn a_node_with_another_secret_cannot_join(h: &dyn BackendHarness) -> anyhow::Result<()> {
    if h.max_nodes() < 3 {
        return Ok(());
    }
    let cluster = TestCluster::layout(h, 3)?;
    let shared = cluster.spec(2)?.credentials.clone();
    let other = ClusterSecret::generate().into();
    kept_out_until_fixed(cluster, "another secret", other, shared).await
}

/// Node 3 opens with `outsider`, the others with their own specs: they form the quorum and
/// write without it, and it receives nothing ("with {why}" in the failure). Restarted with
/// `member`, it catches up — `outsider` was all that kept it out.
async fn kept_out_until_fixed(
    mut cluster: TestCluster<'_>,
    why: &str,
    outsider: ClusterCredentials,
    member: ClusterCredentials,
) -> anyhow::Result<()> {
    cluster.spec_mut(2)?.credentials = outsider;
    for index in 0..3 {
        cluster.open(index).await?;
    }
    let leader = cluster.leader().await?;
    ensure!(
        leader.cluster().borrow().node.0 != 3,
        "the node with {why} leads"
    );
    register_all(&leader, &[1]).await?;
    create_topic_ok(&leader, "without-3", &[&[1]]).await?;
    for index in 0..2 {
        converges(cluster.node(index)?, &leader.local()).await?;
    }
    let node_3 = cluster.node(2)?.local();
    ensure!(
        node_3.state.topic("without-3").is_none(),
        "node 3 received the log at index {} with {why}",
        node_3.applied_index
    );
    cluster.spec_mut(2)?.credentials = member;
    let joined = cluster.restart(2).await?;
    let leader = cluster.leader().await?;
    create_topic_ok(&leader, "with-3", &[&[1]]).await?;
    converges(&joined, &leader.local()).await?;
    Ok(())
}

/// Each node gets its own certificate from one CA: the cluster elects, replicates and
/// converges over TLS (a single-node backend opens with the credentials and serves).
pub async fn cluster_tls_carries_the_cluster(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let size = if h.max_nodes() >= 3 { 3 } else { 1 };
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "cluster")?;
    let secret = ClusterSecret::generate();
    let mut cluster = TestCluster::layout(h, size)?;
    for index in 0..size {
        cluster.spec_mut(index)?.credentials =
            ca.cluster_credentials(&format!("node-{}", index + 1), &secret)?;
    }
    for index in 0..size {
        cluster.open(index).await?;
    }
    let leader = cluster.leader().await?;
    register_all(&leader, &[1]).await?;
    create_topic_ok(&leader, "over-tls", &[&[1]]).await?;
    for index in 0..size {
        converges(cluster.node(index)?, &leader.local()).await?;
    }
    Ok(())
}

/// Node 3 holds the right secret but a certificate from another CA: the other two form the
/// quorum and write without it, and it receives nothing. Given a certificate from the
/// cluster's CA, it catches up — the certificate was all that kept it out.
pub async fn a_node_whose_certificate_the_ca_did_not_sign_cannot_join(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    if h.max_nodes() < 3 {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "cluster")?;
    let foreign = TestCa::new(dir.path(), "foreign")?;
    let secret = ClusterSecret::generate();
    let mut cluster = TestCluster::layout(h, 3)?;
    for index in 0..2 {
        cluster.spec_mut(index)?.credentials =
            ca.cluster_credentials(&format!("node-{}", index + 1), &secret)?;
    }
    // Its own CA in its trust store: it trusts itself, and the others trust neither it nor
    // it them.
    let outsider = foreign.cluster_credentials("node-3", &secret)?;
    let member = ca.cluster_credentials("node-3", &secret)?;
    kept_out_until_fixed(
        cluster,
        "a certificate the cluster's CA did not sign",
        outsider,
        member,
    )
    .await
}
