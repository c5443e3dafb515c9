//! Operator commands over the Kafka protocol, as `rpk` and Kafka's `kafka-*.sh` offer them:
//! topics ([`topic`]), consumer groups ([`group`]), and producing and consuming records for
//! quick checks ([`records`]). They work against any node: each request goes to the broker
//! that must answer it (a partition's leader, a group's coordinator), found through Metadata
//! and FindCoordinator, over the listener security [`Target`] describes. Output is a table for
//! people or JSON ([`Format`]).

pub mod group;
pub mod records;
pub mod table;
pub mod topic;

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use serde::Serialize;

use crate::kafka::client::PeerClient;
use crate::users::Target;

/// Metadata version asked: topic ids, no cluster-authorized-operations field.
const METADATA_VERSION: i16 = 12;
/// FindCoordinator version asked: one key per request, with its own error.
const FIND_COORDINATOR_VERSION: i16 = 3;
/// ListOffsets version asked: one timestamp per partition, leader epochs.
const LIST_OFFSETS_VERSION: i16 = 7;
/// ListOffsets timestamp of the log start offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp of the high watermark (read_uncommitted).
pub const LATEST: i64 = -1;

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Text,
    /// JSON for programs (records: one object per line).
    Json,
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// No listener answered.
    #[error("no Kafka listener answered at {addrs}: {last}")]
    Unreachable {
        /// The addresses tried.
        addrs: String,
        /// The last failure.
        last: String,
    },
    /// A broker refused what was asked.
    #[error("{what}: {error} (Kafka error {code}){message}")]
    Refused {
        /// What was asked.
        what: String,
        /// Kafka's name of the error.
        error: String,
        /// Its code.
        code: i16,
        /// The broker's message, with a leading separator when there is one.
        message: String,
    },
    /// The command itself is wrong (an unknown topic, a bad argument).
    #[error("{0}")]
    Invalid(String),
}

impl OpsError {
    /// The error for Kafka error `code` (non-zero) in the answer about `what`.
    pub fn refused(what: impl Into<String>, code: i16, message: Option<&StrBytes>) -> Self {
        Self::Refused {
            what: what.into(),
            error: error_name(code),
            code,
            message: message
                .filter(|m| !m.is_empty())
                .map_or_else(String::new, |m| format!(": {m}")),
        }
    }

    /// Whether retrying after refreshing metadata may help (a leader or coordinator moved).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Refused { code, .. } => {
                ResponseError::try_from_code(*code).is_some_and(|e| e.is_retriable())
            }
            Self::Unreachable { .. } => true,
            Self::Invalid(_) => false,
        }
    }
}

/// Kafka's name of error `code` (`NOT_LEADER_OR_FOLLOWER`…), as its clients print it.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => format!("UNKNOWN_ERROR_{code}"),
        Some(known) => screaming_snake(&format!("{known:?}")),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A topic id as Kafka prints it (`Uuid.toString`: URL-safe base64 without padding), as
/// `kafka-topics.sh` and `rpk` show it.
pub fn topic_id(id: &uuid::Uuid) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// `Ok` for error code 0, else the refusal of `what`.
pub fn check(
    what: impl FnOnce() -> String,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), OpsError> {
    if code == 0 {
        Ok(())
    } else {
        Err(OpsError::refused(what(), code, message))
    }
}

/// A command's result: printable as a table or as JSON.
pub trait Report: Serialize {
    /// The table (or lines) people read.
    fn text(&self) -> String;

    /// How many of the things asked for failed (topics not created, groups not deleted):
    /// the command exits with an error after printing when any did.
    fn failures(&self) -> usize {
        0
    }
}

/// `report` in `format`, ending with a newline.
pub fn render(report: &impl Report, format: Format) -> String {
    match format {
        Format::Text => report.text(),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(report)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            json.push('\n');
            json
        }
    }
}

/// Connections to a cluster's brokers, opened on first use and kept for the command's life.
#[derive(Debug)]
pub struct Client {
    target: Target,
    peers: HashMap<String, PeerClient>,
    /// The bootstrap listener that answered last: asked first next time.
    answered: Option<String>,
}

impl Client {
    /// A client of the cluster `target` describes.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            peers: HashMap::new(),
            answered: None,
        }
    }

    /// The deadline of each request.
    pub fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// Send `request` to the broker at `addr`.
    pub async fn call_at<R: Request>(
        &mut self,
        addr: &str,
        request: &R,
        version: i16,
    ) -> Result<R::Response, OpsError> {
        let authenticated = self.target.credentials.is_some();
        let peer = self
            .peers
            .entry(addr.to_owned())
            .or_insert_with(|| self.target.client(addr, "switchyard-cli"));
        peer.call(request, version)
            .await
            .map_err(|e| OpsError::Unreachable {
                addrs: addr.to_owned(),
                last: e.explained(authenticated),
            })
    }

    /// Send `request` to the first bootstrap listener that answers.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, OpsError> {
        let mut order: Vec<String> = self.answered.iter().cloned().collect();
        order.extend(
            self.target
                .bootstrap
                .iter()
                .filter(|a| Some(*a) != self.answered.as_ref())
                .cloned(),
        );
        let mut last = String::from("no address given");
        for addr in order {
            match self.call_at(&addr, request, version).await {
                Ok(response) => {
                    self.answered = Some(addr);
                    return Ok(response);
                }
                Err(OpsError::Unreachable { last: why, .. }) => last = format!("{addr}: {why}"),
                Err(other) => return Err(other),
            }
        }
        Err(OpsError::Unreachable {
            addrs: self.target.bootstrap.join(","),
            last,
        })
    }

    /// Metadata of `topics` (every topic for `None`), never creating one.
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> Result<Metadata, OpsError> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from(n.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response = self.call(&request, METADATA_VERSION).await?;
        Ok(Metadata(response))
    }

    /// The address of `group`'s coordinator.
    pub async fn coordinator(&mut self, group: &str) -> Result<String, OpsError> {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from(group.to_owned()))
            .with_key_type(0);
        let response = self.call(&request, FIND_COORDINATOR_VERSION).await?;
        check(
            || format!("finding the coordinator of group {group}"),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        Ok(format!("{}:{}", response.host, response.port))
    }
}

/// The offsets of `partitions` at `timestamp` ([`EARLIEST`], [`LATEST`], or milliseconds
/// since the epoch), each asked of its leader.
pub async fn list_offsets(
    client: &mut Client,
    metadata: &Metadata,
    partitions: &[(String, i32)],
    timestamp: i64,
) -> Result<HashMap<(String, i32), i64>, OpsError> {
    let mut by_leader: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    for (topic, partition) in partitions {
        let leader = metadata
            .leaders(topic)?
            .into_iter()
            .find(|(p, _)| p == partition)
            .and_then(|(_, leader)| leader)
            .ok_or_else(|| OpsError::Refused {
                what: format!("{topic}/{partition}"),
                error: error_name(5),
                code: 5,
                message: ": no leader".into(),
            })?;
        by_leader
            .entry(leader)
            .or_default()
            .push((topic.clone(), *partition));
    }
    let mut out = HashMap::new();
    for (leader, wanted) in by_leader {
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (topic, partition) in &wanted {
            let entry = ListOffsetsPartition::default()
                .with_partition_index(*partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(timestamp);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from(topic.clone())))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(topics);
        let response = client
            .call_at(&leader, &request, LIST_OFFSETS_VERSION)
            .await?;
        for topic in response.topics {
            for p in topic.partitions {
                check(
                    || format!("the offsets of {}/{}", topic.name.0, p.partition_index),
                    p.error_code,
                    None,
                )?;
                out.insert((topic.name.0.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(out)
}

/// A Metadata answer, with lookups.
#[derive(Debug, Clone)]
pub struct Metadata(pub MetadataResponse);

impl Metadata {
    /// `HOST:PORT` of broker `id`.
    pub fn broker_addr(&self, id: i32) -> Option<String> {
        self.0
            .brokers
            .iter()
            .find(|b| b.node_id.0 == id)
            .map(|b| format!("{}:{}", b.host, b.port))
    }

    /// Every broker's `HOST:PORT`.
    pub fn broker_addrs(&self) -> Vec<String> {
        self.0
            .brokers
            .iter()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect()
    }

    /// The topic named `name`: an error if the cluster has no such topic.
    pub fn topic(
        &self,
        name: &str,
    ) -> Result<&kafka_protocol::messages::metadata_response::MetadataResponseTopic, OpsError> {
        let topic = self
            .0
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .ok_or_else(|| OpsError::Invalid(format!("no topic {name}")))?;
        check(|| format!("topic {name}"), topic.error_code, None)?;
        Ok(topic)
    }

    /// Partition → the address of its leader, for topic `name`.
    pub fn leaders(&self, name: &str) -> Result<Vec<(i32, Option<String>)>, OpsError> {
        let topic = self.topic(name)?;
        let mut out: Vec<(i32, Option<String>)> = topic
            .partitions
            .iter()
            .map(|p| (p.partition_index, self.broker_addr(p.leader_id.0)))
            .collect();
        out.sort_unstable_by_key(|(p, _)| *p);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_named_as_kafka_names_them() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(-12345), "UNKNOWN_ERROR_-12345");
    }

    #[test]
    fn topic_ids_print_as_kafka_prints_them() {
        let id = uuid::Uuid::from_u128(0xa897_cabe_57ff_4c5e_bfc2_14db_576e_47ac);
        assert_eq!(topic_id(&id), "qJfKvlf_TF6_whTbV25HrA");
    }
}
