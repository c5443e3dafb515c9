//! The versioned binary encoding of commands, snapshots, log records and peer frames: one
//! format-version byte, then the value. Everything that goes to disk or over the wire uses it,
//! so a change of body format is a new version byte, and a build reads every version it knows.
//!
//! - Version 7 (written): [postcard](https://docs.rs/postcard) 1 — serde's data model with
//!   LEB128 variable-length integers, zigzag for signed ones, length-prefixed sequences and
//!   strings, enum variants by index. Its format is specified and stable across postcard 1.x,
//!   and one value has one encoding. Transactions carry their marker epoch.
//! - Version 6 (read only): the same body format, written before transactions had a marker
//!   epoch; it carries transactional producers. A transaction read from it that is being
//!   completed counts as decided once (its markers carry marker epoch 1, above the 0 every
//!   marker written before had).
//! - Version 5 (read only): the same body format, written before the metadata state had
//!   transactional producers; it carries dynamic broker configs.
//! - Version 4 (read only): the same body format, written before the metadata state had
//!   dynamic broker configs; brokers (and their registrations) carry their named listeners.
//! - Version 3 (read only): the same body format, written before brokers had named
//!   listeners.
//! - Version 2 (read only): the same body format, written before the metadata state had a
//!   security part.
//! - Version 1 (read only): bincode 2.0's standard configuration, as builds before format
//!   version 2 wrote it ([`bincode_v1`]), with version 2's types.
//!
//! A node that reads an older snapshot or record writes what it writes next in version 7.
//! Every format is non-self-describing: a value decodes only as the type that wrote it, and
//! the whole input must be that one value. A type that grew since an older version reads
//! [`body_version`] while it is decoded to know which fields the input has; new enum
//! variants are only ever appended, so older inputs never name them.

mod bincode_v1;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;

/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 7;

/// The last format version written before transactions had a marker epoch.
pub(crate) const POSTCARD_WITHOUT_MARKER_EPOCHS: u8 = 6;

/// The last format version written before the metadata state had transactions.
const POSTCARD_WITHOUT_TRANSACTIONS: u8 = 5;

/// The last format version written before the metadata state had dynamic broker configs.
const POSTCARD_WITHOUT_BROKER_CONFIGS: u8 = 4;

/// The last format version written before brokers had named listeners.
const POSTCARD_WITHOUT_LISTENERS: u8 = 3;

/// The last format version written before the metadata state had a security part.
const POSTCARD_WITHOUT_SECURITY: u8 = 2;

thread_local! {
    static BODY_VERSION: std::cell::Cell<u8> = const { std::cell::Cell::new(FORMAT_VERSION) };
}

/// The format version of the input being decoded on this thread ([`FORMAT_VERSION`] outside
/// [`decode`]).
pub(crate) fn body_version() -> u8 {
    BODY_VERSION.with(std::cell::Cell::get)
}

/// Decode with [`body_version`] saying `version`, restored afterwards.
fn as_version<T>(version: u8, decode: impl FnOnce() -> T) -> T {
    let outer = BODY_VERSION.with(|v| v.replace(version));
    let value = decode();
    BODY_VERSION.with(|v| v.set(outer));
    value
}

/// A field added in format version 4 (`#[serde(deserialize_with)]`): inputs of older
/// versions do not have it, and it reads as its default without consuming anything.
pub(crate) fn added_in_v4<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    added_in(4, deserializer)
}

/// A field added in format version 7, read as [`added_in_v4`] reads version 4's.
pub(crate) fn added_in_v7<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    added_in(7, deserializer)
}

fn added_in<'de, D, T>(version: u8, deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    if body_version() < version {
        Ok(T::default())
    } else {
        T::deserialize(deserializer)
    }
}

/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u8 = 1;

/// Largest body decode accepts. Readers of frames and records bound what they read by it, so a
/// corrupt length prefix cannot make them allocate more.
pub const MAX_DECODE_BYTES: usize = 256 << 20;

/// Encode `value` behind the format-version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_extend(value, vec![FORMAT_VERSION]).map_err(|e| CodecError::Encode(e.to_string()))
}

/// The length of [`encode`]'s output for `value`, computed without allocating it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map(|len: usize| len + 1)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode bytes written by [`encode`] (or by a build that wrote an older readable version).
/// The whole input must be one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if body.len() > MAX_DECODE_BYTES {
        return Err(CodecError::Malformed(format!(
            "{} bytes, more than the {MAX_DECODE_BYTES} a value may have",
            body.len()
        )));
    }
    match version {
        FORMAT_VERSION
        | POSTCARD_WITHOUT_MARKER_EPOCHS
        | POSTCARD_WITHOUT_TRANSACTIONS
        | POSTCARD_WITHOUT_BROKER_CONFIGS
        | POSTCARD_WITHOUT_LISTENERS
        | POSTCARD_WITHOUT_SECURITY => {
            let (value, rest) = as_version(version, || postcard::take_from_bytes(body))
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            match rest.len() {
                0 => Ok(value),
                left => Err(CodecError::TrailingBytes(left)),
            }
        }
        OLDEST_READABLE_VERSION => {
            let mut reader = bincode_v1::Reader::new(body);
            let value = as_version(version, || T::deserialize(&mut reader))
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            match reader.remaining() {
                0 => Ok(value),
                left => Err(CodecError::TrailingBytes(left)),
            }
        }
        found => Err(CodecError::UnsupportedVersion {
            found,
            oldest: OLDEST_READABLE_VERSION,
            newest: FORMAT_VERSION,
        }),
    }
}

impl crate::MetadataCommand {
    /// Encode for the log or the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        encode(self)
    }

    /// Decode bytes written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        decode(bytes)
    }
}

impl crate::StateView {
    /// Encode as a snapshot: the state and the index it covers.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        encode(self)
    }

    /// Decode a snapshot written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::{ClusterId, MetadataCommand};

    /// Every shape of serde's data model, for checking the version-1 reader against bincode.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Everything {
        flags: (bool, Option<bool>, ()),
        unsigned: (u8, u16, u32, u64, u128),
        signed: (i8, i16, i32, i64, i128),
        floats: (f32, f64),
        text: (char, String),
        bytes: Vec<u8>,
        seq: Vec<i64>,
        map: BTreeMap<String, u64>,
        shapes: Vec<Shape>,
        id: Id,
        uuid: uuid::Uuid,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    struct Id(u64);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(u32),
        Tuple(i8, String),
        Struct { x: i64, y: Option<bool> },
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unit),
            any::<u32>().prop_map(Shape::Newtype),
            (any::<i8>(), ".{0,8}").prop_map(|(a, b)| Shape::Tuple(a, b)),
            (any::<i64>(), any::<Option<bool>>()).prop_map(|(x, y)| Shape::Struct { x, y }),
        ]
    }

    fn everything() -> impl Strategy<Value = Everything> {
        (
            (any::<bool>(), any::<Option<bool>>()),
            (
                any::<u8>(),
                any::<u16>(),
                any::<u32>(),
                any::<u64>(),
                any::<u128>(),
            ),
            (
                any::<i8>(),
                any::<i16>(),
                any::<i32>(),
                any::<i64>(),
                any::<i128>(),
            ),
            (-1e30f32..1e30, -1e300f64..1e300),
            (any::<char>(), ".{0,40}"),
            (
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(any::<i64>(), 0..40),
            ),
            proptest::collection::btree_map(".{0,6}", any::<u64>(), 0..6),
            proptest::collection::vec(shape(), 0..6),
            (any::<u64>(), any::<u128>()),
        )
            .prop_map(
                |(flags, unsigned, signed, floats, text, (bytes, seq), map, shapes, (id, uuid))| {
                    Everything {
                        flags: (flags.0, flags.1, ()),
                        unsigned,
                        signed,
                        floats,
                        text,
                        bytes,
                        seq,
                        map,
                        shapes,
                        id: Id(id),
                        uuid: uuid::Uuid::from_u128(uuid),
                    }
                },
            )
    }

    /// What builds before format version 2 wrote: version byte 1, then bincode 2.0's standard
    /// configuration.
    fn bincode_v1<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = vec![OLDEST_READABLE_VERSION];
        let written =
            bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard());
        assert!(written.is_ok(), "{written:?}");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn version_1_reads_what_bincode_wrote(value in everything()) {
            let bytes = bincode_v1(&value);
            prop_assert_eq!(decode::<Everything>(&bytes), Ok(value));
            let truncated = &bytes[..bytes.len() - 1];
            prop_assert!(decode::<Everything>(truncated).is_err());
        }

        #[test]
        fn version_2_round_trips(value in everything()) {
            let bytes = encode(&value)?;
            prop_assert_eq!(bytes[0], FORMAT_VERSION);
            prop_assert_eq!(encoded_len(&value)?, bytes.len());
            prop_assert_eq!(decode::<Everything>(&bytes), Ok(value));
        }

        /// Arbitrary bytes behind either version decode or are refused; they never panic.
        #[test]
        fn any_body_decodes_or_is_refused(
            version in OLDEST_READABLE_VERSION..=FORMAT_VERSION,
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = vec![version];
            bytes.extend_from_slice(&body);
            let _ = decode::<Everything>(&bytes);
            let _ = decode::<MetadataCommand>(&bytes);
            let _ = decode::<crate::StateView>(&bytes);
        }
    }

    #[test]
    fn version_1_commands_and_snapshots_still_decode() -> Result<(), CodecError> {
        let command = MetadataCommand::DeleteTopics {
            names: vec!["a".into(), "b".into()],
        };
        assert_eq!(decode::<MetadataCommand>(&bincode_v1(&command))?, command);
        let view = crate::StateView {
            applied_index: 3,
            state: crate::MetadataState::new(),
        };
        // An empty state as version 1 wrote it: seven fields, no security part.
        let empty = BTreeMap::<u8, u8>::new();
        let written = (
            3u64,
            (
                None::<ClusterId>,
                &empty,
                &empty,
                &empty,
                &empty,
                &empty,
                0i64,
            ),
        );
        assert_eq!(decode::<crate::StateView>(&bincode_v1(&written))?, view);
        Ok(())
    }

    #[test]
    fn round_trips_and_refuses_other_versions() -> Result<(), CodecError> {
        let cmd = MetadataCommand::InitCluster {
            cluster_id: ClusterId("c1".into()),
        };
        let mut bytes = encode(&cmd)?;
        assert_eq!(decode::<MetadataCommand>(&bytes)?, cmd);
        assert_eq!(encoded_len(&cmd)?, bytes.len());

        for found in [0, FORMAT_VERSION + 1, u8::MAX] {
            bytes[0] = found;
            assert_eq!(
                decode::<MetadataCommand>(&bytes),
                Err(CodecError::UnsupportedVersion {
                    found,
                    oldest: OLDEST_READABLE_VERSION,
                    newest: FORMAT_VERSION
                })
            );
        }
        assert_eq!(decode::<MetadataCommand>(&[]), Err(CodecError::Empty));
        Ok(())
    }

    #[test]
    fn refuses_truncated_and_padded_input() -> Result<(), CodecError> {
        let cmd = MetadataCommand::DeleteTopics {
            names: vec!["a".into(), "b".into()],
        };
        let bytes = encode(&cmd)?;
        let truncated = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode::<MetadataCommand>(truncated),
            Err(CodecError::Malformed(_))
        ));
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(
            decode::<MetadataCommand>(&padded),
            Err(CodecError::TrailingBytes(1))
        );
        Ok(())
    }

    /// Found by the `metadata_codec` fuzz target: a snapshot of 18 bytes whose topic map claims
    /// billions of entries made the decoder reserve 614 GB and abort the process.
    #[test]
    fn a_snapshot_claiming_billions_of_entries_is_malformed_not_an_abort() {
        let bytes = [
            0x01, 0x05, 0x00, 0x00, 0xfc, 0xff, 0x00, 0xe4, 0xe4, 0xe4, 0xe4, 0xe4, 0xe4, 0x01,
            0x05, 0x00, 0x00, 0x00,
        ];
        assert!(matches!(
            crate::StateView::from_bytes(&bytes),
            Err(CodecError::Malformed(_))
        ));
    }

    /// A registration written by a build without named listeners (format version 3: the
    /// same fields, without the listeners at the end) reads with no listeners; so does a
    /// snapshot holding the broker it registered.
    #[test]
    fn version_3_registrations_read_without_listeners() -> Result<(), CodecError> {
        let command = MetadataCommand::RegisterBroker {
            id: crate::BrokerId(4),
            host: "h".into(),
            port: 9092,
            rack: Some("r".into()),
            listeners: Vec::new(),
        };
        let mut bytes = encode(&command)?;
        // The empty list's length (one byte, 0) is the last byte: version 3 had none.
        assert_eq!(bytes.pop(), Some(0));
        bytes[0] = POSTCARD_WITHOUT_LISTENERS;
        assert_eq!(decode::<MetadataCommand>(&bytes)?, command);

        let mut state = crate::MetadataState::new();
        assert!(state.apply(&command).is_ok());
        let broker = state.broker(crate::BrokerId(4)).cloned();
        let broker = broker.ok_or(CodecError::Empty)?;
        let mut bytes = encode(&broker)?;
        assert_eq!(bytes.pop(), Some(0));
        bytes[0] = POSTCARD_WITHOUT_LISTENERS;
        assert_eq!(decode::<crate::Broker>(&bytes)?, broker);
        assert_eq!(broker.endpoint("ANYTHING"), Some(("h", 9092)));
        Ok(())
    }

    /// A snapshot whose dynamic broker configs claim a map of about 2^60 entries inside one
    /// broker's entry is refused, not allocated (found by the `metadata_codec` fuzz target;
    /// the bytes are its seed `broker-configs-huge-inner-map`).
    #[test]
    fn a_huge_broker_config_map_is_refused_not_allocated() {
        let bytes = [
            0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x99, 0x01, 0x00, 0x00, 0xfe, 0xcd,
            0xcd, 0x99, 0x02, 0x00, 0x00, 0x00, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0x37,
            0xc1, 0xc1, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x02, 0x00, 0xff,
        ];
        assert!(decode::<crate::StateView>(&bytes).is_err());
    }

    /// Snapshots written before transactions (format version 5) and before dynamic broker
    /// configs (version 4: the same fields, without those at the end) read with none; one
    /// with them round-trips.
    #[test]
    fn older_snapshots_read_without_broker_configs_or_transactions() -> Result<(), CodecError> {
        let mut state = crate::MetadataState::new();
        let init = MetadataCommand::InitCluster {
            cluster_id: ClusterId("c".into()),
        };
        assert!(state.apply(&init).is_ok());
        let mut bytes = encode(&state)?;
        // The two empty maps' lengths (one byte each, 0) end it: version 5 had no
        // transactions, version 4 neither broker configs.
        assert_eq!(bytes.pop(), Some(0));
        bytes[0] = POSTCARD_WITHOUT_TRANSACTIONS;
        assert_eq!(decode::<crate::MetadataState>(&bytes)?, state);
        assert_eq!(bytes.pop(), Some(0));
        bytes[0] = POSTCARD_WITHOUT_BROKER_CONFIGS;
        assert_eq!(decode::<crate::MetadataState>(&bytes)?, state);

        let alter = MetadataCommand::AlterBrokerConfigs {
            broker: None,
            set: vec![("log.retention.ms".into(), "1000".into())],
            remove: Vec::new(),
        };
        assert!(state.apply(&alter).is_ok());
        assert!(state.apply(&init_transactional_id("t")).is_ok());
        let decoded = decode::<crate::MetadataState>(&encode(&state)?)?;
        assert_eq!(decoded, state);
        assert!(decoded.transaction("t").is_some());
        assert_eq!(
            decoded
                .broker_configs(None)
                .and_then(|c| c.get("log.retention.ms"))
                .map(String::as_str),
            Some("1000")
        );
        Ok(())
    }

    /// A snapshot written before transactions had a marker epoch (format version 6: the same
    /// fields, without the epoch at the end of each transaction) reads an open transaction at
    /// marker epoch 0 and one being completed at 1, above the markers written before.
    /// A first `InitTransactionalId` of `id`.
    fn init_transactional_id(id: &str) -> MetadataCommand {
        MetadataCommand::InitTransactionalId {
            transactional_id: id.into(),
            timeout_ms: 1000,
            current: None,
            now_ms: 0,
        }
    }

    #[test]
    fn version_6_transactions_read_with_their_marker_epoch() -> Result<(), CodecError> {
        let mut state = crate::MetadataState::new();
        assert!(state.apply(&init_transactional_id("t")).is_ok());
        let add = MetadataCommand::AddToTxn {
            transactional_id: "t".into(),
            producer_id: 0,
            producer_epoch: 0,
            partitions: Vec::new(),
            groups: Vec::new(),
            now_ms: 1,
        };
        assert!(state.apply(&add).is_ok());
        let mut bytes = encode(&state)?;
        // The only transaction's marker epoch (0, one byte) ends the snapshot.
        assert_eq!(bytes.pop(), Some(0));
        bytes[0] = POSTCARD_WITHOUT_MARKER_EPOCHS;
        assert_eq!(decode::<crate::MetadataState>(&bytes)?, state);

        let end = MetadataCommand::EndTxn {
            transactional_id: "t".into(),
            producer_id: 0,
            producer_epoch: 0,
            commit: true,
            now_ms: 2,
        };
        assert!(state.apply(&end).is_ok());
        let marker_epoch = state.transaction("t").map(|t| t.marker_epoch);
        assert_eq!(marker_epoch, Some(1), "the commit is the first decision");
        let mut bytes = encode(&state)?;
        // 1, zigzag-encoded.
        assert_eq!(bytes.pop(), Some(2));
        bytes[0] = POSTCARD_WITHOUT_MARKER_EPOCHS;
        assert_eq!(decode::<crate::MetadataState>(&bytes)?, state);
        Ok(())
    }

    #[test]
    fn a_snapshot_round_trips() -> Result<(), CodecError> {
        let mut state = crate::MetadataState::new();
        let commands = [
            MetadataCommand::InitCluster {
                cluster_id: ClusterId("c".into()),
            },
            MetadataCommand::RegisterBroker {
                id: crate::BrokerId(1),
                host: "h".into(),
                port: 1,
                rack: None,
                listeners: vec![crate::BrokerEndpoint {
                    name: "EXTERNAL".into(),
                    host: "e".into(),
                    port: 2,
                }],
            },
            MetadataCommand::CreateTopics {
                topics: vec![crate::NewTopic {
                    name: "t".into(),
                    id: crate::TopicId(uuid::Uuid::nil()),
                    assignments: vec![vec![crate::BrokerId(1)]; 3],
                    configs: vec![("retention.ms".into(), "5".into())],
                }],
            },
        ];
        for command in &commands {
            let _ = state.apply(command);
        }
        let view = crate::StateView {
            applied_index: 3,
            state,
        };
        assert_eq!(crate::StateView::from_bytes(&view.to_bytes()?)?, view);
        Ok(())
    }
}
