//! Topic creation, deletion, partitions and configs.

use anyhow::{bail, ensure};
use switchyard_backend_api::{BrokerId, GroupId, MetadataCommand, Outcome, Rejection};

use crate::fixtures::{
    accept, commit, create_topic_err, create_topic_ok, new_topic, register_all, reject, topic_id,
};
use crate::harness::{BackendHarness, TestCluster};

/// A topic is created atomically with its assignment: leader is the first live replica, the ISR
/// is the live replicas, epochs start at 0; it can be found by name and by id.
pub async fn create_topic_with_assignment(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2, 3]).await?;
    let mut topic = new_topic("orders", &[&[1, 2], &[2, 3], &[3, 1]]);
    topic.configs = vec![("retention.ms".into(), "60000".into())];
    let outcome = accept(
        &node,
        MetadataCommand::CreateTopics {
            topics: vec![topic],
        },
    )
    .await?;
    let id = topic_id("orders");
    ensure!(
        outcome
            == Outcome::TopicsCreated {
                results: vec![Ok(id)]
            },
        "{outcome:?}"
    );
    let view = node.local();
    let Some(t) = view.state.topic("orders") else {
        bail!("topic missing");
    };
    ensure!(t.id == id && t.replication_factor == 2 && t.partitions.len() == 3);
    ensure!(t.configs.get("retention.ms").map(String::as_str) == Some("60000"));
    ensure!(view.state.topic_by_id(id).map(|t| t.name.as_str()) == Some("orders"));
    let expected = [[1, 2], [2, 3], [3, 1]];
    for (p, replicas) in t.partitions.iter().zip(expected) {
        let replicas: Vec<BrokerId> = replicas.into_iter().map(BrokerId).collect();
        ensure!(p.replicas.iter().eq(replicas.iter()), "{p:?}");
        ensure!(p.isr.iter().eq(replicas.iter()), "{p:?}");
        ensure!(p.leader == Some(replicas[0]), "{p:?}");
        ensure!(p.leader_epoch == 0 && p.partition_epoch == 0, "{p:?}");
    }
    Ok(())
}

/// Creating an existing topic (Kafka's TOPIC_ALREADY_EXISTS) leaves the original untouched; a
/// reused topic id is refused too.
pub async fn create_existing_topic_is_rejected(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let id = create_topic_ok(&node, "events", &[&[1]]).await?;

    let mut again = new_topic("events", &[&[1], &[1]]);
    again.id = topic_id("other-id");
    let rejection = create_topic_err(&node, again).await?;
    ensure!(
        rejection
            == Rejection::TopicAlreadyExists {
                name: "events".into()
            },
        "{rejection:?}"
    );
    let mut same_id = new_topic("events-2", &[&[1]]);
    same_id.id = id;
    let rejection = create_topic_err(&node, same_id).await?;
    ensure!(
        rejection == Rejection::TopicIdAlreadyExists { id },
        "{rejection:?}"
    );
    let view = node.local();
    ensure!(view.state.topic_count() == 1);
    ensure!(
        view.state
            .topic("events")
            .is_some_and(|t| t.id == id && t.partitions.len() == 1)
    );
    Ok(())
}

/// Every validation rule of topic creation has its rejection, and nothing is created.
pub async fn create_topic_validation_errors(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;

    for name in ["", ".", "..", "has space", "slash/name", &"x".repeat(250)] {
        let rejection = create_topic_err(&node, new_topic(name, &[&[1]])).await?;
        ensure!(
            matches!(rejection, Rejection::InvalidTopicName { .. }),
            "{name:?}: {rejection:?}"
        );
    }
    let ok_name = "x".repeat(249);
    create_topic_ok(&node, &ok_name, &[&[1]]).await?;

    type Expect = fn(&Rejection) -> bool;
    let cases: Vec<(&str, &[&[i32]], Expect)> = vec![
        ("no-partitions", &[], |r| {
            matches!(r, Rejection::InvalidPartitions { .. })
        }),
        ("no-replicas", &[&[]], |r| {
            matches!(r, Rejection::InvalidReplicationFactor { .. })
        }),
        ("uneven", &[&[1, 2], &[1]], |r| {
            matches!(r, Rejection::InvalidReplicaAssignment { .. })
        }),
        ("twice", &[&[1, 1]], |r| {
            matches!(r, Rejection::InvalidReplicaAssignment { .. })
        }),
        ("unknown-broker", &[&[1, 5]], |r| {
            matches!(r, Rejection::InvalidReplicaAssignment { .. })
        }),
    ];
    for (name, assignments, expected) in cases {
        let rejection = create_topic_err(&node, new_topic(name, assignments)).await?;
        ensure!(expected(&rejection), "{name}: {rejection:?}");
    }
    let mut bad_config = new_topic("bad-config", &[&[1]]);
    bad_config.configs = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
    let rejection = create_topic_err(&node, bad_config).await?;
    ensure!(
        matches!(rejection, Rejection::InvalidConfig { .. }),
        "{rejection:?}"
    );
    let view = node.local();
    ensure!(
        view.state
            .topics()
            .map(|t| t.name.as_str())
            .eq([ok_name.as_str()]),
        "only the valid topic exists"
    );
    Ok(())
}

/// One `CreateTopics` reports a result per topic; a bad topic does not stop the others.
pub async fn create_topics_reports_per_topic(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let outcome = accept(
        &node,
        MetadataCommand::CreateTopics {
            topics: vec![
                new_topic("first", &[&[1]]),
                new_topic("bad name", &[&[1]]),
                new_topic("second", &[&[1], &[1]]),
                new_topic("first", &[&[1]]),
            ],
        },
    )
    .await?;
    let Outcome::TopicsCreated { results } = outcome else {
        bail!("unexpected outcome {outcome:?}");
    };
    ensure!(results.len() == 4, "{results:?}");
    ensure!(results[0] == Ok(topic_id("first")), "{results:?}");
    ensure!(
        matches!(results[1], Err(Rejection::InvalidTopicName { .. })),
        "{results:?}"
    );
    ensure!(results[2] == Ok(topic_id("second")), "{results:?}");
    ensure!(
        matches!(results[3], Err(Rejection::TopicAlreadyExists { .. })),
        "{results:?}"
    );
    ensure!(node.local().state.topic_count() == 2);
    Ok(())
}

/// Deleting a topic removes it by name and id along with its committed offsets; deleting a
/// missing topic is UNKNOWN_TOPIC_OR_PARTITION.
pub async fn delete_topic_removes_it_and_its_offsets(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let id = create_topic_ok(&node, "doomed", &[&[1], &[1]]).await?;
    create_topic_ok(&node, "kept", &[&[1]]).await?;
    accept(
        &node,
        commit(
            "g",
            None,
            &[("doomed", 0, 5), ("doomed", 1, 6), ("kept", 0, 7)],
        ),
    )
    .await?;

    let outcome = accept(
        &node,
        MetadataCommand::DeleteTopics {
            names: vec!["doomed".into(), "missing".into()],
        },
    )
    .await?;
    ensure!(
        outcome
            == Outcome::TopicsDeleted {
                results: vec![
                    Ok(id),
                    Err(Rejection::UnknownTopic {
                        name: "missing".into()
                    })
                ]
            },
        "{outcome:?}"
    );
    let view = node.local();
    ensure!(view.state.topic("doomed").is_none() && view.state.topic_by_id(id).is_none());
    let group = GroupId("g".into());
    let left: Vec<_> = view
        .state
        .group_offsets(&group)
        .map(|(k, o)| (k.topic.clone(), k.partition, o.offset))
        .collect();
    ensure!(left == vec![("kept".to_owned(), 0, 7)], "{left:?}");
    Ok(())
}

/// Partitions can be added with the topic's replication factor, never removed.
pub async fn create_partitions_adds_partitions(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;
    create_topic_ok(&node, "grow", &[&[1, 2]]).await?;
    let outcome = accept(
        &node,
        MetadataCommand::CreatePartitions {
            topic: "grow".into(),
            assignments: vec![
                vec![BrokerId(2), BrokerId(1)],
                vec![BrokerId(1), BrokerId(2)],
            ],
        },
    )
    .await?;
    ensure!(
        outcome == Outcome::PartitionsCreated { partition_count: 3 },
        "{outcome:?}"
    );
    let view = node.local();
    ensure!(
        view.state
            .partition("grow", 1)
            .is_some_and(|p| p.leader == Some(BrokerId(2)))
    );

    let wrong_rf = reject(
        &node,
        MetadataCommand::CreatePartitions {
            topic: "grow".into(),
            assignments: vec![vec![BrokerId(1)]],
        },
    )
    .await?;
    ensure!(
        matches!(wrong_rf, Rejection::InvalidReplicaAssignment { .. }),
        "{wrong_rf:?}"
    );
    let none = reject(
        &node,
        MetadataCommand::CreatePartitions {
            topic: "grow".into(),
            assignments: vec![],
        },
    )
    .await?;
    ensure!(
        matches!(none, Rejection::InvalidPartitions { .. }),
        "{none:?}"
    );
    let unknown = reject(
        &node,
        MetadataCommand::CreatePartitions {
            topic: "nope".into(),
            assignments: vec![vec![BrokerId(1), BrokerId(2)]],
        },
    )
    .await?;
    ensure!(
        matches!(unknown, Rejection::UnknownTopic { .. }),
        "{unknown:?}"
    );
    ensure!(
        node.local()
            .state
            .topic("grow")
            .is_some_and(|t| t.partitions.len() == 3)
    );
    Ok(())
}

/// Topic configs can be set and removed; an unknown topic is refused.
pub async fn alter_topic_configs(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let mut topic = new_topic("conf", &[&[1]]);
    topic.configs = vec![
        ("cleanup.policy".into(), "delete".into()),
        ("retention.ms".into(), "1000".into()),
    ];
    accept(
        &node,
        MetadataCommand::CreateTopics {
            topics: vec![topic],
        },
    )
    .await?;
    accept(
        &node,
        MetadataCommand::AlterTopicConfigs {
            topic: "conf".into(),
            set: vec![("cleanup.policy".into(), "compact".into())],
            remove: vec!["retention.ms".into()],
        },
    )
    .await?;
    let view = node.local();
    let Some(t) = view.state.topic("conf") else {
        bail!("topic missing");
    };
    let configs: Vec<_> = t
        .configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ensure!(
        configs == vec![("cleanup.policy", "compact")],
        "{configs:?}"
    );
    let rejection = reject(
        &node,
        MetadataCommand::AlterTopicConfigs {
            topic: "nope".into(),
            set: vec![],
            remove: vec![],
        },
    )
    .await?;
    ensure!(
        matches!(rejection, Rejection::UnknownTopic { .. }),
        "{rejection:?}"
    );
    Ok(())
}

/// Dynamic broker configs: the cluster-wide defaults and one broker's own are set and removed
/// apart; a broker that is not registered is refused.
pub async fn alter_broker_configs(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let alter = |broker: Option<i32>, set: &[(&str, &str)], remove: &[&str]| {
        MetadataCommand::AlterBrokerConfigs {
            broker: broker.map(BrokerId),
            set: set
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            remove: remove.iter().map(|k| (*k).to_owned()).collect(),
        }
    };
    accept(
        &node,
        alter(
            None,
            &[("log.retention.ms", "1000"), ("min.insync.replicas", "2")],
            &[],
        ),
    )
    .await?;
    accept(&node, alter(Some(1), &[("log.retention.ms", "5000")], &[])).await?;
    accept(&node, alter(None, &[], &["min.insync.replicas"])).await?;
    let view = node.local();
    let pairs = |broker| -> Vec<(String, String)> {
        view.state
            .broker_configs(broker)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    ensure!(
        pairs(None) == vec![("log.retention.ms".to_owned(), "1000".to_owned())],
        "{:?}",
        pairs(None)
    );
    ensure!(
        pairs(Some(BrokerId(1))) == vec![("log.retention.ms".to_owned(), "5000".to_owned())],
        "{:?}",
        pairs(Some(BrokerId(1)))
    );
    let rejection = reject(&node, alter(Some(9), &[("log.retention.ms", "1")], &[])).await?;
    ensure!(
        matches!(rejection, Rejection::UnknownBroker { .. }),
        "{rejection:?}"
    );
    accept(&node, alter(Some(1), &[], &["log.retention.ms"])).await?;
    ensure!(
        node.local()
            .state
            .broker_configs(Some(BrokerId(1)))
            .is_none()
    );
    Ok(())
}
