//! Integration tests of the `raft` backend: the shared conformance suite on one node and on
//! three-node clusters, the kill-leader and restart test, and membership changes 1 → 3 → 1
//! with writes flowing, catch-up from a chunked snapshot, and seeded fault runs (`nemesis`).

use switchyard_backend_raft as _;

mod conformance;
mod failover;
mod membership;
mod nemesis;
mod snapshot;
mod support;
