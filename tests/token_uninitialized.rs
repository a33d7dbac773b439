//! SoftHSM always shows one free slot whose token is not initialized and
//! has a blank label and serial number. The configuration rejects an empty
//! selector, so this test gives one to the HSM layer directly and checks
//! that the token is found, reported as not initialized, and mapped to
//! exit code 69 (EX_UNAVAILABLE). Its own test binary, because it loads
//! SoftHSM into the test process.

mod common;

use std::collections::BTreeMap;

use common::TestToken;
use hallmark::config::{self, Overrides};
use hallmark::hsm::{HsmError, Token};

#[test]
fn blank_selector_finds_uninitialized_token() {
    let token = TestToken::without_key();
    let mut loaded = config::load(&token.config(), &BTreeMap::new(), &Overrides::default())
        .expect("the test token's configuration is valid");
    loaded.hsm.token.label = None;
    loaded.hsm.token.serial = Some(String::new());
    // SAFETY: this binary runs one test, so no other thread reads the
    // environment while it is set.
    #[allow(unsafe_code)]
    unsafe {
        hallmark::hsm::apply_module_env(&loaded.hsm.module_env)
    };

    let error = match Token::open(&loaded.hsm) {
        Ok(_) => panic!("the uninitialized token opened"),
        Err(error) => error,
    };

    assert!(
        matches!(&error, HsmError::TokenNotInitialized { label, serial }
            if label.is_empty() && serial.is_empty()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "token \"\" (serial \"\") is not initialized; initialize it first"
    );
    assert_eq!(hallmark::cli::hsm_exit_code(&error), 69);
}
