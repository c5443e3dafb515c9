//! The group coordinator against clients that misbehave or die, over real TCP: state for
//! member ids and groups nobody uses does not pile up, and a member that died without leaving
//! is dropped on its session timeout in every phase — a rebalance does not wait for it.

use std::time::Duration;

use anyhow::{bail, ensure};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, ListGroupsRequest,
    RequestKind, ResponseKind, SyncGroupRequest,
};
use tokio::net::TcpStream;

use crate::every_api::call;
use crate::support::{DEADLINE, s, start_memory};

/// The session timeout the test members ask for.
const SESSION_MS: i32 = 1_000;
/// Groups rebalance without an initial delay and accept short sessions.
const SETTINGS: &[(&str, i64)] = &[
    ("group_initial_rebalance_delay_ms", 0),
    ("group_min_session_timeout_ms", 500),
];

async fn join(
    stream: &mut TcpStream,
    group: &str,
    member_id: &str,
    rebalance_timeout_ms: i32,
) -> anyhow::Result<JoinGroupResponse> {
    let request = RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(SESSION_MS)
            .with_rebalance_timeout_ms(rebalance_timeout_ms)
            .with_member_id(s(member_id))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"\x00\x01")),
            ]),
    );
    match call(stream, ApiKey::JoinGroup, 5, 1, &request).await? {
        ResponseKind::JoinGroup(response) => Ok(response),
        other => bail!("not a JoinGroup response: {other:?}"),
    }
}

/// Join as a new member: ask for a member id, then join with it.
async fn join_new(
    stream: &mut TcpStream,
    group: &str,
    rebalance_timeout_ms: i32,
) -> anyhow::Result<JoinGroupResponse> {
    let first = join(stream, group, "", rebalance_timeout_ms).await?;
    ensure!(
        first.error_code == ResponseError::MemberIdRequired.code(),
        "{first:?}"
    );
    join(
        stream,
        group,
        first.member_id.as_str(),
        rebalance_timeout_ms,
    )
    .await
}

async fn listed_groups(stream: &mut TcpStream) -> anyhow::Result<Vec<String>> {
    let request = RequestKind::ListGroups(ListGroupsRequest::default());
    match call(stream, ApiKey::ListGroups, 3, 2, &request).await? {
        ResponseKind::ListGroups(response) => Ok(response
            .groups
            .iter()
            .map(|g| g.group_id.0.as_str().to_owned())
            .collect()),
        other => bail!("not a ListGroups response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_member_ids_and_unknown_groups_leave_no_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, SETTINGS).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    // Member ids handed out and never used.
    for _ in 0..300 {
        let answer = join(&mut stream, "leak", "", 5_000).await?;
        ensure!(
            answer.error_code == ResponseError::MemberIdRequired.code(),
            "{answer:?}"
        );
    }
    // Heartbeats to a group that does not exist.
    let heartbeat = RequestKind::Heartbeat(
        HeartbeatRequest::default()
            .with_group_id(GroupId(s("ghost")))
            .with_generation_id(1)
            .with_member_id(s("nobody")),
    );
    match call(&mut stream, ApiKey::Heartbeat, 4, 3, &heartbeat).await? {
        ResponseKind::Heartbeat(r) if r.error_code == ResponseError::UnknownMemberId.code() => {}
        other => bail!("heartbeat to an unknown group answered {other:?}"),
    }
    let listed = listed_groups(&mut stream).await?;
    ensure!(!listed.contains(&"ghost".to_owned()), "{listed:?}");
    // The issued ids expire after the session timeout they were asked with, and the group,
    // which never had a member, is forgotten.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while listed_groups(&mut stream)
        .await?
        .contains(&"leak".to_owned())
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the group of unused member ids is still held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_dropped_on_its_session_timeout_during_a_rebalance() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, SETTINGS).await?;
    let mut dead = TcpStream::connect(node.kafka_addr()).await?;
    // Member A joins, leads and syncs; then stops heartbeating (it "died" without LeaveGroup).
    let a = join_new(&mut dead, "rebalance", 60_000).await?;
    ensure!(a.error_code == 0 && a.leader == a.member_id, "{a:?}");
    let sync = RequestKind::SyncGroup(
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("rebalance")))
            .with_generation_id(a.generation_id)
            .with_member_id(a.member_id.clone())
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(a.member_id.clone())
                    .with_assignment(Bytes::from_static(b"a")),
            ]),
    );
    match call(&mut dead, ApiKey::SyncGroup, 3, 4, &sync).await? {
        ResponseKind::SyncGroup(r) if r.error_code == 0 => {}
        other => bail!("sync answered {other:?}"),
    }
    drop(dead);
    // Member B joins: the rebalance waits for A to rejoin — up to A's rebalance timeout of a
    // minute, unless A is dropped when its one-second session runs out. `call` gives up after
    // ten seconds.
    let mut alive = TcpStream::connect(node.kafka_addr()).await?;
    let b = join_new(&mut alive, "rebalance", 60_000).await?;
    ensure!(b.error_code == 0, "{b:?}");
    ensure!(
        b.leader == b.member_id && b.members.len() == 1 && b.generation_id > a.generation_id,
        "{b:?}"
    );
    node.shutdown().await?;
    Ok(())
}
