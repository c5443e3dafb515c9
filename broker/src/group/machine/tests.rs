//! One scenario per rule, driven by hand through the simulated world (`sim.rs`), which checks
//! every reply and the machine's invariants on the way.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::sim::{Fate, World, config, my_groups};
use super::*;

const SESSION_MS: i32 = 1_000;
const REBALANCE_MS: i32 = 10_000;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn group() -> String {
    my_groups(1).remove(0)
}

fn join_request(group: &str, member_id: &str, instance: Option<&str>) -> Request {
    Request::Join {
        join: JoinRequest {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            group_instance_id: instance.map(str::to_owned),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from(format!("meta-{member_id}")))],
            require_known_member_id: true,
        },
        fresh_member_id: format!("member-{}", uuid::Uuid::new_v4()),
    }
}

fn join_reply(world: &mut World, id: RequestId) -> JoinResult {
    match world.reply(id) {
        Some(Reply::Join(result)) => result,
        other => panic!("expected a JoinGroup reply, got {other:?}"),
    }
}

fn sync_reply(world: &mut World, id: RequestId) -> SyncResult {
    match world.reply(id) {
        Some(Reply::Sync(result)) => result,
        other => panic!("expected a SyncGroup reply, got {other:?}"),
    }
}

/// Ask for a member id, then join with it; the waiting join's request.
fn join_new(world: &mut World, group: &str, instance: Option<&str>) -> RequestId {
    let first = world.send(join_request(group, "", instance));
    let refused = join_reply(world, first);
    assert_eq!(refused.error, Some(ResponseError::MemberIdRequired));
    world.send(join_request(group, &refused.member_id, instance))
}

fn rejoin(world: &mut World, group: &str, member_id: &str) -> RequestId {
    world.send(join_request(group, member_id, None))
}

fn sync(world: &mut World, group: &str, joined: &JoinResult) -> RequestId {
    let assignments = joined
        .members
        .iter()
        .map(|(m, _, _)| (m.clone(), Bytes::from(format!("{m}-assigned"))))
        .collect();
    world.send(Request::Sync(SyncRequest {
        group: group.to_owned(),
        generation: joined.generation,
        member_id: joined.member_id.clone(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol: joined.protocol.clone(),
        assignments,
    }))
}

fn heartbeat(world: &mut World, group: &str, joined: &JoinResult) -> Option<ResponseError> {
    let id = world.send(Request::Heartbeat {
        group: group.to_owned(),
        generation: joined.generation,
        member_id: joined.member_id.clone(),
        group_instance_id: None,
    });
    match world.reply(id) {
        Some(Reply::Heartbeat(error)) => error,
        other => panic!("expected a Heartbeat reply, got {other:?}"),
    }
}

/// A second member joins a one-member group: the first member's generation 1, then both
/// joined at generation 2, not yet synced. Returns (the first member, the newcomer).
fn joined_pair(world: &mut World, group: &str) -> (JoinResult, JoinResult) {
    let first = join_new(world, group, None);
    world.commit_all();
    let first = join_reply(world, first);
    let newcomer = join_new(world, group, None);
    let again = rejoin(world, group, &first.member_id);
    world.commit_all();
    let newcomer = join_reply(world, newcomer);
    (join_reply(world, again), newcomer)
}

/// The `count` members of a stable group, the leader first: at generation 1 for one member,
/// else at generation 2 (the first member's generation 1 is rebalanced to let the rest in).
fn stable_group(world: &mut World, group: &str, count: usize) -> Vec<JoinResult> {
    let first = join_new(world, group, None);
    world.commit_all();
    let leader = join_reply(world, first);
    let mut joined = vec![leader];
    if count > 1 {
        let mut waiting: Vec<RequestId> =
            (1..count).map(|_| join_new(world, group, None)).collect();
        waiting.push(rejoin(world, group, &joined[0].member_id));
        world.commit_all();
        joined = waiting
            .into_iter()
            .map(|id| join_reply(world, id))
            .collect();
        joined.sort_by_key(|j| j.member_id != j.leader);
    }
    let syncs: Vec<RequestId> = joined.iter().map(|j| sync(world, group, j)).collect();
    world.commit_all();
    for id in syncs {
        assert_eq!(sync_reply(world, id).error, None);
    }
    assert_eq!(
        world.group(group).map(|(phase, ..)| phase),
        Some(Phase::Stable)
    );
    joined
}

#[test]
fn a_member_joins_leads_syncs_and_heartbeats() {
    let mut world = World::new(config());
    let g = group();
    let id = join_new(&mut world, &g, None);
    assert_eq!(world.pending.len(), 1, "the join phase ends at once");
    world.commit_all();
    let joined = join_reply(&mut world, id);
    assert_eq!((joined.error, joined.generation), (None, 1));
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(joined.protocol.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    let synced = sync(&mut world, &g, &joined);
    assert!(
        world.reply(synced).is_none(),
        "waits for the assignment's proposal"
    );
    world.commit_all();
    let assigned = sync_reply(&mut world, synced);
    assert_eq!(assigned.error, None);
    assert_eq!(
        assigned.assignment,
        format!("{}-assigned", joined.member_id)
    );
    assert_eq!(heartbeat(&mut world, &g, &joined), None);
}

#[test]
fn unused_member_ids_expire_and_unknown_groups_leave_no_state() {
    let mut world = World::new(config());
    let g = group();
    let asked = world.send(join_request(&g, "", None));
    let issued = join_reply(&mut world, asked);
    assert_eq!(issued.error, Some(ResponseError::MemberIdRequired));
    let ghost_group = my_groups(2).remove(1);
    let ghost = world.send(Request::Heartbeat {
        group: ghost_group.clone(),
        generation: 1,
        member_id: "nobody".into(),
        group_instance_id: None,
    });
    assert_eq!(
        world.reply(ghost),
        Some(Reply::Heartbeat(Some(ResponseError::UnknownMemberId)))
    );
    assert!(world.group(&ghost_group).is_none());
    world.advance(ms(u64::try_from(SESSION_MS).unwrap_or(0) + 300));
    assert!(
        world.group(&g).is_none(),
        "the group of an unused member id is dropped"
    );
    let late = rejoin(&mut world, &g, &issued.member_id);
    assert_eq!(
        join_reply(&mut world, late).error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_join_before_v4_gets_its_member_id_at_once() {
    let mut world = World::new(config());
    let g = group();
    let Request::Join {
        mut join,
        fresh_member_id,
    } = join_request(&g, "", None)
    else {
        unreachable!()
    };
    join.require_known_member_id = false;
    let id = world.send(Request::Join {
        join,
        fresh_member_id: fresh_member_id.clone(),
    });
    world.commit_all();
    let joined = join_reply(&mut world, id);
    assert_eq!((joined.error, joined.member_id), (None, fresh_member_id));
}

#[test]
fn joins_are_refused_for_bad_group_ids_session_timeouts_and_protocols() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 1);
    let mut bad = |edit: &dyn Fn(&mut JoinRequest)| {
        let Request::Join {
            mut join,
            fresh_member_id,
        } = join_request(&g, &members[0].member_id, None)
        else {
            unreachable!()
        };
        edit(&mut join);
        let id = world.send(Request::Join {
            join,
            fresh_member_id,
        });
        join_reply(&mut world, id).error
    };
    assert_eq!(
        bad(&|j| j.session_timeout_ms = 1),
        Some(ResponseError::InvalidSessionTimeout)
    );
    assert_eq!(
        bad(&|j| j.protocols = vec![("sticky".into(), Bytes::new())]),
        Some(ResponseError::InconsistentGroupProtocol)
    );
    assert_eq!(
        bad(&|j| j.protocol_type = "connect".into()),
        Some(ResponseError::InconsistentGroupProtocol)
    );
    assert_eq!(
        bad(&|j| j.member_id = "stranger".into()),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn the_initial_rebalance_delay_waits_for_more_members() {
    let mut world = World::new(Config {
        initial_rebalance_delay: ms(3_000),
        ..config()
    });
    let g = group();
    let a = join_new(&mut world, &g, None);
    world.advance(ms(1_000));
    let b = join_new(&mut world, &g, None);
    world.advance(ms(1_999));
    assert!(
        world.pending.is_empty(),
        "every member joined, but the delay is not over"
    );
    world.advance(ms(1));
    world.commit_all();
    let (a, b) = (join_reply(&mut world, a), join_reply(&mut world, b));
    assert_eq!((a.generation, b.generation), (1, 1));
    assert_eq!(a.leader, b.leader);
}

#[test]
fn followers_wait_for_the_leaders_assignment() {
    let mut world = World::new(config());
    let g = group();
    let (leader, follower) = joined_pair(&mut world, &g);
    assert_eq!((leader.generation, follower.generation), (2, 2));
    assert!(follower.members.is_empty() && leader.members.len() == 2);
    let waits = sync(&mut world, &g, &follower);
    world.advance(ms(500));
    assert!(world.reply(waits).is_none());
    let leads = sync(&mut world, &g, &leader);
    world.commit_all();
    assert_eq!(
        sync_reply(&mut world, waits).assignment,
        format!("{}-assigned", follower.member_id)
    );
    assert_eq!(sync_reply(&mut world, leads).error, None);
}

#[test]
fn a_follower_sync_gives_up_after_the_sync_wait() {
    let mut world = World::new(Config {
        sync_wait: ms(2_000),
        ..config()
    });
    let g = group();
    let members = stable_group(&mut world, &g, 2);
    let again: Vec<RequestId> = members
        .iter()
        .map(|m| rejoin(&mut world, &g, &m.member_id))
        .collect();
    world.commit_all();
    let joined: Vec<JoinResult> = again
        .into_iter()
        .map(|id| join_reply(&mut world, id))
        .collect();
    let waits = sync(&mut world, &g, &joined[1]);
    // Both keep their sessions; the leader never syncs.
    for _ in 0..4 {
        world.advance(ms(450));
        for m in &joined {
            assert_eq!(heartbeat(&mut world, &g, m), None);
        }
    }
    world.advance(ms(199));
    assert!(world.reply(waits).is_none());
    world.advance(ms(1));
    assert_eq!(
        sync_reply(&mut world, waits).error,
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn a_follower_rejoining_a_stable_group_keeps_its_generation() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 2);
    let again = rejoin(&mut world, &g, &members[1].member_id);
    let back = join_reply(&mut world, again);
    assert!(world.pending.is_empty(), "no rebalance");
    assert_eq!((back.error, back.generation), (None, members[1].generation));
    assert_eq!(
        world.group(&g).map(|(phase, ..)| phase),
        Some(Phase::Stable)
    );
}

#[test]
fn a_silent_member_expires_in_a_stable_group_and_the_rest_rebalance() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 2);
    let (leader, silent) = (&members[0], &members[1]);
    for _ in 0..2 {
        world.advance(ms(400));
        assert_eq!(heartbeat(&mut world, &g, leader), None);
    }
    world.advance(ms(400));
    let (phase, _, left) = world.group(&g).unwrap_or_else(|| panic!("group dropped"));
    assert_eq!(phase, Phase::PreparingRebalance);
    assert_eq!(left, std::slice::from_ref(&leader.member_id));
    assert_eq!(
        heartbeat(&mut world, &g, leader),
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        heartbeat(&mut world, &g, silent),
        Some(ResponseError::UnknownMemberId)
    );
    let again = rejoin(&mut world, &g, &leader.member_id);
    world.commit_all();
    assert_eq!(
        join_reply(&mut world, again).generation,
        leader.generation + 1
    );
}

#[test]
fn a_silent_member_expires_while_the_group_completes_its_rebalance() {
    let mut world = World::new(config());
    let g = group();
    let (first, second) = joined_pair(&mut world, &g);
    let follower = if first.leader == first.member_id {
        &second
    } else {
        &first
    };
    let waits = sync(&mut world, &g, follower);
    // The leader never syncs nor heartbeats; the follower heartbeats.
    for _ in 0..3 {
        world.advance(ms(400));
        heartbeat(&mut world, &g, follower);
    }
    assert_eq!(
        sync_reply(&mut world, waits).error,
        Some(ResponseError::RebalanceInProgress)
    );
    let (phase, _, left) = world.group(&g).unwrap_or_else(|| panic!("group dropped"));
    assert_eq!(
        (phase, left),
        (Phase::PreparingRebalance, vec![follower.member_id.clone()])
    );
}

#[test]
fn a_silent_member_expires_during_a_join_phase_which_then_ends_without_it() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 2);
    let newcomer = join_new(&mut world, &g, None);
    let again = rejoin(&mut world, &g, &members[0].member_id);
    world.advance(ms(u64::try_from(SESSION_MS).unwrap_or(0)));
    assert_eq!(
        world.pending.len(),
        1,
        "the join phase ended long before its deadline"
    );
    world.commit_all();
    let (newcomer, again) = (
        join_reply(&mut world, newcomer),
        join_reply(&mut world, again),
    );
    let next = members[0].generation + 1;
    assert_eq!((newcomer.generation, again.generation), (next, next));
    assert_eq!(again.members.len(), 2, "{again:?}");
}

#[test]
fn members_waiting_in_a_join_phase_do_not_expire() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 2);
    let waiting = rejoin(&mut world, &g, &members[0].member_id);
    // The other member heartbeats but does not rejoin: the phase lasts the rebalance timeout,
    // far longer than the waiting member's session.
    for _ in 0..24 {
        world.advance(ms(400));
        assert_eq!(
            heartbeat(&mut world, &g, &members[1]),
            Some(ResponseError::RebalanceInProgress)
        );
    }
    assert!(world.reply(waiting).is_none() && world.pending.is_empty());
    // The rebalance timeout (10 s) ends the phase.
    world.advance(ms(400));
    world.commit_all();
    let joined = join_reply(&mut world, waiting);
    assert_eq!(
        (joined.error, joined.generation),
        (None, members[0].generation + 1)
    );
    assert_eq!(
        joined.members.len(),
        1,
        "the member that did not rejoin is out"
    );
    assert_eq!(
        heartbeat(&mut world, &g, &members[1]),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn members_kept_after_a_failed_generation_expire_from_empty() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 1);
    let again = rejoin(&mut world, &g, &members[0].member_id);
    world.resolve(0, Fate::Fail);
    assert_eq!(
        join_reply(&mut world, again).error,
        Some(ResponseError::CoordinatorNotAvailable)
    );
    assert_eq!(
        world
            .group(&g)
            .map(|(phase, generation, _)| (phase, generation)),
        Some((Phase::Empty, 1))
    );
    world.advance(ms(u64::try_from(SESSION_MS).unwrap_or(0)));
    let [(_, MetadataCommand::StartGeneration { members, .. })] = &world.pending[..] else {
        panic!("expected an empty generation, got {:?}", world.pending);
    };
    assert!(members.is_empty());
    world.commit_all();
    world.advance(ms(300));
    assert!(world.group(&g).is_none(), "an empty group is dropped");
}

#[test]
fn a_join_waiting_past_its_rebalance_timeout_is_answered_once() {
    let mut world = World::new(config());
    let g = group();
    let id = join_new(&mut world, &g, None);
    // The generation's proposal hangs past the rebalance timeout and the grace.
    world.advance(ms(u64::try_from(REBALANCE_MS).unwrap_or(0) + 5_000));
    assert_eq!(
        join_reply(&mut world, id).error,
        Some(ResponseError::RebalanceInProgress)
    );
    // When it commits at last the member is in the generation; nobody is answered twice.
    world.commit_all();
    assert!(world.reply(id).is_none());
    assert_eq!(
        world
            .group(&g)
            .map(|(phase, generation, _)| (phase, generation)),
        Some((Phase::CompletingRebalance, 1))
    );
}

#[test]
fn requests_wait_for_the_proposal_in_flight_and_are_answered_in_order() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 1);
    let again = rejoin(&mut world, &g, &members[0].member_id);
    let beat = world.send(Request::Heartbeat {
        group: g.clone(),
        generation: 1,
        member_id: members[0].member_id.clone(),
        group_instance_id: None,
    });
    assert!(world.reply(beat).is_none(), "queued behind StartGeneration");
    world.commit_all();
    assert_eq!(join_reply(&mut world, again).generation, 2);
    assert_eq!(
        world.reply(beat),
        Some(Reply::Heartbeat(Some(ResponseError::IllegalGeneration)))
    );
}

#[test]
fn a_generation_applied_whose_proposal_timed_out_is_the_one_the_group_believes() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 1);
    let again = rejoin(&mut world, &g, &members[0].member_id);
    world.resolve(0, Fate::ApplyThenTimeOut);
    assert_eq!(
        join_reply(&mut world, again).error,
        Some(ResponseError::CoordinatorNotAvailable)
    );
    assert_eq!(
        world.group(&g).map(|(_, generation, _)| generation),
        Some(2)
    );
    let retry = rejoin(&mut world, &g, &members[0].member_id);
    world.commit_all();
    let joined = join_reply(&mut world, retry);
    assert_eq!((joined.error, joined.generation), (None, 3));
}

#[test]
fn a_failed_assignment_answers_the_leader_and_the_followers_and_may_be_retried() {
    let mut world = World::new(config());
    let g = group();
    let (leader, follower) = joined_pair(&mut world, &g);
    let waits = sync(&mut world, &g, &follower);
    let leads = sync(&mut world, &g, &leader);
    world.resolve(0, Fate::Fail);
    assert_eq!(
        sync_reply(&mut world, leads).error,
        Some(ResponseError::CoordinatorNotAvailable)
    );
    assert_eq!(
        sync_reply(&mut world, waits).error,
        Some(ResponseError::CoordinatorNotAvailable)
    );
    assert_eq!(
        world.group(&g).map(|(phase, ..)| phase),
        Some(Phase::CompletingRebalance)
    );
    let leads = sync(&mut world, &g, &leader);
    world.commit_all();
    assert_eq!(sync_reply(&mut world, leads).error, None);
}

#[test]
fn leaving_rebalances_and_the_last_member_leaving_empties_the_group() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 2);
    let left = world.send(Request::Leave {
        group: g.clone(),
        members: vec![
            (members[1].member_id.clone(), None),
            ("stranger".into(), None),
        ],
    });
    assert_eq!(
        world.reply(left),
        Some(Reply::Leave(vec![
            (members[1].member_id.clone(), None),
            ("stranger".into(), Some(ResponseError::UnknownMemberId)),
        ]))
    );
    assert_eq!(
        world.group(&g).map(|(phase, ..)| phase),
        Some(Phase::PreparingRebalance)
    );
    let last = world.send(Request::Leave {
        group: g.clone(),
        members: vec![(members[0].member_id.clone(), None)],
    });
    // Answered once the group is empty, as Kafka's is: a DescribeGroups or DeleteGroups
    // after the last member's LeaveGroup finds it Empty.
    assert!(
        world.reply(last).is_none(),
        "waits for the empty generation's proposal"
    );
    world.commit_all();
    assert_eq!(
        world.reply(last),
        Some(Reply::Leave(vec![(members[0].member_id.clone(), None)]))
    );
    assert_eq!(world.group(&g).map(|(phase, ..)| phase), Some(Phase::Empty));
    world.advance(ms(300));
    assert!(world.group(&g).is_none());
    assert!(
        world
            .state
            .group(&GroupId(g))
            .is_some_and(|s| s.members.is_empty())
    );
}

fn heartbeat_as(
    world: &mut World,
    group: &str,
    joined: &JoinResult,
    instance: Option<&str>,
) -> Option<ResponseError> {
    let id = world.send(Request::Heartbeat {
        group: group.to_owned(),
        generation: joined.generation,
        member_id: joined.member_id.clone(),
        group_instance_id: instance.map(str::to_owned),
    });
    match world.reply(id) {
        Some(Reply::Heartbeat(error)) => error,
        other => panic!("expected a Heartbeat reply, got {other:?}"),
    }
}

#[test]
fn static_members_keep_their_instance_id_through_a_reload_and_a_rejoin_fences_the_old_id() {
    let mut world = World::new(config());
    let g = group();
    // A static member needs no MEMBER_ID_REQUIRED round: its instance id names it.
    let id = world.send(join_request(&g, "", Some("instance-a")));
    world.commit_all();
    let joined = join_reply(&mut world, id);
    assert_eq!(joined.error, None);
    assert_eq!(joined.members[0].1.as_deref(), Some("instance-a"));
    // The coordinator moves away and back: the group is loaded from the metadata state.
    world.fence_me();
    world.advance(ms(300));
    world.register_me();
    let described = world
        .machine
        .describe(world.now, &world.state, &g)
        .unwrap_or_else(|| panic!("{g} not described"));
    assert_eq!(described.members[0].1.as_deref(), Some("instance-a"));
    // The same instance restarts and joins without its member id, well within the old
    // session: it replaces the old member at once (it led, so the group rebalances).
    let again = world.send(join_request(&g, "", Some("instance-a")));
    world.commit_all();
    let rejoined = join_reply(&mut world, again);
    assert_eq!(rejoined.error, None);
    assert_ne!(rejoined.member_id, joined.member_id);
    assert_eq!(rejoined.generation, 2);
    assert_eq!(rejoined.members.len(), 1, "the old member id is gone");
    // The old process is fenced; without its instance id it is just unknown.
    assert_eq!(
        heartbeat_as(&mut world, &g, &joined, Some("instance-a")),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        heartbeat_as(&mut world, &g, &joined, None),
        Some(ResponseError::UnknownMemberId)
    );
    let stale = world.send(join_request(&g, &joined.member_id, Some("instance-a")));
    assert_eq!(
        join_reply(&mut world, stale).error,
        Some(ResponseError::FencedInstanceId)
    );
}

#[test]
fn a_static_follower_rejoining_a_stable_group_keeps_the_generation_and_its_assignment() {
    let mut world = World::new(config());
    let g = group();
    let leader = join_new(&mut world, &g, None);
    world.commit_all();
    let leader = join_reply(&mut world, leader);
    let follower = world.send(join_request(&g, "", Some("instance-b")));
    let again = rejoin(&mut world, &g, &leader.member_id);
    world.commit_all();
    let follower = join_reply(&mut world, follower);
    let leader = join_reply(&mut world, again);
    assert_eq!((leader.generation, follower.generation), (2, 2));
    let syncs = [
        sync(&mut world, &g, &leader),
        sync(&mut world, &g, &follower),
    ];
    world.commit_all();
    for id in syncs {
        assert_eq!(sync_reply(&mut world, id).error, None);
    }

    let restarted = world.send(join_request(&g, "", Some("instance-b")));
    world.commit_all();
    let restarted = join_reply(&mut world, restarted);
    assert_eq!(restarted.error, None);
    assert_eq!(restarted.generation, 2, "no rebalance");
    assert_eq!(restarted.leader, leader.member_id);
    assert_ne!(restarted.member_id, follower.member_id);
    assert_eq!(
        world.group(&g).map(|(phase, ..)| phase),
        Some(Phase::Stable)
    );
    // The metadata knows the new id (commits check it), not the old one.
    let stored = world
        .state
        .group(&GroupId(g.clone()))
        .map(|s| s.members.keys().map(|m| m.0.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(stored.contains(&restarted.member_id), "{stored:?}");
    assert!(!stored.contains(&follower.member_id), "{stored:?}");
    // It keeps the assignment it had.
    let synced = sync(&mut world, &g, &restarted);
    assert_eq!(
        sync_reply(&mut world, synced).assignment,
        Bytes::from(format!("{}-assigned", follower.member_id))
    );
    assert_eq!(
        heartbeat_as(&mut world, &g, &restarted, Some("instance-b")),
        None
    );
    assert_eq!(
        heartbeat_as(&mut world, &g, &follower, Some("instance-b")),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        world.machine.check_commit(
            world.now,
            &world.state,
            &g,
            (2, &follower.member_id, Some("instance-b"))
        ),
        Some(ResponseError::FencedInstanceId)
    );
    // An operator removes it by its instance id alone; the group rebalances without it.
    let leave = world.send(Request::Leave {
        group: g.clone(),
        members: vec![(String::new(), Some("instance-b".into()))],
    });
    match world.reply(leave) {
        Some(Reply::Leave(results)) => assert_eq!(results, vec![(String::new(), None)]),
        other => panic!("expected a LeaveGroup reply, got {other:?}"),
    }
    assert_eq!(
        world.group(&g).map(|(phase, ..)| phase),
        Some(Phase::PreparingRebalance)
    );
}

#[test]
fn a_coordinator_move_answers_waiting_requests_and_drops_the_group() {
    let mut world = World::new(Config {
        initial_rebalance_delay: ms(3_000),
        ..config()
    });
    let g = group();
    let waiting = join_new(&mut world, &g, None);
    world.fence_me();
    world.advance(ms(200));
    assert_eq!(
        join_reply(&mut world, waiting).error,
        Some(ResponseError::NotCoordinator)
    );
    assert!(world.group(&g).is_none());
    let refused = world.send(join_request(&g, "", None));
    assert_eq!(
        join_reply(&mut world, refused).error,
        Some(ResponseError::NotCoordinator)
    );
    world.advance(ms(5_000));
    assert!(
        world.pending.is_empty(),
        "nothing proposed for a group coordinated elsewhere"
    );
}

#[test]
fn a_generation_in_flight_when_the_coordinator_moves_is_answered_once_and_reloaded() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 1);
    let again = rejoin(&mut world, &g, &members[0].member_id);
    world.fence_me();
    let beat = world.send(Request::Heartbeat {
        group: g.clone(),
        generation: 1,
        member_id: members[0].member_id.clone(),
        group_instance_id: None,
    });
    assert_eq!(
        world.reply(beat),
        Some(Reply::Heartbeat(Some(ResponseError::NotCoordinator)))
    );
    assert_eq!(
        join_reply(&mut world, again).error,
        Some(ResponseError::NotCoordinator)
    );
    // The proposal still commits; the group, back here, is loaded at that generation.
    world.commit_all();
    world.register_me();
    let check = world
        .machine
        .check_commit(world.now, &world.state, &g, (2, "", None));
    assert_eq!(check, None);
    assert_eq!(
        world
            .group(&g)
            .map(|(phase, generation, _)| (phase, generation)),
        Some((Phase::CompletingRebalance, 2))
    );
}

#[test]
fn commits_are_refused_during_a_rebalance_and_groups_are_listed() {
    let mut world = World::new(config());
    let g = group();
    let members = stable_group(&mut world, &g, 2);
    let generation = members[0].generation;
    assert_eq!(
        world
            .machine
            .check_commit(world.now, &world.state, &g, (generation, "", None)),
        None
    );
    let _waiting = rejoin(&mut world, &g, &members[0].member_id);
    assert_eq!(
        world
            .machine
            .check_commit(world.now, &world.state, &g, (generation, "", None)),
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        world
            .machine
            .check_commit(world.now, &world.state, &g, (-1, "", None)),
        None
    );
    assert_eq!(
        world.machine.list(&world.state),
        [(g.clone(), "consumer".to_owned(), Phase::PreparingRebalance)]
    );
    world.fence_me();
    assert!(world.machine.list(&world.state).is_empty());
    assert!(
        world
            .machine
            .describe(world.now, &world.state, "ghost")
            .is_none()
    );
}
