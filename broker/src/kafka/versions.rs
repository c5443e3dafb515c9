//! What newer request versions say differently, mapped onto the shape the handlers serve:
//! - Fetch 13+ and Produce 13+ name topics by id (KIP-516). Before authorization the ids are
//!   resolved to names from the local metadata view, so the ACL checks and the handlers see
//!   names as in older versions; the response names its topics by id again. An id the
//!   metadata does not know is answered `UNKNOWN_TOPIC_ID`.
//! - Fetch 15+ carries a follower's broker id in `replica_state` (KIP-903); it is moved to
//!   `replica_id`, where older versions had it.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::{MetadataState, TopicId};
use uuid::Uuid;

/// The first Fetch and Produce version that names topics by id.
const TOPIC_IDS_SINCE: i16 = 13;
/// The first Fetch version that carries the follower id in `replica_state`.
const REPLICA_STATE_SINCE: i16 = 15;

/// The topic ids of a request, by the name each was resolved to: what the response needs to
/// name its topics by id again.
#[derive(Debug, Default)]
pub(crate) struct TopicIds {
    by_name: HashMap<String, Uuid>,
    /// Names standing for ids the metadata does not know.
    unknown: Vec<String>,
}

impl TopicIds {
    fn resolve(&mut self, state: &MetadataState, id: Uuid) -> TopicName {
        let name = match state.topic_by_id(TopicId(id)) {
            Some(topic) => topic.name.clone(),
            None => {
                // Not a valid topic name (it has spaces): no topic has it, so the handler
                // answers UNKNOWN_TOPIC_OR_PARTITION, which `restore` turns into
                // UNKNOWN_TOPIC_ID.
                let name = format!("unknown topic id {id}");
                self.unknown.push(name.clone());
                name
            }
        };
        self.by_name.insert(name.clone(), id);
        TopicName(StrBytes::from_string(name))
    }

    /// The id a response topic named `name` is answered by, and whether that id is unknown.
    fn answer(&self, name: &TopicName) -> (Uuid, bool) {
        let name = name.0.as_str();
        (
            self.by_name.get(name).copied().unwrap_or_default(),
            self.unknown.iter().any(|u| u == name),
        )
    }
}

/// Rewrite `request` of `version` into the shape of older versions (see the module docs);
/// returns the topic ids to put back into its response, if it named topics by id.
pub(crate) fn normalize(
    state: &MetadataState,
    version: i16,
    request: &mut RequestKind,
) -> Option<TopicIds> {
    match request {
        RequestKind::Fetch(r) => {
            if version >= REPLICA_STATE_SINCE && r.replica_state.replica_id.0 >= 0 {
                r.replica_id = r.replica_state.replica_id;
            }
            (version >= TOPIC_IDS_SINCE).then(|| {
                let mut ids = TopicIds::default();
                for topic in &mut r.topics {
                    topic.topic = ids.resolve(state, topic.topic_id);
                }
                ids
            })
        }
        RequestKind::Produce(r) if version >= TOPIC_IDS_SINCE => {
            let mut ids = TopicIds::default();
            for topic in &mut r.topic_data {
                topic.name = ids.resolve(state, topic.topic_id);
            }
            Some(ids)
        }
        _ => None,
    }
}

/// Name the topics of `response` by id again, as the request did.
pub(crate) fn restore(ids: &TopicIds, response: &mut ResponseKind) {
    let unknown_topic = ResponseError::UnknownTopicOrPartition.code();
    let unknown_id = ResponseError::UnknownTopicId.code();
    match response {
        ResponseKind::Fetch(r) => {
            for topic in &mut r.responses {
                let (id, unknown) = ids.answer(&topic.topic);
                topic.topic_id = id;
                topic.topic = TopicName::default();
                for p in topic.partitions.iter_mut().filter(|_| unknown) {
                    if p.error_code == unknown_topic {
                        p.error_code = unknown_id;
                    }
                }
            }
        }
        ResponseKind::Produce(r) => {
            for topic in &mut r.responses {
                let (id, unknown) = ids.answer(&topic.name);
                topic.topic_id = id;
                topic.name = TopicName::default();
                for p in topic.partition_responses.iter_mut().filter(|_| unknown) {
                    if p.error_code == unknown_topic {
                        p.error_code = unknown_id;
                    }
                }
            }
        }
        _ => {}
    }
}
