//! SCRAM (RFC 5802) with SHA-256 (RFC 7677) and SHA-512, as Kafka speaks it: no channel
//! binding, the authorization id empty or equal to the user, extensions ignored. Credentials
//! are the stored ones of the metadata state: salt, iterations, `StoredKey`, `ServerKey`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};
use switchyard_backend_api::MetadataState;
use switchyard_backend_api::security::{ScramCredential, ScramMechanism};

use super::Failure;

/// `SaltedPassword := Hi(password, salt, i)` (PBKDF2 with HMAC of the mechanism's hash).
pub(crate) fn salted_password(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0; mechanism.key_len()];
    match mechanism {
        ScramMechanism::Sha256 => {
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
        }
        ScramMechanism::Sha512 => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
        }
    }
    out
}

fn hmac(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of every length.
    match mechanism {
        ScramMechanism::Sha256 => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        ScramMechanism::Sha512 => {
            let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// The credential the server stores for a salted password.
pub(crate) fn credential(
    mechanism: ScramMechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let client_key = hmac(mechanism, salted, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        stored_key: hash(mechanism, &client_key),
        server_key: hmac(mechanism, salted, b"Server Key"),
        iterations,
    }
}

/// Whether `password` is the one `credential` was made from (SASL/PLAIN checks passwords
/// against the stored SCRAM credentials).
pub(crate) fn password_matches(
    mechanism: ScramMechanism,
    credential: &ScramCredential,
    password: &[u8],
) -> bool {
    let salted = salted_password(mechanism, password, &credential.salt, credential.iterations);
    let derived = self::credential(mechanism, &salted, &credential.salt, credential.iterations);
    constant_time_eq(&derived.stored_key, &credential.stored_key)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A SCRAM exchange on the server, between the client's first and final messages.
#[derive(Debug)]
pub(crate) struct ScramServer {
    mechanism: ScramMechanism,
    user: String,
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// `saslname` of RFC 5802: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn unescape_user(name: &str) -> Result<String, Failure> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(Failure::malformed("a user name with a bare '='")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    /// Read the client's first message; returns the exchange and the server's first message.
    pub(crate) fn start(
        mechanism: ScramMechanism,
        state: &MetadataState,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(Self, Vec<u8>), Failure> {
        let message = std::str::from_utf8(client_first)
            .map_err(|_| Failure::malformed("the client's first message is not UTF-8"))?;
        let (gs2, bare) = match message.strip_prefix("n,") {
            Some(rest) => rest
                .split_once(',')
                .ok_or_else(|| Failure::malformed("no GS2 header"))?,
            None if message.starts_with("y,") || message.starts_with("p=") => {
                return Err(Failure::malformed("channel binding is not supported"));
            }
            None => return Err(Failure::malformed("no GS2 header")),
        };
        let mut user = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            match attribute.split_once('=') {
                Some(("n", name)) => user = Some(unescape_user(name)?),
                Some(("r", nonce)) if !nonce.is_empty() => client_nonce = Some(nonce),
                Some(("m", _)) => return Err(Failure::malformed("mandatory extensions")),
                _ => {}
            }
        }
        let user = user.ok_or_else(|| Failure::malformed("no user name"))?;
        let client_nonce = client_nonce.ok_or_else(|| Failure::malformed("no client nonce"))?;
        if let Some(authzid) = gs2.strip_prefix("a=")
            && unescape_user(authzid)? != user
        {
            return Err(Failure::invalid(mechanism.sasl_name()));
        }
        let credential = state
            .scram_credential(&user, mechanism)
            .cloned()
            .ok_or_else(|| Failure::invalid(mechanism.sasl_name()))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        Ok((
            Self {
                mechanism,
                user,
                credential,
                client_first_bare: bare.to_owned(),
                server_first,
                nonce,
            },
            reply,
        ))
    }

    /// Check the client's final message; returns the user and the server's final message.
    pub(crate) fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), Failure> {
        let invalid = || Failure::invalid(self.mechanism.sasl_name());
        let message = std::str::from_utf8(client_final)
            .map_err(|_| Failure::malformed("the client's final message is not UTF-8"))?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or_else(|| Failure::malformed("no client proof"))?;
        let mut nonce = None;
        let mut binding = None;
        for attribute in without_proof.split(',') {
            match attribute.split_once('=') {
                Some(("r", value)) => nonce = Some(value),
                Some(("c", value)) => binding = Some(value),
                _ => {}
            }
        }
        // "biws" is base64 of "n,,": no channel binding, no authorization id. Kafka clients
        // send that or the header with `a=`; either way it must be what the first message had.
        let binding = binding.ok_or_else(|| Failure::malformed("no channel binding attribute"))?;
        let header = BASE64
            .decode(binding)
            .map_err(|_| Failure::malformed("channel binding is not base64"))?;
        if !header.starts_with(b"n,") {
            return Err(Failure::malformed("channel binding is not supported"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(invalid());
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| Failure::malformed("the proof is not base64"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(
            self.mechanism,
            &self.credential.stored_key,
            auth_message.as_bytes(),
        );
        if proof.len() != signature.len() {
            return Err(invalid());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(
            &hash(self.mechanism, &client_key),
            &self.credential.stored_key,
        ) {
            return Err(invalid());
        }
        let verifier = hmac(
            self.mechanism,
            &self.credential.server_key,
            auth_message.as_bytes(),
        );
        let reply = format!("v={}", BASE64.encode(verifier)).into_bytes();
        Ok((self.user, reply))
    }
}

#[cfg(test)]
mod tests;
