//! DescribeLogDirs: the one log directory of this broker (`<data_dir>/logs`), the partitions
//! it holds with their sizes, and (version 4) the size and free space of its volume.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use switchyard_backend_api::{BrokerId, MetadataState};

use crate::broker::Broker;
use crate::kafka::handlers::configs::BrokerDefaults;
use crate::kafka::handlers::kstr;
use crate::replicas::Replicas;

/// DescribeLogDirs, versions 1–4 (Kafka 4 serves no version 0): every partition the metadata
/// places on this broker (or those of them asked for), its size; this broker does not move
/// partitions between directories, so no lag and no future replicas.
pub(crate) async fn describe(
    broker: &Broker,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let replicas = Arc::clone(broker.replicas());
    let view = broker.metadata();
    let me = broker.id();
    let dynamic = BrokerDefaults::of(broker, &view.state).dynamic_topic_defaults();
    // A partition's log may not be open yet (logs open on first use): opening it reads the
    // disk, as does the volume's size.
    let described = tokio::task::spawn_blocking(move || {
        describe_dir(&replicas, &view.state, (me, &dynamic), wanted.as_ref())
    })
    .await;
    match described {
        Ok(result) => DescribeLogDirsResponse::default().with_results(vec![result]),
        Err(_) => DescribeLogDirsResponse::default()
            .with_error_code(ResponseError::KafkaStorageError.code()),
    }
}

fn describe_dir(
    replicas: &Replicas,
    state: &MetadataState,
    (me, dynamic): (BrokerId, &BTreeMap<String, String>),
    wanted: Option<&BTreeMap<String, Vec<i32>>>,
) -> DescribeLogDirsResult {
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for topic in state.topics() {
        let mut configs = dynamic.clone();
        configs.extend(topic.configs.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (index, p) in topic.partitions.iter().enumerate() {
            let Ok(partition) = i32::try_from(index) else {
                continue;
            };
            let asked =
                wanted.is_none_or(|w| w.get(&topic.name).is_some_and(|ps| ps.contains(&partition)));
            if !asked || !p.replicas.contains(&me) {
                continue;
            }
            let size = match replicas.get_or_open(&topic.name, partition, &configs) {
                Ok(replica) => i64::try_from(replica.log().size_bytes()).unwrap_or(i64::MAX),
                Err(_) => continue,
            };
            topics.entry(topic.name.clone()).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(partition)
                    .with_partition_size(size)
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            );
        }
    }
    let dir = replicas.logs_dir();
    let (total, usable) = match rustix::fs::statvfs(dir) {
        Ok(fs) => {
            let bytes =
                |blocks: u64| i64::try_from(blocks.saturating_mul(fs.f_frsize)).unwrap_or(i64::MAX);
            (bytes(fs.f_blocks), bytes(fs.f_bavail))
        }
        Err(_) => (-1, -1),
    };
    DescribeLogDirsResult::default()
        .with_log_dir(kstr(dir.display().to_string()))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(kstr(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_total_bytes(total)
        .with_usable_bytes(usable)
}
