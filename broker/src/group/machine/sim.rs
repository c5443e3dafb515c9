//! A deterministic world around one [`Machine`]: a metadata state that applies the commands it
//! proposes when the world decides (commit, fail, or apply and then report a timeout, in any
//! order), a clock that moves only when told and ticks the machine at each of its deadlines as
//! the driver does, and brokers that are fenced and registered again so groups move away and
//! back. Every action the machine returns is checked against what the world knows; the
//! invariants are checked after every step. The seeded runs at the bottom drive it with random
//! clients; `tests.rs` drives it by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{
    BrokerId, GroupId, MetadataCommand, MetadataError, MetadataState, Outcome,
};

use super::*;

/// The broker the machine runs on; the world's other broker takes its groups when it is fenced.
pub(super) const ME: BrokerId = BrokerId(1);
const OTHER: BrokerId = BrokerId(2);

/// A fault-free default: no initial delay, sessions between 10 ms and 10 minutes.
pub(super) fn config() -> Config {
    Config {
        broker: ME,
        initial_rebalance_delay: Duration::ZERO,
        min_session_timeout_ms: 10,
        max_session_timeout_ms: 600_000,
        sync_wait: Duration::from_secs(60),
    }
}

/// `count` group ids that the world's broker [`ME`] coordinates while both brokers are live.
pub(super) fn my_groups(count: usize) -> Vec<String> {
    let state = World::new(config()).state;
    (0..)
        .map(|i| format!("group-{i}"))
        .filter(|g| state.group_coordinator(g).is_some_and(|b| b.id == ME))
        .take(count)
        .collect()
}

/// How a proposal the machine asked for ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Applied; the machine gets apply's verdict.
    Commit,
    /// Never applied; the machine gets an error.
    Fail,
    /// Applied, but the machine hears a timeout (the outcome is unknown to it).
    ApplyThenTimeOut,
}

#[derive(Debug)]
pub(super) struct World {
    pub(super) machine: Machine,
    pub(super) state: MetadataState,
    pub(super) now: Duration,
    /// Proposals not yet resolved, in the order they were made.
    pub(super) pending: Vec<(ProposalId, MetadataCommand)>,
    /// Replies not yet taken, by request.
    pub(super) replies: BTreeMap<RequestId, Reply>,
    /// Requests not yet answered.
    outstanding: BTreeMap<RequestId, Request>,
    next_request: u64,
    /// Every generation committed: group, generation → leader and members.
    generations: BTreeMap<(String, i32), (Option<String>, BTreeSet<String>)>,
    /// Every assignment committed: group, generation → member → assignment.
    assignments: BTreeMap<(String, i32), BTreeMap<String, Bytes>>,
    /// The generation each loaded group was last seen at.
    seen: BTreeMap<String, i32>,
    /// Printed as it happens when `TRACE` is set.
    trace: bool,
}

impl World {
    /// Brokers [`ME`] and [`OTHER`] registered, no group.
    pub(super) fn new(config: Config) -> Self {
        let mut state = MetadataState::default();
        for id in [ME, OTHER] {
            let registered = state.apply(&MetadataCommand::RegisterBroker {
                id,
                host: "localhost".into(),
                port: 9092,
                rack: None,
                listeners: Vec::new(),
            });
            assert!(registered.is_ok(), "{registered:?}");
        }
        Self {
            machine: Machine::new(config),
            state,
            now: Duration::ZERO,
            pending: Vec::new(),
            replies: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            next_request: 0,
            generations: BTreeMap::new(),
            assignments: BTreeMap::new(),
            seen: BTreeMap::new(),
            trace: std::env::var_os("TRACE").is_some(),
        }
    }

    /// Send `request`; its reply, if the machine answers at once, is in [`Self::replies`].
    pub(super) fn send(&mut self, request: Request) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.outstanding.insert(id, request.clone());
        self.event(Event::Request { id, request });
        // The driver's timer task fires at once what became due now.
        self.advance(Duration::ZERO);
        id
    }

    /// Take the reply to `id`, if it came.
    pub(super) fn reply(&mut self, id: RequestId) -> Option<Reply> {
        self.replies.remove(&id)
    }

    /// Resolve the `index`th pending proposal as `fate` decides.
    pub(super) fn resolve(&mut self, index: usize, fate: Fate) {
        let (proposal, command) = self.pending.remove(index);
        let result = match fate {
            Fate::Fail => Err(MetadataError::NotLeader { leader: None }),
            Fate::Commit | Fate::ApplyThenTimeOut => {
                let applied = self.apply(&command);
                if fate == Fate::Commit {
                    applied.map_err(MetadataError::Rejected)
                } else {
                    Err(MetadataError::Timeout {
                        what: "metadata proposal".into(),
                        after_ms: 10_000,
                    })
                }
            }
        };
        self.event(Event::Proposed { proposal, result });
        self.advance(Duration::ZERO);
    }

    /// Commit every pending proposal, and those they lead to, oldest first.
    pub(super) fn commit_all(&mut self) {
        while !self.pending.is_empty() {
            self.resolve(0, Fate::Commit);
        }
    }

    /// Let `by` pass, ticking the machine at each of its deadlines on the way, as the driver
    /// does.
    pub(super) fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.machine.next_deadline().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.event(Event::Tick);
            let next = self.machine.next_deadline();
            assert!(
                next.is_none_or(|n| n > self.now),
                "after a tick at {:?} the machine is still due at {next:?}",
                self.now
            );
        }
        self.now = until;
    }

    /// Fence [`ME`]: its groups move to [`OTHER`].
    pub(super) fn fence_me(&mut self) {
        let incarnation = self.state.broker(ME).map_or(0, |b| b.incarnation);
        let fenced = self.state.apply(&MetadataCommand::FenceBroker {
            id: ME,
            incarnation,
        });
        assert!(fenced.is_ok(), "{fenced:?}");
        self.note(format_args!("broker {ME} fenced"));
    }

    /// Register [`ME`] again: its groups come back.
    pub(super) fn register_me(&mut self) {
        let registered = self.state.apply(&MetadataCommand::RegisterBroker {
            id: ME,
            host: "localhost".into(),
            port: 9092,
            rack: None,
            listeners: Vec::new(),
        });
        assert!(registered.is_ok(), "{registered:?}");
        self.note(format_args!("broker {ME} registered"));
    }

    pub(super) fn is_fenced(&self) -> bool {
        self.state.broker(ME).is_some_and(|b| b.fenced)
    }

    /// The machine's view of `group`: phase, generation, members; `None` if not loaded.
    pub(super) fn group(&self, group: &str) -> Option<(Phase, i32, Vec<String>)> {
        self.machine
            .groups
            .get(group)
            .map(|g| (g.phase, g.generation, g.members.keys().cloned().collect()))
    }

    fn note(&self, what: std::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{:>9.3}s] {what}", self.now.as_secs_f64());
        }
    }

    fn apply(
        &mut self,
        command: &MetadataCommand,
    ) -> Result<Outcome, switchyard_backend_api::Rejection> {
        let result = self.state.apply(command);
        self.note(format_args!("applied {command:?}: {result:?}"));
        match (command, &result) {
            (
                MetadataCommand::StartGeneration {
                    group,
                    leader,
                    members,
                    ..
                },
                Ok(Outcome::GenerationStarted { generation }),
            ) => {
                let members = members.iter().map(|m| m.id.0.clone()).collect();
                let leader = leader.as_ref().map(|l| l.0.clone());
                self.generations
                    .insert((group.0.clone(), *generation), (leader, members));
            }
            (
                MetadataCommand::SetGroupAssignment {
                    group,
                    generation,
                    assignments,
                    ..
                },
                Ok(_),
            ) => {
                let assigned = assignments
                    .iter()
                    .map(|(m, a)| (m.0.clone(), Bytes::from(a.clone())))
                    .collect();
                self.assignments
                    .insert((group.0.clone(), *generation), assigned);
            }
            (
                MetadataCommand::ReplaceStaticMember {
                    group,
                    generation,
                    old,
                    new,
                    ..
                },
                Ok(_),
            ) => {
                // The generation's member (and its assignment) goes by its new id from now on.
                let key = (group.0.clone(), *generation);
                if let Some((leader, members)) = self.generations.get_mut(&key) {
                    members.remove(&old.0);
                    members.insert(new.0.clone());
                    if leader.as_ref() == Some(&old.0) {
                        *leader = Some(new.0.clone());
                    }
                }
                if let Some(assigned) = self.assignments.get_mut(&key)
                    && let Some(assignment) = assigned.remove(&old.0)
                {
                    assigned.insert(new.0.clone(), assignment);
                }
            }
            (MetadataCommand::DeleteGroupAt { group, .. }, Ok(_)) => {
                // A deleted group starts over: its generations count from 1 again.
                self.generations.retain(|(g, _), _| *g != group.0);
                self.assignments.retain(|(g, _), _| *g != group.0);
                self.seen.remove(&group.0);
            }
            _ => {}
        }
        result
    }

    fn event(&mut self, event: Event) {
        self.note(format_args!("{event:?}"));
        let actions = self.machine.handle(self.now, &self.state, event);
        for action in actions {
            self.note(format_args!("  -> {action:?}"));
            match action {
                Action::Propose { proposal, command } => {
                    let group = match &command {
                        MetadataCommand::StartGeneration { group, .. }
                        | MetadataCommand::SetGroupAssignment { group, .. } => group.0.clone(),
                        MetadataCommand::DeleteGroupAt { group, .. }
                        | MetadataCommand::ReplaceStaticMember { group, .. } => group.0.clone(),
                        other => panic!("the coordinator proposed {other:?}"),
                    };
                    assert!(
                        self.state
                            .group_coordinator(&group)
                            .is_some_and(|b| b.id == ME),
                        "proposed {command:?} for a group another broker coordinates"
                    );
                    self.pending.push((proposal, command));
                }
                Action::Reply { request, reply } => {
                    let Some(asked) = self.outstanding.remove(&request) else {
                        panic!("a second reply, or a reply to nothing: {request:?} {reply:?}");
                    };
                    self.check_reply(&asked, &reply);
                    self.replies.insert(request, reply);
                }
            }
        }
        self.check();
    }

    /// A reply answers its request in kind and tells only what was committed.
    fn check_reply(&self, asked: &Request, reply: &Reply) {
        match (asked, reply) {
            (Request::Join { join, .. }, Reply::Join(r)) => {
                if r.error.is_some() {
                    return;
                }
                let key = (join.group.clone(), r.generation);
                let Some((leader, members)) = self.generations.get(&key) else {
                    panic!("a join was answered with generation {key:?}, never committed: {r:?}");
                };
                assert_eq!(
                    leader.as_deref(),
                    Some(r.leader.as_str()),
                    "the leader of {key:?}"
                );
                assert!(members.contains(&r.member_id), "{r:?} not in {members:?}");
                if r.member_id == r.leader && !r.members.is_empty() {
                    let listed: BTreeSet<String> =
                        r.members.iter().map(|(m, _, _)| m.clone()).collect();
                    assert_eq!(&listed, members, "the leader's member list of {key:?}");
                }
            }
            (Request::Sync(sync), Reply::Sync(r)) => {
                if r.error.is_some() {
                    return;
                }
                let key = (sync.group.clone(), sync.generation);
                let Some(assigned) = self.assignments.get(&key) else {
                    panic!("a sync was answered for {key:?}, whose assignment was never committed");
                };
                assert_eq!(
                    assigned.get(&sync.member_id).cloned().unwrap_or_default(),
                    r.assignment,
                    "the assignment of {} in {key:?}",
                    sync.member_id
                );
            }
            (
                Request::Heartbeat {
                    group,
                    generation,
                    member_id,
                    ..
                },
                Reply::Heartbeat(error),
            ) => {
                if error.is_none() {
                    let key = (group.clone(), *generation);
                    assert!(
                        self.generations
                            .get(&key)
                            .is_some_and(|(_, members)| members.contains(member_id)),
                        "{member_id} heartbeated successfully in {key:?}, not a committed generation of it"
                    );
                }
            }
            (Request::Leave { members, .. }, Reply::Leave(results)) => {
                let answered: Vec<&String> = results.iter().map(|(m, _)| m).collect();
                assert_eq!(answered, members.iter().map(|(m, _)| m).collect::<Vec<_>>());
            }
            (Request::Delete { group }, Reply::Delete(error)) => {
                // Deleted means gone from the committed state (a join queued behind the
                // deletion may already have loaded the group afresh).
                if error.is_none() {
                    let id = GroupId(group.clone());
                    assert!(
                        self.state.group(&id).is_none(),
                        "{group} was answered deleted but is still stored"
                    );
                }
            }
            (asked, reply) => panic!("{asked:?} was answered with {reply:?}"),
        }
    }

    /// The machine's invariants, after every step.
    fn check(&mut self) {
        let m = &self.machine;
        // Each group is filed under its next timer, and nothing else is.
        let mut filed = 0;
        for (id, g) in &m.groups {
            assert_eq!(g.due, g.next_due(), "the timer of {id}");
            if let Some(due) = g.due {
                assert!(m.timers.contains(&(due, id.clone())), "{id} not filed");
                filed += 1;
            }
        }
        assert_eq!(filed, m.timers.len(), "timers of groups not loaded");
        assert_eq!(m.housekeeping.is_some(), !m.groups.is_empty());
        // One proposal in flight per group at most, and the machine knows whose it is.
        for (id, g) in &m.groups {
            let mine: Vec<&ProposalId> = m
                .proposals
                .iter()
                .filter(|(_, group)| *group == id)
                .map(|(p, _)| p)
                .collect();
            match &g.in_flight {
                Some((p, _)) => assert_eq!(mine, [p], "the proposals of {id}"),
                None => assert!(mine.is_empty(), "{id} forgot its proposals {mine:?}"),
            }
        }
        assert!(
            m.proposals
                .keys()
                .all(|p| self.pending.iter().any(|(q, _)| q == p)),
            "the machine waits for a proposal nobody is making"
        );
        for (id, g) in &m.groups {
            // A loaded group believes a generation that was committed, and never goes back.
            let stored = stored_generation(&self.state, id);
            assert!(
                g.generation <= stored,
                "{id} believes generation {} but {stored} is the latest committed",
                g.generation
            );
            assert!(
                g.generation == 0 || self.generations.contains_key(&(id.clone(), g.generation)),
                "{id} believes generation {}, which was not committed",
                g.generation
            );
            if let Some(seen) = self.seen.get(id) {
                assert!(
                    g.generation >= *seen,
                    "{id} went from generation {seen} back to {}",
                    g.generation
                );
            }
            // At most one leader, and it is a member, in a generation with members.
            if matches!(g.phase, Phase::CompletingRebalance | Phase::Stable) {
                assert!(
                    g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)),
                    "{id} in {:?} led by {:?}, not a member",
                    g.phase,
                    g.leader
                );
            }
            // Waiting joins and syncs belong to members.
            for member in g.joins.keys().chain(g.syncs.keys()) {
                assert!(g.members.contains_key(member), "{member} waits in {id}");
            }
            if g.phase != Phase::PreparingRebalance && g.in_flight.is_none() {
                assert!(
                    g.joins.is_empty(),
                    "joins wait in {id} outside a join phase"
                );
            }
            if g.phase != Phase::CompletingRebalance {
                assert!(g.syncs.is_empty(), "syncs wait in {id} in {:?}", g.phase);
            }
        }
        self.seen = m
            .groups
            .iter()
            .map(|(id, g)| (id.clone(), g.generation))
            .collect();
    }

    /// Stop every client, heal, commit everything and let time pass: every request has been
    /// answered, every member has expired and every group has been dropped.
    pub(super) fn settle(&mut self) {
        if self.is_fenced() {
            self.register_me();
        }
        for _ in 0..100 {
            self.commit_all();
            self.advance(Duration::from_secs(30));
            if self.pending.is_empty() && self.machine.groups.is_empty() {
                break;
            }
        }
        assert!(
            self.outstanding.is_empty(),
            "requests never answered: {:?}",
            self.outstanding
        );
        assert!(
            self.machine.groups.is_empty(),
            "groups still held after every member stopped: {:?}",
            self.machine.groups.keys().collect::<Vec<_>>()
        );
    }
}

/// SplitMix64: a seeded, portable stream of random numbers.
#[derive(Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }
}

/// What a simulated client knows and is doing.
#[derive(Debug)]
struct Client {
    group: String,
    instance: Option<String>,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (MEMBER_ID_REQUIRED).
    v4: bool,
    member_id: String,
    /// The generation it joined, with its leader's member list when it leads.
    joined: Option<(i32, Vec<String>)>,
    synced: bool,
    /// Stopped: it sends nothing more (died without leaving, or left).
    stopped: bool,
    waiting: Option<RequestId>,
}

/// One seeded run: clients of two groups join, sync, heartbeat, leave and die at random while
/// time passes, proposals commit, fail or wait, and the coordinator moves away and back.
/// Returns how many requests were sent and generations committed.
pub(super) fn run(seed: u64, steps: usize) -> (u64, usize) {
    let mut rng = Rng::new(seed);
    let mut config = config();
    config.initial_rebalance_delay = Duration::from_millis(*rng.pick(&[0, 0, 50, 3_000]));
    config.sync_wait = Duration::from_millis(*rng.pick(&[500, 5_000, 60_000]));
    let mut world = World::new(config);
    let groups = my_groups(2);
    let protocol_sets: [&[&str]; 4] = [
        &["range", "roundrobin"],
        &["roundrobin", "range"],
        &["range"],
        &["sticky"],
    ];
    let mut clients: Vec<Client> = (0..2 + rng.below(4))
        .map(|c| {
            let sets = if rng.chance(90) { 3 } else { 4 };
            Client {
                group: rng.pick(&groups).clone(),
                instance: rng.chance(30).then(|| format!("instance-{c}")),
                session_ms: i32::try_from(100 + rng.below(3_000)).unwrap_or(1_000),
                rebalance_ms: i32::try_from(rng.below(4_000)).unwrap_or(1_000),
                protocols: rng
                    .pick(&protocol_sets[..sets])
                    .iter()
                    .map(|p| ((*p).to_owned(), Bytes::from(format!("{p}-{c}"))))
                    .collect(),
                v4: rng.chance(80),
                member_id: String::new(),
                joined: None,
                synced: false,
                stopped: false,
                waiting: None,
            }
        })
        .collect();
    let mut fresh = 0;
    for _ in 0..steps {
        match rng.below(100) {
            0..=44 => {
                let c = usize::try_from(rng.below(clients.len() as u64)).unwrap_or(0);
                let client = &mut clients[c];
                if client.stopped && client.waiting.is_none() && rng.chance(5) {
                    // A new consumer in the same process.
                    client.forget();
                    client.stopped = false;
                }
                // Now and then a client does not wait for its reply (it reconnected and
                // retries); the first request is still answered, once.
                if client.stopped || (client.waiting.is_some() && !rng.chance(10)) {
                    continue;
                }
                let request = next_request(&mut rng, client, &mut fresh, c);
                if let Request::Leave { .. } = request {
                    client.stopped = true;
                } else if rng.chance(2) {
                    // It dies without leaving; what it sent is still answered.
                    client.stopped = true;
                }
                client.waiting = Some(world.send(request));
            }
            45..=69 => {
                let ms = *rng.pick(&[1, 10, 50, 200, 1_000, 5_000]);
                world.advance(Duration::from_millis(rng.below(ms) + 1));
            }
            70..=93 if !world.pending.is_empty() => {
                let index = usize::try_from(rng.below(world.pending.len() as u64)).unwrap_or(0);
                let fate = match rng.below(10) {
                    0 => Fate::Fail,
                    1 => Fate::ApplyThenTimeOut,
                    _ => Fate::Commit,
                };
                world.resolve(index, fate);
            }
            94..=96 if !world.is_fenced() => world.fence_me(),
            97..=99 if world.is_fenced() => world.register_me(),
            _ => {}
        }
        for client in &mut clients {
            if let Some(id) = client.waiting
                && let Some(reply) = world.reply(id)
            {
                client.waiting = None;
                client.learn(reply);
            }
        }
    }
    world.settle();
    (world.next_request, world.generations.len())
}

/// The request `client` sends next: mostly what a well-behaved client would, now and then a
/// stale or unknown member id or generation.
fn next_request(rng: &mut Rng, client: &Client, fresh: &mut u64, c: usize) -> Request {
    let group = client.group.clone();
    let mut member_id = client.member_id.clone();
    if rng.chance(3) {
        member_id = format!("stranger-{}", rng.below(3));
    }
    let generation = match client.joined {
        Some((generation, _)) if rng.chance(95) => generation,
        _ => i32::try_from(rng.below(4)).unwrap_or(0),
    };
    let join = |fresh: &mut u64| {
        *fresh += 1;
        Request::Join {
            join: JoinRequest {
                group: group.clone(),
                member_id: member_id.clone(),
                group_instance_id: client.instance.clone(),
                client_id: format!("client-{c}"),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: client.session_ms,
                rebalance_timeout_ms: client.rebalance_ms,
                protocol_type: "consumer".into(),
                protocols: client.protocols.clone(),
                require_known_member_id: client.v4,
            },
            fresh_member_id: format!("client-{c}-{fresh}"),
        }
    };
    if rng.chance(3) {
        return Request::Leave {
            group,
            members: vec![(member_id, client.instance.clone())],
        };
    }
    // An operator deleting the group (refused while it has members).
    if rng.chance(1) {
        return Request::Delete { group };
    }
    match &client.joined {
        None => join(fresh),
        Some(_) if rng.chance(5) => join(fresh),
        Some((_, listed)) if !client.synced => {
            let assignments = listed
                .iter()
                .map(|m| (m.clone(), Bytes::from(format!("{m}@{generation}"))))
                .collect();
            Request::Sync(SyncRequest {
                group,
                generation,
                member_id,
                group_instance_id: client.instance.clone(),
                protocol_type: rng.chance(50).then(|| "consumer".to_owned()),
                protocol: None,
                assignments,
            })
        }
        Some(_) => Request::Heartbeat {
            group,
            generation,
            member_id,
            group_instance_id: client.instance.clone(),
        },
    }
}

impl Client {
    /// What a client does with a reply: keep its member id, generation and assignment, or
    /// start over as Kafka's clients do.
    fn learn(&mut self, reply: Reply) {
        let fenced = match &reply {
            Reply::Join(r) => r.error == Some(ResponseError::FencedInstanceId),
            Reply::Sync(r) => r.error == Some(ResponseError::FencedInstanceId),
            Reply::Heartbeat(error) => *error == Some(ResponseError::FencedInstanceId),
            Reply::Leave(results) => results
                .iter()
                .any(|(_, e)| *e == Some(ResponseError::FencedInstanceId)),
            Reply::Delete(_) => false,
        };
        if fenced {
            // Another process took its instance id: a fenced client stops (a fatal error in
            // Kafka's clients).
            self.forget();
            self.stopped = true;
            return;
        }
        match reply {
            Reply::Join(r) => match r.error {
                None => {
                    self.member_id = r.member_id;
                    let listed = r.members.into_iter().map(|(m, _, _)| m).collect();
                    self.joined = Some((r.generation, listed));
                    self.synced = false;
                }
                Some(ResponseError::MemberIdRequired) => self.member_id = r.member_id,
                Some(ResponseError::UnknownMemberId) => self.forget(),
                Some(_) => self.joined = None,
            },
            Reply::Sync(r) => match r.error {
                None => self.synced = true,
                Some(ResponseError::UnknownMemberId) => self.forget(),
                Some(_) => self.joined = None,
            },
            Reply::Heartbeat(error) => match error {
                None => {}
                Some(ResponseError::UnknownMemberId) => self.forget(),
                Some(_) => self.joined = None,
            },
            Reply::Leave(_) => self.forget(),
            Reply::Delete(_) => {}
        }
    }

    fn forget(&mut self) {
        self.member_id.clear();
        self.joined = None;
        self.synced = false;
    }
}

/// Run `seeds` seeded schedules (or the one in `SEED`), reporting each failing seed with the
/// command that replays it.
fn run_seeds(seeds: std::ops::Range<u64>, steps: usize) {
    let seeds: Vec<u64> = match std::env::var("SEED") {
        Ok(seed) => vec![
            seed.parse()
                .unwrap_or_else(|_| panic!("SEED={seed} is not a number")),
        ],
        Err(_) => seeds.collect(),
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let (mut requests, mut generations) = (0, 0);
    for seed in &seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(*seed, steps)));
        if let Ok((r, g)) = outcome {
            requests += r;
            generations += g;
        } else {
            eprintln!(
                "seed {seed} failed; replay it with: SEED={seed} TRACE=1 cargo nextest run -p switchyard --all-targets -E 'test(group::machine::sim::)'"
            );
            failed.push(*seed);
        }
    }
    eprintln!(
        "{} seeded schedules of {steps} steps in {:?}: {requests} requests, {generations} generations committed",
        seeds.len(),
        started.elapsed()
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

#[test]
fn a_thousand_seeded_schedules_keep_every_invariant() {
    run_seeds(0..1_000, 500);
}
