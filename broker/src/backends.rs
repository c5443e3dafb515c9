//! Which metadata backends this binary links, which one runs when none is named, the
//! `switchyard backends` listing, and the `switchyard cluster` operations a backend offers.
//!
//! The broker never names a backend. Each feature `backend-<name>` in `Cargo.toml` pulls in
//! the crate `switchyard-backend-<name>`, and `build.rs` links every enabled one (a crate that
//! is not linked registers nothing); from then on everything the broker knows about a backend
//! comes from its [`Registration`]: its guarantees, its modes, its administration.

use std::fmt::Write as _;

use switchyard_backend_api::auth::MAKE_A_SECRET;
use switchyard_backend_api::{
    AdminContext, ClusterView, MembershipChange, MetadataError, NodeId, Registration, find_backend,
};

use crate::config::Config;

include!(concat!(env!("OUT_DIR"), "/linked_crates.rs"));

/// Names of the backends this binary links, as registered: `memory` (which lives in
/// `switchyard-backend-api` and is always there) and one per enabled `backend-<name>` feature.
/// A test checks that the registry holds exactly these names.
pub const LINKED_BACKENDS: &[&str] = include!(concat!(env!("OUT_DIR"), "/linked_names.rs"));

/// The backend to run when none is configured: of the durable ones among `available`, the one
/// whose declared guarantees are strongest ([`strongest_durable`]); `None` when no durable
/// backend is available.
///
/// `memory` is never the default: it loses everything on restart, so it runs only when asked
/// for by name.
pub fn default_backend<'a>(available: &[&'a str]) -> Option<&'a str> {
    let registrations: Vec<&Registration> = available
        .iter()
        .filter_map(|name| find_backend(name).ok())
        .collect();
    let strongest = strongest_durable(&registrations)?;
    available
        .iter()
        .find(|name| **name == strongest.name)
        .copied()
}

/// Of `registrations`, the durable one whose guarantees are strongest — compared by
/// durability, then read consistency, then failover, then loss window
/// ([`switchyard_backend_api::Guarantees::strength`]) — the first by name on a tie.
pub fn strongest_durable<'a>(registrations: &[&'a Registration]) -> Option<&'a Registration> {
    registrations
        .iter()
        .filter(|r| r.guarantees.survives_restart())
        .min_by(|a, b| {
            b.guarantees
                .strength()
                .cmp(&a.guarantees.strength())
                .then(a.name.cmp(b.name))
        })
        .copied()
}

/// The `switchyard backends` listing: one line per backend — name, guarantees, description,
/// the modes beyond the default and the `switchyard cluster` operations it offers — in aligned
/// columns.
pub fn listing(registrations: &[&Registration]) -> String {
    let rows: Vec<(&str, String, String)> = registrations
        .iter()
        .map(|r| (r.name, r.guarantees.to_string(), describe(r)))
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

/// A registration's description with its modes and cluster operations appended.
fn describe(registration: &Registration) -> String {
    let mut text = registration.description.to_owned();
    if !registration.modes.is_empty() {
        let modes: Vec<&str> = registration.modes.iter().map(|m| m.name).collect();
        let _ = write!(text, "; modes: {}", modes.join(", "));
    }
    let operations = registration.admin.operations();
    if !operations.is_empty() {
        let _ = write!(text, "; cluster: {}", operations.join(", "));
    }
    text
}

/// Ask node `node` of the cluster `config` describes to promote itself (`switchyard cluster
/// promote N`), if the configured backend offers manual promotion; returns the new epoch.
pub async fn promote(config: &Config, node: NodeId) -> Result<u64, MetadataError> {
    let (registration, context) = admin_context(config)?;
    let promote = registration
        .admin
        .promote
        .ok_or_else(|| MetadataError::Unsupported {
            what: format!(
                "manual promotion of node {node} with the {} backend (it elects its leader)",
                registration.name
            ),
        })?;
    context.address_of(node)?;
    promote(context, node).await
}

/// Ask the cluster `config` describes to add or remove a node (`switchyard cluster add-node` /
/// `remove-node`), if the configured backend offers online membership change; returns the
/// leader's view once it shows the committed membership.
pub async fn change_membership(
    config: &Config,
    change: MembershipChange,
) -> Result<ClusterView, MetadataError> {
    let (registration, context) = admin_context(config)?;
    let change_membership =
        registration
            .admin
            .change_membership
            .ok_or_else(|| MetadataError::Unsupported {
                what: format!(
                    "online membership change with the {} backend",
                    registration.name
                ),
            })?;
    change_membership(context, change).await
}

/// The registration of the backend `config` names (or the default one), and what its
/// administration receives.
fn admin_context(config: &Config) -> Result<(&'static Registration, AdminContext), MetadataError> {
    let name = match config.metadata_backend.as_deref() {
        Some(name) => name,
        None => default_backend(LINKED_BACKENDS).ok_or_else(|| {
            MetadataError::Config("no durable metadata backend is compiled into this binary".into())
        })?,
    };
    let registration = find_backend(name)?;
    let credentials = config.cluster_credentials().ok_or_else(|| {
        MetadataError::Config(format!(
            "`switchyard cluster` proves the cluster secret to every node it asks: {MAKE_A_SECRET}"
        ))
    })?;
    let context = AdminContext {
        config: config.backend_config(registration.name),
        peers: config.peers.clone(),
        credentials,
    };
    Ok((registration, context))
}

#[cfg(test)]
mod tests {
    use switchyard_backend_api::{
        Admin, Durability, Failover, Guarantees, LossWindow, OpenContext, OpenFuture,
        ReadConsistency, memory,
    };

    use super::*;

    fn never_opened(_: OpenContext) -> OpenFuture {
        Box::pin(async {
            Err(MetadataError::Unsupported {
                what: "test registration".into(),
            })
        })
    }

    fn registration(name: &'static str, guarantees: Guarantees) -> Registration {
        Registration {
            name,
            description: "test",
            guarantees,
            modes: &[],
            admin: Admin::NONE,
            storage: None,
            open: never_opened,
        }
    }

    const QUORUM: Guarantees = Guarantees {
        durability: Durability::QuorumFsync,
        reads: ReadConsistency::Local,
        failover: Failover::Manual,
        loss_window: LossWindow::Nothing,
        multi_node: true,
    };

    #[test]
    fn memory_is_never_the_default() {
        let memory = registration("memory", memory::GUARANTEES);
        assert!(strongest_durable(&[&memory]).is_none());
        assert!(strongest_durable(&[]).is_none());
        assert_eq!(default_backend(&["memory"]), None);
    }

    #[test]
    fn the_default_is_the_strongest_declaration() {
        let memory = registration("memory", memory::GUARANTEES);
        let local = registration(
            "local",
            Guarantees {
                durability: Durability::LocalFsync,
                loss_window: LossWindow::UnreplicatedTail,
                ..QUORUM
            },
        );
        let manual = registration("manual", QUORUM);
        let elected = registration(
            "elected",
            Guarantees {
                failover: Failover::Automatic,
                ..QUORUM
            },
        );
        let linearizable = registration(
            "linearizable",
            Guarantees {
                failover: Failover::Automatic,
                reads: ReadConsistency::Linearizable,
                ..QUORUM
            },
        );
        let name_of = |all: &[&Registration]| strongest_durable(all).map(|r| r.name);
        assert_eq!(name_of(&[&memory, &local]), Some("local"));
        assert_eq!(name_of(&[&local, &manual, &memory]), Some("manual"));
        assert_eq!(name_of(&[&manual, &elected, &local]), Some("elected"));
        assert_eq!(
            name_of(&[&elected, &linearizable, &manual, &memory]),
            Some("linearizable")
        );
        let twin = registration("a-twin", QUORUM);
        assert_eq!(name_of(&[&manual, &twin]), Some("a-twin"));
    }

    #[test]
    fn the_default_among_linked_backends_is_registered_and_durable() {
        match default_backend(LINKED_BACKENDS) {
            None => assert_eq!(LINKED_BACKENDS, ["memory"]),
            Some(name) => {
                let chosen = find_backend(name).map(|r| r.guarantees);
                assert!(chosen.is_ok_and(|g| g.survives_restart()), "{name}");
            }
        }
    }

    #[test]
    fn listing_aligns_columns_and_names_modes_and_operations() {
        let mut long = registration(
            "longer-name",
            Guarantees {
                multi_node: true,
                ..memory::GUARANTEES
            },
        );
        long.description = "second";
        long.modes = &[
            switchyard_backend_api::Mode {
                name: "strict",
                config: &[("mode", "strict")],
                guarantees: QUORUM,
            },
            switchyard_backend_api::Mode {
                name: "loose",
                config: &[("mode", "loose")],
                guarantees: QUORUM,
            },
        ];
        long.admin.change_membership = Some(|_, _| {
            Box::pin(async {
                Err(MetadataError::Unsupported {
                    what: "test".into(),
                })
            })
        });
        let mut short = registration("m", memory::GUARANTEES);
        short.description = "first";
        let text = listing(&[&short, &long]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("m  "), "{text}");
        assert!(lines[0].ends_with("  first"), "{text}");
        assert!(
            lines[1].starts_with("longer-name  durability=none"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("second; modes: strict, loose; cluster: add-node, remove-node"),
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
