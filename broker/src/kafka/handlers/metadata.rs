//! Metadata: brokers, controller, topics and partitions, from the local metadata view, with
//! topic auto-creation.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId as KBrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use switchyard_backend_api::{MetadataState, Partition, Topic, TopicId, validate_topic_name};
use tracing::debug;

use crate::broker::Broker;
use crate::kafka::dispatch::Client;
use crate::kafka::handlers::kstr;
use crate::kafka::handlers::topics::auto_create;

/// The broker id Metadata and DescribeCluster report as controller: this broker, as a Kafka 4
/// broker names a live broker — any broker takes controller requests (CreateTopics is
/// forwarded to the metadata leader's broker), so clients never wait on a controller that
/// died. The metadata leader itself is in DescribeQuorum and `switchyard cluster status`.
pub(crate) fn controller_id(broker: &Broker) -> i32 {
    broker.id().0
}

/// What a Metadata request asked for.
enum Wanted {
    All,
    Named(Vec<(Option<String>, uuid::Uuid)>),
}

pub(crate) async fn handle(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    let wanted = match request.topics {
        None => Wanted::All,
        Some(topics) if topics.is_empty() && version == 0 => Wanted::All,
        Some(topics) => Wanted::Named(
            topics
                .into_iter()
                .map(|t| (t.name.map(|n| n.0.as_str().to_owned()), t.topic_id))
                .collect(),
        ),
    };
    let allow_create = (version < 4 || request.allow_auto_topic_creation)
        && broker.settings().auto_create_topics_enable;

    if let Wanted::Named(names) = &wanted
        && allow_create
        && broker.is_registered()
    {
        let view = broker.metadata();
        let missing: Vec<String> = names
            .iter()
            .filter_map(|(name, _)| name.clone())
            .filter(|name| view.state.topic(name).is_none() && validate_topic_name(name).is_ok())
            .collect();
        if !missing.is_empty() {
            debug!(topics = ?missing, "auto-creating topics");
            auto_create(broker, &missing).await;
        }
    }

    let view = broker.metadata();
    let state = &view.state;
    let registered = broker.is_registered();
    let topics = match wanted {
        Wanted::All => state
            .topics()
            .map(|t| describe_topic(state, t, client))
            .collect(),
        Wanted::Named(names) => names
            .into_iter()
            .map(|(name, id)| match name {
                Some(name) => match state.topic(&name) {
                    Some(topic) => describe_topic(state, topic, client),
                    None => {
                        let error = if !registered {
                            ResponseError::LeaderNotAvailable
                        } else if validate_topic_name(&name).is_err() {
                            ResponseError::InvalidTopicException
                        } else {
                            ResponseError::UnknownTopicOrPartition
                        };
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(kstr(name))))
                            .with_error_code(error.code())
                    }
                },
                None => match state.topic_by_id(TopicId(id)) {
                    Some(topic) => describe_topic(state, topic, client),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                },
            })
            .collect(),
    };

    // Each listener answers with its own endpoints; a broker without this listener is left
    // out, as Kafka does.
    let mut brokers: Vec<MetadataResponseBroker> = state
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = client.endpoint(b)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(KBrokerId(b.id.0))
                    .with_host(kstr(host.to_owned()))
                    .with_port(i32::from(port))
                    .with_rack(b.rack.clone().map(kstr)),
            )
        })
        .collect();
    if brokers.is_empty()
        && let Some((host, port)) = client
            .listener
            .as_ref()
            .and_then(|l| broker.own_endpoint(&l.name))
    {
        // Not registered yet: point clients at this broker so they can retry here.
        brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(KBrokerId(broker.id().0))
                .with_host(kstr(host.to_owned()))
                .with_port(i32::from(port)),
        );
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(state.cluster_id().map(|c| kstr(c.0.clone())))
        .with_controller_id(KBrokerId(controller_id(broker)))
        .with_topics(topics)
}

/// What Metadata and DescribeTopicPartitions tell `client` of one partition.
struct PartitionView {
    error: i16,
    leader: i32,
    replicas: Vec<KBrokerId>,
    isr: Vec<KBrokerId>,
    offline: Vec<KBrokerId>,
}

fn partition_view(state: &MetadataState, p: &Partition, client: &Client) -> PartitionView {
    let offline = p
        .replicas
        .iter()
        .filter(|r| state.broker(**r).is_none_or(|b| b.fenced))
        .map(|r| KBrokerId(r.0))
        .collect();
    // A leader this listener cannot reach is no leader to this client: Kafka answers
    // LISTENER_NOT_FOUND.
    let (leader, error) = match p.leader {
        None => (-1, ResponseError::LeaderNotAvailable.code()),
        Some(l)
            if state
                .broker(l)
                .is_some_and(|b| client.endpoint(b).is_none()) =>
        {
            (-1, ResponseError::ListenerNotFound.code())
        }
        Some(l) => (l.0, 0),
    };
    PartitionView {
        error,
        leader,
        replicas: p.replicas.iter().map(|r| KBrokerId(r.0)).collect(),
        isr: p.isr.iter().map(|r| KBrokerId(r.0)).collect(),
        offline,
    }
}

fn describe_topic(state: &MetadataState, topic: &Topic, client: &Client) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let view = partition_view(state, p, client);
            MetadataResponsePartition::default()
                .with_error_code(view.error)
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(KBrokerId(view.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(view.replicas)
                .with_isr_nodes(view.isr)
                .with_offline_replicas(view.offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(kstr(topic.name.clone()))))
        .with_topic_id(topic.id.0)
        .with_partitions(partitions)
}

/// The most partitions one DescribeTopicPartitions response carries (Kafka's
/// `max.request.partition.size.limit` default).
const MAX_PARTITIONS_PER_RESPONSE: usize = 2000;

/// DescribeTopicPartitions, version 0 (KIP-966): the named topics, or every topic, in name
/// order, at most `response_partition_limit` partitions (and 2000) per response, from the
/// request's cursor; `next_cursor` says where the next page starts. There are no eligible
/// leader replicas here: the ISR is where leaders come from.
pub(crate) fn describe_topic_partitions(
    broker: &Broker,
    client: &Client,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let view = broker.metadata();
    let state = &view.state;
    let limit = usize::try_from(request.response_partition_limit)
        .ok()
        .filter(|l| *l > 0)
        .map_or(MAX_PARTITIONS_PER_RESPONSE, |l| {
            l.min(MAX_PARTITIONS_PER_RESPONSE)
        });
    let mut names: Vec<String> = if request.topics.is_empty() {
        state.topics().map(|t| t.name.clone()).collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let cursor = request
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    if let Some((from, _)) = &cursor {
        names.retain(|n| n >= from);
    }
    let mut left = limit;
    let mut topics = Vec::new();
    let mut next = None;
    for (position, name) in names.iter().enumerate() {
        if left == 0 {
            next = Some((name.clone(), 0));
            break;
        }
        let Some(topic) = state.topic(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(kstr(name.clone()))))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            );
            continue;
        };
        let first = match &cursor {
            Some((from, partition)) if from == name => usize::try_from(*partition).unwrap_or(0),
            _ => 0,
        };
        let mut partitions = Vec::new();
        for (index, p) in topic.partitions.iter().enumerate().skip(first) {
            if left == 0 {
                next = Some((name.clone(), index));
                break;
            }
            left -= 1;
            let view = partition_view(state, p, client);
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(view.error)
                    .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                    .with_leader_id(KBrokerId(view.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(view.replicas)
                    .with_isr_nodes(view.isr)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(view.offline),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(kstr(name.clone()))))
                .with_topic_id(topic.id.0)
                .with_partitions(partitions)
                .with_topic_authorized_operations(i32::MIN),
        );
        if next.is_some() {
            break;
        }
        if left == 0 && position + 1 < names.len() {
            next = Some((names[position + 1].clone(), 0));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next.map(|(name, index)| {
            Cursor::default()
                .with_topic_name(TopicName(kstr(name)))
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
        }))
}
