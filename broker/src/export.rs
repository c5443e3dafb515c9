//! `switchyard metadata export` and `import`: a node's metadata out of one backend into the
//! export file ([`MetadataExport`]), and from the file into a new node of any backend, in the
//! same data directory. The partition logs (`<data_dir>/logs`) are not touched: the node
//! restarts on the new backend and serves the same logs. The old backend's directory stays as
//! it was, so the switch is undone by starting the node on the old backend again.

use std::fmt;
use std::path::{Path, PathBuf};

use switchyard_backend_api::export::{MetadataExport, Source};
use switchyard_backend_api::{
    MetadataError, MetadataState, NodeIdentity, OpenContext, Registration, Storage, StoredState,
    available_backends, find_backend,
};

use crate::config::Config;
use crate::serve::{ServeError, choose_backend, lock_data_dir};
use crate::users::Target;

/// Why an export or import did not happen. Nothing was written then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwitchError {
    /// The backend could not be chosen.
    #[error(transparent)]
    Backend(#[from] ServeError),
    /// The backend keeps no metadata on disk.
    #[error(
        "the {backend} backend keeps no metadata on disk: there is nothing to export or import"
    )]
    NotDurable {
        /// Its name.
        backend: String,
    },
    /// Nothing to export there.
    #[error("{} holds no {backend} metadata (is --data-dir the node's data directory?)", dir.display())]
    NoMetadata {
        /// The backend's name.
        backend: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// The backend's directory is taken.
    #[error(
        "{} already holds {backend} metadata; importing would overwrite it (move it away first \
         to replace it)", dir.display()
    )]
    AlreadyHolds {
        /// The backend's name.
        backend: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// The data directory belongs to another cluster.
    #[error(
        "the file holds cluster {file}, but {} holds {backend} metadata of cluster {found}: \
         this data directory belongs to another cluster", dir.display()
    )]
    WrongCluster {
        /// The file's cluster id.
        file: String,
        /// The cluster id in the data directory.
        found: String,
        /// The backend whose metadata names it.
        backend: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// The backend failed to read or write its directory.
    #[error("{what} {}", dir.display())]
    Storage {
        /// What was being done.
        what: &'static str,
        /// The backend's directory.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: MetadataError,
    },
}

/// The backend the configuration names (or the default `serve` would run), its storage and
/// its directory under the data directory.
fn backend_of(config: &Config) -> Result<(String, Storage, PathBuf), SwitchError> {
    let available: Vec<&str> = available_backends().iter().map(|r| r.name).collect();
    let name = choose_backend(config.metadata_backend.as_deref(), &available)?;
    let registration = find_backend(&name).map_err(ServeError::UnknownBackend)?;
    let storage = registration
        .storage
        .ok_or_else(|| SwitchError::NotDurable {
            backend: name.clone(),
        })?;
    let dir = backend_dir(config, registration);
    Ok((name, storage, dir))
}

fn backend_dir(config: &Config, registration: &Registration) -> PathBuf {
    config.data_dir.join("metadata").join(registration.name)
}

fn holds(storage: &Storage, dir: &Path) -> Result<bool, SwitchError> {
    (storage.holds)(dir).map_err(|source| SwitchError::Storage {
        what: "could not look into",
        dir: dir.to_owned(),
        source,
    })
}

/// Read the stopped node's metadata of the configured backend from its data directory
/// (locked meanwhile: a running node's is refused).
pub fn export_offline(config: &Config) -> Result<MetadataExport, SwitchError> {
    let (backend, storage, dir) = backend_of(config)?;
    // Nothing to read in a directory that is not there; and nothing created there either.
    if !config.data_dir.is_dir() {
        return Err(SwitchError::NoMetadata { backend, dir });
    }
    let _lock = lock_data_dir(&config.data_dir)?;
    if !holds(&storage, &dir)? {
        return Err(SwitchError::NoMetadata { backend, dir });
    }
    let stored = (storage.read)(&dir).map_err(|source| SwitchError::Storage {
        what: "could not read the metadata in",
        dir: dir.clone(),
        source,
    })?;
    Ok(MetadataExport {
        backend,
        build: env!("CARGO_PKG_VERSION").to_owned(),
        source: Source::DataDirectory,
        epoch: stored.epoch,
        view: stored.view,
    })
}

/// FetchSnapshot version asked.
const FETCH_SNAPSHOT_VERSION: i16 = 1;
/// Bytes asked for per FetchSnapshot.
const CHUNK_BYTES: i32 = 1 << 20;
/// Times a live export starts over: at the metadata leader's broker, or because its export was
/// dropped on the broker meanwhile.
const LIVE_ATTEMPTS: usize = 5;

/// Why a live export did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveExportError {
    /// No listener answered.
    #[error("no Kafka listener answered at {addrs}: {last}")]
    Unreachable {
        /// The addresses tried.
        addrs: String,
        /// The last failure.
        last: String,
    },
    /// A broker refused.
    #[error("{addr} refused the export: {error:?}")]
    Refused {
        /// The broker asked.
        addr: String,
        /// The error it answered.
        error: kafka_protocol::error::ResponseError,
    },
    /// The leader is not among the brokers DescribeCluster lists.
    #[error("the metadata leader, node {0}, has no broker listed")]
    LeaderUnknown(i32),
    /// What arrived is not an export.
    #[error("the export received is damaged: {0}")]
    Damaged(#[from] switchyard_backend_api::export::ExportError),
    /// It started over too often.
    #[error(
        "gave up after starting over {LIVE_ATTEMPTS} times (the metadata leader moved, or the \
         broker dropped the export before it was fetched)"
    )]
    GaveUp,
}

/// Export the metadata of a running cluster through its Kafka listeners (FetchSnapshot): a
/// linearizable read where the backend offers one, otherwise the metadata leader's state, as
/// the file says ([`MetadataExport::source`]).
pub async fn export_live(target: &Target) -> Result<MetadataExport, LiveExportError> {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::fetch_snapshot_request::{
        PartitionSnapshot, SnapshotId, TopicSnapshot,
    };
    use kafka_protocol::messages::{
        BrokerId as KBrokerId, DescribeClusterRequest, FetchSnapshotRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    let request = |id: (i64, i32), position: i64| {
        FetchSnapshotRequest::default()
            .with_replica_id(KBrokerId(-1))
            .with_max_bytes(CHUNK_BYTES)
            .with_topics(vec![
                TopicSnapshot::default()
                    .with_name(TopicName(StrBytes::from_static_str(
                        crate::kafka::METADATA_TOPIC,
                    )))
                    .with_partitions(vec![
                        PartitionSnapshot::default()
                            .with_partition(0)
                            .with_snapshot_id(
                                SnapshotId::default().with_end_offset(id.0).with_epoch(id.1),
                            )
                            .with_position(position),
                    ]),
            ])
    };
    let authenticated = target.credentials.is_some();
    let mut addrs: Vec<String> = target.bootstrap.clone();
    let mut last = String::from("no address given");
    let mut attempts = 0;
    while let Some(addr) = addrs.first().cloned() {
        let mut peer = target.client(&addr, "switchyard-metadata-export");
        let mut id = (-1, -1);
        let mut file = Vec::new();
        let fetched = loop {
            let position = i64::try_from(file.len()).unwrap_or(i64::MAX);
            let response = match peer
                .call(&request(id, position), FETCH_SNAPSHOT_VERSION)
                .await
            {
                Ok(response) => response,
                Err(e) => break Err(e.explained(authenticated)),
            };
            let Some(partition) = response.topics.first().and_then(|t| t.partitions.first()) else {
                let error = ResponseError::try_from_code(response.error_code)
                    .unwrap_or(ResponseError::UnknownServerError);
                return Err(LiveExportError::Refused { addr, error });
            };
            match ResponseError::try_from_code(partition.error_code) {
                None => {}
                Some(ResponseError::NotLeaderOrFollower | ResponseError::SnapshotNotFound)
                    if attempts >= LIVE_ATTEMPTS =>
                {
                    return Err(LiveExportError::GaveUp);
                }
                Some(ResponseError::NotLeaderOrFollower)
                    if partition.current_leader.leader_id.0 >= 0 =>
                {
                    attempts += 1;
                    // Ask the metadata leader's broker instead.
                    let leader = partition.current_leader.leader_id.0;
                    let described = peer
                        .call(&DescribeClusterRequest::default(), 0)
                        .await
                        .map_err(|e| LiveExportError::Unreachable {
                            addrs: addr.clone(),
                            last: e.explained(authenticated),
                        })?;
                    let broker = described
                        .brokers
                        .iter()
                        .find(|b| b.broker_id.0 == leader)
                        .ok_or(LiveExportError::LeaderUnknown(leader))?;
                    addrs.insert(0, format!("{}:{}", broker.host.as_str(), broker.port));
                    break Ok(None);
                }
                Some(ResponseError::SnapshotNotFound) => {
                    attempts += 1;
                    break Ok(None);
                }
                Some(error) => return Err(LiveExportError::Refused { addr, error }),
            }
            id = (
                partition.snapshot_id.end_offset,
                partition.snapshot_id.epoch,
            );
            file.extend_from_slice(&partition.unaligned_records);
            let size = usize::try_from(partition.size).unwrap_or(0);
            if file.len() >= size || partition.unaligned_records.is_empty() {
                break Ok(Some(file));
            }
        };
        match fetched {
            Ok(Some(file)) => return Ok(MetadataExport::from_file_bytes(&file)?),
            Ok(None) => {}
            Err(e) => {
                last = format!("{addr}: {e}");
                addrs.remove(0);
            }
        }
    }
    Err(LiveExportError::Unreachable {
        addrs: target.bootstrap.join(","),
        last,
    })
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The backend initialised.
    pub backend: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The node.
    pub node: u64,
    /// Every node of its cluster.
    pub members: Vec<u64>,
}

/// Initialise the configured backend's directory of this node from `export`. Refuses a
/// directory that already holds that backend's metadata, a data directory whose other
/// backends hold another cluster's metadata, and a running node's (locked) data directory.
pub fn import(config: &Config, export: &MetadataExport) -> Result<Imported, SwitchError> {
    let (backend, storage, dir) = backend_of(config)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    if holds(&storage, &dir)? {
        return Err(SwitchError::AlreadyHolds { backend, dir });
    }
    if let Some(file) = export.view.state.cluster_id() {
        for other in available_backends() {
            let Some(other_storage) = other.storage.filter(|_| other.name != backend) else {
                continue;
            };
            let other_dir = backend_dir(config, other);
            if !holds(&other_storage, &other_dir)? {
                continue;
            }
            let stored =
                (other_storage.read)(&other_dir).map_err(|source| SwitchError::Storage {
                    what: "could not read the metadata in",
                    dir: other_dir.clone(),
                    source,
                })?;
            if let Some(found) = stored.view.state.cluster_id()
                && found != file
            {
                return Err(SwitchError::WrongCluster {
                    file: file.0.clone(),
                    found: found.0.clone(),
                    backend: other.name.to_owned(),
                    dir: other_dir,
                });
            }
        }
    }
    let node = NodeIdentity {
        id: config.node_id,
        cluster_addr: config.cluster_addr().map(str::to_owned),
        peers: config.peers.clone(),
    };
    let mut members: Vec<u64> = node.peers.keys().map(|id| id.0).collect();
    if !members.contains(&node.id.0) {
        members.push(node.id.0);
        members.sort_unstable();
    }
    let existed = dir.exists();
    let context = OpenContext {
        config: config.backend_config(&backend),
        data_dir: dir.clone(),
        node,
        cluster_credentials: None,
    };
    let stored = StoredState {
        view: export.view.clone(),
        epoch: export.epoch,
    };
    let written = std::fs::create_dir_all(&dir)
        .map_err(|e| MetadataError::Storage(e.to_string()))
        .and_then(|()| (storage.init)(&context, &stored));
    if let Err(source) = written {
        // Leave the directory as it was: a failed import must not look like metadata.
        if !existed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(SwitchError::Storage {
            what: "could not initialise",
            dir,
            source,
        });
    }
    Ok(Imported {
        backend,
        dir,
        node: config.node_id.0,
        members,
    })
}

/// What an export holds, in a few lines, for the operator.
#[derive(Debug)]
pub struct Summary<'a>(pub &'a MetadataExport);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let export = self.0;
        let state: &MetadataState = &export.view.state;
        let cluster = state.cluster_id().map_or("(not set)", |c| c.0.as_str());
        writeln!(
            f,
            "cluster {cluster}: {} metadata at index {} (epoch {}), {}, by switchyard {}",
            export.backend,
            export.view.applied_index,
            export.epoch,
            export.source.as_str(),
            export.build,
        )?;
        let partitions: usize = state.topics().map(|t| t.partitions.len()).sum();
        writeln!(
            f,
            "{} brokers, {} topics ({partitions} partitions), {} groups, {} committed offsets, \
             {} transactional ids, next producer id {}",
            state.brokers().count(),
            state.topics().count(),
            state.groups().count(),
            state.committed_offset_count(),
            state.transactions().count(),
            state.next_producer_id(),
        )
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::Serialized;
    use switchyard_backend_api::{ClusterId, MetadataCommand, StateView};

    use super::*;
    use crate::config::{Overrides, defaults};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn config(data_dir: &Path, backend: &str) -> Result<Config, Box<dyn std::error::Error>> {
        let overrides = Overrides {
            metadata_backend: Some(backend.to_owned()),
            data_dir: Some(data_dir.to_owned()),
            ..Overrides::default()
        };
        Ok(Config::from_figment(
            defaults().merge(Serialized::defaults(overrides)),
        )?)
    }

    fn export_of(cluster: &str) -> MetadataExport {
        let mut state = MetadataState::new();
        let _ = state.apply(&MetadataCommand::InitCluster {
            cluster_id: ClusterId(cluster.to_owned()),
        });
        MetadataExport {
            backend: "test".into(),
            build: "test".into(),
            source: Source::DataDirectory,
            epoch: 4,
            view: StateView {
                applied_index: 9,
                state,
            },
        }
    }

    /// Two durable backends linked into this build (the default features link three).
    fn two_durable() -> Result<(&'static str, &'static str), Box<dyn std::error::Error>> {
        let durable: Vec<&str> = available_backends()
            .into_iter()
            .filter(|r| r.storage.is_some())
            .map(|r| r.name)
            .collect();
        match durable.as_slice() {
            [first, second, ..] => Ok((first, second)),
            other => Err(format!("two durable backends needed, linked: {other:?}").into()),
        }
    }

    #[test]
    fn an_export_of_a_missing_directory_creates_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("nowhere");
        let (backend, _) = two_durable()?;
        let result = export_offline(&config(&missing, backend)?);
        assert!(
            matches!(result, Err(SwitchError::NoMetadata { .. })),
            "{result:?}"
        );
        assert!(!missing.exists());
        let memory = export_offline(&config(dir.path(), "memory")?);
        assert!(
            matches!(memory, Err(SwitchError::NotDurable { .. })),
            "{memory:?}"
        );
        Ok(())
    }

    #[test]
    fn import_refuses_a_taken_directory_and_another_clusters() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (first, second) = two_durable()?;
        import(&config(dir.path(), first)?, &export_of("c-1"))?;
        let read = export_offline(&config(dir.path(), first)?)?;
        assert_eq!((read.view, read.epoch), (export_of("c-1").view, 4));
        let again = import(&config(dir.path(), first)?, &export_of("c-1"));
        assert!(
            matches!(again, Err(SwitchError::AlreadyHolds { .. })),
            "{again:?}"
        );
        let foreign = import(&config(dir.path(), second)?, &export_of("c-2"));
        assert!(
            matches!(&foreign, Err(SwitchError::WrongCluster { file, found, .. })
                if file == "c-2" && found == "c-1"),
            "{foreign:?}"
        );
        assert!(!dir.path().join("metadata").join(second).exists());
        import(&config(dir.path(), second)?, &export_of("c-1"))?;
        Ok(())
    }
}
