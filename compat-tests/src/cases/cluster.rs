//! Cluster id and broker registration, fencing and removal.

use anyhow::{bail, ensure};
use switchyard_backend_api::{
    BrokerEndpoint, BrokerId, ClusterId, MetadataCommand, Outcome, Rejection,
};

use crate::fixtures::{accept, create_topic_ok, register, register_all, reject};
use crate::harness::{BackendHarness, TestCluster};

fn init(id: &str) -> MetadataCommand {
    MetadataCommand::InitCluster {
        cluster_id: ClusterId(id.into()),
    }
}

/// The cluster id is set once; the same id again is a no-op, another id is refused.
pub async fn init_cluster_sets_id_once(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let outcome = accept(&node, init("alpha")).await?;
    ensure!(
        outcome
            == Outcome::ClusterInitialized {
                cluster_id: ClusterId("alpha".into())
            },
        "{outcome:?}"
    );
    accept(&node, init("alpha")).await?;
    let rejection = reject(&node, init("beta")).await?;
    ensure!(
        rejection
            == Rejection::ClusterIdMismatch {
                existing: ClusterId("alpha".into())
            },
        "{rejection:?}"
    );
    let view = node.local();
    ensure!(view.state.cluster_id() == Some(&ClusterId("alpha".into())));
    Ok(())
}

/// Registration stores the address and the named listeners, and every re-registration bumps
/// the incarnation and unfences. Invalid ids and addresses, and listeners named twice, are
/// refused.
pub async fn register_broker_bumps_incarnation(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let first = accept(
        &node,
        MetadataCommand::RegisterBroker {
            id: BrokerId(7),
            host: "kafka-7.test".into(),
            port: 19092,
            rack: Some("r1".into()),
            listeners: vec![
                endpoint("INTERNAL", "kafka-7.test", 19092),
                endpoint("EXTERNAL", "kafka-7.example", 9094),
            ],
        },
    )
    .await?;
    ensure!(
        first == Outcome::BrokerRegistered { incarnation: 1 },
        "{first:?}"
    );
    let view = node.local();
    let Some(broker) = view.state.broker(BrokerId(7)) else {
        bail!("broker 7 missing");
    };
    ensure!(broker.host == "kafka-7.test" && broker.port == 19092);
    ensure!(broker.rack.as_deref() == Some("r1") && !broker.fenced);
    ensure!(broker.endpoint("EXTERNAL") == Some(("kafka-7.example", 9094)));
    ensure!(broker.endpoint("INTERNAL") == Some(("kafka-7.test", 19092)));
    ensure!(broker.endpoint("PLAINTEXT").is_none());

    accept(
        &node,
        MetadataCommand::FenceBroker {
            id: BrokerId(7),
            incarnation: 1,
        },
    )
    .await?;
    let second = accept(&node, register(7)).await?;
    ensure!(
        second == Outcome::BrokerRegistered { incarnation: 2 },
        "{second:?}"
    );
    let view = node.local();
    ensure!(view.state.broker(BrokerId(7)).is_some_and(|b| !b.fenced));

    let rejection = reject(&node, register(-1)).await?;
    ensure!(rejection == Rejection::InvalidBrokerId { id: BrokerId(-1) });
    let rejection = reject(
        &node,
        MetadataCommand::RegisterBroker {
            id: BrokerId(8),
            host: String::new(),
            port: 9092,
            rack: None,
            listeners: Vec::new(),
        },
    )
    .await?;
    ensure!(rejection == Rejection::InvalidBrokerAddress { id: BrokerId(8) });
    let rejection = reject(
        &node,
        MetadataCommand::RegisterBroker {
            id: BrokerId(8),
            host: "kafka-8.test".into(),
            port: 9092,
            rack: None,
            listeners: vec![
                endpoint("PLAINTEXT", "kafka-8.test", 9092),
                endpoint("PLAINTEXT", "kafka-8.test", 9093),
            ],
        },
    )
    .await?;
    ensure!(rejection == Rejection::InvalidBrokerAddress { id: BrokerId(8) });
    Ok(())
}

fn endpoint(name: &str, host: &str, port: u16) -> BrokerEndpoint {
    BrokerEndpoint {
        name: name.into(),
        host: host.into(),
        port,
    }
}

/// Fencing a leader moves leadership to the next live ISR member and bumps the leader epoch;
/// fences aimed at an old incarnation or an unknown broker are refused.
pub async fn fence_broker_moves_leadership(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;
    create_topic_ok(&node, "moves", &[&[1, 2]]).await?;

    let outcome = accept(
        &node,
        MetadataCommand::FenceBroker {
            id: BrokerId(1),
            incarnation: 1,
        },
    )
    .await?;
    ensure!(
        outcome
            == Outcome::BrokerFenced {
                partitions_changed: 1
            },
        "{outcome:?}"
    );
    let view = node.local();
    let Some(p) = view.state.partition("moves", 0) else {
        bail!("partition missing");
    };
    ensure!(p.leader == Some(BrokerId(2)), "{p:?}");
    ensure!(p.isr.iter().eq([BrokerId(2)].iter()), "{p:?}");
    ensure!(p.leader_epoch == 1 && p.partition_epoch == 1, "{p:?}");
    ensure!(view.state.broker(BrokerId(1)).is_some_and(|b| b.fenced));

    accept(&node, register(1)).await?;
    let rejection = reject(
        &node,
        MetadataCommand::FenceBroker {
            id: BrokerId(1),
            incarnation: 1,
        },
    )
    .await?;
    ensure!(
        rejection
            == Rejection::StaleBrokerIncarnation {
                id: BrokerId(1),
                current: 2,
                requested: 1
            },
        "{rejection:?}"
    );
    let rejection = reject(
        &node,
        MetadataCommand::FenceBroker {
            id: BrokerId(9),
            incarnation: 1,
        },
    )
    .await?;
    ensure!(rejection == Rejection::UnknownBroker { id: BrokerId(9) });
    Ok(())
}

/// A partition whose only ISR member is fenced is leaderless, keeps that member in its ISR, and
/// gets it back as leader (new epoch) when the broker re-registers.
pub async fn fenced_sole_replica_returns_as_leader(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "solo", &[&[1]]).await?;
    accept(
        &node,
        MetadataCommand::FenceBroker {
            id: BrokerId(1),
            incarnation: 1,
        },
    )
    .await?;
    let view = node.local();
    let Some(p) = view.state.partition("solo", 0) else {
        bail!("partition missing");
    };
    ensure!(p.leader.is_none(), "{p:?}");
    ensure!(p.isr.iter().eq([BrokerId(1)].iter()), "{p:?}");
    ensure!(view.state.live_brokers().count() == 0);

    accept(&node, register(1)).await?;
    let view = node.local();
    let Some(p) = view.state.partition("solo", 0) else {
        bail!("partition missing");
    };
    ensure!(p.leader == Some(BrokerId(1)), "{p:?}");
    ensure!(p.leader_epoch == 2, "{p:?}");
    Ok(())
}

/// A live broker registering again (it restarted within its session timeout) first leaves its
/// ISRs and leaderships as if fenced: leadership moves to another live ISR member with a new
/// leader epoch; where it was the only ISR member it leads again, in a new epoch.
pub async fn reregistering_a_live_broker_moves_its_partitions_off(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;
    create_topic_ok(&node, "shared", &[&[1, 2]]).await?;
    create_topic_ok(&node, "alone", &[&[1]]).await?;

    let outcome = accept(&node, register(1)).await?;
    ensure!(
        outcome == Outcome::BrokerRegistered { incarnation: 2 },
        "{outcome:?}"
    );
    let view = node.local();
    let Some(shared) = view.state.partition("shared", 0) else {
        bail!("partition missing");
    };
    ensure!(shared.leader == Some(BrokerId(2)), "{shared:?}");
    ensure!(shared.isr.iter().eq([BrokerId(2)].iter()), "{shared:?}");
    ensure!(shared.leader_epoch == 1, "{shared:?}");
    let Some(alone) = view.state.partition("alone", 0) else {
        bail!("partition missing");
    };
    ensure!(alone.leader == Some(BrokerId(1)), "{alone:?}");
    ensure!(alone.isr.iter().eq([BrokerId(1)].iter()), "{alone:?}");
    ensure!(alone.leader_epoch > 0, "a new leader epoch: {alone:?}");
    ensure!(view.state.broker(BrokerId(1)).is_some_and(|b| !b.fenced));
    Ok(())
}

/// Unregistering removes the broker; a second unregister is refused.
pub async fn unregister_broker_removes_it(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;
    accept(&node, MetadataCommand::UnregisterBroker { id: BrokerId(2) }).await?;
    let view = node.local();
    ensure!(view.state.broker(BrokerId(2)).is_none());
    ensure!(view.state.brokers().count() == 1);
    let rejection = reject(&node, MetadataCommand::UnregisterBroker { id: BrokerId(2) }).await?;
    ensure!(rejection == Rejection::UnknownBroker { id: BrokerId(2) });
    Ok(())
}
