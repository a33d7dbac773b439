//! Canonicalizes arbitrary UTF-8 text with both profiles of
//! `hallmark::canon`: `jcs` (RFC 8785) and `python-sort-keys`.
//!
//! Invariants:
//!
//! - neither profile panics, and each returns the same result for the same
//!   text;
//! - both profiles accept the same texts and reject the others with the
//!   same error, except for the integers that only one of them rejects:
//!   beyond ±(2^53 − 1) for `jcs`, longer than 4300 digits for
//!   `python-sort-keys`;
//! - canonical output canonicalizes to itself. The one exception is `jcs`
//!   output that prints an integral double from 2^53 up to 10^21 in
//!   integer form, as ECMAScript does: `jcs` rejects such integers as input
//!   on purpose;
//! - serde_json, an independent parser, reads the input and the output as
//!   the same JSON value: the same strings, member names, array order and
//!   literals, and the same numbers. A `jcs` number is the same double,
//!   printed as `0` for either zero. A `python-sort-keys` integer keeps its
//!   digits, and a float is the same double with the same sign and stays a
//!   float;
//! - outside strings, `jcs` output has no whitespace and `python-sort-keys`
//!   output has exactly one space after each `,` and `:`;
//! - `python-sort-keys` output is printable ASCII.

#![no_main]

use std::collections::BTreeMap;

use hallmark::canon::{CanonError, JCS_MAX_EXACT_INTEGER, Profile, canonicalize};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

/// Below this magnitude ECMAScript prints an integral double without an
/// exponent (ECMA-262, Number::toString).
const ECMASCRIPT_MAX_PLAIN_INTEGER: f64 = 1e21;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let jcs = canonicalize(text, Profile::Jcs);
    let python = canonicalize(text, Profile::PythonSortKeys);

    let copy = text.to_owned();
    assert_eq!(
        canonicalize(&copy, Profile::Jcs),
        jcs,
        "jcs differs on a rerun"
    );
    assert_eq!(
        canonicalize(&copy, Profile::PythonSortKeys),
        python,
        "python-sort-keys differs on a rerun"
    );
    check_profiles_agree(&jcs, &python);

    if let Ok(output) = &jcs {
        check_output(text, output, Profile::Jcs);
    }
    if let Ok(output) = &python {
        assert!(
            output.iter().all(|b| (b' '..=b'~').contains(b)),
            "python-sort-keys output is not printable ASCII: {:?}",
            String::from_utf8_lossy(output)
        );
        check_output(text, output, Profile::PythonSortKeys);
    }
});

fn check_profiles_agree(jcs: &Result<Vec<u8>, CanonError>, python: &Result<Vec<u8>, CanonError>) {
    match (jcs, python) {
        (Err(CanonError::IntegerNotExact { .. }), _)
        | (_, Err(CanonError::IntegerTooLong { .. }))
        | (Ok(_), Ok(_)) => {}
        (Err(jcs), Err(python)) => assert_eq!(jcs, python, "the profiles' errors differ"),
        (Ok(_), Err(error)) => panic!("only python-sort-keys rejects the input: {error}"),
        (Err(error), Ok(_)) => panic!("only jcs rejects the input: {error}"),
    }
}

fn check_output(input: &str, output: &[u8], profile: Profile) {
    let output = std::str::from_utf8(output).expect("canonical output is not UTF-8");
    check_separators(output, profile);
    check_idempotent(output, profile);

    let input_tree = Tree::parse(input)
        .unwrap_or_else(|e| panic!("serde_json rejects input that {profile} accepts: {e}"));
    let output_tree = Tree::parse(output)
        .unwrap_or_else(|e| panic!("serde_json rejects {profile} output {output:?}: {e}"));
    let mut path = String::from("$");
    compare(&input_tree, &output_tree, profile, &mut path);
}

fn check_idempotent(output: &str, profile: Profile) {
    match canonicalize(output, profile) {
        Ok(again) => assert_eq!(
            String::from_utf8_lossy(&again),
            output,
            "{profile} output is not canonical"
        ),
        Err(CanonError::IntegerNotExact { number, .. }) if profile == Profile::Jcs => {
            let value: f64 = number
                .parse()
                .unwrap_or_else(|_| panic!("jcs printed the integer {number:?}"));
            assert!(
                value.abs() > JCS_MAX_EXACT_INTEGER as f64
                    && value.abs() < ECMASCRIPT_MAX_PLAIN_INTEGER,
                "jcs printed {number}, which it rejects as input"
            );
        }
        Err(error) => panic!("{profile} rejects its own output {output:?}: {error}"),
    }
}

/// Checks the whitespace between tokens: none for `jcs`, and for
/// `python-sort-keys` one space after each `,` and `:` and nowhere else.
fn check_separators(output: &str, profile: Profile) {
    let mut in_string = false;
    let mut escaped = false;
    let mut previous = None;
    for byte in output.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            previous = Some(byte);
            continue;
        }
        assert!(
            !matches!(byte, b'\t' | b'\n' | b'\r'),
            "{profile} output {output:?} has whitespace between tokens"
        );
        let after_separator = matches!(previous, Some(b',' | b':'));
        match profile {
            Profile::Jcs => assert_ne!(byte, b' ', "jcs output {output:?} has a space"),
            Profile::PythonSortKeys => assert_eq!(
                byte == b' ',
                after_separator,
                "python-sort-keys output {output:?} has a space where it does not belong, \
                 or none after a separator"
            ),
        }
        in_string = byte == b'"';
        previous = Some(byte);
    }
}

/// A JSON value as serde_json reads it, with each number kept as written.
enum Tree {
    Literal(String),
    Number(String),
    String(String),
    Array(Vec<Tree>),
    Object(BTreeMap<String, Tree>),
}

impl Tree {
    /// Parses JSON text by reading each level as raw values, so that
    /// numbers keep their text. Each call reads one level, so serde_json's
    /// nesting limit (127 levels in serde_json 1.0.154) never applies.
    fn parse(text: &str) -> serde_json::Result<Tree> {
        let raw: &RawValue = serde_json::from_str(text)?;
        let raw = raw.get();
        Ok(match raw.as_bytes().first() {
            Some(b'{') => {
                let members: BTreeMap<String, &RawValue> = serde_json::from_str(raw)?;
                let mut tree = BTreeMap::new();
                for (name, value) in members {
                    tree.insert(name, Tree::parse(value.get())?);
                }
                Tree::Object(tree)
            }
            Some(b'[') => {
                let items: Vec<&RawValue> = serde_json::from_str(raw)?;
                let items: serde_json::Result<Vec<Tree>> = items
                    .into_iter()
                    .map(|item| Tree::parse(item.get()))
                    .collect();
                Tree::Array(items?)
            }
            Some(b'"') => Tree::String(serde_json::from_str(raw)?),
            Some(b't' | b'f' | b'n') => Tree::Literal(raw.to_owned()),
            _ => Tree::Number(raw.to_owned()),
        })
    }
}

fn compare(input: &Tree, output: &Tree, profile: Profile, path: &mut String) {
    match (input, output) {
        (Tree::Literal(a), Tree::Literal(b)) | (Tree::String(a), Tree::String(b)) => {
            assert_eq!(a, b, "{profile} changed the value at {path}");
        }
        (Tree::Number(a), Tree::Number(b)) => compare_numbers(a, b, profile, path),
        (Tree::Array(a), Tree::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{profile} changed the length at {path}");
            for (index, (a, b)) in a.iter().zip(b).enumerate() {
                let length = path.len();
                path.push_str(&format!("[{index}]"));
                compare(a, b, profile, path);
                path.truncate(length);
            }
        }
        (Tree::Object(a), Tree::Object(b)) => {
            let a_names: Vec<&String> = a.keys().collect();
            let b_names: Vec<&String> = b.keys().collect();
            assert_eq!(a_names, b_names, "{profile} changed the names at {path}");
            for (name, a) in a {
                let length = path.len();
                path.push_str(&format!("[{name:?}]"));
                compare(a, &b[name], profile, path);
                path.truncate(length);
            }
        }
        _ => panic!("{profile} changed the type at {path}"),
    }
}

fn compare_numbers(input: &str, output: &str, profile: Profile, path: &str) {
    let is_float = |lexeme: &str| lexeme.contains(['.', 'e', 'E']);
    let parse = |lexeme: &str| -> f64 {
        lexeme
            .parse()
            .unwrap_or_else(|_| panic!("{lexeme:?} at {path} is not a Rust f64"))
    };
    match profile {
        Profile::Jcs => {
            assert_eq!(parse(input), parse(output), "jcs changed {input} at {path}");
            assert_ne!(output, "-0", "jcs printed -0 at {path}");
        }
        Profile::PythonSortKeys if !is_float(input) => {
            let expected = if input == "-0" { "0" } else { input };
            assert_eq!(
                output, expected,
                "python-sort-keys changed {input} at {path}"
            );
        }
        Profile::PythonSortKeys => {
            assert!(
                is_float(output),
                "python-sort-keys printed float {input} as {output} at {path}"
            );
            assert_eq!(
                parse(input).to_bits(),
                parse(output).to_bits(),
                "python-sort-keys changed {input} to {output} at {path}"
            );
        }
    }
}
