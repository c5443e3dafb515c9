//! A hostile client against a real node over TCP: each test makes one attack that used to crash,
//! wedge or mislead a node, checks the answer is a clear error, and checks the node still serves.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerHeartbeatRequest, CreateTopicsRequest, FetchRequest, GroupId, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, ProduceRequest, RequestKind, ResponseKind, TopicName,
};
use switchyard::serve::Node;
use switchyard_backend_api::{BrokerId, MetadataCommand, NewTopic, TopicId};
use tokio::net::{TcpSocket, TcpStream};

use crate::every_api::call;
use crate::process::Running;
use crate::support::{DEADLINE, record_batch, s, start_memory};

/// A connection from `source` (any loopback address: 127.0.0.0/8 is all local).
async fn connect_from(source: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    Ok(socket.connect(to).await?)
}

/// A Metadata request on a fresh connection is answered: the node still serves.
async fn still_serving(node: &Node) -> anyhow::Result<()> {
    still_serving_at(node.kafka_addr()).await
}

/// [`still_serving`] for the node listening at `addr`.
async fn still_serving_at(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
    match call(&mut stream, ApiKey::Metadata, 12, 1, &request).await? {
        ResponseKind::Metadata(m) if !m.brokers.is_empty() => Ok(()),
        other => bail!("unexpected Metadata answer {other:?}"),
    }
}

fn creatable(name: &str, partitions: i32) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
}

async fn create_topics(
    stream: &mut TcpStream,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> anyhow::Result<Vec<(String, i16)>> {
    let request = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_validate_only(validate_only)
            .with_topics(topics),
    );
    let ResponseKind::CreateTopics(response) =
        call(stream, ApiKey::CreateTopics, 7, 2, &request).await?
    else {
        bail!("not a CreateTopics response");
    };
    Ok(response
        .topics
        .iter()
        .map(|t| (t.name.0.as_str().to_owned(), t.error_code))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_refuses_partition_counts_past_the_cluster_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[("max_partitions", 10)]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let invalid = ResponseError::InvalidPartitions.code();
    // Used to abort the process allocating 48 GiB for the assignment.
    for validate_only in [true, false] {
        let answer = create_topics(
            &mut stream,
            vec![creatable("huge", i32::MAX)],
            validate_only,
        )
        .await?;
        ensure!(answer == [("huge".into(), invalid)], "{answer:?}");
    }
    // The limit counts the whole cluster and earlier topics of the same request.
    let answer = create_topics(
        &mut stream,
        vec![
            creatable("six", 6),
            creatable("six-more", 6),
            creatable("four", 4),
        ],
        false,
    )
    .await?;
    ensure!(
        answer
            == [
                ("six".into(), 0),
                ("six-more".into(), invalid),
                ("four".into(), 0)
            ],
        "{answer:?}"
    );
    let answer = create_topics(&mut stream, vec![creatable("one-more", 1)], false).await?;
    ensure!(answer == [("one-more".into(), invalid)], "{answer:?}");
    still_serving(&node).await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_starting_with_two_underscores_are_reserved() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let answer = create_topics(&mut stream, vec![creatable("__evil", 1)], false).await?;
    let invalid = ResponseError::InvalidTopicException.code();
    ensure!(answer == [("__evil".into(), invalid)], "{answer:?}");
    // Auto-creation through Metadata does not create one either.
    let request = RequestKind::Metadata(
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s("__auto")))),
            ]))
            .with_allow_auto_topic_creation(true),
    );
    call(&mut stream, ApiKey::Metadata, 12, 3, &request).await?;
    ensure!(
        node.broker().metadata().state.topic("__auto").is_none(),
        "__auto was auto-created"
    );
    node.shutdown().await?;
    Ok(())
}

async fn produce(stream: &mut TcpStream, topic: &str, batch: Bytes) -> anyhow::Result<()> {
    let request = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ]),
            ]),
    );
    let ResponseKind::Produce(response) = call(stream, ApiKey::Produce, 9, 4, &request).await?
    else {
        bail!("not a Produce response");
    };
    let codes: Vec<i16> = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.error_code)
        .collect();
    ensure!(codes == [0], "produce answered {codes:?}");
    Ok(())
}

/// Partition 0's latest offset (the high watermark) as ListOffsets reports it.
async fn high_watermark(stream: &mut TcpStream, topic: &str) -> anyhow::Result<i64> {
    let request = RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ]),
            ]),
    );
    let ResponseKind::ListOffsets(response) =
        call(stream, ApiKey::ListOffsets, 6, 5, &request).await?
    else {
        bail!("not a ListOffsets response");
    };
    response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.offset)
        .context("no partition in the ListOffsets answer")
}

/// Register broker 2 at 127.0.0.1 (it never runs) and create "t" on brokers 1 and 2, led by
/// `node`'s broker 1; returns the partition's leader epoch.
pub(crate) async fn with_a_follower(node: &Node) -> anyhow::Result<i32> {
    node.broker()
        .propose(MetadataCommand::RegisterBroker {
            id: BrokerId(2),
            host: "127.0.0.1".into(),
            port: 1,
            rack: None,
            listeners: Vec::new(),
        })
        .await?;
    node.broker()
        .propose(MetadataCommand::CreateTopics {
            topics: vec![NewTopic {
                name: "t".into(),
                id: TopicId(uuid::Uuid::new_v4()),
                assignments: vec![vec![BrokerId(1), BrokerId(2)]],
                configs: Vec::new(),
            }],
        })
        .await?;
    node.broker()
        .metadata()
        .state
        .partition("t", 0)
        .map(|p| p.leader_epoch)
        .context("no partition t-0")
}

/// A Fetch of `topic`-0 from `offset` as replica `replica` (-1: a consumer), the partition
/// listed `copies` times.
pub(crate) fn fetch(
    replica: i32,
    topic: &str,
    epoch: i32,
    offset: i64,
    copies: usize,
) -> RequestKind {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(epoch)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(i32::MAX);
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(replica.into())
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(i32::MAX)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partitions(vec![partition; copies]),
            ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_fetch_as_a_replica_or_heartbeat_as_a_broker() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    let epoch = with_a_follower(&node).await?;
    let mut client = TcpStream::connect(node.kafka_addr()).await?;
    produce(&mut client, "t", record_batch(1, 10)?).await?;
    ensure!(high_watermark(&mut client, "t").await? == 0);

    // A client elsewhere claims to be broker 2 at the log end: that used to move the high
    // watermark, acknowledging data no follower holds.
    let mut stranger = connect_from("127.0.0.2", node.kafka_addr()).await?;
    let ResponseKind::Fetch(answer) = call(
        &mut stranger,
        ApiKey::Fetch,
        12,
        6,
        &fetch(2, "t", epoch, 1, 1),
    )
    .await?
    else {
        bail!("not a Fetch response");
    };
    let refused = ResponseError::ClusterAuthorizationFailed.code();
    ensure!(answer.error_code == refused, "{answer:?}");
    ensure!(
        high_watermark(&mut client, "t").await? == 0,
        "the high watermark moved"
    );

    let heartbeat = RequestKind::BrokerHeartbeat(
        BrokerHeartbeatRequest::default()
            .with_broker_id(2.into())
            .with_broker_epoch(i64::MAX)
            .with_current_metadata_offset(0),
    );
    let ResponseKind::BrokerHeartbeat(answer) =
        call(&mut stranger, ApiKey::BrokerHeartbeat, 1, 7, &heartbeat).await?
    else {
        bail!("not a BrokerHeartbeat response");
    };
    ensure!(answer.error_code == refused, "{answer:?}");
    still_serving(&node).await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_responses_are_capped_and_duplicate_partitions_read_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[("fetch_max_bytes", 300_000)]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let answer = create_topics(&mut stream, vec![creatable("big", 1)], false).await?;
    ensure!(answer == [("big".into(), 0)], "{answer:?}");
    for _ in 0..8 {
        produce(&mut stream, "big", record_batch(10, 10_000)?).await?;
    }
    // Every batch once, the partition asked for 8 times, 2 GiB allowed by the request.
    let ResponseKind::Fetch(answer) = call(
        &mut stream,
        ApiKey::Fetch,
        12,
        8,
        &fetch(-1, "big", -1, 0, 8),
    )
    .await?
    else {
        bail!("not a Fetch response");
    };
    let partitions: Vec<_> = answer
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .collect();
    ensure!(
        partitions.len() == 1,
        "{} partition entries",
        partitions.len()
    );
    let bytes = partitions[0].records.as_ref().map_or(0, Bytes::len);
    ensure!(
        bytes > 0 && bytes <= 300_000,
        "{bytes} record bytes in one response"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_commit_too_large_for_one_record_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let answer = create_topics(&mut stream, vec![creatable("offsets", 1)], false).await?;
    ensure!(answer == [("offsets".into(), 0)], "{answer:?}");
    let commit = |entries: usize| {
        let partition = OffsetCommitRequestPartition::default()
            .with_partition_index(0)
            .with_committed_offset(1)
            .with_committed_metadata(Some(s(&"m".repeat(4_000))));
        RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("big-commit")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("offsets")))
                        .with_partitions(vec![partition; entries]),
                ]),
        )
    };
    let codes = |response: ResponseKind| -> anyhow::Result<Vec<i16>> {
        let ResponseKind::OffsetCommit(r) = response else {
            bail!("not an OffsetCommit response");
        };
        let mut codes: Vec<i16> = r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.error_code)
            .collect();
        codes.dedup();
        Ok(codes)
    };
    // 4,600 entries of 4,000 bytes: 18.5 MB, which once wedged the `wal` backend.
    let answer = codes(call(&mut stream, ApiKey::OffsetCommit, 8, 9, &commit(4_600)).await?)?;
    let too_large = ResponseError::InvalidCommitOffsetSize.code();
    ensure!(answer == [too_large], "{answer:?}");
    let answer = codes(call(&mut stream, ApiKey::OffsetCommit, 8, 10, &commit(1)).await?)?;
    ensure!(answer == [0], "{answer:?}");
    still_serving(&node).await?;
    node.shutdown().await?;
    Ok(())
}

/// Whether the broker answers a Metadata request on `stream`, or closed it.
async fn answers(stream: &mut TcpStream) -> bool {
    let request = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])));
    call(stream, ApiKey::Metadata, 12, 11, &request)
        .await
        .is_ok()
}

/// One connection from each of `sources`, each answering a Metadata request.
async fn served(sources: &[&str], to: SocketAddr) -> anyhow::Result<Vec<TcpStream>> {
    let mut streams = Vec::new();
    for source in sources {
        let mut stream = connect_from(source, to).await?;
        ensure!(
            answers(&mut stream).await,
            "a connection from {source} within the limits was refused"
        );
        streams.push(stream);
    }
    Ok(streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_ip_and_total_limits_are_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(
        &dir,
        &[("max_connections", 6), ("max_connections_per_ip", 4)],
    )
    .await?;
    let addr = node.kafka_addr();
    let mut first = served(&["127.0.0.1"; 4], addr).await?;
    let mut fifth = connect_from("127.0.0.1", addr).await?;
    ensure!(
        !answers(&mut fifth).await,
        "a fifth connection from one IP was served"
    );
    // Another IP gets two more, up to the total of six; the seventh is closed.
    let _others = served(&["127.0.0.3"; 2], addr).await?;
    let mut seventh = connect_from("127.0.0.4", addr).await?;
    ensure!(
        !answers(&mut seventh).await,
        "a seventh connection was served"
    );
    // Closing one frees its place (the broker notices the close on its own time).
    drop(first.pop());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut stream = connect_from("127.0.0.1", addr).await?;
        if answers(&mut stream).await {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "a freed place was never given to a new connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await?;
    Ok(())
}

/// The process's user plus system CPU time, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("no command name")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// `serve` of a `memory` node with its data under `dir`.
fn memory_serve_args(dir: &tempfile::TempDir) -> Vec<String> {
    let data = dir.path().join("data").to_string_lossy().into_owned();
    ["serve", "--metadata-backend", "memory", "--data-dir", &data]
        .map(str::to_owned)
        .to_vec()
}

/// Stop `node` with SIGTERM, check it exited cleanly, and count its log lines holding
/// `needle`.
async fn stop_counting(node: Running, needle: &str) -> anyhow::Result<usize> {
    node.terminate()?;
    let (status, lines) = node.wait_exit().await?;
    ensure!(status.success(), "exit {status}");
    Ok(lines.iter().filter(|l| l.contains(needle)).count())
}

/// The Kafka listener address a running `switchyard serve` logged.
async fn listener_addr(node: &mut Running) -> anyhow::Result<SocketAddr> {
    let ready = node.wait_for_line("Kafka listener ready").await?;
    Ok(ready
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("no addr= in the ready line")?
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_sent_in_a_loop_is_logged_once_per_interval() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    let args = memory_serve_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = Running::spawn(dir.path(), &args, &[])?;
    let addr = listener_addr(&mut node).await?;
    for _ in 0..300 {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"\x00\x00\x00\x0bhello world").await?;
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await??;
    }
    still_serving_at(addr).await?;
    let logged = stop_counting(node, "bad request; closing connection").await?;
    // 300 bad requests within one 10 s interval: one line (two if the run straddles one).
    ensure!(
        (1..=2).contains(&logged),
        "{logged} lines for 300 bad requests"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_loop_at_the_open_file_limit_neither_spins_nor_floods_the_log() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let args = memory_serve_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = Running::spawn_with_file_limit(dir.path(), &args, &[], 64)?;
    let addr = listener_addr(&mut node).await?;
    // Twice the file limit in idle connections: the kernel queues what the broker cannot
    // accept, and every accept past the limit fails with EMFILE.
    let mut idle = Vec::new();
    for _ in 0..128 {
        idle.push(TcpStream::connect(addr).await?);
    }
    let pid = node.pid()?;
    let before = cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid)? - before;
    // A spinning accept loop burns the whole 2 s (200 ticks); backing off costs next to none.
    ensure!(
        used < 50,
        "the broker used {used} ticks of CPU in 2 s while idle"
    );
    drop(idle);
    // Once connections close, new clients are served again.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr).await
            && answers(&mut stream).await
        {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no new connection served after the idle ones closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warnings = stop_counting(node, "accepting a connection failed").await?;
    ensure!(
        (1..=2).contains(&warnings),
        "{warnings} accept warnings in about 3 s"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_records_do_not_match_its_header_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let answer = create_topics(&mut stream, vec![creatable("checked", 1)], false).await?;
    ensure!(answer == [("checked".into(), 0)], "{answer:?}");
    produce(&mut stream, "checked", record_batch(2, 10)?).await?;
    // One record, a header claiming 2^31 - 1, and a CRC that matches: accepted, it used to
    // move the log end by 2^31 from a hundred bytes.
    let mut lying = record_batch(1, 10)?.to_vec();
    lying[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
    lying[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    let request = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s("checked")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(lying))),
                    ]),
            ]),
    );
    let ResponseKind::Produce(response) =
        call(&mut stream, ApiKey::Produce, 9, 12, &request).await?
    else {
        bail!("not a Produce response");
    };
    let codes: Vec<i16> = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.error_code)
        .collect();
    ensure!(
        codes == [ResponseError::InvalidRecord.code()],
        "answered {codes:?}"
    );
    ensure!(
        high_watermark(&mut stream, "checked").await? == 2,
        "the log end moved"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_would_decode_to_many_times_its_size_is_refused() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    // Metadata v1 listing four million empty topic names: 8 MB that decoded to 40 times that.
    let names: u32 = 4_000_000;
    let mut frame = Vec::with_capacity(8 + 2 * names as usize + 32);
    frame.extend_from_slice(&3i16.to_be_bytes());
    frame.extend_from_slice(&1i16.to_be_bytes());
    frame.extend_from_slice(&77i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.extend_from_slice(&names.to_be_bytes());
    frame.resize(frame.len() + 2 * names as usize, 0);
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    stream.write_u32(u32::try_from(frame.len())?).await?;
    stream.write_all(&frame).await?;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await?;
    ensure!(
        matches!(read, Ok(0) | Err(_)),
        "the broker answered a request of four million empty names"
    );
    still_serving(&node).await?;
    node.shutdown().await?;
    Ok(())
}
