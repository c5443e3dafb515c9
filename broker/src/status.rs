//! `switchyard cluster status`: the cluster as its nodes report it over the Kafka protocol.
//!
//! One reachable listener answers DescribeCluster (every broker, fenced ones included); then
//! every broker is asked DescribeQuorum, which each node answers from its own view of the
//! metadata backend (leader, epoch, voters, learners, the index it has applied) and
//! DescribeConfigs for its read-only `metadata.backend`. A node's lag is the leader's applied
//! index minus its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::METADATA_TOPIC;
use crate::kafka::client::{CallError, PeerClient};
use crate::users::Target;

/// DescribeConfigs version asked (Kafka 2.6+).
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
/// DescribeConfigs' resource type of a broker.
const BROKER_RESOURCE: i8 = 4;

/// Why no status could be put together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// No bootstrap listener answered DescribeCluster.
    #[error("no Kafka listener answered at {addrs}: {last}")]
    Unreachable {
        /// The addresses tried.
        addrs: String,
        /// The last failure.
        last: String,
    },
}

/// One broker, as the metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerStatus {
    /// Its advertised `HOST:PORT`.
    pub addr: String,
    /// Whether it is fenced.
    pub fenced: bool,
}

/// One node's own answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The metadata leader it knows, if any.
    pub leader: Option<i32>,
    /// Its leadership epoch.
    pub epoch: i32,
    /// The index it has applied.
    pub applied: i64,
    /// Voters it knows.
    pub voters: BTreeSet<i32>,
    /// Learners it knows.
    pub learners: BTreeSet<i32>,
    /// The metadata backend it runs (its read-only broker config `metadata.backend`).
    pub backend: String,
}

/// What `cluster status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The cluster id, if set.
    pub cluster_id: String,
    /// Every registered broker, by id.
    pub brokers: BTreeMap<i32, BrokerStatus>,
    /// Each broker's node answer, or why it gave none.
    pub reports: BTreeMap<i32, Result<NodeReport, String>>,
}

impl ClusterStatus {
    /// The leader and epoch the answers agree on: the one reported with the highest epoch.
    pub fn leader(&self) -> Option<(i32, i32)> {
        self.reports
            .values()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|r| r.leader.map(|l| (r.epoch, l)))
            .max()
            .map(|(epoch, leader)| (leader, epoch))
    }

    /// Every node id any answer or the broker list names.
    fn nodes(&self) -> BTreeSet<i32> {
        let mut nodes: BTreeSet<i32> = self.brokers.keys().copied().collect();
        for report in self.reports.values().filter_map(|r| r.as_ref().ok()) {
            nodes.extend(&report.voters);
            nodes.extend(&report.learners);
        }
        nodes
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leader = self.leader();
        let backends: BTreeSet<&str> = self
            .reports
            .values()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.backend.as_str())
            .collect();
        let backend = match backends.len() {
            0 => "unknown".to_owned(),
            1 => backends.into_iter().collect(),
            _ => format!(
                "mixed ({})",
                self.reports
                    .iter()
                    .filter_map(|(node, r)| Some(format!("{node}={}", r.as_ref().ok()?.backend)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        match leader {
            Some((node, epoch)) => writeln!(
                f,
                "cluster {}, metadata backend {backend}, metadata leader node {node} (epoch {epoch})",
                self.cluster_id
            )?,
            None => writeln!(
                f,
                "cluster {}, metadata backend {backend}, no metadata leader known",
                self.cluster_id
            )?,
        }
        let leader_applied = leader
            .and_then(|(node, _)| self.reports.get(&node))
            .and_then(|r| r.as_ref().ok())
            .map(|r| r.applied);
        let voters: BTreeSet<i32> = self
            .reports
            .values()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|r| r.voters.iter().copied())
            .collect();
        writeln!(
            f,
            "{:<6}{:<13}{:<7}{:<10}{:<7}{:<8}ADDRESS",
            "NODE", "ROLE", "VOTER", "APPLIED", "LAG", "BROKER"
        )?;
        for node in self.nodes() {
            let report = self.reports.get(&node);
            let (role, applied, lag) = match report {
                Some(Ok(r)) => {
                    let role = if r.leader == Some(node) {
                        "leader"
                    } else if r.learners.contains(&node) {
                        "learner"
                    } else {
                        "follower"
                    };
                    let lag = leader_applied
                        .map_or_else(|| "-".to_owned(), |l| (l - r.applied).max(0).to_string());
                    (role, r.applied.to_string(), lag)
                }
                Some(Err(_)) => ("unreachable", "-".to_owned(), "-".to_owned()),
                None => ("-", "-".to_owned(), "-".to_owned()),
            };
            let voter = if voters.contains(&node) { "yes" } else { "no" };
            let (broker, addr) = match self.brokers.get(&node) {
                Some(b) if b.fenced => ("fenced", b.addr.as_str()),
                Some(b) => ("live", b.addr.as_str()),
                None => ("-", "-"),
            };
            writeln!(
                f,
                "{node:<6}{role:<13}{voter:<7}{applied:<10}{lag:<7}{broker:<8}{addr}"
            )?;
        }
        let fenced: Vec<String> = self
            .brokers
            .iter()
            .filter(|(_, b)| b.fenced)
            .map(|(id, _)| id.to_string())
            .collect();
        if fenced.is_empty() {
            writeln!(f, "fenced brokers: none")
        } else {
            writeln!(f, "fenced brokers: {}", fenced.join(", "))
        }
    }
}

/// Ask the target's listeners until one describes the cluster, then every broker for its
/// view; on SASL listeners authenticated as the operator, over TLS where the target says.
pub async fn cluster_status(target: &Target) -> Result<ClusterStatus, StatusError> {
    let bootstrap = &target.bootstrap;
    let credentials = target.credentials.as_ref();
    let client = |addr: &str| target.client(addr, "switchyard-cluster-status");
    let mut last = String::from("no address given");
    let mut described: Option<DescribeClusterResponse> = None;
    for addr in bootstrap {
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(true);
        match client(addr).call(&request, 2).await {
            Ok(response) if response.error_code == 0 => {
                described = Some(response);
                break;
            }
            Ok(response) => last = format!("{addr}: error code {}", response.error_code),
            Err(e) => last = format!("{addr}: {}", e.explained(credentials.is_some())),
        }
    }
    let Some(described) = described else {
        return Err(StatusError::Unreachable {
            addrs: bootstrap.join(","),
            last,
        });
    };
    let brokers: BTreeMap<i32, BrokerStatus> = described
        .brokers
        .iter()
        .map(|b| {
            (
                b.broker_id.0,
                BrokerStatus {
                    addr: format!("{}:{}", b.host.as_str(), b.port),
                    fenced: b.is_fenced,
                },
            )
        })
        .collect();
    let mut reports = BTreeMap::new();
    for (id, broker) in &brokers {
        reports.insert(*id, node_report(client(&broker.addr), *id).await);
    }
    Ok(ClusterStatus {
        cluster_id: described.cluster_id.as_str().to_owned(),
        brokers,
        reports,
    })
}

async fn node_report(mut client: PeerClient, id: i32) -> Result<NodeReport, String> {
    let request = DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(METADATA_TOPIC.into()))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let response: DescribeQuorumResponse = client
        .call(&request, 0)
        .await
        .map_err(|e: CallError| e.to_string())?;
    let partition = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| "empty DescribeQuorum answer".to_owned())?;
    let ids = |replicas: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
        replicas
            .iter()
            .map(|r| r.replica_id.0)
            .collect::<BTreeSet<i32>>()
    };
    let applied = partition
        .current_voters
        .iter()
        .chain(&partition.observers)
        .find(|r| r.replica_id.0 == id)
        .map_or(partition.high_watermark, |r| r.log_end_offset);
    let described: DescribeConfigsResponse = client
        .call(
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(BROKER_RESOURCE)
                    .with_resource_name(StrBytes::from(id.to_string()))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str(
                        "metadata.backend",
                    )])),
            ]),
            DESCRIBE_CONFIGS_VERSION,
        )
        .await
        .map_err(|e: CallError| e.to_string())?;
    let backend = described
        .results
        .iter()
        .flat_map(|r| &r.configs)
        .find(|c| c.name.as_str() == "metadata.backend")
        .and_then(|c| c.value.as_ref())
        .map_or_else(|| "unknown".to_owned(), |v| v.as_str().to_owned());
    Ok(NodeReport {
        leader: (partition.leader_id.0 >= 0).then_some(partition.leader_id.0),
        epoch: partition.leader_epoch,
        applied,
        voters: ids(&partition.current_voters),
        learners: ids(&partition.observers),
        backend,
    })
}
