//! Local durability: torn tails, corruption, power loss, snapshots.

use std::fs::{self, OpenOptions};
use std::io::Write;

use anyhow::{Context, bail, ensure};
use switchyard_compat_tests::fixtures::register_all;
use switchyard_compat_tests::{DEADLINE, TestCluster};

use crate::support::toml_value::Value;
use crate::support::{create_topics, files, harness, segments, wal_dir};

/// A partial frame after the last fsynced record is cut off on reopen; every acknowledged
/// write is there and the file is back to its fsynced length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_truncated() -> anyhow::Result<()> {
    let h = harness(&[]);
    let mut cluster = TestCluster::single(&h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topics(&node, "torn", 0..10).await?;
    let before = node.local();
    drop(node);
    cluster.crash(0).await?;

    let data_dir = cluster.spec(0)?.data_dir.clone();
    let segment = segments(&data_dir)?.pop().context("no segment")?;
    let bytes = fs::read(&segment)?;
    let fsynced = bytes.len() as u64;
    // The first 20 bytes of a frame: a whole header promising a body that never arrived.
    OpenOptions::new()
        .append(true)
        .open(&segment)?
        .write_all(&bytes[..20])?;

    let node = cluster.open(0).await?;
    node.wait_ready(DEADLINE).await?;
    let after = node.local();
    ensure!(after.applied_index == before.applied_index);
    ensure!(
        after.state == before.state,
        "state changed across the torn tail"
    );
    ensure!(
        fs::metadata(&segment)?.len() == fsynced,
        "tail not truncated"
    );
    Ok(())
}

/// A record cut in the middle (the last one) is dropped; everything before it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_cut_mid_way_drops_only_that_record() -> anyhow::Result<()> {
    let h = harness(&[]);
    let mut cluster = TestCluster::single(&h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topics(&node, "cut", 0..5).await?;
    drop(node);
    cluster.crash(0).await?;

    let segment = segments(&cluster.spec(0)?.data_dir)?
        .pop()
        .context("no segment")?;
    let len = fs::metadata(&segment)?.len();
    OpenOptions::new()
        .write(true)
        .open(&segment)?
        .set_len(len - 3)?;

    let node = cluster.open(0).await?;
    node.wait_ready(DEADLINE).await?;
    let state = &node.local().state;
    ensure!(state.topic("cut-3").is_some(), "an intact record was lost");
    ensure!(state.topic("cut-4").is_none(), "the cut record was applied");
    Ok(())
}

/// A damaged record with valid records after it is corruption, not a torn tail: opening
/// fails and names the file and the byte offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_middle_fails_open_naming_file_and_offset() -> anyhow::Result<()> {
    let h = harness(&[]);
    let mut cluster = TestCluster::single(&h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topics(&node, "corrupt", 0..5).await?;
    drop(node);
    cluster.crash(0).await?;

    let segment = segments(&cluster.spec(0)?.data_dir)?
        .into_iter()
        .next()
        .context("no segment")?;
    let mut bytes = fs::read(&segment)?;
    let mut len = [0; 4];
    len.copy_from_slice(&bytes[..4]);
    let second = 8 + u32::from_le_bytes(len) as usize;
    bytes[second + 12] ^= 0x10;
    fs::write(&segment, &bytes)?;

    let error = match cluster.open(0).await {
        Ok(_) => bail!("opened a log with a corrupt record in the middle"),
        Err(e) => format!("{e:#}"),
    };
    let name = segment
        .file_name()
        .and_then(|n| n.to_str())
        .context("segment name")?;
    ensure!(error.contains(name), "{error}");
    ensure!(error.contains(&format!("byte offset {second}")), "{error}");
    Ok(())
}

/// Power loss: the disk holds the log up to its last fsynced length plus part of a record
/// that was being written. Reopening a copy cut that way keeps every write acknowledged up
/// to that point and drops the partial one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_keeps_everything_acknowledged() -> anyhow::Result<()> {
    let h = harness(&[]);
    let mut cluster = TestCluster::single(&h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topics(&node, "acked", 0..20).await?;
    let acked = node.local();
    let data_dir = cluster.spec(0)?.data_dir.clone();
    let segment = segments(&data_dir)?.pop().context("no segment")?;
    let fsynced = fs::metadata(&segment)?.len();
    create_topics(&node, "in-flight", 0..1).await?;
    drop(node);
    cluster.crash(0).await?;

    let written = fs::metadata(&segment)?.len();
    ensure!(written > fsynced);
    OpenOptions::new()
        .write(true)
        .open(&segment)?
        .set_len(fsynced + (written - fsynced) / 2)?;

    let node = cluster.open(0).await?;
    node.wait_ready(DEADLINE).await?;
    let after = node.local();
    ensure!(
        after.state == acked.state,
        "acknowledged state differs after power loss"
    );
    ensure!(after.state.topic("in-flight-0").is_none());
    Ok(())
}

/// Snapshots are taken every `snapshot_every` entries, the segments they cover are deleted,
/// and a restart from snapshot + tail yields the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_restart() -> anyhow::Result<()> {
    let h = harness(&[
        ("snapshot_every", Value::Int(10)),
        ("segment_bytes", Value::Int(4096)),
    ]);
    let mut cluster = TestCluster::single(&h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topics(&node, "snap", 0..150).await?;
    let before = node.local();
    drop(node);
    let data_dir = cluster.spec(0)?.data_dir.clone();
    cluster.restart(0).await?;

    let snapshots = files(&wal_dir(&data_dir), "snapshot-")?;
    ensure!(snapshots.len() == 1, "expected one snapshot: {snapshots:?}");
    let first = segments(&data_dir)?;
    ensure!(
        !first
            .iter()
            .any(|p| p.ends_with("wal-00000000000000000001.log")),
        "the first segment was not deleted: {first:?}"
    );
    let node = cluster.leader().await?;
    let after = node.local();
    ensure!(after.applied_index >= before.applied_index);
    ensure!(after.state == before.state, "state differs after restart");
    create_topics(&node, "after", 0..3).await?;
    Ok(())
}
