//! A token that contains two objects where there must be one: the key name
//! stops signing with FAILED_PRECONDITION instead of guessing, and the rest
//! of the token stays usable. Its own test binary, because it loads SoftHSM
//! into the test process to copy an object.

mod common;

use common::{TestServer, TestToken};
use cryptoki::object::{Attribute, ObjectClass};
use hallmark::pb::{self, SignRequest};
use tonic::Code;

#[tokio::test]
async fn duplicate_public_key_stops_signing() {
    let token = TestToken::new(2048, "digest");
    token.append_config("\n[keys.other]\nbits = 2048\n");
    let created = token.hallmark(&["keys", "create", "--name", "other"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    // Copy the public key of "other" version 1, label and ID included.
    let session = common::open_session(&token);
    let publics = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
        .expect("find");
    let other_public = publics
        .into_iter()
        .find(|handle| {
            let attributes = session
                .get_attributes(*handle, &[cryptoki::object::AttributeType::Label])
                .expect("label");
            matches!(&attributes[..], [Attribute::Label(label)]
                if String::from_utf8_lossy(label).contains("name=other;"))
        })
        .expect("public key of other");
    session
        .copy_object(other_public, &[])
        .expect("copy the public key");
    drop(session);

    let server = TestServer::start(&token);
    let mut client = server.client().await;
    let status = client
        .sign(SignRequest {
            digest: vec![1; 32],
            hash_algorithm: 0,
            key_name: "other".into(),
            request_id: String::new(),
            signature_encoding: 0,
        })
        .await
        .expect_err("two public keys for one version");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("2 objects match public key"),
        "{}",
        status.message()
    );

    // The default key still signs.
    let response = client
        .sign(SignRequest {
            digest: vec![1; 32],
            hash_algorithm: 0,
            key_name: String::new(),
            request_id: String::new(),
            signature_encoding: 0,
        })
        .await
        .expect("the default key signs");
    assert_eq!(response.into_inner().key.expect("key").key_name, "default");

    let listed = token.hallmark(&["keys", "list", "--json"]);
    assert!(listed.status.success());
    let warnings = String::from_utf8_lossy(&listed.stderr);
    assert!(warnings.contains("warning: key object"), "{warnings}");
    assert!(
        warnings.contains("2 objects match public key"),
        "{warnings}"
    );
    let keys = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("ListKeys succeeds")
        .into_inner()
        .keys;
    let names: Vec<&str> = keys.iter().map(|k| k.key_name.as_str()).collect();
    assert_eq!(
        names,
        vec!["default"],
        "the defective pair is not published"
    );
    drop(server);
}
