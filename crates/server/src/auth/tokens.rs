//! Static tokens: a TOML file of principals, each with the SHA-256 of its
//! token, so the file gives nobody who reads it a way in.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use opsd_core::principal::validate_scope;
use opsd_core::{Principal, Role, Scopes};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::service_accounts::{self, ServiceAccountKey};

const PREFIX: &str = "opsd_";
const KEYS: [&str; 4] = ["id", "token_sha256", "scopes", "roles"];
/// The kinds of entries in the file.
const SECTIONS: [&str; 2] = ["principal", "service_account_key"];

/// A fresh token and the hex SHA-256 that goes in the tokens file.
pub fn new_token() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = hash_token(&token);
    (token, hash)
}

/// The hex SHA-256 of `token`, as the tokens file holds it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

pub(super) struct TokenTable {
    entries: Vec<Entry>,
    keys: Vec<ServiceAccountKey>,
}

impl TokenTable {
    pub(super) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read tokens file {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))
    }

    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("not valid toml: {e}"))?;
        if let Some(key) = table.keys().find(|key| !SECTIONS.contains(&key.as_str())) {
            return Err(format!(
                "key {key}: unknown key (expected [[principal]] and [[service_account_key]] entries)"
            ));
        }
        let entries_of = |section: &str| match table.get(section) {
            None => Ok(&[][..]),
            Some(toml::Value::Array(entries)) => Ok(entries.as_slice()),
            Some(_) => Err(format!("key {section}: expected [[{section}]] entries")),
        };
        // Name an entry by its id where it has one.
        let blame = |section: &str, n: usize, value: &toml::Value, (key, why): KeyError| match value
            .get("id")
            .and_then(toml::Value::as_str)
        {
            Some(id) => format!("{section} {n} ({id}): key {key}: {why}"),
            None => format!("{section} {n}: key {key}: {why}"),
        };

        let principals = entries_of("principal")?;
        let mut entries = Vec::with_capacity(principals.len());
        let mut by_id = HashMap::new();
        let mut by_hash = HashMap::new();
        for (i, value) in principals.iter().enumerate() {
            let n = i + 1;
            let entry = parse_entry(value).map_err(|e| blame("principal", n, value, e))?;
            let id = &entry.principal.id;
            if let Some(first) = by_id.insert(id.clone(), n) {
                return Err(format!(
                    "principal {n} ({id}): key id: duplicate of principal {first}"
                ));
            }
            if let Some(first) = by_hash.insert(entry.hash, n) {
                return Err(format!(
                    "principal {n} ({id}): key token_sha256: same token as principal {first}"
                ));
            }
            entries.push(entry);
        }

        let key_entries = entries_of("service_account_key")?;
        let mut keys = Vec::with_capacity(key_entries.len());
        let mut by_key_id = HashMap::new();
        for (i, value) in key_entries.iter().enumerate() {
            let n = i + 1;
            let key = service_accounts::parse_entry(value)
                .map_err(|e| blame("service_account_key", n, value, e))?;
            if let Some(first) = by_key_id.insert(key.id.clone(), n) {
                return Err(format!(
                    "service_account_key {n} ({}): key id: duplicate of service_account_key {first}",
                    key.id
                ));
            }
            keys.push(key);
        }
        Ok(Self { entries, keys })
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The service-account keys, for the IAM token exchange.
    pub(super) fn keys(&self) -> &[ServiceAccountKey] {
        &self.keys
    }

    /// The principal whose token hashes to the same as `token`.
    pub(super) fn find(&self, token: &str) -> Option<&Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, each in constant time, so how long a lookup
        // takes tells nothing about how close a guess came.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(&entry.principal);
            }
        }
        found
    }
}

/// The key at fault and why.
pub(super) type KeyError = (String, String);

pub(super) fn fail(key: &str, why: impl Into<String>) -> KeyError {
    (key.to_owned(), why.into())
}

/// The non-empty list of strings at `key`.
pub(super) fn string_list<'a>(table: &'a toml::Table, key: &str) -> Result<Vec<&'a str>, KeyError> {
    let not_strings = || fail(key, "expected a list of strings");
    let items: Vec<&str> = match table.get(key) {
        None => return Err(fail(key, "missing")),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(not_strings))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(not_strings()),
    };
    if items.is_empty() {
        return Err(fail(key, "must not be empty"));
    }
    Ok(items)
}

fn parse_entry(value: &toml::Value) -> Result<Entry, KeyError> {
    let table = value
        .as_table()
        .ok_or_else(|| fail("principal", "expected a table"))?;
    if let Some(key) = table.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(fail(key, "unknown key"));
    }
    let string = |key: &str| match table.get(key) {
        None => Err(fail(key, "missing")),
        Some(toml::Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(fail(key, "expected a string")),
    };
    let list = |key: &str| string_list(table, key);

    let id = string("id")?;
    if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(fail("id", "must be non-empty, without spaces"));
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(string("token_sha256")?, &mut hash)
        .map_err(|_| fail("token_sha256", "expected 64 hex digits"))?;
    let scopes = parse_scopes(&list("scopes")?).map_err(|why| fail("scopes", why))?;
    let roles = list("roles")?
        .into_iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| fail("roles", format!("unknown role {name:?}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(Entry {
        hash,
        principal: Principal {
            id: id.to_owned(),
            scopes,
            roles,
        },
    })
}

/// `["*"]` is every scope; otherwise each must be a valid scope.
pub(super) fn parse_scopes(names: &[&str]) -> Result<Scopes, String> {
    if names.contains(&"*") {
        return if names.len() == 1 {
            Ok(Scopes::All)
        } else {
            Err("\"*\" must stand alone".to_owned())
        };
    }
    names
        .iter()
        .map(|name| {
            validate_scope(&format!("{name:?}"), name)
                .map(|()| (*name).to_owned())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()
        .map(Scopes::Only)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, token: &str, scopes: &str, roles: &str) -> String {
        format!(
            "[[principal]]\nid = \"{id}\"\ntoken_sha256 = \"{}\"\nscopes = {scopes}\nroles = {roles}\n",
            hash_token(token)
        )
    }

    #[test]
    fn tokens_are_found_by_their_hash() {
        let text = entry(
            "compute",
            "t1",
            r#"["folder-a", "folder-b"]"#,
            r#"["producer", "viewer"]"#,
        ) + &entry("admin", "t2", r#"["*"]"#, r#"["admin"]"#);
        let table = TokenTable::parse(&text).unwrap();
        assert_eq!(table.len(), 2);

        let compute = table.find("t1").unwrap();
        assert_eq!(compute.id, "compute");
        assert_eq!(
            compute.scopes,
            Scopes::Only(["folder-a".to_owned(), "folder-b".to_owned()].into())
        );
        assert_eq!(compute.roles, [Role::Producer, Role::Viewer].into());

        let admin = table.find("t2").unwrap();
        assert_eq!(admin.id, "admin");
        assert_eq!(admin.scopes, Scopes::All);

        for unknown in ["", "t", "t3", "T1", "t1 "] {
            assert!(table.find(unknown).is_none(), "{unknown:?}");
        }
        assert!(TokenTable::parse("").unwrap().find("t1").is_none());
    }

    #[test]
    fn lookup_checks_every_entry() {
        // The match may be first, last or in between; each is found, and a
        // near miss (one differing byte of the hash) is not.
        let tokens: Vec<String> = (0..5).map(|i| format!("token-{i}")).collect();
        let text: String = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| entry(&format!("p{i}"), t, r#"["s"]"#, r#"["viewer"]"#))
            .collect();
        let table = TokenTable::parse(&text).unwrap();
        for (i, token) in tokens.iter().enumerate() {
            assert_eq!(table.find(token).unwrap().id, format!("p{i}"));
        }
        let mut near = table.entries[2].hash;
        near[31] ^= 1;
        assert!(
            !table
                .entries
                .iter()
                .any(|e| bool::from(e.hash.ct_eq(&near)))
        );
    }

    #[test]
    fn upper_case_hashes_are_accepted() {
        let text = format!(
            "[[principal]]\nid = \"a\"\ntoken_sha256 = \"{}\"\nscopes = [\"s\"]\nroles = [\"viewer\"]",
            hash_token("t").to_uppercase()
        );
        assert_eq!(TokenTable::parse(&text).unwrap().find("t").unwrap().id, "a");
    }

    #[test]
    fn bad_files_name_the_entry_and_key() {
        let good = entry("a", "t1", r#"["s"]"#, r#"["viewer"]"#);
        let hash = hash_token("t2");
        for (text, expected) in [
            ("principal = ", "not valid toml"),
            (
                "[principal]\nid = \"a\"",
                "key principal: expected [[principal]] entries",
            ),
            (
                "tokens = []",
                "key tokens: unknown key (expected [[principal]] and [[service_account_key]] entries)",
            ),
            (
                "[service_account_key]\nid = \"k\"",
                "key service_account_key: expected [[service_account_key]] entries",
            ),
            (
                "principal = [1]",
                "principal 1: key principal: expected a table",
            ),
            (
                &format!(
                    "{good}[[principal]]\nid = \"b\"\ntoken_sha256 = \"{hash}\"\nscopes = [\"s\"]\nroles = [\"viewer\"]\ncolor = \"red\""
                ),
                "principal 2 (b): key color: unknown key",
            ),
            (
                &format!(
                    "[[principal]]\ntoken_sha256 = \"{hash}\"\nscopes = [\"s\"]\nroles = [\"viewer\"]"
                ),
                "principal 1: key id: missing",
            ),
            (
                &format!(
                    "[[principal]]\nid = 7\ntoken_sha256 = \"{hash}\"\nscopes = [\"s\"]\nroles = [\"viewer\"]"
                ),
                "principal 1: key id: expected a string",
            ),
            (
                &format!(
                    "[[principal]]\nid = \"two words\"\ntoken_sha256 = \"{hash}\"\nscopes = [\"s\"]\nroles = [\"viewer\"]"
                ),
                "principal 1 (two words): key id: must be non-empty",
            ),
            (
                "[[principal]]\nid = \"a\"\ntoken_sha256 = \"abc\"\nscopes = [\"s\"]\nroles = [\"viewer\"]",
                "principal 1 (a): key token_sha256: expected 64 hex digits",
            ),
            (
                &format!(
                    "[[principal]]\nid = \"a\"\ntoken_sha256 = \"{}\"\nscopes = [\"s\"]\nroles = [\"viewer\"]",
                    "g".repeat(64)
                ),
                "principal 1 (a): key token_sha256: expected 64 hex digits",
            ),
            (
                "[[principal]]\nid = \"a\"\ntoken_sha256 = \"opsd_plaintext\"\nscopes = [\"s\"]\nroles = [\"viewer\"]",
                "principal 1 (a): key token_sha256: expected 64 hex digits",
            ),
            (
                &entry("a", "t", r#"["bad scope"]"#, r#"["viewer"]"#),
                "principal 1 (a): key scopes: \"bad scope\": must be 1-64 characters",
            ),
            (
                &entry("a", "t", r#"["*", "s"]"#, r#"["viewer"]"#),
                "principal 1 (a): key scopes: \"*\" must stand alone",
            ),
            (
                &entry("a", "t", "[]", r#"["viewer"]"#),
                "principal 1 (a): key scopes: must not be empty",
            ),
            (
                &entry("a", "t", "\"s\"", r#"["viewer"]"#),
                "principal 1 (a): key scopes: expected a list of strings",
            ),
            (
                &entry("a", "t", r#"["s"]"#, r#"["owner"]"#),
                "principal 1 (a): key roles: unknown role \"owner\"",
            ),
            (
                &entry("a", "t", r#"["s"]"#, "[1]"),
                "principal 1 (a): key roles: expected a list of strings",
            ),
            (
                &format!("{good}{}", entry("a", "t2", r#"["s"]"#, r#"["viewer"]"#)),
                "principal 2 (a): key id: duplicate of principal 1",
            ),
            (
                &format!("{good}{}", entry("b", "t1", r#"["s"]"#, r#"["viewer"]"#)),
                "principal 2 (b): key token_sha256: same token as principal 1",
            ),
        ] {
            let error = match TokenTable::parse(text) {
                Ok(_) => panic!("{text}: accepted"),
                Err(error) => error,
            };
            assert!(error.contains(expected), "{text}\n{error}");
        }
    }

    const RSA_PUBLIC: &str = include_str!("testdata/rsa-public.pem");

    #[test]
    fn service_account_keys_sit_beside_principals() {
        let ec = rcgen::KeyPair::generate().unwrap().public_key_pem();
        let text = entry("compute", "t1", r#"["s"]"#, r#"["viewer"]"#)
            + &super::super::service_accounts::tests::entry("ajekey1", "compute", RSA_PUBLIC)
            + &super::super::service_accounts::tests::entry("ajekey2", "storage", &ec);
        let table = TokenTable::parse(&text).unwrap();
        assert_eq!(table.len(), 1);
        let ids: Vec<&str> = table.keys().iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["ajekey1", "ajekey2"]);
        assert_eq!(table.find("t1").unwrap().id, "compute");
        let only_keys =
            TokenTable::parse(&super::super::service_accounts::tests::entry("k", "p", &ec))
                .unwrap();
        assert_eq!((only_keys.len(), only_keys.keys().len()), (0, 1));
    }

    #[test]
    fn bad_service_account_keys_name_the_entry_and_key() {
        let key = |id: &str, principal: &str, public_key: &str, scopes: &str, roles: &str| {
            format!(
                "[[service_account_key]]\nid = {id}\nprincipal = {principal}\n\
                 public_key = \"\"\"{public_key}\"\"\"\nscopes = {scopes}\nroles = {roles}\n"
            )
        };
        let good = key("\"k1\"", "\"p\"", RSA_PUBLIC, r#"["s"]"#, r#"["viewer"]"#);
        let private = rcgen::KeyPair::generate().unwrap().serialize_pem();
        for (text, expected) in [
            (
                "service_account_key = [1]".to_owned(),
                "service_account_key 1: key service_account_key: expected a table",
            ),
            (
                format!("{good}color = \"red\""),
                "service_account_key 1 (k1): key color: unknown key",
            ),
            (
                key("7", "\"p\"", RSA_PUBLIC, r#"["s"]"#, r#"["viewer"]"#),
                "service_account_key 1: key id: expected a string",
            ),
            (
                key("\"\"", "\"p\"", RSA_PUBLIC, r#"["s"]"#, r#"["viewer"]"#),
                "service_account_key 1 (): key id: must be non-empty, without spaces",
            ),
            (
                key(
                    "\"k1\"",
                    "\"two words\"",
                    RSA_PUBLIC,
                    r#"["s"]"#,
                    r#"["viewer"]"#,
                ),
                "service_account_key 1 (k1): key principal: must be non-empty, without spaces",
            ),
            (
                key("\"k1\"", "\"p\"", &private, r#"["s"]"#, r#"["viewer"]"#),
                "service_account_key 1 (k1): key public_key: holds a private key",
            ),
            (
                key("\"k1\"", "\"p\"", "not a key", r#"["s"]"#, r#"["viewer"]"#),
                "service_account_key 1 (k1): key public_key: expected an rsa or ec p-256 public key in pem",
            ),
            (
                key("\"k1\"", "\"p\"", RSA_PUBLIC, "[]", r#"["viewer"]"#),
                "service_account_key 1 (k1): key scopes: must not be empty",
            ),
            (
                key("\"k1\"", "\"p\"", RSA_PUBLIC, r#"["s"]"#, r#"["owner"]"#),
                "service_account_key 1 (k1): key roles: unknown role \"owner\"",
            ),
            (
                format!("{good}{good}"),
                "service_account_key 2 (k1): key id: duplicate of service_account_key 1",
            ),
        ] {
            let error = match TokenTable::parse(&text) {
                Ok(_) => panic!("{text}: accepted"),
                Err(error) => error,
            };
            assert!(error.contains(expected), "{text}\n{error}");
            assert!(!error.contains("MII"), "key material in {error}");
        }
        let missing = "[[service_account_key]]\nid = \"k1\"\nprincipal = \"p\"\nscopes = [\"s\"]\nroles = [\"viewer\"]";
        assert!(
            TokenTable::parse(missing)
                .err()
                .unwrap()
                .contains("service_account_key 1 (k1): key public_key: missing")
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let missing = TokenTable::load(&path).err().unwrap();
        assert!(
            format!("{missing:#}").contains("cannot read tokens file"),
            "{missing:#}"
        );
        std::fs::write(&path, "[[principal]]\nid = \"a\"").unwrap();
        let error = TokenTable::load(&path).err().unwrap().to_string();
        assert!(
            error.starts_with(&format!("tokens file {}: principal 1 (a)", path.display())),
            "{error}"
        );
    }

    #[test]
    fn new_tokens_are_random_and_match_their_hash() {
        let (token, hash) = new_token();
        assert!(token.starts_with("opsd_"));
        assert_eq!(token.len(), "opsd_".len() + 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
        assert_eq!(hash, hash_token(&token));
        assert_eq!(hash.len(), 64);
        assert_ne!(new_token().0, token);
        let table = TokenTable::parse(&entry("a", &token, r#"["s"]"#, r#"["viewer"]"#)).unwrap();
        assert_eq!(table.find(&token).unwrap().id, "a");
    }
}
