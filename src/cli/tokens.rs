//! `hallmark tokens list`: the slots and tokens of a PKCS#11 module, so
//! that an operator can find the label or serial to configure. It reads
//! only public token information and never logs in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{EXIT_CONFIG, logging, output, report_hsm};
use crate::config::{self, ENV_CONFIG, Overrides, Pkcs11Uri, ProcessEnv};
use crate::hsm::{HsmError, SlotEntry, list_slots};

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List every slot of a module with its token: slot ID, label, serial,
    /// manufacturer, model, and whether the token is initialized and has a
    /// user PIN. Does not log in.
    List(ListArgs),
}

/// The configuration file read when neither `--config` nor
/// `HALLMARK_CONFIG` names one.
const DEFAULT_CONFIG: &str = "hallmark.toml";

/// Options of `hallmark tokens list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// PKCS#11 library to load. Without it, the module of the configuration
    /// file is used (hsm.module or the module-path of hsm.uri, with their
    /// environment variables), after setting hsm.module_env; without a
    /// file, that of HALLMARK_PKCS11_MODULE or HALLMARK_PKCS11_URI.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub module: Option<PathBuf>,
    /// Configuration file [default: $HALLMARK_CONFIG, else hallmark.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The module to load, and the environment variables to set before it
/// loads.
#[derive(Debug)]
pub struct Target {
    /// Path of the PKCS#11 library.
    pub module: PathBuf,
    /// Variables from `hsm.module_env`, empty with `--module`.
    pub module_env: BTreeMap<String, String>,
}

/// Resolves the module of a `tokens` command. Prints the problem and
/// returns the exit code when the configuration names no usable module.
pub fn target(command: &TokensCommand) -> Result<Target, ExitCode> {
    let TokensCommand::List(args) = command;
    if let Some(module) = &args.module {
        return Ok(Target {
            module: module.clone(),
            module_env: BTreeMap::new(),
        });
    }
    let chosen = args
        .config
        .clone()
        .or_else(|| std::env::var_os(ENV_CONFIG).map(PathBuf::from));
    let path = chosen
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    // Without a file, the module may come from the environment. A file
    // that was named must exist.
    let loaded = if chosen.is_none() && matches!(path.try_exists(), Ok(false)) {
        config::load_module_without_file(&ProcessEnv, &Overrides::default())
            .map(|module| (module, BTreeMap::new()))
    } else {
        config::load_module(&path, &ProcessEnv, &Overrides::default())
    };
    match loaded {
        Ok((module, module_env)) => Ok(Target { module, module_env }),
        Err(error) => {
            logging::error(&error);
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Runs a `tokens` subcommand on the module of `target`, whose
/// environment the caller has set.
pub fn run(command: &TokensCommand, target: &Target) -> ExitCode {
    let TokensCommand::List(args) = command;
    let slots = match list_slots(&target.module) {
        Ok(slots) => slots,
        // The advice of these errors names hsm.module, which --module
        // replaces here.
        Err(HsmError::ModuleMissing { path }) if args.module.is_some() => {
            logging::error(&format_args!(
                "PKCS#11 module {} does not exist; check --module",
                path.display()
            ));
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(HsmError::ModuleNotFile { path, problem }) if args.module.is_some() => {
            logging::error(&format_args!(
                "PKCS#11 module {} {problem}; check --module",
                path.display()
            ));
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(HsmError::ModuleLoad { path, source }) if args.module.is_some() => {
            logging::error(&format_args!(
                "{} is not a loadable PKCS#11 library ({source}); check --module",
                path.display()
            ));
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(error) => return report_hsm(&error),
    };
    let text = if args.json {
        slots
            .iter()
            .map(|slot| format!("{}\n", json_line(slot, target)))
            .collect()
    } else {
        table(&slots)
    };
    match output::print(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Formats the slots as a table with a header row and aligned columns.
pub fn table(slots: &[SlotEntry]) -> String {
    let header = [
        "SLOT",
        "LABEL",
        "SERIAL",
        "MANUFACTURER",
        "MODEL",
        "INITIALIZED",
        "USER PIN",
    ]
    .map(str::to_owned);
    let mut rows = vec![header.to_vec()];
    for slot in slots {
        let yes_no = |value: bool| if value { "yes" } else { "no" }.to_owned();
        let row = match &slot.token {
            Some(token) => vec![
                slot.slot_id.to_string(),
                or_dash(&token.label),
                or_dash(&token.serial),
                or_dash(&token.manufacturer),
                or_dash(&token.model),
                yes_no(token.initialized),
                yes_no(token.user_pin_initialized),
            ],
            None => {
                let mut row = vec![slot.slot_id.to_string(), "(no token)".to_owned()];
                row.extend(std::iter::repeat_n("-".to_owned(), 5));
                row
            }
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// Formats one slot as a JSON object. An initialized token gets a `uri`
/// that selects it by label and serial with this module, ready for
/// `hsm.uri`.
pub fn json_line(slot: &SlotEntry, target: &Target) -> serde_json::Value {
    let Some(token) = &slot.token else {
        return serde_json::json!({
            "slot_id": slot.slot_id,
            "slot_description": slot.description,
            "token_present": false,
        });
    };
    let uri = token.initialized.then(|| {
        Pkcs11Uri {
            token: Some(token.label.clone()),
            serial: Some(token.serial.clone()),
            module_path: Some(target.module.clone()),
            ..Pkcs11Uri::default()
        }
        .to_string()
    });
    serde_json::json!({
        "slot_id": slot.slot_id,
        "slot_description": slot.description,
        "token_present": true,
        "label": token.label,
        "serial": token.serial,
        "manufacturer": token.manufacturer,
        "model": token.model,
        "initialized": token.initialized,
        "user_pin_initialized": token.user_pin_initialized,
        "uri": uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::TokenEntry;

    fn slots() -> Vec<SlotEntry> {
        vec![
            SlotEntry {
                slot_id: 1_634_201_374,
                description: "SoftHSM slot ID 0x6168c61e".into(),
                token: Some(TokenEntry {
                    label: "hallmark-dev".into(),
                    serial: "8d0a3e1f6168c61e".into(),
                    manufacturer: "SoftHSM project".into(),
                    model: "SoftHSM v2".into(),
                    initialized: true,
                    user_pin_initialized: true,
                }),
            },
            SlotEntry {
                slot_id: 1,
                description: "SoftHSM slot ID 0x1".into(),
                token: Some(TokenEntry {
                    label: String::new(),
                    serial: String::new(),
                    manufacturer: "SoftHSM project".into(),
                    model: "SoftHSM v2".into(),
                    initialized: false,
                    user_pin_initialized: false,
                }),
            },
            SlotEntry {
                slot_id: 7,
                description: "reader".into(),
                token: None,
            },
        ]
    }

    #[test]
    fn table_aligns_columns() {
        let expected = [
            "SLOT        LABEL         SERIAL            MANUFACTURER     MODEL       INITIALIZED  USER PIN",
            "1634201374  hallmark-dev  8d0a3e1f6168c61e  SoftHSM project  SoftHSM v2  yes          yes",
            "1           -             -                 SoftHSM project  SoftHSM v2  no           no",
            "7           (no token)    -                 -                -           -            -",
        ];
        let text = table(&slots());
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "\n{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn json_names_every_field() {
        let target = Target {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            module_env: BTreeMap::new(),
        };
        let slots = slots();
        assert_eq!(
            json_line(&slots[0], &target),
            serde_json::json!({
                "slot_id": 1_634_201_374u64,
                "slot_description": "SoftHSM slot ID 0x6168c61e",
                "token_present": true,
                "label": "hallmark-dev",
                "serial": "8d0a3e1f6168c61e",
                "manufacturer": "SoftHSM project",
                "model": "SoftHSM v2",
                "initialized": true,
                "user_pin_initialized": true,
                "uri": "pkcs11:token=hallmark-dev;serial=8d0a3e1f6168c61e\
                        ?module-path=/usr/lib/softhsm/libsofthsm2.so",
            })
        );
        assert_eq!(
            json_line(&slots[1], &target)["uri"],
            serde_json::Value::Null
        );
        assert_eq!(
            json_line(&slots[2], &target),
            serde_json::json!({
                "slot_id": 7,
                "slot_description": "reader",
                "token_present": false,
            })
        );
    }
}
