//! The conformance cases. Each is `async fn(&dyn BackendHarness) -> anyhow::Result<()>` and
//! builds its own nodes; [`conformance_tests!`](crate::conformance_tests) turns the list into one
//! test per case.

pub mod batch;
pub mod cluster;
pub mod groups;
pub mod lifecycle;
pub mod offsets;
pub mod partitions;
pub mod producers;
pub mod security;
pub mod storage;
pub mod topics;
pub mod transactions;
