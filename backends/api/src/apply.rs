//! [`MetadataState::apply`]: the deterministic state machine. No clock, no randomness, no I/O:
//! the result depends only on the state and the command, so every replica that applies the same
//! log reaches the same state and the same verdicts.

use std::collections::BTreeSet;

use imbl::{OrdMap, Vector};

use crate::command::{
    GenerationCheck, MAX_PRODUCER_ID_BLOCK, MetadataCommand, NewTopic, OffsetCommit, Outcome,
    PartitionOffsets,
};
use crate::error::Rejection;
use crate::ids::{BrokerId, ClusterId, GroupId, MemberId, ProducerId, TopicId};
use crate::state::{
    Broker, BrokerEndpoint, CommittedOffset, Group, GroupMember, MetadataState, OffsetKey,
    Partition, Topic,
};
use crate::transactions::Acting;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// The most partitions (counted once, not per replica) the whole cluster may hold. Apply
/// refuses a command that would pass it, whatever the broker's own, lower, `max_partitions`
/// setting says: the ceiling is part of the state machine, so every replica agrees on it.
pub const MAX_CLUSTER_PARTITIONS: usize = 1_000_000;

impl MetadataState {
    /// Apply one command. On `Err` the state is unchanged. Deterministic and total: it never
    /// panics, whatever the command.
    pub fn apply(&mut self, command: &MetadataCommand) -> Result<Outcome, Rejection> {
        match command {
            MetadataCommand::InitCluster { cluster_id } => self.init_cluster(cluster_id),
            MetadataCommand::RegisterBroker {
                id,
                host,
                port,
                rack,
                listeners,
            } => self.register_broker(*id, (host, *port), rack.as_deref(), listeners),
            MetadataCommand::FenceBroker { id, incarnation } => {
                self.fence_broker(*id, *incarnation)
            }
            MetadataCommand::UnregisterBroker { id } => self.unregister_broker(*id),
            MetadataCommand::CreateTopics { topics } => Ok(Outcome::TopicsCreated {
                results: topics.iter().map(|t| self.create_topic(t)).collect(),
            }),
            MetadataCommand::DeleteTopics { names } => Ok(Outcome::TopicsDeleted {
                results: names.iter().map(|n| self.delete_topic(n)).collect(),
            }),
            MetadataCommand::CreatePartitions { topic, assignments } => {
                self.create_partitions(topic, assignments)
            }
            MetadataCommand::AlterTopicConfigs { topic, set, remove } => {
                self.alter_topic_configs(topic, set, remove)
            }
            MetadataCommand::AlterPartition {
                topic,
                partition,
                partition_epoch,
                leader,
                isr,
            } => self.alter_partition(topic, *partition, *partition_epoch, *leader, isr),
            MetadataCommand::CheckpointPartitionOffsets { offsets } => {
                self.checkpoint_offsets(offsets)
            }
            MetadataCommand::StartGeneration {
                group,
                expected_generation,
                protocol_type,
                protocol,
                leader,
                members,
            } => self.start_generation(
                group,
                *expected_generation,
                protocol_type,
                protocol.as_ref(),
                leader.as_ref(),
                members,
            ),
            MetadataCommand::SetGroupAssignment {
                group,
                generation,
                leader,
                assignments,
            } => self.set_assignment(group, *generation, leader, assignments),
            MetadataCommand::DeleteGroups { groups } => Ok(Outcome::GroupsDeleted {
                results: groups.iter().map(|g| self.delete_group(g)).collect(),
            }),
            MetadataCommand::CommitOffsets {
                group,
                generation,
                offsets,
                commit_timestamp_ms,
            } => self.commit_offsets(group, generation.as_ref(), offsets, *commit_timestamp_ms),
            MetadataCommand::CoordinatedCommitOffsets {
                coordinator,
                incarnation,
                group,
                generation,
                offsets,
                commit_timestamp_ms,
            } => {
                self.check_coordinator(group, *coordinator, *incarnation)?;
                self.commit_offsets(group, generation.as_ref(), offsets, *commit_timestamp_ms)
            }
            MetadataCommand::AllocateProducerIds { count } => self.allocate_producer_ids(*count),
            MetadataCommand::Batch { commands } => self.apply_batch(commands),
            MetadataCommand::AlterScramCredentials {
                upsertions,
                deletions,
            } => Ok(self.alter_scram_credentials(upsertions, deletions)),
            MetadataCommand::CreateAcls { acls } => Ok(self.create_acls(acls)),
            MetadataCommand::DeleteAcls { filters } => Ok(self.delete_acls(filters)),
            MetadataCommand::DeleteOffsets { group, partitions } => {
                if self.groups.get(group).is_none() {
                    return Err(Rejection::GroupNotFound {
                        group: group.clone(),
                    });
                }
                let mut deleted = 0u32;
                for (topic, partition) in partitions {
                    let key = OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    if self.offsets.remove(&key).is_some() {
                        deleted = deleted.saturating_add(1);
                    }
                }
                Ok(Outcome::OffsetsDeleted { deleted })
            }
            MetadataCommand::AlterBrokerConfigs {
                broker,
                set,
                remove,
            } => self.alter_broker_configs(*broker, set, remove),
            MetadataCommand::InitTransactionalId {
                transactional_id,
                timeout_ms,
                current,
                now_ms,
            } => self.init_transactional_id(transactional_id, *timeout_ms, *current, *now_ms),
            MetadataCommand::AddToTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                groups,
                now_ms,
            } => self.add_to_txn(
                Acting {
                    transactional_id,
                    producer_id: *producer_id,
                    producer_epoch: *producer_epoch,
                },
                partitions,
                groups,
                *now_ms,
            ),
            MetadataCommand::CoordinatedEndTxn {
                coordinator,
                incarnation,
                transactional_id,
                ..
            } if !self.coordinates(transactional_id, *coordinator, *incarnation) => {
                Err(Rejection::NotTransactionCoordinator {
                    transactional_id: transactional_id.clone(),
                    proposer: *coordinator,
                    incarnation: *incarnation,
                })
            }
            MetadataCommand::EndTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                now_ms,
            }
            | MetadataCommand::CoordinatedEndTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                now_ms,
                ..
            } => self.end_txn(
                Acting {
                    transactional_id,
                    producer_id: *producer_id,
                    producer_epoch: *producer_epoch,
                },
                *commit,
                *now_ms,
            ),
            MetadataCommand::CompleteTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                now_ms,
            } => self.complete_txn(
                Acting {
                    transactional_id,
                    producer_id: *producer_id,
                    producer_epoch: *producer_epoch,
                },
                *now_ms,
            ),
            MetadataCommand::TxnOffsetCommit {
                transactional_id,
                producer_id,
                producer_epoch,
                group,
                generation,
                offsets,
                now_ms,
            }
            | MetadataCommand::CoordinatedTxnOffsetCommit {
                transactional_id,
                producer_id,
                producer_epoch,
                group,
                generation,
                offsets,
                now_ms,
                ..
            } => {
                if let MetadataCommand::CoordinatedTxnOffsetCommit {
                    coordinator,
                    incarnation,
                    ..
                } = command
                {
                    self.check_coordinator(group, *coordinator, *incarnation)?;
                }
                self.txn_offset_commit(
                    Acting {
                        transactional_id,
                        producer_id: *producer_id,
                        producer_epoch: *producer_epoch,
                    },
                    group,
                    generation.as_ref(),
                    offsets,
                    *now_ms,
                )
            }
            MetadataCommand::AbortExpiredTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                now_ms,
            } => self.abort_expired_txn(
                Acting {
                    transactional_id,
                    producer_id: *producer_id,
                    producer_epoch: *producer_epoch,
                },
                *now_ms,
            ),
            MetadataCommand::ExpireTransactionalId {
                transactional_id,
                producer_id,
                producer_epoch,
            } => self.expire_transactional_id(Acting {
                transactional_id,
                producer_id: *producer_id,
                producer_epoch: *producer_epoch,
            }),
            MetadataCommand::ReplaceStaticMember {
                group,
                generation,
                group_instance_id,
                old,
                new,
            } => self.replace_static_member(group, *generation, group_instance_id, old, new),
            MetadataCommand::DeleteGroupAt { group, generation } => {
                let current = self.groups.get(group).map(|g| g.generation);
                if let Some(current) = current.filter(|c| c != generation) {
                    return Err(Rejection::IllegalGeneration {
                        current,
                        requested: *generation,
                    });
                }
                self.delete_group(group)?;
                Ok(Outcome::GroupsDeleted {
                    results: vec![Ok(())],
                })
            }
        }
    }

    fn apply_batch(&mut self, commands: &[MetadataCommand]) -> Result<Outcome, Rejection> {
        // Persistent collections make this clone O(1); the batch lands only if all of it does.
        let mut next = self.clone();
        let mut outcomes = Vec::with_capacity(commands.len());
        for (index, command) in commands.iter().enumerate() {
            match next.apply(command) {
                Ok(outcome) => outcomes.push(outcome),
                Err(cause) => {
                    return Err(Rejection::BatchFailed {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        cause: Box::new(cause),
                    });
                }
            }
        }
        *self = next;
        Ok(Outcome::Batch { outcomes })
    }

    fn init_cluster(&mut self, cluster_id: &ClusterId) -> Result<Outcome, Rejection> {
        match &self.cluster_id {
            Some(existing) if existing != cluster_id => Err(Rejection::ClusterIdMismatch {
                existing: existing.clone(),
            }),
            _ => {
                self.cluster_id = Some(cluster_id.clone());
                Ok(Outcome::ClusterInitialized {
                    cluster_id: cluster_id.clone(),
                })
            }
        }
    }

    fn register_broker(
        &mut self,
        id: BrokerId,
        (host, port): (&str, u16),
        rack: Option<&str>,
        listeners: &[BrokerEndpoint],
    ) -> Result<Outcome, Rejection> {
        if id.0 < 0 {
            return Err(Rejection::InvalidBrokerId { id });
        }
        let named_twice = listeners
            .iter()
            .enumerate()
            .any(|(i, e)| listeners[..i].iter().any(|other| other.name == e.name));
        if host.is_empty()
            || named_twice
            || listeners
                .iter()
                .any(|e| e.name.is_empty() || e.host.is_empty())
        {
            return Err(Rejection::InvalidBrokerAddress { id });
        }
        // A broker registering again while still live restarted within its session timeout:
        // its log may have lost what it had not synced, so it first leaves its ISRs and
        // leaderships as a fenced broker would (Kafka fences a restarted broker until it has
        // caught up) and rejoins them by catching up.
        if self.brokers.get(&id).is_some_and(|b| !b.fenced) {
            self.move_partitions_off(id);
        }
        let incarnation = self.brokers.get(&id).map_or(1, |b| b.incarnation + 1);
        self.brokers.insert(
            id,
            Broker {
                id,
                host: host.to_owned(),
                port,
                rack: rack.map(str::to_owned),
                incarnation,
                fenced: false,
                listeners: listeners.to_vec(),
            },
        );
        // A returning broker takes over partitions left without a leader, provided it may lead:
        // it is in the ISR, or the ISR is empty because no replica was ever live.
        self.for_each_partition(|p| {
            if p.leader.is_none() && p.replicas.contains(&id) {
                if p.isr.is_empty() {
                    p.isr.push_back(id);
                }
                if p.isr.contains(&id) {
                    p.leader = Some(id);
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                    return true;
                }
            }
            false
        });
        Ok(Outcome::BrokerRegistered { incarnation })
    }

    fn fence_broker(&mut self, id: BrokerId, incarnation: u64) -> Result<Outcome, Rejection> {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(Rejection::UnknownBroker { id })?;
        if broker.incarnation != incarnation {
            return Err(Rejection::StaleBrokerIncarnation {
                id,
                current: broker.incarnation,
                requested: incarnation,
            });
        }
        broker.fenced = true;
        let partitions_changed = self.move_partitions_off(id);
        Ok(Outcome::BrokerFenced { partitions_changed })
    }

    fn unregister_broker(&mut self, id: BrokerId) -> Result<Outcome, Rejection> {
        if self.brokers.remove(&id).is_none() {
            return Err(Rejection::UnknownBroker { id });
        }
        let partitions_changed = self.move_partitions_off(id);
        Ok(Outcome::BrokerFenced { partitions_changed })
    }

    /// Take `id` out of every ISR (keeping a partition's last ISR member, as Kafka does) and
    /// elect a new leader from the remaining live ISR where `id` led.
    fn move_partitions_off(&mut self, id: BrokerId) -> u32 {
        let live: BTreeSet<BrokerId> = self
            .live_brokers()
            .map(|b| b.id)
            .filter(|b| *b != id)
            .collect();
        self.for_each_partition(|p| {
            let mut changed = false;
            if p.isr.len() > 1 && p.isr.contains(&id) {
                p.isr.retain(|b| *b != id);
                changed = true;
            }
            if p.leader == Some(id) {
                p.leader = p.isr.iter().copied().find(|b| live.contains(b));
                p.leader_epoch += 1;
                changed = true;
            }
            if changed {
                p.partition_epoch += 1;
            }
            changed
        })
    }

    /// Run `f` on a copy of every partition; `f` returns whether it changed the copy, and only
    /// changed copies are written back. Returns the number changed.
    fn for_each_partition(&mut self, mut f: impl FnMut(&mut Partition) -> bool) -> u32 {
        let mut updates = Vec::new();
        for (name, topic) in &self.topics {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let mut copy = partition.clone();
                if f(&mut copy) {
                    updates.push((name.clone(), index, copy));
                }
            }
        }
        let changed = u32::try_from(updates.len()).unwrap_or(u32::MAX);
        for (name, index, partition) in updates {
            if let Some(topic) = self.topics.get_mut(&name) {
                topic.partitions.set(index, partition);
            }
        }
        changed
    }

    /// Refuse `added` more partitions if the cluster would then hold more than
    /// [`MAX_CLUSTER_PARTITIONS`].
    fn check_partition_ceiling(&self, added: usize) -> Result<(), Rejection> {
        let total = self.partition_count().saturating_add(added);
        if total > MAX_CLUSTER_PARTITIONS {
            return Err(Rejection::InvalidPartitions {
                reason: format!(
                    "the cluster would hold {total} partitions, more than the limit of \
                     {MAX_CLUSTER_PARTITIONS}"
                ),
            });
        }
        Ok(())
    }

    fn create_topic(&mut self, new: &NewTopic) -> Result<TopicId, Rejection> {
        validate_topic_name(&new.name)?;
        if self.topics.contains_key(&new.name) {
            return Err(Rejection::TopicAlreadyExists {
                name: new.name.clone(),
            });
        }
        if self.topic_names.contains_key(&new.id) {
            return Err(Rejection::TopicIdAlreadyExists { id: new.id });
        }
        if new.assignments.is_empty() {
            return Err(Rejection::InvalidPartitions {
                reason: "a topic needs at least one partition".into(),
            });
        }
        self.check_partition_ceiling(new.assignments.len())?;
        let replication_factor = new.assignments[0].len();
        if replication_factor == 0 {
            return Err(Rejection::InvalidReplicationFactor {
                reason: "replication factor must be at least 1".into(),
            });
        }
        let replication_factor =
            u16::try_from(replication_factor).map_err(|_| Rejection::InvalidReplicationFactor {
                reason: format!("replication factor {replication_factor} is too large"),
            })?;
        let partitions = self.new_partitions(&new.assignments, replication_factor)?;
        let configs = validate_configs(&new.configs)?;
        self.topic_names.insert(new.id, new.name.clone());
        self.topics.insert(
            new.name.clone(),
            Topic {
                name: new.name.clone(),
                id: new.id,
                replication_factor,
                configs,
                partitions,
            },
        );
        Ok(new.id)
    }

    /// Validate replica lists and build fresh partitions: ISR = live replicas, leader = first
    /// live replica.
    fn new_partitions(
        &self,
        assignments: &[Vec<BrokerId>],
        replication_factor: u16,
    ) -> Result<Vector<Partition>, Rejection> {
        let mut partitions = Vector::new();
        for (index, replicas) in assignments.iter().enumerate() {
            if replicas.len() != usize::from(replication_factor) {
                return Err(Rejection::InvalidReplicaAssignment {
                    reason: format!(
                        "partition {index} has {} replicas, expected {replication_factor}",
                        replicas.len()
                    ),
                });
            }
            let mut seen = BTreeSet::new();
            for broker in replicas {
                if !seen.insert(*broker) {
                    return Err(Rejection::InvalidReplicaAssignment {
                        reason: format!("partition {index} lists broker {broker} twice"),
                    });
                }
                if !self.brokers.contains_key(broker) {
                    return Err(Rejection::InvalidReplicaAssignment {
                        reason: format!("partition {index}: broker {broker} is not registered"),
                    });
                }
            }
            let isr: Vector<BrokerId> = replicas
                .iter()
                .copied()
                .filter(|b| self.brokers.get(b).is_some_and(|b| !b.fenced))
                .collect();
            partitions.push_back(Partition {
                replicas: replicas.iter().copied().collect(),
                leader: isr.front().copied(),
                isr,
                leader_epoch: 0,
                partition_epoch: 0,
                high_watermark: 0,
                log_start_offset: 0,
            });
        }
        if u32::try_from(partitions.len()).is_err() {
            return Err(Rejection::InvalidPartitions {
                reason: "too many partitions".into(),
            });
        }
        Ok(partitions)
    }

    fn delete_topic(&mut self, name: &str) -> Result<TopicId, Rejection> {
        let topic = self
            .topics
            .remove(name)
            .ok_or_else(|| Rejection::UnknownTopic {
                name: name.to_owned(),
            })?;
        self.topic_names.remove(&topic.id);
        let stale: Vec<OffsetKey> = self
            .offsets
            .keys()
            .filter(|key| key.topic == name)
            .cloned()
            .collect();
        for key in stale {
            self.offsets.remove(&key);
        }
        Ok(topic.id)
    }

    fn create_partitions(
        &mut self,
        topic: &str,
        assignments: &[Vec<BrokerId>],
    ) -> Result<Outcome, Rejection> {
        let existing = self
            .topics
            .get(topic)
            .ok_or_else(|| Rejection::UnknownTopic {
                name: topic.to_owned(),
            })?;
        if assignments.is_empty() {
            return Err(Rejection::InvalidPartitions {
                reason: format!(
                    "topic {topic} already has {} partitions",
                    existing.partitions.len()
                ),
            });
        }
        self.check_partition_ceiling(assignments.len())?;
        let added = self.new_partitions(assignments, existing.replication_factor)?;
        let total = existing.partitions.len() + added.len();
        let partition_count = u32::try_from(total).map_err(|_| Rejection::InvalidPartitions {
            reason: "too many partitions".into(),
        })?;
        if let Some(t) = self.topics.get_mut(topic) {
            t.partitions.append(added);
        }
        Ok(Outcome::PartitionsCreated { partition_count })
    }

    fn alter_topic_configs(
        &mut self,
        topic: &str,
        set: &[(String, String)],
        remove: &[String],
    ) -> Result<Outcome, Rejection> {
        let set = validate_change(set, remove)?;
        let t = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| Rejection::UnknownTopic {
                name: topic.to_owned(),
            })?;
        for key in remove {
            t.configs.remove(key);
        }
        t.configs = set.union(t.configs.clone());
        Ok(Outcome::TopicConfigsAltered)
    }

    fn alter_broker_configs(
        &mut self,
        broker: Option<BrokerId>,
        set: &[(String, String)],
        remove: &[String],
    ) -> Result<Outcome, Rejection> {
        let set = validate_change(set, remove)?;
        if let Some(id) = broker
            && !self.brokers.contains_key(&id)
        {
            return Err(Rejection::UnknownBroker { id });
        }
        let mut configs = self
            .broker_configs
            .get(&broker)
            .cloned()
            .unwrap_or_default();
        for key in remove {
            configs.remove(key);
        }
        let configs = set.union(configs);
        if configs.is_empty() {
            self.broker_configs.remove(&broker);
        } else {
            self.broker_configs.insert(broker, configs);
        }
        Ok(Outcome::BrokerConfigsAltered)
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        partition: u32,
        partition_epoch: i32,
        leader: Option<BrokerId>,
        isr: &[BrokerId],
    ) -> Result<Outcome, Rejection> {
        let unknown = || Rejection::UnknownTopicOrPartition {
            topic: topic.to_owned(),
            partition,
        };
        let current = self.partition(topic, partition).ok_or_else(unknown)?;
        if current.partition_epoch != partition_epoch {
            return Err(Rejection::StalePartitionEpoch {
                topic: topic.to_owned(),
                partition,
                current: current.partition_epoch,
                requested: partition_epoch,
            });
        }
        let mut seen = BTreeSet::new();
        for broker in isr {
            if !current.replicas.contains(broker) {
                return Err(Rejection::InvalidIsr {
                    reason: format!("broker {broker} is not a replica"),
                });
            }
            if !seen.insert(*broker) {
                return Err(Rejection::InvalidIsr {
                    reason: format!("broker {broker} is listed twice"),
                });
            }
            if self.brokers.get(broker).is_none_or(|b| b.fenced) {
                return Err(Rejection::IneligibleReplica { broker: *broker });
            }
        }
        if let Some(l) = leader
            && !seen.contains(&l)
        {
            return Err(Rejection::InvalidIsr {
                reason: format!("leader {l} is not in the ISR"),
            });
        }
        let mut next = current.clone();
        if next.leader != leader {
            next.leader = leader;
            next.leader_epoch += 1;
        }
        next.isr = isr.iter().copied().collect();
        next.partition_epoch += 1;
        let outcome = Outcome::PartitionAltered {
            leader_epoch: next.leader_epoch,
            partition_epoch: next.partition_epoch,
        };
        let t = self.topics.get_mut(topic).ok_or_else(unknown)?;
        t.partitions.set(partition as usize, next);
        Ok(outcome)
    }

    fn checkpoint_offsets(&mut self, offsets: &[PartitionOffsets]) -> Result<Outcome, Rejection> {
        for o in offsets {
            if o.log_start_offset < 0 || o.log_start_offset > o.high_watermark {
                return Err(Rejection::InvalidOffsets {
                    reason: format!(
                        "{}-{}: log start {} and high watermark {}",
                        o.topic, o.partition, o.log_start_offset, o.high_watermark
                    ),
                });
            }
        }
        let (mut applied, mut skipped) = (0, 0);
        for o in offsets {
            let slot = self
                .topics
                .get_mut(&o.topic)
                .and_then(|t| t.partitions.get_mut(o.partition as usize));
            match slot {
                Some(p) => {
                    p.high_watermark = o.high_watermark;
                    p.log_start_offset = o.log_start_offset;
                    applied += 1;
                }
                None => skipped += 1,
            }
        }
        Ok(Outcome::OffsetsCheckpointed { applied, skipped })
    }

    fn start_generation(
        &mut self,
        group: &GroupId,
        expected_generation: i32,
        protocol_type: &str,
        protocol: Option<&String>,
        leader: Option<&MemberId>,
        members: &[GroupMember],
    ) -> Result<Outcome, Rejection> {
        let existing = self.groups.get(group);
        let current = existing.map_or(0, |g| g.generation);
        if current != expected_generation {
            return Err(Rejection::IllegalGeneration {
                current,
                requested: expected_generation,
            });
        }
        let generation = current.checked_add(1).ok_or(Rejection::IllegalGeneration {
            current,
            requested: expected_generation,
        })?;
        if let Some(g) = existing
            && !g.members.is_empty()
            && !members.is_empty()
            && g.protocol_type != protocol_type
        {
            return Err(Rejection::InconsistentGroupProtocol {
                reason: format!(
                    "group uses protocol type {:?}, not {protocol_type:?}",
                    g.protocol_type
                ),
            });
        }
        let mut by_id = OrdMap::new();
        for m in members {
            let mut m = m.clone();
            m.assignment.clear();
            if by_id.insert(m.id.clone(), m).is_some() {
                return Err(Rejection::InvalidGroupMembers {
                    reason: "a member is listed twice".into(),
                });
            }
        }
        match (members.is_empty(), leader, protocol) {
            (true, None, None) => {}
            (false, Some(l), Some(_)) if by_id.contains_key(l) => {}
            (false, Some(l), Some(_)) => {
                return Err(Rejection::InvalidGroupMembers {
                    reason: format!("leader {l} is not a member"),
                });
            }
            _ => {
                return Err(Rejection::InvalidGroupMembers {
                    reason: "leader and protocol are set exactly when there are members".into(),
                });
            }
        }
        let assignment_complete = by_id.is_empty();
        self.groups.insert(
            group.clone(),
            Group {
                id: group.clone(),
                generation,
                protocol_type: protocol_type.to_owned(),
                protocol: protocol.cloned(),
                leader: leader.cloned(),
                members: by_id,
                assignment_complete,
            },
        );
        Ok(Outcome::GenerationStarted { generation })
    }

    fn replace_static_member(
        &mut self,
        group: &GroupId,
        generation: i32,
        group_instance_id: &str,
        old: &MemberId,
        new: &MemberId,
    ) -> Result<Outcome, Rejection> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| Rejection::GroupNotFound {
                group: group.clone(),
            })?;
        if g.generation != generation {
            return Err(Rejection::IllegalGeneration {
                current: g.generation,
                requested: generation,
            });
        }
        let unknown = || Rejection::UnknownMemberId {
            member: old.clone(),
        };
        let member = g.members.get(old).ok_or_else(unknown)?;
        if member.group_instance_id.as_deref() != Some(group_instance_id) {
            return Err(unknown());
        }
        if g.members.contains_key(new) {
            return Err(Rejection::UnknownMemberId {
                member: new.clone(),
            });
        }
        let mut member = member.clone();
        member.id = new.clone();
        g.members.remove(old);
        g.members.insert(new.clone(), member);
        if g.leader.as_ref() == Some(old) {
            g.leader = Some(new.clone());
        }
        Ok(Outcome::StaticMemberReplaced)
    }

    fn set_assignment(
        &mut self,
        group: &GroupId,
        generation: i32,
        leader: &MemberId,
        assignments: &[(MemberId, Vec<u8>)],
    ) -> Result<Outcome, Rejection> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| Rejection::GroupNotFound {
                group: group.clone(),
            })?;
        if !g.members.contains_key(leader) {
            return Err(Rejection::UnknownMemberId {
                member: leader.clone(),
            });
        }
        if g.generation != generation {
            return Err(Rejection::IllegalGeneration {
                current: g.generation,
                requested: generation,
            });
        }
        if g.leader.as_ref() != Some(leader) {
            return Err(Rejection::NotGroupLeader {
                member: leader.clone(),
            });
        }
        if let Some((unknown, _)) = assignments.iter().find(|(m, _)| !g.members.contains_key(m)) {
            return Err(Rejection::UnknownMemberId {
                member: unknown.clone(),
            });
        }
        let assigned: OrdMap<&MemberId, &Vec<u8>> =
            assignments.iter().map(|(m, a)| (m, a)).collect();
        g.members = g
            .members
            .iter()
            .map(|(id, member)| {
                let mut member = member.clone();
                member.assignment = assigned.get(id).map_or_else(Vec::new, |a| (*a).clone());
                (id.clone(), member)
            })
            .collect();
        g.assignment_complete = true;
        Ok(Outcome::AssignmentSet)
    }

    fn delete_group(&mut self, group: &GroupId) -> Result<(), Rejection> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| Rejection::GroupNotFound {
                group: group.clone(),
            })?;
        if !g.members.is_empty() {
            return Err(Rejection::NonEmptyGroup {
                group: group.clone(),
            });
        }
        self.groups.remove(group);
        let stale: Vec<OffsetKey> = self.group_offsets(group).map(|(k, _)| k.clone()).collect();
        for key in stale {
            self.offsets.remove(&key);
        }
        Ok(())
    }

    /// Whether `coordinator`, in `incarnation`, coordinates `key` (a group or a transactional
    /// id) now.
    fn coordinates(&self, key: &str, coordinator: BrokerId, incarnation: u64) -> bool {
        self.group_coordinator(key)
            .is_some_and(|b| b.id == coordinator && b.incarnation == incarnation)
    }

    /// Refuse a command `coordinator` (at `incarnation`) proposed as `group`'s coordinator
    /// unless that incarnation of that broker still coordinates it.
    fn check_coordinator(
        &self,
        group: &GroupId,
        coordinator: BrokerId,
        incarnation: u64,
    ) -> Result<(), Rejection> {
        if self.coordinates(&group.0, coordinator, incarnation) {
            Ok(())
        } else {
            Err(Rejection::NotCoordinator {
                group: group.clone(),
                proposer: coordinator,
                incarnation,
            })
        }
    }

    fn commit_offsets(
        &mut self,
        group: &GroupId,
        check: Option<&GenerationCheck>,
        offsets: &[OffsetCommit],
        commit_timestamp_ms: i64,
    ) -> Result<Outcome, Rejection> {
        if check.is_none()
            && let Some(g) = self.groups.get(group)
            && !g.members.is_empty()
        {
            return Err(Rejection::IllegalGeneration {
                current: g.generation,
                requested: -1,
            });
        }
        self.check_generation(group, check)?;
        self.check_offset_partitions(offsets)?;
        for o in offsets {
            self.store_offset(group, o, commit_timestamp_ms);
        }
        Ok(Outcome::OffsetsCommitted {
            count: u32::try_from(offsets.len()).unwrap_or(u32::MAX),
        })
    }

    /// Whether `check` (if any) names a member of `group` in its current generation.
    pub(crate) fn check_generation(
        &self,
        group: &GroupId,
        check: Option<&GenerationCheck>,
    ) -> Result<(), Rejection> {
        let Some(c) = check else {
            return Ok(());
        };
        let Some(g) = self.groups.get(group) else {
            return Err(Rejection::UnknownMemberId {
                member: c.member.clone(),
            });
        };
        if !g.members.contains_key(&c.member) {
            return Err(Rejection::UnknownMemberId {
                member: c.member.clone(),
            });
        }
        if g.generation != c.generation {
            return Err(Rejection::IllegalGeneration {
                current: g.generation,
                requested: c.generation,
            });
        }
        Ok(())
    }

    /// Whether every partition `offsets` name exists.
    pub(crate) fn check_offset_partitions(
        &self,
        offsets: &[OffsetCommit],
    ) -> Result<(), Rejection> {
        match offsets
            .iter()
            .find(|o| self.partition(&o.topic, o.partition).is_none())
        {
            Some(o) => Err(Rejection::UnknownTopicOrPartition {
                topic: o.topic.clone(),
                partition: o.partition,
            }),
            None => Ok(()),
        }
    }

    /// Store `group`'s committed offset `o`, creating the group (empty) if it is new.
    pub(crate) fn store_offset(
        &mut self,
        group: &GroupId,
        o: &OffsetCommit,
        commit_timestamp_ms: i64,
    ) {
        if !self.groups.contains_key(group) {
            self.groups
                .insert(group.clone(), Group::empty(group.clone()));
        }
        self.offsets.insert(
            OffsetKey {
                group: group.clone(),
                topic: o.topic.clone(),
                partition: o.partition,
            },
            CommittedOffset {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.clone(),
                commit_timestamp_ms,
            },
        );
    }

    fn allocate_producer_ids(&mut self, count: u32) -> Result<Outcome, Rejection> {
        if count == 0 || count > MAX_PRODUCER_ID_BLOCK {
            return Err(Rejection::InvalidProducerIdCount { count });
        }
        let first = self.next_producer_id;
        self.next_producer_id = first
            .checked_add(i64::from(count))
            .ok_or(Rejection::ProducerIdsExhausted)?;
        Ok(Outcome::ProducerIdsAllocated {
            first: ProducerId(first),
            count,
        })
    }
}

/// Kafka's topic naming rules.
pub fn validate_topic_name(name: &str) -> Result<(), Rejection> {
    let invalid = |reason: &str| {
        Err(Rejection::InvalidTopicName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The configs a change sets, checked, after checking the names it removes.
fn validate_change(
    set: &[(String, String)],
    remove: &[String],
) -> Result<OrdMap<String, String>, Rejection> {
    if let Some(key) = remove.iter().find(|k| k.is_empty()) {
        return Err(Rejection::InvalidConfig {
            reason: format!("empty config name {key:?}"),
        });
    }
    validate_configs(set)
}

fn validate_configs(entries: &[(String, String)]) -> Result<OrdMap<String, String>, Rejection> {
    let mut configs = OrdMap::new();
    for (key, value) in entries {
        if key.is_empty() {
            return Err(Rejection::InvalidConfig {
                reason: "empty config name".into(),
            });
        }
        if configs.insert(key.clone(), value.clone()).is_some() {
            return Err(Rejection::InvalidConfig {
                reason: format!("config {key} is set twice"),
            });
        }
    }
    Ok(configs)
}
