//! Decodes arbitrary bytes as a protobuf `SignRequest`, the message that the
//! service receives, and validates it as `Sign` does before any PKCS#11
//! call.
//!
//! Invariants, from what `validate_sign` documents and returns:
//!
//! - it never panics;
//! - a rejection is `INVALID_ARGUMENT`, or `NOT_FOUND` for a non-empty key
//!   name that is not configured, and its message quotes at most 64
//!   characters of the key name;
//! - an accepted request keeps its digest, which is 32 bytes for
//!   `HASH_ALGORITHM_UNSPECIFIED` and `HASH_ALGORITHM_SHA256` and 48 bytes
//!   for `HASH_ALGORITHM_SHA384`;
//! - its key name is the configured default for an empty name, and is
//!   otherwise the requested name, which is configured;
//! - its request ID is the requested one: at most 128 bytes of printable
//!   ASCII without spaces;
//! - its encoding is P1363 only for `SIGNATURE_ENCODING_P1363`.
//!
//! Whether the digest length fits the key's algorithm is checked later,
//! when the key version is known, so it is not an invariant here.

#![no_main]

use std::sync::LazyLock;

use hallmark::config::Config;
use hallmark::grpc::{SignParams, validate_sign};
use hallmark::pb;
use hallmark::verify::algorithm::{SHA256_LEN, SHA384_LEN, SignatureEncoding};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;

/// Maximum request ID length that the protocol allows, in bytes
/// (`proto/hallmark/v1/signer.proto`).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Maximum accepted status message length, in bytes. The longest message
/// quotes 64 characters of the key name in Rust's `{:?}` form, where one
/// character takes at most 10 bytes (`\u{10ffff}`).
const MAX_MESSAGE_LEN: usize = 64 * 10 + 100;

static CONFIG: LazyLock<Config> = LazyLock::new(hallmark_fuzz::sign_request_config);

fuzz_target!(|data: &[u8]| {
    let Ok(request) = pb::SignRequest::decode(data) else {
        return;
    };
    match validate_sign(&request, &CONFIG) {
        Ok(params) => check_accepted(&request, &params),
        Err(status) => check_rejected(&request, &status),
    }
});

fn check_accepted(request: &pb::SignRequest, params: &SignParams) {
    let expected_len = match request.hash_algorithm {
        0 | 1 => SHA256_LEN,
        2 => SHA384_LEN,
        other => panic!("accepted unknown hash_algorithm {other}"),
    };
    assert_eq!(params.digest, request.digest, "the digest changed");
    assert_eq!(params.digest.len(), expected_len, "wrong digest length");

    if request.key_name.is_empty() {
        assert_eq!(params.key_name, CONFIG.default_key, "not the default key");
    } else {
        assert_eq!(
            params.key_name.as_str(),
            request.key_name,
            "key name changed"
        );
    }
    assert!(
        CONFIG.keys.contains_key(&params.key_name),
        "key name {:?} is not configured",
        params.key_name.as_str()
    );

    assert_eq!(params.request_id, request.request_id, "request ID changed");
    assert!(params.request_id.len() <= MAX_REQUEST_ID_LEN);
    assert!(params.request_id.bytes().all(|b| b.is_ascii_graphic()));

    let expected_encoding = match request.signature_encoding {
        0 | 1 => SignatureEncoding::Der,
        2 => SignatureEncoding::P1363,
        other => panic!("accepted unknown signature_encoding {other}"),
    };
    assert_eq!(params.encoding, expected_encoding);
}

fn check_rejected(request: &pb::SignRequest, status: &tonic::Status) {
    match status.code() {
        Code::InvalidArgument => {}
        Code::NotFound => assert!(
            !request.key_name.is_empty(),
            "NOT_FOUND for an empty key name: {status:?}"
        ),
        other => panic!("unexpected code {other:?}: {status:?}"),
    }
    assert!(!status.message().is_empty(), "empty status message");
    assert!(
        status.message().len() <= MAX_MESSAGE_LEN,
        "status message of {} bytes",
        status.message().len()
    );
}
