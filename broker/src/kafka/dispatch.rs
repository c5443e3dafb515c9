//! Decode a request frame, route it to its handler, encode the response.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use switchyard_backend_api::{Broker as StateBroker, BrokerId, NodeId, warn_throttled};

use crate::broker::Broker;
use crate::kafka::authorize::{self, Access, Gate};
use crate::kafka::frame::{self, FileRecords, Frame};
use crate::kafka::handlers;
use crate::kafka::sasl::{
    CLUSTER_MECHANISM, Failure, HandshakeError, KafkaPrincipal, ListenerSecurity, SecurityProtocol,
    Session, Step, Verifier,
};
use crate::kafka::server::Listener;
use crate::kafka::versions;
use crate::telemetry;

/// What the connection does after a request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Send this response frame.
    Respond(Frame),
    /// Send nothing (a produce with `acks = 0`).
    Nothing,
    /// Close the connection; the reason is logged.
    Close(String),
    /// Send this response frame, then close the connection (a failed authentication).
    RespondThenClose(Frame),
}

/// The APIs this broker implements, with the versions it serves: the only ones ApiVersions
/// advertises, and the only ones accepted.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::FetchSnapshot, 0, 1),
    (ApiKey::BrokerHeartbeat, 0, 1),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
];

/// What a connection may ask before it has authenticated.
const BEFORE_AUTHENTICATION: [ApiKey; 3] = [
    ApiKey::ApiVersions,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
];

/// The version range served for `key`, if the API is implemented.
pub(crate) fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// A request frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than a request header.
    #[error("request of {0} bytes has no header")]
    NoHeader(usize),
    /// An API key Kafka does not define.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// An API this broker does not implement.
    #[error("unsupported API {0:?}")]
    UnsupportedApi(ApiKey),
    /// A version of an implemented API this broker does not serve.
    #[error("unsupported version {version} of {key:?}")]
    UnsupportedVersion {
        /// The API.
        key: ApiKey,
        /// The version asked for.
        version: i16,
        /// The request's correlation id, for an ApiVersions error response.
        correlation_id: i32,
    },
    /// The header or body does not decode.
    #[error("malformed {key:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        key: ApiKey,
        /// The version.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
}

/// A decoded request.
#[derive(Debug)]
pub struct Decoded {
    /// The API.
    pub key: ApiKey,
    /// Its version.
    pub version: i16,
    /// The request header.
    pub header: RequestHeader,
    /// The request body.
    pub request: RequestKind,
}

/// Decode one request frame (without its length prefix). Total: any bytes give a request or
/// a [`DecodeError`], never a panic — the fuzz target `decode_request` checks this.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::NoHeader(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(raw_key).map_err(|()| DecodeError::UnknownApiKey(raw_key))?;
    let (min, max) = supported(key).ok_or(DecodeError::UnsupportedApi(key))?;
    if version < min || version > max {
        return Err(DecodeError::UnsupportedVersion {
            key,
            version,
            correlation_id,
        });
    }
    let malformed = |e: anyhow::Error| DecodeError::Malformed {
        key,
        version,
        reason: e.to_string(),
    };
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(malformed)?;
    let request = RequestKind::decode(key, &mut frame, version).map_err(malformed)?;
    if frame.has_remaining() {
        // Some clients pad requests (librdkafka's Metadata v12 does); Kafka ignores the rest.
        tracing::debug!(
            ?key,
            version,
            trailing = frame.remaining(),
            "ignoring trailing request bytes"
        );
    }
    Ok(Decoded {
        key,
        version,
        header,
        request,
    })
}

/// Who sent a request: for group membership, as Kafka reports it in DescribeGroups, and for
/// the requests only brokers may send.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The request header's client id.
    pub(crate) id: String,
    /// The client's address, as `/IP`.
    pub(crate) host: String,
    /// The client's IP address.
    pub(crate) ip: std::net::IpAddr,
    /// Who the connection authenticated as.
    pub(crate) principal: KafkaPrincipal,
    /// The listener the request arrived on; `None` for the broker's own requests.
    pub(crate) listener: Option<Arc<Listener>>,
}

impl Client {
    /// The broker itself, making a request on its own behalf (auto-creating topics): it holds
    /// the cluster secret's authority.
    pub(crate) fn internal(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            host: "/127.0.0.1".to_owned(),
            ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            principal: KafkaPrincipal::Operator,
            listener: None,
        }
    }

    /// Whether this connection may speak for broker `id` (replica fetches, heartbeats): only
    /// on the inter-broker listener, and there, if it is a SASL listener, only that broker,
    /// authenticated by the cluster secret; on a PLAINTEXT one anyone, the caller then
    /// checking the address.
    pub(crate) fn may_act_as(&self, id: BrokerId) -> bool {
        if !self.listener.as_ref().is_some_and(|l| l.inter_broker) {
            return false;
        }
        match &self.principal {
            KafkaPrincipal::Anonymous => true,
            KafkaPrincipal::Broker(node) => i64::try_from(node.0).ok() == Some(i64::from(id.0)),
            KafkaPrincipal::User(_) | KafkaPrincipal::Operator => false,
        }
    }

    /// Where this client reaches `broker`: the broker's endpoint on the listener the request
    /// arrived on (the inter-broker one for the broker's own requests); `None` if it has none
    /// there.
    pub(crate) fn endpoint<'a>(&self, broker: &'a StateBroker) -> Option<(&'a str, u16)> {
        match &self.listener {
            Some(listener) => broker.endpoint(&listener.name),
            None => Some((&broker.host, broker.port)),
        }
    }
}

/// Handle one request frame from the client at `peer` on a connection whose authentication
/// is `session`.
pub(crate) async fn handle(
    broker: &Broker,
    listener: &Arc<Listener>,
    session: &mut Session,
    peer: SocketAddr,
    frame: Bytes,
) -> Reply {
    let decoded = match decode_request(frame) {
        Ok(decoded) => decoded,
        Err(DecodeError::UnsupportedVersion {
            key: ApiKey::ApiVersions,
            correlation_id,
            ..
        }) => return unsupported_api_versions(correlation_id),
        Err(e) => return Reply::Close(e.to_string()),
    };
    let started = std::time::Instant::now();
    let key = decoded.key;
    let version = decoded.version;
    let reply = answer(broker, listener, session, peer, decoded).await;
    telemetry::kafka::request_done(key, version, started.elapsed());
    reply
}

/// Answer one decoded request.
async fn answer(
    broker: &Broker,
    listener: &Arc<Listener>,
    session: &mut Session,
    peer: SocketAddr,
    decoded: Decoded,
) -> Reply {
    let Decoded {
        key,
        version,
        header,
        request,
    } = decoded;
    let correlation_id = header.correlation_id;
    let request = match request {
        RequestKind::SaslHandshake(r) => {
            let response = sasl_handshake(&listener.security, session, &r);
            return encode(
                key,
                version,
                correlation_id,
                &ResponseKind::SaslHandshake(response),
            );
        }
        RequestKind::SaslAuthenticate(r) => {
            let (response, failed) = sasl_authenticate(broker, &listener.security, session, &r);
            let reply = encode(
                key,
                version,
                correlation_id,
                &ResponseKind::SaslAuthenticate(response),
            );
            return match reply {
                Reply::Respond(frame) if failed => Reply::RespondThenClose(frame),
                other => other,
            };
        }
        other => other,
    };
    let Some(principal) = session.principal().cloned() else {
        if BEFORE_AUTHENTICATION.contains(&key) {
            let response = route_unauthenticated(version, request);
            return encode(key, version, correlation_id, &response);
        }
        return Reply::Close(format!(
            "unexpected {key:?} request before SASL authentication"
        ));
    };
    let client = Client {
        id: header
            .client_id
            .as_ref()
            .map_or_else(String::new, |c| c.as_str().to_owned()),
        host: format!("/{}", peer.ip()),
        ip: peer.ip(),
        principal,
        listener: Some(Arc::clone(listener)),
    };
    let mut files = FileRecords::default();
    let Some(response) = route(broker, &client, version, request, &mut files).await else {
        return Reply::Nothing;
    };
    encode_with_files(key, version, correlation_id, &response, files)
}

/// What a connection that has not authenticated yet may ask besides SASL itself.
fn route_unauthenticated(version: i16, request: RequestKind) -> ResponseKind {
    match request {
        RequestKind::ApiVersions(r) => {
            ResponseKind::ApiVersions(handlers::api_versions::handle(version, r))
        }
        other => unreachable_api(other),
    }
}

/// `SaslHandshake`: choose a mechanism for this connection.
fn sasl_handshake(
    security: &ListenerSecurity,
    session: &mut Session,
    request: &SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let mut offered: Vec<StrBytes> = security
        .mechanisms
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    if security.cluster_secret.is_some() && security.protocol != SecurityProtocol::Plaintext {
        offered.push(StrBytes::from_static_str(CLUSTER_MECHANISM));
    }
    let error = if security.protocol == SecurityProtocol::Plaintext {
        Some(ResponseError::IllegalSaslState)
    } else {
        let cluster = security.cluster_secret.is_some();
        match session.handshake(request.mechanism.as_str(), &security.mechanisms, cluster) {
            Ok(()) => None,
            Err(HandshakeError::Unsupported) => Some(ResponseError::UnsupportedSaslMechanism),
            Err(HandshakeError::IllegalState) => Some(ResponseError::IllegalSaslState),
        }
    };
    SaslHandshakeResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_mechanisms(offered)
}

/// `SaslAuthenticate`: the next token; `true` when the exchange failed and the connection
/// closes after the response.
fn sasl_authenticate(
    broker: &Broker,
    security: &ListenerSecurity,
    session: &mut Session,
    request: &SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    if security.protocol == SecurityProtocol::Plaintext {
        let response = SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "this listener is PLAINTEXT: it takes no SASL authentication",
            )));
        return (response, false);
    }
    let view = broker.metadata();
    let verifier = Verifier {
        state: &view.state,
        secret: security.cluster_secret.as_ref(),
        me: NodeId(u64::try_from(broker.id().0).unwrap_or_default()),
    };
    match session.authenticate(&request.auth_bytes, &verifier) {
        Ok(Step::Continue(token)) => (
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token)),
            false,
        ),
        Ok(Step::Done(token)) => {
            if let Some(principal) = session.principal() {
                tracing::debug!(%principal, "SASL authentication succeeded");
            }
            (
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token)),
                false,
            )
        }
        Err(Failure(message)) => {
            warn_throttled!(%message, "SASL authentication failed; closing the connection");
            (
                SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from(message))),
                true,
            )
        }
    }
}

/// Authorize `request` (narrowing it, or refusing it whole), run its handler, and put the
/// refused parts back into the response.
async fn route(
    broker: &Broker,
    client: &Client,
    version: i16,
    mut request: RequestKind,
    files: &mut FileRecords,
) -> Option<ResponseKind> {
    let ids = versions::normalize(&broker.metadata().state, version, &mut request);
    let access = Access::of(broker, client);
    let mut response = match authorize::gate(&access, request) {
        Gate::Pass(request, patch) => {
            let response = handle_request(broker, client, version, request, files).await?;
            authorize::patch(&access, response, patch)
        }
        Gate::Refuse(response) => response,
    };
    if let Some(ids) = ids {
        versions::restore(&ids, &mut response);
    }
    Some(response)
}

async fn handle_request(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: RequestKind,
    files: &mut FileRecords,
) -> Option<ResponseKind> {
    use handlers::*;
    Some(match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(version, r)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(broker, client, version, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(topics::create(broker, client, version, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(topics::delete(broker, version, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(partitions::create(broker, client, version, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe(broker, version, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(configs::alter_configs(broker, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::alter_incrementally(broker, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(cluster::describe(broker, client, version, r))
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(cluster::describe_quorum(broker, version, r))
        }
        RequestKind::FetchSnapshot(r) => {
            ResponseKind::FetchSnapshot(snapshots::fetch(broker, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(broker, client, version, r))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join(broker, client, version, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync(broker, version, r).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(groups::heartbeat(broker, version, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave(broker, version, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe(broker, version, r).await)
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(groups::delete(broker, r).await),
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offsets::delete(broker, r).await)
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(log_dirs::describe(broker, r).await)
        }
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            metadata::describe_topic_partitions(broker, client, r),
        ),
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(producers::describe(broker, r).await)
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect::handle(broker, version, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(records::delete(broker, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list(broker, version, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::commit(broker, version, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offsets::fetch(broker, version, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(producers::init_producer_id(broker, version, r).await)
        }
        RequestKind::Produce(r) => {
            ResponseKind::Produce(produce::handle(broker, version, r).await?)
        }
        RequestKind::Fetch(r) => {
            ResponseKind::Fetch(fetch::handle(broker, client, version, r, files).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, version, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(leader_epochs::handle(broker, version, r).await)
        }
        RequestKind::BrokerHeartbeat(r) => {
            ResponseKind::BrokerHeartbeat(crate::liveness::heartbeat(broker, client, &r).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(users::describe(broker, r))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(users::alter(broker, r).await)
        }
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(acls::create(broker, r).await),
        RequestKind::DescribeAcls(r) => ResponseKind::DescribeAcls(acls::describe(broker, r)),
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(acls::delete(broker, r).await),
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(transactions::add_partitions(broker, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(transactions::add_offsets(broker, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(broker, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(transactions::end_txn(broker, r).await),
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(transactions::write_txn_markers(broker, client, r).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(transactions::describe(broker, r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(transactions::list(broker, r))
        }
        other => unreachable_api(other),
    })
}

/// `SUPPORTED` and `route` list the same APIs; a request that passed the version check always
/// has a handler. Kept total so a mismatch shows as an error response, not a panic.
fn unreachable_api(request: RequestKind) -> ResponseKind {
    tracing::error!(?request, "no handler for an advertised API");
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default().with_error_code(ResponseError::UnknownServerError.code()),
    )
}

fn encode(key: ApiKey, version: i16, correlation_id: i32, response: &ResponseKind) -> Reply {
    encode_with_files(
        key,
        version,
        correlation_id,
        response,
        FileRecords::default(),
    )
}

/// Encodes `response`; a Fetch response's records held in `files` stay in the logs' files
/// until they are sent.
fn encode_with_files(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
    files: FileRecords,
) -> Reply {
    telemetry::kafka::count_errors(key, response);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = key.response_header_version(version);
    if let ResponseKind::Fetch(fetch) = response
        && !files.is_empty()
    {
        return match frame::encode_fetch(&header, header_version, fetch, version, files) {
            Ok(frame) => Reply::Respond(frame),
            Err(e) => Reply::Close(format!("encoding {key:?} v{version} response: {e}")),
        };
    }
    let mut out = BytesMut::new();
    if let Err(e) = header.encode(&mut out, header_version) {
        return Reply::Close(format!("encoding {key:?} v{version} response header: {e}"));
    }
    if let Err(e) = response.encode(&mut out, version) {
        return Reply::Close(format!("encoding {key:?} v{version} response: {e}"));
    }
    Reply::Respond(out.freeze().into())
}

/// ApiVersions at a version this broker does not know: error 35 in the v0 format, with the
/// supported versions, so the client can retry with one it shares.
fn unsupported_api_versions(correlation_id: i32) -> Reply {
    let response = handlers::api_versions::response()
        .with_error_code(ResponseError::UnsupportedVersion.code());
    let mut out = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let Err(e) = header.encode(&mut out, 0) {
        return Reply::Close(format!("encoding ApiVersions header: {e}"));
    }
    if let Err(e) = response.encode(&mut out, 0) {
        return Reply::Close(format!("encoding ApiVersions v0 response: {e}"));
    }
    Reply::Respond(out.freeze().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of served APIs in `docs/OPERATIONS.md`, from [`SUPPORTED`], by API key.
    fn api_table() -> String {
        let mut served = SUPPORTED.to_vec();
        served.sort_by_key(|(key, _, _)| *key as i16);
        let mut table = String::from("| API | key | versions |\n|---|---|---|\n");
        for (key, min, max) in served {
            let versions = if min == max {
                min.to_string()
            } else {
                format!("{min}–{max}")
            };
            table.push_str(&format!("| {key:?} | {} | {versions} |\n", key as i16));
        }
        table
    }

    /// `docs/OPERATIONS.md` lists exactly the APIs and versions served (what ApiVersions
    /// advertises); an API added or a version range changed without the guide fails here.
    #[test]
    fn the_operations_guide_lists_every_served_api() {
        const BEGIN: &str =
            "<!-- served APIs: generated from SUPPORTED, checked by kafka::dispatch::tests -->\n";
        const END: &str = "<!-- end of served APIs -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md");
        let guide = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let listed = guide
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(table, _)| table);
        let expected = api_table();
        assert!(
            listed == Some(expected.as_str()),
            "{path}'s table of served APIs is stale; between {BEGIN:?} and {END:?} it should \
             read:\n{expected}"
        );
    }

    /// Found by the `decode_request` fuzz target: a DescribeConfigs v1 frame whose resource
    /// count is 620 million, in 14 bytes. It used to abort the process on the allocation.
    #[test]
    fn huge_array_count_is_a_decode_error_not_an_abort() {
        let frame = Bytes::from_static(&[
            0x00, 0x20, 0x00, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x24, 0x05, 0x00, 0xf8,
        ]);
        let result = decode_request(frame);
        assert!(
            matches!(
                result,
                Err(DecodeError::Malformed {
                    key: ApiKey::DescribeConfigs,
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn short_and_unknown_frames_are_refused() {
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 18, 0])).err(),
            Some(DecodeError::NoHeader(3))
        );
        assert_eq!(
            decode_request(Bytes::from_static(&[3, 231, 0, 0, 0, 0, 0, 1])).err(),
            Some(DecodeError::UnknownApiKey(999))
        );
    }
}
