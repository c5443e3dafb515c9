//! The conformance suite against the in-memory reference backend.

switchyard_compat_tests::conformance_tests!(switchyard_compat_tests::RegistryHarness::new(
    "memory"
));
