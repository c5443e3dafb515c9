//! Any bytes, decoded as a Kafka request frame, give a request or a `DecodeError` — never a
//! panic, a hang or an unbounded allocation. Run with
//! `cargo fuzz run decode_request` from `broker/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = switchyard::kafka::decode_request(bytes::Bytes::copy_from_slice(data));
});
