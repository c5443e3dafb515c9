//! The Kafka side of the broker: listener, request dispatch, one handler module per API, and
//! the mapping from metadata errors to Kafka error codes. This is the only place in the
//! workspace that knows the Kafka wire format (through the `kafka-protocol` crate).

mod authorize;
pub mod client;
pub(crate) mod dispatch;
pub(crate) mod errors;
pub(crate) mod frame;
pub(crate) mod handlers;
pub mod sasl;
pub mod server;
pub mod tls;
mod versions;

pub use dispatch::{DecodeError, Decoded, decode_request};

/// The name Kafka gives the metadata log (DescribeQuorum's topic).
pub const METADATA_TOPIC: &str = "__cluster_metadata";
