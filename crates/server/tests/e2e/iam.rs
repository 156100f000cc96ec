//! The IAM token exchange (`yandex.cloud.iam.v1.IamTokenService/Create` and
//! `POST /iam/v1/tokens`) over real gRPC and REST: each refusal with its exact
//! code and counted reason, UNIMPLEMENTED without `--iam-signing-key`, issued
//! tokens admitted until they expire (by the server's clock), replicas that
//! share a signing key, and the real binary's flags and logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use opsd_core::{Clock, ManualClock, SystemClock};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::iam::v1 as iam;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_server::auth::{AuthConfig, Authenticator, IAM_OFF, IamConfig, hash_token};
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::{MemoryStore, OperationStore};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::Listening;

const RSA_PRIVATE: &str = include_str!("../../src/auth/testdata/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../src/auth/testdata/rsa-public.pem");
const OWNER: &str = "opsd_owner-token-for-iam";
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The tokens file, the service-account keys' private halves, and IAM signing keys.
struct Files {
    dir: tempfile::TempDir,
    /// Signs for the `storage` service account (kid `ajeec`).
    ec: EncodingKey,
    rsa: EncodingKey,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ec = rcgen::KeyPair::generate().unwrap();
        let tokens = format!(
            "[[principal]]\nid = \"owner\"\ntoken_sha256 = \"{}\"\nscopes = [\"folder-a\"]\n\
             roles = [\"viewer\", \"operator\", \"producer\"]\n\n\
             [[service_account_key]]\nid = \"ajersa\"\nprincipal = \"compute\"\n\
             public_key = \"\"\"{RSA_PUBLIC}\"\"\"\nscopes = [\"folder-a\"]\nroles = [\"producer\", \"viewer\"]\n\n\
             [[service_account_key]]\nid = \"ajeec\"\nprincipal = \"storage\"\n\
             public_key = \"\"\"{}\"\"\"\nscopes = [\"folder-b\"]\nroles = [\"viewer\"]\n",
            hash_token(OWNER),
            ec.public_key_pem()
        );
        std::fs::write(dir.path().join("tokens.toml"), tokens).unwrap();
        let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(dir.path().join("iam.pem"), ed25519.serialize_pem()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other-iam.pem"), other.serialize_pem()).unwrap();
        Self {
            ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            rsa: EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Tokens and keys, and IAM tokens signed with `signing_key` (a file of the dir) if any.
    fn auth(&self, signing_key: Option<&str>) -> AuthConfig {
        AuthConfig {
            tokens_file: Some(self.path("tokens.toml")),
            jwt: None,
            iam: signing_key.map(|name| IamConfig::new(self.path(name))),
        }
    }
}

struct Server {
    address: SocketAddr,
    listening: Listening,
    store: Arc<dyn OperationStore>,
}

impl Server {
    async fn start(auth: AuthConfig, clock: Arc<dyn Clock>) -> Self {
        let authenticator = Authenticator::from_config(&auth).unwrap().with_clock(clock);
        let store: Arc<dyn OperationStore> = Arc::new(MemoryStore::new());
        let service = Arc::new(OperationService::new(
            Arc::clone(&store),
            Arc::new(SystemClock),
            ServiceConfig::default(),
        ));
        let listening = Listening::start(
            service,
            opsd_server::ServeOptions {
                auth: Arc::new(authenticator),
                ..Default::default()
            },
        )
        .await;
        Self {
            address: listening.address,
            listening,
            store,
        }
    }

    async fn stop(mut self) {
        self.listening.stop().await;
        self.store.close().await.unwrap();
    }

    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The audience the SDK builds when given this server as its endpoint.
    fn audience(&self) -> String {
        format!("https://iam.{}/iam/v1/tokens", self.address)
    }

    async fn create(
        &self,
        request: iam::CreateIamTokenRequest,
    ) -> Result<iam::CreateIamTokenResponse, tonic::Status> {
        iam::iam_token_service_client::IamTokenServiceClient::new(self.channel().await)
            .create(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// `POST /iam/v1/tokens` with a JSON body: the status and the parsed body.
    async fn rest_create(&self, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/iam/v1/tokens", self.address))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.address))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// List over gRPC with `token`: OK or the refusal.
    async fn list(&self, token: &str) -> Result<usize, tonic::Status> {
        let mut client =
            pb::operation_service_client::OperationServiceClient::new(self.channel().await);
        client
            .list(bearer(pb::ListOperationsRequest::default(), token))
            .await
            .map(|r| r.into_inner().operations.len())
    }

    /// `GET /v1/operations` with `token`: the HTTP status and body.
    async fn rest_list(&self, token: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("http://{}/v1/operations", self.address))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn now() -> i64 {
    SystemClock.now().seconds_and_nanos().0
}

fn jwt(key: &EncodingKey, alg: Algorithm, kid: &str, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// What the official SDK signs for the `compute` service account.
fn sdk_jwt(files: &Files, aud: &str) -> String {
    jwt(
        &files.rsa,
        Algorithm::PS256,
        "ajersa",
        json!({"iss": "compute", "aud": aud, "iat": now(), "exp": now() + 3600}),
    )
}

fn with_jwt(jwt: String) -> iam::CreateIamTokenRequest {
    iam::CreateIamTokenRequest {
        identity: Some(iam::create_iam_token_request::Identity::Jwt(jwt)),
    }
}

fn with_oauth(token: &str) -> iam::CreateIamTokenRequest {
    iam::CreateIamTokenRequest {
        identity: Some(
            iam::create_iam_token_request::Identity::YandexPassportOauthToken(token.to_owned()),
        ),
    }
}

/// The request in the proto3 JSON mapping, as a REST caller sends it.
fn as_json(request: &iam::CreateIamTokenRequest) -> Value {
    opsd_proto::json::to_json(request).unwrap()
}

fn failures(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("opsd_auth_failures_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_credentials_exchange_over_grpc_and_rest() {
    let files = Files::new();
    let server = Server::start(files.auth(Some("iam.pem")), Arc::new(SystemClock)).await;
    let before = now();

    for request in [
        with_oauth(OWNER),
        with_jwt(sdk_jwt(&files, &server.audience())),
    ] {
        let answer = server.create(request.clone()).await.unwrap();
        let expires_at = answer.expires_at.unwrap();
        assert_eq!(expires_at.nanos, 0);
        let lifetime = LIFETIME.as_secs() as i64;
        assert!(
            (before + lifetime..=now() + lifetime).contains(&expires_at.seconds),
            "12 hours by default: {expires_at:?}"
        );
        assert_eq!(server.list(&answer.iam_token).await.unwrap(), 0);

        let (status, body) = server.rest_create(&as_json(&request)).await;
        assert_eq!(status, 200, "{body}");
        let token = body["iamToken"].as_str().unwrap();
        assert!(body["expiresAt"].as_str().unwrap().ends_with('Z'), "{body}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        assert_eq!(server.rest_list(token).await.0, 200);
    }
    // The clouds' audience is accepted too, and so are RS256 and ES256.
    let cloud = sdk_jwt(&files, "https://iam.api.cloud.yandex.net/iam/v1/tokens");
    assert!(server.create(with_jwt(cloud)).await.is_ok());
    let rs256 = jwt(
        &files.rsa,
        Algorithm::RS256,
        "ajersa",
        json!({"iss": "compute", "aud": server.audience(), "iat": now(), "exp": now() + 600}),
    );
    assert!(server.create(with_jwt(rs256)).await.is_ok());
    let es256 = jwt(
        &files.ec,
        Algorithm::ES256,
        "ajeec",
        json!({"iss": "storage", "aud": server.audience(), "iat": now(), "exp": now() + 600}),
    );
    assert!(server.create(with_jwt(es256)).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_message_and_counted_reason() {
    let files = Files::new();
    let server = Server::start(files.auth(Some("iam.pem")), Arc::new(SystemClock)).await;
    let aud = server.audience();
    let claims = |changes: Value| {
        let mut claims = json!({"iss": "compute", "aud": aud, "iat": now(), "exp": now() + 3600});
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let another_ec = EncodingKey::from_ec_pem(
        rcgen::KeyPair::generate()
            .unwrap()
            .serialize_pem()
            .as_bytes(),
    )
    .unwrap();
    let cases = [
        (
            "wrong key",
            with_jwt(jwt(
                &another_ec,
                Algorithm::ES256,
                "ajeec",
                claims(json!({"iss": "storage"})),
            )),
            "bad_signature",
            "bad signature".to_owned(),
        ),
        (
            "unknown kid",
            with_jwt(jwt(
                &files.rsa,
                Algorithm::PS256,
                "ajegone",
                claims(json!({})),
            )),
            "unknown_key",
            "unknown key: the jwt's kid names no service-account key".to_owned(),
        ),
        (
            "expired",
            with_jwt(jwt(
                &files.rsa,
                Algorithm::PS256,
                "ajersa",
                claims(json!({"iat": now() - 7200, "exp": now() - 3600})),
            )),
            "expired",
            "token expired".to_owned(),
        ),
        (
            "wrong audience",
            with_jwt(jwt(
                &files.rsa,
                Algorithm::PS256,
                "ajersa",
                claims(json!({"aud": "https://iam.elsewhere.example/iam/v1/tokens"})),
            )),
            "wrong_audience",
            format!(
                "wrong audience: aud must be one of https://iam.api.cloud.yandex.net/iam/v1/tokens, {aud}"
            ),
        ),
        (
            "lifetime too long",
            with_jwt(jwt(
                &files.rsa,
                Algorithm::PS256,
                "ajersa",
                claims(json!({"exp": now() + 3601})),
            )),
            "lifetime_too_long",
            "lifetime too long: exp may be at most 1h after iat".to_owned(),
        ),
        (
            "unknown oauth token",
            with_oauth("opsd_not-in-the-file"),
            "unknown_token",
            "unknown token".to_owned(),
        ),
        (
            "not a jwt",
            with_jwt("a.b.c".into()),
            "invalid_token",
            "invalid token: not a well-formed jwt".to_owned(),
        ),
    ];
    for (case, request, reason, message) in cases {
        let counted = failures(&server.metrics().await, reason);
        let status = server.create(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(status.message(), message, "{case}");

        let (http, body) = server.rest_create(&as_json(&request)).await;
        assert_eq!(http, 401, "{case}: {body}");
        assert_eq!(body["code"], 16, "{case}");
        assert_eq!(body["message"], message.as_str(), "{case}");
        assert_eq!(
            failures(&server.metrics().await, reason),
            counted + 2,
            "{case}: counted once per refusal under {reason}"
        );
    }

    // Malformed requests are the caller's mistake, not a refused credential.
    let missing = server
        .create(iam::CreateIamTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(
        missing.message(),
        "identity: one of yandex_passport_oauth_token or jwt is required"
    );
    let (http, body) = server.rest_create(&json!({})).await;
    assert_eq!((http, body["code"].as_i64()), (400, Some(3)), "{body}");
    let long = server.create(with_jwt("e".repeat(8001))).await.unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    assert!(
        long.message()
            .contains("jwt: must be at most 8000 characters")
    );
    let (http, body) = server
        .rest_create(&json!({"yandexPassportOauthToken": "t".repeat(4001)}))
        .await;
    assert_eq!(http, 400, "{body}");
    assert_eq!(
        body["details"][0]["fieldViolations"][0]["field"],
        "yandexPassportOauthToken"
    );
    let (http, body) = server
        .rest_create(&json!({"jwt": "a.b.c", "yandexPassportOauthToken": OWNER}))
        .await;
    assert_eq!(http, 400, "one identity only: {body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_signing_key_the_exchange_is_unimplemented() {
    let files = Files::new();
    let server = Server::start(files.auth(None), Arc::new(SystemClock)).await;
    for request in [
        with_oauth(OWNER),
        with_jwt(sdk_jwt(&files, &server.audience())),
        iam::CreateIamTokenRequest::default(),
    ] {
        let status = server.create(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
        assert_eq!(status.message(), IAM_OFF);
        assert!(status.message().contains("--iam-signing-key"));
        let (http, body) = server.rest_create(&as_json(&request)).await;
        assert_eq!(http, 501, "{body}");
        assert_eq!(body["code"], 12);
        assert_eq!(body["message"], IAM_OFF);
    }
    // Tokens-file tokens still work as they always did.
    assert_eq!(server.list(OWNER).await.unwrap(), 0);
    server.stop().await;

    // With a key, the other methods of the service are not served.
    let server = Server::start(files.auth(Some("iam.pem")), Arc::new(SystemClock)).await;
    let mut client =
        iam::iam_token_service_client::IamTokenServiceClient::new(server.channel().await);
    let for_account = client
        .create_for_service_account(iam::CreateIamTokenForServiceAccountRequest {
            service_account_id: "compute".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(for_account.code(), Code::Unimplemented);
    let revoke = client
        .revoke(iam::RevokeIamTokenRequest {
            iam_token: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(revoke.code(), Code::Unimplemented);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_carry_their_grants_and_expire_by_the_servers_clock() {
    let files = Files::new();
    let clock = ManualClock::new(SystemClock.now());
    let server = Server::start(files.auth(Some("iam.pem")), Arc::new(clock.clone())).await;
    let token = server
        .create(with_jwt(sdk_jwt(&files, &server.audience())))
        .await
        .unwrap()
        .iam_token;
    let channel = server.channel().await;
    let mut producer = pb::producer_service_client::ProducerServiceClient::new(channel.clone());
    let mut cloud = ycop::operation_service_client::OperationServiceClient::new(channel);

    // compute: producer and viewer in folder-a, as its key's entry says.
    let created = producer
        .create(bearer(
            pb::CreateOperationRequest {
                description: "by a service account".into(),
                scope: "folder-a".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    assert_eq!(created.created_by, "compute");
    let got = cloud
        .get(bearer(
            ycop::GetOperationRequest {
                operation_id: created.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, created.id);
    let cancel = cloud
        .cancel(bearer(
            ycop::CancelOperationRequest {
                operation_id: created.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::PermissionDenied, "no operator role");
    let elsewhere = producer
        .create(bearer(
            pb::CreateOperationRequest {
                scope: "folder-b".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::PermissionDenied, "not its scope");

    clock.advance(LIFETIME - Duration::from_secs(1));
    assert_eq!(server.list(&token).await.unwrap(), 1);
    assert_eq!(server.rest_list(&token).await.0, 200);
    clock.advance(Duration::from_secs(1));
    let expired = server.list(&token).await.unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert_eq!(expired.message(), "token expired");
    let (http, body) = server.rest_list(&token).await;
    assert_eq!(
        (http, body["message"].as_str()),
        (401, Some("token expired"))
    );
    assert!(failures(&server.metrics().await, "expired") >= 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_one_signing_key_accept_each_others_tokens() {
    let files = Files::new();
    let a = Server::start(files.auth(Some("iam.pem")), Arc::new(SystemClock)).await;
    let b = Server::start(files.auth(Some("iam.pem")), Arc::new(SystemClock)).await;
    let other_key = Server::start(files.auth(Some("other-iam.pem")), Arc::new(SystemClock)).await;
    let no_key = Server::start(files.auth(None), Arc::new(SystemClock)).await;

    let from_a = a.create(with_oauth(OWNER)).await.unwrap().iam_token;
    let from_b = b
        .create(with_jwt(sdk_jwt(&files, &b.audience())))
        .await
        .unwrap()
        .iam_token;
    assert_eq!(b.list(&from_a).await.unwrap(), 0);
    assert_eq!(b.rest_list(&from_a).await.0, 200);
    assert_eq!(a.list(&from_b).await.unwrap(), 0);

    let refused = other_key.list(&from_a).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "unknown key: the iam token was signed with another iam signing key"
    );
    assert_eq!(failures(&other_key.metrics().await, "unknown_key"), 1);
    let refused = no_key.list(&from_a).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "invalid token: this server does not accept iam tokens"
    );
    // A replica's own service-account JWT audience is its own address; the
    // clouds' audience works on any.
    let for_a = sdk_jwt(&files, &a.audience());
    let at_b = b.create(with_jwt(for_a)).await.unwrap_err();
    assert_eq!(at_b.code(), Code::Unauthenticated);
    assert!(at_b.message().starts_with("wrong audience"));

    for server in [a, b, other_key, no_key] {
        server.stop().await;
    }
}

/// The real binary: the flags, the exchange and a call with the issued
/// token, and neither tokens nor key material in its logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exchanges_and_logs_no_secret() {
    let files = Files::new();
    let tokens = files.path("tokens.toml");
    let key = files.path("iam.pem");
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_opsd"))
        .args(["--print-config", "--iam-token-lifetime", "90m"])
        .args(["--iam-audience", "https://iam.opsd.example/iam/v1/tokens"])
        .arg("--iam-signing-key")
        .arg(&key)
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    for line in [
        format!("iam_signing_key = \"{}\"", key.display()),
        "iam_token_lifetime = \"90m\"".to_owned(),
        "iam_audiences = [\"https://iam.opsd.example/iam/v1/tokens\"]".to_owned(),
    ] {
        assert!(printed.contains(&line), "{line} missing from\n{printed}");
    }

    let process = crate::process::Process::start_with(&[
        "--store",
        "memory",
        "--tokens-file",
        tokens.to_str().unwrap(),
        "--iam-signing-key",
        key.to_str().unwrap(),
        "--iam-token-lifetime",
        "90m",
        "--iam-audience",
        "https://iam.opsd.example/iam/v1/tokens",
    ]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", process.endpoint))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = iam::iam_token_service_client::IamTokenServiceClient::new(channel.clone());
    let exchanged_jwt = sdk_jwt(&files, "https://iam.opsd.example/iam/v1/tokens");
    let answer = client
        .create(with_jwt(exchanged_jwt.clone()))
        .await
        .unwrap()
        .into_inner();
    let expires_at = answer.expires_at.unwrap().seconds;
    assert!((now() + 90 * 60 - 5..=now() + 90 * 60).contains(&expires_at));
    let mut operations = pb::operation_service_client::OperationServiceClient::new(channel);
    operations
        .list(bearer(
            pb::ListOperationsRequest::default(),
            &answer.iam_token,
        ))
        .await
        .unwrap();
    let refused_jwt = jwt(
        &files.rsa,
        Algorithm::PS256,
        "ajersa",
        json!({"iss": "compute", "aud": "https://nowhere", "iat": now(), "exp": now() + 60}),
    );
    assert!(client.create(with_jwt(refused_jwt.clone())).await.is_err());
    assert!(client.create(with_oauth(OWNER)).await.is_ok());

    let log = process.log_tail();
    process.terminate().await;
    assert!(log.contains("iam token exchange on"), "{log}");
    assert!(log.contains("iam token issued"), "{log}");
    assert!(
        log.contains("principal=compute"),
        "who got a token is logged: {log}"
    );
    assert!(
        log.contains("wrong_audience"),
        "refusals are logged by reason: {log}"
    );
    let signing_key = std::fs::read_to_string(&key).unwrap();
    let key_body: String = signing_key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let public_body: String = RSA_PUBLIC
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    for secret in [
        answer.iam_token.as_str(),
        exchanged_jwt.as_str(),
        refused_jwt.as_str(),
        OWNER,
        &key_body,
        &public_body[..40],
    ] {
        assert!(!log.contains(secret), "a token or key reached the log");
    }
    // Signatures, the most specific part of each, never appear either.
    for token in [&answer.iam_token, &exchanged_jwt] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature));
    }
}
