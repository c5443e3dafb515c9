//! Kafka request metrics: count and latency per API, and the error codes of every response
//! (each failed partition, topic, group or resource counts once, as Kafka's `ErrorsPerSec`).

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ResponseKind};

use super::{KAFKA_REQUEST_DURATION, KAFKA_REQUEST_ERRORS, KAFKA_REQUESTS};

/// A request of `key` at `version` was answered (or dropped, for acks=0) after `elapsed`.
pub fn request_done(key: ApiKey, version: i16, elapsed: Duration) {
    let api = api_name(key);
    metrics::counter!(KAFKA_REQUESTS, "api" => api.clone(), "version" => version.to_string())
        .increment(1);
    metrics::histogram!(KAFKA_REQUEST_DURATION, "api" => api).record(elapsed);
}

/// Count the error codes in `response`, an answer to a `key` request.
pub fn count_errors(key: ApiKey, response: &ResponseKind) {
    let mut codes = Vec::new();
    error_codes(response, &mut codes);
    for code in codes.into_iter().filter(|c| *c != 0) {
        let error = ResponseError::try_from_code(code)
            .map_or_else(|| format!("code_{code}"), |e| format!("{e:?}"));
        metrics::counter!(KAFKA_REQUEST_ERRORS, "api" => api_name(key), "error" => error)
            .increment(1);
    }
}

/// Kafka's name of an API (`Produce`, `Fetch`, …): the enum's variant names are Kafka's.
fn api_name(key: ApiKey) -> String {
    format!("{key:?}")
}

/// Every error code `response` carries, at any level.
#[allow(
    clippy::too_many_lines,
    reason = "one arm per API, each naming where its codes are"
)]
fn error_codes(response: &ResponseKind, out: &mut Vec<i16>) {
    match response {
        ResponseKind::Produce(r) => out.extend(
            r.responses
                .iter()
                .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)),
        ),
        ResponseKind::Fetch(r) => {
            out.push(r.error_code);
            out.extend(
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
        }
        ResponseKind::ListOffsets(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::Metadata(r) => {
            for t in &r.topics {
                out.push(t.error_code);
                out.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        ResponseKind::OffsetCommit(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::OffsetFetch(r) => {
            out.push(r.error_code);
            out.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
            for g in &r.groups {
                out.push(g.error_code);
                out.extend(
                    g.topics
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
                );
            }
        }
        ResponseKind::FindCoordinator(r) => {
            out.push(r.error_code);
            out.extend(r.coordinators.iter().map(|c| c.error_code));
        }
        ResponseKind::JoinGroup(r) => out.push(r.error_code),
        ResponseKind::Heartbeat(r) => out.push(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            out.push(r.error_code);
            out.extend(r.members.iter().map(|m| m.error_code));
        }
        ResponseKind::SyncGroup(r) => out.push(r.error_code),
        ResponseKind::DescribeGroups(r) => out.extend(r.groups.iter().map(|g| g.error_code)),
        ResponseKind::ListGroups(r) => out.push(r.error_code),
        ResponseKind::SaslHandshake(r) => out.push(r.error_code),
        ResponseKind::ApiVersions(r) => out.push(r.error_code),
        ResponseKind::CreateTopics(r) => out.extend(r.topics.iter().map(|t| t.error_code)),
        ResponseKind::DeleteTopics(r) => out.extend(r.responses.iter().map(|t| t.error_code)),
        ResponseKind::DeleteRecords(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::InitProducerId(r) => out.push(r.error_code),
        ResponseKind::OffsetForLeaderEpoch(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::AddPartitionsToTxn(r) => {
            out.push(r.error_code);
            out.extend(r.results_by_topic_v3_and_below.iter().flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            }));
        }
        ResponseKind::AddOffsetsToTxn(r) => out.push(r.error_code),
        ResponseKind::EndTxn(r) => out.push(r.error_code),
        ResponseKind::WriteTxnMarkers(r) => out.extend(r.markers.iter().flat_map(|m| {
            m.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        })),
        ResponseKind::TxnOffsetCommit(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::DescribeAcls(r) => out.push(r.error_code),
        ResponseKind::CreateAcls(r) => out.extend(r.results.iter().map(|a| a.error_code)),
        ResponseKind::DeleteAcls(r) => out.extend(r.filter_results.iter().map(|f| f.error_code)),
        ResponseKind::DescribeConfigs(r) => out.extend(r.results.iter().map(|c| c.error_code)),
        ResponseKind::AlterConfigs(r) => out.extend(r.responses.iter().map(|c| c.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => {
            out.extend(r.responses.iter().map(|c| c.error_code));
        }
        ResponseKind::DescribeLogDirs(r) => {
            out.push(r.error_code);
            out.extend(r.results.iter().map(|d| d.error_code));
        }
        ResponseKind::SaslAuthenticate(r) => out.push(r.error_code),
        ResponseKind::CreatePartitions(r) => out.extend(r.results.iter().map(|t| t.error_code)),
        ResponseKind::DeleteGroups(r) => out.extend(r.results.iter().map(|g| g.error_code)),
        ResponseKind::ElectLeaders(r) => {
            out.push(r.error_code);
            out.extend(
                r.replica_election_results
                    .iter()
                    .flat_map(|t| t.partition_result.iter().map(|p| p.error_code)),
            );
        }
        ResponseKind::OffsetDelete(r) => {
            out.push(r.error_code);
            out.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
        }
        ResponseKind::DescribeUserScramCredentials(r) => {
            out.push(r.error_code);
            out.extend(r.results.iter().map(|u| u.error_code));
        }
        ResponseKind::AlterUserScramCredentials(r) => {
            out.extend(r.results.iter().map(|u| u.error_code));
        }
        ResponseKind::DescribeQuorum(r) => out.push(r.error_code),
        ResponseKind::DescribeCluster(r) => out.push(r.error_code),
        ResponseKind::DescribeProducers(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::DescribeTransactions(r) => {
            out.extend(r.transaction_states.iter().map(|t| t.error_code));
        }
        ResponseKind::ListTransactions(r) => out.push(r.error_code),
        ResponseKind::BrokerHeartbeat(r) => out.push(r.error_code),
        ResponseKind::DescribeTopicPartitions(r) => {
            for t in &r.topics {
                out.push(t.error_code);
                out.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        // Not served by this broker (dispatch never answers them).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ProduceResponse, TopicName};

    use super::*;

    #[test]
    fn every_failed_partition_counts_once() {
        let partition = |code| PartitionProduceResponse::default().with_error_code(code);
        let response = ResponseKind::Produce(ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default()
                .with_name(TopicName::from(kafka_protocol::protocol::StrBytes::from_static_str(
                    "t",
                )))
                .with_partition_responses(vec![partition(0), partition(6), partition(6)]),
        ]));
        let mut codes = Vec::new();
        error_codes(&response, &mut codes);
        assert_eq!(codes, [0, 6, 6]);
        assert_eq!(api_name(ApiKey::Produce), "Produce");
        assert_eq!(
            api_name(ApiKey::OffsetForLeaderEpoch),
            "OffsetForLeaderEpoch"
        );
    }
}
