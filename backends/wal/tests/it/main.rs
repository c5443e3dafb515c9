//! Integration tests of the `wal` backend: the shared conformance suite (one node, and three
//! nodes in `sync` and `async` mode), seeded fault runs with the broken variants the checkers
//! must catch (`nemesis`), and WAL-specific recovery, snapshot, replication and membership tests.

use switchyard_backend_wal as _;

mod conformance;
mod membership;
mod nemesis;
mod recovery;
mod replication;
mod support;
