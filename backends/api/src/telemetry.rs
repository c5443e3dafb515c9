//! The metrics every backend records, by name: each backend records them through the
//! `metrics` facade where the event happens, and the broker exports them (with the metrics it
//! derives from [`MetadataBackend`](crate::MetadataBackend) itself) under these names whatever
//! the backend, so that backends compare side by side on one dashboard.

/// Histogram: metadata commands made durable by one write of the backend's log on the node
/// that leads it (the WAL's group commit: commands per `fdatasync`; raft: commands per log
/// entry). Larger batches under load are what lets a backend outrun its fsync.
pub const GROUP_COMMIT_COMMANDS: &str = "switchyard_metadata_group_commit_commands";

/// Histogram, seconds: taking one snapshot of the metadata state (encoding it and writing it
/// durably). Its `_count` is the number of snapshots taken since start.
pub const SNAPSHOT_DURATION: &str = "switchyard_metadata_snapshot_duration_seconds";
