//! CreateTopics and DeleteTopics, and auto-creation for Metadata. Validation happens here
//! against the local view (so `validate_only` answers without proposing) and again in apply
//! (so concurrent creators get a deterministic verdict).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::Request;
use switchyard_backend_api::warn_throttled;
use switchyard_backend_api::{
    BrokerId, MetadataCommand, MetadataState, NewTopic, Outcome, Role, TopicId, validate_topic_name,
};
use tracing::warn;

use crate::broker::Broker;
use crate::kafka::dispatch::Client;
use crate::kafka::errors::{metadata_error, rejection_error};
use crate::kafka::handlers::configs::{BrokerDefaults, topic_configs, validate_topic_config};
use crate::kafka::handlers::kstr;
use crate::liveness;

/// A per-topic failure: Kafka error and message.
pub(crate) type TopicError = (ResponseError, String);

/// Replica lists for `partitions` partitions of `replication_factor` replicas, round-robin over
/// `brokers` starting at `start`, so partition leaders spread across brokers.
pub(crate) fn assign(
    brokers: &[BrokerId],
    partitions: u32,
    replication_factor: u16,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, TopicError> {
    let rf = usize::from(replication_factor);
    if rf > brokers.len() {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replication_factor} is larger than the {} available brokers",
                brokers.len()
            ),
        ));
    }
    Ok((0..partitions as usize)
        .map(|p| {
            (0..rf)
                .map(|r| brokers[(start + p + r) % brokers.len()])
                .collect()
        })
        .collect())
}

/// Names starting with `__` are the broker's own (as Kafka's internal topics are); clients
/// cannot create them.
fn check_not_reserved(name: &str) -> Result<(), TopicError> {
    if name.starts_with("__") {
        return Err((
            ResponseError::InvalidTopicException,
            format!("topic names starting with \"__\" are reserved for the broker: {name}"),
        ));
    }
    Ok(())
}

/// How many more partitions the cluster may take under `max_partitions`.
pub(crate) fn partition_budget(broker: &Broker, state: &MetadataState) -> usize {
    broker
        .settings()
        .max_partitions
        .saturating_sub(state.partition_count())
}

/// Whether `partitions` fit in `budget`; checked before anything is allocated.
pub(crate) fn within(budget: usize, partitions: usize) -> Result<(), TopicError> {
    if partitions > budget {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "{partitions} partitions would pass the cluster's max_partitions limit \
                 ({} more allowed)",
                budget
            ),
        ));
    }
    Ok(())
}

/// Create `names` with the default partition count and replication factor, as a CreateTopics
/// request would (forwarded to the metadata leader's broker, placed on live brokers, within
/// the limits); failures are logged (the Metadata response then reports the topic as unknown,
/// and the client retries).
pub(crate) async fn auto_create(broker: &Broker, names: &[String]) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(i32::try_from(broker.settings().metadata_timeout_ms).unwrap_or(i32::MAX))
        .with_topics(
            names
                .iter()
                .map(|name| {
                    CreatableTopic::default()
                        .with_name(TopicName(kstr(name.clone())))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                })
                .collect(),
        );
    let client = Client::internal("switchyard-auto-create");
    let response = create(broker, &client, AUTO_CREATE_VERSION, request).await;
    for topic in response.topics.iter().filter(|t| t.error_code != 0) {
        warn!(
            topic = %topic.name.0.as_str(),
            code = topic.error_code,
            message = topic.error_message.as_ref().map_or("", |m| m.as_str()),
            "cannot auto-create topic"
        );
    }
}

/// The CreateTopics version auto-creation and forwarding use.
const AUTO_CREATE_VERSION: i16 = 7;

/// The client id a forwarded CreateTopics carries: the receiving broker plans it itself, never
/// forwarding it again.
const FORWARDED_PREFIX: &str = "switchyard-forwarded-from-";

/// How long a broker that cannot reach the metadata leader's broker waits for the leader to
/// change before it tries again.
const FORWARD_RETRY: Duration = Duration::from_millis(200);

/// `request`, answered by the metadata leader's broker — unless it is planned here: this
/// broker is not registered yet, or the request was forwarded here (`None` then, and when
/// this broker leads). See [`forward_to_leader`].
pub(crate) async fn answered_by_leader<R: Request>(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: &R,
    timeout_ms: i32,
    refuse: impl Fn(ResponseError, &str) -> R::Response,
) -> Option<R::Response> {
    if !broker.is_registered() || client.id.starts_with(FORWARDED_PREFIX) {
        return None;
    }
    forward_to_leader(broker, version, request, timeout_ms, refuse).await
}

/// Send `request` to the metadata leader's broker, which places replicas on the brokers it
/// has heard from; while none is reachable (an election, a promotion), wait for the leader to
/// change and try again, until `timeout_ms` (the request's; the metadata timeout if not
/// positive). `None` when this broker leads now (it plans the request itself); `refuse`
/// builds the answer when the time is up.
async fn forward_to_leader<R: Request>(
    broker: &Broker,
    version: i16,
    request: &R,
    timeout_ms: i32,
    refuse: impl Fn(ResponseError, &str) -> R::Response,
) -> Option<R::Response> {
    let timeout = match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => broker.metadata_timeout(),
    };
    let deadline = Instant::now() + timeout;
    let mut views = broker.backend().cluster();
    while !broker.is_metadata_leader() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(refuse(
                ResponseError::RequestTimedOut,
                "no metadata leader was reachable within the request timeout",
            ));
        }
        if let Some(response) = forward(broker, version, request, left).await {
            return Some(response);
        }
        let retry = (Instant::now() + FORWARD_RETRY).min(deadline);
        let _ = tokio::time::timeout_at(retry, views.changed()).await;
    }
    None
}

/// One attempt to send `request` to the broker of the metadata leader's node, within
/// `timeout`. `None` if no leader is known or it cannot be reached.
async fn forward<R: Request>(
    broker: &Broker,
    version: i16,
    request: &R,
    timeout: Duration,
) -> Option<R::Response> {
    let leader = broker.backend().cluster().borrow().leader?;
    let leader = BrokerId::try_from(leader).ok()?;
    let view = broker.metadata();
    let target = view.state.broker(leader).filter(|b| !b.fenced)?;
    let mut client = broker.peer_client(
        format!("{}:{}", target.host, target.port),
        format!("{FORWARDED_PREFIX}{}", broker.id()),
        timeout,
    );
    match client.call(request, version).await {
        Ok(response) => Some(response),
        Err(error) => {
            let api =
                ApiKey::try_from(R::KEY).map_or_else(|_| R::KEY.to_string(), |k| format!("{k:?}"));
            warn_throttled!(%leader, %error, %api, "forwarding a request to the metadata leader's broker failed");
            None
        }
    }
}

/// The brokers to place new replicas on: on the metadata leader's broker, the ones it has
/// heard from; elsewhere (a request forwarded here by a broker that took this one for the
/// leader), the ones the metadata has live.
pub(crate) async fn placeable(broker: &Broker) -> Vec<BrokerId> {
    if leads_metadata(broker).await {
        liveness::placeable(broker).await
    } else {
        broker
            .metadata()
            .state
            .live_brokers()
            .map(|b| b.id)
            .collect()
    }
}

/// Whether this broker's node leads the metadata backend. A node that has won an election
/// but is not ready to lead yet (the view names it leader; a broker that saw the election
/// first may forward a request here meanwhile) is waited for, within the metadata timeout.
async fn leads_metadata(broker: &Broker) -> bool {
    let mut views = broker.backend().cluster();
    let deadline = Instant::now() + broker.metadata_timeout();
    loop {
        {
            let view = views.borrow_and_update();
            if view.leader != Some(view.node) {
                return false;
            }
            if view.is_ready() && view.role == Role::Leader {
                return true;
            }
        }
        if !matches!(
            tokio::time::timeout_at(deadline, views.changed()).await,
            Ok(Ok(()))
        ) {
            return broker.is_metadata_leader();
        }
    }
}

/// Every topic of `request` answered with `error`.
fn refuse_all(
    request: &CreateTopicsRequest,
    error: ResponseError,
    message: &str,
) -> CreateTopicsResponse {
    CreateTopicsResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|t| {
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(error.code())
                    .with_error_message(Some(kstr(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            })
            .collect(),
    )
}

/// Check one CreateTopics entry against the local view; build the topic to propose.
fn plan(
    broker: &Broker,
    state: &MetadataState,
    brokers: &[BrokerId],
    topic: &CreatableTopic,
    start: usize,
    budget: usize,
) -> Result<NewTopic, TopicError> {
    let name = topic.name.0.as_str();
    validate_topic_name(name).map_err(|r| (rejection_error(&r), r.to_string()))?;
    check_not_reserved(name)?;
    if state.topic(name).is_some() {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("topic {name} already exists"),
        ));
    }
    let mut configs = Vec::new();
    for config in &topic.configs {
        let key = config.name.as_str();
        let Some(value) = config.value.as_ref().map(|v| v.as_str()) else {
            return Err((
                ResponseError::InvalidConfig,
                format!("config {key} has no value"),
            ));
        };
        validate_topic_config(key, value).map_err(|m| (ResponseError::InvalidConfig, m))?;
        configs.push((key.to_owned(), value.to_owned()));
    }
    let assignments = if topic.assignments.is_empty() {
        let partitions = match topic.num_partitions {
            -1 => broker.settings().num_partitions,
            n if n > 0 => n as u32,
            n => {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("number of partitions must be at least 1, got {n}"),
                ));
            }
        };
        let replication_factor = match topic.replication_factor {
            -1 => broker.settings().default_replication_factor,
            n if n > 0 => n as u16,
            n => {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    format!("replication factor must be at least 1, got {n}"),
                ));
            }
        };
        within(budget, partitions as usize)?;
        assign(brokers, partitions, replication_factor, start)?
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "with a manual assignment, partitions and replication factor must be -1".into(),
            ));
        }
        let mut by_index = BTreeMap::new();
        for a in &topic.assignments {
            by_index.insert(
                a.partition_index,
                a.broker_ids.iter().map(|b| BrokerId(b.0)).collect(),
            );
        }
        if by_index.keys().copied().ne(0..by_index.len() as i32) {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "partition indexes must be 0..N".into(),
            ));
        }
        if let Some(replicas) = by_index.values().find(|replicas: &&Vec<BrokerId>| {
            replicas.is_empty() || replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len()
        }) {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("replica list {replicas:?} is empty or names a broker twice"),
            ));
        }
        within(budget, by_index.len())?;
        by_index.into_values().collect()
    };
    Ok(NewTopic {
        name: name.to_owned(),
        id: TopicId(uuid::Uuid::new_v4()),
        assignments,
        configs,
    })
}

/// CreateTopics. Planned on the metadata leader's broker, which knows which brokers are alive
/// (their heartbeats reach it): any other broker forwards the request there, so clients may
/// send it to any broker — the one Metadata names as controller is the one answering.
pub(crate) async fn create(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let refuse = |error, message: &str| refuse_all(&request, error, message);
    if let Some(response) = answered_by_leader(
        broker,
        client,
        version,
        &request,
        request.timeout_ms,
        refuse,
    )
    .await
    {
        if !request.validate_only {
            let created: Vec<&str> = response
                .topics
                .iter()
                .filter(|t| t.error_code == 0)
                .map(|t| t.name.0.as_str())
                .collect();
            broker
                .wait_local(
                    |state| created.iter().all(|t| state.topic(t).is_some()),
                    broker.metadata_timeout(),
                )
                .await;
        }
        return response;
    }
    // Only a topic without a manual assignment is placed: one with it waits for nothing.
    let brokers = if request.topics.iter().any(|t| t.assignments.is_empty()) {
        placeable(broker).await
    } else {
        Vec::new()
    };
    let view = broker.metadata();
    let mut seen = BTreeSet::new();
    let duplicates: BTreeSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.as_str().to_owned()))
        .map(|t| t.name.0.as_str().to_owned())
        .collect();
    let registered = broker.is_registered();
    let mut budget = partition_budget(broker, &view.state);
    let mut results: Vec<(String, Result<NewTopic, TopicError>)> = request
        .topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            let name = topic.name.0.as_str().to_owned();
            let planned = if duplicates.contains(&name) {
                Err((
                    ResponseError::InvalidRequest,
                    format!("topic {name} is listed twice"),
                ))
            } else if !registered {
                Err((
                    ResponseError::NotController,
                    "metadata is not ready yet".into(),
                ))
            } else {
                let planned = plan(
                    broker,
                    &view.state,
                    &brokers,
                    topic,
                    view.state.topic_count() + i,
                    budget,
                );
                if let Ok(planned) = &planned {
                    budget = budget.saturating_sub(planned.assignments.len());
                }
                planned
            };
            (name, planned)
        })
        .collect();

    let mut outcomes: BTreeMap<String, Result<TopicId, TopicError>> = BTreeMap::new();
    let to_create: Vec<NewTopic> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    if request.validate_only {
        for topic in &to_create {
            outcomes.insert(topic.name.clone(), Ok(topic.id));
        }
    } else if !to_create.is_empty() {
        let names: Vec<String> = to_create.iter().map(|t| t.name.clone()).collect();
        match broker
            .propose(MetadataCommand::CreateTopics { topics: to_create })
            .await
        {
            Ok(Outcome::TopicsCreated { results: created }) => {
                for (name, result) in names.into_iter().zip(created) {
                    let result = result.map_err(|r| (rejection_error(&r), r.to_string()));
                    outcomes.insert(name, result);
                }
            }
            Ok(other) => {
                for name in names {
                    let message = format!("unexpected outcome {other:?}");
                    outcomes.insert(name, Err((ResponseError::UnknownServerError, message)));
                }
            }
            Err(e) => {
                for name in names {
                    outcomes.insert(name, Err((metadata_error(&e), e.to_string())));
                }
            }
        }
    }

    let validate_only = request.validate_only;
    let topics = results
        .drain(..)
        .map(|(name, planned)| {
            let result = match planned {
                Err(e) => Err(e),
                Ok(topic) => match outcomes.remove(&name) {
                    Some(Ok(id)) => Ok((topic, id)),
                    Some(Err(e)) => Err(e),
                    None => Err((ResponseError::UnknownServerError, "no outcome".into())),
                },
            };
            let entry = CreatableTopicResult::default().with_name(TopicName(kstr(name)));
            match result {
                Ok((topic, id)) => {
                    let replication_factor = topic.assignments.first().map_or(0, Vec::len);
                    let overrides: BTreeMap<String, String> = topic.configs.into_iter().collect();
                    entry
                        // A topic that was only validated has no id.
                        .with_topic_id(if validate_only {
                            uuid::Uuid::nil()
                        } else {
                            id.0
                        })
                        .with_num_partitions(i32::try_from(topic.assignments.len()).unwrap_or(-1))
                        .with_replication_factor(i16::try_from(replication_factor).unwrap_or(-1))
                        .with_configs(Some(
                            topic_configs(&overrides, &BrokerDefaults::of(broker, &view.state))
                                .into_iter()
                                .map(|c| {
                                    CreatableTopicConfigs::default()
                                        .with_name(kstr(c.key))
                                        .with_value(Some(kstr(c.value)))
                                        .with_config_source(c.source)
                                })
                                .collect(),
                        ))
                }
                Err((code, message)) => entry
                    .with_error_code(code.code())
                    .with_error_message(Some(kstr(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(crate) async fn delete(
    broker: &Broker,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let view = broker.metadata();
    // (name if resolvable, id asked for, error already known)
    let mut wanted: Vec<(Option<String>, uuid::Uuid, Option<ResponseError>)> = Vec::new();
    if version >= 6 {
        for t in request.topics {
            match t.name {
                Some(name) => {
                    wanted.push((Some(name.0.as_str().to_owned()), uuid::Uuid::nil(), None))
                }
                None => match view.state.topic_by_id(TopicId(t.topic_id)) {
                    Some(topic) => wanted.push((Some(topic.name.clone()), t.topic_id, None)),
                    None => wanted.push((None, t.topic_id, Some(ResponseError::UnknownTopicId))),
                },
            }
        }
    } else {
        for name in request.topic_names {
            wanted.push((Some(name.0.as_str().to_owned()), uuid::Uuid::nil(), None));
        }
    }
    let names: Vec<String> = wanted
        .iter()
        .filter(|(_, _, e)| e.is_none())
        .filter_map(|(n, _, _)| n.clone())
        .collect();
    let mut outcomes: BTreeMap<String, Result<TopicId, ResponseError>> = BTreeMap::new();
    if !names.is_empty() {
        match broker
            .propose(MetadataCommand::DeleteTopics {
                names: names.clone(),
            })
            .await
        {
            Ok(Outcome::TopicsDeleted { results }) => {
                for (name, result) in names.into_iter().zip(results) {
                    outcomes.insert(name, result.map_err(|r| rejection_error(&r)));
                }
            }
            Ok(_) => {
                for name in names {
                    outcomes.insert(name, Err(ResponseError::UnknownServerError));
                }
            }
            Err(e) => {
                for name in names {
                    outcomes.insert(name, Err(metadata_error(&e)));
                }
            }
        }
    }
    let responses = wanted
        .into_iter()
        .map(|(name, id, known)| {
            let result = match (known, &name) {
                (Some(error), _) => Err(error),
                (None, Some(n)) => outcomes
                    .get(n)
                    .cloned()
                    .unwrap_or(Err(ResponseError::UnknownServerError)),
                (None, None) => Err(ResponseError::UnknownTopicId),
            };
            let entry = DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(kstr(n))))
                .with_topic_id(id);
            match result {
                Ok(deleted) => entry.with_topic_id(deleted.0),
                Err(code) => entry.with_error_code(code.code()),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
