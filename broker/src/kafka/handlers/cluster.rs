//! DescribeCluster, and DescribeQuorum: what this node knows of the metadata backend's cluster.
//!
//! DescribeQuorum answers, as Kafka's does, for the metadata log `__cluster_metadata`
//! partition 0: the metadata leader and its epoch, voters and observers (learners). Unlike
//! Kafka, every node answers, from its own view, and reports only its own progress: its
//! `high_watermark` and its own replica's `log_end_offset` are the index it has applied
//! (other replicas' offsets are -1, unknown here). `switchyard cluster status` asks every
//! node and computes each one's lag behind the leader.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId as KBrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, TopicName,
};
use switchyard_backend_api::{BrokerId, NodeId};

use crate::broker::Broker;
use crate::kafka::METADATA_TOPIC;
use crate::kafka::dispatch::Client;
use crate::kafka::handlers::kstr;
use crate::kafka::handlers::metadata::controller_id;

pub(crate) fn describe(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let view = broker.metadata();
    let with_fenced = version >= 2 && request.include_fenced_brokers;
    let brokers = view
        .state
        .brokers()
        .filter(|b| with_fenced || !b.fenced)
        .filter_map(|b| {
            let (host, port) = client.endpoint(b)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(KBrokerId(b.id.0))
                    .with_host(kstr(host.to_owned()))
                    .with_port(i32::from(port))
                    .with_rack(b.rack.clone().map(kstr))
                    .with_is_fenced(b.fenced),
            )
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(kstr(
            view.state
                .cluster_id()
                .map_or_else(String::new, |c| c.0.clone()),
        ))
        .with_controller_id(KBrokerId(controller_id(broker)))
        .with_brokers(brokers)
}

fn kafka_id(node: NodeId) -> KBrokerId {
    KBrokerId(BrokerId::try_from(node).map_or(-1, |b| b.0))
}

pub(crate) fn describe_quorum(
    broker: &Broker,
    _version: i16,
    _request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let cluster = broker.backend().cluster().borrow().clone();
    let applied = i64::try_from(broker.metadata().applied_index).unwrap_or(i64::MAX);
    let replica = |node: NodeId| {
        ReplicaState::default()
            .with_replica_id(kafka_id(node))
            .with_log_end_offset(if node == cluster.node { applied } else { -1 })
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    let mut members = cluster.members.clone();
    if members.is_empty() {
        // A single node without peers: it is the one voter.
        members.push(switchyard_backend_api::ClusterMember {
            id: cluster.node,
            addr: None,
            voter: true,
        });
    }
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(cluster.leader.map_or(KBrokerId(-1), kafka_id))
        .with_leader_epoch(i32::try_from(cluster.epoch).unwrap_or(i32::MAX))
        .with_high_watermark(applied)
        .with_current_voters(
            members
                .iter()
                .filter(|m| m.voter)
                .map(|m| replica(m.id))
                .collect(),
        )
        .with_observers(
            members
                .iter()
                .filter(|m| !m.voter)
                .map(|m| replica(m.id))
                .collect(),
        );
    DescribeQuorumResponse::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(kstr(METADATA_TOPIC)))
            .with_partitions(vec![partition]),
    ])
}
