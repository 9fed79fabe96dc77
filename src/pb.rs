//! Generated wire types and service stubs of `proto/service_registry.proto`,
//! and their proto3 JSON mapping (serde).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("neural_hive.service_registry");
// The proto3 JSON mapping (serde) of the same types, by pbjson-build.
include!(concat!(
    env!("OUT_DIR"),
    "/neural_hive.service_registry.serde.rs"
));

/// Encoded `FileDescriptorSet` of the registry contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("service_registry_descriptor");
