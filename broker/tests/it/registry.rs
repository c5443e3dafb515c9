//! The registry and [`LINKED_BACKENDS`] agree.

use switchyard::backends::LINKED_BACKENDS;
use switchyard_backend_api::available_backends;

#[test]
fn registry_holds_exactly_the_linked_backends() {
    let mut registered: Vec<&str> = available_backends().iter().map(|r| r.name).collect();
    registered.sort_unstable();
    let mut linked = LINKED_BACKENDS.to_vec();
    linked.sort_unstable();
    assert_eq!(registered, linked);
}

#[test]
fn memory_is_always_linked() {
    assert!(LINKED_BACKENDS.contains(&"memory"));
}
