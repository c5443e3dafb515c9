//! OffsetForLeaderEpoch over real TCP to an in-process node: where each leader epoch of a
//! partition ends, and the fencing of a client's current leader epoch.

use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, OffsetForLeaderEpochRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use switchyard::kafka::client::PeerClient;
use switchyard_backend_api::MetadataCommand;

const DEADLINE: Duration = Duration::from_secs(10);
const TOPIC: &str = "epochs";

fn batch(values: &[&str]) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(i).unwrap_or(0),
            sequence: -1,
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
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

async fn ask(
    client: &mut PeerClient,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> anyhow::Result<(i16, i32, i64)> {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(current_leader_epoch)
                        .with_leader_epoch(leader_epoch),
                ]),
        ]);
    let response = client.call(&request, 4).await?;
    let answer = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("no partition in the answer")?;
    Ok((answer.error_code, answer.leader_epoch, answer.end_offset))
}

async fn produce(client: &mut PeerClient, values: &[&str]) -> anyhow::Result<()> {
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(values)?)),
                ]),
        ]);
    let produced = client.call(&produce, 9).await?;
    let code = produced
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.error_code)
        .next();
    ensure!(code == Some(0), "produce answered {code:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_where_the_epoch_ends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = crate::wire::start(&dir).await?;
    let mut registered = node.broker().registration();
    tokio::time::timeout(DEADLINE, registered.wait_for(|r| *r)).await??;
    let mut client = PeerClient::new(
        node.kafka_addr().to_string(),
        "epochs-test".into(),
        DEADLINE,
    );

    let created = client
        .call(
            &CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ])
                .with_timeout_ms(10_000),
            7,
        )
        .await?;
    ensure!(
        created.topics.iter().all(|t| t.error_code == 0),
        "{created:?}"
    );
    produce(&mut client, &["a", "b"]).await?;
    // Two leader changes (away and back) move the partition to leader epoch 2.
    for leader in [None, Some(node.broker().id())] {
        let view = node.broker().metadata();
        let partition = view
            .state
            .topic(TOPIC)
            .and_then(|t| t.partitions.get(0).cloned())
            .context("the topic has no partition")?;
        node.broker()
            .propose(MetadataCommand::AlterPartition {
                topic: TOPIC.into(),
                partition: 0,
                partition_epoch: partition.partition_epoch,
                leader,
                isr: vec![node.broker().id()],
            })
            .await?;
    }
    produce(&mut client, &["c"]).await?;

    let fenced = ResponseError::FencedLeaderEpoch.code();
    let unknown = ResponseError::UnknownLeaderEpoch.code();
    for (current, asked, expected) in [
        (2, 2, (0, 2, 3)),
        (-1, 0, (0, 0, 2)),
        (-1, 1, (0, 0, 2)),
        (-1, 7, (0, 2, 3)),
        (1, 2, (fenced, -1, -1)),
        (3, 2, (unknown, -1, -1)),
    ] {
        let answer = ask(&mut client, current, asked).await?;
        ensure!(
            answer == expected,
            "current epoch {current}, epoch {asked}: answered {answer:?}, expected {expected:?}"
        );
    }
    node.shutdown().await?;
    Ok(())
}
