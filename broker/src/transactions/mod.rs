//! The transaction coordinator (KIP-98). Its durable state — per `transactional.id` the
//! producer id and epoch, and the transaction's state with its partitions, groups and pending
//! offsets — is metadata (`switchyard_backend_api::Transaction`), changed only by commands
//! every backend replicates; there is no `__transaction_state` topic. Each transactional id
//! is coordinated by the live broker
//! [`switchyard_backend_api::MetadataState::group_coordinator`] picks, as groups are.
//!
//! What the coordinator does beyond proposing the producers' requests is decided by
//! [`machine::due`] from the metadata alone:
//! - a transaction in PrepareCommit or PrepareAbort has its markers written (WriteTxnMarkers
//!   to each partition's leader, or an append here when this broker leads it; each marker is
//!   replicated to the partition's ISR before it counts), then `CompleteTxn` applies (which,
//!   for a commit, makes the transaction's offsets the groups' committed offsets);
//! - a transaction open longer than its `transaction.timeout.ms` is aborted
//!   (`AbortExpiredTxn`, which fences its producer) and completed likewise;
//! - a transactional id idle longer than `transactional.id.expiration.ms` is forgotten
//!   (`ExpireTransactionalId`).
//!
//! EndTxn and a fencing InitProducerId start the completion at once; a background task checks
//! every `transaction.abort.timed.out.transaction.cleanup.interval.ms`, which also finishes
//! the completions a previous coordinator left (it died, or the placement moved): the
//! decision is in the metadata, so any coordinator writes the same markers. Markers carry
//! the transaction's marker epoch (`Transaction::marker_epoch`, one more for each transaction
//! the transactional id decides) as their coordinator epoch, and a partition writes a marker
//! only when its epoch is past that of the producer's last marker there: a copy of a marker
//! that arrives late (a request retried after its answer was lost, one delayed on the way)
//! ends nothing, not even the transaction the producer has open there since (KIP-890's late
//! marker).

pub mod machine;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use parking_lot::Mutex;
use switchyard_backend_api::{BrokerId, MetadataCommand, MetadataError};
use switchyard_log::control::Marker;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::broker::{Broker, now_ms};
use crate::kafka::client::PeerClient;
use crate::kafka::errors::partition_error;
use crate::kafka::handlers::kstr;
use machine::{Action, Completion};

/// Retries of a marker write start at this pause and double up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A connection to another broker, used by one request at a time.
type SharedPeer = Arc<tokio::sync::Mutex<PeerClient>>;

/// The completions in flight on this broker, and its connections to the other brokers for
/// WriteTxnMarkers.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    /// Transactional id → turns `true` when its completion task ends.
    in_flight: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Broker → the address it was reached at and the connection there.
    peers: Mutex<HashMap<BrokerId, (String, SharedPeer)>>,
}

impl TxnCoordinator {
    /// Complete `completion` in a task of its own (unless one is already at it); the
    /// receiver turns `true` when that task ends.
    pub fn start(&self, broker: &Arc<Broker>, completion: Completion) -> watch::Receiver<bool> {
        let mut in_flight = self.in_flight.lock();
        if let Some(done) = in_flight.get(&completion.transactional_id) {
            return done.clone();
        }
        let (tx, rx) = watch::channel(false);
        in_flight.insert(completion.transactional_id.clone(), rx.clone());
        let broker = Arc::clone(broker);
        tokio::spawn(async move {
            let id = completion.transactional_id.clone();
            complete(&broker, completion).await;
            broker.transactions().in_flight.lock().remove(&id);
            tx.send_replace(true);
        });
        rx
    }

    /// Start the completion `transactional_id` waits for in the metadata, if any; the
    /// receiver turns `true` when it ends.
    pub fn start_pending(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
    ) -> Option<watch::Receiver<bool>> {
        let completion = {
            let view = broker.metadata();
            view.state
                .transaction(transactional_id)
                .and_then(|txn| Completion::of(transactional_id, txn))
        }?;
        Some(self.start(broker, completion))
    }

    /// [`Self::start_pending`], then wait until the completion ends or `deadline` passes.
    /// Returns whether nothing is left pending.
    pub async fn finish(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        deadline: Instant,
    ) -> bool {
        let Some(mut done) = self.start_pending(broker, transactional_id) else {
            return true;
        };
        matches!(
            tokio::time::timeout_at(deadline, done.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }

    fn in_flight(&self) -> HashSet<String> {
        self.in_flight.lock().keys().cloned().collect()
    }

    /// A connection to broker `id` at the address it registered now (a broker that comes back
    /// elsewhere gets a new one).
    fn peer(&self, broker: &Broker, id: BrokerId) -> Option<SharedPeer> {
        let addr = {
            let view = broker.metadata();
            let target = view.state.broker(id)?;
            format!("{}:{}", target.host, target.port)
        };
        let mut peers = self.peers.lock();
        if let Some((known, client)) = peers.get(&id)
            && *known == addr
        {
            return Some(Arc::clone(client));
        }
        let client = Arc::new(tokio::sync::Mutex::new(broker.peer_client(
            addr.clone(),
            format!("switchyard-txn-coordinator-{}", broker.id()),
            // The leader answers once the ISR has the markers, within its metadata timeout.
            broker.metadata_timeout() * 2,
        )));
        peers.insert(id, (addr, Arc::clone(&client)));
        Some(client)
    }
}

/// Abort expired transactions and finish pending completions of the transactional ids this
/// broker coordinates, every `interval`. Runs until aborted.
pub async fn run(broker: Arc<Broker>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !broker.is_registered() {
            continue;
        }
        let limits = machine::Limits {
            id_expiration_ms: i64::try_from(broker.settings().transactional_id_expiration_ms)
                .unwrap_or(i64::MAX),
        };
        let actions = {
            let view = broker.metadata();
            machine::due(
                &view.state,
                broker.id(),
                now_ms(),
                &broker.transactions().in_flight(),
                limits,
            )
        };
        for action in actions {
            match action {
                Action::Complete(completion) => {
                    broker.transactions().start(&broker, completion);
                }
                Action::Forget {
                    transactional_id,
                    producer: (producer_id, producer_epoch),
                } => {
                    let command = MetadataCommand::ExpireTransactionalId {
                        transactional_id: transactional_id.clone(),
                        producer_id,
                        producer_epoch,
                    };
                    match broker.propose(command).await {
                        Ok(_) => debug!(%transactional_id, "idle transactional id forgotten"),
                        Err(error) => {
                            debug!(%transactional_id, %error, "forgetting a transactional id failed");
                        }
                    }
                }
                Action::Expire {
                    transactional_id,
                    producer: (producer_id, producer_epoch),
                } => {
                    let command = MetadataCommand::AbortExpiredTxn {
                        transactional_id: transactional_id.clone(),
                        producer_id,
                        producer_epoch,
                        now_ms: now_ms(),
                    };
                    match broker.propose_applied(command).await {
                        Ok(_) => {
                            warn!(%transactional_id, producer_id, producer_epoch, "transaction open past its timeout: aborted");
                            broker
                                .transactions()
                                .start_pending(&broker, &transactional_id);
                        }
                        Err(MetadataError::Rejected(rejection)) => {
                            debug!(%transactional_id, %rejection, "expiry overtaken");
                        }
                        Err(error) => {
                            warn!(%transactional_id, %error, "aborting an expired transaction failed; retried at the next check");
                        }
                    }
                }
            }
        }
    }
}

/// Write `completion`'s markers until every partition has one, then complete the
/// transaction; gives up when the metadata no longer waits for it here (done by another
/// coordinator, or placed on another broker).
async fn complete(broker: &Arc<Broker>, completion: Completion) {
    let id = completion.transactional_id.as_str();
    let mut remaining = completion.partitions.clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        {
            let view = broker.metadata();
            if !completion.pending_in(&view.state)
                || view
                    .state
                    .group_coordinator(id)
                    .is_none_or(|b| b.id != broker.id())
            {
                return;
            }
        }
        remaining = write_markers(broker, &completion, remaining).await;
        if remaining.is_empty() {
            let command = MetadataCommand::CompleteTxn {
                transactional_id: id.to_owned(),
                producer_id: completion.producer.0,
                producer_epoch: completion.producer.1,
                now_ms: now_ms(),
            };
            match broker.propose(command).await {
                Ok(_) => return,
                Err(MetadataError::Rejected(rejection)) => {
                    debug!(transactional_id = id, %rejection, "completion overtaken");
                    return;
                }
                Err(error) => {
                    warn!(transactional_id = id, %error, "completing a transaction failed; retrying");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Write `completion`'s marker to each of `partitions` through its leader; returns the ones
/// that failed (no leader, unreachable, not replicated in time). A partition whose topic is
/// gone needs no marker.
async fn write_markers(
    broker: &Arc<Broker>,
    completion: &Completion,
    partitions: Vec<(String, u32)>,
) -> Vec<(String, u32)> {
    let mut failed = Vec::new();
    let mut by_leader: BTreeMap<BrokerId, Vec<(String, u32)>> = BTreeMap::new();
    {
        let view = broker.metadata();
        for (topic, index) in partitions {
            match view.state.partition(&topic, index).map(|p| p.leader) {
                None => {}
                Some(Some(leader)) => by_leader.entry(leader).or_default().push((topic, index)),
                Some(None) => failed.push((topic, index)),
            }
        }
    }
    let writes = by_leader
        .into_iter()
        .map(|(leader, partitions)| async move {
            if leader == broker.id() {
                let mut failed = Vec::new();
                for (topic, index) in partitions {
                    let partition = i32::try_from(index).unwrap_or(i32::MAX);
                    if let Err(error) = write_marker(
                        broker,
                        &topic,
                        partition,
                        completion.producer,
                        completion.marker,
                        completion.marker_epoch,
                    )
                    .await
                    {
                        debug!(%topic, partition, %error, "writing a transaction marker failed");
                        failed.push((topic, index));
                    }
                }
                failed
            } else {
                send_markers(broker, leader, completion, partitions).await
            }
        });
    failed.extend(join_all(writes).await.into_iter().flatten());
    failed
}

/// Ask broker `leader` to write `completion`'s marker to `partitions` (WriteTxnMarkers);
/// returns the ones it did not.
async fn send_markers(
    broker: &Broker,
    leader: BrokerId,
    completion: &Completion,
    partitions: Vec<(String, u32)>,
) -> Vec<(String, u32)> {
    let Some(client) = broker.transactions().peer(broker, leader) else {
        return partitions;
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in &partitions {
        topics
            .entry(topic)
            .or_default()
            .push(i32::try_from(*index).unwrap_or(i32::MAX));
    }
    let request = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(completion.producer.0))
            .with_producer_epoch(completion.producer.1)
            .with_transaction_result(completion.marker == Marker::Commit)
            .with_coordinator_epoch(completion.marker_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(kstr(topic)))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            ),
    ]);
    let response = client.lock().await.call(&request, 1).await;
    match response {
        Ok(response) => {
            let written: HashSet<(String, u32)> = response
                .markers
                .iter()
                .flat_map(|m| &m.topics)
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| p.error_code == 0)
                        .filter_map(|p| {
                            Some((t.name.0.to_string(), u32::try_from(p.partition_index).ok()?))
                        })
                })
                .collect();
            partitions
                .into_iter()
                .filter(|p| !written.contains(p))
                .collect()
        }
        Err(error) => {
            debug!(%leader, %error, "WriteTxnMarkers failed");
            partitions
        }
    }
}

/// Append a marker of coordinator epoch `coordinator_epoch` for `producer` to
/// `topic`/`partition`, led here, and wait until the ISR has it (see
/// [`crate::replicas::Replica::append_marker`]: a copy of the producer's last marker there is
/// not written again). A producer already at a newer epoch in the partition has nothing left
/// to end there.
pub async fn write_marker(
    broker: &Broker,
    topic: &str,
    partition: i32,
    producer: (i64, i16),
    marker: Marker,
    coordinator_epoch: i32,
) -> Result<(), ResponseError> {
    let (replica, epoch) = broker.led_replica(topic, partition).await?;
    let appender = Arc::clone(&replica);
    let appended = tokio::task::spawn_blocking(move || {
        appender.append_marker(producer, marker, coordinator_epoch, epoch, now_ms())
    })
    .await
    .map_err(|_| ResponseError::KafkaStorageError)?;
    let end = match appended {
        Ok(end) => end,
        Err(crate::replicas::PartitionError::StaleProducerEpoch { .. }) => return Ok(()),
        Err(error) => return Err(partition_error(&error)),
    };
    let deadline = Instant::now() + broker.metadata_timeout();
    replica
        .wait_replicated(end, epoch, deadline)
        .await
        .map_err(|e| partition_error(&e))
}
