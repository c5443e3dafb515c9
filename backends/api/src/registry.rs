//! The backend registry. Each backend crate submits one [`Registration`] with
//! `inventory::submit!`; the broker links the crates it was built with and opens a backend by
//! name.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use figment::Figment;

use crate::backend::MetadataBackend;
use crate::error::MetadataError;
use crate::guarantees::Guarantees;
use crate::ids::NodeId;

/// The future a backend constructor returns.
pub type OpenFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn MetadataBackend>, MetadataError>> + Send>>;

/// Who this node is in the backend's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// This node's id.
    pub id: NodeId,
    /// Address this node listens on for backend traffic, if it talks to peers.
    pub cluster_addr: Option<String>,
    /// Every node of the cluster (this one included, when listed) → its cluster address.
    /// Empty for a single node.
    pub peers: BTreeMap<NodeId, String>,
}

impl NodeIdentity {
    /// A node with no peers.
    pub fn single(id: NodeId) -> Self {
        Self {
            id,
            cluster_addr: None,
            peers: BTreeMap::new(),
        }
    }

    /// Whether other nodes are configured besides this one.
    pub fn has_peers(&self) -> bool {
        self.peers.keys().any(|id| *id != self.id)
    }
}

/// Everything a constructor receives.
#[derive(Debug, Clone)]
pub struct OpenContext {
    /// The backend's own configuration table (`metadata.<name>`), focused so that its keys are
    /// at the top level. Extract with defaults; reject keys you do not know.
    pub config: Figment,
    /// Directory the backend owns; created by the caller.
    pub data_dir: PathBuf,
    /// This node.
    pub node: NodeIdentity,
}

/// A backend's entry in the registry.
pub struct Registration {
    /// Registry name; also the `--metadata-backend` value and the feature suffix.
    pub name: &'static str,
    /// One line for `switchyard backends`.
    pub description: &'static str,
    /// Declared guarantees; the opened backend reports the same.
    pub guarantees: Guarantees,
    /// Open (or create) the backend. Returns without waiting for any quorum: readiness is
    /// observed through [`MetadataBackend::cluster`].
    pub open: fn(OpenContext) -> OpenFuture,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("guarantees", &self.guarantees)
            .finish_non_exhaustive()
    }
}

inventory::collect!(Registration);

/// Every backend linked into this binary, by name.
pub fn available_backends() -> Vec<&'static Registration> {
    let mut all: Vec<_> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all
}

/// The registration named `name`, or `UnknownBackend` listing the available names.
pub fn find_backend(name: &str) -> Result<&'static Registration, MetadataError> {
    let all = available_backends();
    all.iter()
        .find(|r| r.name == name)
        .copied()
        .ok_or_else(|| MetadataError::UnknownBackend {
            name: name.to_owned(),
            available: all.iter().map(|r| r.name.to_owned()).collect(),
        })
}

/// Open the backend named `name`.
pub async fn open_backend(
    name: &str,
    context: OpenContext,
) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
    let registration = find_backend(name)?;
    (registration.open)(context).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_lists_what_is_available() {
        let err = find_backend("nope").err();
        let Some(MetadataError::UnknownBackend { name, available }) = err else {
            panic!("expected UnknownBackend, got {err:?}");
        };
        assert_eq!(name, "nope");
        assert!(available.contains(&"memory".to_owned()));
        let message = MetadataError::UnknownBackend { name, available }.to_string();
        assert!(message.contains("available: memory"), "{message}");
    }
}
