//! Compiles `proto/` into Rust with a vendored `protoc`, so that a fresh
//! machine needs no system protobuf compiler.

use std::{env, error::Error, path::PathBuf};

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
    Ok(())
}
