//! [`Metered`]: a metadata backend whose proposals are timed and counted, whatever the
//! backend underneath, so that every backend reports them under the same names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchyard_backend_api::{
    ChangeStream, ClusterView, Guarantees, LogIndex, MembershipChange, MetadataBackend,
    MetadataCommand, MetadataError, PowerCut, Proposed, ReplicationProgress, StateView,
};
use tokio::sync::watch;

use super::{METADATA_PROPOSALS_IN_FLIGHT, METADATA_PROPOSE_DURATION};

/// Wraps a backend: [`MetadataBackend::propose`] (and `propose_as_leader`) is timed into
/// `switchyard_metadata_propose_duration_seconds` (by result) and counted in
/// `switchyard_metadata_proposals_in_flight` while it runs; everything else passes through.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn MetadataBackend>,
}

impl Metered {
    /// `inner`, metered.
    pub fn new(inner: Arc<dyn MetadataBackend>) -> Self {
        Self { inner }
    }
}

/// Takes a proposal out of the in-flight gauge when it ends, however it ends (a caller that
/// gives up drops the future).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!(METADATA_PROPOSALS_IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(METADATA_PROPOSALS_IN_FLIGHT).decrement(1.0);
    }
}

/// Run a proposal in the in-flight gauge and time it by result.
async fn measured(
    proposal: impl Future<Output = Result<Proposed, MetadataError>>,
) -> Result<Proposed, MetadataError> {
    let _in_flight = InFlight::start();
    let started = Instant::now();
    let proposed = proposal.await;
    let result = match &proposed {
        Ok(_) => "ok",
        Err(MetadataError::Rejected(_)) => "rejected",
        Err(_) => "error",
    };
    metrics::histogram!(METADATA_PROPOSE_DURATION, "result" => result).record(started.elapsed());
    proposed
}

#[async_trait]
impl MetadataBackend for Metered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn guarantees(&self) -> Guarantees {
        self.inner.guarantees()
    }

    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        measured(self.inner.propose(command)).await
    }

    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        measured(self.inner.propose_as_leader(command)).await
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

    fn power_cut(&self, keep_bytes: u64) -> Result<PowerCut, MetadataError> {
        self.inner.power_cut(keep_bytes)
    }
}
