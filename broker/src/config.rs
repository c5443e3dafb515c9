//! Configuration: where it comes from, in which order, and what makes it valid.
//!
//! Layers, each overriding the one before:
//! 1. defaults — `data_dir = "./switchyard-data"`, `node_id = 1`, `listen = "127.0.0.1:9092"`,
//!    no peers, no backend;
//! 2. a TOML file — `--config PATH`, or else `switchyard.toml` in the current directory if it
//!    exists (a file named with `--config` must exist);
//! 3. environment variables `SWITCHYARD_<KEY>`, with `__` for nesting
//!    (`SWITCHYARD_METADATA__<BACKEND>__<KEY>` is `metadata.<backend>.<key>`);
//! 4. command-line flags that were actually given ([`Overrides`]).
//!
//! Top-level keys are `metadata_backend`, `data_dir`, `node_id`, `peers`, `listen`, `advertise`,
//! `cluster_listen`, `cluster_secret_file` (required with `peers`), `cluster_tls_certificate`,
//! `cluster_tls_key`, `cluster_tls_ca` (all three or none), `http_listen` (the admin HTTP
//! listener: `/metrics`, `/health`, `/ready`; off when absent), `log_format` (`text` or `json`),
//! `kafka` (see [`KafkaSettings`]) and `metadata`; any other key is an error. `metadata` is free-form: `[metadata.<backend>]` is that backend's own table,
//! handed to it as its [`OpenContext::config`](switchyard_backend_api::OpenContext::config) by
//! [`Config::backend_config`]. Tables merge key by key across layers; any other value is replaced
//! whole by a later layer.
//!
//! `peers` is either a string `"1=host-a:9093,2=host-b:9093"` or a table:
//!
//! ```toml
//! [peers]
//! 1 = "host-a:9093"
//! 2 = "host-b:9093"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::{Deserialize, Serialize};
use switchyard_backend_api::auth::MAKE_A_SECRET;
use switchyard_backend_api::tls::ClusterTls;
use switchyard_backend_api::{ClusterCredentials, ClusterSecret, MAX_CLUSTER_PARTITIONS, NodeId};

use crate::kafka::sasl::{ListenerSecurity, Mechanism, SecurityProtocol};
use crate::kafka::tls::{ClientAuth, Tls, TlsFiles};
use switchyard_log::{LogConfig, LogConfigError};

/// Default for `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "./switchyard-data";
/// Default for `node_id`.
pub const DEFAULT_NODE_ID: i64 = 1;
/// Default for `listen`: the Kafka listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9092";
/// The file read when `--config` is not given, if it exists in the current directory.
pub const DEFAULT_CONFIG_FILE: &str = "switchyard.toml";
/// Prefix of the environment variables that configure Switchyard.
pub const ENV_PREFIX: &str = "SWITCHYARD_";
/// The largest node id. A node id doubles as the Kafka broker id, an `int32`, and Kafka reserves
/// negative ids.
pub const MAX_NODE_ID: i64 = i32::MAX as i64;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file named with `--config` does not exist.
    #[error("config file {} does not exist", path.display())]
    FileNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// A layer does not parse, has a key of the wrong type, or has an unknown key.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// `node_id` outside `0..=2147483647`.
    #[error(
        "node id {id} is out of range: it doubles as the Kafka broker id and must be in \
         0..={MAX_NODE_ID}"
    )]
    NodeIdOutOfRange {
        /// The id given.
        id: i64,
    },
    /// An entry of `peers` is not `ID=HOST:PORT`.
    #[error("invalid peers entry {entry:?}: {reason} (expected ID=HOST:PORT, e.g. 1=host-a:9093)")]
    InvalidPeer {
        /// The offending entry.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `listen`, `advertise`, `cluster_listen` or `http_listen` is not `HOST:PORT`.
    #[error("invalid {key} address {addr:?}: {reason} (expected HOST:PORT)")]
    InvalidAddress {
        /// Which key.
        key: &'static str,
        /// The value given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `peers` is neither a string nor a table.
    #[error(
        "peers must be a string like \"1=host-a:9093,2=host-b:9093\" or a table of id = \"HOST:PORT\""
    )]
    PeersType,
    /// `peers` names the same id twice.
    #[error("peers list node id {id} more than once")]
    DuplicatePeer {
        /// The repeated id.
        id: NodeId,
    },
    /// `peers` is given but does not list this node.
    #[error(
        "peers do not include this node's id {node_id} (peers: {peers}); list every node of the \
         cluster, this one included"
    )]
    SelfNotInPeers {
        /// This node's id.
        node_id: NodeId,
        /// The ids that were listed.
        peers: String,
    },
    /// `cluster_listen` is given for a single node.
    #[error(
        "cluster_listen {addr:?} is set but peers is empty: a single node has no cluster \
         traffic; list every node in peers"
    )]
    ClusterListenWithoutPeers {
        /// The value given.
        addr: String,
    },
    /// The listener's security settings name something unknown, or lack what they need.
    #[error("{0}")]
    Security(String),
    /// The cluster secret is missing for a cluster, or its file cannot be used.
    #[error("{0}")]
    ClusterSecret(String),
    /// The cluster TLS settings are incomplete, or their files cannot be used.
    #[error("{0}")]
    ClusterTls(String),
    /// The Kafka listeners (`kafka.listeners` and the keys beside it) do not fit together.
    #[error("{0}")]
    Listeners(String),
    /// The broker heartbeat settings cannot work.
    #[error(
        "kafka.broker_session_timeout_ms ({timeout_ms}) must be larger than \
         kafka.broker_heartbeat_interval_ms ({interval_ms}), which must be positive"
    )]
    BrokerSession {
        /// `broker_heartbeat_interval_ms`.
        interval_ms: u64,
        /// `broker_session_timeout_ms`.
        timeout_ms: u64,
    },
    /// A broker-wide topic default (`kafka.compression_type`, …) is not a value the topic
    /// config takes.
    #[error("a topic default in [kafka] is invalid: {0}")]
    TopicDefault(LogConfigError),
    /// A setting is outside the range it can work in.
    #[error("kafka.{key} ({value}) must be {bound}")]
    OutOfRange {
        /// The setting.
        key: &'static str,
        /// The value given.
        value: i64,
        /// What it must be.
        bound: &'static str,
    },
}

/// The largest response a follower may ask for: what the broker-to-broker client accepts.
const MAX_REPLICA_FETCH_RESPONSE: i64 = 16 << 20;

/// The largest request frame any setting may allow: a bound on what one connection can make
/// the broker buffer.
const MAX_SOCKET_REQUEST_BYTES: i64 = 1 << 30;

fn as_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Every numeric setting's range.
fn check_ranges(kafka: &KafkaSettings) -> Result<(), ConfigError> {
    let checks = [
        (
            "log_retention_ms",
            kafka.log_retention_ms,
            -1,
            i64::MAX,
            "at least -1 (unlimited)",
        ),
        (
            "log_retention_bytes",
            kafka.log_retention_bytes,
            -1,
            i64::MAX,
            "at least -1 (unlimited)",
        ),
        (
            "log_segment_bytes",
            kafka.log_segment_bytes,
            14,
            i64::from(i32::MAX),
            "between 14 and 2147483647",
        ),
        (
            "min_insync_replicas",
            kafka.min_insync_replicas,
            1,
            i64::from(i16::MAX),
            "positive",
        ),
        (
            "leader_imbalance_check_interval_seconds",
            as_i64(kafka.leader_imbalance_check_interval_seconds),
            1,
            i64::MAX / 1000,
            "positive",
        ),
        (
            "leader_imbalance_per_broker_percentage",
            as_i64(kafka.leader_imbalance_per_broker_percentage),
            0,
            100,
            "between 0 and 100",
        ),
        (
            "transaction_max_timeout_ms",
            as_i64(kafka.transaction_max_timeout_ms),
            1,
            i64::from(i32::MAX),
            "between 1 and 2147483647",
        ),
        (
            "transaction_abort_timed_out_transaction_cleanup_interval_ms",
            as_i64(kafka.transaction_abort_timed_out_transaction_cleanup_interval_ms),
            1,
            i64::from(i32::MAX),
            "between 1 and 2147483647",
        ),
        (
            "transactional_id_expiration_ms",
            as_i64(kafka.transactional_id_expiration_ms),
            1,
            i64::from(i32::MAX),
            "between 1 and 2147483647",
        ),
        (
            "log_retention_check_interval_ms",
            as_i64(kafka.log_retention_check_interval_ms),
            1,
            i64::MAX,
            "positive",
        ),
        (
            "log_cleaner_threads",
            as_i64(kafka.log_cleaner_threads),
            1,
            64,
            "between 1 and 64",
        ),
        (
            "log_cleaner_backoff_ms",
            as_i64(kafka.log_cleaner_backoff_ms),
            1,
            i64::MAX,
            "positive",
        ),
        (
            "log_cleaner_dedupe_buffer_size",
            as_i64(kafka.log_cleaner_dedupe_buffer_size),
            1 << 20,
            i64::MAX,
            "at least 1 MiB",
        ),
        (
            "log_cleaner_io_max_bytes_per_second",
            kafka.log_cleaner_io_max_bytes_per_second.map_or(1, as_i64),
            1,
            i64::MAX,
            "positive",
        ),
        (
            "socket_request_max_bytes",
            as_i64(kafka.socket_request_max_bytes),
            1024,
            MAX_SOCKET_REQUEST_BYTES,
            "between 1 KiB and 1 GiB",
        ),
        (
            "queued_max_request_bytes",
            as_i64(kafka.queued_max_request_bytes),
            as_i64(kafka.socket_request_max_bytes),
            i64::MAX,
            "at least socket_request_max_bytes, or the largest request could never be read",
        ),
        (
            "max_connections",
            as_i64(kafka.max_connections),
            1,
            i64::MAX,
            "positive",
        ),
        (
            "max_connections_per_ip",
            as_i64(kafka.max_connections_per_ip),
            1,
            as_i64(kafka.max_connections),
            "positive and at most max_connections",
        ),
        (
            "fetch_max_bytes",
            as_i64(kafka.fetch_max_bytes),
            1024,
            i64::from(i32::MAX),
            "between 1 KiB and 2147483647",
        ),
        (
            "max_partitions",
            as_i64(kafka.max_partitions),
            1,
            as_i64(MAX_CLUSTER_PARTITIONS),
            "between 1 and 1000000",
        ),
        (
            "num_partitions",
            as_i64(kafka.num_partitions),
            1,
            as_i64(kafka.max_partitions),
            "between 1 and max_partitions",
        ),
        (
            "replica_lag_time_max_ms",
            i64::try_from(kafka.replica_lag_time_max_ms).unwrap_or(i64::MAX),
            1,
            i64::MAX,
            "positive",
        ),
        (
            "replica_fetch_wait_max_ms",
            i64::try_from(kafka.replica_fetch_wait_max_ms).unwrap_or(i64::MAX),
            0,
            i64::try_from(kafka.replica_lag_time_max_ms).unwrap_or(i64::MAX) - 1,
            "below replica_lag_time_max_ms, or followers fall out of the ISR while they wait",
        ),
        (
            "replica_fetch_max_bytes",
            i64::from(kafka.replica_fetch_max_bytes),
            1,
            i64::from(kafka.replica_fetch_response_max_bytes),
            "positive and at most replica_fetch_response_max_bytes",
        ),
        (
            "replica_high_watermark_checkpoint_interval_ms",
            i64::try_from(kafka.replica_high_watermark_checkpoint_interval_ms).unwrap_or(i64::MAX),
            1,
            i64::MAX,
            "positive",
        ),
        (
            "replica_fetch_response_max_bytes",
            i64::from(kafka.replica_fetch_response_max_bytes),
            1,
            MAX_REPLICA_FETCH_RESPONSE - (1 << 20),
            "positive and at most 15 MiB",
        ),
    ];
    for (key, value, low, high, bound) in checks {
        if !(low..=high).contains(&value) {
            return Err(ConfigError::OutOfRange { key, value, bound });
        }
    }
    Ok(())
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        Self::Invalid(Box::new(error))
    }
}

/// Values given on the command line. `None` leaves the value to the lower layers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--metadata-backend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_backend: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--node-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i64>,
    /// `--peers`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--advertise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// `--cluster-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_listen: Option<String>,
    /// `--cluster-secret-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    /// `--cluster-tls-certificate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_certificate: Option<PathBuf>,
    /// `--cluster-tls-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_key: Option<PathBuf>,
    /// `--cluster-tls-ca`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// `--http-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// How the process writes its log lines (to standard error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// Kafka broker settings, the `[kafka]` table (`SWITCHYARD_KAFKA__<KEY>`). Names follow Kafka's
/// own broker configs with `_` for `.`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `auto.create.topics.enable`: Metadata requests create missing topics.
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of auto-created topics and of `CreateTopics` with `-1`.
    pub num_partitions: u32,
    /// `default.replication.factor`.
    pub default_replication_factor: u16,
    /// `group.initial.rebalance.delay.ms`: how long a new group's first rebalance waits for
    /// more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// `socket.request.max.bytes`: larger frames close the connection (at most 1 GiB).
    pub socket_request_max_bytes: u32,
    /// `queued.max.request.bytes`: request bytes all connections together may hold in memory
    /// (read, decoded or being answered); a connection waits to read its next request until
    /// the budget has room.
    pub queued_max_request_bytes: u64,
    /// `max.connections`: open client connections; more are closed as they are accepted.
    pub max_connections: usize,
    /// `max.connections.per.ip`: open client connections from one IP address.
    pub max_connections_per_ip: usize,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries, whatever the
    /// request asks for.
    pub fetch_max_bytes: u32,
    /// `max.partitions`: partitions (each counted once, not per replica) the cluster may
    /// hold; CreateTopics and auto-creation refuse topics past it.
    pub max_partitions: usize,
    /// `producer.id.expiration.ms`: an idempotent producer's state on a partition is dropped
    /// this long after its latest batch's timestamp.
    pub producer_id_expiration_ms: u64,
    /// `connections.max.idle.ms`: idle connections are closed.
    pub connections_max_idle_ms: u64,
    /// `offset.metadata.max.bytes`: longer commit metadata is refused.
    pub offset_metadata_max_bytes: usize,
    /// How long a request waits for the metadata backend before answering with a retriable
    /// error.
    pub metadata_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats to the metadata leader.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker the metadata leader has not heard from for this
    /// long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `replica.lag.time.max.ms`: an ISR member that has not caught up with the leader for this
    /// long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader for data.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.backoff.ms`: how long a follower waits after a failed fetch.
    pub replica_fetch_backoff_ms: u64,
    /// `replica.fetch.max.bytes`: bytes a follower asks for per partition.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: bytes a follower asks for per fetch.
    pub replica_fetch_response_max_bytes: i32,
    /// `replica.high.watermark.checkpoint.interval.ms`: how often partitions' high watermarks
    /// are written to disk.
    pub replica_high_watermark_checkpoint_interval_ms: u64,
    /// `log.retention.check.interval.ms`: how often retention (and `flush.ms`) is enforced on
    /// every partition log.
    pub log_retention_check_interval_ms: u64,
    /// `log.retention.ms`: the default of topics' `retention.ms` (-1: unlimited).
    pub log_retention_ms: i64,
    /// `log.retention.bytes`: the default of topics' `retention.bytes` (-1: unlimited).
    pub log_retention_bytes: i64,
    /// `log.segment.bytes`: the default of topics' `segment.bytes`.
    pub log_segment_bytes: i64,
    /// `min.insync.replicas`: the default of topics' `min.insync.replicas`.
    pub min_insync_replicas: i64,
    /// `log.cleanup.policy`: the default of topics' `cleanup.policy` (`delete`, `compact` or
    /// `compact,delete`).
    pub log_cleanup_policy: String,
    /// `log.cleaner.min.cleanable.ratio`: the default of topics' `min.cleanable.dirty.ratio`.
    pub log_cleaner_min_cleanable_ratio: f64,
    /// `log.cleaner.min.compaction.lag.ms`: the default of topics' `min.compaction.lag.ms`.
    pub log_cleaner_min_compaction_lag_ms: i64,
    /// `log.cleaner.max.compaction.lag.ms`: the default of topics' `max.compaction.lag.ms`.
    pub log_cleaner_max_compaction_lag_ms: i64,
    /// `log.cleaner.delete.retention.ms`: the default of topics' `delete.retention.ms`.
    pub log_cleaner_delete_retention_ms: i64,
    /// `log.cleaner.enable`: whether this broker compacts the logs of compacted topics.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.threads`: how many logs are compacted at once.
    pub log_cleaner_threads: u64,
    /// `log.cleaner.backoff.ms`: how long the cleaner waits when no log needs compacting.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: bytes the cleaner's key maps may take, shared among
    /// its threads; a clean whose dirty segments have more keys compacts part of them.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// `log.cleaner.io.max.bytes.per.second`: the bytes the cleaner reads and writes per
    /// second, over all its threads (unset: unlimited).
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// `auto.leader.rebalance.enable`: move leaderships back to preferred replicas on their
    /// own (see [`crate::leaders`]).
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often the metadata leader's broker
    /// checks the leaders' balance.
    pub leader_imbalance_check_interval_seconds: u64,
    /// `leader.imbalance.per.broker.percentage`: the share of a broker's preferred partitions
    /// led elsewhere that triggers preferred elections.
    pub leader_imbalance_per_broker_percentage: u64,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a transactional
    /// producer may ask for (InitProducerId answers INVALID_TRANSACTION_TIMEOUT above it).
    pub transaction_max_timeout_ms: u64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often a transaction
    /// coordinator aborts the transactions open past their timeout.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// `transactional.id.expiration.ms`: a transactional id whose producer has not changed its
    /// transaction's state for this long (and has none open) is forgotten.
    pub transactional_id_expiration_ms: u64,
    /// `compression.type`: the default of topics' `compression.type` (`producer`,
    /// `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd`).
    pub compression_type: String,
    /// The listener's `security.protocol`: `PLAINTEXT` (no authentication) or
    /// `SASL_PLAINTEXT` (every connection authenticates first; needs `cluster_secret_file`,
    /// which brokers and `switchyard user` authenticate with).
    pub security_protocol: String,
    /// `sasl.enabled.mechanisms`: what a SASL listener offers clients, of `SCRAM-SHA-256`,
    /// `SCRAM-SHA-512` and `PLAIN`.
    pub sasl_enabled_mechanisms: Vec<String>,
    /// Kafka's `authorizer.class.name` set to the standard authorizer: every request is
    /// checked against the ACLs (CreateAcls, DescribeAcls, DeleteAcls).
    pub authorizer_enabled: bool,
    /// `super.users`: principals (`User:NAME`) every request of which is allowed. Brokers and
    /// `switchyard` commands proving the cluster secret always are.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`: whether a resource no ACL covers is open to all.
    pub allow_everyone_if_no_acl_found: bool,
    /// The listener's PEM certificate chain, leaf first (`SSL`, `SASL_SSL`).
    pub ssl_certificate_location: Option<PathBuf>,
    /// The listener's PEM private key.
    pub ssl_key_location: Option<PathBuf>,
    /// PEM CA certificates that client certificates and other brokers are checked against.
    pub ssl_truststore_location: Option<PathBuf>,
    /// `ssl.client.auth`: `none`, `requested` or `required` client certificates.
    pub ssl_client_auth: String,
    /// `listeners`: `NAME://HOST:PORT` each (an empty host binds every interface). A name is a
    /// security protocol (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`) or is mapped to one
    /// in `listener_security_protocol_map`. Empty: one listener, `listen`, speaking
    /// `security_protocol`.
    pub listeners: Vec<String>,
    /// `advertised.listeners`: what clients of each listener are told to connect to, by
    /// listener name; a listener not named here advertises its own address.
    pub advertised_listeners: Vec<String>,
    /// `listener.security.protocol.map`: `NAME:PROTOCOL` each, for listener names that are not
    /// protocols (`INTERNAL:SASL_SSL`).
    pub listener_security_protocol_map: Vec<String>,
    /// `inter.broker.listener.name`: the listener brokers connect to each other on (replica
    /// fetches, heartbeats, forwarded requests). Default: the only listener, else the one
    /// named `PLAINTEXT`.
    pub inter_broker_listener_name: Option<String>,
}

impl KafkaSettings {
    /// The broker-wide defaults of topic configs, by topic config name (`log.retention.ms` is
    /// the default of `retention.ms`, …): what a topic without its own override uses.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        [
            ("retention.ms", self.log_retention_ms),
            ("retention.bytes", self.log_retention_bytes),
            ("segment.bytes", self.log_segment_bytes),
            ("min.insync.replicas", self.min_insync_replicas),
            (
                "min.compaction.lag.ms",
                self.log_cleaner_min_compaction_lag_ms,
            ),
            (
                "max.compaction.lag.ms",
                self.log_cleaner_max_compaction_lag_ms,
            ),
            ("delete.retention.ms", self.log_cleaner_delete_retention_ms),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_string()))
        .chain([
            ("compression.type".to_owned(), self.compression_type.clone()),
            ("cleanup.policy".to_owned(), self.log_cleanup_policy.clone()),
            (
                "min.cleanable.dirty.ratio".to_owned(),
                self.log_cleaner_min_cleanable_ratio.to_string(),
            ),
        ])
        .collect()
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            socket_request_max_bytes: 104_857_600,
            queued_max_request_bytes: 256 << 20,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            fetch_max_bytes: 57_671_680,
            max_partitions: 10_000,
            producer_id_expiration_ms: 86_400_000,
            connections_max_idle_ms: 600_000,
            offset_metadata_max_bytes: 4_096,
            metadata_timeout_ms: 10_000,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1_000,
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_response_max_bytes: 10_485_760,
            replica_high_watermark_checkpoint_interval_ms: 5_000,
            log_retention_check_interval_ms: 300_000,
            log_retention_ms: 604_800_000,
            log_retention_bytes: -1,
            log_segment_bytes: 1_073_741_824,
            min_insync_replicas: 1,
            log_cleanup_policy: "delete".to_owned(),
            log_cleaner_min_cleanable_ratio: 0.5,
            log_cleaner_min_compaction_lag_ms: 0,
            log_cleaner_max_compaction_lag_ms: i64::MAX,
            log_cleaner_delete_retention_ms: 86_400_000,
            log_cleaner_enable: true,
            log_cleaner_threads: 1,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_size: 134_217_728,
            log_cleaner_io_max_bytes_per_second: None,
            compression_type: "producer".to_owned(),
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            leader_imbalance_per_broker_percentage: 10,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            transactional_id_expiration_ms: 604_800_000,
            security_protocol: "PLAINTEXT".into(),
            sasl_enabled_mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
            authorizer_enabled: false,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_truststore_location: None,
            ssl_client_auth: "none".into(),
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            listener_security_protocol_map: Vec::new(),
            inter_broker_listener_name: None,
        }
    }
}

/// The top-level keys, as layered, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    metadata_backend: Option<String>,
    data_dir: PathBuf,
    node_id: i64,
    /// A string or a table; see [`parse_peers`] and [`peers_from_table`].
    peers: Option<Value>,
    listen: String,
    advertise: Option<String>,
    cluster_listen: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    cluster_tls_certificate: Option<PathBuf>,
    cluster_tls_key: Option<PathBuf>,
    cluster_tls_ca: Option<PathBuf>,
    http_listen: Option<String>,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    kafka: KafkaSettings,
    /// Per-backend tables; only checked to be a table here, read by the backend.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "deserialized to reject a `metadata` that is not a table"
    )]
    metadata: Dict,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The backend named by configuration, if any. `None` means "the default"; see
    /// [`crate::backends::default_backend`].
    pub metadata_backend: Option<String>,
    /// Directory under which this node keeps its data; the backend gets
    /// `<data_dir>/metadata/<backend>`.
    pub data_dir: PathBuf,
    /// This node's id, in `0..=2147483647`; also its Kafka broker id.
    pub node_id: NodeId,
    /// Every node of the cluster, this one included, by id → `HOST:PORT`. Empty for a single
    /// node.
    pub peers: BTreeMap<NodeId, String>,
    /// The Kafka listeners, at least one: `kafka.listeners`, or the one listener `listen`,
    /// `advertise` and `kafka.security_protocol` describe.
    pub listeners: Vec<ListenerConfig>,
    /// Index in `listeners` of the inter-broker listener.
    pub inter_broker: usize,
    /// Address the metadata backend listens on for its peers, when it differs from this
    /// node's entry in `peers` (the address the others dial).
    pub cluster_listen: Option<String>,
    /// The secret read from `cluster_secret_file`; present whenever `peers` is.
    pub cluster_secret: Option<ClusterSecret>,
    /// Mutual TLS for cluster connections, from `cluster_tls_certificate`, `cluster_tls_key`
    /// and `cluster_tls_ca` (all three or none).
    pub cluster_tls: Option<ClusterTls>,
    /// The admin HTTP listener (`/metrics`, `/health`, `/ready`), if any.
    pub http_listen: Option<String>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Kafka broker settings.
    pub kafka: KafkaSettings,
    figment: Figment,
}

impl Config {
    /// The log configuration of a topic without overrides: Kafka's defaults under the
    /// broker-wide ones of `[kafka]` (whose ranges the configuration checked when it loaded).
    pub fn log_config(&self) -> Result<LogConfig, LogConfigError> {
        LogConfig::default().with_overrides(&self.kafka.topic_defaults())
    }

    /// What this node proves on cluster connections: the secret, and TLS when configured.
    pub fn cluster_credentials(&self) -> Option<ClusterCredentials> {
        self.cluster_secret
            .clone()
            .map(|secret| ClusterCredentials {
                secret,
                tls: self.cluster_tls.clone(),
            })
    }

    /// Load from all layers: defaults, the TOML file (`file`, or `switchyard.toml` in the current
    /// directory if it exists), `SWITCHYARD_*` environment variables, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::from_figment(layered(file, overrides)?)
    }

    /// Validate an already layered figment.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: Raw = figment.extract()?;
        let node_id = node_id(raw.node_id)?;
        let peers = match raw.peers {
            None => BTreeMap::new(),
            Some(Value::String(_, list)) => parse_peers(&list)?,
            Some(Value::Dict(_, table)) => peers_from_table(&table)?,
            Some(_) => return Err(ConfigError::PeersType),
        };
        if !peers.is_empty() && !peers.contains_key(&node_id) {
            return Err(ConfigError::SelfNotInPeers {
                node_id,
                peers: peers
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        if let Some(addr) = &raw.cluster_listen {
            if peers.is_empty() {
                return Err(ConfigError::ClusterListenWithoutPeers { addr: addr.clone() });
            }
            check_listen_addr(addr).map_err(|reason| ConfigError::InvalidAddress {
                key: "cluster_listen",
                addr: addr.clone(),
                reason,
            })?;
        }
        if let Some(addr) = &raw.http_listen {
            check_listen_addr(addr).map_err(|reason| ConfigError::InvalidAddress {
                key: "http_listen",
                addr: addr.clone(),
                reason,
            })?;
        }
        if raw.kafka.broker_heartbeat_interval_ms == 0
            || raw.kafka.broker_session_timeout_ms <= raw.kafka.broker_heartbeat_interval_ms
        {
            return Err(ConfigError::BrokerSession {
                interval_ms: raw.kafka.broker_heartbeat_interval_ms,
                timeout_ms: raw.kafka.broker_session_timeout_ms,
            });
        }
        check_ranges(&raw.kafka)?;
        LogConfig::default()
            .with_overrides(&raw.kafka.topic_defaults())
            .map_err(ConfigError::TopicDefault)?;
        let cluster_secret = match &raw.cluster_secret_file {
            Some(path) => Some(
                ClusterSecret::from_file(path)
                    .map_err(|e| ConfigError::ClusterSecret(e.to_string()))?,
            ),
            None if !peers.is_empty() => {
                return Err(ConfigError::ClusterSecret(format!(
                    "a node with peers (a cluster, or one about to grow into one) needs a \
                     cluster secret: {MAKE_A_SECRET}"
                )));
            }
            None => None,
        };
        let cluster_tls = cluster_tls(
            raw.cluster_tls_certificate.as_deref(),
            raw.cluster_tls_key.as_deref(),
            raw.cluster_tls_ca.as_deref(),
        )?;
        if cluster_tls.is_some() && cluster_secret.is_none() {
            return Err(ConfigError::ClusterSecret(format!(
                "cluster TLS is configured, and cluster connections prove the cluster secret                  inside it: {MAKE_A_SECRET}"
            )));
        }
        let (listeners, inter_broker) = kafka_listeners(
            &raw.listen,
            raw.advertise.as_deref(),
            &raw.kafka,
            cluster_secret.as_ref(),
        )?;
        Ok(Self {
            metadata_backend: raw.metadata_backend,
            data_dir: raw.data_dir,
            node_id,
            peers,
            listeners,
            inter_broker,
            cluster_listen: raw.cluster_listen,
            cluster_secret,
            cluster_tls,
            http_listen: raw.http_listen,
            log_format: raw.log_format,
            kafka: raw.kafka,
            figment,
        })
    }

    /// The backend's own table, `metadata.<backend>`, focused so that its keys are at the top
    /// level. Empty when the table is absent.
    pub fn backend_config(&self, backend: &str) -> Figment {
        self.figment.focus(&format!("metadata.{backend}"))
    }

    /// The address this node's metadata backend listens on: `cluster_listen`, else its own
    /// entry in `peers`.
    pub fn cluster_addr(&self) -> Option<&str> {
        self.cluster_listen
            .as_deref()
            .or_else(|| self.peers.get(&self.node_id).map(String::as_str))
    }
}

/// Cluster TLS from `cluster_tls_certificate`, `cluster_tls_key` and `cluster_tls_ca`: all
/// three, or none.
fn cluster_tls(
    certificate: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> Result<Option<ClusterTls>, ConfigError> {
    match (certificate, key, ca) {
        (None, None, None) => Ok(None),
        (Some(certificate), Some(key), Some(ca)) => ClusterTls::load(certificate, key, ca)
            .map(Some)
            .map_err(|e| ConfigError::ClusterTls(e.to_string())),
        _ => Err(ConfigError::ClusterTls(
            "cluster TLS needs all of cluster_tls_certificate (this node's PEM chain, leaf \
             first), cluster_tls_key (its PEM key) and cluster_tls_ca (the PEM CA that signed \
             every node's certificate), or none of them"
                .into(),
        )),
    }
}

/// One Kafka listener: its name, where it binds, what it advertises, how it authenticates.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The listener name (`PLAINTEXT`, `SASL_SSL`, or a name the protocol map maps).
    pub name: String,
    /// Address it binds (`HOST:PORT`; port 0: any free port).
    pub bind: String,
    /// Address its clients are told to connect to (`HOST:PORT`; port 0: the bound port).
    pub advertise: String,
    /// How connections to it authenticate.
    pub security: ListenerSecurity,
}

impl Config {
    /// The listener brokers connect to each other on.
    pub fn inter_broker_listener(&self) -> &ListenerConfig {
        &self.listeners[self.inter_broker]
    }
}

/// The Kafka listeners and the index of the inter-broker one: from `kafka.listeners` (with
/// `kafka.advertised_listeners`, `kafka.listener_security_protocol_map` and
/// `kafka.inter_broker_listener_name`), or, when that is empty, the one listener `listen`
/// speaking `kafka.security_protocol`, advertised as `advertise`.
fn kafka_listeners(
    listen: &str,
    advertise: Option<&str>,
    kafka: &KafkaSettings,
    secret: Option<&ClusterSecret>,
) -> Result<(Vec<ListenerConfig>, usize), ConfigError> {
    let mut security = SecurityBuilder::new(kafka, secret)?;
    let listeners = if kafka.listeners.is_empty() {
        for (key, set) in [
            (
                "advertised_listeners",
                !kafka.advertised_listeners.is_empty(),
            ),
            (
                "listener_security_protocol_map",
                !kafka.listener_security_protocol_map.is_empty(),
            ),
        ] {
            if set {
                return Err(ConfigError::Listeners(format!(
                    "kafka.{key} is set but kafka.listeners is empty: list the listeners"
                )));
            }
        }
        let protocol = SecurityProtocol::parse(&kafka.security_protocol).ok_or_else(|| {
            ConfigError::Security(format!(
                "kafka.security_protocol {:?} is not one of PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL",
                kafka.security_protocol
            ))
        })?;
        check_listen_addr(listen).map_err(|reason| ConfigError::InvalidAddress {
            key: "listen",
            addr: listen.to_owned(),
            reason,
        })?;
        let advertise = advertise.unwrap_or(listen);
        check_listen_addr(advertise).map_err(|reason| ConfigError::InvalidAddress {
            key: "advertise",
            addr: advertise.to_owned(),
            reason,
        })?;
        vec![ListenerConfig {
            name: protocol.name().to_owned(),
            bind: listen.to_owned(),
            advertise: advertise.to_owned(),
            security: security.for_protocol(
                protocol,
                &format!("kafka.security_protocol {}", protocol.name()),
            )?,
        }]
    } else {
        if listen != DEFAULT_LISTEN || advertise.is_some() {
            return Err(ConfigError::Listeners(
                "listen and advertise describe the one listener of a node without \
                 kafka.listeners; with kafka.listeners, give addresses there and in \
                 kafka.advertised_listeners"
                    .into(),
            ));
        }
        if !kafka.security_protocol.eq_ignore_ascii_case("PLAINTEXT") {
            return Err(ConfigError::Listeners(
                "kafka.security_protocol is the protocol of a node without kafka.listeners; \
                 with kafka.listeners, name each listener after its protocol or map it in \
                 kafka.listener_security_protocol_map"
                    .into(),
            ));
        }
        named_listeners(kafka, &mut security)?
    };
    let inter_broker = match &kafka.inter_broker_listener_name {
        Some(name) => listeners
            .iter()
            .position(|l| &l.name == name)
            .ok_or_else(|| {
                ConfigError::Listeners(format!(
                    "kafka.inter_broker_listener_name {name:?} is not one of the listeners ({})",
                    names(&listeners)
                ))
            })?,
        None if listeners.len() == 1 => 0,
        None => listeners
            .iter()
            .position(|l| l.name == "PLAINTEXT")
            .ok_or_else(|| {
                ConfigError::Listeners(format!(
                    "kafka.inter_broker_listener_name is needed: the listeners ({}) include \
                     none named PLAINTEXT, Kafka's default",
                    names(&listeners)
                ))
            })?,
    };
    Ok((listeners, inter_broker))
}

fn names(listeners: &[ListenerConfig]) -> String {
    listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `kafka.listeners` with their advertised addresses and protocols.
fn named_listeners(
    kafka: &KafkaSettings,
    security: &mut SecurityBuilder<'_>,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let mut protocols: BTreeMap<String, SecurityProtocol> = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ]
    .into_iter()
    .map(|p| (p.name().to_owned(), p))
    .collect();
    for entry in &kafka.listener_security_protocol_map {
        let parsed = entry
            .split_once(':')
            .and_then(|(name, protocol)| Some((name, SecurityProtocol::parse(protocol)?)));
        let Some((name, protocol)) = parsed.filter(|(name, _)| valid_listener_name(name)) else {
            return Err(ConfigError::Listeners(format!(
                "kafka.listener_security_protocol_map: {entry:?} is not NAME:PROTOCOL with \
                 PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )));
        };
        protocols.insert(name.to_owned(), protocol);
    }
    let advertised = kafka
        .advertised_listeners
        .iter()
        .map(|entry| parse_listener("advertised_listeners", entry))
        .collect::<Result<Vec<_>, _>>()?;
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for entry in &kafka.listeners {
        let (name, bind) = parse_listener("listeners", entry)?;
        if listeners.iter().any(|l| l.name == name) {
            return Err(ConfigError::Listeners(format!(
                "kafka.listeners names {name} twice; each listener needs its own name"
            )));
        }
        let port = bind.rsplit_once(':').map_or("", |(_, port)| port);
        if port != "0"
            && listeners
                .iter()
                .any(|l| l.bind.ends_with(&format!(":{port}")))
        {
            return Err(ConfigError::Listeners(format!(
                "kafka.listeners uses port {port} twice"
            )));
        }
        let protocol = *protocols.get(&name).ok_or_else(|| {
            ConfigError::Listeners(format!(
                "listener {name} has no security protocol: name it after one (PLAINTEXT, SSL, \
                 SASL_PLAINTEXT, SASL_SSL) or map it in kafka.listener_security_protocol_map \
                 (\"{name}:SASL_SSL\")"
            ))
        })?;
        let advertise = match advertised.iter().find(|(n, _)| *n == name) {
            Some((_, addr)) => addr.clone(),
            None => bind.clone(),
        };
        if advertise.starts_with("0.0.0.0:") || advertise.starts_with("[::]:") {
            return Err(ConfigError::Listeners(format!(
                "listener {name} would advertise {advertise}, which no client can connect to: \
                 give its address in kafka.advertised_listeners"
            )));
        }
        listeners.push(ListenerConfig {
            security: security
                .for_protocol(protocol, &format!("listener {name} ({})", protocol.name()))?,
            name,
            bind,
            advertise,
        });
    }
    if let Some((name, _)) = advertised
        .iter()
        .find(|(name, _)| !listeners.iter().any(|l| &l.name == name))
    {
        return Err(ConfigError::Listeners(format!(
            "kafka.advertised_listeners names {name}, which is not one of kafka.listeners"
        )));
    }
    Ok(listeners)
}

fn valid_listener_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `NAME://HOST:PORT` → the name and `HOST:PORT` (an empty host is every interface, as in
/// Kafka).
fn parse_listener(key: &str, entry: &str) -> Result<(String, String), ConfigError> {
    let invalid = |reason: &str| {
        ConfigError::Listeners(format!(
            "kafka.{key}: {entry:?} {reason} (expected NAME://HOST:PORT, e.g. SASL_SSL://0.0.0.0:9094)"
        ))
    };
    let (name, addr) = entry
        .split_once("://")
        .ok_or_else(|| invalid("has no NAME://"))?;
    if !valid_listener_name(name) {
        return Err(invalid("has no valid listener name"));
    }
    let addr = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    check_listen_addr(&addr).map_err(invalid)?;
    Ok((name.to_owned(), addr))
}

/// Builds each listener's security from the `[kafka]` settings, loading the TLS files once
/// for all the listeners that use them. Anything but PLAINTEXT needs the cluster secret
/// (brokers authenticate to each other's listeners with it).
struct SecurityBuilder<'a> {
    kafka: &'a KafkaSettings,
    secret: Option<&'a ClusterSecret>,
    mechanisms: Vec<Mechanism>,
    tls: Option<Tls>,
}

impl<'a> SecurityBuilder<'a> {
    fn new(
        kafka: &'a KafkaSettings,
        secret: Option<&'a ClusterSecret>,
    ) -> Result<Self, ConfigError> {
        let mechanisms = kafka
            .sasl_enabled_mechanisms
            .iter()
            .map(|name| {
                Mechanism::parse(name).ok_or_else(|| {
                    ConfigError::Security(format!(
                        "kafka.sasl_enabled_mechanisms: {name:?} is not one of SCRAM-SHA-256, \
                         SCRAM-SHA-512, PLAIN"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            kafka,
            secret,
            mechanisms,
            tls: None,
        })
    }

    /// The security of a listener speaking `protocol`; `what` names it (and its protocol) in
    /// errors.
    fn for_protocol(
        &mut self,
        protocol: SecurityProtocol,
        what: &str,
    ) -> Result<ListenerSecurity, ConfigError> {
        if protocol == SecurityProtocol::Plaintext {
            return Ok(ListenerSecurity::plaintext());
        }
        if protocol.uses_sasl() && self.mechanisms.is_empty() {
            return Err(ConfigError::Security(format!(
                "{what} needs at least one of kafka.sasl_enabled_mechanisms"
            )));
        }
        let Some(secret) = self.secret else {
            return Err(ConfigError::Security(format!(
                "{what} needs a cluster secret, even on one node: brokers and \
                 `switchyard user` / `switchyard acl` authenticate with it; {MAKE_A_SECRET}"
            )));
        };
        let tls = if protocol.uses_tls() {
            Some(self.tls(what)?)
        } else {
            None
        };
        Ok(ListenerSecurity {
            protocol,
            mechanisms: if protocol.uses_sasl() {
                self.mechanisms.clone()
            } else {
                Vec::new()
            },
            cluster_secret: Some(secret.clone()),
            tls,
        })
    }

    fn tls(&mut self, what: &str) -> Result<Tls, ConfigError> {
        if let Some(tls) = &self.tls {
            return Ok(tls.clone());
        }
        let kafka = self.kafka;
        let file = |value: &Option<PathBuf>, key: &str| {
            value.clone().ok_or_else(|| {
                ConfigError::Security(format!("{what} needs kafka.{key} (a PEM file)"))
            })
        };
        let client_auth = ClientAuth::parse(&kafka.ssl_client_auth).ok_or_else(|| {
            ConfigError::Security(format!(
                "kafka.ssl_client_auth {:?} is not one of none, requested, required",
                kafka.ssl_client_auth
            ))
        })?;
        let files = TlsFiles {
            certificate: file(&kafka.ssl_certificate_location, "ssl_certificate_location")?,
            key: file(&kafka.ssl_key_location, "ssl_key_location")?,
            truststore: file(&kafka.ssl_truststore_location, "ssl_truststore_location")?,
            client_auth,
        };
        let tls = Tls::load(&files).map_err(ConfigError::Security)?;
        self.tls = Some(tls.clone());
        Ok(tls)
    }
}

/// The bottom layer: built-in defaults.
pub fn defaults() -> Figment {
    Figment::new()
        .merge(Serialized::default("data_dir", DEFAULT_DATA_DIR))
        .merge(Serialized::default("node_id", DEFAULT_NODE_ID))
        .merge(Serialized::default("listen", DEFAULT_LISTEN))
}

/// Stack the layers without validating them.
pub fn layered(file: Option<&Path>, overrides: &Overrides) -> Result<Figment, ConfigError> {
    let mut figment = defaults();
    match file {
        Some(path) => {
            if !path.is_file() {
                return Err(ConfigError::FileNotFound {
                    path: path.to_owned(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        None => {
            // `file_exact`, not `file`: `Toml::file` would search parent directories too.
            let default = Path::new(DEFAULT_CONFIG_FILE);
            if default.is_file() {
                figment = figment.merge(Toml::file_exact(default));
            }
        }
    }
    Ok(figment
        .merge(
            Env::prefixed(ENV_PREFIX)
                .ignore(&[
                    CRASH_AT_CLEANER_STEP_KEY,
                    #[cfg(feature = "conformance")]
                    FLAW_KEY,
                ])
                .split("__"),
        )
        .merge(Serialized::defaults(overrides)))
}

/// [`crate::cleaner::SWITCHYARD_CRASH_AT_CLEANER_STEP`] after the prefix: a test hook, not a
/// setting.
const CRASH_AT_CLEANER_STEP_KEY: &str = "crash_at_cleaner_step";

/// `SWITCHYARD_FLAW` after the prefix ([`crate::conformance::flaw`]): a conformance build's
/// deliberately broken behaviour, not a setting. Other builds refuse it as an unknown field.
#[cfg(feature = "conformance")]
const FLAW_KEY: &str = "flaw";

fn node_id(id: i64) -> Result<NodeId, ConfigError> {
    // 0..=i32::MAX is exactly the range where both conversions succeed.
    i32::try_from(id)
        .ok()
        .and_then(|id| u32::try_from(id).ok())
        .map(|id| NodeId(u64::from(id)))
        .ok_or(ConfigError::NodeIdOutOfRange { id })
}

/// Parse `ID=HOST:PORT,ID=HOST:PORT,…`. Whitespace around entries is ignored; an empty string
/// means no peers.
pub fn parse_peers(list: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    if list.trim().is_empty() {
        return Ok(peers);
    }
    for entry in list.split(',') {
        let entry = entry.trim();
        let Some((id, addr)) = entry.split_once('=') else {
            return Err(invalid_peer(entry, "missing '='"));
        };
        insert_peer(&mut peers, entry, id.trim(), addr.trim())?;
    }
    Ok(peers)
}

/// Read the table form of `peers`: keys are ids, values `HOST:PORT` strings.
fn peers_from_table(table: &Dict) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for (id, addr) in table {
        let Some(addr) = addr.as_str() else {
            return Err(invalid_peer(
                id,
                "in the table form the address must be a \"HOST:PORT\" string",
            ));
        };
        insert_peer(&mut peers, &format!("{id}={addr}"), id.trim(), addr.trim())?;
    }
    Ok(peers)
}

fn insert_peer(
    peers: &mut BTreeMap<NodeId, String>,
    entry: &str,
    id: &str,
    addr: &str,
) -> Result<(), ConfigError> {
    let id = id
        .parse::<i64>()
        .map_err(|_| invalid_peer(entry, "the id is not a number"))
        .and_then(|id| {
            node_id(id)
                .map_err(|_| invalid_peer(entry, &format!("the id is not in 0..={MAX_NODE_ID}")))
        })?;
    check_addr(addr).map_err(|reason| invalid_peer(entry, reason))?;
    if peers.insert(id, addr.to_owned()).is_some() {
        return Err(ConfigError::DuplicatePeer { id });
    }
    Ok(())
}

/// Check `HOST:PORT`, where HOST may be a bracketed IPv6 address (`[::1]:9093`).
fn check_addr(addr: &str) -> Result<(), &'static str> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("missing ':PORT'");
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.contains(char::is_whitespace) {
        return Err("the host contains whitespace");
    }
    if let Some(inner) = host.strip_prefix('[') {
        match inner.strip_suffix(']') {
            Some(ipv6) if ipv6.contains(':') && !ipv6.contains(['[', ']']) => {}
            _ => return Err("brackets must hold an IPv6 address, e.g. [::1]:9093"),
        }
    } else if host.contains([':', '[', ']']) {
        return Err("an IPv6 host must be in brackets, e.g. [::1]:9093");
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port is not a number");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be in 1..=65535"),
        Ok(_) => Ok(()),
    }
}

/// Check a listen address: like [`check_addr`], but port 0 (any free port) is allowed.
fn check_listen_addr(addr: &str) -> Result<(), &'static str> {
    match addr.strip_suffix(":0") {
        Some(host) => check_addr(&format!("{host}:1")),
        None => check_addr(addr),
    }
}

fn invalid_peer(entry: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidPeer {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error, which is large"
)]
mod tests {
    use figment::Jail;

    use super::*;

    fn peer_map(entries: &[(u64, &str)]) -> BTreeMap<NodeId, String> {
        entries
            .iter()
            .map(|(id, addr)| (NodeId(*id), (*addr).to_owned()))
            .collect()
    }

    /// Run `f` in a figment jail: a fresh current directory and an environment restored
    /// afterwards, with no `SWITCHYARD_*` variable inherited.
    fn jailed(f: impl FnOnce(&mut Jail) -> figment::error::Result<()>) {
        Jail::expect_with(|jail| {
            // Nothing inherited may leak in; the jail restores the environment afterwards.
            jail.clear_env();
            f(jail)
        });
    }

    fn load(file: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::load(file.map(Path::new), overrides)
    }

    /// Give the jail a cluster secret file, named by the environment.
    fn with_secret(jail: &mut Jail) -> figment::error::Result<()> {
        jail.create_file("cluster.secret", "0123456789abcdef0123456789abcdef\n")?;
        jail.set_env("SWITCHYARD_CLUSTER_SECRET_FILE", "cluster.secret");
        Ok(())
    }

    #[test]
    fn a_cluster_needs_a_secret_and_a_single_node_does_not() {
        jailed(|jail| {
            let flags = Overrides {
                node_id: Some(1),
                peers: Some("1=a:9093,2=b:9093".into()),
                ..Overrides::default()
            };
            let err = load(None, &flags).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("cluster secret")
                    && e.contains("/dev/urandom")
                    && e.contains("--cluster-secret-file")),
                "{err:?}"
            );
            let alone = Overrides {
                peers: None,
                ..flags.clone()
            };
            assert!(
                load(None, &alone)
                    .map_err(|e| e.to_string())?
                    .cluster_secret
                    .is_none()
            );

            jail.create_file("short.secret", "hunter2")?;
            let short = Overrides {
                cluster_secret_file: Some("short.secret".into()),
                ..flags.clone()
            };
            let err = load(None, &short).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("at least 32")),
                "{err:?}"
            );
            let missing = Overrides {
                cluster_secret_file: Some("nowhere.secret".into()),
                ..flags.clone()
            };
            let err = load(None, &missing).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("nowhere.secret")),
                "{err:?}"
            );

            with_secret(jail)?;
            assert!(
                load(None, &flags)
                    .map_err(|e| e.to_string())?
                    .cluster_secret
                    .is_some()
            );
            Ok(())
        });
    }

    #[test]
    fn cluster_tls_needs_all_three_files_and_a_secret() {
        jailed(|jail| {
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
                .and_then(|params| params.self_signed(&key))
                .map_err(|e| e.to_string())?;
            jail.create_file("node.pem", &certificate.pem())?;
            jail.create_file("node.key", &key.serialize_pem())?;
            jail.create_file("ca.pem", &certificate.pem())?;
            jail.create_file("garbage.key", "not a key")?;
            // A single node (no secret needed) checks its cluster TLS settings all the same.
            let flags = Overrides {
                node_id: Some(1),
                cluster_tls_certificate: Some("node.pem".into()),
                ..Overrides::default()
            };
            let err = load(None, &flags).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("all of cluster_tls_certificate")),
                "{err:?}"
            );
            let complete = Overrides {
                cluster_tls_key: Some("node.key".into()),
                cluster_tls_ca: Some("ca.pem".into()),
                ..flags.clone()
            };
            let err = load(None, &complete).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("cluster secret")),
                "{err:?}"
            );
            with_secret(jail)?;
            let complete = Overrides {
                peers: Some("1=127.0.0.1:9093,2=127.0.0.1:9094".into()),
                ..complete
            };
            let config = load(None, &complete).map_err(|e| e.to_string())?;
            assert!(
                config
                    .cluster_credentials()
                    .is_some_and(|c| c.tls.is_some())
            );
            let garbage = Overrides {
                cluster_tls_key: Some("garbage.key".into()),
                ..complete.clone()
            };
            let err = load(None, &garbage).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("garbage.key")),
                "{err:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn named_listeners_bind_advertise_and_pick_the_inter_broker_one() {
        jailed(|jail| {
            with_secret(jail)?;
            jail.create_file(
                "switchyard.toml",
                r#"
                [kafka]
                listeners = ["INTERNAL://127.0.0.1:9093", "PLAINTEXT://:9092"]
                advertised_listeners = ["PLAINTEXT://clients.example:9092"]
                listener_security_protocol_map = ["INTERNAL:SASL_PLAINTEXT"]
                inter_broker_listener_name = "INTERNAL"
                "#,
            )?;
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            let listeners: Vec<_> = config
                .listeners
                .iter()
                .map(|l| {
                    (
                        l.name.as_str(),
                        l.bind.as_str(),
                        l.advertise.as_str(),
                        l.security.protocol.name(),
                    )
                })
                .collect();
            assert_eq!(
                listeners,
                [
                    (
                        "INTERNAL",
                        "127.0.0.1:9093",
                        "127.0.0.1:9093",
                        "SASL_PLAINTEXT"
                    ),
                    (
                        "PLAINTEXT",
                        "0.0.0.0:9092",
                        "clients.example:9092",
                        "PLAINTEXT"
                    ),
                ]
            );
            assert_eq!(config.inter_broker_listener().name, "INTERNAL");

            // Kafka's default inter-broker listener is the one named PLAINTEXT.
            jail.create_file(
                "switchyard.toml",
                r#"
                [kafka]
                listeners = ["SASL_PLAINTEXT://127.0.0.1:9093", "PLAINTEXT://127.0.0.1:9092"]
                "#,
            )?;
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.inter_broker_listener().name, "PLAINTEXT");
            Ok(())
        });
    }

    #[test]
    fn listeners_that_do_not_fit_together_are_refused_with_the_reason() {
        jailed(|jail| {
            with_secret(jail)?;
            for (kafka, reason) in [
                (
                    r#"listeners = ["EXTERNAL://127.0.0.1:9094"]"#,
                    "listener EXTERNAL has no security protocol",
                ),
                (
                    r#"listeners = ["PLAINTEXT://127.0.0.1:9092", "PLAINTEXT://127.0.0.1:9093"]"#,
                    "names PLAINTEXT twice",
                ),
                (
                    r#"listeners = ["PLAINTEXT://127.0.0.1:9092", "SSL://127.0.0.1:9092"]"#,
                    "port 9092 twice",
                ),
                (
                    r#"listeners = ["SASL_PLAINTEXT://127.0.0.1:9094", "EXTERNAL://127.0.0.1:9095"]
                    listener_security_protocol_map = ["EXTERNAL:PLAINTEXT"]"#,
                    "kafka.inter_broker_listener_name is needed",
                ),
                (
                    r#"listeners = ["PLAINTEXT://127.0.0.1:9092"]
                    inter_broker_listener_name = "INTERNAL""#,
                    "\"INTERNAL\" is not one of the listeners",
                ),
                (r#"listeners = ["PLAINTEXT://:9092"]"#, "0.0.0.0:9092"),
                (
                    r#"listeners = ["PLAINTEXT://127.0.0.1:9092"]
                    advertised_listeners = ["SSL://a.example:9093"]"#,
                    "names SSL, which is not one of kafka.listeners",
                ),
                (r#"listeners = ["127.0.0.1:9092"]"#, "has no NAME://"),
                (
                    r#"listeners = ["INTERNAL://127.0.0.1:9092"]
                    listener_security_protocol_map = ["INTERNAL:TLS"]"#,
                    "is not NAME:PROTOCOL",
                ),
                (
                    r#"advertised_listeners = ["PLAINTEXT://a.example:9092"]"#,
                    "kafka.listeners is empty",
                ),
                (
                    r#"listeners = ["SSL://127.0.0.1:9093"]"#,
                    "listener SSL (SSL) needs kafka.ssl_certificate_location",
                ),
                (
                    r#"listeners = ["PLAINTEXT://127.0.0.1:9092"]
                    security_protocol = "SASL_PLAINTEXT""#,
                    "name each listener after its protocol",
                ),
            ] {
                jail.create_file("switchyard.toml", &format!("[kafka]\n{kafka}\n"))?;
                let err = load(None, &Overrides::default())
                    .err()
                    .map(|e| e.to_string());
                assert!(
                    err.as_deref().is_some_and(|e| e.contains(reason)),
                    "{kafka}: {err:?}"
                );
            }
            // `listen` belongs to the one-listener form.
            jail.create_file(
                "switchyard.toml",
                "listen = \"127.0.0.1:19092\"\n[kafka]\nlisteners = [\"PLAINTEXT://127.0.0.1:9092\"]\n",
            )?;
            let err = load(None, &Overrides::default())
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("with kafka.listeners, give addresses there")),
                "{err:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_production_example_loads_and_the_guide_shows_it() {
        const EXAMPLE: &str = include_str!("../../docs/deploy/switchyard.toml");
        const UNIT: &str = include_str!("../../docs/deploy/switchyard.service");
        let guide = include_str!("../../docs/OPERATIONS.md");
        assert!(
            guide.contains(EXAMPLE),
            "docs/OPERATIONS.md lacks the example config"
        );
        assert!(
            guide.contains(UNIT),
            "docs/OPERATIONS.md lacks the systemd unit"
        );
        jailed(|jail| {
            jail.create_file("switchyard.toml", EXAMPLE)?;
            // The example's secret path, relative to the jail.
            with_secret(jail)?;
            let config =
                load(Some("switchyard.toml"), &Overrides::default()).map_err(|e| e.to_string())?;
            let backend = config.metadata_backend.clone().unwrap_or_default();
            assert!(EXAMPLE.contains(&format!("metadata_backend = \"{backend}\"")));
            assert_eq!(config.peers.len(), 3);
            assert_eq!(config.cluster_addr(), Some("0.0.0.0:9093"));
            assert_eq!(config.http_listen.as_deref(), Some("0.0.0.0:9644"));
            assert_eq!(config.log_format, LogFormat::Json);
            assert_eq!(config.kafka.min_insync_replicas, 2);
            assert_eq!(config.kafka.default_replication_factor, 3);
            assert_eq!(
                config.listeners[config.inter_broker].advertise,
                "broker-1.example.internal:9092"
            );
            Ok(())
        });
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        jailed(|_| {
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.metadata_backend, None);
            assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
            assert_eq!(config.node_id, NodeId(1));
            assert!(config.peers.is_empty());
            assert_eq!(config.cluster_addr(), None);
            Ok(())
        });
    }

    #[test]
    fn file_overrides_defaults_env_overrides_file_flags_override_env() {
        jailed(|jail| {
            with_secret(jail)?;
            jail.create_file(
                DEFAULT_CONFIG_FILE,
                r#"
                    metadata_backend = "file-backend"
                    data_dir = "/from/file"
                    node_id = 2
                    peers = "2=file-host:9093"

                    [metadata.mybackend]
                    mode = "file"
                    segment_bytes = 1024
                "#,
            )?;

            // File over defaults.
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.metadata_backend.as_deref(), Some("file-backend"));
            assert_eq!(config.data_dir, PathBuf::from("/from/file"));
            assert_eq!(config.node_id, NodeId(2));
            assert_eq!(config.peers, peer_map(&[(2, "file-host:9093")]));
            assert_eq!(config.cluster_addr(), Some("file-host:9093"));
            let table = config.backend_config("mybackend");
            assert_eq!(table.extract_inner::<String>("mode")?, "file");
            assert_eq!(table.extract_inner::<u64>("segment_bytes")?, 1024);

            // Env over file, for top-level and nested keys.
            jail.set_env("SWITCHYARD_METADATA_BACKEND", "env-backend");
            jail.set_env("SWITCHYARD_NODE_ID", "3");
            jail.set_env("SWITCHYARD_PEERS", "3=env-host:9093,4=other:9093");
            jail.set_env("SWITCHYARD_METADATA__MYBACKEND__MODE", "env");
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.metadata_backend.as_deref(), Some("env-backend"));
            assert_eq!(config.data_dir, PathBuf::from("/from/file"));
            assert_eq!(config.node_id, NodeId(3));
            assert_eq!(
                config.peers,
                peer_map(&[(3, "env-host:9093"), (4, "other:9093")])
            );
            let table = config.backend_config("mybackend");
            assert_eq!(table.extract_inner::<String>("mode")?, "env");
            assert_eq!(table.extract_inner::<u64>("segment_bytes")?, 1024);

            // Flags over env; only the flags given.
            let flags = Overrides {
                metadata_backend: Some("flag-backend".into()),
                data_dir: None,
                node_id: Some(4),
                peers: None,
                listen: Some("127.0.0.1:19092".into()),
                advertise: None,
                cluster_listen: None,
                ..Overrides::default()
            };
            let config = load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.metadata_backend.as_deref(), Some("flag-backend"));
            assert_eq!(config.data_dir, PathBuf::from("/from/file"));
            assert_eq!(config.node_id, NodeId(4));
            assert_eq!(config.cluster_addr(), Some("other:9093"));

            let flags = Overrides {
                data_dir: Some("/from/flag".into()),
                peers: Some(String::new()),
                ..flags
            };
            let config = load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
            assert!(config.peers.is_empty());
            Ok(())
        });
    }

    #[test]
    fn explicit_file_replaces_the_default_file() {
        jailed(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "node_id = 5")?;
            jail.create_file("other.toml", "node_id = 6")?;
            let config =
                load(Some("other.toml"), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.node_id, NodeId(6));
            Ok(())
        });
    }

    #[test]
    fn default_file_is_not_searched_for_in_parent_directories() {
        jailed(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "node_id = 5")?;
            jail.change_dir(jail.create_dir("sub")?)?;
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.node_id, NodeId(1));
            Ok(())
        });
    }

    #[test]
    fn explicit_file_must_exist() {
        jailed(|_| {
            let err = load(Some("missing.toml"), &Overrides::default()).err();
            assert!(
                matches!(&err, Some(ConfigError::FileNotFound { path }) if path == Path::new("missing.toml")),
                "{err:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn peers_table_form() {
        jailed(|jail| {
            with_secret(jail)?;
            jail.create_file(
                DEFAULT_CONFIG_FILE,
                r#"
                    node_id = 2
                    [peers]
                    1 = "a:9093"
                    2 = "[::1]:9094"
                "#,
            )?;
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.peers, peer_map(&[(1, "a:9093"), (2, "[::1]:9094")]));
            assert_eq!(config.cluster_addr(), Some("[::1]:9094"));
            Ok(())
        });
    }

    #[test]
    fn peers_table_with_a_non_string_address_is_rejected() {
        jailed(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "[peers]\n1 = 9093")?;
            let err = load(None, &Overrides::default()).err();
            assert!(
                matches!(&err, Some(ConfigError::InvalidPeer { reason, .. }) if reason.contains("string")),
                "{err:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_top_level_key_is_rejected_by_name() {
        jailed(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "node_idd = 3")?;
            let err = load(None, &Overrides::default()).err();
            let message = err.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(matches!(err, Some(ConfigError::Invalid(_))), "{err:?}");
            assert!(message.contains("node_idd"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_is_rejected_by_name() {
        jailed(|jail| {
            jail.set_env("SWITCHYARD_DATADIR", "/x");
            let err = load(None, &Overrides::default()).err();
            let message = err.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(message.contains("datadir"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn metadata_must_be_a_table() {
        jailed(|jail| {
            jail.create_file(DEFAULT_CONFIG_FILE, "metadata = 3")?;
            let err = load(None, &Overrides::default()).err();
            assert!(matches!(err, Some(ConfigError::Invalid(_))), "{err:?}");
            Ok(())
        });
    }

    #[test]
    fn node_id_must_fit_a_kafka_broker_id() {
        jailed(|jail| {
            for id in [-1, MAX_NODE_ID + 1, i64::MAX] {
                let flags = Overrides {
                    node_id: Some(id),
                    ..Overrides::default()
                };
                let err = load(None, &flags).err();
                assert!(
                    matches!(err, Some(ConfigError::NodeIdOutOfRange { id: got }) if got == id),
                    "{id}: {err:?}"
                );
            }
            for id in [0, MAX_NODE_ID] {
                let flags = Overrides {
                    node_id: Some(id),
                    ..Overrides::default()
                };
                let config = load(None, &flags).map_err(|e| e.to_string())?;
                assert_eq!(
                    config.node_id.0,
                    u64::try_from(id).map_err(|e| e.to_string())?
                );
            }
            jail.set_env("SWITCHYARD_NODE_ID", "2147483648");
            let err = load(None, &Overrides::default()).err();
            let message = err.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(message.contains("0..=2147483647"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn node_id_of_the_wrong_type_names_the_key() {
        jailed(|jail| {
            jail.set_env("SWITCHYARD_NODE_ID", "one");
            let err = load(None, &Overrides::default()).err();
            let message = err.as_ref().map(ToString::to_string).unwrap_or_default();
            // figment names an environment key as spelled in the environment.
            assert!(message.contains("NODE_ID"), "{message}");
            assert!(message.contains("SWITCHYARD_"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn peers_must_include_this_node() {
        jailed(|_| {
            let flags = Overrides {
                node_id: Some(3),
                peers: Some("1=a:9093,2=b:9093".into()),
                ..Overrides::default()
            };
            let err = load(None, &flags).err();
            assert!(
                matches!(&err, Some(ConfigError::SelfNotInPeers { node_id: NodeId(3), peers }) if peers == "1,2"),
                "{err:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn cluster_listen_overrides_the_own_peers_entry_and_needs_peers() {
        jailed(|jail| {
            with_secret(jail)?;
            let flags = Overrides {
                node_id: Some(2),
                peers: Some("1=a:9093,2=b:9093".into()),
                cluster_listen: Some("0.0.0.0:9093".into()),
                ..Overrides::default()
            };
            let config = load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.cluster_addr(), Some("0.0.0.0:9093"));
            assert_eq!(
                config.peers.get(&NodeId(2)).map(String::as_str),
                Some("b:9093")
            );

            let alone = Overrides {
                peers: None,
                ..flags.clone()
            };
            let err = load(None, &alone).err();
            assert!(
                matches!(&err, Some(ConfigError::ClusterListenWithoutPeers { addr }) if addr == "0.0.0.0:9093"),
                "{err:?}"
            );
            let bad = Overrides {
                cluster_listen: Some("nowhere".into()),
                ..flags
            };
            let err = load(None, &bad).err();
            assert!(
                matches!(
                    &err,
                    Some(ConfigError::InvalidAddress {
                        key: "cluster_listen",
                        ..
                    })
                ),
                "{err:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn replica_fetch_settings_that_cannot_work_are_refused() {
        jailed(|jail| {
            for (key, value, bad) in [
                ("REPLICA_LAG_TIME_MAX_MS", "0", "replica_lag_time_max_ms"),
                (
                    "REPLICA_FETCH_WAIT_MAX_MS",
                    "40000",
                    "replica_fetch_wait_max_ms",
                ),
                ("REPLICA_FETCH_MAX_BYTES", "-1", "replica_fetch_max_bytes"),
                (
                    "REPLICA_FETCH_RESPONSE_MAX_BYTES",
                    "104857600",
                    "replica_fetch_response_max_bytes",
                ),
            ] {
                jail.set_env(format!("SWITCHYARD_KAFKA__{key}"), value);
                let err = load(None, &Overrides::default()).err();
                assert!(
                    matches!(&err, Some(ConfigError::OutOfRange { key, .. }) if *key == bad),
                    "{key}={value}: {err:?}"
                );
                jail.clear_env();
            }
            jail.set_env("SWITCHYARD_KAFKA__REPLICA_LAG_TIME_MAX_MS", "10000");
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.replica_lag_time_max_ms, 10_000);
            Ok(())
        });
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        jailed(|jail| {
            for (key, value, bad) in [
                (
                    "SOCKET_REQUEST_MAX_BYTES",
                    "4294967295",
                    "socket_request_max_bytes",
                ),
                (
                    "QUEUED_MAX_REQUEST_BYTES",
                    "1048576",
                    "queued_max_request_bytes",
                ),
                ("MAX_CONNECTIONS", "0", "max_connections"),
                ("MAX_CONNECTIONS_PER_IP", "20000", "max_connections_per_ip"),
                ("FETCH_MAX_BYTES", "10", "fetch_max_bytes"),
                ("MAX_PARTITIONS", "2000000", "max_partitions"),
                ("NUM_PARTITIONS", "20000", "num_partitions"),
                ("LOG_SEGMENT_BYTES", "13", "log_segment_bytes"),
                ("LOG_RETENTION_MS", "-2", "log_retention_ms"),
                ("MIN_INSYNC_REPLICAS", "0", "min_insync_replicas"),
                (
                    "LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS",
                    "0",
                    "leader_imbalance_check_interval_seconds",
                ),
                (
                    "LEADER_IMBALANCE_PER_BROKER_PERCENTAGE",
                    "101",
                    "leader_imbalance_per_broker_percentage",
                ),
                (
                    "TRANSACTION_MAX_TIMEOUT_MS",
                    "0",
                    "transaction_max_timeout_ms",
                ),
                (
                    "TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS",
                    "0",
                    "transaction_abort_timed_out_transaction_cleanup_interval_ms",
                ),
                (
                    "TRANSACTIONAL_ID_EXPIRATION_MS",
                    "0",
                    "transactional_id_expiration_ms",
                ),
                (
                    "LOG_RETENTION_CHECK_INTERVAL_MS",
                    "0",
                    "log_retention_check_interval_ms",
                ),
                ("LOG_CLEANER_THREADS", "0", "log_cleaner_threads"),
                ("LOG_CLEANER_BACKOFF_MS", "0", "log_cleaner_backoff_ms"),
                (
                    "LOG_CLEANER_IO_MAX_BYTES_PER_SECOND",
                    "0",
                    "log_cleaner_io_max_bytes_per_second",
                ),
            ] {
                jail.set_env(format!("SWITCHYARD_KAFKA__{key}"), value);
                let err = load(None, &Overrides::default()).err();
                assert!(
                    matches!(&err, Some(ConfigError::OutOfRange { key, .. }) if *key == bad),
                    "{key}={value}: {err:?}"
                );
                jail.clear_env();
            }
            Ok(())
        });
    }

    #[test]
    fn a_topic_default_the_topic_config_refuses_is_refused() {
        jailed(|jail| {
            jail.set_env("SWITCHYARD_KAFKA__COMPRESSION_TYPE", "brotli");
            let err = load(None, &Overrides::default()).err();
            assert!(
                matches!(&err, Some(ConfigError::TopicDefault(e)) if e.key == "compression.type"),
                "{err:?}"
            );
            jail.set_env("SWITCHYARD_KAFKA__COMPRESSION_TYPE", "zstd");
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                config.log_config().map_err(|e| e.to_string())?.compression,
                Some(switchyard_log::records::Codec::Zstd)
            );
            jail.set_env("SWITCHYARD_KAFKA__LOG_CLEANUP_POLICY", "shred");
            let err = load(None, &Overrides::default()).err();
            assert!(
                matches!(&err, Some(ConfigError::TopicDefault(e)) if e.key == "cleanup.policy"),
                "{err:?}"
            );
            jail.set_env("SWITCHYARD_KAFKA__LOG_CLEANUP_POLICY", "compact,delete");
            jail.set_env("SWITCHYARD_KAFKA__LOG_CLEANER_MIN_CLEANABLE_RATIO", "0.25");
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            let log = config.log_config().map_err(|e| e.to_string())?;
            assert!(log.cleanup.compact && log.cleanup.delete);
            assert!((log.min_cleanable_dirty_ratio - 0.25).abs() < f64::EPSILON);
            Ok(())
        });
    }

    #[test]
    fn the_cleaner_crash_hook_is_not_a_setting() {
        jailed(|jail| {
            jail.set_env(crate::cleaner::SWITCHYARD_CRASH_AT_CLEANER_STEP, "3");
            load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn broker_session_must_outlast_the_heartbeat_interval() {
        jailed(|jail| {
            jail.set_env("SWITCHYARD_KAFKA__BROKER_HEARTBEAT_INTERVAL_MS", "500");
            jail.set_env("SWITCHYARD_KAFKA__BROKER_SESSION_TIMEOUT_MS", "500");
            let err = load(None, &Overrides::default()).err();
            assert!(
                matches!(
                    &err,
                    Some(ConfigError::BrokerSession {
                        interval_ms: 500,
                        timeout_ms: 500
                    })
                ),
                "{err:?}"
            );
            jail.set_env("SWITCHYARD_KAFKA__BROKER_SESSION_TIMEOUT_MS", "1500");
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.broker_session_timeout_ms, 1_500);
            Ok(())
        });
    }

    #[test]
    fn peers_parse() -> Result<(), ConfigError> {
        assert_eq!(parse_peers("")?, BTreeMap::new());
        assert_eq!(parse_peers("  ")?, BTreeMap::new());
        assert_eq!(parse_peers("1=a:1")?, peer_map(&[(1, "a:1")]));
        assert_eq!(
            parse_peers(" 1 = a:9093 , 2=10.0.0.2:9093,3=[fe80::1]:65535")?,
            peer_map(&[(1, "a:9093"), (2, "10.0.0.2:9093"), (3, "[fe80::1]:65535")])
        );
        Ok(())
    }

    #[test]
    fn peers_syntax_errors_say_what_is_wrong() {
        let cases = [
            ("1", "missing '='"),
            ("1=a:1,", "missing '='"),
            ("1=a:1,,2=b:2", "missing '='"),
            ("x=a:1", "id is not a number"),
            ("=a:1", "id is not a number"),
            ("-1=a:1", "0..=2147483647"),
            ("2147483648=a:1", "0..=2147483647"),
            ("1=a", "missing ':PORT'"),
            ("1=:9093", "host is empty"),
            ("1=a b:9093", "whitespace"),
            ("1=a:", "port is not a number"),
            ("1=a:x", "port is not a number"),
            ("1=a:+1", "port is not a number"),
            ("1=a:0", "1..=65535"),
            ("1=a:65536", "1..=65535"),
            ("1=::1:9093", "brackets"),
            ("1=[]:9093", "brackets"),
            ("1=[a]:9093", "brackets"),
            ("1=[::1:9093", "brackets"),
            ("1=a]:9093", "brackets"),
        ];
        for (input, reason_part) in cases {
            match parse_peers(input) {
                Err(ConfigError::InvalidPeer { reason, .. }) => {
                    assert!(reason.contains(reason_part), "{input:?}: {reason}");
                }
                other => panic!("{input:?}: expected InvalidPeer, got {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_peer_ids_are_rejected() {
        for input in ["1=a:1,1=b:2", "1=a:1,01=a:1"] {
            let err = parse_peers(input).err();
            assert!(
                matches!(err, Some(ConfigError::DuplicatePeer { id: NodeId(1) })),
                "{input:?}: {err:?}"
            );
        }
    }

    #[test]
    fn error_messages_are_clear() {
        let err = parse_peers("1=a").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "invalid peers entry \"1=a\": missing ':PORT' (expected ID=HOST:PORT, e.g. \
                 1=host-a:9093)"
            )
        );
        let err = node_id(-4).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "node id -4 is out of range: it doubles as the Kafka broker id and must be in \
                 0..=2147483647"
            )
        );
    }
}
