//! Finding, generating and relabelling RSA key pairs in the token.
//!
//! This module works with raw labels and IDs. What a label means is decided
//! by [`crate::keys::label`].

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::{Date, Ulong};

use super::HsmError;

/// The RSA public exponent for new keys, 65537, as big-endian bytes.
const PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// An RSA key pair in the token: the private key and its public half,
/// linked by an equal CKA_ID.
#[derive(Clone, Debug)]
pub struct RsaKeyPair {
    /// CKA_LABEL of the private key.
    pub label: String,
    /// CKA_ID shared by both objects.
    pub id: Vec<u8>,
    /// Handle of the private key.
    pub private: ObjectHandle,
    /// Handle of the public key.
    pub public: ObjectHandle,
    /// Modulus, unsigned big-endian without leading zero bytes.
    pub modulus: Vec<u8>,
    /// Public exponent, unsigned big-endian without leading zero bytes.
    pub exponent: Vec<u8>,
}

/// Lists the RSA key pairs whose private key label starts with `prefix`.
///
/// Each private key must have exactly one public key with the same CKA_ID
/// and label. A missing or duplicated public key is an error, never a guess.
pub fn list_rsa_pairs(session: &Session, prefix: &str) -> Result<Vec<RsaKeyPair>, HsmError> {
    let privates = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
        ])
        .map_err(|e| HsmError::pkcs11("C_FindObjects", e))?;

    let mut pairs = Vec::new();
    for private in privates {
        let (label, id) = label_and_id(session, private)?;
        if !label.starts_with(prefix) {
            continue;
        }
        let public = find_public(session, &label, &id)?;
        let (modulus, exponent) = public_numbers(session, public, &label)?;
        pairs.push(RsaKeyPair {
            label,
            id,
            private,
            public,
            modulus,
            exponent,
        });
    }
    Ok(pairs)
}

/// Generates an RSA key pair inside the token.
///
/// The private key is sensitive and not extractable, so its value can never
/// leave the token. Both objects are token objects that persist.
pub fn generate_rsa_pair(
    session: &Session,
    bits: u32,
    label: &str,
    id: &[u8],
    start_date: Date,
) -> Result<RsaKeyPair, HsmError> {
    let common = [
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::StartDate(start_date),
    ];
    let mut public_template = common.to_vec();
    public_template.extend([
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::ModulusBits(Ulong::from(u64::from(bits))),
        Attribute::PublicExponent(PUBLIC_EXPONENT.to_vec()),
    ]);
    let mut private_template = common.to_vec();
    private_template.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
    ]);
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(|e| HsmError::pkcs11("C_GenerateKeyPair", e))?;
    let (modulus, exponent) = public_numbers(session, public, label)?;
    Ok(RsaKeyPair {
        label: label.to_owned(),
        id: id.to_vec(),
        private,
        public,
        modulus,
        exponent,
    })
}

/// Sets CKA_LABEL and CKA_ID on both objects of a pair. The private key is
/// written last, because its label is what marks a pair as complete.
pub fn relabel(
    session: &Session,
    pair: &mut RsaKeyPair,
    label: &str,
    id: &[u8],
) -> Result<(), HsmError> {
    let template = [
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    for handle in [pair.public, pair.private] {
        session
            .update_attributes(handle, &template)
            .map_err(|e| HsmError::pkcs11("C_SetAttributeValue", e))?;
    }
    pair.label = label.to_owned();
    pair.id = id.to_vec();
    Ok(())
}

/// Reads whether the private key is sensitive and extractable.
pub fn private_key_protection(
    session: &Session,
    private: ObjectHandle,
) -> Result<(bool, bool), HsmError> {
    let attributes = session
        .get_attributes(
            private,
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))?;
    let mut sensitive = false;
    let mut extractable = true;
    for attribute in attributes {
        match attribute {
            Attribute::Sensitive(value) => sensitive = value,
            Attribute::Extractable(value) => extractable = value,
            _ => {}
        }
    }
    Ok((sensitive, extractable))
}

fn label_and_id(session: &Session, handle: ObjectHandle) -> Result<(String, Vec<u8>), HsmError> {
    let attributes = session
        .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
        .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))?;
    let mut label = String::new();
    let mut id = Vec::new();
    for attribute in attributes {
        match attribute {
            Attribute::Label(bytes) => label = String::from_utf8_lossy(&bytes).into_owned(),
            Attribute::Id(bytes) => id = bytes,
            _ => {}
        }
    }
    Ok((label, id))
}

fn find_public(session: &Session, label: &str, id: &[u8]) -> Result<ObjectHandle, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| HsmError::pkcs11("C_FindObjects", e))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::MalformedObject {
            label: label.to_owned(),
            reason: "no public key with the same CKA_ID and label".into(),
        }),
        many => Err(HsmError::Ambiguous {
            what: format!("public key {label:?}"),
            count: many.len(),
        }),
    }
}

fn public_numbers(
    session: &Session,
    public: ObjectHandle,
    label: &str,
) -> Result<(Vec<u8>, Vec<u8>), HsmError> {
    let attributes = session
        .get_attributes(
            public,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))?;
    let mut modulus = None;
    let mut exponent = None;
    for attribute in attributes {
        match attribute {
            Attribute::Modulus(bytes) => modulus = Some(strip_leading_zeros(bytes)),
            Attribute::PublicExponent(bytes) => exponent = Some(strip_leading_zeros(bytes)),
            _ => {}
        }
    }
    match (modulus, exponent) {
        (Some(m), Some(e)) if !m.is_empty() && !e.is_empty() => Ok((m, e)),
        _ => Err(HsmError::MalformedObject {
            label: label.to_owned(),
            reason: "public key lacks CKA_MODULUS or CKA_PUBLIC_EXPONENT".into(),
        }),
    }
}

/// Drops leading zero bytes, because PKCS#11 big integers may carry them.
fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.drain(..first);
    bytes
}

#[cfg(test)]
mod tests {
    use super::strip_leading_zeros;

    #[test]
    fn leading_zeros_are_dropped() {
        assert_eq!(strip_leading_zeros(vec![0, 0, 1, 0]), vec![1, 0]);
        assert_eq!(strip_leading_zeros(vec![0x80]), vec![0x80]);
        assert_eq!(strip_leading_zeros(vec![0, 0]), Vec::<u8>::new());
    }
}
