//! Transactional producers as metadata: producer ids and epochs per transactional id, fencing,
//! and the transaction state machine (Kafka's `__transaction_state`, here a metadata command
//! stream every backend replicates).

use anyhow::{bail, ensure};
use switchyard_backend_api::{
    BrokerId, GroupId, MetadataCommand, OffsetCommit, Outcome, ProducerId, Rejection, TxnStatus,
};

use crate::fixtures::{accept, create_topic_ok, register_all, reject};
use crate::harness::{BackendHarness, TestCluster};

const ID: &str = "txn-a";

fn init(current: Option<(i64, i16)>) -> MetadataCommand {
    MetadataCommand::InitTransactionalId {
        transactional_id: ID.into(),
        timeout_ms: 60_000,
        current,
        now_ms: 1_000,
    }
}

fn add(producer: (i64, i16), partitions: &[(&str, u32)], groups: &[&str]) -> MetadataCommand {
    MetadataCommand::AddToTxn {
        transactional_id: ID.into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        partitions: partitions
            .iter()
            .map(|(t, p)| ((*t).to_owned(), *p))
            .collect(),
        groups: groups.iter().map(|g| GroupId((*g).to_owned())).collect(),
        now_ms: 2_000,
    }
}

fn end(producer: (i64, i16), commit: bool) -> MetadataCommand {
    MetadataCommand::EndTxn {
        transactional_id: ID.into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        commit,
        now_ms: 3_000,
    }
}

fn complete(producer: (i64, i16)) -> MetadataCommand {
    MetadataCommand::CompleteTxn {
        transactional_id: ID.into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        now_ms: 4_000,
    }
}

type Node = std::sync::Arc<dyn switchyard_backend_api::MetadataBackend>;

/// The broker that coordinates `key` (a group or a transactional id) in `node`'s view, and its
/// incarnation.
fn coordinator_of(node: &Node, key: &str) -> Option<(BrokerId, u64)> {
    node.local()
        .state
        .group_coordinator(key)
        .map(|b| (b.id, b.incarnation))
}

fn producer_of(outcome: &Outcome) -> anyhow::Result<(i64, i16)> {
    match outcome {
        Outcome::TransactionalProducer {
            producer_id: ProducerId(id),
            producer_epoch,
        } => Ok((*id, *producer_epoch)),
        other => bail!("expected a transactional producer, got {other:?}"),
    }
}

/// A new transactional id gets a producer id from the shared sequence at epoch 0, each
/// re-initialization the next epoch; a stale epoch is fenced, a newer one or another producer
/// id refused, and a bad id or timeout refused.
pub async fn transactional_ids_get_producer_ids_and_epochs(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let block = accept(&node, MetadataCommand::AllocateProducerIds { count: 10 }).await?;
    let first = producer_of(&accept(&node, init(None)).await?)?;
    let Outcome::ProducerIdsAllocated {
        first: ProducerId(block_start),
        ..
    } = block
    else {
        bail!("expected a producer id block, got {block:?}");
    };
    ensure!(
        first == (block_start + 10, 0),
        "{first:?} after {block_start}"
    );
    let second = producer_of(&accept(&node, init(None)).await?)?;
    ensure!(second == (first.0, 1), "{second:?}");
    let third = producer_of(&accept(&node, init(Some(second))).await?)?;
    ensure!(third == (first.0, 2), "{third:?}");
    let fenced = reject(&node, init(Some(second))).await?;
    ensure!(
        matches!(
            fenced,
            Rejection::ProducerFenced {
                current: 2,
                requested: 1,
                ..
            }
        ),
        "{fenced:?}"
    );
    let fenced = reject(&node, add(second, &[], &[])).await?;
    ensure!(
        matches!(fenced, Rejection::ProducerFenced { .. }),
        "{fenced:?}"
    );
    let newer = reject(&node, add((first.0, 7), &[], &[])).await?;
    ensure!(
        matches!(newer, Rejection::InvalidProducerEpoch { .. }),
        "{newer:?}"
    );
    let other = reject(&node, add((first.0 + 1, 2), &[], &[])).await?;
    ensure!(
        matches!(other, Rejection::InvalidProducerIdMapping { .. }),
        "{other:?}"
    );
    let bad_timeout = reject(
        &node,
        MetadataCommand::InitTransactionalId {
            transactional_id: "t".into(),
            timeout_ms: 0,
            current: None,
            now_ms: 0,
        },
    )
    .await?;
    ensure!(
        matches!(bad_timeout, Rejection::InvalidTransactionTimeout { .. }),
        "{bad_timeout:?}"
    );
    let next = accept(&node, MetadataCommand::AllocateProducerIds { count: 1 }).await?;
    ensure!(
        matches!(next, Outcome::ProducerIdsAllocated { first: ProducerId(id), .. } if id == first.0 + 1),
        "producer ids are never handed out twice: {next:?}"
    );
    Ok(())
}

/// Ongoing → PrepareCommit → CompleteCommit, and an abort the same way; new work waits while
/// a transaction completes, a retried end is answered, ends in the wrong state are refused,
/// and only existing partitions join.
pub async fn a_transaction_opens_prepares_and_completes(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "out", &[&[1], &[1]]).await?;
    let producer = producer_of(&accept(&node, init(None)).await?)?;
    let invalid = reject(&node, end(producer, true)).await?;
    ensure!(
        matches!(invalid, Rejection::InvalidTxnState { .. }),
        "nothing to commit: {invalid:?}"
    );
    let unknown = reject(&node, add(producer, &[("nope", 0)], &[])).await?;
    ensure!(
        matches!(unknown, Rejection::UnknownTopicOrPartition { .. }),
        "{unknown:?}"
    );
    accept(&node, add(producer, &[("out", 1), ("out", 0)], &["g"])).await?;
    accept(&node, add(producer, &[("out", 0)], &[])).await?;
    {
        let view = node.local();
        let Some(txn) = view.state.transaction(ID) else {
            bail!("no transaction");
        };
        ensure!(
            txn.status == TxnStatus::Ongoing && txn.started_ms == 2_000,
            "{txn:?}"
        );
        ensure!(
            txn.partitions == vec![("out".to_owned(), 0), ("out".to_owned(), 1)],
            "{txn:?}"
        );
        ensure!(txn.groups == vec![GroupId("g".into())], "{txn:?}");
    }
    let outcome = accept(&node, end(producer, true)).await?;
    ensure!(
        outcome
            == Outcome::TransactionUpdated {
                status: TxnStatus::PrepareCommit
            },
        "{outcome:?}"
    );
    for busy in [
        add(producer, &[("out", 0)], &[]),
        end(producer, true),
        init(None),
    ] {
        let refused = reject(&node, busy).await?;
        ensure!(
            matches!(refused, Rejection::ConcurrentTransactions { .. }),
            "{refused:?}"
        );
    }
    let wrong_way = reject(&node, end(producer, false)).await?;
    ensure!(
        matches!(wrong_way, Rejection::InvalidTxnState { .. }),
        "{wrong_way:?}"
    );
    accept(&node, complete(producer)).await?;
    {
        let view = node.local();
        let Some(txn) = view.state.transaction(ID) else {
            bail!("no transaction");
        };
        ensure!(
            txn.status == TxnStatus::CompleteCommit
                && txn.partitions.is_empty()
                && txn.groups.is_empty()
                && txn.started_ms == -1,
            "{txn:?}"
        );
    }
    let retried = accept(&node, end(producer, true)).await?;
    ensure!(
        retried
            == Outcome::TransactionUpdated {
                status: TxnStatus::CompleteCommit
            },
        "a retried commit is answered as done: {retried:?}"
    );
    let again = reject(&node, complete(producer)).await?;
    ensure!(
        matches!(again, Rejection::InvalidTxnState { .. }),
        "{again:?}"
    );
    // The next transaction of the same producer, aborted.
    accept(&node, add(producer, &[("out", 1)], &[])).await?;
    accept(&node, end(producer, false)).await?;
    accept(&node, complete(producer)).await?;
    let view = node.local();
    ensure!(
        view.state
            .transaction(ID)
            .is_some_and(|t| t.status == TxnStatus::CompleteAbort),
        "{:?}",
        view.state.transaction(ID)
    );
    Ok(())
}

/// A producer re-initializing while its transaction is open, and the coordinator's timeout,
/// both abort it at the next epoch, fencing the producer that left it open.
pub async fn an_open_transaction_is_aborted_by_fencing(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "out", &[&[1]]).await?;
    let zombie = producer_of(&accept(&node, init(None)).await?)?;
    accept(&node, add(zombie, &[("out", 0)], &[])).await?;
    let aborting = accept(&node, init(None)).await?;
    ensure!(
        aborting
            == Outcome::TransactionAborting {
                producer_id: ProducerId(zombie.0),
                producer_epoch: zombie.1 + 1
            },
        "{aborting:?}"
    );
    let fenced = reject(&node, end(zombie, true)).await?;
    ensure!(
        matches!(fenced, Rejection::ProducerFenced { .. }),
        "{fenced:?}"
    );
    let aborter = (zombie.0, zombie.1 + 1);
    accept(&node, complete(aborter)).await?;
    let fresh = producer_of(&accept(&node, init(None)).await?)?;
    ensure!(fresh == (zombie.0, zombie.1 + 2), "{fresh:?}");

    // The coordinator's timeout: only while Ongoing at the epoch it saw.
    accept(&node, add(fresh, &[("out", 0)], &[])).await?;
    let expire = |producer: (i64, i16)| MetadataCommand::AbortExpiredTxn {
        transactional_id: ID.into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        now_ms: 90_000,
    };
    let stale = reject(&node, expire(zombie)).await?;
    ensure!(
        matches!(stale, Rejection::ProducerFenced { .. }),
        "{stale:?}"
    );
    accept(&node, expire(fresh)).await?;
    let view = node.local();
    let Some(txn) = view.state.transaction(ID) else {
        bail!("no transaction");
    };
    ensure!(
        txn.status == TxnStatus::PrepareAbort && txn.producer_epoch == fresh.1 + 1,
        "{txn:?}"
    );
    let fenced = reject(&node, end(fresh, true)).await?;
    ensure!(
        matches!(fenced, Rejection::ProducerFenced { .. }),
        "{fenced:?}"
    );
    Ok(())
}

/// Offsets committed inside a transaction are held with it: they become the group's committed
/// offsets when it commits, and vanish when it aborts.
pub async fn transactional_offsets_commit_with_the_transaction(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "in", &[&[1], &[1]]).await?;
    let group = GroupId("g".into());
    let commit =
        |producer: (i64, i16), group: &GroupId, offset: i64| MetadataCommand::TxnOffsetCommit {
            transactional_id: ID.into(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            group: group.clone(),
            generation: None,
            offsets: vec![OffsetCommit {
                topic: "in".into(),
                partition: 1,
                offset,
                leader_epoch: None,
                metadata: String::new(),
            }],
            now_ms: 2_500,
        };
    let committed = |node: &Node| {
        node.local()
            .state
            .committed_offset(&GroupId("g".into()), "in", 1)
            .map(|o| o.offset)
    };
    let producer = producer_of(&accept(&node, init(None)).await?)?;
    accept(&node, add(producer, &[], &["g"])).await?;
    let other = reject(&node, commit(producer, &GroupId("other".into()), 5)).await?;
    ensure!(
        matches!(other, Rejection::InvalidTxnState { .. }),
        "a group not added to the transaction: {other:?}"
    );
    accept(&node, commit(producer, &group, 5)).await?;
    accept(&node, commit(producer, &group, 7)).await?;
    ensure!(committed(&node).is_none(), "visible before the commit");
    accept(&node, end(producer, true)).await?;
    ensure!(committed(&node).is_none(), "visible while preparing");
    accept(&node, complete(producer)).await?;
    ensure!(
        committed(&node) == Some(7),
        "the latest offset commits with the transaction: {:?}",
        committed(&node)
    );
    accept(&node, add(producer, &[], &["g"])).await?;
    accept(&node, commit(producer, &group, 9)).await?;
    accept(&node, end(producer, false)).await?;
    accept(&node, complete(producer)).await?;
    ensure!(
        committed(&node) == Some(7),
        "an aborted transaction's offsets are dropped: {:?}",
        committed(&node)
    );
    Ok(())
}

/// Offsets a group's coordinator commits inside a transaction apply only while that
/// incarnation of that broker still coordinates the group: a commit held up past the
/// coordinator's fencing cannot land after the one made through the next coordinator and take
/// the transaction's offsets back.
pub async fn transactional_offsets_from_a_former_coordinator_are_rejected(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;
    create_topic_ok(&node, "in", &[&[1]]).await?;
    let commit = |coordinator: (BrokerId, u64), producer: (i64, i16), offset: i64| {
        MetadataCommand::CoordinatedTxnOffsetCommit {
            coordinator: coordinator.0,
            incarnation: coordinator.1,
            transactional_id: ID.into(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            group: GroupId("g".into()),
            generation: None,
            offsets: vec![OffsetCommit {
                topic: "in".into(),
                partition: 0,
                offset,
                leader_epoch: None,
                metadata: String::new(),
            }],
            now_ms: 2_500,
        }
    };
    let coordinator = |node: &Node| coordinator_of(node, "g");
    let Some(first) = coordinator(&node) else {
        bail!("no coordinator for g among live brokers 1 and 2");
    };
    let other = BrokerId(if first.0 == BrokerId(1) { 2 } else { 1 });
    let producer = producer_of(&accept(&node, init(None)).await?)?;
    accept(&node, add(producer, &[], &["g"])).await?;
    accept(&node, commit(first, producer, 10)).await?;
    let stranger = reject(&node, commit((other, 1), producer, 11)).await?;
    ensure!(
        matches!(stranger, Rejection::NotCoordinator { proposer, .. } if proposer == other),
        "{stranger:?}"
    );
    accept(
        &node,
        MetadataCommand::FenceBroker {
            id: first.0,
            incarnation: first.1,
        },
    )
    .await?;
    let Some(next) = coordinator(&node) else {
        bail!("no coordinator for g after the fence");
    };
    ensure!(next.0 == other, "g stayed on fenced broker {}", first.0);
    accept(&node, commit(next, producer, 20)).await?;
    let late = reject(&node, commit(first, producer, 5)).await?;
    ensure!(matches!(late, Rejection::NotCoordinator { .. }), "{late:?}");
    accept(&node, end(producer, true)).await?;
    accept(&node, complete(producer)).await?;
    let committed = node
        .local()
        .state
        .committed_offset(&GroupId("g".into()), "in", 0)
        .map(|o| o.offset);
    ensure!(
        committed == Some(20),
        "the transaction commits the next coordinator's offset: {committed:?}"
    );
    Ok(())
}

/// A transaction's end applies only while that incarnation of the broker that proposes it
/// still coordinates the transactional id: an EndTxn a former coordinator read late (after a
/// pause or a partition, while its producer had ended that transaction through the next
/// coordinator and begun another) cannot end the next transaction.
pub async fn an_end_from_a_former_coordinator_is_rejected(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;
    create_topic_ok(&node, "out", &[&[1]]).await?;
    let end = |coordinator: (BrokerId, u64), producer: (i64, i16), commit: bool| {
        MetadataCommand::CoordinatedEndTxn {
            coordinator: coordinator.0,
            incarnation: coordinator.1,
            transactional_id: ID.into(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            commit,
            now_ms: 2_000,
        }
    };
    let coordinator = |node: &Node| coordinator_of(node, ID);
    let status = |node: &Node| node.local().state.transaction(ID).map(|t| t.status);
    let Some(first) = coordinator(&node) else {
        bail!("no coordinator for {ID} among live brokers 1 and 2");
    };
    let other = BrokerId(if first.0 == BrokerId(1) { 2 } else { 1 });
    let producer = producer_of(&accept(&node, init(None)).await?)?;
    accept(&node, add(producer, &[("out", 0)], &[])).await?;
    let stranger = reject(&node, end((other, 1), producer, true)).await?;
    ensure!(
        matches!(stranger, Rejection::NotTransactionCoordinator { proposer, .. } if proposer == other),
        "{stranger:?}"
    );
    ensure!(
        status(&node) == Some(TxnStatus::Ongoing),
        "a refused end left {:?}",
        status(&node)
    );
    accept(&node, end(first, producer, true)).await?;
    accept(&node, complete(producer)).await?;
    accept(
        &node,
        MetadataCommand::FenceBroker {
            id: first.0,
            incarnation: first.1,
        },
    )
    .await?;
    let Some(next) = coordinator(&node) else {
        bail!("no coordinator for {ID} after the fence");
    };
    ensure!(next.0 == other, "{ID} stayed on fenced broker {}", first.0);
    // The producer's next transaction, through the next coordinator.
    accept(&node, add(producer, &[("out", 0)], &[])).await?;
    let late = reject(&node, end(first, producer, true)).await?;
    ensure!(
        matches!(late, Rejection::NotTransactionCoordinator { .. }),
        "{late:?}"
    );
    ensure!(
        status(&node) == Some(TxnStatus::Ongoing),
        "the former coordinator's end moved the next transaction to {:?}",
        status(&node)
    );
    accept(&node, end(next, producer, false)).await?;
    ensure!(
        status(&node) == Some(TxnStatus::PrepareAbort),
        "the coordinator's own end: {:?}",
        status(&node)
    );
    Ok(())
}

/// A transactional id with no transaction open can be forgotten (its expiration), only at the
/// producer id and epoch the coordinator saw; a producer that comes back gets a new id.
pub async fn an_idle_transactional_id_expires(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "out", &[&[1]]).await?;
    let expire = |producer: (i64, i16)| MetadataCommand::ExpireTransactionalId {
        transactional_id: ID.into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
    };
    let first = producer_of(&accept(&node, init(None)).await?)?;
    accept(&node, add(first, &[("out", 0)], &[])).await?;
    let open = reject(&node, expire(first)).await?;
    ensure!(
        matches!(open, Rejection::InvalidTxnState { .. }),
        "an open transaction keeps its id: {open:?}"
    );
    accept(&node, end(first, true)).await?;
    let completing = reject(&node, expire(first)).await?;
    ensure!(
        matches!(completing, Rejection::InvalidTxnState { .. }),
        "a completing transaction keeps its id: {completing:?}"
    );
    accept(&node, complete(first)).await?;
    let stale = reject(&node, expire((first.0, first.1 - 1))).await?;
    ensure!(
        matches!(stale, Rejection::ProducerFenced { .. }),
        "{stale:?}"
    );
    let expired = accept(&node, expire(first)).await?;
    ensure!(expired == Outcome::TransactionalIdExpired, "{expired:?}");
    ensure!(node.local().state.transaction(ID).is_none(), "still there");
    let again = producer_of(&accept(&node, init(None)).await?)?;
    ensure!(
        again.0 != first.0 && again.1 == 0,
        "a new producer id at epoch 0: {again:?} after {first:?}"
    );
    Ok(())
}
