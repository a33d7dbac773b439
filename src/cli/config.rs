//! `hallmark config check` and `hallmark config print`: the configuration
//! as `serve` would load it, checked or shown, without opening the token
//! or binding a socket.

use std::process::ExitCode;

use clap::Subcommand;

use super::{Cli, EXIT_CONFIG, SettingsArgs, output};
use crate::config::{self, Depth, ProcessEnv};

/// Configuration commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the whole configuration as `hallmark serve` would, including
    /// that the module, PIN, TLS files and audit directory can be used,
    /// without opening the token or binding a socket. Prints every problem
    /// and exits 64, or exits 0 when the configuration is valid.
    Check(SettingsArgs),
    /// Print the effective configuration as TOML, each value followed by
    /// its source: default, file, env HALLMARK_X or flag --x. The PIN is
    /// never printed.
    Print(SettingsArgs),
}

/// Runs a `config` subcommand.
pub fn run(command: &ConfigCommand, cli: &Cli) -> ExitCode {
    match command {
        ConfigCommand::Check(args) => check(args, cli),
        ConfigCommand::Print(args) => print(args, cli),
    }
}

fn check(args: &SettingsArgs, cli: &Cli) -> ExitCode {
    let path = &args.config.config;
    let overrides = args.overrides(cli);
    match config::load_to_depth(path, &ProcessEnv, &overrides, Depth::Files) {
        Ok(_) => {
            match output::print(&format!("{}: the configuration is valid\n", path.display())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
        Err(error) => {
            stderr_line!("error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn print(args: &SettingsArgs, cli: &Cli) -> ExitCode {
    let path = &args.config.config;
    let overrides = args.overrides(cli);
    match config::load(path, &ProcessEnv, &overrides) {
        Ok(loaded) => {
            let rust_log = super::logging::rust_log_directives();
            match output::print(&config::render(&loaded, path, rust_log.as_deref())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
        Err(error) => {
            stderr_line!("error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
