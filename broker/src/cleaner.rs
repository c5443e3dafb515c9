//! The log cleaner: compacts the partition logs of topics whose `cleanup.policy` includes
//! `compact` (one clean is [`PartitionLog::clean`]). Each replica compacts its own log, as in
//! Kafka; nothing is coordinated between brokers.
//!
//! Every round picks the logs worth cleaning — their dirty ratio reached the topic's
//! `min.cleanable.dirty.ratio`, or their oldest dirty record is older than
//! `max.compaction.lag.ms` — dirtiest first, at most `log.cleaner.threads` of them, and cleans
//! them at once on blocking threads, their reads and writes paced together to
//! `log.cleaner.io.max.bytes.per.second`, each with a key map of at most its share of
//! `log.cleaner.dedupe.buffer.size`. A clean never reaches the replica's last stable
//! offset (nor so its high watermark): nothing uncommitted, and no open transaction, is
//! compacted. It waits `log.cleaner.backoff.ms` after a round that found nothing to do.
//!
//! [`SWITCHYARD_CRASH_AT_CLEANER_STEP`] (tests only) aborts the process at the given step of its
//! cleans, so a test can check what a crash there leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchyard_log::{AbortedRange, CleanRequest, CleanStep, CleanerHooks, PartitionLog};
use tracing::{info, warn};

use crate::broker::{Broker, now_ms};
use crate::replicas::Replica;

/// Environment variable, for crash tests: the process aborts (as `kill -9` would stop it) when
/// its cleans reach their `N`th step, counting from 0 over the process's life.
pub const SWITCHYARD_CRASH_AT_CLEANER_STEP: &str = "SWITCHYARD_CRASH_AT_CLEANER_STEP";

/// What the cleaner last did to a replica's log (for observability).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CleanerStats {
    /// When the last clean ended (ms since the epoch), if one did.
    pub last_clean_ms: Option<i64>,
    /// The dirty ratio when the cleaner last looked.
    pub dirty_ratio: f64,
    /// Bytes of segments rewritten, over all cleans.
    pub bytes_cleaned: u64,
    /// Bytes those rewrites removed, over all cleans.
    pub bytes_removed: u64,
}

/// Runs the cleaner of `broker`'s logs until aborted.
pub async fn run(broker: Arc<Broker>) {
    let settings = broker.settings().clone();
    let backoff = Duration::from_millis(settings.log_cleaner_backoff_ms);
    let threads = usize::try_from(settings.log_cleaner_threads).unwrap_or(1);
    let map_bytes = usize::try_from(settings.log_cleaner_dedupe_buffer_size).unwrap_or(usize::MAX)
        / threads.max(1);
    let crash_at = std::env::var(SWITCHYARD_CRASH_AT_CLEANER_STEP)
        .ok()
        .and_then(|v| v.parse().ok());
    let pacer = Arc::new(Mutex::new(Pacer {
        bytes_per_second: settings.log_cleaner_io_max_bytes_per_second,
        since: Instant::now(),
        bytes: 0,
        steps: 0,
        crash_at,
    }));
    loop {
        let chosen = choose(&broker, threads);
        if chosen.is_empty() {
            tokio::time::sleep(backoff).await;
            continue;
        }
        pacer.lock().restart();
        let cleans: Vec<_> = chosen
            .into_iter()
            .map(|(topic, partition, replica)| {
                let pacer = Arc::clone(&pacer);
                tokio::task::spawn_blocking(move || {
                    clean(&topic, partition, &replica, map_bytes, &mut Hooks(pacer))
                })
            })
            .collect();
        let mut progress = false;
        for clean in cleans {
            match clean.await {
                Ok(done) => progress |= done,
                Err(_) => warn!("a log clean panicked"),
            }
        }
        // A round that could not finish any clean (failures) waits before the next try.
        if !progress {
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Up to `threads` replicas of compacted topics worth cleaning now, dirtiest first.
fn choose(broker: &Broker, threads: usize) -> Vec<(String, i32, Arc<Replica>)> {
    let now = now_ms();
    let mut due: Vec<_> = broker
        .replicas()
        .open_replicas()
        .into_iter()
        .filter_map(|(topic, partition, replica)| {
            let log = replica.log();
            let config = log.config();
            if !config.cleanup.compact {
                return None;
            }
            let cleanable = log.cleanable(clean_below(&replica), now);
            let ratio = cleanable.dirty_ratio();
            replica.note_dirty_ratio(ratio);
            let overdue = cleanable.oldest_dirty_timestamp.is_some_and(|ts| {
                now.saturating_sub(ts)
                    > i64::try_from(config.max_compaction_lag_ms).unwrap_or(i64::MAX)
            });
            let worth =
                cleanable.dirty_bytes > 0 && (ratio >= config.min_cleanable_dirty_ratio || overdue);
            worth.then_some((ratio, (topic, partition, replica)))
        })
        .collect();
    due.sort_by(|a, b| b.0.total_cmp(&a.0));
    due.into_iter().take(threads).map(|(_, r)| r).collect()
}

/// Where a clean of `replica`'s log must stop: its last stable offset (at most its high
/// watermark).
fn clean_below(replica: &Replica) -> i64 {
    replica.last_stable_offset()
}

/// Clean `replica`'s log once, with a key map of at most `map_bytes`; whether the clean
/// finished. Blocking.
fn clean(
    topic: &str,
    partition: i32,
    replica: &Replica,
    map_bytes: usize,
    hooks: &mut Hooks,
) -> bool {
    let log: &PartitionLog = replica.log();
    let below = clean_below(replica);
    let request = CleanRequest {
        clean_below: below,
        now_ms: now_ms(),
        aborted: replica
            .aborted_transactions(log.log_start_offset(), below)
            .into_iter()
            .map(|a| AbortedRange {
                producer_id: a.producer_id,
                first_offset: a.first_offset,
                last_offset: a.last_offset,
            })
            .collect(),
        map_bytes,
    };
    match log.clean(&request, hooks) {
        Ok(outcome) => {
            replica.note_clean(now_ms(), &outcome);
            if outcome.segments > 0 {
                info!(
                    topic,
                    partition,
                    segments = outcome.segments,
                    bytes_before = outcome.bytes_before,
                    bytes_after = outcome.bytes_after,
                    records_removed = outcome.records_removed,
                    "compacted"
                );
            }
            outcome.cleaned_to.is_some()
        }
        Err(e) => {
            warn!(topic, partition, error = %e, "compaction failed");
            false
        }
    }
}

/// Paces the cleans' I/O to a rate shared by all of them, and counts their steps.
#[derive(Debug)]
struct Pacer {
    bytes_per_second: Option<u64>,
    since: Instant,
    bytes: u64,
    steps: u64,
    crash_at: Option<u64>,
}

impl Pacer {
    /// Start a new budget period (after an idle wait, the budget does not accumulate).
    fn restart(&mut self) {
        self.since = Instant::now();
        self.bytes = 0;
    }

    /// How long to wait after `bytes` more, to stay within the rate.
    fn account(&mut self, bytes: u64) -> Option<Duration> {
        let rate = self.bytes_per_second?;
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        due.checked_sub(self.since.elapsed())
    }
}

/// One clean's view of the shared [`Pacer`].
struct Hooks(Arc<Mutex<Pacer>>);

impl CleanerHooks for Hooks {
    fn throttle(&mut self, bytes: u64) {
        let wait = self.0.lock().account(bytes);
        if let Some(wait) = wait {
            // A rate limit on the cleaner's own disk I/O, on its blocking thread.
            std::thread::sleep(wait);
        }
    }

    fn proceed(&mut self, step: CleanStep) -> bool {
        let mut pacer = self.0.lock();
        if pacer.crash_at == Some(pacer.steps) {
            warn!(
                ?step,
                "aborting at this cleaner step, as {SWITCHYARD_CRASH_AT_CLEANER_STEP} asks"
            );
            std::process::abort();
        }
        pacer.steps += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(bytes_per_second: Option<u64>) -> Pacer {
        Pacer {
            bytes_per_second,
            since: Instant::now(),
            bytes: 0,
            steps: 0,
            crash_at: None,
        }
    }

    #[test]
    fn the_pacer_holds_the_cleans_to_their_rate() {
        assert_eq!(pacer(None).account(1 << 30), None, "unlimited");
        let mut paced = pacer(Some(1_000_000));
        // Two seconds' worth at once: the wait is about what is left of those two seconds.
        let wait = paced.account(2_000_000).expect("ahead of the rate");
        assert!(wait > Duration::from_millis(1_500) && wait <= Duration::from_secs(2));
        // A fresh period forgets the bytes of the last one.
        paced.restart();
        let small = paced.account(1_000).unwrap_or_default();
        assert!(small <= Duration::from_millis(1), "{small:?}");
    }
}
