//! Security metadata: SCRAM credentials and access-control entries. Both are cluster state —
//! every node authenticates and authorizes from the same replicated copy — so they live in
//! [`MetadataState`] and change only through [`MetadataCommand`]s, with the backend's
//! declared guarantees.
//!
//! Nothing here knows Kafka's wire format: the broker maps Kafka's resource types, operations
//! and error codes onto these types.
//!
//! [`MetadataCommand`]: crate::MetadataCommand

use std::fmt;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::command::Outcome;
use crate::error::Rejection;
use crate::state::MetadataState;

/// Fewest PBKDF2 iterations a stored SCRAM credential may have (Kafka's minimum).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations a stored SCRAM credential may have (Kafka's maximum).
pub const MAX_SCRAM_ITERATIONS: u32 = 16384;
/// Longest user name accepted, in bytes.
pub const MAX_USER_NAME_LEN: usize = 255;

/// A SCRAM mechanism (RFC 5802 with the hash of RFC 7677 or SHA-512).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// The SASL name, e.g. `SCRAM-SHA-256`.
    pub fn sasl_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Length in bytes of this mechanism's hash (and so of its keys).
    pub fn key_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sasl_name())
    }
}

/// What the server keeps of a SCRAM password: never the password, only what verifies a proof
/// of it (RFC 5802 §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The salt the password was hashed with.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

/// One credential to store (replacing the user's credential of that mechanism).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramUpsertion {
    /// The user.
    pub user: String,
    /// The mechanism.
    pub mechanism: ScramMechanism,
    /// The credential.
    pub credential: ScramCredential,
}

/// One credential to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramDeletion {
    /// The user.
    pub user: String,
    /// The mechanism.
    pub mechanism: ScramMechanism,
}

/// The kinds of resource an ACL protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster (its one resource is named `kafka-cluster`).
    Cluster,
    /// A transactional id.
    TransactionalId,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The name exactly, or every resource when the name is `*`.
    Literal,
    /// Every resource whose name starts with the name.
    Prefixed,
}

/// What an ACL allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AclOperation {
    /// Every operation.
    All,
    /// Read.
    Read,
    /// Write.
    Write,
    /// Create.
    Create,
    /// Delete.
    Delete,
    /// Alter.
    Alter,
    /// Describe.
    Describe,
    /// Inter-broker actions.
    ClusterAction,
    /// Describe configurations.
    DescribeConfigs,
    /// Alter configurations.
    AlterConfigs,
    /// Idempotent produce.
    IdempotentWrite,
}

impl AclOperation {
    /// Whether an ACL for `self` covers a request needing `needed`: `All` covers everything,
    /// and (as in Kafka) an allowed `Read`, `Write`, `Delete` or `Alter` implies `Describe`,
    /// and `AlterConfigs` implies `DescribeConfigs`.
    pub fn implies(self, needed: AclOperation) -> bool {
        self == needed
            || self == Self::All
            || (needed == Self::Describe
                && matches!(self, Self::Read | Self::Write | Self::Delete | Self::Alter))
            || (needed == Self::DescribeConfigs && self == Self::AlterConfigs)
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AclPermission {
    /// Deny wins over every allow.
    Deny,
    /// Allow.
    Allow,
}

/// One access-control entry on one resource pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// The resource name or prefix; `*` with [`PatternType::Literal`] is every resource.
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// `User:NAME`, or `User:*` for every principal.
    pub principal: String,
    /// The client host, or `*` for every host.
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: AclPermission,
}

/// Which pattern types a filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    /// Any pattern type.
    Any,
    /// Exactly this pattern type.
    Exactly(PatternType),
    /// Every binding that would apply to a resource of exactly the filter's name: literal
    /// bindings of that name or `*`, prefixed bindings whose prefix starts the name.
    Match,
}

/// A filter over ACL bindings; `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    /// The kind of resource.
    pub resource_type: Option<ResourceType>,
    /// The resource name.
    pub resource_name: Option<String>,
    /// Which pattern types.
    pub pattern: PatternFilter,
    /// The principal.
    pub principal: Option<String>,
    /// The host.
    pub host: Option<String>,
    /// The operation.
    pub operation: Option<AclOperation>,
    /// The permission.
    pub permission: Option<AclPermission>,
}

impl AclFilter {
    /// Whether `binding` passes the filter.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let resource = match (&self.pattern, &self.resource_name) {
            (PatternFilter::Match, Some(name)) => binding.applies_to_name(name),
            (PatternFilter::Match, None) => true,
            (PatternFilter::Any, name) => name.as_ref().is_none_or(|n| *n == binding.resource_name),
            (PatternFilter::Exactly(pattern), name) => {
                *pattern == binding.pattern_type
                    && name.as_ref().is_none_or(|n| *n == binding.resource_name)
            }
        };
        resource
            && self
                .resource_type
                .is_none_or(|t| t == binding.resource_type)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| *p == binding.principal)
            && self.host.as_ref().is_none_or(|h| *h == binding.host)
            && self.operation.is_none_or(|o| o == binding.operation)
            && self.permission.is_none_or(|p| p == binding.permission)
    }
}

impl AclBinding {
    /// Whether this binding's pattern covers a resource named `name` (of its type).
    pub fn applies_to_name(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
            PatternType::Prefixed => name.starts_with(&self.resource_name),
        }
    }

    fn validate(&self) -> Result<(), Rejection> {
        let invalid = |reason: &str| {
            Err(Rejection::InvalidAcl {
                reason: reason.to_owned(),
            })
        };
        if self.resource_name.is_empty() {
            return invalid("the resource name is empty");
        }
        if self.pattern_type == PatternType::Prefixed && self.resource_name == "*" {
            return invalid("a prefixed pattern of `*` matches nothing; use a literal `*`");
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != "kafka-cluster" {
            return invalid("the cluster resource is named kafka-cluster");
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return invalid("a principal is TYPE:NAME, e.g. User:alice or User:*"),
        }
        if self.host.is_empty() {
            return invalid("the host is empty; use * for every host");
        }
        Ok(())
    }
}

/// The security part of the metadata state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityState {
    #[serde(deserialize_with = "crate::state::cautious::ord_map")]
    pub(crate) scram: OrdMap<(String, ScramMechanism), ScramCredential>,
    #[serde(deserialize_with = "crate::state::cautious::ord_set")]
    pub(crate) acls: OrdSet<AclBinding>,
}

impl MetadataState {
    /// The credential of `user` for `mechanism`.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.security.scram.get(&(user.to_owned(), mechanism))
    }

    /// Every stored credential: user, mechanism, credential, by user.
    pub fn scram_credentials(
        &self,
    ) -> impl Iterator<Item = (&str, ScramMechanism, &ScramCredential)> {
        self.security
            .scram
            .iter()
            .map(|((user, mechanism), credential)| (user.as_str(), *mechanism, credential))
    }

    /// Every ACL binding, in order.
    pub fn acls(&self) -> impl Iterator<Item = &AclBinding> {
        self.security.acls.iter()
    }

    /// Whether any ACL binding exists.
    pub fn has_acls(&self) -> bool {
        !self.security.acls.is_empty()
    }

    /// Kafka's ACL decision for `principal` (`User:NAME`) from `host` doing `operation` on the
    /// resource `resource_type`/`name`: a matching deny (for that operation or `All`) refuses;
    /// else a matching allow (whose operation [implies](AclOperation::implies) the one
    /// needed) permits; a resource no binding applies to at all is open when
    /// `allow_if_no_acl` (Kafka's `allow.everyone.if.no.acl.found`). Bindings match the
    /// principal or `User:*`, the host or `*`.
    pub fn acl_allows(
        &self,
        principal: &str,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
        allow_if_no_acl: bool,
    ) -> bool {
        let mut any = false;
        let mut allowed = false;
        for acl in self
            .security
            .acls
            .iter()
            .filter(|acl| acl.resource_type == resource_type && acl.applies_to_name(name))
        {
            any = true;
            let matches = (acl.principal == principal || acl.principal == "User:*")
                && (acl.host == "*" || acl.host == host);
            if !matches {
                continue;
            }
            match acl.permission {
                AclPermission::Deny
                    if acl.operation == operation || acl.operation == AclOperation::All =>
                {
                    return false;
                }
                AclPermission::Allow if acl.operation.implies(operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any && allow_if_no_acl)
    }

    /// Per user, in order of first mention: all of the user's alterations apply, or none
    /// (one mechanism named twice, a credential out of bounds, a deletion of a credential
    /// that does not exist).
    pub(crate) fn alter_scram_credentials(
        &mut self,
        upsertions: &[ScramUpsertion],
        deletions: &[ScramDeletion],
    ) -> Outcome {
        let mut users: Vec<&str> = Vec::new();
        for user in deletions
            .iter()
            .map(|d| d.user.as_str())
            .chain(upsertions.iter().map(|u| u.user.as_str()))
        {
            if !users.contains(&user) {
                users.push(user);
            }
        }
        let results = users
            .into_iter()
            .map(|user| {
                let deleted: Vec<ScramMechanism> = deletions
                    .iter()
                    .filter(|d| d.user == user)
                    .map(|d| d.mechanism)
                    .collect();
                let upserted: Vec<&ScramUpsertion> =
                    upsertions.iter().filter(|u| u.user == user).collect();
                let result = self.alter_user(user, &deleted, &upserted);
                (user.to_owned(), result)
            })
            .collect();
        Outcome::ScramCredentialsAltered { results }
    }

    fn alter_user(
        &mut self,
        user: &str,
        deleted: &[ScramMechanism],
        upserted: &[&ScramUpsertion],
    ) -> Result<(), Rejection> {
        let mut named = Vec::new();
        for mechanism in deleted.iter().chain(upserted.iter().map(|u| &u.mechanism)) {
            if named.contains(mechanism) {
                return Err(Rejection::DuplicateScramMechanism {
                    user: user.to_owned(),
                    mechanism: *mechanism,
                });
            }
            named.push(*mechanism);
        }
        for mechanism in deleted {
            if self.scram_credential(user, *mechanism).is_none() {
                return Err(Rejection::UnknownScramCredential {
                    user: user.to_owned(),
                    mechanism: *mechanism,
                });
            }
        }
        for upsertion in upserted {
            validate_credential(upsertion)?;
        }
        for mechanism in deleted {
            self.security.scram.remove(&(user.to_owned(), *mechanism));
        }
        for upsertion in upserted {
            self.security.scram.insert(
                (user.to_owned(), upsertion.mechanism),
                upsertion.credential.clone(),
            );
        }
        Ok(())
    }

    pub(crate) fn create_acls(&mut self, acls: &[AclBinding]) -> Outcome {
        let results = acls
            .iter()
            .map(|acl| {
                acl.validate()?;
                self.security.acls.insert(acl.clone());
                Ok(())
            })
            .collect();
        Outcome::AclsCreated { results }
    }

    pub(crate) fn delete_acls(&mut self, filters: &[AclFilter]) -> Outcome {
        let results = filters
            .iter()
            .map(|filter| {
                let matched: Vec<AclBinding> = self
                    .security
                    .acls
                    .iter()
                    .filter(|acl| filter.matches(acl))
                    .cloned()
                    .collect();
                for acl in &matched {
                    self.security.acls.remove(acl);
                }
                matched
            })
            .collect();
        Outcome::AclsDeleted { results }
    }
}

fn validate_credential(upsertion: &ScramUpsertion) -> Result<(), Rejection> {
    let unacceptable = |reason: String| {
        Err(Rejection::UnacceptableCredential {
            user: upsertion.user.clone(),
            reason,
        })
    };
    let credential = &upsertion.credential;
    if upsertion.user.is_empty() || upsertion.user.len() > MAX_USER_NAME_LEN {
        return unacceptable(format!("a user name has 1 to {MAX_USER_NAME_LEN} bytes"));
    }
    if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&credential.iterations) {
        return unacceptable(format!(
            "{} iterations; {} needs {MIN_SCRAM_ITERATIONS} to {MAX_SCRAM_ITERATIONS}",
            credential.iterations, upsertion.mechanism
        ));
    }
    let len = upsertion.mechanism.key_len();
    if credential.stored_key.len() != len || credential.server_key.len() != len {
        return unacceptable(format!("{} keys have {len} bytes", upsertion.mechanism));
    }
    if credential.salt.is_empty() || credential.salt.len() > 1024 {
        return unacceptable("the salt has 1 to 1024 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
