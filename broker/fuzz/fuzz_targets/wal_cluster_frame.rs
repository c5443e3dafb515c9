//! Any bytes, decoded as the body of a frame on the `wal` backend's cluster port (handshakes,
//! appends, snapshot chunks, votes of the embedding backend), give a message or an error.
//! Run with `cargo fuzz run wal_cluster_frame` from `broker/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_backend_wal::fuzzing::wal_cluster_frame(data);
});
