//! Code signing: who may make volunteers run a module.
//!
//! Three keys, all Ed25519:
//! - the **project key**, made by `peergrid-coordinator init`; its public
//!   half is in the join string, so every worker pins it. Its secret half
//!   only *endorses* researchers and can live offline.
//! - a **researcher key** (`peergrid keys new`), endorsed by the project
//!   key, signs each job's module hash and arguments at submission.
//! - host keys identify workers (see [`crate::wire::Hello`]).
//!
//! A worker runs a task only if [`verify`] accepts the task's
//! [`ModuleSignature`] under the pinned project key. So the coordinator
//! host alone (without the offline project key or an endorsed researcher
//! key) cannot make workers run a module nobody endorsed signed.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Hash;

/// The project key's statement that `researcher_key` may sign jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// Hex of the researcher's Ed25519 public key.
    pub researcher_key: String,
    /// Who the researcher is, for people reading the dataset.
    pub name: String,
    /// Hex of the project key's signature over [`endorsement_message`].
    pub project_signature: String,
}

/// A researcher's signature on one job's module and arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSignature {
    pub endorsement: Endorsement,
    /// Hex of the researcher's signature over [`module_message`].
    pub signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("{0} is not a valid Ed25519 key")]
    BadKey(&'static str),
    #[error("{0} is not a valid Ed25519 signature")]
    BadSignature(&'static str),
    #[error("the researcher's endorsement was not made by this project's key")]
    NotEndorsed,
    #[error(
        "the module signature does not match the module and arguments (tampered, or signed by another key)"
    )]
    Mismatch,
    #[error("endorsement names must be 1 to 200 characters")]
    BadName,
    #[error("only the researcher whose key signed the job may cancel it")]
    NotTheSubmitter,
}

pub fn endorsement_message(researcher_key: &[u8; 32], name: &str) -> Vec<u8> {
    let mut m = b"peergrid-endorse-v1\0".to_vec();
    m.extend_from_slice(researcher_key);
    m.extend_from_slice(name.as_bytes());
    m
}

/// Binds the module *and* its arguments: a coordinator cannot reuse a
/// signature to run a signed module with other arguments.
pub fn module_message(module: &Hash, args: &[String]) -> Vec<u8> {
    let mut m = b"peergrid-module-v1\0".to_vec();
    m.extend_from_slice(&module.0);
    let mut h = blake3::Hasher::new();
    for a in args {
        h.update(&(a.len() as u64).to_le_bytes());
        h.update(a.as_bytes());
    }
    m.extend_from_slice(h.finalize().as_bytes());
    m
}

/// What a researcher signs to cancel job `job` of the project that made
/// `endorsement`: only the key that signed a job may cancel it. The
/// project's signature in the endorsement ties it to one project, so it
/// cancels no job of the same id elsewhere; replaying it cancels the same
/// job again, which changes nothing.
pub fn cancel_message(job: u64, endorsement: &Endorsement) -> Vec<u8> {
    let mut m = b"peergrid-cancel-v1\0".to_vec();
    m.extend_from_slice(&job.to_le_bytes());
    m.extend_from_slice(endorsement.project_signature.as_bytes());
    m
}

/// A researcher signs the cancellation of job `job` (hex signature).
pub fn sign_cancel(researcher: &SigningKey, endorsement: &Endorsement, job: u64) -> String {
    hex::encode(
        researcher
            .sign(&cancel_message(job, endorsement))
            .to_bytes(),
    )
}

/// Checks that `signature` (hex) cancels job `job` under the researcher
/// key of the job's own signature.
pub fn verify_cancel(
    job_signature: &ModuleSignature,
    job: u64,
    signature: &str,
) -> Result<(), SigningError> {
    let key = decode_32(
        &job_signature.endorsement.researcher_key,
        "the researcher key",
    )?;
    let key =
        VerifyingKey::from_bytes(&key).map_err(|_| SigningError::BadKey("the researcher key"))?;
    let sig = decode_sig(signature, "the cancel signature")?;
    key.verify_strict(&cancel_message(job, &job_signature.endorsement), &sig)
        .map_err(|_| SigningError::NotTheSubmitter)
}

fn decode_32(hex_str: &str, what: &'static str) -> Result<[u8; 32], SigningError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).map_err(|_| SigningError::BadKey(what))?;
    Ok(out)
}

fn decode_sig(hex_str: &str, what: &'static str) -> Result<Signature, SigningError> {
    let mut out = [0u8; 64];
    hex::decode_to_slice(hex_str, &mut out).map_err(|_| SigningError::BadSignature(what))?;
    Ok(Signature::from_bytes(&out))
}

/// Reads a secret key file: 64 hex digits (the 32-byte seed).
pub fn parse_secret_key(text: &str) -> Result<SigningKey, SigningError> {
    Ok(SigningKey::from_bytes(&decode_32(
        text.trim(),
        "the secret key",
    )?))
}

pub fn parse_public_key(text: &str) -> Result<[u8; 32], SigningError> {
    let bytes = decode_32(text.trim(), "the public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SigningError::BadKey("the public key"))?;
    Ok(bytes)
}

/// The project key endorses a researcher key.
pub fn endorse(
    project: &SigningKey,
    researcher_key: &[u8; 32],
    name: &str,
) -> Result<Endorsement, SigningError> {
    if name.is_empty() || name.len() > 200 {
        return Err(SigningError::BadName);
    }
    let sig = project.sign(&endorsement_message(researcher_key, name));
    Ok(Endorsement {
        researcher_key: hex::encode(researcher_key),
        name: name.to_string(),
        project_signature: hex::encode(sig.to_bytes()),
    })
}

/// A researcher signs a job's module and arguments.
pub fn sign_module(
    researcher: &SigningKey,
    endorsement: &Endorsement,
    module: &Hash,
    args: &[String],
) -> ModuleSignature {
    ModuleSignature {
        endorsement: endorsement.clone(),
        signature: hex::encode(researcher.sign(&module_message(module, args)).to_bytes()),
    }
}

/// Checks the whole chain: project key → endorsement → researcher key →
/// module and arguments.
pub fn verify(
    project_key: &[u8; 32],
    sig: &ModuleSignature,
    module: &Hash,
    args: &[String],
) -> Result<(), SigningError> {
    let project = VerifyingKey::from_bytes(project_key)
        .map_err(|_| SigningError::BadKey("the project key"))?;
    let researcher_bytes = decode_32(&sig.endorsement.researcher_key, "the researcher key")?;
    let researcher = VerifyingKey::from_bytes(&researcher_bytes)
        .map_err(|_| SigningError::BadKey("the researcher key"))?;
    let endorsement_sig = decode_sig(&sig.endorsement.project_signature, "the endorsement")?;
    project
        .verify_strict(
            &endorsement_message(&researcher_bytes, &sig.endorsement.name),
            &endorsement_sig,
        )
        .map_err(|_| SigningError::NotEndorsed)?;
    let module_sig = decode_sig(&sig.signature, "the module signature")?;
    researcher
        .verify_strict(&module_message(module, args), &module_sig)
        .map_err(|_| SigningError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn only_the_submitter_cancels_and_only_that_job() {
        let project = key(1);
        let (ada, eve) = (key(2), key(3));
        let e = endorse(&project, &ada.verifying_key().to_bytes(), "Ada").unwrap();
        let job = sign_module(&ada, &e, &Hash::of(b"m"), &[]);
        assert_eq!(verify_cancel(&job, 7, &sign_cancel(&ada, &e, 7)), Ok(()));
        assert_eq!(
            verify_cancel(&job, 7, &sign_cancel(&eve, &e, 7)),
            Err(SigningError::NotTheSubmitter)
        );
        assert_eq!(
            verify_cancel(&job, 8, &sign_cancel(&ada, &e, 7)),
            Err(SigningError::NotTheSubmitter)
        );
        // Ada's signature for the same job id in another project.
        let other = endorse(&key(4), &ada.verifying_key().to_bytes(), "Ada").unwrap();
        assert_eq!(
            verify_cancel(&job, 7, &sign_cancel(&ada, &other, 7)),
            Err(SigningError::NotTheSubmitter)
        );
        assert_eq!(
            verify_cancel(&job, 7, "zz"),
            Err(SigningError::BadSignature("the cancel signature"))
        );
    }

    #[test]
    fn a_signed_module_verifies_and_every_forgery_is_refused() {
        let project = key(1);
        let researcher = key(2);
        let pp = project.verifying_key().to_bytes();
        let e = endorse(&project, &researcher.verifying_key().to_bytes(), "Ada").unwrap();
        let module = Hash::of(b"module");
        let args = vec!["--x".to_string()];
        let sig = sign_module(&researcher, &e, &module, &args);
        assert_eq!(verify(&pp, &sig, &module, &args), Ok(()));

        // A tampered module, or other arguments.
        assert_eq!(
            verify(&pp, &sig, &Hash::of(b"evil"), &args),
            Err(SigningError::Mismatch)
        );
        assert_eq!(verify(&pp, &sig, &module, &[]), Err(SigningError::Mismatch));

        // A module signed by an unendorsed key under a stolen endorsement.
        let stranger = key(3);
        let stolen = sign_module(&stranger, &e, &module, &args);
        assert_eq!(
            verify(&pp, &stolen, &module, &args),
            Err(SigningError::Mismatch)
        );

        // A forged endorsement: the coordinator host's own key, not the project's.
        let forged = endorse(&key(9), &stranger.verifying_key().to_bytes(), "Mallory").unwrap();
        let sig = sign_module(&stranger, &forged, &module, &args);
        assert_eq!(
            verify(&pp, &sig, &module, &args),
            Err(SigningError::NotEndorsed)
        );

        // An endorsement whose name was edited.
        let mut renamed = sign_module(&researcher, &e, &module, &args);
        renamed.endorsement.name = "Eve".into();
        assert_eq!(
            verify(&pp, &renamed, &module, &args),
            Err(SigningError::NotEndorsed)
        );

        // Garbage.
        let mut garbage = sign_module(&researcher, &e, &module, &args);
        garbage.signature = "zz".into();
        assert!(matches!(
            verify(&pp, &garbage, &module, &args),
            Err(SigningError::BadSignature(_))
        ));
    }
}
