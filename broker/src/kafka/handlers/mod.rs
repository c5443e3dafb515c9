//! One module per Kafka API (or family of APIs). Each handler takes the broker, the request's
//! version and the decoded request, and returns the response; errors travel as Kafka error
//! codes inside the response, never as Rust errors.

pub(crate) mod acls;
pub(crate) mod api_versions;
pub(crate) mod cluster;
pub(crate) mod configs;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod leader_epochs;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod offsets;
pub(crate) mod partitions;
pub(crate) mod produce;
pub(crate) mod producers;
pub(crate) mod topics;
pub(crate) mod users;

use kafka_protocol::protocol::StrBytes;

/// A Kafka string from a Rust one.
pub(crate) fn kstr(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
