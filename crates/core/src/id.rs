//! Operation ids: 20 characters of `[0-9a-z]`. A 3-character prefix names the
//! producing service (like the clouds' `fhm…`); 7 characters of the creation
//! time follow, then 10 random characters (about 52 bits from a cryptographic
//! generator), so ids cannot be guessed.
//!
//! The time part makes one service's new ids sort together, so inserting them
//! touches the same few index pages instead of a random page per id: with
//! random ids every write dirtied a page of its own in the id index and in
//! the timeline's index, and a group commit wrote four times the pages.

use std::fmt;

use rand::Rng;

use crate::error::Error;
use crate::time::Timestamp;

pub const ID_LEN: usize = 20;
pub const PREFIX_LEN: usize = 3;
/// Characters of creation time, in [`TIME_UNIT_NANOS`] since the Unix epoch.
const TIME_LEN: usize = 7;
/// 50 ms: 36^7 of them span 124 years from 1970 (then the time part wraps
/// around, which costs only locality), and a burst within one unit still
/// lands on a handful of index pages.
const TIME_UNIT_NANOS: i64 = 50_000_000;
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A well-formed operation id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(String);

impl OperationId {
    /// Parses an id received from a caller; `field` names it in the violation.
    pub fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::invalid_argument(field, "is required"));
        }
        if raw.len() != ID_LEN || !raw.bytes().all(is_id_byte) {
            return Err(Error::invalid_argument(
                field,
                "must be 20 characters of [0-9a-z]",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A fresh id: the prefix, the creation time `now`, then random characters.
    pub fn generate(prefix: &IdPrefix, now: Timestamp, rng: &mut impl Rng) -> Self {
        let mut id = String::with_capacity(ID_LEN);
        id.push_str(&prefix.0);
        let units = now.unix_nanos().div_euclid(TIME_UNIT_NANOS);
        let span = 36i64.pow(TIME_LEN as u32);
        let mut time = units.rem_euclid(span);
        let mut digits = [b'0'; TIME_LEN];
        for digit in digits.iter_mut().rev() {
            *digit = ALPHABET[(time % 36) as usize];
            time /= 36;
        }
        id.extend(digits.iter().map(|&b| char::from(b)));
        while id.len() < ID_LEN {
            id.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
        }
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id read back from storage, where it was validated on the way in.
    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three characters that start every id of one producing service: `[a-z][0-9a-z]{2}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdPrefix(String);

impl IdPrefix {
    pub fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        let bytes = raw.as_bytes();
        if bytes.len() != PREFIX_LEN
            || !bytes[0].is_ascii_lowercase()
            || !bytes.iter().all(|&b| is_id_byte(b))
        {
            return Err(Error::invalid_argument(
                field,
                "must be 3 characters: a letter a-z, then two of [0-9a-z]",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for IdPrefix {
    fn default() -> Self {
        Self("ops".to_owned())
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp::from_unix_nanos(1_790_000_000_123_456_789);

    #[test]
    fn generated_ids_have_the_prefix_and_the_alphabet() {
        let prefix = IdPrefix::parse("id_prefix", "fhm").unwrap();
        let mut rng = rand::rng();
        let id = OperationId::generate(&prefix, NOW, &mut rng);
        assert_eq!(id.as_str().len(), ID_LEN);
        assert!(id.as_str().starts_with("fhm"));
        assert_eq!(OperationId::parse("id", id.as_str()).unwrap(), id);
    }

    #[test]
    fn generated_ids_do_not_repeat_within_one_time_unit() {
        let prefix = IdPrefix::default();
        let mut rng = rand::rng();
        let ids: std::collections::HashSet<_> = (0..10_000)
            .map(|_| OperationId::generate(&prefix, NOW, &mut rng))
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn later_ids_of_a_prefix_sort_after_earlier_ones() {
        let prefix = IdPrefix::default();
        let mut rng = rand::rng();
        let mut previous = OperationId::generate(&prefix, NOW, &mut rng);
        for step in 1..200i64 {
            let now = Timestamp::from_unix_nanos(NOW.unix_nanos() + step * TIME_UNIT_NANOS);
            let id = OperationId::generate(&prefix, now, &mut rng);
            assert!(id > previous, "{id} after {previous}");
            previous = id;
        }
    }

    #[test]
    fn the_time_part_is_the_creation_time_in_fifty_millisecond_units() {
        let id = OperationId::generate(&IdPrefix::default(), NOW, &mut rand::rng());
        let time = &id.as_str()[PREFIX_LEN..PREFIX_LEN + TIME_LEN];
        let units = i64::from_str_radix(time, 36).unwrap();
        assert_eq!(units, NOW.unix_nanos() / TIME_UNIT_NANOS);
        // The random part varies within one unit.
        let other = OperationId::generate(&IdPrefix::default(), NOW, &mut rand::rng());
        assert_eq!(
            &other.as_str()[..PREFIX_LEN + TIME_LEN],
            &id.as_str()[..PREFIX_LEN + TIME_LEN]
        );
        assert_ne!(other, id);
    }

    #[test]
    fn times_before_the_epoch_and_past_the_span_still_make_valid_ids() {
        for nanos in [i64::MIN, -1, 0, i64::MAX] {
            let id = OperationId::generate(
                &IdPrefix::default(),
                Timestamp::from_unix_nanos(nanos),
                &mut rand::rng(),
            );
            assert!(
                OperationId::parse("id", id.as_str()).is_ok(),
                "{nanos}: {id}"
            );
        }
    }

    #[test]
    fn empty_and_malformed_ids_name_the_field() {
        let Error::InvalidArgument(v) = OperationId::parse("operation_id", "").unwrap_err() else {
            panic!("expected invalid argument");
        };
        assert_eq!(v[0].field, "operation_id");
        assert_eq!(v[0].description, "is required");
        for bad in [
            "short",
            "FHM0a1b2c3d4e5f6g7h8",
            "fhm0a1b2c3d4e5f6g7h",
            "fhm0a1b2c3d4e5f6g7h8x",
            "fhm0a1b2c3d4e5f6g7h-",
            "fhm0a1b2c3d4e5f6g7hя",
        ] {
            assert!(OperationId::parse("operation_id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_start_with_a_letter() {
        assert!(IdPrefix::parse("p", "fhm").is_ok());
        assert!(IdPrefix::parse("p", "a00").is_ok());
        for bad in ["", "fh", "fhmx", "1ab", "Fhm", "f-m"] {
            assert!(IdPrefix::parse("p", bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_id_alphabet(raw in "\\PC{0,30}") {
            let valid = raw.len() == ID_LEN && raw.bytes().all(is_id_byte);
            prop_assert_eq!(OperationId::parse("id", &raw).is_ok(), valid);
        }

        #[test]
        fn parse_accepts_generated_ids(seed in any::<u64>(), nanos in any::<i64>()) {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let id = OperationId::generate(&IdPrefix::default(), Timestamp::from_unix_nanos(nanos), &mut rng);
            prop_assert!(OperationId::parse("id", id.as_str()).is_ok());
        }
    }
}
