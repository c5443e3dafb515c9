//! Real TCP proxies between nodes, so a test can cut a node off the network: node `i` reaches
//! node `j` through the proxy `(i, j)`, which forwards to `j`'s cluster address. Raft messages,
//! forwarded proposals and WAL replication share that address, so one cut covers them all.

use std::collections::BTreeMap;

use anyhow::Context;
use switchyard_backend_api::{NodeId, NodeIdentity};
use switchyard_compat_tests::reserve_addr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The proxies of one cluster.
pub(crate) struct Network {
    /// `(from, to)` → whether the link is cut.
    links: BTreeMap<(u64, u64), watch::Sender<bool>>,
    /// Node → the identity it opens with (peers reached through the proxies).
    pub(crate) identities: BTreeMap<u64, NodeIdentity>,
    _tasks: JoinSet<()>,
}

impl Network {
    /// Nodes `1..=size` on reserved loopback addresses, every link through a proxy.
    pub(crate) async fn start(size: u64) -> anyhow::Result<Self> {
        let mut real = BTreeMap::new();
        for id in 1..=size {
            real.insert(id, reserve_addr()?);
        }
        let mut links = BTreeMap::new();
        let mut identities = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for from in 1..=size {
            let mut peers = BTreeMap::new();
            peers.insert(NodeId(from), real[&from].clone());
            for to in (1..=size).filter(|to| *to != from) {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .context("binding a proxy")?;
                peers.insert(NodeId(to), listener.local_addr()?.to_string());
                let (cut, watch) = watch::channel(false);
                tasks.spawn(forward(listener, real[&to].clone(), watch));
                links.insert((from, to), cut);
            }
            identities.insert(
                from,
                NodeIdentity {
                    id: NodeId(from),
                    cluster_addr: Some(real[&from].clone()),
                    peers,
                },
            );
        }
        Ok(Self {
            links,
            identities,
            _tasks: tasks,
        })
    }

    /// Cut (or, with `false`, heal) every link to and from `node`; open connections drop.
    pub(crate) fn isolate(&self, node: u64, cut: bool) {
        for ((from, to), link) in &self.links {
            if *from == node || *to == node {
                link.send_replace(cut);
            }
        }
    }
}

/// Accept on `listener` and pipe each connection to `target` while the link is not cut.
async fn forward(listener: TcpListener, target: String, cut: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    while let Ok((inbound, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        if *cut.borrow() {
            continue;
        }
        let target = target.clone();
        let mut cut = cut.clone();
        connections.spawn(async move {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (mut a, mut b) = (inbound, outbound);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                _ = cut.wait_for(|cut| *cut) => {}
            }
        });
    }
}
