//! The leader's side of the ISR: [`run_isr_checks`] proposes an `AlterPartition` for each
//! partition led here whose followers' progress calls for another ISR — a member not caught up
//! for `replica.lag.time.max.ms` leaves, a replica that reached the high watermark joins.

use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_api::{MetadataCommand, MetadataError, Rejection};
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::telemetry;

/// Check every `replica.lag.time.max.ms / 2`, and whenever a fetch finds a follower that may
/// join. Runs until aborted.
pub async fn run_isr_checks(broker: Arc<Broker>) {
    let lag = Duration::from_millis(broker.settings().replica_lag_time_max_ms);
    let every = (lag / 2).max(Duration::from_millis(50));
    loop {
        // A wake-up while a check runs is kept by the Notify and starts the next at once.
        let _ = tokio::time::timeout(every, broker.isr_checks().notified()).await;
        if !broker.is_registered() {
            continue;
        }
        check(&broker, lag).await;
    }
}

async fn check(broker: &Broker, lag: Duration) {
    let view = broker.metadata();
    let live = |b| view.state.broker(b).is_some_and(|b| !b.fenced);
    for (topic, partition, replica) in broker.replicas().open_replicas() {
        let Some((partition_epoch, isr)) = replica.isr_change(lag, live) else {
            continue;
        };
        let Ok(index) = u32::try_from(partition) else {
            continue;
        };
        let command = MetadataCommand::AlterPartition {
            topic: topic.clone(),
            partition: index,
            partition_epoch,
            leader: Some(broker.id()),
            isr: isr.clone(),
        };
        let before = replica.insync().map(|(isr, _)| isr);
        match broker.propose(command).await {
            Ok(_) => {
                match before {
                    Some(before) if isr.len() < before => {
                        metrics::counter!(telemetry::ISR_SHRINKS).increment(1);
                    }
                    Some(before) if isr.len() > before => {
                        metrics::counter!(telemetry::ISR_EXPANDS).increment(1);
                    }
                    _ => {}
                }
                info!(topic, partition, isr = ?isr, "ISR changed");
            }
            // The partition moved on, perhaps by this very change: it stays in flight until
            // the local view shows the newer partition epoch.
            Err(MetadataError::Rejected(Rejection::StalePartitionEpoch { .. })) => {
                debug!(topic, partition, "ISR change overtaken");
            }
            Err(MetadataError::Rejected(reason)) => {
                debug!(topic, partition, %reason, "ISR change refused");
                replica.isr_change_refused(partition_epoch);
            }
            Err(e) => {
                warn!(topic, partition, error = %e, "ISR change unanswered; proposing it again");
                replica.isr_change_unknown(partition_epoch);
            }
        }
    }
}
