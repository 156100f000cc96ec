//! Authentication and tenant isolation over real gRPC and REST: every
//! credential case against every operation call gives exactly the documented
//! answer, and never shows a foreign operation's content.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::Listening;
use opsd_core::SystemClock;
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_server::auth::{AuthConfig, Authenticator, IamConfig, JwtConfig, hash_token};
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::{MemoryStore, OperationStore};
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";
const AUDIENCE: &str = "opsd";
/// Only ever in the target operations: no answer to a stranger may contain it.
const PRIVATE: &str = "private-description-of-folder-a";

struct Tokens {
    owner: String,
    viewer: String,
    producer: String,
    stranger: String,
}

struct Server {
    address: SocketAddr,
    listening: Listening,
    store: Arc<dyn OperationStore>,
    tokens: Tokens,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens {
            owner: "opsd_owner-token".into(),
            viewer: "opsd_viewer-token".into(),
            producer: "opsd_producer-token".into(),
            stranger: "opsd_stranger-token".into(),
        };
        let entry = |id: &str, token: &str, scopes: &str, roles: &str| {
            format!(
                "[[principal]]\nid = \"{id}\"\ntoken_sha256 = \"{}\"\nscopes = {scopes}\nroles = {roles}\n\n",
                hash_token(token)
            )
        };
        let file = [
            entry(
                "owner",
                &tokens.owner,
                r#"["folder-a"]"#,
                r#"["viewer", "operator", "producer"]"#,
            ),
            entry(
                "auditor",
                &tokens.viewer,
                r#"["folder-a"]"#,
                r#"["viewer"]"#,
            ),
            entry(
                "compute",
                &tokens.producer,
                r#"["folder-a"]"#,
                r#"["producer"]"#,
            ),
            entry(
                "stranger",
                &tokens.stranger,
                r#"["folder-b"]"#,
                r#"["admin"]"#,
            ),
        ]
        .concat();
        std::fs::write(dir.path().join("tokens.toml"), file).unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        let iam_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(dir.path().join("iam.pem"), iam_key).unwrap();
        let auth = Authenticator::from_config(&Self::auth_config(dir.path())).unwrap();

        let store: Arc<dyn OperationStore> = Arc::new(MemoryStore::new());
        let service = Arc::new(OperationService::new(
            Arc::clone(&store),
            Arc::new(SystemClock),
            ServiceConfig::default(),
        ));
        let listening = Listening::start(
            service,
            opsd_server::ServeOptions {
                auth: Arc::new(auth),
                ..Default::default()
            },
        )
        .await;
        Self {
            address: listening.address,
            listening,
            store,
            tokens,
            _dir: dir,
        }
    }

    /// Tokens, HS256 JWTs and IAM tokens of the files in `dir`.
    fn auth_config(dir: &std::path::Path) -> AuthConfig {
        AuthConfig {
            tokens_file: Some(dir.join("tokens.toml")),
            jwt: Some(JwtConfig {
                audience: Some(AUDIENCE.into()),
                hs256_secret_file: Some(dir.join("secret")),
                ..JwtConfig::default()
            }),
            iam: Some(IamConfig::new(dir.join("iam.pem"))),
        }
    }

    async fn stop(mut self) {
        self.listening.stop().await;
        self.store.close().await.unwrap();
    }

    /// The IAM token this server issues for a tokens-file `token`.
    async fn iam_token(&self, token: &str) -> String {
        let mut client =
            opsd_proto::yandex::cloud::iam::v1::iam_token_service_client::IamTokenServiceClient::new(
                self.channel().await,
            );
        let request = opsd_proto::yandex::cloud::iam::v1::CreateIamTokenRequest {
            identity: Some(
                opsd_proto::yandex::cloud::iam::v1::create_iam_token_request::Identity::YandexPassportOauthToken(
                    token.to_owned(),
                ),
            ),
        };
        client.create(request).await.unwrap().into_inner().iam_token
    }

    /// An IAM token for `token` that a replica with the same signing key
    /// issued 13 hours ago: expired by now.
    fn expired_iam_token(&self, token: &str) -> String {
        let past = opsd_core::Timestamp::from_unix_nanos(
            opsd_core::Clock::now(&SystemClock).unix_nanos() - 13 * 3600 * 1_000_000_000,
        );
        let replica = Authenticator::from_config(&Self::auth_config(self._dir.path()))
            .unwrap()
            .with_clock(Arc::new(opsd_core::ManualClock::new(past)));
        replica
            .exchange(opsd_server::auth::Credential::OauthToken(token), &[])
            .unwrap()
            .unwrap()
            .token
    }

    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A running cooperative operation in folder-a, made by the producer.
    async fn target(&self) -> String {
        let mut producer =
            pb::producer_service_client::ProducerServiceClient::new(self.channel().await);
        let request = with_auth(
            pb::CreateOperationRequest {
                description: PRIVATE.into(),
                scope: "folder-a".into(),
                cancellation_policy: pb::CancellationPolicy::Cooperative.into(),
                ..Default::default()
            },
            Some(&format!("Bearer {}", self.tokens.producer)),
        );
        let op = producer.create(request).await.unwrap().into_inner();
        let op = op.operation.unwrap();
        assert_eq!(
            op.created_by, "compute",
            "created_by is the authenticated principal"
        );
        op.id
    }
}

fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

fn jwt(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    CloudGet,
    CloudCancel,
    Get,
    List,
    Wait,
    Watch,
    Create,
    UpdateMetadata,
    Heartbeat,
    Complete,
    ReportFailure,
    ListEvents,
    Overview,
}

const CALLS: [Call; 13] = [
    Call::CloudGet,
    Call::CloudCancel,
    Call::Get,
    Call::List,
    Call::Wait,
    Call::Watch,
    Call::Create,
    Call::UpdateMetadata,
    Call::Heartbeat,
    Call::Complete,
    Call::ReportFailure,
    Call::ListEvents,
    Call::Overview,
];

impl Call {
    fn action(self) -> opsd_core::Action {
        match self {
            Call::CloudGet
            | Call::Get
            | Call::List
            | Call::Wait
            | Call::Watch
            | Call::ListEvents => opsd_core::Action::Read,
            Call::CloudCancel => opsd_core::Action::Cancel,
            Call::Overview => opsd_core::Action::Overview,
            _ => opsd_core::Action::Produce,
        }
    }

    /// The principal of folder-a that lacks this call's role, and one that has it.
    fn lacking_and_having(self, tokens: &Tokens) -> (String, String) {
        match self.action() {
            opsd_core::Action::Read | opsd_core::Action::Overview => {
                (tokens.producer.clone(), tokens.viewer.clone())
            }
            opsd_core::Action::Cancel => (tokens.viewer.clone(), tokens.owner.clone()),
            opsd_core::Action::Produce => (tokens.viewer.clone(), tokens.producer.clone()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Unauthenticated,
    NotFound,
    PermissionDenied,
}

/// What a call answered: its code, and all the text it returned.
struct Outcome {
    code: Code,
    text: String,
}

async fn grpc_call(server: &Server, call: Call, id: &str, authorization: Option<&str>) -> Outcome {
    let channel = server.channel().await;
    let mut cloud = ycop::operation_service_client::OperationServiceClient::new(channel.clone());
    let mut opsd = pb::operation_service_client::OperationServiceClient::new(channel.clone());
    let mut producer = pb::producer_service_client::ProducerServiceClient::new(channel);
    fn done<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
        match result {
            Ok(response) => Outcome {
                code: Code::Ok,
                text: format!("{:?}", response.into_inner()),
            },
            Err(status) => Outcome {
                code: status.code(),
                text: status.message().to_owned(),
            },
        }
    }
    let a = authorization;
    let id = id.to_owned();
    match call {
        Call::CloudGet => done(
            cloud
                .get(with_auth(ycop::GetOperationRequest { operation_id: id }, a))
                .await,
        ),
        Call::CloudCancel => done(
            cloud
                .cancel(with_auth(
                    ycop::CancelOperationRequest { operation_id: id },
                    a,
                ))
                .await,
        ),
        Call::Get => done(
            opsd.get(with_auth(pb::GetOperationRequest { operation_id: id }, a))
                .await,
        ),
        Call::List => done(
            opsd.list(with_auth(pb::ListOperationsRequest::default(), a))
                .await,
        ),
        Call::Overview => done(
            opsd.get_overview(with_auth(pb::GetOverviewRequest::default(), a))
                .await,
        ),
        Call::ListEvents => done(
            opsd.list_events(with_auth(
                pb::ListEventsRequest {
                    operation_id: id,
                    ..Default::default()
                },
                a,
            ))
            .await,
        ),
        Call::Wait => done(
            opsd.wait(with_auth(
                pb::WaitOperationRequest {
                    operation_id: id,
                    timeout: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 1_000_000,
                    }),
                },
                a,
            ))
            .await,
        ),
        Call::Watch => match opsd
            .watch(with_auth(pb::WatchOperationRequest { operation_id: id }, a))
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                let first = stream.message().await.unwrap().unwrap();
                Outcome {
                    code: Code::Ok,
                    text: format!("{first:?}"),
                }
            }
            Err(status) => Outcome {
                code: status.code(),
                text: status.message().to_owned(),
            },
        },
        Call::Create => done(
            producer
                .create(with_auth(
                    pb::CreateOperationRequest {
                        description: "new".into(),
                        scope: "folder-a".into(),
                        ..Default::default()
                    },
                    a,
                ))
                .await,
        ),
        Call::UpdateMetadata => done(
            producer
                .update_metadata(with_auth(
                    pb::UpdateMetadataRequest {
                        operation_id: id,
                        progress: Some(pb::Progress {
                            work_done: 1,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    a,
                ))
                .await,
        ),
        Call::Heartbeat => done(
            producer
                .heartbeat(with_auth(
                    pb::HeartbeatRequest {
                        operation_id: id,
                        lease_duration: None,
                    },
                    a,
                ))
                .await,
        ),
        Call::Complete => done(
            producer
                .complete(with_auth(
                    pb::CompleteOperationRequest {
                        operation_id: id,
                        result: Some(pb::complete_operation_request::Result::Error(
                            opsd_proto::RpcStatus {
                                code: 9,
                                message: "stopped".into(),
                                details: vec![],
                            },
                        )),
                    },
                    a,
                ))
                .await,
        ),
        Call::ReportFailure => done(
            producer
                .report_failure(with_auth(
                    pb::ReportFailureRequest {
                        operation_id: id,
                        error: Some(opsd_proto::RpcStatus {
                            code: 8,
                            message: "quota".into(),
                            details: vec![],
                        }),
                    },
                    a,
                ))
                .await,
        ),
    }
}

async fn rest_call(server: &Server, call: Call, id: &str, authorization: Option<&str>) -> Outcome {
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.address);
    let json = |body: &str| (body.to_owned(), "application/json");
    let (method, path, body) = match call {
        Call::CloudGet => ("GET", format!("/operations/{id}"), None),
        Call::CloudCancel => ("POST", format!("/operations/{id}:cancel"), None),
        Call::Get => ("GET", format!("/v1/operations/{id}"), None),
        Call::List => ("GET", "/v1/operations".to_owned(), None),
        Call::ListEvents => ("GET", format!("/v1/operations/{id}/events"), None),
        Call::Overview => ("GET", "/v1/overview".to_owned(), None),
        Call::Wait => (
            "GET",
            format!("/v1/operations/{id}:wait?timeout=0.001s"),
            None,
        ),
        // Watch is gRPC-only: its REST row checks the opsd.v1 Get again.
        Call::Watch => ("GET", format!("/v1/operations/{id}"), None),
        Call::Create => (
            "POST",
            "/v1/operations".to_owned(),
            Some(json(r#"{"description":"new","scope":"folder-a"}"#)),
        ),
        Call::UpdateMetadata => (
            "POST",
            format!("/v1/operations/{id}:updateMetadata"),
            Some(json(r#"{"progress":{"workDone":"1"}}"#)),
        ),
        Call::Heartbeat => ("POST", format!("/v1/operations/{id}:heartbeat"), None),
        Call::Complete => (
            "POST",
            format!("/v1/operations/{id}:complete"),
            Some(json(r#"{"error":{"code":9,"message":"stopped"}}"#)),
        ),
        Call::ReportFailure => (
            "POST",
            format!("/v1/operations/{id}:reportFailure"),
            Some(json(r#"{"error":{"code":8,"message":"quota"}}"#)),
        ),
    };
    let mut request = http.request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if let Some((body, content_type)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let code = match status {
        200 => Code::Ok,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        other => panic!("{call:?}: unexpected http status {other}: {text}"),
    };
    Outcome { code, text }
}

fn expected_code(answer: Answer) -> Code {
    match answer {
        Answer::Ok => Code::Ok,
        Answer::Unauthenticated => Code::Unauthenticated,
        Answer::NotFound => Code::NotFound,
        Answer::PermissionDenied => Code::PermissionDenied,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_against_every_call_on_grpc_and_rest() {
    let server = Server::start().await;
    let expired = jwt(serde_json::json!({
        "sub": "owner", "aud": AUDIENCE, "exp": now() - 3600,
        "scopes": ["folder-a"], "roles": ["admin"],
    }));
    let wrong_audience = jwt(serde_json::json!({
        "sub": "owner", "aud": "someone-else", "exp": now() + 600,
        "scopes": ["folder-a"], "roles": ["admin"],
    }));
    let valid_jwt_admin = jwt(serde_json::json!({
        "sub": "jwt-admin", "aud": AUDIENCE, "exp": now() + 600,
        "scopes": ["folder-a"], "roles": ["admin"],
    }));
    // IAM tokens the server issued for tokens-file tokens, which must pass the
    // gate exactly as those tokens do.
    let mut iam_of = std::collections::HashMap::new();
    for token in [
        &server.tokens.owner,
        &server.tokens.viewer,
        &server.tokens.producer,
        &server.tokens.stranger,
    ] {
        iam_of.insert(token.clone(), server.iam_token(token).await);
    }
    let expired_iam = server.expired_iam_token(&server.tokens.owner);

    for rest in [false, true] {
        for call in CALLS {
            let (lacking, having) = call.lacking_and_having(&server.tokens);
            let cases: Vec<(&str, Option<String>, Answer)> = vec![
                ("no token", None, Answer::Unauthenticated),
                (
                    "malformed",
                    Some("Basic dXNlcjpwYXNz".into()),
                    Answer::Unauthenticated,
                ),
                (
                    "unknown",
                    Some("Bearer opsd_not-a-known-token".into()),
                    Answer::Unauthenticated,
                ),
                (
                    "expired jwt",
                    Some(format!("Bearer {expired}")),
                    Answer::Unauthenticated,
                ),
                (
                    "wrong audience",
                    Some(format!("Bearer {wrong_audience}")),
                    Answer::Unauthenticated,
                ),
                (
                    "another tenant",
                    Some(format!("Bearer {}", server.tokens.stranger)),
                    match call {
                        Call::List | Call::Overview => Answer::Ok,
                        Call::Create => Answer::PermissionDenied,
                        _ => Answer::NotFound,
                    },
                ),
                (
                    "lacking the role",
                    Some(format!("Bearer {lacking}")),
                    Answer::PermissionDenied,
                ),
                (
                    "with the role",
                    Some(format!("Api-Key {having}")),
                    Answer::Ok,
                ),
                (
                    "jwt with the role",
                    Some(format!("Bearer {valid_jwt_admin}")),
                    Answer::Ok,
                ),
                (
                    "expired iam token",
                    Some(format!("Bearer {expired_iam}")),
                    Answer::Unauthenticated,
                ),
                (
                    "another tenant's iam token",
                    Some(format!("Bearer {}", iam_of[&server.tokens.stranger])),
                    match call {
                        Call::List | Call::Overview => Answer::Ok,
                        Call::Create => Answer::PermissionDenied,
                        _ => Answer::NotFound,
                    },
                ),
                (
                    "iam token lacking the role",
                    Some(format!("Bearer {}", iam_of[&lacking])),
                    Answer::PermissionDenied,
                ),
                (
                    "iam token with the role",
                    Some(format!("Bearer {}", iam_of[&having])),
                    Answer::Ok,
                ),
            ];
            for (case, authorization, answer) in cases {
                let id = server.target().await;
                let outcome = if rest {
                    rest_call(&server, call, &id, authorization.as_deref()).await
                } else {
                    grpc_call(&server, call, &id, authorization.as_deref()).await
                };
                let protocol = if rest { "rest" } else { "grpc" };
                assert_eq!(
                    outcome.code,
                    expected_code(answer),
                    "{protocol} {call:?} with {case}: {}",
                    outcome.text
                );
                if case.starts_with("expired") {
                    assert!(
                        outcome.text.contains("expired"),
                        "{protocol} {call:?}: {}",
                        outcome.text
                    );
                }
                if answer != Answer::Ok || case.starts_with("another tenant") {
                    assert!(
                        !outcome.text.contains(PRIVATE),
                        "{protocol} {call:?} with {case} leaked the operation: {}",
                        outcome.text
                    );
                }
                if case.starts_with("another tenant") && answer == Answer::NotFound {
                    // Exactly what an unknown id gets: ids cannot be probed.
                    let unknown = if rest {
                        rest_call(
                            &server,
                            call,
                            "ops00000000000000000",
                            authorization.as_deref(),
                        )
                        .await
                    } else {
                        grpc_call(
                            &server,
                            call,
                            "ops00000000000000000",
                            authorization.as_deref(),
                        )
                        .await
                    };
                    assert_eq!(unknown.code, Code::NotFound);
                    assert_eq!(
                        outcome.text.replace(&id, "ID"),
                        unknown.text.replace("ops00000000000000000", "ID"),
                        "{protocol} {call:?}: a foreign id answers like an unknown one"
                    );
                }
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_iam_health_metrics_and_openapi_need_no_credentials() {
    let server = Server::start().await;
    let channel = server.channel().await;
    let mut discovery =
        opsd_proto::yandex::cloud::endpoint::api_endpoint_service_client::ApiEndpointServiceClient::new(
            channel.clone(),
        );
    let endpoints = discovery
        .list(opsd_proto::yandex::cloud::endpoint::ListApiEndpointsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(endpoints.endpoints.iter().any(|e| e.id == "operation"));
    // The IAM token exchange is how a caller gets credentials: it needs none.
    let issued = server.iam_token(&server.tokens.viewer).await;
    assert!(!issued.is_empty());
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for path in ["/metrics", "/openapi.yaml"] {
        let response = http
            .get(format!("http://{}{path}", server.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // Refusals are counted by reason.
    let _ = grpc_call(&server, Call::Get, "ops00000000000000000", None).await;
    let metrics = http
        .get(format!("http://{}/metrics", server.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"opsd_auth_failures_total{reason="missing"} "#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_by_is_the_principal_on_every_path() {
    let server = Server::start().await;
    let id = server.target().await; // gRPC, checked inside
    let _ = id;
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("http://{}/v1/operations", server.address))
        .header("authorization", format!("Bearer {}", server.tokens.owner))
        .header("content-type", "application/json")
        .body(r#"{"description":"via rest"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["operation"]["createdBy"], "owner");
    assert_eq!(created["scope"], "folder-a", "the caller's only scope");
    let via_jwt = opsd_client::Client::connect_with(
        &server.address.to_string(),
        opsd_client::ConnectOptions {
            token: Some(jwt(serde_json::json!({
                "sub": "jwt-producer", "aud": AUDIENCE, "exp": now() + 600,
                "scopes": ["folder-a"], "roles": ["producer"],
            }))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let op = via_jwt
        .create(opsd_client::NewOperation::new("via jwt"))
        .await
        .unwrap();
    assert_eq!(op.operation.unwrap().created_by, "jwt-producer");
    server.stop().await;
}

/// Tokens never reach the logs, whether they are accepted or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (token, hash) = opsd_server::auth::new_token();
    std::fs::write(
        dir.path().join("tokens.toml"),
        format!(
            "[[principal]]\nid = \"compute\"\ntoken_sha256 = \"{hash}\"\nscopes = [\"*\"]\nroles = [\"admin\"]\n"
        ),
    )
    .unwrap();
    let log_path = dir.path().join("opsd.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_opsd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--tokens-file",
        ])
        .arg(dir.path().join("tokens.toml"))
        .env("OPSD_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let endpoint = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if let Some(rest) = log.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "opsd did not start: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    let connect = |token: &str| {
        opsd_client::Client::connect_with(
            &endpoint,
            opsd_client::ConnectOptions {
                token: Some(token.to_owned()),
                ..Default::default()
            },
        )
    };
    let accepted = connect(&token).await.unwrap();
    let op = accepted
        .create(opsd_client::NewOperation::new("logged"))
        .await
        .unwrap();
    accepted.get(&op.operation.unwrap().id).await.unwrap();
    let refused_token = format!("{token}-but-wrong");
    let refused = connect(&refused_token).await.unwrap();
    assert!(refused.get("ops00000000000000000").await.is_err());
    let jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    assert!(
        connect(jwt_like)
            .await
            .unwrap()
            .get("ops00000000000000000")
            .await
            .is_err()
    );

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("unknown token") || log.contains("unknown_token"),
        "failures are logged: {log}"
    );
    for secret in [
        token.as_str(),
        refused_token.as_str(),
        jwt_like,
        &token[5..],
    ] {
        assert!(!log.contains(secret), "a token reached the log");
    }
}

/// Secure by default: anonymous only on loopback; with credentials, any address.
#[test]
fn credentials_allow_listening_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (_, hash) = opsd_server::auth::new_token();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[principal]]\nid = \"p\"\ntoken_sha256 = \"{hash}\"\nscopes = [\"*\"]\nroles = [\"viewer\"]\n"),
    )
    .unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_opsd"))
        .args(["--listen", "0.0.0.0:0", "--store", "memory"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_opsd"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--store",
            "memory",
            "--tokens-file",
        ])
        .arg(&tokens)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let listening = lines.any(|line| line.unwrap().contains("opsd listening"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(listening, "opsd listens on 0.0.0.0 once credentials exist");
}

/// The feed shows only what the caller may see: another tenant's events
/// never reach it, even when it asks for that tenant's scope by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_shows_a_caller_only_its_scopes() {
    let server = Server::start().await;
    let mut opsd =
        pb::operation_service_client::OperationServiceClient::new(server.channel().await);
    let refused = opsd
        .watch_operations(pb::WatchOperationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let stranger = Some(format!("Bearer {}", server.tokens.stranger));
    let mut everything = opsd
        .watch_operations(with_auth(
            pb::WatchOperationsRequest::default(),
            stranger.as_deref(),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut asked_for_a = opsd
        .watch_operations(with_auth(
            pb::WatchOperationsRequest {
                scope: "folder-a".into(),
                ..Default::default()
            },
            stranger.as_deref(),
        ))
        .await
        .unwrap()
        .into_inner();
    // Both open with a bookmark, which names no operation.
    for stream in [&mut everything, &mut asked_for_a] {
        let bookmark = stream.message().await.unwrap().unwrap();
        assert_eq!(bookmark.event, None);
    }
    // folder-a's operation first, then one of the stranger's own.
    server.target().await;
    let mut producer =
        pb::producer_service_client::ProducerServiceClient::new(server.channel().await);
    let own = producer
        .create(with_auth(
            pb::CreateOperationRequest {
                description: "the stranger's".into(),
                scope: "folder-b".into(),
                ..Default::default()
            },
            stranger.as_deref(),
        ))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), everything.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event = first.event.unwrap();
    assert_eq!(
        event.operation_id,
        own.operation.unwrap().id,
        "folder-a's was skipped"
    );
    assert_eq!(event.scope, "folder-b");
    assert!(!format!("{event:?}").contains(PRIVATE));
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(300), asked_for_a.message()).await;
    assert!(
        nothing.is_err(),
        "no scope of the caller's was asked for: nothing arrives"
    );
    server.stop().await;
}

/// `GET /v1/caller` answers who the credentials name and what they allow (the
/// console shows only what that is); without credentials it is refused like
/// every API call. The console's own files need none: they hold no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_route_tells_a_principal_what_it_may_do() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/caller", server.address);
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = http
        .get(&url)
        .bearer_auth("opsd_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let ask = |token: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let response = http.get(&url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let viewer = ask(server.tokens.viewer.clone()).await;
    assert_eq!(
        viewer,
        serde_json::json!({
            "id": "auditor",
            "allScopes": false,
            "scopes": ["folder-a"],
            "roles": ["viewer"],
            "may": {"read": true, "cancel": false, "produce": false},
        })
    );
    let owner = ask(server.tokens.owner.clone()).await;
    assert_eq!(
        owner["roles"],
        serde_json::json!(["viewer", "operator", "producer"])
    );
    assert_eq!(
        owner["may"],
        serde_json::json!({"read": true, "cancel": true, "produce": true})
    );
    let stranger = ask(server.tokens.stranger.clone()).await;
    assert_eq!(stranger["scopes"], serde_json::json!(["folder-b"]));
    assert_eq!(stranger["may"]["cancel"], true);

    for path in ["/console", "/console/console.js", "/console/settings.json"] {
        let response = http
            .get(format!("http://{}{path}", server.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let settings: serde_json::Value = http
        .get(format!("http://{}/console/settings.json", server.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["credentialsRequired"], true);
    server.stop().await;
}
