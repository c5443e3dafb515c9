//! Any bytes, scanned as a `wal` segment (CRC-framed records, each a metadata command) or read
//! as a `wal` snapshot file, give records or an error — never a panic, a hang or an unbounded
//! allocation. The CRCs are also made valid so the fuzzer reaches the bodies. Run with
//! `cargo fuzz run wal_records` from `broker/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_backend_wal::fuzzing::wal_records(data);
    switchyard_backend_wal::fuzzing::wal_snapshot(data);
});
