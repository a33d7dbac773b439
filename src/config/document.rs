//! Reads the TOML text into a [`RawConfig`], with one problem for each
//! value that the structs reject, so that an unknown key or a value of the
//! wrong type is reported with every other problem.
//!
//! serde stops at the first value it rejects. To find them all, each
//! value is tried alone, nested under its own path in an otherwise empty
//! document, and a rejected value is left out of the document that the
//! rest of the configuration is read from.

use serde::Deserialize;
use toml::{Table, Value};

use super::raw::RawConfig;

/// The file, read as far as its structure allows.
pub(super) struct Document {
    /// The values that the structs accept.
    pub(super) raw: RawConfig,
    /// The rejected values, in key order.
    pub(super) rejected: Vec<Rejected>,
}

/// A value that the structs reject.
pub(super) struct Rejected {
    /// The key, as problems name it: `server.listen`, `callers[0].uid`.
    pub(super) key: String,
    /// The problem, starting with the key.
    pub(super) problem: String,
}

/// One step of a path into the document.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses `text`. Fails only on a TOML syntax error, with that error and
/// a note that nothing else was checked.
pub(super) fn read(text: &str) -> Result<Document, Vec<String>> {
    let table: Table = text.parse().map_err(|error: toml::de::Error| {
        vec![
            syntax_error(text, &error),
            "no other setting was checked, because the file is not valid TOML; fix the \
             syntax and check again"
                .to_owned(),
        ]
    })?;
    let mut document = Document {
        raw: RawConfig::default(),
        rejected: Vec::new(),
    };
    // An empty table is a valid document, so the top level is never rejected.
    let accepted =
        prune(&mut document, &[], Value::Table(table)).unwrap_or_else(|| Table::new().into());
    match RawConfig::deserialize(accepted) {
        Ok(raw) => document.raw = raw,
        // Every value left was accepted alone, so this error is not
        // expected. It is reported rather than lost.
        Err(error) => document.rejected.push(Rejected {
            key: String::new(),
            problem: error.message().to_owned(),
        }),
    }
    Ok(document)
}

/// Describes a TOML syntax error by its line, column and message. The
/// parser's own text quotes the line, which must not reach the logs: a PIN
/// file given by mistake as the configuration file is not valid TOML.
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return format!("TOML parse error: {message}");
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |start| start.chars().count())
        + 1;
    format!("TOML parse error at line {line}, column {column}: {message}")
}

/// Returns `value` at `path` without the parts that the structs reject,
/// or `None` when the value is rejected as a whole, and records a problem
/// for each rejected part.
fn prune(document: &mut Document, path: &[Step], value: Value) -> Option<Value> {
    let Err(error) = check_alone(path, value.clone()) else {
        return Some(value);
    };
    let empty_table_fits = check_alone(path, Value::Table(Table::new())).is_ok();
    match value {
        // The table belongs here, so the problem is in its entries.
        Value::Table(table) if empty_table_fits => {
            let mut accepted = Table::new();
            for (key, entry) in table {
                let entry_path = [path, &[Step::Key(key.clone())]].concat();
                if let Some(entry) = prune(document, &entry_path, entry) {
                    accepted.insert(key, entry);
                }
            }
            Some(Value::Table(accepted))
        }
        // An array of tables, such as [[callers]]: each entry is checked
        // on its own, and keeps its index.
        Value::Array(items)
            if check_alone(path, Value::Array(Vec::new())).is_ok()
                && items.iter().all(Value::is_table) =>
        {
            let accepted = items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    let item_path = [path, &[Step::Index(index)]].concat();
                    prune(document, &item_path, item).unwrap_or_else(|| Table::new().into())
                })
                .collect();
            Some(Value::Array(accepted))
        }
        _ => {
            let key = display(path);
            let problem = format!("{key}: {}", describe(error.message()));
            document.rejected.push(Rejected { key, problem });
            // A table that is not a table here, such as `keys.default = 1`,
            // stays as an empty one, so that the key still exists.
            empty_table_fits.then(|| Table::new().into())
        }
    }
}

/// Deserializes a document that contains only `value` at `path`.
fn check_alone(path: &[Step], value: Value) -> Result<(), toml::de::Error> {
    let mut node = value;
    for step in path.iter().rev() {
        node = match step {
            Step::Key(key) => Value::Table(Table::from_iter([(key.clone(), node)])),
            Step::Index(_) => Value::Array(vec![node]),
        };
    }
    RawConfig::deserialize(node).map(drop)
}

/// Writes a path as problems name keys: `server.listen`, `callers[0].uid`.
fn display(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// Rewords serde's message in the terms of the file: keys, tables and
/// numbers instead of fields, structs and Rust types.
fn describe(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected = rest.split_once("`, ").map_or("", |(_, expected)| expected);
        return format!("unknown key; {expected}");
    }
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let expected = match expected {
        "u32" => "a whole number from 0 to 4294967295",
        "usize" | "u64" => "a whole number from 0 to 18446744073709551615",
        "f64" => "a number",
        "path string" => "a path string",
        "a map" => "a table",
        "a sequence" => "an array",
        other if other.starts_with("struct ") => "a table",
        other => other,
    };
    format!("{found}, expected {expected}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let document = read(text).expect("TOML");
        document.rejected.into_iter().map(|r| r.problem).collect()
    }

    #[test]
    fn every_rejected_value_is_reported() {
        let text = "\
            unknown = 1\n\
            [server]\nlistn = \"x\"\nmax_pending = \"many\"\nlisten = \"127.0.0.1:1\"\n\
            [hsm]\nsessions = -1\n\
            [keys.default]\nbits = 1.5\n\
            [[callers]]\nname = \"a\"\nuid = \"root\"\n\
            [[callers]]\nname = \"b\"\nrate = \"fast\"\n";
        assert_eq!(
            problems(text),
            [
                "callers[0].uid: invalid type: string \"root\", expected a whole number from 0 \
                 to 4294967295",
                "callers[1].rate: invalid type: string \"fast\", expected a number",
                "hsm.sessions: invalid value: integer `-1`, expected a whole number from 0 to \
                 18446744073709551615",
                "keys.default.bits: invalid type: floating point `1.5`, expected a whole number \
                 from 0 to 4294967295",
                "server.listn: unknown key; expected one of `listen`, `metrics_listen`, \
                 `reflection`, `max_request_bytes`, `drain_timeout`, `socket_mode`, \
                 `allow_insecure_tcp`, `health_listen`, `max_pending`, `tls`",
                "server.max_pending: invalid type: string \"many\", expected a whole number \
                 from 0 to 18446744073709551615",
                "unknown: unknown key; expected one of `server`, `hsm`, `signing`, `keys`, \
                 `rotation`, `callers`, `audit`, `log`",
            ]
        );
        // The accepted values around them are kept.
        let document = read(text).expect("TOML");
        assert_eq!(document.raw.server.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(document.raw.callers.len(), 2);
        assert_eq!(document.raw.callers[1].name.as_deref(), Some("b"));
        assert!(document.raw.keys.contains_key("default"));
    }

    #[test]
    fn misplaced_table_stays_empty() {
        let text = "server = 5\nkeys = [1]\n[keys2]\n";
        assert_eq!(
            problems(text),
            [
                "keys: invalid type: sequence, expected a table",
                "keys2: unknown key; expected one of `server`, `hsm`, `signing`, `keys`, \
                 `rotation`, `callers`, `audit`, `log`",
                "server: invalid type: integer `5`, expected a table",
            ]
        );
        let keys: Vec<String> = read(text)
            .expect("TOML")
            .rejected
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["keys", "keys2", "server"]);
    }

    #[test]
    fn syntax_error_stops_the_check() {
        let problems = read("[server]\nlisten = \n").err().expect("not TOML");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("TOML parse error at line 2, column 10"),
            "{problems:?}"
        );
        assert_eq!(
            problems[1],
            "no other setting was checked, because the file is not valid TOML; fix the syntax \
             and check again"
        );
    }

    #[test]
    fn valid_file_has_no_problems() {
        assert_eq!(
            problems("[server]\nlisten = \"unix:/run/h.sock\"\n"),
            Vec::<String>::new()
        );
    }
}
