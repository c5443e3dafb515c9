//! The shared conformance suite against `wal`. (The issue names this file
//! `tests/conformance.rs`; integration tests here live in the one `it` binary.)
//!
//! - `single`: one node, default (`sync`) configuration, through the registry.
//! - `sync3`, `async3`: three-node clusters in each mode through [`TrioHarness`]: every case
//!   writes through the primary of a replicated cluster.

/// One node, default (`sync`) configuration.
mod single {
    use switchyard_compat_tests::RegistryHarness;

    switchyard_compat_tests::conformance_tests!(RegistryHarness::new("wal"));
}

/// Three nodes, `sync` mode.
mod sync3 {
    use switchyard_compat_tests::TrioHarness;

    switchyard_compat_tests::conformance_tests!(
        TrioHarness::new("wal").declaring(switchyard_backend_wal::SYNC_GUARANTEES)
    );
}

/// Three nodes, `async` mode.
mod async3 {
    use switchyard_compat_tests::TrioHarness;

    switchyard_compat_tests::conformance_tests!(
        TrioHarness::new("wal")
            .with_config(figment::Figment::from(
                figment::providers::Serialized::default("mode", "async")
            ))
            .declaring(switchyard_backend_wal::ASYNC_GUARANTEES)
    );
}
