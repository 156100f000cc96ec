//! Who is calling. One place for every adapter: the gRPC interceptor and the
//! REST extractor both ask an [`Authenticator`].
//!
//! Credentials come in the `authorization` header, as `Bearer <token>` or, as
//! the clouds' SDKs send them, `Api-Key <key>`. A token of three dot-separated
//! parts is a JWT: an IAM token opsd issued if its header says so (checked
//! against the IAM signing key only), otherwise a JWT of a configured issuer.
//! Any other token is looked up in the tokens file.
//!
//! The IAM token exchange (`IamTokenService/Create`) turns a tokens-file token
//! or a JWT signed with a service-account key into an IAM token; it is
//! decided here too ([`Gatekeeper::exchange`]).

mod iam;
mod jwt;
mod service_accounts;
mod tokens;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opsd_core::{Clock, Principal, SystemClock};

pub use iam::{IssuedToken, TYP as IAM_TOKEN_TYP};
pub use service_accounts::{CLOUD_AUDIENCE, MAX_JWT_LIFETIME};
pub use tokens::{hash_token, new_token};

/// How long an issued IAM token is valid unless `--iam-token-lifetime` says otherwise.
pub const DEFAULT_IAM_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What IamTokenService answers when it is off.
pub const IAM_OFF: &str =
    "the iam token exchange is off: start opsd with --iam-signing-key to enable it";

/// Where credentials are checked; all `None` means no authentication.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Static tokens, stored hashed (see [`new_token`]), and service-account keys.
    pub tokens_file: Option<PathBuf>,
    pub jwt: Option<JwtConfig>,
    /// Issuing and accepting IAM tokens.
    pub iam: Option<IamConfig>,
}

/// The IAM token exchange: which key signs issued tokens, for how long they
/// last, and what service-account JWTs must be addressed to.
#[derive(Clone, Debug)]
pub struct IamConfig {
    /// Ed25519 or ECDSA P-256 private key (PEM) that signs and verifies issued
    /// tokens; replicas with the same key accept each other's tokens.
    pub signing_key_file: PathBuf,
    /// How long an issued token is valid.
    pub token_lifetime: Duration,
    /// More `aud` values accepted in service-account JWTs, beside
    /// [`CLOUD_AUDIENCE`] and `https://iam.<public address>/iam/v1/tokens`.
    pub audiences: Vec<String>,
    /// Clock skew allowed on the `exp`, `iat` and `nbf` of service-account JWTs.
    pub leeway: Duration,
}

impl IamConfig {
    pub fn new(signing_key_file: PathBuf) -> Self {
        Self {
            signing_key_file,
            token_lifetime: DEFAULT_IAM_TOKEN_LIFETIME,
            audiences: Vec::new(),
            leeway: Duration::from_secs(60),
        }
    }
}

/// What a caller offers the IAM token exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A token of the tokens file (the clouds: a Yandex Passport OAuth token).
    OauthToken(&'a str),
    /// A JWT signed with a service-account key.
    Jwt(&'a str),
}

/// The token URLs service-account JWTs may be addressed to: the clouds', the
/// one the SDKs build from opsd's public address, and any configured.
pub fn iam_audiences(public_address: &str, configured: &[String]) -> Vec<String> {
    let mut audiences = vec![CLOUD_AUDIENCE.to_owned()];
    let mut add = |aud: String| {
        if !audiences.contains(&aud) {
            audiences.push(aud);
        }
    };
    add(format!("https://iam.{public_address}/iam/v1/tokens"));
    // An SDK given `host` reaches `host:443`, and builds its audience from `host`.
    if let Some(host) = public_address.strip_suffix(":443") {
        add(format!("https://iam.{host}/iam/v1/tokens"));
    }
    for aud in configured {
        add(aud.clone());
    }
    audiences
}

/// JWTs signed by any of the configured keys.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// Required in `aud` when set.
    pub audience: Option<String>,
    /// Required in `iss` when set.
    pub issuer: Option<String>,
    pub hs256_secret_file: Option<PathBuf>,
    /// RS256 or ES256 public keys in PEM.
    pub public_key_files: Vec<PathBuf>,
    /// A JSON Web Key Set of RS256 and ES256 keys, chosen by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// The claim listing the caller's scopes.
    pub scopes_claim: String,
    /// The claim listing the caller's roles.
    pub roles_claim: String,
    /// Clock skew allowed for `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            audience: None,
            issuer: None,
            hs256_secret_file: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            scopes_claim: "scopes".to_owned(),
            roles_claim: "roles".to_owned(),
            leeway: Duration::from_secs(60),
        }
    }
}

/// Turns request headers into the calling [`Principal`], and credentials
/// into IAM tokens.
pub struct Authenticator {
    tokens: Option<tokens::TokenTable>,
    jwt: Option<jwt::JwtVerifier>,
    iam: Option<Iam>,
    /// Expiry of IAM tokens and service-account JWTs is judged by this clock.
    clock: Arc<dyn Clock>,
}

struct Iam {
    issuer: iam::IamIssuer,
    audiences: Vec<String>,
    leeway: Duration,
}

impl fmt::Debug for Authenticator {
    // Hashes and keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.as_ref().map(tokens::TokenTable::len))
            .field(
                "service_account_keys",
                &self.tokens.as_ref().map(|t| t.keys().len()),
            )
            .field("jwt_keys", &self.jwt.as_ref().map(jwt::JwtVerifier::len))
            .field("iam_key", &self.iam.as_ref().map(|iam| iam.issuer.kid()))
            .finish()
    }
}

/// Anonymous, like a server started without credentials configured.
impl Default for Authenticator {
    fn default() -> Self {
        Self::anonymous()
    }
}

impl Authenticator {
    /// No credentials configured: every caller is [`Principal::anonymous`].
    pub fn anonymous() -> Self {
        Self {
            tokens: None,
            jwt: None,
            iam: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads and checks every configured file; errors name the file, and the
    /// entry and key within it.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let tokens = config
            .tokens_file
            .as_deref()
            .map(tokens::TokenTable::load)
            .transpose()?;
        let jwt = config
            .jwt
            .as_ref()
            .map(jwt::JwtVerifier::load)
            .transpose()?;
        let iam = config
            .iam
            .as_ref()
            .map(|iam| {
                anyhow::Ok(Iam {
                    issuer: iam::IamIssuer::load(&iam.signing_key_file, iam.token_lifetime)?,
                    audiences: iam.audiences.clone(),
                    leeway: iam.leeway,
                })
            })
            .transpose()?;
        match (&iam, &tokens) {
            (Some(iam), _) => tracing::info!(
                kid = iam.issuer.kid(),
                algorithm = iam.issuer.algorithm(),
                "iam token exchange on"
            ),
            (None, Some(tokens)) if !tokens.keys().is_empty() => tracing::warn!(
                keys = tokens.keys().len(),
                "the tokens file has service-account keys, but without --iam-signing-key no jwt is exchanged"
            ),
            (None, _) => {}
        }
        Ok(Self {
            tokens,
            jwt,
            iam,
            clock: Arc::new(SystemClock),
        })
    }

    /// Judges expiry by `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn is_anonymous(&self) -> bool {
        self.tokens.is_none() && self.jwt.is_none() && self.iam.is_none()
    }

    /// Whether `IamTokenService/Create` is served.
    pub fn issues_iam_tokens(&self) -> bool {
        self.iam.is_some()
    }

    /// The `kid` of the IAM tokens this server issues: the RFC 7638
    /// thumbprint of the signing key's public half (no secret).
    pub fn iam_key_id(&self) -> Option<&str> {
        self.iam.as_ref().map(|iam| iam.issuer.kid())
    }

    /// The `aud` values configured beside the clouds' and the public address's.
    pub fn configured_iam_audiences(&self) -> &[String] {
        self.iam.as_ref().map_or(&[], |iam| &iam.audiences)
    }

    /// An IAM token for the principal `credential` proves to be, if it does:
    /// a token of the tokens file, or a JWT signed with a service-account key
    /// and addressed to one of `audiences`. `None` when no signing key is
    /// configured.
    pub fn exchange(
        &self,
        credential: Credential<'_>,
        audiences: &[String],
    ) -> Option<Result<IssuedToken, AuthFailure>> {
        let iam = self.iam.as_ref()?;
        let now = self.clock.now();
        let principal = match credential {
            Credential::OauthToken(token) => self
                .tokens
                .as_ref()
                .and_then(|tokens| tokens.find(token))
                .cloned()
                .ok_or_else(|| AuthFailure::new(FailureReason::UnknownToken, "unknown token")),
            Credential::Jwt(jwt) => service_accounts::verify(
                self.tokens.as_ref().map_or(&[], |tokens| tokens.keys()),
                jwt,
                &service_accounts::Checks {
                    audiences,
                    now,
                    leeway: iam.leeway,
                },
            ),
        };
        Some(principal.map(|principal| iam.issuer.issue(&principal, now)))
    }

    /// The caller named by the `authorization` header. Failures are logged
    /// here, without the credentials.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, AuthFailure> {
        if self.is_anonymous() {
            return Ok(Principal::anonymous());
        }
        let result = self.check(headers);
        if let Err(failure) = &result {
            tracing::warn!(
                reason = failure.reason.as_str(),
                detail = %failure.message,
                "authentication failed"
            );
        }
        result
    }

    fn check(&self, headers: &http::HeaderMap) -> Result<Principal, AuthFailure> {
        let token = credentials(headers)?;
        if jwt::looks_like_jwt(token) && iam::is_iam_token(token) {
            // Never the configured JWT keys: they must not mint IAM tokens.
            return match &self.iam {
                Some(iam) => iam.issuer.verify(token, self.clock.now()),
                None => Err(AuthFailure::invalid(
                    "this server does not accept iam tokens",
                )),
            };
        }
        if let Some(verifier) = &self.jwt
            && jwt::looks_like_jwt(token)
        {
            return verifier.verify(token);
        }
        self.tokens
            .as_ref()
            .and_then(|tokens| tokens.find(token))
            .cloned()
            .ok_or_else(|| AuthFailure::new(FailureReason::UnknownToken, "unknown token"))
    }
}

/// The token of `authorization: Bearer <token>` or `Api-Key <token>`.
fn credentials(headers: &http::HeaderMap) -> Result<&str, AuthFailure> {
    let malformed = || AuthFailure::new(FailureReason::Malformed, "malformed authorization header");
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthFailure::new(
            FailureReason::Missing,
            "missing credentials: send authorization: Bearer <token>",
        ));
    };
    // Two headers could name two callers: refuse to pick one.
    if values.next().is_some() {
        return Err(malformed());
    }
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim_start();
    let known = ["bearer", "api-key"]
        .iter()
        .any(|known| scheme.eq_ignore_ascii_case(known));
    if !known || token.is_empty() || token.contains(char::is_whitespace) {
        return Err(malformed());
    }
    Ok(token)
}

/// Why a request is not authenticated, as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    Missing,
    Malformed,
    UnknownToken,
    Expired,
    InvalidToken,
    /// An IAM token or service-account JWT whose signature does not verify.
    BadSignature,
    /// A service-account JWT whose `kid` names no key, or an IAM token of
    /// another signing key.
    UnknownKey,
    /// A service-account JWT addressed to another audience.
    WrongAudience,
    /// A service-account JWT valid for more than [`MAX_JWT_LIFETIME`].
    LifetimeTooLong,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Missing => "missing",
            FailureReason::Malformed => "malformed",
            FailureReason::UnknownToken => "unknown_token",
            FailureReason::Expired => "expired",
            FailureReason::InvalidToken => "invalid_token",
            FailureReason::BadSignature => "bad_signature",
            FailureReason::UnknownKey => "unknown_key",
            FailureReason::WrongAudience => "wrong_audience",
            FailureReason::LifetimeTooLong => "lifetime_too_long",
        }
    }
}

/// A request without valid credentials: UNAUTHENTICATED. The message never
/// holds any part of the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    reason: FailureReason,
    message: String,
}

impl AuthFailure {
    fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    fn invalid(why: impl fmt::Display) -> Self {
        Self::new(FailureReason::InvalidToken, format!("invalid token: {why}"))
    }

    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AuthFailure {}

impl From<AuthFailure> for tonic::Status {
    fn from(failure: AuthFailure) -> Self {
        tonic::Status::unauthenticated(failure.message)
    }
}

/// The one door every adapter's requests pass: authenticates, exchanges
/// credentials for IAM tokens, and counts the failures. Cheap to clone.
#[derive(Clone)]
pub struct Gatekeeper {
    authenticator: std::sync::Arc<Authenticator>,
    metrics: std::sync::Arc<opsd_service::Metrics>,
    /// Shared by every request of a server without credentials.
    anonymous: Option<std::sync::Arc<Principal>>,
    /// What service-account JWTs may be addressed to.
    iam_audiences: Arc<[String]>,
}

impl Gatekeeper {
    pub fn new(
        authenticator: std::sync::Arc<Authenticator>,
        metrics: std::sync::Arc<opsd_service::Metrics>,
    ) -> Self {
        let anonymous = authenticator
            .is_anonymous()
            .then(|| std::sync::Arc::new(Principal::anonymous()));
        let mut iam_audiences = vec![CLOUD_AUDIENCE.to_owned()];
        iam_audiences.extend_from_slice(authenticator.configured_iam_audiences());
        Self {
            authenticator,
            metrics,
            anonymous,
            iam_audiences: iam_audiences.into(),
        }
    }

    /// For a server reached at `public_address` (what discovery announces):
    /// service-account JWTs may be addressed to its token URL too.
    pub fn with_public_address(mut self, public_address: &str) -> Self {
        self.iam_audiences = iam_audiences(
            public_address,
            self.authenticator.configured_iam_audiences(),
        )
        .into();
        self
    }

    /// UNIMPLEMENTED, naming the flag that enables it, unless IAM tokens are issued.
    #[allow(clippy::result_large_err)]
    pub fn iam_enabled(&self) -> Result<(), tonic::Status> {
        if self.authenticator.issues_iam_tokens() {
            Ok(())
        } else {
            Err(tonic::Status::unimplemented(IAM_OFF))
        }
    }

    /// An IAM token for what `credential` proves. Refusals are UNAUTHENTICATED,
    /// logged and counted by reason like any refused authentication.
    #[allow(clippy::result_large_err)]
    pub fn exchange(&self, credential: Credential<'_>) -> Result<IssuedToken, tonic::Status> {
        let kind = match credential {
            Credential::OauthToken(_) => "oauth_token",
            Credential::Jwt(_) => "jwt",
        };
        match self.authenticator.exchange(credential, &self.iam_audiences) {
            None => Err(tonic::Status::unimplemented(IAM_OFF)),
            Some(Ok(issued)) => {
                tracing::info!(
                    principal = %issued.principal,
                    credential = kind,
                    expires_at = issued.expires_at.seconds_and_nanos().0,
                    "iam token issued"
                );
                Ok(issued)
            }
            Some(Err(failure)) => {
                tracing::warn!(
                    credential = kind,
                    reason = failure.reason.as_str(),
                    detail = %failure.message,
                    "iam token exchange refused"
                );
                self.metrics.auth_failure(failure.reason().as_str());
                Err(tonic::Status::from(failure))
            }
        }
    }

    pub fn admit(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<std::sync::Arc<Principal>, tonic::Status> {
        if let Some(anonymous) = &self.anonymous {
            return Ok(std::sync::Arc::clone(anonymous));
        }
        match self.authenticator.authenticate(headers) {
            Ok(principal) => Ok(std::sync::Arc::new(principal)),
            Err(failure) => {
                self.metrics.auth_failure(failure.reason().as_str());
                Err(tonic::Status::from(failure))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    pub(crate) fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    fn with_token(token: &str) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            format!(
                "[[principal]]\nid = \"compute\"\ntoken_sha256 = \"{}\"\n\
                 scopes = [\"folder-a\"]\nroles = [\"producer\"]\n",
                hash_token(token)
            ),
        )
        .unwrap();
        let config = AuthConfig {
            tokens_file: Some(path),
            jwt: None,
            iam: None,
        };
        Authenticator::from_config(&config).unwrap()
    }

    #[test]
    fn without_credentials_configured_everyone_is_anonymous() {
        let auth = Authenticator::anonymous();
        assert!(auth.is_anonymous());
        assert_eq!(
            auth.authenticate(&HeaderMap::new()),
            Ok(Principal::anonymous())
        );
        assert_eq!(
            auth.authenticate(&headers("Bearer whatever")),
            Ok(Principal::anonymous())
        );
        let none = Authenticator::from_config(&AuthConfig::default()).unwrap();
        assert!(none.is_anonymous());
        assert!(Authenticator::default().is_anonymous());
    }

    #[test]
    fn both_schemes_carry_a_token_in_any_case() {
        let (token, _) = new_token();
        let auth = with_token(&token);
        assert!(!auth.is_anonymous());
        for scheme in [
            "Bearer", "bearer", "BEARER", "Api-Key", "api-key", "API-KEY",
        ] {
            let principal = auth
                .authenticate(&headers(&format!("{scheme} {token}")))
                .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            assert_eq!(principal.id, "compute");
        }
    }

    #[test]
    fn failures_say_why_without_the_token() {
        let (token, _) = new_token();
        let auth = with_token(&token);
        let fail = |headers: &HeaderMap| auth.authenticate(headers).unwrap_err();

        let missing = fail(&HeaderMap::new());
        assert_eq!(missing.reason(), FailureReason::Missing);
        assert_eq!(
            missing.message(),
            "missing credentials: send authorization: Bearer <token>"
        );

        for bad in [
            format!("Basic {token}"),
            format!("Bearer{token}"),
            "Bearer ".to_owned(),
            "Bearer".to_owned(),
            format!("Bearer {token} {token}"),
            token.clone(),
            String::new(),
        ] {
            let failure = fail(&headers(&bad));
            assert_eq!(failure.reason(), FailureReason::Malformed, "{bad:?}");
            assert_eq!(failure.message(), "malformed authorization header");
        }

        let mut twice = headers(&format!("Bearer {token}"));
        twice.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        assert_eq!(fail(&twice).reason(), FailureReason::Malformed);

        let mut binary = HeaderMap::new();
        binary.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert_eq!(fail(&binary).reason(), FailureReason::Malformed);

        let guessed = format!("{token}x");
        let unknown = fail(&headers(&format!("Bearer {guessed}")));
        assert_eq!(unknown.reason(), FailureReason::UnknownToken);
        assert_eq!(unknown.message(), "unknown token");
        assert!(!unknown.message().contains(&guessed));

        let status = tonic::Status::from(unknown);
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "unknown token");
    }

    #[test]
    fn authenticators_are_shared_across_requests() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Authenticator>();
    }

    #[test]
    fn reasons_are_metric_labels() {
        let labels = [
            FailureReason::Missing,
            FailureReason::Malformed,
            FailureReason::UnknownToken,
            FailureReason::Expired,
            FailureReason::InvalidToken,
            FailureReason::BadSignature,
            FailureReason::UnknownKey,
            FailureReason::WrongAudience,
            FailureReason::LifetimeTooLong,
        ]
        .map(FailureReason::as_str);
        assert_eq!(
            labels,
            [
                "missing",
                "malformed",
                "unknown_token",
                "expired",
                "invalid_token",
                "bad_signature",
                "unknown_key",
                "wrong_audience",
                "lifetime_too_long",
            ]
        );
    }

    const KNOWN: &str = "opsd_known";
    const RSA_PRIVATE: &str = include_str!("auth/testdata/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("auth/testdata/rsa-public.pem");
    const START: i64 = 1_800_000_000;

    /// A principal's token, a service-account key, every kind of JWT key, and
    /// IAM tokens signed with `iam_pem`, at a clock the test moves.
    struct WithIam {
        auth: Authenticator,
        clock: opsd_core::ManualClock,
        jwt_keys: jwt::tests::Keys,
        sa_key: jsonwebtoken::EncodingKey,
    }

    fn with_iam(iam_pem: &str) -> WithIam {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(
            &tokens,
            format!(
                "[[principal]]\nid = \"compute\"\ntoken_sha256 = \"{}\"\n\
                 scopes = [\"folder-a\"]\nroles = [\"producer\"]\n\n{}",
                hash_token(KNOWN),
                service_accounts::tests::entry("ajekey", "builder", RSA_PUBLIC)
            ),
        )
        .unwrap();
        let key = dir.path().join("iam.pem");
        std::fs::write(&key, iam_pem).unwrap();
        let (jwt_config, jwt_keys) = jwt::tests::every_key();
        let clock = opsd_core::ManualClock::new(
            opsd_core::Timestamp::from_seconds_and_nanos(START, 0).unwrap(),
        );
        let auth = Authenticator::from_config(&AuthConfig {
            tokens_file: Some(tokens),
            jwt: Some(jwt_config),
            iam: Some(IamConfig {
                token_lifetime: Duration::from_secs(3600),
                ..IamConfig::new(key)
            }),
        })
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
        WithIam {
            auth,
            clock,
            jwt_keys,
            sa_key: jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        }
    }

    fn sa_jwt(key: &jsonwebtoken::EncodingKey, aud: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.kid = Some("ajekey".into());
        let claims =
            serde_json::json!({"iss": "builder", "aud": aud, "iat": START, "exp": START + 3600});
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn audiences() -> Vec<String> {
        iam_audiences("opsd.example:443", &[])
    }

    fn bearer(token: &str) -> HeaderMap {
        headers(&format!("Bearer {token}"))
    }

    #[test]
    fn issued_tokens_authenticate_as_their_principal_until_they_expire() {
        let fixture = with_iam(&iam::tests::ed25519_pem());
        let auth = &fixture.auth;
        assert!(auth.issues_iam_tokens());

        let from_token = auth
            .exchange(Credential::OauthToken(KNOWN), &audiences())
            .unwrap()
            .unwrap();
        let principal = auth.authenticate(&bearer(&from_token.token)).unwrap();
        assert_eq!(principal.id, "compute");
        assert_eq!(
            principal.scopes,
            opsd_core::Scopes::Only(["folder-a".into()].into())
        );
        assert_eq!(principal.roles, [opsd_core::Role::Producer].into());
        assert_eq!(
            from_token.expires_at,
            opsd_core::Timestamp::from_seconds_and_nanos(START + 3600, 0).unwrap()
        );

        let aud = "https://iam.opsd.example/iam/v1/tokens";
        let from_key = auth
            .exchange(Credential::Jwt(&sa_jwt(&fixture.sa_key, aud)), &audiences())
            .unwrap()
            .unwrap();
        let principal = auth.authenticate(&bearer(&from_key.token)).unwrap();
        assert_eq!(principal.id, "builder");
        assert_eq!(
            principal.roles,
            [opsd_core::Role::Producer, opsd_core::Role::Viewer].into()
        );

        fixture.clock.advance(Duration::from_secs(3599));
        assert!(auth.authenticate(&bearer(&from_key.token)).is_ok());
        fixture.clock.advance(Duration::from_secs(1));
        let expired = auth.authenticate(&bearer(&from_key.token)).unwrap_err();
        assert_eq!(expired.reason(), FailureReason::Expired);
        assert_eq!(expired.message(), "token expired");
    }

    #[test]
    fn the_exchange_refuses_what_proves_nothing() {
        let fixture = with_iam(&iam::tests::p256_pem());
        let refuse = |credential| {
            fixture
                .auth
                .exchange(credential, &audiences())
                .unwrap()
                .unwrap_err()
                .reason()
        };
        assert_eq!(
            refuse(Credential::OauthToken("opsd_unknown")),
            FailureReason::UnknownToken
        );
        let elsewhere = sa_jwt(&fixture.sa_key, "https://iam.elsewhere/iam/v1/tokens");
        assert_eq!(
            refuse(Credential::Jwt(&elsewhere)),
            FailureReason::WrongAudience
        );
        let cloud = sa_jwt(&fixture.sa_key, CLOUD_AUDIENCE);
        assert!(
            fixture
                .auth
                .exchange(Credential::Jwt(&cloud), &audiences())
                .unwrap()
                .is_ok()
        );
        // An issued token is no service-account jwt, nor a tokens-file token.
        let issued = fixture
            .auth
            .exchange(Credential::Jwt(&cloud), &audiences())
            .unwrap()
            .unwrap()
            .token;
        assert_eq!(refuse(Credential::Jwt(&issued)), FailureReason::UnknownKey);
        assert_eq!(
            refuse(Credential::OauthToken(&issued)),
            FailureReason::UnknownToken
        );
        // Expiry of the jwt is judged by the injected clock.
        fixture.clock.advance(Duration::from_secs(3600 + 60));
        assert_eq!(refuse(Credential::Jwt(&cloud)), FailureReason::Expired);
    }

    #[test]
    fn without_a_signing_key_nothing_is_exchanged_and_no_iam_token_accepted() {
        let issuing = with_iam(&iam::tests::ed25519_pem());
        let issued = issuing
            .auth
            .exchange(Credential::OauthToken(KNOWN), &audiences())
            .unwrap()
            .unwrap();

        let jwt_only = jwt::tests::every_key_authenticator();
        assert!(!jwt_only.issues_iam_tokens());
        assert!(
            jwt_only
                .exchange(Credential::OauthToken(KNOWN), &audiences())
                .is_none()
        );
        let refused = jwt_only.authenticate(&bearer(&issued.token)).unwrap_err();
        assert_eq!(refused.reason(), FailureReason::InvalidToken);
        assert_eq!(
            refused.message(),
            "invalid token: this server does not accept iam tokens"
        );
        // Nor does a tokens file take it, when that is all there is.
        let tokens_only = with_token(KNOWN);
        assert_eq!(
            tokens_only
                .authenticate(&bearer(&issued.token))
                .unwrap_err()
                .message(),
            "invalid token: this server does not accept iam tokens"
        );

        // Another signing key: another issuer.
        let other = with_iam(&iam::tests::ed25519_pem());
        other.clock.set(issuing.clock.now());
        assert_eq!(
            other
                .auth
                .authenticate(&bearer(&issued.token))
                .unwrap_err()
                .reason(),
            FailureReason::UnknownKey
        );
    }

    #[test]
    fn replicas_with_one_signing_key_accept_each_others_tokens() {
        let pem = iam::tests::p256_pem();
        let (a, b) = (with_iam(&pem), with_iam(&pem));
        let issued = a
            .auth
            .exchange(Credential::OauthToken(KNOWN), &audiences())
            .unwrap()
            .unwrap();
        assert_eq!(
            b.auth.authenticate(&bearer(&issued.token)).unwrap().id,
            "compute"
        );
    }

    #[test]
    fn configured_jwt_keys_cannot_mint_iam_tokens() {
        for pem in [iam::tests::ed25519_pem(), iam::tests::p256_pem()] {
            no_configured_key_mints_iam_tokens(&with_iam(&pem));
        }
    }

    fn no_configured_key_mints_iam_tokens(fixture: &WithIam) {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let kid = fixture.auth.iam.as_ref().unwrap().issuer.kid().to_owned();
        let claims = serde_json::json!({
            "sub": "mallory", "scopes": ["*"], "roles": ["admin"], "exp": START + 600,
        });
        let keys = &fixture.jwt_keys;
        let signers: [(&EncodingKey, Algorithm); 3] = [
            (&keys.hs, Algorithm::HS256),
            (&keys.ec, Algorithm::ES256),
            (&keys.rsa, Algorithm::RS256),
        ];
        // As JWTs of a configured issuer, these keys work ...
        let jwt_clock_claims = serde_json::json!({
            "sub": "mallory", "scopes": ["*"], "roles": ["admin"],
            "exp": jsonwebtoken::get_current_timestamp() + 600,
        });
        for (key, alg) in signers {
            let token = jsonwebtoken::encode(&Header::new(alg), &jwt_clock_claims, key).unwrap();
            assert_eq!(
                fixture.auth.authenticate(&bearer(&token)).unwrap().id,
                "mallory"
            );
        }
        // ... but a token of opsd's type they sign is refused, whatever it names.
        for (key, alg) in signers {
            for kid in [None, Some(kid.clone())] {
                let mut header = Header::new(alg);
                header.typ = Some(IAM_TOKEN_TYP.to_owned());
                header.kid = kid.clone();
                let token = jsonwebtoken::encode(&header, &claims, key).unwrap();
                let failure = fixture.auth.authenticate(&bearer(&token)).unwrap_err();
                assert!(
                    matches!(
                        failure.reason(),
                        FailureReason::UnknownKey
                            | FailureReason::InvalidToken
                            | FailureReason::BadSignature
                    ),
                    "{alg:?} {kid:?}: {failure}"
                );
            }
        }
        // An issued token is not a JWT of a configured issuer either.
        let issued = fixture
            .auth
            .exchange(Credential::OauthToken(KNOWN), &audiences())
            .unwrap()
            .unwrap();
        let verifier = fixture.auth.jwt.as_ref().unwrap();
        assert_eq!(
            verifier.verify(&issued.token).unwrap_err().message(),
            "invalid token: an iam token is not a jwt of a configured issuer"
        );
    }

    #[test]
    fn audiences_are_the_clouds_the_public_addresses_and_the_configured() {
        assert_eq!(
            iam_audiences(
                "opsd.example:443",
                &["https://iam.extra/iam/v1/tokens".into()]
            ),
            [
                CLOUD_AUDIENCE,
                "https://iam.opsd.example:443/iam/v1/tokens",
                "https://iam.opsd.example/iam/v1/tokens",
                "https://iam.extra/iam/v1/tokens",
            ]
        );
        assert_eq!(
            iam_audiences("127.0.0.1:7117", &[CLOUD_AUDIENCE.into()]),
            [CLOUD_AUDIENCE, "https://iam.127.0.0.1:7117/iam/v1/tokens"]
        );
    }

    /// Tokens and every kind of JWT key at once, built once for all cases.
    static EVERY_SOURCE: std::sync::LazyLock<Authenticator> = std::sync::LazyLock::new(|| {
        let mut auth = jwt::tests::every_key_authenticator();
        auth.tokens = with_token("opsd_known").tokens;
        auth.iam = with_iam(&iam::tests::ed25519_pem()).auth.iam;
        auth
    });

    proptest! {
        #[test]
        fn authenticate_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let _ = EVERY_SOURCE.authenticate(&headers);
        }

        #[test]
        fn authenticate_never_panics_on_jwt_shapes(
            scheme in "(?i)(bearer|api-key)",
            parts in proptest::collection::vec("[A-Za-z0-9_=-]{0,40}", 3),
        ) {
            let _ = EVERY_SOURCE.authenticate(&headers(&format!("{scheme} {}", parts.join("."))));
        }

        #[test]
        fn authenticate_never_panics_on_any_claims(
            header in "\\PC{0,40}",
            claims in "\\PC{0,80}",
        ) {
            use base64::Engine as _;
            let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            let token = format!("{}.{}.{}", b64(&header), b64(&claims), b64("sig"));
            let _ = EVERY_SOURCE.authenticate(&headers(&format!("Bearer {token}")));
        }

        #[test]
        fn authenticate_never_panics_on_iam_token_shapes(
            alg in "EdDSA|ES256|HS256|\\PC{0,8}",
            kid in "\\PC{0,44}",
            claims in "\\PC{0,80}",
            signature in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            use base64::Engine as _;
            let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            let header = serde_json::json!({"alg": alg, "typ": IAM_TOKEN_TYP, "kid": kid});
            let token = format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.as_bytes()),
                b64(&signature)
            );
            let _ = EVERY_SOURCE.authenticate(&headers(&format!("Bearer {token}")));
        }
    }
}
