//! PKCS#11 URIs (RFC 7512), the form in which cosign, p11-kit and OpenSSL's
//! pkcs11-provider name a module and a token, such as
//! `pkcs11:token=hallmark;serial=9a59?module-path=/usr/lib/softhsm/libsofthsm2.so`.
//!
//! Only the attributes that choose a module, a token and a PIN file are
//! accepted. Attributes that name slots or objects are rejected, because
//! slot IDs change when tokens are added or removed and Hallmark finds its
//! keys by name. `pin-value` is rejected too: a PIN in a URI ends up in
//! logs, shell histories and process lists.

use std::fmt;
use std::path::PathBuf;

/// The URI scheme, compared without regard to case as RFC 3986 requires.
const SCHEME: &str = "pkcs11:";

/// Path attributes that name slots, objects or the library description:
/// valid in RFC 7512, but they select nothing that Hallmark configures.
const UNSUPPORTED_PATH: &[(&str, &str)] = &[
    (
        "slot-id",
        "slot IDs change when tokens are added or removed; choose the token by token= or serial=",
    ),
    (
        "slot-description",
        "choose the token by token= or serial= instead of its slot",
    ),
    (
        "slot-manufacturer",
        "choose the token by token= or serial= instead of its slot",
    ),
    (
        "object",
        "Hallmark finds its keys by key name, so the URI names only the token",
    ),
    (
        "id",
        "Hallmark finds its keys by key name, so the URI names only the token",
    ),
    (
        "type",
        "Hallmark finds its keys by key name, so the URI names only the token",
    ),
    ("library-description", "give the module with module-path"),
    ("library-manufacturer", "give the module with module-path"),
    ("library-version", "give the module with module-path"),
];

/// A parsed `pkcs11:` URI: the token attributes of its path and the module
/// and PIN file of its query. Values are percent-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `manufacturer`: the token manufacturer ID.
    pub manufacturer: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `module-path`: the PKCS#11 library.
    pub module_path: Option<PathBuf>,
    /// `pin-source=file:PATH`: the file that contains the user PIN.
    pub pin_file: Option<PathBuf>,
}

/// A URI that is malformed or uses an attribute that Hallmark rejects. The
/// message names the attribute or the byte offset and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(String);

/// The message for a URI with a `pin-value` attribute.
const PIN_VALUE_REFUSED: &str = "pin-value is rejected, because a PIN in a URI shows up in \
     logs, shell histories and process lists; use pin-source=file:PATH, hsm.pin_file or the \
     HALLMARK_PIN environment variable";

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI.
    ///
    /// # Errors
    ///
    /// [`UriError`] for a malformed URI: a missing scheme, a character that
    /// must be percent-encoded, a malformed `%XX`, a value that is not
    /// UTF-8, or a repeated or empty attribute. Also for `pin-value`, a
    /// `pin-source` that is not a `file:` URI, and any attribute other
    /// than token, serial, manufacturer, model, module-path and pin-source.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        // Refused before anything else, so that no other message can
        // repeat the PIN that follows it.
        let body = text.split_once(':').map_or(text, |(_, body)| body);
        let names_pin_value = body.split(['?', ';', '&']).any(|attribute| {
            let name = attribute.split('=').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("pin-value")
        });
        if names_pin_value {
            return Err(UriError(PIN_VALUE_REFUSED.into()));
        }
        let scheme_ok = text
            .get(..SCHEME.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME));
        if !scheme_ok {
            return Err(UriError(format!(
                "{text:?} does not start with \"pkcs11:\"; write for example \
                 pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so"
            )));
        }
        let rest = &text[SCHEME.len()..];
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut uri = Self::default();
        let path_offset = SCHEME.len();
        for (name, value) in attributes(path, ';', path_offset, Part::Path)? {
            uri.set_path_attribute(&name, value)?;
        }
        if let Some(query) = query {
            let query_offset = path_offset + path.len() + 1;
            for (name, value) in attributes(query, '&', query_offset, Part::Query)? {
                uri.set_query_attribute(&name, value)?;
            }
        }
        Ok(uri)
    }

    fn set_path_attribute(&mut self, name: &str, value: String) -> Result<(), UriError> {
        let slot = match name {
            "token" => &mut self.token,
            "serial" => &mut self.serial,
            "manufacturer" => &mut self.manufacturer,
            "model" => &mut self.model,
            _ => return Err(unsupported(name, Part::Path)),
        };
        store(slot, name, value)
    }

    fn set_query_attribute(&mut self, name: &str, value: String) -> Result<(), UriError> {
        match name {
            "module-path" => {
                if self.module_path.is_some() {
                    return Err(repeated(name));
                }
                self.module_path = Some(PathBuf::from(value));
                Ok(())
            }
            "pin-source" => {
                if self.pin_file.is_some() {
                    return Err(repeated(name));
                }
                self.pin_file = Some(pin_file(&value)?);
                Ok(())
            }
            "pin-value" => Err(UriError(PIN_VALUE_REFUSED.into())),
            "module-name" => Err(UriError(
                "module-name is not supported, because a library name depends on the \
                 loader's search path; give the full path with module-path"
                    .to_owned(),
            )),
            _ => Err(unsupported(name, Part::Query)),
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    /// Writes the URI with every value percent-encoded where RFC 7512
    /// requires it, so that [`Pkcs11Uri::parse`] reads it back unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEME)?;
        let path = [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
        ];
        let mut first = true;
        for (name, value) in path {
            if let Some(value) = value {
                let separator = if first { "" } else { ";" };
                write!(f, "{separator}{name}={}", encode(value, Part::Path))?;
                first = false;
            }
        }
        let module = self.module_path.as_ref().map(|p| path_text(p.clone()));
        let pin = self
            .pin_file
            .as_ref()
            .map(|p| format!("file:{}", path_text(p.clone())));
        let query = [("module-path", module), ("pin-source", pin)];
        let mut separator = "?";
        for (name, value) in query {
            if let Some(value) = value {
                write!(f, "{separator}{name}={}", encode(&value, Part::Query))?;
                separator = "&";
            }
        }
        Ok(())
    }
}

/// The two parts of a PKCS#11 URI, whose attribute values allow different
/// characters without percent-encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Path,
    Query,
}

impl Part {
    /// Returns whether `byte` may appear unencoded in a value of this part:
    /// RFC 7512's pk11-pchar (path) or pk11-qchar (query).
    fn allows(self, byte: u8) -> bool {
        let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
        let shared = b":[]@!$'()*+,=".contains(&byte);
        let own: &[u8] = match self {
            Part::Path => b"&",
            Part::Query => b"/?|",
        };
        unreserved || shared || own.contains(&byte)
    }

    fn name(self) -> &'static str {
        match self {
            Part::Path => "path",
            Part::Query => "query",
        }
    }
}

/// Splits one part into `(name, decoded value)` pairs. `offset` is the
/// byte offset of the part in the whole URI, for error messages.
fn attributes(
    part_text: &str,
    separator: char,
    offset: usize,
    part: Part,
) -> Result<Vec<(String, String)>, UriError> {
    if part_text.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    let mut start = offset;
    for attribute in part_text.split(separator) {
        let Some((name, value)) = attribute.split_once('=') else {
            return Err(UriError(if attribute.is_empty() {
                format!(
                    "empty attribute at byte {start}: remove the extra {separator:?} in the {}",
                    part.name()
                )
            } else {
                format!("attribute {attribute:?} at byte {start} has no \"=\" and value")
            }));
        };
        let value_offset = start + name.len() + 1;
        let value = decode(value, value_offset, part)
            .map_err(UriError)?
            .ok_or_else(|| UriError(format!("attribute {name:?} has an empty value")))?;
        found.push((name.to_owned(), value));
        start += attribute.len() + 1;
    }
    Ok(found)
}

/// Percent-decodes one attribute value (RFC 3986, section 2.1) and checks
/// that every unencoded byte is allowed in `part`. Returns `None` for an
/// empty value.
fn decode(text: &str, offset: usize, part: Part) -> Result<Option<String>, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let hex = bytes.get(index + 1..index + 3);
            let value = hex
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(value) = value else {
                let shown: String = text[index..].chars().take(3).collect();
                return Err(format!(
                    "{shown:?} at byte {} is not a percent-encoded byte: write % followed \
                     by two hexadecimal digits, and a literal % as %25",
                    offset + index
                ));
            };
            decoded.push(value);
            index += 3;
        } else if part.allows(byte) {
            decoded.push(byte);
            index += 1;
        } else {
            let character = text[index..].chars().next().unwrap_or('?');
            let mut utf8 = [0; 4];
            let encoded: String = character
                .encode_utf8(&mut utf8)
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect();
            return Err(format!(
                "{character:?} at byte {} must be percent-encoded in the {} of a PKCS#11 URI; \
                 write {encoded}",
                offset + index,
                part.name()
            ));
        }
    }
    if decoded.is_empty() {
        return Ok(None);
    }
    String::from_utf8(decoded)
        .map(Some)
        // The value is not repeated: it could be a PIN.
        .map_err(|_| "a value is not UTF-8 after percent-decoding".to_owned())
}

/// Percent-encodes every byte of `value` that `part` does not allow as is.
fn encode(value: &str, part: Part) -> String {
    value
        .bytes()
        .map(|b| {
            if part.allows(b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Stores an attribute value, rejecting a second occurrence: RFC 7512 lets
/// each attribute appear once.
fn store(slot: &mut Option<String>, name: &str, value: String) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(repeated(name));
    }
    *slot = Some(value);
    Ok(())
}

fn repeated(name: &str) -> UriError {
    UriError(format!(
        "attribute {name:?} appears twice; give each attribute once"
    ))
}

fn unsupported(name: &str, part: Part) -> UriError {
    if let Some((_, reason)) = UNSUPPORTED_PATH.iter().find(|(n, _)| *n == name) {
        return UriError(format!("attribute {name:?} is not supported: {reason}"));
    }
    let supported = match part {
        Part::Path => "token, serial, manufacturer and model",
        Part::Query => "module-path and pin-source",
    };
    UriError(format!(
        "unknown attribute {name:?} in the {}; the supported ones are {supported}",
        part.name()
    ))
}

/// Reads the path of a `pin-source` value, which must be a `file:` URI
/// (RFC 8089) with an absolute path: `file:/run/pin`, `file:///run/pin` or
/// `file://localhost/run/pin`.
fn pin_file(value: &str) -> Result<PathBuf, UriError> {
    let scheme_ok = value
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("file:"));
    if !scheme_ok {
        return Err(UriError(format!(
            "pin-source {value:?} is not supported; use pin-source=file:/PATH, a file that \
             contains the user PIN"
        )));
    }
    let rest = &value[5..];
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => {
            let (host, path) = match authority_and_path.find('/') {
                Some(at) => authority_and_path.split_at(at),
                None => (authority_and_path, ""),
            };
            if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                return Err(UriError(format!(
                    "pin-source {value:?} names the host {host:?}; the PIN file must be local, \
                     as in file:/run/secrets/pin"
                )));
            }
            path
        }
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(UriError(format!(
            "pin-source {value:?} does not give an absolute path; write file:/PATH"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Returns a path as text. Paths come from parsed UTF-8 text, so the lossy
/// conversion never changes them.
fn path_text(path: PathBuf) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Pkcs11Uri::parse(text).expect_err("invalid URI").to_string()
    }

    #[test]
    fn full_uri_parses() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=hallmark-dev;serial=9a5998f62339a02b;manufacturer=SoftHSM%20project;\
             model=SoftHSM%20v2?module-path=/usr/lib/softhsm/libsofthsm2.so\
             &pin-source=file:/run/secrets/pin",
        )
        .expect("valid");
        assert_eq!(
            uri,
            Pkcs11Uri {
                token: Some("hallmark-dev".into()),
                serial: Some("9a5998f62339a02b".into()),
                manufacturer: Some("SoftHSM project".into()),
                model: Some("SoftHSM v2".into()),
                module_path: Some("/usr/lib/softhsm/libsofthsm2.so".into()),
                pin_file: Some("/run/secrets/pin".into()),
            }
        );
    }

    #[test]
    fn percent_encoding_decodes() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token%3B%c3%a9%2F1?module-path=/opt/hsm%20lib/p11.so",
        )
        .expect("valid");
        assert_eq!(uri.token.as_deref(), Some("My Token;é/1"));
        assert_eq!(uri.module_path, Some(PathBuf::from("/opt/hsm lib/p11.so")));
    }

    #[test]
    fn scheme_ignores_case() {
        let uri = Pkcs11Uri::parse("PKCS11:serial=42").expect("valid");
        assert_eq!(uri.serial.as_deref(), Some("42"));
    }

    #[test]
    fn empty_uri_selects_nothing() {
        assert_eq!(Pkcs11Uri::parse("pkcs11:"), Ok(Pkcs11Uri::default()));
    }

    #[test]
    fn pin_source_forms() {
        for form in [
            "file:/run/pin",
            "file:///run/pin",
            "file://localhost/run/pin",
            "FILE:/run/pin",
        ] {
            let uri = Pkcs11Uri::parse(&format!("pkcs11:token=t?pin-source={form}"))
                .unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(uri.pin_file, Some(PathBuf::from("/run/pin")), "{form}");
        }
    }

    #[test]
    fn display_round_trips() {
        let uri = Pkcs11Uri {
            token: Some("a b;c&d".into()),
            serial: Some("0123".into()),
            manufacturer: None,
            model: Some("m/1".into()),
            module_path: Some("/usr/lib/x y.so".into()),
            pin_file: Some("/run/p&q".into()),
        };
        let text = uri.to_string();
        assert_eq!(
            text,
            "pkcs11:token=a%20b%3Bc&d;serial=0123;model=m%2F1\
             ?module-path=/usr/lib/x%20y.so&pin-source=file:/run/p%26q"
        );
        assert_eq!(Pkcs11Uri::parse(&text), Ok(uri));
    }

    #[test]
    fn missing_scheme_is_rejected() {
        assert_eq!(
            error("token=hallmark"),
            "\"token=hallmark\" does not start with \"pkcs11:\"; write for example \
             pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
    }

    #[test]
    fn malformed_percent_is_rejected() {
        assert_eq!(
            error("pkcs11:token=ab%2"),
            "\"%2\" at byte 15 is not a percent-encoded byte: write % followed by two \
             hexadecimal digits, and a literal % as %25"
        );
        assert_eq!(
            error("pkcs11:token=%zz1"),
            "\"%zz\" at byte 13 is not a percent-encoded byte: write % followed by two \
             hexadecimal digits, and a literal % as %25"
        );
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert_eq!(
            error("pkcs11:token=%ff"),
            "a value is not UTF-8 after percent-decoding"
        );
    }

    #[test]
    fn unencoded_characters_are_rejected() {
        assert_eq!(
            error("pkcs11:token=my token"),
            "' ' at byte 15 must be percent-encoded in the path of a PKCS#11 URI; write %20"
        );
        assert_eq!(
            error("pkcs11:token=a/b"),
            "'/' at byte 14 must be percent-encoded in the path of a PKCS#11 URI; write %2F"
        );
        assert_eq!(
            error("pkcs11:token=t?module-path=/a;b.so"),
            "';' at byte 29 must be percent-encoded in the query of a PKCS#11 URI; write %3B"
        );
        assert_eq!(
            error("pkcs11:token=é"),
            "'é' at byte 13 must be percent-encoded in the path of a PKCS#11 URI; write %C3%A9"
        );
    }

    #[test]
    fn malformed_attributes_are_rejected() {
        assert_eq!(
            error("pkcs11:token"),
            "attribute \"token\" at byte 7 has no \"=\" and value"
        );
        assert_eq!(
            error("pkcs11:token=a;;serial=b"),
            "empty attribute at byte 15: remove the extra ';' in the path"
        );
        assert_eq!(
            error("pkcs11:token=a;"),
            "empty attribute at byte 15: remove the extra ';' in the path"
        );
        assert_eq!(
            error("pkcs11:token="),
            "attribute \"token\" has an empty value"
        );
        assert_eq!(
            error("pkcs11:token=a;token=b"),
            "attribute \"token\" appears twice; give each attribute once"
        );
        assert_eq!(
            error("pkcs11:token=a?module-path=/a.so&module-path=/b.so"),
            "attribute \"module-path\" appears twice; give each attribute once"
        );
    }

    #[test]
    fn unsupported_attributes_are_rejected() {
        assert_eq!(
            error("pkcs11:slot-id=3"),
            "attribute \"slot-id\" is not supported: slot IDs change when tokens are added or \
             removed; choose the token by token= or serial="
        );
        assert_eq!(
            error("pkcs11:token=t;object=signing"),
            "attribute \"object\" is not supported: Hallmark finds its keys by key name, so the \
             URI names only the token"
        );
        assert_eq!(
            error("pkcs11:token=t;x-vendor=1"),
            "unknown attribute \"x-vendor\" in the path; the supported ones are token, serial, \
             manufacturer and model"
        );
        assert_eq!(
            error("pkcs11:token=t?module-name=softhsm2"),
            "module-name is not supported, because a library name depends on the loader's \
             search path; give the full path with module-path"
        );
        assert_eq!(
            error("pkcs11:token=t?x-pin=1"),
            "unknown attribute \"x-pin\" in the query; the supported ones are module-path and \
             pin-source"
        );
    }

    #[test]
    fn pin_value_is_rejected() {
        assert_eq!(
            error("pkcs11:token=t?pin-value=1234"),
            "pin-value is rejected, because a PIN in a URI shows up in logs, shell histories \
             and process lists; use pin-source=file:PATH, hsm.pin_file or the HALLMARK_PIN \
             environment variable"
        );
    }

    #[test]
    fn bad_pin_sources_are_rejected() {
        assert_eq!(
            error("pkcs11:token=t?pin-source=|/bin/echo"),
            "pin-source \"|/bin/echo\" is not supported; use pin-source=file:/PATH, a file \
             that contains the user PIN"
        );
        assert_eq!(
            error("pkcs11:token=t?pin-source=file:pin.txt"),
            "pin-source \"file:pin.txt\" does not give an absolute path; write file:/PATH"
        );
        assert_eq!(
            error("pkcs11:token=t?pin-source=file://vault/pin"),
            "pin-source \"file://vault/pin\" names the host \"vault\"; the PIN file must be \
             local, as in file:/run/secrets/pin"
        );
    }

    #[test]
    fn no_message_repeats_a_pin_value() {
        for text in [
            "pkcs:token=x?pin-value=SECRET1",
            " pkcs11:token=x?pin-value=SECRET3",
            "pkcs11:token=t?pin-value=SECRET6%ff",
            "pkcs11:token=t;pin-value=SECRET%C3%28",
            "pkcs11:token=t?module-path=/m.so&PIN-VALUE=SECRET7",
        ] {
            let message = Pkcs11Uri::parse(text).expect_err("refused").0;
            assert_eq!(message, PIN_VALUE_REFUSED, "{text}");
            assert!(!message.contains("SECRET"), "{message}");
        }
        // A label that merely contains the words is a label.
        let uri = Pkcs11Uri::parse("pkcs11:token=my-pin-value-token").expect("valid");
        assert_eq!(uri.token.as_deref(), Some("my-pin-value-token"));
    }
}
