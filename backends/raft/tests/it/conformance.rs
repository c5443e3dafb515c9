//! The shared conformance suite against `raft`.
//!
//! - `single`: one node, default configuration, through the registry.
//! - `three`: three-node clusters through `TrioHarness`: every case writes through the
//!   leader of a replicated cluster, and the followers must reach the leader's state.

/// One node, default configuration.
mod single {
    use switchyard_compat_tests::RegistryHarness;

    switchyard_compat_tests::conformance_tests!(RegistryHarness::new("raft"));
}

/// Three nodes.
mod three {
    use switchyard_compat_tests::TrioHarness;

    switchyard_compat_tests::conformance_tests!(TrioHarness::new("raft"));
}
