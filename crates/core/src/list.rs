//! Listing operations: filters, page sizes and opaque page tokens.
//!
//! Pages are keyset-paginated on (created_at, id), newest first: a token
//! names the last operation of the previous page, so operations created while
//! a client pages through never shift what it has not seen yet.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::id::{ID_LEN, OperationId};
use crate::time::Timestamp;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
const TOKEN_VERSION: u8 = 1;
const TOKEN_LEN: usize = 1 + 8 + 8 + ID_LEN;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StateFilter {
    #[default]
    Any,
    /// Running, including cancel-requested.
    Running,
    Done,
}

/// Which operations to list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListFilter {
    pub resource_id: Option<String>,
    pub created_by: Option<String>,
    pub state: StateFilter,
    /// Inclusive.
    pub created_after: Option<Timestamp>,
    /// Exclusive.
    pub created_before: Option<Timestamp>,
    /// Only these scopes (the caller's); `None` for every scope.
    pub scopes: Option<std::collections::BTreeSet<String>>,
    /// Only ids starting with this (`[0-9a-z]`, at most 20 characters).
    pub id_prefix: Option<String>,
    /// Only descriptions containing this text, case-insensitively as
    /// [`fold_case`] defines it; `%`, `_` and `\` are plain characters.
    pub description_contains: Option<String>,
}

/// What "case-insensitive" means for the description search, on every backend:
/// Unicode's default full lowercase mapping (`str::to_lowercase`, no locale
/// tailoring), computed by opsd, never by a database's `lower()`.
pub fn fold_case(text: &str) -> String {
    text.to_lowercase()
}

/// Whether `description` contains `needle` once both are folded by [`fold_case`].
pub fn description_matches(needle: &str, description: &str) -> bool {
    fold_case(description).contains(&fold_case(needle))
}

/// The least string above every id that starts with `prefix`, in the byte
/// order of `[0-9a-z]` (which every collation agrees on); `None` when the
/// prefix is all `z`, so that no id can be above it. `prefix` must hold only
/// id characters.
pub fn id_prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        let next = match last {
            b'0'..=b'8' | b'a'..=b'y' => last + 1,
            b'9' => b'a',
            _ => continue,
        };
        bytes.push(next);
        return String::from_utf8(bytes).ok();
    }
    None
}

/// Where a page starts: just after this operation in newest-first order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub created_at: Timestamp,
    pub id: OperationId,
}

/// One page's worth of a listing, as the store runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: ListFilter,
    pub after: Option<Cursor>,
    pub limit: usize,
}

impl ListFilter {
    /// Ties a token to the filter it was made for.
    fn digest(&self) -> [u8; 8] {
        let mut h = Sha256::new();
        for text in [
            self.resource_id.as_deref(),
            self.created_by.as_deref(),
            self.id_prefix.as_deref(),
            self.description_contains.as_deref(),
        ] {
            match text {
                Some(text) => {
                    h.update([1]);
                    h.update((text.len() as u64).to_le_bytes());
                    h.update(text.as_bytes());
                }
                None => h.update([0]),
            }
        }
        h.update([match self.state {
            StateFilter::Any => 0,
            StateFilter::Running => 1,
            StateFilter::Done => 2,
        }]);
        for time in [self.created_after, self.created_before] {
            match time {
                Some(time) => {
                    h.update([1]);
                    h.update(time.unix_nanos().to_le_bytes());
                }
                None => h.update([0]),
            }
        }
        match &self.scopes {
            Some(scopes) => {
                h.update([1]);
                for scope in scopes {
                    h.update((scope.len() as u64).to_le_bytes());
                    h.update(scope.as_bytes());
                }
            }
            None => h.update([0]),
        }
        let full: [u8; 32] = h.finalize().into();
        full[..8].try_into().expect("8 of 32 bytes")
    }

    pub fn matches(&self, op: &crate::Operation) -> bool {
        self.resource_id
            .as_ref()
            .is_none_or(|r| op.resource_id.as_ref() == Some(r))
            && self.created_by.as_ref().is_none_or(|c| op.created_by == *c)
            && match self.state {
                StateFilter::Any => true,
                StateFilter::Running => !op.is_done(),
                StateFilter::Done => op.is_done(),
            }
            && self.created_after.is_none_or(|t| op.created_at >= t)
            && self.created_before.is_none_or(|t| op.created_at < t)
            && self.scopes.as_ref().is_none_or(|s| s.contains(&op.scope))
            && self
                .id_prefix
                .as_ref()
                .is_none_or(|p| op.id.as_str().starts_with(p.as_str()))
            && self
                .description_contains
                .as_ref()
                .is_none_or(|text| description_matches(text, &op.description))
    }
}

impl Cursor {
    pub fn of(op: &crate::Operation) -> Self {
        Self {
            created_at: op.created_at,
            id: op.id.clone(),
        }
    }

    /// Whether `op` comes after this cursor in newest-first order.
    pub fn precedes(&self, op: &crate::Operation) -> bool {
        (op.created_at, &op.id) < (self.created_at, &self.id)
    }
}

/// A page size from a request: 0 means the default; otherwise 1 to 1000.
pub fn page_size(requested: i64) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if (1..=MAX_PAGE_SIZE as i64).contains(&n) => Ok(n as usize),
        _ => Err(Error::invalid_argument(
            "page_size",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        )),
    }
}

/// The opaque token for the page after `cursor`.
pub fn encode_page_token(filter: &ListFilter, cursor: &Cursor) -> String {
    let mut bytes = Vec::with_capacity(TOKEN_LEN);
    bytes.push(TOKEN_VERSION);
    bytes.extend_from_slice(&cursor.created_at.unix_nanos().to_be_bytes());
    bytes.extend_from_slice(&filter.digest());
    bytes.extend_from_slice(cursor.id.as_str().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a token back; it must have been made for the same filter.
pub fn decode_page_token(filter: &ListFilter, token: &str) -> Result<Cursor, Error> {
    let invalid = || Error::invalid_argument("page_token", "is not a token from a previous page");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() != TOKEN_LEN || bytes[0] != TOKEN_VERSION {
        return Err(invalid());
    }
    let nanos = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| invalid())?);
    if bytes[9..17] != filter.digest() {
        return Err(Error::invalid_argument(
            "page_token",
            "was made for other filters; keep them unchanged while paging",
        ));
    }
    let id = std::str::from_utf8(&bytes[17..]).map_err(|_| invalid())?;
    let id = OperationId::parse("page_token", id).map_err(|_| invalid())?;
    Ok(Cursor {
        created_at: Timestamp::from_unix_nanos(nanos),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cursor() -> Cursor {
        Cursor {
            created_at: Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
            id: OperationId::parse("id", "ops0123456789abcdefg").unwrap(),
        }
    }

    #[test]
    fn tokens_round_trip() {
        let filter = ListFilter {
            resource_id: Some("disk-1".into()),
            ..ListFilter::default()
        };
        let token = encode_page_token(&filter, &cursor());
        assert_eq!(decode_page_token(&filter, &token), Ok(cursor()));
    }

    #[test]
    fn a_token_is_bound_to_its_filter() {
        let token = encode_page_token(&ListFilter::default(), &cursor());
        let other = ListFilter {
            state: StateFilter::Done,
            ..ListFilter::default()
        };
        assert!(decode_page_token(&other, &token).is_err());
    }

    #[test]
    fn id_prefix_and_description_bind_the_token() {
        let plain = ListFilter::default();
        let token = encode_page_token(&plain, &cursor());
        for other in [
            ListFilter {
                id_prefix: Some("ops".into()),
                ..ListFilter::default()
            },
            ListFilter {
                description_contains: Some("disk".into()),
                ..ListFilter::default()
            },
        ] {
            let e = decode_page_token(&other, &token).unwrap_err();
            assert_eq!(e.code(), crate::Code::InvalidArgument);
            let token = encode_page_token(&other, &cursor());
            assert_eq!(decode_page_token(&other, &token), Ok(cursor()));
            assert!(decode_page_token(&plain, &token).is_err());
        }
        // The same text in the other field is another filter.
        let a = ListFilter {
            id_prefix: Some("abc".into()),
            ..ListFilter::default()
        };
        let b = ListFilter {
            description_contains: Some("abc".into()),
            ..ListFilter::default()
        };
        assert!(decode_page_token(&b, &encode_page_token(&a, &cursor())).is_err());
    }

    #[test]
    fn descriptions_match_by_unicode_lowercase() {
        assert!(description_matches("ÄRGER", "viel ärger mit disk-1"));
        assert!(description_matches("ärger", "VIEL ÄRGER"));
        assert!(description_matches("Disk", "snapshot DISK-1"));
        assert!(description_matches("ΣΟΦΊΑ", "σοφία"));
        assert!(description_matches("", "anything"));
        assert!(!description_matches("ärger", "arger"));
        // Lowercase mapping, not full case folding: ß is not "ss".
        assert!(!description_matches("STRASSE", "straße"));
        // Wildcards of SQL are plain characters.
        assert!(description_matches("50%", "done 50% of it"));
        assert!(!description_matches("5%", "done 50 of it"));
        assert!(!description_matches("a_c", "abc"));
        assert!(description_matches("a\\c", "a\\c"));
    }

    #[test]
    fn id_prefix_end_is_the_next_string_in_the_alphabet() {
        assert_eq!(id_prefix_end("ops").as_deref(), Some("opt"));
        assert_eq!(id_prefix_end("op9").as_deref(), Some("opa"));
        assert_eq!(id_prefix_end("opz").as_deref(), Some("oq"));
        assert_eq!(id_prefix_end("0zz").as_deref(), Some("1"));
        assert_eq!(id_prefix_end("zzz"), None);
        assert_eq!(id_prefix_end(""), None);
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(1000), Ok(1000));
        for bad in [-1, 1001, i64::MAX, i64::MIN] {
            assert!(page_size(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn garbage_tokens_are_invalid_arguments_never_panics(token in "\\PC{0,80}") {
            if let Err(e) = decode_page_token(&ListFilter::default(), &token) {
                prop_assert_eq!(e.code(), crate::Code::InvalidArgument);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let token = URL_SAFE_NO_PAD.encode(&bytes);
            let _ = decode_page_token(&ListFilter::default(), &token);
        }

        #[test]
        fn id_prefix_end_bounds_exactly_the_ids_with_the_prefix(
            prefix in "[0-9a-z]{1,5}",
            id in "[0-9a-z]{20}",
        ) {
            let inside = id.starts_with(&prefix);
            let in_range = id.as_str() >= prefix.as_str()
                && id_prefix_end(&prefix).is_none_or(|end| id.as_str() < end.as_str());
            prop_assert_eq!(inside, in_range);
        }

        #[test]
        fn any_cursor_round_trips(nanos in any::<i64>(), suffix in "[0-9a-z]{17}") {
            let cursor = Cursor {
                created_at: Timestamp::from_unix_nanos(nanos),
                id: OperationId::parse("id", &format!("ops{suffix}")).unwrap(),
            };
            let token = encode_page_token(&ListFilter::default(), &cursor);
            prop_assert_eq!(decode_page_token(&ListFilter::default(), &token), Ok(cursor));
        }
    }
}
