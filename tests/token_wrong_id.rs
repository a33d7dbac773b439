//! A key pair whose CKA_ID is not its thumbprint: the service and the
//! lifecycle both skip it, so `keys rotate` gives the name a new version
//! instead of reporting that nothing is due. Its own test binary, because
//! it loads SoftHSM into the test process to alter the objects.

mod common;

use std::time::Duration;

use common::{TestServer, TestToken};
use cryptoki::object::{Attribute, ObjectClass};
use hallmark::pb::SignRequest;
use tonic::Code;

fn sign_request() -> SignRequest {
    SignRequest {
        digest: vec![2; 32],
        hash_algorithm: 0,
        key_name: String::new(),
        request_id: String::new(),
        signature_encoding: 0,
    }
}

#[tokio::test]
async fn wrong_id_is_skipped_by_service_and_cli() {
    let token = TestToken::new(2048, "digest");
    let session = common::open_session(&token);
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for handle in session
            .find_objects(&[Attribute::Class(class)])
            .expect("find")
        {
            session
                .update_attributes(handle, &[Attribute::Id(vec![0, 1, 2, 3])])
                .expect("CKA_ID set");
        }
    }
    drop(session);

    // Without a usable default key the service starts only when configured to
    // wait for one.
    let config = std::fs::read_to_string(token.config()).expect("config");
    let config = config.replace("[signing]\n", "[signing]\nwait_for_default_key = true\n");
    std::fs::write(token.config(), config).expect("config written");
    let server = TestServer::start_with(
        &token,
        "127.0.0.1:0",
        &[("HALLMARK_REFRESH_INTERVAL", "200ms")],
    );
    let mut client = server.client().await;
    let status = client
        .sign(sign_request())
        .await
        .expect_err("no usable version");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let output = token.hallmark(&["keys", "rotate"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("created default version 2 ("),
        "{stdout}"
    );
    assert!(stdout.ends_with(") as active\n"), "{stdout}");

    server.wait_serving(Duration::from_secs(10)).await;
    let response = client.sign(sign_request()).await.expect("version 2 signs");
    assert_eq!(response.into_inner().key.expect("key").version, 2);
}
