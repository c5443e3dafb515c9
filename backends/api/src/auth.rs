//! Cluster authentication: the handshake every connection between nodes — and from an
//! operator's `switchyard cluster …` command — runs before anything else is read from it.
//!
//! Both ends hold the same [`ClusterSecret`]. The handshake is a mutual challenge–response
//! with HMAC-SHA-256 over fresh nonces from both sides:
//!
//! 1. the connecting side sends `HELLO`: magic, version, who it claims to be (a node id, or
//!    the operator), the node it means to reach, and a fresh 32-byte nonce;
//! 2. the listening side answers `CHALLENGE`: its own node id, its fresh nonce, and its proof
//!    — the MAC of the whole exchange under the label `server`;
//! 3. the connecting side checks that proof (so it never talks to a node without the secret)
//!    and sends its own — the MAC of the same exchange under the label `client`;
//! 4. the listening side checks it and answers one verdict byte.
//!
//! The MACs bind both nonces and both identities: a recorded proof is useless on a new
//! connection (the other side's nonce differs), a proof cannot be reflected back (the labels
//! differ), and the claimed node id cannot be changed without the secret. After the
//! handshake the listening side knows which member (or the operator) it talks to, and each
//! backend accepts from that connection only what that member may send.
//!
//! What the handshake alone does not do: encrypt or sign the frames that follow. Someone who
//! can rewrite TCP segments between two nodes (on the path, not merely on the network) can
//! still tamper with an authenticated connection; cluster TLS ([`ClusterTls`], mutual, with
//! the handshake inside it) is the protection against that. [`ClusterCredentials`] holds
//! both and runs them in order.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::MetadataError;
use crate::ids::NodeId;
use crate::tls::{ClusterStream, ClusterTls};

/// Shortest secret accepted, in bytes (after trimming surrounding whitespace).
pub const MIN_SECRET_BYTES: usize = 32;

/// How long a whole handshake may take: a connection that stalls is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to make a secret, quoted by every error about a missing or bad one.
pub const MAKE_A_SECRET: &str = "make one with `head -c 32 /dev/urandom | base64 > cluster.secret` \
     (mode 0600), copy the same file to every node and to where `switchyard cluster` runs, \
     and pass it as --cluster-secret-file (config `cluster_secret_file`, env \
     SWITCHYARD_CLUSTER_SECRET_FILE)";

const MAGIC: [u8; 4] = *b"SYCA";
const VERSION: u8 = 1;
const NONCE: usize = 32;
const TAG: usize = 32;
const HELLO_LEN: usize = 4 + 1 + 1 + 8 + 8 + NONCE;
const CHALLENGE_LEN: usize = 4 + 1 + 8 + NONCE + TAG;
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// The secret every node of a cluster shares. Its bytes never appear in `Debug` output or
/// logs.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl ClusterSecret {
    /// A secret from its bytes; surrounding whitespace (a file's trailing newline) is not part
    /// of it. Shorter than [`MIN_SECRET_BYTES`] is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetadataError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(MetadataError::Config(format!(
                "the cluster secret has {} bytes; at least {MIN_SECRET_BYTES} are needed: {MAKE_A_SECRET}",
                trimmed.len()
            )));
        }
        Ok(Self(Arc::from(trimmed)))
    }

    /// Read a secret file. A file others may read is used, with a warning.
    pub fn from_file(path: &Path) -> Result<Self, MetadataError> {
        let bytes = std::fs::read(path).map_err(|e| {
            MetadataError::Config(format!(
                "cannot read the cluster secret file {}: {e}; {MAKE_A_SECRET}",
                path.display()
            ))
        })?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the cluster secret file can be read by other users; `chmod 600` it"
                );
            }
        }
        Self::from_bytes(&bytes).map_err(|e| {
            MetadataError::Config(format!("cluster secret file {}: {e}", path.display()))
        })
    }

    /// A fresh random secret (tests and tools that start clusters of their own).
    pub fn generate() -> Self {
        let mut bytes = [0u8; MIN_SECRET_BYTES];
        fill_random(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(Arc::from(hex.as_bytes()))
    }

    /// The secret as written to a file: what [`Self::from_file`] reads back.
    pub fn to_file_contents(&self) -> Vec<u8> {
        let mut contents = self.0.to_vec();
        contents.push(b'\n');
        contents
    }

    fn mac(&self, label: &[u8], transcript: &Transcript) -> Hmac<Sha256> {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        mac.update(b"switchyard cluster authentication v1 ");
        mac.update(label);
        mac.update(&transcript.bytes());
        mac
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// What a node (or an operator's command) proves itself with on cluster connections: the
/// shared secret, always, and this node's TLS identity when cluster TLS is on.
#[derive(Debug, Clone)]
pub struct ClusterCredentials {
    /// The cluster secret the handshake proves.
    pub secret: ClusterSecret,
    /// Mutual TLS around every cluster connection, when configured.
    pub tls: Option<ClusterTls>,
}

impl From<ClusterSecret> for ClusterCredentials {
    fn from(secret: ClusterSecret) -> Self {
        Self { secret, tls: None }
    }
}

impl ClusterCredentials {
    /// The connecting side over `tcp`, connected to `addr`: TLS when configured, then the
    /// handshake of [`connect`], all within `deadline`. The stream then carries the backend's
    /// own protocol.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: &str,
        me: Principal,
        target: NodeId,
        deadline: Duration,
    ) -> Result<ClusterStream, AuthError> {
        within(deadline, async {
            let mut stream = match &self.tls {
                Some(tls) => tls.connect(tcp, addr).await.map_err(AuthError::Tls)?,
                None => ClusterStream::Plain(tcp),
            };
            connect(&mut stream, &self.secret, me, target, deadline).await?;
            Ok(stream)
        })
        .await
    }

    /// The listening side, node `me`, over `tcp`: TLS when configured, then the handshake of
    /// [`accept`], all within `deadline`. Returns the stream and who is at its other end.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        me: NodeId,
        deadline: Duration,
    ) -> Result<(ClusterStream, Principal), AuthError> {
        within(deadline, async {
            let mut stream = match &self.tls {
                Some(tls) => tls.accept(tcp).await.map_err(AuthError::Tls)?,
                None => ClusterStream::Plain(tcp),
            };
            let principal = accept(&mut stream, &self.secret, me, deadline).await?;
            Ok((stream, principal))
        })
        .await
    }
}

/// Who the connecting side of a handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A member node, by id.
    Node(NodeId),
    /// An operator's command (`switchyard cluster …`), which is no node.
    Operator,
}

impl Principal {
    fn kind(self) -> u8 {
        match self {
            Self::Node(_) => 1,
            Self::Operator => 2,
        }
    }

    fn id(self) -> u64 {
        match self {
            Self::Node(id) => id.0,
            Self::Operator => 0,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(id) => write!(f, "node {id}"),
            Self::Operator => f.write_str("an operator"),
        }
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (no certificate, one the CA did not sign, one for another
    /// host, or a peer that does not speak TLS).
    #[error("cluster TLS: {0}")]
    Tls(std::io::Error),
    /// The handshake took longer than allowed.
    #[error("the cluster handshake did not finish within {0:?}")]
    Timeout(Duration),
    /// The other side does not speak this handshake: an older version, or not a Switchyard
    /// cluster port at all.
    #[error(
        "the peer does not speak cluster authentication v{VERSION} (not a Switchyard {0} of this version)"
    )]
    Protocol(&'static str),
    /// The other side's proof does not verify: its secret differs from ours.
    #[error("{0}: the cluster secrets differ")]
    WrongSecret(String),
    /// The listening side checked our proof and refused it.
    #[error("the peer refused our proof of the cluster secret")]
    Refused,
    /// The listening side closed the connection before it answered the hello.
    #[error(
        "the peer closed the connection before answering: it may use cluster TLS (this side \
         does not), or not be a Switchyard cluster port of this version"
    )]
    HungUp,
    /// The listening side is not the node we meant to reach, or we are not the one it serves.
    #[error("{0}")]
    Misdirected(String),
}

impl From<AuthError> for MetadataError {
    fn from(error: AuthError) -> Self {
        MetadataError::Network(format!("cluster authentication failed: {error}"))
    }
}

/// The values both MACs cover, in a fixed layout.
#[derive(Debug)]
struct Transcript {
    client: Principal,
    target: NodeId,
    server: NodeId,
    client_nonce: [u8; NONCE],
    server_nonce: [u8; NONCE],
}

impl Transcript {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 * 3 + 2 * NONCE);
        out.push(self.client.kind());
        out.extend_from_slice(&self.client.id().to_be_bytes());
        out.extend_from_slice(&self.target.0.to_be_bytes());
        out.extend_from_slice(&self.server.0.to_be_bytes());
        out.extend_from_slice(&self.client_nonce);
        out.extend_from_slice(&self.server_nonce);
        out
    }
}

fn fill_random(bytes: &mut [u8]) {
    // The operating system's generator failing is not something a node can carry on without.
    getrandom::fill(bytes).unwrap_or_else(|e| panic!("the OS random generator failed: {e}"));
}

async fn within<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, AuthError>>,
) -> Result<T, AuthError> {
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| AuthError::Timeout(deadline))?
}

/// The connecting side of one handshake, between sending its hello and sending its proof.
/// The exchange itself, without I/O: [`connect`] runs it over a stream, the Kafka listener's
/// inter-broker SASL mechanism inside `SaslAuthenticate`.
#[derive(Debug)]
pub struct ClientHandshake {
    secret: ClusterSecret,
    me: Principal,
    target: NodeId,
    client_nonce: [u8; NONCE],
}

impl ClientHandshake {
    /// Start a handshake from `me` to node `target` (`NodeId(0)`: whichever node answers);
    /// returns it and the hello to send.
    pub fn start(secret: &ClusterSecret, me: Principal, target: NodeId) -> (Self, Vec<u8>) {
        let mut client_nonce = [0; NONCE];
        fill_random(&mut client_nonce);
        let mut hello = Vec::with_capacity(HELLO_LEN);
        hello.extend_from_slice(&MAGIC);
        hello.push(VERSION);
        hello.push(me.kind());
        hello.extend_from_slice(&me.id().to_be_bytes());
        hello.extend_from_slice(&target.0.to_be_bytes());
        hello.extend_from_slice(&client_nonce);
        let handshake = Self {
            secret: secret.clone(),
            me,
            target,
            client_nonce,
        };
        (handshake, hello)
    }

    /// Check the listener's challenge (its proof of the secret, and that it is the node
    /// meant); returns the listener's node id and the proof to send.
    pub fn answer(self, challenge: &[u8]) -> Result<(NodeId, Vec<u8>), AuthError> {
        if challenge.len() != CHALLENGE_LEN || challenge[..4] != MAGIC || challenge[4] != VERSION {
            return Err(AuthError::Protocol("cluster port"));
        }
        let server = NodeId(u64::from_be_bytes(array(&challenge[5..13])));
        let mut server_nonce = [0; NONCE];
        server_nonce.copy_from_slice(&challenge[13..13 + NONCE]);
        let transcript = Transcript {
            client: self.me,
            target: self.target,
            server,
            client_nonce: self.client_nonce,
            server_nonce,
        };
        self.secret
            .mac(b"server", &transcript)
            .verify_slice(&challenge[13 + NONCE..])
            .map_err(|_| {
                AuthError::WrongSecret(format!("node {server}'s proof does not verify"))
            })?;
        if self.target.0 != 0 && server != self.target {
            return Err(AuthError::Misdirected(format!(
                "meant to reach node {}, reached node {server}",
                self.target
            )));
        }
        let proof = self
            .secret
            .mac(b"client", &transcript)
            .finalize()
            .into_bytes();
        Ok((server, proof.to_vec()))
    }
}

/// The listening side of one handshake, between sending its challenge and checking the
/// proof: [`accept`] without the I/O.
#[derive(Debug)]
pub struct ServerHandshake {
    secret: ClusterSecret,
    me: NodeId,
    client: Principal,
    target: NodeId,
    transcript: Transcript,
}

impl ServerHandshake {
    /// Read a hello to node `me`; returns the handshake and the challenge to send.
    pub fn challenge(
        secret: &ClusterSecret,
        me: NodeId,
        hello: &[u8],
    ) -> Result<(Self, Vec<u8>), AuthError> {
        if hello.len() != HELLO_LEN || hello[..4] != MAGIC || hello[4] != VERSION {
            return Err(AuthError::Protocol("node"));
        }
        let id = u64::from_be_bytes(array(&hello[6..14]));
        let client = match hello[5] {
            1 if id != 0 => Principal::Node(NodeId(id)),
            2 if id == 0 => Principal::Operator,
            _ => return Err(AuthError::Protocol("node")),
        };
        let target = NodeId(u64::from_be_bytes(array(&hello[14..22])));
        let mut client_nonce = [0; NONCE];
        client_nonce.copy_from_slice(&hello[22..]);
        let mut server_nonce = [0; NONCE];
        fill_random(&mut server_nonce);
        let transcript = Transcript {
            client,
            target,
            server: me,
            client_nonce,
            server_nonce,
        };
        let mut challenge = Vec::with_capacity(CHALLENGE_LEN);
        challenge.extend_from_slice(&MAGIC);
        challenge.push(VERSION);
        challenge.extend_from_slice(&me.0.to_be_bytes());
        challenge.extend_from_slice(&server_nonce);
        challenge.extend_from_slice(&secret.mac(b"server", &transcript).finalize().into_bytes());
        let handshake = Self {
            secret: secret.clone(),
            me,
            client,
            target,
            transcript,
        };
        Ok((handshake, challenge))
    }

    /// Who the connecting side claims to be (not yet proven).
    pub fn claimed(&self) -> Principal {
        self.client
    }

    /// Check the connecting side's proof; returns who it is.
    pub fn verify(self, proof: &[u8]) -> Result<Principal, AuthError> {
        let client = self.client;
        if self
            .secret
            .mac(b"client", &self.transcript)
            .verify_slice(proof)
            .is_err()
        {
            return Err(AuthError::WrongSecret(format!(
                "{client}'s proof does not verify"
            )));
        }
        if client == Principal::Node(self.me) {
            return Err(AuthError::Misdirected(format!(
                "a connection claims to be this node ({})",
                self.me
            )));
        }
        if self.target.0 != 0 && self.target != self.me {
            return Err(AuthError::Misdirected(format!(
                "{client} meant to reach node {}, but this is node {}",
                self.target, self.me
            )));
        }
        Ok(client)
    }
}

/// The connecting side: prove that `me` holds `secret` to the node `target` listening on
/// `stream`, and check that it holds it too. Returns once both proofs have verified; the
/// stream then carries the backend's own protocol.
pub async fn connect<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    me: Principal,
    target: NodeId,
    deadline: Duration,
) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(deadline, async {
        let (handshake, hello) = ClientHandshake::start(secret, me, target);
        stream.write_all(&hello).await?;
        let mut challenge = [0; CHALLENGE_LEN];
        match stream.read_exact(&mut challenge).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(AuthError::HungUp);
            }
            Err(e) => return Err(e.into()),
        }
        let (_, proof) = handshake.answer(&challenge)?;
        stream.write_all(&proof).await?;
        match stream.read_u8().await? {
            ACCEPTED => Ok(()),
            _ => Err(AuthError::Refused),
        }
    })
    .await
}

/// The listening side, node `me`: check the connecting side's proof of `secret` and prove
/// ours. Returns who it is; a connection that fails is answered (where the protocol allows)
/// and must be closed by the caller.
pub async fn accept<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    me: NodeId,
    deadline: Duration,
) -> Result<Principal, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(deadline, async {
        // Magic and version first: a peer speaking anything else is refused at once, not
        // after waiting for a whole hello it will never send.
        let mut hello = [0; HELLO_LEN];
        stream.read_exact(&mut hello[..5]).await?;
        if hello[..4] != MAGIC || hello[4] != VERSION {
            return Err(AuthError::Protocol("node"));
        }
        stream.read_exact(&mut hello[5..]).await?;
        let (handshake, challenge) = ServerHandshake::challenge(secret, me, &hello)?;
        let client = handshake.claimed();
        stream.write_all(&challenge).await?;
        let mut proof = [0; TAG];
        match stream.read_exact(&mut proof).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(AuthError::WrongSecret(format!(
                    "{client} found this node's proof wrong and hung up"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        match handshake.verify(&proof) {
            Ok(client) => {
                stream.write_u8(ACCEPTED).await?;
                Ok(client)
            }
            Err(error) => {
                let _ = stream.write_u8(REFUSED).await;
                Err(error)
            }
        }
    })
    .await
}

fn array(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests;
