//! Data directories written by an older build still open: `tests/fixtures/data-5374a8b/`
//! holds one single-node data directory per durable backend, written by the binary of commit
//! 5374a8b (metadata in codec format version 1; `generate.py` there says how). Today's build
//! opens a copy of each, serves what it holds — topics, committed offsets, the producer-id
//! counter, the records — takes new writes (in today's format), and opens again after that.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use figment::providers::Serialized;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, GroupId as KafkaGroupId, ListOffsetsRequest, OffsetFetchRequest,
    RequestKind, ResponseKind, TopicName,
};
use switchyard::backends::LINKED_BACKENDS;
use switchyard::config::{Config, Overrides, defaults};
use switchyard::serve::Node;
use switchyard_backend_api::GroupId;
use tokio::net::TcpStream;

use crate::every_api::call;
use crate::support::s;

/// A restarted single node registers within this (a `raft` node elects itself first).
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Records per partition of topic `fixture`, and in topic `second`.
const FIXTURE_RECORDS: i64 = 10;
const SECOND_RECORDS: i64 = 5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-5374a8b")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

async fn start(backend: &str, data_dir: &Path) -> anyhow::Result<Node> {
    let overrides = Overrides {
        metadata_backend: Some(backend.to_owned()),
        data_dir: Some(data_dir.to_owned()),
        listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let config = Config::from_figment(defaults().merge(Serialized::defaults(&overrides)))?;
    let node = Node::start(&config).await?;
    let mut registered = node.broker().registration();
    tokio::time::timeout(START_DEADLINE, registered.wait_for(|r| *r))
        .await
        .with_context(|| format!("{backend}: no registration within {START_DEADLINE:?}"))??;
    Ok(node)
}

/// The latest offset of each of `topic`'s `partitions`.
async fn latest_offsets(
    stream: &mut TcpStream,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let request = RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(
                        (0..partitions)
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    ),
            ]),
    );
    let ResponseKind::ListOffsets(response) =
        call(stream, ApiKey::ListOffsets, 5, 1, &request).await?
    else {
        bail!("not a ListOffsets response");
    };
    let mut offsets = Vec::new();
    for partition in response.topics.iter().flat_map(|t| &t.partitions) {
        ensure!(partition.error_code == 0, "{topic}: {partition:?}");
        offsets.push(partition.offset);
    }
    Ok(offsets)
}

/// What `generate.py` wrote is there, through the metadata and through Kafka requests.
async fn check_fixture(node: &Node, backend: &str) -> anyhow::Result<()> {
    let view = node.backend().local();
    let state = &view.state;
    for (topic, partitions) in [("fixture", 3), ("second", 1)] {
        let found = state
            .topic(topic)
            .with_context(|| format!("{backend}: topic {topic} missing"))?;
        ensure!(found.partitions.len() == partitions, "{backend}: {found:?}");
    }
    let group = GroupId("fixture-group".into());
    for partition in 0..3 {
        let committed = state
            .committed_offset(&group, "fixture", partition)
            .with_context(|| format!("{backend}: no committed offset for fixture-{partition}"))?;
        ensure!(committed.offset == 10, "{backend}: {committed:?}");
    }
    ensure!(
        state.next_producer_id() > 0,
        "{backend}: the idempotent producer's id block is gone"
    );

    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let fixture = latest_offsets(&mut stream, "fixture", 3).await?;
    ensure!(fixture == [FIXTURE_RECORDS; 3], "{backend}: {fixture:?}");
    let second = latest_offsets(&mut stream, "second", 1).await?;
    ensure!(second == [SECOND_RECORDS], "{backend}: {second:?}");
    let fetch = RequestKind::OffsetFetch(
        OffsetFetchRequest::default()
            .with_group_id(KafkaGroupId(s("fixture-group")))
            .with_topics(None),
    );
    let ResponseKind::OffsetFetch(offsets) =
        call(&mut stream, ApiKey::OffsetFetch, 5, 2, &fetch).await?
    else {
        bail!("not an OffsetFetch response");
    };
    let committed: Vec<i64> = offsets
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.committed_offset)
        .collect();
    ensure!(committed == [10, 10, 10], "{backend}: {offsets:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_written_by_5374a8b_open_serve_and_take_writes() -> anyhow::Result<()> {
    let mut opened = Vec::new();
    for entry in std::fs::read_dir(fixtures())? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let backend = entry.file_name().to_string_lossy().into_owned();
        if !LINKED_BACKENDS.contains(&backend.as_str()) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        copy_dir(&entry.path(), dir.path())?;

        let node = start(&backend, dir.path()).await?;
        check_fixture(&node, &backend).await?;
        let mut stream = TcpStream::connect(node.kafka_addr()).await?;
        let create = RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(s("after-upgrade")))
                        .with_num_partitions(2)
                        .with_replication_factor(1),
                ]),
        );
        let ResponseKind::CreateTopics(created) =
            call(&mut stream, ApiKey::CreateTopics, 5, 1, &create).await?
        else {
            bail!("not a CreateTopics response");
        };
        ensure!(
            created.topics.iter().all(|t| t.error_code == 0),
            "{backend}: {created:?}"
        );
        drop(stream);
        node.shutdown().await?;

        // Reopened: the old entries and the new one, written in today's format, together.
        let node = start(&backend, dir.path()).await?;
        check_fixture(&node, &backend).await?;
        let view = node.backend().local();
        ensure!(
            view.state
                .topic("after-upgrade")
                .is_some_and(|t| t.partitions.len() == 2),
            "{backend}: the topic created after the upgrade is gone"
        );
        node.shutdown().await?;
        opened.push(backend);
    }
    let durable = LINKED_BACKENDS.iter().any(|b| *b != "memory");
    ensure!(
        !durable || !opened.is_empty(),
        "no fixture for any of the linked backends {LINKED_BACKENDS:?}"
    );
    Ok(())
}
