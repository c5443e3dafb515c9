//! The Kafka listener: one task per connection, requests answered one at a time in the order
//! they arrived (so pipelined requests get their responses in order, as Kafka does), frame size
//! capped, idle and stalled connections closed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::kafka::dispatch::{self, Reply};

/// Once a frame has started, the rest must arrive within this long.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A response must be written within this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "connection accepted");
                    let broker = Arc::clone(&broker);
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, broker).await {
                            debug!(%peer, error = %e, "connection closed");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = shutdown.wait_for(|stop| *stop) => {
                info!("Kafka listener stopped");
                return;
            }
        }
    }
}

async fn connection(stream: TcpStream, broker: Arc<Broker>) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    let idle = Duration::from_millis(broker.settings().connections_max_idle_ms);
    let max = broker.settings().socket_request_max_bytes;
    loop {
        let length = match tokio::time::timeout(idle, read.read_i32()).await {
            Ok(Ok(length)) => length,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                debug!(%peer, "closing idle connection");
                return Ok(());
            }
        };
        let Ok(length) = u32::try_from(length) else {
            warn!(%peer, length, "negative frame length; closing connection");
            return Ok(());
        };
        if length > max {
            warn!(%peer, length, max, "frame larger than socket.request.max.bytes; closing connection");
            return Ok(());
        }
        let mut frame = vec![0; length as usize];
        match tokio::time::timeout(FRAME_READ_TIMEOUT, read.read_exact(&mut frame)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                warn!(%peer, length, "connection closed inside a frame (truncated request)");
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                warn!(%peer, length, "request not received in time; closing connection");
                return Ok(());
            }
        }
        match dispatch::handle(&broker, peer, Bytes::from(frame)).await {
            Reply::Respond(response) => {
                let length = u32::try_from(response.len()).map_err(io::Error::other)?;
                let written = async {
                    write.write_u32(length).await?;
                    write.write_all(&response).await?;
                    write.flush().await
                };
                match tokio::time::timeout(WRITE_TIMEOUT, written).await {
                    Ok(result) => result?,
                    Err(_) => {
                        warn!(%peer, "client not reading responses; closing connection");
                        return Ok(());
                    }
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                warn!(%peer, %reason, "bad request; closing connection");
                return Ok(());
            }
        }
    }
}
