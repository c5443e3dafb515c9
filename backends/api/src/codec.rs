//! The versioned binary encoding of commands and snapshots: one format-version byte, then the
//! value in bincode 2's standard configuration. Everything that goes to disk or over the wire
//! uses it, so a later change of body format only needs a new version byte.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Largest body decode will accept; a corrupt length prefix inside the body cannot make it
/// allocate more than this.
pub const MAX_DECODE_BYTES: usize = 256 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encode `value` behind the format-version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// The length of [`encode`]'s output for `value`, computed without allocating it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut counter = Counter(1);
    bincode::serde::encode_into_std_write(value, &mut counter, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(counter.0)
}

/// A writer that only counts.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decode bytes written by [`encode`]. The whole input must be one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes(body.len() - used));
    }
    Ok(value)
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
    use super::*;
    use crate::{ClusterId, MetadataCommand};

    #[test]
    fn round_trips_and_refuses_other_versions() -> Result<(), CodecError> {
        let cmd = MetadataCommand::InitCluster {
            cluster_id: ClusterId("c1".into()),
        };
        let mut bytes = encode(&cmd)?;
        assert_eq!(decode::<MetadataCommand>(&bytes)?, cmd);
        assert_eq!(encoded_len(&cmd)?, bytes.len());

        bytes[0] = FORMAT_VERSION + 1;
        assert_eq!(
            decode::<MetadataCommand>(&bytes),
            Err(CodecError::UnsupportedVersion {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            })
        );
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
