//! Generated wire types and service stubs of `proto/service_registry.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("neural_hive.service_registry");

/// Encoded `FileDescriptorSet` of the registry contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("service_registry_descriptor");
