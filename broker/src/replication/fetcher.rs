//! Followers copy their leaders' logs, the way Kafka's replica fetchers do.
//!
//! [`run_replication`] follows the metadata: on every change that moves partitions it tells
//! each replica stored here whether this broker leads it, and gives each leader broker one
//! fetch loop ([`fetch_loop`]) with the partitions this broker follows there and their leader
//! epochs. A fetch loop first settles every partition that is new to it or whose leader epoch
//! changed: it asks the leader with OffsetForLeaderEpoch where this log's latest epoch ends
//! there and cuts the log back to that point (repeating with the next older epoch when the
//! leader does not hold this one), so a log that diverged — batches a dead leader wrote and
//! nobody else copied — loses exactly its divergent tail. Then it fetches with its broker id
//! as replica id from each partition's log end offset, appends what comes byte for byte, and
//! takes the leader's high watermark. The leader learns each follower's log end offset from
//! those fetch offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId as KBrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::{
    BrokerId, Change, MetadataCommand, MetadataState, StreamError, Topic,
};
use switchyard_log::LogConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::broker::{Broker, leader_view, now_ms};
use crate::kafka::client::{CallError, PeerClient};
use crate::replicas::Replica;

/// The Fetch version followers send: the last with topic names and `replica_id`.
const FETCH_VERSION: i16 = 12;
/// The OffsetForLeaderEpoch version followers send (with `replica_id`).
const EPOCHS_VERSION: i16 = 3;
/// Rounds of OffsetForLeaderEpoch one partition may take to find where its log agrees.
const MAX_TRUNCATION_ROUNDS: usize = 16;

/// A partition followed from one leader.
#[derive(Debug, Clone)]
struct Followed {
    leader_epoch: i32,
    replica: Arc<Replica>,
}

/// The partitions one fetch loop follows.
type Assignment = BTreeMap<(String, i32), Followed>;

/// A running fetch loop.
#[derive(Debug)]
struct FetchLoop {
    addr: String,
    assignment: watch::Sender<Assignment>,
    task: JoinHandle<()>,
}

impl Drop for FetchLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follow the metadata: lead, resign, and fetch from leaders as it says. Starts once the
/// broker has registered; runs until aborted or the change stream ends.
pub async fn run_replication(broker: Arc<Broker>) {
    let mut registered = broker.registration();
    if registered.wait_for(|r| *r).await.is_err() {
        return;
    }
    let mut changes = broker.backend().subscribe();
    let mut loops: HashMap<BrokerId, FetchLoop> = HashMap::new();
    loop {
        reconcile(&broker, &mut loops).await;
        loop {
            match changes.recv().await {
                Ok(change) if moves_partitions(&change.change) => break,
                Ok(_) => {}
                Err(StreamError::Lagged { .. }) => break,
                Err(_) => return,
            }
        }
    }
}

/// Whether a change may move partition leadership or replicas, or change the configuration
/// partition logs run with.
fn moves_partitions(change: &Change) -> bool {
    match change {
        Change::Applied { command, .. } => command_moves_partitions(command),
        _ => true,
    }
}

fn command_moves_partitions(command: &MetadataCommand) -> bool {
    match command {
        MetadataCommand::RegisterBroker { .. }
        | MetadataCommand::FenceBroker { .. }
        | MetadataCommand::UnregisterBroker { .. }
        | MetadataCommand::CreateTopics { .. }
        | MetadataCommand::DeleteTopics { .. }
        | MetadataCommand::CreatePartitions { .. }
        | MetadataCommand::AlterTopicConfigs { .. }
        | MetadataCommand::AlterBrokerConfigs { .. }
        | MetadataCommand::AlterPartition { .. } => true,
        MetadataCommand::Batch { commands } => commands.iter().any(command_moves_partitions),
        _ => false,
    }
}

/// Bring the replicas and fetch loops in line with the local metadata view.
async fn reconcile(broker: &Arc<Broker>, loops: &mut HashMap<BrokerId, FetchLoop>) {
    let view = broker.metadata();
    let me = broker.id();
    let mut wanted: HashMap<BrokerId, (String, Assignment)> = HashMap::new();
    for topic in view.state.topics() {
        let min_insync = broker.min_insync(&view.state, topic);
        for (index, p) in topic.partitions.iter().enumerate() {
            let Ok(partition) = i32::try_from(index) else {
                continue;
            };
            let mut open = broker.replica(&topic.name, partition);
            if p.leader == Some(me) {
                // A partition led here whose log is on disk but not open (after a restart) is
                // opened with its topic's configuration: its retention and compaction go on
                // without waiting for a client.
                if open.is_none() && broker.replicas().is_stored(&topic.name, partition) {
                    open = open_replica(broker, &view.state, topic, partition).await;
                }
                if let Some(replica) = open {
                    replica.lead(me, leader_view(p, min_insync));
                }
                continue;
            }
            if let Some(replica) = open {
                replica.follow(p.leader_epoch);
            }
            let Some(leader) = p.leader.filter(|_| p.replicas.contains(&me)) else {
                continue;
            };
            let Some(target) = view.state.broker(leader).filter(|b| !b.fenced) else {
                continue;
            };
            let Some(replica) = open_replica(broker, &view.state, topic, partition).await else {
                continue;
            };
            replica.follow(p.leader_epoch);
            wanted
                .entry(leader)
                .or_insert_with(|| (format!("{}:{}", target.host, target.port), BTreeMap::new()))
                .1
                .insert(
                    (topic.name.clone(), partition),
                    Followed {
                        leader_epoch: p.leader_epoch,
                        replica,
                    },
                );
        }
    }
    // Replicas of partitions the metadata no longer has. Listed first, then checked against a
    // view read after the listing: a replica opened meanwhile (a topic created since `view`)
    // is in it, as views only move forward. The others take their topic's current configs
    // (a config change applies to logs already open, from their next append or cleanup).
    let listed = broker.replicas().open_replicas();
    let latest = broker.metadata();
    let mut log_configs: HashMap<String, Option<LogConfig>> = HashMap::new();
    for (topic, partition, replica) in listed {
        let known = u32::try_from(partition)
            .ok()
            .and_then(|p| latest.state.partition(&topic, p))
            .is_some();
        if !known {
            replica.follow(i32::MAX);
            continue;
        }
        let config = log_configs.entry(topic.clone()).or_insert_with(|| {
            let overrides = broker.log_overrides(&latest.state, latest.state.topic(&topic)?);
            broker
                .replicas()
                .base_config()
                .with_overrides(&overrides)
                .inspect_err(|e| warn!(%topic, error = %e, "a topic config the log refuses"))
                .ok()
        });
        if let Some(config) = config
            && replica.log().config() != *config
        {
            replica.log().set_config(config.clone());
        }
    }
    loops.retain(|leader, l| wanted.get(leader).is_some_and(|(addr, _)| *addr == l.addr));
    for (leader, (addr, assignment)) in wanted {
        if let Some(running) = loops.get(&leader) {
            running.assignment.send_replace(assignment);
            continue;
        }
        info!(leader = %leader, %addr, partitions = assignment.len(), "fetching from a leader");
        let (tx, rx) = watch::channel(assignment);
        let task = tokio::spawn(fetch_loop(Arc::clone(broker), addr.clone(), rx));
        loops.insert(
            leader,
            FetchLoop {
                addr,
                assignment: tx,
                task,
            },
        );
    }
}

/// Copy the assigned partitions from the leader at `addr` until the assignment ends. A
/// partition the leader refuses, or whose log cannot be settled or appended to, waits
/// `replica.fetch.backoff.ms` before its next try; the others go on meanwhile.
/// Open (or create) this broker's replica of `topic`'s `partition` with the topic's
/// configuration; `None` (logged) if its log cannot be opened.
async fn open_replica(
    broker: &Arc<Broker>,
    state: &MetadataState,
    topic: &Topic,
    partition: i32,
) -> Option<Arc<Replica>> {
    let configs = broker.log_overrides(state, topic);
    let replicas = Arc::clone(broker.replicas());
    let name = topic.name.clone();
    let opened =
        tokio::task::spawn_blocking(move || replicas.get_or_open(&name, partition, &configs)).await;
    match opened {
        Ok(Ok(replica)) => Some(replica),
        Ok(Err(e)) => {
            warn!(topic = %topic.name, partition, error = ?e, "cannot open a partition");
            None
        }
        Err(_) => None,
    }
}

async fn fetch_loop(broker: Arc<Broker>, addr: String, mut assigned: watch::Receiver<Assignment>) {
    let settings = broker.settings().clone();
    let wait = Duration::from_millis(settings.replica_fetch_wait_max_ms);
    let backoff = Duration::from_millis(settings.replica_fetch_backoff_ms);
    let mut client = broker.peer_client(
        addr,
        format!("switchyard-replica-{}", broker.id()),
        wait + broker.metadata_timeout(),
    );
    // The leader epoch each partition's log was settled for.
    let mut settled: HashMap<(String, i32), i32> = HashMap::new();
    // Partitions that failed, and when they may be tried again.
    let mut delayed: HashMap<(String, i32), Instant> = HashMap::new();
    let mut rotation: usize = 0;
    loop {
        let assignment = assigned.borrow_and_update().clone();
        settled.retain(|k, epoch| assignment.get(k).is_some_and(|f| f.leader_epoch == *epoch));
        let now = Instant::now();
        delayed.retain(|k, until| *until > now && assignment.contains_key(k));
        let unsettled: Vec<_> = assignment
            .iter()
            .filter(|(k, _)| !settled.contains_key(*k) && !delayed.contains_key(*k))
            .collect();
        if !unsettled.is_empty() {
            let done = match settle(broker.id(), &mut client, &unsettled).await {
                Ok(done) => done,
                Err(e) => {
                    debug!(addr = client.addr(), error = %e, "OffsetForLeaderEpoch failed");
                    Vec::new()
                }
            };
            settled.extend(done);
            for (k, _) in &unsettled {
                if !settled.contains_key(*k) {
                    delayed.insert((*k).clone(), Instant::now() + backoff);
                }
            }
        }
        let mut ready: Vec<_> = assignment
            .iter()
            .filter(|(k, f)| settled.get(*k) == Some(&f.leader_epoch) && !delayed.contains_key(*k))
            .collect();
        if !ready.is_empty() {
            // Start each fetch at another partition, so that when the response's byte limit
            // runs out it is not always the same partitions that wait.
            rotation = rotation.wrapping_add(1);
            let by = rotation % ready.len();
            ready.rotate_left(by);
            let retry = match fetch(broker.id(), &mut client, &ready, &settings).await {
                Ok(resettle) => resettle,
                Err(e) => {
                    debug!(addr = client.addr(), error = %e, "replica fetch failed");
                    ready.iter().map(|(k, _)| (*k).clone()).collect()
                }
            };
            for key in retry {
                settled.remove(&key);
                delayed.insert(key, Instant::now() + backoff);
            }
            continue;
        }
        // Nothing to fetch now: wait for the first delay to pass or a new assignment (say,
        // a new leader epoch).
        let until = delayed.values().min().copied();
        let changed = match until {
            Some(until) => tokio::time::timeout_at(until, assigned.changed()).await,
            None => Ok(assigned.changed().await),
        };
        if matches!(changed, Ok(Err(_))) {
            return;
        }
    }
}

/// Cut each partition's log back to where it agrees with the leader's. Returns the
/// partitions settled and the leader epoch they were settled for.
async fn settle(
    me: BrokerId,
    client: &mut PeerClient,
    partitions: &[(&(String, i32), &Followed)],
) -> Result<Vec<((String, i32), i32)>, CallError> {
    let mut done = Vec::new();
    // Per partition, the local epoch to ask about next.
    let mut asking: Vec<(&(String, i32), &Followed, Option<i32>)> = partitions
        .iter()
        .map(|(k, f)| {
            (
                *k,
                *f,
                f.replica.log().leader_epochs().last().map(|e| e.epoch),
            )
        })
        .collect();
    for _ in 0..MAX_TRUNCATION_ROUNDS {
        // An empty log has nothing to cut.
        asking.retain(|(k, f, epoch)| {
            if epoch.is_none() {
                done.push(((*k).clone(), f.leader_epoch));
            }
            epoch.is_some()
        });
        if asking.is_empty() {
            break;
        }
        let response = client
            .call(&epochs_request(me, &asking), EPOCHS_VERSION)
            .await?;
        let mut next = Vec::new();
        for topic in response.topics {
            for answer in topic.partitions {
                let key = (topic.topic.0.as_str().to_owned(), answer.partition);
                let Some((k, f, Some(asked))) = asking.iter().find(|(k, _, _)| **k == key) else {
                    continue;
                };
                if answer.error_code != 0 {
                    debug!(topic = %key.0, partition = key.1, code = answer.error_code,
                        "leader refused OffsetForLeaderEpoch");
                    continue;
                }
                let replica = Arc::clone(&f.replica);
                let log_end = replica.log().log_end_offset();
                // Kafka's rule (KIP-279): where the epoch the leader answered with ends on
                // both sides; if this log does not hold that epoch, cut to where its older
                // epoch ends and ask again about that one.
                let (cut, again) = if answer.leader_epoch < 0 {
                    // The leader holds no epoch at or below this log's latest.
                    (replica.high_watermark(), None)
                } else {
                    match replica.log().end_offset_for_epoch(answer.leader_epoch) {
                        Some((local_epoch, local_end)) if local_epoch == answer.leader_epoch => {
                            (answer.end_offset.min(local_end), None)
                        }
                        Some((local_epoch, local_end)) => (
                            answer.end_offset.min(local_end),
                            (local_epoch < *asked).then_some(local_epoch),
                        ),
                        // Every epoch here is newer than the leader's answer: none of it is
                        // the leader's.
                        None => {
                            let first = replica
                                .log()
                                .leader_epochs()
                                .first()
                                .map(|e| e.start_offset);
                            (answer.end_offset.min(first.unwrap_or(log_end)), None)
                        }
                    }
                };
                let cut = cut.min(log_end);
                if cut < log_end {
                    let epoch = f.leader_epoch;
                    let truncated = tokio::task::spawn_blocking(move || {
                        replica.truncate_to(cut, epoch, now_ms())
                    })
                    .await;
                    match truncated {
                        Ok(Ok(end)) => info!(topic = %key.0, partition = key.1, from = log_end,
                            to = end, leader_epoch = answer.leader_epoch,
                            "cut a diverged follower log back to the leader's"),
                        Ok(Err(e)) => {
                            warn!(topic = %key.0, partition = key.1, error = %e, "truncation failed");
                            continue;
                        }
                        Err(_) => continue,
                    }
                }
                match again {
                    Some(epoch) => next.push((*k, *f, Some(epoch))),
                    None => done.push(((*k).clone(), f.leader_epoch)),
                }
            }
        }
        asking = next;
    }
    Ok(done)
}

fn epochs_request(
    me: BrokerId,
    asking: &[(&(String, i32), &Followed, Option<i32>)],
) -> OffsetForLeaderEpochRequest {
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for ((topic, partition), f, epoch) in asking {
        topics.entry(topic).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(*partition)
                .with_current_leader_epoch(f.leader_epoch)
                .with_leader_epoch(epoch.unwrap_or(-1)),
        );
    }
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(KBrokerId(me.0))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

/// One replica fetch: append what came, take the high watermarks. Returns the partitions to
/// settle again after a backoff: refused by the leader (a leader epoch one side has not seen
/// yet, an offset out of range) or not appended here.
async fn fetch(
    me: BrokerId,
    client: &mut PeerClient,
    partitions: &[(&(String, i32), &Followed)],
    settings: &crate::config::KafkaSettings,
) -> Result<Vec<(String, i32)>, CallError> {
    // In the order given: the leader fills the response in request order.
    let mut topics: Vec<(&str, Vec<FetchPartition>)> = Vec::new();
    for ((topic, partition), f) in partitions {
        let log = f.replica.log();
        let at = match topics.iter().position(|(t, _)| t == topic) {
            Some(at) => at,
            None => {
                topics.push((topic, Vec::new()));
                topics.len() - 1
            }
        };
        topics[at].1.push(
            FetchPartition::default()
                .with_partition(*partition)
                .with_current_leader_epoch(f.leader_epoch)
                .with_fetch_offset(log.log_end_offset())
                .with_log_start_offset(log.log_start_offset())
                .with_partition_max_bytes(settings.replica_fetch_max_bytes),
        );
    }
    let request = FetchRequest::default()
        .with_replica_id(KBrokerId(me.0))
        .with_max_wait_ms(i32::try_from(settings.replica_fetch_wait_max_ms).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(settings.replica_fetch_response_max_bytes)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let response: FetchResponse = client.call(&request, FETCH_VERSION).await?;
    let mut resettle = Vec::new();
    for topic in response.responses {
        for data in topic.partitions {
            let key = (topic.topic.0.as_str().to_owned(), data.partition_index);
            let Some((_, f)) = partitions.iter().find(|(k, _)| **k == key) else {
                continue;
            };
            let replica = Arc::clone(&f.replica);
            match ResponseError::try_from_code(data.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    let log_end = replica.log().log_end_offset();
                    if log_end < data.log_start_offset {
                        // Behind the leader's log start: nothing here is worth keeping.
                        let (start, epoch) = (data.log_start_offset, f.leader_epoch);
                        let reset = tokio::task::spawn_blocking(move || {
                            replica.restart_at(start, epoch, now_ms())
                        })
                        .await;
                        if !matches!(reset, Ok(Ok(_))) {
                            warn!(topic = %key.0, partition = key.1, "cannot restart the log at the leader's start");
                        }
                    }
                    resettle.push(key);
                    continue;
                }
                Some(error) => {
                    debug!(topic = %key.0, partition = key.1, %error, "replica fetch refused");
                    resettle.push(key);
                    continue;
                }
            }
            let records = data.records.unwrap_or_default();
            if !records.is_empty() {
                let appended = tokio::task::spawn_blocking({
                    let replica = Arc::clone(&replica);
                    let epoch = f.leader_epoch;
                    move || replica.append_replicated(&records, epoch, now_ms())
                })
                .await;
                match appended {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        warn!(topic = %key.0, partition = key.1, error = %e, "cannot append fetched batches");
                        resettle.push(key);
                        continue;
                    }
                    Err(_) => {
                        resettle.push(key);
                        continue;
                    }
                }
            }
            replica.follow_high_watermark(f.leader_epoch, data.high_watermark);
            if data.log_start_offset > replica.log().log_start_offset() {
                // The leader deleted records (DeleteRecords): delete them here too.
                let (start, epoch) = (data.log_start_offset, f.leader_epoch);
                let followed = tokio::task::spawn_blocking({
                    let replica = Arc::clone(&replica);
                    move || replica.follow_log_start(epoch, start)
                })
                .await;
                if !matches!(followed, Ok(Ok(()))) {
                    warn!(topic = %key.0, partition = key.1, start, "cannot move the log start to the leader's");
                }
            }
        }
    }
    Ok(resettle)
}

#[cfg(test)]
mod tests {
    use anyhow::{Context, ensure};
    use bytes::Bytes;
    use figment::providers::Serialized;
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{CreateTopicsRequest, ProduceRequest};

    use std::path::Path;

    use super::*;
    use crate::config::{Config, Overrides, defaults};
    use crate::serve::Node;
    use switchyard_log::batch::testing::batch;
    use switchyard_log::{LogConfig, PartitionLog};

    const TOPIC: &str = "diverged";
    const FOLLOWER: BrokerId = BrokerId(2);
    const DEADLINE: Duration = Duration::from_secs(30);

    /// A single broker (id 1) on the memory backend, registered, with [`TOPIC`] created on
    /// replicas 1 and [`FOLLOWER`] (registered, never started: the test plays its part).
    async fn leader(dir: &Path) -> anyhow::Result<(Node, PeerClient)> {
        let overrides = Overrides {
            metadata_backend: Some("memory".into()),
            data_dir: Some(dir.to_owned()),
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let config = Config::from_figment(defaults().merge(Serialized::defaults(&overrides)))?;
        let node = Node::start(&config).await?;
        let mut registered = node.broker().registration();
        tokio::time::timeout(DEADLINE, registered.wait_for(|r| *r)).await??;
        node.broker()
            .propose(MetadataCommand::RegisterBroker {
                id: FOLLOWER,
                host: "127.0.0.1".into(),
                port: 1,
                rack: None,
                listeners: Vec::new(),
            })
            .await?;
        let mut client = PeerClient::new(node.kafka_addr().to_string(), "test".into(), DEADLINE);
        let created = client
            .call(
                &CreateTopicsRequest::default()
                    .with_topics(vec![
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                            .with_assignments(vec![
                                CreatableReplicaAssignment::default()
                                    .with_partition_index(0)
                                    .with_broker_ids(vec![
                                        KBrokerId(node.broker().id().0),
                                        KBrokerId(FOLLOWER.0),
                                    ]),
                            ]),
                    ])
                    .with_timeout_ms(10_000),
                7,
            )
            .await?;
        ensure!(
            created.topics.iter().all(|t| t.error_code == 0),
            "{created:?}"
        );
        Ok((node, client))
    }

    /// Produce with `acks=1`: the follower does not fetch meanwhile.
    async fn produce(client: &mut PeerClient, values: &[&[u8]]) -> anyhow::Result<()> {
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(batch(0, values)))),
                    ]),
            ]);
        let response = client.call(&request, 9).await?;
        let code = response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .map(|p| p.error_code)
            .next();
        ensure!(code == Some(0), "produce answered {code:?}");
        Ok(())
    }

    /// Move the partition's leadership away and back: two leader epochs later.
    async fn bump_epoch_twice(node: &Node) -> anyhow::Result<()> {
        let broker = node.broker();
        for leader in [None, Some(broker.id())] {
            let view = broker.metadata();
            let partition = view.state.partition(TOPIC, 0).context("no partition")?;
            broker
                .propose(MetadataCommand::AlterPartition {
                    topic: TOPIC.into(),
                    partition: 0,
                    partition_epoch: partition.partition_epoch,
                    leader,
                    isr: vec![broker.id()],
                })
                .await?;
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_diverged_follower_cuts_its_tail_at_the_leaders_epoch_boundary_then_copies()
    -> anyhow::Result<()> {
        let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
        let (node, mut client) = leader(dirs.0.path()).await?;
        // The leader: epoch 0 holds offsets 0..3, epoch 2 holds 3..5.
        produce(&mut client, &[b"a", b"b", b"c"]).await?;
        bump_epoch_twice(&node).await?;
        produce(&mut client, &[b"d", b"e"]).await?;
        let leader_log = node.broker().replica(TOPIC, 0).context("leader replica")?;

        // The follower copied epoch 0, then led epoch 1 and wrote 3..6 that nobody copied.
        let log = Arc::new(PartitionLog::open(dirs.1.path(), LogConfig::default())?);
        let replica = Arc::new(Replica::open(log)?);
        // At least one batch, at most one: the leader's epoch-0 batch.
        let first = leader_log.log().read(0, 1)?.records;
        replica.follow(0);
        replica.append_replicated(&first, 0, 0)?;
        replica.log().append(&batch(0, &[b"x", b"y", b"z"]), 1, 0)?;
        ensure!(replica.log().log_end_offset() == 6);
        replica.follow(2);

        let key = (TOPIC.to_owned(), 0);
        // A follower naming an old leader epoch is refused: nothing settles, nothing is cut.
        let stale = Followed {
            leader_epoch: 1,
            replica: Arc::clone(&replica),
        };
        let done = settle(FOLLOWER, &mut client, &[(&key, &stale)]).await?;
        ensure!(done.is_empty(), "settled at a fenced epoch: {done:?}");
        ensure!(replica.log().log_end_offset() == 6);

        // At the current epoch: epoch 1 is unknown to the leader, which answers with epoch 0
        // ending at 3; the follower cuts 3..6 and copies the leader's 3..5.
        let current = Followed {
            leader_epoch: 2,
            replica: Arc::clone(&replica),
        };
        let done = settle(FOLLOWER, &mut client, &[(&key, &current)]).await?;
        ensure!(done == vec![(key.clone(), 2)], "{done:?}");
        ensure!(replica.log().log_end_offset() == 3);
        let settings = node.broker().settings().clone();
        let retry = fetch(FOLLOWER, &mut client, &[(&key, &current)], &settings).await?;
        ensure!(retry.is_empty(), "{retry:?}");
        ensure!(replica.log().log_end_offset() == 5);
        ensure!(
            replica.log().read(0, 1 << 20)?.records == leader_log.log().read(0, 1 << 20)?.records
        );
        ensure!(replica.high_watermark() == 5);
        node.shutdown().await?;
        Ok(())
    }
}
