//! Canonical JSON serialization, so that a producer and a verifier hash the
//! same bytes for the same manifest.
//!
//! Two profiles are supported:
//!
//! - [`Profile::Jcs`] (`jcs`): the JSON Canonicalization Scheme of RFC 8785.
//!   Members are sorted by UTF-16 code units, every number is an IEEE-754
//!   double printed as ECMAScript's `Number.prototype.toString` prints it,
//!   strings are escaped minimally and output is UTF-8 without whitespace.
//!   An integer written without a fraction or exponent must lie within
//!   ±(2^53 − 1), the I-JSON range that RFC 8785 builds on, because a
//!   double cannot hold every integer beyond it: two different integers
//!   would share one signature. The `rfc8785` Python package rejects them
//!   too.
//! - [`Profile::PythonSortKeys`] (`python-sort-keys`): the bytes that
//!   CPython 3's `json.dumps(json.loads(text), sort_keys=True)` returns with
//!   its default separators (`", "` and `": "`) and `ensure_ascii=True`.
//!   Members are sorted by code point, integers keep every digit, floats are
//!   printed as `repr(float)`, and everything outside printable ASCII is
//!   escaped as `\uXXXX`.
//!
//! Both profiles reject, with a [`CanonError`] that names the line, column
//! and JSON path:
//!
//! - input that is not RFC 8259 JSON text, including `NaN`, `Infinity` and
//!   `-Infinity`, which CPython's `json.loads` accepts as an extension;
//! - numbers whose magnitude overflows an IEEE-754 double (such as `1e400`),
//!   which CPython reads as infinity and would print as `Infinity`;
//! - duplicate member names after unescaping. CPython keeps the last value,
//!   but a verifier that keeps a different one than the producer's parser
//!   would check a signature over a different manifest;
//! - `\uXXXX` escapes that leave a UTF-16 surrogate unpaired, which RFC 8785
//!   forbids and which have no UTF-8 encoding;
//! - arrays and objects nested more than [`MAX_DEPTH`] levels deep.
//!
//! `python-sort-keys` also rejects integers of more than
//! [`PYTHON_MAX_INT_DIGITS`] digits, as CPython 3.11 and later do by default.
//!
//! # Examples
//!
//! ```
//! use hallmark::canon::{Profile, canonicalize};
//!
//! let text = r#"{"b": [1.0, 1E2, 1e-7], "a": "\u00e9\ud83d\ude00"}"#;
//!
//! let jcs = canonicalize(text, Profile::Jcs)?;
//! assert_eq!(jcs, "{\"a\":\"é😀\",\"b\":[1,100,1e-7]}".as_bytes());
//!
//! let python = canonicalize(text, Profile::PythonSortKeys)?;
//! assert_eq!(
//!     python,
//!     br#"{"a": "\u00e9\ud83d\ude00", "b": [1.0, 100.0, 1e-07]}"#
//! );
//! # Ok::<(), hallmark::canon::CanonError>(())
//! ```
//!
//! Profiles are named by the strings that configuration and command lines
//! use:
//!
//! ```
//! use hallmark::canon::Profile;
//!
//! assert_eq!(Profile::parse("python-sort-keys")?, Profile::PythonSortKeys);
//! assert_eq!(Profile::Jcs.as_str(), "jcs");
//! assert!(Profile::parse("json").is_err());
//! # Ok::<(), hallmark::canon::CanonError>(())
//! ```
//!
//! Values built in Rust go through [`canonicalize_value`]:
//!
//! ```
//! use hallmark::canon::{Profile, canonicalize_value};
//! use serde_json::json;
//!
//! let manifest = json!({"label": "setosa", "score": 0.97, "index": 12});
//! assert_eq!(
//!     canonicalize_value(&manifest, Profile::PythonSortKeys)?,
//!     br#"{"index": 12, "label": "setosa", "score": 0.97}"#
//! );
//! # Ok::<(), hallmark::canon::CanonError>(())
//! ```
//!
//! Errors name the problem and where it is:
//!
//! ```
//! use hallmark::canon::{Profile, canonicalize};
//!
//! let Err(err) = canonicalize(r#"{"a": {"b": 1, "b": 2}}"#, Profile::Jcs) else {
//!     panic!("duplicate member names must be rejected");
//! };
//! assert_eq!(
//!     err.to_string(),
//!     "duplicate member name at line 1, column 16, path $.a.b; \
//!      duplicate names are rejected because parsers disagree on which value wins"
//! );
//! ```

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use thiserror::Error;

/// Maximum nesting depth of arrays and objects: the outermost array or
/// object is at depth 1.
pub const MAX_DEPTH: usize = 128;

/// Maximum number of digits in an integer for `python-sort-keys`.
///
/// CPython 3.11 and later (and the 3.7 to 3.10 security releases from
/// September 2022 on) raise `ValueError` when `json.loads` converts an
/// integer of more digits, unless `sys.set_int_max_str_digits` raised the
/// limit.
pub const PYTHON_MAX_INT_DIGITS: usize = 4300;

/// Longest member name, in characters, quoted in an error path before it is
/// cut short with `…`.
const MAX_PATH_KEY_CHARS: usize = 64;

/// Longest number lexeme, in characters, quoted in an error message.
const MAX_ERROR_NUMBER_CHARS: usize = 40;

/// A canonical serialization that producer and verifier agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// RFC 8785, the JSON Canonicalization Scheme; named `jcs`.
    Jcs,
    /// CPython 3's `json.dumps(obj, sort_keys=True)` with default separators
    /// and `ensure_ascii=True`; named `python-sort-keys`.
    PythonSortKeys,
}

impl Profile {
    /// Every profile, in the order that help text lists them.
    pub const ALL: [Profile; 2] = [Profile::Jcs, Profile::PythonSortKeys];

    /// Parses a profile name: `jcs` or `python-sort-keys`.
    ///
    /// # Errors
    ///
    /// [`CanonError::UnknownProfile`] for any other string.
    pub fn parse(name: &str) -> Result<Self, CanonError> {
        match name {
            "jcs" => Ok(Profile::Jcs),
            "python-sort-keys" => Ok(Profile::PythonSortKeys),
            _ => Err(CanonError::UnknownProfile {
                name: name.to_owned(),
            }),
        }
    }

    /// Returns the profile's name, which [`Profile::parse`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Jcs => "jcs",
            Profile::PythonSortKeys => "python-sort-keys",
        }
    }
}

impl FromStr for Profile {
    type Err = CanonError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Profile::parse(name)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Location of a problem in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Line and column, both from 1, when the input was JSON text; `None`
    /// for a [`serde_json::Value`]. Columns count Unicode scalar values.
    pub line_column: Option<(usize, usize)>,
    /// JSON path of the value, such as `$.outputs[2]["content-type"]`.
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.line_column {
            write!(f, "line {line}, column {column}, ")?;
        }
        write!(f, "path {}", self.path)
    }
}

/// Error from reading JSON or serializing it canonically.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CanonError {
    /// The profile name is neither `jcs` nor `python-sort-keys`.
    #[error("unknown canonicalization profile {name:?}: expected \"jcs\" or \"python-sort-keys\"")]
    UnknownProfile {
        /// The name as given.
        name: String,
    },

    /// The input is not JSON text as RFC 8259 defines it.
    #[error("invalid JSON at {at}: {reason}")]
    Syntax {
        /// Location where the parser stopped.
        at: Location,
        /// Description of what was expected and what was found instead.
        reason: String,
    },

    /// The input contains `NaN`, `Infinity` or `-Infinity`. They are not
    /// JSON, although CPython's `json.loads` accepts them.
    #[error("{literal} at {at} is not a JSON number; NaN and infinities cannot be canonicalized")]
    NonFiniteLiteral {
        /// The literal as written.
        literal: &'static str,
        /// Location where the literal starts.
        at: Location,
    },

    /// A number's magnitude is too large for an IEEE-754 double, so it would
    /// become infinity.
    #[error(
        "number {number} at {at} is too large for an IEEE-754 double; it would become infinity"
    )]
    NumberOutOfRange {
        /// The number as written, cut short with `…` past 40 characters.
        number: String,
        /// Location where the number starts.
        at: Location,
    },

    /// An integer lies beyond ±(2^53 − 1), where doubles cannot represent
    /// every integer (`jcs` only).
    #[error(
        "integer {number} at {at} is beyond ±(2^53 - 1), which jcs (RFC 8785) cannot represent \
         exactly; write it as a string, or use python-sort-keys"
    )]
    IntegerNotExact {
        /// The integer as written, cut short with `…` past 40 characters.
        number: String,
        /// Location where the integer starts.
        at: Location,
    },

    /// An integer has more digits than CPython's `json.loads` converts by
    /// default (`python-sort-keys` only).
    #[error(
        "integer at {at} has {digits} digits; CPython's json.loads rejects integers of more than {limit} digits"
    )]
    IntegerTooLong {
        /// Number of digits, without the sign.
        digits: usize,
        /// [`PYTHON_MAX_INT_DIGITS`].
        limit: usize,
        /// Location where the integer starts.
        at: Location,
    },

    /// An object has two members with the same name after unescaping.
    #[error(
        "duplicate member name at {at}; duplicate names are rejected because parsers disagree on which value wins"
    )]
    DuplicateName {
        /// The member name, unescaped. The message shows it as the last
        /// step of the path.
        name: String,
        /// Location where the second occurrence starts.
        at: Location,
    },

    /// A `\uXXXX` escape is a UTF-16 surrogate without its other half.
    #[error("unpaired UTF-16 surrogate \\u{unit:04x} at {at}; strings must be valid Unicode")]
    UnpairedSurrogate {
        /// The surrogate code unit.
        unit: u16,
        /// Location where its escape starts.
        at: Location,
    },

    /// Arrays and objects are nested more than [`MAX_DEPTH`] levels deep.
    #[error("arrays and objects nested more than {limit} levels deep at {at}")]
    TooDeep {
        /// [`MAX_DEPTH`].
        limit: usize,
        /// Location where the first array or object past the limit starts.
        at: Location,
    },
}

/// Serializes JSON text canonically under `profile`.
///
/// Numbers are read from their text: `python-sort-keys` keeps every digit of
/// an integer, and `jcs` rounds each number to a double once, as RFC 8785
/// specifies.
///
/// # Errors
///
/// Any [`CanonError`] but [`CanonError::UnknownProfile`]; the module
/// documentation lists what is rejected.
pub fn canonicalize(json_text: &str, profile: Profile) -> Result<Vec<u8>, CanonError> {
    match profile {
        Profile::Jcs => canonicalize_text::<Jcs>(json_text),
        Profile::PythonSortKeys => canonicalize_text::<PythonSortKeys>(json_text),
    }
}

/// Serializes a [`serde_json::Value`] canonically under `profile`.
///
/// A number stored as `u64` or `i64` is an integer and one stored as `f64` is
/// a float, so under `python-sort-keys` `json!(1.0)` becomes `1.0` and
/// `json!(1)` becomes `1`. A `Value` cannot hold duplicate names, unpaired
/// surrogates or non-finite numbers.
///
/// NOTE: verify received JSON text with [`canonicalize`], not by parsing it
/// into a `Value` first. Without its `float_roundtrip` feature, serde_json
/// (1.0.154) can read a decimal into a neighbouring double, such as
/// `1.5E-300` into 1.4999999999999998e-300, and integers beyond `u64` and
/// `i64` into doubles, so the bytes would differ from the producer's.
///
/// # Errors
///
/// [`CanonError::TooDeep`] for values nested more than [`MAX_DEPTH`] levels.
pub fn canonicalize_value(
    value: &serde_json::Value,
    profile: Profile,
) -> Result<Vec<u8>, CanonError> {
    match profile {
        Profile::Jcs => canonicalize_serde::<Jcs>(value),
        Profile::PythonSortKeys => canonicalize_serde::<PythonSortKeys>(value),
    }
}

fn canonicalize_text<D: Dialect>(text: &str) -> Result<Vec<u8>, CanonError> {
    let node = Parser::<D>::new(text).parse_document()?;
    let mut out = String::with_capacity(text.len());
    write_node::<D>(&node, &mut out);
    Ok(out.into_bytes())
}

fn canonicalize_serde<D: Dialect>(value: &serde_json::Value) -> Result<Vec<u8>, CanonError> {
    let mut path = Vec::new();
    let node = convert_value::<D>(value, 0, &mut path)?;
    let mut out = String::new();
    write_node::<D>(&node, &mut out);
    Ok(out.into_bytes())
}

/// A parsed JSON value whose numbers are already in the profile's model and
/// whose object members are already in canonical order.
enum Node<N> {
    Null,
    Bool(bool),
    Number(N),
    String(String),
    Array(Vec<Node<N>>),
    Object(Vec<(String, Node<N>)>),
}

/// Reason that a number lexeme has no value in a profile's number model.
enum NumberProblem {
    OutOfRange,
    TooManyDigits(usize),
    InexactInteger,
}

/// The largest integer magnitude that every IEEE-754 double up to it can
/// represent exactly: 2^53 − 1 (RFC 7493, section 2.2).
pub const JCS_MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// The rules that differ between profiles.
trait Dialect {
    /// Number representation between parsing and printing.
    type Number;

    const MEMBER_SEPARATOR: &'static str;
    const NAME_SEPARATOR: &'static str;

    /// Converts a lexeme of the JSON number grammar; `is_float` is true when
    /// it has a fraction or an exponent.
    fn number_from_lexeme(lexeme: &str, is_float: bool) -> Result<Self::Number, NumberProblem>;

    /// Converts a double held by a [`serde_json::Value`], which is finite.
    fn number_from_f64(value: f64) -> Result<Self::Number, NumberProblem>;

    fn write_number(number: &Self::Number, out: &mut String);

    fn write_string(text: &str, out: &mut String);

    fn sort_members<N>(members: &mut [(String, N)]);
}

/// RFC 8785.
struct Jcs;

impl Dialect for Jcs {
    type Number = f64;

    const MEMBER_SEPARATOR: &'static str = ",";
    const NAME_SEPARATOR: &'static str = ":";

    fn number_from_lexeme(lexeme: &str, is_float: bool) -> Result<f64, NumberProblem> {
        if !is_float {
            let magnitude = lexeme.trim_start_matches('-');
            let exact = magnitude.len() <= 16
                && magnitude
                    .parse::<u64>()
                    .is_ok_and(|n| n <= JCS_MAX_EXACT_INTEGER);
            if !exact {
                return Err(NumberProblem::InexactInteger);
            }
        }
        // Rust's f64 parsing rounds to the nearest double, ties to even, as
        // ECMAScript's JSON.parse does, for lexemes of any length.
        match lexeme.parse::<f64>() {
            Ok(value) => Self::number_from_f64(value),
            Err(_) => Err(NumberProblem::OutOfRange),
        }
    }

    fn number_from_f64(value: f64) -> Result<f64, NumberProblem> {
        if value.is_finite() {
            Ok(value)
        } else {
            Err(NumberProblem::OutOfRange)
        }
    }

    fn write_number(number: &f64, out: &mut String) {
        write_ecmascript_number(*number, out);
    }

    fn write_string(text: &str, out: &mut String) {
        write_jcs_string(text, out);
    }

    fn sort_members<N>(members: &mut [(String, N)]) {
        members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    }
}

/// CPython 3's `json.dumps(obj, sort_keys=True)`.
struct PythonSortKeys;

/// A number as CPython's `json.loads` returns it.
enum PyNumber {
    /// An `int`, as its decimal digits with an optional `-`.
    Int(String),
    /// A `float`.
    Float(f64),
}

impl Dialect for PythonSortKeys {
    type Number = PyNumber;

    const MEMBER_SEPARATOR: &'static str = ", ";
    const NAME_SEPARATOR: &'static str = ": ";

    fn number_from_lexeme(lexeme: &str, is_float: bool) -> Result<PyNumber, NumberProblem> {
        if is_float {
            // CPython calls float() on the lexeme, which rounds correctly
            // like Rust's parser and overflows to infinity past f64::MAX.
            return match lexeme.parse::<f64>() {
                Ok(value) => Self::number_from_f64(value),
                Err(_) => Err(NumberProblem::OutOfRange),
            };
        }

        let digits = lexeme.strip_prefix('-').unwrap_or(lexeme);
        if digits.len() > PYTHON_MAX_INT_DIGITS {
            return Err(NumberProblem::TooManyDigits(digits.len()));
        }

        // The grammar admits no leading zeros, so `-0` is the only lexeme
        // whose int prints differently.
        if digits == "0" {
            Ok(PyNumber::Int("0".to_owned()))
        } else {
            Ok(PyNumber::Int(lexeme.to_owned()))
        }
    }

    fn number_from_f64(value: f64) -> Result<PyNumber, NumberProblem> {
        if value.is_finite() {
            Ok(PyNumber::Float(value))
        } else {
            Err(NumberProblem::OutOfRange)
        }
    }

    fn write_number(number: &PyNumber, out: &mut String) {
        match number {
            PyNumber::Int(digits) => out.push_str(digits),
            PyNumber::Float(value) => write_python_float_repr(*value, out),
        }
    }

    fn write_string(text: &str, out: &mut String) {
        write_python_ascii_string(text, out);
    }

    fn sort_members<N>(members: &mut [(String, N)]) {
        // Byte order of UTF-8 is code point order, which is how Python
        // compares str.
        members.sort_by(|(a, _), (b, _)| a.cmp(b));
    }
}

fn write_node<D: Dialect>(node: &Node<D::Number>, out: &mut String) {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(true) => out.push_str("true"),
        Node::Bool(false) => out.push_str("false"),
        Node::Number(number) => D::write_number(number, out),
        Node::String(text) => D::write_string(text, out),
        Node::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(D::MEMBER_SEPARATOR);
                }
                write_node::<D>(item, out);
            }
            out.push(']');
        }
        Node::Object(members) => {
            out.push('{');
            for (index, (name, value)) in members.iter().enumerate() {
                if index > 0 {
                    out.push_str(D::MEMBER_SEPARATOR);
                }
                D::write_string(name, out);
                out.push_str(D::NAME_SEPARATOR);
                write_node::<D>(value, out);
            }
            out.push('}');
        }
    }
}

/// Writes a string as RFC 8785 section 3.2.2.2 requires: `"`, `\` and
/// control characters escaped, the short forms where JSON has them, and
/// every other character as itself.
fn write_jcs_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => push_unicode_escape(u32::from(c), out),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a string as CPython's `json` encoder does with
/// `ensure_ascii=True`. Printable ASCII is written as itself, except `"` and
/// `\`. Backspace, form feed, newline, carriage return and tab get their
/// short escapes. Every other code point becomes lowercase `\uXXXX`, and an
/// astral one becomes a surrogate pair of them.
fn write_python_ascii_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_unicode_escape(u32::from(*unit), out);
                }
            }
        }
    }
    out.push('"');
}

fn push_unicode_escape(unit: u32, out: &mut String) {
    // `fmt::Write for String` never returns an error.
    let _ = write!(out, "\\u{unit:04x}");
}

/// The shortest decimal digits that read back as a double, and where the
/// decimal point goes: the value is `0.DIGITS × 10^point`.
struct ShortestDecimal {
    digits: String,
    point: i32,
}

impl ShortestDecimal {
    /// Computes the digits of `|value|`, which must be finite and non-zero.
    ///
    /// Ryu returns the shortest digit string that parses back to the same
    /// double, the one closest to the exact value when several have that
    /// length, and the even one when two are equally close. V8 and CPython's
    /// `repr(float)` choose digits the same way, and RFC 8785's example
    /// 1424953923781206.25 must print as `1424953923781206.2`. Rust's own
    /// `{:e}` formatting prints `1.4249539237812063e15` for it.
    fn of(value: f64) -> Self {
        let mut buffer = ryu::Buffer::new();
        // Ryu writes `[-]DIGITS[.DIGITS][eEXP]`, such as `1e16`, `0.001`,
        // `1.0` or `1.5e-300`.
        let formatted = buffer.format_finite(value.abs());
        let (mantissa, exponent) = formatted.split_once('e').unwrap_or((formatted, "0"));
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));

        let mut digits = String::with_capacity(whole.len() + fraction.len());
        digits.push_str(whole);
        digits.push_str(fraction);
        let mut point = whole.len() as i32 + parse_exponent(exponent);

        // Normalize to a first digit that is not zero and no trailing zeros.
        let leading_zeros = digits.len() - digits.trim_start_matches('0').len();
        point -= leading_zeros as i32;
        let digits = digits.trim_matches('0').to_owned();

        ShortestDecimal { digits, point }
    }
}

/// Parses a decimal exponent of at most a few digits with an optional `-`.
/// Non-digits are skipped, so the function cannot fail.
fn parse_exponent(text: &str) -> i32 {
    let magnitude = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0i32, |acc, b| {
            acc.saturating_mul(10).saturating_add(i32::from(b - b'0'))
        });
    if text.starts_with('-') {
        -magnitude
    } else {
        magnitude
    }
}

/// Writes a finite double as ECMAScript's Number::toString does (ECMA-262,
/// Number::toString, radix 10), which RFC 8785 section 3.2.2.3 requires.
fn write_ecmascript_number(value: f64, out: &mut String) {
    if value == 0.0 {
        // Both +0 and -0 print as 0.
        out.push('0');
        return;
    }
    if value < 0.0 {
        out.push('-');
    }

    let ShortestDecimal { digits, point: n } = ShortestDecimal::of(value);
    let k = digits.len() as i32;

    if k <= n && n <= 21 {
        out.push_str(&digits);
        push_zeros(n - k, out);
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = digits.split_at(n as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        push_zeros(-n, out);
        out.push_str(&digits);
    } else {
        push_mantissa(&digits, out);
        out.push('e');
        let exponent = n - 1;
        out.push(if exponent < 0 { '-' } else { '+' });
        let _ = write!(out, "{}", exponent.abs());
    }
}

/// Writes a finite double as CPython 3's `repr(float)` does
/// (`float_repr_style` `'short'`): positional notation with at least one
/// fractional digit when the decimal exponent is from -4 to 15, and
/// otherwise `d[.ddd]e±XX` with at least two exponent digits.
fn write_python_float_repr(value: f64, out: &mut String) {
    if value == 0.0 {
        out.push_str(if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        });
        return;
    }
    if value < 0.0 {
        out.push('-');
    }

    let ShortestDecimal { digits, point } = ShortestDecimal::of(value);
    let k = digits.len() as i32;

    if point <= -4 || point > 16 {
        push_mantissa(&digits, out);
        let exponent = point - 1;
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.abs());
    } else if point <= 0 {
        out.push_str("0.");
        push_zeros(-point, out);
        out.push_str(&digits);
    } else if point >= k {
        out.push_str(&digits);
        push_zeros(point - k, out);
        out.push_str(".0");
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
}

/// Writes `d` or `d.ddd` for the digits of an exponential form.
fn push_mantissa(digits: &str, out: &mut String) {
    let (first, rest) = digits.split_at(digits.len().min(1));
    out.push_str(first);
    if !rest.is_empty() {
        out.push('.');
        out.push_str(rest);
    }
}

fn push_zeros(count: i32, out: &mut String) {
    for _ in 0..count {
        out.push('0');
    }
}

/// One step of a JSON path.
enum PathSegment {
    Index(usize),
    Name(String),
}

fn render_path(path: &[PathSegment]) -> String {
    let mut rendered = String::from("$");
    for segment in path {
        match segment {
            PathSegment::Index(index) => {
                let _ = write!(rendered, "[{index}]");
            }
            PathSegment::Name(name) => {
                let shortened: String = if name.chars().count() > MAX_PATH_KEY_CHARS {
                    let mut cut: String = name.chars().take(MAX_PATH_KEY_CHARS).collect();
                    cut.push('…');
                    cut
                } else {
                    name.clone()
                };
                if is_identifier(name) {
                    rendered.push('.');
                    rendered.push_str(&shortened);
                } else {
                    rendered.push('[');
                    write_jcs_string(&shortened, &mut rendered);
                    rendered.push(']');
                }
            }
        }
    }
    rendered
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_PATH_KEY_CHARS
}

fn convert_value<D: Dialect>(
    value: &serde_json::Value,
    depth: usize,
    path: &mut Vec<PathSegment>,
) -> Result<Node<D::Number>, CanonError> {
    use serde_json::Value;

    let value_location = |path: &[PathSegment]| Location {
        line_column: None,
        path: render_path(path),
    };

    match value {
        Value::Null => Ok(Node::Null),
        Value::Bool(b) => Ok(Node::Bool(*b)),
        Value::String(text) => Ok(Node::String(text.clone())),
        Value::Number(number) => {
            let converted = if number.is_u64() || number.is_i64() {
                D::number_from_lexeme(&number.to_string(), false)
            } else if let Some(float) = number.as_f64() {
                D::number_from_f64(float)
            } else {
                // Reached only with serde_json's `arbitrary_precision`
                // feature, whose Display is the number's original text.
                let lexeme = number.to_string();
                let is_float = lexeme.contains(['.', 'e', 'E']);
                D::number_from_lexeme(&lexeme, is_float)
            };
            converted
                .map(Node::Number)
                .map_err(|problem| number_error(problem, &number.to_string(), value_location(path)))
        }
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(CanonError::TooDeep {
                    limit: MAX_DEPTH,
                    at: value_location(path),
                });
            }
            let mut nodes = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                path.push(PathSegment::Index(index));
                let node = convert_value::<D>(item, depth + 1, path);
                path.pop();
                nodes.push(node?);
            }
            Ok(Node::Array(nodes))
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(CanonError::TooDeep {
                    limit: MAX_DEPTH,
                    at: value_location(path),
                });
            }
            let mut members = Vec::with_capacity(map.len());
            for (name, item) in map {
                path.push(PathSegment::Name(name.clone()));
                let node = convert_value::<D>(item, depth + 1, path);
                path.pop();
                members.push((name.clone(), node?));
            }
            D::sort_members(&mut members);
            Ok(Node::Object(members))
        }
    }
}

fn number_error(problem: NumberProblem, lexeme: &str, at: Location) -> CanonError {
    match problem {
        NumberProblem::OutOfRange => CanonError::NumberOutOfRange {
            number: shortened(lexeme),
            at,
        },
        NumberProblem::TooManyDigits(digits) => CanonError::IntegerTooLong {
            digits,
            limit: PYTHON_MAX_INT_DIGITS,
            at,
        },
        NumberProblem::InexactInteger => CanonError::IntegerNotExact {
            number: shortened(lexeme),
            at,
        },
    }
}

/// Returns a number lexeme cut short with `…` past
/// [`MAX_ERROR_NUMBER_CHARS`] characters.
fn shortened(lexeme: &str) -> String {
    let mut number: String = lexeme.chars().take(MAX_ERROR_NUMBER_CHARS).collect();
    if lexeme.chars().count() > MAX_ERROR_NUMBER_CHARS {
        number.push('…');
    }
    number
}

/// A recursive-descent parser for RFC 8259 JSON text. Recursion is bounded
/// by [`MAX_DEPTH`].
struct Parser<'a, D: Dialect> {
    text: &'a str,
    bytes: &'a [u8],
    /// Byte offset of the next unread byte; always on a character boundary
    /// between tokens.
    offset: usize,
    path: Vec<PathSegment>,
    dialect: std::marker::PhantomData<D>,
}

impl<'a, D: Dialect> Parser<'a, D> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            offset: 0,
            path: Vec::new(),
            dialect: std::marker::PhantomData,
        }
    }

    fn parse_document(mut self) -> Result<Node<D::Number>, CanonError> {
        self.skip_whitespace();
        let node = self.parse_value(0)?;
        self.skip_whitespace();
        if self.offset < self.bytes.len() {
            return Err(
                self.syntax_error(self.offset, "expected end of input after the JSON value")
            );
        }
        Ok(node)
    }

    fn parse_value(&mut self, depth: usize) -> Result<Node<D::Number>, CanonError> {
        let start = self.offset;
        match self.peek() {
            Some(b'{') => self.parse_object(depth),
            Some(b'[') => self.parse_array(depth),
            Some(b'"') => Ok(Node::String(self.parse_string()?)),
            Some(b't') => self.parse_literal("true", Node::Bool(true)),
            Some(b'f') => self.parse_literal("false", Node::Bool(false)),
            Some(b'n') => self.parse_literal("null", Node::Null),
            Some(b'N') if self.rest().starts_with("NaN") => Err(self.non_finite("NaN", start)),
            Some(b'I') if self.rest().starts_with("Infinity") => {
                Err(self.non_finite("Infinity", start))
            }
            Some(b'-') if self.rest().starts_with("-Infinity") => {
                Err(self.non_finite("-Infinity", start))
            }
            Some(b'-' | b'0'..=b'9') => self.parse_number(),
            _ => Err(self.syntax_error(start, "expected a JSON value")),
        }
    }

    fn parse_literal(
        &mut self,
        literal: &str,
        node: Node<D::Number>,
    ) -> Result<Node<D::Number>, CanonError> {
        if self.rest().starts_with(literal) {
            self.offset += literal.len();
            Ok(node)
        } else {
            Err(self.syntax_error(self.offset, "expected a JSON value"))
        }
    }

    fn enter_container(&mut self, depth: usize) -> Result<(), CanonError> {
        if depth >= MAX_DEPTH {
            return Err(CanonError::TooDeep {
                limit: MAX_DEPTH,
                at: self.location(self.offset),
            });
        }
        // Step past the '[' or '{'.
        self.offset += 1;
        self.skip_whitespace();
        Ok(())
    }

    fn parse_array(&mut self, depth: usize) -> Result<Node<D::Number>, CanonError> {
        self.enter_container(depth)?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.offset += 1;
            return Ok(Node::Array(items));
        }
        loop {
            self.path.push(PathSegment::Index(items.len()));
            let item = self.parse_value(depth + 1)?;
            self.path.pop();
            items.push(item);

            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.offset += 1;
                    self.skip_whitespace();
                }
                Some(b']') => {
                    self.offset += 1;
                    return Ok(Node::Array(items));
                }
                _ => {
                    return Err(self
                        .syntax_error(self.offset, "expected ',' or ']' after an array element"));
                }
            }
        }
    }

    fn parse_object(&mut self, depth: usize) -> Result<Node<D::Number>, CanonError> {
        self.enter_container(depth)?;
        let mut members = Vec::new();
        let mut seen = HashSet::new();
        if self.peek() == Some(b'}') {
            self.offset += 1;
            return Ok(Node::Object(members));
        }
        loop {
            let name_start = self.offset;
            if self.peek() != Some(b'"') {
                return Err(
                    self.syntax_error(name_start, "expected a member name in double quotes")
                );
            }
            let name = self.parse_string()?;
            self.path.push(PathSegment::Name(name.clone()));
            if !seen.insert(name.clone()) {
                return Err(CanonError::DuplicateName {
                    name,
                    at: self.location(name_start),
                });
            }

            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.syntax_error(self.offset, "expected ':' after a member name"));
            }
            self.offset += 1;
            self.skip_whitespace();
            let value = self.parse_value(depth + 1)?;
            self.path.pop();
            members.push((name, value));

            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.offset += 1;
                    self.skip_whitespace();
                }
                Some(b'}') => {
                    self.offset += 1;
                    D::sort_members(&mut members);
                    return Ok(Node::Object(members));
                }
                _ => {
                    return Err(
                        self.syntax_error(self.offset, "expected ',' or '}' after a member value")
                    );
                }
            }
        }
    }

    /// Parses a string starting at its opening quote and returns it
    /// unescaped.
    fn parse_string(&mut self) -> Result<String, CanonError> {
        let open = self.offset;
        self.offset += 1;
        let mut value = String::new();
        loop {
            let run_start = self.offset;
            while let Some(&b) = self.bytes.get(self.offset) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.offset += 1;
            }
            // The run ends before an ASCII byte or at the end of the input,
            // both character boundaries, so the slice is whole characters.
            value.push_str(&self.text[run_start..self.offset]);

            match self.peek() {
                None => {
                    return Err(self.syntax_error(
                        self.offset,
                        &format!(
                            "expected '\"' to end the string that starts at {}",
                            self.line_column_text(open)
                        ),
                    ));
                }
                Some(b'"') => {
                    self.offset += 1;
                    return Ok(value);
                }
                Some(b'\\') => value.push(self.parse_escape()?),
                Some(byte) => {
                    return Err(self.syntax_error(
                        self.offset,
                        &format!("control character U+{byte:04X} must be escaped in a string"),
                    ));
                }
            }
        }
    }

    /// Parses an escape sequence starting at its backslash.
    fn parse_escape(&mut self) -> Result<char, CanonError> {
        let start = self.offset;
        let escaped = match self.bytes.get(start + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.parse_unicode_escape(),
            _ => {
                return Err(self.syntax_error(
                    start + 1,
                    "expected one of \" \\ / b f n r t u after a backslash",
                ));
            }
        };
        self.offset += 2;
        Ok(escaped)
    }

    /// Parses `\uXXXX`, or two of them that form a surrogate pair.
    fn parse_unicode_escape(&mut self) -> Result<char, CanonError> {
        let start = self.offset;
        let unit = self.read_hex4(start)?;
        self.offset += 6;

        let code_point = match unit {
            0xD800..=0xDBFF => {
                let pair_start = self.offset;
                let low = if self.rest().starts_with("\\u") {
                    Some(self.read_hex4(pair_start)?)
                } else {
                    None
                };
                match low {
                    Some(low @ 0xDC00..=0xDFFF) => {
                        self.offset += 6;
                        0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    _ => return Err(self.unpaired_surrogate(unit, start)),
                }
            }
            0xDC00..=0xDFFF => return Err(self.unpaired_surrogate(unit, start)),
            _ => u32::from(unit),
        };

        // Surrogates were handled above, so every code point here is a
        // Unicode scalar value and the fallback is never taken.
        char::from_u32(code_point).ok_or_else(|| self.unpaired_surrogate(unit, start))
    }

    /// Reads the four hex digits of a `\u` escape that starts at `start`.
    fn read_hex4(&self, start: usize) -> Result<u16, CanonError> {
        let mut unit = 0u16;
        for offset in start + 2..start + 6 {
            let digit = self
                .bytes
                .get(offset)
                .and_then(|&b| char::from(b).to_digit(16));
            match digit {
                // Four hex digits fit in a u16.
                Some(digit) => unit = unit * 16 + digit as u16,
                None => {
                    return Err(self.syntax_error(offset, "expected four hex digits after \\u"));
                }
            }
        }
        Ok(unit)
    }

    /// Parses a number by the RFC 8259 grammar:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn parse_number(&mut self) -> Result<Node<D::Number>, CanonError> {
        let start = self.offset;
        if self.peek() == Some(b'-') {
            self.offset += 1;
        }

        match self.peek() {
            Some(b'0') => {
                self.offset += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.syntax_error(start, "numbers must not have leading zeros"));
                }
            }
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.syntax_error(self.offset, "expected a digit in a number")),
        }

        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.offset += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(
                    self.syntax_error(self.offset, "expected a digit after the decimal point")
                );
            }
            self.skip_digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            is_float = true;
            self.offset += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.offset += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax_error(self.offset, "expected a digit in the exponent"));
            }
            self.skip_digits();
        }

        let lexeme = &self.text[start..self.offset];
        D::number_from_lexeme(lexeme, is_float)
            .map(Node::Number)
            .map_err(|problem| number_error(problem, lexeme, self.location(start)))
    }

    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.offset += 1;
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.offset += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.offset).copied()
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.offset..).unwrap_or("")
    }

    /// Returns the line and column of a byte offset, both from 1, with
    /// columns counted in characters.
    fn location(&self, offset: usize) -> Location {
        Location {
            line_column: Some(self.line_column(offset)),
            path: render_path(&self.path),
        }
    }

    fn line_column_text(&self, offset: usize) -> String {
        let (line, column) = self.line_column(offset);
        format!("line {line}, column {column}")
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = &self.bytes[..offset.min(self.bytes.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        let column = 1 + before[line_start..]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count();
        (line, column)
    }

    fn syntax_error(&self, offset: usize, expected: &str) -> CanonError {
        let found = match self.text.get(offset..).and_then(|rest| rest.chars().next()) {
            None if offset >= self.bytes.len() => "end of input".to_owned(),
            None => "a partial character".to_owned(),
            Some(c) if c.is_control() => format!("U+{:04X}", u32::from(c)),
            Some(c) => format!("{c:?}"),
        };
        CanonError::Syntax {
            at: self.location(offset),
            reason: format!("{expected}, found {found}"),
        }
    }

    fn non_finite(&self, literal: &'static str, offset: usize) -> CanonError {
        CanonError::NonFiniteLiteral {
            literal,
            at: self.location(offset),
        }
    }

    fn unpaired_surrogate(&self, unit: u16, offset: usize) -> CanonError {
        CanonError::UnpairedSurrogate {
            unit,
            at: self.location(offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jcs(text: &str) -> String {
        match canonicalize(text, Profile::Jcs) {
            Ok(bytes) => String::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}")),
            Err(e) => panic!("jcs rejected {text:?}: {e}"),
        }
    }

    fn python(text: &str) -> String {
        match canonicalize(text, Profile::PythonSortKeys) {
            Ok(bytes) => String::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}")),
            Err(e) => panic!("python-sort-keys rejected {text:?}: {e}"),
        }
    }

    fn both_errors(text: &str) -> [CanonError; 2] {
        Profile::ALL.map(|profile| match canonicalize(text, profile) {
            Ok(bytes) => panic!(
                "{profile} accepted {text:?} as {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Err(e) => e,
        })
    }

    #[test]
    fn profile_names_round_trip() {
        for profile in Profile::ALL {
            assert_eq!(Profile::parse(profile.as_str()), Ok(profile));
            assert_eq!(profile.as_str().parse::<Profile>(), Ok(profile));
            assert_eq!(profile.to_string(), profile.as_str());
        }
        assert_eq!(
            Profile::parse("JCS").map_err(|e| e.to_string()),
            Err(
                "unknown canonicalization profile \"JCS\": expected \"jcs\" or \"python-sort-keys\""
                    .to_owned()
            )
        );
    }

    #[test]
    fn ecmascript_number_forms() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (100.0, "100"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (123.456, "123.456"),
            (5e-324, "5e-324"),
            (0.001, "0.001"),
            // Exactly 1424953923781206.25 and ….75: ties between two
            // 17-digit decimals, which go to the even last digit.
            (f64::from_bits(0x43143ff3c1cb0959), "1424953923781206.2"),
            (f64::from_bits(0x43143ff3c1cb095b), "1424953923781206.8"),
        ];
        for (value, expected) in cases {
            let mut out = String::new();
            write_ecmascript_number(value, &mut out);
            assert_eq!(out, expected, "{value:e}");
        }
    }

    #[test]
    fn python_float_repr_forms() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e-7, "1e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (-2.5e-300, "-2.5e-300"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.001, "0.001"),
            (f64::from_bits(0x43143ff3c1cb0959), "1424953923781206.2"),
            (f64::from_bits(0x43143ff3c1cb095b), "1424953923781206.8"),
        ];
        for (value, expected) in cases {
            let mut out = String::new();
            write_python_float_repr(value, &mut out);
            assert_eq!(out, expected, "{value:e}");
        }
    }

    #[test]
    fn python_integers_keep_every_digit() {
        assert_eq!(python("9007199254740993"), "9007199254740993");
        assert_eq!(
            python("-123456789012345678901234567890"),
            "-123456789012345678901234567890"
        );
        assert_eq!(python("-0"), "0");
        assert_eq!(python("-0.0"), "-0.0");
    }

    #[test]
    fn jcs_integers_must_be_exact() {
        assert_eq!(jcs("9007199254740991"), "9007199254740991");
        assert_eq!(jcs("-9007199254740991"), "-9007199254740991");
        assert_eq!(jcs("-0"), "0");
        for lexeme in [
            "9007199254740992",
            "-9007199254740993",
            "18446744073709551616",
        ] {
            let error = canonicalize(lexeme, Profile::Jcs).map(|_| ());
            assert!(
                matches!(error, Err(CanonError::IntegerNotExact { .. })),
                "{lexeme}: {error:?}"
            );
        }
        // A float is a double by definition, so it rounds as RFC 8785
        // specifies.
        assert_eq!(jcs("9007199254740993.0"), "9007199254740992");
        assert_eq!(jcs("1e16"), "10000000000000000");
    }

    #[test]
    fn separators_and_whitespace() {
        let text = " { \"b\" : [ 1 , { } , [ ] ] ,\r\n\t\"a\" : null } ";
        assert_eq!(jcs(text), r#"{"a":null,"b":[1,{},[]]}"#);
        assert_eq!(python(text), r#"{"a": null, "b": [1, {}, []]}"#);
    }

    #[test]
    fn member_order_differs_by_profile() {
        // U+FB01 is one UTF-16 unit; U+1F600 is the pair D83D DE00, so it
        // sorts first by code unit and last by code point.
        let text = r#"{"\ufb01": 1, "\ud83d\ude00": 2}"#;
        assert_eq!(jcs(text), "{\"😀\":2,\"ﬁ\":1}");
        assert_eq!(python(text), r#"{"\ufb01": 1, "\ud83d\ude00": 2}"#);
    }

    #[test]
    fn string_escapes_by_profile() {
        let text = r#""\u0000\u001f\b\f\n\r\t\"\\\/\u007f\u00e9""#;
        assert_eq!(
            jcs(text),
            "\"\\u0000\\u001f\\b\\f\\n\\r\\t\\\"\\\\/\u{7f}é\""
        );
        assert_eq!(python(text), r#""\u0000\u001f\b\f\n\r\t\"\\/\u007f\u00e9""#);
    }

    #[test]
    fn non_finite_literals_rejected() {
        for (text, literal) in [
            ("NaN", "NaN"),
            ("[Infinity]", "Infinity"),
            ("{\"x\": -Infinity}", "-Infinity"),
        ] {
            for error in both_errors(text) {
                match error {
                    CanonError::NonFiniteLiteral { literal: found, .. } => {
                        assert_eq!(found, literal)
                    }
                    other => panic!("{text}: unexpected error {other}"),
                }
            }
        }
    }

    #[test]
    fn overflowing_numbers_rejected() {
        for text in ["1e400", "-1.5E+309", "[0, 1e99999999999999999999]"] {
            for error in both_errors(text) {
                assert!(
                    matches!(error, CanonError::NumberOutOfRange { .. }),
                    "{text}: {error}"
                );
            }
        }
        let [_, python_error] = both_errors("[1e400]");
        assert_eq!(
            python_error.to_string(),
            "number 1e400 at line 1, column 2, path $[0] is too large for an IEEE-754 double; \
             it would become infinity"
        );

        // A 400-digit integer is beyond what jcs represents exactly, but is
        // an exact Python int.
        let long_integer = "9".repeat(400);
        match canonicalize(&long_integer, Profile::Jcs) {
            Err(CanonError::IntegerNotExact { number, .. }) => {
                assert_eq!(number, format!("{}…", "9".repeat(40)));
            }
            other => panic!("unexpected result {other:?}"),
        }
        assert_eq!(python(&long_integer), long_integer);
        // As a float it overflows a double.
        let long_float = format!("{long_integer}.0");
        match canonicalize(&long_float, Profile::Jcs) {
            Err(CanonError::NumberOutOfRange { number, .. }) => {
                assert_eq!(number, format!("{}…", "9".repeat(40)));
            }
            other => panic!("unexpected result {other:?}"),
        }
    }

    #[test]
    fn python_integer_digit_limit() {
        let limit = "7".repeat(PYTHON_MAX_INT_DIGITS);
        assert_eq!(python(&format!("-{limit}")), format!("-{limit}"));

        let over = format!("[-{limit}7]");
        match canonicalize(&over, Profile::PythonSortKeys) {
            Err(CanonError::IntegerTooLong { digits, limit, at }) => {
                assert_eq!(digits, PYTHON_MAX_INT_DIGITS + 1);
                assert_eq!(limit, PYTHON_MAX_INT_DIGITS);
                assert_eq!(at.path, "$[0]");
            }
            other => panic!("unexpected result {other:?}"),
        }
    }

    #[test]
    fn duplicate_names_rejected() {
        // The second name is "a" after unescaping.
        let text = "{\"z\": 0,\n \"a\": 1, \"\\u0061\": 2}";
        for error in both_errors(text) {
            assert_eq!(
                error,
                CanonError::DuplicateName {
                    name: "a".to_owned(),
                    at: Location {
                        line_column: Some((2, 10)),
                        path: "$.a".to_owned(),
                    },
                }
            );
        }
    }

    #[test]
    fn unpaired_surrogates_rejected() {
        for (text, unit) in [
            (r#""\ud800""#, 0xD800),
            (r#""\ud800x""#, 0xD800),
            (r#""\ud800\u0041""#, 0xD800),
            (r#""\udc00""#, 0xDC00),
            (r#"{"k": ["\ude00\ud83d"]}"#, 0xDE00),
        ] {
            for error in both_errors(text) {
                match error {
                    CanonError::UnpairedSurrogate { unit: found, .. } => {
                        assert_eq!(found, unit, "{text}")
                    }
                    other => panic!("{text}: unexpected error {other}"),
                }
            }
        }
    }

    #[test]
    fn syntax_errors_name_position_and_path() {
        let cases = [
            (
                "",
                "invalid JSON at line 1, column 1, path $: expected a JSON value, found end of input",
            ),
            (
                "{\"a\": [1, 2,]}",
                "invalid JSON at line 1, column 13, path $.a[2]: expected a JSON value, found ']'",
            ),
            (
                "[1 2]",
                "invalid JSON at line 1, column 4, path $: expected ',' or ']' after an array element, found '2'",
            ),
            (
                "{\"a\" 1}",
                "invalid JSON at line 1, column 6, path $.a: expected ':' after a member name, found '1'",
            ),
            (
                "{\"a\": 1,}",
                "invalid JSON at line 1, column 9, path $: expected a member name in double quotes, found '}'",
            ),
            (
                "{'a': 1}",
                "invalid JSON at line 1, column 2, path $: expected a member name in double quotes, found '\\''",
            ),
            (
                "[01]",
                "invalid JSON at line 1, column 2, path $[0]: numbers must not have leading zeros, found '0'",
            ),
            (
                "[1.]",
                "invalid JSON at line 1, column 4, path $[0]: expected a digit after the decimal point, found ']'",
            ),
            (
                "[.5]",
                "invalid JSON at line 1, column 2, path $[0]: expected a JSON value, found '.'",
            ),
            (
                "[1e]",
                "invalid JSON at line 1, column 4, path $[0]: expected a digit in the exponent, found ']'",
            ),
            (
                "-",
                "invalid JSON at line 1, column 2, path $: expected a digit in a number, found end of input",
            ),
            (
                "+1",
                "invalid JSON at line 1, column 1, path $: expected a JSON value, found '+'",
            ),
            (
                "[\"é\u{1}\"]",
                "invalid JSON at line 1, column 4, path $[0]: control character U+0001 must be escaped in a string, found U+0001",
            ),
            (
                "[\"abc",
                "invalid JSON at line 1, column 6, path $[0]: expected '\"' to end the string that starts at line 1, column 2, found end of input",
            ),
            (
                "\"\\x\"",
                "invalid JSON at line 1, column 3, path $: expected one of \" \\ / b f n r t u after a backslash, found 'x'",
            ),
            (
                "\"\\u12g4\"",
                "invalid JSON at line 1, column 6, path $: expected four hex digits after \\u, found 'g'",
            ),
            (
                "\"\\u12",
                "invalid JSON at line 1, column 6, path $: expected four hex digits after \\u, found end of input",
            ),
            (
                "{\"a\":\n  tru}",
                "invalid JSON at line 2, column 3, path $.a: expected a JSON value, found 't'",
            ),
            (
                "1 2",
                "invalid JSON at line 1, column 3, path $: expected end of input after the JSON value, found '2'",
            ),
            (
                "\u{feff}{}",
                "invalid JSON at line 1, column 1, path $: expected a JSON value, found '\\u{feff}'",
            ),
            (
                "{\"a b\": {\"c\": [nul]}}",
                "invalid JSON at line 1, column 16, path $[\"a b\"].c[0]: expected a JSON value, found 'n'",
            ),
        ];
        for (text, expected) in cases {
            for error in both_errors(text) {
                assert_eq!(error.to_string(), expected, "input {text:?}");
            }
        }
    }

    #[test]
    fn nesting_limit() {
        let deepest = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(jcs(&deepest), deepest);

        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        for error in both_errors(&too_deep) {
            match error {
                CanonError::TooDeep { limit, at } => {
                    assert_eq!(limit, MAX_DEPTH);
                    assert_eq!(at.line_column, Some((1, MAX_DEPTH + 1)));
                }
                other => panic!("unexpected error {other}"),
            }
        }

        // Far deeper input stops at the limit instead of exhausting the stack.
        let hostile = "{\"a\":[".repeat(100_000);
        for error in both_errors(&hostile) {
            assert!(matches!(error, CanonError::TooDeep { .. }), "{error}");
        }
    }

    #[test]
    fn value_numbers_keep_their_kind() {
        let value =
            json!({"int": 1, "float": 1.0, "neg": -0.0, "big": u64::MAX, "small": i64::MIN});
        assert_eq!(
            canonicalize_value(&value, Profile::PythonSortKeys),
            Ok(br#"{"big": 18446744073709551615, "float": 1.0, "int": 1, "neg": -0.0, "small": -9223372036854775808}"#.to_vec())
        );
        assert!(matches!(
            canonicalize_value(&value, Profile::Jcs),
            Err(CanonError::IntegerNotExact { .. })
        ));
        let exact = json!({"int": 1, "float": 1.0, "neg": -0.0, "max": 9_007_199_254_740_991_i64});
        assert_eq!(
            canonicalize_value(&exact, Profile::Jcs),
            Ok(br#"{"float":1,"int":1,"max":9007199254740991,"neg":0}"#.to_vec())
        );
    }

    #[test]
    fn value_matches_text() {
        let text = r#"{"ﬁ": [0.1, 1e-7, 1e21, "é😀\u0001"], "😀": {"x": null, "b": true}}"#;
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => panic!("serde_json rejected the input: {e}"),
        };
        for profile in Profile::ALL {
            assert_eq!(
                canonicalize_value(&value, profile),
                canonicalize(text, profile),
                "{profile}"
            );
        }
    }

    #[test]
    fn value_nesting_limit() {
        let mut value = json!([]);
        for _ in 0..MAX_DEPTH {
            value = json!({ "k": value });
        }
        match canonicalize_value(&value, Profile::Jcs) {
            Err(CanonError::TooDeep { limit, at }) => {
                assert_eq!(limit, MAX_DEPTH);
                assert_eq!(at.line_column, None);
                assert_eq!(at.path, format!("${}", ".k".repeat(MAX_DEPTH)));
            }
            other => panic!("unexpected result {other:?}"),
        }
    }

    #[test]
    fn long_names_shortened_in_paths() {
        let name = "n".repeat(100);
        let text = format!("{{\"{name}\": [x]}}");
        let [error, _] = both_errors(&text);
        match error {
            CanonError::Syntax { at, .. } => {
                assert_eq!(at.path, format!("$[\"{}…\"][0]", "n".repeat(64)));
            }
            other => panic!("unexpected error {other}"),
        }
    }
}
