//! Checks `hallmark::canon` byte for byte against CPython's `json` module,
//! against the examples of RFC 8785 and, where they are installed, against
//! the `rfc8785` Python package and Node.js.
//!
//! `python3` must be on `PATH`. The `rfc8785` cross-check runs with the
//! interpreter in `HALLMARK_RFC8785_PYTHON`, or `python3`, when it can import
//! the package, and is skipped with a message otherwise. The Node.js
//! cross-check is skipped when `node` is not on `PATH`.

use std::io::Write as _;
use std::process::{Command, Stdio};

use hallmark::canon::{CanonError, MAX_DEPTH, Profile, canonicalize, canonicalize_value};

/// The command whose output `python-sort-keys` reproduces.
const CPYTHON_SORT_KEYS: &str =
    r#"import json,sys; print(json.dumps(json.loads(sys.stdin.read()), sort_keys=True), end="")"#;

/// RFC 8785 canonicalization by the `rfc8785` package. Integers stay exact
/// Python ints, so that the package rejects those beyond ±(2^53 − 1) as
/// Hallmark's `jcs` does.
const PYTHON_RFC8785: &str = r#"import json,sys,rfc8785; sys.stdout.buffer.write(rfc8785.dumps(json.loads(sys.stdin.read())))"#;

/// RFC 8785 canonicalization in JavaScript: ECMAScript's `JSON.stringify`
/// prints numbers and strings as JCS does, and `Array.prototype.sort`
/// orders strings by UTF-16 code units.
const NODE_JCS: &str = r#"
const canon = (v) => Array.isArray(v) ? "[" + v.map(canon).join(",") + "]"
  : v !== null && typeof v === "object"
    ? "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canon(v[k])).join(",") + "}"
    : JSON.stringify(v);
process.stdout.write(canon(JSON.parse(require("fs").readFileSync(0, "utf8"))));
"#;

/// Runs `program args…` with `input` on standard input and returns standard
/// output, or standard error when the program fails. `Err` also covers a
/// program that cannot be started.
fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<Vec<u8>, String> {
    let mut child = Command::new(program)
        .args(args)
        .env("PYTHONIOENCODING", "utf-8")
        .env_remove("PYTHONINTMAXSTRDIGITS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;

    // Dropping stdin after the write closes the pipe, so the child reads EOF.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("cannot write to {program}: {e}"))?;
    }

    let output = child
        .wait_with_output()
        .map_err(|e| format!("{program} failed: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// CPython's bytes for `input`, from the command that producers run.
fn cpython_sort_keys(input: &str) -> Result<Vec<u8>, String> {
    run_with_input("python3", &["-c", CPYTHON_SORT_KEYS], input)
}

fn cpython_accepts(input: &str) -> Vec<u8> {
    cpython_sort_keys(input)
        .unwrap_or_else(|e| panic!("python3 rejected {input:?} (is python3 on PATH?): {e}"))
}

fn canonical(input: &str, profile: Profile) -> Vec<u8> {
    canonicalize(input, profile).unwrap_or_else(|e| panic!("{profile} rejected {input:?}: {e}"))
}

fn rejection(input: &str, profile: Profile) -> CanonError {
    match canonicalize(input, profile) {
        Ok(bytes) => panic!(
            "{profile} accepted {input:?} as {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => e,
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Inputs and the bytes that `json.dumps(json.loads(input), sort_keys=True)`
/// returns for them in CPython 3.
const CPYTHON_CASES: &[(&str, &str)] = &[
    // Strings.
    (
        r#"{"name": "café – naïve"}"#,
        r#"{"name": "caf\u00e9 \u2013 na\u00efve"}"#,
    ),
    ("\"😀𝄞\"", r#""\ud83d\ude00\ud834\udd1e""#),
    (
        r#""\ud83d\ude00\uD834\uDD1E""#,
        r#""\ud83d\ude00\ud834\udd1e""#,
    ),
    (
        r#""\u0000\u0001\u001f\b\f\n\r\t\u007f""#,
        r#""\u0000\u0001\u001f\b\f\n\r\t\u007f""#,
    ),
    ("\"raw \u{7f} and \u{80}\"", r#""raw \u007f and \u0080""#),
    (
        r#""quote \" backslash \\ slash \/ end""#,
        r#""quote \" backslash \\ slash / end""#,
    ),
    (r#""\u00E9\u00e9""#, r#""\u00e9\u00e9""#),
    // Floats that repr() prints with an exponent, and its boundaries.
    ("1e-7", "1e-07"),
    ("1e16", "1e+16"),
    ("1.5e300", "1.5e+300"),
    ("1e15", "1000000000000000.0"),
    ("[0.0001, 0.00001]", "[0.0001, 1e-05]"),
    (
        "[1e22, 9999999999999998.0, 12345678901234567890.0, 1.5E-300]",
        "[1e+22, 9999999999999998.0, 1.2345678901234567e+19, 1.5e-300]",
    ),
    ("123456789012345678.0", "1.2345678901234568e+17"),
    // Smallest and largest doubles.
    (
        "[5e-324, 2.2250738585072014e-308]",
        "[5e-324, 2.2250738585072014e-308]",
    ),
    ("1.7976931348623157e308", "1.7976931348623157e+308"),
    ("[1e-400, -1e-400]", "[0.0, -0.0]"),
    // Zeros: -0 is the int 0, -0.0 is a float.
    ("[-0.0, -0, 0, 0.0]", "[-0.0, 0, 0, 0.0]"),
    // Integers keep every digit.
    ("9007199254740993", "9007199254740993"),
    (
        "[18446744073709551617, -340282366920938463463374607431768211457]",
        "[18446744073709551617, -340282366920938463463374607431768211457]",
    ),
    // Number spellings.
    (
        "[1.0, 1E2, 1E+2, 1e-2, 0.1, 100]",
        "[1.0, 100.0, 100.0, 0.01, 0.1, 100]",
    ),
    ("0.30000000000000004", "0.30000000000000004"),
    ("0.1000000000000000055511151231257827", "0.1"),
    // Containers.
    (
        r#"{"b": {"d": [1, {"f": null, "e": true}], "c": false}, "a": []}"#,
        r#"{"a": [], "b": {"c": false, "d": [1, {"e": true, "f": null}]}}"#,
    ),
    (r#"[{}, [], "", {"": []}]"#, r#"[{}, [], "", {"": []}]"#),
    (
        " \r\n\t{ \"k\" :\n[ true ,false, null ] }\n",
        r#"{"k": [true, false, null]}"#,
    ),
    // Member order is code point order: U+1F600 sorts after U+FB01 here,
    // but before it in UTF-16 code unit order.
    (
        r#"{"\ufb01": 1, "\ud83d\ude00": 2, "z": 3, "\u00e9": 4, "A": 5, "a": 6}"#,
        r#"{"A": 5, "a": 6, "z": 3, "\u00e9": 4, "\ufb01": 1, "\ud83d\ude00": 2}"#,
    ),
    (
        r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        r#"{"\r": "Carriage Return", "1": "One", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis", "\u20ac": "Euro Sign", "\ufb33": "Hebrew Letter Dalet With Dagesh", "\ud83d\ude00": "Emoji: Grinning Face"}"#,
    ),
    // Names are compared after unescaping: "\n" < " " < "\"".
    (
        r#"{"a\"b": 2, "a b": 3, "a\nb": 1}"#,
        r#"{"a\nb": 1, "a b": 3, "a\"b": 2}"#,
    ),
    // Scalars at the top level.
    (r#""plain""#, r#""plain""#),
    ("true", "true"),
    ("null", "null"),
];

#[test]
fn python_profile_matches_cpython_table() {
    assert!(CPYTHON_CASES.len() >= 25);
    for &(input, expected) in CPYTHON_CASES {
        let ours = canonical(input, Profile::PythonSortKeys);
        assert_eq!(show(&ours), expected, "hallmark, input {input:?}");

        let theirs = cpython_accepts(input);
        assert_eq!(show(&theirs), expected, "CPython, input {input:?}");
    }
}

/// A xorshift64 generator, so that every run checks the same values.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Builds a JSON array of random numbers of four kinds:
///
/// - doubles from random bit patterns, written with Rust's round-trip `{:e}`;
/// - short decimals with exponents around the switch to exponent notation;
/// - integers of up to 40 digits;
/// - doubles in [2^50, 2^51) that end in .25 or .75. Each lies exactly
///   halfway between two 17-digit decimals, so the even one must be printed.
///
/// With `exact_integers`, integers longer than 15 digits get an `e0`
/// exponent, which makes them floats that `jcs` rounds instead of rejecting.
fn random_numbers_json(rng: &mut XorShift, count: usize, exact_integers: bool) -> String {
    let mut lexemes = Vec::with_capacity(count);
    while lexemes.len() < count {
        match rng.below(4) {
            0 => {
                let value = f64::from_bits(rng.next());
                if value.is_finite() {
                    lexemes.push(format!("{value:e}"));
                }
            }
            1 => {
                let digit_count = 1 + rng.below(17) as u32;
                let mantissa = rng.below(10_u64.pow(digit_count));
                let exponent = rng.below(60) as i64 - 30;
                let sign = if rng.below(2) == 0 { "" } else { "-" };
                lexemes.push(format!("{sign}{mantissa}e{exponent}"));
            }
            2 => {
                let whole = (1u64 << 50) + rng.below(1 << 50);
                let quarter = if rng.below(2) == 0 { 0.25 } else { 0.75 };
                lexemes.push(format!("{:e}", whole as f64 + quarter));
            }
            _ => {
                let mut digits = (1 + rng.below(9)).to_string();
                for _ in 0..rng.below(40) {
                    digits.push(char::from(b'0' + rng.below(10) as u8));
                }
                let sign = if rng.below(2) == 0 { "" } else { "-" };
                let exponent = if exact_integers && digits.len() > 15 {
                    "e0"
                } else {
                    ""
                };
                lexemes.push(format!("{sign}{digits}{exponent}"));
            }
        }
    }
    format!("[{}]", lexemes.join(", "))
}

/// Returns a random character, ASCII (control characters included) half the
/// time and otherwise from the BMP or the astral planes. Surrogates are
/// skipped.
fn random_char(rng: &mut XorShift) -> char {
    loop {
        let code_point = match rng.below(4) {
            0 | 1 => rng.below(0x80),
            2 => rng.below(0x10000),
            _ => 0x10000 + rng.below(0x100000),
        } as u32;
        if let Some(c) = char::from_u32(code_point) {
            return c;
        }
    }
}

/// Builds a JSON object with random string values and random distinct
/// member names, half of them written with `\uXXXX` escapes.
fn random_strings_json(rng: &mut XorShift, count: usize) -> String {
    let mut names = std::collections::BTreeSet::new();
    let mut members = Vec::new();
    while members.len() < count {
        let name: String = (0..rng.below(6)).map(|_| random_char(rng)).collect();
        if !names.insert(name.clone()) {
            continue;
        }
        let value: String = (0..rng.below(12)).map(|_| random_char(rng)).collect();
        let escape_name = rng.below(2) == 0;
        members.push(format!(
            "{}: {}",
            json_string(&name, escape_name),
            json_string(&value, false)
        ));
    }
    format!("{{{}}}", members.join(", "))
}

/// Writes `text` as a JSON string: `"`, `\` and control characters escaped,
/// and with `escape_all` every non-ASCII character as `\uXXXX` units.
fn json_string(text: &str, escape_all: bool) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || (escape_all && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn python_profile_matches_cpython_random_numbers() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let input = random_numbers_json(&mut rng, 3000, false);
    let ours = canonical(&input, Profile::PythonSortKeys);
    let theirs = cpython_accepts(&input);
    assert_eq!(show(&ours), show(&theirs));
}

#[test]
fn python_profile_matches_cpython_random_strings() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let input = random_strings_json(&mut rng, 1500);
    let ours = canonical(&input, Profile::PythonSortKeys);
    let theirs = cpython_accepts(&input);
    assert_eq!(show(&ours), show(&theirs));
}

#[test]
fn cpython_command_output_matches() {
    // The exact command from the producer's side, run once on a manifest.
    let manifest = r#"{"prediction": "versicolor", "index": 77, "probabilities": [0.0, 0.9666666666666667, 0.03333333333333333], "model": {"name": "iris-knn", "trained_at": "2024-05-01T12:00:00Z"}}"#;
    let expected = r#"{"index": 77, "model": {"name": "iris-knn", "trained_at": "2024-05-01T12:00:00Z"}, "prediction": "versicolor", "probabilities": [0.0, 0.9666666666666667, 0.03333333333333333]}"#;
    assert_eq!(show(&cpython_accepts(manifest)), expected);
    assert_eq!(
        show(&canonical(manifest, Profile::PythonSortKeys)),
        expected
    );
}

#[test]
fn non_finite_numbers_rejected() {
    // CPython reads each of these and prints a token that is not JSON, so
    // no canonical form exists.
    let cases = [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        (r#"{"a": [1, NaN]}"#, r#"{"a": [1, NaN]}"#),
        ("1e400", "Infinity"),
        ("[-1.5e999]", "[-Infinity]"),
    ];
    for (input, cpython_output) in cases {
        assert_eq!(show(&cpython_accepts(input)), cpython_output, "{input}");

        for profile in Profile::ALL {
            let error = rejection(input, profile);
            assert!(
                matches!(
                    error,
                    CanonError::NonFiniteLiteral { .. } | CanonError::NumberOutOfRange { .. }
                ),
                "{profile}, {input}: {error}"
            );
        }
    }

    assert_eq!(
        rejection(r#"{"a": [1, NaN]}"#, Profile::PythonSortKeys).to_string(),
        "NaN at line 1, column 11, path $.a[1] is not a JSON number; \
         NaN and infinities cannot be canonicalized"
    );
    assert_eq!(
        rejection("[-1.5e999]", Profile::Jcs).to_string(),
        "number -1.5e999 at line 1, column 2, path $[0] is too large for an IEEE-754 double; \
         it would become infinity"
    );
}

#[test]
fn duplicate_names_rejected_where_cpython_keeps_last() {
    let input = r#"{"k": {"x": 1, "x": 2}}"#;
    assert_eq!(show(&cpython_accepts(input)), r#"{"k": {"x": 2}}"#);
    for profile in Profile::ALL {
        assert_eq!(
            rejection(input, profile).to_string(),
            "duplicate member name at line 1, column 16, path $.k.x; \
             duplicate names are rejected because parsers disagree on which value wins"
        );
    }
}

#[test]
fn unpaired_surrogates_rejected_where_cpython_keeps_them() {
    let input = r#"["\ud800", "x"]"#;
    assert_eq!(show(&cpython_accepts(input)), r#"["\ud800", "x"]"#);
    for profile in Profile::ALL {
        assert_eq!(
            rejection(input, profile).to_string(),
            "unpaired UTF-16 surrogate \\ud800 at line 1, column 3, path $[0]; \
             strings must be valid Unicode"
        );
    }
}

#[test]
fn integer_digit_limit_matches_cpython() {
    let at_limit = format!("-{}", "9".repeat(4300));
    assert_eq!(show(&cpython_accepts(&at_limit)), at_limit);
    assert_eq!(
        show(&canonical(&at_limit, Profile::PythonSortKeys)),
        at_limit
    );

    let over_limit = format!("[{}]", "9".repeat(4301));
    let cpython_error = match cpython_sort_keys(&over_limit) {
        Ok(bytes) => panic!(
            "CPython accepted a 4301-digit integer as {}…; CPython 3.11 or later is required",
            show(bytes.get(..20).unwrap_or(&bytes))
        ),
        Err(stderr) => stderr,
    };
    assert!(
        cpython_error.contains("Exceeds the limit (4300 digits)"),
        "{cpython_error}"
    );
    assert_eq!(
        rejection(&over_limit, Profile::PythonSortKeys).to_string(),
        "integer at line 1, column 2, path $[0] has 4301 digits; \
         CPython's json.loads rejects integers of more than 4300 digits"
    );
}

#[test]
fn nesting_beyond_limit_rejected() {
    let input = format!(
        "{}1{}",
        "[".repeat(MAX_DEPTH + 1),
        "]".repeat(MAX_DEPTH + 1)
    );
    for profile in Profile::ALL {
        assert_eq!(
            rejection(&input, profile).to_string(),
            format!(
                "arrays and objects nested more than 128 levels deep at line 1, column 129, path ${}",
                "[0]".repeat(MAX_DEPTH)
            )
        );
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .unwrap_or_else(|e| panic!("invalid hex at {i}: {e}"))
        })
        .collect()
}

/// RFC 8785 Appendix B: IEEE-754 bit patterns and their canonical form.
const RFC8785_NUMBERS: &[(u64, &str)] = &[
    (0x0000000000000000, "0"),
    (0x8000000000000000, "0"),
    (0x0000000000000001, "5e-324"),
    (0x8000000000000001, "-5e-324"),
    (0x7fefffffffffffff, "1.7976931348623157e+308"),
    (0xffefffffffffffff, "-1.7976931348623157e+308"),
    (0x4340000000000000, "9007199254740992"),
    (0xc340000000000000, "-9007199254740992"),
    (0x4430000000000000, "295147905179352830000"),
    (0x44b52d02c7e14af5, "9.999999999999997e+22"),
    (0x44b52d02c7e14af6, "1e+23"),
    (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
    (0x444b1ae4d6e2ef4e, "999999999999999700000"),
    (0x444b1ae4d6e2ef4f, "999999999999999900000"),
    (0x444b1ae4d6e2ef50, "1e+21"),
    (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
    (0x3eb0c6f7a0b5ed8d, "0.000001"),
    (0x41b3de4355555553, "333333333.3333332"),
    (0x41b3de4355555554, "333333333.33333325"),
    (0x41b3de4355555555, "333333333.3333333"),
    (0x41b3de4355555556, "333333333.3333334"),
    (0x41b3de4355555557, "333333333.33333343"),
    (0xbecbf647612f3696, "-0.0000033333333333333333"),
    (0x43143ff3c1cb0959, "1424953923781206.2"),
];

#[test]
fn jcs_rfc8785_appendix_b_numbers() {
    for &(bits, expected) in RFC8785_NUMBERS {
        let value = f64::from_bits(bits);

        // `{:e}` writes the shortest decimal that reads back as `value`.
        let text = format!("{value:e}");
        assert_eq!(
            show(&canonical(&text, Profile::Jcs)),
            expected,
            "{bits:016x}"
        );

        let from_value = canonicalize_value(&serde_json::json!(value), Profile::Jcs)
            .unwrap_or_else(|e| panic!("{bits:016x}: {e}"));
        assert_eq!(show(&from_value), expected, "{bits:016x} as a Value");
    }

    // The table's NaN (7fffffffffffffff) and Infinity (7ff0000000000000)
    // cannot be written as JSON numbers; their spellings are rejected.
    for input in ["NaN", "Infinity", "1e309"] {
        let error = rejection(input, Profile::Jcs);
        assert!(
            matches!(
                error,
                CanonError::NonFiniteLiteral { .. } | CanonError::NumberOutOfRange { .. }
            ),
            "{input}: {error}"
        );
    }
}

/// RFC 8785 section 3.2.2: the example with numbers, string escapes and
/// literals.
const RFC8785_VALUES_INPUT: &str = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;

const RFC8785_VALUES_OUTPUT: &str = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;

/// RFC 8785 section 3.2.3: member names that sort differently by UTF-16
/// code unit and by code point.
const RFC8785_SORTING_INPUT: &str = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;

#[test]
fn jcs_rfc8785_section_3_examples() {
    assert_eq!(
        show(&canonical(RFC8785_VALUES_INPUT, Profile::Jcs)),
        RFC8785_VALUES_OUTPUT
    );

    assert_eq!(
        show(&canonical(RFC8785_SORTING_INPUT, Profile::Jcs)),
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
         \"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\
         \"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
}

/// The test data of the RFC 8785 reference implementations
/// (github.com/cyberphone/json-canonicalization, `testdata/input` and
/// `testdata/output`, in their latest versions), with outputs as hex.
const JCS_SUITE: &[(&str, &str, &str)] = &[
    (
        "simpleString",
        "    \"this is a test string 1235\"",
        "22746869732069732061207465737420737472696e67203132333522",
    ),
    (
        "arrays",
        r#"[
  56,
  {
    "d": true,
    "10": null,
    "1": [ ]
  }
]"#,
        "5b35362c7b2231223a5b5d2c223130223a6e756c6c2c2264223a747275657d5d",
    ),
    (
        "french",
        r#"{
  "peach": "This sorting order",
  "péché": "is wrong according to French",
  "pêche": "but canonicalization MUST",
  "sin":   "ignore locale"
}"#,
        "7b227065616368223a225468697320736f7274696e67206f72646572222c2270c3a96368c3a9223a2269732077726f6e67206163636f7264696e6720746f204672656e6368222c2270c3aa636865223a226275742063616e6f6e6963616c697a6174696f6e204d555354222c2273696e223a2269676e6f7265206c6f63616c65227d",
    ),
    (
        "structures",
        r#"{
  "1": {"f": {"f": "hi","F": 5} ,"\n": 56.0},
  "10": { },
  "": "empty",
  "a": { },
  "111": [ {"e": "yes","E": "no" } ],
  "A": { }
}"#,
        "7b22223a22656d707479222c2231223a7b225c6e223a35362c2266223a7b2246223a352c2266223a226869227d7d2c223130223a7b7d2c22313131223a5b7b2245223a226e6f222c2265223a22796573227d5d2c2241223a7b7d2c2261223a7b7d7d",
    ),
    (
        "unicode",
        r#"{
  "Unnormalized Unicode":"A\u030a"
}"#,
        "7b22556e6e6f726d616c697a656420556e69636f6465223a2241cc8a227d",
    ),
    (
        "values",
        RFC8785_VALUES_INPUT,
        "7b226c69746572616c73223a5b6e756c6c2c747275652c66616c73655d2c226e756d62657273223a5b3333333333333333332e333333333333332c31652b33302c342e352c302e3030322c31652d32375d2c22737472696e67223a22e282ac245c75303030665c6e4127425c225c5c5c5c5c222f227d",
    ),
    (
        "weird",
        r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\u000a": "Newline",
  "1": "One",
  "\u0080": "Control\u007f",
  "\ud83d\ude02": "Smiley",
  "\u00f6": "Latin Small Letter O With Diaeresis",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "</script>": "Browser Challenge"
}"#,
        "7b225c6e223a224e65776c696e65222c225c72223a2243617272696167652052657475726e222c2231223a224f6e65222c223c2f7363726970743e223a2242726f77736572204368616c6c656e6765222c22c280223a22436f6e74726f6c7f222c22c3b6223a224c6174696e20536d616c6c204c6574746572204f205769746820446961657265736973222c22e282ac223a224575726f205369676e222c22f09f9882223a22536d696c6579222c22efacb3223a22486562726577204c65747465722044616c6574205769746820446167657368227d",
    ),
];

#[test]
fn jcs_reference_suite() {
    for &(name, input, expected_hex) in JCS_SUITE {
        assert_eq!(
            show(&canonical(input, Profile::Jcs)),
            show(&hex_bytes(expected_hex)),
            "{name}"
        );
    }
}

/// JCS inputs for the cross-checks with other implementations.
fn jcs_cross_check_inputs() -> Vec<(String, String)> {
    let mut inputs: Vec<(String, String)> = CPYTHON_CASES
        .iter()
        .map(|&(input, _)| (format!("CPython table {input:?}"), input.to_owned()))
        .collect();
    for &(name, input, _) in JCS_SUITE {
        inputs.push((format!("suite {name}"), input.to_owned()));
    }
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    inputs.push((
        "random numbers".to_owned(),
        random_numbers_json(&mut rng, 3000, true),
    ));
    inputs.push((
        "random strings".to_owned(),
        random_strings_json(&mut rng, 1500),
    ));
    inputs
}

#[test]
fn jcs_matches_rfc8785_package() {
    let python = std::env::var("HALLMARK_RFC8785_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    if let Err(e) = run_with_input(&python, &["-c", "import rfc8785"], "") {
        eprintln!(
            "skipped: {python} cannot import rfc8785 ({}); \
             set HALLMARK_RFC8785_PYTHON to an interpreter that has it",
            e.trim()
        );
        return;
    }

    for (name, input) in jcs_cross_check_inputs() {
        let theirs = run_with_input(&python, &["-c", PYTHON_RFC8785], &input);
        if let Err(CanonError::IntegerNotExact { .. }) = canonicalize(&input, Profile::Jcs) {
            let message = theirs.expect_err(&format!("rfc8785 accepted {name}"));
            assert!(message.contains("IntegerDomainError"), "{name}: {message}");
            continue;
        }
        let theirs = theirs.unwrap_or_else(|e| panic!("rfc8785 rejected {name}: {e}"));
        assert_eq!(
            show(&canonical(&input, Profile::Jcs)),
            show(&theirs),
            "{name}"
        );
    }
}

#[test]
fn jcs_matches_node() {
    if let Err(e) = run_with_input("node", &["-e", ""], "") {
        eprintln!("skipped: node is not available ({})", e.trim());
        return;
    }

    for (name, input) in jcs_cross_check_inputs() {
        // JavaScript rounds large integers silently, so it has no view on
        // the inputs that `jcs` rejects for that reason.
        if let Err(CanonError::IntegerNotExact { .. }) = canonicalize(&input, Profile::Jcs) {
            continue;
        }
        let theirs = run_with_input("node", &["-e", NODE_JCS], &input)
            .unwrap_or_else(|e| panic!("node rejected {name}: {e}"));
        assert_eq!(
            show(&canonical(&input, Profile::Jcs)),
            show(&theirs),
            "{name}"
        );
    }
}
