//! Partition data replication, as Kafka does it: followers fetch from partition leaders with
//! their broker id as replica id, leaders track each follower's log end offset, keep the ISR
//! through `AlterPartition` metadata commands, and advance the high watermark to the smallest
//! log end offset across the ISR. A produce with `acks=all` waits for the high watermark;
//! consumers read below it.
//!
//! # Layout
//! - [`leader`] — [`Leadership`]: a leader's view of its followers, the ISR it wants and the
//!   high watermark it allows (pure state, no I/O).
//! - [`fetcher`] — [`run_replication`]: follows the metadata, leads or resigns each replica,
//!   and runs one fetch loop per leader broker that settles diverged logs with
//!   OffsetForLeaderEpoch and copies batches.
//! - [`isr`] — [`run_isr_checks`]: the leader proposes ISR shrinks and expansions.
//!
//! # Invariants
//! - Replication never proposes on the produce or fetch path: ISR changes are proposed by the
//!   ISR task, off the request path.
//! - A batch counts as committed (below the high watermark) only once every member of the ISR
//!   has it, counting members an ISR change in flight adds; so a leader elected from the ISR
//!   holds every acknowledged `acks=all` write.

pub mod fetcher;
pub mod isr;
pub mod leader;

pub use fetcher::run_replication;
pub use isr::run_isr_checks;
pub use leader::{LeaderView, Leadership};
