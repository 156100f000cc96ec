//! Operation ids: 20 characters of `[0-9a-z]`, a 3-character prefix naming the
//! producing service (like the clouds' `fhm…`) and 17 random characters (about
//! 88 bits from a cryptographic generator), so ids cannot be guessed.

use std::fmt;

use rand::Rng;

use crate::error::Error;

pub const ID_LEN: usize = 20;
pub const PREFIX_LEN: usize = 3;
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

    /// A fresh id: the prefix followed by random characters.
    pub fn generate(prefix: &IdPrefix, rng: &mut impl Rng) -> Self {
        let mut id = String::with_capacity(ID_LEN);
        id.push_str(&prefix.0);
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

    #[test]
    fn generated_ids_have_the_prefix_and_the_alphabet() {
        let prefix = IdPrefix::parse("id_prefix", "fhm").unwrap();
        let mut rng = rand::rng();
        let id = OperationId::generate(&prefix, &mut rng);
        assert_eq!(id.as_str().len(), ID_LEN);
        assert!(id.as_str().starts_with("fhm"));
        assert_eq!(OperationId::parse("id", id.as_str()).unwrap(), id);
    }

    #[test]
    fn generated_ids_do_not_repeat() {
        let prefix = IdPrefix::default();
        let mut rng = rand::rng();
        let ids: std::collections::HashSet<_> = (0..10_000)
            .map(|_| OperationId::generate(&prefix, &mut rng))
            .collect();
        assert_eq!(ids.len(), 10_000);
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
        fn parse_accepts_generated_ids(seed in any::<u64>()) {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let id = OperationId::generate(&IdPrefix::default(), &mut rng);
            prop_assert!(OperationId::parse("id", id.as_str()).is_ok());
        }
    }
}
