//! The conformance suite every Switchyard metadata backend runs.
//!
//! A backend plugs in through a [`BackendHarness`] (how to open a node from a data directory
//! and a node identity, and how to crash one); [`conformance_tests!`] expands the one list of
//! cases into one `#[tokio::test]` per case, so a backend's whole test file is:
//!
//! ```text
//! switchyard_compat_tests::conformance_tests!(switchyard_compat_tests::RegistryHarness::new("memory"));
//! ```
//!
//! The crate using the macro needs `tokio` (features `macros`, `rt-multi-thread`) and `anyhow`
//! among its dev-dependencies.
//!
//! # Layout
//! - `harness.rs` — [`BackendHarness`], [`RegistryHarness`], [`TestCluster`] (owns the temp
//!   dirs; restart, crash).
//! - `net.rs` — [`Network`]: real TCP proxies between test nodes, each direction of each link
//!   open, delayed or cut, and healed; also in front of real brokers' Kafka listeners
//!   (`bin/switchyard-netem.rs` drives it for the real-client data-path fault runs).
//! - `trio.rs` — [`TrioHarness`]: the cases against three-node clusters of an electing
//!   backend, written through the leader, followers checked to converge.
//! - `broken.rs` — deliberately broken backend variants (acknowledging before commit, stale
//!   "linearizable" reads) that the fault runs must catch.
//! - `certs.rs` — a test CA (rcgen) and the certificates and cluster credentials it signs.
//! - `fixtures.rs` — propose-with-deadline and command builders shared by the cases.
//! - `linearizable.rs` — a Wing & Gong linearizability checker, per key.
//! - `nemesis.rs` — seeded fault runs: concurrent clients record a history while nodes are
//!   partitioned, delayed and crashed; checkers judge it against the declared guarantees.
//! - `cases/` — the cases, one module per area: `cluster`, `topics`, `partitions`, `groups`,
//!   `offsets`, `producers`, `batch`, `lifecycle`, `security`.
//!
//! # Invariants
//! - Every wait has a deadline ([`DEADLINE`]); a hung backend fails a case, never hangs it.
//! - Cases assert what the backend declares in its [`Guarantees`](switchyard_backend_api::Guarantees)
//!   (durability, linearizable reads), so one list serves every backend.

pub mod broken;
pub mod cases;
pub mod certs;
pub mod fixtures;
mod harness;
pub mod linearizable;
pub mod nemesis;
mod net;
mod trio;

pub use harness::{
    BackendHarness, DEADLINE, NodeSpec, RegistryHarness, TestCluster, reserve_addr, shared_secret,
};
pub use net::{CLIENTS, Link, Network};
pub use trio::TrioHarness;

/// Expand the conformance list into one `#[tokio::test]` per case, in a module per area, for
/// the harness expression given (evaluated afresh in every test).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@areas $harness;
            cluster {
                init_cluster_sets_id_once,
                register_broker_bumps_incarnation,
                fence_broker_moves_leadership,
                fenced_sole_replica_returns_as_leader,
                reregistering_a_live_broker_moves_its_partitions_off,
                unregister_broker_removes_it,
            }
            topics {
                create_topic_with_assignment,
                create_existing_topic_is_rejected,
                create_topic_validation_errors,
                create_topics_reports_per_topic,
                delete_topic_removes_it_and_its_offsets,
                create_partitions_adds_partitions,
                alter_topic_configs,
                alter_broker_configs,
            }
            partitions {
                alter_partition_is_fenced_by_epoch,
                checkpoint_partition_offsets,
            }
            groups {
                start_generation_is_compare_and_set,
                start_generation_validates_members,
                set_group_assignment,
                delete_groups,
                replace_static_member,
            }
            offsets {
                commit_offsets_with_generation,
                commit_with_stale_generation_is_rejected,
                commit_from_a_former_coordinator_is_rejected,
                commit_outside_generation_creates_group,
                commit_offsets_batch_is_atomic,
                delete_offsets_removes_only_the_listed_partitions,
            }
            producers {
                producer_id_blocks_do_not_overlap,
            }
            transactions {
                transactional_ids_get_producer_ids_and_epochs,
                a_transaction_opens_prepares_and_completes,
                an_open_transaction_is_aborted_by_fencing,
                transactional_offsets_commit_with_the_transaction,
                transactional_offsets_from_a_former_coordinator_are_rejected,
                an_end_from_a_former_coordinator_is_rejected,
                an_idle_transactional_id_expires,
            }
            batch {
                batch_applies_all_or_nothing,
            }
            lifecycle {
                open_returns_without_quorum,
                acknowledged_write_is_visible_locally,
                cluster_view_notifies_only_on_change,
                change_stream_delivers_every_change_in_order,
                concurrent_proposals_apply_exactly_once,
                wait_applied_times_out,
                linearizable_read_matches_declaration,
                guarantees_match_declaration,
                restart_keeps_acknowledged_writes,
                crash_keeps_acknowledged_writes,
                power_cut_keeps_acknowledged_writes,
                shutdown_refuses_writes,
                removing_unknown_member_fails,
                oversized_command_is_refused_and_writes_go_on,
                a_leader_only_proposal_is_never_forwarded,
            }
            storage {
                an_export_round_trips_byte_identically,
                an_imported_cluster_serves_the_state_and_takes_writes,
            }
            security {
                a_stranger_without_the_secret_changes_nothing,
                a_node_with_another_secret_cannot_join,
                cluster_tls_carries_the_cluster,
                a_node_whose_certificate_the_ca_did_not_sign_cannot_join,
            }
        );
    };
    (@areas $harness:expr; $($area:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $area {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let harness = $harness;
                        if let Err(error) = $crate::cases::$area::$case(&harness).await {
                            panic!("{} / {}: {error:?}", stringify!($area), stringify!($case));
                        }
                    }
                )*
            }
        )*
    };
}
