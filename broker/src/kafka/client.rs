//! A Kafka-protocol client for broker-to-broker calls (heartbeats to the metadata leader's
//! broker, replica fetches) and operators' commands: one connection, reopened on failure, one
//! request in flight, every step under a deadline. On a SASL listener a new connection first
//! authenticates with the cluster secret (`SWITCHYARD-CLUSTER`).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use switchyard_backend_api::tls::server_name;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;

use crate::kafka::sasl::{CLUSTER_MECHANISM, PeerCredentials};
use crate::kafka::tls::TlsClient;

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
    /// The listener refused this client's authentication.
    #[error("authentication refused: {0}")]
    Authentication(String),
}

/// A connection to one broker's Kafka listener.
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    client_id: StrBytes,
    timeout: Duration,
    connection: Option<Connection>,
    correlation_id: i32,
    credentials: Option<PeerCredentials>,
    plaintext_ok: bool,
    tls: Option<TlsClient>,
}

/// An open connection's buffered reading half and writing half.
type Connection = (BufReader<ReadHalf<Box<dyn Io>>>, WriteHalf<Box<dyn Io>>);

/// A connection's byte stream: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

impl CallError {
    /// The error, with a hint when an unauthenticated client was cut off: what a SASL
    /// listener does to a request that comes before authentication.
    pub fn explained(&self, authenticated: bool) -> String {
        match self {
            Self::Io(e) if !authenticated && e.kind() == io::ErrorKind::UnexpectedEof => format!(
                "{e} (the listener closed the connection: a SASL listener needs \
                 --cluster-secret-file)"
            ),
            other => other.to_string(),
        }
    }
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
            credentials: None,
            plaintext_ok: false,
            tls: None,
        }
    }

    /// Speak TLS to the listener (`SSL`, `SASL_SSL`), verifying it by its address.
    pub fn with_tls(mut self, tls: Option<TlsClient>) -> Self {
        self.tls = tls;
        self
    }

    /// Go on without authenticating when the listener turns out to take no SASL (an
    /// operator's command, given the secret, pointed at a PLAINTEXT listener). Brokers never
    /// do: a broker that expects SASL does not talk to a listener without it.
    pub fn plaintext_ok(mut self) -> Self {
        self.plaintext_ok = true;
        self
    }

    /// Authenticate every new connection with `credentials` (a SASL listener); `None` for a
    /// PLAINTEXT one.
    pub fn with_credentials(mut self, credentials: Option<PeerCredentials>) -> Self {
        self.credentials = credentials;
        self
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
        if self.connection.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            let stream: Box<dyn Io> = match &self.tls {
                Some(tls) => {
                    let name = server_name(&self.addr).map_err(CallError::Protocol)?;
                    Box::new(tls.0.connect(name, stream).await?)
                }
                None => Box::new(stream),
            };
            let (read, write) = tokio::io::split(stream);
            self.connection = Some((BufReader::new(read), write));
            if let Some(credentials) = self.credentials.clone() {
                self.authenticate(&credentials).await?;
            }
        }
        self.round_trip(request, version).await
    }

    /// The client side of `SWITCHYARD-CLUSTER`: SaslHandshake, then the hello and the proof
    /// in two SaslAuthenticate requests.
    async fn authenticate(&mut self, credentials: &PeerCredentials) -> Result<(), CallError> {
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(CLUSTER_MECHANISM));
        let answer = self.round_trip(&handshake, 1).await?;
        if self.plaintext_ok && answer.error_code == ResponseError::IllegalSaslState.code() {
            return Ok(());
        }
        if answer.error_code != 0 {
            return Err(CallError::Authentication(format!(
                "the listener does not take {CLUSTER_MECHANISM} (error {}; it offers {:?})",
                answer.error_code, answer.mechanisms
            )));
        }
        let (client, hello) = credentials.start();
        let challenge = self.sasl_token(hello).await?;
        let (_, proof) = client
            .answer(&challenge)
            .map_err(|e| CallError::Authentication(e.to_string()))?;
        self.sasl_token(proof).await.map(drop)
    }

    async fn sasl_token(&mut self, token: Vec<u8>) -> Result<Bytes, CallError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let answer = self.round_trip(&request, 1).await?;
        if answer.error_code != 0 {
            return Err(CallError::Authentication(answer.error_message.map_or_else(
                || format!("error {}", answer.error_code),
                |m| m.to_string(),
            )));
        }
        Ok(answer.auth_bytes)
    }

    async fn round_trip<R: Request>(
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

        let Some((read, write)) = self.connection.as_mut() else {
            return Err(CallError::Protocol("no connection".into()));
        };
        write.write_u32(length).await?;
        write.write_all(&frame).await?;
        write.flush().await?;

        let length = read.read_u32().await?;
        // A TLS record (an alert or a handshake, version 3.x) where a length should be: the
        // listener speaks TLS and this client does not.
        if self.tls.is_none() && matches!(length >> 16, 0x1503 | 0x1603) {
            return Err(CallError::Protocol(
                "the listener answered with TLS: connect with TLS (--ssl-truststore-location)"
                    .into(),
            ));
        }
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
