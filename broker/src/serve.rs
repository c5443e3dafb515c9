//! `switchyard serve`: open the metadata backend, start the Kafka listener and the broker's
//! tasks (registration, heartbeats, fencing, group session timers, log maintenance), follow
//! the backend's cluster view, stop on a signal.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use switchyard_backend_api::{BrokerEndpoint, BrokerId};
use switchyard_backend_api::{
    ClusterView, MetadataBackend, MetadataError, NodeIdentity, OpenContext, Readiness,
    available_backends, find_backend, open_backend,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin;
use crate::backends::default_backend;
use crate::broker::{Broker, now_ms};
use crate::cleaner;
use crate::kafka::server;
use crate::leaders;
use crate::liveness;
use crate::replicas::Replicas;
use crate::replication;
use crate::telemetry;
use crate::transactions;

use crate::config::Config;

/// Why `serve` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// No backend is configured and no durable one is compiled in.
    #[error(
        "no durable metadata backend is compiled into this binary; choose one with \
         --metadata-backend (available: {})",
        available.join(", ")
    )]
    NoDurableBackend {
        /// The backends that are compiled in.
        available: Vec<String>,
    },
    /// The configured backend is not compiled in.
    #[error(transparent)]
    UnknownBackend(MetadataError),
    /// The backend's data directory could not be created.
    #[error("could not create the metadata directory {}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The backend failed to open.
    #[error("could not open the {backend} metadata backend")]
    Open {
        /// The backend's name.
        backend: String,
        /// The failure.
        #[source]
        source: MetadataError,
    },
    /// Another process holds the data directory.
    #[error(
        "another switchyard process is using the data directory {} (it holds {}); stop it first",
        path.display(), path.join(LOCK_FILE).display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The backend failed to shut down cleanly.
    #[error("the {backend} metadata backend did not shut down cleanly")]
    Shutdown {
        /// The backend's name.
        backend: String,
        /// The failure.
        #[source]
        source: MetadataError,
    },
    /// The partition logs could not be opened.
    #[error("could not open the partition logs: {0}")]
    Logs(String),
    /// The Kafka listener could not be bound.
    #[error("could not listen for Kafka clients on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The admin HTTP listener could not be bound.
    #[error("could not listen for admin HTTP requests on {addr}")]
    HttpListen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A signal handler could not be installed.
    #[error("could not install a signal handler")]
    Signal(#[source] io::Error),
}

/// Run a node until SIGINT (Ctrl-C) or SIGTERM, then shut it down.
///
/// Signal handlers are installed before anything starts, so a signal that arrives while the
/// backend opens still leads to a clean shutdown.
pub async fn run(config: &Config) -> Result<(), ServeError> {
    let mut signals = ShutdownSignals::install()?;
    // A conformance build says at once whether it runs deliberately broken.
    #[cfg(feature = "conformance")]
    let _ = crate::conformance::flaw();
    let node = Node::start(config).await?;
    info!(
        backend = node.backend_name(),
        node = %config.node_id,
        "switchyard running; stop with SIGINT or SIGTERM"
    );
    let received = signals.recv().await;
    info!(signal = received, "shutting down");
    node.shutdown().await?;
    info!("switchyard stopped");
    Ok(())
}

/// The backend name to run: the configured one, or else the default among `available`.
pub fn choose_backend(configured: Option<&str>, available: &[&str]) -> Result<String, ServeError> {
    match configured {
        Some(name) => Ok(name.to_owned()),
        None => default_backend(available)
            .map(str::to_owned)
            .ok_or_else(|| ServeError::NoDurableBackend {
                available: available.iter().map(|name| (*name).to_owned()).collect(),
            }),
    }
}

/// A running node: its metadata backend and the task that logs its cluster view.
#[derive(Debug)]
pub struct Node {
    backend: Arc<dyn MetadataBackend>,
    watcher: JoinHandle<()>,
    broker: Arc<Broker>,
    /// Each listener's name and bound address, in `listeners` order.
    kafka_addrs: Vec<(String, SocketAddr)>,
    inter_broker: usize,
    /// Where the admin HTTP listener is bound, if it runs.
    http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    listener: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    /// Released when the node is dropped, after [`Node::shutdown`] closed everything.
    _lock: DataDirLock,
}

/// The lock file in a data directory, as Kafka's `.lock` in its log directories.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a data directory: one process at a time serves it, exports or imports
/// its metadata (a second one would tear the logs it writes). Held until dropped; the kernel
/// releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Lock `dir` (created if missing, owner-only), or fail with [`ServeError::Locked`] at once if
/// another process holds it.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<DataDirLock, ServeError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let failed = |source| ServeError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::Locked {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(failed(source)),
    }
}

impl Node {
    /// Lock the data directory, choose and open the backend, then start logging its cluster
    /// view. Returns without waiting for the backend to become ready.
    pub async fn start(config: &Config) -> Result<Self, ServeError> {
        let available: Vec<&str> = available_backends().iter().map(|r| r.name).collect();
        let name = choose_backend(config.metadata_backend.as_deref(), &available)?;
        // Check the name before creating a directory named after it.
        find_backend(&name).map_err(ServeError::UnknownBackend)?;
        let lock = lock_data_dir(&config.data_dir)?;

        let data_dir = config.data_dir.join("metadata").join(&name);
        std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        // Only the broker's user may enter the data directory, whatever the umask.
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| ServeError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        let node = NodeIdentity {
            id: config.node_id,
            cluster_addr: config.cluster_addr().map(str::to_owned),
            peers: config.peers.clone(),
        };
        info!(
            backend = name.as_str(),
            node = %node.id,
            data_dir = %data_dir.display(),
            peers = node.peers.len(),
            cluster_tls = config.cluster_tls.is_some(),
            "opening metadata backend"
        );
        let context = OpenContext {
            config: config.backend_config(&name),
            data_dir,
            node,
            cluster_credentials: config.cluster_credentials(),
        };
        let backend: Arc<dyn MetadataBackend> = Arc::new(telemetry::Metered::new(
            open_backend(&name, context)
                .await
                .map_err(|source| ServeError::Open {
                    backend: name.clone(),
                    source,
                })?,
        ));
        let watcher = tokio::spawn(log_cluster_changes(backend.name(), backend.cluster()));

        let mut bound = Vec::with_capacity(config.listeners.len());
        let mut endpoints = Vec::with_capacity(config.listeners.len());
        let mut kafka_addrs = Vec::with_capacity(config.listeners.len());
        for (index, listener) in config.listeners.iter().enumerate() {
            let listen_error = |source| ServeError::Listen {
                addr: listener.bind.clone(),
                source,
            };
            let tcp = TcpListener::bind(&listener.bind)
                .await
                .map_err(listen_error)?;
            let addr = tcp.local_addr().map_err(listen_error)?;
            let (host, port) = advertised(&listener.advertise, addr);
            endpoints.push(BrokerEndpoint {
                name: listener.name.clone(),
                host,
                port,
            });
            kafka_addrs.push((listener.name.clone(), addr));
            bound.push((
                tcp,
                Arc::new(server::Listener {
                    name: listener.name.clone(),
                    security: listener.security.clone(),
                    inter_broker: index == config.inter_broker,
                }),
            ));
        }
        let broker_id = BrokerId::try_from(config.node_id).map_err(|_| ServeError::Listen {
            addr: config.inter_broker_listener().bind.clone(),
            source: io::Error::other("node id is not a Kafka broker id"),
        })?;
        let logs_dir = config.data_dir.clone();
        let base = config
            .log_config()
            .map_err(|e| ServeError::Logs(e.to_string()))?;
        let replicas = tokio::task::spawn_blocking(move || Replicas::open(&logs_dir, base))
            .await
            .map_err(|e| ServeError::Logs(e.to_string()))?
            .map_err(|e| ServeError::Logs(e.to_string()))?;
        let broker = Broker::new(
            broker_id,
            (endpoints, config.inter_broker),
            Arc::clone(&backend),
            config.kafka.clone(),
            config.inter_broker_listener().security.clone(),
            replicas,
        );
        let (stop, stopped) = watch::channel(false);
        let http = match &config.http_listen {
            Some(addr) => {
                Some(
                    admin::bind(addr)
                        .await
                        .map_err(|source| ServeError::HttpListen {
                            addr: addr.clone(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let http_addr = http.as_ref().map(|(_, addr)| *addr);
        let listener = tokio::spawn(server::serve(bound, Arc::clone(&broker), stopped.clone()));
        let mut tasks = vec![
            tokio::spawn(Arc::clone(&broker).register()),
            tokio::spawn(broker.groups().clone().run_timers()),
            tokio::spawn(Arc::clone(&broker).follow_topic_deletions()),
            tokio::spawn(liveness::run_heartbeats(Arc::clone(&broker))),
            tokio::spawn(liveness::run_fencer(Arc::clone(&broker))),
            tokio::spawn(leaders::run_rebalancer(Arc::clone(&broker))),
            tokio::spawn(transactions::run(
                Arc::clone(&broker),
                std::time::Duration::from_millis(
                    config
                        .kafka
                        .transaction_abort_timed_out_transaction_cleanup_interval_ms,
                ),
            )),
            tokio::spawn(
                Arc::clone(&broker).maintain_logs(std::time::Duration::from_millis(
                    config.kafka.log_retention_check_interval_ms,
                )),
            ),
            tokio::spawn(replication::run_replication(Arc::clone(&broker))),
            tokio::spawn(replication::run_isr_checks(Arc::clone(&broker))),
            tokio::spawn(Arc::clone(&broker).checkpoint_replicas(
                std::time::Duration::from_millis(
                    config.kafka.replica_high_watermark_checkpoint_interval_ms,
                ),
            )),
        ];
        if config.kafka.log_cleaner_enable {
            tasks.push(tokio::spawn(cleaner::run(Arc::clone(&broker))));
        }
        if let Some((http, addr)) = http {
            tasks.push(tokio::spawn(admin::serve(
                http,
                Arc::clone(&broker),
                stopped,
            )));
            info!(%addr, "admin HTTP listener ready (/metrics, /health, /ready)");
        }
        for ((name, addr), listener) in kafka_addrs.iter().zip(&config.listeners) {
            info!(
                listener = %name,
                %addr,
                advertised = %listener.advertise,
                protocol = listener.security.protocol.name(),
                inter_broker = name == &config.inter_broker_listener().name,
                "Kafka listener ready"
            );
        }
        Ok(Self {
            backend,
            watcher,
            broker,
            kafka_addrs,
            inter_broker: config.inter_broker,
            http_addr,
            stop,
            listener,
            tasks,
            _lock: lock,
        })
    }

    /// The address the admin HTTP listener is bound to, if `http_listen` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The running backend.
    pub fn backend(&self) -> &Arc<dyn MetadataBackend> {
        &self.backend
    }

    /// The running backend's registry name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The broker this node runs.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The address the inter-broker Kafka listener is bound to (the only one, unless
    /// `kafka.listeners` names more).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addrs[self.inter_broker].1
    }

    /// The address the Kafka listener named `name` is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.kafka_addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// Stop in order: the Kafka listener stops accepting and drains the requests in flight
    /// (up to [`server::DRAIN_TIMEOUT`]); then the broker's tasks, and the group
    /// coordinator's proposals in flight, are stopped and awaited; then
    /// the high watermarks are checkpointed and the partition logs closed; last the backend
    /// shuts down. Nothing of the broker runs once the logs are closed.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.send_replace(true);
        if self.listener.await.is_err() {
            warn!("the Kafka listener panicked");
        }
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            if let Err(e) = task.await
                && e.is_panic()
            {
                warn!(error = %e, "a broker task panicked");
            }
        }
        self.broker.groups().stop().await;
        let replicas = Arc::clone(self.broker.replicas());
        if tokio::task::spawn_blocking(move || replicas.close(now_ms()))
            .await
            .is_err()
        {
            warn!("closing the partition logs panicked");
        }
        // Stop the watcher first, so that the backend going not-ready on purpose is not logged
        // as a loss of readiness.
        self.watcher.abort();
        let backend = self.backend.name();
        info!(backend, "shutting down metadata backend");
        self.backend
            .shutdown()
            .await
            .map_err(|source| ServeError::Shutdown {
                backend: backend.to_owned(),
                source,
            })?;
        info!(backend, "metadata backend shut down");
        Ok(())
    }
}

/// Host and port clients are told to use: the advertised address, with port 0 (an ephemeral
/// listen port) replaced by the port actually bound.
fn advertised(advertise: &str, bound: SocketAddr) -> (String, u16) {
    let (host, port) = advertise.rsplit_once(':').unwrap_or((advertise, "0"));
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    match port.parse::<u16>() {
        Ok(0) | Err(_) => (host, bound.port()),
        Ok(port) => (host, port),
    }
}

/// Log the first cluster view and every readiness, role or leader change after it, until the
/// backend drops its sender.
async fn log_cluster_changes(backend: &'static str, mut views: watch::Receiver<ClusterView>) {
    let mut last: Option<ClusterView> = None;
    loop {
        let view = views.borrow_and_update().clone();
        log_transition(backend, last.as_ref(), &view);
        last = Some(view);
        if views.changed().await.is_err() {
            return;
        }
    }
}

fn log_transition(backend: &'static str, last: Option<&ClusterView>, view: &ClusterView) {
    let node = view.node;
    let leader = view.leader.map(|l| l.to_string());
    let leader = leader.as_deref().unwrap_or("none");
    if last.map(|l| &l.readiness) != Some(&view.readiness) {
        match &view.readiness {
            Readiness::Ready => info!(
                backend,
                %node,
                role = ?view.role,
                leader,
                epoch = view.epoch,
                "metadata backend ready"
            ),
            Readiness::NotReady { reason } if last.is_some_and(ClusterView::is_ready) => warn!(
                backend,
                %node,
                reason = %reason,
                "metadata backend no longer ready"
            ),
            Readiness::NotReady { reason } => info!(
                backend,
                %node,
                reason = %reason,
                "metadata backend not ready yet"
            ),
            other => {
                info!(backend, %node, readiness = ?other, "metadata backend readiness changed")
            }
        }
    }
    if let Some(last) = last {
        if last.role != view.role {
            info!(backend, %node, from = ?last.role, to = ?view.role, "metadata role changed");
        }
        if last.leader != view.leader && view.leader.is_some() {
            metrics::counter!(telemetry::METADATA_LEADER_CHANGES).increment(1);
        }
        if last.leader != view.leader {
            info!(backend, %node, leader, epoch = view.epoch, "metadata leader changed");
        }
    }
}

/// SIGINT and SIGTERM, registered at once so none is missed between install and wait.
#[derive(Debug)]
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, ServeError> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(ServeError::Signal)?,
            terminate: signal(SignalKind::terminate()).map_err(ServeError::Signal)?,
        })
    }

    /// Wait for either signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_backend_api::NodeId;

    use super::*;

    #[test]
    fn a_data_directory_is_locked_by_one_holder_at_a_time() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let held = lock_data_dir(&data)?;
        let second = lock_data_dir(&data);
        assert!(
            matches!(&second, Err(ServeError::Locked { path }) if *path == data),
            "{second:?}"
        );
        let message = second.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("another switchyard process") && message.contains(".lock"));
        drop(held);
        let _again = lock_data_dir(&data)?;
        Ok(())
    }
    use figment::providers::Serialized;
    use switchyard_backend_api::ClusterSecret;

    use crate::config::{Overrides, defaults};

    fn config(data_dir: &std::path::Path, backend: Option<&str>, peers: Option<&str>) -> Config {
        // Defaults and flags only: no file and no environment, which the config tests change
        // concurrently. A cluster gets a secret file in the data directory.
        let cluster_secret_file = peers.map(|_| {
            let path = data_dir.join("cluster.secret");
            if let Err(e) = std::fs::write(&path, ClusterSecret::generate().to_file_contents()) {
                panic!("writing {}: {e}", path.display());
            }
            path
        });
        let overrides = Overrides {
            metadata_backend: backend.map(str::to_owned),
            data_dir: Some(data_dir.to_owned()),
            node_id: Some(7),
            peers: peers.map(str::to_owned),
            listen: Some("127.0.0.1:0".into()),
            advertise: None,
            cluster_listen: None,
            cluster_secret_file,
            ..Overrides::default()
        };
        match Config::from_figment(defaults().merge(Serialized::defaults(&overrides))) {
            Ok(config) => config,
            Err(e) => panic!("test config: {e}"),
        }
    }

    #[test]
    fn no_backend_and_nothing_durable_is_an_error_naming_the_choices() {
        let err = choose_backend(None, &["memory"]).err();
        let message = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(err, Some(ServeError::NoDurableBackend { .. })),
            "{err:?}"
        );
        assert_eq!(
            message,
            "no durable metadata backend is compiled into this binary; choose one with \
             --metadata-backend (available: memory)"
        );
    }

    #[test]
    fn configured_backend_wins_over_the_default() {
        let linked = crate::backends::LINKED_BACKENDS;
        assert_eq!(
            choose_backend(Some("memory"), linked).ok(),
            Some("memory".to_owned())
        );
        assert_eq!(
            choose_backend(None, linked).ok(),
            default_backend(linked).map(str::to_owned)
        );
    }

    #[tokio::test]
    async fn memory_node_starts_ready_and_shuts_down() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let node = Node::start(&config(dir.path(), Some("memory"), None)).await?;
        assert!(dir.path().join("metadata").join("memory").is_dir());
        assert_eq!(node.backend_name(), "memory");
        let view = node.backend().wait_ready(Duration::from_secs(10)).await?;
        assert_eq!(view.node, NodeId(7));
        let backend = Arc::clone(node.backend());
        node.shutdown().await?;
        assert!(!backend.cluster().borrow().is_ready());
        Ok(())
    }

    #[tokio::test]
    async fn unknown_backend_creates_no_directory() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let err = Node::start(&config(dir.path(), Some("nope"), None))
            .await
            .err();
        let message = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(
                err,
                Some(ServeError::UnknownBackend(
                    MetadataError::UnknownBackend { .. }
                ))
            ),
            "{err:?}"
        );
        let mut linked = crate::backends::LINKED_BACKENDS.to_vec();
        linked.sort_unstable();
        let listed = format!("available: {}", linked.join(", "));
        assert!(message.contains(&listed), "{message}");
        assert!(!dir.path().join("metadata").exists());
        Ok(())
    }

    #[tokio::test]
    async fn backend_open_errors_are_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = config(dir.path(), Some("memory"), Some("7=a:9093,8=b:9093"));
        let err = Node::start(&config).await.err();
        assert!(
            matches!(
                &err,
                Some(ServeError::Open { backend, source: MetadataError::Config(_) }) if backend == "memory"
            ),
            "{err:?}"
        );
        Ok(())
    }
}
