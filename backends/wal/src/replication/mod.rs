//! Replication: the role controller and what its submodules share.
//!
//! # Roles
//! The persisted term (`term.rs`) names the primary of the newest epoch this node knows.
//! A node whose term names itself *leads*: it connects out to every other node with
//! `Hello { epoch }`. Each follower persists the epoch (if newer) before answering
//! `Welcome { last }`, and from then on refuses every older epoch with `Fenced`.
//!
//! The controller ([`control`]) handles role changes one at a time. Leading starts a
//! leadership ([`takeover`]) with one [`link`] per other member; stepping down ends it.
//! Incoming connections are accepted in [`serve`], the follower's side of a link is
//! [`follower`], both ends move records and snapshots through [`stream`], and the one-shot
//! outgoing connections (admin, extension, forwarded proposals) are in [`client`].

mod client;
mod follower;
mod link;
mod serve;
mod stream;
mod takeover;

use std::sync::Arc;

use switchyard_backend_api::{MetadataError, NodeId, Readiness, Role};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::applier::ApplyMsg;
use crate::node::Node;
use crate::protocol::{Message, NetError};
use crate::term::Term;
use crate::writer::Request;
use takeover::Leadership;

pub use client::{connect_extension, request_promotion};
pub(crate) use client::{forward_proposal, open_with_hello};
pub(crate) use serve::{bind, listen};

/// Role changes, handled one at a time by the controller task.
#[derive(Debug)]
pub(crate) enum Control {
    /// A peer knows a newer epoch.
    Fenced {
        /// Its epoch.
        epoch: u64,
        /// Its primary.
        primary: NodeId,
    },
    /// The follower side accepted a newer epoch (term already persisted).
    SteppedDown,
    /// Make this node primary in a new epoch.
    Promote {
        /// The new epoch, once the node serves.
        reply: oneshot::Sender<Result<u64, MetadataError>>,
    },
    /// External roles: lead exactly `epoch`.
    LeadAt {
        /// The epoch the embedding backend's election gave this node.
        epoch: u64,
    },
    /// External roles: do not write as primary; `leader` (if known) leads `epoch`.
    Follow {
        /// The epoch.
        epoch: u64,
        /// Its primary, if known.
        leader: Option<NodeId>,
    },
}

/// Which epoch [`lead`] takes.
#[derive(Debug, Clone, Copy)]
enum Epoch {
    /// The persisted one (restart of a static primary); a brand-new cluster starts epoch 1.
    Persisted,
    /// The next one (manual promotion).
    Next,
    /// Exactly this one (external roles); refused unless it is newer than the persisted
    /// epoch, or is it and names this node.
    Exactly(u64),
}

/// What [`lead`] does with the persisted term to lead the epoch an [`Epoch`] names.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Lead the persisted epoch as it is.
    Keep,
    /// Persist this newer epoch with this node as its primary, then lead it.
    Persist(u64),
    /// Do not lead this epoch: it is not newer than the persisted one.
    Refuse(u64),
}

impl Epoch {
    /// How node `me`, whose persisted term is `known`, starts leading this epoch.
    fn start(self, known: Term, me: NodeId) -> Start {
        match self {
            Epoch::Persisted if known.epoch > 0 => Start::Keep,
            Epoch::Persisted | Epoch::Next => Start::Persist(known.epoch + 1),
            Epoch::Exactly(epoch) if epoch > known.epoch => Start::Persist(epoch),
            Epoch::Exactly(epoch) if epoch == known.epoch && known.primary == me => Start::Keep,
            Epoch::Exactly(epoch) => Start::Refuse(epoch),
        }
    }
}

/// A leadership in progress.
struct Leading {
    shared: Arc<Leadership>,
    _links: JoinSet<()>,
}

/// Run the controller until the backend stops.
pub(crate) async fn control(
    node: Arc<Node>,
    mut messages: tokio::sync::mpsc::UnboundedReceiver<Control>,
) {
    let mut leading: Option<Leading> = None;
    if node.term().primary == node.me && !node.is_external() {
        leading = lead(&node, Epoch::Persisted).await;
    } else {
        follower_view(&node, "waiting for the primary to connect");
    }
    while let Some(message) = messages.recv().await {
        match message {
            Control::Fenced { epoch, primary } => {
                let Some(current) = &leading else { continue };
                if epoch < current.shared.epoch
                    || (epoch == current.shared.epoch && primary == node.me)
                {
                    continue;
                }
                tracing::warn!(epoch, %primary, "fenced by a newer epoch; stepping down");
                leading = None;
                if let Err(e) = adopt(&node, Term { epoch, primary }).await {
                    tracing::error!(error = %e, "could not persist the newer epoch");
                }
                step_down(&node).await;
            }
            Control::SteppedDown => {
                if leading.take().is_some() {
                    step_down(&node).await;
                }
                follower_view(&node, "waiting for the new primary");
            }
            Control::Promote { reply } if node.is_external() => {
                let _ = reply.send(Err(MetadataError::Unsupported {
                    what: "manual promotion (this node's leader is elected by its backend)".into(),
                }));
            }
            Control::Promote { reply } => {
                if leading.take().is_some() {
                    step_down(&node).await;
                }
                leading = lead(&node, Epoch::Next).await;
                let node = Arc::clone(&node);
                tokio::spawn(async move {
                    let _ = reply.send(await_leading(&node).await);
                });
            }
            Control::LeadAt { epoch } => {
                if leading.as_ref().is_some_and(|l| l.shared.epoch == epoch) {
                    continue;
                }
                if leading.take().is_some() {
                    step_down(&node).await;
                }
                leading = lead(&node, Epoch::Exactly(epoch)).await;
            }
            Control::Follow { epoch, leader } => {
                let deposed = leading
                    .as_ref()
                    .is_some_and(|l| l.shared.epoch < epoch || leader != Some(node.me));
                if deposed {
                    leading = None;
                    step_down(&node).await;
                }
                if let Some(primary) = leader.filter(|_| leading.is_none()) {
                    // Only a newer epoch resets the view: told again of the epoch it follows,
                    // a node may already be streamed to by that primary, which set the view.
                    match adopt(&node, Term { epoch, primary }).await {
                        Ok(true) => follower_view(&node, "waiting for the primary to connect"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "could not persist the newer epoch"),
                    }
                }
            }
        }
    }
}

/// Persist `term` if it is newer than the one known; whether it was.
async fn adopt(node: &Node, term: Term) -> Result<bool, MetadataError> {
    let mut guard = node.lock_term().await;
    if term.epoch > guard.get().epoch {
        guard.set(term).await?;
        return Ok(true);
    }
    Ok(false)
}

fn follower_view(node: &Node, reason: &str) {
    let term = node.term();
    let known = if node.is_external() {
        term.epoch > 0
    } else {
        term.epoch > 0 || term.primary != node.me
    };
    let leader = known.then_some(term.primary);
    node.set_view(
        Role::Follower,
        leader,
        Readiness::NotReady {
            reason: reason.into(),
        },
    );
}

/// Stop writing as primary: the writer refuses proposals, waiting proposers learn nothing
/// more, and the commit index comes from the next primary.
async fn step_down(node: &Node) {
    let _ = node.ask_writer(|reply| Request::Follow { reply }).await;
    node.progress.follow();
    let _ = node.applier.send(ApplyMsg::Abandon);
    follower_view(node, "stepped down; waiting for the new primary");
}

/// Wait until this node serves as primary, or the promotion deadline passes.
async fn await_leading(node: &Node) -> Result<u64, MetadataError> {
    let mut views = node.cluster();
    let timeout = node.propose_timeout();
    let me = node.me;
    let waited = tokio::time::timeout(
        timeout,
        views.wait_for(|v| v.is_ready() && v.leader == Some(me)),
    )
    .await;
    match waited {
        Ok(Ok(view)) => Ok(view.epoch),
        Ok(Err(_)) => Err(MetadataError::ShutDown),
        Err(_) => Err(MetadataError::Timeout {
            what: "a majority to accept the promotion".into(),
            after_ms: node.config.propose_timeout_ms,
        }),
    }
}

/// Start leading in the epoch `which` names.
async fn lead(node: &Arc<Node>, which: Epoch) -> Option<Leading> {
    let mut guard = node.lock_term().await;
    let term = guard.get();
    let epoch = match which.start(term, node.me) {
        Start::Keep => term.epoch,
        Start::Persist(epoch) => {
            let next = Term {
                epoch,
                primary: node.me,
            };
            if let Err(e) = guard.set(next).await {
                tracing::error!(error = %e, "could not persist the new epoch; not leading");
                return None;
            }
            epoch
        }
        Start::Refuse(epoch) => {
            tracing::warn!(epoch, known = ?term, "not leading an epoch that is not newer");
            return None;
        }
    };
    drop(guard);
    tracing::info!(node = %node.me, epoch, "leading; gathering a majority");
    node.set_view(
        Role::Leader,
        Some(node.me),
        Readiness::NotReady {
            reason: format!("gathering a majority for epoch {epoch}"),
        },
    );
    let shared = Arc::new(Leadership::new(epoch));
    let mut links = JoinSet::new();
    links.spawn(link::supervise(Arc::clone(node), Arc::clone(&shared)));
    links.spawn(takeover::readiness(Arc::clone(node), Arc::clone(&shared)));
    if node.members().quorum() <= 1 {
        let node = Arc::clone(node);
        let shared = Arc::clone(&shared);
        links.spawn(async move { shared.finish(&node).await });
    }
    Some(Leading {
        shared,
        _links: links,
    })
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn net(error: NetError) -> MetadataError {
    MetadataError::Network(error.to_string())
}

pub(crate) fn unexpected(message: &Message) -> MetadataError {
    MetadataError::Network(format!("unexpected message {}", describe(message)))
}

fn describe(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "Hello",
        Message::Welcome { .. } => "Welcome",
        Message::Refused { .. } => "Refused",
        Message::Fenced { .. } => "Fenced",
        Message::Append { .. } => "Append",
        Message::SnapshotChunk { .. } => "SnapshotChunk",
        Message::Ack { .. } => "Ack",
        Message::Fetch { .. } => "Fetch",
        Message::FetchDone => "FetchDone",
        Message::Promote => "Promote",
        Message::Promoted { .. } => "Promoted",
        Message::PromoteFailed { .. } => "PromoteFailed",
        Message::Propose { .. } => "Propose",
        Message::Proposed { .. } => "Proposed",
        Message::Accepted => "Accepted",
        Message::ChangeMembers { .. } => "ChangeMembers",
        Message::MembersChanged { .. } => "MembersChanged",
        Message::SetMembers { .. } => "SetMembers",
        Message::MembersSet { .. } => "MembersSet",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId(1);
    const OTHER: NodeId = NodeId(2);

    fn term(epoch: u64, primary: NodeId) -> Term {
        Term { epoch, primary }
    }

    #[test]
    fn a_static_primary_keeps_its_persisted_epoch_and_a_new_cluster_starts_at_one() {
        assert_eq!(Epoch::Persisted.start(term(4, ME), ME), Start::Keep);
        assert_eq!(Epoch::Persisted.start(term(0, ME), ME), Start::Persist(1));
    }

    #[test]
    fn a_promotion_takes_the_epoch_after_the_persisted_one() {
        assert_eq!(Epoch::Next.start(term(4, OTHER), ME), Start::Persist(5));
        assert_eq!(Epoch::Next.start(term(4, ME), ME), Start::Persist(5));
    }

    #[test]
    fn an_exact_epoch_is_led_only_if_newer_or_already_this_nodes() {
        assert_eq!(
            Epoch::Exactly(5).start(term(4, OTHER), ME),
            Start::Persist(5)
        );
        assert_eq!(Epoch::Exactly(4).start(term(4, ME), ME), Start::Keep);
        assert_eq!(
            Epoch::Exactly(4).start(term(4, OTHER), ME),
            Start::Refuse(4)
        );
        assert_eq!(Epoch::Exactly(3).start(term(4, ME), ME), Start::Refuse(3));
    }
}
