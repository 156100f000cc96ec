//! Service-account keys: `[[service_account_key]]` entries of the tokens file,
//! the public halves of the keys whose JWTs `IamTokenService/Create`
//! exchanges for IAM tokens, as the official SDKs' `service_account_key=`
//! credentials do.
//!
//! The SDK signs the JWT itself: `kid` is the key's id, `iss` the service
//! account (the principal), `aud` the IAM endpoint's token URL, and `exp` one
//! hour after `iat`.

use std::collections::BTreeSet;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use opsd_core::{Principal, Role, Timestamp};
use serde_json::{Map, Value};

use super::tokens::{KeyError, fail, parse_scopes};
use super::{AuthFailure, FailureReason};

/// The keys an entry may have.
pub(super) const KEYS: [&str; 5] = ["id", "principal", "public_key", "scopes", "roles"];

/// The longest a service-account JWT may be valid, from `iat` to `exp`.
pub const MAX_JWT_LIFETIME: Duration = Duration::from_secs(3600);

/// The audience the clouds' SDKs use unless pointed elsewhere.
pub const CLOUD_AUDIENCE: &str = "https://iam.api.cloud.yandex.net/iam/v1/tokens";

pub(super) struct ServiceAccountKey {
    pub(super) id: String,
    principal: Principal,
    /// PS256 and RS256 for an RSA key, ES256 for a P-256 key.
    algorithms: &'static [Algorithm],
    key: DecodingKey,
}

/// What a JWT is checked against besides its key.
pub(super) struct Checks<'a> {
    /// `aud` must be one of these.
    pub audiences: &'a [String],
    pub now: Timestamp,
    /// Clock skew allowed on `exp`, `iat` and `nbf`.
    pub leeway: Duration,
}

pub(super) fn parse_entry(value: &toml::Value) -> Result<ServiceAccountKey, KeyError> {
    let table = value
        .as_table()
        .ok_or_else(|| fail("service_account_key", "expected a table"))?;
    if let Some(key) = table.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(fail(key, "unknown key"));
    }
    let string = |key: &str| match table.get(key) {
        None => Err(fail(key, "missing")),
        Some(toml::Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(fail(key, "expected a string")),
    };
    let name = |key: &str| {
        let value = string(key)?;
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail(key, "must be non-empty, without spaces"));
        }
        Ok(value)
    };
    let id = name("id")?;
    let principal = name("principal")?;
    let (algorithm, key) = super::jwt::public_key(string("public_key")?.as_bytes())
        .map_err(|why| fail("public_key", why))?;
    let algorithms: &[Algorithm] = match algorithm {
        Algorithm::RS256 => &[Algorithm::PS256, Algorithm::RS256],
        _ => &[Algorithm::ES256],
    };
    let list = |key: &str| super::tokens::string_list(table, key);
    let scopes = parse_scopes(&list("scopes")?).map_err(|why| fail("scopes", why))?;
    let roles = list("roles")?
        .into_iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| fail("roles", format!("unknown role {name:?}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(ServiceAccountKey {
        id: id.to_owned(),
        principal: Principal {
            id: principal.to_owned(),
            scopes,
            roles,
        },
        algorithms,
        key,
    })
}

/// The principal of the key that signed `jwt`, if every check passes.
/// Failures say which check failed, never what the token holds.
pub(super) fn verify(
    keys: &[ServiceAccountKey],
    jwt: &str,
    checks: &Checks<'_>,
) -> Result<Principal, AuthFailure> {
    let header = jsonwebtoken::decode_header(jwt)
        .map_err(|_| AuthFailure::invalid("not a well-formed jwt"))?;
    let unknown =
        |why: &str| AuthFailure::new(FailureReason::UnknownKey, format!("unknown key: {why}"));
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| unknown("the jwt has no kid naming a service-account key"))?;
    let key = keys
        .iter()
        .find(|key| key.id == kid)
        .ok_or_else(|| unknown("the jwt's kid names no service-account key"))?;
    if !key.algorithms.contains(&header.alg) {
        let fitting: Vec<String> = key.algorithms.iter().map(|a| format!("{a:?}")).collect();
        return Err(AuthFailure::invalid(format_args!(
            "algorithm {:?} does not fit the key (use {})",
            header.alg,
            fitting.join(" or ")
        )));
    }
    // The signature only: every claim is checked below, against the injected clock.
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = match jsonwebtoken::decode::<Map<String, Value>>(jwt, &key.key, &validation) {
        Ok(data) => data.claims,
        Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
            return Err(AuthFailure::new(
                FailureReason::BadSignature,
                "bad signature",
            ));
        }
        Err(_) => return Err(AuthFailure::invalid("not a well-formed jwt")),
    };

    if claims.get("iss").and_then(Value::as_str) != Some(key.principal.id.as_str()) {
        return Err(AuthFailure::invalid(
            "iss must be the service account the key belongs to",
        ));
    }
    check_audience(&claims, checks.audiences)?;
    let time = |name: &str| match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| AuthFailure::invalid(format_args!("claim {name} is out of range"))),
        Some(_) => Err(AuthFailure::invalid(format_args!(
            "claim {name} must be a number of seconds"
        ))),
    };
    let missing = |name: &str| AuthFailure::invalid(format_args!("missing claim {name}"));
    let iat = time("iat")?.ok_or_else(|| missing("iat"))?;
    let exp = time("exp")?.ok_or_else(|| missing("exp"))?;
    let nbf = time("nbf")?;
    if exp <= iat {
        return Err(AuthFailure::invalid("exp must come after iat"));
    }
    let max = i64::try_from(MAX_JWT_LIFETIME.as_secs()).unwrap_or(i64::MAX);
    if exp.saturating_sub(iat) > max {
        return Err(AuthFailure::new(
            FailureReason::LifetimeTooLong,
            "lifetime too long: exp may be at most 1h after iat",
        ));
    }
    let (now, _) = checks.now.seconds_and_nanos();
    let leeway = i64::try_from(checks.leeway.as_secs()).unwrap_or(i64::MAX);
    if now >= exp.saturating_add(leeway) {
        return Err(AuthFailure::new(FailureReason::Expired, "token expired"));
    }
    if iat > now.saturating_add(leeway) {
        return Err(AuthFailure::invalid("issued in the future (iat)"));
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(AuthFailure::invalid("not valid yet (nbf)"));
    }
    Ok(key.principal.clone())
}

/// `aud`, one string or a list, must hold an accepted audience.
fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), AuthFailure> {
    let wrong = || {
        AuthFailure::new(
            FailureReason::WrongAudience,
            format!("wrong audience: aud must be one of {}", accepted.join(", ")),
        )
    };
    let matches = |aud: &Value| {
        aud.as_str()
            .is_some_and(|aud| accepted.iter().any(|a| a == aud))
    };
    match claims.get("aud") {
        None | Some(Value::Null) => Err(AuthFailure::new(
            FailureReason::WrongAudience,
            "wrong audience: missing claim aud",
        )),
        Some(Value::Array(items)) if items.iter().any(matches) => Ok(()),
        Some(aud) if matches(aud) => Ok(()),
        Some(_) => Err(wrong()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;
    use crate::auth::tokens::TokenTable;

    const RSA_PRIVATE: &str = include_str!("testdata/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("testdata/rsa-public.pem");
    const AUDIENCE: &str = "https://iam.opsd.example:443/iam/v1/tokens";
    const NOW: i64 = 1_800_000_000;

    pub(crate) fn entry(id: &str, principal: &str, public_key: &str) -> String {
        format!(
            "[[service_account_key]]\nid = \"{id}\"\nprincipal = \"{principal}\"\n\
             public_key = \"\"\"{public_key}\"\"\"\nscopes = [\"folder-a\"]\nroles = [\"producer\", \"viewer\"]\n"
        )
    }

    struct Fixture {
        table: TokenTable,
        ec: EncodingKey,
        rsa: EncodingKey,
    }

    fn fixture() -> Fixture {
        let ec = rcgen::KeyPair::generate().unwrap();
        let text = entry("ajersa", "compute", RSA_PUBLIC)
            + &entry("ajeec", "storage", &ec.public_key_pem());
        Fixture {
            table: TokenTable::parse(&text).unwrap(),
            ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            rsa: EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        }
    }

    fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).unwrap()
    }

    /// What the SDK sends for the RSA key, changed by `changes` (null removes).
    fn claims(changes: Value) -> Value {
        let mut claims = json!({"iss": "compute", "aud": AUDIENCE, "iat": NOW, "exp": NOW + 3600});
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    fn check(fixture: &Fixture, jwt: &str, now: i64) -> Result<Principal, AuthFailure> {
        let audiences = [CLOUD_AUDIENCE.to_owned(), AUDIENCE.to_owned()];
        verify(
            fixture.table.keys(),
            jwt,
            &Checks {
                audiences: &audiences,
                now: Timestamp::from_seconds_and_nanos(now, 0).unwrap(),
                leeway: Duration::from_secs(60),
            },
        )
    }

    fn refused(fixture: &Fixture, jwt: &str) -> (FailureReason, String) {
        let failure = check(fixture, jwt, NOW + 10).unwrap_err();
        (failure.reason(), failure.message().to_owned())
    }

    #[test]
    fn ps256_rs256_and_es256_jwts_name_the_keys_principal() {
        let f = fixture();
        for alg in [Algorithm::PS256, Algorithm::RS256] {
            let jwt = sign(&f.rsa, alg, Some("ajersa"), &claims(json!({})));
            let principal = check(&f, &jwt, NOW + 10).unwrap();
            assert_eq!(principal.id, "compute");
            assert_eq!(principal.roles, [Role::Producer, Role::Viewer].into());
        }
        let es = sign(
            &f.ec,
            Algorithm::ES256,
            Some("ajeec"),
            &claims(json!({"iss": "storage"})),
        );
        assert_eq!(check(&f, &es, NOW + 10).unwrap().id, "storage");
        // The clouds' audience, as a list too.
        let listed = claims(json!({"aud": ["other", CLOUD_AUDIENCE]}));
        let jwt = sign(&f.rsa, Algorithm::PS256, Some("ajersa"), &listed);
        assert!(check(&f, &jwt, NOW + 10).is_ok());
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let f = fixture();
        let ps = |kid: Option<&str>, changes| sign(&f.rsa, Algorithm::PS256, kid, &claims(changes));
        let other_ec = EncodingKey::from_ec_pem(
            rcgen::KeyPair::generate()
                .unwrap()
                .serialize_pem()
                .as_bytes(),
        )
        .unwrap();
        let cases = [
            (
                sign(
                    &other_ec,
                    Algorithm::ES256,
                    Some("ajeec"),
                    &claims(json!({"iss": "storage"})),
                ),
                FailureReason::BadSignature,
                "bad signature".to_owned(),
            ),
            (
                ps(Some("ajeunknown"), json!({})),
                FailureReason::UnknownKey,
                "unknown key: the jwt's kid names no service-account key".to_owned(),
            ),
            (
                ps(None, json!({})),
                FailureReason::UnknownKey,
                "unknown key: the jwt has no kid naming a service-account key".to_owned(),
            ),
            (
                ps(
                    Some("ajersa"),
                    json!({"iat": NOW - 7200, "exp": NOW - 3600}),
                ),
                FailureReason::Expired,
                "token expired".to_owned(),
            ),
            (
                ps(
                    Some("ajersa"),
                    json!({"aud": "https://iam.elsewhere/iam/v1/tokens"}),
                ),
                FailureReason::WrongAudience,
                format!("wrong audience: aud must be one of {CLOUD_AUDIENCE}, {AUDIENCE}"),
            ),
            (
                ps(Some("ajersa"), json!({"aud": null})),
                FailureReason::WrongAudience,
                "wrong audience: missing claim aud".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"exp": NOW + 3601})),
                FailureReason::LifetimeTooLong,
                "lifetime too long: exp may be at most 1h after iat".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"iss": "storage"})),
                FailureReason::InvalidToken,
                "invalid token: iss must be the service account the key belongs to".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"iat": null})),
                FailureReason::InvalidToken,
                "invalid token: missing claim iat".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"exp": null})),
                FailureReason::InvalidToken,
                "invalid token: missing claim exp".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"exp": "later"})),
                FailureReason::InvalidToken,
                "invalid token: claim exp must be a number of seconds".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"exp": NOW - 10})),
                FailureReason::InvalidToken,
                "invalid token: exp must come after iat".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"iat": NOW + 600, "exp": NOW + 1200})),
                FailureReason::InvalidToken,
                "invalid token: issued in the future (iat)".to_owned(),
            ),
            (
                ps(Some("ajersa"), json!({"nbf": NOW + 600})),
                FailureReason::InvalidToken,
                "invalid token: not valid yet (nbf)".to_owned(),
            ),
            (
                sign(&f.ec, Algorithm::ES256, Some("ajersa"), &claims(json!({}))),
                FailureReason::InvalidToken,
                "invalid token: algorithm ES256 does not fit the key (use PS256 or RS256)"
                    .to_owned(),
            ),
            (
                sign(
                    &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
                    Algorithm::HS256,
                    Some("ajersa"),
                    &claims(json!({})),
                ),
                FailureReason::InvalidToken,
                "invalid token: algorithm HS256 does not fit the key (use PS256 or RS256)"
                    .to_owned(),
            ),
            (
                "not.a.jwt".to_owned(),
                FailureReason::InvalidToken,
                "invalid token: not a well-formed jwt".to_owned(),
            ),
        ];
        for (jwt, reason, message) in cases {
            assert_eq!(refused(&f, &jwt), (reason, message.clone()), "{message}");
        }
    }

    #[test]
    fn expiry_and_issue_time_allow_the_leeway_by_the_given_clock() {
        let f = fixture();
        let jwt = sign(&f.rsa, Algorithm::PS256, Some("ajersa"), &claims(json!({})));
        assert!(check(&f, &jwt, NOW + 3600 + 59).is_ok());
        let late = check(&f, &jwt, NOW + 3600 + 60).unwrap_err();
        assert_eq!(late.reason(), FailureReason::Expired);
        assert!(
            check(&f, &jwt, NOW - 59).is_ok(),
            "iat a little ahead of us"
        );
        assert_eq!(
            check(&f, &jwt, NOW - 61).unwrap_err().message(),
            "invalid token: issued in the future (iat)"
        );
    }

    #[test]
    fn a_signature_over_other_claims_does_not_carry_over() {
        let f = fixture();
        let genuine = sign(&f.rsa, Algorithm::PS256, Some("ajersa"), &claims(json!({})));
        let other = sign(
            &f.rsa,
            Algorithm::PS256,
            Some("ajersa"),
            &claims(json!({"iss": "root"})),
        );
        let [head, _, signature]: [&str; 3] =
            genuine.split('.').collect::<Vec<_>>().try_into().unwrap();
        let spliced = format!("{head}.{}.{signature}", other.split('.').nth(1).unwrap());
        assert_eq!(refused(&f, &spliced).0, FailureReason::BadSignature);
    }
}
