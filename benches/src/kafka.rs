//! End to end over the Kafka protocol: brokers of the `switchyard` crate started in this
//! process ([`switchyard::serve::Node`], as `switchyard serve` starts them) on loopback ports —
//! one node, or three forming one cluster over their cluster ports — and a Kafka client
//! ([`PeerClient`]) sending CreateTopics and OffsetCommit requests to one of them. A timed
//! request goes client → listener → handler → metadata backend (→ its leader and quorum, on
//! three nodes) → response. Produce requests with `acks=all` go to the leader of a partition
//! with a replica on every broker: on three nodes the answer waits until both followers have
//! fetched the batch. An idempotent producer and a transactional one (its transaction
//! coordinator found as clients find it) write the same partition: the transactions add the
//! partition, produce, and commit (the coordinator writes the commit marker to the partition
//! before the commit is answered).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use figment::providers::Serialized;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, BrokerId, CreateTopicsRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, OffsetCommitRequest, ProduceRequest, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::{Deserialize, Serialize};
use switchyard::config::{Config, Overrides, defaults};
use switchyard::kafka::client::PeerClient;
use switchyard::serve::Node;
use switchyard_backend_api::{ClusterSecret, StreamError};
use switchyard_compat_tests::{DEADLINE, reserve_addr};
use tempfile::TempDir;
use tokio::sync::Mutex;

/// CreateTopics version sent (the broker serves 2–7).
const CREATE_TOPICS_VERSION: i16 = 7;
/// OffsetCommit version sent (the broker serves 2–8).
const OFFSET_COMMIT_VERSION: i16 = 8;
/// Deadline of one request, long enough for a CreateTopics of 1,000 topics.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Topic the offset commits name, created when the broker starts.
const COMMIT_TOPIC: &str = "bench-commits";
/// Group the offset commits are for (outside any generation, as a standalone consumer commits).
const COMMIT_GROUP: &str = "bench";
/// Produce version sent (the broker serves 3–11).
const PRODUCE_VERSION: i16 = 9;
/// Topic the produce benchmark writes: one partition with a replica on every broker.
const PRODUCE_TOPIC: &str = "bench-produce";
/// Records in the batch of one Produce request.
pub const RECORDS_PER_PRODUCE: u64 = 100;
/// Bytes of each record's value.
const RECORD_BYTES: usize = 1024;
/// `max_partitions` of the benchmark brokers: the most the broker allows.
const MAX_PARTITIONS: u64 = 1_000_000;
/// The transactional producer's `transactional.id`.
const TRANSACTIONAL_ID: &str = "bench-txn";
/// Its `transaction.timeout.ms` (Kafka's producer default).
const TRANSACTION_TIMEOUT_MS: i32 = 60_000;
/// InitProducerId version sent (the broker serves 0–5).
const INIT_PRODUCER_ID_VERSION: i16 = 4;
/// AddPartitionsToTxn version sent (the broker serves 0–3).
const ADD_PARTITIONS_TO_TXN_VERSION: i16 = 3;
/// EndTxn version sent (the broker serves 0–3).
const END_TXN_VERSION: i16 = 3;
/// CONCURRENT_TRANSACTIONS: the previous transaction's markers are still being written.
const CONCURRENT_TRANSACTIONS: i16 = 51;
/// Pause before a request answered CONCURRENT_TRANSACTIONS is sent again.
const RETRY_BACKOFF: Duration = Duration::from_millis(5);

/// One broker of a benchmark cluster: the overrides `switchyard serve` would get on its
/// command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BrokerSpec {
    pub(crate) backend: String,
    pub(crate) node_id: i64,
    pub(crate) data_dir: PathBuf,
    /// `--peers`; none for a single node.
    pub(crate) peers: Option<String>,
    /// `--cluster-secret-file`, with peers.
    pub(crate) cluster_secret_file: Option<PathBuf>,
}

impl BrokerSpec {
    /// `count` brokers of `backend`, ids 1..=count, each in a sub-directory of `dir` named by
    /// its id; more than one get each other as peers, on reserved loopback cluster ports.
    pub(crate) fn cluster(backend: &str, dir: &Path, count: usize) -> anyhow::Result<Vec<Self>> {
        let (peers, cluster_secret_file) = if count > 1 {
            let addrs = (1..=count)
                .map(|id| Ok(format!("{id}={}", reserve_addr()?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            std::fs::create_dir_all(dir)?;
            let secret = dir.join("cluster.secret");
            std::fs::write(&secret, ClusterSecret::generate().to_file_contents())?;
            (Some(addrs.join(",")), Some(secret))
        } else {
            (None, None)
        };
        (1..=count)
            .map(|id| {
                Ok(Self {
                    backend: backend.to_owned(),
                    node_id: i64::try_from(id)?,
                    data_dir: dir.join(id.to_string()),
                    peers: peers.clone(),
                    cluster_secret_file: cluster_secret_file.clone(),
                })
            })
            .collect()
    }

    /// The broker's config: defaults and these values only (no `switchyard.toml`, no
    /// environment) with the highest partition limit, its Kafka listener on a free loopback
    /// port.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            metadata_backend: Some(self.backend.clone()),
            data_dir: Some(self.data_dir.clone()),
            node_id: Some(self.node_id),
            listen: Some("127.0.0.1:0".into()),
            peers: self.peers.clone(),
            cluster_secret_file: self.cluster_secret_file.clone(),
            ..Overrides::default()
        };
        // The CreateTopics benchmarks create more topics in one run than Kafka's default
        // partition limit allows.
        let figment = defaults()
            .merge(Serialized::defaults(&overrides))
            .merge(Serialized::default("kafka.max_partitions", MAX_PARTITIONS));
        Config::from_figment(figment).context("broker config")
    }
}

/// Brokers with fresh data directories and a client connected to one of them. Dropping it
/// without [`KafkaNode::shutdown`] leaves the brokers' tasks to the runtime.
#[derive(Debug)]
pub struct KafkaNode {
    nodes: Vec<Node>,
    client: Arc<Mutex<PeerClient>>,
    producer: Arc<Mutex<PeerClient>>,
    idempotent: Arc<Mutex<Producer>>,
    transactional: Arc<Mutex<Transactional>>,
    next_topic: Arc<AtomicU64>,
    // Declared last: the brokers write into it.
    _dir: TempDir,
}

/// A producer id, its epoch, and the sequence of its next batch to [`PRODUCE_TOPIC`].
#[derive(Debug)]
struct Producer {
    id: i64,
    epoch: i16,
    next_sequence: i32,
}

/// The transactional producer: its id and a connection to its transaction coordinator.
#[derive(Debug)]
struct Transactional {
    producer: Producer,
    coordinator: PeerClient,
}

impl KafkaNode {
    /// Start `count` brokers on `backend` (node ids 1..=count, Kafka listeners on free loopback
    /// ports; more than one form a cluster over reserved loopback cluster ports), wait until
    /// every one has registered, connect the client to the coordinator of the commit group,
    /// create [`COMMIT_TOPIC`] and [`PRODUCE_TOPIC`] (replication factor `count`) through it,
    /// connect the producer to the produce topic's leader once its ISR is complete, and give
    /// it an idempotent producer id there and a transactional one from the coordinator of
    /// [`TRANSACTIONAL_ID`].
    pub async fn start(backend: &str, count: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchyard-kafka-{backend}-"))
            .tempdir()
            .context("creating the brokers' temp dir")?;
        let mut nodes = Vec::with_capacity(count);
        for spec in BrokerSpec::cluster(backend, dir.path(), count)? {
            nodes.push(
                Node::start(&spec.config()?)
                    .await
                    .with_context(|| format!("starting broker {}", spec.node_id))?,
            );
        }
        for node in &nodes {
            let mut registered = node.broker().registration();
            tokio::time::timeout(DEADLINE, registered.wait_for(|r| *r))
                .await
                .context("a broker did not register")?
                .context("a broker stopped")?;
        }
        let group_coordinator = tokio::time::timeout(DEADLINE, coordinator(&nodes, COMMIT_GROUP))
            .await
            .context("no broker saw every broker registered")??;
        let client = PeerClient::new(
            group_coordinator.to_string(),
            "switchyard-benches".into(),
            REQUEST_TIMEOUT,
        );
        let mut client = client;
        create_topics(&mut client, vec![COMMIT_TOPIC.to_owned()], 1).await?;
        create_topics(
            &mut client,
            vec![PRODUCE_TOPIC.to_owned()],
            i16::try_from(count)?,
        )
        .await?;
        let leader = tokio::time::timeout(DEADLINE, replicated_leader(&nodes))
            .await
            .context("the produce topic's ISR did not fill")??;
        let mut producer = PeerClient::new(
            leader.to_string(),
            "switchyard-benches-producer".into(),
            REQUEST_TIMEOUT,
        );
        let idempotent = init_producer_id(&mut producer, None).await?;
        let txn_coordinator = tokio::time::timeout(DEADLINE, coordinator(&nodes, TRANSACTIONAL_ID))
            .await
            .context("no broker saw every broker registered")??;
        let mut txn_coordinator = PeerClient::new(
            txn_coordinator.to_string(),
            "switchyard-benches-txn".into(),
            REQUEST_TIMEOUT,
        );
        let transactional = init_producer_id(&mut txn_coordinator, Some(TRANSACTIONAL_ID)).await?;
        Ok(Self {
            nodes,
            client: Arc::new(Mutex::new(client)),
            producer: Arc::new(Mutex::new(producer)),
            idempotent: Arc::new(Mutex::new(idempotent)),
            transactional: Arc::new(Mutex::new(Transactional {
                producer: transactional,
                coordinator: txn_coordinator,
            })),
            next_topic: Arc::new(AtomicU64::new(0)),
            _dir: dir,
        })
    }

    /// A handle for a timed task (shares the connections).
    pub fn handle(&self) -> KafkaClient {
        KafkaClient {
            client: Arc::clone(&self.client),
            producer: Arc::clone(&self.producer),
            idempotent: Arc::clone(&self.idempotent),
            transactional: Arc::clone(&self.transactional),
            next_topic: Arc::clone(&self.next_topic),
        }
    }

    /// Stop the brokers and their backends.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for node in self.nodes {
            tokio::time::timeout(DEADLINE, node.shutdown())
                .await
                .context("broker shutdown did not return")?
                .context("broker shutdown")?;
        }
        Ok(())
    }
}

/// The Kafka address of the broker that coordinates `key` (a group or transactional id), once
/// the first broker's metadata holds every broker live (so that the choice no longer changes).
async fn coordinator(nodes: &[Node], key: &str) -> anyhow::Result<SocketAddr> {
    let first = nodes[0].broker();
    let mut changes = first.backend().subscribe();
    loop {
        let view = first.metadata();
        if view.state.live_brokers().count() == nodes.len()
            && let Some(chosen) = view.state.group_coordinator(key)
            && let Some(node) = nodes.iter().find(|n| n.broker().id() == chosen.id)
        {
            return Ok(node.kafka_addr());
        }
        // Lagged: the view is read again at once.
        if let Err(StreamError::Closed) = changes.recv().await {
            bail!("the metadata change stream closed");
        }
    }
}

/// The Kafka address of [`PRODUCE_TOPIC`]'s leader, once the first broker's metadata has
/// every replica in its ISR and the leader's own metadata has it leading (before that, its
/// answer to a produce is a retriable UNKNOWN_TOPIC_OR_PARTITION).
async fn replicated_leader(nodes: &[Node]) -> anyhow::Result<SocketAddr> {
    let complete = |node: &Node, leader: Option<switchyard_backend_api::BrokerId>| {
        node.broker()
            .metadata()
            .state
            .partition(PRODUCE_TOPIC, 0)
            .filter(|p| p.isr.len() == nodes.len() && leader.is_none_or(|l| p.leader == Some(l)))
            .and_then(|p| p.leader)
    };
    let first = &nodes[0];
    let leader = wait_for_view(first, |node| complete(node, None)).await?;
    let node = nodes
        .iter()
        .find(|n| n.broker().id() == leader)
        .context("the produce topic's leader is not one of the brokers")?;
    wait_for_view(node, |node| complete(node, Some(leader))).await?;
    Ok(node.kafka_addr())
}

/// Wait, on `node`'s change stream, until `found` finds something in its metadata.
async fn wait_for_view<T>(node: &Node, found: impl Fn(&Node) -> Option<T>) -> anyhow::Result<T> {
    let mut changes = node.broker().backend().subscribe();
    loop {
        if let Some(value) = found(node) {
            return Ok(value);
        }
        // Lagged: the view is read again at once.
        if let Err(StreamError::Closed) = changes.recv().await {
            bail!("the metadata change stream closed");
        }
    }
}

/// A client of a [`KafkaNode`] that timed tasks own.
#[derive(Debug, Clone)]
pub struct KafkaClient {
    client: Arc<Mutex<PeerClient>>,
    producer: Arc<Mutex<PeerClient>>,
    idempotent: Arc<Mutex<Producer>>,
    transactional: Arc<Mutex<Transactional>>,
    next_topic: Arc<AtomicU64>,
}

impl KafkaClient {
    /// `requests` CreateTopics requests one after another, each creating `per_request` new
    /// topics of one partition; the time they took. Fails on any error code.
    pub async fn create_topics(self, requests: u64, per_request: u64) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for _ in 0..requests {
            let first = self.next_topic.fetch_add(per_request, Ordering::Relaxed);
            let names = (first..first + per_request)
                .map(|i| format!("bench-topic-{i}"))
                .collect();
            let start = Instant::now();
            self.create(names).await?;
            total += start.elapsed();
        }
        Ok(total)
    }

    /// `requests` OffsetCommit requests one after another, each committing one partition for a
    /// group outside any generation; the time they took. Fails on any error code.
    pub async fn commit_offsets(self, requests: u64) -> anyhow::Result<Duration> {
        let mut client = self.client.lock().await;
        let start = Instant::now();
        for offset in 0..requests {
            let request = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str(COMMIT_GROUP)))
                .with_generation_id_or_member_epoch(-1)
                .with_member_id(StrBytes::from_static_str(""))
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str(COMMIT_TOPIC)))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(i64::try_from(offset)?)
                                .with_committed_leader_epoch(-1),
                        ]),
                ]);
            let response = client.call(&request, OFFSET_COMMIT_VERSION).await?;
            for partition in response.topics.iter().flat_map(|t| &t.partitions) {
                if partition.error_code != 0 {
                    bail!("OffsetCommit answered error {}", partition.error_code);
                }
            }
        }
        Ok(start.elapsed())
    }

    /// `requests` Produce requests with `acks=all` one after another to the produce topic's
    /// leader, each one batch of [`RECORDS_PER_PRODUCE`] records of 1 KiB; the time they took.
    /// Fails on any error code.
    pub async fn produce(self, requests: u64) -> anyhow::Result<Duration> {
        let batch = record_batch(None, false)?;
        let mut producer = self.producer.lock().await;
        let start = Instant::now();
        for _ in 0..requests {
            produce(&mut producer, batch.clone(), None).await?;
        }
        Ok(start.elapsed())
    }

    /// [`Self::produce`] as an idempotent producer: each batch carries the producer id, its
    /// epoch and the next sequence (encoding a batch is not timed).
    pub async fn produce_idempotent(self, requests: u64) -> anyhow::Result<Duration> {
        let mut producer = self.producer.lock().await;
        let mut idempotent = self.idempotent.lock().await;
        let mut total = Duration::ZERO;
        for _ in 0..requests {
            let batch = record_batch(Some(&mut idempotent), false)?;
            let start = Instant::now();
            produce(&mut producer, batch, None).await?;
            total += start.elapsed();
        }
        Ok(total)
    }

    /// `count` transactions one after another, each AddPartitionsToTxn of the produce topic's
    /// partition to the coordinator, `batches` Produce requests of [`RECORDS_PER_PRODUCE`]
    /// records to the partition's leader, and EndTxn committing to the coordinator; the time
    /// they took (encoding the batches is not timed). Fails on any error code.
    pub async fn transactions(self, count: u64, batches: u64) -> anyhow::Result<Duration> {
        let mut producer = self.producer.lock().await;
        let mut txn = self.transactional.lock().await;
        let mut total = Duration::ZERO;
        for _ in 0..count {
            let encoded = (0..batches)
                .map(|_| record_batch(Some(&mut txn.producer), true))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let start = Instant::now();
            txn.add_partition().await?;
            for batch in encoded {
                produce(&mut producer, batch, Some(TRANSACTIONAL_ID)).await?;
            }
            txn.commit().await?;
            total += start.elapsed();
        }
        Ok(total)
    }

    /// `count` transactions of one batch, as [`Self::transactions`]; only their EndTxn
    /// requests (the commit: its decision in the metadata and its marker in the partition)
    /// are timed.
    pub async fn transaction_commits(self, count: u64) -> anyhow::Result<Duration> {
        let mut producer = self.producer.lock().await;
        let mut txn = self.transactional.lock().await;
        let mut total = Duration::ZERO;
        for _ in 0..count {
            let batch = record_batch(Some(&mut txn.producer), true)?;
            txn.add_partition().await?;
            produce(&mut producer, batch, Some(TRANSACTIONAL_ID)).await?;
            let start = Instant::now();
            txn.commit().await?;
            total += start.elapsed();
        }
        Ok(total)
    }

    /// One CreateTopics request for `names` (see [`create_topics`]).
    async fn create(&self, names: Vec<String>) -> anyhow::Result<()> {
        create_topics(&mut *self.client.lock().await, names, 1).await
    }
}

impl Transactional {
    /// AddPartitionsToTxn of partition 0 of [`PRODUCE_TOPIC`], retried while the previous
    /// transaction's markers are being written.
    async fn add_partition(&mut self) -> anyhow::Result<()> {
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(
                TRANSACTIONAL_ID,
            )))
            .with_v3_and_below_producer_id(ProducerId(self.producer.id))
            .with_v3_and_below_producer_epoch(self.producer.epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(PRODUCE_TOPIC)))
                    .with_partitions(vec![0]),
            ]);
        loop {
            let response = self
                .coordinator
                .call(&request, ADD_PARTITIONS_TO_TXN_VERSION)
                .await?;
            let error = response
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|&code| code != 0);
            match error {
                None => return Ok(()),
                Some(CONCURRENT_TRANSACTIONS) => tokio::time::sleep(RETRY_BACKOFF).await,
                Some(code) => bail!("AddPartitionsToTxn answered error {code}"),
            }
        }
    }

    /// EndTxn committing the open transaction.
    async fn commit(&mut self) -> anyhow::Result<()> {
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(TRANSACTIONAL_ID)))
            .with_producer_id(ProducerId(self.producer.id))
            .with_producer_epoch(self.producer.epoch)
            .with_committed(true);
        let response = self.coordinator.call(&request, END_TXN_VERSION).await?;
        if response.error_code != 0 {
            bail!("EndTxn answered error {}", response.error_code);
        }
        Ok(())
    }
}

/// InitProducerId through `client`: an idempotent producer id (`transactional_id` none) or the
/// transactional id's (sent to its coordinator).
async fn init_producer_id(
    client: &mut PeerClient,
    transactional_id: Option<&'static str>,
) -> anyhow::Result<Producer> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(
            transactional_id.map(|id| TransactionalId(StrBytes::from_static_str(id))),
        )
        .with_transaction_timeout_ms(TRANSACTION_TIMEOUT_MS)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = client.call(&request, INIT_PRODUCER_ID_VERSION).await?;
    if response.error_code != 0 {
        bail!("InitProducerId answered error {}", response.error_code);
    }
    Ok(Producer {
        id: response.producer_id.0,
        epoch: response.producer_epoch,
        next_sequence: 0,
    })
}

/// One Produce request with `acks=all` of `batch` to partition 0 of [`PRODUCE_TOPIC`], naming
/// the producer's `transactional_id` if it has one. Fails on any error code.
async fn produce(
    producer: &mut PeerClient,
    batch: Bytes,
    transactional_id: Option<&'static str>,
) -> anyhow::Result<()> {
    let request = ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|id| TransactionalId(StrBytes::from_static_str(id))),
        )
        .with_acks(-1)
        .with_timeout_ms(i32::try_from(REQUEST_TIMEOUT.as_millis())?)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(PRODUCE_TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    let response = producer.call(&request, PRODUCE_VERSION).await?;
    for partition in response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
    {
        if partition.error_code != 0 {
            bail!("Produce answered error {}", partition.error_code);
        }
    }
    Ok(())
}

/// One batch of [`RECORDS_PER_PRODUCE`] records of [`RECORD_BYTES`] each: as a plain
/// producer sends it (`producer` none), or as `producer` does, at its next sequence (which
/// this advances), in a transaction if `transactional`.
fn record_batch(producer: Option<&mut Producer>, transactional: bool) -> anyhow::Result<Bytes> {
    let count = i32::try_from(RECORDS_PER_PRODUCE)?;
    let (producer_id, producer_epoch, base_sequence) = match producer {
        Some(p) => {
            let base = p.next_sequence;
            p.next_sequence = p.next_sequence.wrapping_add(count);
            (p.id, p.epoch, base)
        }
        None => (-1, -1, -1),
    };
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: if base_sequence < 0 {
                -1
            } else {
                base_sequence.wrapping_add(i)
            },
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(vec![b'x'; RECORD_BYTES])),
            headers: Default::default(),
        })
        .collect();
    encode_uncompressed(&records)
}

/// `records` as one uncompressed v2 batch, as a Kafka client's encoder writes it.
pub(crate) fn encode_uncompressed(records: &[Record]) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}

/// One CreateTopics request for `names`, one partition and `replicas` replicas each, through
/// `client`. Fails on any error code.
pub async fn create_topics(
    client: &mut PeerClient,
    names: Vec<String>,
    replicas: i16,
) -> anyhow::Result<()> {
    let topics = names
        .into_iter()
        .map(|name| {
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_num_partitions(1)
                .with_replication_factor(replicas)
        })
        .collect();
    send_create_topics(client, topics).await
}

/// One CreateTopics request for a topic `name` of one partition whose one replica is on
/// `broker` (a manual assignment: the broker places nothing), through `client`. Fails on any
/// error code.
pub async fn create_topic_on(
    client: &mut PeerClient,
    name: String,
    broker: i32,
) -> anyhow::Result<()> {
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![
            CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![BrokerId(broker)]),
        ]);
    send_create_topics(client, vec![topic]).await
}

async fn send_create_topics(
    client: &mut PeerClient,
    topics: Vec<CreatableTopic>,
) -> anyhow::Result<()> {
    let count = topics.len();
    let timeout_ms = i32::try_from(REQUEST_TIMEOUT.as_millis())?;
    let request = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(timeout_ms);
    let response = client.call(&request, CREATE_TOPICS_VERSION).await?;
    if response.topics.len() != count {
        bail!(
            "CreateTopics answered {} topics of {count}",
            response.topics.len()
        );
    }
    if let Some(failed) = response.topics.iter().find(|t| t.error_code != 0) {
        bail!(
            "CreateTopics answered error {} for {}",
            failed.error_code,
            failed.name.0
        );
    }
    Ok(())
}
