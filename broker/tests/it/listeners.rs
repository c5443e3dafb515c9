//! Named Kafka listeners (`kafka.listeners`): each listener answers Metadata, DescribeCluster
//! and FindCoordinator with the brokers' endpoints of that listener, leaves out brokers
//! without one (their partitions' leaders become LISTENER_NOT_FOUND), and only the
//! inter-broker listener serves replica fetches and broker heartbeats.

use anyhow::{Context, bail, ensure};
use figment::providers::Serialized;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, BrokerHeartbeatRequest, DescribeClusterRequest, FindCoordinatorRequest,
    MetadataRequest, MetadataResponse, RequestKind, ResponseKind, TopicName,
};
use switchyard::config::{Config, Overrides, defaults};
use switchyard::serve::Node;
use switchyard_backend_api::{BrokerEndpoint, BrokerId, MetadataCommand, NewTopic, TopicId};
use tokio::net::TcpStream;

use crate::every_api::call;
use crate::hostile::{fetch, with_a_follower};
use crate::support::{DEADLINE, s};

/// A memory node with an inter-broker `PLAINTEXT` listener and an `EXTERNAL` one (PLAINTEXT
/// too, by the protocol map) advertised as `clients.example:9094`.
async fn two_listeners(dir: &tempfile::TempDir) -> anyhow::Result<Node> {
    let overrides = Overrides {
        metadata_backend: Some("memory".into()),
        data_dir: Some(dir.path().to_owned()),
        ..Overrides::default()
    };
    let figment = defaults()
        .merge(Serialized::defaults(&overrides))
        .merge(Serialized::default(
            "kafka.listeners",
            ["PLAINTEXT://127.0.0.1:0", "EXTERNAL://127.0.0.1:0"],
        ))
        .merge(Serialized::default(
            "kafka.advertised_listeners",
            ["EXTERNAL://clients.example:9094"],
        ))
        .merge(Serialized::default(
            "kafka.listener_security_protocol_map",
            ["EXTERNAL:PLAINTEXT"],
        ));
    let node = Node::start(&Config::from_figment(figment)?).await?;
    let mut registered = node.broker().registration();
    tokio::time::timeout(DEADLINE, registered.wait_for(|r| *r)).await??;
    Ok(node)
}

async fn metadata(stream: &mut TcpStream, topic: &str) -> anyhow::Result<MetadataResponse> {
    let request = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(s(topic)))),
    ])));
    match call(stream, ApiKey::Metadata, 12, 1, &request).await? {
        ResponseKind::Metadata(response) => Ok(response),
        other => bail!("not a Metadata response: {other:?}"),
    }
}

fn brokers(response: &MetadataResponse) -> Vec<(i32, String, i32)> {
    response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_answers_with_its_own_endpoints() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = two_listeners(&dir).await?;
    let internal = node.kafka_addr();
    let external = node
        .listener_addr("EXTERNAL")
        .context("no EXTERNAL listener")?;
    ensure!(node.listener_addr("PLAINTEXT") == Some(internal));
    // Broker 2 has only an inter-broker listener; it leads "internal-only".
    node.broker()
        .propose(MetadataCommand::RegisterBroker {
            id: BrokerId(2),
            host: "broker-2.internal".into(),
            port: 9092,
            rack: None,
            listeners: vec![BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host: "broker-2.internal".into(),
                port: 9092,
            }],
        })
        .await?;
    node.broker()
        .propose(MetadataCommand::CreateTopics {
            topics: vec![NewTopic {
                name: "internal-only".into(),
                id: TopicId(uuid::Uuid::new_v4()),
                assignments: vec![vec![BrokerId(2)]],
                configs: Vec::new(),
            }],
        })
        .await?;

    let mut on_internal = TcpStream::connect(internal).await?;
    let answer = metadata(&mut on_internal, "internal-only").await?;
    ensure!(
        brokers(&answer)
            == vec![
                (1, "127.0.0.1".to_owned(), i32::from(internal.port())),
                (2, "broker-2.internal".to_owned(), 9092)
            ],
        "{answer:?}"
    );
    let partition = &answer.topics[0].partitions[0];
    ensure!(
        partition.error_code == 0 && partition.leader_id.0 == 2,
        "{partition:?}"
    );

    let mut on_external = TcpStream::connect(external).await?;
    let answer = metadata(&mut on_external, "internal-only").await?;
    ensure!(
        brokers(&answer) == vec![(1, "clients.example".to_owned(), 9094)],
        "{answer:?}"
    );
    let partition = &answer.topics[0].partitions[0];
    ensure!(
        partition.error_code == ResponseError::ListenerNotFound.code()
            && partition.leader_id.0 == -1,
        "{partition:?}"
    );

    let describe = RequestKind::DescribeCluster(DescribeClusterRequest::default());
    let ResponseKind::DescribeCluster(cluster) =
        call(&mut on_external, ApiKey::DescribeCluster, 0, 2, &describe).await?
    else {
        bail!("not a DescribeCluster response");
    };
    let described: Vec<_> = cluster
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.host.to_string(), b.port))
        .collect();
    ensure!(
        described == vec![(1, "clients.example".to_owned(), 9094)],
        "{described:?}"
    );

    // Whichever broker coordinates the group, the answer is reachable on this listener or
    // COORDINATOR_NOT_AVAILABLE.
    for group in ["a", "b", "c", "d"] {
        let find =
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s(group)));
        let ResponseKind::FindCoordinator(found) =
            call(&mut on_external, ApiKey::FindCoordinator, 2, 3, &find).await?
        else {
            bail!("not a FindCoordinator response");
        };
        ensure!(
            (found.node_id.0 == 1
                && found.host.as_str() == "clients.example"
                && found.port == 9094)
                || found.error_code == ResponseError::CoordinatorNotAvailable.code(),
            "{found:?}"
        );
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_inter_broker_listener_serves_replica_fetches_and_heartbeats() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let node = two_listeners(&dir).await?;
    // Broker 2, registered at 127.0.0.1 (where this test connects from), follows "t".
    let epoch = with_a_follower(&node).await?;
    let fetch = fetch(2, "t", epoch, 0, 1);
    let heartbeat = RequestKind::BrokerHeartbeat(
        BrokerHeartbeatRequest::default()
            .with_broker_id(2.into())
            .with_broker_epoch(1)
            .with_current_metadata_offset(0),
    );
    let refused = ResponseError::ClusterAuthorizationFailed.code();
    let external = node
        .listener_addr("EXTERNAL")
        .context("no EXTERNAL listener")?;
    for (addr, inter_broker) in [(external, false), (node.kafka_addr(), true)] {
        let mut stream = TcpStream::connect(addr).await?;
        let ResponseKind::Fetch(answer) = call(&mut stream, ApiKey::Fetch, 12, 4, &fetch).await?
        else {
            bail!("not a Fetch response");
        };
        ensure!(
            (answer.error_code == refused) != inter_broker,
            "replica fetch on the {} listener: {answer:?}",
            if inter_broker {
                "inter-broker"
            } else {
                "EXTERNAL"
            }
        );
        let ResponseKind::BrokerHeartbeat(answer) =
            call(&mut stream, ApiKey::BrokerHeartbeat, 1, 5, &heartbeat).await?
        else {
            bail!("not a BrokerHeartbeat response");
        };
        ensure!(
            (answer.error_code == refused) != inter_broker,
            "heartbeat on the {} listener: {answer:?}",
            if inter_broker {
                "inter-broker"
            } else {
                "EXTERNAL"
            }
        );
    }
    node.shutdown().await?;
    Ok(())
}
