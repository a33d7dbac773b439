//! The private key cannot be read out of the token. This is a test binary of
//! its own because it loads SoftHSM into the test process, and SoftHSM reads
//! its configuration once per process.

mod common;

use common::TestToken;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

#[test]
fn private_key_cannot_be_read() {
    let token = TestToken::new(2048, "digest");
    let session = common::open_session(&token);

    let privates = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
        ])
        .expect("find");
    assert_eq!(privates.len(), 1);
    let private = privates[0];

    let flags = session
        .get_attributes(
            private,
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .expect("flags readable");
    assert!(flags.contains(&Attribute::Sensitive(true)), "{flags:?}");
    assert!(flags.contains(&Attribute::Extractable(false)), "{flags:?}");

    // Sensitive attributes come back as unavailable, so the binding omits them.
    let secret = session
        .get_attributes(
            private,
            &[
                AttributeType::PrivateExponent,
                AttributeType::Prime1,
                AttributeType::Prime2,
                AttributeType::Value,
            ],
        )
        .expect("C_GetAttributeValue answers");
    assert_eq!(secret, Vec::new(), "private key material was returned");

    // The modulus is public and readable from the same object.
    let public_part = session
        .get_attributes(private, &[AttributeType::Modulus])
        .expect("modulus readable");
    assert_eq!(public_part.len(), 1);
}
