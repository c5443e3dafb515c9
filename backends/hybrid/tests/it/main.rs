//! Integration tests of the `hybrid` backend: the shared conformance suite on one node and on
//! three-node clusters, the fault tests — kill the leader, restart it, isolate it behind
//! real TCP proxies (`switchyard_compat_tests::Network`) — seeded fault runs (`nemesis`), and
//! membership changes online (1 → 3 → 1).

use switchyard_backend_hybrid as _;

mod conformance;
mod faults;
mod in_sync;
mod membership;
mod nemesis;
