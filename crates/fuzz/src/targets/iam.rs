//! The IAM token exchange and the IAM tokens it issues, through the
//! [`Authenticator`] the server runs. The first byte picks what the rest is:
//!
//! - 0: any string, given to the exchange as a service-account JWT and to the
//!   gate as a bearer token;
//! - 1: any string, given to the exchange as a tokens-file token;
//! - 2: a header (JSON members laid over `{"alg": "ES256", "kid": "fzzkey"}`),
//!   a NUL, and a claims text, signed with the service-account key: the
//!   exchange's checks of every claim, reached with a good signature;
//! - 3: the same laid over an IAM token's header, signed with the IAM signing
//!   key: the gate's checks of an issued token's claims.
//!
//! Whatever is accepted must satisfy, checked here independently, the rules
//! the README states; a refusal is one of the documented reasons, and never
//! quotes the signature it was given.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use opsd_core::{ManualClock, Principal, Role, Scopes};
use opsd_server::auth::{
    AuthConfig, Authenticator, Credential, FailureReason, IAM_TOKEN_TYP, IamConfig,
    MAX_JWT_LIFETIME, hash_token, iam_audiences,
};
use serde_json::{Map, Value, json};

use crate::harness::NOW;

const SA_KEY: &str = include_str!("../testdata/sa-key.pem");
const SA_PUBLIC: &str = include_str!("../testdata/sa-key-public.pem");
const IAM_KEY: &str = include_str!("../testdata/iam-signing-key.pem");
/// A token of the target's tokens file, and its principal.
pub const KNOWN_TOKEN: &str = "opsd_fuzz-known-token";
pub const KEY_ID: &str = "fzzkey";
pub const ACCOUNT: &str = "fzz-account";
const PUBLIC_ADDRESS: &str = "opsd.fuzz:443";
const LEEWAY: i64 = 60;

pub const DICTIONARY: &[&[u8]] = &[
    b"\"alg\"",
    b"\"ES256\"",
    b"\"PS256\"",
    b"\"EdDSA\"",
    b"\"HS256\"",
    b"\"none\"",
    b"\"kid\"",
    b"\"fzzkey\"",
    b"\"typ\"",
    b"\"JWT\"",
    b"\"opsd-iam+jwt\"",
    b"\"OPSD-IAM+JWT\"",
    b"\"iss\"",
    b"\"fzz-account\"",
    b"\"aud\"",
    b"\"https://iam.api.cloud.yandex.net/iam/v1/tokens\"",
    b"\"https://iam.opsd.fuzz:443/iam/v1/tokens\"",
    b"\"https://iam.opsd.fuzz/iam/v1/tokens\"",
    b"\"iat\"",
    b"\"exp\"",
    b"\"nbf\"",
    b"1700000000",
    b"1700003600",
    b"1700003601",
    b"1699999000",
    b"1700000060",
    b"1700000061",
    b"1.7e9",
    b"\"sub\"",
    b"\"scopes\"",
    b"\"roles\"",
    b"[\"*\"]",
    b"[\"folder-a\"]",
    b"[\"viewer\", \"admin\"]",
    b"null",
    b"[]",
    b"{}",
    b"opsd_fuzz-known-token",
    b".",
    b"\0",
];

struct Fixture {
    auth: Authenticator,
    audiences: Vec<String>,
    sa_key: EncodingKey,
    iam_key: EncodingKey,
    iam_kid: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temp dir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[principal]]\nid = \"fzz-user\"\ntoken_sha256 = \"{}\"\nscopes = [\"*\"]\nroles = [\"viewer\"]\n\n\
             [[service_account_key]]\nid = \"{KEY_ID}\"\nprincipal = \"{ACCOUNT}\"\n\
             public_key = \"\"\"{SA_PUBLIC}\"\"\"\nscopes = [\"folder-a\", \"folder-b\"]\nroles = [\"producer\", \"viewer\"]\n",
            hash_token(KNOWN_TOKEN)
        ),
    )
    .expect("the tokens file is written");
    let signing_key = dir.path().join("iam.pem");
    std::fs::write(&signing_key, IAM_KEY).expect("the signing key is written");
    let auth = Authenticator::from_config(&AuthConfig {
        tokens_file: Some(tokens),
        jwt: None,
        iam: Some(IamConfig::new(signing_key)),
    })
    .expect("the fixture's configuration loads")
    .with_clock(Arc::new(ManualClock::new(NOW)));
    let iam_key = EncodingKey::from_ec_pem(IAM_KEY.as_bytes()).expect("the iam key");
    // An independent computation of the RFC 7638 thumbprint must agree.
    let iam_kid = jsonwebtoken::jwk::Jwk::from_encoding_key(&iam_key, Algorithm::ES256)
        .and_then(|jwk| jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256))
        .expect("a thumbprint");
    assert_eq!(
        auth.iam_key_id(),
        Some(iam_kid.as_str()),
        "the kid is the thumbprint"
    );
    Fixture {
        auth,
        audiences: iam_audiences(PUBLIC_ADDRESS, &[]),
        sa_key: EncodingKey::from_ec_pem(SA_KEY.as_bytes()).expect("the sa key"),
        iam_key,
        iam_kid,
    }
});

fn now() -> i64 {
    NOW.seconds_and_nanos().0
}

pub fn run(data: &[u8]) -> String {
    let fixture = &*FIXTURE;
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    match mode % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let exchanged = exchange(fixture, Credential::Jwt(&text), None, &text);
            let admitted = admit(fixture, &text, None, &text);
            format!("raw:{exchanged}:{admitted}")
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            let answer = fixture
                .auth
                .exchange(Credential::OauthToken(&text), &fixture.audiences)
                .expect("the exchange is on");
            match answer {
                Ok(issued) => {
                    assert_eq!(
                        text, KNOWN_TOKEN,
                        "only the tokens file's token is exchanged"
                    );
                    let principal =
                        authenticate(fixture, &issued.token).expect("issued tokens pass");
                    assert_eq!(principal.id, "fzz-user");
                    "oauth:ok".to_owned()
                }
                Err(failure) => {
                    assert_eq!(failure.reason(), FailureReason::UnknownToken);
                    assert_eq!(failure.message(), "unknown token");
                    "oauth:unknown_token".to_owned()
                }
            }
        }
        signed => {
            let (header_text, claims_text) = split(rest);
            let iam = signed == 3;
            let mut header = if iam {
                json!({"alg": "ES256", "typ": IAM_TOKEN_TYP, "kid": fixture.iam_kid})
            } else {
                json!({"alg": "ES256", "typ": "JWT", "kid": KEY_ID})
            };
            if let Ok(Value::Object(changes)) = serde_json::from_str::<Value>(&header_text) {
                for (name, value) in changes {
                    header[name] = value;
                }
            }
            let header = header.as_object().cloned().unwrap_or_default();
            let key = if iam {
                &fixture.iam_key
            } else {
                &fixture.sa_key
            };
            let token = sign(&header, &claims_text, key);
            if iam {
                format!(
                    "iam:{}",
                    admit(fixture, &token, Some(&header), &claims_text)
                )
            } else {
                format!(
                    "sa:{}",
                    exchange(
                        fixture,
                        Credential::Jwt(&token),
                        Some(&header),
                        &claims_text
                    )
                )
            }
        }
    }
}

/// The header as JSON, the claims text as is (it need not be JSON), signed ES256.
fn sign(header: &Map<String, Value>, claims: &str, key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(header.clone()).to_string()),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::ES256).expect("signs");
    format!("{message}.{signature}")
}

fn split(rest: &[u8]) -> (String, String) {
    match rest.iter().position(|&b| b == 0) {
        Some(at) => (
            String::from_utf8_lossy(&rest[..at]).into_owned(),
            String::from_utf8_lossy(&rest[at + 1..]).into_owned(),
        ),
        None => (String::new(), String::from_utf8_lossy(rest).into_owned()),
    }
}

fn authenticate(
    fixture: &Fixture,
    token: &str,
) -> Result<Principal, opsd_server::auth::AuthFailure> {
    let mut headers = http::HeaderMap::new();
    match http::HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(value) => {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        Err(_) => return fixture.auth.authenticate(&http::HeaderMap::new()),
    }
    fixture.auth.authenticate(&headers)
}

/// A refusal says why in a documented reason and quotes nothing of `token`'s signature.
fn check_refusal(failure: &opsd_server::auth::AuthFailure, token: &str, allowed: &[FailureReason]) {
    assert!(
        allowed.contains(&failure.reason()),
        "reason {:?} for {token:?}: {}",
        failure.reason(),
        failure.message()
    );
    if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() >= 16) {
        assert!(
            !failure.message().contains(signature),
            "the signature is quoted"
        );
    }
    if token.len() >= 24 {
        assert!(!failure.message().contains(token), "the token is quoted");
    }
}

/// The exchange of a service-account JWT. `signed` is the header it was
/// signed with (by the service-account key), when it was.
fn exchange(
    fixture: &Fixture,
    credential: Credential<'_>,
    signed: Option<&Map<String, Value>>,
    claims_text: &str,
) -> String {
    let Credential::Jwt(token) = credential else {
        unreachable!("jwts only")
    };
    let answer = fixture
        .auth
        .exchange(credential, &fixture.audiences)
        .expect("the exchange is on");
    match answer {
        Ok(issued) => {
            let header =
                signed.expect("only a jwt signed with the service-account key is exchanged");
            assert_eq!(header.get("alg"), Some(&json!("ES256")));
            assert_eq!(header.get("kid"), Some(&json!(KEY_ID)));
            let claims: Map<String, Value> =
                serde_json::from_str(claims_text).expect("accepted claims are a json object");
            assert_eq!(
                claims.get("iss"),
                Some(&json!(ACCOUNT)),
                "iss is the key's account"
            );
            let aud_ok = |aud: &Value| {
                aud.as_str()
                    .is_some_and(|aud| fixture.audiences.iter().any(|a| a == aud))
            };
            assert!(
                match claims.get("aud") {
                    Some(Value::Array(items)) => items.iter().any(aud_ok),
                    Some(aud) => aud_ok(aud),
                    None => false,
                },
                "aud is accepted: {claims_text}"
            );
            // Whole seconds, fractions dropped, as JWT NumericDates are read.
            let seconds = |name: &str| {
                claims.get(name).filter(|v| !v.is_null()).map(|v| {
                    v.as_i64()
                        .or_else(|| v.as_f64().map(|f| f.floor() as i64))
                        .unwrap_or_else(|| panic!("{name} is a number: {claims_text}"))
                })
            };
            let iat = seconds("iat").expect("iat is required");
            let exp = seconds("exp").expect("exp is required");
            assert!(exp > iat, "exp after iat");
            assert!(exp.saturating_sub(iat) <= MAX_JWT_LIFETIME.as_secs() as i64);
            assert!(now() < exp.saturating_add(LEEWAY), "not expired");
            assert!(iat <= now() + LEEWAY, "not issued in the future");
            if let Some(nbf) = seconds("nbf") {
                assert!(nbf <= now() + LEEWAY, "valid already");
            }
            let principal = authenticate(fixture, &issued.token).expect("issued tokens pass");
            assert_eq!(principal.id, ACCOUNT);
            assert_eq!(
                principal.scopes,
                Scopes::Only(["folder-a".to_owned(), "folder-b".to_owned()].into())
            );
            assert_eq!(principal.roles, [Role::Producer, Role::Viewer].into());
            assert!(issued.expires_at > NOW);
            "ok".to_owned()
        }
        Err(failure) => {
            check_refusal(
                &failure,
                token,
                &[
                    FailureReason::InvalidToken,
                    FailureReason::BadSignature,
                    FailureReason::UnknownKey,
                    FailureReason::Expired,
                    FailureReason::WrongAudience,
                    FailureReason::LifetimeTooLong,
                ],
            );
            failure.reason().as_str().to_owned()
        }
    }
}

/// The gate, given `token`. `signed` is the header it was signed with (by
/// the IAM signing key), when it was.
fn admit(
    fixture: &Fixture,
    token: &str,
    signed: Option<&Map<String, Value>>,
    claims_text: &str,
) -> String {
    match authenticate(fixture, token) {
        Ok(principal) if token == KNOWN_TOKEN => {
            assert_eq!(principal.id, "fzz-user");
            "ok:tokens_file".to_owned()
        }
        Ok(principal) => {
            let header = signed.expect("only what the iam key signed passes the gate");
            assert!(
                header
                    .get("typ")
                    .and_then(Value::as_str)
                    .is_some_and(|typ| typ.eq_ignore_ascii_case(IAM_TOKEN_TYP))
            );
            assert_eq!(header.get("alg"), Some(&json!("ES256")));
            assert_eq!(header.get("kid"), Some(&json!(fixture.iam_kid)));
            let claims: Map<String, Value> =
                serde_json::from_str(claims_text).expect("accepted claims are a json object");
            let exp = claims
                .get("exp")
                .and_then(Value::as_i64)
                .expect("exp is a whole number");
            assert!(now() < exp, "not expired");
            assert_eq!(claims.get("sub"), Some(&json!(principal.id)));
            assert!(!principal.id.is_empty());
            let names = |claim: &str| -> BTreeSet<String> {
                claims[claim]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(|v| v.as_str().expect("of strings").to_owned())
                    .collect()
            };
            let scopes = names("scopes");
            match &principal.scopes {
                Scopes::All => assert_eq!(scopes, ["*".to_owned()].into()),
                Scopes::Only(only) => assert_eq!(&scopes, only),
            }
            let roles: BTreeSet<String> = principal
                .roles
                .iter()
                .map(|r| r.name().to_owned())
                .collect();
            assert_eq!(names("roles"), roles);
            "ok".to_owned()
        }
        Err(failure) => {
            check_refusal(
                &failure,
                token,
                &[
                    FailureReason::Missing,
                    FailureReason::Malformed,
                    FailureReason::UnknownToken,
                    FailureReason::InvalidToken,
                    FailureReason::BadSignature,
                    FailureReason::UnknownKey,
                    FailureReason::Expired,
                ],
            );
            failure.reason().as_str().to_owned()
        }
    }
}
