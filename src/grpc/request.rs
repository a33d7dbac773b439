//! Validation of incoming requests into domain values, done once at the
//! edge and before any PKCS#11 call.

use tonic::Status;

use crate::config::Config;
use crate::keys::algorithm::{SHA384_LEN, SignatureEncoding};
use crate::keys::{KeyName, SHA256_LEN};
use crate::pb;

/// Longest accepted request ID, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A validated `SignRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignParams {
    /// The digest to sign: 32 bytes of SHA-256 or 48 bytes of SHA-384.
    pub digest: Vec<u8>,
    /// The encoding requested for ECDSA signatures.
    pub encoding: SignatureEncoding,
    /// A configured key name.
    pub key_name: KeyName,
    /// The caller's request ID, possibly empty.
    pub request_id: String,
}

/// Checks a `SignRequest` against the configuration.
///
/// Returns `INVALID_ARGUMENT` for a malformed field and `NOT_FOUND` for a
/// key name that is not configured.
pub fn validate_sign(request: &pb::SignRequest, config: &Config) -> Result<SignParams, Status> {
    let request_id = validate_request_id(&request.request_id)?;
    let (hash_name, expected_len) = match pb::HashAlgorithm::try_from(request.hash_algorithm) {
        Ok(pb::HashAlgorithm::Unspecified | pb::HashAlgorithm::Sha256) => ("SHA-256", SHA256_LEN),
        Ok(pb::HashAlgorithm::Sha384) => ("SHA-384", SHA384_LEN),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "hash_algorithm {} is not supported; use HASH_ALGORITHM_SHA256 or \
                 HASH_ALGORITHM_SHA384",
                request.hash_algorithm
            )));
        }
    };
    let encoding = match pb::SignatureEncoding::try_from(request.signature_encoding) {
        Ok(encoding) => SignatureEncoding::from(encoding),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "signature_encoding {} is not supported; use SIGNATURE_ENCODING_DER or \
                 SIGNATURE_ENCODING_P1363",
                request.signature_encoding
            )));
        }
    };
    if request.digest.len() != expected_len {
        return Err(Status::invalid_argument(format!(
            "digest is {} bytes; a {hash_name} digest is {expected_len} bytes",
            request.digest.len()
        )));
    }
    let digest = request.digest.clone();
    let key_name = if request.key_name.is_empty() {
        config.default_key.clone()
    } else {
        let name = KeyName::parse(&request.key_name).map_err(|_| unknown_key(&request.key_name))?;
        if !config.keys.contains_key(&name) {
            return Err(unknown_key(&request.key_name));
        }
        name
    };
    Ok(SignParams {
        digest,
        encoding,
        key_name,
        request_id,
    })
}

fn unknown_key(raw: &str) -> Status {
    // The name is echoed only in escaped, truncated form.
    let shown: String = raw.chars().take(64).collect();
    Status::not_found(format!("key {shown:?} is not configured"))
}

fn validate_request_id(raw: &str) -> Result<String, Status> {
    if raw.len() > MAX_REQUEST_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "request_id is {} bytes; the maximum is {MAX_REQUEST_ID_LEN}",
            raw.len()
        )));
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(
            "request_id may contain only printable ASCII without spaces",
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Overrides, parse};

    fn config() -> Config {
        let text = r#"
            [hsm]
            module = "/lib/x.so"
            token_label = "t"
            [keys.default]
            [keys.other]
        "#;
        let env: BTreeMap<String, String> = [("HALLMARK_PIN".to_owned(), "1".to_owned())].into();
        parse(text, std::path::Path::new("/"), &env, &Overrides::default()).expect("valid")
    }

    fn request(digest_len: usize, key_name: &str) -> pb::SignRequest {
        pb::SignRequest {
            digest: vec![7; digest_len],
            hash_algorithm: 0,
            key_name: key_name.into(),
            request_id: "req-1".into(),
            signature_encoding: 0,
        }
    }

    #[test]
    fn empty_key_name_selects_default() {
        let params = validate_sign(&request(32, ""), &config()).expect("valid");
        assert_eq!(params.key_name.as_str(), "default");
        assert_eq!(params.digest, vec![7; 32]);
        assert_eq!(params.encoding, SignatureEncoding::Der);
        assert_eq!(params.request_id, "req-1");
    }

    #[test]
    fn wrong_digest_lengths_are_invalid() {
        for len in [0, 31, 33, 64] {
            let status = validate_sign(&request(len, ""), &config()).expect_err("invalid");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "length {len}");
        }
    }

    #[test]
    fn unconfigured_names_are_not_found() {
        for name in ["missing", "Bad Name", "unknown"] {
            let status = validate_sign(&request(32, name), &config()).expect_err("invalid");
            assert_eq!(status.code(), tonic::Code::NotFound, "name {name}");
        }
        let params = validate_sign(&request(32, "other"), &config()).expect("valid");
        assert_eq!(params.key_name.as_str(), "other");
    }

    #[test]
    fn bad_request_ids_and_algorithms_are_invalid() {
        let mut long = request(32, "");
        long.request_id = "x".repeat(129);
        assert_eq!(
            validate_sign(&long, &config()).expect_err("invalid").code(),
            tonic::Code::InvalidArgument
        );
        let mut spaced = request(32, "");
        spaced.request_id = "a b".into();
        assert_eq!(
            validate_sign(&spaced, &config())
                .expect_err("invalid")
                .code(),
            tonic::Code::InvalidArgument
        );
        let mut algorithm = request(32, "");
        algorithm.hash_algorithm = 9;
        assert_eq!(
            validate_sign(&algorithm, &config())
                .expect_err("invalid")
                .code(),
            tonic::Code::InvalidArgument
        );
        let mut encoding = request(32, "");
        encoding.signature_encoding = 99;
        assert_eq!(
            validate_sign(&encoding, &config())
                .expect_err("invalid")
                .code(),
            tonic::Code::InvalidArgument
        );
    }
}
