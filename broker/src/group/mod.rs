//! The consumer group coordinator.
//!
//! Joins, syncs, heartbeats and session timers live here, in memory; every durable fact — a new
//! generation with its members, the leader's assignment — is a metadata proposal
//! (`StartGeneration`, `SetGroupAssignment`), so the group survives a restart and every node
//! sees the same generation. A group is loaded from the metadata state the first time it is
//! touched.
//!
//! # Layout
//! - [`machine`] — the coordinator itself: a state machine without I/O that takes a request, a
//!   proposal's outcome or a tick with the time and the metadata state, and returns proposals
//!   and replies. Kafka's classic protocol and its rules live there.
//! - this module — [`GroupCoordinator`], the thin async driver: it owns the machine behind one
//!   lock, never held across an `.await`; proposes what the machine asks for in a task of its
//!   own and feeds the outcome back; hands replies to the waiting requests; and ticks the
//!   machine at its next deadline.
//!   [`switchyard_backend_api::MetadataState::group_coordinator`] places groups on live
//!   brokers.
//! - `machine/sim.rs` (tests) — a deterministic world around the machine (a metadata state
//!   that commits, fails or delays its proposals; a clock; coordinator moves) and 1,000 seeded
//!   schedules of random clients, with every reply and the invariants checked after each step;
//!   a failing seed is printed with the command that replays it (`SEED=… TRACE=1`).
//!   `machine/tests.rs` — one scenario per rule in that world.

pub mod machine;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{BrokerId, MetadataBackend, MetadataState};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::broker::propose_within;
use crate::config::KafkaSettings;

use machine::{Action, Config, Event, Machine, Reply, Request, RequestId};
pub use machine::{GroupDescription, JoinRequest, JoinResult, Phase, SyncRequest, SyncResult};

/// The coordinator of every group this broker serves: the [`Machine`] and what runs it.
/// Clones share one coordinator.
#[derive(Debug, Clone)]
pub struct GroupCoordinator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn MetadataBackend>,
    /// The deadline of each proposal (`metadata.timeout.ms`).
    propose_timeout: Duration,
    /// The machine's time is the time since this instant.
    epoch: Instant,
    core: Mutex<Core>,
    next_request: AtomicU64,
    /// Wakes the timer task when the machine's next deadline moved.
    deadline_moved: Notify,
}

#[derive(Debug)]
struct Core {
    machine: Machine,
    waiting: HashMap<RequestId, oneshot::Sender<Reply>>,
    /// The proposals in flight, each feeding its outcome back; [`GroupCoordinator::stop`]
    /// aborts and awaits them.
    proposals: JoinSet<()>,
    /// Set by [`GroupCoordinator::stop`]: no proposal starts after it.
    stopped: bool,
}

impl GroupCoordinator {
    /// The coordinator of broker `id`'s groups, proposing through `backend`.
    pub(crate) fn new(
        id: BrokerId,
        backend: Arc<dyn MetadataBackend>,
        settings: &KafkaSettings,
    ) -> Self {
        let propose_timeout = Duration::from_millis(settings.metadata_timeout_ms);
        let config = Config {
            broker: id,
            initial_rebalance_delay: Duration::from_millis(
                settings.group_initial_rebalance_delay_ms,
            ),
            min_session_timeout_ms: settings.group_min_session_timeout_ms,
            max_session_timeout_ms: settings.group_max_session_timeout_ms,
            sync_wait: propose_timeout * 6,
        };
        Self {
            inner: Arc::new(Inner {
                backend,
                propose_timeout,
                epoch: Instant::now(),
                core: Mutex::new(Core {
                    machine: Machine::new(config),
                    waiting: HashMap::new(),
                    proposals: JoinSet::new(),
                    stopped: false,
                }),
                next_request: AtomicU64::new(0),
                deadline_moved: Notify::new(),
            }),
        }
    }

    /// Handle a JoinGroup; returns when the join phase completes.
    pub async fn join(&self, join: JoinRequest) -> JoinResult {
        let member_id = join.member_id.clone();
        let fresh_member_id = format!("{}-{}", join.client_id, uuid::Uuid::new_v4());
        let request = Request::Join {
            join,
            fresh_member_id,
        };
        match self.inner.request(request).await {
            Some(Reply::Join(result)) => result,
            _ => JoinResult::error(ResponseError::CoordinatorNotAvailable, member_id),
        }
    }

    /// Handle a SyncGroup; a follower waits for the leader's assignment.
    pub async fn sync(&self, sync: SyncRequest) -> SyncResult {
        match self.inner.request(Request::Sync(sync)).await {
            Some(Reply::Sync(result)) => result,
            _ => SyncResult::error(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Handle a Heartbeat.
    pub async fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        let request = Request::Heartbeat {
            group: group.to_owned(),
            generation,
            member_id: member_id.to_owned(),
            group_instance_id: group_instance_id.map(str::to_owned),
        };
        match self.inner.request(request).await {
            Some(Reply::Heartbeat(error)) => error,
            _ => Some(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Handle a LeaveGroup for each member (id and instance id); returns a result per member.
    pub async fn leave(
        &self,
        group: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Vec<(String, Option<ResponseError>)> {
        let request = Request::Leave {
            group: group.to_owned(),
            members: members.clone(),
        };
        match self.inner.request(request).await {
            Some(Reply::Leave(results)) => results,
            _ => members
                .into_iter()
                .map(|(m, _)| (m, Some(ResponseError::CoordinatorNotAvailable)))
                .collect(),
        }
    }

    /// Handle a DeleteGroups for one group: its error, if any.
    pub async fn delete(&self, group: &str) -> Option<ResponseError> {
        let request = Request::Delete {
            group: group.to_owned(),
        };
        match self.inner.request(request).await {
            Some(Reply::Delete(error)) => error,
            _ => Some(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Check that a commit may be made at `generation`: the durable check is in apply; this
    /// refuses commits during a rebalance, as Kafka does.
    pub fn check_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        self.inner.query(|machine, now, state| {
            machine.check_commit(
                now,
                state,
                group,
                (generation, member_id, group_instance_id),
            )
        })
    }

    /// Describe a group (loading it from metadata if needed); `None` if it does not exist.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        self.inner
            .query(|machine, now, state| machine.describe(now, state, group))
    }

    /// Every group this broker coordinates, from the metadata state and the groups loaded
    /// here: id, protocol type, phase. (Clients list groups on every broker and merge.)
    pub fn list(&self) -> Vec<(String, String, Phase)> {
        self.inner.query(|machine, _, state| machine.list(state))
    }

    /// Stop: no proposal starts from now on, and the ones in flight are aborted and awaited
    /// (their outcome is unknown to the group, as after a crash). Part of `Node::shutdown`,
    /// after the listener has drained and the timer task has stopped.
    pub(crate) async fn stop(&self) {
        let mut proposals = {
            let mut core = self.inner.core();
            core.stopped = true;
            std::mem::take(&mut core.proposals)
        };
        proposals.abort_all();
        while proposals.join_next().await.is_some() {}
    }

    /// Tick the machine at each of its deadlines: session timers, join-phase deadlines,
    /// requests that waited too long, groups that moved away or went idle. Runs until aborted.
    pub async fn run_timers(self) {
        loop {
            let moved = self.inner.deadline_moved.notified();
            let next = self.inner.core().machine.next_deadline();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.inner.epoch + at) => {
                            self.inner.handle(Event::Tick, None);
                        }
                        () = moved => {}
                    }
                }
                None => moved.await,
            }
        }
    }
}

impl Inner {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }

    /// Submit `request` and wait for its reply.
    async fn request(self: &Arc<Self>, request: Request) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        self.handle(Event::Request { id, request }, Some((id, tx)));
        rx.await.ok()
    }

    /// Feed the machine `event` (`waiter` waits for the reply to the request it carries), then
    /// carry out its actions: replies go to their waiting requests, proposals to tasks that
    /// feed their outcomes back (none once stopped).
    fn handle(self: &Arc<Self>, event: Event, waiter: Option<(RequestId, oneshot::Sender<Reply>)>) {
        let view = self.backend.local();
        let mut core = self.core();
        let before = core.machine.next_deadline();
        core.waiting.extend(waiter);
        let actions = core.machine.handle(self.now(), &view.state, event);
        let mut proposals = Vec::new();
        for action in actions {
            match action {
                Action::Reply { request, reply } => {
                    if let Some(waiting) = core.waiting.remove(&request) {
                        // The requester may have gone (its connection closed).
                        let _ = waiting.send(reply);
                    }
                }
                Action::Propose { proposal, command } => proposals.push((proposal, command)),
            }
        }
        if core.machine.next_deadline() != before {
            self.deadline_moved.notify_one();
        }
        // Finished proposal tasks are only collected, so the set holds the ones in flight.
        while core.proposals.try_join_next().is_some() {}
        if core.stopped {
            return;
        }
        for (proposal, command) in proposals {
            let inner = Arc::clone(self);
            core.proposals.spawn(async move {
                let result = propose_within(&*inner.backend, inner.propose_timeout, command).await;
                inner.handle(Event::Proposed { proposal, result }, None);
            });
        }
    }

    /// Ask the machine something it answers at once (loading a group may move its deadline).
    fn query<R>(&self, ask: impl FnOnce(&mut Machine, Duration, &MetadataState) -> R) -> R {
        let view = self.backend.local();
        let mut core = self.core();
        let before = core.machine.next_deadline();
        let answer = ask(&mut core.machine, self.now(), &view.state);
        if core.machine.next_deadline() != before {
            self.deadline_moved.notify_one();
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use bytes::Bytes;
    use switchyard_backend_api::memory::MemoryBackend;
    use switchyard_backend_api::{
        BrokerId, ChangeStream, ClusterView, Guarantees, LogIndex, MembershipChange,
        MetadataCommand, MetadataError, NodeId, Proposed, ReplicationProgress, StateView,
    };
    use tokio::sync::watch;

    use super::*;

    /// A memory backend whose proposals never complete; counts the ones still running.
    #[derive(Debug)]
    struct Stalled {
        inner: MemoryBackend,
        running: Arc<AtomicUsize>,
    }

    /// Counts a proposal as running until its future is dropped.
    struct Running(Arc<AtomicUsize>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl MetadataBackend for Stalled {
        fn name(&self) -> &'static str {
            self.inner.name()
        }
        fn guarantees(&self) -> Guarantees {
            self.inner.guarantees()
        }
        async fn propose(&self, _command: MetadataCommand) -> Result<Proposed, MetadataError> {
            self.running.fetch_add(1, Ordering::SeqCst);
            let _running = Running(Arc::clone(&self.running));
            std::future::pending().await
        }
        async fn propose_as_leader(
            &self,
            command: MetadataCommand,
        ) -> Result<Proposed, MetadataError> {
            self.propose(command).await
        }
        fn local(&self) -> Arc<StateView> {
            self.inner.local()
        }
        async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError> {
            self.inner.read_linearizable().await
        }
        fn subscribe(&self) -> ChangeStream {
            self.inner.subscribe()
        }
        async fn wait_applied(
            &self,
            index: LogIndex,
            timeout: Duration,
        ) -> Result<Arc<StateView>, MetadataError> {
            self.inner.wait_applied(index, timeout).await
        }
        fn cluster(&self) -> watch::Receiver<ClusterView> {
            self.inner.cluster()
        }
        async fn progress(&self) -> ReplicationProgress {
            self.inner.progress().await
        }
        async fn change_membership(
            &self,
            change: MembershipChange,
        ) -> Result<ClusterView, MetadataError> {
            self.inner.change_membership(change).await
        }
        async fn shutdown(&self) -> Result<(), MetadataError> {
            self.inner.shutdown().await
        }
    }

    /// Shutdown leaves no proposal of the coordinator running: `stop` aborts and awaits the
    /// ones in flight, and none starts after it.
    #[tokio::test]
    async fn stop_aborts_and_awaits_the_proposals_in_flight() -> Result<(), MetadataError> {
        let inner = MemoryBackend::new(NodeId(1));
        inner
            .propose(MetadataCommand::RegisterBroker {
                id: BrokerId(1),
                host: "localhost".into(),
                port: 9092,
                rack: None,
                listeners: Vec::new(),
            })
            .await?;
        let running = Arc::new(AtomicUsize::new(0));
        let backend = Arc::new(Stalled {
            inner,
            running: Arc::clone(&running),
        });
        let settings = KafkaSettings {
            group_initial_rebalance_delay_ms: 0,
            ..KafkaSettings::default()
        };
        let coordinator = GroupCoordinator::new(BrokerId(1), backend, &settings);
        let timers = tokio::spawn(coordinator.clone().run_timers());
        let join = JoinRequest {
            group: "g".into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: false,
        };
        let joining = tokio::spawn({
            let coordinator = coordinator.clone();
            async move { coordinator.join(join).await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while running.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the join never proposed");
            tokio::task::yield_now().await;
        }
        // As in Node::shutdown: the timer task first, then the proposals.
        timers.abort();
        coordinator.stop().await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "a proposal outlived stop"
        );
        joining.abort();
        Ok(())
    }

    fn state_with(brokers: &[i32]) -> MetadataState {
        let mut state = MetadataState::default();
        for id in brokers {
            let registered = state.apply(&MetadataCommand::RegisterBroker {
                id: BrokerId(*id),
                host: "localhost".into(),
                port: 9092,
                rack: None,
                listeners: Vec::new(),
            });
            assert!(registered.is_ok(), "{registered:?}");
        }
        state
    }

    fn coordinators(state: &MetadataState, groups: &[String]) -> Vec<Option<i32>> {
        groups
            .iter()
            .map(|g| state.group_coordinator(g).map(|b| b.id.0))
            .collect()
    }

    #[test]
    fn every_live_broker_coordinates_some_groups_and_only_a_fenced_brokers_groups_move() {
        let groups: Vec<String> = (0..300).map(|i| format!("group-{i}")).collect();
        let mut state = state_with(&[1, 2, 3]);
        let before = coordinators(&state, &groups);
        assert_eq!(before, coordinators(&state_with(&[3, 1, 2]), &groups));
        for id in [1, 2, 3] {
            let count = before.iter().filter(|c| **c == Some(id)).count();
            assert!(count > 50, "broker {id} coordinates {count} of 300 groups");
        }
        let incarnation = state.broker(BrokerId(2)).map_or(0, |b| b.incarnation);
        let fenced = state.apply(&MetadataCommand::FenceBroker {
            id: BrokerId(2),
            incarnation,
        });
        assert!(fenced.is_ok(), "{fenced:?}");
        let after = coordinators(&state, &groups);
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(*a, Some(2));
            if *b != Some(2) {
                assert_eq!(a, b, "a group of a live broker moved");
            }
        }
        assert_eq!(
            coordinators(&MetadataState::default(), &groups[..1]),
            [None]
        );
    }
}
