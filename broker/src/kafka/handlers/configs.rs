//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, and the topic configs this broker
//! knows: their defaults and which values it accepts. Only configs the broker honours are
//! accepted; anything else is INVALID_CONFIG. A topic's overrides change through one
//! `AlterTopicConfigs` proposal per topic, so every node applies them (open partition logs take
//! them from their next append or cleanup). The broker configs that are topic defaults are
//! dynamic, as in Kafka: cluster-wide (resource name `""`) or per broker, through
//! `AlterBrokerConfigs`, over the static `[kafka]` table; the other broker configs are static.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, alter_configs_response,
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::{MetadataCommand, MetadataState};

use crate::broker::Broker;
use crate::kafka::handlers::{Verdict, kstr, propose_or_validate, verdict_parts};

/// Resource type codes of the config APIs.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Config source codes.
const TOPIC_CONFIG: i8 = 1;
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// What values a topic config takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer, at least this.
    AtLeast(i64),
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of at least one of these words.
    ListOf(&'static [&'static str]),
    /// A number from 0 to 1.
    Ratio,
}

/// Topic configs whose value is a comma-separated list (IncrementalAlterConfigs' APPEND and
/// SUBTRACT apply to these only).
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

/// Topic configs this broker honours, with their defaults.
const TOPIC_CONFIGS: &[(&str, &str, Kind)] = &[
    (
        "cleanup.policy",
        "delete",
        Kind::ListOf(&["delete", "compact"]),
    ),
    (
        "compression.type",
        "producer",
        Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
    ),
    ("delete.retention.ms", "86400000", Kind::AtLeast(0)),
    ("flush.messages", "1", Kind::AtLeast(1)),
    ("flush.ms", "9223372036854775807", Kind::AtLeast(0)),
    ("index.interval.bytes", "4096", Kind::AtLeast(0)),
    (
        "max.compaction.lag.ms",
        "9223372036854775807",
        Kind::AtLeast(1),
    ),
    ("max.message.bytes", "1048588", Kind::AtLeast(0)),
    (
        "message.timestamp.type",
        "CreateTime",
        Kind::OneOf(&["CreateTime"]),
    ),
    ("min.cleanable.dirty.ratio", "0.5", Kind::Ratio),
    ("min.compaction.lag.ms", "0", Kind::AtLeast(0)),
    ("min.insync.replicas", "1", Kind::AtLeast(1)),
    ("retention.bytes", "-1", Kind::AtLeast(-1)),
    ("retention.ms", "604800000", Kind::AtLeast(-1)),
    ("segment.bytes", "1073741824", Kind::AtLeast(14)),
    ("segment.ms", "604800000", Kind::AtLeast(1)),
    (
        "unclean.leader.election.enable",
        "false",
        Kind::OneOf(&["false"]),
    ),
];

/// The broker config that sets each topic config's default (Kafka's synonyms). Each is a
/// dynamic broker config, as in Kafka: AlterConfigs and IncrementalAlterConfigs set it for the
/// whole cluster (resource name `""`) or one broker, live.
const BROKER_SYNONYMS: &[(&str, &str)] = &[
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.message.bytes", "message.max.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("compression.type", "compression.type"),
    ("cleanup.policy", "log.cleanup.policy"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
];

/// Where a broker's topic defaults come from, most specific first: its own dynamic configs,
/// the cluster-wide dynamic defaults (both by broker config name), then its static `[kafka]`
/// settings (by topic config name).
#[derive(Debug, Default)]
pub(crate) struct BrokerDefaults {
    own: BTreeMap<String, String>,
    cluster: BTreeMap<String, String>,
    statics: BTreeMap<String, String>,
}

impl BrokerDefaults {
    /// `broker`'s, as the metadata `state` and its configuration say.
    pub(crate) fn of(broker: &Broker, state: &MetadataState) -> Self {
        let dynamic = |scope| {
            state
                .broker_configs(scope)
                .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        Self {
            own: dynamic(Some(broker.id())),
            cluster: dynamic(None),
            statics: broker.settings().topic_defaults(),
        }
    }

    /// The dynamic broker configs in effect, by topic config name: what partition logs run
    /// with over the static defaults.
    pub(crate) fn dynamic_topic_defaults(&self) -> BTreeMap<String, String> {
        BROKER_SYNONYMS
            .iter()
            .filter_map(|(topic_key, broker_key)| {
                let value = self
                    .own
                    .get(*broker_key)
                    .or(self.cluster.get(*broker_key))?;
                Some(((*topic_key).to_owned(), value.clone()))
            })
            .collect()
    }

    /// The sources of topic config `key` below a topic's own override, most specific first.
    fn synonyms(&self, key: &'static str, default: &str) -> Vec<(&'static str, String, i8)> {
        let Some((_, broker_key)) = BROKER_SYNONYMS.iter().find(|(k, _)| *k == key) else {
            return vec![(key, default.to_owned(), DEFAULT_CONFIG)];
        };
        let mut synonyms = Vec::new();
        if let Some(value) = self.own.get(*broker_key) {
            synonyms.push((*broker_key, value.clone(), DYNAMIC_BROKER_CONFIG));
        }
        if let Some(value) = self.cluster.get(*broker_key) {
            synonyms.push((*broker_key, value.clone(), DYNAMIC_DEFAULT_BROKER_CONFIG));
        }
        if let Some(value) = self.statics.get(key).filter(|v| v.as_str() != default) {
            synonyms.push((*broker_key, value.clone(), STATIC_BROKER_CONFIG));
        }
        synonyms.push((*broker_key, default.to_owned(), DEFAULT_CONFIG));
        synonyms
    }
}

/// One topic config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicConfig {
    pub(crate) key: &'static str,
    /// The value in effect.
    pub(crate) value: String,
    /// Where it comes from: the topic's override, the broker's `[kafka]` setting, or
    /// Kafka's default.
    pub(crate) source: i8,
    /// The value each source gives, most specific first (`include_synonyms`).
    pub(crate) synonyms: Vec<(&'static str, String, i8)>,
}

/// Every topic config with its effective value and where it comes from: the topic's
/// `overrides`, else the broker's defaults (dynamic, then static), else Kafka's.
pub(crate) fn topic_configs(
    overrides: &BTreeMap<String, String>,
    defaults: &BrokerDefaults,
) -> Vec<TopicConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|(key, default, _)| {
            let mut synonyms = Vec::new();
            if let Some(value) = overrides.get(*key) {
                synonyms.push((*key, value.clone(), TOPIC_CONFIG));
            }
            synonyms.extend(defaults.synonyms(key, default));
            let (_, value, source) = synonyms[0].clone();
            TopicConfig {
                key,
                value,
                source,
                synonyms,
            }
        })
        .collect()
}

/// Check one topic config; the message says what is wrong.
pub(crate) fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let Some((_, _, kind)) = TOPIC_CONFIGS.iter().find(|(k, _, _)| *k == key) else {
        return Err(format!("unknown or unsupported topic config {key}"));
    };
    let ok = match kind {
        Kind::AtLeast(min) => value.parse::<i64>().is_ok_and(|v| v >= *min),
        Kind::OneOf(words) => words.contains(&value),
        Kind::ListOf(words) => value.split(',').all(|w| words.contains(&w.trim())),
        Kind::Ratio => value.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)),
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        Kind::AtLeast(min) => format!("an integer of at least {min}"),
        Kind::OneOf(words) => format!("one of {}", words.join(", ")),
        Kind::ListOf(words) => format!("a comma-separated list of {}", words.join(", ")),
        Kind::Ratio => "a number from 0 to 1".to_owned(),
    };
    Err(format!(
        "invalid value {value:?} for {key}: expected {expected}"
    ))
}

pub(crate) fn describe(
    broker: &Broker,
    _version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let view = broker.metadata();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str().to_owned();
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                TOPIC => match view.state.topic(&name) {
                    Some(topic) => {
                        let overrides: BTreeMap<String, String> = topic
                            .configs
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        let defaults = BrokerDefaults::of(broker, &view.state);
                        result.with_configs(
                            topic_configs(&overrides, &defaults)
                                .into_iter()
                                .filter(|c| wanted(c.key))
                                .map(|c| {
                                    let described = entry(c.key, &c.value, c.source);
                                    if request.include_synonyms {
                                        described.with_synonyms(synonyms(&c.synonyms))
                                    } else {
                                        described
                                    }
                                })
                                .collect(),
                        )
                    }
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(kstr(format!("unknown topic {name}")))),
                },
                // The cluster-wide dynamic defaults: those set.
                BROKER if name.is_empty() => result.with_configs(
                    view.state
                        .broker_configs(None)
                        .into_iter()
                        .flatten()
                        .filter(|(key, _)| wanted(key))
                        .map(|(key, value)| entry(key, value, DYNAMIC_DEFAULT_BROKER_CONFIG))
                        .collect(),
                ),
                BROKER if name == broker.id().to_string() => {
                    let settings = broker.settings();
                    let configs = [
                        ("broker.id", broker.id().to_string()),
                        // Read-only, like KRaft's `process.roles`: which backend this node
                        // keeps its metadata in (`switchyard cluster status` shows it).
                        ("metadata.backend", broker.backend().name().to_owned()),
                        (
                            "auto.create.topics.enable",
                            settings.auto_create_topics_enable.to_string(),
                        ),
                        ("num.partitions", settings.num_partitions.to_string()),
                        (
                            "default.replication.factor",
                            settings.default_replication_factor.to_string(),
                        ),
                        (
                            "group.initial.rebalance.delay.ms",
                            settings.group_initial_rebalance_delay_ms.to_string(),
                        ),
                        (
                            "socket.request.max.bytes",
                            settings.socket_request_max_bytes.to_string(),
                        ),
                        (
                            "log.retention.check.interval.ms",
                            settings.log_retention_check_interval_ms.to_string(),
                        ),
                    ];
                    // The topic defaults' broker configs, dynamic ones first, with where each
                    // value comes from.
                    let defaults = BrokerDefaults::of(broker, &view.state);
                    let log_configs =
                        BROKER_SYNONYMS
                            .iter()
                            .filter_map(|(topic_key, broker_key)| {
                                let (_, default, _) =
                                    TOPIC_CONFIGS.iter().find(|(k, _, _)| k == topic_key)?;
                                let synonyms = defaults.synonyms(topic_key, default);
                                let (_, value, source) = synonyms.first()?.clone();
                                let described =
                                    entry(broker_key, &value, source).with_read_only(false);
                                Some(if request.include_synonyms {
                                    described.with_synonyms(self::synonyms(&synonyms))
                                } else {
                                    described
                                })
                            });
                    result.with_configs(
                        configs
                            .iter()
                            .map(|(key, value)| entry(key, value, STATIC_BROKER_CONFIG))
                            .chain(log_configs)
                            .filter(|e| wanted(e.name.as_str()))
                            .collect(),
                    )
                }
                BROKER => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(kstr(format!("this is broker {}", broker.id())))),
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(kstr(format!("unsupported resource type {other}")))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// A config's synonyms as DescribeConfigs lists them.
fn synonyms(synonyms: &[(&str, String, i8)]) -> Vec<DescribeConfigsSynonym> {
    synonyms
        .iter()
        .map(|(name, value, source)| {
            DescribeConfigsSynonym::default()
                .with_name(kstr(*name))
                .with_value(Some(kstr(value.clone())))
                .with_source(*source)
        })
        .collect()
}

fn entry(key: &str, value: &str, source: i8) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(kstr(key))
        .with_value(Some(kstr(value)))
        .with_read_only(source == STATIC_BROKER_CONFIG)
        .with_config_source(source)
}

/// One change of one config, as IncrementalAlterConfigs names them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    /// SET (0): this value.
    Set(String),
    /// DELETE (1): back to the default.
    Delete,
    /// APPEND (2): add to a list config.
    Append(String),
    /// SUBTRACT (3): remove from a list config.
    Subtract(String),
}

/// The changes asked for one resource.
#[derive(Debug)]
struct Alteration {
    resource_type: i8,
    name: String,
    configs: Vec<(String, Option<Operation>)>,
    /// AlterConfigs: the listed configs become the resource's whole set of overrides.
    replace: bool,
}

impl Alteration {
    /// The config names it changes; INVALID_REQUEST if one is listed twice.
    fn keys(&self) -> Result<BTreeSet<&str>, (ResponseError, String)> {
        let mut keys = BTreeSet::new();
        for (key, _) in &self.configs {
            if !keys.insert(key.as_str()) {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("config {key} is listed twice"),
                ));
            }
        }
        Ok(keys)
    }
}

/// IncrementalAlterConfigs, versions 0–1.
pub(crate) async fn alter_incrementally(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let alterations = request
        .resources
        .iter()
        .map(|r| Alteration {
            resource_type: r.resource_type,
            name: r.resource_name.to_string(),
            configs: r
                .configs
                .iter()
                .map(|c| {
                    let value = || {
                        c.value
                            .as_ref()
                            .map_or_else(String::new, ToString::to_string)
                    };
                    let operation = match c.config_operation {
                        0 => Some(Operation::Set(value())),
                        1 => Some(Operation::Delete),
                        2 => Some(Operation::Append(value())),
                        3 => Some(Operation::Subtract(value())),
                        _ => None,
                    };
                    (c.name.to_string(), operation)
                })
                .collect(),
            replace: false,
        })
        .collect();
    let responses = alter(broker, alterations, request.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, verdict)| {
            let (error_code, error_message) = verdict_parts(verdict);
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from(name))
                .with_error_code(error_code)
                .with_error_message(error_message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// AlterConfigs, versions 0–2: each resource's listed configs replace all its overrides.
pub(crate) async fn alter_configs(
    broker: &Broker,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let alterations = request
        .resources
        .iter()
        .map(|r| Alteration {
            resource_type: r.resource_type,
            name: r.resource_name.to_string(),
            configs: r
                .configs
                .iter()
                .map(|c| {
                    let operation = match &c.value {
                        Some(value) => Operation::Set(value.to_string()),
                        None => Operation::Delete,
                    };
                    (c.name.to_string(), Some(operation))
                })
                .collect(),
            replace: true,
        })
        .collect();
    let responses = alter(broker, alterations, request.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, verdict)| {
            let (error_code, error_message) = verdict_parts(verdict);
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from(name))
                .with_error_code(error_code)
                .with_error_message(error_message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Check and apply every alteration (each resource on its own), in request order.
async fn alter(
    broker: &Broker,
    alterations: Vec<Alteration>,
    validate_only: bool,
) -> Vec<(i8, String, Verdict)> {
    let mut seen = BTreeSet::new();
    let twice: BTreeSet<(i8, String)> = alterations
        .iter()
        .map(|a| (a.resource_type, a.name.clone()))
        .filter(|key| !seen.insert(key.clone()))
        .collect();
    let mut verdicts = Vec::with_capacity(alterations.len());
    for alteration in alterations {
        let verdict = if twice.contains(&(alteration.resource_type, alteration.name.clone())) {
            Err((
                ResponseError::InvalidRequest,
                format!("resource {} is listed twice", alteration.name),
            ))
        } else {
            match alteration.resource_type {
                TOPIC => alter_topic(broker, &alteration, validate_only).await,
                BROKER => alter_broker(broker, &alteration, validate_only).await,
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("unsupported resource type {other}"),
                )),
            }
        };
        verdicts.push((alteration.resource_type, alteration.name, verdict));
    }
    verdicts
}

/// One topic's alteration: the `AlterTopicConfigs` it comes to, proposed (or, for
/// `validate_only`, applied to a copy of the state).
async fn alter_topic(broker: &Broker, alteration: &Alteration, validate_only: bool) -> Verdict {
    let view = broker.metadata();
    let name = alteration.name.as_str();
    let topic = view.state.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic {name} does not exist"),
        )
    })?;
    let invalid = |message: String| (ResponseError::InvalidConfig, message);
    let keys = alteration.keys()?;
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (key, operation) in &alteration.configs {
        let Some((_, default, _)) = TOPIC_CONFIGS.iter().find(|(k, _, _)| k == key) else {
            return Err(invalid(format!(
                "unknown or unsupported topic config {key}"
            )));
        };
        let current = topic.configs.get(key).map_or(*default, String::as_str);
        let list = |value: &str| -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let value = match operation {
            None => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("unknown operation on config {key}"),
                ));
            }
            Some(Operation::Delete) => {
                remove.push(key.clone());
                continue;
            }
            Some(Operation::Set(value)) => value.clone(),
            Some(Operation::Append(_) | Operation::Subtract(_))
                if !LIST_CONFIGS.contains(&key.as_str()) =>
            {
                return Err(invalid(format!(
                    "config {key} is not a list: APPEND and SUBTRACT do not apply"
                )));
            }
            Some(Operation::Append(value)) => {
                let mut values = list(current);
                for added in list(value) {
                    if !values.contains(&added) {
                        values.push(added);
                    }
                }
                values.join(",")
            }
            Some(Operation::Subtract(value)) => {
                let removed = list(value);
                let values: Vec<String> = list(current)
                    .into_iter()
                    .filter(|v| !removed.contains(v))
                    .collect();
                values.join(",")
            }
        };
        validate_topic_config(key, &value).map_err(invalid)?;
        set.push((key.clone(), value));
    }
    if alteration.replace {
        // AlterConfigs: every override not listed goes back to its default.
        remove.extend(
            topic
                .configs
                .keys()
                .filter(|k| !keys.contains(k.as_str()))
                .cloned(),
        );
    }
    let command = MetadataCommand::AlterTopicConfigs {
        topic: name.to_owned(),
        set,
        remove,
    };
    propose_or_validate(broker, &view.state, command, validate_only).await
}

/// One broker resource's alteration (`""`: the cluster-wide defaults; else a broker id): the
/// `AlterBrokerConfigs` it comes to. Only the dynamic broker configs (the topic defaults of
/// [`BROKER_SYNONYMS`]) change this way; the others are static, set in `[kafka]`.
async fn alter_broker(broker: &Broker, alteration: &Alteration, validate_only: bool) -> Verdict {
    let view = broker.metadata();
    let scope = if alteration.name.is_empty() {
        None
    } else {
        let id = alteration.name.parse().map_err(|_| {
            (
                ResponseError::InvalidRequest,
                format!("{:?} is not a broker id", alteration.name),
            )
        })?;
        Some(switchyard_backend_api::BrokerId(id))
    };
    let invalid = |message: String| (ResponseError::InvalidConfig, message);
    let keys = alteration.keys()?;
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (key, operation) in &alteration.configs {
        let Some((topic_key, _)) = BROKER_SYNONYMS.iter().find(|(_, b)| b == key) else {
            return Err((
                ResponseError::InvalidRequest,
                format!(
                    "cannot update {key} dynamically: it is static (the [kafka] table of each \
                     node's configuration) or unknown"
                ),
            ));
        };
        match operation {
            Some(Operation::Set(value)) => {
                validate_topic_config(topic_key, value).map_err(invalid)?;
                set.push((key.clone(), value.clone()));
            }
            Some(Operation::Delete) => remove.push(key.clone()),
            Some(Operation::Append(_) | Operation::Subtract(_)) => {
                return Err(invalid(format!(
                    "config {key} is not a list: APPEND and SUBTRACT do not apply"
                )));
            }
            None => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("unknown operation on config {key}"),
                ));
            }
        }
    }
    if alteration.replace {
        // AlterConfigs: every dynamic config of the resource not listed is removed.
        remove.extend(
            view.state
                .broker_configs(scope)
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
                .filter(|k| !keys.contains(k.as_str()))
                .cloned(),
        );
    }
    let command = MetadataCommand::AlterBrokerConfigs {
        broker: scope,
        set,
        remove,
    };
    propose_or_validate(broker, &view.state, command, validate_only).await
}
