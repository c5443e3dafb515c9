//! DescribeConfigs, and the topic configs this broker knows: their defaults and which values it
//! accepts. Only configs the broker honours are accepted; anything else is INVALID_CONFIG.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use crate::broker::Broker;
use crate::kafka::handlers::kstr;

/// Resource type codes of DescribeConfigs.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Config source codes.
const TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// What values a topic config takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer, at least this.
    AtLeast(i64),
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// Topic configs this broker honours, with their defaults.
const TOPIC_CONFIGS: &[(&str, &str, Kind)] = &[
    ("cleanup.policy", "delete", Kind::OneOf(&["delete"])),
    ("compression.type", "producer", Kind::OneOf(&["producer"])),
    ("flush.messages", "1", Kind::AtLeast(1)),
    ("flush.ms", "9223372036854775807", Kind::AtLeast(0)),
    ("index.interval.bytes", "4096", Kind::AtLeast(0)),
    ("max.message.bytes", "1048588", Kind::AtLeast(0)),
    (
        "message.timestamp.type",
        "CreateTime",
        Kind::OneOf(&["CreateTime"]),
    ),
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

/// Every topic config with its effective value: (name, value, whether it is an override).
pub(crate) fn topic_configs(
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static str, &str, bool)> {
    TOPIC_CONFIGS
        .iter()
        .map(|(key, default, _)| match overrides.get(*key) {
            Some(value) => (*key, value.as_str(), true),
            None => (*key, *default, false),
        })
        .collect()
}

/// DescribeConfigs' source code for a topic config.
pub(crate) fn config_source(overridden: bool) -> i8 {
    if overridden {
        TOPIC_CONFIG
    } else {
        DEFAULT_CONFIG
    }
}

/// Check one topic config; the message says what is wrong.
pub(crate) fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let Some((_, _, kind)) = TOPIC_CONFIGS.iter().find(|(k, _, _)| *k == key) else {
        return Err(format!("unknown or unsupported topic config {key}"));
    };
    let ok = match kind {
        Kind::AtLeast(min) => value.parse::<i64>().is_ok_and(|v| v >= *min),
        Kind::OneOf(words) => words.contains(&value),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {value:?} for {key} ({kind:?})"))
    }
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
                        result.with_configs(
                            topic_configs(&overrides)
                                .into_iter()
                                .filter(|(key, _, _)| wanted(key))
                                .map(|(key, value, overridden)| {
                                    entry(key, value, config_source(overridden))
                                })
                                .collect(),
                        )
                    }
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(kstr(format!("unknown topic {name}")))),
                },
                BROKER if name.is_empty() || name == broker.id().to_string() => {
                    let settings = broker.settings();
                    let configs = [
                        ("broker.id", broker.id().to_string()),
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
                    ];
                    result.with_configs(
                        configs
                            .iter()
                            .filter(|(key, _)| wanted(key))
                            .map(|(key, value)| entry(key, value, STATIC_BROKER_CONFIG))
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

fn entry(key: &str, value: &str, source: i8) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(kstr(key))
        .with_value(Some(kstr(value)))
        .with_read_only(source == STATIC_BROKER_CONFIG)
        .with_config_source(source)
}
