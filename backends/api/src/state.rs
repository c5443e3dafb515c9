//! The metadata state every backend replicates, and its read accessors. Mutation happens only in
//! [`MetadataState::apply`](crate::MetadataState::apply) (see `apply.rs`).
//!
//! The collections are persistent (`imbl`): cloning a state is O(1) and shares structure, so a
//! backend can publish a fresh read view after every apply without copying the whole state, and
//! an atomic batch can be applied to a clone and swapped in only if every command succeeds.

use imbl::{OrdMap, Vector};
use serde::{Deserialize, Serialize};

use crate::ids::{BrokerId, ClusterId, GroupId, MemberId, TopicId};
use crate::security::SecurityState;
use crate::transactions::Transaction;

/// Topic and broker configuration: Kafka config name → value.
pub type Configs = OrdMap<String, String>;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    /// The broker's id.
    pub id: BrokerId,
    /// Host advertised to Kafka clients.
    pub host: String,
    /// Port advertised to Kafka clients.
    pub port: u16,
    /// Optional rack, for rack-aware placement.
    pub rack: Option<String>,
    /// Bumped by every registration, so that a fence aimed at an old incarnation of a broker
    /// cannot fence the broker after it came back.
    pub incarnation: u64,
    /// A fenced broker leads no partition and sits in no ISR (unless it is a partition's last
    /// ISR member, which Kafka keeps so an unclean election stays visible).
    pub fenced: bool,
    /// Every Kafka listener the broker advertises, by name (`advertised_listeners`); `host`
    /// and `port` are its inter-broker listener's. Empty for a broker registered by a build
    /// without named listeners: its one listener, `host:port`, serves every client.
    #[serde(default, deserialize_with = "crate::codec::added_in_v4")]
    pub listeners: Vec<BrokerEndpoint>,
}

impl Broker {
    /// Where a client connected to the listener named `listener` reaches this broker: its
    /// endpoint of that name (Kafka answers each listener with its own endpoints), `None` if
    /// it has none. A broker without named listeners answers `host:port` to every listener.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// One named Kafka listener a broker advertises: `NAME://HOST:PORT` of
/// `advertised_listeners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// The listener name (`PLAINTEXT`, `SASL_SSL`, or a name the security protocol map
    /// gives a protocol, like `INTERNAL`).
    pub name: String,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Assigned replicas, preferred leader first.
    #[serde(deserialize_with = "cautious::vector")]
    pub replicas: Vector<BrokerId>,
    /// Current leader; `None` when no in-sync replica is live.
    pub leader: Option<BrokerId>,
    /// In-sync replicas, a subset of `replicas`.
    #[serde(deserialize_with = "cautious::vector")]
    pub isr: Vector<BrokerId>,
    /// Bumped whenever the leader changes (Kafka's leader epoch).
    pub leader_epoch: i32,
    /// Bumped on every change to leader or ISR (Kafka's partition epoch); used to fence stale
    /// [`AlterPartition`](crate::MetadataCommand::AlterPartition) requests.
    pub partition_epoch: i32,
    /// Last checkpointed high watermark. The live value lives with the partition log.
    pub high_watermark: i64,
    /// Last checkpointed log start offset.
    pub log_start_offset: i64,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Permanent topic id.
    pub id: TopicId,
    /// Replication factor the topic was created with.
    pub replication_factor: u16,
    /// Topic-level configuration overrides.
    #[serde(deserialize_with = "cautious::ord_map")]
    pub configs: Configs,
    /// Partitions, indexed by partition number.
    #[serde(deserialize_with = "cautious::vector")]
    pub partitions: Vector<Partition>,
}

/// A consumer group member as recorded at the start of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// Member id assigned by the coordinator.
    pub id: MemberId,
    /// Static membership id (`group.instance.id`), if the client set one.
    pub group_instance_id: Option<String>,
    /// Client id reported by the member.
    pub client_id: String,
    /// Client host reported by the member.
    pub client_host: String,
    /// Session timeout the member joined with.
    pub session_timeout_ms: i32,
    /// Rebalance timeout the member joined with.
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the chosen protocol (its subscription).
    pub metadata: Vec<u8>,
    /// The member's assignment, set by [`SetGroupAssignment`](crate::MetadataCommand::SetGroupAssignment);
    /// empty until the leader has synced.
    pub assignment: Vec<u8>,
}

/// A consumer group's durable state. Heartbeats and in-progress joins live in the broker's
/// coordinator, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Group id.
    pub id: GroupId,
    /// Current generation; 0 for a group that never completed a join.
    pub generation: i32,
    /// Protocol type (`consumer` for consumer groups); empty for a group only used for commits.
    pub protocol_type: String,
    /// Chosen protocol (assignor name), if the group has members.
    pub protocol: Option<String>,
    /// Leader member of the current generation.
    pub leader: Option<MemberId>,
    /// Members of the current generation.
    #[serde(deserialize_with = "cautious::ord_map")]
    pub members: OrdMap<MemberId, GroupMember>,
    /// Whether the leader's assignment for the current generation has been stored.
    pub assignment_complete: bool,
}

impl Group {
    /// An empty group with no generation.
    pub fn empty(id: GroupId) -> Self {
        Self {
            id,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: OrdMap::new(),
            assignment_complete: false,
        }
    }
}

/// Key of a committed offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    /// Group that committed.
    pub group: GroupId,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

/// A committed consumer offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the last consumed record, if the client sent it.
    pub leader_epoch: Option<i32>,
    /// Client-supplied metadata string.
    pub metadata: String,
    /// Commit time, chosen by the proposer (milliseconds since the Unix epoch).
    pub commit_timestamp_ms: i64,
}

/// The whole replicated metadata state. Two states are equal exactly when every replica would
/// answer every read the same way.
///
/// Serialized field by field in declaration order. Deserializing reads the fields the codec
/// format version of the input has ([`crate::codec`]: `security` since version 3,
/// `broker_configs` since version 5, `transactions` since version 6, their marker epochs since
/// version 7) and leaves the newer ones empty, so snapshots written by older builds stay
/// readable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetadataState {
    pub(crate) cluster_id: Option<ClusterId>,
    pub(crate) brokers: OrdMap<BrokerId, Broker>,
    pub(crate) topics: OrdMap<String, Topic>,
    pub(crate) topic_names: OrdMap<TopicId, String>,
    pub(crate) groups: OrdMap<GroupId, Group>,
    pub(crate) offsets: OrdMap<OffsetKey, CommittedOffset>,
    pub(crate) next_producer_id: i64,
    /// Since codec format version 3; empty in a state written before.
    pub(crate) security: SecurityState,
    /// Dynamic broker configs: the cluster-wide defaults (`None`) and each broker's own. Since
    /// codec format version 5; empty in a state written before.
    pub(crate) broker_configs: OrdMap<Option<BrokerId>, Configs>,
    /// Transactional producers by transactional id. Since codec format version 6; empty in a
    /// state written before.
    pub(crate) transactions: OrdMap<String, Transaction>,
}

impl MetadataState {
    /// An empty state: no cluster id, nothing registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole state as JSON, for people to read (`switchyard metadata export --format
    /// json`): every collection a list in key order, a map's key inside each of its entries.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        use serde_json::{Value, json, to_value};
        fn list<T>(
            items: impl Iterator<Item = T>,
            entry: impl Fn(T) -> Result<Value, serde_json::Error>,
        ) -> Result<Vec<Value>, serde_json::Error> {
            items.map(entry).collect()
        }
        Ok(json!({
            "cluster_id": self.cluster_id.as_ref().map(|c| c.0.clone()),
            "brokers": list(self.brokers.values(), to_value)?,
            "topics": list(self.topics.values(), to_value)?,
            "groups": list(self.groups.values(), to_value)?,
            "offsets": list(self.offsets.iter(), |(key, committed)| Ok(json!({
                "group": key.group.0,
                "topic": key.topic,
                "partition": key.partition,
                "committed": to_value(committed)?,
            })))?,
            "next_producer_id": self.next_producer_id,
            "scram_credentials": list(self.security.scram.iter(), |((user, mechanism), credential)| Ok(json!({
                "user": user,
                "mechanism": to_value(mechanism)?,
                "credential": to_value(credential)?,
            })))?,
            "acls": list(self.security.acls.iter(), to_value)?,
            "broker_configs": list(self.broker_configs.iter(), |(broker, configs)| Ok(json!({
                "broker": broker.map(|b| b.0),
                "configs": to_value(configs)?,
            })))?,
            "transactions": list(self.transactions.iter(), |(id, transaction)| Ok(json!({
                "transactional_id": id,
                "transaction": to_value(transaction)?,
            })))?,
        }))
    }

    /// The cluster id, once [`InitCluster`](crate::MetadataCommand::InitCluster) applied.
    pub fn cluster_id(&self) -> Option<&ClusterId> {
        self.cluster_id.as_ref()
    }

    /// All registered brokers, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values()
    }

    /// One broker.
    pub fn broker(&self, id: BrokerId) -> Option<&Broker> {
        self.brokers.get(&id)
    }

    /// Registered, unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The broker that coordinates `group`: among the live brokers, the one with the highest
    /// rendezvous hash of the group id and its broker id. Every node that has applied the same
    /// brokers picks the same one, and when a broker is fenced only its own groups move.
    pub fn group_coordinator(&self, group: &str) -> Option<&Broker> {
        self.live_brokers()
            .max_by_key(|b| (rendezvous(group, b.id.0), b.id))
    }

    /// All topics, by name.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    /// Number of topics.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Number of partitions over all topics (each counted once, not per replica).
    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions.len()).sum()
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: TopicId) -> Option<&Topic> {
        self.topic_names
            .get(&id)
            .and_then(|name| self.topics.get(name))
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&Partition> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
    }

    /// All groups, by id.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// One group.
    pub fn group(&self, id: &GroupId) -> Option<&Group> {
        self.groups.get(id)
    }

    /// One committed offset.
    pub fn committed_offset(
        &self,
        group: &GroupId,
        topic: &str,
        partition: u32,
    ) -> Option<&CommittedOffset> {
        self.offsets.get(&OffsetKey {
            group: group.clone(),
            topic: topic.to_owned(),
            partition,
        })
    }

    /// Every committed offset of one group, in (topic, partition) order.
    pub fn group_offsets<'a>(
        &'a self,
        group: &'a GroupId,
    ) -> impl Iterator<Item = (&'a OffsetKey, &'a CommittedOffset)> + 'a {
        let start = OffsetKey {
            group: group.clone(),
            topic: String::new(),
            partition: 0,
        };
        self.offsets
            .range(start..)
            .take_while(move |(k, _)| &k.group == group)
    }

    /// The first producer id not yet handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// The dynamic broker configs of `broker`, or the cluster-wide defaults for `None`
    /// (set by [`AlterBrokerConfigs`](crate::MetadataCommand::AlterBrokerConfigs)).
    pub fn broker_configs(&self, broker: Option<BrokerId>) -> Option<&Configs> {
        self.broker_configs.get(&broker)
    }

    /// One transactional id's producer and transaction.
    pub fn transaction(&self, transactional_id: &str) -> Option<&Transaction> {
        self.transactions.get(transactional_id)
    }

    /// Every transactional id's producer and transaction, by id.
    pub fn transactions(&self) -> impl Iterator<Item = (&String, &Transaction)> {
        self.transactions.iter()
    }

    /// How many committed offsets the state holds, of every group.
    pub fn committed_offset_count(&self) -> usize {
        self.offsets.len()
    }
}

/// The fields of [`MetadataState`], in order; format versions before 3 end after the seventh,
/// before 5 after the eighth, before 6 after the ninth.
const STATE_FIELDS: [&str; 10] = [
    "cluster_id",
    "brokers",
    "topics",
    "topic_names",
    "groups",
    "offsets",
    "next_producer_id",
    "security",
    "broker_configs",
    "transactions",
];

impl<'de> Deserialize<'de> for MetadataState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};

        struct Fields(usize);

        impl<'de> Visitor<'de> for Fields {
            type Value = MetadataState;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a metadata state of {} fields", self.0)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetadataState, A::Error> {
                fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
                    seq: &mut A,
                    index: usize,
                    of: &Fields,
                ) -> Result<T, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| A::Error::invalid_length(index, of))
                }
                let mut state = MetadataState {
                    cluster_id: next(&mut seq, 0, &self)?,
                    brokers: next::<_, cautious::Map<_, _>>(&mut seq, 1, &self)?.0,
                    topics: next::<_, cautious::Map<_, _>>(&mut seq, 2, &self)?.0,
                    topic_names: next::<_, cautious::Map<_, _>>(&mut seq, 3, &self)?.0,
                    groups: next::<_, cautious::Map<_, _>>(&mut seq, 4, &self)?.0,
                    offsets: next::<_, cautious::Map<_, _>>(&mut seq, 5, &self)?.0,
                    next_producer_id: next(&mut seq, 6, &self)?,
                    security: SecurityState::default(),
                    broker_configs: OrdMap::new(),
                    transactions: OrdMap::new(),
                };
                if self.0 > 7 {
                    state.security = next(&mut seq, 7, &self)?;
                }
                if self.0 > 8 {
                    // The configs inside are maps too: each read cautiously.
                    let configs: cautious::Map<Option<BrokerId>, cautious::Map<String, String>> =
                        next(&mut seq, 8, &self)?;
                    state.broker_configs = configs.0.into_iter().map(|(k, v)| (k, v.0)).collect();
                }
                if self.0 > 9 {
                    state.transactions = next::<_, cautious::Map<_, _>>(&mut seq, 9, &self)?.0;
                    if crate::codec::body_version() <= crate::codec::POSTCARD_WITHOUT_MARKER_EPOCHS
                    {
                        // Decided before transactions counted their decisions: see the codec.
                        for (id, txn) in state.transactions.clone() {
                            if txn.status.is_preparing() {
                                state.transactions.insert(
                                    id,
                                    Transaction {
                                        marker_epoch: 1,
                                        ..txn
                                    },
                                );
                            }
                        }
                    }
                }
                Ok(state)
            }
        }

        let fields = match crate::codec::body_version() {
            6.. => &STATE_FIELDS[..],
            5 => &STATE_FIELDS[..9],
            3..=4 => &STATE_FIELDS[..8],
            _ => &STATE_FIELDS[..7],
        };
        deserializer.deserialize_struct("MetadataState", fields, Fields(fields.len()))
    }
}

/// Deserializing the persistent collections without trusting the lengths in the input.
/// `imbl`'s own `Deserialize` reserves as many elements as the input's length prefix claims
/// before reading any: a snapshot of a few bytes (from disk or from a peer) claiming billions of
/// entries aborted the process on the allocation (found by the `metadata_codec` fuzz target).
/// These read through `Vec` and `BTreeMap`, whose reservations serde caps, in the same format.
pub(crate) mod cautious {
    use std::collections::{BTreeMap, BTreeSet};

    use imbl::{OrdMap, OrdSet, Vector};
    use serde::{Deserialize, Deserializer};

    pub(super) fn vector<'de, D, A>(deserializer: D) -> Result<Vector<A>, D::Error>
    where
        D: Deserializer<'de>,
        A: Deserialize<'de> + Clone,
    {
        Ok(Vec::<A>::deserialize(deserializer)?.into_iter().collect())
    }

    pub(crate) fn ord_map<'de, D, K, V>(deserializer: D) -> Result<OrdMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
    {
        Ok(BTreeMap::<K, V>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }

    pub(crate) fn ord_set<'de, D, A>(deserializer: D) -> Result<OrdSet<A>, D::Error>
    where
        D: Deserializer<'de>,
        A: Deserialize<'de> + Ord + Clone,
    {
        Ok(BTreeSet::<A>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }

    /// An [`OrdMap`] read through [`ord_map`], for hand-written visitors.
    #[derive(Clone)]
    pub(crate) struct Map<K: Ord + Clone, V: Clone>(pub(crate) OrdMap<K, V>);

    impl<'de, K, V> Deserialize<'de> for Map<K, V>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
    {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            ord_map(deserializer).map(Self)
        }
    }
}

/// FNV-1a over the group id and the broker id, finished with the SplitMix64 mix: stable across
/// builds and platforms (unlike `std`'s hasher).
fn rendezvous(group: &str, broker: i32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.bytes().chain(broker.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}
