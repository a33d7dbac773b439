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
    let (hash_name, expected_len) = hash_algorithm(request.hash_algorithm)?;
    let encoding = signature_encoding(request.signature_encoding)?;
    check_digest(&request.digest, hash_name, expected_len)?;
    let key_name = key_name(&request.key_name, config)?;
    Ok(SignParams {
        digest: request.digest.clone(),
        encoding,
        key_name,
        request_id,
    })
}

/// A validated `SignBatchRequest`. Each item is checked on its own.
#[derive(Clone, Debug)]
pub struct BatchParams {
    /// The encoding requested for ECDSA signatures.
    pub encoding: SignatureEncoding,
    /// A configured key name.
    pub key_name: KeyName,
    /// The digest length that the batch's hash algorithm produces.
    pub digest_len: usize,
    /// One entry per item, in order: the valid digest and request ID, or
    /// why the item is invalid. Invalid items are not signed.
    pub items: Vec<Result<BatchItem, Status>>,
}

/// A valid item of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItem {
    /// The digest to sign.
    pub digest: Vec<u8>,
    /// The caller's request ID for the item, possibly empty.
    pub request_id: String,
}

/// Checks a `SignBatchRequest` against the configuration.
///
/// Fails the whole batch with `INVALID_ARGUMENT` for a malformed field
/// that applies to every item or an item count outside 1..=`max_batch`,
/// and with `NOT_FOUND` for a key name that is not configured. A malformed
/// digest or request ID fails only its item.
pub fn validate_batch(
    request: &pb::SignBatchRequest,
    config: &Config,
) -> Result<BatchParams, Status> {
    let count = request.items.len();
    if count == 0 {
        return Err(Status::invalid_argument(
            "items is empty; send at least one digest",
        ));
    }
    if count > config.max_batch {
        return Err(Status::invalid_argument(format!(
            "items has {count} digests; the maximum is {} (signing.max_batch); split the batch",
            config.max_batch
        )));
    }
    let (hash_name, expected_len) = hash_algorithm(request.hash_algorithm)?;
    let encoding = signature_encoding(request.signature_encoding)?;
    let key_name = key_name(&request.key_name, config)?;
    let items = request
        .items
        .iter()
        .map(|item| {
            let request_id = validate_request_id(&item.request_id)?;
            check_digest(&item.digest, hash_name, expected_len)?;
            Ok(BatchItem {
                digest: item.digest.clone(),
                request_id,
            })
        })
        .collect();
    Ok(BatchParams {
        encoding,
        key_name,
        digest_len: expected_len,
        items,
    })
}

/// Returns the name and digest length of a hash algorithm number.
fn hash_algorithm(value: i32) -> Result<(&'static str, usize), Status> {
    match pb::HashAlgorithm::try_from(value) {
        Ok(pb::HashAlgorithm::Unspecified | pb::HashAlgorithm::Sha256) => {
            Ok(("SHA-256", SHA256_LEN))
        }
        Ok(pb::HashAlgorithm::Sha384) => Ok(("SHA-384", SHA384_LEN)),
        Err(_) => Err(Status::invalid_argument(format!(
            "hash_algorithm {value} is not supported; use HASH_ALGORITHM_SHA256 or \
             HASH_ALGORITHM_SHA384"
        ))),
    }
}

/// Returns the encoding that a signature encoding number selects.
fn signature_encoding(value: i32) -> Result<SignatureEncoding, Status> {
    match pb::SignatureEncoding::try_from(value) {
        Ok(encoding) => Ok(SignatureEncoding::from(encoding)),
        Err(_) => Err(Status::invalid_argument(format!(
            "signature_encoding {value} is not supported; use SIGNATURE_ENCODING_DER or \
             SIGNATURE_ENCODING_P1363"
        ))),
    }
}

fn check_digest(digest: &[u8], hash_name: &str, expected_len: usize) -> Result<(), Status> {
    if digest.len() == expected_len {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "digest is {} bytes; a {hash_name} digest is {expected_len} bytes",
        digest.len()
    )))
}

/// Resolves a requested key name: empty selects the default key.
fn key_name(raw: &str, config: &Config) -> Result<KeyName, Status> {
    if raw.is_empty() {
        return Ok(config.default_key.clone());
    }
    let name = KeyName::parse(raw).map_err(|_| unknown_key(raw))?;
    if !config.keys.contains_key(&name) {
        return Err(unknown_key(raw));
    }
    Ok(name)
}

fn unknown_key(raw: &str) -> Status {
    // The name is echoed only in escaped, truncated form.
    let shown: String = raw.chars().take(64).collect();
    Status::not_found(format!("key {shown:?} is not configured"))
}

/// Returns `raw` if it is a valid request ID, or an empty one: what a
/// response echoes for an item whose request ID was invalid.
pub fn echoed_request_id(raw: &str) -> String {
    validate_request_id(raw).unwrap_or_default()
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

    fn batch(items: Vec<(usize, &str)>) -> pb::SignBatchRequest {
        pb::SignBatchRequest {
            items: items
                .into_iter()
                .map(|(len, id)| pb::SignBatchItem {
                    digest: vec![3; len],
                    request_id: id.into(),
                })
                .collect(),
            hash_algorithm: 0,
            key_name: "other".into(),
            signature_encoding: 0,
        }
    }

    #[test]
    fn batch_items_fail_on_their_own() {
        let params = validate_batch(
            &batch(vec![(32, "a"), (31, "b"), (32, "c d"), (32, "")]),
            &config(),
        )
        .expect("valid batch");
        assert_eq!(params.key_name.as_str(), "other");
        assert_eq!(params.items.len(), 4);
        assert_eq!(
            params.items[0].as_ref().expect("valid item"),
            &BatchItem {
                digest: vec![3; 32],
                request_id: "a".into()
            }
        );
        let code = |i: usize| params.items[i].as_ref().expect_err("invalid item").code();
        assert_eq!(code(1), tonic::Code::InvalidArgument);
        assert_eq!(code(2), tonic::Code::InvalidArgument);
        assert_eq!(params.items[3].as_ref().expect("valid item").request_id, "");
    }

    #[test]
    fn batch_wide_problems_fail_the_batch() {
        let status = validate_batch(&batch(vec![]), &config()).expect_err("empty");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let mut config = config();
        config.max_batch = 2;
        let status = validate_batch(&batch(vec![(32, ""); 3]), &config).expect_err("too many");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("maximum is 2"),
            "{}",
            status.message()
        );
        let mut unknown = batch(vec![(32, "")]);
        unknown.key_name = "missing".into();
        assert_eq!(
            validate_batch(&unknown, &config)
                .expect_err("unknown key")
                .code(),
            tonic::Code::NotFound
        );
        let mut algorithm = batch(vec![(32, "")]);
        algorithm.hash_algorithm = 7;
        assert_eq!(
            validate_batch(&algorithm, &config)
                .expect_err("bad algorithm")
                .code(),
            tonic::Code::InvalidArgument
        );
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
