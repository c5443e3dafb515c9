//! Integration tests of the `switchyard` crate and binary, as one test binary.
//!
//! - `registry` — the registry holds exactly the backends the crate says it links.
//! - `cli` — the real `switchyard` binary: `backends`, `serve` start-up, errors and shutdown.
//! - `process` — running the binary with a deadline on every wait.
//! - `epochs` — OffsetForLeaderEpoch against a partition with records.
//! - `wire` — the Kafka listener against bad, truncated, oversized and pipelined input.

mod cli;
mod epochs;
mod process;
mod registry;
mod wire;
