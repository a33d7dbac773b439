//! The operator guide (`docs/operations.md`) and the annotated example
//! configuration (`hallmark.example.toml`) name every configuration key,
//! environment variable, command and flag that the code accepts.
//!
//! The keys come from `hallmark::config::SETTINGS`, which a unit test in
//! `src/config/raw.rs` checks against the keys the TOML parser accepts, and
//! the commands and flags come from the clap definition. A key, variable,
//! command or flag added to the code and not to the documents fails here.

use std::collections::BTreeSet;

use clap::CommandFactory;
use hallmark::cli::Cli;
use hallmark::config::SETTINGS;

const OPERATIONS: &str = include_str!("../docs/operations.md");
const EXAMPLE: &str = include_str!("../hallmark.example.toml");
const CONFIG_SOURCE: &str = include_str!("../src/config.rs");

/// Returns the text of the `## heading` section, up to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = OPERATIONS
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("docs/operations.md has no \"## {heading}\" section"));
    let body = &OPERATIONS[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |at| at + 3);
    &body[..end]
}

#[test]
fn every_key_is_in_the_reference() {
    let reference = section("Configuration reference");
    let mut missing = Vec::new();
    for setting in SETTINGS {
        let row_start = format!("| `{}` |", setting.key);
        let Some(row) = reference.lines().find(|line| line.starts_with(&row_start)) else {
            missing.push(format!("{} has no table row", setting.key));
            continue;
        };
        for name in [setting.env, setting.flag].into_iter().flatten() {
            if !row.contains(&format!("`{name}`")) {
                missing.push(format!("{}: its row does not name `{name}`", setting.key));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/operations.md, Configuration reference:\n{}",
        missing.join("\n")
    );
}

/// Returns the value of every `pub const ENV_*: &str = "..."` in
/// `src/config.rs`.
fn environment_variables() -> Vec<&'static str> {
    CONFIG_SOURCE
        .lines()
        .filter(|line| line.starts_with("pub const ENV_"))
        .filter_map(|line| line.split('"').nth(1))
        .collect()
}

#[test]
fn every_variable_is_in_the_reference() {
    let reference = section("Configuration reference");
    let variables = environment_variables();
    assert!(variables.len() >= 15, "{variables:?}");
    let missing: Vec<&str> = variables
        .into_iter()
        .filter(|name| !reference.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md, Configuration reference, does not name {missing:?}"
    );
}

/// Returns the keys that `hallmark.example.toml` sets or shows in a
/// comment, in the notation of `SETTINGS`.
fn example_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(header) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            table = format!("{header}[]");
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = header.to_owned();
            continue;
        }
        let Some((field, _)) = line.split_once(" = ") else {
            continue;
        };
        let is_key = !field.is_empty()
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !is_key {
            continue;
        }
        let key = match table.as_str() {
            "hsm.module_env" => "hsm.module_env.<VAR>".to_owned(),
            name if name.starts_with("keys.") => format!("keys.<name>.{field}"),
            name => format!("{name}.{field}"),
        };
        keys.insert(key);
    }
    keys
}

#[test]
fn every_key_is_in_the_example() {
    let shown = example_keys();
    let missing: Vec<&str> = SETTINGS
        .iter()
        .map(|setting| setting.key)
        .filter(|key| !shown.contains(*key))
        .collect();
    assert!(
        missing.is_empty(),
        "hallmark.example.toml does not show {missing:?}"
    );
}

/// Returns every command path below `hallmark`, such as `keys create`,
/// with the long flags of each.
fn commands() -> Vec<(String, Vec<String>)> {
    fn walk(command: &clap::Command, prefix: &str, found: &mut Vec<(String, Vec<String>)>) {
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let path = format!("{prefix}{}", sub.get_name()).trim().to_owned();
            let flags = sub
                .get_arguments()
                .filter_map(|arg| arg.get_long())
                .filter(|long| !["help", "version"].contains(long))
                .map(|long| format!("--{long}"))
                .collect();
            found.push((path.clone(), flags));
            walk(sub, &format!("{path} "), found);
        }
    }
    let mut found = Vec::new();
    walk(&Cli::command(), "", &mut found);
    found
}

#[test]
fn every_command_and_flag_is_in_the_guide() {
    let guide = section("Command line");
    let all = commands();
    assert!(all.len() >= 15, "{all:?}");
    let mut missing = Vec::new();
    for (path, flags) in &all {
        if !guide.contains(&format!("`hallmark {path}")) && !guide.contains(&format!("`{path}")) {
            missing.push(format!("the command `{path}`"));
        }
        // The client commands have their own guide, docs/verifying.md.
        let client = path.starts_with("sign") || path.starts_with("verify");
        for flag in flags {
            if !client && !guide.contains(flag.as_str()) {
                missing.push(format!("{flag} of `{path}`"));
            }
        }
    }
    if !guide.contains("--version") {
        missing.push("--version".to_owned());
    }
    assert!(
        missing.is_empty(),
        "docs/operations.md, Command line, does not name:\n{}",
        missing.join("\n")
    );
}
