//! Integration tests of the `switchyard` crate and binary, as one test binary.
//!
//! - `registry` — the registry holds exactly the backends the crate says it links.
//! - `cli` — the real `switchyard` binary: `backends`, `serve` start-up, errors and shutdown.
//! - `process` — running the binary with a deadline on every wait.
//! - `every_api` — every advertised API at every advertised version answers a decodable response.
//! - `groups` — the group coordinator against clients that misbehave or die.
//! - `listeners` — named Kafka listeners: endpoints per listener, inter-broker-only requests.
//! - `hostile` — attacks that used to crash, wedge or mislead a node: limits and refusals.
//! - `epochs` — OffsetForLeaderEpoch against a partition with records.
//! - `support` — what the Kafka-level tests share: a node with settings, strings, batches.
//! - `wire` — the Kafka listener against bad, truncated, oversized and pipelined input.

mod cli;
mod epochs;
mod every_api;
mod fixtures;
mod groups;
mod hostile;
mod listeners;
mod process;
mod registry;
mod sasl;
mod support;
mod tls;
mod wire;
