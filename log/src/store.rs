//! [`LogStore`]: every partition log under `<data_dir>/logs`, keyed by topic and partition.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::config::LogConfig;
use super::error::{LogError, io_err};
use super::partition::PartitionLog;
use super::segment::sync_dir;

/// Name of the directory under the data dir that holds the partition logs.
pub const LOGS_DIR: &str = "logs";
/// Lock file that keeps a second process out of the logs directory.
const LOCK_FILE: &str = ".lock";
/// Suffix of a partition directory being deleted.
const DELETE_SUFFIX: &str = ".delete";
/// Kafka's longest topic name.
const MAX_TOPIC_LEN: usize = 249;

/// Partition logs by topic, then partition index.
type Logs = BTreeMap<String, BTreeMap<i32, Arc<PartitionLog>>>;

/// Partitions whose log could not be opened, with why.
type Offline = BTreeMap<(String, i32), String>;

/// The partition logs of this broker: `<data_dir>/logs/<topic>-<partition>/`.
///
/// Opening recovers every partition directory found; one that fails to open (damaged
/// acknowledged data, an I/O error) is logged as an ERROR and stays offline — its appends and
/// reads fail with [`LogError::Offline`] until an operator repairs or deletes it — while every
/// other partition is served. Holds an exclusive lock on the logs directory for its lifetime.
/// Methods do blocking file I/O (see [`PartitionLog`]).
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
    default_config: LogConfig,
    logs: RwLock<Logs>,
    offline: RwLock<Offline>,
    /// Held for the lock; released when the store is dropped.
    _lock: File,
}

/// Checks that `topic` is a legal Kafka topic name, which also makes it a safe directory name.
fn check_topic(topic: &str) -> Result<(), LogError> {
    let legal = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if legal {
        Ok(())
    } else {
        Err(LogError::InvalidTopic {
            name: topic.to_owned(),
        })
    }
}

/// Splits a partition directory name `<topic>-<partition>`.
fn parse_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    (partition >= 0 && check_topic(topic).is_ok()).then(|| (topic.to_owned(), partition))
}

impl LogStore {
    /// Opens `<data_dir>/logs`, creating it if needed, finishes deletions a crash interrupted,
    /// and opens (recovering) every partition log in it with `default_config`. Apply per-topic
    /// overrides afterwards with [`PartitionLog::set_config`].
    pub fn open(data_dir: &Path, default_config: LogConfig) -> Result<Self, LogError> {
        let root = data_dir.join(LOGS_DIR);
        fs::create_dir_all(&root).map_err(io_err("create directory", &root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
        lock.try_lock().map_err(|err| match err {
            fs::TryLockError::WouldBlock => LogError::Locked {
                path: lock_path.clone(),
            },
            fs::TryLockError::Error(source) => io_err("lock", &lock_path)(source),
        })?;
        let mut logs = Logs::new();
        let mut offline = Offline::new();
        for entry in fs::read_dir(&root).map_err(io_err("list", &root))? {
            let entry = entry.map_err(io_err("list", &root))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(DELETE_SUFFIX) {
                fs::remove_dir_all(&path).map_err(io_err("delete", &path))?;
                continue;
            }
            let Some((topic, partition)) = parse_dir_name(&name) else {
                tracing::warn!(dir = %path.display(), "ignoring a directory that is not a partition log");
                continue;
            };
            match PartitionLog::open(&path, default_config.clone()) {
                Ok(log) => {
                    logs.entry(topic)
                        .or_default()
                        .insert(partition, Arc::new(log));
                }
                Err(error) => {
                    tracing::error!(
                        dir = %path.display(),
                        %error,
                        "partition log cannot be opened; it stays offline"
                    );
                    offline.insert((topic, partition), error.to_string());
                }
            }
        }
        Ok(Self {
            root,
            default_config,
            logs: RwLock::new(logs),
            offline: RwLock::new(offline),
            _lock: lock,
        })
    }

    /// The `logs` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration new logs get unless told otherwise.
    pub fn default_config(&self) -> &LogConfig {
        &self.default_config
    }

    /// The log of `topic`/`partition`, if it exists.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        self.logs.read().get(topic)?.get(&partition).cloned()
    }

    /// The log of `topic`/`partition`, created empty with `config` if it does not exist. An
    /// existing log keeps its configuration.
    pub fn get_or_create(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<PartitionLog>, LogError> {
        check_topic(topic)?;
        if partition < 0 {
            return Err(LogError::InvalidPartition { partition });
        }
        if let Some(log) = self.get(topic, partition) {
            return Ok(log);
        }
        if self
            .offline
            .read()
            .contains_key(&(topic.to_owned(), partition))
        {
            return Err(LogError::Offline {
                path: self.partition_dir(topic, partition),
            });
        }
        let mut logs = self.logs.write();
        if let Some(log) = logs.get(topic).and_then(|p| p.get(&partition)) {
            return Ok(Arc::clone(log));
        }
        let dir = self.partition_dir(topic, partition);
        let log = Arc::new(PartitionLog::open(&dir, config)?);
        sync_dir(&self.root)?;
        logs.entry(topic.to_owned())
            .or_default()
            .insert(partition, Arc::clone(&log));
        Ok(log)
    }

    /// Every log, with its topic and partition.
    pub fn logs(&self) -> Vec<(String, i32, Arc<PartitionLog>)> {
        let logs = self.logs.read();
        let mut all = Vec::new();
        for (topic, partitions) in logs.iter() {
            for (partition, log) in partitions {
                all.push((topic.clone(), *partition, Arc::clone(log)));
            }
        }
        all
    }

    /// Partitions whose log could not be opened, with why.
    pub fn offline(&self) -> Vec<(String, i32, String)> {
        self.offline
            .read()
            .iter()
            .map(|((topic, partition), why)| (topic.clone(), *partition, why.clone()))
            .collect()
    }

    /// Deletes the log of `topic`/`partition` and its directory. Returns whether it existed.
    /// Appends through handles still held fail with [`LogError::Closed`].
    pub fn delete_partition(&self, topic: &str, partition: i32) -> Result<bool, LogError> {
        if self
            .offline
            .write()
            .remove(&(topic.to_owned(), partition))
            .is_some()
        {
            self.remove_dir(&self.partition_dir(topic, partition))?;
            return Ok(true);
        }
        let removed = {
            let mut logs = self.logs.write();
            let removed = logs.get_mut(topic).and_then(|p| p.remove(&partition));
            if logs.get(topic).is_some_and(BTreeMap::is_empty) {
                logs.remove(topic);
            }
            removed
        };
        let Some(log) = removed else {
            return Ok(false);
        };
        log.abandon();
        self.remove_dir(log.dir())?;
        Ok(true)
    }

    /// Deletes every partition log of `topic` (on topic deletion) and returns the partitions
    /// deleted.
    pub fn delete_topic(&self, topic: &str) -> Result<Vec<i32>, LogError> {
        let removed = self.logs.write().remove(topic).unwrap_or_default();
        let damaged: Vec<i32> = {
            let mut offline = self.offline.write();
            let partitions: Vec<i32> = offline
                .keys()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            for partition in &partitions {
                offline.remove(&(topic.to_owned(), *partition));
            }
            partitions
        };
        let mut deleted = Vec::with_capacity(removed.len() + damaged.len());
        for partition in damaged {
            self.remove_dir(&self.partition_dir(topic, partition))?;
            deleted.push(partition);
        }
        for (partition, log) in removed {
            log.abandon();
            self.remove_dir(log.dir())?;
            deleted.push(partition);
        }
        Ok(deleted)
    }

    /// Closes every log cleanly (see [`PartitionLog::close`]). Tries them all and returns the
    /// first error.
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        let mut first_error = None;
        for log in self.logs.read().values().flat_map(BTreeMap::values) {
            if let Err(err) = log.close(now_ms) {
                tracing::warn!(dir = %log.dir().display(), error = %err, "cannot close log cleanly");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.root.join(format!("{topic}-{partition}"))
    }

    /// Renames the directory out of the way first, so a crash part-way through leaves a
    /// `.delete` directory (removed on the next open), never a half-deleted log.
    fn remove_dir(&self, dir: &Path) -> Result<(), LogError> {
        let mut doomed = dir.as_os_str().to_owned();
        doomed.push(DELETE_SUFFIX);
        let doomed = PathBuf::from(doomed);
        if doomed.exists() {
            fs::remove_dir_all(&doomed).map_err(io_err("delete", &doomed))?;
        }
        fs::rename(dir, &doomed).map_err(io_err("rename", dir))?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&doomed).map_err(io_err("delete", &doomed))
    }
}
