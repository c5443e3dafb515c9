//! ElectLeaders: preferred or unclean leader elections an operator asks for (see
//! [`crate::leaders`]). Any broker answers: each election is planned against a linearizable
//! read of the metadata (the local view where the backend has none; the partition epoch
//! fences a stale plan) and proposed through the backend. Without a partition list every
//! partition is tried and only those that needed an election are reported, as Kafka does.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::kafka::handlers::kstr;
use crate::leaders::{Election, elect};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub(crate) async fn handle(
    broker: &Broker,
    version: i16,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    // Version 0 has no election type: it is always a preferred election.
    let election = match (version, request.election_type) {
        (0, _) | (_, PREFERRED) => Election::Preferred,
        (_, UNCLEAN) => Election::Unclean,
        _ => {
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code());
        }
    };
    let everything = request.topic_partitions.is_none();
    let partitions: Vec<(String, i32)> = match request.topic_partitions {
        Some(topics) => topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.as_str().to_owned();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect(),
        None => {
            let view = broker.metadata();
            view.state
                .topics()
                .flat_map(|t| {
                    (0..t.partitions.len())
                        .map(|p| (t.name.clone(), i32::try_from(p).unwrap_or(i32::MAX)))
                })
                .collect()
        }
    };
    let results = elect(broker, &partitions, election).await;
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, partition), result) in partitions.into_iter().zip(results) {
        let (code, message) = match result {
            Ok(()) => (0, None),
            Err((ResponseError::ElectionNotNeeded, _)) if everything => continue,
            Err((error, message)) => (error.code(), Some(kstr(message))),
        };
        let entry = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partition_result.push(entry),
            None => topics.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![entry]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(topics)
}
