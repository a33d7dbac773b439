//! The `hallmark` binary: parse arguments, set up logging, load the
//! configuration, and run the chosen command.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use hallmark::cli::{self, Cli, Command, EXIT_CONFIG, EXIT_IO};
use hallmark::config::ConfigError;
use hallmark::hsm;
use hallmark::server;
use hallmark::signals::StopSignals;
use tracing::{error, info};

fn main() -> ExitCode {
    let cli = Cli::parse();

    // These commands read no whole configuration, so their log settings
    // come from the flags and the environment alone. `config` writes its
    // findings to stdout and stderr, and logs nothing itself. It reports
    // invalid log settings with the other problems it finds.
    let without_config = matches!(
        cli.command,
        Command::Sign(_)
            | Command::Verify(_)
            | Command::Audit(_)
            | Command::Config(_)
            | Command::Tokens(_)
    );
    if without_config {
        let (settings, problems) = cli::logging::settings_without_file(&cli);
        cli::logging::init(&settings);
        if !problems.is_empty() && !matches!(cli.command, Command::Config(_)) {
            cli::logging::error(&ConfigError {
                path: None,
                problems,
            });
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    match &cli.command {
        Command::Sign(args) => return cli::sign::run(args),
        Command::Verify(args) => return cli::verify::run(args),
        Command::Audit(command) => return cli::audit::run(command),
        Command::Config(command) => return cli::config::run(command, &cli),
        Command::Tokens(command) => return list_tokens(command),
        Command::Serve(_) | Command::Keys(_) | Command::Bench(_) => {}
    }

    let config = match cli::load_config(&cli) {
        Some(Ok(config)) => config,
        Some(Err(error)) => {
            cli::logging::set_error_format(cli::logging::format_hint(&cli));
            cli::logging::error(&error);
            return ExitCode::from(EXIT_CONFIG);
        }
        None => return ExitCode::from(EXIT_CONFIG),
    };
    cli::logging::init(&config.log);
    // SAFETY: no other thread exists yet. The runtime starts below, and the
    // tracing subscriber does not spawn threads.
    #[allow(unsafe_code)]
    unsafe {
        hsm::apply_module_env(&config.hsm.module_env)
    };

    match cli.command {
        Command::Keys(command) => cli::run_keys(&command, &config),
        Command::Serve(_) => serve(config),
        Command::Bench(args) => cli::bench::run(&args, &config),
        Command::Sign(_)
        | Command::Verify(_)
        | Command::Audit(_)
        | Command::Config(_)
        | Command::Tokens(_) => ExitCode::from(EXIT_CONFIG),
    }
}

fn list_tokens(command: &cli::tokens::TokensCommand) -> ExitCode {
    let target = match cli::tokens::target(command) {
        Ok(target) => target,
        Err(code) => return code,
    };
    // SAFETY: no other thread exists: this command starts no runtime, and
    // the tracing subscriber does not spawn threads.
    #[allow(unsafe_code)]
    unsafe {
        hsm::apply_module_env(&target.module_env)
    };
    cli::tokens::run(command, &target)
}

fn serve(config: hallmark::config::Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            cli::logging::error(&format_args!("cannot start the async runtime: {error}"));
            return ExitCode::from(EXIT_IO);
        }
    };
    let code = runtime.block_on(async move {
        // The handlers are installed before the token is opened, so that a
        // signal during start-up stops it cleanly.
        let stop = match StopSignals::install() {
            Ok(signals) => signals.watch(),
            Err(error) => {
                // With JSON logs, the error line is the log line.
                if !cli::logging::is_json() {
                    error!(%error, "cannot listen for SIGTERM and SIGINT");
                }
                cli::logging::error(&format_args!(
                    "cannot listen for SIGTERM and SIGINT: {error}"
                ));
                return ExitCode::from(EXIT_IO);
            }
        };
        info!(
            version = env!("CARGO_PKG_VERSION"),
            commit = env!("HALLMARK_GIT_COMMIT"),
            "starting hallmark"
        );
        server::warn_if_root();
        match server::serve(Arc::new(config), stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                if !cli::logging::is_json() {
                    error!(%error, "hallmark stopped");
                }
                cli::logging::error(&error);
                ExitCode::from(cli::serve_exit_code(&error))
            }
        }
    });
    // Connection tasks that outlived the drain deadline end here, and a
    // PKCS#11 call stuck in the module does not hold up the exit: its
    // thread is left behind rather than waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
