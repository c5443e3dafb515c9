use super::*;
use crate::MetadataCommand;

fn credential(iterations: u32) -> ScramCredential {
    ScramCredential {
        salt: vec![7; 16],
        stored_key: vec![1; 32],
        server_key: vec![2; 32],
        iterations,
    }
}

fn upsert(user: &str, iterations: u32) -> ScramUpsertion {
    ScramUpsertion {
        user: user.into(),
        mechanism: ScramMechanism::Sha256,
        credential: credential(iterations),
    }
}

fn acl(name: &str, pattern_type: PatternType, permission: AclPermission) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::Topic,
        resource_name: name.into(),
        pattern_type,
        principal: "User:alice".into(),
        host: "*".into(),
        operation: AclOperation::Read,
        permission,
    }
}

fn altered(outcome: Result<Outcome, Rejection>) -> Vec<(String, Result<(), Rejection>)> {
    match outcome {
        Ok(Outcome::ScramCredentialsAltered { results }) => results,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_users_alterations_apply_together_or_not_at_all() {
    let mut state = MetadataState::new();
    let results = altered(state.apply(&MetadataCommand::AlterScramCredentials {
        upsertions: vec![upsert("alice", 4096), upsert("bob", 100)],
        deletions: vec![],
    }));
    assert_eq!(results[0], ("alice".into(), Ok(())));
    assert!(matches!(
        &results[1],
        (user, Err(Rejection::UnacceptableCredential { .. })) if user == "bob"
    ));
    assert!(
        state
            .scram_credential("alice", ScramMechanism::Sha256)
            .is_some()
    );
    assert!(
        state
            .scram_credential("bob", ScramMechanism::Sha256)
            .is_none()
    );

    // Deleting alice's missing SHA-512 credential fails her whole request: her new SHA-256
    // credential is not stored either.
    let results = altered(state.apply(&MetadataCommand::AlterScramCredentials {
        upsertions: vec![upsert("alice", 8192)],
        deletions: vec![ScramDeletion {
            user: "alice".into(),
            mechanism: ScramMechanism::Sha512,
        }],
    }));
    assert!(
        matches!(
            &results[..],
            [(_, Err(Rejection::UnknownScramCredential { .. }))]
        ),
        "{results:?}"
    );
    assert_eq!(
        state
            .scram_credential("alice", ScramMechanism::Sha256)
            .map(|c| c.iterations),
        Some(4096)
    );

    // One mechanism twice in a request.
    let results = altered(state.apply(&MetadataCommand::AlterScramCredentials {
        upsertions: vec![upsert("alice", 8192)],
        deletions: vec![ScramDeletion {
            user: "alice".into(),
            mechanism: ScramMechanism::Sha256,
        }],
    }));
    assert!(
        matches!(
            &results[..],
            [(_, Err(Rejection::DuplicateScramMechanism { .. }))]
        ),
        "{results:?}"
    );
}

#[test]
fn acls_are_added_once_and_deleted_by_filter() {
    let mut state = MetadataState::new();
    let allow = acl("orders", PatternType::Literal, AclPermission::Allow);
    let prefixed = acl("ord", PatternType::Prefixed, AclPermission::Deny);
    let bad = acl("*", PatternType::Prefixed, AclPermission::Allow);
    let command = MetadataCommand::CreateAcls {
        acls: vec![allow.clone(), allow.clone(), prefixed.clone(), bad],
    };
    let outcome = state.apply(&command);
    let Ok(Outcome::AclsCreated { results }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(results[..3].iter().all(Result::is_ok));
    assert!(matches!(results[3], Err(Rejection::InvalidAcl { .. })));
    assert_eq!(state.acls().count(), 2);

    let matching = AclFilter {
        resource_type: Some(ResourceType::Topic),
        resource_name: Some("orders".into()),
        pattern: PatternFilter::Match,
        principal: None,
        host: None,
        operation: None,
        permission: Some(AclPermission::Deny),
    };
    let outcome = state.apply(&MetadataCommand::DeleteAcls {
        filters: vec![matching],
    });
    assert_eq!(
        outcome,
        Ok(Outcome::AclsDeleted {
            results: vec![vec![prefixed]]
        })
    );
    assert_eq!(state.acls().cloned().collect::<Vec<_>>(), vec![allow]);
}

#[test]
fn operations_imply_describe_as_kafka_does() {
    assert!(AclOperation::Write.implies(AclOperation::Describe));
    assert!(AclOperation::All.implies(AclOperation::Delete));
    assert!(AclOperation::AlterConfigs.implies(AclOperation::DescribeConfigs));
    assert!(!AclOperation::Describe.implies(AclOperation::Read));
    assert!(!AclOperation::Read.implies(AclOperation::Write));
}

/// A state written before the security part existed (format version 2) still decodes, with
/// no credentials and no ACLs; a version-3 state round-trips with them.
#[test]
fn states_of_format_version_2_decode_without_security() {
    use serde::Serialize;

    let mut state = MetadataState::new();
    state
        .apply(&MetadataCommand::InitCluster {
            cluster_id: crate::ClusterId("old".into()),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // What a version-2 build wrote: the state's first seven fields.
    #[derive(Serialize)]
    struct Version2<'a>(
        &'a Option<crate::ClusterId>,
        &'a OrdMap<crate::BrokerId, crate::Broker>,
        &'a OrdMap<String, crate::Topic>,
        &'a OrdMap<crate::TopicId, String>,
        &'a OrdMap<crate::GroupId, crate::Group>,
        &'a OrdMap<crate::state::OffsetKey, crate::CommittedOffset>,
        i64,
    );
    let old = Version2(
        &state.cluster_id,
        &state.brokers,
        &state.topics,
        &state.topic_names,
        &state.groups,
        &state.offsets,
        state.next_producer_id,
    );
    let bytes = postcard::to_extend(&old, vec![2]).unwrap_or_else(|e| panic!("{e}"));
    let decoded: MetadataState = crate::codec::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded, state);

    state
        .apply(&MetadataCommand::CreateAcls {
            acls: vec![acl("orders", PatternType::Literal, AclPermission::Allow)],
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = crate::codec::encode(&state).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bytes[0], crate::codec::FORMAT_VERSION);
    let decoded: MetadataState = crate::codec::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded, state);
    assert_eq!(decoded.acls().count(), 1);
}

#[test]
fn a_deny_beats_an_allow_and_an_unprotected_resource_follows_the_default() {
    let mut state = MetadataState::new();
    let binding = |name: &str, pattern, principal: &str, operation, permission| AclBinding {
        resource_type: ResourceType::Topic,
        resource_name: name.into(),
        pattern_type: pattern,
        principal: principal.into(),
        host: "*".into(),
        operation,
        permission,
    };
    let acls = vec![
        binding(
            "orders",
            PatternType::Literal,
            "User:alice",
            AclOperation::Write,
            AclPermission::Allow,
        ),
        binding(
            "ord",
            PatternType::Prefixed,
            "User:*",
            AclOperation::Read,
            AclPermission::Allow,
        ),
        binding(
            "orders-secret",
            PatternType::Literal,
            "User:alice",
            AclOperation::All,
            AclPermission::Deny,
        ),
    ];
    if let Err(e) = state.apply(&MetadataCommand::CreateAcls { acls }) {
        panic!("{e}");
    }
    let allows = |principal: &str, operation, name: &str, open: bool| {
        state.acl_allows(
            principal,
            "10.0.0.1",
            operation,
            ResourceType::Topic,
            name,
            open,
        )
    };
    assert!(allows("User:alice", AclOperation::Write, "orders", false));
    // Write implies Describe; Read comes from the prefixed wildcard-principal binding.
    assert!(allows(
        "User:alice",
        AclOperation::Describe,
        "orders",
        false
    ));
    assert!(allows("User:bob", AclOperation::Read, "orders", false));
    assert!(!allows("User:bob", AclOperation::Write, "orders", false));
    // The deny on orders-secret beats the prefixed allow.
    assert!(!allows(
        "User:alice",
        AclOperation::Read,
        "orders-secret",
        false
    ));
    assert!(allows(
        "User:bob",
        AclOperation::Read,
        "orders-secret",
        false
    ));
    // A topic no binding covers is open only when the default says so.
    assert!(!allows("User:bob", AclOperation::Read, "payments", false));
    assert!(allows("User:bob", AclOperation::Read, "payments", true));
    // Host-specific bindings match only that host.
    let mut hosted = MetadataState::new();
    let mut acl = binding(
        "h",
        PatternType::Literal,
        "User:bob",
        AclOperation::Read,
        AclPermission::Allow,
    );
    acl.host = "10.0.0.2".into();
    if let Err(e) = hosted.apply(&MetadataCommand::CreateAcls { acls: vec![acl] }) {
        panic!("{e}");
    }
    assert!(!hosted.acl_allows(
        "User:bob",
        "10.0.0.1",
        AclOperation::Read,
        ResourceType::Topic,
        "h",
        true
    ));
    assert!(hosted.acl_allows(
        "User:bob",
        "10.0.0.2",
        AclOperation::Read,
        ResourceType::Topic,
        "h",
        false
    ));
}
