//! CreateAcls, DescribeAcls, DeleteAcls: ACL bindings as metadata, in Kafka's codes.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::security::{
    AclBinding, AclFilter, AclOperation, AclPermission, PatternFilter, PatternType, ResourceType,
};
use switchyard_backend_api::{MetadataCommand, Outcome};

use crate::broker::Broker;
use crate::kafka::errors::{metadata_error, rejection_error};

/// Kafka's `ResourceType` code.
pub(crate) fn resource_code(resource: ResourceType) -> i8 {
    match resource {
        ResourceType::Topic => 2,
        ResourceType::Group => 3,
        ResourceType::Cluster => 4,
        ResourceType::TransactionalId => 5,
    }
}

/// A filter's resource type: `Ok(None)` for ANY.
fn resource_of(code: i8) -> Result<Option<ResourceType>, ()> {
    match code {
        1 => Ok(None),
        2 => Ok(Some(ResourceType::Topic)),
        3 => Ok(Some(ResourceType::Group)),
        4 => Ok(Some(ResourceType::Cluster)),
        5 => Ok(Some(ResourceType::TransactionalId)),
        _ => Err(()),
    }
}

pub(crate) fn pattern_code(pattern: PatternType) -> i8 {
    match pattern {
        PatternType::Literal => 3,
        PatternType::Prefixed => 4,
    }
}

fn pattern_filter_of(code: i8) -> Result<PatternFilter, ()> {
    match code {
        1 => Ok(PatternFilter::Any),
        2 => Ok(PatternFilter::Match),
        3 => Ok(PatternFilter::Exactly(PatternType::Literal)),
        4 => Ok(PatternFilter::Exactly(PatternType::Prefixed)),
        _ => Err(()),
    }
}

/// Kafka's `AclOperation` code.
pub(crate) fn operation_code(operation: AclOperation) -> i8 {
    match operation {
        AclOperation::All => 2,
        AclOperation::Read => 3,
        AclOperation::Write => 4,
        AclOperation::Create => 5,
        AclOperation::Delete => 6,
        AclOperation::Alter => 7,
        AclOperation::Describe => 8,
        AclOperation::ClusterAction => 9,
        AclOperation::DescribeConfigs => 10,
        AclOperation::AlterConfigs => 11,
        AclOperation::IdempotentWrite => 12,
    }
}

/// An operation code: `Ok(None)` for ANY.
fn operation_of(code: i8) -> Result<Option<AclOperation>, ()> {
    let operation = match code {
        1 => return Ok(None),
        2 => AclOperation::All,
        3 => AclOperation::Read,
        4 => AclOperation::Write,
        5 => AclOperation::Create,
        6 => AclOperation::Delete,
        7 => AclOperation::Alter,
        8 => AclOperation::Describe,
        9 => AclOperation::ClusterAction,
        10 => AclOperation::DescribeConfigs,
        11 => AclOperation::AlterConfigs,
        12 => AclOperation::IdempotentWrite,
        _ => return Err(()),
    };
    Ok(Some(operation))
}

pub(crate) fn permission_code(permission: AclPermission) -> i8 {
    match permission {
        AclPermission::Deny => 2,
        AclPermission::Allow => 3,
    }
}

fn permission_of(code: i8) -> Result<Option<AclPermission>, ()> {
    match code {
        1 => Ok(None),
        2 => Ok(Some(AclPermission::Deny)),
        3 => Ok(Some(AclPermission::Allow)),
        _ => Err(()),
    }
}

fn binding_of(creation: &AclCreation) -> Result<AclBinding, String> {
    let exact = |what: &str| format!("a binding needs one {what}, not ANY or UNKNOWN");
    Ok(AclBinding {
        resource_type: resource_of(creation.resource_type)
            .ok()
            .flatten()
            .ok_or_else(|| exact("resource type"))?,
        resource_name: creation.resource_name.to_string(),
        pattern_type: match pattern_filter_of(creation.resource_pattern_type) {
            Ok(PatternFilter::Exactly(pattern)) => pattern,
            _ => return Err(exact("pattern type (LITERAL or PREFIXED)")),
        },
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation: operation_of(creation.operation)
            .ok()
            .flatten()
            .ok_or_else(|| exact("operation"))?,
        permission: permission_of(creation.permission_type)
            .ok()
            .flatten()
            .ok_or_else(|| exact("permission"))?,
    })
}

fn filter_of(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, ()> {
    Ok(AclFilter {
        resource_type: resource_of(resource_type)?,
        resource_name: name.map(ToString::to_string),
        pattern: pattern_filter_of(pattern)?,
        principal: principal.map(ToString::to_string),
        host: host.map(ToString::to_string),
        operation: operation_of(operation)?,
        permission: permission_of(permission)?,
    })
}

/// The binding a DescribeAcls answer describes, if its codes are known.
pub(crate) fn binding_of_description(
    resource: &DescribeAclsResource,
    acl: &AclDescription,
) -> Option<AclBinding> {
    Some(AclBinding {
        resource_type: resource_of(resource.resource_type).ok().flatten()?,
        resource_name: resource.resource_name.to_string(),
        pattern_type: match pattern_filter_of(resource.pattern_type).ok()? {
            PatternFilter::Exactly(pattern) => pattern,
            _ => return None,
        },
        principal: acl.principal.to_string(),
        host: acl.host.to_string(),
        operation: operation_of(acl.operation).ok().flatten()?,
        permission: permission_of(acl.permission_type).ok().flatten()?,
    })
}

/// CreateAcls: one result per creation, in order.
pub(crate) async fn create(broker: &Broker, request: CreateAclsRequest) -> CreateAclsResponse {
    let mut results: Vec<Option<AclCreationResult>> = vec![None; request.creations.len()];
    let mut bindings = Vec::new();
    let mut positions = Vec::new();
    for (position, creation) in request.creations.iter().enumerate() {
        match binding_of(creation) {
            Ok(binding) => {
                bindings.push(binding);
                positions.push(position);
            }
            Err(message) => {
                results[position] = Some(
                    AclCreationResult::default()
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from(message))),
                );
            }
        }
    }
    if !bindings.is_empty() {
        let outcome = broker
            .propose(MetadataCommand::CreateAcls { acls: bindings })
            .await;
        for (index, position) in positions.iter().enumerate() {
            let result = match &outcome {
                Ok(Outcome::AclsCreated { results }) => match results.get(index) {
                    Some(Ok(())) => AclCreationResult::default(),
                    Some(Err(rejection)) => AclCreationResult::default()
                        .with_error_code(rejection_error(rejection).code())
                        .with_error_message(Some(StrBytes::from(rejection.to_string()))),
                    None => AclCreationResult::default()
                        .with_error_code(ResponseError::UnknownServerError.code()),
                },
                Ok(_) => AclCreationResult::default()
                    .with_error_code(ResponseError::UnknownServerError.code()),
                Err(e) => AclCreationResult::default()
                    .with_error_code(metadata_error(e).code())
                    .with_error_message(Some(StrBytes::from(e.to_string()))),
            };
            results[*position] = Some(result);
        }
    }
    CreateAclsResponse::default().with_results(results.into_iter().flatten().collect())
}

/// DescribeAcls: the bindings the filter matches, grouped by resource pattern.
pub(crate) fn describe(broker: &Broker, request: DescribeAclsRequest) -> DescribeAclsResponse {
    let filter = filter_of(
        request.resource_type_filter,
        request.resource_name_filter.as_ref(),
        request.pattern_type_filter,
        request.principal_filter.as_ref(),
        request.host_filter.as_ref(),
        request.operation,
        request.permission_type,
    );
    let Ok(filter) = filter else {
        return DescribeAclsResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_static_str("invalid ACL filter")));
    };
    let view = broker.metadata();
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for acl in view.state.acls().filter(|acl| filter.matches(acl)) {
        let description = AclDescription::default()
            .with_principal(StrBytes::from(acl.principal.clone()))
            .with_host(StrBytes::from(acl.host.clone()))
            .with_operation(operation_code(acl.operation))
            .with_permission_type(permission_code(acl.permission));
        let same = |r: &DescribeAclsResource| {
            r.resource_type == resource_code(acl.resource_type)
                && r.resource_name.as_str() == acl.resource_name
                && r.pattern_type == pattern_code(acl.pattern_type)
        };
        match resources.iter_mut().find(|r| same(r)) {
            Some(resource) => resource.acls.push(description),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(resource_code(acl.resource_type))
                    .with_resource_name(StrBytes::from(acl.resource_name.clone()))
                    .with_pattern_type(pattern_code(acl.pattern_type))
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

/// DeleteAcls: per filter, the bindings it removed.
pub(crate) async fn delete(broker: &Broker, request: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut filters = Vec::new();
    let mut results: Vec<Option<DeleteAclsFilterResult>> = vec![None; request.filters.len()];
    let mut positions = Vec::new();
    for (position, f) in request.filters.iter().enumerate() {
        match filter_of(
            f.resource_type_filter,
            f.resource_name_filter.as_ref(),
            f.pattern_type_filter,
            f.principal_filter.as_ref(),
            f.host_filter.as_ref(),
            f.operation,
            f.permission_type,
        ) {
            Ok(filter) => {
                filters.push(filter);
                positions.push(position);
            }
            Err(()) => {
                results[position] = Some(
                    DeleteAclsFilterResult::default()
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from_static_str("invalid ACL filter"))),
                );
            }
        }
    }
    if !filters.is_empty() {
        let outcome = broker
            .propose(MetadataCommand::DeleteAcls { filters })
            .await;
        for (index, position) in positions.iter().enumerate() {
            let result = match &outcome {
                Ok(Outcome::AclsDeleted { results }) => DeleteAclsFilterResult::default()
                    .with_matching_acls(
                        results
                            .get(index)
                            .into_iter()
                            .flatten()
                            .map(|acl| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(resource_code(acl.resource_type))
                                    .with_resource_name(StrBytes::from(acl.resource_name.clone()))
                                    .with_pattern_type(pattern_code(acl.pattern_type))
                                    .with_principal(StrBytes::from(acl.principal.clone()))
                                    .with_host(StrBytes::from(acl.host.clone()))
                                    .with_operation(operation_code(acl.operation))
                                    .with_permission_type(permission_code(acl.permission))
                            })
                            .collect(),
                    ),
                Ok(_) => DeleteAclsFilterResult::default()
                    .with_error_code(ResponseError::UnknownServerError.code()),
                Err(e) => DeleteAclsFilterResult::default()
                    .with_error_code(metadata_error(e).code())
                    .with_error_message(Some(StrBytes::from(e.to_string()))),
            };
            results[*position] = Some(result);
        }
    }
    DeleteAclsResponse::default().with_filter_results(results.into_iter().flatten().collect())
}
