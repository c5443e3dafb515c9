//! Which metadata backends this binary links, which one runs when none is named, and the
//! `switchyard backends` listing.
//!
//! This is the one place that knows the set of backends. A backend registers itself with
//! `inventory` from its own crate, but a crate that is not linked registers nothing, so each
//! backend feature adds two lines here:
//!
//! ```text
//! #[cfg(feature = "backend-wal")]
//! use switchyard_backend_wal as _;
//! ```
//!
//! and its name to [`LINKED_BACKENDS`] under the same `cfg`.

use std::fmt::Write as _;

use switchyard_backend_api::Registration;
#[cfg(feature = "backend-hybrid")]
use switchyard_backend_hybrid as _;
#[cfg(feature = "backend-raft")]
use switchyard_backend_raft as _;
#[cfg(feature = "backend-wal")]
use switchyard_backend_wal as _;

/// Names of the backends this binary links, as registered.
///
/// `memory` lives in `switchyard-backend-api` and is always there. Each backend feature adds its
/// name here under `#[cfg(feature = "backend-<name>")]`, next to its `use` line (see the module docs). A test
/// checks that the registry holds exactly these names.
pub const LINKED_BACKENDS: &[&str] = &[
    "memory",
    #[cfg(feature = "backend-hybrid")]
    "hybrid",
    #[cfg(feature = "backend-raft")]
    "raft",
    #[cfg(feature = "backend-wal")]
    "wal",
];

/// Durable backends in order of preference when none is configured: the strongest first.
///
/// `memory` is deliberately absent: it loses everything on restart, so it runs only when asked
/// for by name.
pub const DEFAULT_PREFERENCE: &[&str] = &["raft", "hybrid", "wal"];

/// The backend to run when none is configured: the first of [`DEFAULT_PREFERENCE`] that is in
/// `available`, or `None` when no durable backend is compiled in.
pub fn default_backend<'a>(available: &[&'a str]) -> Option<&'a str> {
    DEFAULT_PREFERENCE
        .iter()
        .find_map(|wanted| available.iter().find(|name| *name == wanted).copied())
}

/// The `switchyard backends` listing: one line per backend — name, guarantees, description —
/// in aligned columns.
pub fn listing(registrations: &[&Registration]) -> String {
    let rows: Vec<(&str, String, &str)> = registrations
        .iter()
        .map(|r| (r.name, r.guarantees.to_string(), r.description))
        .collect();
    let name_width = rows
        .iter()
        .map(|(name, _, _)| name.len())
        .max()
        .unwrap_or(0);
    let guarantees_width = rows.iter().map(|(_, g, _)| g.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, guarantees, description) in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{name:<name_width$}  {guarantees:<guarantees_width$}  {description}"
        );
    }
    out
}

/// Ask node `node` of the cluster `config` describes to promote itself (`switchyard cluster
/// promote N`). Manual promotion is an operation of the `wal` backend; backends that elect
/// their leader refuse it.
pub async fn promote(
    config: &crate::config::Config,
    node: switchyard_backend_api::NodeId,
) -> Result<u64, switchyard_backend_api::MetadataError> {
    use switchyard_backend_api::MetadataError;
    let backend = configured_backend(config)?;
    let addr = config.peers.get(&node).ok_or_else(|| {
        MetadataError::Config(format!("node {node} is not in the configured peers"))
    })?;
    match backend {
        #[cfg(feature = "backend-wal")]
        "wal" => {
            let wal =
                switchyard_backend_wal::WalConfig::from_figment(&config.backend_config("wal"))?;
            switchyard_backend_wal::request_promotion(
                addr,
                &wal.cluster_id,
                node,
                std::time::Duration::from_secs(30),
            )
            .await
        }
        other => Err(MetadataError::Unsupported {
            what: format!("manual promotion of node {node} ({addr}) with the {other} backend"),
        }),
    }
}

/// Ask the cluster `config` describes to add or remove a node (`switchyard cluster add-node` /
/// `remove-node`); returns the leader's view once it shows the committed membership. Online
/// membership change is an operation of the `raft`, `hybrid` and `wal` backends; the others
/// refuse it.
pub async fn change_membership(
    config: &crate::config::Config,
    change: switchyard_backend_api::MembershipChange,
) -> Result<switchyard_backend_api::ClusterView, switchyard_backend_api::MetadataError> {
    use switchyard_backend_api::{MembershipChange, MetadataError};
    let backend = configured_backend(config)?;
    let target = match &change {
        MembershipChange::AddNode { id, .. } | MembershipChange::RemoveNode { id } => *id,
        _ => {
            return Err(MetadataError::Unsupported {
                what: "this membership change from the command line".into(),
            });
        }
    };
    // The node being changed is asked last: it is not a member yet, or is about to leave.
    let mut nodes: Vec<(u64, String)> = config
        .peers
        .iter()
        .filter(|(id, _)| **id != target)
        .map(|(id, addr)| (id.0, addr.clone()))
        .collect();
    nodes.extend(
        config
            .peers
            .get(&target)
            .map(|addr| (target.0, addr.clone())),
    );
    match backend {
        #[cfg(feature = "backend-raft")]
        "raft" => {
            let raft =
                switchyard_backend_raft::RaftConfig::from_figment(&config.backend_config("raft"))?;
            switchyard_backend_raft::request_membership_change(
                &nodes,
                &raft.cluster_id,
                change,
                std::time::Duration::from_millis(raft.propose_timeout_ms.saturating_mul(2)),
            )
            .await
        }
        #[cfg(feature = "backend-hybrid")]
        "hybrid" => {
            let hybrid = switchyard_backend_hybrid::HybridConfig::from_figment(
                &config.backend_config("hybrid"),
            )?;
            switchyard_backend_hybrid::request_membership_change(
                &nodes,
                &hybrid.cluster_id,
                change,
                std::time::Duration::from_millis(hybrid.propose_timeout_ms.saturating_mul(4)),
            )
            .await
        }
        #[cfg(feature = "backend-wal")]
        "wal" => {
            let wal =
                switchyard_backend_wal::WalConfig::from_figment(&config.backend_config("wal"))?;
            switchyard_backend_wal::request_membership_change(
                &nodes,
                &wal.cluster_id,
                change,
                std::time::Duration::from_millis(
                    wal.catch_up_timeout_ms + wal.propose_timeout_ms.saturating_mul(2),
                ),
            )
            .await
        }
        other => Err(MetadataError::Unsupported {
            what: format!("online membership change with the {other} backend"),
        }),
    }
}

/// The backend `config` names, or the default one.
fn configured_backend(
    config: &crate::config::Config,
) -> Result<&str, switchyard_backend_api::MetadataError> {
    let available: Vec<&str> = switchyard_backend_api::available_backends()
        .iter()
        .map(|r| r.name)
        .collect();
    match config.metadata_backend.as_deref() {
        Some(name) => Ok(name),
        None => default_backend(&available).ok_or_else(|| {
            switchyard_backend_api::MetadataError::Config(
                "no durable metadata backend is compiled into this binary".into(),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use switchyard_backend_api::{Guarantees, OpenContext, OpenFuture, memory};

    use super::*;

    #[test]
    fn memory_is_never_the_default() {
        assert_eq!(default_backend(&["memory"]), None);
        assert_eq!(default_backend(&[]), None);
    }

    #[test]
    fn default_prefers_raft_then_hybrid_then_wal() {
        assert_eq!(default_backend(&["memory", "wal"]), Some("wal"));
        assert_eq!(
            default_backend(&["hybrid", "memory", "wal"]),
            Some("hybrid")
        );
        assert_eq!(
            default_backend(&["hybrid", "memory", "raft", "wal"]),
            Some("raft")
        );
        assert_eq!(default_backend(&["raft", "wal"]), Some("raft"));
    }

    fn never_opened(_: OpenContext) -> OpenFuture {
        Box::pin(async {
            Err(switchyard_backend_api::MetadataError::Unsupported {
                what: "test registration".into(),
            })
        })
    }

    #[test]
    fn listing_aligns_columns() {
        let long = Registration {
            name: "longer-name",
            description: "second",
            guarantees: Guarantees {
                multi_node: true,
                ..memory::GUARANTEES
            },
            open: never_opened,
        };
        let short = Registration {
            name: "m",
            description: "first",
            guarantees: memory::GUARANTEES,
            open: never_opened,
        };
        let text = listing(&[&short, &long]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("m  "), "{text}");
        assert!(
            lines[1].starts_with("longer-name  durability=none"),
            "{text}"
        );
        let guarantees_at = |line: &str| line.find("durability=");
        assert_eq!(guarantees_at(lines[0]), guarantees_at(lines[1]), "{text}");
        let description_at = |line: &str, d: &str| line.find(d);
        assert_eq!(
            description_at(lines[0], "first"),
            description_at(lines[1], "second"),
            "{text}"
        );
    }
}
