//! IAM tokens that opsd issues (`IamTokenService/Create`) and accepts.
//!
//! An issued token is a JWT of opsd's own type, signed with the
//! `--iam-signing-key` (Ed25519 or ECDSA P-256), so that every replica holding
//! the same key accepts what any of them issued, with no shared state:
//!
//! - header: `{"alg": "EdDSA" | "ES256", "typ": "opsd-iam+jwt", "kid": K}`, where
//!   `K` is the RFC 7638 thumbprint (SHA-256) of the signing key's public half;
//! - claims: `{"sub": principal, "scopes": [...], "roles": [...], "exp": seconds}`,
//!   nothing more.
//!
//! The type keeps these tokens apart from the JWTs of configured issuers: a
//! token of this type is checked against the signing key only, and the
//! configured JWT keys never see it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use opsd_core::principal::validate_scope;
use opsd_core::{Principal, Role, Scopes, Timestamp};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{AuthFailure, FailureReason};

/// The JOSE `typ` of an issued token.
pub const TYP: &str = "opsd-iam+jwt";

enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

enum VerifyingKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// Issues and verifies IAM tokens with one signing key.
pub(super) struct IamIssuer {
    signing: SigningKey,
    verifying: VerifyingKey,
    kid: String,
    /// The encoded header every token starts with.
    header: String,
    lifetime: Duration,
}

/// A token, whom it names, and the moment it stops being accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    /// The principal's id (no secret: for logs).
    pub principal: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for IssuedToken {
    // The token is a credential: never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Whether `token` claims to be an issued IAM token: a JWT whose header has
/// opsd's `typ`. Such a token is checked by the issuer only.
pub(super) fn is_iam_token(token: &str) -> bool {
    let Some(header) = token.split('.').next() else {
        return false;
    };
    decode_json(header).is_some_and(|header| has_iam_typ(&header))
}

/// `typ` compares without regard to case (RFC 7515, 4.1.9).
pub(super) fn has_iam_typ(header: &Map<String, Value>) -> bool {
    header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|typ| typ.eq_ignore_ascii_case(TYP))
}

fn decode_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl IamIssuer {
    /// The key in the PEM file at `path`; errors name the file, never its contents.
    pub(super) fn load(path: &Path, lifetime: Duration) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read iam signing key {}", path.display()))?;
        let signing = parse_signing_key(&pem)
            .map_err(|why| anyhow::anyhow!("iam signing key {}: {why}", path.display()))?;
        Ok(Self::new(signing, lifetime))
    }

    fn new(signing: SigningKey, lifetime: Duration) -> Self {
        let verifying = match &signing {
            SigningKey::Ed25519(key) => VerifyingKey::Ed25519(key.verifying_key()),
            SigningKey::P256(key) => VerifyingKey::P256(*key.verifying_key()),
        };
        let kid = thumbprint(&verifying);
        let header = json!({"alg": verifying.algorithm(), "typ": TYP, "kid": kid});
        Self {
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            signing,
            verifying,
            kid,
            lifetime,
        }
    }

    /// The `kid` of every token this issuer signs.
    pub(super) fn kid(&self) -> &str {
        &self.kid
    }

    pub(super) fn algorithm(&self) -> &'static str {
        self.verifying.algorithm()
    }

    /// A token for `principal`, valid from `now` for the configured lifetime
    /// (whole seconds, as JWTs count time).
    pub(super) fn issue(&self, principal: &Principal, now: Timestamp) -> IssuedToken {
        let (seconds, _) = now.seconds_and_nanos();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let exp = seconds.saturating_add(lifetime);
        let scopes: Vec<&str> = match &principal.scopes {
            Scopes::All => vec!["*"],
            Scopes::Only(scopes) => scopes.iter().map(String::as_str).collect(),
        };
        let roles: Vec<&str> = principal.roles.iter().map(|role| role.name()).collect();
        let claims = json!({
            "sub": principal.id,
            "scopes": scopes,
            "roles": roles,
            "exp": exp,
        });
        let signed = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(signed.as_bytes());
        IssuedToken {
            token: format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)),
            principal: principal.id.clone(),
            expires_at: Timestamp::from_seconds_and_nanos(exp, 0).unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        match &self.signing {
            SigningKey::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
            SigningKey::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match &self.verifying {
            VerifyingKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok()),
            VerifyingKey::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
        }
    }

    /// The principal an issued token names, if this issuer's key signed it
    /// and it has not expired at `now`.
    pub(super) fn verify(&self, token: &str, now: Timestamp) -> Result<Principal, AuthFailure> {
        let malformed = || AuthFailure::invalid("not a well-formed iam token");
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let decoded = decode_json(header).ok_or_else(malformed)?;
        if !has_iam_typ(&decoded) {
            return Err(malformed());
        }
        if decoded.get("kid").and_then(Value::as_str) != Some(self.kid.as_str()) {
            return Err(AuthFailure::new(
                FailureReason::UnknownKey,
                "unknown key: the iam token was signed with another iam signing key",
            ));
        }
        if decoded.get("alg").and_then(Value::as_str) != Some(self.algorithm()) {
            return Err(AuthFailure::invalid(
                "the iam token's alg does not fit its key",
            ));
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
        let signed = &token[..header.len() + 1 + claims.len()];
        if !self.verifies(signed.as_bytes(), &signature) {
            return Err(AuthFailure::new(
                FailureReason::BadSignature,
                "bad signature",
            ));
        }
        let claims = decode_json(claims).ok_or_else(malformed)?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| Timestamp::from_seconds_and_nanos(exp, 0))
            .ok_or_else(malformed)?;
        if now >= exp {
            return Err(AuthFailure::new(FailureReason::Expired, "token expired"));
        }
        principal(&claims).ok_or_else(malformed)
    }
}

/// The principal of verified claims; `None` if they are not as [`IamIssuer::issue`] writes them.
fn principal(claims: &Map<String, Value>) -> Option<Principal> {
    let id = claims.get("sub")?.as_str().filter(|id| !id.is_empty())?;
    let strings = |name: &str| -> Option<Vec<&str>> {
        claims
            .get(name)?
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect()
    };
    let scope_names = strings("scopes")?;
    let scopes = if scope_names == ["*"] {
        Scopes::All
    } else {
        let scopes = scope_names
            .into_iter()
            .map(|name| validate_scope("scope", name).ok().map(|()| name.to_owned()))
            .collect::<Option<BTreeSet<_>>>()?;
        Scopes::Only(scopes)
    };
    let roles = strings("roles")?
        .into_iter()
        .map(Role::parse)
        .collect::<Option<BTreeSet<_>>>()?;
    Some(Principal {
        id: id.to_owned(),
        scopes,
        roles,
    })
}

impl VerifyingKey {
    fn algorithm(&self) -> &'static str {
        match self {
            VerifyingKey::Ed25519(_) => "EdDSA",
            VerifyingKey::P256(_) => "ES256",
        }
    }
}

/// Ed25519 (PKCS#8) or P-256 (PKCS#8 or SEC1), in PEM.
fn parse_signing_key(pem: &str) -> Result<SigningKey, String> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
        return Ok(SigningKey::Ed25519(key));
    }
    if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(SigningKey::P256(key));
    }
    if let Ok(key) = p256::SecretKey::from_sec1_pem(pem) {
        return Ok(SigningKey::P256(key.into()));
    }
    if pem.contains("PUBLIC KEY") && !pem.contains("PRIVATE KEY") {
        return Err(
            "holds a public key: opsd signs iam tokens, so it needs the private key".to_owned(),
        );
    }
    Err(
        "expected an unencrypted ed25519 or ec p-256 private key in pem (pkcs#8, or sec1 for p-256)"
            .to_owned(),
    )
}

/// The RFC 7638 JWK thumbprint of the public key, base64url.
fn thumbprint(key: &VerifyingKey) -> String {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    // Members in lexicographic order, no spaces, as RFC 7638 requires.
    let canonical = match key {
        VerifyingKey::Ed25519(key) => {
            format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64(key.as_bytes())
            )
        }
        VerifyingKey::P256(key) => {
            let point = key.to_encoded_point(false);
            let coordinate = |c: Option<&p256::FieldBytes>| c.map_or(String::new(), |c| b64(c));
            format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                coordinate(point.x()),
                coordinate(point.y())
            )
        }
    };
    b64(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ed25519_pem() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem()
    }

    pub(crate) fn p256_pem() -> String {
        rcgen::KeyPair::generate().unwrap().serialize_pem()
    }

    fn issuer(pem: &str) -> IamIssuer {
        IamIssuer::new(parse_signing_key(pem).unwrap(), Duration::from_secs(3600))
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_seconds_and_nanos(seconds, 0).unwrap()
    }

    fn compute() -> Principal {
        Principal {
            id: "compute".into(),
            scopes: Scopes::Only(["folder-a".to_owned(), "folder-b".to_owned()].into()),
            roles: [Role::Producer, Role::Viewer].into(),
        }
    }

    fn parts(token: &str) -> Vec<Map<String, Value>> {
        token
            .split('.')
            .take(2)
            .map(|part| decode_json(part).unwrap())
            .collect()
    }

    #[test]
    fn tokens_carry_the_principal_and_expiry_only() {
        for (pem, alg) in [(ed25519_pem(), "EdDSA"), (p256_pem(), "ES256")] {
            let issuer = issuer(&pem);
            let issued = issuer.issue(&compute(), at(1_000_000));
            assert_eq!(issued.expires_at, at(1_003_600));
            assert_eq!(issued.principal, "compute");
            assert!(!format!("{issued:?}").contains(&issued.token));
            let [header, claims]: [Map<String, Value>; 2] =
                parts(&issued.token).try_into().unwrap();
            assert_eq!(
                Value::Object(header),
                json!({"alg": alg, "typ": "opsd-iam+jwt", "kid": issuer.kid()})
            );
            assert_eq!(
                Value::Object(claims),
                json!({
                    "sub": "compute",
                    "scopes": ["folder-a", "folder-b"],
                    "roles": ["viewer", "producer"],
                    "exp": 1_003_600,
                })
            );
            assert!(is_iam_token(&issued.token));
            assert_eq!(issuer.verify(&issued.token, at(1_000_000)), Ok(compute()));
        }
    }

    #[test]
    fn every_scope_and_role_survives_the_round_trip() {
        let issuer = issuer(&ed25519_pem());
        let admin = Principal::anonymous();
        let issued = issuer.issue(&admin, at(10));
        assert_eq!(parts(&issued.token)[1]["scopes"], json!(["*"]));
        assert_eq!(issuer.verify(&issued.token, at(10)), Ok(admin));
    }

    #[test]
    fn tokens_expire_at_their_exp_by_the_given_clock() {
        let issuer = issuer(&p256_pem());
        let issued = issuer.issue(&compute(), at(1_000));
        let just_before = Timestamp::from_unix_nanos(issued.expires_at.unix_nanos() - 1);
        assert!(issuer.verify(&issued.token, just_before).is_ok());
        for late in [issued.expires_at, at(1_000 + 7200)] {
            let failure = issuer.verify(&issued.token, late).unwrap_err();
            assert_eq!(failure.reason(), FailureReason::Expired);
            assert_eq!(failure.message(), "token expired");
        }
    }

    #[test]
    fn replicas_with_the_same_key_accept_each_others_tokens() {
        let pem = ed25519_pem();
        let (a, b) = (issuer(&pem), issuer(&pem));
        assert_eq!(a.kid(), b.kid());
        let issued = a.issue(&compute(), at(5));
        assert_eq!(b.verify(&issued.token, at(6)), Ok(compute()));

        let other = issuer(&ed25519_pem());
        assert_ne!(other.kid(), a.kid());
        let failure = other.verify(&issued.token, at(6)).unwrap_err();
        assert_eq!(failure.reason(), FailureReason::UnknownKey);
    }

    #[test]
    fn changed_or_forged_tokens_are_refused() {
        let issuer = issuer(&ed25519_pem());
        let token = issuer.issue(&compute(), at(5)).token;
        let [header, claims, signature]: [&str; 3] =
            token.split('.').collect::<Vec<_>>().try_into().unwrap();

        // More roles, signed by nobody.
        let admin = URL_SAFE_NO_PAD.encode(
            json!({"sub": "compute", "scopes": ["*"], "roles": ["admin"], "exp": 99_999_999})
                .to_string(),
        );
        let spliced = format!("{header}.{admin}.{signature}");
        let failure = issuer.verify(&spliced, at(6)).unwrap_err();
        assert_eq!(failure.reason(), FailureReason::BadSignature);
        assert_eq!(failure.message(), "bad signature");

        // Another key of the same kind, naming this key's kid.
        let forger = self::issuer(&ed25519_pem());
        let forged_sig =
            URL_SAFE_NO_PAD.encode(forger.sign(format!("{header}.{claims}").as_bytes()));
        let forged = format!("{header}.{claims}.{forged_sig}");
        assert_eq!(
            issuer.verify(&forged, at(6)).unwrap_err().reason(),
            FailureReason::BadSignature
        );

        // Another typ or alg under the same signature.
        let retyped = |header: Value| {
            format!(
                "{}.{claims}.{signature}",
                URL_SAFE_NO_PAD.encode(header.to_string())
            )
        };
        let as_jwt = retyped(json!({"alg": "EdDSA", "typ": "JWT", "kid": issuer.kid()}));
        assert!(!is_iam_token(&as_jwt));
        assert_eq!(
            issuer.verify(&as_jwt, at(6)).unwrap_err().message(),
            "invalid token: not a well-formed iam token"
        );
        let as_hs256 = retyped(json!({"alg": "HS256", "typ": TYP, "kid": issuer.kid()}));
        assert_eq!(
            issuer.verify(&as_hs256, at(6)).unwrap_err().reason(),
            FailureReason::InvalidToken
        );
        let upper = retyped(json!({"alg": "EdDSA", "typ": "OPSD-IAM+JWT", "kid": issuer.kid()}));
        assert!(is_iam_token(&upper), "typ is compared without case");
        assert_eq!(
            issuer.verify(&upper, at(6)).unwrap_err().reason(),
            FailureReason::BadSignature
        );

        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            &format!("{header}.{claims}"),
            &format!("{header}.{claims}.!!"),
            &format!("{header}.e30.{signature}"),
        ] {
            assert!(issuer.verify(garbage, at(6)).is_err(), "{garbage}");
        }
    }

    #[test]
    fn claims_not_written_by_the_issuer_are_refused_even_when_signed() {
        let issuer = issuer(&p256_pem());
        let sign = |claims: Value| {
            let signed = format!(
                "{}.{}",
                issuer.header,
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature = URL_SAFE_NO_PAD.encode(issuer.sign(signed.as_bytes()));
            format!("{signed}.{signature}")
        };
        let good = json!({"sub": "a", "scopes": ["s"], "roles": ["viewer"], "exp": 100});
        assert!(issuer.verify(&sign(good.clone()), at(1)).is_ok());
        for (name, value) in [
            ("sub", json!("")),
            ("sub", json!(7)),
            ("scopes", json!("s")),
            ("scopes", json!(["bad scope"])),
            ("scopes", json!(["*", "s"])),
            ("roles", json!(["owner"])),
            ("exp", json!("soon")),
            ("exp", Value::Null),
        ] {
            let mut claims = good.clone();
            claims[name] = value.clone();
            let failure = issuer.verify(&sign(claims), at(1)).unwrap_err();
            assert_eq!(
                failure.reason(),
                FailureReason::InvalidToken,
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint_of_the_public_key() {
        // RFC 8037, appendix A.3: the thumbprint of its Ed25519 example key.
        let secret = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&secret.try_into().unwrap());
        let issuer = IamIssuer::new(SigningKey::Ed25519(key), Duration::from_secs(60));
        assert_eq!(issuer.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn signing_keys_are_ed25519_or_p256_private_keys() {
        assert!(matches!(
            parse_signing_key(&ed25519_pem()),
            Ok(SigningKey::Ed25519(_))
        ));
        assert!(matches!(
            parse_signing_key(&p256_pem()),
            Ok(SigningKey::P256(_))
        ));
        let sec1 = {
            use p256::pkcs8::DecodePrivateKey as _;
            let key = p256::SecretKey::from_pkcs8_pem(&p256_pem()).unwrap();
            key.to_sec1_pem(Default::default()).unwrap().to_string()
        };
        assert!(matches!(parse_signing_key(&sec1), Ok(SigningKey::P256(_))));

        let public = rcgen::KeyPair::generate().unwrap().public_key_pem();
        assert!(
            parse_signing_key(&public)
                .err()
                .unwrap()
                .starts_with("holds a public key")
        );
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .unwrap()
            .serialize_pem();
        let rsa = include_str!("testdata/rsa-private.pem");
        for bad in [p384.as_str(), rsa, "", "not a key"] {
            assert!(
                parse_signing_key(bad)
                    .err()
                    .unwrap()
                    .starts_with("expected an unencrypted ed25519 or ec p-256 private key"),
                "{bad}"
            );
        }
    }

    #[test]
    fn load_names_the_file_and_never_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iam.pem");
        let missing = IamIssuer::load(&path, Duration::from_secs(60))
            .err()
            .unwrap();
        assert!(format!("{missing:#}").contains("cannot read iam signing key"));
        let secret_looking =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFs\n-----END PRIVATE KEY-----\n";
        std::fs::write(&path, secret_looking).unwrap();
        let error = format!(
            "{:#}",
            IamIssuer::load(&path, Duration::from_secs(60))
                .err()
                .unwrap()
        );
        assert!(
            error.starts_with(&format!("iam signing key {}: ", path.display())),
            "{error}"
        );
        assert!(!error.contains("c2VjcmV0"), "{error}");
        std::fs::write(&path, ed25519_pem()).unwrap();
        assert_eq!(
            IamIssuer::load(&path, Duration::from_secs(60))
                .unwrap()
                .algorithm(),
            "EdDSA"
        );
    }
}
