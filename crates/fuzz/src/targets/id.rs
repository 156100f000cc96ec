//! Operation ids and id prefixes, as every request carries them.

use opsd_core::id::{ID_LEN, PREFIX_LEN};
use opsd_core::{Code, Error, IdPrefix, OperationId};
use rand::SeedableRng;

pub const DICTIONARY: &[&[u8]] = &[
    b"ops",
    b"fhm",
    b"ops0123456789abcdefg",
    b"0123456789",
    b"abcdefghijklmnopqrstuvwxyz",
    b"ABC",
    "я".as_bytes(),
    b"\0",
    b" ",
    b"-",
];

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_lowercase()
}

/// The one violation a refused id or prefix carries, naming `field`.
fn single_violation(error: &Error, field: &str) -> String {
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    let Error::InvalidArgument(violations) = error else {
        unreachable!("checked by code")
    };
    assert_eq!(violations.len(), 1, "{error:?}");
    assert_eq!(violations[0].field, field, "{error:?}");
    violations[0].description.clone()
}

/// Ids parse exactly when they are 20 characters of `[0-9a-z]` and then print
/// back the same; prefixes parse exactly when `[a-z][0-9a-z]{2}` and make ids
/// that parse. Refusals are INVALID_ARGUMENT naming the field.
pub fn run(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let valid_id = text.len() == ID_LEN && text.bytes().all(is_id_byte);
    let id = match OperationId::parse("operation_id", &text) {
        Ok(id) => {
            assert!(valid_id, "accepted {text:?}");
            assert_eq!(id.to_string(), text, "an id prints back as it was given");
            assert_eq!(id.as_str(), text);
            assert_eq!(
                OperationId::parse("operation_id", id.as_str()),
                Ok(id.clone())
            );
            "ok".to_owned()
        }
        Err(error) => {
            assert!(!valid_id, "refused {text:?}");
            let description = single_violation(&error, "operation_id");
            if text.is_empty() {
                assert_eq!(description, "is required");
            }
            format!("invalid:{description}")
        }
    };

    let prefix_text = text.get(..PREFIX_LEN.min(text.len())).unwrap_or(&text);
    let prefix_text = if data.first().is_some_and(|b| b & 1 == 1) {
        prefix_text
    } else {
        &text
    };
    let bytes = prefix_text.as_bytes();
    let valid_prefix = bytes.len() == PREFIX_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|&b| is_id_byte(b));
    let prefix = match IdPrefix::parse("id_prefix", prefix_text) {
        Ok(prefix) => {
            assert!(valid_prefix, "accepted prefix {prefix_text:?}");
            assert_eq!(prefix.as_str(), prefix_text);
            let seed = data
                .iter()
                .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let now = opsd_core::Timestamp::from_unix_nanos(seed as i64);
            let generated = OperationId::generate(&prefix, now, &mut rng);
            assert!(generated.as_str().starts_with(prefix_text));
            assert_eq!(
                OperationId::parse("operation_id", generated.as_str()),
                Ok(generated.clone()),
                "a generated id parses"
            );
            "prefix-ok"
        }
        Err(error) => {
            assert!(!valid_prefix, "refused prefix {prefix_text:?}");
            single_violation(&error, "id_prefix");
            "prefix-invalid"
        }
    };
    format!("{id}/{prefix}")
}
