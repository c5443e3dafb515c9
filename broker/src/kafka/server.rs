//! The Kafka listeners (`listeners`, each with its name and security protocol): one task per
//! connection, requests answered one at a time in the order they arrived (so pipelined
//! requests get their responses in order, as Kafka does), frame size capped, idle and stalled
//! connections closed.
//!
//! Memory and descriptors are bounded whatever clients send: connections are capped in total
//! (`max.connections`) and per IP (`max.connections.per.ip`); a frame's buffer grows as its
//! bytes arrive instead of being allocated at the size its header claims; and all requests in
//! memory at once — read, decoded or being answered — share one budget of
//! `queued.max.request.bytes`, a connection waiting to read its next request until it fits.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use switchyard_backend_api::net::accept;
use switchyard_backend_api::warn_throttled;
use switchyard_log::FileSlice;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, Interest,
};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::config::KafkaSettings;
use crate::kafka::dispatch::{self, Reply};
use crate::kafka::frame::{Frame, Part};
use crate::kafka::sasl::{ListenerSecurity, Session};
use crate::kafka::tls;
use crate::telemetry;

/// The first allocation for a frame; it grows as more bytes arrive.
const INITIAL_FRAME_CAPACITY: usize = 64 * 1024;

/// Open connections, in total and per IP.
#[derive(Debug)]
struct Connections {
    max: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Total(usize),
    PerIp(usize),
}

impl Connections {
    fn new(settings: &KafkaSettings) -> Self {
        Self {
            max: settings.max_connections,
            max_per_ip: settings.max_connections_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *open;
        if *total >= self.max {
            return Err(Refused::Total(self.max));
        }
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refused::PerIp(self.max_per_ip));
        }
        *from_ip += 1;
        *total += 1;
        Ok(Admitted {
            connections: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Once a frame has started, the rest must arrive within this long.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake must finish within this long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A response must be written within this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping listener waits for requests in flight to be answered.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener connections arrive on: its name (what Metadata answers are chosen by), how
/// it authenticates, and whether it is the inter-broker listener (the only one that serves
/// replica fetches and broker heartbeats).
#[derive(Debug)]
pub struct Listener {
    /// The listener name.
    pub name: String,
    /// How connections to it authenticate.
    pub security: ListenerSecurity,
    /// Whether brokers connect to each other on it.
    pub inter_broker: bool,
}

/// Accept connections on every listener until `shutdown` turns true; then stop accepting,
/// let every connection finish the request it is answering (idle ones close at once), and
/// return once all are closed — or after [`DRAIN_TIMEOUT`], closing the rest. The connection
/// limits count every listener's connections together.
pub async fn serve(
    listeners: Vec<(TcpListener, Arc<Listener>)>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (accepted_tx, mut accepted) = mpsc::channel(64);
    let mut acceptors = JoinSet::new();
    for (tcp, listener) in listeners {
        let accepted_tx = accepted_tx.clone();
        acceptors.spawn(async move {
            loop {
                let (stream, peer) = accept(&tcp, "kafka").await;
                if accepted_tx
                    .send((stream, peer, Arc::clone(&listener)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    drop(accepted_tx);
    let mut open = JoinSet::new();
    let stopping = shutdown.clone();
    let connections = Arc::new(Connections::new(broker.settings()));
    loop {
        tokio::select! {
            Some((stream, peer, listener)) = accepted.recv() => {
                let admitted = match connections.admit(peer.ip()) {
                    Ok(admitted) => admitted,
                    Err(refused) => {
                        let limit = match refused {
                            Refused::Total(_) => "total",
                            Refused::PerIp(_) => "per_ip",
                        };
                        metrics::counter!(telemetry::KAFKA_CONNECTIONS_REJECTED, "limit" => limit).increment(1);
                        warn_throttled!(%peer, ?refused, "connection limit reached; closing a new connection");
                        continue;
                    }
                };
                debug!(%peer, listener = %listener.name, "connection accepted");
                let broker = Arc::clone(&broker);
                let stopping = stopping.clone();
                let name = listener.name.clone();
                metrics::counter!(telemetry::KAFKA_CONNECTIONS_ACCEPTED, "listener" => name.clone()).increment(1);
                let open_gauge = metrics::gauge!(telemetry::KAFKA_CONNECTIONS, "listener" => name);
                open_gauge.increment(1.0);
                open.spawn(async move {
                    if let Err(e) = secure(stream, peer, broker, listener, stopping).await {
                        debug!(%peer, error = %e, "connection closed");
                    }
                    open_gauge.decrement(1.0);
                    drop(admitted);
                });
            },
            Some(_) = open.join_next(), if !open.is_empty() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    // Aborting the acceptors drops their sockets: nothing more is accepted.
    acceptors.shutdown().await;
    drop(accepted);
    let in_flight = open.len();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while open.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = open.len(),
            "requests still in flight after the drain timeout; closing their connections"
        );
        open.shutdown().await;
    }
    info!(connections = in_flight, "Kafka listener stopped");
}

/// Run the TLS handshake where the listener speaks TLS (within [`TLS_HANDSHAKE_TIMEOUT`]),
/// then serve the connection.
async fn secure(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    listener: Arc<Listener>,
    stopping: watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let protocol = listener.security.protocol;
    let Some(tls) = listener.security.tls.clone() else {
        let session = Session::new(protocol, None);
        let (read, write) = stream.into_split();
        let write = Plain(BufWriter::new(write));
        return connection(read, write, session, peer, broker, listener, stopping).await;
    };
    let stream =
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                warn_throttled!(%peer, %error, "TLS handshake failed; closing connection");
                return Ok(());
            }
            Err(_) => {
                warn_throttled!(%peer, "TLS handshake not finished in time; closing connection");
                return Ok(());
            }
        };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(tls::subject_of);
    let session = Session::new(protocol, certificate);
    let (read, write) = tokio::io::split(stream);
    let write = Copying(BufWriter::new(write));
    connection(read, write, session, peer, broker, listener, stopping).await
}

async fn connection<R: AsyncRead + Unpin, W: Sink>(
    read: R,
    mut write: W,
    mut session: Session,
    peer: SocketAddr,
    broker: Arc<Broker>,
    listener: Arc<Listener>,
    mut stopping: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut read = BufReader::new(read);
    let idle = Duration::from_millis(broker.settings().connections_max_idle_ms);
    let max = broker.settings().socket_request_max_bytes;
    let received =
        metrics::counter!(telemetry::KAFKA_RECEIVED_BYTES, "listener" => listener.name.clone());
    let sent = metrics::counter!(telemetry::KAFKA_SENT_BYTES, "listener" => listener.name.clone());
    loop {
        // Between requests a stopping listener closes the connection; a request already read
        // is answered first.
        let next = tokio::select! {
            next = tokio::time::timeout(idle, read.read_i32()) => next,
            _ = stopping.wait_for(|stop| *stop) => return Ok(()),
        };
        let length = match next {
            Ok(Ok(length)) => length,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                debug!(%peer, "closing idle connection");
                return Ok(());
            }
        };
        let Ok(length) = u32::try_from(length) else {
            warn_throttled!(%peer, length, "negative frame length; closing connection");
            return Ok(());
        };
        if length > max {
            warn_throttled!(%peer, length, max, "frame larger than socket.request.max.bytes; closing connection");
            return Ok(());
        }
        // Held until the response is written: the request's bytes, decoded form and answer
        // are in memory until then.
        let Ok(_permit) = broker.request_budget().acquire_many(length).await else {
            return Ok(());
        };
        let mut frame = Vec::with_capacity((length as usize).min(INITIAL_FRAME_CAPACITY));
        let mut body = (&mut read).take(u64::from(length));
        match tokio::time::timeout(FRAME_READ_TIMEOUT, body.read_to_end(&mut frame)).await {
            Ok(Ok(n)) if n == length as usize => received.increment(u64::from(length) + 4),
            Ok(Ok(_)) => {
                warn_throttled!(%peer, length, "connection closed inside a frame (truncated request)");
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                warn_throttled!(%peer, length, "request not received in time; closing connection");
                return Ok(());
            }
        }
        match dispatch::handle(&broker, &listener, &mut session, peer, Bytes::from(frame)).await {
            Reply::Respond(response) => {
                sent.increment(response.len() + 4);
                if !respond(&mut write, &response, peer).await? {
                    return Ok(());
                }
            }
            Reply::RespondThenClose(response) => {
                sent.increment(response.len() + 4);
                respond(&mut write, &response, peer).await?;
                return Ok(());
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                warn_throttled!(%peer, %reason, "bad request; closing connection");
                return Ok(());
            }
        }
    }
}

/// Write one response frame within [`WRITE_TIMEOUT`]; `false` when the client is not reading
/// (the caller closes the connection).
async fn respond<W: Sink>(write: &mut W, response: &Frame, peer: SocketAddr) -> io::Result<bool> {
    let length = u32::try_from(response.len()).map_err(io::Error::other)?;
    let files = response.parts().iter().any(|p| matches!(p, Part::File(_)));
    let written = async {
        if files {
            write.hold(true)?;
        }
        let out = write.buffered();
        out.write_u32(length).await?;
        for part in response.parts() {
            match part {
                Part::Bytes(bytes) => write.buffered().write_all(bytes).await?,
                Part::File(slice) => write.write_file(slice).await?,
            }
        }
        write.buffered().flush().await?;
        if files {
            write.hold(false)?;
        }
        Ok(())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, written).await {
        Ok(result) => result.map(|()| true),
        Err(_) => {
            warn_throttled!(%peer, "client not reading responses; closing connection");
            Ok(false)
        }
    }
}

/// Where a connection writes its responses: a buffered stream, and a way to send a range of a
/// segment file after what the buffer holds.
trait Sink: Send + Unpin {
    type Write: AsyncWrite + Unpin + Send;

    /// The buffered stream.
    fn buffered(&mut self) -> &mut BufWriter<Self::Write>;

    /// Sends `slice` after everything written so far.
    fn write_file(&mut self, slice: &FileSlice) -> impl Future<Output = io::Result<()>> + Send;

    /// Hold back partly filled packets while a response is written in pieces (`true`), and
    /// send what is held (`false`).
    fn hold(&mut self, on: bool) -> io::Result<()>;
}

/// A plaintext TCP connection: file ranges go from the page cache to the socket with
/// `sendfile`, never through the broker's memory. A range no longer in the page cache is read
/// from disk inside `sendfile`, on the connection's worker thread (as Kafka's network threads
/// do); the socket side never blocks, it waits for writability.
struct Plain(BufWriter<OwnedWriteHalf>);

impl Sink for Plain {
    type Write = OwnedWriteHalf;

    fn buffered(&mut self) -> &mut BufWriter<OwnedWriteHalf> {
        &mut self.0
    }

    async fn write_file(&mut self, slice: &FileSlice) -> io::Result<()> {
        self.0.flush().await?;
        let socket: &TcpStream = self.0.get_ref().as_ref();
        let mut position = slice.position();
        let end = position + slice.len();
        while position < end {
            socket.writable().await?;
            let count = usize::try_from(end - position).unwrap_or(usize::MAX);
            let sent = socket.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(socket, slice.file(), Some(&mut position), count)
                    .map_err(io::Error::from)
            });
            match sent {
                // The file is shorter than when it was sliced: a follower cut its log. The
                // frame's length is already sent, so the connection cannot go on.
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "segment file truncated while its records were being sent",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `TCP_CORK`: a response's header bytes, each range of a file and the bytes between
    /// them would otherwise leave as packets of their own (the connection sets `TCP_NODELAY`),
    /// and the client would wake up to read each one.
    fn hold(&mut self, on: bool) -> io::Result<()> {
        let socket: &TcpStream = self.0.get_ref().as_ref();
        rustix::net::sockopt::set_tcp_cork(socket, on).map_err(io::Error::from)
    }
}

/// A TLS connection: the records must be encrypted, so file ranges are read and written.
struct Copying<W>(BufWriter<W>);

impl<W: AsyncWrite + Unpin + Send> Sink for Copying<W> {
    type Write = W;

    fn buffered(&mut self) -> &mut BufWriter<W> {
        &mut self.0
    }

    async fn write_file(&mut self, slice: &FileSlice) -> io::Result<()> {
        let slice = slice.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            slice.read_into(&mut bytes).map(|()| bytes)
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
        self.0.write_all(&bytes).await
    }

    /// Nothing to hold: the records go through the buffer with the rest of the response.
    fn hold(&mut self, _on: bool) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use switchyard_log::batch::testing::batch;
    use switchyard_log::{LogConfig, PartitionLog};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::kafka::frame::{FileRecords, encode_fetch};

    /// A plaintext response with records from the files reaches the client whole, byte for
    /// byte what its parts hold, and leaves nothing held back on the socket for the next one.
    #[tokio::test]
    async fn a_response_from_the_files_arrives_whole_and_nothing_stays_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open log");
        for i in 0..20u8 {
            log.append(&batch(1_000, &[&vec![i; 3_000]]), 1, 1_000)
                .expect("append");
        }
        let slices = log.slices_until(0, 1 << 20, 20).expect("slices");
        let mut files = FileRecords::default();
        let records = files.hold(slices);
        let partition = PartitionData::default()
            .with_high_watermark(20)
            .with_records(Some(records));
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![partition]),
        ]);
        let header = ResponseHeader::default().with_correlation_id(7);
        let frame = encode_fetch(&header, 0, &response, 4, files).expect("encode");
        let expected = frame.flatten();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        server.set_nodelay(true).expect("nodelay");
        let (_read, write) = server.into_split();
        let mut sink = Plain(BufWriter::new(write));
        assert!(respond(&mut sink, &frame, peer).await.expect("respond"));
        let socket: &TcpStream = sink.0.get_ref().as_ref();
        assert!(
            !rustix::net::sockopt::tcp_cork(socket).expect("TCP_CORK"),
            "the response's last packet is sent, not held"
        );

        let length = client.read_u32().await.expect("length");
        assert_eq!(u64::from(length), frame.len());
        let mut body = vec![0; expected.len()];
        client.read_exact(&mut body).await.expect("body");
        assert_eq!(body, expected);
    }
}
