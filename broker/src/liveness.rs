//! Broker liveness, as in KRaft: every broker sends `BrokerHeartbeat` to the broker on the
//! node that leads the metadata backend, every `broker.heartbeat.interval.ms`. That broker
//! keeps the last heartbeat of each broker in memory — heartbeats are never written to the
//! metadata log — and fences (a `FenceBroker` metadata command) a broker it has not heard
//! from for `broker.session.timeout.ms`: the broker leaves the ISRs, its partitions get a
//! new leader from the live ISR or none, and its groups move to another coordinator.
//!
//! A fenced broker that is still running learns it from the heartbeat answer or from its own
//! applied metadata, and registers again: a new incarnation, unfenced, leader again of the
//! leaderless partitions it may lead. A node that becomes metadata leader gives every broker
//! a full session from that moment before fencing it, so a failover fences nobody who is
//! alive; so does a leader's fencer after a stall of its own (a paused process), whose
//! measured silences were partly its own.
//!
//! A broker cut off from the metadata leader may be fenced, and its partitions led elsewhere,
//! before its own metadata says so. So each broker holds a lease ([`Liveness::holds_lease`]):
//! `broker.session.timeout.ms` from the *sending* of its last heartbeat the metadata leader
//! answered unfenced (or of its registration). The leader fences no earlier than a session
//! after *receiving* that heartbeat, so the lease always ends first. Without it, the broker
//! leads no partition for anyone ([`crate::broker::Broker::led_replica`] answers
//! `NOT_LEADER_OR_FOLLOWER`): a client with the cut-off side's stale metadata cannot read a
//! log the new leader has moved past (and reset its position to the old log's end or start),
//! nor write to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId as KBrokerId,
};
use switchyard_backend_api::{BrokerId, MetadataCommand, MetadataError};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::kafka::client::PeerClient;
use crate::kafka::dispatch::Client;

/// The BrokerHeartbeat version brokers send.
const HEARTBEAT_VERSION: i16 = 1;

/// How long a resolved advertised host is trusted before it is looked up again.
const ADDRESS_TTL: Duration = Duration::from_secs(60);
/// How long looking up an advertised host may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The heartbeats the metadata leader's broker has received, and since when it leads.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<HashMap<BrokerId, Seen>>,
    /// Wakes what waits for a heartbeat (placement, [`placeable`]).
    heard: tokio::sync::Notify,
    leading: Mutex<Option<Leading>>,
    /// Advertised host → its addresses and when they were looked up.
    addresses: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
    /// This broker's lease.
    lease: Lease,
}

/// When this broker sent its last heartbeat the metadata leader answered unfenced, or its
/// registration; none while fenced or before it registered. Read on every partition of every
/// Produce and Fetch, so it is one atomic: nanoseconds from `base` to the sending, plus one,
/// and 0 for none.
#[derive(Debug)]
struct Lease {
    base: Instant,
    sent: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            sent: AtomicU64::new(0),
        }
    }
}

impl Lease {
    fn renew(&self, sent: Instant) {
        // Nothing is sent before the broker's liveness exists; were it, the lease would be
        // counted from later than the sending, so it is not taken.
        let Some(since) = sent.checked_duration_since(self.base) else {
            return;
        };
        let stamp = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        self.sent.fetch_max(stamp, Ordering::AcqRel);
    }

    fn end(&self) {
        self.sent.store(0, Ordering::Release);
    }

    fn holds(&self, session: Duration) -> bool {
        match self.sent.load(Ordering::Acquire) {
            0 => false,
            stamp => {
                let sent = self.base + Duration::from_nanos(stamp - 1);
                sent.elapsed() < session
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    incarnation: u64,
    at: Instant,
    /// Whether `at` is a heartbeat, or only when the fencer began to count this
    /// incarnation's silence ([`Liveness::silent_for`]): not a sign of life.
    heard: bool,
}

#[derive(Debug, Clone, Copy)]
struct Leading {
    epoch: u64,
    since: Instant,
}

impl Liveness {
    /// The addresses `host` resolves to: an IP literal as it is, a name looked up (cached for
    /// a minute). Empty if it does not resolve.
    async fn addresses_of(&self, host: &str, port: u16) -> Vec<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![ip];
        }
        if let Some((at, ips)) = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            && at.elapsed() < ADDRESS_TTL
        {
            return ips.clone();
        }
        let looked_up = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
            .unwrap_or_default();
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_owned(), (Instant::now(), looked_up.clone()));
        looked_up
    }

    /// Renew this broker's lease from `sent`: when the heartbeat the metadata leader answered
    /// unfenced (or the registration it applied) was sent. An older answer changes nothing.
    pub fn renew_lease(&self, sent: Instant) {
        self.lease.renew(sent);
    }

    /// End this broker's lease: it is fenced.
    pub fn end_lease(&self) {
        self.lease.end();
    }

    /// Whether this broker's lease, of length `session` (`broker.session.timeout.ms`), still
    /// holds: the metadata leader cannot have fenced it yet.
    pub fn holds_lease(&self, session: Duration) -> bool {
        self.lease.holds(session)
    }

    /// Note a heartbeat of `id` in `incarnation`, now.
    pub fn record(&self, id: BrokerId, incarnation: u64) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Seen {
                    incarnation,
                    at: Instant::now(),
                    heard: true,
                },
            );
        self.heard.notify_waiters();
    }

    /// Whether `id` heartbeat in `incarnation` (or a later one) within the last `window`.
    /// A broker never heard from is not: unlike [`Self::silent_for`], nothing is assumed.
    pub fn heard_within(&self, id: BrokerId, incarnation: u64, window: Duration) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .is_some_and(|s| s.heard && s.incarnation >= incarnation && s.at.elapsed() <= window)
    }

    /// How long ago `id` last heartbeat in `incarnation` or a later one. An incarnation not
    /// heard from yet counts from now: a broker that has just registered gets a full session
    /// to send its first heartbeat.
    pub fn silent_for(&self, id: BrokerId, incarnation: u64) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = seen.entry(id).or_insert(Seen {
            incarnation,
            at: Instant::now(),
            heard: false,
        });
        if entry.incarnation < incarnation {
            *entry = Seen {
                incarnation,
                at: Instant::now(),
                heard: false,
            };
        }
        entry.at.elapsed()
    }

    /// How long this node has led the metadata backend in `epoch`, as last noted by the fencer;
    /// `None` if it has not noted that leadership (yet).
    fn led_for(&self, epoch: u64) -> Option<Duration> {
        let leading = *self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        leading
            .filter(|l| l.epoch == epoch)
            .map(|l| l.since.elapsed())
    }

    /// Forget since when this node leads: the next [`Self::leading`] starts the count again, as
    /// for a new leadership, so every broker gets a full session from then. For a fencer that
    /// did not run for a while ([`Stalls`]): the silences it measured include its own.
    /// Returns whether it had noted a leadership.
    fn restart_leading(&self) -> bool {
        self.leading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some()
    }

    /// Note that this node leads the metadata backend in `epoch` (or no longer leads); returns
    /// how long it has led without a break.
    fn leading(&self, epoch: Option<u64>) -> Option<Duration> {
        let mut leading = self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        match epoch {
            None => {
                *leading = None;
                None
            }
            Some(epoch) => {
                let current = match *leading {
                    Some(l) if l.epoch == epoch => l,
                    _ => Leading {
                        epoch,
                        since: Instant::now(),
                    },
                };
                *leading = Some(current);
                Some(current.since.elapsed())
            }
        }
    }
}

/// The brokers new replicas may be placed on, as the metadata leader's broker sees them:
/// registered, unfenced, and heard from within two heartbeat intervals — this broker itself
/// always — so a broker that just died is not given partitions it would keep offline until it
/// is fenced. A metadata leader that has led for less than that window may simply not have
/// heard from everyone yet: it waits, woken by each heartbeat, until every registered broker
/// is heard from or the window has passed since it took the lead.
pub(crate) async fn placeable(broker: &Broker) -> Vec<BrokerId> {
    let interval = Duration::from_millis(broker.settings().broker_heartbeat_interval_ms);
    let window = interval * 2;
    let epoch = broker.backend().cluster().borrow().epoch;
    let led_for = broker.liveness().led_for(epoch).unwrap_or_default();
    let deadline = Instant::now() + window.saturating_sub(led_for);
    loop {
        let heard = broker.liveness().heard.notified();
        let view = broker.metadata();
        let live: Vec<_> = view.state.live_brokers().collect();
        let placeable: Vec<BrokerId> = live
            .iter()
            .filter(|b| {
                b.id == broker.id() || broker.liveness().heard_within(b.id, b.incarnation, window)
            })
            .map(|b| b.id)
            .collect();
        if placeable.len() == live.len() || Instant::now() >= deadline {
            return placeable;
        }
        let _ = tokio::time::timeout_at(deadline, heard).await;
    }
}

/// Whether a connection from `ip` may speak for broker `id`: the broker is registered and `ip`
/// is one of the addresses its advertised host resolves to (IPv4-mapped IPv6 counts as
/// IPv4).
pub(crate) async fn speaks_for(broker: &Broker, id: BrokerId, ip: IpAddr) -> bool {
    let Some((host, port)) = broker
        .metadata()
        .state
        .broker(id)
        .map(|b| (b.host.clone(), b.port))
    else {
        return false;
    };
    let ip = ip.to_canonical();
    broker
        .liveness()
        .addresses_of(&host, port)
        .await
        .into_iter()
        .any(|a| a.to_canonical() == ip)
}

/// Answer a `BrokerHeartbeat`: `CLUSTER_AUTHORIZATION_FAILED` from a connection that does not
/// come from the broker's registered address, `NOT_CONTROLLER` unless this broker runs on the
/// metadata leader's node, `STALE_BROKER_EPOCH` for an old incarnation, else recorded, with
/// whether the metadata has the broker fenced.
pub(crate) async fn heartbeat(
    broker: &Broker,
    client: &Client,
    request: &BrokerHeartbeatRequest,
) -> BrokerHeartbeatResponse {
    let response = BrokerHeartbeatResponse::default();
    let id = BrokerId(request.broker_id.0);
    let from = client.ip;
    if !client.may_act_as(id)
        || (broker.metadata().state.broker(id).is_some() && !speaks_for(broker, id, from).await)
    {
        switchyard_backend_api::warn_throttled!(
            broker = %id,
            %from,
            principal = %client.principal,
            "BrokerHeartbeat from a connection that is not that broker's; refused"
        );
        return response.with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    if !broker.is_registered() || !broker.is_metadata_leader() {
        return response.with_error_code(ResponseError::NotController.code());
    }
    let Ok(incarnation) = u64::try_from(request.broker_epoch) else {
        return response.with_error_code(ResponseError::StaleBrokerEpoch.code());
    };
    let view = broker.metadata();
    match view.state.broker(id) {
        None => response.with_error_code(ResponseError::BrokerIdNotRegistered.code()),
        Some(b) if incarnation < b.incarnation => {
            response.with_error_code(ResponseError::StaleBrokerEpoch.code())
        }
        Some(b) => {
            broker.liveness().record(id, incarnation);
            response
                .with_is_caught_up(true)
                .with_is_fenced(b.fenced && b.incarnation == incarnation)
        }
    }
}

/// Heartbeat to the metadata leader's broker every `broker.heartbeat.interval.ms`, and at
/// once when the metadata leader changes (a new leader places replicas only on brokers it has
/// heard from, [`placeable`]); register again when fenced. Starts once the broker has
/// registered; runs until aborted.
pub async fn run_heartbeats(broker: Arc<Broker>) {
    let mut registered = broker.registration();
    if registered.wait_for(|r| *r).await.is_err() {
        return;
    }
    let settings = broker.settings();
    let interval = Duration::from_millis(settings.broker_heartbeat_interval_ms);
    let session = Duration::from_millis(settings.broker_session_timeout_ms);
    // An answer may take two intervals: a slow link (a few hundred milliseconds each way)
    // still renews the lease. Half a session at most, so a leader that went silent is given
    // up on, and its successor asked, well within the lease; never less than an interval.
    let answer_within = (interval * 2).min(session / 2).max(interval);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut views = broker.backend().cluster();
    let mut leader = views.borrow_and_update().leader;
    let mut watching = true;
    let mut client: Option<PeerClient> = None;
    let mut held = broker.liveness().holds_lease(session);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = views.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let now = views.borrow_and_update().leader;
                if now.is_none() || now == leader {
                    continue;
                }
                leader = now;
                tick.reset();
            }
        }
        let fenced = match send_heartbeat(&broker, &mut client, answer_within).await {
            Some(fenced) => fenced,
            None => fenced_locally(&broker),
        };
        if fenced {
            broker.liveness().end_lease();
            if let Err(e) = broker.reregister().await {
                warn!(broker = %broker.id(), error = %e, "re-registration failed; retrying");
            }
        }
        held = report_lease(&broker, held, session);
    }
}

/// Log when this broker's lease lapses or comes back, given whether it `held` at the last
/// look; whether it holds now.
fn report_lease(broker: &Broker, held: bool, session: Duration) -> bool {
    let holds = broker.liveness().holds_lease(session);
    if held && !holds {
        warn!(
            broker = %broker.id(),
            session_ms = session.as_millis(),
            "lease lapsed: no heartbeat answered unfenced within broker.session.timeout.ms; \
             leading no partition until one is"
        );
    } else if holds && !held {
        info!(broker = %broker.id(), "lease renewed: leading partitions again");
    }
    holds
}

/// Whether this broker's own applied metadata has its current incarnation fenced: what a
/// broker that cannot reach the metadata leader's broker goes by.
fn fenced_locally(broker: &Broker) -> bool {
    let view = broker.metadata();
    let incarnation = broker.incarnation();
    view.state
        .broker(broker.id())
        .is_some_and(|b| b.fenced && b.incarnation >= incarnation)
}

/// One heartbeat. `Some(fenced)` with the leader's answer; `None` if there is no answer to
/// go by (no leader known, not reachable, or an error). An answer that the broker is not
/// fenced renews its lease from when the heartbeat was sent.
async fn send_heartbeat(
    broker: &Broker,
    client: &mut Option<PeerClient>,
    timeout: Duration,
) -> Option<bool> {
    let incarnation = broker.incarnation();
    let sent = Instant::now();
    let answer = ask_metadata_leader(broker, client, timeout, incarnation).await;
    if answer == Some(false) {
        broker.liveness().renew_lease(sent);
    }
    answer
}

/// [`send_heartbeat`]'s question: to the metadata leader's broker, or, on its node, to this
/// broker's own metadata.
async fn ask_metadata_leader(
    broker: &Broker,
    client: &mut Option<PeerClient>,
    timeout: Duration,
    incarnation: u64,
) -> Option<bool> {
    if broker.is_metadata_leader() {
        broker.liveness().record(broker.id(), incarnation);
        return Some(fenced_locally(broker));
    }
    let leader = broker.backend().cluster().borrow().leader?;
    let leader = BrokerId::try_from(leader).ok()?;
    let view = broker.metadata();
    let target = view.state.broker(leader)?;
    let addr = format!("{}:{}", target.host, target.port);
    if client.as_ref().is_none_or(|c| c.addr() != addr) {
        *client =
            Some(broker.peer_client(addr, format!("switchyard-broker-{}", broker.id()), timeout));
    }
    let request = BrokerHeartbeatRequest::default()
        .with_broker_id(KBrokerId(broker.id().0))
        .with_broker_epoch(i64::try_from(incarnation).unwrap_or(i64::MAX))
        .with_current_metadata_offset(
            i64::try_from(broker.metadata().applied_index).unwrap_or(i64::MAX),
        );
    let peer = client.as_mut()?;
    match peer.call(&request, HEARTBEAT_VERSION).await {
        Ok(response) if response.error_code == 0 => Some(response.is_fenced),
        Ok(response) if response.error_code == ResponseError::StaleBrokerEpoch.code() => Some(true),
        Ok(response) => {
            debug!(leader = %leader, code = response.error_code, "heartbeat not taken");
            None
        }
        Err(e) => {
            debug!(leader = %leader, addr = peer.addr(), error = %e, "heartbeat failed");
            None
        }
    }
}

/// Tells a fencer's own stalls from the brokers' silences. A fencer that did not run for
/// longer than a heartbeat interval — its process stopped (SIGSTOP, a VM or GC pause) or its
/// runtime starved — may have heartbeats waiting unread in its sockets, and, if it thinks it
/// still leads, may not have heard of the leader elected meanwhile: what it measured as silence
/// is partly its own.
#[derive(Debug)]
struct Stalls {
    last: Instant,
    limit: Duration,
}

impl Stalls {
    /// Checks expected every `limit` at the latest.
    fn new(limit: Duration) -> Self {
        Self {
            last: Instant::now(),
            limit,
        }
    }

    /// Whether more than the limit passed since the last check (or since `new`); notes now.
    fn stalled(&mut self) -> bool {
        let now = Instant::now();
        let gap = now.duration_since(self.last);
        self.last = now;
        gap > self.limit
    }
}

/// While this broker runs on the metadata leader's node: fence every live broker whose last
/// heartbeat (or the start of this leadership, whichever is later) is older than
/// `broker.session.timeout.ms`. After a stall of its own ([`Stalls`]) it fences nobody and
/// starts every broker's session again, as a new leader does. Each fence is proposed only
/// while this node still leads in the epoch the decision was made in, and only as the leader
/// (never forwarded to the next one). Runs until aborted.
pub async fn run_fencer(broker: Arc<Broker>) {
    let settings = broker.settings();
    let session = Duration::from_millis(settings.broker_session_timeout_ms);
    let interval = Duration::from_millis(settings.broker_heartbeat_interval_ms);
    let check = (interval / 2).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalls = Stalls::new(interval.max(check * 2));
    loop {
        tick.tick().await;
        if stalls.stalled() {
            if broker.liveness().restart_leading() {
                info!(
                    "the fencer did not run for over a heartbeat interval; \
                     every broker's session starts again"
                );
            }
            continue;
        }
        let epoch = (broker.is_registered() && broker.is_metadata_leader())
            .then(|| broker.backend().cluster().borrow().epoch);
        let Some(led_for) = broker.liveness().leading(epoch) else {
            continue;
        };
        let view = broker.metadata();
        let expired: Vec<(BrokerId, u64, Duration)> = view
            .state
            .live_brokers()
            .filter(|b| b.id != broker.id())
            .filter_map(|b| {
                let silent = broker
                    .liveness()
                    .silent_for(b.id, b.incarnation)
                    .min(led_for);
                (silent >= session).then_some((b.id, b.incarnation, silent))
            })
            .collect();
        for (id, incarnation, silent) in expired {
            let still_leading = broker.is_metadata_leader()
                && Some(broker.backend().cluster().borrow().epoch) == epoch;
            if !still_leading {
                break;
            }
            match broker
                .propose_as_leader(MetadataCommand::FenceBroker { id, incarnation })
                .await
            {
                Ok(_) => info!(
                    broker = %id,
                    incarnation,
                    silent_ms = silent.as_millis(),
                    "fenced a broker that missed its session timeout"
                ),
                Err(MetadataError::Rejected(r)) => {
                    debug!(broker = %id, incarnation, reason = %r, "fence refused");
                }
                Err(e) => warn!(broker = %id, error = %e, "fencing failed; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_new_incarnation_gets_a_full_session_and_a_heartbeat_restarts_the_clock() {
        let liveness = Liveness::default();
        let id = BrokerId(2);
        assert_eq!(liveness.silent_for(id, 1), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(liveness.silent_for(id, 1), Duration::from_secs(3));
        // Registered again: the clock starts over for the new incarnation.
        assert_eq!(liveness.silent_for(id, 2), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(1)).await;
        liveness.record(id, 2);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(liveness.silent_for(id, 2), Duration::from_millis(250));
        // A heartbeat of an older incarnation does not count for a newer one.
        liveness.record(id, 1);
        assert_eq!(liveness.silent_for(id, 2), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn placement_counts_only_brokers_heard_from_recently() {
        let liveness = Liveness::default();
        let id = BrokerId(2);
        let window = Duration::from_secs(4);
        // Never heard from (a new metadata leader): not placeable, unlike for fencing — even
        // once the fencer has begun to count its silence.
        assert!(!liveness.heard_within(id, 1, window));
        assert_eq!(liveness.silent_for(id, 1), Duration::ZERO);
        assert!(
            !liveness.heard_within(id, 1, window),
            "a grace is not a heartbeat"
        );
        liveness.record(id, 1);
        assert!(liveness.heard_within(id, 1, window));
        tokio::time::advance(window).await;
        assert!(liveness.heard_within(id, 1, window));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            !liveness.heard_within(id, 1, window),
            "silent past the window"
        );
        liveness.record(id, 1);
        assert!(
            !liveness.heard_within(id, 2, window),
            "an older incarnation"
        );
    }

    /// A fencer that was stopped longer than its limit sees the stall, restarts the leadership
    /// count, and so measures no broker as silent for longer than it has run since.
    #[tokio::test(start_paused = true)]
    async fn a_stall_of_the_fencer_is_not_counted_as_the_brokers_silence() {
        let liveness = Liveness::default();
        let id = BrokerId(2);
        let limit = Duration::from_millis(500);
        let mut stalls = Stalls::new(limit);
        assert_eq!(liveness.leading(Some(1)), Some(Duration::ZERO));
        liveness.record(id, 1);
        for _ in 0..4 {
            tokio::time::advance(limit / 2).await;
            assert!(!stalls.stalled(), "checks on time are no stall");
        }
        // Stopped for six seconds: the broker's heartbeats, if any, were not read.
        tokio::time::advance(Duration::from_secs(6)).await;
        let silence = |l: &Liveness| {
            l.silent_for(id, 1)
                .min(l.leading(Some(1)).unwrap_or_default())
        };
        assert!(silence(&liveness) > Duration::from_secs(6));
        assert!(stalls.stalled());
        assert!(liveness.restart_leading());
        assert_eq!(silence(&liveness), Duration::ZERO);
        tokio::time::advance(limit / 2).await;
        assert!(!stalls.stalled());
        assert_eq!(silence(&liveness), limit / 2);
    }

    /// The lease runs a session from the sending of the last answered heartbeat, not from
    /// its answer; a late answer to an older heartbeat does not move it back; a fence ends it;
    /// a sending older than the lease's clock is not counted from a later time.
    #[tokio::test(start_paused = true)]
    async fn the_lease_runs_a_session_from_the_last_answered_heartbeat_sent() {
        let before = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        let liveness = Liveness::default();
        let session = Duration::from_secs(2);
        assert!(!liveness.holds_lease(session), "none before registering");
        liveness.renew_lease(before);
        assert!(
            !liveness.holds_lease(session),
            "nothing sent before the liveness existed counts"
        );
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(500)).await;
        liveness.renew_lease(sent);
        tokio::time::advance(Duration::from_millis(1_499)).await;
        assert!(liveness.holds_lease(session));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            !liveness.holds_lease(session),
            "a session after the send, though answered later"
        );
        let newer = Instant::now();
        liveness.renew_lease(newer);
        liveness.renew_lease(sent);
        assert!(
            liveness.holds_lease(session),
            "an older answer keeps the newer lease"
        );
        liveness.end_lease();
        assert!(!liveness.holds_lease(session), "fenced");
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_time_restarts_with_each_epoch_and_ends_with_it() {
        let liveness = Liveness::default();
        assert_eq!(liveness.leading(Some(3)), Some(Duration::ZERO));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(liveness.leading(Some(3)), Some(Duration::from_secs(2)));
        assert_eq!(liveness.leading(Some(4)), Some(Duration::ZERO));
        assert_eq!(liveness.leading(None), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(liveness.leading(Some(4)), Some(Duration::ZERO));
    }
}
