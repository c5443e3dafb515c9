//! The shared conformance suite against `wal`. (The issue names this file
//! `tests/conformance.rs`; integration tests here live in the one `it` binary.)

/// One node, default (`sync`) configuration.
mod single {
    use switchyard_compat_tests::RegistryHarness;

    switchyard_compat_tests::conformance_tests!(RegistryHarness::new("wal"));
}
