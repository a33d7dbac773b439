//! `hallmark verify`: check signed outputs from a file or standard input
//! and print a verdict for each.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::client::{Target, block_on};
use super::input::{Input, read_documents};
use super::{EXIT_CONFIG, EXIT_IO, EXIT_UNAVAILABLE, output};
use crate::config::parse_duration;
use crate::pb;
use crate::verify::algorithm::Algorithm;
use crate::verify::{
    DEFAULT_FETCH_TIMEOUT, Fetch, KeySet, KeySetError, Options, PemParameters, ReplayCacheError,
    SetupError, Verdict, Verifier, VerifyError, format_rfc3339,
};

/// Exit code when at least one document was rejected.
pub const EXIT_REJECTED: u8 = 1;

/// Options of `hallmark verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The source of the published keys: a JWKS URL (http://, https://,
    /// file://), a JWKS or PEM file, or a running Hallmark's ListKeys as
    /// grpc://HOST:PORT or unix:PATH.
    #[arg(long, value_name = "SOURCE")]
    pub keys: String,
    /// Maximum age of an output's timestamp, such as 5m or 1h.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_age: Duration,
    /// How far in the future an output's timestamp may be.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub clock_skew: Duration,
    /// Manifest field that contains the output's RFC 3339 timestamp.
    #[arg(long, default_value = crate::verify::DEFAULT_TIMESTAMP_FIELD)]
    pub timestamp_field: String,
    /// File that remembers accepted signatures across runs, so that a
    /// replay is refused by the next run too.
    #[arg(long, value_name = "FILE")]
    pub replay_cache: Option<PathBuf>,
    /// How many accepted signatures the replay cache remembers.
    #[arg(long, default_value_t = crate::verify::DEFAULT_REPLAY_CACHE_SIZE)]
    pub replay_cache_size: usize,
    /// Algorithm of RSA keys read from PEM, which does not state one.
    #[arg(long, value_parser = ["rsa-pss-sha256", "rsa-pkcs1-sha256"])]
    pub rsa_algorithm: Option<String>,
    /// PSS salt length in bytes of RSA-PSS keys read from PEM.
    #[arg(long, default_value_t = 32)]
    pub pss_salt_length: usize,
    /// A signed output, or JSON lines of them; `-` reads standard input.
    #[arg(default_value = "-", value_name = "FILE")]
    pub input: Input,
}

/// Runs `hallmark verify`.
pub fn run(args: &VerifyArgs) -> ExitCode {
    let verifier = match build_verifier(args) {
        Ok(verifier) => verifier,
        Err(error) => {
            stderr_line!("error: {error}");
            return ExitCode::from(match error {
                SetupError::KeySet(KeySetError::Unavailable { .. }) => EXIT_UNAVAILABLE,
                SetupError::KeySet(KeySetError::Invalid { .. })
                | SetupError::InvalidOption(_)
                | SetupError::ReplayCache(
                    ReplayCacheError::ZeroCapacity | ReplayCacheError::NotAFile { .. },
                ) => EXIT_CONFIG,
                SetupError::ReplayCache(_) => EXIT_IO,
            });
        }
    };
    let documents = match read_documents(&args.input) {
        Ok(documents) => documents,
        Err(exit) => return exit,
    };
    // Verification goes on after the reader closes stdout, because the
    // exit code reports whether every output was verified.
    let mut stdout = output::Stdout::lock();
    let mut rejected = 0;
    for (line, text) in &documents {
        let result = verifier.verify(text);
        if result.is_err() {
            rejected += 1;
        }
        let report = verdict_json(*line, &result);
        if let Err(error) = writeln!(stdout, "{report}") {
            stderr_line!("error: cannot write the verdicts: {error}");
            return ExitCode::from(EXIT_IO);
        }
    }
    if let Err(error) = stdout.flush() {
        stderr_line!("error: cannot write the verdicts: {error}");
        return ExitCode::from(EXIT_IO);
    }
    if rejected > 0 {
        stderr_line!("{rejected} of {} signed outputs rejected", documents.len());
        return ExitCode::from(EXIT_REJECTED);
    }
    ExitCode::SUCCESS
}

/// Builds the JSON line reported for one document.
fn verdict_json(line: usize, result: &Result<Verdict, VerifyError>) -> serde_json::Value {
    match result {
        Ok(verdict) => json!({
            "line": line,
            "verdict": "verified",
            "key_id": verdict.key_id,
            "key_name": verdict.key_name,
            "key_version": verdict.key_version,
            "algorithm": verdict.algorithm.as_str(),
            "canonicalization": verdict.canonicalization.as_str(),
            "timestamp": format_rfc3339(verdict.timestamp),
        }),
        Err(error) => json!({
            "line": line,
            "verdict": "rejected",
            "reason": error.reason(),
            "error": error.to_string(),
        }),
    }
}

fn build_verifier(args: &VerifyArgs) -> Result<Verifier, SetupError> {
    let options = Options {
        max_age: args.max_age,
        clock_skew: args.clock_skew,
        timestamp_field: args.timestamp_field.clone(),
        replay_cache_size: args.replay_cache_size,
        replay_cache_path: args.replay_cache.clone(),
        ..Options::default()
    };
    let source = args.keys.as_str();
    let list_keys_target = source
        .strip_prefix("grpc://")
        .or_else(|| source.starts_with("unix:").then_some(source));
    if let Some(target) = list_keys_target {
        let target = Target::parse(target).map_err(SetupError::InvalidOption)?;
        let name = source.to_owned();
        let fetch: Fetch = Box::new(move || fetch_list_keys(&target, &name));
        return Verifier::with_fetch(source, fetch, options);
    }
    let pem = PemParameters {
        rsa_algorithm: args
            .rsa_algorithm
            .as_deref()
            .and_then(|name| Algorithm::parse(name).ok()),
        pss_salt_length: Some(args.pss_salt_length),
    };
    Verifier::fetching(source, pem, options)
}

/// Reads the key set with a `ListKeys` call.
pub(super) fn fetch_list_keys(target: &Target, source_name: &str) -> Result<KeySet, KeySetError> {
    let unavailable = |reason: String| KeySetError::Unavailable {
        source_name: source_name.to_owned(),
        reason,
    };
    let response = block_on(async {
        let mut client = target
            .connect(DEFAULT_FETCH_TIMEOUT)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        client
            .list_keys(pb::ListKeysRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("ListKeys failed: {}: {}", status.code(), status.message()))
    })
    .map_err(|e| unavailable(format!("cannot start the async runtime: {e}")))?
    .map_err(unavailable)?;
    Ok(KeySet::from_list_keys(&response))
}
