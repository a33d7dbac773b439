//! Helpers shared by the audit tests: events, a local checkpoint key, and
//! reading a log back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use tonic::Code;

use super::record::{CheckpointSignature, CheckpointStatement, HashAlgorithm, Record, SignEvent};
use super::{AuditConfig, SignError, files};
use crate::verify::algorithm::{Algorithm, SignatureEncoding, VerifyingKey};
use crate::verify::{KeySet, PemParameters};

/// Returns a sign event whose request ID contains `n`.
pub(crate) fn event(n: usize) -> SignEvent {
    SignEvent {
        caller: "spiffe://example.org/scorer".into(),
        key_name: "fraud-model".into(),
        key_id: "kid-1".into(),
        key_version: 1,
        digest: vec![0x5a; 32],
        hash_algorithm: Some(HashAlgorithm::Sha256),
        request_id: format!("req-{n}"),
        outcome: Code::Ok,
    }
}

/// Settings with short timeouts, so that failing tests end quickly.
pub(crate) fn config(directory: &Path) -> AuditConfig {
    AuditConfig {
        append_timeout: Duration::from_secs(5),
        checkpoint_sign_timeout: Duration::from_secs(2),
        ..AuditConfig::new(directory)
    }
}

/// A P-256 key standing in for the token's signing key.
pub(crate) struct TestKey {
    key: p256::ecdsa::SigningKey,
    pub(crate) key_id: String,
}

impl TestKey {
    pub(crate) fn new(seed: u8) -> Self {
        let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("valid scalar");
        let key_id = VerifyingKey::P256(*key.verifying_key()).key_id();
        Self { key, key_id }
    }

    /// Signs a statement as a checkpoint's signing function does.
    pub(crate) fn sign(&self, statement: &CheckpointStatement) -> CheckpointSignature {
        let digest = statement.digest_for(Algorithm::EcdsaP256Sha256);
        let signature: p256::ecdsa::Signature = self
            .key
            .sign_prehash(&digest)
            .expect("a 32-byte prehash signs");
        CheckpointSignature {
            key_id: self.key_id.clone(),
            key_version: 0,
            algorithm: Algorithm::EcdsaP256Sha256,
            signature: signature.to_der().as_bytes().to_vec(),
            encoding: SignatureEncoding::Der,
        }
    }

    /// Returns a signing function for [`super::AuditLog::checkpoint`].
    pub(crate) fn signer(
        &self,
    ) -> impl FnOnce(
        CheckpointStatement,
    ) -> std::future::Ready<Result<CheckpointSignature, SignError>>
    + '_ {
        move |statement| std::future::ready(Ok(self.sign(&statement)))
    }

    /// Returns the public key.
    pub(crate) fn verifying_key(&self) -> &p256::ecdsa::VerifyingKey {
        self.key.verifying_key()
    }

    /// Returns a key set that contains only this key.
    pub(crate) fn key_set(&self) -> KeySet {
        let pem = self
            .key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key encodes");
        KeySet::from_pem(&pem, PemParameters::default(), "test key").expect("the PEM parses")
    }
}

/// Returns the audit files of `directory`, by index.
pub(crate) fn audit_files(directory: &Path) -> Vec<PathBuf> {
    files::list_files(directory)
        .expect("the directory lists")
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// Reads every line of every audit file, in order.
pub(crate) fn read_lines(directory: &Path) -> Vec<String> {
    audit_files(directory)
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("the file reads");
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// Parses every record of every audit file, in order.
pub(crate) fn read_records(directory: &Path) -> Vec<Record> {
    read_lines(directory)
        .iter()
        .map(|line| Record::parse(line.as_bytes()).expect("the writer wrote a valid record"))
        .collect()
}
