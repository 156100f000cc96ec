//! Limits on what callers may send, checked before anything is stored.
//! Every violation names the field by its path in the request message.

use crate::error::FieldViolation;
use crate::payload::{Any, RpcStatus};

/// The contract allows 0–256 characters (not bytes) of description.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
pub const MAX_RESOURCE_ID_BYTES: usize = 256;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
pub const MAX_TYPE_URL_BYTES: usize = 2048;
/// Metadata, a response or an error's details, each.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
pub const MAX_ERROR_DETAILS: usize = 16;

/// Collects the violations of one request, so a caller learns of all at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn merge(&mut self, result: Result<(), crate::Error>) {
        if let Err(crate::Error::InvalidArgument(v)) = result {
            self.0.extend(v);
        }
    }

    /// `Ok` when nothing was violated, else one INVALID_ARGUMENT listing everything.
    pub fn into_result(self) -> Result<(), crate::Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::InvalidArgument(self.0))
        }
    }

    pub fn description(&mut self, field: &str, text: &str) {
        if text.chars().count() > MAX_DESCRIPTION_CHARS {
            self.add(
                field,
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        } else {
            self.no_nul(field, text);
        }
    }

    /// NUL cannot be stored as text by every backend (PostgreSQL refuses it).
    fn no_nul(&mut self, field: &str, text: &str) {
        if text.contains('\0') {
            self.add(field, "must not contain NUL characters");
        }
    }

    /// A List filter by id prefix: what could start an id, `[0-9a-z]`, at most
    /// an id's length.
    pub fn id_prefix_filter(&mut self, field: &str, prefix: &str) {
        if prefix.len() > crate::id::ID_LEN
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        {
            self.add(
                field,
                format!(
                    "must be at most {} characters of [0-9a-z]",
                    crate::id::ID_LEN
                ),
            );
        }
    }

    /// A List search in descriptions: what a description could contain, so at
    /// most as long as one and without NUL.
    pub fn description_search(&mut self, field: &str, text: &str) {
        self.description(field, text);
    }

    pub fn resource_id(&mut self, field: &str, text: &str) {
        if text.len() > MAX_RESOURCE_ID_BYTES {
            self.add(
                field,
                format!("must be at most {MAX_RESOURCE_ID_BYTES} bytes"),
            );
        } else if text.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
    }

    pub fn idempotency_key(&mut self, field: &str, key: &str) {
        if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            self.add(
                field,
                format!("must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
            );
        } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
            self.add(field, "must be printable ascii without spaces");
        }
    }

    pub fn any(&mut self, field: &str, any: &Any) {
        if any.type_url.is_empty() {
            self.add(format!("{field}.type_url"), "is required");
        } else if any.type_url.len() > MAX_TYPE_URL_BYTES {
            self.add(
                format!("{field}.type_url"),
                format!("must be at most {MAX_TYPE_URL_BYTES} bytes"),
            );
        } else if !any.type_url.contains('/')
            || any.type_url.ends_with('/')
            || any.type_url.contains('\0')
        {
            self.add(
                format!("{field}.type_url"),
                "must look like type.googleapis.com/full.message.Name",
            );
        }
        if any.value.len() > MAX_PAYLOAD_BYTES {
            self.add(
                format!("{field}.value"),
                format!("must be at most {MAX_PAYLOAD_BYTES} bytes"),
            );
        }
    }

    pub fn error_status(&mut self, field: &str, status: &RpcStatus) {
        if !(1..=16).contains(&status.code) {
            self.add(
                format!("{field}.code"),
                "must be a non-ok google.rpc.Code (1-16)",
            );
        }
        if status.message.len() > MAX_ERROR_MESSAGE_BYTES {
            self.add(
                format!("{field}.message"),
                format!("must be at most {MAX_ERROR_MESSAGE_BYTES} bytes"),
            );
        } else {
            self.no_nul(&format!("{field}.message"), &status.message);
        }
        if status.details.len() > MAX_ERROR_DETAILS {
            self.add(
                format!("{field}.details"),
                format!("must have at most {MAX_ERROR_DETAILS} entries"),
            );
        }
        for (i, detail) in status.details.iter().enumerate() {
            self.any(&format!("{field}.details[{i}]"), detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(f: impl FnOnce(&mut Violations)) -> Vec<FieldViolation> {
        let mut v = Violations::default();
        f(&mut v);
        match v.into_result() {
            Ok(()) => vec![],
            Err(crate::Error::InvalidArgument(v)) => v,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn list_search_filters_are_bounded() {
        for good in ["", "o", "ops", "ops0123456789abcdefg"] {
            assert!(
                check(|v| v.id_prefix_filter("id_prefix", good)).is_empty(),
                "{good}"
            );
        }
        for bad in ["OPS", "op-", "op%", "ops0123456789abcdefgh", "опс", "ops\0"] {
            let v = check(|v| v.id_prefix_filter("id_prefix", bad));
            assert_eq!(v.len(), 1, "{bad}");
            assert_eq!(v[0].field, "id_prefix");
            assert_eq!(
                v[0].description,
                "must be at most 20 characters of [0-9a-z]"
            );
        }
        let longest = "ä".repeat(256);
        assert!(check(|v| v.description_search("description_contains", &longest)).is_empty());
        assert!(check(|v| v.description_search("d", "50% a_b \\")).is_empty());
        let v = check(|v| v.description_search("description_contains", &"a".repeat(257)));
        assert_eq!(v[0].field, "description_contains");
        assert_eq!(v[0].description, "must be at most 256 characters");
        let v = check(|v| v.description_search("description_contains", "a\0b"));
        assert_eq!(v[0].description, "must not contain NUL characters");
    }

    #[test]
    fn description_counts_characters_not_bytes() {
        let cyrillic_256 = "я".repeat(256);
        assert!(check(|v| v.description("description", &cyrillic_256)).is_empty());
        let too_long = "я".repeat(257);
        let v = check(|v| v.description("description", &too_long));
        assert_eq!(v[0].field, "description");
    }

    #[test]
    fn nul_characters_are_refused_in_stored_text() {
        let v = check(|v| {
            v.description("description", "a\0b");
            v.resource_id("resource_id", "a\0b");
            v.any(
                "metadata",
                &Any {
                    type_url: "type.googleapis.com/a\0b".into(),
                    value: vec![],
                },
            );
            v.error_status(
                "error",
                &RpcStatus {
                    code: 9,
                    message: "\0".into(),
                    details: vec![],
                },
            );
        });
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "description",
                "resource_id",
                "metadata.type_url",
                "error.message"
            ]
        );
    }

    #[test]
    fn error_status_must_not_be_ok() {
        let status = RpcStatus {
            code: 0,
            message: "fine".into(),
            details: vec![],
        };
        let v = check(|v| v.error_status("error", &status));
        assert_eq!(v[0].field, "error.code");
    }

    #[test]
    fn every_violation_is_reported() {
        let any = Any {
            type_url: String::new(),
            value: vec![0; MAX_PAYLOAD_BYTES + 1],
        };
        let v = check(|v| v.any("metadata", &any));
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["metadata.type_url", "metadata.value"]);
    }

    proptest! {
        #[test]
        fn validators_never_panic(text in "\\PC*", code in any::<i32>()) {
            let mut v = Violations::default();
            v.description("d", &text);
            v.resource_id("r", &text);
            v.idempotency_key("k", &text);
            v.any("a", &Any { type_url: text.clone(), value: vec![] });
            v.error_status("e", &RpcStatus { code, message: text, details: vec![] });
            let _ = v.into_result();
        }
    }
}
