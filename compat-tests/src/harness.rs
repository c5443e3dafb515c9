//! [`BackendHarness`]: how the suite builds nodes of one backend, and [`TestCluster`]: a running
//! set of nodes that owns their data directories and can restart or crash any of them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use figment::Figment;
use figment::providers::Serialized;
use switchyard_backend_api::{
    ClusterCredentials, ClusterSecret, Guarantees, MetadataBackend, MetadataError, Mode, NodeId,
    NodeIdentity, OpenContext, Registration, find_backend, open_backend,
};
use tempfile::TempDir;

/// Ports [`reserve_addr`] hands out: below Linux's default ephemeral range (32768–60999), so
/// neither an outgoing connection nor another `bind(…:0)` takes a reserved port between the
/// reservation and the node binding it.
const RESERVED_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback address for a node to bind later. Ports come from [`RESERVED_PORTS`], each
/// process walking them from its own offset and checking each is free when handed out; an
/// address is never handed out twice by one process.
pub fn reserve_addr() -> anyhow::Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(RESERVED_PORTS.end - RESERVED_PORTS.start);
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port =
            RESERVED_PORTS.start + u16::try_from((offset + step) % span).context("port offset")?;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return Ok(listener.local_addr()?.to_string());
        }
    }
    bail!("no free loopback port in {RESERVED_PORTS:?}")
}

/// One cluster secret for every node a test process opens outside a [`TestCluster`] (which
/// makes one of its own): tests that build an `OpenContext` by hand pass this.
pub fn shared_secret() -> ClusterSecret {
    static SECRET: std::sync::LazyLock<ClusterSecret> =
        std::sync::LazyLock::new(ClusterSecret::generate);
    SECRET.clone()
}

/// How long any single step of a case may take before the case fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One node to open.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Who the node is and who its peers are.
    pub identity: NodeIdentity,
    /// The node's own data directory (exists, and survives restarts of the node).
    pub data_dir: PathBuf,
    /// The cluster's credentials: one secret per [`TestCluster`], the same on every node.
    pub credentials: ClusterCredentials,
}

/// Builds nodes of one backend for the conformance suite.
#[async_trait]
pub trait BackendHarness: Send + Sync + 'static {
    /// Registry name of the backend under test.
    fn backend(&self) -> &'static str;

    /// Largest cluster the backend forms; 1 for single-node backends.
    fn max_nodes(&self) -> usize;

    /// The guarantees nodes opened by this harness must report: the registration's, unless
    /// the harness's configuration selects a mode that declares others.
    fn declared(&self) -> Guarantees;

    /// Open one node. Must return without waiting for a quorum.
    async fn open(&self, node: &NodeSpec) -> Result<Arc<dyn MetadataBackend>, MetadataError>;

    /// Stop a node abruptly: no graceful shutdown, nothing flushed beyond what the backend made
    /// durable on its own. In-process backends stop their tasks when the last handle drops.
    async fn crash(&self, node: Arc<dyn MetadataBackend>) {
        drop(node);
    }
}

/// A harness for any registered backend: opens nodes through the registry with a given config
/// table. The backend crate must be linked (`use switchyard_backend_x as _;`).
#[derive(Debug, Clone)]
pub struct RegistryHarness {
    registration: &'static Registration,
    config: Figment,
    declared: Guarantees,
}

impl RegistryHarness {
    /// Harness for the backend registered as `name`, with its default configuration.
    ///
    /// # Panics
    /// If no backend of that name is linked: a test setup error, reported with the names that
    /// are available.
    pub fn new(name: &str) -> Self {
        match find_backend(name) {
            Ok(registration) => Self {
                registration,
                config: Figment::new(),
                declared: registration.guarantees,
            },
            Err(e) => panic!("{e}"),
        }
    }

    /// Use `config` as the backend's own configuration table.
    pub fn with_config(mut self, config: Figment) -> Self {
        self.config = config;
        self
    }

    /// Expect nodes to declare `guarantees` (for a configuration whose mode declares other
    /// guarantees than the registration's default).
    pub fn declaring(mut self, guarantees: Guarantees) -> Self {
        self.declared = guarantees;
        self
    }

    /// Run the backend in one of the modes its registration declares: its keys over the
    /// configuration, its guarantees expected.
    pub fn in_mode(mut self, mode: &Mode) -> Self {
        for (key, value) in mode.config {
            self.config = self.config.merge(Serialized::default(key, value));
        }
        self.declaring(mode.guarantees)
    }

    /// The backend's registration.
    pub fn registration(&self) -> &'static Registration {
        self.registration
    }
}

#[async_trait]
impl BackendHarness for RegistryHarness {
    fn backend(&self) -> &'static str {
        self.registration.name
    }

    fn declared(&self) -> Guarantees {
        self.declared
    }

    fn max_nodes(&self) -> usize {
        if self.registration.guarantees.multi_node {
            5
        } else {
            1
        }
    }

    async fn open(&self, node: &NodeSpec) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
        open_backend(
            self.registration.name,
            OpenContext {
                config: self.config.clone(),
                data_dir: node.data_dir.clone(),
                node: node.identity.clone(),
                cluster_credentials: Some(node.credentials.clone()),
            },
        )
        .await
    }
}

/// Running nodes of one backend. Dropping it drops the nodes and deletes their directories.
pub struct TestCluster<'h> {
    harness: &'h dyn BackendHarness,
    specs: Vec<NodeSpec>,
    nodes: Vec<Option<Arc<dyn MetadataBackend>>>,
    // Declared last: dropped after the nodes that write into it.
    _dir: TempDir,
}

impl fmt::Debug for TestCluster<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("backend", &self.harness.backend())
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

impl<'h> TestCluster<'h> {
    /// Open a single node.
    pub async fn single(harness: &'h dyn BackendHarness) -> anyhow::Result<Self> {
        Self::start(harness, 1).await
    }

    /// Open `size` nodes, ids 1..=size. Nodes of a cluster get reserved loopback cluster
    /// addresses and each other as peers; a single node gets no peers.
    pub async fn start(harness: &'h dyn BackendHarness, size: usize) -> anyhow::Result<Self> {
        let mut cluster = Self::layout(harness, size)?;
        for index in 0..size {
            cluster.open(index).await?;
        }
        Ok(cluster)
    }

    /// Lay out `size` nodes without opening any; open them one by one with [`Self::open`].
    pub fn layout(harness: &'h dyn BackendHarness, size: usize) -> anyhow::Result<Self> {
        if size == 0 || size > harness.max_nodes() {
            bail!(
                "{} runs at most {} nodes, asked for {size}",
                harness.backend(),
                harness.max_nodes()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchyard-{}-", harness.backend()))
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let mut peers = BTreeMap::new();
        if size > 1 {
            for id in 1..=size as u64 {
                // Reserve a free port; the node binds it when it opens.
                peers.insert(NodeId(id), reserve_addr()?);
            }
        }
        let credentials = ClusterCredentials::from(ClusterSecret::generate());
        let mut specs = Vec::with_capacity(size);
        for id in 1..=size as u64 {
            let data_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            specs.push(NodeSpec {
                identity: NodeIdentity {
                    id: NodeId(id),
                    cluster_addr: peers.get(&NodeId(id)).cloned(),
                    peers: peers.clone(),
                },
                data_dir,
                credentials: credentials.clone(),
            });
        }
        Ok(Self {
            harness,
            nodes: vec![None; size],
            specs,
            _dir: dir,
        })
    }

    /// Number of nodes laid out.
    pub fn size(&self) -> usize {
        self.specs.len()
    }

    /// Open node `index` (0-based) from its data directory; it must not be running. Fails if
    /// opening takes longer than [`DEADLINE`]: opening must not wait for a quorum.
    pub async fn open(&mut self, index: usize) -> anyhow::Result<Arc<dyn MetadataBackend>> {
        let spec = self.specs.get(index).context("no such node")?;
        if self.nodes[index].is_some() {
            bail!("node {index} is already running");
        }
        let node = tokio::time::timeout(DEADLINE, self.harness.open(spec))
            .await
            .with_context(|| format!("opening node {index} did not return"))?
            .with_context(|| format!("opening node {index}"))?;
        self.nodes[index] = Some(Arc::clone(&node));
        Ok(node)
    }

    /// A running node.
    pub fn node(&self, index: usize) -> anyhow::Result<&Arc<dyn MetadataBackend>> {
        self.nodes
            .get(index)
            .and_then(Option::as_ref)
            .with_context(|| format!("node {index} is not running"))
    }

    /// The spec of node `index`.
    pub fn spec(&self, index: usize) -> anyhow::Result<&NodeSpec> {
        self.specs.get(index).context("no such node")
    }

    /// The spec of node `index`, to change before it opens (a test giving one node another
    /// secret, say).
    pub fn spec_mut(&mut self, index: usize) -> anyhow::Result<&mut NodeSpec> {
        self.specs.get_mut(index).context("no such node")
    }

    /// Wait until some running node is ready and knows itself to be the leader; return it.
    pub async fn leader(&self) -> anyhow::Result<Arc<dyn MetadataBackend>> {
        let running: Vec<_> = self.nodes.iter().flatten().cloned().collect();
        if running.is_empty() {
            bail!("no node is running");
        }
        let mut watches: Vec<_> = running.iter().map(|n| n.cluster()).collect();
        let wait = async {
            loop {
                for (node, watch) in running.iter().zip(&watches) {
                    let view = watch.borrow();
                    if view.is_ready() && view.leader == Some(view.node) {
                        return Ok(Arc::clone(node));
                    }
                }
                let changed = watches.iter_mut().map(|w| Box::pin(w.changed()));
                let (result, _, _) = futures::future::select_all(changed).await;
                result.context("a node's cluster view closed")?;
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .context("no leader emerged")?
    }

    /// Shut node `index` down gracefully and open it again from its data directory.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<Arc<dyn MetadataBackend>> {
        self.stop(index).await?;
        self.open(index).await
    }

    /// Shut node `index` down gracefully and leave it stopped.
    pub async fn stop(&mut self, index: usize) -> anyhow::Result<()> {
        let node = self.nodes[index]
            .take()
            .with_context(|| format!("node {index} is not running"))?;
        tokio::time::timeout(DEADLINE, node.shutdown())
            .await
            .context("shutdown did not return")??;
        Ok(())
    }

    /// Crash node `index` (no graceful shutdown) and leave it stopped.
    pub async fn crash(&mut self, index: usize) -> anyhow::Result<()> {
        let node = self.nodes[index]
            .take()
            .with_context(|| format!("node {index} is not running"))?;
        self.harness.crash(node).await;
        Ok(())
    }

    /// Crash node `index` and open it again from its data directory.
    pub async fn crash_restart(
        &mut self,
        index: usize,
    ) -> anyhow::Result<Arc<dyn MetadataBackend>> {
        self.crash(index).await?;
        self.open(index).await
    }
}
