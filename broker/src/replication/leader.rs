//! [`Leadership`]: what the leader of one partition knows of its followers — the log end offset
//! each last fetched from, when each was last caught up — and the ISR and high watermark that
//! follow from it.
//!
//! The rules are Kafka's (KIP-497 for the "maximal ISR"):
//! - A follower is caught up at a fetch whose offset reaches the leader's log end offset at
//!   that moment, or the log end offset of its previous fetch (it then was caught up when that
//!   previous fetch happened). A member of the ISR not caught up for `replica.lag.time.max.ms`
//!   leaves it; a replica whose log reaches the high watermark and the start of the current
//!   leader epoch joins it.
//! - The high watermark is the smallest log end offset across the ISR, the leader's own
//!   included, counting a proposed ISR change in flight as already made when it adds members
//!   (so no write counts as replicated on fewer replicas than the metadata may soon say) and
//!   as not yet made when it removes them. It never goes back while one leadership lasts.

use std::collections::HashMap;
use std::time::Duration;

use switchyard_backend_api::BrokerId;
use tokio::time::Instant;

/// A partition's leadership as the metadata states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    /// The partition's leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch, which fences ISR changes.
    pub partition_epoch: i32,
    /// Assigned replicas.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
    /// The topic's `min.insync.replicas`.
    pub min_insync: usize,
}

/// One follower's fetch progress.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The offset of its last fetch: its log end offset. `None` until it fetched in this
    /// leadership.
    end_offset: Option<i64>,
    /// The log start offset its last fetch reported (`None` until it fetched in this
    /// leadership).
    start_offset: Option<i64>,
    last_caught_up: Instant,
    /// The leader's log end offset at its previous fetch, and when that was.
    previous_leader_end: i64,
    previous_fetch: Instant,
}

/// The leader-side replication state of one partition, for one leader epoch.
#[derive(Debug)]
pub struct Leadership {
    me: BrokerId,
    view: LeaderView,
    /// The leader's log end offset when the leadership began: where this epoch starts.
    epoch_start: i64,
    /// An ISR proposed to the metadata and not yet applied.
    pending: Option<Vec<BrokerId>>,
    /// Whether the proposal of `pending` got no answer and must be sent again.
    resend: bool,
    followers: HashMap<BrokerId, Progress>,
}

impl Leadership {
    /// `me` begins to lead as `view` says, with its log ending at `log_end`. Every follower
    /// counts as caught up now: each gets a full lag time to fetch.
    pub fn new(me: BrokerId, view: LeaderView, log_end: i64, now: Instant) -> Self {
        let followers = view
            .replicas
            .iter()
            .filter(|b| **b != me)
            .map(|b| {
                (
                    *b,
                    Progress {
                        end_offset: None,
                        start_offset: None,
                        last_caught_up: now,
                        previous_leader_end: log_end,
                        previous_fetch: now,
                    },
                )
            })
            .collect();
        Self {
            me,
            view,
            epoch_start: log_end,
            pending: None,
            resend: false,
            followers,
        }
    }

    /// The leader epoch led.
    pub fn leader_epoch(&self) -> i32 {
        self.view.leader_epoch
    }

    /// Take a newer metadata view of the same leader epoch: a new ISR ends any change in
    /// flight (applied or overtaken).
    pub fn update(&mut self, view: LeaderView, now: Instant) {
        if view.partition_epoch != self.view.partition_epoch {
            self.pending = None;
            self.resend = false;
        }
        for b in &view.replicas {
            if *b != self.me && !self.followers.contains_key(b) {
                self.followers.insert(
                    *b,
                    Progress {
                        end_offset: None,
                        start_offset: None,
                        last_caught_up: now,
                        previous_leader_end: self.epoch_start,
                        previous_fetch: now,
                    },
                );
            }
        }
        self.followers.retain(|b, _| view.replicas.contains(b));
        self.view = view;
    }

    /// Whether `broker` is one of the partition's replicas.
    pub fn assigned(&self, broker: BrokerId) -> bool {
        self.view.replicas.contains(&broker)
    }

    /// How many replicas the partition has.
    pub fn replica_count(&self) -> usize {
        self.view.replicas.len()
    }

    /// Each follower and the log end offset of its last fetch in this leadership (`None`
    /// until it fetched).
    pub fn follower_offsets(&self) -> impl Iterator<Item = (BrokerId, Option<i64>)> + '_ {
        self.followers.iter().map(|(id, p)| (*id, p.end_offset))
    }

    /// The ISR as the metadata has it.
    pub fn isr_len(&self) -> usize {
        self.view.isr.len()
    }

    /// The topic's `min.insync.replicas`.
    pub fn min_insync(&self) -> usize {
        self.view.min_insync
    }

    /// Note a fetch by `follower` at `fetch_offset`, its log starting at `log_start`, while
    /// the leader's log ends at `log_end`. Returns whether the follower may now join the ISR
    /// (so the caller can propose it).
    pub fn record_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        log_start: i64,
        log_end: i64,
        high_watermark: i64,
        now: Instant,
    ) -> bool {
        let Some(progress) = self.followers.get_mut(&follower) else {
            return false;
        };
        if fetch_offset >= log_end {
            progress.last_caught_up = progress.last_caught_up.max(now);
        } else if fetch_offset >= progress.previous_leader_end {
            progress.last_caught_up = progress.last_caught_up.max(progress.previous_fetch);
        }
        progress.end_offset = Some(fetch_offset);
        progress.start_offset = Some(log_start);
        progress.previous_leader_end = log_end;
        progress.previous_fetch = now;
        !self.view.isr.contains(&follower) && self.may_join(fetch_offset, high_watermark)
    }

    fn may_join(&self, end_offset: i64, high_watermark: i64) -> bool {
        end_offset >= high_watermark && end_offset >= self.epoch_start
    }

    /// The high watermark the ISR allows with the leader's log ending at `log_end`: the
    /// smallest log end offset over the ISR and the members a change in flight adds. `None`
    /// while one of them has not fetched in this leadership.
    pub fn high_watermark(&self, log_end: i64) -> Option<i64> {
        let mut low = log_end;
        let pending = self.pending.iter().flatten();
        for b in self.view.isr.iter().chain(pending) {
            if *b == self.me {
                continue;
            }
            let end = self.followers.get(b).and_then(|p| p.end_offset)?;
            low = low.min(end);
        }
        Some(low)
    }

    /// The low watermark (DeleteRecords' answer) with the leader's log starting at
    /// `log_start`: the smallest log start offset over the ISR. `None` while a member has not
    /// fetched in this leadership.
    pub fn low_watermark(&self, log_start: i64) -> Option<i64> {
        let mut low = log_start;
        for b in &self.view.isr {
            if *b == self.me {
                continue;
            }
            low = low.min(self.followers.get(b).and_then(|p| p.start_offset)?);
        }
        Some(low)
    }

    /// The ISR to propose: a change in flight whose proposal got no answer, again; else,
    /// with no change in flight, the ISR the replicas' progress calls for if it differs from
    /// the metadata's: members not caught up for `lag` leave, live (`live`) replicas
    /// outside it whose log reaches the high watermark and the start of this epoch join. (A
    /// lagging member always reaches the high watermark it holds back, so it is only judged
    /// by its lag.)
    pub fn wanted_isr(
        &self,
        high_watermark: i64,
        now: Instant,
        lag: Duration,
        live: impl Fn(BrokerId) -> bool,
    ) -> Option<Vec<BrokerId>> {
        if let Some(pending) = &self.pending {
            return self.resend.then(|| pending.clone());
        }
        let mut isr: Vec<BrokerId> = self
            .view
            .isr
            .iter()
            .copied()
            .filter(|b| {
                *b == self.me
                    || self
                        .followers
                        .get(b)
                        .is_some_and(|p| now.saturating_duration_since(p.last_caught_up) <= lag)
            })
            .collect();
        for b in &self.view.replicas {
            let joins = self.followers.get(b).is_some_and(|p| {
                p.end_offset
                    .is_some_and(|end| self.may_join(end, high_watermark))
            });
            if joins && !self.view.isr.contains(b) && live(*b) {
                isr.push(*b);
            }
        }
        if !isr.contains(&self.me) {
            isr.insert(0, self.me);
        }
        (isr != self.view.isr).then_some(isr)
    }

    /// A change to `isr` was proposed at the current partition epoch: count it as in flight.
    pub fn propose(&mut self, isr: Vec<BrokerId>) {
        self.pending = Some(isr);
        self.resend = false;
    }

    /// The proposal was refused: forget it, so the next check starts over.
    pub fn proposal_failed(&mut self) {
        self.pending = None;
        self.resend = false;
    }

    /// The proposal got no answer: it may have applied, so it stays in flight (and counts for
    /// the high watermark) and is sent again by the next check.
    pub fn proposal_unknown(&mut self) {
        self.resend = true;
    }

    /// The partition epoch the metadata view had.
    pub fn partition_epoch(&self) -> i32 {
        self.view.partition_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: BrokerId = BrokerId(1);
    const B2: BrokerId = BrokerId(2);
    const B3: BrokerId = BrokerId(3);
    const LAG: Duration = Duration::from_secs(10);

    fn view(isr: &[BrokerId], partition_epoch: i32) -> LeaderView {
        LeaderView {
            leader_epoch: 4,
            partition_epoch,
            replicas: vec![ME, B2, B3],
            isr: isr.to_vec(),
            min_insync: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn high_watermark_is_the_smallest_end_offset_over_the_isr() {
        let mut l = Leadership::new(ME, view(&[ME, B2, B3], 0), 10, Instant::now());
        assert_eq!(l.high_watermark(12), None, "followers have not fetched yet");
        l.record_fetch(B2, 12, 0, 12, 10, Instant::now());
        assert_eq!(l.high_watermark(12), None);
        l.record_fetch(B3, 11, 0, 12, 10, Instant::now());
        assert_eq!(l.high_watermark(12), Some(11));
        l.record_fetch(B3, 12, 0, 12, 11, Instant::now());
        assert_eq!(l.high_watermark(15), Some(12));
    }

    #[tokio::test(start_paused = true)]
    async fn low_watermark_is_the_smallest_log_start_over_the_isr() {
        let mut l = Leadership::new(ME, view(&[ME, B2], 0), 10, Instant::now());
        assert_eq!(l.low_watermark(5), None, "B2 has not fetched yet");
        l.record_fetch(B2, 10, 2, 10, 10, Instant::now());
        assert_eq!(l.low_watermark(5), Some(2));
        l.record_fetch(B3, 10, 0, 10, 10, Instant::now());
        assert_eq!(l.low_watermark(5), Some(2), "B3 is not in the ISR");
        l.record_fetch(B2, 10, 7, 10, 10, Instant::now());
        assert_eq!(l.low_watermark(5), Some(5), "the leader's own start counts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_member_leaves_and_a_caught_up_replica_joins() {
        let start = Instant::now();
        let mut l = Leadership::new(ME, view(&[ME, B2, B3], 0), 0, start);
        l.record_fetch(B2, 0, 0, 0, 0, start);
        l.record_fetch(B3, 0, 0, 0, 0, start);
        assert_eq!(l.wanted_isr(0, start, LAG, |_| true), None);
        // B2 keeps up with appends; B3 stays at 0 while the log grows.
        tokio::time::advance(Duration::from_secs(6)).await;
        l.record_fetch(B2, 100, 0, 100, 0, Instant::now());
        l.record_fetch(B3, 0, 0, 100, 0, Instant::now());
        tokio::time::advance(Duration::from_secs(6)).await;
        l.record_fetch(B2, 100, 0, 100, 100, Instant::now());
        assert_eq!(
            l.wanted_isr(0, Instant::now(), LAG, |_| true),
            Some(vec![ME, B2])
        );
        l.propose(vec![ME, B2]);
        assert_eq!(
            l.wanted_isr(0, Instant::now(), LAG, |_| true),
            None,
            "in flight"
        );
        // Applied: the shrink no longer holds the high watermark back.
        l.update(view(&[ME, B2], 1), Instant::now());
        assert_eq!(l.high_watermark(100), Some(100));
        // B3 catches up to the high watermark and may join; a fenced broker may not.
        assert!(l.record_fetch(B3, 100, 0, 100, 100, Instant::now()));
        assert_eq!(l.wanted_isr(100, Instant::now(), LAG, |b| b != B3), None);
        assert_eq!(
            l.wanted_isr(100, Instant::now(), LAG, |_| true),
            Some(vec![ME, B2, B3])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_joining_member_counts_for_the_high_watermark_while_in_flight() {
        let mut l = Leadership::new(ME, view(&[ME], 0), 50, Instant::now());
        l.record_fetch(B2, 50, 0, 50, 50, Instant::now());
        assert_eq!(l.high_watermark(60), Some(60), "B2 is not in the ISR");
        l.propose(vec![ME, B2]);
        assert_eq!(l.high_watermark(60), Some(50));
        // No answer: it may have applied, so it still counts, and is proposed again.
        l.proposal_unknown();
        assert_eq!(l.high_watermark(60), Some(50));
        assert_eq!(
            l.wanted_isr(50, Instant::now(), LAG, |_| true),
            Some(vec![ME, B2])
        );
        l.propose(vec![ME, B2]);
        assert_eq!(l.wanted_isr(50, Instant::now(), LAG, |_| true), None);
        l.proposal_failed();
        assert_eq!(l.high_watermark(60), Some(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_behind_the_epoch_start_may_not_join() {
        let mut l = Leadership::new(ME, view(&[ME], 0), 80, Instant::now());
        assert!(!l.record_fetch(B2, 70, 0, 80, 60, Instant::now()));
        assert!(l.record_fetch(B2, 80, 0, 80, 80, Instant::now()));
    }
}
