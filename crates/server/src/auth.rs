//! Who is calling. One place for every adapter: the gRPC interceptor and the
//! REST extractor both ask an [`Authenticator`].
//!
//! Credentials come in the `authorization` header, as `Bearer <token>` or, as
//! the clouds' SDKs send them, `Api-Key <key>`. A token of three dot-separated
//! parts is a JWT; any other is looked up in the tokens file.

mod jwt;
mod tokens;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use opsd_core::Principal;

pub use tokens::{hash_token, new_token};

/// Where credentials are checked; all `None` means no authentication.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Static tokens, stored hashed (see [`new_token`]).
    pub tokens_file: Option<PathBuf>,
    pub jwt: Option<JwtConfig>,
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

/// Turns request headers into the calling [`Principal`].
pub struct Authenticator {
    tokens: Option<tokens::TokenTable>,
    jwt: Option<jwt::JwtVerifier>,
}

impl fmt::Debug for Authenticator {
    // Hashes and keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.as_ref().map(tokens::TokenTable::len))
            .field("jwt_keys", &self.jwt.as_ref().map(jwt::JwtVerifier::len))
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
        Ok(Self { tokens, jwt })
    }

    pub fn is_anonymous(&self) -> bool {
        self.tokens.is_none() && self.jwt.is_none()
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
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Missing => "missing",
            FailureReason::Malformed => "malformed",
            FailureReason::UnknownToken => "unknown_token",
            FailureReason::Expired => "expired",
            FailureReason::InvalidToken => "invalid_token",
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

/// The one door every adapter's requests pass: authenticates and counts the
/// failures. Cheap to clone.
#[derive(Clone)]
pub struct Gatekeeper {
    authenticator: std::sync::Arc<Authenticator>,
    metrics: std::sync::Arc<opsd_service::Metrics>,
    /// Shared by every request of a server without credentials.
    anonymous: Option<std::sync::Arc<Principal>>,
}

impl Gatekeeper {
    pub fn new(
        authenticator: std::sync::Arc<Authenticator>,
        metrics: std::sync::Arc<opsd_service::Metrics>,
    ) -> Self {
        let anonymous = authenticator
            .is_anonymous()
            .then(|| std::sync::Arc::new(Principal::anonymous()));
        Self {
            authenticator,
            metrics,
            anonymous,
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
        ]
        .map(FailureReason::as_str);
        assert_eq!(
            labels,
            [
                "missing",
                "malformed",
                "unknown_token",
                "expired",
                "invalid_token"
            ]
        );
    }

    /// Tokens and every kind of JWT key at once, built once for all cases.
    static EVERY_SOURCE: std::sync::LazyLock<Authenticator> = std::sync::LazyLock::new(|| {
        let mut auth = jwt::tests::every_key_authenticator();
        auth.tokens = with_token("opsd_known").tokens;
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
    }
}
