//! [`Runner`]: the one task per node that drives its [`Driver`]: ticks on a
//! `tokio::time::interval`, steps incoming messages, takes proposals, runs the Ready rounds
//! after each of those, and publishes a [`GroupView`] when something changed. It also cuts a
//! dead leader's failover short ([`LeaderWatch`]).

use std::time::Duration;

use raft::StateRole;
use raft::eraftpb::Message;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::driver::{Driver, DriverError, GroupLog};
use crate::group::{GroupCommand, GroupState};
use crate::transport::Outbox;

/// What a node knows of the group, as of its last Ready round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// This node's role.
    pub role: StateRole,
    /// The Raft leader it knows (0: none).
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// The last applied index.
    pub applied: u64,
    /// The group state there.
    pub state: GroupState,
    /// Why the loop stopped, if it did.
    pub stopped: Option<String>,
}

/// A request to the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Propose a group command.
    Propose(GroupCommand),
    /// Propose adding a member.
    Add {
        /// Its id.
        id: u64,
        /// Its cluster address.
        addr: String,
        /// As a learner (else a voter).
        learner: bool,
    },
    /// Propose removing a member.
    Remove {
        /// Its id.
        id: u64,
    },
    /// Hand leadership to a voter (leader only).
    Transfer {
        /// Its id.
        id: u64,
    },
}

/// A running node of the group. Dropping it stops the loop.
#[derive(Debug)]
pub struct Runner {
    requests: mpsc::Sender<Request>,
    view: watch::Receiver<GroupView>,
    task: JoinHandle<()>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn view_of<S: GroupLog>(driver: &Driver<S>, stopped: Option<String>) -> GroupView {
    let (role, leader, term) = driver.role();
    GroupView {
        role,
        leader,
        term,
        applied: driver.applied(),
        state: driver.state().clone(),
        stopped,
    }
}

impl Runner {
    /// Start the loop of `driver`: it reads peers' messages from `inbox`, sends through
    /// `outbox`, and ticks every `tick`. A sole voter campaigns at once.
    pub fn spawn<S: GroupLog + Send + 'static>(
        mut driver: Driver<S>,
        inbox: mpsc::Receiver<Message>,
        outbox: Outbox,
        tick: Duration,
    ) -> Self {
        let (requests, requests_rx) = mpsc::channel(256);
        let (view_tx, view) = watch::channel(view_of(&driver, None));
        let task = tokio::spawn(async move {
            let stopped = run(&mut driver, inbox, requests_rx, &outbox, tick, &view_tx)
                .await
                .err()
                .map(|e| e.to_string());
            view_tx.send_replace(view_of(&driver, stopped.or(Some("stopped".into()))));
        });
        Self {
            requests,
            view,
            task,
        }
    }

    /// Queue a request for the loop; fails only once the loop stopped.
    pub async fn request(&self, request: Request) -> Result<(), DriverError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| DriverError::Storage("the group loop has stopped".into()))
    }

    /// Stop the loop at once, as a crash would (nothing more is persisted or sent), and wait
    /// until its task — and the log it owns — is gone.
    pub async fn kill(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// A sender of requests to the loop, for tasks that outlive a borrow of the runner.
    pub fn requests(&self) -> mpsc::Sender<Request> {
        self.requests.clone()
    }

    /// The node's view, updated after every Ready round that changed it.
    pub fn view(&self) -> watch::Receiver<GroupView> {
        self.view.clone()
    }
}

async fn run<S: GroupLog>(
    driver: &mut Driver<S>,
    mut inbox: mpsc::Receiver<Message>,
    mut requests: mpsc::Receiver<Request>,
    outbox: &Outbox,
    tick: Duration,
    view: &watch::Sender<GroupView>,
) -> Result<(), DriverError> {
    if driver.log().initial_state()?.conf_state.voters == [driver.id()] {
        driver.campaign()?;
    }
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (refused_tx, mut refused) = mpsc::channel(1);
    let mut watch = LeaderWatch::new(tick, driver.heartbeat_ticks(), refused_tx);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                driver.tick();
                watch.on_tick(driver);
            }
            Some((leader, term)) = refused.recv() => watch.on_refused(driver, leader, term)?,
            message = inbox.recv() => {
                let Some(message) = message else { return Ok(()) };
                driver.step(message)?;
                while let Ok(message) = inbox.try_recv() {
                    driver.step(message)?;
                }
            }
            request = requests.recv() => {
                let Some(request) = request else { return Ok(()) };
                // A proposal on a follower is dropped by raft-rs; callers watch the view.
                let result = match request {
                    Request::Propose(command) => driver.propose(&command),
                    Request::Add { id, addr, learner } => driver.propose_add(id, &addr, learner),
                    Request::Remove { id } => driver.propose_remove(id),
                    Request::Transfer { id } => {
                        driver.transfer_leader(id);
                        Ok(())
                    }
                };
                if let Err(DriverError::Raft(raft::Error::ProposalDropped)) = result {
                } else {
                    result?;
                }
            }
        }
        driver.on_ready(&mut |messages| outbox.send(messages))?;
        let next = view_of(driver, None);
        view.send_if_modified(|current| {
            let changed = *current != next;
            if changed {
                *current = next;
            }
            changed
        });
    }
}

/// Cuts a dead leader's failover short. With `check_quorum`, raft-rs has a follower that heard
/// from its leader within its election timeout ignore (pre-)votes, and campaign only once that
/// timeout passed without a message. When the leader's process is gone, nothing listens on its
/// cluster address any more: a follower that has not heard from its leader for two heartbeats
/// connects there, once per heartbeat, and if the connection is refused it campaigns at once,
/// at most once per term. Campaigning clears its own lease, so it grants the next survivor's
/// pre-vote; that survivor wins when it campaigns. To keep two survivors from campaigning in
/// the same instant and splitting the vote, each waits one more heartbeat per survivor ahead of
/// it by node id. A leader that is alive but slow, stopped or cut off still accepts connections
/// (or the attempt times out), so only the election timeout deposes it.
#[derive(Debug)]
struct LeaderWatch {
    tick: Duration,
    heartbeat: usize,
    campaigned_in: Option<u64>,
    probe: Option<JoinHandle<()>>,
    refused: mpsc::Sender<(u64, u64)>,
}

impl LeaderWatch {
    fn new(tick: Duration, heartbeat: usize, refused: mpsc::Sender<(u64, u64)>) -> Self {
        Self {
            tick,
            heartbeat: heartbeat.max(1),
            campaigned_in: None,
            probe: None,
            refused,
        }
    }

    /// After a tick: connect to a silent leader's address when this node's turn came.
    fn on_tick<S: GroupLog>(&mut self, driver: &Driver<S>) {
        let Some((leader, term, silent)) = driver.following() else {
            return;
        };
        if self.campaigned_in == Some(term) || self.probe.as_ref().is_some_and(|p| !p.is_finished())
        {
            return;
        }
        let state = driver.state();
        let Some(ahead) = state
            .members
            .keys()
            .filter(|id| **id != leader && !state.learners.contains(id))
            .position(|id| *id == driver.id())
        else {
            return;
        };
        let wait = self.heartbeat * (2 + ahead);
        if silent < wait || !(silent - wait).is_multiple_of(self.heartbeat) {
            return;
        }
        let Some(addr) = state.members.get(&leader).cloned() else {
            return;
        };
        let limit = self.tick * u32::try_from(self.heartbeat).unwrap_or(u32::MAX);
        let refused = self.refused.clone();
        self.probe = Some(tokio::spawn(async move {
            if let Ok(Err(error)) = tokio::time::timeout(limit, TcpStream::connect(&addr)).await
                && error.kind() == std::io::ErrorKind::ConnectionRefused
            {
                tracing::info!(leader, %addr, term, "the leader refuses connections; campaigning");
                let _ = refused.send((leader, term)).await;
            }
        }));
    }

    /// `leader` of `term` refused a connection: campaign if this node still follows it then.
    fn on_refused<S: GroupLog>(
        &mut self,
        driver: &mut Driver<S>,
        leader: u64,
        term: u64,
    ) -> Result<(), DriverError> {
        let still = driver
            .following()
            .is_some_and(|(l, t, _)| (l, t) == (leader, term));
        if still && self.campaigned_in != Some(term) {
            self.campaigned_in = Some(term);
            driver.campaign()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinSet;

    use super::*;
    use crate::driver::Ticks;
    use crate::store::RocksLog;
    use crate::transport;

    const DEADLINE: Duration = Duration::from_secs(20);
    const TICK: Duration = Duration::from_millis(10);
    const TICKS: Ticks = Ticks {
        election: 10,
        heartbeat: 2,
    };

    struct Node {
        runner: Runner,
        transport: JoinSet<()>,
    }

    async fn start(
        dir: &std::path::Path,
        id: u64,
        peers: &BTreeMap<u64, String>,
        listener: TcpListener,
        ticks: Ticks,
    ) -> Result<Node, DriverError> {
        let mut log = RocksLog::open(&dir.join(id.to_string()))?;
        if log.is_pristine()? {
            let members: Vec<(u64, String)> =
                peers.iter().map(|(id, a)| (*id, a.clone())).collect();
            log.bootstrap(&members)?;
        }
        let (applied, state) = log.applied();
        let driver = Driver::new(id, log, applied, state, ticks)?;
        let mut tasks = JoinSet::new();
        let (inbox_tx, inbox) = mpsc::channel(1024);
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        // Plain TCP stands in for the WAL's extension handshake: the dialer sends its id.
        tasks.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                if let Ok(from) = stream.read_u64().await {
                    let _ = incoming_tx.send((switchyard_backend_api::NodeId(from), stream.into()));
                }
            }
        });
        let refuse: transport::Handler = Arc::new(|_, _| {
            Box::pin(async {
                transport::Answer::Proposed(Err(
                    switchyard_backend_api::MetadataError::Unsupported {
                        what: "calls".into(),
                    },
                ))
            })
        });
        tasks.spawn(transport::serve(incoming, id, 1 << 20, inbox_tx, refuse));
        let addrs = Arc::new(peers.clone());
        let dial: transport::Dial = Arc::new(move |peer| {
            let addrs = Arc::clone(&addrs);
            Box::pin(async move {
                let mut stream = TcpStream::connect(addrs.get(&peer)?).await.ok()?;
                stream.write_u64(id).await.ok()?;
                Some(stream.into())
            })
        });
        let outbox = transport::connect(&dial, id, peers.keys().copied(), 1 << 20);
        Ok(Node {
            runner: Runner::spawn(driver, inbox, outbox, TICK),
            transport: tasks,
        })
    }

    /// Wait until every node in `nodes` names the same leader at a term above `after`, whose
    /// `Lead` they applied; returns it and its term.
    async fn agreed_leader(
        nodes: &BTreeMap<u64, Node>,
        after: u64,
    ) -> Result<(u64, u64), DriverError> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let views: Vec<GroupView> = nodes
                .values()
                .map(|n| n.runner.view().borrow().clone())
                .collect();
            if let Some(lead) = views[0].state.leader
                && lead.1 > after
                && views
                    .iter()
                    .all(|v| v.state.leader == Some(lead) && v.leader == lead.0)
            {
                return Ok(lead);
            }
            let mut changed: Vec<_> = nodes.values().map(|n| n.runner.view()).collect();
            let any =
                futures::future::select_all(changed.iter_mut().map(|v| Box::pin(v.changed())));
            if tokio::time::timeout_at(deadline, any).await.is_err() {
                return Err(DriverError::Storage(format!("no agreed leader: {views:?}")));
            }
        }
    }

    /// Three nodes over loopback TCP on RocksDB in `dir` elect a leader, which is then killed
    /// (its loop and transport stop, nothing shuts down cleanly, its address refuses
    /// connections). Returns the addresses, the survivors, and the killed leader and its term.
    async fn three_then_kill_the_leader(
        dir: &std::path::Path,
        ticks: Ticks,
    ) -> Result<(BTreeMap<u64, String>, BTreeMap<u64, Node>, u64, u64), DriverError> {
        let storage = |e: std::io::Error| DriverError::Storage(e.to_string());
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=3 {
            let listener = TcpListener::bind("127.0.0.1:0").await.map_err(storage)?;
            peers.insert(id, listener.local_addr().map_err(storage)?.to_string());
            listeners.insert(id, listener);
        }
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            nodes.insert(id, start(dir, id, &peers, listener, ticks).await?);
        }
        let (old, old_term) = agreed_leader(&nodes, 0).await?;
        if let Some(mut killed) = nodes.remove(&old) {
            killed.runner.kill().await;
            killed.transport.shutdown().await;
        }
        Ok((peers, nodes, old, old_term))
    }

    /// Three nodes on loopback TCP whose election timeout is 3–4.5 s: when the leader is
    /// killed and its address refuses connections, a survivor leads (its `Lead` applied by
    /// both) within 2 s of the kill — before any election timeout could pass — and the
    /// other follows it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survivors_campaign_once_the_dead_leader_refuses_connections() -> Result<(), DriverError>
    {
        let storage = |e: std::io::Error| DriverError::Storage(e.to_string());
        let dir = tempfile::tempdir().map_err(storage)?;
        let slow = Ticks {
            election: 300,
            heartbeat: 2,
        };
        let (_, nodes, old, old_term) = three_then_kill_the_leader(dir.path(), slow).await?;
        let (new, new_term) =
            tokio::time::timeout(Duration::from_secs(2), agreed_leader(&nodes, old_term))
                .await
                .map_err(|_| DriverError::Storage("no leader within 2 s of the kill".into()))??;
        assert!(new != old && new_term > old_term);
        Ok(())
    }

    /// Three nodes over loopback TCP on RocksDB elect a leader; kill it (its loop and
    /// transport stop, nothing shuts down cleanly): the survivors elect another in a later
    /// term; the killed node restarts from its log and follows the new leader.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_group_elects_replaces_a_killed_leader_and_takes_it_back() -> Result<(), DriverError>
    {
        let storage = |e: std::io::Error| DriverError::Storage(e.to_string());
        let dir = tempfile::tempdir().map_err(storage)?;
        let (peers, mut nodes, old, old_term) =
            three_then_kill_the_leader(dir.path(), TICKS).await?;
        let (new, new_term) = agreed_leader(&nodes, old_term).await?;
        assert!(new != old && new_term > old_term);

        let listener = TcpListener::bind(&peers[&old]).await.map_err(storage)?;
        nodes.insert(old, start(dir.path(), old, &peers, listener, TICKS).await?);
        let (leader, term) = agreed_leader(&nodes, new_term - 1).await?;
        assert!(term >= new_term, "{leader} at {term}");
        let states: Vec<GroupState> = nodes
            .values()
            .map(|n| n.runner.view().borrow().state.clone())
            .collect();
        assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:?}");
        assert_eq!(states[0].members.len(), 3);
        Ok(())
    }
}
