//! One module per Kafka API (or family of APIs). Each handler takes the broker, the request's
//! version and the decoded request, and returns the response; errors travel as Kafka error
//! codes inside the response, never as Rust errors.

pub(crate) mod acls;
pub(crate) mod api_versions;
pub(crate) mod cluster;
pub(crate) mod configs;
pub(crate) mod elect;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod leader_epochs;
pub(crate) mod list_offsets;
pub(crate) mod log_dirs;
pub(crate) mod metadata;
pub(crate) mod offsets;
pub(crate) mod partitions;
pub(crate) mod produce;
pub(crate) mod producers;
pub(crate) mod records;
pub(crate) mod snapshots;
pub(crate) mod topics;
pub(crate) mod transactions;
pub(crate) mod users;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::{MetadataCommand, MetadataState};

use crate::broker::Broker;
use crate::kafka::errors::{metadata_error, rejection_error};

/// A Kafka string from a Rust one.
pub(crate) fn kstr(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A request's answer for one of its objects (a topic, a resource): done, or a Kafka error
/// with its message.
pub(crate) type Verdict = Result<(), (ResponseError, String)>;

/// The error code and message a [`Verdict`] answers with.
pub(crate) fn verdict_parts(verdict: Verdict) -> (i16, Option<StrBytes>) {
    match verdict {
        Ok(()) => (0, None),
        Err((error, message)) => (error.code(), Some(kstr(message))),
    }
}

/// Propose `command`, planned against `state`; with `validate_only`, apply it to a copy of
/// `state` instead (O(1) with the persistent collections) and answer with apply's verdict,
/// which is the one the proposal would get.
pub(crate) async fn propose_or_validate(
    broker: &Broker,
    state: &MetadataState,
    command: MetadataCommand,
    validate_only: bool,
) -> Verdict {
    if validate_only {
        let mut trial = state.clone();
        return trial
            .apply(&command)
            .map(drop)
            .map_err(|r| (rejection_error(&r), r.to_string()));
    }
    broker
        .propose(command)
        .await
        .map(drop)
        .map_err(|e| (metadata_error(&e), e.to_string()))
}
