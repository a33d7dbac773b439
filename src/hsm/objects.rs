//! Finding, generating, relabelling and destroying signing key pairs in the
//! token: RSA, ECDSA on P-256 and P-384, and Ed25519.
//!
//! This module works with raw labels and IDs. What a label means is decided
//! by the key lifecycle layer, and which signature scheme a key signs with
//! is decided by the caller.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::{Date, Ulong};
use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::HsmError;

/// The RSA public exponent for new keys, 65537, as big-endian bytes.
const PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// CKA_EC_PARAMS of P-256: the DER OBJECT IDENTIFIER 1.2.840.10045.3.1.7.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// CKA_EC_PARAMS of P-384: the DER OBJECT IDENTIFIER 1.3.132.0.34.
const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// CKA_EC_PARAMS of Ed25519 as the DER OBJECT IDENTIFIER 1.3.101.112, the
/// identifier that RFC 8410 assigns. New keys are generated with this form.
const ED25519_OID_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// CKA_EC_PARAMS of Ed25519 as the DER PrintableString "edwards25519", the
/// curve-name form of PKCS#11 3.0. SoftHSM 2.6.1 accepts either form, keeps
/// the given one on the public key, and stores this one on the private key
/// in both cases (observed here), so reading accepts both forms.
const ED25519_NAME_PARAMS: [u8; 14] = [
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// Length of an Ed25519 public key.
const ED25519_POINT_LEN: usize = 32;

/// The type and size of a key pair to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA with a modulus of `bits` bits and public exponent 65537.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
    /// ECDSA key on NIST P-256 (secp256r1).
    EcP256,
    /// ECDSA key on NIST P-384 (secp384r1).
    EcP384,
    /// EdDSA key on edwards25519.
    Ed25519,
}

/// A short-Weierstrass curve that Hallmark generates ECDSA keys on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl EcCurve {
    /// Returns the length in bytes of a field element and of a scalar.
    pub fn field_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    /// Returns the JWK `crv` name (RFC 7518, section 6.2.1.1).
    pub fn jwk_name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }

    /// Returns CKA_EC_PARAMS for the curve: the DER encoding of its OID.
    fn params(self) -> &'static [u8] {
        match self {
            Self::P256 => &P256_PARAMS,
            Self::P384 => &P384_PARAMS,
        }
    }

    fn from_params(params: &[u8]) -> Option<Self> {
        if params == P256_PARAMS {
            Some(Self::P256)
        } else if params == P384_PARAMS {
            Some(Self::P384)
        } else {
            None
        }
    }

    /// Validates a SEC1 point, compressed or uncompressed, and returns it
    /// uncompressed. Returns `None` for the identity and for bytes that are
    /// not a point on the curve.
    fn uncompressed(self, sec1: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::P256 => p256::PublicKey::from_sec1_bytes(sec1)
                .ok()
                .map(|key| key.to_encoded_point(false).as_bytes().to_vec()),
            Self::P384 => p384::PublicKey::from_sec1_bytes(sec1)
                .ok()
                .map(|key| key.to_encoded_point(false).as_bytes().to_vec()),
        }
    }
}

/// The public half of a key pair, as read from the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKeyMaterial {
    /// An RSA public key.
    Rsa {
        /// Modulus, unsigned big-endian without leading zero bytes.
        modulus: Vec<u8>,
        /// Public exponent, unsigned big-endian without leading zero bytes.
        exponent: Vec<u8>,
    },
    /// An ECDSA public key.
    Ec {
        /// The curve.
        curve: EcCurve,
        /// The point in uncompressed SEC1 form: `04 || x || y`, with `x`
        /// and `y` each [`EcCurve::field_len`] bytes.
        point: Vec<u8>,
    },
    /// An Ed25519 public key.
    Ed25519 {
        /// The encoded point of RFC 8032, section 5.1.2.
        point: [u8; ED25519_POINT_LEN],
    },
}

impl PublicKeyMaterial {
    /// Returns the kind of key pair this public key belongs to.
    pub fn kind(&self) -> KeyKind {
        match self {
            Self::Rsa { modulus, .. } => KeyKind::Rsa {
                bits: significant_bits(modulus),
            },
            Self::Ec {
                curve: EcCurve::P256,
                ..
            } => KeyKind::EcP256,
            Self::Ec {
                curve: EcCurve::P384,
                ..
            } => KeyKind::EcP384,
            Self::Ed25519 { .. } => KeyKind::Ed25519,
        }
    }
}

/// A key pair in the token: the private key and its public half, linked by
/// an equal CKA_ID and CKA_LABEL.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// CKA_LABEL of the private key.
    pub label: String,
    /// CKA_ID shared by both objects.
    pub id: Vec<u8>,
    /// Handle of the private key.
    pub private: ObjectHandle,
    /// Handle of the public key.
    pub public: ObjectHandle,
    /// The public key.
    pub material: PublicKeyMaterial,
}

/// Lists the key pairs of every supported type whose private key label
/// starts with `prefix`.
///
/// Each private key must have exactly one public key of the same key type
/// with the same CKA_ID and label, and the public key must contain a key
/// that Hallmark can use. A missing or duplicated public key is an error, never a
/// guess. Private keys of types that Hallmark never generates (DSA, DH, ...)
/// are skipped.
pub fn list_pairs(session: &Session, prefix: &str) -> Result<Vec<KeyPair>, HsmError> {
    let listing = list_pairs_with_problems(session, prefix)?;
    match listing.problems.into_iter().next() {
        Some((_, error)) => Err(error),
        None => Ok(listing.pairs),
    }
}

/// The key pairs found in the token, and the objects that could not be
/// read as a pair.
#[derive(Debug, Default)]
pub struct Listing {
    /// Complete pairs.
    pub pairs: Vec<KeyPair>,
    /// The private key label and the error of each object that is not a
    /// usable pair.
    pub problems: Vec<(String, HsmError)>,
}

/// Lists pairs like [`list_pairs`], but records a defective object as a
/// problem instead of failing, so that one bad object cannot hide every
/// other key. A failure of the token itself still fails the listing.
pub fn list_pairs_with_problems(session: &Session, prefix: &str) -> Result<Listing, HsmError> {
    let privates = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
        ])
        .map_err(|e| HsmError::pkcs11("C_FindObjects", e))?;

    let mut listing = Listing::default();
    for private in privates {
        let header = match read_header(session, private) {
            Ok(header) => header,
            // The object was destroyed after the search found it.
            Err(error) if error.is_stale_handle() => continue,
            Err(error) => return Err(error),
        };
        if !header.label.starts_with(prefix) || !is_supported(header.key_type) {
            continue;
        }
        match read_pair(session, private, &header) {
            Ok(pair) => listing.pairs.push(pair),
            Err(error) if error.is_token_unavailable() && !error.is_stale_handle() => {
                return Err(error);
            }
            Err(error) => listing.problems.push((header.label.clone(), error)),
        }
    }
    Ok(listing)
}

fn read_pair(
    session: &Session,
    private: ObjectHandle,
    header: &Header,
) -> Result<KeyPair, HsmError> {
    let public = find_public(session, header.key_type, &header.label, &header.id)?;
    let material = read_material(session, header.key_type, public, &header.label)?;
    check_private_params(session, private, &material, &header.label)?;
    Ok(KeyPair {
        label: header.label.clone(),
        id: header.id.clone(),
        private,
        public,
        material,
    })
}

/// Generates a key pair inside the token.
///
/// The private key is a private, sensitive and not extractable token object
/// that can only sign, so its value can never leave the token. The public
/// key is a public token object that can only verify.
pub fn generate_pair(
    session: &Session,
    kind: KeyKind,
    label: &str,
    id: &[u8],
    start_date: Date,
) -> Result<KeyPair, HsmError> {
    let common = [
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::StartDate(start_date),
    ];
    let mut public_template = common.to_vec();
    public_template.extend([Attribute::Private(false), Attribute::Verify(true)]);
    let mut private_template = common.to_vec();
    private_template.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Derive(false),
    ]);

    let (mechanism, key_type) = match kind {
        KeyKind::Rsa { bits } => {
            public_template.extend([
                Attribute::ModulusBits(Ulong::from(u64::from(bits))),
                Attribute::PublicExponent(PUBLIC_EXPONENT.to_vec()),
            ]);
            private_template.push(Attribute::Decrypt(false));
            (Mechanism::RsaPkcsKeyPairGen, KeyType::RSA)
        }
        KeyKind::EcP256 | KeyKind::EcP384 => {
            let curve = if kind == KeyKind::EcP256 {
                EcCurve::P256
            } else {
                EcCurve::P384
            };
            public_template.push(Attribute::EcParams(curve.params().to_vec()));
            (Mechanism::EccKeyPairGen, KeyType::EC)
        }
        KeyKind::Ed25519 => {
            public_template.push(Attribute::EcParams(ED25519_OID_PARAMS.to_vec()));
            (Mechanism::EccEdwardsKeyPairGen, KeyType::EC_EDWARDS)
        }
    };

    let (public, private) = session
        .generate_key_pair(&mechanism, &public_template, &private_template)
        .map_err(|e| HsmError::pkcs11("C_GenerateKeyPair", e))?;
    let pair = read_material(session, key_type, public, label).map(|material| KeyPair {
        label: label.to_owned(),
        id: id.to_vec(),
        private,
        public,
        material,
    });
    match pair {
        Ok(pair) if pair.material.kind() == kind => Ok(pair),
        other => {
            // A pair that cannot be read back, or is not the requested kind,
            // would stay in the token unused. Destroying it is best effort:
            // the error that matters is the one returned below.
            let _ = session.destroy_object(private);
            let _ = session.destroy_object(public);
            match other {
                Err(error) => Err(error),
                Ok(pair) => Err(HsmError::MalformedObject {
                    label: label.to_owned(),
                    reason: format!(
                        "the token generated {:?} where {kind:?} was requested",
                        pair.material.kind()
                    ),
                }),
            }
        }
    }
}

/// Sets CKA_LABEL and CKA_ID on both objects of a pair. The private key is
/// written last, because its label is what marks a pair as complete.
pub fn relabel(
    session: &Session,
    pair: &mut KeyPair,
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

/// Destroys both objects of a pair, the private key first.
///
/// Listing starts from private keys, so if the second call fails, what
/// remains is a public key without a private key, which never signs and is
/// never listed as a pair.
pub fn destroy_pair(session: &Session, pair: &KeyPair) -> Result<(), HsmError> {
    for handle in [pair.private, pair.public] {
        session
            .destroy_object(handle)
            .map_err(|e| HsmError::pkcs11("C_DestroyObject", e))?;
    }
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

/// The attributes every private key is listed by.
struct Header {
    key_type: KeyType,
    label: String,
    id: Vec<u8>,
}

fn read_header(session: &Session, handle: ObjectHandle) -> Result<Header, HsmError> {
    let attributes = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::Label,
                AttributeType::Id,
            ],
        )
        .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))?;
    let mut key_type = None;
    let mut label = String::new();
    let mut id = Vec::new();
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(value) => key_type = Some(value),
            Attribute::Label(bytes) => label = String::from_utf8_lossy(&bytes).into_owned(),
            Attribute::Id(bytes) => id = bytes,
            _ => {}
        }
    }
    let key_type = key_type.ok_or_else(|| HsmError::MalformedObject {
        label: label.clone(),
        reason: "private key has no CKA_KEY_TYPE".into(),
    })?;
    Ok(Header {
        key_type,
        label,
        id,
    })
}

fn is_supported(key_type: KeyType) -> bool {
    key_type == KeyType::RSA || key_type == KeyType::EC || key_type == KeyType::EC_EDWARDS
}

fn find_public(
    session: &Session,
    key_type: KeyType,
    label: &str,
    id: &[u8],
) -> Result<ObjectHandle, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| HsmError::pkcs11("C_FindObjects", e))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::MalformedObject {
            label: label.to_owned(),
            reason: "no public key of the same type with the same CKA_ID and label".into(),
        }),
        many => Err(HsmError::Ambiguous {
            what: format!("public key {label:?}"),
            count: many.len(),
        }),
    }
}

/// Reads the public key of `key_type` from the public key object.
fn read_material(
    session: &Session,
    key_type: KeyType,
    public: ObjectHandle,
    label: &str,
) -> Result<PublicKeyMaterial, HsmError> {
    let malformed = |reason: &str| HsmError::MalformedObject {
        label: label.to_owned(),
        reason: reason.to_owned(),
    };
    if key_type == KeyType::RSA {
        let attributes = session
            .get_attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))?;
        let mut modulus = Vec::new();
        let mut exponent = Vec::new();
        for attribute in attributes {
            match attribute {
                Attribute::Modulus(bytes) => modulus = strip_leading_zeros(bytes),
                Attribute::PublicExponent(bytes) => exponent = strip_leading_zeros(bytes),
                _ => {}
            }
        }
        if modulus.is_empty() || exponent.is_empty() {
            return Err(malformed(
                "public key lacks CKA_MODULUS or CKA_PUBLIC_EXPONENT",
            ));
        }
        return Ok(PublicKeyMaterial::Rsa { modulus, exponent });
    }

    let attributes = session
        .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))?;
    let mut params = Vec::new();
    let mut point = Vec::new();
    for attribute in attributes {
        match attribute {
            Attribute::EcParams(bytes) => params = bytes,
            Attribute::EcPoint(bytes) => point = bytes,
            _ => {}
        }
    }
    if params.is_empty() || point.is_empty() {
        return Err(malformed("public key lacks CKA_EC_PARAMS or CKA_EC_POINT"));
    }
    if key_type == KeyType::EC_EDWARDS {
        if !is_ed25519_params(&params) {
            return Err(malformed(
                "CKA_EC_PARAMS names an Edwards curve other than edwards25519",
            ));
        }
        let point = decode_ec_point(&point, |bytes| {
            <[u8; ED25519_POINT_LEN]>::try_from(bytes).ok()
        })
        .ok_or_else(|| malformed("CKA_EC_POINT is not a 32-byte Ed25519 public key"))?;
        return Ok(PublicKeyMaterial::Ed25519 { point });
    }
    let curve = EcCurve::from_params(&params)
        .ok_or_else(|| malformed("CKA_EC_PARAMS names a curve other than P-256 or P-384"))?;
    let point = decode_ec_point(&point, |bytes| curve.uncompressed(bytes))
        .ok_or_else(|| malformed("CKA_EC_POINT is not a point on the key's curve"))?;
    Ok(PublicKeyMaterial::Ec { curve, point })
}

/// Checks that an EC private key is on the same curve as its public key.
/// RSA private keys carry nothing to compare.
fn check_private_params(
    session: &Session,
    private: ObjectHandle,
    material: &PublicKeyMaterial,
    label: &str,
) -> Result<(), HsmError> {
    if matches!(material, PublicKeyMaterial::Rsa { .. }) {
        return Ok(());
    }
    let attributes = session
        .get_attributes(private, &[AttributeType::EcParams])
        .map_err(|e| HsmError::pkcs11("C_GetAttributeValue", e))?;
    let same_curve = attributes
        .iter()
        .any(|attribute| match (attribute, material) {
            (Attribute::EcParams(params), PublicKeyMaterial::Ec { curve, .. }) => {
                EcCurve::from_params(params) == Some(*curve)
            }
            (Attribute::EcParams(params), PublicKeyMaterial::Ed25519 { .. }) => {
                is_ed25519_params(params)
            }
            _ => false,
        });
    if same_curve {
        Ok(())
    } else {
        Err(HsmError::MalformedObject {
            label: label.to_owned(),
            reason: "the private key's CKA_EC_PARAMS do not match its public key's".into(),
        })
    }
}

fn is_ed25519_params(params: &[u8]) -> bool {
    params == ED25519_OID_PARAMS || params == ED25519_NAME_PARAMS
}

/// Decodes CKA_EC_POINT, which PKCS#11 2.40 defines as a DER OCTET STRING
/// that contains the point, and which a token may also return bare.
/// SoftHSM 2.6.1 returns the DER form for P-256, P-384 and Ed25519.
///
/// `accept` turns the bare point into the result, or rejects it. The DER
/// form is tried first and used only if its content is accepted. A bare
/// point of a valid length is never also a DER OCTET STRING with valid
/// content, because the two differ in length by the two-byte header.
fn decode_ec_point<T>(value: &[u8], accept: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
    der_octet_string(value)
        .and_then(&accept)
        .or_else(|| accept(value))
}

/// Returns the content of a DER OCTET STRING that spans all of `value`.
fn der_octet_string(value: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = value.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, content) = match first {
        0..=0x7f => (usize::from(first), rest),
        // One length byte, as DER requires for lengths 128 to 255.
        0x81 => {
            let (&len, content) = rest.split_first()?;
            if len < 0x80 {
                return None;
            }
            (usize::from(len), content)
        }
        // Points of the supported curves are shorter than 256 bytes.
        _ => return None,
    };
    (content.len() == len).then_some(content)
}

/// Drops leading zero bytes, because PKCS#11 big integers may carry them.
fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.drain(..first);
    bytes
}

/// Counts the significant bits of a big-endian unsigned integer.
fn significant_bits(value: &[u8]) -> u32 {
    match value.iter().position(|&b| b != 0) {
        None => 0,
        Some(first) => {
            let rest = u32::try_from(value.len() - first - 1)
                .unwrap_or(u32::MAX / 8)
                .saturating_mul(8);
            rest.saturating_add(8 - value[first].leading_zeros())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zeros_are_dropped() {
        assert_eq!(strip_leading_zeros(vec![0, 0, 1, 0]), vec![1, 0]);
        assert_eq!(strip_leading_zeros(vec![0x80]), vec![0x80]);
        assert_eq!(strip_leading_zeros(vec![0, 0]), Vec::<u8>::new());
    }

    #[test]
    fn significant_bits_are_counted() {
        assert_eq!(significant_bits(&[0x80, 0, 0]), 24);
        assert_eq!(significant_bits(&[0, 0x01, 0]), 9);
        assert_eq!(significant_bits(&[]), 0);
    }

    /// The generator of P-256 (SEC 2, section 2.4.2), a valid public point.
    fn p256_generator() -> Vec<u8> {
        let mut point = vec![0x04];
        point.extend(hex(
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
        ));
        point.extend(hex(
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        ));
        point
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_default())
            .collect()
    }

    fn wrap(point: &[u8]) -> Vec<u8> {
        let mut der = vec![0x04];
        if point.len() >= 0x80 {
            der.push(0x81);
        }
        der.push(point.len() as u8);
        der.extend_from_slice(point);
        der
    }

    #[test]
    fn ec_point_is_read_raw_or_wrapped() {
        let point = p256_generator();
        let accept = |bytes: &[u8]| EcCurve::P256.uncompressed(bytes);
        assert_eq!(decode_ec_point(&point, accept), Some(point.clone()));
        assert_eq!(decode_ec_point(&wrap(&point), accept), Some(point.clone()));

        // The compressed form of the generator (y is odd) is widened.
        let mut compressed = vec![0x03];
        compressed.extend_from_slice(&point[1..33]);
        assert_eq!(decode_ec_point(&compressed, accept), Some(point.clone()));
        assert_eq!(
            decode_ec_point(&wrap(&compressed), accept),
            Some(point.clone())
        );

        // A point off the curve, a truncated point and a wrong DER length
        // are each rejected.
        let mut off_curve = point.clone();
        off_curve[64] ^= 1;
        assert_eq!(decode_ec_point(&off_curve, accept), None);
        assert_eq!(decode_ec_point(&wrap(&off_curve), accept), None);
        assert_eq!(decode_ec_point(&point[..64], accept), None);
        let mut bad_len = wrap(&point);
        bad_len[1] = 0x40;
        assert_eq!(decode_ec_point(&bad_len, accept), None);
    }

    #[test]
    fn ed25519_point_is_read_raw_or_wrapped() {
        let accept = |bytes: &[u8]| <[u8; 32]>::try_from(bytes).ok();
        // A bare key that happens to start like an OCTET STRING header.
        let mut raw = [0x5a; 32];
        raw[0] = 0x04;
        raw[1] = 0x1e;
        assert_eq!(decode_ec_point(&raw, accept), Some(raw));
        assert_eq!(decode_ec_point(&wrap(&raw), accept), Some(raw));
        assert_eq!(decode_ec_point(&raw[..31], accept), None);
    }

    #[test]
    fn long_form_der_length_is_read() {
        let content = vec![0xab; 200];
        assert_eq!(der_octet_string(&wrap(&content)), Some(content.as_slice()));
        // Long form for a length under 128 is not DER.
        assert_eq!(der_octet_string(&[0x04, 0x81, 0x01, 0x00]), None);
        assert_eq!(der_octet_string(&[0x04]), None);
        assert_eq!(der_octet_string(&[0x30, 0x00]), None);
    }

    #[test]
    fn curve_params_are_recognized() {
        assert_eq!(EcCurve::from_params(&P256_PARAMS), Some(EcCurve::P256));
        assert_eq!(EcCurve::from_params(&P384_PARAMS), Some(EcCurve::P384));
        assert_eq!(EcCurve::from_params(&ED25519_OID_PARAMS), None);
        assert!(is_ed25519_params(&ED25519_OID_PARAMS));
        assert!(is_ed25519_params(&ED25519_NAME_PARAMS));
        assert!(!is_ed25519_params(&P256_PARAMS));
    }

    #[test]
    fn material_reports_its_kind() {
        let rsa = PublicKeyMaterial::Rsa {
            modulus: vec![0x80; 256],
            exponent: PUBLIC_EXPONENT.to_vec(),
        };
        assert_eq!(rsa.kind(), KeyKind::Rsa { bits: 2048 });
        let ec = PublicKeyMaterial::Ec {
            curve: EcCurve::P384,
            point: Vec::new(),
        };
        assert_eq!(ec.kind(), KeyKind::EcP384);
    }
}
