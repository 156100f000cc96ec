//! Page tokens: opaque to callers, so anything may come back in one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use opsd_core::list::{decode_page_token, encode_page_token};
use opsd_core::{Code, Cursor, Error, ListFilter, OperationId, StateFilter, Timestamp};

use super::Reader;

pub const DICTIONARY: &[&[u8]] = &[
    b"AQ",
    b"AAAAAAAAAAA",
    b"ops0123456789abcdefg",
    b"b3BzMDEyMzQ1Njc4OWFiY2RlZmc",
    b"=",
    b"+",
    b"/",
    b"_",
    b"-",
    b"\x01",
    b"\x02",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x80\x00\x00\x00\x00\x00\x00\x00",
];

/// A filter made of input bytes: every field may be set.
pub fn filter(reader: &mut Reader) -> ListFilter {
    let flags = reader.byte();
    let text = |reader: &mut Reader| {
        let len = usize::from(reader.byte() % 12);
        String::from_utf8_lossy(reader.bytes(len)).into_owned()
    };
    ListFilter {
        resource_id: (flags & 1 != 0).then(|| text(reader)),
        created_by: (flags & 2 != 0).then(|| text(reader)),
        state: match (flags >> 2) % 3 {
            0 => StateFilter::Any,
            1 => StateFilter::Running,
            _ => StateFilter::Done,
        },
        created_after: (flags & 16 != 0).then(|| Timestamp::from_unix_nanos(reader.i64())),
        created_before: (flags & 32 != 0).then(|| Timestamp::from_unix_nanos(reader.i64())),
        scopes: (flags & 64 != 0).then(|| (0..reader.byte() % 3).map(|_| text(reader)).collect()),
        id_prefix: (flags & 128 != 0).then(|| text(reader)),
        description_contains: (reader.byte() & 1 != 0).then(|| text(reader)),
    }
}

fn assert_refused(error: &Error) -> String {
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    let Error::InvalidArgument(violations) = error else {
        unreachable!()
    };
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "page_token", "{error:?}");
    violations[0].description.clone()
}

/// Decodes a token under a filter: a token that decodes re-encodes to itself,
/// is refused under any filter with another digest, and a refusal is an
/// INVALID_ARGUMENT naming `page_token`.
fn check(filter: &ListFilter, token: &str) -> String {
    match decode_page_token(filter, token) {
        Ok(cursor) => {
            assert_eq!(
                encode_page_token(filter, &cursor),
                token,
                "a token that decodes re-encodes to itself"
            );
            assert_eq!(
                OperationId::parse("id", cursor.id.as_str()).as_ref(),
                Ok(&cursor.id)
            );
            let other = ListFilter {
                state: match filter.state {
                    StateFilter::Any => StateFilter::Done,
                    _ => StateFilter::Any,
                },
                ..filter.clone()
            };
            let refused =
                decode_page_token(&other, token).expect_err("tokens are bound to filters");
            assert_refused(&refused);
            "decoded".to_owned()
        }
        Err(error) => format!("refused:{}", assert_refused(&error)),
    }
}

pub fn run(data: &[u8]) -> String {
    let mut reader = Reader::new(data);
    let mode = reader.byte() % 3;
    let filter = filter(&mut reader);
    let rest = reader.rest();
    match mode {
        // The token as a caller sent it.
        0 => format!("text:{}", check(&filter, &String::from_utf8_lossy(rest))),
        // Any bytes inside valid base64: reaches the version, digest and id checks.
        1 => {
            let mut bytes = rest.to_vec();
            // Half the time, with this filter's digest, to get past that check.
            if bytes.len() >= 17 && bytes[0] & 1 == 0 {
                let good = encode_page_token(
                    &filter,
                    &Cursor {
                        created_at: Timestamp::UNIX_EPOCH,
                        id: OperationId::parse("id", "ops00000000000000000").expect("a valid id"),
                    },
                );
                let good = URL_SAFE_NO_PAD.decode(good).expect("own token is base64");
                bytes[0] = 1;
                bytes[9..17].copy_from_slice(&good[9..17]);
            }
            format!("bytes:{}", check(&filter, &URL_SAFE_NO_PAD.encode(&bytes)))
        }
        // A cursor made of the bytes: encodes, then decodes to itself.
        _ => {
            let mut cursor_reader = Reader::new(rest);
            let nanos = cursor_reader.i64();
            let id: String = (0..20)
                .map(|_| {
                    let b = cursor_reader.byte();
                    char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[usize::from(b % 36)])
                })
                .collect();
            let cursor = Cursor {
                created_at: Timestamp::from_unix_nanos(nanos),
                id: OperationId::parse("id", &id).expect("20 characters of the alphabet"),
            };
            let token = encode_page_token(&filter, &cursor);
            assert_eq!(decode_page_token(&filter, &token), Ok(cursor));
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "tokens are url-safe: {token}"
            );
            "cursor:round-trip".to_owned()
        }
    }
}
