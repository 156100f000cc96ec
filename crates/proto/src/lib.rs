//! Wire types of opsd, generated from the `.proto` files under `proto/`.
//!
//! - [`yandex::cloud::operation`]: the clouds' public `OperationService` (`Get`, `Cancel`).
//! - [`yandex::cloud::endpoint`]: endpoint discovery used by the official SDKs.
//! - [`yandex::cloud::iam::v1`]: the IAM token exchange the SDKs' credentials call.
//! - [`opsd::v1`]: opsd's own consumer extensions and producer API.
//!
//! [`json`] prints and parses any of these messages in the proto3 JSON mapping.

pub mod json;

pub mod yandex {
    pub mod cloud {
        // Generated code: prost names a oneof's module after its message.
        #[allow(clippy::module_inception)]
        pub mod operation {
            tonic::include_proto!("yandex.cloud.operation");
        }
        pub mod endpoint {
            tonic::include_proto!("yandex.cloud.endpoint");
        }
        pub mod iam {
            pub mod v1 {
                tonic::include_proto!("yandex.cloud.iam.v1");
            }
        }
    }
}

pub mod opsd {
    pub mod v1 {
        tonic::include_proto!("opsd.v1");
    }
}

pub use tonic_types::Status as RpcStatus;

/// Encoded `FileDescriptorSet` of every opsd proto and its imports, for
/// server reflection and the JSON mapping.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/opsd_descriptor.bin"));

/// Prefix of every type URL opsd writes, as the official SDKs expect.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The canonical upper-case name of a gRPC code, as grpcurl and the SDKs print it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
