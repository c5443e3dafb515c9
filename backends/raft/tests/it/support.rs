//! Helpers shared by the raft-specific tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use figment::Figment;
use switchyard_backend_api::{MetadataBackend, NodeId, NodeIdentity, OpenContext, open_backend};
pub(crate) use switchyard_compat_tests::fixtures::{converges, position};
use switchyard_compat_tests::{DEADLINE, shared_secret};

pub(crate) use switchyard_compat_tests::reserve_addr;

/// Open a `raft` node directly, with this config table.
pub(crate) async fn open_node(
    identity: NodeIdentity,
    data_dir: PathBuf,
    config: Figment,
) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    std::fs::create_dir_all(&data_dir).with_context(|| data_dir.display().to_string())?;
    let node = tokio::time::timeout(
        DEADLINE,
        open_backend(
            "raft",
            OpenContext {
                config,
                data_dir,
                node: identity,
                cluster_credentials: Some(shared_secret().into()),
            },
        ),
    )
    .await
    .context("open did not return")??;
    Ok(node)
}

/// The identity of node `id` among `peers`.
pub(crate) fn identity(id: u64, peers: &BTreeMap<NodeId, String>) -> NodeIdentity {
    NodeIdentity {
        id: NodeId(id),
        cluster_addr: peers.get(&NodeId(id)).cloned(),
        peers: peers.clone(),
    }
}
