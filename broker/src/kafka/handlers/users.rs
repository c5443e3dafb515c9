//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM credentials as
//! metadata. A client sends the salt and the salted password, never the password; the broker
//! derives and stores `StoredKey` and `ServerKey` only.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::security::{ScramDeletion, ScramMechanism, ScramUpsertion};
use switchyard_backend_api::{MetadataCommand, Outcome};

use crate::broker::Broker;
use crate::kafka::errors::{metadata_error, rejection_error};
use crate::kafka::sasl::scram;

/// Kafka's code for a SCRAM mechanism (`ScramMechanism` in the Java client).
pub(crate) fn mechanism_code(mechanism: ScramMechanism) -> i8 {
    match mechanism {
        ScramMechanism::Sha256 => 1,
        ScramMechanism::Sha512 => 2,
    }
}

/// The mechanism Kafka's code names.
pub(crate) fn mechanism_of(code: i8) -> Option<ScramMechanism> {
    match code {
        1 => Some(ScramMechanism::Sha256),
        2 => Some(ScramMechanism::Sha512),
        _ => None,
    }
}

fn user_result(
    user: &str,
    error: Option<(ResponseError, String)>,
) -> DescribeUserScramCredentialsResult {
    let (code, message) = error.map_or((0, None), |(e, m)| (e.code(), Some(StrBytes::from(m))));
    DescribeUserScramCredentialsResult::default()
        .with_user(StrBytes::from(user.to_owned()))
        .with_error_code(code)
        .with_error_message(message)
}

/// DescribeUserScramCredentials: every user with a credential, or the ones asked for.
pub(crate) fn describe(
    broker: &Broker,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let view = broker.metadata();
    let state = &view.state;
    let wanted: Vec<String> = match request.users {
        Some(users) if !users.is_empty() => users
            .into_iter()
            .map(|u| u.name.as_str().to_owned())
            .collect(),
        _ => state
            .scram_credentials()
            .map(|(user, _, _)| user.to_owned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let mut results = Vec::with_capacity(wanted.len());
    for (index, user) in wanted.iter().enumerate() {
        if wanted[..index].contains(user) {
            continue;
        }
        if wanted[index + 1..].contains(user) {
            results.push(user_result(
                user,
                Some((
                    ResponseError::DuplicateResource,
                    format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}"),
                )),
            ));
            continue;
        }
        let infos: Vec<CredentialInfo> = state
            .scram_credentials()
            .filter(|(name, _, _)| name == user)
            .map(|(_, mechanism, credential)| {
                CredentialInfo::default()
                    .with_mechanism(mechanism_code(mechanism))
                    .with_iterations(i32::try_from(credential.iterations).unwrap_or(i32::MAX))
            })
            .collect();
        if infos.is_empty() {
            results.push(user_result(
                user,
                Some((
                    ResponseError::ResourceNotFound,
                    format!("Attempt to describe a user credential that does not exist: {user}"),
                )),
            ));
        } else {
            results.push(user_result(user, None).with_credential_infos(infos));
        }
    }
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// AlterUserScramCredentials: per user, all its deletions and upsertions, or none.
pub(crate) async fn alter(
    broker: &Broker,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Refusals found before proposing, per user (the first one wins).
    let mut refused: Vec<(String, ResponseError, String)> = Vec::new();
    let mut refuse = |user: &str, error: ResponseError, message: String| {
        if !refused.iter().any(|(u, _, _)| u == user) {
            refused.push((user.to_owned(), error, message));
        }
    };
    let mut deletions = Vec::new();
    for deletion in &request.deletions {
        let user = deletion.name.as_str();
        match mechanism_of(deletion.mechanism) {
            Some(mechanism) if !user.is_empty() => deletions.push(ScramDeletion {
                user: user.to_owned(),
                mechanism,
            }),
            Some(_) => refuse(
                user,
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            ),
            None => refuse(
                user,
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism".into(),
            ),
        }
    }
    let mut upsertions = Vec::new();
    for upsertion in &request.upsertions {
        let user = upsertion.name.as_str();
        let Some(mechanism) = mechanism_of(upsertion.mechanism) else {
            refuse(
                user,
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism".into(),
            );
            continue;
        };
        let Ok(iterations) = u32::try_from(upsertion.iterations) else {
            refuse(
                user,
                ResponseError::UnacceptableCredential,
                "Iterations must be positive".into(),
            );
            continue;
        };
        if upsertion.salted_password.len() != mechanism.key_len() {
            refuse(
                user,
                ResponseError::UnacceptableCredential,
                format!(
                    "A {mechanism} salted password has {} bytes",
                    mechanism.key_len()
                ),
            );
            continue;
        }
        upsertions.push(ScramUpsertion {
            user: user.to_owned(),
            mechanism,
            credential: scram::credential(
                mechanism,
                &upsertion.salted_password,
                &upsertion.salt,
                iterations,
            ),
        });
    }
    let refused_users: Vec<String> = refused.iter().map(|(u, _, _)| u.clone()).collect();
    deletions.retain(|d| !refused_users.contains(&d.user));
    upsertions.retain(|u| !refused_users.contains(&u.user));

    let mut results: Vec<AlterUserScramCredentialsResult> = refused
        .into_iter()
        .map(|(user, error, message)| {
            AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from(user))
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from(message)))
        })
        .collect();
    if !deletions.is_empty() || !upsertions.is_empty() {
        let users: Vec<String> = deletions
            .iter()
            .map(|d| d.user.clone())
            .chain(upsertions.iter().map(|u| u.user.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let command = MetadataCommand::AlterScramCredentials {
            upsertions,
            deletions,
        };
        match broker.propose(command).await {
            Ok(Outcome::ScramCredentialsAltered { results: applied }) => {
                results.extend(applied.into_iter().map(|(user, result)| {
                    let (code, message) = match result {
                        Ok(()) => (0, None),
                        Err(rejection) => (
                            rejection_error(&rejection).code(),
                            Some(StrBytes::from(rejection.to_string())),
                        ),
                    };
                    AlterUserScramCredentialsResult::default()
                        .with_user(StrBytes::from(user))
                        .with_error_code(code)
                        .with_error_message(message)
                }));
            }
            outcome => {
                let (code, message) = match outcome {
                    Err(e) => (metadata_error(&e).code(), e.to_string()),
                    Ok(other) => (
                        ResponseError::UnknownServerError.code(),
                        format!("unexpected outcome {other:?}"),
                    ),
                };
                results.extend(users.into_iter().map(|user| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(StrBytes::from(user))
                        .with_error_code(code)
                        .with_error_message(Some(StrBytes::from(message.clone())))
                }));
            }
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}
