//! The proto3 JSON mapping (camelCase names, `Any` as `@type` plus the packed
//! message, RFC 3339 timestamps) for opsd's messages, driven by their descriptors.

use std::sync::{OnceLock, RwLock};

use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
};

fn pool() -> &'static RwLock<DescriptorPool> {
    static POOL: OnceLock<RwLock<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        RwLock::new(
            DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
                .expect("the descriptor set compiled into the binary is valid"),
        )
    })
}

/// Every message opsd knows, including well-known types such as
/// `google.protobuf.Struct`, and those of the descriptor sets registered with
/// [`register_descriptor_set`]. A cheap handle: the pool is shared.
pub fn descriptor_pool() -> DescriptorPool {
    pool()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// A producer's serialized `google.protobuf.FileDescriptorSet` could not be added.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DescriptorSetError(String);

/// Adds the messages of a serialized `google.protobuf.FileDescriptorSet`
/// (what `protoc --descriptor_set_out --include_imports` or `buf build`
/// writes) so that payloads of those types print field by field instead of
/// as base64, and parse from JSON. Files the pool already holds, by name (the
/// well-known types a set includes), are skipped. Nothing is added when the
/// set is invalid, misses an import, or defines a name the pool already has
/// in another file. Returns the full names of the messages it made known.
pub fn register_descriptor_set(bytes: &[u8]) -> Result<Vec<String>, DescriptorSetError> {
    let mut pool = pool()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut extended = pool.clone();
    let known: std::collections::HashSet<String> = extended
        .all_messages()
        .map(|m| m.full_name().to_owned())
        .collect();
    extended
        .decode_file_descriptor_set(bytes)
        .map_err(|e| DescriptorSetError(e.to_string()))?;
    let added: Vec<String> = extended
        .all_messages()
        .map(|m| m.full_name().to_owned())
        .filter(|name| !known.contains(name))
        .collect();
    *pool = extended;
    Ok(added)
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

/// [`register_descriptor_set`] of the file at `path`, with errors naming it.
pub fn register_descriptor_set_file(
    path: &std::path::Path,
) -> Result<Vec<String>, DescriptorSetError> {
    let bytes = std::fs::read(path)
        .map_err(|e| DescriptorSetError(format!("cannot read {}: {e}", path.display())))?;
    register_descriptor_set(&bytes).map_err(|e| {
        DescriptorSetError(format!(
            "{} is not a usable FileDescriptorSet: {e}",
            path.display()
        ))
    })
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
///
/// A packed `Any` of a type opsd does not know (a producer's own message)
/// cannot follow the mapping, which needs the type's fields; it prints as
/// `{"@type": "<its type URL>", "value": "<the bytes in base64>"}` instead of
/// failing the whole message.
pub fn encoded_to_json(full_name: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let descriptor = descriptor(full_name)?;
    let mut dynamic =
        DynamicMessage::decode(descriptor, bytes).map_err(|source| JsonError::Decode {
            message: full_name.to_owned(),
            source,
        })?;
    let replaced = wrap_unknown_payloads(&mut dynamic);
    let options = SerializeOptions::new().stringify_64_bit_integers(true);
    let mut json = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| JsonError::Json {
            message: full_name.to_owned(),
            source,
        })?;
    if replaced {
        unwrap_opaque_payloads(&mut json);
    }
    Ok(json)
}

const ANY: &str = "google.protobuf.Any";
const OPAQUE: &str = "opsd.internal.OpaquePayload";

/// Replaces every `Any` whose type is not in the pool with an `OpaquePayload`
/// carrying it; returns whether it replaced any.
fn wrap_unknown_payloads(message: &mut DynamicMessage) -> bool {
    let mut replaced = false;
    for (_, value) in message.fields_mut() {
        replaced |= wrap_in_value(value);
    }
    replaced
}

fn wrap_in_value(value: &mut prost_reflect::Value) -> bool {
    match value {
        prost_reflect::Value::Message(message) if message.descriptor().full_name() == ANY => {
            let type_url = message
                .get_field_by_name("type_url")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let payload = message
                .get_field_by_name("value")
                .and_then(|v| v.as_bytes().cloned())
                .unwrap_or_default();
            // Printable only if its type is known and the bytes really are one.
            let pool = descriptor_pool();
            let printable = type_url
                .rsplit_once('/')
                .and_then(|(_, name)| pool.get_message_by_name(name))
                .is_some_and(|known| DynamicMessage::decode(known, payload.as_ref()).is_ok());
            if printable {
                return false;
            }
            let mut opaque = DynamicMessage::new(descriptor(OPAQUE).expect("compiled in"));
            opaque.set_field_by_name("type_url", prost_reflect::Value::String(type_url));
            opaque.set_field_by_name("value", prost_reflect::Value::Bytes(payload));
            message.set_field_by_name(
                "type_url",
                prost_reflect::Value::String(format!("{}{OPAQUE}", crate::TYPE_URL_PREFIX)),
            );
            message.set_field_by_name(
                "value",
                prost_reflect::Value::Bytes(prost::Message::encode_to_vec(&opaque).into()),
            );
            true
        }
        prost_reflect::Value::Message(message) => wrap_unknown_payloads(message),
        prost_reflect::Value::List(items) => {
            items.iter_mut().fold(false, |r, v| wrap_in_value(v) | r)
        }
        prost_reflect::Value::Map(entries) => entries
            .values_mut()
            .fold(false, |r, v| wrap_in_value(v) | r),
        _ => false,
    }
}

/// Turns the printed stand-ins back into `{"@type": <original>, "value": <base64>}`.
fn unwrap_opaque_payloads(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(fields) => {
            let marker = format!("{}{OPAQUE}", crate::TYPE_URL_PREFIX);
            if fields.get("@type").and_then(|t| t.as_str()) == Some(marker.as_str()) {
                let type_url = fields.remove("typeUrl").unwrap_or_default();
                let value = fields
                    .remove("value")
                    .unwrap_or(serde_json::Value::String(String::new()));
                fields.clear();
                fields.insert("@type".into(), type_url);
                fields.insert("value".into(), value);
            } else {
                fields.values_mut().for_each(unwrap_opaque_payloads);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_opaque_payloads),
        _ => {}
    }
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
