//! Property tests of the metadata state machine: determinism through the codec, snapshot plus
//! replay, totality, and "a rejection changes nothing".

mod strategies;

use proptest::prelude::*;
use switchyard_backend_api::{MetadataCommand, MetadataState, StateView};

use strategies::{any_command, command_sequence};

fn replay(commands: &[MetadataCommand]) -> (MetadataState, Vec<String>) {
    let mut state = MetadataState::new();
    let verdicts = commands
        .iter()
        .map(|c| format!("{:?}", state.apply(c)))
        .collect();
    (state, verdicts)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Applying every command after an encode/decode round trip reaches the same state and the
    /// same verdicts as applying the originals.
    #[test]
    fn codec_round_trip_preserves_apply(commands in command_sequence()) {
        let (direct, direct_verdicts) = replay(&commands);
        let decoded: Vec<MetadataCommand> = commands
            .iter()
            .map(|c| MetadataCommand::from_bytes(&c.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?)
                .map_err(|e| TestCaseError::fail(e.to_string())))
            .collect::<Result<_, _>>()?;
        prop_assert_eq!(&decoded, &commands);
        let (via_codec, codec_verdicts) = replay(&decoded);
        prop_assert_eq!(direct_verdicts, codec_verdicts);
        prop_assert_eq!(direct, via_codec);
    }

    /// A snapshot taken after any prefix, encoded and decoded, followed by the tail, equals the
    /// full replay.
    #[test]
    fn snapshot_then_tail_equals_full_replay(
        commands in command_sequence(),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(commands.len() + 1);
        let (full, _) = replay(&commands);
        let (prefix, _) = replay(&commands[..cut]);
        let snapshot = StateView { applied_index: cut as u64, state: prefix };
        let bytes = snapshot.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut restored = StateView::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(restored.applied_index, cut as u64);
        for command in &commands[cut..] {
            let _ = restored.state.apply(command);
        }
        prop_assert_eq!(restored.state, full);
    }

    /// A rejected command leaves the state exactly as it was.
    #[test]
    fn rejection_changes_nothing(commands in command_sequence()) {
        let mut state = MetadataState::new();
        for command in &commands {
            let before = state.clone();
            if state.apply(command).is_err() {
                prop_assert_eq!(&state, &before);
            }
        }
    }

    /// Apply is total: unconstrained commands (any ids, names, counts, offsets) never panic.
    #[test]
    fn apply_is_total(commands in prop::collection::vec(any_command(), 0..40)) {
        let mut state = MetadataState::new();
        for command in &commands {
            let _ = state.apply(command);
        }
    }
}
