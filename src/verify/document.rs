//! The signed output document: its parsing, with every field checked for
//! presence, type and form, and its assembly for producers.
//!
//! ```json
//! {"output": {...}, "signature": "hex", "signing_key_id": "key ID",
//!  "key_version": 3, "algorithm": "ecdsa-p256-sha256",
//!  "canonicalization": "jcs", "signed_at": "RFC 3339",
//!  "signature_encoding": "der"}
//! ```
//!
//! Only `output`, `signature` and `signing_key_id` are required, so that
//! documents of the original three-field shape still verify; their
//! canonicalization is `python-sort-keys`. A `null` optional field counts as
//! absent, and unknown fields are ignored. `signed_at` is informational: the
//! signature does not cover it, and the manifest's own timestamp is what
//! freshness is checked against.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::algorithm::{Algorithm, SignatureEncoding};
use crate::canon::Profile;

/// A signed output whose fields have been checked for form.
#[derive(Debug)]
pub struct SignedOutput<'a> {
    /// The manifest's JSON text, exactly as it appears in the document.
    pub output: &'a str,
    /// The signature bytes.
    pub signature: Vec<u8>,
    /// The key ID that the document names.
    pub signing_key_id: String,
    /// The key version that the document names, if any.
    pub key_version: Option<u32>,
    /// The algorithm that the document names, if any.
    pub algorithm: Option<Algorithm>,
    /// The canonical serialization that the signature covers.
    pub canonicalization: Profile,
    /// The ECDSA signature encoding that the document names, if any.
    pub signature_encoding: Option<SignatureEncoding>,
}

impl<'a> SignedOutput<'a> {
    /// Parses a signed output document.
    ///
    /// # Errors
    ///
    /// A message for the first field that is missing, repeated, of the
    /// wrong type or of the wrong form.
    pub fn parse(text: &'a str) -> Result<Self, String> {
        let whole: &RawValue = serde_json::from_str(text)
            .map_err(|e| format!("the signed output is not JSON: {e}"))?;
        if !whole.get().starts_with('{') {
            return Err(format!(
                "the signed output is {}, expected a JSON object",
                kind(whole)
            ));
        }
        let Members(members) = serde_json::from_str(whole.get())
            .map_err(|e| format!("the signed output is not valid: {e}"))?;
        let missing: Vec<&str> = ["output", "signature", "signing_key_id"]
            .into_iter()
            .filter(|name| !members.contains_key(*name))
            .collect();
        if !missing.is_empty() {
            return Err(format!("the signed output has no {}", missing.join(", ")));
        }
        let output = members["output"].get();
        if !output.starts_with('{') {
            return Err(format!(
                "output is {}, expected an object",
                kind(members["output"])
            ));
        }
        let signature = match value("signature", members["signature"])? {
            Value::String(hex) => decode_hex(&hex),
            _ => None,
        }
        .ok_or("signature must be a non-empty hex string of whole bytes")?;
        let signing_key_id = match value("signing_key_id", members["signing_key_id"])? {
            Value::String(id) if !id.is_empty() => id,
            other => {
                return Err(format!(
                    "signing_key_id must be a non-empty string, got {}",
                    short(&other)
                ));
            }
        };
        let optional = |name: &str| -> Result<Option<Value>, String> {
            match members.get(name) {
                Some(raw) => Ok(Some(value(name, raw)?).filter(|v| !v.is_null())),
                None => Ok(None),
            }
        };
        let key_version = match optional("key_version")? {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|&n| n >= 1)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        format!(
                            "key_version must be an integer from 1 to {}, got {}",
                            u32::MAX,
                            short(&v)
                        )
                    })?,
            ),
        };
        let algorithm = match optional("algorithm")? {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| Algorithm::parse(s).ok())
                    .ok_or_else(|| {
                        format!(
                            "algorithm {} is unknown; expected one of {}",
                            short(&v),
                            Algorithm::ALL.map(Algorithm::as_str).join(", ")
                        )
                    })?,
            ),
        };
        let canonicalization = match optional("canonicalization")? {
            None => Profile::PythonSortKeys,
            Some(v) => v
                .as_str()
                .and_then(|s| Profile::parse(s).ok())
                .ok_or_else(|| {
                    format!(
                        "canonicalization {} is unknown; expected jcs or python-sort-keys",
                        short(&v)
                    )
                })?,
        };
        let signature_encoding = match optional("signature_encoding")? {
            None => None,
            Some(v) => Some(match v.as_str() {
                Some("der") => SignatureEncoding::Der,
                Some("p1363") => SignatureEncoding::P1363,
                _ => {
                    return Err(format!(
                        "signature_encoding {} is unknown; expected der or p1363",
                        short(&v)
                    ));
                }
            }),
        };
        Ok(Self {
            output,
            signature,
            signing_key_id,
            key_version,
            algorithm,
            canonicalization,
            signature_encoding,
        })
    }
}

/// The fields of a signed output that a producer fills in.
#[derive(Debug)]
pub struct NewSignedOutput<'a> {
    /// The manifest's JSON text; insignificant whitespace is removed and
    /// everything else, number spellings included, is kept.
    pub output: &'a str,
    /// The signature bytes.
    pub signature: &'a [u8],
    /// The key ID of the signing version.
    pub signing_key_id: &'a str,
    /// The signing version's number.
    pub key_version: u32,
    /// The signing version's algorithm.
    pub algorithm: Algorithm,
    /// The canonical serialization that was signed.
    pub canonicalization: Profile,
    /// When the signature was made, in RFC 3339.
    pub signed_at: &'a str,
    /// The ECDSA signature encoding; ignored for other algorithms.
    pub signature_encoding: SignatureEncoding,
}

impl NewSignedOutput<'_> {
    /// Writes the document as one line of JSON with the fields in the
    /// documented order.
    pub fn to_json(&self) -> String {
        let quote = |text: &str| Value::String(text.to_owned()).to_string();
        let mut json = format!(
            "{{\"output\":{},\"signature\":\"{}\",\"signing_key_id\":{},\"key_version\":{},\
             \"algorithm\":\"{}\",\"canonicalization\":\"{}\",\"signed_at\":{}",
            compact_json(self.output),
            encode_hex(self.signature),
            quote(self.signing_key_id),
            self.key_version,
            self.algorithm,
            self.canonicalization.as_str(),
            quote(self.signed_at),
        );
        if self.algorithm.is_ecdsa() {
            let encoding = match self.signature_encoding {
                SignatureEncoding::Der => "der",
                SignatureEncoding::P1363 => "p1363",
            };
            json.push_str(&format!(",\"signature_encoding\":\"{encoding}\""));
        }
        json.push('}');
        json
    }
}

/// Removes the whitespace between the tokens of valid JSON text, leaving
/// numbers as written and strings with the same value.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            // JSON allows these two raw in strings, but many line-based
            // readers (and JavaScript before ES2019) treat them as line
            // breaks. Escaping them leaves the string's value unchanged.
            match c {
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                _ => out.push(c),
            }
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Encodes bytes as lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes non-empty hex of whole bytes, in either case.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// The members of a JSON object, refusing a repeated name: parsers
/// disagree on which value wins, so a producer and a verifier could read
/// different documents.
struct Members<'a>(BTreeMap<String, &'a RawValue>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut members = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    if members.insert(name.clone(), value).is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "the member {name:?} appears twice"
                        )));
                    }
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

/// Parses a member's value. Valid JSON text can still fail here: a lone
/// surrogate escape has no Rust string, and a number such as `1e400` has no
/// double. Either makes the document malformed, never a missing field.
fn value(name: &str, raw: &RawValue) -> Result<Value, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("{name} is not a valid value: {e}"))
}

/// Names the JSON type of a raw value for messages.
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Quotes a value for a message, cut short when long.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"output": {"a": 1}, "signature": "00ff", "signing_key_id": "k"}"#;

    #[test]
    fn the_plain_shape_parses() {
        let parsed = SignedOutput::parse(MINIMAL).expect("valid document");
        assert_eq!(parsed.output, r#"{"a": 1}"#);
        assert_eq!(parsed.signature, [0x00, 0xff]);
        assert_eq!(parsed.signing_key_id, "k");
        assert_eq!(parsed.canonicalization, Profile::PythonSortKeys);
        assert_eq!(parsed.key_version, None);
        assert_eq!(parsed.algorithm, None);
        assert_eq!(parsed.signature_encoding, None);
    }

    #[test]
    fn every_field_is_read() {
        let text = r#"{"output":{"t":"x"},"signature":"ABcd","signing_key_id":"k",
            "key_version":7,"algorithm":"ecdsa-p384-sha384","canonicalization":"jcs",
            "signed_at":"2026-01-01T00:00:00Z","signature_encoding":"p1363","extra":[1]}"#;
        let parsed = SignedOutput::parse(text).expect("valid document");
        assert_eq!(parsed.signature, [0xab, 0xcd]);
        assert_eq!(parsed.key_version, Some(7));
        assert_eq!(parsed.algorithm, Some(Algorithm::EcdsaP384Sha384));
        assert_eq!(parsed.canonicalization, Profile::Jcs);
        assert_eq!(parsed.signature_encoding, Some(SignatureEncoding::P1363));
    }

    #[test]
    fn malformed_fields_are_named() {
        let cases = [
            (
                "[]",
                "the signed output is an array, expected a JSON object",
            ),
            (
                "{\"output\": {}",
                "the signed output is not JSON: EOF while parsing an object at line 1 column 13",
            ),
            (
                r#"{"output": {}}"#,
                "the signed output has no signature, signing_key_id",
            ),
            (
                r#"{"output": [], "signature": "00", "signing_key_id": "k"}"#,
                "output is an array, expected an object",
            ),
            (
                r#"{"output": {}, "signature": "0", "signing_key_id": "k"}"#,
                "signature must be a non-empty hex string of whole bytes",
            ),
            (
                r#"{"output": {}, "signature": "zz", "signing_key_id": "k"}"#,
                "signature must be a non-empty hex string of whole bytes",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": ""}"#,
                "signing_key_id must be a non-empty string, got \"\"",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "key_version": 1.0}"#,
                "key_version must be an integer from 1 to 4294967295, got 1.0",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "key_version": 0}"#,
                "key_version must be an integer from 1 to 4294967295, got 0",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "algorithm": "rsa"}"#,
                "algorithm \"rsa\" is unknown; expected one of rsa-pss-sha256, rsa-pkcs1-sha256, \
                 ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "canonicalization": "json"}"#,
                "canonicalization \"json\" is unknown; expected jcs or python-sort-keys",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "signature_encoding": "raw"}"#,
                "signature_encoding \"raw\" is unknown; expected der or p1363",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "signature": "01"}"#,
                "the signed output is not valid: the member \"signature\" appears twice at line 1 column 75",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                SignedOutput::parse(text).map(|_| ()),
                Err(expected.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let text = r#"{"output": {}, "signature": "00", "signing_key_id": "k",
            "key_version": null, "canonicalization": null}"#;
        let parsed = SignedOutput::parse(text).expect("valid document");
        assert_eq!(parsed.key_version, None);
        assert_eq!(parsed.canonicalization, Profile::PythonSortKeys);
    }

    #[test]
    fn compaction_keeps_strings_and_numbers() {
        let text = "{ \"a b\" : [ 1.50 , 1E+2 ],\n\t\"q\\\" x\" : \"\\\\ \" }";
        assert_eq!(
            compact_json(text),
            "{\"a b\":[1.50,1E+2],\"q\\\" x\":\"\\\\ \"}"
        );
        let separators = "{\"a\": \"x\u{2028}y\u{2029}\"}";
        assert_eq!(compact_json(separators), r#"{"a":"x\u2028y\u2029"}"#);
    }

    #[test]
    fn unreadable_values_are_malformed() {
        let cases = [
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "algorithm": "\ud800"}"#,
                "algorithm is not a valid value: unexpected end of hex escape at line 1 column 8",
            ),
            (
                r#"{"output": {}, "signature": "00", "signing_key_id": "k", "key_version": 1e400}"#,
                "key_version is not a valid value: number out of range at line 1 column 5",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                SignedOutput::parse(text).map(|_| ()),
                Err(expected.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn new_documents_round_trip() {
        let document = NewSignedOutput {
            output: "{\n  \"score\": 1.50\n}",
            signature: &[0xde, 0xad],
            signing_key_id: "kid\"1",
            key_version: 2,
            algorithm: Algorithm::EcdsaP256Sha256,
            canonicalization: Profile::Jcs,
            signed_at: "2026-01-01T00:00:00Z",
            signature_encoding: SignatureEncoding::P1363,
        }
        .to_json();
        assert_eq!(
            document,
            r#"{"output":{"score":1.50},"signature":"dead","signing_key_id":"kid\"1","key_version":2,"algorithm":"ecdsa-p256-sha256","canonicalization":"jcs","signed_at":"2026-01-01T00:00:00Z","signature_encoding":"p1363"}"#
        );
        let parsed = SignedOutput::parse(&document).expect("valid document");
        assert_eq!(parsed.output, r#"{"score":1.50}"#);
        assert_eq!(parsed.signing_key_id, "kid\"1");
    }
}
