//! `switchyard group …`: list, describe (members, committed offsets, lag), seek (reset the
//! committed offsets of a group without members) and delete consumer groups (ListGroups,
//! FindCoordinator, DescribeGroups, OffsetFetch, ListOffsets, OffsetCommit, DeleteGroups).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Buf as _;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable as _, StrBytes};
use serde::Serialize;

use super::table::Table;
use super::{Client, EARLIEST, LATEST, OpsError, Report, check, error_name, list_offsets};

const LIST_GROUPS_VERSION: i16 = 4;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const OFFSET_FETCH_VERSION: i16 = 7;
const OFFSET_COMMIT_VERSION: i16 = 8;
const DELETE_GROUPS_VERSION: i16 = 2;

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from(group.to_owned()))
}

/// One group, as `group list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Group id.
    pub group: String,
    /// State (`Empty`, `Stable`, …).
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// The coordinator's `HOST:PORT`.
    pub coordinator: String,
}

/// `group list`.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Listing(pub Vec<Summary>);

impl Report for Listing {
    fn text(&self) -> String {
        let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"]);
        for g in &self.0 {
            table.row(vec![
                g.group.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
                g.coordinator.clone(),
            ]);
        }
        table.render()
    }
}

/// Every group of the cluster: ListGroups on every broker (each lists the groups it
/// coordinates), merged.
pub async fn list(client: &mut Client) -> Result<Listing, OpsError> {
    let metadata = client.metadata(Some(&[])).await?;
    let mut groups = BTreeMap::new();
    for addr in metadata.broker_addrs() {
        let response = client
            .call_at(&addr, &ListGroupsRequest::default(), LIST_GROUPS_VERSION)
            .await?;
        check(
            || format!("listing the groups of {addr}"),
            response.error_code,
            None,
        )?;
        for g in response.groups {
            groups.insert(
                g.group_id.0.to_string(),
                Summary {
                    group: g.group_id.0.to_string(),
                    state: g.group_state.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    coordinator: addr.clone(),
                },
            );
        }
    }
    Ok(Listing(groups.into_values().collect()))
}

/// One member of a described group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Member id.
    pub member_id: String,
    /// Static membership instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub host: String,
    /// Assigned partitions by topic (consumer groups).
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// One partition of a described group.
#[derive(Debug, Clone, Serialize)]
pub struct Position {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset, if any.
    pub committed: Option<i64>,
    /// The partition's high watermark.
    pub log_end: Option<i64>,
    /// `log_end - committed`.
    pub lag: Option<i64>,
    /// The member assigned the partition, if any.
    pub member_id: Option<String>,
}

/// `group describe` of one group.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// Group id.
    pub group: String,
    /// The coordinator's `HOST:PORT`.
    pub coordinator: String,
    /// State.
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol: String,
    /// Members.
    pub members: Vec<Member>,
    /// Committed offsets and lag, by topic and partition.
    pub offsets: Vec<Position>,
}

/// `group describe`.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Details(pub Vec<Detail>);

impl Report for Details {
    fn text(&self) -> String {
        let mut out = String::new();
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let mut summary = Table::new(&[
                "GROUP",
                "COORDINATOR",
                "STATE",
                "PROTOCOL-TYPE",
                "PROTOCOL",
                "MEMBERS",
            ]);
            summary.row(vec![
                g.group.clone(),
                g.coordinator.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
                g.protocol.clone(),
                g.members.len().to_string(),
            ]);
            out.push_str(&summary.render());
            out.push('\n');
            let mut offsets = Table::new(&[
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "MEMBER-ID",
                "CLIENT-ID",
                "HOST",
            ]);
            let dash = |o: Option<i64>| o.map_or_else(|| "-".into(), |o| o.to_string());
            for p in &g.offsets {
                let member = p
                    .member_id
                    .as_ref()
                    .and_then(|id| g.members.iter().find(|m| &m.member_id == id));
                offsets.row(vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    dash(p.committed),
                    dash(p.log_end),
                    dash(p.lag),
                    p.member_id.clone().unwrap_or_else(|| "-".into()),
                    member.map_or_else(|| "-".into(), |m| m.client_id.clone()),
                    member.map_or_else(|| "-".into(), |m| m.host.clone()),
                ]);
            }
            out.push_str(&offsets.render());
        }
        out
    }
}

/// The committed offsets of `group`, asked of its coordinator at `coordinator`.
async fn committed(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, OpsError> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(None);
    let response = client
        .call_at(coordinator, &request, OFFSET_FETCH_VERSION)
        .await?;
    check(
        || format!("the committed offsets of group {group}"),
        response.error_code,
        None,
    )?;
    let mut out = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            check(
                || {
                    format!(
                        "group {group}'s offset of {}/{}",
                        t.name.0, p.partition_index
                    )
                },
                p.error_code,
                None,
            )?;
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// The partitions a consumer group member was assigned, decoded from its assignment bytes
/// (Kafka's ConsumerProtocolAssignment); empty for other protocols or none yet.
fn assignment(protocol_type: &str, bytes: &bytes::Bytes) -> BTreeMap<String, Vec<i32>> {
    let mut out = BTreeMap::new();
    if protocol_type != "consumer" || bytes.len() < 2 {
        return out;
    }
    let mut buf = bytes.clone();
    let version = buf.get_i16();
    if let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut buf, version) {
        for t in decoded.assigned_partitions {
            out.insert(t.topic.0.to_string(), t.partitions);
        }
    }
    out
}

/// Describe `groups`: state, members and what each is assigned, and per partition the
/// committed offset, the high watermark and the lag.
pub async fn describe(client: &mut Client, groups: &[String]) -> Result<Details, OpsError> {
    let mut details = Vec::with_capacity(groups.len());
    for group in groups {
        let coordinator = client.coordinator(group).await?;
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let response = client
            .call_at(&coordinator, &request, DESCRIBE_GROUPS_VERSION)
            .await?;
        let described = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| OpsError::Invalid(format!("no description of group {group}")))?;
        check(
            || format!("describing group {group}"),
            described.error_code,
            described.error_message.as_ref(),
        )?;
        if described.group_state.as_str() == "Dead" {
            return Err(OpsError::Invalid(format!("no group {group}")));
        }
        let protocol_type = described.protocol_type.to_string();
        let members: Vec<Member> = described
            .members
            .iter()
            .map(|m| Member {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(ToString::to_string),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: assignment(&protocol_type, &m.member_assignment),
            })
            .collect();
        let committed = committed(client, &coordinator, group).await?;
        let mut partitions: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
        for m in &members {
            for (topic, list) in &m.assignment {
                partitions.extend(list.iter().map(|p| (topic.clone(), *p)));
            }
        }
        let partitions: Vec<(String, i32)> = partitions.into_iter().collect();
        let topics: Vec<String> = partitions
            .iter()
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let ends = if partitions.is_empty() {
            Default::default()
        } else {
            let metadata = client.metadata(Some(&topics)).await?;
            list_offsets(client, &metadata, &partitions, LATEST).await?
        };
        let offsets = partitions
            .into_iter()
            .map(|(topic, partition)| {
                let key = (topic.clone(), partition);
                let committed = committed.get(&key).copied();
                let log_end = ends.get(&key).copied();
                let member_id = members
                    .iter()
                    .find(|m| {
                        m.assignment
                            .get(&topic)
                            .is_some_and(|ps| ps.contains(&partition))
                    })
                    .map(|m| m.member_id.clone());
                Position {
                    lag: committed.zip(log_end).map(|(c, e)| (e - c).max(0)),
                    topic,
                    partition,
                    committed,
                    log_end,
                    member_id,
                }
            })
            .collect();
        details.push(Detail {
            group: group.clone(),
            coordinator,
            state: described.group_state.to_string(),
            protocol_type,
            protocol: described.protocol_data.to_string(),
            members,
            offsets,
        });
    }
    Ok(Details(details))
}

/// Where `group seek` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// Each partition's log start offset.
    Start,
    /// Each partition's high watermark.
    End,
    /// This offset in every partition.
    Offset(i64),
}

impl std::str::FromStr for SeekTo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "start" => Ok(Self::Start),
            "end" => Ok(Self::End),
            other => other
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(Self::Offset)
                .ok_or_else(|| format!("expected start, end or an offset, got {other:?}")),
        }
    }
}

/// One partition moved by `group seek`.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset before, if any.
    pub from: Option<i64>,
    /// The committed offset now.
    pub to: i64,
}

/// `group seek`.
#[derive(Debug, Clone, Serialize)]
pub struct Seeked {
    /// The group.
    pub group: String,
    /// Every partition committed.
    pub partitions: Vec<Moved>,
}

impl Report for Seeked {
    fn text(&self) -> String {
        let mut table = Table::new(&[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "PREVIOUS-OFFSET",
            "NEW-OFFSET",
        ]);
        for m in &self.partitions {
            table.row(vec![
                self.group.clone(),
                m.topic.clone(),
                m.partition.to_string(),
                m.from.map_or_else(|| "-".into(), |o| o.to_string()),
                m.to.to_string(),
            ]);
        }
        table.render()
    }
}

/// Commit `to` for every partition of `topics` (default: the topics `group` has offsets
/// for) as the group's offsets; refused while the group has members (stop its consumers
/// first).
pub async fn seek(
    client: &mut Client,
    group: &str,
    to: SeekTo,
    topics: &[String],
) -> Result<Seeked, OpsError> {
    let coordinator = client.coordinator(group).await?;
    // As kafka-consumer-groups: offsets are reset only while nothing consumes (Kafka would
    // refuse the commit of a non-member anyway).
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let described = client
        .call_at(&coordinator, &request, DESCRIBE_GROUPS_VERSION)
        .await?;
    if let Some(g) = described
        .groups
        .iter()
        .find(|g| !matches!(g.group_state.as_str(), "Empty" | "Dead" | ""))
    {
        return Err(OpsError::Invalid(format!(
            "group {group} is {} with {} members: offsets can only be reset while it has \
             none; stop its consumers first",
            g.group_state,
            g.members.len()
        )));
    }
    let before = committed(client, &coordinator, group).await?;
    let topics: Vec<String> = if topics.is_empty() {
        before
            .keys()
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        topics.to_vec()
    };
    if topics.is_empty() {
        return Err(OpsError::Invalid(format!(
            "group {group} has no committed offsets; name the topics with --topic"
        )));
    }
    let metadata = client.metadata(Some(&topics)).await?;
    let mut partitions = Vec::new();
    for topic in &topics {
        for (partition, _) in metadata.leaders(topic)? {
            partitions.push((topic.clone(), partition));
        }
    }
    let targets = match to {
        SeekTo::Start => list_offsets(client, &metadata, &partitions, EARLIEST).await?,
        SeekTo::End => list_offsets(client, &metadata, &partitions, LATEST).await?,
        SeekTo::Offset(offset) => partitions.iter().map(|k| (k.clone(), offset)).collect(),
    };
    let mut request_topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (topic, partition) in &partitions {
        let offset = targets
            .get(&(topic.clone(), *partition))
            .copied()
            .unwrap_or(0);
        let entry = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(-1)
            .with_committed_metadata(Some(StrBytes::from_static_str("")));
        match request_topics
            .iter_mut()
            .find(|t| t.name.0.as_str() == topic)
        {
            Some(t) => t.partitions.push(entry),
            None => request_topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from(topic.clone())))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_retention_time_ms(-1)
        .with_topics(request_topics);
    let response = client
        .call_at(&coordinator, &request, OFFSET_COMMIT_VERSION)
        .await?;
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                let hint = if p.error_code == 25 {
                    ": the group has members; stop its consumers first"
                } else {
                    ""
                };
                return Err(OpsError::Refused {
                    what: format!(
                        "committing {}/{} for group {group}",
                        t.name.0, p.partition_index
                    ),
                    error: error_name(p.error_code),
                    code: p.error_code,
                    message: hint.into(),
                });
            }
        }
    }
    Ok(Seeked {
        group: group.to_owned(),
        partitions: partitions
            .into_iter()
            .map(|key| Moved {
                from: before.get(&key).copied(),
                to: targets.get(&key).copied().unwrap_or(0),
                topic: key.0,
                partition: key.1,
            })
            .collect(),
    })
}

/// What happened to one group of a delete.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    /// The group.
    pub group: String,
    /// Why it was not deleted, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `group delete`.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Deletions(pub Vec<Deleted>);

impl Report for Deletions {
    fn text(&self) -> String {
        let mut table = Table::new(&["GROUP", "STATUS"]);
        for d in &self.0 {
            table.row(vec![
                d.group.clone(),
                d.error.clone().unwrap_or_else(|| "OK".into()),
            ]);
        }
        table.render()
    }

    fn failures(&self) -> usize {
        self.0.iter().filter(|d| d.error.is_some()).count()
    }
}

/// Delete `groups` (each must have no members) with their committed offsets.
pub async fn delete(client: &mut Client, groups: &[String]) -> Result<Deletions, OpsError> {
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let coordinator = client.coordinator(group).await?;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let response = client
            .call_at(&coordinator, &request, DELETE_GROUPS_VERSION)
            .await?;
        for r in response.results {
            out.push(Deleted {
                group: r.group_id.0.to_string(),
                error: (r.error_code != 0).then(|| error_name(r.error_code)),
            });
        }
    }
    Ok(Deletions(out))
}
