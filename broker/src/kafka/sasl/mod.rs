//! SASL on the Kafka listener: which principal a connection is, and the exchanges that prove
//! it (`SaslHandshake` v1 then `SaslAuthenticate`, as Kafka 1.0+ clients speak them).
//!
//! Mechanisms:
//! - `SCRAM-SHA-256`, `SCRAM-SHA-512` ([`scram`]): against the credentials in the metadata
//!   state.
//! - `PLAIN`: the password is checked against the user's stored SCRAM credentials (any
//!   mechanism), so one set of credentials serves both. Sends the password itself: use it
//!   only where the connection is otherwise protected.
//! - `SWITCHYARD-CLUSTER`: the cluster handshake of `switchyard_backend_api::auth` carried in
//!   `SaslAuthenticate` tokens. Brokers use it to reach each other (replica fetches,
//!   heartbeats), and `switchyard user` / `switchyard cluster status` with the cluster
//!   secret. Its principals are brokers and the operator, who are super users.

pub(crate) mod scram;

use std::fmt;

use switchyard_backend_api::auth::{ClientHandshake, ServerHandshake};
use switchyard_backend_api::security::ScramMechanism;
use switchyard_backend_api::{ClusterSecret, MetadataState, NodeId, Principal};

use crate::kafka::tls::Tls;

/// The SASL name of the cluster-secret mechanism.
pub const CLUSTER_MECHANISM: &str = "SWITCHYARD-CLUSTER";

/// What the Kafka listener asks of a connection before serving it (Kafka's
/// `security.protocol` of a listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// Nothing: every connection is `User:ANONYMOUS`.
    Plaintext,
    /// A SASL exchange first.
    SaslPlaintext,
    /// TLS; a verified client certificate names the principal, else `User:ANONYMOUS`.
    Ssl,
    /// TLS, then a SASL exchange.
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// The protocol named `name` (Kafka's names).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    /// Whether connections speak TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether connections authenticate with SASL before anything else.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// A SASL mechanism the listener may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// RFC 5802.
    Scram(ScramMechanism),
    /// The cluster secret ([`CLUSTER_MECHANISM`]).
    Cluster,
}

impl Mechanism {
    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(scram) => scram.sasl_name(),
            Self::Cluster => CLUSTER_MECHANISM,
        }
    }

    /// The mechanism a client names, of those a user may enable.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "SCRAM-SHA-256" => Some(Self::Scram(ScramMechanism::Sha256)),
            "SCRAM-SHA-512" => Some(Self::Scram(ScramMechanism::Sha512)),
            _ => None,
        }
    }
}

/// How the Kafka listener authenticates clients, and how this broker proves itself to the
/// others' listeners.
#[derive(Debug, Clone)]
pub struct ListenerSecurity {
    /// What connections must do first.
    pub protocol: SecurityProtocol,
    /// The mechanisms offered to clients (`sasl.enabled.mechanisms`).
    pub mechanisms: Vec<Mechanism>,
    /// The cluster secret, for [`CLUSTER_MECHANISM`] both ways.
    pub cluster_secret: Option<ClusterSecret>,
    /// TLS, for `SSL` and `SASL_SSL`.
    pub tls: Option<Tls>,
}

impl ListenerSecurity {
    /// No authentication: a PLAINTEXT listener.
    pub fn plaintext() -> Self {
        Self {
            protocol: SecurityProtocol::Plaintext,
            mechanisms: Vec::new(),
            cluster_secret: None,
            tls: None,
        }
    }

    /// What this node presents to another broker's listener, if it must authenticate there.
    pub fn peer_credentials(&self, me: NodeId) -> Option<PeerCredentials> {
        match self.protocol {
            SecurityProtocol::Plaintext => None,
            _ => self.cluster_secret.clone().map(|secret| PeerCredentials {
                secret,
                me: Principal::Node(me),
            }),
        }
    }
}

/// What a client of another broker's listener proves: the cluster secret, as a node or as
/// the operator.
#[derive(Debug, Clone)]
pub struct PeerCredentials {
    /// The secret.
    pub secret: ClusterSecret,
    /// Who proves it.
    pub me: Principal,
}

impl PeerCredentials {
    /// Start the client side of [`CLUSTER_MECHANISM`]: the first token.
    pub(crate) fn start(&self) -> (ClientHandshake, Vec<u8>) {
        ClientHandshake::start(&self.secret, self.me, NodeId(0))
    }
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaPrincipal {
    /// A connection that did not authenticate (a PLAINTEXT listener).
    Anonymous,
    /// A SCRAM or PLAIN user.
    User(String),
    /// A broker that proved the cluster secret.
    Broker(NodeId),
    /// An operator's command that proved the cluster secret.
    Operator,
}

impl KafkaPrincipal {
    /// Whether this principal proved the cluster secret: a broker or the operator.
    pub fn holds_cluster_secret(&self) -> bool {
        matches!(self, Self::Broker(_) | Self::Operator)
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("User:ANONYMOUS"),
            Self::User(name) => write!(f, "User:{name}"),
            Self::Broker(id) => write!(f, "Broker:{id}"),
            Self::Operator => f.write_str("Operator:switchyard"),
        }
    }
}

/// Why an exchange failed: the message `SaslAuthenticate` carries. The connection is closed
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure(pub(crate) String);

impl Failure {
    /// Wrong user, password or proof: Kafka's words, the same whatever was wrong.
    pub(crate) fn invalid(mechanism: &str) -> Self {
        Self(format!(
            "Authentication failed during authentication due to invalid credentials with SASL \
             mechanism {mechanism}"
        ))
    }

    /// A message that does not follow the mechanism.
    pub(crate) fn malformed(reason: &str) -> Self {
        Self(format!("Authentication failed: {reason}"))
    }
}

/// Where a connection's SASL exchange stands.
#[derive(Debug)]
enum Exchange {
    /// `SaslHandshake` chose this mechanism; its first token is next.
    Chosen(Mechanism),
    /// A SCRAM exchange waits for the client's final message.
    Scram(scram::ScramServer),
    /// A cluster handshake waits for the proof.
    Cluster(ServerHandshake),
}

/// One connection's authentication.
#[derive(Debug)]
pub(crate) struct Session {
    principal: Option<KafkaPrincipal>,
    exchange: Option<Exchange>,
    /// An `SSL` connection may still prove the cluster secret (a broker, an operator's
    /// command) and become that principal.
    upgradable: bool,
}

/// What a `SaslHandshake` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// The mechanism is not offered.
    Unsupported,
    /// Not expected now (authenticated already, or a PLAINTEXT listener).
    IllegalState,
}

/// One step of `SaslAuthenticate`.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this token; the exchange goes on.
    Continue(Vec<u8>),
    /// Send this token; the connection is authenticated.
    Done(Vec<u8>),
}

/// Where `SaslAuthenticate` finds what it checks against.
#[derive(Debug)]
pub(crate) struct Verifier<'a> {
    /// The metadata state (credentials).
    pub(crate) state: &'a MetadataState,
    /// The cluster secret, if configured.
    pub(crate) secret: Option<&'a ClusterSecret>,
    /// This node.
    pub(crate) me: NodeId,
}

impl Session {
    /// A new connection to a listener of `protocol`, whose TLS client certificate (if any)
    /// has the subject `certificate`.
    pub(crate) fn new(protocol: SecurityProtocol, certificate: Option<String>) -> Self {
        let principal = match protocol {
            SecurityProtocol::Plaintext => Some(KafkaPrincipal::Anonymous),
            SecurityProtocol::Ssl => {
                Some(certificate.map_or(KafkaPrincipal::Anonymous, KafkaPrincipal::User))
            }
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => None,
        };
        Self {
            principal,
            exchange: None,
            upgradable: protocol == SecurityProtocol::Ssl,
        }
    }

    /// The authenticated principal; `None` until the exchange succeeded.
    pub(crate) fn principal(&self) -> Option<&KafkaPrincipal> {
        self.principal.as_ref()
    }

    /// `SaslHandshake`: choose `name` among `offered` (plus the cluster mechanism when a
    /// secret is configured).
    pub(crate) fn handshake(
        &mut self,
        name: &str,
        offered: &[Mechanism],
        cluster: bool,
    ) -> Result<(), HandshakeError> {
        let upgrade = self.upgradable && name == CLUSTER_MECHANISM;
        if (self.principal.is_some() && !upgrade) || self.exchange.is_some() {
            return Err(HandshakeError::IllegalState);
        }
        let mechanism = match name {
            CLUSTER_MECHANISM if cluster => Mechanism::Cluster,
            other => Mechanism::parse(other)
                .filter(|m| offered.contains(m))
                .ok_or(HandshakeError::Unsupported)?,
        };
        self.exchange = Some(Exchange::Chosen(mechanism));
        Ok(())
    }

    /// `SaslAuthenticate`: the next token of the exchange. `Err` ends the connection.
    pub(crate) fn authenticate(
        &mut self,
        token: &[u8],
        verifier: &Verifier<'_>,
    ) -> Result<Step, Failure> {
        let exchange = self
            .exchange
            .take()
            .ok_or_else(|| Failure::malformed("SaslAuthenticate before SaslHandshake"))?;
        match exchange {
            Exchange::Chosen(Mechanism::Plain) => {
                let user = plain(token, verifier.state)?;
                self.principal = Some(KafkaPrincipal::User(user));
                Ok(Step::Done(Vec::new()))
            }
            Exchange::Chosen(Mechanism::Scram(mechanism)) => {
                let nonce = server_nonce();
                let (server, reply) =
                    scram::ScramServer::start(mechanism, verifier.state, token, &nonce)?;
                self.exchange = Some(Exchange::Scram(server));
                Ok(Step::Continue(reply))
            }
            Exchange::Scram(server) => {
                let (user, reply) = server.finish(token)?;
                self.principal = Some(KafkaPrincipal::User(user));
                Ok(Step::Done(reply))
            }
            Exchange::Chosen(Mechanism::Cluster) => {
                let secret = verifier
                    .secret
                    .ok_or_else(|| Failure::invalid(CLUSTER_MECHANISM))?;
                let (handshake, challenge) = ServerHandshake::challenge(secret, verifier.me, token)
                    .map_err(|e| Failure::malformed(&e.to_string()))?;
                self.exchange = Some(Exchange::Cluster(handshake));
                Ok(Step::Continue(challenge))
            }
            Exchange::Cluster(handshake) => {
                let principal = handshake.verify(token).map_err(|e| {
                    tracing::warn!(error = %e, "cluster-secret authentication failed");
                    Failure::invalid(CLUSTER_MECHANISM)
                })?;
                self.principal = Some(match principal {
                    Principal::Node(id) => KafkaPrincipal::Broker(id),
                    Principal::Operator => KafkaPrincipal::Operator,
                });
                Ok(Step::Done(Vec::new()))
            }
        }
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`, the authorization id empty or the user.
fn plain(token: &[u8], state: &MetadataState) -> Result<String, Failure> {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::malformed(
            "a PLAIN message is authzid NUL user NUL password",
        ));
    };
    let user =
        std::str::from_utf8(user).map_err(|_| Failure::malformed("the user name is not UTF-8"))?;
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(Failure::invalid("PLAIN"));
    }
    let known = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|m| state.scram_credential(user, m).map(|c| (m, c)));
    match known {
        Some((mechanism, credential))
            if scram::password_matches(mechanism, credential, password) =>
        {
            Ok(user.to_owned())
        }
        _ => Err(Failure::invalid("PLAIN")),
    }
}

/// A fresh printable nonce (no `,`), 32 random bytes in hex.
fn server_nonce() -> String {
    let mut bytes = [0u8; 32];
    // The operating system's generator failing is not something a node can carry on without.
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("the OS random generator failed: {e}"));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
