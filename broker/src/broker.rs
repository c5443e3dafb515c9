//! [`Broker`]: the state one Kafka broker shares between its connections — its identity, the
//! metadata backend, the group coordinator, producer-id blocks — and the start-up task that
//! registers it once the backend is ready.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{
    BrokerEndpoint, BrokerId, Change, ClusterId, MetadataBackend, MetadataCommand, MetadataError,
    MetadataState, NodeId, Outcome, Proposed, StateView, StreamError,
};
use tokio::sync::{Mutex, Notify, Semaphore, watch};
use tracing::{info, warn};

use crate::config::KafkaSettings;
use crate::group::GroupCoordinator;
use crate::kafka::client::PeerClient;
use crate::kafka::handlers::configs::BrokerDefaults;
use crate::kafka::handlers::snapshots::Snapshots;
use crate::kafka::sasl::ListenerSecurity;
use crate::liveness::Liveness;
use crate::replicas::{Replica, Replicas};
use crate::replication::LeaderView;
use crate::transactions::TxnCoordinator;

/// How many producer ids one metadata proposal reserves.
const PRODUCER_ID_BLOCK: u32 = 1_000;

/// A broker's shared state.
#[derive(Debug)]
pub struct Broker {
    /// This broker, for the tasks its handlers start.
    me: Weak<Broker>,
    id: BrokerId,
    /// Every listener's advertised endpoint; `listeners[inter_broker]` is the one other
    /// brokers use.
    listeners: Vec<BrokerEndpoint>,
    inter_broker: usize,
    backend: Arc<dyn MetadataBackend>,
    settings: KafkaSettings,
    /// The inter-broker listener's security: how this broker authenticates to the others.
    peer_security: ListenerSecurity,
    registered: watch::Sender<bool>,
    groups: GroupCoordinator,
    transactions: TxnCoordinator,
    producer_ids: Mutex<Option<(i64, i64)>>,
    replicas: Arc<Replicas>,
    incarnation: AtomicU64,
    liveness: Liveness,
    isr_checks: Notify,
    /// `queued.max.request.bytes`: one permit per request byte in memory (read, decoded or
    /// being answered), shared by every connection.
    request_budget: Semaphore,
    /// Metadata exports taken for FetchSnapshot, kept while their clients fetch them.
    snapshots: Snapshots,
}

/// The permits of the request budget: `queued.max.request.bytes`, within what a semaphore holds.
fn budget_permits(settings: &KafkaSettings) -> usize {
    usize::try_from(settings.queued_max_request_bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

impl Broker {
    /// A broker advertising `listeners` (at least one; `listeners[inter_broker]` is where
    /// other brokers reach it, speaking `peer_security`) over `backend`. Returns at once;
    /// call [`Broker::register`] in a task to register it when the backend becomes ready.
    pub fn new(
        id: BrokerId,
        (listeners, inter_broker): (Vec<BrokerEndpoint>, usize),
        backend: Arc<dyn MetadataBackend>,
        settings: KafkaSettings,
        peer_security: ListenerSecurity,
        replicas: Replicas,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            id,
            listeners,
            inter_broker,
            groups: GroupCoordinator::new(id, Arc::clone(&backend), &settings),
            transactions: TxnCoordinator::default(),
            backend,
            registered: watch::Sender::new(false),
            producer_ids: Mutex::new(None),
            replicas: Arc::new(replicas),
            incarnation: AtomicU64::new(0),
            liveness: Liveness::default(),
            isr_checks: Notify::new(),
            request_budget: Semaphore::new(budget_permits(&settings)),
            snapshots: Snapshots::default(),
            settings,
            peer_security,
        })
    }

    /// The request-bytes budget connections take their requests' sizes from.
    pub(crate) fn request_budget(&self) -> &Semaphore {
        &self.request_budget
    }

    /// Bytes of requests held in memory right now (read and not yet answered).
    pub fn request_bytes_in_flight(&self) -> usize {
        budget_permits(&self.settings).saturating_sub(self.request_budget.available_permits())
    }

    /// Metadata exports taken for FetchSnapshot.
    pub(crate) fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The partitions stored here.
    pub fn replicas(&self) -> &Arc<Replicas> {
        &self.replicas
    }

    /// The open replica of a partition, if any.
    pub fn replica(&self, topic: &str, partition: i32) -> Option<Arc<Replica>> {
        self.replicas.get(topic, partition)
    }

    /// [`Self::led_replica`] for a request that names the leader epoch it expects
    /// (`current_leader_epoch`, KIP-320; -1 names none): an older one is fenced
    /// (`FENCED_LEADER_EPOCH`), a newer one not known here yet (`UNKNOWN_LEADER_EPOCH`).
    pub async fn led_replica_in(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
    ) -> Result<(Arc<Replica>, i32), ResponseError> {
        let (replica, epoch) = self.led_replica(topic, partition).await?;
        if current_leader_epoch >= 0 && current_leader_epoch < epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if current_leader_epoch > epoch {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
        Ok((replica, epoch))
    }

    /// The replica of a partition this broker leads, opened on first use, with the partition's
    /// leader epoch. Fails with the Kafka error a client should see: unknown partition, not
    /// the leader (or, without its lease, perhaps no longer: see [`crate::liveness`]), or not
    /// ready.
    pub async fn led_replica(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(Arc<Replica>, i32), ResponseError> {
        if !self.is_registered() {
            return Err(ResponseError::LeaderNotAvailable);
        }
        let session = Duration::from_millis(self.settings.broker_session_timeout_ms);
        if !self.liveness.holds_lease(session) {
            // Perhaps fenced by now, its partitions led elsewhere (see `liveness`).
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let view = self.metadata();
        let (leader, leader_view, configs) = {
            let t = view
                .state
                .topic(topic)
                .ok_or(ResponseError::UnknownTopicOrPartition)?;
            let p = u32::try_from(partition)
                .ok()
                .and_then(|index| t.partitions.get(index as usize))
                .ok_or(ResponseError::UnknownTopicOrPartition)?;
            let configs = self.log_overrides(&view.state, t);
            (
                p.leader,
                leader_view(p, self.min_insync(&view.state, t)),
                configs,
            )
        };
        if leader != Some(self.id) {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let leader_epoch = leader_view.leader_epoch;
        if let Some(replica) = self.replicas.get(topic, partition) {
            replica.lead(self.id, leader_view);
            return Ok((replica, leader_epoch));
        }
        let replicas = Arc::clone(&self.replicas);
        let topic = topic.to_owned();
        let replica =
            tokio::task::spawn_blocking(move || replicas.get_or_open(&topic, partition, &configs))
                .await
                .map_err(|_| ResponseError::KafkaStorageError)??;
        replica.lead(self.id, leader_view);
        Ok((replica, leader_epoch))
    }

    /// The topic configs a partition log of `topic` runs with over the static defaults of
    /// `[kafka]`: the dynamic broker configs in `state` (this broker's own, else the
    /// cluster-wide ones), under the topic's own overrides.
    pub(crate) fn log_overrides(
        &self,
        state: &MetadataState,
        topic: &switchyard_backend_api::Topic,
    ) -> BTreeMap<String, String> {
        let mut overrides = BrokerDefaults::of(self, state).dynamic_topic_defaults();
        overrides.extend(topic.configs.iter().map(|(k, v)| (k.clone(), v.clone())));
        overrides
    }

    /// The topic's `min.insync.replicas`: its override, else the broker's default (dynamic,
    /// then static).
    pub(crate) fn min_insync(
        &self,
        state: &MetadataState,
        topic: &switchyard_backend_api::Topic,
    ) -> usize {
        self.log_overrides(state, topic)
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .or_else(|| usize::try_from(self.settings.min_insync_replicas).ok())
            .unwrap_or(1)
    }

    /// Wakes the ISR checks of the partitions led here (a follower may have caught up).
    pub fn isr_checks(&self) -> &Notify {
        &self.isr_checks
    }

    /// Delete the partition logs of topics the metadata no longer has, as deletions apply and
    /// once at start (for deletions applied while this broker was down). Runs until the
    /// change stream closes.
    pub async fn follow_topic_deletions(self: Arc<Self>) {
        let mut registered = self.registration();
        if registered.wait_for(|r| *r).await.is_err() {
            return;
        }
        let mut changes = self.backend.subscribe();
        self.remove_orphan_logs().await;
        loop {
            match changes.recv().await {
                Ok(change) => {
                    if let Change::Applied {
                        command,
                        result: Ok(Outcome::TopicsDeleted { results }),
                    } = &change.change
                        && let MetadataCommand::DeleteTopics { names } = &**command
                    {
                        for (name, result) in names.iter().zip(results) {
                            if result.is_ok() {
                                self.delete_logs(name.clone()).await;
                            }
                        }
                    }
                }
                Err(StreamError::Lagged { .. }) => self.remove_orphan_logs().await,
                Err(_) => return,
            }
        }
    }

    async fn remove_orphan_logs(&self) {
        let view = self.metadata();
        for topic in self.replicas.stored_topics() {
            if view.state.topic(&topic).is_none() {
                self.delete_logs(topic).await;
            }
        }
    }

    async fn delete_logs(&self, topic: String) {
        let replicas = Arc::clone(&self.replicas);
        if tokio::task::spawn_blocking(move || replicas.delete_topic(&topic))
            .await
            .is_err()
        {
            warn!("deleting partition logs panicked");
        }
    }

    /// Enforce retention and time-based flushes every `interval`. Runs until aborted.
    pub async fn maintain_logs(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let replicas = Arc::clone(&self.replicas);
            let expiration = self.settings.producer_id_expiration_ms;
            if tokio::task::spawn_blocking(move || replicas.maintain(now_ms(), expiration))
                .await
                .is_err()
            {
                warn!("log maintenance panicked");
            }
        }
    }

    /// Checkpoint the partitions' high watermarks and snapshot their producer state every
    /// `interval` (`replica.high.watermark.checkpoint.interval.ms`). Runs until aborted.
    pub async fn checkpoint_replicas(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let replicas = Arc::clone(&self.replicas);
            if tokio::task::spawn_blocking(move || replicas.checkpoint_replicas())
                .await
                .is_err()
            {
                warn!("replica checkpoint panicked");
            }
        }
    }

    /// This broker's id.
    pub fn id(&self) -> BrokerId {
        self.id
    }

    /// Advertised host of the inter-broker listener.
    pub fn host(&self) -> &str {
        &self.inter_broker_endpoint().host
    }

    /// Advertised port of the inter-broker listener.
    pub fn port(&self) -> u16 {
        self.inter_broker_endpoint().port
    }

    fn inter_broker_endpoint(&self) -> &BrokerEndpoint {
        &self.listeners[self.inter_broker]
    }

    /// This broker's advertised endpoint on the listener named `name`.
    pub(crate) fn own_endpoint(&self, name: &str) -> Option<(&str, u16)> {
        self.listeners
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.host.as_str(), e.port))
    }

    /// Kafka settings.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// A client of another broker's Kafka listener at `addr`, authenticating as this broker
    /// where the listeners ask for it.
    pub fn peer_client(&self, addr: String, client_id: String, timeout: Duration) -> PeerClient {
        let me = NodeId(u64::try_from(self.id.0).unwrap_or_default());
        PeerClient::new(addr, client_id, timeout)
            .with_credentials(self.peer_security.peer_credentials(me))
            .with_tls(
                self.peer_security
                    .tls
                    .as_ref()
                    .map(|tls| tls.client.clone()),
            )
    }

    /// The metadata backend.
    pub fn backend(&self) -> &Arc<dyn MetadataBackend> {
        &self.backend
    }

    /// The group coordinator.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// The transaction coordinator.
    pub fn transactions(&self) -> &TxnCoordinator {
        &self.transactions
    }

    /// This broker as shared, for a task that outlives a request; `None` once it is being
    /// dropped.
    pub fn shared(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    /// The local metadata view.
    pub fn metadata(&self) -> Arc<StateView> {
        self.backend.local()
    }

    /// Whether the broker has registered and serves metadata.
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// Follow registration.
    pub fn registration(&self) -> watch::Receiver<bool> {
        self.registered.subscribe()
    }

    /// The incarnation of this broker's last registration (0 before it registered).
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Acquire)
    }

    /// What this broker knows of the other brokers' heartbeats.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Whether this broker runs on the node that leads the metadata backend: the one that
    /// takes heartbeats and fences brokers.
    pub fn is_metadata_leader(&self) -> bool {
        let views = self.backend.cluster();
        let view = views.borrow();
        view.is_ready()
            && view.role == switchyard_backend_api::Role::Leader
            && view.leader == Some(view.node)
    }

    /// The error a group request gets on this broker, if it may not serve `group` now:
    /// `COORDINATOR_NOT_AVAILABLE` before registration, `NOT_COORDINATOR` if another live
    /// broker coordinates it (the coordinator drops the group's runtime here, if any, at its
    /// next housekeeping).
    pub fn coordination_error(&self, group: &str) -> Option<ResponseError> {
        if !self.is_registered() {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        let view = self.metadata();
        match view.state.group_coordinator(group) {
            Some(b) if b.id == self.id => None,
            Some(_) => Some(ResponseError::NotCoordinator),
            None => Some(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Propose a command with the configured deadline.
    pub async fn propose(&self, command: MetadataCommand) -> Result<Outcome, MetadataError> {
        propose_within(&*self.backend, self.metadata_timeout(), command).await
    }

    /// Propose a command only as the metadata leader
    /// ([`MetadataBackend::propose_as_leader`]: never forwarded), with the configured deadline.
    pub async fn propose_as_leader(
        &self,
        command: MetadataCommand,
    ) -> Result<Outcome, MetadataError> {
        let timeout = self.metadata_timeout();
        outcome_within(timeout, self.backend.propose_as_leader(command)).await
    }

    /// Propose a command with the configured deadline, then wait (within it) until this node
    /// has applied it, so that the local view holds its effect: a command forwarded to the
    /// metadata leader applies there first.
    pub async fn propose_applied(
        &self,
        command: MetadataCommand,
    ) -> Result<Outcome, MetadataError> {
        let timeout = self.metadata_timeout();
        let started = std::time::Instant::now();
        let proposed = match tokio::time::timeout(timeout, self.backend.propose(command)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(MetadataError::Timeout {
                    what: "metadata proposal".into(),
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
        };
        self.backend
            .wait_applied(proposed.index, timeout.saturating_sub(started.elapsed()))
            .await?;
        Ok(proposed.outcome)
    }

    /// Wait until this node's metadata view satisfies `ready`, or `timeout` passes: woken by
    /// the change stream, never by polling. A request another broker answered (forwarded to
    /// the metadata leader's) applied there first; a client's next request here must see it.
    pub async fn wait_local(&self, ready: impl Fn(&MetadataState) -> bool, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.backend.subscribe();
        while !ready(&self.metadata().state) {
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) | Ok(Err(StreamError::Closed)) => return,
                // A change, or lagged: look again.
                Ok(_) => {}
            }
        }
    }

    /// The deadline for metadata calls.
    pub fn metadata_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.metadata_timeout_ms)
    }

    /// Wait for the backend to be ready, then set the cluster id if nobody has and register
    /// this broker. Retries retriable failures; never blocks anything else: the listener serves
    /// retriable errors meanwhile.
    pub async fn register(self: Arc<Self>) {
        loop {
            match self.try_register().await {
                Ok(incarnation) => {
                    // Serve first, then say so: the log line means requests are accepted.
                    self.registered.send_replace(true);
                    info!(broker = %self.id, incarnation, "broker registered");
                    return;
                }
                Err(e) if e.is_retriable() => {
                    warn!(broker = %self.id, error = %e, "registration not possible yet; retrying");
                    let mut views = self.backend.cluster();
                    // Wake on the next cluster change, or retry after a second.
                    let _ = tokio::time::timeout(Duration::from_secs(1), views.changed()).await;
                }
                Err(e) => {
                    warn!(broker = %self.id, error = %e, "broker registration failed");
                    return;
                }
            }
        }
    }

    async fn try_register(&self) -> Result<u64, MetadataError> {
        self.backend.wait_ready(self.metadata_timeout()).await?;
        self.propose_registration().await
    }

    /// Register again with a new incarnation: this broker was fenced (it missed its session
    /// timeout) but is running. Unfences it and gives it back the partitions it may lead.
    pub async fn reregister(&self) -> Result<u64, MetadataError> {
        let incarnation = self.propose_registration().await?;
        info!(broker = %self.id, incarnation, "broker re-registered after being fenced");
        Ok(incarnation)
    }

    async fn propose_registration(&self) -> Result<u64, MetadataError> {
        if self.backend.local().state.cluster_id().is_none() {
            let cluster_id = ClusterId(uuid::Uuid::new_v4().simple().to_string());
            match self
                .propose(MetadataCommand::InitCluster { cluster_id })
                .await
            {
                // Another node set it first: keep theirs.
                Ok(_) | Err(MetadataError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let sent = tokio::time::Instant::now();
        let outcome = self
            .propose(MetadataCommand::RegisterBroker {
                id: self.id,
                host: self.host().to_owned(),
                port: self.port(),
                rack: None,
                listeners: self.listeners.clone(),
            })
            .await?;
        match outcome {
            Outcome::BrokerRegistered { incarnation } => {
                self.incarnation.store(incarnation, Ordering::Release);
                // The metadata leader counts the new incarnation's session from no earlier.
                self.liveness.renew_lease(sent);
                Ok(incarnation)
            }
            other => Err(MetadataError::Storage(format!(
                "unexpected registration outcome {other:?}"
            ))),
        }
    }

    /// Hand out one producer id, reserving a block through the metadata backend when the
    /// current one is used up.
    pub async fn next_producer_id(&self) -> Result<i64, MetadataError> {
        let mut block = self.producer_ids.lock().await;
        match *block {
            Some((next, end)) if next < end => {
                *block = Some((next + 1, end));
                Ok(next)
            }
            _ => {
                let outcome = self
                    .propose(MetadataCommand::AllocateProducerIds {
                        count: PRODUCER_ID_BLOCK,
                    })
                    .await?;
                let Outcome::ProducerIdsAllocated { first, count } = outcome else {
                    return Err(MetadataError::Storage(format!(
                        "unexpected allocation outcome {outcome:?}"
                    )));
                };
                *block = Some((first.0 + 1, first.0 + i64::from(count)));
                Ok(first.0)
            }
        }
    }
}

/// Propose `command` through `backend`, failing with `Timeout` after `timeout` (when the outcome
/// is unknown: the command may still apply).
pub(crate) async fn propose_within(
    backend: &dyn MetadataBackend,
    timeout: Duration,
    command: MetadataCommand,
) -> Result<Outcome, MetadataError> {
    outcome_within(timeout, backend.propose(command)).await
}

/// A proposal's outcome, or `Timeout` once `timeout` passed.
async fn outcome_within(
    timeout: Duration,
    proposal: impl Future<Output = Result<Proposed, MetadataError>>,
) -> Result<Outcome, MetadataError> {
    match tokio::time::timeout(timeout, proposal).await {
        Ok(result) => result.map(|proposed| proposed.outcome),
        Err(_) => Err(MetadataError::Timeout {
            what: "metadata proposal".into(),
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// A partition's leadership as the metadata states it, with the topic's `min.insync.replicas`
/// ([`Broker::min_insync`]).
pub fn leader_view(p: &switchyard_backend_api::Partition, min_insync: usize) -> LeaderView {
    LeaderView {
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        replicas: p.replicas.iter().copied().collect(),
        isr: p.isr.iter().copied().collect(),
        min_insync,
    }
}

/// Milliseconds since the Unix epoch, for commit timestamps and retention. Read by proposers,
/// never inside apply.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
