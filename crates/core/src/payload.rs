//! Opaque payloads that producers attach to operations.

/// A packed message, as `google.protobuf.Any`: opsd stores it without looking inside.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Any {
    pub type_url: String,
    pub value: Vec<u8>,
}

/// An error result, as `google.rpc.Status`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RpcStatus {
    pub code: i32,
    pub message: String,
    pub details: Vec<Any>,
}
