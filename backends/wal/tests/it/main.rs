//! Integration tests of the `wal` backend: the shared conformance suite (one node, and three
//! nodes in `sync` and `async` mode) and WAL-specific recovery, snapshot and replication
//! tests.

use switchyard_backend_wal as _;

mod conformance;
mod recovery;
mod replication;
mod support;
mod trio;
