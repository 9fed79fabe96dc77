//! Generates the gRPC code from `proto/`, its proto3 JSON mapping (serde
//! impls by `pbjson-build`, from the same descriptor set) for the HTTP API,
//! plus a client-only copy of the original (legacy) contract that the
//! compatibility tests speak.
//!
//! `protoc` comes from `PROTOC` when set, else from the vendored binary of
//! `protoc-bin-vendored`, so a fresh machine needs nothing installed.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = match env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let config = || {
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(&protoc);
        config
    };

    let descriptor_path = out_dir.join("service_registry_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_with_config(config(), &["proto/service_registry.proto"], &["proto"])?;
    // Canonical proto3 JSON: lowerCamelCase, enums by name, 64-bit integers
    // as strings, unknown fields refused; every field emitted (defaults too)
    // so replies always have the same shape.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .emit_fields()
        .build(&[".neural_hive.service_registry"])?;

    let legacy = out_dir.join("legacy");
    std::fs::create_dir_all(&legacy)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&legacy)
        .compile_with_config(
            config(),
            &["tests/proto/legacy_service_registry.proto"],
            &["tests/proto"],
        )?;
    Ok(())
}
