//! [`RocksLog`]: the group's Raft log on RocksDB, mirrored in a raft-rs `MemStorage` that
//! serves raft-rs's reads. Column families:
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log` | entry index, 8 bytes big-endian | the protobuf-encoded `Entry` |
//! | `raft_meta` | `hard_state`, `conf_state`, `snapshot` | protobuf-encoded `HardState` / `ConfState` / `Snapshot` |
//! | `raft_meta` | `applied` | the codec-encoded applied index and [`GroupState`] |
//!
//! ### To ensure correctness:
//! - [`GroupLog::persist`] writes the snapshot, the entries (dropping any conflicting tail
//!   first) and the hard state in one batch, synced when raft-rs asks, before they become
//!   visible to raft-rs.
//! - A snapshot this node sends carries the group state as of its applied index, so a node
//!   that joins later learns the members that were never conf-change entries (the initial
//!   voters, see [`RocksLog::bootstrap`]).

use std::path::Path;
use std::sync::Arc;

use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};
use switchyard_backend_api::codec;

use crate::driver::{DriverError, GroupLog};
use crate::group::GroupState;

const CF_LOG: &str = "raft_log";
const CF_META: &str = "raft_meta";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_APPLIED: &[u8] = b"applied";

fn storage(e: impl std::fmt::Display) -> DriverError {
    DriverError::Storage(e.to_string())
}

/// The group's log of one node.
pub struct RocksLog {
    db: Arc<DB>,
    mem: MemStorage,
    applied: u64,
    state: GroupState,
}

impl std::fmt::Debug for RocksLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksLog")
            .field("path", &self.db.path())
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl RocksLog {
    /// Open (or create) the log in `dir` and load it.
    pub fn open(dir: &Path) -> Result<Self, DriverError> {
        Self::load_from(Self::open_db(dir).map_err(storage)?)
    }

    /// Open (or create) the database in `dir`, without loading it: the part of [`Self::open`]
    /// that fails while another handle holds the directory's lock.
    pub fn open_db(dir: &Path) -> Result<DB, rocksdb::Error> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [CF_LOG, CF_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        DB::open_cf_descriptors(&options, dir, families)
    }

    /// The log held in `db` (from [`Self::open_db`]), loaded.
    pub fn load_from(db: DB) -> Result<Self, DriverError> {
        let mut log = Self {
            db: Arc::new(db),
            mem: MemStorage::new(),
            applied: 0,
            state: GroupState::default(),
        };
        log.load()?;
        Ok(log)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, DriverError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| storage(format!("column family {name} is missing")))
    }

    fn get_proto<M: prost::Message + Default>(&self, key: &[u8]) -> Result<Option<M>, DriverError> {
        match self.db.get_cf(self.cf(CF_META)?, key).map_err(storage)? {
            Some(bytes) => M::decode(&bytes[..]).map(Some).map_err(storage),
            None => Ok(None),
        }
    }

    fn load(&mut self) -> Result<(), DriverError> {
        let snapshot: Option<Snapshot> = self.get_proto(KEY_SNAPSHOT)?;
        let first = snapshot.as_ref().map_or(1, |s| s.get_metadata().index + 1);
        let mut core = self.mem.wl();
        if let Some(snapshot) = snapshot {
            core.apply_snapshot(snapshot)?;
        }
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOG)?,
            IteratorMode::From(&first.to_be_bytes(), Direction::Forward),
        );
        for item in iter {
            let (_, value) = item.map_err(storage)?;
            entries.push(Entry::decode(&value[..]).map_err(storage)?);
        }
        core.append(&entries)?;
        drop(core);
        if let Some(hard_state) = self.get_proto::<HardState>(KEY_HARD_STATE)? {
            self.mem.wl().set_hardstate(hard_state);
        }
        if let Some(conf_state) = self.get_proto::<ConfState>(KEY_CONF_STATE)? {
            self.mem.wl().set_conf_state(conf_state);
        }
        if let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_META)?, KEY_APPLIED)
            .map_err(storage)?
        {
            (self.applied, self.state) = codec::decode(&bytes).map_err(storage)?;
        }
        Ok(())
    }

    /// Whether nothing was ever written.
    pub fn is_pristine(&self) -> Result<bool, DriverError> {
        Ok(!self.mem.initial_state()?.initialized() && self.mem.last_index()? == 0)
    }

    /// Start a brand-new group of `members` (id → address), all voters: a snapshot at index 1,
    /// term 1, holding their conf state and the group state. Every founding node bootstraps the
    /// same way; a node added later instead receives the leader's snapshot.
    pub fn bootstrap(&mut self, members: &[(u64, String)]) -> Result<(), DriverError> {
        self.bootstrap_in_term(members, 1)
    }

    /// [`Self::bootstrap`] with the hard state in `term` (at least 1), so that the group's
    /// first election is for a later term: for a node whose WAL continues from epoch `term`.
    pub fn bootstrap_in_term(
        &mut self,
        members: &[(u64, String)],
        term: u64,
    ) -> Result<(), DriverError> {
        if !self.is_pristine()? {
            return Err(storage("bootstrap of a log that is not empty"));
        }
        let mut state = GroupState::default();
        for (id, addr) in members {
            state.add_member(*id, addr.clone());
        }
        let voters: Vec<u64> = members.iter().map(|(id, _)| *id).collect();
        let mut snapshot = Snapshot {
            data: codec::encode(&state).map_err(storage)?,
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = 1;
        metadata.term = 1;
        metadata.set_conf_state(ConfState::from((voters, Vec::new())));
        let hard_state = HardState {
            term: term.max(1),
            commit: 1,
            ..HardState::default()
        };
        self.persist(&snapshot, &[], Some(&hard_state), true)?;
        self.save_applied(1, &state)
    }

    /// The applied index and group state last saved (where the driver resumes).
    pub fn applied(&self) -> (u64, GroupState) {
        (self.applied, self.state.clone())
    }
}

impl Storage for RocksLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// The group state as of the last saved applied index, with its term and conf state.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.applied < request_index {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot {
            data: codec::encode(&self.state)
                .map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(e))))?,
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.applied;
        metadata.term = self.mem.term(self.applied)?;
        metadata.set_conf_state(self.mem.initial_state()?.conf_state);
        Ok(snapshot)
    }
}

impl GroupLog for RocksLog {
    fn persist(
        &mut self,
        snapshot: &Snapshot,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), DriverError> {
        let log = self.cf(CF_LOG)?;
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        if !snapshot.is_empty() {
            let index = snapshot.get_metadata().index;
            batch.delete_range_cf(log, 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
            batch.delete_cf(log, u64::MAX.to_be_bytes());
            batch.put_cf(meta, KEY_SNAPSHOT, snapshot.encode_to_vec());
            batch.put_cf(
                meta,
                KEY_CONF_STATE,
                snapshot.get_metadata().get_conf_state().encode_to_vec(),
            );
            let state: GroupState = codec::decode(snapshot.get_data()).map_err(storage)?;
            batch.put_cf(
                meta,
                KEY_APPLIED,
                codec::encode(&(index, &state)).map_err(storage)?,
            );
        }
        if let Some(first) = entries.first() {
            // Entries from `first` on replace whatever the log held there.
            batch.delete_range_cf(log, first.index.to_be_bytes(), u64::MAX.to_be_bytes());
            batch.delete_cf(log, u64::MAX.to_be_bytes());
            for entry in entries {
                batch.put_cf(log, entry.index.to_be_bytes(), entry.encode_to_vec());
            }
        }
        if let Some(hard_state) = hard_state {
            batch.put_cf(meta, KEY_HARD_STATE, hard_state.encode_to_vec());
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(storage)?;
        if !snapshot.is_empty() {
            self.mem.wl().apply_snapshot(snapshot.clone())?;
            self.applied = snapshot.get_metadata().index;
            self.state = codec::decode(snapshot.get_data()).map_err(storage)?;
        }
        self.mem.wl().append(entries)?;
        if let Some(hard_state) = hard_state {
            self.mem.wl().set_hardstate(hard_state.clone());
        }
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), DriverError> {
        let mut core = self.mem.wl();
        core.mut_hard_state().set_commit(commit);
        let bytes = core.hard_state().encode_to_vec();
        drop(core);
        self.db
            .put_cf(self.cf(CF_META)?, KEY_HARD_STATE, bytes)
            .map_err(storage)
    }

    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), DriverError> {
        let bytes = conf_state.encode_to_vec();
        self.db
            .put_cf(self.cf(CF_META)?, KEY_CONF_STATE, bytes)
            .map_err(storage)?;
        self.mem.wl().set_conf_state(conf_state);
        Ok(())
    }

    fn save_applied(&mut self, applied: u64, state: &GroupState) -> Result<(), DriverError> {
        if applied == self.applied {
            return Ok(());
        }
        self.db
            .put_cf(
                self.cf(CF_META)?,
                KEY_APPLIED,
                codec::encode(&(applied, state)).map_err(storage)?,
            )
            .map_err(storage)?;
        self.applied = applied;
        self.state = state.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use raft::StateRole;
    use raft::eraftpb::Message;

    use super::*;
    use crate::driver::{Driver, Ticks};

    const TICKS: Ticks = Ticks {
        election: 10,
        heartbeat: 2,
    };

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec(),
            ..Entry::default()
        }
    }

    #[test]
    fn persisted_entries_and_hard_state_survive_reopen_and_conflicts_are_replaced()
    -> Result<(), DriverError> {
        let dir = tempfile::tempdir().map_err(storage)?;
        {
            let mut log = RocksLog::open(dir.path())?;
            log.bootstrap(&[(1, "a".into()), (2, "b".into())])?;
            let entries: Vec<Entry> = (2..=5).map(|i| entry(i, 1, b"x")).collect();
            log.persist(&Snapshot::default(), &entries, None, true)?;
            // A new leader overwrote 4 and 5 at term 2.
            let hard_state = HardState {
                term: 2,
                vote: 2,
                commit: 3,
            };
            let replaced = [entry(4, 2, b"y")];
            log.persist(&Snapshot::default(), &replaced, Some(&hard_state), true)?;
        }
        let log = RocksLog::open(dir.path())?;
        assert_eq!(log.first_index().map_err(storage)?, 2);
        assert_eq!(log.last_index().map_err(storage)?, 4);
        assert_eq!(log.term(4).map_err(storage)?, 2);
        assert_eq!(log.term(1).map_err(storage)?, 1, "the bootstrap snapshot");
        let state = log.initial_state().map_err(storage)?;
        assert_eq!((state.hard_state.term, state.hard_state.vote), (2, 2));
        assert_eq!(state.conf_state.voters, vec![1, 2]);
        let (applied, group) = log.applied();
        assert_eq!(applied, 1);
        assert_eq!(group.members.len(), 2);
        Ok(())
    }

    /// Two founding nodes on RocksDB elect a leader; a third joins from the leader's snapshot
    /// and learns the founding members; after a restart every node resumes where it was.
    #[test]
    fn a_joiner_learns_the_founders_from_a_snapshot_and_restarts_resume() -> Result<(), DriverError>
    {
        let dir = tempfile::tempdir().map_err(storage)?;
        let founders = [(1, "a".to_owned()), (2, "b".to_owned())];
        let open = |id: u64, bootstrap: bool| -> Result<Driver<RocksLog>, DriverError> {
            let mut log = RocksLog::open(&dir.path().join(id.to_string()))?;
            if bootstrap && log.is_pristine()? {
                log.bootstrap(&founders)?;
            }
            let (applied, state) = log.applied();
            Driver::new(id, log, applied, state, TICKS)
        };
        let mut nodes = vec![open(1, true)?, open(2, true)?, open(3, false)?];
        let run = |nodes: &mut Vec<Driver<RocksLog>>,
                   ticks: usize,
                   done: &dyn Fn(&[Driver<RocksLog>]) -> bool|
         -> Result<bool, DriverError> {
            for _ in 0..ticks {
                if done(nodes) {
                    return Ok(true);
                }
                let mut queue: Vec<Message> = Vec::new();
                for node in nodes.iter_mut() {
                    node.tick();
                    node.on_ready(&mut |m| queue.extend(m))?;
                }
                while !queue.is_empty() {
                    for message in std::mem::take(&mut queue) {
                        if let Some(node) = nodes.iter_mut().find(|n| n.id() == message.to) {
                            node.step(message)?;
                        }
                    }
                    for node in nodes.iter_mut() {
                        node.on_ready(&mut |m| queue.extend(m))?;
                    }
                }
            }
            Ok(done(nodes))
        };
        let leader_of = |nodes: &[Driver<RocksLog>]| {
            nodes
                .iter()
                .find(|n| n.role().0 == StateRole::Leader && n.state().leader.is_some())
                .map(Driver::id)
        };
        assert!(run(&mut nodes, 300, &|n| leader_of(n).is_some())?);
        let leader = leader_of(&nodes).unwrap_or(0);
        if let Some(node) = nodes.iter_mut().find(|n| n.id() == leader) {
            node.propose_add(3, "c", false)?;
        }
        assert!(run(&mut nodes, 300, &|n| {
            n.iter().all(|node| node.state().members.len() == 3)
                && n.iter().all(|node| node.applied() == n[0].applied())
        })?);
        assert_eq!(
            nodes[2].state().members.get(&1).map(String::as_str),
            Some("a"),
            "the joiner learnt a founder from the snapshot"
        );
        let before: Vec<(u64, GroupState)> = nodes
            .iter()
            .map(|n| (n.applied(), n.state().clone()))
            .collect();
        drop(nodes);
        let nodes = [open(1, true)?, open(2, true)?, open(3, false)?];
        for (node, (applied, state)) in nodes.iter().zip(before) {
            assert_eq!(node.applied(), applied, "node {}", node.id());
            assert_eq!(node.state(), &state, "node {}", node.id());
        }
        Ok(())
    }
}
