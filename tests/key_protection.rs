//! The private key cannot be read out of the token. This is a test binary of
//! its own because it loads SoftHSM into the test process, and SoftHSM reads
//! its configuration once per process.

mod common;

use common::TestToken;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

#[test]
fn private_key_cannot_be_read() {
    let token = TestToken::new(2048, "digest");
    let dir = token.dir.path();
    let config = std::fs::read_to_string(token.config()).expect("config");
    let module = config
        .lines()
        .find_map(|l| l.strip_prefix("module = "))
        .expect("module line")
        .trim_matches('"')
        .to_owned();
    // SAFETY: this binary runs one test, so no other thread reads the
    // environment while it is set.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
    };
    let pin = std::fs::read_to_string(dir.join("user.pin")).expect("pin");

    let pkcs11 = Pkcs11::new(module).expect("module loads");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("initialize");
    let slot = pkcs11.get_slots_with_token().expect("slots")[0];
    let session = pkcs11.open_ro_session(slot).expect("session");
    session
        .login(UserType::User, Some(&AuthPin::from(pin.trim())))
        .expect("login");

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
