//! Any bytes, decoded as a metadata command or a state snapshot (what every backend stores and
//! ships), give a value or a `CodecError`; a command that decodes applies to an empty state
//! and to the state it came with without a panic (apply is total). Run with
//! `cargo fuzz run metadata_codec` from `broker/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_backend_api::{MetadataCommand, MetadataState, StateView};

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = MetadataCommand::from_bytes(data) {
        let mut state = MetadataState::new();
        let _ = state.apply(&command);
        let _ = state.apply(&command);
    }
    if let Ok(view) = StateView::from_bytes(data) {
        let mut state = view.state;
        let _ = state.apply(&MetadataCommand::DeleteTopics {
            names: vec!["t".into()],
        });
    }
});
