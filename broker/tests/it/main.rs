//! Integration tests of the `switchyard` crate and binary, as one test binary.
//!
//! - `registry` — the registry holds exactly the backends the crate says it links.
//! - `cli` — the real `switchyard` binary: `backends`, `serve` start-up, errors and shutdown.
//! - `process` — running the binary with a deadline on every wait.
//! - `wire` — the Kafka listener against bad, truncated, oversized and pipelined input.

mod cli;
mod process;
mod registry;
mod wire;
