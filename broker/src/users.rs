//! `switchyard user …`: SCRAM users through a running cluster's Kafka listener
//! (AlterUserScramCredentials, DescribeUserScramCredentials), authenticated with the cluster
//! secret. The password never leaves this process: it is salted and hashed here (PBKDF2),
//! and the broker stores only what verifies it.

use std::time::Duration;

use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::{Request, StrBytes};
use switchyard_backend_api::security::ScramMechanism;

use crate::kafka::client::PeerClient;
use crate::kafka::handlers::users::{mechanism_code, mechanism_of};
use crate::kafka::sasl::PeerCredentials;
use crate::kafka::sasl::scram::salted_password;
use crate::kafka::tls::TlsClient;

/// Why a user command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// No listener answered.
    #[error("no listener in {addrs} answered; last error: {last}")]
    Unreachable {
        /// The addresses tried.
        addrs: String,
        /// The last failure.
        last: String,
    },
    /// The cluster refused the change or the lookup.
    #[error("{user}: {message} (Kafka error {code})")]
    Refused {
        /// The user.
        user: String,
        /// Kafka's error code.
        code: i16,
        /// The broker's message.
        message: String,
    },
}

/// Where the cluster is and how to prove the right to administer it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Kafka listeners, tried in order.
    pub bootstrap: Vec<String>,
    /// The cluster secret, as the operator; `None` for a PLAINTEXT listener.
    pub credentials: Option<PeerCredentials>,
    /// TLS to the listeners, for SSL and SASL_SSL ones.
    pub tls: Option<TlsClient>,
    /// Deadline of each request.
    pub timeout: Duration,
}

impl Target {
    /// A client of the listener at `addr`, named `client_id`: with this target's credentials
    /// on SASL listeners and TLS where it has some, PLAINTEXT listeners accepted.
    pub(crate) fn client(&self, addr: &str, client_id: &str) -> PeerClient {
        PeerClient::new(addr.to_owned(), client_id.to_owned(), self.timeout)
            .with_credentials(self.credentials.clone())
            .with_tls(self.tls.clone())
            .plaintext_ok()
    }

    /// Send `request` to the first listener that answers.
    pub(crate) async fn call<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, UserError> {
        let mut last = String::from("no address given");
        for addr in &self.bootstrap {
            let mut client = self.client(addr, "switchyard-user");
            match client.call(request, version).await {
                Ok(response) => return Ok(response),
                Err(e) => {
                    last = format!("{addr}: {}", e.explained(self.credentials.is_some()));
                }
            }
        }
        Err(UserError::Unreachable {
            addrs: self.bootstrap.join(","),
            last,
        })
    }
}

fn check(response: AlterUserScramCredentialsResponse) -> Result<(), UserError> {
    match response.results.into_iter().find(|r| r.error_code != 0) {
        Some(failed) => Err(UserError::Refused {
            user: failed.user.to_string(),
            code: failed.error_code,
            message: failed
                .error_message
                .map_or_else(String::new, |m| m.to_string()),
        }),
        None => Ok(()),
    }
}

/// Create `user`, or replace its `mechanism` credential, with `password`.
pub async fn upsert(
    target: &Target,
    user: &str,
    mechanism: ScramMechanism,
    iterations: u32,
    password: &[u8],
) -> Result<(), UserError> {
    let mut salt = vec![0u8; 32];
    // The operating system's generator failing is not something to carry on without.
    getrandom::fill(&mut salt).unwrap_or_else(|e| panic!("the OS random generator failed: {e}"));
    let salted = salted_password(mechanism, password, &salt, iterations);
    let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from(user.to_owned()))
            .with_mechanism(mechanism_code(mechanism))
            .with_iterations(i32::try_from(iterations).unwrap_or(i32::MAX))
            .with_salt(salt.into())
            .with_salted_password(salted.into()),
    ]);
    check(target.call(&request, 0).await?)
}

/// Remove `user`'s `mechanism` credential.
pub async fn delete(
    target: &Target,
    user: &str,
    mechanism: ScramMechanism,
) -> Result<(), UserError> {
    let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        ScramCredentialDeletion::default()
            .with_name(StrBytes::from(user.to_owned()))
            .with_mechanism(mechanism_code(mechanism)),
    ]);
    check(target.call(&request, 0).await?)
}

/// One user's credentials: mechanism and iterations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentials {
    /// The user.
    pub user: String,
    /// Mechanism and iterations of each credential.
    pub credentials: Vec<(ScramMechanism, i32)>,
}

/// Every user with a credential.
pub async fn list(target: &Target) -> Result<Vec<UserCredentials>, UserError> {
    let request = DescribeUserScramCredentialsRequest::default().with_users(None::<Vec<UserName>>);
    let response: DescribeUserScramCredentialsResponse = target.call(&request, 0).await?;
    if response.error_code != 0 {
        return Err(UserError::Refused {
            user: "*".into(),
            code: response.error_code,
            message: response
                .error_message
                .map_or_else(String::new, |m| m.to_string()),
        });
    }
    Ok(response
        .results
        .into_iter()
        .map(|result| UserCredentials {
            user: result.user.to_string(),
            credentials: result
                .credential_infos
                .iter()
                .filter_map(|info| mechanism_of(info.mechanism).map(|m| (m, info.iterations)))
                .collect(),
        })
        .collect())
}
