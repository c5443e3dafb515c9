//! Transactional producers (KIP-98) as metadata: for each `transactional.id`, the producer id
//! and epoch it holds and its transaction's state — Kafka's `__transaction_state`, replicated
//! by the metadata backend instead of a topic. The transitions are Kafka's:
//!
//! ```text
//! Empty ─AddToTxn→ Ongoing ─EndTxn(commit)→ PrepareCommit ─CompleteTxn→ CompleteCommit
//!                     │    ─EndTxn(abort)──→ PrepareAbort  ─CompleteTxn→ CompleteAbort
//!                     └─AbortExpiredTxn / InitTransactionalId (fencing)→ PrepareAbort
//! Complete* ─AddToTxn→ Ongoing        Empty / Complete* ─InitTransactionalId→ Empty (epoch + 1)
//! Empty / Complete* ─ExpireTransactionalId→ (forgotten)
//! ```
//!
//! Every command names the producer id and epoch it acts for: an older epoch is fenced
//! (`ProducerFenced`), another producer id is `InvalidProducerIdMapping`. A transaction that is
//! being completed (Prepare*) refuses new work with `ConcurrentTransactions` until its markers
//! are written and `CompleteTxn` applies.

use serde::{Deserialize, Serialize};

use crate::command::{GenerationCheck, OffsetCommit, Outcome};
use crate::error::Rejection;
use crate::ids::{GroupId, ProducerId};
use crate::state::MetadataState;

/// Where a transactional id's transaction stands (Kafka's `TransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    /// No transaction since the producer (re)initialized.
    Empty,
    /// A transaction is open: partitions and groups are being added to it.
    Ongoing,
    /// The producer asked to commit; markers are being written.
    PrepareCommit,
    /// The producer (or the coordinator) asked to abort; markers are being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

impl TxnStatus {
    /// Kafka's name for the state (DescribeTransactions, ListTransactions).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }

    /// Whether markers are being written: new work waits (`ConcurrentTransactions`).
    pub fn is_preparing(self) -> bool {
        matches!(self, Self::PrepareCommit | Self::PrepareAbort)
    }
}

/// One transactional id's producer and transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The producer id the transactional id holds.
    pub producer_id: i64,
    /// Its current epoch; older epochs are fenced.
    pub producer_epoch: i16,
    /// `transaction.timeout.ms` the producer asked for.
    pub timeout_ms: i32,
    /// Where the transaction stands.
    pub status: TxnStatus,
    /// The partitions in the current (or completing) transaction, sorted, each once.
    pub partitions: Vec<(String, u32)>,
    /// The groups whose offsets the transaction commits (AddOffsetsToTxn), sorted, each once.
    pub groups: Vec<GroupId>,
    /// The offsets the transaction commits (TxnOffsetCommit), by group, each group's
    /// partition once (the latest).
    pub pending_offsets: Vec<(GroupId, OffsetCommit)>,
    /// When the transaction became Ongoing (ms since the Unix epoch, the proposer's clock);
    /// -1 when none is open.
    pub started_ms: i64,
    /// When the state last changed (the proposer's clock).
    pub updated_ms: i64,
    /// How many transactions the transactional id has decided (moved to PrepareCommit or
    /// PrepareAbort), wrapping. A transaction's markers carry it as their coordinator epoch:
    /// a partition that already holds the marker of this number, or of a later one, for the
    /// producer takes a copy that arrives late for the marker of the transaction open in it
    /// now, and does not write it (KIP-890's late marker).
    #[serde(default, deserialize_with = "crate::codec::added_in_v7")]
    pub marker_epoch: i32,
}

impl Transaction {
    /// Whether a transaction is open or completing.
    pub fn is_open(&self) -> bool {
        self.status == TxnStatus::Ongoing || self.status.is_preparing()
    }

    /// Decide the open transaction: `preparing` (PrepareCommit or PrepareAbort) under the
    /// next marker epoch.
    fn decide(&mut self, preparing: TxnStatus) {
        self.status = preparing;
        self.marker_epoch = self.marker_epoch.wrapping_add(1);
    }
}

/// Insert `item` into the sorted, duplicate-free `items`.
pub(crate) fn insert_sorted<T: Ord + Clone>(items: &mut Vec<T>, item: &T) {
    if let Err(at) = items.binary_search(item) {
        items.insert(at, item.clone());
    }
}

/// The producer a transactional command acts for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acting<'a> {
    pub(crate) transactional_id: &'a str,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
}

impl MetadataState {
    /// Whether an open transaction holds an offset of `group` for `topic`/`partition` that
    /// it will commit (OffsetFetch's UNSTABLE_OFFSET_COMMIT).
    pub fn pending_txn_offset(&self, group: &GroupId, topic: &str, partition: u32) -> bool {
        self.transactions.values().any(|txn| {
            txn.pending_offsets
                .iter()
                .any(|(g, o)| g == group && o.topic == topic && o.partition == partition)
        })
    }

    /// `InitTransactionalId`.
    pub(crate) fn init_transactional_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        current: Option<(i64, i16)>,
        now_ms: i64,
    ) -> Result<Outcome, Rejection> {
        if transactional_id.is_empty() {
            return Err(Rejection::InvalidTransactionalId {
                transactional_id: transactional_id.to_owned(),
            });
        }
        if timeout_ms <= 0 {
            return Err(Rejection::InvalidTransactionTimeout { timeout_ms });
        }
        let Some(existing) = self.transactions.get(transactional_id).cloned() else {
            if let Some((producer_id, _)) = current {
                return Err(Rejection::InvalidProducerIdMapping {
                    transactional_id: transactional_id.to_owned(),
                    producer_id,
                });
            }
            let producer_id = self.take_producer_id()?;
            let txn = Transaction {
                producer_id,
                producer_epoch: 0,
                timeout_ms,
                status: TxnStatus::Empty,
                partitions: Vec::new(),
                groups: Vec::new(),
                pending_offsets: Vec::new(),
                started_ms: -1,
                updated_ms: now_ms,
                marker_epoch: 0,
            };
            self.transactions.insert(transactional_id.to_owned(), txn);
            return Ok(Outcome::TransactionalProducer {
                producer_id: ProducerId(producer_id),
                producer_epoch: 0,
            });
        };
        if let Some((producer_id, epoch)) = current {
            Acting {
                transactional_id,
                producer_id,
                producer_epoch: epoch,
            }
            .check(&existing)?;
        }
        let mut txn = existing;
        match txn.status {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                Err(Rejection::ConcurrentTransactions {
                    transactional_id: transactional_id.to_owned(),
                })
            }
            TxnStatus::Ongoing => {
                // Fence the producer that left it open, and abort it at the new epoch.
                self.next_epoch(&mut txn)?;
                txn.decide(TxnStatus::PrepareAbort);
                txn.updated_ms = now_ms;
                let outcome = Outcome::TransactionAborting {
                    producer_id: ProducerId(txn.producer_id),
                    producer_epoch: txn.producer_epoch,
                };
                self.transactions.insert(transactional_id.to_owned(), txn);
                Ok(outcome)
            }
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                self.next_epoch(&mut txn)?;
                txn.status = TxnStatus::Empty;
                txn.timeout_ms = timeout_ms;
                txn.updated_ms = now_ms;
                let outcome = Outcome::TransactionalProducer {
                    producer_id: ProducerId(txn.producer_id),
                    producer_epoch: txn.producer_epoch,
                };
                self.transactions.insert(transactional_id.to_owned(), txn);
                Ok(outcome)
            }
        }
    }

    /// `AddToTxn`.
    pub(crate) fn add_to_txn(
        &mut self,
        acting: Acting<'_>,
        partitions: &[(String, u32)],
        groups: &[GroupId],
        now_ms: i64,
    ) -> Result<Outcome, Rejection> {
        let mut txn = self.acting_on(acting)?;
        acting.refuse_if_preparing(&txn)?;
        if let Some((topic, partition)) = partitions
            .iter()
            .find(|(t, p)| self.partition(t, *p).is_none())
        {
            return Err(Rejection::UnknownTopicOrPartition {
                topic: topic.clone(),
                partition: *partition,
            });
        }
        if txn.status != TxnStatus::Ongoing {
            txn.status = TxnStatus::Ongoing;
            txn.started_ms = now_ms;
            txn.partitions.clear();
            txn.groups.clear();
            txn.pending_offsets.clear();
        }
        for partition in partitions {
            insert_sorted(&mut txn.partitions, partition);
        }
        for group in groups {
            insert_sorted(&mut txn.groups, group);
        }
        self.store_txn(acting, txn, now_ms);
        Ok(Outcome::TransactionUpdated {
            status: TxnStatus::Ongoing,
        })
    }

    /// `TxnOffsetCommit`.
    pub(crate) fn txn_offset_commit(
        &mut self,
        acting: Acting<'_>,
        group: &GroupId,
        generation: Option<&GenerationCheck>,
        offsets: &[OffsetCommit],
        now_ms: i64,
    ) -> Result<Outcome, Rejection> {
        let mut txn = self.acting_on(acting)?;
        acting.refuse_if_preparing(&txn)?;
        if txn.status != TxnStatus::Ongoing || txn.groups.binary_search(group).is_err() {
            return Err(Rejection::InvalidTxnState {
                transactional_id: acting.transactional_id.to_owned(),
                status: txn.status.as_str().to_owned(),
                reason: format!("group {group} was not added to the transaction"),
            });
        }
        self.check_generation(group, generation)?;
        self.check_offset_partitions(offsets)?;
        for o in offsets {
            let same = |(g, p): &(GroupId, OffsetCommit)| {
                g == group && p.topic == o.topic && p.partition == o.partition
            };
            match txn.pending_offsets.iter_mut().find(|entry| same(entry)) {
                Some(entry) => entry.1 = o.clone(),
                None => txn.pending_offsets.push((group.clone(), o.clone())),
            }
        }
        self.store_txn(acting, txn, now_ms);
        Ok(Outcome::TransactionUpdated {
            status: TxnStatus::Ongoing,
        })
    }

    /// `EndTxn`.
    pub(crate) fn end_txn(
        &mut self,
        acting: Acting<'_>,
        commit: bool,
        now_ms: i64,
    ) -> Result<Outcome, Rejection> {
        let mut txn = self.acting_on(acting)?;
        let (preparing, complete) = if commit {
            (TxnStatus::PrepareCommit, TxnStatus::CompleteCommit)
        } else {
            (TxnStatus::PrepareAbort, TxnStatus::CompleteAbort)
        };
        match txn.status {
            TxnStatus::Ongoing => {
                txn.decide(preparing);
                self.store_txn(acting, txn, now_ms);
                Ok(Outcome::TransactionUpdated { status: preparing })
            }
            // A retry of an end that is under way, or done.
            status if status == preparing => Err(Rejection::ConcurrentTransactions {
                transactional_id: acting.transactional_id.to_owned(),
            }),
            status if status == complete => Ok(Outcome::TransactionUpdated { status }),
            status => Err(Rejection::InvalidTxnState {
                transactional_id: acting.transactional_id.to_owned(),
                status: status.as_str().to_owned(),
                reason: format!("cannot {}", if commit { "commit" } else { "abort" }),
            }),
        }
    }

    /// `CompleteTxn`.
    pub(crate) fn complete_txn(
        &mut self,
        acting: Acting<'_>,
        now_ms: i64,
    ) -> Result<Outcome, Rejection> {
        let mut txn = self.acting_on(acting)?;
        txn.status = match txn.status {
            TxnStatus::PrepareCommit => TxnStatus::CompleteCommit,
            TxnStatus::PrepareAbort => TxnStatus::CompleteAbort,
            status => {
                return Err(Rejection::InvalidTxnState {
                    transactional_id: acting.transactional_id.to_owned(),
                    status: status.as_str().to_owned(),
                    reason: "nothing is being completed".to_owned(),
                });
            }
        };
        if txn.status == TxnStatus::CompleteCommit {
            for (group, offset) in &txn.pending_offsets {
                self.store_offset(group, offset, now_ms);
            }
        }
        txn.partitions.clear();
        txn.groups.clear();
        txn.pending_offsets.clear();
        txn.started_ms = -1;
        txn.updated_ms = now_ms;
        let status = txn.status;
        self.transactions
            .insert(acting.transactional_id.to_owned(), txn);
        Ok(Outcome::TransactionUpdated { status })
    }

    /// `AbortExpiredTxn`.
    pub(crate) fn abort_expired_txn(
        &mut self,
        acting: Acting<'_>,
        now_ms: i64,
    ) -> Result<Outcome, Rejection> {
        let mut txn = self.acting_on(acting)?;
        if txn.status != TxnStatus::Ongoing {
            return Err(Rejection::InvalidTxnState {
                transactional_id: acting.transactional_id.to_owned(),
                status: txn.status.as_str().to_owned(),
                reason: "only an open transaction expires".to_owned(),
            });
        }
        self.next_epoch(&mut txn)?;
        txn.decide(TxnStatus::PrepareAbort);
        self.store_txn(acting, txn, now_ms);
        Ok(Outcome::TransactionUpdated {
            status: TxnStatus::PrepareAbort,
        })
    }

    /// `ExpireTransactionalId`.
    pub(crate) fn expire_transactional_id(
        &mut self,
        acting: Acting<'_>,
    ) -> Result<Outcome, Rejection> {
        let txn = self.acting_on(acting)?;
        if txn.is_open() {
            return Err(Rejection::InvalidTxnState {
                transactional_id: acting.transactional_id.to_owned(),
                status: txn.status.as_str().to_owned(),
                reason: "a transactional id with a transaction open does not expire".to_owned(),
            });
        }
        self.transactions.remove(acting.transactional_id);
        Ok(Outcome::TransactionalIdExpired)
    }

    /// Store `txn`, changed at `now_ms`, as `acting`'s transaction.
    fn store_txn(&mut self, acting: Acting<'_>, mut txn: Transaction, now_ms: i64) {
        txn.updated_ms = now_ms;
        self.transactions
            .insert(acting.transactional_id.to_owned(), txn);
    }

    /// The transaction `acting` may act on, a copy to change.
    fn acting_on(&self, acting: Acting<'_>) -> Result<Transaction, Rejection> {
        let txn = self
            .transactions
            .get(acting.transactional_id)
            .ok_or_else(|| Rejection::InvalidProducerIdMapping {
                transactional_id: acting.transactional_id.to_owned(),
                producer_id: acting.producer_id,
            })?;
        acting.check(txn)?;
        Ok(txn.clone())
    }

    /// The next epoch of `txn`'s producer; a new producer id at epoch 0 once the epochs run
    /// out, as in Kafka.
    fn next_epoch(&mut self, txn: &mut Transaction) -> Result<(), Rejection> {
        if txn.producer_epoch >= i16::MAX - 1 {
            txn.producer_id = self.take_producer_id()?;
            txn.producer_epoch = 0;
        } else {
            txn.producer_epoch += 1;
        }
        Ok(())
    }

    /// One producer id from the shared sequence.
    fn take_producer_id(&mut self) -> Result<i64, Rejection> {
        let id = self.next_producer_id;
        self.next_producer_id = id.checked_add(1).ok_or(Rejection::ProducerIdsExhausted)?;
        Ok(id)
    }
}

impl Acting<'_> {
    /// `ConcurrentTransactions` while `txn`'s markers are being written.
    fn refuse_if_preparing(&self, txn: &Transaction) -> Result<(), Rejection> {
        if txn.status.is_preparing() {
            return Err(Rejection::ConcurrentTransactions {
                transactional_id: self.transactional_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether this producer id and epoch may act on `txn`.
    fn check(&self, txn: &Transaction) -> Result<(), Rejection> {
        if self.producer_id != txn.producer_id {
            return Err(Rejection::InvalidProducerIdMapping {
                transactional_id: self.transactional_id.to_owned(),
                producer_id: self.producer_id,
            });
        }
        match self.producer_epoch.cmp(&txn.producer_epoch) {
            std::cmp::Ordering::Less => Err(Rejection::ProducerFenced {
                transactional_id: self.transactional_id.to_owned(),
                current: txn.producer_epoch,
                requested: self.producer_epoch,
            }),
            std::cmp::Ordering::Greater => Err(Rejection::InvalidProducerEpoch {
                transactional_id: self.transactional_id.to_owned(),
                current: txn.producer_epoch,
                requested: self.producer_epoch,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }
}
