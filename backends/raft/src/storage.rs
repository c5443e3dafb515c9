//! Offline access to a stopped node's store ([`Storage`]): the state it would recover, and a
//! new store that starts from a given state (a backend switch, a restore).
//!
//! The store is the RocksDB database in `<dir>/raft` ([`crate::store`]). An initialised node
//! holds one snapshot of the view at raft log id `<epoch>-<lowest member>-1`
//! ([`start_log_id`]): an entry of the state's epoch (its term), whose membership has every
//! configured node as a voter; its log is purged right behind the snapshot and committed up
//! to it (the store of a node whose log openraft compacted), and its vote is for the lowest
//! member in that term, not committed (no leader is known). No entry. On open, openraft finds
//! the node initialised (it has a last log id), so it never bootstraps: it starts as a
//! follower of that membership, and the first election — without any peer's help when the
//! node is the only voter — is for the next term. That leader's blank entry is raft index 2;
//! the next metadata command is `view.applied_index + 1`.
//!
//! ### To ensure correctness:
//! - [`read`] recovers with openraft's own recovery ([`StorageHelper::get_initial_state`],
//!   which `Raft::new` runs on open): the snapshot, plus every entry up to the persisted
//!   committed log id re-applied; so it returns exactly what `open` would serve, never an
//!   uncommitted entry. Its epoch is the term of the last entry applied, so [`init`]'s term
//!   round-trips.
//! - What [`init`] writes depends only on the state and the configured members, never on
//!   which node writes it: every node of a cluster initialised from one state starts from the
//!   same snapshot, log id, membership and vote, so any of them can win the first election.
//! - The vote is in the state's term, as is the snapshot's log id: a leader's term is never
//!   below the term of an entry in its log, and the first one elected after the import leads
//!   a later epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::RaftStateMachine;
use openraft::{
    CommittedLeaderId, LogId, Membership, SnapshotMeta, StorageHelper, StoredMembership, Vote,
};
use switchyard_backend_api::{MetadataError, NodeIdentity, OpenContext, Storage, StoredState};

use crate::backend::{members, storage};
use crate::config::RaftConfig;
use crate::store::{Access, Db, LogStore, StateMachine};
use crate::types::Node;

/// [`Storage`] of the store in `<dir>/raft`.
pub const STORAGE: Storage = Storage { holds, read, init };

/// The store's directory within the backend's directory (as `RaftBackend::open` names it).
pub(crate) fn store_dir(dir: &Path) -> PathBuf {
    dir.join("raft")
}

/// The database in `<dir>/raft`, opened as a stopped node's: waiting, as `open` does, for a
/// handle that is still closing; creating it only with [`Access::Create`].
fn open_stopped(dir: &Path, access: Access) -> Result<Db, MetadataError> {
    Db::open_blocking(dir, access, switchyard_rocksdb::LOCK_WAIT).map_err(|e| {
        storage(format!(
            "{}: {e} (the node must be stopped to read or initialise its metadata)",
            dir.display()
        ))
    })
}

/// Close `db`, reporting a failure to sync as an error about `dir`.
fn close(db: &Db, dir: &Path) -> Result<(), MetadataError> {
    db.close()
        .map_err(|e| storage(format!("{}: {e}", dir.display())))
}

/// Whether `<dir>/raft` is a database that was ever written (a vote, an entry or a
/// snapshot). A missing directory, one without a database and a database nothing was written
/// to (a node that stopped before it joined or initialised a cluster) hold nothing. Opens the
/// database read-only: it writes nothing, and creates nothing.
pub fn holds(dir: &Path) -> Result<bool, MetadataError> {
    let dir = store_dir(dir);
    let exists = Db::exists(&dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
    if !exists {
        return Ok(false);
    }
    // Closed by dropping it (see `Access::ReadOnly`).
    let db = open_stopped(&dir, Access::ReadOnly)?;
    let pristine = db
        .is_pristine()
        .map_err(|e| storage(format!("{}: {e}", dir.display())))?;
    Ok(!pristine)
}

/// What `open` recovers from `<dir>/raft`: the snapshot's view with every committed entry
/// after it applied, and the term of the last raft entry applied (the snapshot's, when no
/// entry follows it; 0 when there is neither). Recovery repairs the store as `open` would
/// (openraft purges a log left behind an installed snapshot, and rebuilds a snapshot whose
/// log was purged without one).
pub fn read(dir: &Path) -> Result<StoredState, MetadataError> {
    if !holds(dir)? {
        return Err(storage(format!(
            "{} holds no raft metadata",
            store_dir(dir).display()
        )));
    }
    let dir = store_dir(dir);
    let db = open_stopped(&dir, Access::Existing)?;
    let recovered = recover(&db, &dir);
    close(&db, &dir)?;
    recovered
}

/// Run openraft's recovery on `db`'s log and state machine, as `Raft::new` does, and return
/// the recovered state. The store's futures never wait on anything but the database, so they
/// run to completion on this thread.
fn recover(db: &Db, dir: &Path) -> Result<StoredState, MetadataError> {
    let failed = |e: openraft::StorageError<u64>| storage(format!("{}: {e}", dir.display()));
    let mut log = LogStore::new(db.clone());
    let mut sm = StateMachine::open(db.clone()).map_err(failed)?;
    futures::executor::block_on(async {
        StorageHelper::new(&mut log, &mut sm)
            .get_initial_state()
            .await
            .map_err(failed)?;
        let (last_applied, _) = sm.applied_state().await.map_err(failed)?;
        Ok(StoredState {
            view: sm.applied().view().as_ref().clone(),
            epoch: last_applied.map_or(0, |l| l.leader_id.term),
        })
    })
}

/// The log id of an initialised node's snapshot: the state's epoch as its term, the lowest
/// member as its leader (every node picks the same), index 1.
pub(crate) fn start_log_id(epoch: u64, members: &BTreeMap<u64, String>) -> LogId<u64> {
    let lowest = members.keys().next().copied().unwrap_or_default();
    LogId::new(CommittedLeaderId::new(epoch, lowest), 1)
}

/// The members an initialised node starts with: [`members`], except that a node of a cluster
/// records every configured peer at its configured address. This node's own cluster address
/// may be the address it listens on (`0.0.0.0:9093`), which differs from the one the others
/// dial; every node writes the same membership all the same.
fn initial_members(node: &NodeIdentity) -> Result<BTreeMap<u64, String>, MetadataError> {
    let mut members = members(node)?;
    if node.has_peers() {
        members.extend(node.peers.iter().map(|(id, addr)| (id.0, addr.clone())));
    }
    Ok(members)
}

/// Write a new store in the context's `<data_dir>/raft` that opens at the state: one
/// snapshot of its view at a log id of its epoch, whose membership has every configured node
/// (this one included) as a voter, the log purged and committed up to that snapshot, a vote
/// in that epoch, no entry. Refused, writing nothing, when the directory already holds raft
/// metadata.
pub fn init(context: &OpenContext, stored: &StoredState) -> Result<(), MetadataError> {
    RaftConfig::from_figment(&context.config)?;
    if holds(&context.data_dir)? {
        return Err(storage(format!(
            "{} already holds raft metadata; move it away to initialise the node anew",
            store_dir(&context.data_dir).display()
        )));
    }
    let members = initial_members(&context.node)?;
    let log_id = start_log_id(stored.epoch, &members);
    let vote = Vote::new(log_id.leader_id.term, log_id.leader_id.node_id);
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let nodes: BTreeMap<u64, Node> = members
        .into_iter()
        .map(|(id, addr)| (id, Node { addr }))
        .collect();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes)),
        snapshot_id: format!(
            "import-{}-{}-{}",
            log_id.leader_id.term, log_id.index, stored.view.applied_index
        ),
    };
    let data = stored.view.to_bytes()?;

    let dir = store_dir(&context.data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
    let db = open_stopped(&dir, Access::Create)?;
    // `holds` looked through another handle; this one writes only into a pristine store.
    let written = start(&db, &dir, &meta, &data, &vote);
    close(&db, &dir)?;
    written
}

/// Write the starting store into `db` if it is pristine; refuse otherwise.
fn start(
    db: &Db,
    dir: &Path,
    meta: &SnapshotMeta<u64, Node>,
    data: &[u8],
    vote: &Vote<u64>,
) -> Result<(), MetadataError> {
    let failed = |e: openraft::StorageError<u64>| storage(format!("{}: {e}", dir.display()));
    if !db.is_pristine().map_err(failed)? {
        return Err(storage(format!(
            "{} already holds raft metadata",
            dir.display()
        )));
    }
    db.start_from_snapshot(meta, data, vote).map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use anyhow::{Context, bail, ensure};
    use figment::Figment;
    use openraft::storage::RaftLogStorage;
    use openraft::{Entry, EntryPayload};
    use switchyard_backend_api::{
        AppliedState, ClusterMember, ClusterView, MetadataBackend, MetadataCommand, NodeId,
        Outcome, StateView,
    };
    use switchyard_compat_tests::fixtures::{converges, create_topic, register};
    use switchyard_compat_tests::{DEADLINE, RegistryHarness, TestCluster};
    use tempfile::TempDir;

    use super::*;
    use crate::RaftBackend;
    use crate::types::{Proposals, TypeConfig};

    /// A view another backend exported: broker 1 and two topics, applied after positions that
    /// carried no command (its applied index is not its number of commands).
    fn exported_view() -> anyhow::Result<StateView> {
        let applied = AppliedState::new(StateView::default());
        applied.skip_to(10);
        let commands = [
            register(1),
            create_topic("exported-a", &[&[1]]),
            create_topic("exported-b", &[&[1], &[1]]),
        ];
        for (index, result) in applied.apply_all(&commands) {
            match result {
                Ok(Outcome::TopicsCreated { results }) if results.iter().any(Result::is_err) => {
                    bail!("command {index} created no topic: {results:?}")
                }
                Ok(_) => {}
                Err(rejection) => bail!("command {index} was rejected: {rejection:?}"),
            }
        }
        let view = applied.view().as_ref().clone();
        ensure!(
            view.applied_index == 13 && view.state.topics().count() == 2,
            "unexpected view: {view:?}"
        );
        Ok(view)
    }

    /// The context of node `id` without peers, on `dir`.
    fn single(dir: &Path, id: u64) -> OpenContext {
        OpenContext {
            config: Figment::new(),
            data_dir: dir.to_owned(),
            node: NodeIdentity::single(NodeId(id)),
            cluster_credentials: None,
        }
    }

    /// Run a storage function off the runtime's workers, as its contract asks.
    async fn off_runtime<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, MetadataError> + Send + 'static,
    ) -> anyhow::Result<T> {
        Ok(tokio::task::spawn_blocking(f).await??)
    }

    /// Open a node as the registry would.
    async fn open(context: OpenContext) -> anyhow::Result<RaftBackend> {
        tokio::time::timeout(DEADLINE, RaftBackend::open(context))
            .await
            .context("open did not return")?
            .context("opening the node")
    }

    /// Every file of the store, with its contents.
    fn store_files(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(store_dir(dir))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(entry.path())?);
        }
        Ok(files)
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn normal(term: u64, index: u64, commands: Vec<MetadataCommand>) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Proposals(commands)),
        }
    }

    #[test]
    fn init_writes_what_read_returns_and_a_second_init_is_refused() -> anyhow::Result<()> {
        let tmp = TempDir::new()?;
        let dir = tmp.path();
        let stored = StoredState {
            view: exported_view()?,
            epoch: 7,
        };
        ensure!(!holds(dir)?, "an empty directory holds metadata");

        init(&single(dir, 1), &stored)?;
        ensure!(holds(dir)?, "the initialised directory holds no metadata");
        assert_eq!(read(dir)?, stored);

        let before = store_files(dir)?;
        let other = StoredState {
            view: StateView::default(),
            epoch: 1,
        };
        match init(&single(dir, 1), &other) {
            Err(MetadataError::Storage(message)) if message.contains("already holds") => {}
            other => bail!("a second init was not refused: {other:?}"),
        }
        assert_eq!(store_files(dir)?, before, "the refused init wrote");
        assert_eq!(read(dir)?, stored);
        Ok(())
    }

    #[test]
    fn a_missing_an_empty_or_a_pristine_directory_holds_nothing() -> anyhow::Result<()> {
        let tmp = TempDir::new()?;
        let no_raft_metadata = |dir: &Path| -> anyhow::Result<()> {
            ensure!(!holds(dir)?, "{} holds metadata", dir.display());
            match read(dir) {
                Err(MetadataError::Storage(message)) if message.contains("no raft metadata") => {
                    Ok(())
                }
                other => bail!("read {}: {other:?}", dir.display()),
            }
        };

        let missing = tmp.path().join("missing");
        no_raft_metadata(&missing)?;
        ensure!(!missing.exists(), "holds or read created the directory");

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty)?;
        no_raft_metadata(&empty)?;
        ensure!(
            !store_dir(&empty).exists(),
            "holds or read created the store"
        );

        let bare = tmp.path().join("bare");
        std::fs::create_dir_all(store_dir(&bare))?;
        no_raft_metadata(&bare)?;
        ensure!(
            std::fs::read_dir(store_dir(&bare))?.next().is_none(),
            "holds or read wrote into an empty store directory"
        );

        // A node that stopped before it joined or initialised a cluster: a database that was
        // never written. It holds nothing, and can be initialised.
        let pristine = tmp.path().join("pristine");
        std::fs::create_dir_all(store_dir(&pristine))?;
        let db = Db::open_blocking(&store_dir(&pristine), Access::Create, DEADLINE)
            .map_err(anyhow::Error::msg)?;
        db.close().map_err(anyhow::Error::msg)?;
        no_raft_metadata(&pristine)?;
        let stored = StoredState {
            view: exported_view()?,
            epoch: 0,
        };
        init(&single(&pristine, 1), &stored)?;
        assert_eq!(read(&pristine)?, stored);
        Ok(())
    }

    /// Every node records each configured peer at its configured address, whatever address it
    /// listens on itself.
    #[test]
    fn every_node_starts_with_the_same_members() -> anyhow::Result<()> {
        let peers = BTreeMap::from([
            (NodeId(1), "host-1:9093".to_owned()),
            (NodeId(2), "host-2:9093".to_owned()),
        ]);
        let listening = NodeIdentity {
            id: NodeId(1),
            cluster_addr: Some("0.0.0.0:9093".into()),
            peers: peers.clone(),
        };
        let advertised = NodeIdentity {
            id: NodeId(2),
            cluster_addr: Some("host-2:9093".into()),
            peers,
        };
        let expected =
            BTreeMap::from([(1, "host-1:9093".to_owned()), (2, "host-2:9093".to_owned())]);
        assert_eq!(initial_members(&listening)?, expected);
        assert_eq!(initial_members(&advertised)?, expected);
        // The address a node listens on is still what it binds.
        assert_eq!(
            members(&listening)?.get(&1).map(String::as_str),
            Some("0.0.0.0:9093")
        );
        Ok(())
    }

    /// `read` applies exactly the entries open re-applies: those up to the persisted commit
    /// index (blank and membership entries carry no command), not the uncommitted tail; the
    /// epoch is the term of the last one applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_recovers_the_committed_entries_as_open_does() -> anyhow::Result<()> {
        let tmp = TempDir::new()?;
        let dir = tmp.path().to_owned();
        let view = exported_view()?;
        {
            let context = single(&dir, 1);
            let stored = StoredState {
                view: view.clone(),
                epoch: 1,
            };
            off_runtime(move || init(&context, &stored)).await?;
        }
        let members = BTreeMap::from([(1, String::new())]);
        ensure!(
            start_log_id(1, &members) == log_id(1, 1),
            "the snapshot is not at 1-1-1"
        );
        let membership = Membership::new(vec![BTreeSet::from([1])], BTreeSet::from([1]));
        let entries = [
            Entry {
                log_id: log_id(2, 2),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 3),
                payload: EntryPayload::Membership(membership),
            },
            normal(2, 4, vec![create_topic("a", &[&[1]])]),
            normal(
                3,
                5,
                vec![create_topic("b", &[&[1]]), create_topic("c", &[&[1]])],
            ),
            normal(3, 6, vec![create_topic("uncommitted", &[&[1]])]),
        ];
        {
            let dir = store_dir(&dir);
            let db =
                Db::open_blocking(&dir, Access::Existing, DEADLINE).map_err(anyhow::Error::msg)?;
            db.write_log(&entries, Some(log_id(3, 5)))?;
            LogStore::new(db.clone())
                .save_vote(&Vote::new_committed(3, 1))
                .await?;
            db.close().map_err(anyhow::Error::msg)?;
        }

        let stored = {
            let dir = dir.clone();
            off_runtime(move || read(&dir)).await?
        };
        ensure!(stored.epoch == 3, "epoch {}", stored.epoch);
        ensure!(
            stored.view.applied_index == view.applied_index + 3,
            "applied index {} after {}",
            stored.view.applied_index,
            view.applied_index
        );
        let topics: BTreeSet<&str> = stored
            .view
            .state
            .topics()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            topics,
            BTreeSet::from(["a", "b", "c", "exported-a", "exported-b"])
        );

        // Node 2 is no member: it opens as a learner and is never elected, so what it serves
        // is what open recovered, nothing committed since.
        let node = open(single(&dir, 2)).await?;
        assert_eq!(*node.local(), stored.view);
        node.shutdown().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_initialised_node_serves_the_view_elects_itself_and_continues() -> anyhow::Result<()>
    {
        let tmp = TempDir::new()?;
        let dir = tmp.path().to_owned();
        let imported = StoredState {
            view: exported_view()?,
            epoch: 5,
        };
        {
            let (context, imported) = (single(&dir, 1), imported.clone());
            off_runtime(move || init(&context, &imported)).await?;
        }
        let view = imported.view;

        let node = open(single(&dir, 1)).await?;
        assert_eq!(*node.local(), view, "open did not recover the view");
        let mut cluster = node.cluster();
        let ready = tokio::time::timeout(DEADLINE, cluster.wait_for(ClusterView::is_ready))
            .await
            .context("the node did not become ready")??
            .clone();
        ensure!(
            ready.leader == Some(NodeId(1)) && ready.epoch > imported.epoch,
            "not the leader of a later epoch: {ready:?}"
        );
        assert_eq!(
            ready.members,
            vec![ClusterMember {
                id: NodeId(1),
                addr: None,
                voter: true
            }]
        );

        let proposed = tokio::time::timeout(
            DEADLINE,
            node.propose(create_topic("after-import", &[&[1]])),
        )
        .await
        .context("propose did not return")??;
        assert_eq!(proposed.index, view.applied_index + 1);
        ensure!(
            proposed.epoch > imported.epoch,
            "written in epoch {}, imported in {}",
            proposed.epoch,
            imported.epoch
        );
        let served = node.local();
        ensure!(
            served.applied_index == proposed.index && served.state.topic("after-import").is_some(),
            "the proposal is not applied: {served:?}"
        );
        node.shutdown().await?;

        let stored = off_runtime(move || read(&dir)).await?;
        assert_eq!(
            stored,
            StoredState {
                view: served.as_ref().clone(),
                epoch: proposed.epoch
            }
        );
        Ok(())
    }

    /// Every node of a cluster initialised from one state writes the same store, and the
    /// cluster elects a leader in a later epoch and continues from the view as a new one
    /// would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_initialised_from_one_state_elects_and_continues() -> anyhow::Result<()> {
        let harness = RegistryHarness::new(crate::NAME);
        let mut cluster = TestCluster::layout(&harness, 3)?;
        let imported = StoredState {
            view: exported_view()?,
            epoch: 4,
        };
        let mut started = Vec::new();
        for index in 0..cluster.size() {
            let spec = cluster.spec(index)?.clone();
            let context = OpenContext {
                config: Figment::new(),
                data_dir: spec.data_dir.clone(),
                node: spec.identity.clone(),
                cluster_credentials: Some(spec.credentials.clone()),
            };
            let stored = imported.clone();
            off_runtime(move || init(&context, &stored)).await?;
            // The snapshot's log id and membership, as the state machine reports them.
            let db = Db::open_blocking(&store_dir(&spec.data_dir), Access::ReadOnly, DEADLINE)
                .map_err(anyhow::Error::msg)?;
            let vote = LogStore::new(db.clone()).read_vote().await?;
            let mut sm = StateMachine::open(db)?;
            started.push((vote, sm.applied_state().await?));
        }
        ensure!(
            started.windows(2).all(|w| w[0] == w[1]),
            "the nodes start differently: {started:?}"
        );

        for index in 0..cluster.size() {
            cluster.open(index).await?;
            assert_eq!(*cluster.node(index)?.local(), imported.view);
        }
        let leader = cluster.leader().await?;
        let proposed = tokio::time::timeout(
            DEADLINE,
            leader.propose(create_topic("after-import", &[&[1]])),
        )
        .await
        .context("propose did not return")??;
        assert_eq!(proposed.index, imported.view.applied_index + 1);
        ensure!(
            proposed.epoch > imported.epoch,
            "written in epoch {}, imported in {}",
            proposed.epoch,
            imported.epoch
        );
        for index in 0..cluster.size() {
            converges(cluster.node(index)?, &leader.local()).await?;
        }
        Ok(())
    }
}
