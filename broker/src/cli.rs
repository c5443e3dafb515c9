//! The command line: `switchyard backends`, `switchyard serve`, `switchyard cluster …` and
//! `switchyard user …`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat, Overrides};
use crate::ops::Format;

/// Switchyard: a Kafka-compatible broker with a swappable metadata backend.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// One variant per subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the metadata backends compiled into this binary: name, guarantees, description,
    /// modes and the `switchyard cluster` operations each offers.
    Backends,
    /// Run a broker node.
    ///
    /// Settings come from, each overriding the one before: built-in defaults, the TOML config
    /// file, SWITCHYARD_* environment variables (`__` separates nested keys, e.g.
    /// SWITCHYARD_METADATA__<BACKEND>__<KEY> is `metadata.<backend>.<key>`), then these flags. A backend's own
    /// settings go in its `[metadata.<backend>]` table of the config file.
    Serve(ServeArgs),
    /// Operate a running cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage the SCRAM users of a running cluster (for SASL listeners), through its Kafka
    /// listener, proving the cluster secret. The password is salted and hashed here; the
    /// cluster stores only what verifies it.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the ACLs of a running cluster (with `kafka.authorizer_enabled`), through its
    /// Kafka listener, proving the cluster secret.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Create, list, describe, reconfigure, grow and delete topics of a running cluster, over
    /// the Kafka protocol (like `rpk topic`).
    #[command(subcommand)]
    Topic(TopicCommand),
    /// List, describe, reset the offsets of and delete consumer groups of a running cluster,
    /// over the Kafka protocol (like `rpk group`).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Produce records to a topic: each line of standard input is one record's value. Prints
    /// where they went. For quick checks; use a Kafka client for real work.
    Produce(ProduceArgs),
    /// Consume records of a topic and print them: values, one per line, or one JSON object
    /// per record with --format json. Follows the topic until interrupted unless --num or
    /// --until-end says when to stop.
    Consume(ConsumeArgs),
    /// Export a stopped node's metadata to a file, or initialise a node of any backend from one:
    /// switch backends (export, import into the other backend in the same data directory,
    /// restart on it), back up and restore. Partition logs are not touched.
    #[command(subcommand)]
    Metadata(MetadataFileCommand),
    #[cfg(feature = "conformance")]
    /// Run seeded fault runs (partitions, delays, dropped traffic, crashes, power cuts) of every
    /// multi-node backend in this binary, check each against its declared guarantees, check that deliberately broken
    /// variants are caught, and write the Markdown report (docs/CONFORMANCE.md).
    Conformance {
        /// Backends to run, comma-separated (default: every multi-node backend linked in).
        #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
        backends: Vec<String>,
        /// Seeds per backend and fault kind.
        #[arg(long, value_name = "N", default_value_t = 2)]
        seeds: u64,
        /// Operations per client in each run (four clients).
        #[arg(long, value_name = "N", default_value_t = 60)]
        ops: usize,
        /// The first seed.
        #[arg(long, value_name = "N", default_value_t = 1)]
        first_seed: u64,
        /// Write the report here instead of to standard output.
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
}

/// `switchyard metadata …`.
#[derive(Debug, Clone, Subcommand)]
pub enum MetadataFileCommand {
    /// Write a node's or a running cluster's metadata to FILE — the state, the index and epoch
    /// it was applied up to, the cluster id, the backend and this build's version — in one
    /// versioned, checksummed file that `import` reads (or, with --format json, a dump for
    /// people to read and diff). Without --bootstrap: what the configured backend
    /// (--metadata-backend, as for `serve`) of a stopped node recovers from --data-dir. With
    /// --bootstrap: from the running cluster (a backup), a linearizable read where the backend
    /// offers one, else the metadata leader's state; the output says which.
    Export {
        /// Where to write the export.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// `binary` (the export file `import` reads) or `json` (for reading and diffing).
        #[arg(long, value_enum, default_value_t = ExportFormat::Binary)]
        format: ExportFormat,
        /// Export from the running cluster whose Kafka listeners these are (comma-separated,
        /// tried in order), proving the cluster secret (--cluster-secret-file) on SASL
        /// listeners.
        #[arg(long, value_name = "HOST:PORT,...")]
        bootstrap: Option<String>,
        /// PEM CA certificates to verify the --bootstrap listeners by (SSL and SASL_SSL).
        #[arg(long, value_name = "PATH", requires = "bootstrap")]
        ssl_truststore_location: Option<PathBuf>,
        /// The stopped node (as for `serve`): its backend and data directory.
        #[command(flatten)]
        config: ServeArgs,
    },
    /// Initialise the configured backend (--metadata-backend) of a stopped node from FILE, in
    /// its data directory: every node of a cluster is initialised from the same file, with its
    /// own --node-id and the cluster's --peers, then started on that backend. Refuses a data
    /// directory that already holds that backend's metadata or another cluster's, and a file
    /// that is damaged or of an unknown version; then nothing is written.
    Import {
        /// The export file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The node to initialise (as for `serve`).
        #[command(flatten)]
        config: ServeArgs,
    },
}

/// Output of `switchyard metadata export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The export file.
    Binary,
    /// A JSON dump.
    Json,
}

/// `switchyard cluster …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster as its nodes report it: the metadata leader and epoch, every member
    /// with its role, whether it votes, the index it has applied and its lag behind the
    /// leader, and every broker, live or fenced. Asks the Kafka listeners in --bootstrap until
    /// one answers, then every broker it lists.
    Status {
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Promote node N to take metadata writes (manual failover, for backends that offer it; see
    /// `switchyard backends`): it bumps the epoch, catches up from a majority, and the old
    /// primary's writes are refused from then on. Reads the same configuration as `serve`
    /// (peers, backend) to find node N.
    Promote {
        /// The node to promote.
        #[arg(value_name = "N")]
        node: u64,
        /// How the cluster is configured (as for `serve`).
        #[command(flatten)]
        config: ServeArgs,
    },
    /// Add node N, already running and waiting to join, to the metadata cluster (for backends
    /// that offer it; see `switchyard backends`): it joins as a learner, catches up, then
    /// becomes a voter. Asks the configured peers in turn; a follower passes the request to the
    /// leader. Reads the same configuration as `serve` to find the cluster.
    AddNode {
        /// The node to add.
        #[arg(value_name = "N")]
        node: u64,
        /// Its cluster address (its own entry in its `--peers`).
        #[arg(value_name = "HOST:PORT")]
        addr: String,
        /// How the cluster is configured (as for `serve`).
        #[command(flatten)]
        config: ServeArgs,
    },
    /// Remove node N from the metadata cluster (for backends that offer it; see `switchyard
    /// backends`). Once the change commits the node takes no part in elections or commits; stop
    /// it then. Asks the configured peers in
    /// turn (N last); a follower passes the request to the leader.
    RemoveNode {
        /// The node to remove.
        #[arg(value_name = "N")]
        node: u64,
        /// How the cluster is configured (as for `serve`).
        #[command(flatten)]
        config: ServeArgs,
    },
}

/// Flags of `switchyard serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file.
    ///
    /// Without this flag, `switchyard.toml` in the current directory is read if it exists. A
    /// file named here must exist. Top-level keys: metadata_backend, data_dir, node_id, peers,
    /// and a `[metadata.<backend>]` table per backend; any other key is an error.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Metadata backend to run, by name (`switchyard backends` lists those compiled in).
    ///
    /// Default: the durable backend compiled in with the strongest declared guarantees
    /// (durability, then read consistency, then failover). The non-durable `memory` backend
    /// runs only when named.
    ///
    /// Env: SWITCHYARD_METADATA_BACKEND. TOML key: metadata_backend.
    #[arg(long, value_name = "NAME")]
    pub metadata_backend: Option<String>,

    /// Directory for this node's data; the metadata backend uses `<PATH>/metadata/<backend>`.
    ///
    /// Default: ./switchyard-data. Env: SWITCHYARD_DATA_DIR. TOML key: data_dir.
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// This node's id in the metadata cluster, also its Kafka broker id: 0 to 2147483647.
    ///
    /// Default: 1. Env: SWITCHYARD_NODE_ID. TOML key: node_id.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub node_id: Option<i64>,

    /// Every node of the metadata cluster, this one included, as ID=HOST:PORT pairs separated by
    /// commas (e.g. 1=host-a:9093,2=host-b:9093). HOST:PORT is the node's metadata cluster
    /// address; an IPv6 host goes in brackets. This node's own entry is its listen address.
    ///
    /// Default: none (a single node). Env: SWITCHYARD_PEERS. TOML key: peers, either the same
    /// string or a `[peers]` table with entries like `1 = "host-a:9093"`.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,

    /// Address of the Kafka listener.
    ///
    /// Default: 127.0.0.1:9092. Env: SWITCHYARD_LISTEN. TOML key: listen.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// Address Kafka clients are told to connect to (Metadata responses).
    ///
    /// Default: the listen address. Env: SWITCHYARD_ADVERTISE. TOML key: advertise.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Address the metadata backend listens on for its peers, when it differs from this node's
    /// entry in --peers (which is what the other nodes dial), e.g. 0.0.0.0:9093 behind NAT.
    ///
    /// Default: this node's entry in --peers. Env: SWITCHYARD_CLUSTER_LISTEN. TOML key:
    /// cluster_listen.
    #[arg(long, value_name = "HOST:PORT")]
    pub cluster_listen: Option<String>,

    /// File holding the cluster secret (at least 32 bytes; e.g. `head -c 32 /dev/urandom |
    /// base64`), the same on every node: every connection between nodes, and every `switchyard
    /// cluster` command, proves it. Required with --peers.
    ///
    /// Default: none. Env: SWITCHYARD_CLUSTER_SECRET_FILE. TOML key: cluster_secret_file.
    #[arg(long, value_name = "PATH")]
    pub cluster_secret_file: Option<PathBuf>,

    /// This node's certificate (PEM chain, leaf first) for mutual TLS on every connection
    /// between nodes and from `switchyard cluster` commands. It must name the host of this
    /// node's entry in --peers (a DNS name or IP subject alternative name). Cluster TLS needs
    /// all three of --cluster-tls-certificate, --cluster-tls-key and --cluster-tls-ca.
    ///
    /// Default: none (cluster connections are authenticated, not encrypted). Env:
    /// SWITCHYARD_CLUSTER_TLS_CERTIFICATE. TOML key: cluster_tls_certificate.
    #[arg(long, value_name = "PATH")]
    pub cluster_tls_certificate: Option<PathBuf>,

    /// The private key (PEM) of --cluster-tls-certificate.
    ///
    /// Default: none. Env: SWITCHYARD_CLUSTER_TLS_KEY. TOML key: cluster_tls_key.
    #[arg(long, value_name = "PATH")]
    pub cluster_tls_key: Option<PathBuf>,

    /// The CA certificates (PEM) every node's cluster certificate is checked against.
    ///
    /// Default: none. Env: SWITCHYARD_CLUSTER_TLS_CA. TOML key: cluster_tls_ca.
    #[arg(long, value_name = "PATH")]
    pub cluster_tls_ca: Option<PathBuf>,

    /// Address of the admin HTTP listener: `/metrics` (Prometheus text format), `/health`
    /// (the process is alive) and `/ready` (the metadata backend is ready, the broker is
    /// registered and unfenced, the Kafka listeners are up), e.g. 127.0.0.1:9644.
    ///
    /// Default: none (no admin listener). Env: SWITCHYARD_HTTP_LISTEN. TOML key: http_listen.
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen: Option<String>,

    /// How log lines are written to standard error: `text`, or `json` (one object per line).
    /// `RUST_LOG` sets the levels (default: `info`, with the consensus libraries at `warn`).
    ///
    /// Default: text. Env: SWITCHYARD_LOG_FORMAT. TOML key: log_format.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// A running cluster's Kafka listeners and the secret that proves the right to administer it.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Kafka listeners to ask, comma-separated, in order until one answers.
    #[arg(long, value_name = "HOST:PORT,...", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// The cluster secret file: needed when the listeners are SASL_PLAINTEXT (it
    /// authenticates this command as the operator); ignored by PLAINTEXT listeners.
    #[arg(long, value_name = "PATH", env = "SWITCHYARD_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// PEM CA certificates to verify the listeners by: connect with TLS (SSL and SASL_SSL
    /// listeners).
    #[arg(long, value_name = "PATH")]
    pub ssl_truststore_location: Option<PathBuf>,
    /// A PEM client certificate (chain, leaf first) to present over TLS, for listeners with
    /// `ssl_client_auth` `required` (or `requested`); on an SSL listener its subject is the
    /// principal, so it must be a super user's. Needs --ssl-key-location and
    /// --ssl-truststore-location.
    #[arg(long, value_name = "PATH", requires_all = ["ssl_key_location", "ssl_truststore_location"])]
    pub ssl_certificate_location: Option<PathBuf>,
    /// The private key (PEM) of --ssl-certificate-location.
    #[arg(long, value_name = "PATH", requires = "ssl_certificate_location")]
    pub ssl_key_location: Option<PathBuf>,
    /// Deadline of each request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub timeout_ms: u64,
}

/// Output of the topic, group, produce and consume commands.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// `text` (aligned columns) or `json`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `KEY=VALUE`, for configs.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `switchyard topic …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TopicCommand {
    /// Create topics (CreateTopics).
    Create {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Partitions of each.
        #[arg(short, long, default_value_t = 1)]
        partitions: i32,
        /// Replicas of each partition; -1: the broker's default.replication.factor.
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        replicas: i16,
        /// A topic config, KEY=VALUE (e.g. cleanup.policy=compact); repeat for more.
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List every topic with its partition count, replication factor and id (Metadata).
    List {
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Describe topics: every config with its source, and every partition's leader, leader
    /// epoch, replicas, ISR, log start offset and high watermark.
    Describe {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Set or delete configs of a topic; the others stay as they are (IncrementalAlterConfigs).
    AlterConfig {
        /// The topic.
        topic: String,
        /// Set a config, KEY=VALUE; repeat for more.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Delete a config (back to the broker's default); repeat for more.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Add partitions to a topic (CreatePartitions). Keyed records of existing keys may map
    /// to other partitions afterwards.
    AddPartitions {
        /// The topic.
        topic: String,
        /// How many partitions to add.
        #[arg(short, long, value_name = "N")]
        num: i32,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete topics and their data (DeleteTopics).
    Delete {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// `switchyard group …`.
#[derive(Debug, Clone, Subcommand)]
pub enum GroupCommand {
    /// List every group with its state and coordinator (ListGroups on every broker).
    List {
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Describe groups: state, members and their assignments, and per partition the
    /// committed offset, log end offset and lag.
    Describe {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Reset a group's committed offsets (the group must have no members: stop its
    /// consumers first).
    Seek {
        /// The group.
        group: String,
        /// `start` (log start offsets), `end` (high watermarks) or an offset.
        #[arg(long, value_name = "start|end|OFFSET")]
        to: crate::ops::group::SeekTo,
        /// Topics to reset (default: those the group has offsets for); repeat for more.
        #[arg(long = "topic", value_name = "TOPIC")]
        topics: Vec<String>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete groups without members, with their committed offsets (DeleteGroups).
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
        /// How to print the result.
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// `switchyard produce`.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// The topic.
    pub topic: String,
    /// The partition (default: by key as Kafka's partitioner does, else one at random).
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// The key of every record.
    #[arg(short, long)]
    pub key: Option<String>,
    /// Acknowledgements to wait for: -1 (all in-sync replicas), 1 (the leader) or 0.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i16).range(-1..=1))]
    pub acks: i16,
    /// Where the cluster is.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How to print the result.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `switchyard consume`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    /// The topic.
    pub topic: String,
    /// Partitions to read (default: all); repeat for more.
    #[arg(short, long = "partition", value_name = "N")]
    pub partitions: Vec<i32>,
    /// Where to start: `start`, `end` or an offset.
    #[arg(short, long, value_name = "start|end|OFFSET", default_value = "start")]
    pub offset: crate::ops::records::StartAt,
    /// Stop after this many records.
    #[arg(short, long, value_name = "N")]
    pub num: Option<usize>,
    /// Stop at the high watermarks of when it started.
    #[arg(long)]
    pub until_end: bool,
    /// Where the cluster is.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How to print the result.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `switchyard user …`.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create a user, or give it a new password, for one SCRAM mechanism. PLAIN clients are
    /// checked against the same credentials.
    Create {
        /// The user name.
        #[arg(value_name = "NAME")]
        name: String,
        /// File whose first line is the password (`-` for standard input).
        #[arg(long, value_name = "PATH")]
        password_file: PathBuf,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, value_name = "MECHANISM", default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// PBKDF2 iterations, 4096..=16384.
        #[arg(long, value_name = "N", default_value_t = 8192)]
        iterations: u32,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Remove a user's credential for one SCRAM mechanism.
    Delete {
        /// The user name.
        #[arg(value_name = "NAME")]
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, value_name = "MECHANISM", default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// List every user and its credentials (mechanism and iterations).
    List {
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// `switchyard acl …`.
#[derive(Debug, Clone, Subcommand)]
pub enum AclCommand {
    /// Add a binding: PRINCIPAL may (or, with --deny, may not) do OPERATION on a resource.
    Create {
        /// The binding.
        #[command(flatten)]
        binding: AclArgs,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// List every binding, or one principal's.
    List {
        /// Only this principal's bindings (`User:NAME`).
        #[arg(long, value_name = "PRINCIPAL")]
        principal: Option<String>,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Remove one binding, named exactly as it was created.
    Delete {
        /// The binding.
        #[command(flatten)]
        binding: AclArgs,
        /// Where the cluster is.
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// One ACL binding on the command line: exactly one of --topic, --group, --cluster.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("resource").required(true).multiple(false))]
pub struct AclArgs {
    /// Who: `User:NAME`, or `User:*` for everyone.
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: String,
    /// What: ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION,
    /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
    #[arg(long, value_name = "OPERATION")]
    pub operation: String,
    /// On this topic (`*` for every topic).
    #[arg(long, value_name = "NAME", group = "resource")]
    pub topic: Option<String>,
    /// On this consumer group (`*` for every group).
    #[arg(long, value_name = "NAME", group = "resource")]
    pub group: Option<String>,
    /// On the cluster.
    #[arg(long, group = "resource")]
    pub cluster: bool,
    /// The name is a prefix: every topic or group whose name starts with it.
    #[arg(long)]
    pub prefixed: bool,
    /// Deny instead of allow; a deny beats every allow.
    #[arg(long)]
    pub deny: bool,
    /// Only from this client address (`*`: any).
    #[arg(long, value_name = "IP", default_value = "*")]
    pub host: String,
}

impl ServeArgs {
    /// The flags that were given, as the top configuration layer.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            metadata_backend: self.metadata_backend.clone(),
            data_dir: self.data_dir.clone(),
            node_id: self.node_id,
            peers: self.peers.clone(),
            listen: self.listen.clone(),
            advertise: self.advertise.clone(),
            cluster_listen: self.cluster_listen.clone(),
            cluster_secret_file: self.cluster_secret_file.clone(),
            cluster_tls_certificate: self.cluster_tls_certificate.clone(),
            cluster_tls_key: self.cluster_tls_key.clone(),
            cluster_tls_ca: self.cluster_tls_ca.clone(),
            http_listen: self.http_listen.clone(),
            log_format: self.log_format,
        }
    }

    /// Load and validate the configuration these flags point at and override.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        Config::load(self.config.as_deref(), &self.overrides())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_help_names_every_env_var_and_toml_key() {
        let mut command = Cli::command();
        let Some(serve) = command.find_subcommand_mut("serve") else {
            panic!("no serve subcommand");
        };
        let help = serve.render_long_help().to_string();
        for needle in [
            "--config",
            "switchyard.toml",
            "--metadata-backend",
            "SWITCHYARD_METADATA_BACKEND",
            "metadata_backend",
            "--data-dir",
            "SWITCHYARD_DATA_DIR",
            "data_dir",
            "--node-id",
            "SWITCHYARD_NODE_ID",
            "node_id",
            "2147483647",
            "--peers",
            "SWITCHYARD_PEERS",
            "[peers]",
            "--cluster-listen",
            "SWITCHYARD_CLUSTER_LISTEN",
            "cluster_listen",
            "--cluster-secret-file",
            "SWITCHYARD_CLUSTER_SECRET_FILE",
            "cluster_secret_file",
            "--cluster-tls-certificate",
            "SWITCHYARD_CLUSTER_TLS_CERTIFICATE",
            "cluster_tls_ca",
            "--http-listen",
            "SWITCHYARD_HTTP_LISTEN",
            "http_listen",
            "--log-format",
            "SWITCHYARD_LOG_FORMAT",
            "log_format",
        ] {
            assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
        }
    }

    #[test]
    fn only_given_flags_override() {
        let cli = Cli::try_parse_from(["switchyard", "serve", "--node-id", "-3"]);
        let Ok(Cli {
            command: Command::Serve(args),
        }) = cli
        else {
            panic!("unexpected parse: {cli:?}");
        };
        let overrides = args.overrides();
        assert_eq!(overrides.node_id, Some(-3));
        assert_eq!(overrides.metadata_backend, None);
        assert_eq!(overrides.data_dir, None);
        assert_eq!(overrides.peers, None);
    }
}
