//! What the Kafka-level tests share: a `memory` node with chosen settings, Kafka strings and
//! record batches.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use figment::providers::Serialized;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use switchyard::config::{Config, Overrides, defaults};
use switchyard::serve::Node;
use switchyard_backend_api::ClusterSecret;

/// How long a test waits for any one thing.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// A registered `memory` node in `dir`, its Kafka listener on a free loopback port, with
/// `settings` (keys of the `[kafka]` table) over the defaults.
pub(crate) async fn start_memory(
    dir: &tempfile::TempDir,
    settings: &[(&str, i64)],
) -> anyhow::Result<Node> {
    let overrides = Overrides {
        metadata_backend: Some("memory".into()),
        data_dir: Some(dir.path().to_owned()),
        listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let mut figment = defaults().merge(Serialized::defaults(&overrides));
    for (key, value) in settings {
        figment = figment.merge(Serialized::default(&format!("kafka.{key}"), *value));
    }
    let node = Node::start(&Config::from_figment(figment)?).await?;
    let mut registered = node.broker().registration();
    tokio::time::timeout(DEADLINE, registered.wait_for(|r| *r)).await??;
    Ok(node)
}

/// A memory-backed node with a cluster secret (returned) and these `[kafka]` settings, once
/// registered.
pub(crate) async fn start_secured(
    dir: &tempfile::TempDir,
    kafka: &[(&str, String)],
) -> anyhow::Result<(Node, ClusterSecret)> {
    let secret = ClusterSecret::generate();
    let secret_file = dir.path().join("cluster.secret");
    std::fs::write(&secret_file, secret.to_file_contents())?;
    let overrides = Overrides {
        metadata_backend: Some("memory".into()),
        data_dir: Some(dir.path().join("data")),
        listen: Some("127.0.0.1:0".into()),
        cluster_secret_file: Some(secret_file),
        ..Overrides::default()
    };
    let mut figment = defaults().merge(Serialized::defaults(&overrides));
    for (key, value) in kafka {
        figment = figment.merge(Serialized::default(&format!("kafka.{key}"), value));
    }
    let node = Node::start(&Config::from_figment(figment)?).await?;
    let mut registered = node.broker().registration();
    tokio::time::timeout(DEADLINE, registered.wait_for(|r| *r)).await??;
    Ok((node, secret))
}

/// A Kafka string.
pub(crate) fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// One v2 batch of `values` uncompressed records of `value_bytes` bytes each.
pub(crate) fn record_batch(values: usize, value_bytes: usize) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = (0..values)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(i).unwrap_or(0),
            // The encoder puts records whose offset minus sequence agree in one batch.
            sequence: i32::try_from(i).unwrap_or(0),
            timestamp: 1_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(vec![b'v'; value_bytes])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}
