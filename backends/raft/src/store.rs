//! The RocksDB store: openraft's [`RaftLogStorage`] ([`LogStore`]) and [`RaftStateMachine`]
//! ([`StateMachine`]) over one database with three column families:
//!
//! | column family | key | value |
//! |---|---|---|
//! | `log` | entry index, 8 bytes big-endian | the codec-encoded [`Entry`] |
//! | `meta` | `vote`, `committed`, `purged` | the codec-encoded [`Vote`] / [`LogId`] |
//! | `sm` | `snapshot` | the codec-encoded snapshot meta and [`StateView`] bytes |
//!
//! The state machine itself is the in-memory [`AppliedState`]; it is persisted only as
//! snapshots. On open it restarts from the last snapshot and openraft re-applies the log from
//! there up to the persisted commit index.
//!
//! ### To ensure correctness:
//! - A vote is written with `sync` before `save_vote` returns.
//! - Appended entries are durable when the flush callback runs: `append` writes them and
//!   fsyncs the RocksDB WAL before calling it. The WAL is flushed by hand, so until then the
//!   entries sit in RocksDB's buffer, the bytes a power cut ([`Db::power_cut`]) loses.
//!   openraft 0.9 waits for that callback before it takes its next command, so appends never
//!   overlap; group commit happens one level up,
//!   where the backend puts every proposal waiting at that moment into one entry
//!   ([`Proposals`](crate::types::Proposals)).
//! - Purge records the purged log id and deletes the entries in one atomic batch.

// openraft's storage traits fix `StorageError` (224 bytes) as the error type; the helpers
// return it too rather than converting at every call.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::fs;
use std::io::{self, Cursor};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{
    ColumnFamilyDescriptor, DB, DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_backend_api::{AppliedState, PowerCut, StateView, codec, telemetry};
use tokio::sync::watch;

use crate::types::{Applied, Node, Proposals, TypeConfig};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const CF_SM: &str = "sm";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

type StoreResult<T> = Result<T, StorageError<u64>>;

fn read_err(e: impl fmt::Display) -> StorageError<u64> {
    StorageIOError::read(&io::Error::other(e.to_string())).into()
}

fn write_err(e: impl fmt::Display) -> StorageError<u64> {
    StorageIOError::write(&io::Error::other(e.to_string())).into()
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    codec::decode(bytes).map_err(read_err)
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    codec::encode(value).map_err(write_err)
}

/// The open database, shared by the log store, its readers and the state machine.
///
/// A power cut ([`Db::power_cut`]) closes it under all of them: every later call fails, as
/// on a machine whose disk is gone, and the node is reopened from its directory.
#[derive(Clone)]
pub(crate) struct Db {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// `None` once the power was cut.
    db: RwLock<Option<DB>>,
    /// Set when a power cut begins: an operation still running then fails, and a sync it
    /// was waiting for does not count as done.
    cutting: AtomicBool,
    synced: Mutex<SyncedWal>,
}

/// How far the live write-ahead-log file is known to be on disk.
#[derive(Debug, Default)]
struct SyncedWal {
    /// The newest `*.log` file when last looked for.
    path: PathBuf,
    /// Its length after the last sync that succeeded.
    len: u64,
    /// Syncs since the directory was last listed.
    syncs: u32,
}

/// Every this many syncs the directory is listed again in case RocksDB moved to a new log
/// file (after a memtable flush); in between, one `stat` per sync keeps [`SyncedWal`] current.
const RELIST_EVERY: u32 = 256;

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("dir", &self.shared.dir).finish()
    }
}

/// How [`Db::open_blocking`] opens a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and write; create the database if it is missing.
    Create,
    /// Read and write an existing database; a missing one is an error.
    Existing,
    /// Read an existing database; write nothing.
    ReadOnly,
}

/// Whether a write returns only once it is on disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fsync {
    Now,
    Later,
}

fn cf<'db>(db: &'db DB, name: &str) -> StoreResult<&'db rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| read_err(format!("column family {name} is missing")))
}

impl Db {
    /// Open (or create) the database in `dir`, waiting up to `lock_wait` for a handle that is
    /// still closing on it (`switchyard_rocksdb::open_retrying`).
    pub(crate) async fn open(dir: &Path, lock_wait: Duration) -> Result<Self, String> {
        let dir = dir.to_owned();
        let db = switchyard_rocksdb::open_retrying(lock_wait, move || {
            Self::open_now(&dir, Access::Create)
        })
        .await
        .map_err(rocksdb::Error::into_string)?;
        // Everything recovered is on disk.
        db.mark_synced().map_err(|e| e.to_string())?;
        Ok(db)
    }

    /// [`Self::open`] for a caller that may block (a stopped node's directory, read or
    /// initialised offline), with the same retries, on this thread; `access` says whether a
    /// missing database is created, and whether the database is opened read-only.
    pub(crate) fn open_blocking(
        dir: &Path,
        access: Access,
        lock_wait: Duration,
    ) -> Result<Self, String> {
        let deadline = std::time::Instant::now() + lock_wait;
        let mut pause = Duration::from_millis(5);
        let db = loop {
            match Self::open_now(dir, access) {
                Err(e)
                    if switchyard_rocksdb::is_lock_held(&e)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                opened => break opened.map_err(rocksdb::Error::into_string)?,
            }
        };
        if access != Access::ReadOnly {
            db.mark_synced().map_err(|e| e.to_string())?;
        }
        Ok(db)
    }

    /// Whether `dir` holds a RocksDB database (its `CURRENT` file), without opening it.
    pub(crate) fn exists(dir: &Path) -> io::Result<bool> {
        dir.join("CURRENT").try_exists()
    }

    /// RocksDB's write-ahead log is flushed by hand: a write sits in RocksDB's buffer until
    /// the next synced write or [`Self::sync_wal`] hands it to the file and fsyncs it, so the
    /// buffer is exactly what a power cut can lose. Closing writes the buffer out without
    /// flushing memtables (recovery replays the log), and recovery stops at a torn or
    /// corrupt tail ("point in time").
    ///
    /// A read-only handle ([`Access::ReadOnly`]) replays the log into memory and writes
    /// nothing, not even on close; it takes no lock, so it opens while another handle is
    /// open. Close it by dropping it ([`Self::close`] would sync a log it cannot write).
    fn open_now(dir: &Path, access: Access) -> Result<Self, rocksdb::Error> {
        let mut base = Options::default();
        base.create_if_missing(access == Access::Create);
        base.create_missing_column_families(true);
        base.set_manual_wal_flush(true);
        base.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        let options = base.get_options_from_string("avoid_flush_during_shutdown=true")?;
        let families = [CF_LOG, CF_META, CF_SM]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = match access {
            Access::ReadOnly => DB::open_cf_descriptors_read_only(&options, dir, families, false)?,
            Access::Create | Access::Existing => DB::open_cf_descriptors(&options, dir, families)?,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db: RwLock::new(Some(db)),
                cutting: AtomicBool::new(false),
                synced: Mutex::new(SyncedWal::default()),
            }),
        })
    }

    /// Run `f` on the database, unless the power was cut; if the cut began while `f` ran,
    /// its result is lost with the power.
    fn with<T>(&self, f: impl FnOnce(&DB) -> StoreResult<T>) -> StoreResult<T> {
        let db = self
            .shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let done = f(db.as_ref().ok_or_else(|| self.gone())?)?;
        if self.shared.cutting.load(Ordering::SeqCst) {
            return Err(power_lost());
        }
        Ok(done)
    }

    /// The error for a database that is no longer open.
    fn gone(&self) -> StorageError<u64> {
        if self.shared.cutting.load(Ordering::SeqCst) {
            power_lost()
        } else {
            write_err("the database is closed")
        }
    }

    /// Close the database now (a graceful shutdown), syncing RocksDB's buffered log writes
    /// first. Later calls fail; closing again does nothing. Without it the database closes
    /// when the last handle on it goes.
    pub(crate) fn close(&self) -> Result<(), String> {
        let Some(db) = self.take() else {
            return Ok(());
        };
        let synced = db.flush_wal(true);
        drop(db);
        synced.map_err(|e| format!("syncing the WAL on close: {e}"))
    }

    /// Take the database out once every running call finished; `None` if it is gone already.
    fn take(&self) -> Option<DB> {
        self.shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Record that the live log file is on disk up to its current length (after a sync).
    /// Runs under the read lock, so a power cut cannot close the database meanwhile.
    fn mark_synced(&self) -> StoreResult<()> {
        if self.shared.cutting.load(Ordering::SeqCst) {
            return Err(power_lost());
        }
        let mut synced = self
            .shared
            .synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        synced.syncs += 1;
        if synced.syncs >= RELIST_EVERY || synced.path.as_os_str().is_empty() {
            synced.syncs = 0;
            synced.path = newest_wal(&self.shared.dir).map_err(write_err)?;
        }
        synced.len = match fs::metadata(&synced.path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                synced.path = newest_wal(&self.shared.dir).map_err(write_err)?;
                fs::metadata(&synced.path).map_err(write_err)?.len()
            }
            Err(e) => return Err(write_err(e)),
        };
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, family: &str, key: &[u8]) -> StoreResult<Option<T>> {
        let bytes = self.with(|db| db.get_cf(cf(db, family)?, key).map_err(read_err))?;
        bytes.map(|bytes| decode(&bytes)).transpose()
    }

    /// Write the batch `build` fills, as one atomic write.
    fn write(
        &self,
        fsync: Fsync,
        build: impl FnOnce(&DB, &mut WriteBatch) -> StoreResult<()>,
    ) -> StoreResult<()> {
        self.with(|db| {
            let mut batch = WriteBatch::default();
            build(db, &mut batch)?;
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(fsync == Fsync::Now);
            db.write_opt(batch, &options).map_err(write_err)?;
            match fsync {
                Fsync::Now => self.mark_synced(),
                Fsync::Later => Ok(()),
            }
        })
    }

    fn put_sync<T: Serialize>(&self, family: &str, key: &[u8], value: &T) -> StoreResult<()> {
        let value = encode(value)?;
        self.write(Fsync::Now, |db, batch| {
            batch.put_cf(cf(db, family)?, key, value);
            Ok(())
        })
    }

    /// Hand RocksDB's buffered log writes to the file and fsync it.
    fn sync_wal(&self) -> StoreResult<()> {
        self.with(|db| {
            db.flush_wal(true).map_err(write_err)?;
            self.mark_synced()
        })
    }

    /// Whether nothing was ever written: no vote, no entry, no snapshot.
    pub(crate) fn is_pristine(&self) -> StoreResult<bool> {
        let vote: Option<Vote<u64>> = self.get(CF_META, KEY_VOTE)?;
        let purged: Option<LogId<u64>> = self.get(CF_META, KEY_PURGED)?;
        let written = self.with(|db| {
            let snapshot = db.get_cf(cf(db, CF_SM)?, KEY_SNAPSHOT).map_err(read_err)?;
            let first = db
                .iterator_cf(cf(db, CF_LOG)?, IteratorMode::Start)
                .next()
                .transpose()
                .map_err(read_err)?;
            Ok(snapshot.is_some() || first.is_some())
        })?;
        Ok(vote.is_none() && purged.is_none() && !written)
    }

    /// Start a store that was never written ([`Self::is_pristine`]) from `snapshot`, with its
    /// log purged right behind it and committed up to it (where a node is after openraft
    /// compacted its log), and `vote` as its vote: the snapshot, `purged`, `committed` and
    /// the vote in one synced batch, no entry. The snapshot's meta must name its last log id.
    pub(crate) fn start_from_snapshot(
        &self,
        meta: &SnapshotMeta<u64, Node>,
        data: &[u8],
        vote: &Vote<u64>,
    ) -> StoreResult<()> {
        let last = meta
            .last_log_id
            .ok_or_else(|| write_err("a starting snapshot needs a last log id"))?;
        let snapshot = encode(&(meta, data))?;
        let purged = encode(&last)?;
        let committed = encode(&Some(last))?;
        let vote = encode(vote)?;
        self.write(Fsync::Now, |db, batch| {
            batch.put_cf(cf(db, CF_SM)?, KEY_SNAPSHOT, snapshot);
            let meta = cf(db, CF_META)?;
            batch.put_cf(meta, KEY_PURGED, purged);
            batch.put_cf(meta, KEY_COMMITTED, committed);
            batch.put_cf(meta, KEY_VOTE, vote);
            Ok(())
        })
    }

    /// Write `entries` into the log and `committed` as the commit index, synced: a log shaped
    /// by hand, for tests of what recovery applies.
    #[cfg(test)]
    pub(crate) fn write_log(
        &self,
        entries: &[Entry<TypeConfig>],
        committed: Option<LogId<u64>>,
    ) -> StoreResult<()> {
        let committed = encode(&committed)?;
        self.write(Fsync::Now, |db, batch| {
            let log = cf(db, CF_LOG)?;
            for entry in entries {
                batch.put_cf(log, log_key(entry.log_id.index), encode(entry)?);
            }
            batch.put_cf(cf(db, CF_META)?, KEY_COMMITTED, committed);
            Ok(())
        })
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        self.with(|db| {
            let mut out = Vec::new();
            let iter = db.iterator_cf(
                cf(db, CF_LOG)?,
                IteratorMode::From(&log_key(start), Direction::Forward),
            );
            for item in iter {
                let (key, value) = item.map_err(read_err)?;
                let index = u64::from_be_bytes(
                    key.as_ref()
                        .try_into()
                        .map_err(|_| read_err("log key is not 8 bytes"))?,
                );
                if !range.contains(&index) {
                    break;
                }
                out.push(decode(&value)?);
            }
            Ok(out)
        })
    }

    fn last_entry(&self) -> StoreResult<Option<Entry<TypeConfig>>> {
        self.with(
            |db| match db.iterator_cf(cf(db, CF_LOG)?, IteratorMode::End).next() {
                Some(item) => {
                    let (_, value) = item.map_err(read_err)?;
                    decode(&value).map(Some)
                }
                None => Ok(None),
            },
        )
    }

    /// Cut the power: close the database at once and keep, of the log bytes it had not
    /// synced, the first `keep` (possibly tearing a record); the rest are lost.
    ///
    /// Unsynced are the bytes of the live log file past its length at the last sync that
    /// succeeded (a sync still running when the cut begins fails and counts as not done),
    /// including RocksDB's log buffer (see [`Self::open_now`]), which closing writes out.
    /// Older log files count as on disk; so does a newer one RocksDB moved to since the
    /// directory was last listed ([`RELIST_EVERY`]).
    pub(crate) fn power_cut(&self, keep: u64) -> io::Result<PowerCut> {
        self.shared.cutting.store(true, Ordering::SeqCst);
        let db = self
            .take()
            .ok_or_else(|| io::Error::other("the power was already cut"))?;
        drop(db);
        let synced = self
            .shared
            .synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let len = fs::metadata(&synced.path)?.len();
        let on_disk = synced.len.min(len);
        let unsynced = len - on_disk;
        let kept = unsynced.min(keep);
        if kept < unsynced {
            fs::OpenOptions::new()
                .write(true)
                .open(&synced.path)?
                .set_len(on_disk + kept)?;
        }
        Ok(PowerCut {
            unsynced_bytes: unsynced,
            kept_bytes: kept,
        })
    }
}

fn power_lost() -> StorageError<u64> {
    write_err("the node's power was cut")
}

/// The newest write-ahead-log file in `dir` (RocksDB names them `NNNNNN.log`, numbered in
/// order and zero-padded).
fn newest_wal(dir: &Path) -> io::Result<PathBuf> {
    let mut newest = None;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "log") && newest.as_ref() < Some(&path) {
            newest = Some(path);
        }
    }
    newest.ok_or_else(|| io::Error::other(format!("no log file in {}", dir.display())))
}

/// openraft's log storage on RocksDB.
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    db: Db,
}

impl LogStore {
    /// The log store of `db`.
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        self.db.entries(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<u64>> = self.db.get(CF_META, KEY_PURGED)?;
        let last_log_id = match self.db.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StoreResult<()> {
        self.db.put_sync(CF_META, KEY_VOTE, vote)
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<u64>>> {
        self.db.get(CF_META, KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StoreResult<()> {
        // Not synced: a lost commit index only delays re-applying until the next commit.
        let committed = encode(&committed)?;
        self.db.write(Fsync::Later, |db, batch| {
            batch.put_cf(cf(db, CF_META)?, KEY_COMMITTED, committed);
            Ok(())
        })
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<u64>>> {
        Ok(self
            .db
            .get::<Option<LogId<u64>>>(CF_META, KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.db.write(Fsync::Later, |db, batch| {
            let log = cf(db, CF_LOG)?;
            for entry in entries {
                batch.put_cf(log, log_key(entry.log_id.index), encode(&entry)?);
            }
            Ok(())
        })?;
        // openraft 0.9 awaits this callback before it runs its next command, so syncing here
        // costs it nothing more, and saves a thread hop per write. A power cut can land
        // between the write and the sync; the entries are then lost, never acknowledged.
        let synced = self.db.sync_wal().map_err(io::Error::other);
        callback.log_io_completed(synced);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        self.db.write(Fsync::Now, |db, batch| {
            let log = cf(db, CF_LOG)?;
            batch.delete_range_cf(log, log_key(log_id.index), log_key(u64::MAX));
            batch.delete_cf(log, log_key(u64::MAX));
            Ok(())
        })
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StoreResult<()> {
        let purged = encode(&log_id)?;
        self.db.write(Fsync::Now, |db, batch| {
            batch.put_cf(cf(db, CF_META)?, KEY_PURGED, purged);
            batch.delete_range_cf(
                cf(db, CF_LOG)?,
                log_key(0),
                log_key(log_id.index.saturating_add(1)),
            );
            Ok(())
        })
    }
}

/// A snapshot as stored: its meta and the [`StateView::to_bytes`] encoding.
type StoredSnapshot = (SnapshotMeta<u64, Node>, Vec<u8>);

/// openraft's state machine: [`AppliedState`] in memory, persisted as snapshots.
#[derive(Debug)]
pub(crate) struct StateMachine {
    db: Db,
    applied: Arc<AppliedState>,
    raft_applied: Arc<watch::Sender<u64>>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Node>,
    snapshots_built: u64,
}

impl StateMachine {
    /// Restart from the last snapshot in `db`, or from an empty state.
    pub(crate) fn open(db: Db) -> StoreResult<Self> {
        let stored: Option<StoredSnapshot> = db.get(CF_SM, KEY_SNAPSHOT)?;
        let (view, last_applied, membership) = match stored {
            Some((meta, data)) => (
                StateView::from_bytes(&data).map_err(read_err)?,
                meta.last_log_id,
                meta.last_membership,
            ),
            None => (StateView::default(), None, StoredMembership::default()),
        };
        Ok(Self {
            db,
            applied: Arc::new(AppliedState::new(view)),
            raft_applied: Arc::new(watch::Sender::new(last_applied.map_or(0, |l| l.index))),
            last_applied,
            membership,
            snapshots_built: 0,
        })
    }

    /// The applied state this machine publishes into.
    pub(crate) fn applied(&self) -> Arc<AppliedState> {
        Arc::clone(&self.applied)
    }

    /// The index of the last applied *raft* log entry, published after the entry's proposals
    /// are in [`applied`](Self::applied). Raft positions differ from metadata positions: one
    /// entry carries any number of proposals, and blank and membership entries carry none.
    pub(crate) fn raft_applied(&self) -> Arc<watch::Sender<u64>> {
        Arc::clone(&self.raft_applied)
    }
}

/// Builds a snapshot of the view captured when it was created.
#[derive(Debug)]
pub(crate) struct SnapshotBuilder {
    db: Db,
    view: Arc<StateView>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Node>,
    id: String,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let started = std::time::Instant::now();
        let data = self.view.to_bytes().map_err(write_err)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.id.clone(),
        };
        self.db
            .put_sync(CF_SM, KEY_SNAPSHOT, &(meta.clone(), data.clone()))?;
        metrics::histogram!(telemetry::SNAPSHOT_DURATION).record(started.elapsed());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<u64>>, StoredMembership<u64, Node>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let reply = match &entry.payload {
                EntryPayload::Normal(Proposals(commands)) => self.applied.apply_all(commands),
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(log_id), membership.clone());
                    Vec::new()
                }
            };
            self.last_applied = Some(log_id);
            self.raft_applied.send_replace(log_id.index);
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        let id = match self.last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id.term, log_id.index, self.snapshots_built
            ),
            None => format!("none-{}", self.snapshots_built),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            view: self.applied.view(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            id,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let view = StateView::from_bytes(&data).map_err(read_err)?;
        self.db
            .put_sync(CF_SM, KEY_SNAPSHOT, &(meta.clone(), data))?;
        self.applied.install(view);
        self.last_applied = meta.last_log_id;
        self.raft_applied
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> = self.db.get(CF_SM, KEY_SNAPSHOT)?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;

    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
        async fn build(&self) -> StoreResult<(TempDir, LogStore, StateMachine)> {
            let dir = TempDir::new().map_err(write_err)?;
            let db = Db::open(dir.path(), Duration::ZERO)
                .await
                .map_err(write_err)?;
            let log = LogStore::new(db.clone());
            let sm = StateMachine::open(db)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() -> StoreResult<()> {
        Suite::<TypeConfig, LogStore, StateMachine, RocksBuilder, TempDir>::test_all(RocksBuilder)
    }
}
