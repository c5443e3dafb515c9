//! The shared conformance suite against `hybrid`.
//!
//! - `single`: one node, default configuration, through the registry.
//! - `three`: three-node clusters through `TrioHarness`: every case writes through the
//!   elected leader, and the followers must reach the leader's state.

/// One node, default configuration.
mod single {
    use switchyard_compat_tests::RegistryHarness;

    switchyard_compat_tests::conformance_tests!(RegistryHarness::new("hybrid"));
}

/// Three nodes.
mod three {
    use switchyard_compat_tests::TrioHarness;

    switchyard_compat_tests::conformance_tests!(TrioHarness::new("hybrid"));
}
