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
        for text in [self.resource_id.as_deref(), self.created_by.as_deref()] {
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
