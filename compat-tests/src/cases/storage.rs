//! Offline access to a stopped node's metadata ([`Storage`]), what `switchyard metadata
//! export` and `import` are made of: a durable backend has it, an export taken from a node's
//! directory imports into a new node that serves the same state and takes writes after it, and
//! export → import → export gives byte-identical files for arbitrary states.

use anyhow::{Context, bail, ensure};
use switchyard_backend_api::export::{MetadataExport, Source};
use switchyard_backend_api::security::{
    AclBinding, AclOperation, AclPermission, PatternType, ResourceType,
};
use switchyard_backend_api::{
    AppliedState, BrokerId, ClusterId, MetadataCommand, NodeId, NodeIdentity, OpenContext,
    StateView, Storage, StoredState, find_backend,
};

use crate::fixtures::{
    accept, commit, converges, create_topic, register, register_all, start_generation,
};
use crate::harness::{BackendHarness, TestCluster};
use crate::nemesis::Rng;

/// Arbitrary states [`an_export_round_trips_byte_identically`] draws.
const STATES: u64 = 24;

/// The backend's storage; `None` for a backend that keeps nothing on disk. Fails unless a
/// backend has storage exactly when it declares durability.
fn storage(h: &dyn BackendHarness) -> anyhow::Result<Option<Storage>> {
    let storage = find_backend(h.backend())?.storage;
    let durable = h.declared().survives_restart();
    ensure!(
        storage.is_some() == durable,
        "{}: durability {:?} but storage {}",
        h.backend(),
        h.declared().durability,
        if storage.is_some() {
            "present"
        } else {
            "absent"
        }
    );
    Ok(storage)
}

fn export_of(h: &dyn BackendHarness, stored: StoredState) -> MetadataExport {
    MetadataExport {
        backend: h.backend().to_owned(),
        build: "conformance".into(),
        source: Source::DataDirectory,
        epoch: stored.epoch,
        view: stored.view,
    }
}

/// A state made by up to 60 random commands (rejected ones change nothing): brokers, topics
/// with configs, groups with generations, committed offsets, producer ids, transactional ids,
/// ACLs and broker configs.
fn arbitrary_state(rng: &mut Rng) -> StateView {
    let applied = AppliedState::new(StateView::default());
    let topics = ["orders", "payments", "audit.log", "x"];
    let groups = ["billing", "search", "g"];
    for _ in 0..rng.below(60) {
        let topic = topics[rng.below(topics.len() as u64) as usize];
        let group = groups[rng.below(groups.len() as u64) as usize];
        let command = match rng.below(10) {
            0 => MetadataCommand::InitCluster {
                cluster_id: ClusterId(format!("cluster-{}", rng.below(3))),
            },
            1 => register(rng.below(4) as i32),
            2 => {
                let partitions: Vec<Vec<i32>> = (0..=rng.below(3))
                    .map(|p| vec![(p % 3) as i32, ((p + 1) % 3) as i32])
                    .collect();
                let assignments: Vec<&[i32]> = partitions.iter().map(Vec::as_slice).collect();
                create_topic(topic, &assignments)
            }
            3 => {
                let members = ["m1", "m2", "m3"];
                let count = rng.below(4) as usize;
                start_generation(group, rng.below(3) as i32, &members[..count])
            }
            4 => commit(
                group,
                None,
                &[(topic, rng.below(3) as u32, rng.below(1_000_000) as i64)],
            ),
            5 => MetadataCommand::AllocateProducerIds {
                count: 1 + rng.below(1_000) as u32,
            },
            6 => MetadataCommand::InitTransactionalId {
                transactional_id: format!("txn-{}", rng.below(3)),
                timeout_ms: 60_000,
                current: None,
                now_ms: 1_700_000_000_000 + rng.below(1_000) as i64,
            },
            7 => MetadataCommand::CreateAcls {
                acls: vec![AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: topic.to_owned(),
                    pattern_type: PatternType::Literal,
                    principal: format!("User:u{}", rng.below(3)),
                    host: "*".into(),
                    operation: AclOperation::Read,
                    permission: AclPermission::Allow,
                }],
            },
            8 => MetadataCommand::AlterBrokerConfigs {
                broker: (rng.below(2) == 0).then_some(BrokerId(rng.below(3) as i32)),
                set: vec![("log.retention.ms".into(), rng.below(10_000_000).to_string())],
                remove: Vec::new(),
            },
            _ => MetadataCommand::AlterTopicConfigs {
                topic: topic.to_owned(),
                set: vec![("cleanup.policy".into(), "compact".into())],
                remove: Vec::new(),
            },
        };
        // A rejected command changes nothing; the state is what the accepted ones made.
        let _verdict = applied.apply_next(&command);
    }
    applied.view().as_ref().clone()
}

/// For arbitrary states: the export file of a state, imported into a fresh directory and
/// exported again, is the same file, byte for byte; `init` refuses the directory afterwards
/// and leaves it as it was.
pub async fn an_export_round_trips_byte_identically(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let Some(storage) = storage(h)? else {
        return Ok(());
    };
    let backend = h.backend();
    tokio::task::spawn_blocking(move || {
        for seed in 0..STATES {
            let mut rng = Rng::new(seed);
            let view = arbitrary_state(&mut rng);
            let stored = StoredState {
                view,
                epoch: rng.below(50),
            };
            let file = MetadataExport {
                backend: backend.to_owned(),
                build: "conformance".into(),
                source: Source::DataDirectory,
                epoch: stored.epoch,
                view: stored.view.clone(),
            }
            .to_file_bytes()?;
            let imported = MetadataExport::from_file_bytes(&file)?;
            let dir = tempfile::tempdir()?;
            let context = OpenContext {
                config: figment::Figment::new(),
                data_dir: dir.path().to_owned(),
                node: NodeIdentity::single(NodeId(1)),
                cluster_credentials: None,
            };
            ensure!(
                !(storage.holds)(dir.path())?,
                "seed {seed}: holds before init"
            );
            (storage.init)(
                &context,
                &StoredState {
                    view: imported.view.clone(),
                    epoch: imported.epoch,
                },
            )?;
            ensure!(
                (storage.holds)(dir.path())?,
                "seed {seed}: holds nothing after init"
            );
            let read = (storage.read)(dir.path())?;
            let again = MetadataExport {
                backend: backend.to_owned(),
                build: "conformance".into(),
                source: Source::DataDirectory,
                epoch: read.epoch,
                view: read.view,
            }
            .to_file_bytes()?;
            ensure!(
                again == file,
                "seed {seed}: the export of the imported state differs ({} bytes, was {})",
                again.len(),
                file.len()
            );
            let refused = (storage.init)(&context, &stored);
            ensure!(
                refused.is_err(),
                "seed {seed}: init over metadata succeeded"
            );
            ensure!(
                (storage.read)(dir.path())?.view == stored.view,
                "seed {seed}: a refused init changed the directory"
            );
        }
        Ok(())
    })
    .await
    .context("the round-trip task")?
}

/// A cluster's state exported from a stopped node's directory (three nodes where the backend
/// forms clusters) imports into every node of a new cluster, which elects a leader, serves the
/// state on every node, takes the next write after its index and is exported again with that
/// write.
pub async fn an_imported_cluster_serves_the_state_and_takes_writes(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let Some(storage) = storage(h)? else {
        return Ok(());
    };
    let size = if h.max_nodes() >= 3 { 3 } else { 1 };
    let mut source = TestCluster::start(h, size).await?;
    let node = source.leader().await?;
    accept(
        &node,
        MetadataCommand::InitCluster {
            cluster_id: ClusterId("imported".into()),
        },
    )
    .await?;
    register_all(&node, &[1, 2, 3]).await?;
    accept(&node, create_topic("kept", &[&[1, 2], &[2, 3]])).await?;
    accept(&node, commit("g", None, &[("kept", 1, 42)])).await?;
    let before = node.local();
    drop(node);
    for index in 0..size {
        converges(source.node(index)?, &before).await?;
    }
    for index in 0..size {
        source.stop(index).await?;
    }
    let mut read = Vec::new();
    for index in 0..size {
        let dir = source.spec(index)?.data_dir.clone();
        read.push(tokio::task::spawn_blocking(move || (storage.read)(&dir)).await??);
    }
    let stored = read
        .iter()
        .max_by_key(|s| s.view.applied_index)
        .cloned()
        .context("no node read")?;
    ensure!(
        stored.view.state == before.state,
        "read {} at index {}: not the state the leader had at {}",
        h.backend(),
        stored.view.applied_index,
        before.applied_index
    );

    // Through the export file, as `switchyard metadata export` and `import` do.
    let export = MetadataExport::from_file_bytes(&export_of(h, stored.clone()).to_file_bytes()?)?;
    let mut target = TestCluster::layout(h, size)?;
    for index in 0..size {
        let spec = target.spec(index)?;
        let context = OpenContext {
            config: figment::Figment::new(),
            data_dir: spec.data_dir.clone(),
            node: spec.identity.clone(),
            cluster_credentials: Some(spec.credentials.clone()),
        };
        let imported = StoredState {
            view: export.view.clone(),
            epoch: export.epoch,
        };
        tokio::task::spawn_blocking(move || (storage.init)(&context, &imported)).await??;
    }
    for index in 0..size {
        target.open(index).await?;
    }
    let node = target.leader().await?;
    // A new leader may first write an entry without a command (an epoch marker), which takes
    // an index and changes no state.
    let served = node.local();
    ensure!(
        served.state == stored.view.state && served.applied_index >= stored.view.applied_index,
        "the imported leader serves another state: index {} (imported {})",
        served.applied_index,
        stored.view.applied_index
    );
    if let Err(e) = accept(&node, create_topic("after", &[&[1]])).await {
        bail!("the imported cluster refused a write: {e:#}");
    }
    let after = node.local();
    ensure!(
        after.applied_index > stored.view.applied_index,
        "the first write after the import is at {}, not after {}",
        after.applied_index,
        stored.view.applied_index
    );
    drop(node);
    for index in 0..size {
        converges(target.node(index)?, &after).await?;
    }
    for index in 0..size {
        target.stop(index).await?;
        let dir = target.spec(index)?.data_dir.clone();
        let again = tokio::task::spawn_blocking(move || (storage.read)(&dir)).await??;
        ensure!(
            again.view.state == after.state,
            "node {}: its directory does not hold the write after the import",
            index + 1
        );
        ensure!(
            again.epoch >= stored.epoch,
            "node {}: the epoch went back from {} to {}",
            index + 1,
            stored.epoch,
            again.epoch
        );
    }
    Ok(())
}
