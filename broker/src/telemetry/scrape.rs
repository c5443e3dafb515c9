//! The state metrics, read at each scrape, and the rendering of a whole scrape.

use std::collections::HashMap;

use metrics::gauge;
use switchyard_backend_api::{GroupId, Role};

use super::{HANDLE, METRICS, builder, describe};
use crate::broker::Broker;

/// Log end offset of each partition stored here.
pub(super) const PARTITION_LOG_END_OFFSET: &str = "switchyard_partition_log_end_offset";
/// High watermark of each partition stored here.
pub(super) const PARTITION_HIGH_WATERMARK: &str = "switchyard_partition_high_watermark";
/// Log start offset of each partition stored here.
pub(super) const PARTITION_LOG_START_OFFSET: &str = "switchyard_partition_log_start_offset";
/// Bytes of each partition stored here.
pub(super) const PARTITION_SIZE: &str = "switchyard_partition_size_bytes";
/// Segments of each partition stored here.
pub(super) const PARTITION_SEGMENTS: &str = "switchyard_partition_segments";
/// ISR size of each partition led here.
pub(super) const PARTITION_ISR: &str = "switchyard_partition_isr_size";
/// Each follower's lag behind a partition led here.
pub(super) const PARTITION_FOLLOWER_LAG: &str = "switchyard_partition_follower_lag_messages";
/// Partitions led here.
pub(super) const LEADER_PARTITIONS: &str = "switchyard_leader_partitions";
/// Partitions led here with a short ISR.
pub(super) const UNDER_REPLICATED_PARTITIONS: &str = "switchyard_under_replicated_partitions";
/// Partitions led here with an ISR below `min.insync.replicas`.
pub(super) const UNDER_MIN_ISR_PARTITIONS: &str = "switchyard_under_min_isr_partitions";
/// Leaderless partitions of the cluster.
pub(super) const OFFLINE_PARTITIONS: &str = "switchyard_offline_partitions";
/// Members of each group coordinated here.
pub(super) const GROUP_MEMBERS: &str = "switchyard_group_members";
/// State of each group coordinated here.
pub(super) const GROUP_STATE: &str = "switchyard_group_state";
/// Committed offsets of the groups coordinated here.
pub(super) const GROUP_COMMITTED_OFFSET: &str = "switchyard_group_committed_offset";
/// Lag of the groups coordinated here.
pub(super) const GROUP_LAG: &str = "switchyard_group_lag_messages";
/// The backend and node, as labels.
pub(super) const METADATA_INFO: &str = "switchyard_metadata_info";
/// This node's role.
pub(super) const METADATA_ROLE: &str = "switchyard_metadata_role";
/// The leadership epoch.
pub(super) const METADATA_EPOCH: &str = "switchyard_metadata_epoch";
/// Whether the backend can serve.
pub(super) const METADATA_READY: &str = "switchyard_metadata_ready";
/// Last entry of the metadata log.
pub(super) const METADATA_LAST_INDEX: &str = "switchyard_metadata_last_index";
/// Highest entry known committed.
pub(super) const METADATA_COMMITTED_INDEX: &str = "switchyard_metadata_committed_index";
/// Last entry applied.
pub(super) const METADATA_APPLIED_INDEX: &str = "switchyard_metadata_applied_index";
/// Committed, not applied.
pub(super) const METADATA_APPLY_LAG: &str = "switchyard_metadata_apply_lag_entries";
/// Each follower's lag on the leader.
pub(super) const METADATA_FOLLOWER_LAG: &str = "switchyard_metadata_follower_lag_entries";

/// How long a scrape waits for the backend's [`progress`](switchyard_backend_api::MetadataBackend::progress).
const PROGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

const STATE: &[&str] = &[
    PARTITION_LOG_END_OFFSET,
    PARTITION_HIGH_WATERMARK,
    PARTITION_LOG_START_OFFSET,
    PARTITION_SIZE,
    PARTITION_SEGMENTS,
    PARTITION_ISR,
    PARTITION_FOLLOWER_LAG,
    LEADER_PARTITIONS,
    UNDER_REPLICATED_PARTITIONS,
    UNDER_MIN_ISR_PARTITIONS,
    OFFLINE_PARTITIONS,
    GROUP_MEMBERS,
    GROUP_STATE,
    GROUP_COMMITTED_OFFSET,
    GROUP_LAG,
    METADATA_INFO,
    METADATA_ROLE,
    METADATA_EPOCH,
    METADATA_READY,
    METADATA_LAST_INDEX,
    METADATA_COMMITTED_INDEX,
    METADATA_APPLIED_INDEX,
    METADATA_APPLY_LAG,
    METADATA_FOLLOWER_LAG,
];

/// Whether `name` is read at scrape time (rather than recorded as events happen).
pub(super) fn is_state(name: &str) -> bool {
    STATE.contains(&name)
}

/// One scrape: the event metrics recorded so far (when [`super::install`] ran in this
/// process) followed by the state of `broker` and its backend now, in the Prometheus text
/// format.
pub async fn render(broker: &Broker) -> String {
    // A backend too busy to say within the deadline leaves its indexes out of this scrape
    // rather than holding the scrape (and Prometheus) up.
    let progress = tokio::time::timeout(PROGRESS_TIMEOUT, broker.backend().progress())
        .await
        .ok();
    let recorder = match builder() {
        Ok(builder) => builder.build_recorder(),
        Err(error) => {
            tracing::error!(%error, "cannot build the scrape's recorder");
            return String::new();
        }
    };
    metrics::with_local_recorder(&recorder, || {
        describe(METRICS.iter().filter(|m| is_state(m.name)));
        record_backend(broker, progress.as_ref());
        let hw = record_partitions(broker);
        record_groups(broker, &hw);
    });
    let mut out = HANDLE.get().map(|h| h.render()).unwrap_or_default();
    out.push_str(&recorder.handle().render());
    out
}

fn record_backend(broker: &Broker, progress: Option<&switchyard_backend_api::ReplicationProgress>) {
    let backend = broker.backend();
    let view = backend.cluster().borrow().clone();
    gauge!(METADATA_INFO, "backend" => backend.name(), "node" => view.node.to_string()).set(1.0);
    for role in [
        Role::Leader,
        Role::Follower,
        Role::Candidate,
        Role::Learner,
        Role::Unknown,
    ] {
        let name = role_name(role);
        gauge!(METADATA_ROLE, "role" => name).set(f64::from(u8::from(view.role == role)));
    }
    gauge!(METADATA_EPOCH).set(view.epoch as f64);
    gauge!(METADATA_READY).set(f64::from(u8::from(view.is_ready())));
    let Some(progress) = progress else {
        return;
    };
    gauge!(METADATA_LAST_INDEX).set(progress.last_index as f64);
    gauge!(METADATA_COMMITTED_INDEX).set(progress.committed as f64);
    gauge!(METADATA_APPLIED_INDEX).set(progress.applied as f64);
    gauge!(METADATA_APPLY_LAG).set(progress.committed.saturating_sub(progress.applied) as f64);
    for (follower, matched) in &progress.followers {
        gauge!(METADATA_FOLLOWER_LAG, "follower" => follower.to_string())
            .set(progress.last_index.saturating_sub(*matched) as f64);
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        _ => "unknown",
    }
}

/// Record the partitions stored here; returns each one's high watermark.
fn record_partitions(broker: &Broker) -> HashMap<(String, i32), i64> {
    let mut high_watermarks = HashMap::new();
    let (mut led, mut under_replicated, mut under_min_isr) = (0_u32, 0_u32, 0_u32);
    for (topic, partition, replica) in broker.replicas().open_replicas() {
        let labels = [
            ("topic", topic.clone()),
            ("partition", partition.to_string()),
        ];
        let log = replica.log();
        let hw = replica.high_watermark();
        gauge!(PARTITION_LOG_END_OFFSET, &labels).set(log.log_end_offset() as f64);
        gauge!(PARTITION_HIGH_WATERMARK, &labels).set(hw as f64);
        gauge!(PARTITION_LOG_START_OFFSET, &labels).set(log.log_start_offset() as f64);
        gauge!(PARTITION_SIZE, &labels).set(log.size_bytes() as f64);
        gauge!(PARTITION_SEGMENTS, &labels).set(log.segment_count() as f64);
        if let Some(stats) = replica.leader_stats() {
            led += 1;
            gauge!(PARTITION_ISR, &labels).set(stats.isr as f64);
            under_replicated += u32::from(stats.isr < stats.replicas);
            if let Some((_, min_insync)) = replica.insync() {
                under_min_isr += u32::from(stats.isr < min_insync);
            }
            for (follower, lag) in stats.follower_lag {
                let Some(lag) = lag else { continue };
                gauge!(
                    PARTITION_FOLLOWER_LAG,
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                    "follower" => follower.to_string()
                )
                .set(lag as f64);
            }
        }
        high_watermarks.insert((topic, partition), hw);
    }
    gauge!(LEADER_PARTITIONS).set(f64::from(led));
    gauge!(UNDER_REPLICATED_PARTITIONS).set(f64::from(under_replicated));
    gauge!(UNDER_MIN_ISR_PARTITIONS).set(f64::from(under_min_isr));
    let view = broker.metadata();
    let offline = view
        .state
        .topics()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader.is_none())
        .count();
    gauge!(OFFLINE_PARTITIONS).set(offline as f64);
    high_watermarks
}

fn record_groups(broker: &Broker, high_watermarks: &HashMap<(String, i32), i64>) {
    let view = broker.metadata();
    for (group, _, phase) in broker.groups().list() {
        if let Some(description) = broker.groups().describe(&group) {
            gauge!(GROUP_MEMBERS, "group" => group.clone()).set(description.members.len() as f64);
        }
        for state in [
            "Empty",
            "PreparingRebalance",
            "CompletingRebalance",
            "Stable",
        ] {
            gauge!(GROUP_STATE, "group" => group.clone(), "state" => state)
                .set(f64::from(u8::from(phase.as_str() == state)));
        }
        let id = GroupId(group.clone());
        for (key, committed) in view.state.group_offsets(&id) {
            let Ok(partition) = i32::try_from(key.partition) else {
                continue;
            };
            let labels = [
                ("group", group.clone()),
                ("topic", key.topic.clone()),
                ("partition", partition.to_string()),
            ];
            gauge!(GROUP_COMMITTED_OFFSET, &labels).set(committed.offset as f64);
            if let Some(hw) = high_watermarks.get(&(key.topic.clone(), partition)) {
                gauge!(GROUP_LAG, &labels).set((hw - committed.offset).max(0) as f64);
            }
        }
    }
}
