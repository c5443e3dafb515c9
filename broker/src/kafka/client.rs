//! A Kafka-protocol client for broker-to-broker calls (heartbeats to the metadata leader's
//! broker): one connection, reopened on failure, one request in flight, every step under a
//! deadline.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest response accepted.
const MAX_RESPONSE_BYTES: u32 = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer did not decode or did not match the request.
    #[error("bad response: {0}")]
    Protocol(String),
}

/// A connection to one broker's Kafka listener.
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    client_id: StrBytes,
    timeout: Duration,
    connection: Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)>,
    correlation_id: i32,
}

impl PeerClient {
    /// A client for the broker at `addr` (`HOST:PORT`); connects on the first call.
    pub fn new(addr: String, client_id: String, timeout: Duration) -> Self {
        Self {
            addr,
            client_id: StrBytes::from_string(client_id),
            timeout,
            connection: None,
            correlation_id: 0,
        }
    }

    /// The address it calls.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send `request` at `version` and read its response. A failure closes the connection;
    /// the next call opens a new one.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, CallError> {
        let result = tokio::time::timeout(self.timeout, self.exchange(request, version)).await;
        let result = result.unwrap_or(Err(CallError::Timeout(self.timeout)));
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, CallError> {
        let key = ApiKey::try_from(R::KEY)
            .map_err(|()| CallError::Protocol(format!("unknown API key {}", R::KEY)))?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let mut frame = BytesMut::new();
        let encoded = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()))
            .encode(&mut frame, key.request_header_version(version))
            .and_then(|()| request.encode(&mut frame, version));
        encoded.map_err(|e| CallError::Protocol(format!("encoding {key:?}: {e}")))?;
        let length = u32::try_from(frame.len())
            .map_err(|_| CallError::Protocol("request too large".into()))?;

        if self.connection.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            let (read, write) = stream.into_split();
            self.connection = Some((BufReader::new(read), write));
        }
        let Some((read, write)) = self.connection.as_mut() else {
            return Err(CallError::Protocol("no connection".into()));
        };
        write.write_u32(length).await?;
        write.write_all(&frame).await?;
        write.flush().await?;

        let length = read.read_u32().await?;
        if length > MAX_RESPONSE_BYTES {
            return Err(CallError::Protocol(format!(
                "response of {length} bytes is larger than {MAX_RESPONSE_BYTES}"
            )));
        }
        let mut body = vec![0; length as usize];
        read.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(|e| CallError::Protocol(format!("{key:?} response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(CallError::Protocol(format!(
                "correlation id {} answers request {correlation_id}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version)
            .map_err(|e| CallError::Protocol(format!("{key:?} response: {e}")))
    }
}
