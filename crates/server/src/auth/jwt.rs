//! JWTs signed by a configured key: an HS256 secret, RS256 or ES256 public
//! keys in PEM, or the keys of a JWKS file.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use opsd_core::principal::validate_scope;
use opsd_core::{Principal, Role, Scopes};
use serde_json::{Map, Value};

use super::{AuthFailure, FailureReason, JwtConfig};

/// Shorter HS256 secrets are guessable offline from any one token.
const MIN_SECRET_BYTES: usize = 32;

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    /// Accepts only the key's own algorithm, so an RSA public key can never
    /// be used as an HMAC secret.
    validation: Validation,
}

impl Key {
    fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }
}

pub(super) struct JwtVerifier {
    keys: Vec<Key>,
    scopes_claim: String,
    roles_claim: String,
}

/// Three dot-separated parts; anything else is an opaque token.
pub(super) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl JwtVerifier {
    pub(super) fn load(config: &JwtConfig) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Otherwise any `aud` would be refused.
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let key = |kid: Option<String>, algorithm, key| Key {
            kid,
            key,
            validation: Validation {
                algorithms: vec![algorithm],
                ..validation.clone()
            },
        };

        let mut keys = Vec::new();
        if let Some(path) = &config.hs256_secret_file {
            let secret = read(path, "hs256 secret file")?;
            let secret = secret.trim_ascii();
            anyhow::ensure!(
                secret.len() >= MIN_SECRET_BYTES,
                "hs256 secret file {}: the secret must be at least {MIN_SECRET_BYTES} bytes",
                path.display()
            );
            keys.push(key(
                None,
                Algorithm::HS256,
                DecodingKey::from_secret(secret),
            ));
        }
        for path in &config.public_key_files {
            let (algorithm, decoding) = public_key(&read(path, "public key file")?)
                .map_err(|why| anyhow::anyhow!("public key file {}: {why}", path.display()))?;
            keys.push(key(None, algorithm, decoding));
        }
        if let Some(path) = &config.jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(path, "jwks file")?).map_err(|e| {
                anyhow::anyhow!("jwks file {}: not a json web key set: {e}", path.display())
            })?;
            for (i, jwk) in set.keys.iter().enumerate() {
                let kid = jwk.common.key_id.clone();
                if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                    continue;
                }
                let (algorithm, decoding) = jwk_key(jwk).map_err(|why| {
                    let name = kid
                        .as_ref()
                        .map_or(String::new(), |kid| format!(" (kid {kid})"));
                    anyhow::anyhow!("jwks file {}: key {}{name}: {why}", path.display(), i + 1)
                })?;
                keys.push(key(kid, algorithm, decoding));
            }
        }
        anyhow::ensure!(
            !keys.is_empty(),
            "jwt authentication needs a key: an hs256 secret file, a public key file or a jwks file"
        );
        Ok(Self {
            keys,
            scopes_claim: config.scopes_claim.clone(),
            roles_claim: config.roles_claim.clone(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthFailure::invalid("not a well-formed jwt"))?;
        // Only the IAM signing key speaks for opsd's own tokens, whatever
        // else a configured key has signed.
        if header
            .typ
            .as_deref()
            .is_some_and(|typ| typ.eq_ignore_ascii_case(super::iam::TYP))
        {
            return Err(AuthFailure::invalid(
                "an iam token is not a jwt of a configured issuer",
            ));
        }
        let named: Vec<&Key> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|key| key.kid.as_ref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let candidates = if named.is_empty() {
            self.keys.iter().collect()
        } else {
            named
        };
        let mut tried = false;
        for key in candidates {
            if key.algorithm() != header.alg {
                continue;
            }
            tried = true;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => return Err(failure(&e)),
            }
        }
        if tried {
            Err(AuthFailure::invalid("bad signature"))
        } else {
            Err(AuthFailure::invalid(format_args!(
                "no key for algorithm {:?}",
                header.alg
            )))
        }
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthFailure> {
        let id = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(AuthFailure::invalid("claim sub must be a non-empty string")),
        };
        let scope_names = names(claims, &self.scopes_claim)?;
        let scopes = if scope_names.contains(&"*") {
            Scopes::All
        } else {
            let scopes = scope_names
                .into_iter()
                .map(|name| validate_scope("scope", name).map(|()| name.to_owned()))
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(|_| {
                    AuthFailure::invalid(format_args!(
                        "claim {} holds an invalid scope",
                        self.scopes_claim
                    ))
                })?;
            Scopes::Only(scopes)
        };
        // Identity providers grant roles of other services too.
        let roles = names(claims, &self.roles_claim)?
            .into_iter()
            .filter_map(Role::parse)
            .collect();
        Ok(Principal { id, scopes, roles })
    }
}

/// A list of strings, or one string of space-separated names.
fn names<'a>(claims: &'a Map<String, Value>, claim: &str) -> Result<Vec<&'a str>, AuthFailure> {
    let wrong = || {
        AuthFailure::invalid(format_args!(
            "claim {claim} must be a string or a list of strings"
        ))
    };
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(names)) => Ok(names.split_whitespace().collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(wrong))
            .collect(),
        Some(_) => Err(wrong()),
    }
}

/// Why a signed token is refused, without anything it holds.
fn failure(error: &Error) -> AuthFailure {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthFailure::new(FailureReason::Expired, "token expired"),
        ErrorKind::ImmatureSignature => AuthFailure::invalid("not valid yet (nbf)"),
        ErrorKind::InvalidAudience => AuthFailure::invalid("wrong audience"),
        ErrorKind::InvalidIssuer => AuthFailure::invalid("wrong issuer"),
        ErrorKind::InvalidSignature => AuthFailure::invalid("bad signature"),
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthFailure::invalid(format_args!("missing claim {claim}"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthFailure::invalid(format_args!("claim {claim} has the wrong type"))
        }
        _ => AuthFailure::invalid("not a well-formed jwt"),
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

pub(super) fn public_key(pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err("holds a private key: give opsd the public key only".to_owned());
    }
    let (algorithm, key) = if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        (Algorithm::ES256, key)
    } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (Algorithm::RS256, key)
    } else {
        return Err("expected an rsa or ec p-256 public key in pem".to_owned());
    };
    probe(&key, algorithm)?;
    Ok((algorithm, key))
}

fn jwk_key(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), String> {
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return Err("unsupported key: expected an rsa or ec p-256 key".to_owned()),
    };
    if let Some(named) = jwk.common.key_algorithm
        && named.to_string() != format!("{algorithm:?}")
    {
        return Err(format!(
            "unsupported algorithm {named}: expected rs256 or es256"
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| format!("not a usable {algorithm:?} key"))?;
    probe(&key, algorithm)?;
    Ok((algorithm, key))
}

/// Keys are parsed only when used: one trial verification finds a bad key
/// now rather than at the first request.
fn probe(key: &DecodingKey, algorithm: Algorithm) -> Result<(), String> {
    jsonwebtoken::crypto::verify("AA", b"probe", key, algorithm)
        .map(drop)
        .map_err(|_| format!("not a usable {algorithm:?} key"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use jsonwebtoken::jwk::{Jwk, KeyAlgorithm};
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::auth::tests::headers;
    use crate::auth::{AuthConfig, Authenticator};

    const SECRET: &[u8] = b"a test secret of at least 32 bytes";
    // A key pair for tests only: RSA keys cannot be generated quickly in a test.
    const RSA_PRIVATE: &str = include_str!("testdata/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("testdata/rsa-public.pem");

    /// The signing side of every configured key.
    pub(crate) struct Keys {
        _dir: tempfile::TempDir,
        pub(crate) hs: EncodingKey,
        pub(crate) ec: EncodingKey,
        pub(crate) rsa: EncodingKey,
        /// In the JWKS as kid `a` and kid `b`.
        jwks_a: EncodingKey,
        jwks_b: EncodingKey,
    }

    fn ec_pair() -> (EncodingKey, String) {
        let pair = rcgen::KeyPair::generate().unwrap();
        let private = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        (private, pair.public_key_pem())
    }

    fn jwk(key: &EncodingKey, algorithm: Algorithm, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(key, algorithm).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    /// A configuration with a key of every kind, and the keys to sign with.
    pub(crate) fn every_key() -> (JwtConfig, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let (ec, ec_public) = ec_pair();
        let (jwks_a, _) = ec_pair();
        let (jwks_b, _) = ec_pair();
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let mut encryption = jwk(&rsa, Algorithm::RS256, "enc");
        encryption.common.public_key_use = Some(PublicKeyUse::Encryption);
        encryption.common.key_algorithm = Some(KeyAlgorithm::RSA_OAEP);
        let jwks = JwkSet {
            keys: vec![
                jwk(&jwks_a, Algorithm::ES256, "a"),
                jwk(&jwks_b, Algorithm::ES256, "b"),
                encryption,
            ],
        };
        let config = JwtConfig {
            hs256_secret_file: Some(write("secret", &[SECRET, b"\n"].concat())),
            public_key_files: vec![
                write("ec.pem", ec_public.as_bytes()),
                write("rsa.pem", RSA_PUBLIC.as_bytes()),
            ],
            jwks_file: Some(write("jwks.json", &serde_json::to_vec(&jwks).unwrap())),
            ..JwtConfig::default()
        };
        let keys = Keys {
            _dir: dir,
            hs: EncodingKey::from_secret(SECRET),
            ec,
            rsa,
            jwks_a,
            jwks_b,
        };
        (config, keys)
    }

    pub(crate) fn every_key_authenticator() -> Authenticator {
        let (config, _keys) = every_key();
        Authenticator::from_config(&AuthConfig {
            tokens_file: None,
            jwt: Some(config),
            iam: None,
        })
        .unwrap()
    }

    fn sign(key: &EncodingKey, algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).unwrap()
    }

    fn now() -> i64 {
        i64::try_from(get_current_timestamp()).unwrap()
    }

    /// Valid claims, changed by `changes`: a null removes a claim.
    fn claims(changes: Value) -> Value {
        let mut claims = json!({
            "sub": "svc",
            "exp": now() + 600,
            "scopes": ["folder-a"],
            "roles": ["viewer"],
        });
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    fn hs256(changes: Value) -> String {
        sign(
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
            None,
            &claims(changes),
        )
    }

    fn verifier(config: &JwtConfig) -> JwtVerifier {
        JwtVerifier::load(config).unwrap()
    }

    fn hs256_only() -> (JwtConfig, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, SECRET).unwrap();
        let config = JwtConfig {
            hs256_secret_file: Some(path),
            ..JwtConfig::default()
        };
        (config, dir)
    }

    fn invalid(verifier: &JwtVerifier, token: &str) -> String {
        let failure = verifier.verify(token).unwrap_err();
        assert!(!failure.message().contains(token));
        assert!(!failure.message().contains("svc"), "{}", failure.message());
        failure.message().to_owned()
    }

    #[test]
    fn every_kind_of_key_verifies() {
        let (config, keys) = every_key();
        let verifier = verifier(&config);
        assert_eq!(verifier.len(), 5, "the encryption key is left out");
        let claims = claims(json!({}));
        for (name, token) in [
            ("hs256", sign(&keys.hs, Algorithm::HS256, None, &claims)),
            ("es256 pem", sign(&keys.ec, Algorithm::ES256, None, &claims)),
            (
                "rs256 pem",
                sign(&keys.rsa, Algorithm::RS256, None, &claims),
            ),
            (
                "jwks a",
                sign(&keys.jwks_a, Algorithm::ES256, Some("a"), &claims),
            ),
            (
                "jwks b",
                sign(&keys.jwks_b, Algorithm::ES256, Some("b"), &claims),
            ),
        ] {
            let principal = verifier
                .verify(&token)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(principal.id, "svc");
            assert_eq!(
                principal.scopes,
                Scopes::Only(["folder-a".to_owned()].into())
            );
            assert_eq!(principal.roles, [Role::Viewer].into());
        }
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid() {
        let (config, keys) = every_key();
        let verifier = verifier(&config);
        let claims = claims(json!({}));
        let b_as_b = sign(&keys.jwks_b, Algorithm::ES256, Some("b"), &claims);
        assert!(verifier.verify(&b_as_b).is_ok());
        // Only the named key is tried.
        let a_as_b = sign(&keys.jwks_a, Algorithm::ES256, Some("b"), &claims);
        assert_eq!(invalid(&verifier, &a_as_b), "invalid token: bad signature");
        // Without a kid, or with one no key has, every key is tried.
        for kid in [None, Some("rotated-away")] {
            let token = sign(&keys.jwks_a, Algorithm::ES256, kid, &claims);
            assert!(verifier.verify(&token).is_ok(), "{kid:?}");
        }
    }

    #[test]
    fn expiry_and_not_before_allow_the_leeway() {
        let (config, _dir) = hs256_only();
        let verifier = verifier(&config);
        assert!(verifier.verify(&hs256(json!({"exp": now() - 10}))).is_ok());
        assert!(verifier.verify(&hs256(json!({"nbf": now() + 10}))).is_ok());

        let expired = verifier
            .verify(&hs256(json!({"exp": now() - 3600})))
            .unwrap_err();
        assert_eq!(expired.reason(), FailureReason::Expired);
        assert_eq!(expired.message(), "token expired");

        let early = hs256(json!({"nbf": now() + 3600}));
        assert_eq!(
            invalid(&verifier, &early),
            "invalid token: not valid yet (nbf)"
        );
        let no_exp = hs256(json!({"exp": null}));
        assert_eq!(
            invalid(&verifier, &no_exp),
            "invalid token: missing claim exp"
        );
        let text_exp = hs256(json!({"exp": "tomorrow"}));
        assert!(invalid(&verifier, &text_exp).starts_with("invalid token: "));

        let strict = JwtVerifier::load(&JwtConfig {
            leeway: Duration::ZERO,
            ..config.clone()
        })
        .unwrap();
        let just_expired = hs256(json!({"exp": now() - 10}));
        assert_eq!(
            strict.verify(&just_expired).unwrap_err().reason(),
            FailureReason::Expired
        );
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let (config, _dir) = hs256_only();
        let anyone = verifier(&config);
        assert!(
            anyone
                .verify(&hs256(json!({"aud": "other", "iss": "x"})))
                .is_ok()
        );

        let strict = verifier(&JwtConfig {
            audience: Some("opsd".into()),
            issuer: Some("https://idp.example".into()),
            ..config
        });
        let ok = json!({"aud": "opsd", "iss": "https://idp.example"});
        assert!(strict.verify(&hs256(ok.clone())).is_ok());
        let listed = json!({"aud": ["other", "opsd"], "iss": "https://idp.example"});
        assert!(strict.verify(&hs256(listed)).is_ok());
        for (changes, expected) in [
            (json!({"aud": "other"}), "invalid token: wrong audience"),
            (json!({"aud": null}), "invalid token: missing claim aud"),
            (
                json!({"iss": "https://evil.example"}),
                "invalid token: wrong issuer",
            ),
            (json!({"iss": null}), "invalid token: missing claim iss"),
        ] {
            let mut claims = ok.clone();
            for (name, value) in changes.as_object().unwrap() {
                claims[name] = value.clone();
            }
            let failure = strict.verify(&hs256(claims)).unwrap_err();
            assert_eq!(failure.reason(), FailureReason::InvalidToken);
            assert_eq!(failure.message(), expected);
        }
    }

    #[test]
    fn bad_signatures_and_algorithms_are_refused() {
        let (config, keys) = every_key();
        let verifier = verifier(&config);
        let claims = claims(json!({}));

        let other_secret = EncodingKey::from_secret(b"another secret of at least 32 bytes");
        let forged = sign(&other_secret, Algorithm::HS256, None, &claims);
        assert_eq!(invalid(&verifier, &forged), "invalid token: bad signature");

        // A signature of other claims does not carry over.
        let genuine = sign(&keys.hs, Algorithm::HS256, None, &claims);
        let admin = sign(
            &keys.hs,
            Algorithm::HS256,
            None,
            &json!({"roles": ["admin"]}),
        );
        let [head, _, signature]: [&str; 3] =
            genuine.split('.').collect::<Vec<_>>().try_into().unwrap();
        let body = admin.split('.').nth(1).unwrap();
        let spliced = format!("{head}.{body}.{signature}");
        assert_eq!(invalid(&verifier, &spliced), "invalid token: bad signature");

        let hs384 = sign(&keys.hs, Algorithm::HS384, None, &claims);
        assert_eq!(
            invalid(&verifier, &hs384),
            "invalid token: no key for algorithm HS384"
        );

        // The RSA public key is public: as an HMAC secret it must not work.
        let rsa_only = JwtVerifier::load(&JwtConfig {
            hs256_secret_file: None,
            jwks_file: None,
            public_key_files: config.public_key_files[1..].to_vec(),
            ..config.clone()
        })
        .unwrap();
        let confused = sign(
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
            Algorithm::HS256,
            None,
            &claims,
        );
        assert_eq!(
            invalid(&rsa_only, &confused),
            "invalid token: no key for algorithm HS256"
        );

        for garbage in ["a.b.c", "..", "e30.e30.", "eyJhbGciOiJub25lIn0.e30."] {
            assert_eq!(
                invalid(&verifier, garbage),
                "invalid token: not a well-formed jwt"
            );
        }
    }

    #[test]
    fn scopes_and_roles_come_in_either_form() {
        let (config, _dir) = hs256_only();
        let verifier = verifier(&config);
        let principal = |changes| verifier.verify(&hs256(changes)).unwrap();

        let spaced = principal(json!({"scopes": "a  b", "roles": "viewer producer"}));
        assert_eq!(spaced.scopes, Scopes::Only(["a".into(), "b".into()].into()));
        assert_eq!(spaced.roles, [Role::Viewer, Role::Producer].into());

        assert_eq!(principal(json!({"scopes": ["*"]})).scopes, Scopes::All);
        assert_eq!(principal(json!({"scopes": "a *"})).scopes, Scopes::All);
        assert_eq!(
            principal(json!({"scopes": null})).scopes,
            Scopes::Only(BTreeSet::new())
        );

        let other_roles = principal(json!({"roles": ["owner", "admin", "billing:read"]}));
        assert_eq!(other_roles.roles, [Role::Admin].into());
        assert!(principal(json!({"roles": null})).roles.is_empty());

        for (changes, expected) in [
            (
                json!({"scopes": 7}),
                "invalid token: claim scopes must be a string or a list of strings",
            ),
            (
                json!({"roles": [1]}),
                "invalid token: claim roles must be a string or a list of strings",
            ),
            (
                json!({"scopes": ["bad/scope"]}),
                "invalid token: claim scopes holds an invalid scope",
            ),
            (json!({"sub": null}), "invalid token: missing claim sub"),
            (
                json!({"sub": ""}),
                "invalid token: claim sub must be a non-empty string",
            ),
        ] {
            assert_eq!(invalid(&verifier, &hs256(changes)), expected);
        }

        let renamed = JwtVerifier::load(&JwtConfig {
            scopes_claim: "scope".into(),
            roles_claim: "groups".into(),
            ..config
        })
        .unwrap();
        let token = hs256(json!({"scope": "folder-x", "groups": ["operator"]}));
        let principal = renamed.verify(&token).unwrap();
        assert_eq!(principal.scopes, Scopes::Only(["folder-x".into()].into()));
        assert_eq!(principal.roles, [Role::Operator].into());
    }

    #[test]
    fn the_authenticator_takes_jwts_from_the_header() {
        let (config, keys) = every_key();
        let auth = Authenticator::from_config(&AuthConfig {
            tokens_file: None,
            jwt: Some(config),
            iam: None,
        })
        .unwrap();
        let token = sign(&keys.ec, Algorithm::ES256, None, &claims(json!({})));
        for scheme in ["Bearer", "Api-Key"] {
            let principal = auth
                .authenticate(&headers(&format!("{scheme} {token}")))
                .unwrap();
            assert_eq!(principal.id, "svc");
        }
        let opaque = auth.authenticate(&headers("Bearer opsd_abc")).unwrap_err();
        assert_eq!(opaque.reason(), FailureReason::UnknownToken);
        let expired = sign(
            &keys.ec,
            Algorithm::ES256,
            None,
            &claims(json!({"exp": now() - 3600})),
        );
        let failure = auth
            .authenticate(&headers(&format!("Bearer {expired}")))
            .unwrap_err();
        assert_eq!(failure.reason(), FailureReason::Expired);
        let status = tonic::Status::from(failure);
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "token expired");
    }

    #[test]
    fn bad_configurations_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let ec_private = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let jwks = |name: &str, key: Value| write(name, &json!({"keys": [key]}).to_string());
        let (_, ec_public) = ec_pair();
        let mut rsa_ps256 = jwk(
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            Algorithm::RS256,
            "r",
        );
        rsa_ps256.common.key_algorithm = Some(KeyAlgorithm::PS256);
        let cases = [
            (
                JwtConfig::default(),
                "jwt authentication needs a key".to_owned(),
            ),
            (
                JwtConfig {
                    hs256_secret_file: Some(write("short", "too short\n")),
                    ..JwtConfig::default()
                },
                "the secret must be at least 32 bytes".to_owned(),
            ),
            (
                JwtConfig {
                    hs256_secret_file: Some(dir.path().join("absent")),
                    ..JwtConfig::default()
                },
                "cannot read hs256 secret file".to_owned(),
            ),
            (
                JwtConfig {
                    public_key_files: vec![write("private.pem", &ec_private)],
                    ..JwtConfig::default()
                },
                "private.pem: holds a private key".to_owned(),
            ),
            (
                JwtConfig {
                    public_key_files: vec![write("garbage.pem", "not a key")],
                    ..JwtConfig::default()
                },
                "garbage.pem: expected an rsa or ec p-256 public key in pem".to_owned(),
            ),
            (
                JwtConfig {
                    jwks_file: Some(write("bad.json", "{\"keys\": 1}")),
                    ..JwtConfig::default()
                },
                "bad.json: not a json web key set".to_owned(),
            ),
            (
                JwtConfig {
                    jwks_file: Some(jwks(
                        "jwks0.json",
                        json!({"kid": "p384", "kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
                    )),
                    ..JwtConfig::default()
                },
                "key 1 (kid p384): unsupported key".to_owned(),
            ),
            (
                JwtConfig {
                    jwks_file: Some(jwks("jwks1.json", json!({"kty": "oct", "k": "c2VjcmV0"}))),
                    ..JwtConfig::default()
                },
                "key 1: unsupported key".to_owned(),
            ),
            (
                JwtConfig {
                    jwks_file: Some(jwks(
                        "jwks2.json",
                        serde_json::to_value(&rsa_ps256).unwrap(),
                    )),
                    ..JwtConfig::default()
                },
                "key 1 (kid r): unsupported algorithm PS256".to_owned(),
            ),
            (
                JwtConfig {
                    jwks_file: Some(jwks(
                        "jwks3.json",
                        json!({"kid": "c", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
                    )),
                    ..JwtConfig::default()
                },
                "key 1 (kid c): not a usable ES256 key".to_owned(),
            ),
        ];
        for (config, expected) in cases {
            let error = match JwtVerifier::load(&config) {
                Ok(_) => panic!("{config:?}: accepted"),
                Err(error) => format!("{error:#}"),
            };
            assert!(error.contains(&expected), "{expected}\n{error}");
        }
        let usable = JwtConfig {
            public_key_files: vec![write("ec.pem", &ec_public)],
            ..JwtConfig::default()
        };
        assert_eq!(JwtVerifier::load(&usable).unwrap().len(), 1);
    }

    fn claim_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::from),
            Just(Value::from("*")),
            Just(Value::from("viewer admin")),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn signed_claims_of_any_shape_never_panic(
            claims in proptest::collection::btree_map(
                prop_oneof![
                    Just("sub"), Just("exp"), Just("nbf"), Just("aud"),
                    Just("iss"), Just("scopes"), Just("roles"), Just("other"),
                ],
                claim_value(),
                0..8,
            ),
        ) {
            static VERIFIER: std::sync::LazyLock<(JwtVerifier, tempfile::TempDir)> =
                std::sync::LazyLock::new(|| {
                    let (config, dir) = hs256_only();
                    (JwtVerifier::load(&JwtConfig { audience: Some("opsd".into()), ..config }).unwrap(), dir)
                });
            let claims: Map<String, Value> =
                claims.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let token = sign(&EncodingKey::from_secret(SECRET), Algorithm::HS256, None, &Value::Object(claims));
            let _ = VERIFIER.0.verify(&token);
        }
    }
}
