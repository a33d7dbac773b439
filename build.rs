//! Compiles `proto/` into Rust with a vendored `protoc`, so that a fresh
//! machine needs no system protobuf compiler, and records the git commit
//! and the enabled cargo features for `hallmark --version`.

use std::{env, error::Error, path::PathBuf, process::Command};

/// Variable that sets the commit when there is no `.git`, as in a Docker
/// build from a copied source tree: `HALLMARK_GIT_COMMIT=$(git rev-parse
/// --short HEAD) cargo build`.
const COMMIT_OVERRIDE: &str = "HALLMARK_GIT_COMMIT";

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("hallmark_descriptor.bin"))
        .compile_with_config(
            config,
            &["proto/hallmark/v1/signer.proto"],
            &[
                "proto",
                protoc_bin_vendored::include_path()?
                    .to_str()
                    .ok_or("include path is not UTF-8")?,
            ],
        )?;

    println!("cargo:rustc-env=HALLMARK_GIT_COMMIT={}", git_commit());
    println!("cargo:rustc-env=HALLMARK_FEATURES={}", features());
    Ok(())
}

/// Returns the short hash of HEAD, the value of `HALLMARK_GIT_COMMIT`, or
/// `unknown` when neither is available, as in a build from a tarball.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed={COMMIT_OVERRIDE}");
    if let Ok(commit) = env::var(COMMIT_OVERRIDE)
        && !commit.trim().is_empty()
    {
        return commit.trim().to_owned();
    }
    // Rebuild when HEAD moves. HEAD names the branch, and the branch's ref
    // file or packed-refs contains the commit. Only existing files are
    // watched, because cargo reruns the script on every build for a
    // missing one.
    for name in ["HEAD", "packed-refs"] {
        watch(git(&["rev-parse", "--git-path", name]));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &branch]));
    }
    git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}

/// Runs git in the package directory and returns its trimmed output, or
/// `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn watch(path: Option<String>) {
    let Some(path) = path else { return };
    let path = match env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => PathBuf::from(dir).join(path),
        None => PathBuf::from(path),
    };
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Returns the enabled cargo features, sorted and comma-separated, or
/// `none`. `default` is left out: it only names other features.
fn features() -> String {
    let mut names: Vec<String> = env::vars()
        .filter_map(|(name, _)| {
            let feature = name.strip_prefix("CARGO_FEATURE_")?;
            Some(feature.to_ascii_lowercase().replace('_', "-"))
        })
        .filter(|name| name != "default")
        .collect();
    names.sort();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    }
}
