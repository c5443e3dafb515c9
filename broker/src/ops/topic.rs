//! `switchyard topic …`: create, list, describe, alter the configs of, add partitions to and
//! delete topics (CreateTopics, Metadata, DescribeConfigs, ListOffsets,
//! IncrementalAlterConfigs, CreatePartitions, DeleteTopics).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::table::Table;
use super::{
    Client, EARLIEST, LATEST, OpsError, Report, check, error_name, list_offsets, topic_id,
};

const CREATE_TOPICS_VERSION: i16 = 7;
const DELETE_TOPICS_VERSION: i16 = 5;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
const INCREMENTAL_ALTER_CONFIGS_VERSION: i16 = 1;
const CREATE_PARTITIONS_VERSION: i16 = 3;
/// The config resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from(topic.to_owned()))
}

/// What happened to one topic of a create or delete.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The topic.
    pub topic: String,
    /// Its id, once created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Partitions created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor created with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i16>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The topics of a create or delete.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Outcomes(pub Vec<Outcome>);

impl Report for Outcomes {
    fn text(&self) -> String {
        let created = self.0.iter().any(|o| o.id.is_some());
        let mut table = if created {
            Table::new(&["TOPIC", "ID", "PARTITIONS", "REPLICAS", "STATUS"])
        } else {
            Table::new(&["TOPIC", "STATUS"])
        };
        for o in &self.0 {
            let status = o.error.clone().unwrap_or_else(|| "OK".into());
            if created {
                table.row(vec![
                    o.topic.clone(),
                    o.id.clone().unwrap_or_default(),
                    o.partitions.map(|p| p.to_string()).unwrap_or_default(),
                    o.replication_factor
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    status,
                ]);
            } else {
                table.row(vec![o.topic.clone(), status]);
            }
        }
        table.render()
    }

    fn failures(&self) -> usize {
        self.0.iter().filter(|o| o.error.is_some()).count()
    }
}

fn failure(code: i16, message: Option<&StrBytes>) -> Option<String> {
    (code != 0).then(|| match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{}: {m}", error_name(code)),
        None => error_name(code),
    })
}

/// Create `topics`, each with `partitions` partitions of `replicas` replicas (-1: the
/// broker's defaults) and `configs`.
pub async fn create(
    client: &mut Client,
    topics: &[String],
    partitions: i32,
    replicas: i16,
    configs: &[(String, String)],
) -> Result<Outcomes, OpsError> {
    let timeout = i32::try_from(client.timeout().as_millis()).unwrap_or(i32::MAX);
    let request = CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(name(t))
                        .with_num_partitions(partitions)
                        .with_replication_factor(replicas)
                        .with_configs(
                            configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from(k.clone()))
                                        .with_value(Some(StrBytes::from(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
        .with_timeout_ms(timeout);
    let response = client.call(&request, CREATE_TOPICS_VERSION).await?;
    Ok(Outcomes(
        response
            .topics
            .into_iter()
            .map(|t| {
                let error = failure(t.error_code, t.error_message.as_ref());
                Outcome {
                    topic: t.name.0.to_string(),
                    id: error.is_none().then(|| topic_id(&t.topic_id)),
                    partitions: error.is_none().then_some(t.num_partitions),
                    replication_factor: error.is_none().then_some(t.replication_factor),
                    error,
                }
            })
            .collect(),
    ))
}

/// Delete `topics`.
pub async fn delete(client: &mut Client, topics: &[String]) -> Result<Outcomes, OpsError> {
    let timeout = i32::try_from(client.timeout().as_millis()).unwrap_or(i32::MAX);
    let request = DeleteTopicsRequest::default()
        .with_topic_names(topics.iter().map(|t| name(t)).collect())
        .with_timeout_ms(timeout);
    let response = client.call(&request, DELETE_TOPICS_VERSION).await?;
    Ok(Outcomes(
        response
            .responses
            .into_iter()
            .map(|t| Outcome {
                topic: t.name.map_or_else(String::new, |n| n.0.to_string()),
                id: None,
                partitions: None,
                replication_factor: None,
                error: failure(t.error_code, t.error_message.as_ref()),
            })
            .collect(),
    ))
}

/// One topic, as `topic list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Name.
    pub topic: String,
    /// Topic id.
    pub id: String,
    /// Partition count.
    pub partitions: usize,
    /// Replicas of its first partition.
    pub replication_factor: usize,
}

/// `topic list`.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Listing(pub Vec<Summary>);

impl Report for Listing {
    fn text(&self) -> String {
        let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICAS", "ID"]);
        for t in &self.0 {
            table.row(vec![
                t.topic.clone(),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
                t.id.clone(),
            ]);
        }
        table.render()
    }
}

/// Every topic, by name.
pub async fn list(client: &mut Client) -> Result<Listing, OpsError> {
    let metadata = client.metadata(None).await?;
    let mut topics: Vec<Summary> = metadata
        .0
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .filter_map(|t| {
            Some(Summary {
                topic: t.name.as_ref()?.0.to_string(),
                id: topic_id(&t.topic_id),
                partitions: t.partitions.len(),
                replication_factor: t.partitions.first().map_or(0, |p| p.replica_nodes.len()),
            })
        })
        .collect();
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(Listing(topics))
}

/// One partition of a described topic.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionDetail {
    /// Partition number.
    pub partition: i32,
    /// Leader broker (-1: none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Assigned replicas.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Log start offset (absent without a leader).
    pub log_start_offset: Option<i64>,
    /// High watermark (absent without a leader).
    pub high_watermark: Option<i64>,
}

/// One config of a described topic.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigEntry {
    /// Value (absent for a sensitive one).
    pub value: Option<String>,
    /// Where it comes from, as Kafka names it (`DYNAMIC_TOPIC_CONFIG`, `DEFAULT_CONFIG`, …).
    pub source: &'static str,
}

/// `topic describe` of one topic.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// Name.
    pub topic: String,
    /// Topic id.
    pub id: String,
    /// Configs by name.
    pub configs: BTreeMap<String, ConfigEntry>,
    /// Partitions by number.
    pub partitions: Vec<PartitionDetail>,
}

/// `topic describe`.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Details(pub Vec<Detail>);

fn ids(list: &[i32]) -> String {
    let ids: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("[{}]", ids.join(","))
}

impl Report for Details {
    fn text(&self) -> String {
        let mut out = String::new();
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let mut summary = Table::new(&["TOPIC", "ID", "PARTITIONS", "REPLICAS"]);
            summary.row(vec![
                t.topic.clone(),
                t.id.clone(),
                t.partitions.len().to_string(),
                t.partitions
                    .first()
                    .map_or(0, |p| p.replicas.len())
                    .to_string(),
            ]);
            out.push_str(&summary.render());
            out.push('\n');
            let mut configs = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
            for (name, entry) in &t.configs {
                configs.row(vec![
                    name.clone(),
                    entry.value.clone().unwrap_or_else(|| "(sensitive)".into()),
                    entry.source.to_owned(),
                ]);
            }
            out.push_str(&configs.render());
            out.push('\n');
            let mut partitions = Table::new(&[
                "PARTITION",
                "LEADER",
                "EPOCH",
                "REPLICAS",
                "ISR",
                "LOG-START-OFFSET",
                "HIGH-WATERMARK",
            ]);
            let offset = |o: Option<i64>| o.map_or_else(|| "-".into(), |o| o.to_string());
            for p in &t.partitions {
                partitions.row(vec![
                    p.partition.to_string(),
                    p.leader.to_string(),
                    p.leader_epoch.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    offset(p.log_start_offset),
                    offset(p.high_watermark),
                ]);
            }
            out.push_str(&partitions.render());
        }
        out
    }
}

/// Kafka's name of a DescribeConfigs config source.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Describe `topics`: partitions with leaders, replicas, ISR and offsets, and every config
/// with where its value comes from.
pub async fn describe(client: &mut Client, topics: &[String]) -> Result<Details, OpsError> {
    let metadata = client.metadata(Some(topics)).await?;
    let request = DescribeConfigsRequest::default().with_resources(
        topics
            .iter()
            .map(|t| {
                DescribeConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from(t.clone()))
                    .with_configuration_keys(None)
            })
            .collect(),
    );
    let configs = client.call(&request, DESCRIBE_CONFIGS_VERSION).await?;
    let mut details = Vec::with_capacity(topics.len());
    for topic in topics {
        let found = metadata.topic(topic)?;
        let mut partitions: Vec<PartitionDetail> = found
            .partitions
            .iter()
            .map(|p| PartitionDetail {
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                log_start_offset: None,
                high_watermark: None,
            })
            .collect();
        partitions.sort_unstable_by_key(|p| p.partition);
        let led: Vec<(String, i32)> = partitions
            .iter()
            .filter(|p| p.leader >= 0)
            .map(|p| (topic.clone(), p.partition))
            .collect();
        let starts = list_offsets(client, &metadata, &led, EARLIEST).await?;
        let ends = list_offsets(client, &metadata, &led, LATEST).await?;
        let result = configs
            .results
            .iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| OpsError::Invalid(format!("no configs of {topic} in the answer")))?;
        check(
            || format!("the configs of {topic}"),
            result.error_code,
            result.error_message.as_ref(),
        )?;
        details.push(Detail {
            topic: topic.clone(),
            id: topic_id(&found.topic_id),
            configs: result
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        ConfigEntry {
                            value: c.value.as_ref().map(ToString::to_string),
                            source: source_name(c.config_source),
                        },
                    )
                })
                .collect(),
            partitions: partitions
                .into_iter()
                .map(|p| {
                    let key = (topic.clone(), p.partition);
                    PartitionDetail {
                        log_start_offset: starts.get(&key).copied(),
                        high_watermark: ends.get(&key).copied(),
                        ..p
                    }
                })
                .collect(),
        });
    }
    Ok(Details(details))
}

/// What `topic alter-config` changed.
#[derive(Debug, Clone, Serialize)]
pub struct Altered {
    /// The topic.
    pub topic: String,
    /// Configs set, by name.
    pub set: BTreeMap<String, String>,
    /// Configs deleted (back to the broker's default).
    pub deleted: Vec<String>,
}

impl Report for Altered {
    fn text(&self) -> String {
        let mut table = Table::new(&["TOPIC", "CONFIG", "CHANGE"]);
        for (k, v) in &self.set {
            table.row(vec![self.topic.clone(), k.clone(), format!("set to {v}")]);
        }
        for k in &self.deleted {
            table.row(vec![
                self.topic.clone(),
                k.clone(),
                "deleted (default)".into(),
            ]);
        }
        table.render()
    }
}

/// Set `set` and delete `deleted` configs of `topic` (IncrementalAlterConfigs: the others
/// stay as they are).
pub async fn alter_config(
    client: &mut Client,
    topic: &str,
    set: &[(String, String)],
    deleted: &[String],
) -> Result<Altered, OpsError> {
    if set.is_empty() && deleted.is_empty() {
        return Err(OpsError::Invalid(
            "nothing to change: give --set KEY=VALUE or --delete KEY".into(),
        ));
    }
    let configs = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from(k.clone()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from(v.clone())))
        })
        .chain(deleted.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from(k.clone()))
                .with_config_operation(1)
                .with_value(None)
        }))
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from(topic.to_owned()))
            .with_configs(configs),
    ]);
    let response = client
        .call(&request, INCREMENTAL_ALTER_CONFIGS_VERSION)
        .await?;
    for r in &response.responses {
        check(
            || format!("altering the configs of {topic}"),
            r.error_code,
            r.error_message.as_ref(),
        )?;
    }
    Ok(Altered {
        topic: topic.to_owned(),
        set: set.iter().cloned().collect(),
        deleted: deleted.to_vec(),
    })
}

/// What `topic add-partitions` did.
#[derive(Debug, Clone, Serialize)]
pub struct Grown {
    /// The topic.
    pub topic: String,
    /// Partitions before.
    pub from: i32,
    /// Partitions now.
    pub to: i32,
}

impl Report for Grown {
    fn text(&self) -> String {
        let mut table = Table::new(&["TOPIC", "PARTITIONS-BEFORE", "PARTITIONS-NOW"]);
        table.row(vec![
            self.topic.clone(),
            self.from.to_string(),
            self.to.to_string(),
        ]);
        table.render()
    }
}

/// Add `count` partitions to `topic`.
pub async fn add_partitions(
    client: &mut Client,
    topic: &str,
    count: i32,
) -> Result<Grown, OpsError> {
    if count < 1 {
        return Err(OpsError::Invalid(format!(
            "--num must be at least 1, got {count}"
        )));
    }
    let metadata = client.metadata(Some(&[topic.to_owned()])).await?;
    let from = i32::try_from(metadata.topic(topic)?.partitions.len()).unwrap_or(i32::MAX);
    let to = from.saturating_add(count);
    let timeout = i32::try_from(client.timeout().as_millis()).unwrap_or(i32::MAX);
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(to)
                .with_assignments(None),
        ])
        .with_timeout_ms(timeout);
    let response = client.call(&request, CREATE_PARTITIONS_VERSION).await?;
    for r in &response.results {
        check(
            || format!("adding partitions to {topic}"),
            r.error_code,
            r.error_message.as_ref(),
        )?;
    }
    Ok(Grown {
        topic: topic.to_owned(),
        from,
        to,
    })
}
