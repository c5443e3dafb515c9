//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups, ListGroups,
//! DeleteGroups: translation between the wire and the [group coordinator](crate::group).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId as KBrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId as KGroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};

use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::group::{JoinRequest, SyncRequest};
use crate::kafka::dispatch::Client;
use crate::kafka::handlers::kstr;

/// Key type of a consumer group in FindCoordinator.
const GROUP_KEY: i8 = 0;
/// FindCoordinator key type of a transactional id.
const TRANSACTION_KEY: i8 = 1;

fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

pub(crate) fn find_coordinator(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // Groups and transactional ids are served once registered, each by the live broker
    // `MetadataState::group_coordinator` picks.
    let view = broker.metadata();
    let answer = |key: StrBytes| {
        let found = (matches!(request.key_type, GROUP_KEY | TRANSACTION_KEY)
            && broker.is_registered())
        .then(|| view.state.group_coordinator(key.as_str()))
        .flatten()
        .and_then(|b| Some((b.id, client.endpoint(b)?)));
        let coordinator = Coordinator::default().with_key(key);
        // Share groups (KIP-932) are not served.
        if request.key_type > TRANSACTION_KEY {
            return coordinator
                .with_node_id(KBrokerId(-1))
                .with_host(kstr(""))
                .with_port(-1)
                .with_error_code(ResponseError::InvalidRequest.code());
        }
        match found {
            Some((id, (host, port))) => coordinator
                .with_node_id(KBrokerId(id.0))
                .with_host(kstr(host.to_owned()))
                .with_port(i32::from(port)),
            None => coordinator
                .with_node_id(KBrokerId(-1))
                .with_host(kstr(""))
                .with_port(-1)
                .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
        }
    };
    if version >= 4 {
        FindCoordinatorResponse::default()
            .with_coordinators(request.coordinator_keys.into_iter().map(answer).collect())
    } else {
        let c = answer(request.key);
        FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port)
    }
}

pub(crate) async fn join(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    if let Some(error) = broker.coordination_error(request.group_id.0.as_str()) {
        return JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id);
    }
    let rebalance_timeout_ms = if version == 0 {
        request.session_timeout_ms
    } else {
        request.rebalance_timeout_ms
    };
    let result = broker
        .groups()
        .join(JoinRequest {
            group: request.group_id.0.as_str().to_owned(),
            member_id: request.member_id.as_str().to_owned(),
            group_instance_id: request.group_instance_id.map(|i| i.as_str().to_owned()),
            client_id: client.id.clone(),
            client_host: client.host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: request.protocol_type.as_str().to_owned(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.as_str().to_owned(), p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
        })
        .await;
    JoinGroupResponse::default()
        .with_error_code(code(result.error))
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.map(kstr))
        .with_protocol_name(result.protocol.map(kstr))
        .with_leader(kstr(result.leader))
        .with_member_id(kstr(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(kstr(id))
                        .with_group_instance_id(instance.map(kstr))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

pub(crate) async fn sync(
    broker: &Broker,
    _version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    if let Some(error) = broker.coordination_error(request.group_id.0.as_str()) {
        return SyncGroupResponse::default().with_error_code(error.code());
    }
    let result = broker
        .groups()
        .sync(SyncRequest {
            group: request.group_id.0.as_str().to_owned(),
            generation: request.generation_id,
            member_id: request.member_id.as_str().to_owned(),
            group_instance_id: request.group_instance_id.map(|i| i.as_str().to_owned()),
            protocol_type: request.protocol_type.map(|t| t.as_str().to_owned()),
            protocol: request.protocol_name.map(|p| p.as_str().to_owned()),
            assignments: request
                .assignments
                .into_iter()
                .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
                .collect(),
        })
        .await;
    SyncGroupResponse::default()
        .with_error_code(code(result.error))
        .with_protocol_type(result.protocol_type.map(kstr))
        .with_protocol_name(result.protocol.map(kstr))
        .with_assignment(result.assignment)
}

pub(crate) async fn heartbeat(
    broker: &Broker,
    _version: i16,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    if let Some(error) = broker.coordination_error(request.group_id.0.as_str()) {
        return HeartbeatResponse::default().with_error_code(error.code());
    }
    let error = broker
        .groups()
        .heartbeat(
            request.group_id.0.as_str(),
            request.generation_id,
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
        )
        .await;
    HeartbeatResponse::default().with_error_code(code(error))
}

pub(crate) async fn leave(
    broker: &Broker,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if let Some(error) = broker.coordination_error(request.group_id.0.as_str()) {
        return LeaveGroupResponse::default().with_error_code(error.code());
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_owned(),
                    m.group_instance_id.as_ref().map(|i| i.as_str().to_owned()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.as_str().to_owned(), None)]
    };
    let instances: Vec<Option<String>> = members.iter().map(|(_, i)| i.clone()).collect();
    let results = broker
        .groups()
        .leave(request.group_id.0.as_str(), members)
        .await;
    if version >= 3 {
        LeaveGroupResponse::default().with_members(
            results
                .into_iter()
                .zip(instances)
                .map(|((id, error), instance)| {
                    MemberResponse::default()
                        .with_member_id(kstr(id))
                        .with_group_instance_id(instance.map(kstr))
                        .with_error_code(code(error))
                })
                .collect(),
        )
    } else {
        let error = results.into_iter().find_map(|(_, e)| e);
        LeaveGroupResponse::default().with_error_code(code(error))
    }
}

/// DescribeGroups, versions 0–6. From version 6 (KIP-1043) a group that does not exist is
/// GROUP_ID_NOT_FOUND (still in state `Dead`), and errors carry a message.
pub(crate) async fn describe(
    broker: &Broker,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    for id in request.groups {
        let group = DescribedGroup::default().with_group_id(KGroupId(id.0.clone()));
        let failed = |group: DescribedGroup, error: ResponseError, message: String| {
            let group = group.with_error_code(error.code());
            if version >= 6 {
                group.with_error_message(Some(kstr(message)))
            } else {
                group
            }
        };
        if let Some(error) = broker.coordination_error(id.0.as_str()) {
            let message = format!("broker {} does not coordinate group {}", broker.id(), id.0);
            groups.push(failed(group, error, message));
            continue;
        }
        let described = broker.groups().describe(id.0.as_str());
        groups.push(match described {
            None if version >= 6 => failed(
                group.with_group_state(kstr("Dead")),
                ResponseError::GroupIdNotFound,
                format!("group {} not found", id.0),
            ),
            None => group.with_group_state(kstr("Dead")),
            Some(d) => group
                .with_group_state(kstr(d.phase.as_str()))
                .with_protocol_type(kstr(d.protocol_type))
                .with_protocol_data(kstr(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|(member, instance, client, host, metadata, assignment)| {
                            DescribedGroupMember::default()
                                .with_member_id(kstr(member))
                                .with_group_instance_id(instance.map(kstr))
                                .with_client_id(kstr(client))
                                .with_client_host(kstr(host))
                                .with_member_metadata(metadata)
                                .with_member_assignment(assignment)
                        })
                        .collect(),
                ),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

/// ListGroups, versions 0–5: filtered by state (v4, KIP-518) and by type (v5, KIP-848; every
/// group here is a `classic` one).
pub(crate) async fn list(
    broker: &Broker,
    _version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let wanted = |filter: &[StrBytes], value: &str| {
        filter.is_empty()
            || filter
                .iter()
                .any(|f| f.as_str().eq_ignore_ascii_case(value))
    };
    if !wanted(&request.types_filter, "classic") {
        return ListGroupsResponse::default();
    }
    let groups = broker
        .groups()
        .list()
        .into_iter()
        .filter(|(_, _, phase)| wanted(&request.states_filter, phase.as_str()))
        .map(|(id, protocol_type, phase)| {
            ListedGroup::default()
                .with_group_id(KGroupId(kstr(id)))
                .with_protocol_type(kstr(protocol_type))
                .with_group_state(kstr(phase.as_str()))
                .with_group_type(kstr("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups, versions 0–2: each group deleted by its coordinator, if it is empty, with its
/// committed offsets.
pub(crate) async fn delete(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group in request.groups_names {
        let error = broker.groups().delete(group.as_str()).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group)
                .with_error_code(error.map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
