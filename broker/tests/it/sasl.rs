//! A SASL_PLAINTEXT listener in-process: what a connection may do before and after it
//! authenticates, and which principals may speak for a broker.

use anyhow::ensure;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::broker_heartbeat_request::BrokerHeartbeatRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{DescribeClusterRequest, FetchRequest, TopicName};
use switchyard::kafka::client::{CallError, PeerClient};
use switchyard::kafka::sasl::PeerCredentials;
use switchyard::serve::Node;
use switchyard_backend_api::{ClusterSecret, NodeId, Principal};

use crate::support::{DEADLINE, s, start_secured};

/// A single memory-backed node whose listener is SASL_PLAINTEXT, and its secret.
async fn sasl_node(dir: &tempfile::TempDir) -> anyhow::Result<(Node, ClusterSecret)> {
    start_secured(dir, &[("security_protocol", "SASL_PLAINTEXT".into())]).await
}

fn client(node: &Node, me: Option<(&ClusterSecret, Principal)>) -> PeerClient {
    PeerClient::new(node.kafka_addr().to_string(), "test".into(), DEADLINE).with_credentials(
        me.map(|(secret, me)| PeerCredentials {
            secret: secret.clone(),
            me,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_sasl_before_authentication() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, secret) = sasl_node(&dir).await?;
    let describe = DescribeClusterRequest::default();
    let refused = client(&node, None).call(&describe, 0).await;
    ensure!(
        matches!(refused, Err(CallError::Io(_))),
        "the listener answered an unauthenticated request: {refused:?}"
    );
    let wrong = ClusterSecret::generate();
    let refused = client(&node, Some((&wrong, Principal::Operator)))
        .call(&describe, 0)
        .await;
    ensure!(
        matches!(&refused, Err(CallError::Authentication(m)) if m.contains("cluster secrets differ")),
        "{refused:?}"
    );
    let answered = client(&node, Some((&secret, Principal::Operator)))
        .call(&describe, 0)
        .await?;
    ensure!(answered.error_code == 0, "{answered:?}");
    node.shutdown().await?;
    Ok(())
}

/// Replica fetches and heartbeats speak for a broker: on a SASL listener only that broker,
/// proven by the cluster secret, may send them — not the operator, not another broker. (That
/// the broker itself is served is what the three-node SASL client tests show: their RF=3
/// writes complete only through replica fetches.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_broker_speaks_for_itself() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, secret) = sasl_node(&dir).await?;
    let heartbeat = BrokerHeartbeatRequest::default()
        .with_broker_id(1.into())
        .with_broker_epoch(1);
    let fetch = FetchRequest::default()
        .with_replica_id(1.into())
        .with_max_wait_ms(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(vec![FetchPartition::default().with_partition(0)]),
        ]);
    let denied = ResponseError::ClusterAuthorizationFailed.code();
    for who in [Principal::Operator, Principal::Node(NodeId(2))] {
        let mut peer = client(&node, Some((&secret, who)));
        let answer = peer.call(&heartbeat, 1).await?;
        ensure!(answer.error_code == denied, "{who}: {answer:?}");
        let answer = peer.call(&fetch, 12).await?;
        let codes: Vec<i16> = answer
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        ensure!(codes == [denied], "{who}: {codes:?}");
    }
    node.shutdown().await?;
    Ok(())
}
