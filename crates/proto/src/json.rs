//! The proto3 JSON mapping (camelCase names, `Any` as `@type` plus the packed
//! message, RFC 3339 timestamps) for opsd's messages, driven by their descriptors.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

/// Every message opsd knows, including well-known types such as `google.protobuf.Struct`.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into the binary is valid")
    })
}

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("unknown message type {0}")]
    UnknownMessage(String),
    #[error("invalid protobuf bytes for {message}: {source}")]
    Decode {
        message: String,
        source: prost::DecodeError,
    },
    #[error("invalid json for {message}: {source}")]
    Json {
        message: String,
        source: serde_json::Error,
    },
}

fn descriptor(full_name: &str) -> Result<MessageDescriptor, JsonError> {
    descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| JsonError::UnknownMessage(full_name.to_owned()))
}

/// Prints a message in the proto3 JSON mapping.
pub fn to_json<M: prost::Name>(message: &M) -> Result<serde_json::Value, JsonError> {
    let bytes = message.encode_to_vec();
    encoded_to_json(&M::full_name(), &bytes)
}

/// Prints the encoded message named `full_name` in the proto3 JSON mapping.
pub fn encoded_to_json(full_name: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let descriptor = descriptor(full_name)?;
    let dynamic =
        DynamicMessage::decode(descriptor, bytes).map_err(|source| JsonError::Decode {
            message: full_name.to_owned(),
            source,
        })?;
    let options = SerializeOptions::new().stringify_64_bit_integers(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| JsonError::Json {
            message: full_name.to_owned(),
            source,
        })
}

/// Parses the message named `full_name` from the proto3 JSON mapping and
/// returns it encoded, rejecting unknown fields.
pub fn encoded_from_json(full_name: &str, json: &str) -> Result<Vec<u8>, JsonError> {
    let descriptor = descriptor(full_name)?;
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut deserializer)
        .and_then(|m| deserializer.end().map(|()| m))
        .map_err(|source| JsonError::Json {
            message: full_name.to_owned(),
            source,
        })?;
    Ok(prost::Message::encode_to_vec(&dynamic))
}

/// Parses a message from the proto3 JSON mapping, rejecting unknown fields.
pub fn from_json<M: prost::Name + Default>(json: &str) -> Result<M, JsonError> {
    let full_name = M::full_name();
    let bytes = encoded_from_json(&full_name, json)?;
    M::decode(bytes.as_slice()).map_err(|source| JsonError::Decode {
        message: full_name,
        source,
    })
}
