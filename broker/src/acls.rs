//! `switchyard acl …`: ACL bindings through a running cluster's Kafka listener (CreateAcls,
//! DescribeAcls, DeleteAcls), authenticated with the cluster secret as the operator, who is
//! never refused.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::security::{
    AclBinding, AclOperation, AclPermission, PatternType, ResourceType,
};

use crate::kafka::handlers::acls::{
    binding_of_description, operation_code, pattern_code, permission_code, resource_code,
};
use crate::users::{Target, UserError};

/// Kafka's codes for "any" in a filter.
const ANY: i8 = 1;

/// Kafka's names of the operations.
const OPERATIONS: [(&str, AclOperation); 11] = [
    ("ALL", AclOperation::All),
    ("READ", AclOperation::Read),
    ("WRITE", AclOperation::Write),
    ("CREATE", AclOperation::Create),
    ("DELETE", AclOperation::Delete),
    ("ALTER", AclOperation::Alter),
    ("DESCRIBE", AclOperation::Describe),
    ("CLUSTER_ACTION", AclOperation::ClusterAction),
    ("DESCRIBE_CONFIGS", AclOperation::DescribeConfigs),
    ("ALTER_CONFIGS", AclOperation::AlterConfigs),
    ("IDEMPOTENT_WRITE", AclOperation::IdempotentWrite),
];

/// The operation Kafka names `name` (`READ`, `WRITE`, `ALL`, …; any case).
pub fn operation(name: &str) -> Option<AclOperation> {
    OPERATIONS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, operation)| *operation)
}

fn operation_name(operation: AclOperation) -> &'static str {
    OPERATIONS
        .iter()
        .find(|(_, known)| *known == operation)
        .map_or("UNKNOWN", |(name, _)| name)
}

fn refused(code: i16, message: Option<&StrBytes>) -> UserError {
    UserError::Refused {
        user: "acl".into(),
        code,
        message: message.map_or_else(String::new, ToString::to_string),
    }
}

/// Add `binding`.
pub async fn create(target: &Target, binding: &AclBinding) -> Result<(), UserError> {
    let request = CreateAclsRequest::default().with_creations(vec![
        AclCreation::default()
            .with_resource_type(resource_code(binding.resource_type))
            .with_resource_name(StrBytes::from(binding.resource_name.clone()))
            .with_resource_pattern_type(pattern_code(binding.pattern_type))
            .with_principal(StrBytes::from(binding.principal.clone()))
            .with_host(StrBytes::from(binding.host.clone()))
            .with_operation(operation_code(binding.operation))
            .with_permission_type(permission_code(binding.permission)),
    ]);
    let response = target.call(&request, 3).await?;
    match response.results.iter().find(|r| r.error_code != 0) {
        Some(failed) => Err(refused(failed.error_code, failed.error_message.as_ref())),
        None => Ok(()),
    }
}

/// Every binding, or those of `principal`.
pub async fn list(target: &Target, principal: Option<&str>) -> Result<Vec<AclBinding>, UserError> {
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(ANY)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(ANY)
        .with_principal_filter(principal.map(|p| StrBytes::from(p.to_owned())))
        .with_host_filter(None)
        .with_operation(ANY)
        .with_permission_type(ANY);
    let response = target.call(&request, 3).await?;
    if response.error_code != 0 {
        return Err(refused(
            response.error_code,
            response.error_message.as_ref(),
        ));
    }
    Ok(response
        .resources
        .iter()
        .flat_map(|resource| {
            resource
                .acls
                .iter()
                .filter_map(|acl| binding_of_description(resource, acl))
        })
        .collect())
}

/// Remove `binding` exactly; returns how many bindings were removed (0 or 1).
pub async fn delete(target: &Target, binding: &AclBinding) -> Result<usize, UserError> {
    let request = DeleteAclsRequest::default().with_filters(vec![
        DeleteAclsFilter::default()
            .with_resource_type_filter(resource_code(binding.resource_type))
            .with_resource_name_filter(Some(StrBytes::from(binding.resource_name.clone())))
            .with_pattern_type_filter(pattern_code(binding.pattern_type))
            .with_principal_filter(Some(StrBytes::from(binding.principal.clone())))
            .with_host_filter(Some(StrBytes::from(binding.host.clone())))
            .with_operation(operation_code(binding.operation))
            .with_permission_type(permission_code(binding.permission)),
    ]);
    let response = target.call(&request, 3).await?;
    let Some(result) = response.filter_results.first() else {
        return Ok(0);
    };
    if result.error_code != 0 {
        return Err(refused(result.error_code, result.error_message.as_ref()));
    }
    Ok(result.matching_acls.len())
}

/// One line per binding, as `switchyard acl list` prints them.
pub fn describe(binding: &AclBinding) -> String {
    let resource = match binding.resource_type {
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::Cluster => "cluster",
        ResourceType::TransactionalId => "transactional-id",
    };
    let pattern = match binding.pattern_type {
        PatternType::Literal => "",
        PatternType::Prefixed => " (prefix)",
    };
    let permission = match binding.permission {
        AclPermission::Allow => "ALLOW",
        AclPermission::Deny => "DENY",
    };
    format!(
        "{permission} {} {} on {resource} {}{pattern} from host {}",
        binding.principal,
        operation_name(binding.operation),
        binding.resource_name,
        binding.host
    )
}
