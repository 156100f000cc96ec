//! Compiles the protos with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "yandex/cloud/operation/operation.proto",
    "yandex/cloud/operation/operation_service.proto",
    "yandex/cloud/endpoint/api_endpoint.proto",
    "yandex/cloud/endpoint/api_endpoint_service.proto",
    "yandex/cloud/iam/v1/iam_token_service.proto",
    "opsd/v1/operation.proto",
    "opsd/v1/producer.proto",
];

const WELL_KNOWN: &[&str] = &[
    "google/rpc/error_details.proto",
    "opsd/internal/opaque.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/wrappers.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/field_mask.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a build directory
    // reused from another checkout must still find this checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let descriptors = protox::compile(&files, [&root])?;

    // The descriptor set for reflection and the JSON mapping also carries the
    // well-known types producers commonly pack into `Any` (Struct above all).
    let mut described: Vec<PathBuf> = files.clone();
    described.extend(WELL_KNOWN.iter().map(|p| {
        if p.starts_with("google/rpc/") || p.starts_with("opsd/") {
            root.join(p)
        } else {
            PathBuf::from(p)
        }
    }));
    let described = protox::compile(&described, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("opsd_descriptor.bin"),
        described.encode_to_vec(),
    )?;

    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
