//! [`Network`]: real TCP proxies between the nodes of a test cluster, so that a test can cut,
//! slow down and heal links.
//!
//! Node `i` reaches node `j` at the proxy `(i, j)`, which forwards to `j`'s real cluster
//! address; [`Network::identities`] hands each node its peers through the proxies (its own
//! entry is its real address, which it listens on). Every byte between two nodes therefore
//! crosses a proxy, whichever side opened the connection, and each direction `a → b` has its
//! own [`Link`] state:
//! - [`Link::Open`]: bytes flow;
//! - [`Link::Delay`]: each chunk is held for the delay before it is written on;
//! - [`Link::Cut`]: bytes `a → b` are held back (the sender's writes eventually stall, its
//!   reads time out) and new connections in that direction are refused; a cut of both
//!   directions ([`Network::isolate`]) also closes the open connections;
//! - [`Link::Lossy`]: each chunk `a → b` is dropped with the given odds, and a connection
//!   that lost a chunk is closed (a byte stream cannot go on without it), as a flaky link
//!   resets connections.
//!
//! Healing ([`Network::heal`]) reopens every link; held-back bytes then flow, so a connection
//! that survived a one-way cut resumes where it stopped.
//!
//! A network can also stand in front of the nodes' Kafka listeners ([`Network::front`]), for
//! clusters of real broker processes: brokers reach each other's listeners too (replica
//! fetches, heartbeats, forwarded requests), so one proxy serves every source and tells them
//! apart by the client id of a connection's first request — a broker's own calls name it
//! (`switchyard-replica-2`), anything else is a client ([`CLIENTS`]). The bytes of a
//! connection from node `a` to node `b`'s listener follow the same links `a → b` and `b → a`
//! as their consensus traffic, so cutting a link cuts both.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_backend_api::{NodeId, NodeIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::harness::reserve_addr;

/// The state of one direction between two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Bytes flow.
    Open,
    /// Bytes flow, each chunk this much later.
    Delay(Duration),
    /// Bytes are held back.
    Cut,
    /// One chunk in `one_in` is dropped, closing its connection.
    Lossy {
        /// The odds of a drop, 1 in this many chunks (at least 1).
        one_in: u32,
    },
}

/// The node id the Kafka clients of a network speak from: links `CLIENTS → n` and `n → CLIENTS`
/// carry what clients send to node `n`'s listener and what they get back.
pub const CLIENTS: u64 = 0;

/// The most bytes read from a new connection to a Kafka listener before its source is known:
/// a request header with a client id of the longest length Kafka allows.
const MAX_HEADER_BYTES: usize = 4 + 2 + 2 + 4 + 2 + i16::MAX as usize;

/// The proxies of one test cluster. Dropping it stops them (and closes their connections).
#[derive(Debug)]
pub struct Network {
    links: BTreeMap<(u64, u64), watch::Sender<Link>>,
    identities: BTreeMap<u64, NodeIdentity>,
    proxies: JoinSet<()>,
}

impl Network {
    /// Nodes `1..=size` on reserved loopback addresses, every link through a proxy.
    pub async fn start(size: u64) -> anyhow::Result<Self> {
        let mut real = BTreeMap::new();
        for id in 1..=size {
            real.insert(id, reserve_addr()?);
        }
        Self::between(real).await
    }

    /// Proxies between nodes whose cluster addresses are `real` (node id → address; ids from
    /// 1), and the links of each to and from [`CLIENTS`].
    pub async fn between(real: BTreeMap<u64, String>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !real.contains_key(&CLIENTS),
            "node id {CLIENTS} is the clients'"
        );
        let mut links = BTreeMap::new();
        let ends = || std::iter::once(CLIENTS).chain(real.keys().copied());
        for a in ends() {
            for b in ends().filter(|b| *b != a) {
                links.insert((a, b), watch::Sender::new(Link::Open));
            }
        }
        let mut identities = BTreeMap::new();
        let mut proxies = JoinSet::new();
        for &from in real.keys() {
            let mut peers = BTreeMap::from([(NodeId(from), real[&from].clone())]);
            for &to in real.keys().filter(|to| **to != from) {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .context("binding a proxy")?;
                peers.insert(NodeId(to), listener.local_addr()?.to_string());
                let forward = links[&(from, to)].subscribe();
                let back = links[&(to, from)].subscribe();
                proxies.spawn(proxy(listener, real[&to].clone(), forward, back));
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
            proxies,
        })
    }

    /// The identity node `id` opens with.
    pub fn identity(&self, id: u64) -> anyhow::Result<NodeIdentity> {
        self.identities
            .get(&id)
            .cloned()
            .with_context(|| format!("node {id} is not in the network"))
    }

    /// A proxy in front of node `node`'s Kafka listener at `listener`; returns its address,
    /// which the node advertises. Each connection follows the links between `node` and its
    /// source (see the module doc).
    pub async fn front(&mut self, node: u64, listener: String) -> anyhow::Result<String> {
        let mut sources = BTreeMap::new();
        for (&(a, b), state) in &self.links {
            if b == node {
                sources.insert(a, (state.subscribe(), self.links[&(b, a)].subscribe()));
            }
        }
        anyhow::ensure!(!sources.is_empty(), "node {node} is not in the network");
        let front = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a proxy")?;
        let addr = front.local_addr()?.to_string();
        self.proxies.spawn(kafka_front(front, listener, sources));
        Ok(addr)
    }

    /// Set the direction `from → to`.
    pub fn set(&self, from: u64, to: u64, link: Link) {
        if let Some(state) = self.links.get(&(from, to)) {
            state.send_replace(link);
        }
    }

    /// Cut both directions between `node` and every other node (open connections close); its
    /// links with [`CLIENTS`] stay as they are.
    pub fn isolate(&self, node: u64) {
        for ((a, b), state) in &self.links {
            if (*a == node || *b == node) && *a != CLIENTS && *b != CLIENTS {
                state.send_replace(Link::Cut);
            }
        }
    }

    /// Open every link.
    pub fn heal(&self) {
        for state in self.links.values() {
            state.send_replace(Link::Open);
        }
    }
}

/// Accept on `listener` and pipe each connection to `target`: client → server bytes follow
/// `forward`, server → client bytes follow `back`.
async fn proxy(
    listener: TcpListener,
    target: String,
    forward: watch::Receiver<Link>,
    back: watch::Receiver<Link>,
) {
    let mut connections = JoinSet::new();
    while let Ok((inbound, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        if *forward.borrow() == Link::Cut {
            continue;
        }
        connections.spawn(splice(
            inbound,
            Vec::new(),
            target.clone(),
            forward.clone(),
            back.clone(),
        ));
    }
}

/// Accept on `front` and pipe each connection to the Kafka listener `target`, following the
/// links of its source in `sources` (source → the links to and from the listener's node).
async fn kafka_front(
    front: TcpListener,
    target: String,
    sources: BTreeMap<u64, (watch::Receiver<Link>, watch::Receiver<Link>)>,
) {
    let mut connections = JoinSet::new();
    while let Ok((mut inbound, _)) = front.accept().await {
        while connections.try_join_next().is_some() {}
        let target = target.clone();
        let sources = sources.clone();
        connections.spawn(async move {
            let mut header = Vec::new();
            let source = loop {
                let mut chunk = [0u8; 4096];
                match inbound.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => header.extend_from_slice(&chunk[..read]),
                }
                if let Some(source) = source_of(&header) {
                    break source;
                }
                if header.len() >= MAX_HEADER_BYTES {
                    break CLIENTS;
                }
            };
            let source = if sources.contains_key(&source) {
                source
            } else {
                CLIENTS
            };
            let (forward, back) = sources[&source].clone();
            if *forward.borrow() == Link::Cut {
                return;
            }
            splice(inbound, header, target, forward, back).await;
        });
    }
}

/// The node a Kafka connection comes from, once `start` (its first bytes) holds the client id
/// of its first request: the broker `N` of a client id `switchyard-…-N`, else [`CLIENTS`];
/// `None` while the client id is not complete.
fn source_of(start: &[u8]) -> Option<u64> {
    // Size (4), API key (2), version (2), correlation id (4), client id length (2).
    let length = i16::from_be_bytes(start.get(12..14)?.try_into().ok()?);
    let Ok(length) = usize::try_from(length) else {
        return Some(CLIENTS);
    };
    let client_id = start.get(14..14 + length)?;
    let node = std::str::from_utf8(client_id)
        .ok()
        .filter(|id| id.starts_with("switchyard-"))
        .and_then(|id| id.rsplit_once('-'))
        .and_then(|(_, node)| node.parse().ok());
    Some(node.unwrap_or(CLIENTS))
}

/// Pipe `inbound` to a new connection to `target`, `prefix` (bytes already read from
/// `inbound`) first: inbound → target bytes follow `forward`, the answers follow `back`, until
/// either side closes or both directions are cut.
async fn splice(
    inbound: TcpStream,
    prefix: Vec<u8>,
    target: String,
    forward: watch::Receiver<Link>,
    back: watch::Receiver<Link>,
) {
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (client_read, client_write) = inbound.into_split();
    let (server_read, server_write) = outbound.into_split();
    let both_cut = {
        let (mut forward, mut back) = (forward.clone(), back.clone());
        async move {
            loop {
                if *forward.borrow_and_update() == Link::Cut
                    && *back.borrow_and_update() == Link::Cut
                {
                    return;
                }
                tokio::select! {
                    changed = forward.changed() => if changed.is_err() { return },
                    changed = back.changed() => if changed.is_err() { return },
                }
            }
        }
    };
    tokio::select! {
        _ = pump(prefix, client_read, server_write, forward) => {}
        _ = pump(Vec::new(), server_read, client_write, back) => {}
        () = both_cut => {}
    }
}

/// Copy `prefix`, then `from`, to `to` as `link` allows, until either side closes.
async fn pump(
    prefix: Vec<u8>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buffer = vec![0u8; (64 << 10).max(prefix.len())];
    let mut pending = prefix.len();
    buffer[..pending].copy_from_slice(&prefix);
    let mut chunks: u64 = 0;
    loop {
        let read = if pending > 0 {
            std::mem::take(&mut pending)
        } else {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            }
        };
        chunks += 1;
        loop {
            let state = *link.borrow_and_update();
            match state {
                Link::Open => break,
                Link::Lossy { one_in } => {
                    if drops(chunks, read, one_in) {
                        return;
                    }
                    break;
                }
                Link::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Link::Cut => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Whether the `chunk`-th chunk (of `len` bytes) of a connection is dropped on a link that
/// drops one in `one_in`: a hash of the two, so that no shared random state is needed.
fn drops(chunk: u64, len: usize, one_in: u32) -> bool {
    let mut x = chunk.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (len as u64);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    x.is_multiple_of(u64::from(one_in.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on node 2's real address.
    async fn echo(addr: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let listener = TcpListener::bind(addr).await?;
        Ok(tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        }))
    }

    async fn round_trip(stream: &mut TcpStream, byte: u8) -> anyhow::Result<u8> {
        stream.write_all(&[byte]).await?;
        let mut back = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .context("no echo")??;
        Ok(back[0])
    }

    #[tokio::test]
    async fn links_cut_one_way_delay_heal_and_isolate() -> anyhow::Result<()> {
        let network = Network::start(2).await?;
        let two = network.identity(2)?;
        let _server = echo(two.cluster_addr.as_deref().context("address")?).await?;
        let via = network.identity(1)?.peers[&NodeId(2)].clone();
        let mut stream = TcpStream::connect(&via).await?;
        assert_eq!(round_trip(&mut stream, 1).await?, 1);

        // The way back is cut: the echo is held, then delivered after healing.
        network.set(2, 1, Link::Cut);
        stream.write_all(&[2]).await?;
        let mut back = [0u8; 1];
        let held =
            tokio::time::timeout(Duration::from_millis(200), stream.read_exact(&mut back)).await;
        assert!(held.is_err(), "a byte crossed a cut link");
        network.heal();
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .context("held byte never arrived")??;
        assert_eq!(back[0], 2);

        network.set(1, 2, Link::Delay(Duration::from_millis(100)));
        let started = tokio::time::Instant::now();
        assert_eq!(round_trip(&mut stream, 3).await?, 3);
        assert!(started.elapsed() >= Duration::from_millis(100));
        network.heal();

        // Isolation closes the connection and refuses new ones until healed.
        network.isolate(1);
        let mut closed = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut closed))
            .await
            .context("the isolated connection stayed open")?;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let mut refused = TcpStream::connect(&via).await?;
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut closed))
            .await
            .context("a connection across a cut link stayed open")?;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        network.heal();
        let mut again = TcpStream::connect(&via).await?;
        assert_eq!(round_trip(&mut again, 4).await?, 4);

        // A link that drops every chunk closes the connection at the first one.
        network.set(1, 2, Link::Lossy { one_in: 1 });
        again.write_all(&[5]).await?;
        let read = tokio::time::timeout(Duration::from_secs(5), again.read(&mut closed))
            .await
            .context("a connection that lost a chunk stayed open")?;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        network.heal();
        Ok(())
    }

    /// The first bytes of a Kafka request with client id `client_id`.
    fn request_start(client_id: &str) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0, 99, 0, 1, 0, 12, 0, 0, 0, 7];
        bytes.extend_from_slice(
            &i16::try_from(client_id.len())
                .expect("a short id")
                .to_be_bytes(),
        );
        bytes.extend_from_slice(client_id.as_bytes());
        bytes
    }

    #[test]
    fn a_connection_comes_from_the_broker_its_client_id_names() {
        assert_eq!(source_of(&request_start("switchyard-replica-2")), Some(2));
        assert_eq!(
            source_of(&request_start("switchyard-forwarded-from-13")),
            Some(13)
        );
        assert_eq!(source_of(&request_start("rdkafka")), Some(CLIENTS));
        assert_eq!(source_of(&request_start("switchyard-cli")), Some(CLIENTS));
        let full = request_start("switchyard-broker-3");
        assert_eq!(source_of(&full[..full.len() - 1]), None);
        assert_eq!(source_of(&full[..10]), None);
        let mut null = request_start("");
        null[12..14].copy_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(source_of(&null), Some(CLIENTS));
    }

    #[tokio::test]
    async fn a_kafka_front_follows_the_links_of_each_connections_source() -> anyhow::Result<()> {
        let mut network = Network::start(2).await?;
        let listener = reserve_addr()?;
        let _server = echo(&listener).await?;
        let front = network.front(2, listener).await?;
        let mut broker = TcpStream::connect(&front).await?;
        let mut client = TcpStream::connect(&front).await?;
        let (from_broker, from_client) =
            (request_start("switchyard-replica-1"), request_start("kcat"));
        broker.write_all(&from_broker).await?;
        client.write_all(&from_client).await?;
        let mut echoed = vec![0u8; from_broker.len()];
        broker.read_exact(&mut echoed).await?;
        let mut echoed = vec![0u8; from_client.len()];
        client.read_exact(&mut echoed).await?;

        // Isolating node 1 closes the broker's connection; the client's stays.
        network.isolate(1);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), broker.read(&mut byte))
            .await
            .context("the isolated broker's connection stayed open")?;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(round_trip(&mut client, 7).await?, 7);

        // Cutting the clients from node 2 holds their bytes until healed.
        network.set(CLIENTS, 2, Link::Cut);
        client.write_all(&[8]).await?;
        let held =
            tokio::time::timeout(Duration::from_millis(200), client.read_exact(&mut byte)).await;
        assert!(held.is_err(), "a byte crossed a cut link");
        network.heal();
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut byte))
            .await
            .context("held byte never arrived")??;
        assert_eq!(byte[0], 8);
        Ok(())
    }

    #[test]
    fn lossy_links_drop_about_the_asked_share() {
        let dropped = (1..=10_000).filter(|c| drops(*c, 100, 4)).count();
        assert!(
            (2_000..3_000).contains(&dropped),
            "{dropped} of 10000 at 1 in 4"
        );
        assert!((1..=100).all(|c| drops(c, 7, 1)));
    }
}
