//! End-to-end tests over real gRPC: a server on port 0 with the SQLite store,
//! driven by the opsd client. Each rule of design.md §3 built so far is pinned
//! with its exact status code.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use opsd_client::{CancellationPolicy, Client, ClientError, Completion, NewOperation, pack_struct};
use opsd_core::SystemClock;
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::{OperationStore, SqliteOptions, SqliteStore};
use tokio::sync::oneshot;

use crate::process::Process;
use crate::support::Listening;
use tonic::Code;
use tonic_types::StatusExt;

struct TestServer {
    client: Client,
    address: SocketAddr,
    listening: Listening,
    store: Arc<dyn OperationStore>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn OperationStore> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap());
        let service = Arc::new(OperationService::new(
            Arc::clone(&store),
            Arc::new(SystemClock),
            ServiceConfig::default(),
        ));
        let listening = Listening::start(service, Default::default()).await;
        let address = listening.address;
        let client = Client::connect(&address.to_string()).await.unwrap();
        Self {
            client,
            address,
            listening,
            store,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        self.listening.stop().await;
        self.store.close().await.unwrap();
    }
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> Code {
    match result {
        Err(ClientError::Rpc(status)) => status.code(),
        other => panic!("expected an rpc error, got {other:?}"),
    }
}

fn status(result: Result<impl std::fmt::Debug, ClientError>) -> tonic::Status {
    match result {
        Err(ClientError::Rpc(status)) => status,
        other => panic!("expected an rpc error, got {other:?}"),
    }
}

fn policy(policy: CancellationPolicy) -> NewOperation {
    NewOperation {
        cancellation_policy: policy,
        ..NewOperation::new("create instance")
    }
}

fn struct_response(name: &str) -> Completion {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "name".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(name.to_owned())),
        },
    );
    Completion::Response(pack_struct(&prost_types::Struct { fields }))
}

fn failure(code: i32, message: &str) -> Completion {
    Completion::Error(opsd_proto::RpcStatus {
        code,
        message: message.into(),
        details: vec![],
    })
}

trait HasClient {
    fn client(&self) -> &Client;
}

impl HasClient for TestServer {
    fn client(&self) -> &Client {
        &self.client
    }
}

impl HasClient for TestServerRef<'_> {
    fn client(&self) -> &Client {
        self.0
    }
}

async fn create(server: &impl HasClient, new: NewOperation) -> opsd_client::Operation {
    server
        .client()
        .create(new)
        .await
        .unwrap()
        .operation
        .unwrap()
}

#[tokio::test]
async fn get_with_an_empty_id_names_the_field() {
    let server = TestServer::start().await;
    for result in [server.client.get("").await, server.client.cancel("").await] {
        let status = status(result);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("a BadRequest detail");
        assert_eq!(bad_request.field_violations[0].field, "operation_id");
    }
    assert_eq!(
        code(server.client.get("not an id").await),
        Code::InvalidArgument
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let server = TestServer::start().await;
    assert_eq!(
        code(server.client.get("ops00000000000000000").await),
        Code::NotFound
    );
    assert_eq!(
        code(server.client.cancel("ops00000000000000000").await),
        Code::NotFound
    );
    assert_eq!(
        code(
            server
                .client
                .complete("ops00000000000000000", failure(9, "x"))
                .await
        ),
        Code::NotFound
    );
    server.stop().await;
}

#[tokio::test]
async fn created_operations_are_readable_at_once_and_well_formed() {
    let server = TestServer::start().await;
    let created = create(&server, policy(CancellationPolicy::Immediate)).await;
    assert_eq!(created.id.len(), 20);
    assert!(
        created
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    assert_eq!(created.created_by, "anonymous");
    assert!(!created.done && created.result.is_none());

    let got = server.client.get(&created.id).await.unwrap();
    assert_eq!(got, created);
    let (c, m) = (got.created_at.unwrap(), got.modified_at.unwrap());
    assert!(
        (c.seconds, c.nanos) <= (m.seconds, m.nanos),
        "created_at <= modified_at"
    );

    let mut named = policy(CancellationPolicy::Immediate);
    named.id_prefix = Some("fhm".into());
    assert!(create(&server, named).await.id.starts_with("fhm"));
    server.stop().await;
}

#[tokio::test]
async fn cancel_of_a_not_cancellable_operation_is_a_failed_precondition() {
    let server = TestServer::start().await;
    let op = create(&server, policy(CancellationPolicy::NotCancellable)).await;
    let status = status(server.client.cancel(&op.id).await);
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    assert_eq!(
        details.precondition_failure().unwrap().violations[0].r#type,
        "NOT_CANCELLABLE"
    );
    assert!(!server.client.get(&op.id).await.unwrap().done);
    server.stop().await;
}

#[tokio::test]
async fn cancel_of_a_completed_operation_is_a_failed_precondition() {
    let server = TestServer::start().await;
    let op = create(&server, policy(CancellationPolicy::Immediate)).await;
    server
        .client
        .complete(&op.id, struct_response("vm-1"))
        .await
        .unwrap();
    assert_eq!(
        code(server.client.cancel(&op.id).await),
        Code::FailedPrecondition
    );

    let failed = create(&server, policy(CancellationPolicy::Immediate)).await;
    server
        .client
        .complete(&failed.id, failure(9, "quota exceeded"))
        .await
        .unwrap();
    assert_eq!(
        code(server.client.cancel(&failed.id).await),
        Code::FailedPrecondition
    );
    server.stop().await;
}

#[tokio::test]
async fn immediate_cancel_is_done_with_code_1_and_repeats_unchanged() {
    let server = TestServer::start().await;
    let op = create(&server, policy(CancellationPolicy::Immediate)).await;
    let cancelled = server.client.cancel(&op.id).await.unwrap();
    assert!(cancelled.done);
    match &cancelled.result {
        Some(opsd_proto::yandex::cloud::operation::operation::Result::Error(status)) => {
            assert_eq!(status.code, 1)
        }
        other => panic!("expected a cancelled error, got {other:?}"),
    }
    let again = server.client.cancel(&op.id).await.unwrap();
    assert_eq!(
        again, cancelled,
        "cancel twice returns the same cancelled operation"
    );
    assert_eq!(server.client.get(&op.id).await.unwrap(), cancelled);
    server.stop().await;
}

#[tokio::test]
async fn cooperative_cancel_reaches_the_producer_which_completes() {
    let server = TestServer::start().await;
    let op = create(&server, policy(CancellationPolicy::Cooperative)).await;

    let requested = server.client.cancel(&op.id).await.unwrap();
    assert!(!requested.done, "the producer has not stopped yet");

    // The producer learns of it from its own view of the operation...
    let view = server.client.get_details(&op.id).await.unwrap();
    assert_eq!(
        view.state(),
        opsd_proto::opsd::v1::OperationState::CancelRequested
    );
    assert!(view.cancel_requested_at.is_some());
    // ...and from the answer to its progress report.
    let progress = server
        .client
        .update_metadata(&op.id, pack_struct(&prost_types::Struct::default()))
        .await
        .unwrap();
    assert!(progress.cancel_requested_at.is_some());

    let done = server
        .client
        .complete(&op.id, failure(1, "cancelled by user"))
        .await
        .unwrap();
    assert_eq!(done.state(), opsd_proto::opsd::v1::OperationState::Done);
    let public = server.client.get(&op.id).await.unwrap();
    assert!(public.done);
    // Cancelling the cancelled operation again returns it unchanged.
    assert_eq!(server.client.cancel(&op.id).await.unwrap(), public);
    server.stop().await;
}

#[tokio::test]
async fn the_first_completion_wins() {
    let server = TestServer::start().await;
    let op = create(&server, policy(CancellationPolicy::Immediate)).await;
    let first = server
        .client
        .complete(&op.id, struct_response("vm-1"))
        .await
        .unwrap();
    let repeat = server
        .client
        .complete(&op.id, struct_response("vm-1"))
        .await
        .unwrap();
    assert_eq!(
        repeat, first,
        "the same completion twice is a no-op success"
    );
    assert_eq!(
        code(
            server
                .client
                .complete(&op.id, struct_response("vm-2"))
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(server.client.complete(&op.id, failure(13, "boom")).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        server.client.get(&op.id).await.unwrap(),
        first.operation.unwrap()
    );
    assert_eq!(
        code(
            server
                .client
                .update_metadata(&op.id, pack_struct(&prost_types::Struct::default()))
                .await
        ),
        Code::FailedPrecondition
    );
    server.stop().await;
}

#[tokio::test]
async fn descriptions_are_limited_to_256_characters() {
    let server = TestServer::start().await;
    let ok = create(&server, NewOperation::new("я".repeat(256))).await;
    assert_eq!(ok.description.chars().count(), 256);
    let status = status(
        server
            .client
            .create(NewOperation::new("я".repeat(257)))
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "description"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_fields_are_invalid_arguments() {
    let server = TestServer::start().await;
    let mut bad_prefix = NewOperation::new("x");
    bad_prefix.id_prefix = Some("1ab".into());
    assert_eq!(
        code(server.client.create(bad_prefix).await),
        Code::InvalidArgument
    );

    let mut bad_metadata = NewOperation::new("x");
    bad_metadata.metadata = Some(prost_types::Any {
        type_url: String::new(),
        value: vec![],
    });
    assert_eq!(
        code(server.client.create(bad_metadata).await),
        Code::InvalidArgument
    );

    let op = create(&server, NewOperation::new("x")).await;
    assert_eq!(
        code(
            server
                .client
                .complete(&op.id, failure(0, "ok is not an error"))
                .await
        ),
        Code::InvalidArgument
    );
    assert!(
        !server.client.get(&op.id).await.unwrap().done,
        "nothing half-written"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_used_idempotency_key_returns_the_same_operation() {
    let server = TestServer::start().await;
    let mut keyed = NewOperation::new("create instance");
    keyed.idempotency_key = Some("request-42".into());
    let first = create(&server, keyed.clone()).await;
    let second = create(&server, keyed.clone()).await;
    assert_eq!(first.id, second.id);

    // The clouds' SDKs send the key as a header; it counts the same.
    let mut producer =
        opsd_proto::opsd::v1::producer_service_client::ProducerServiceClient::connect(format!(
            "http://{}",
            server.address
        ))
        .await
        .unwrap();
    let mut request = tonic::Request::new(opsd_proto::opsd::v1::CreateOperationRequest {
        description: "create instance".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("idempotency-key", "request-42".parse().unwrap());
    let by_header = producer.create(request).await.unwrap().into_inner();
    assert_eq!(by_header.operation.unwrap().id, first.id);

    // The same key for a different request is refused, not silently merged.
    keyed.description = "delete instance".into();
    assert_eq!(
        code(server.client.create(keyed).await),
        Code::FailedPrecondition
    );
    server.stop().await;
}

async fn write_some_operations(client: &Client) -> Vec<opsd_client::Operation> {
    let mut ops = Vec::new();
    for i in 0..20 {
        let op = client
            .create(policy(match i % 3 {
                0 => CancellationPolicy::Immediate,
                1 => CancellationPolicy::Cooperative,
                _ => CancellationPolicy::NotCancellable,
            }))
            .await
            .unwrap();
        let id = op.operation.unwrap().id;
        match i % 4 {
            0 => drop(
                client
                    .complete(&id, struct_response(&format!("vm-{i}")))
                    .await
                    .unwrap(),
            ),
            1 => drop(
                client
                    .complete(&id, failure(9, "quota exceeded"))
                    .await
                    .unwrap(),
            ),
            2 if i % 3 != 2 => drop(client.cancel(&id).await.unwrap()),
            _ => {}
        }
        ops.push(client.get(&id).await.unwrap());
    }
    ops
}

async fn assert_unchanged(endpoint: &str, ops: &[opsd_client::Operation]) {
    let client = Client::connect(endpoint).await.unwrap();
    for op in ops {
        assert_eq!(&client.get(&op.id).await.unwrap(), op);
    }
}

/// Writes through one process, stops it as `stop` says, and reads everything
/// back, unchanged, through a new process on the same data directory.
async fn operations_survive(
    stop: fn(Process) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let first = Process::start(dir.path());
    let ops = write_some_operations(&Client::connect(&first.endpoint).await.unwrap()).await;
    stop(first).await;

    let second = Process::start(dir.path());
    assert_unchanged(&second.endpoint, &ops).await;
    second.terminate().await;
}

#[tokio::test]
async fn operations_survive_a_clean_restart() {
    operations_survive(|process| Box::pin(process.terminate())).await;
}

#[tokio::test]
async fn acknowledged_operations_survive_kill_9() {
    operations_survive(|process| Box::pin(process.kill_9())).await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Process::start(dir.path());
    let second = Command::new(env!("CARGO_BIN_EXE_opsd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another opsd"));
    first.terminate().await;
}

#[test]
fn non_loopback_addresses_are_refused_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_opsd"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "yandex.cloud.operation.OperationService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // Both reflection versions list every service (grpcurl speaks v1alpha).
    use tonic_reflection::pb::{v1, v1alpha};
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(listed)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = listed.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "yandex.cloud.operation.OperationService",
        "opsd.v1.OperationService",
        "opsd.v1.ProducerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "yandex.cloud.operation.OperationService".into(),
            ),
        ),
    };
    let mut answers = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap().message_response;
    assert!(
        matches!(
            answer,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "{answer:?}"
    );
    server.stop().await;
}

/// The real SQLite store, with inserts held at a gate so the test controls
/// which calls are in flight when the server is told to stop.
struct GatedStore {
    inner: SqliteStore,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    gate: tokio::sync::Semaphore,
}

#[tonic::async_trait]
impl OperationStore for GatedStore {
    async fn insert(
        &self,
        operation: &opsd_core::Operation,
        event: &opsd_core::NewEvent,
    ) -> Result<opsd_store::Inserted, opsd_store::StoreError> {
        let _ = self.entered.send(());
        self.gate.acquire().await.unwrap().forget();
        self.inner.insert(operation, event).await
    }
    async fn get(
        &self,
        id: &opsd_core::OperationId,
    ) -> Result<Option<opsd_core::Operation>, opsd_store::StoreError> {
        self.inner.get(id).await
    }
    async fn compare_and_swap(
        &self,
        next: &opsd_core::Operation,
        event: Option<&opsd_core::NewEvent>,
    ) -> Result<opsd_store::Swapped, opsd_store::StoreError> {
        self.inner.compare_and_swap(next, event).await
    }
    async fn list_events(
        &self,
        id: &opsd_core::OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<opsd_core::Event>, opsd_store::StoreError> {
        self.inner.list_events(id, after, limit).await
    }
    async fn read_feed(
        &self,
        after: u64,
        filter: &opsd_core::EventFilter,
        limit: usize,
    ) -> Result<Vec<opsd_core::Event>, opsd_store::StoreError> {
        self.inner.read_feed(after, filter, limit).await
    }
    async fn feed_bounds(&self) -> Result<opsd_store::FeedBounds, opsd_store::StoreError> {
        self.inner.feed_bounds().await
    }
    async fn list(
        &self,
        query: &opsd_core::ListQuery,
    ) -> Result<Vec<opsd_core::Operation>, opsd_store::StoreError> {
        self.inner.list(query).await
    }
    async fn due_for_expiry(
        &self,
        now: opsd_core::Timestamp,
        limit: usize,
    ) -> Result<Vec<opsd_core::Operation>, opsd_store::StoreError> {
        self.inner.due_for_expiry(now, limit).await
    }
    async fn delete_done_before(
        &self,
        cutoff: opsd_core::Timestamp,
        limit: usize,
    ) -> Result<usize, opsd_store::StoreError> {
        self.inner.delete_done_before(cutoff, limit).await
    }
    async fn progress_samples(
        &self,
        query: &opsd_core::overview::ProgressQuery,
    ) -> Result<Vec<opsd_core::overview::ProgressSample>, opsd_store::StoreError> {
        self.inner.progress_samples(query).await
    }
    async fn overview(
        &self,
        query: &opsd_core::overview::OverviewQuery,
    ) -> Result<opsd_core::overview::OverviewRows, opsd_store::StoreError> {
        self.inner.overview(query).await
    }
    async fn count_running(&self) -> Result<u64, opsd_store::StoreError> {
        self.inner.count_running().await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<opsd_store::Change> {
        self.inner.subscribe()
    }
    async fn close(&self) -> Result<(), opsd_store::StoreError> {
        self.inner.close().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_calls_in_flight() {
    const IN_FLIGHT: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opsd.db");
    let (entered, mut entries) = tokio::sync::mpsc::unbounded_channel();
    let store = Arc::new(GatedStore {
        inner: SqliteStore::open(SqliteOptions::new(&path)).unwrap(),
        entered,
        gate: tokio::sync::Semaphore::new(0),
    });
    let service = Arc::new(OperationService::new(
        Arc::clone(&store) as Arc<dyn OperationStore>,
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(opsd_server::serve(
        listener,
        service,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = Client::connect(&address.to_string()).await.unwrap();
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.create(NewOperation::new(format!("op {i}"))).await })
        })
        .collect();
    for _ in 0..IN_FLIGHT {
        entries.recv().await.unwrap();
    }

    // Every call is inside the store now. Stop the server, then let them through.
    stop.send(()).unwrap();
    tokio::task::yield_now().await;
    store.gate.add_permits(IN_FLIGHT);
    server.await.unwrap().unwrap();
    store.close().await.unwrap();

    let reopened = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    for call in calls {
        let op = call
            .await
            .unwrap()
            .expect("a call in flight at the stop completes");
        let id = opsd_core::OperationId::parse("id", &op.operation.unwrap().id).unwrap();
        assert!(
            reopened.get(&id).await.unwrap().is_some(),
            "acknowledged but lost"
        );
    }
    reopened.close().await.unwrap();
}

/// Two opsd processes on one PostgreSQL database behave as one service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_agree() {
    let Some(database) = opsd_testkit::postgres().await else {
        return;
    };
    let a = Process::start_with(&["--store", &database.url]);
    let b = Process::start_with(&["--store", &database.url]);
    let (client_a, client_b) = (
        Client::connect(&a.endpoint).await.unwrap(),
        Client::connect(&b.endpoint).await.unwrap(),
    );

    for _ in 0..20 {
        // Created through A, found through B at once: SDKs do not retry NOT_FOUND.
        let op = client_a
            .create(policy(CancellationPolicy::Cooperative))
            .await
            .unwrap()
            .operation
            .unwrap();
        assert_eq!(client_b.get(&op.id).await.unwrap(), op);

        // Cancelled through B, the producer attached to A learns of it.
        client_b.cancel(&op.id).await.unwrap();
        let view = client_a.get_details(&op.id).await.unwrap();
        assert_eq!(
            view.state(),
            opsd_proto::opsd::v1::OperationState::CancelRequested
        );

        // Completed through A, done through B.
        let done = client_a
            .complete(&op.id, failure(1, "stopped"))
            .await
            .unwrap();
        assert_eq!(client_b.get(&op.id).await.unwrap(), done.operation.unwrap());
    }

    // Racing completions through both replicas: exactly one wins.
    for _ in 0..20 {
        let op = create_via(&client_a).await;
        let (ra, rb) = tokio::join!(
            client_a.complete(&op.id, struct_response("from-a")),
            client_b.complete(&op.id, struct_response("from-b")),
        );
        let stored = client_a.get(&op.id).await.unwrap();
        let winners = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{ra:?} {rb:?}");
        let winner = if ra.is_ok() { ra } else { rb };
        assert_eq!(winner.unwrap().operation.unwrap(), stored);
    }
    a.terminate().await;
    b.terminate().await;
}

async fn create_via(client: &Client) -> opsd_client::Operation {
    client
        .create(NewOperation::new("x"))
        .await
        .unwrap()
        .operation
        .unwrap()
}

// ---------------------------------------------------------------------------
// opsd.v1 extensions (List, Wait, Watch, progress, leases, deadlines, resource
// guard, retention, poll hint), each run on SQLite and on PostgreSQL.

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One opsd replica served over real gRPC on port 0.
struct Replica {
    client: Client,
    address: SocketAddr,
    service: Arc<OperationService>,
    listening: Listening,
}

/// Replicas sharing one store (one SQLite file, or one PostgreSQL database),
/// with time on a manual clock.
struct Deployment {
    replicas: Vec<Replica>,
    stores: Vec<Arc<dyn OperationStore>>,
    clock: opsd_core::ManualClock,
    _dir: Option<tempfile::TempDir>,
}

impl Deployment {
    /// `None` when the backend is unavailable here (announced by the test kit).
    async fn start(backend: Backend, replicas: usize) -> Option<Self> {
        let clock = opsd_core::ManualClock::new(opsd_core::Clock::now(&SystemClock));
        let (stores, dir): (Vec<Arc<dyn OperationStore>>, _) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store: Arc<dyn OperationStore> = Arc::new(
                    SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap(),
                );
                // In one process, replicas of an embedded store share the store itself.
                (
                    (0..replicas).map(|_| Arc::clone(&store)).collect(),
                    Some(dir),
                )
            }
            Backend::Postgres => {
                let database = opsd_testkit::postgres().await?;
                let mut stores: Vec<Arc<dyn OperationStore>> = Vec::new();
                for _ in 0..replicas {
                    let store = opsd_store::PostgresStore::open(opsd_store::PostgresOptions::new(
                        &database.url,
                    ))
                    .await
                    .unwrap();
                    stores.push(Arc::new(store));
                }
                (stores, None)
            }
        };
        let mut started = Vec::new();
        for store in &stores {
            let service = Arc::new(OperationService::new(
                Arc::clone(store),
                Arc::new(clock.clone()),
                ServiceConfig::default(),
            ));
            let listening = Listening::start(Arc::clone(&service), Default::default()).await;
            let address = listening.address;
            started.push(Replica {
                client: Client::connect(&address.to_string()).await.unwrap(),
                address,
                service,
                listening,
            });
        }
        Some(Self {
            replicas: started,
            stores,
            clock,
            _dir: dir,
        })
    }

    fn client(&self) -> &Client {
        &self.replicas[0].client
    }

    async fn stop(mut self) {
        for replica in &mut self.replicas {
            replica.listening.stop().await;
        }
        for store in &self.stores {
            store.close().await.unwrap();
        }
    }
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_every_backend!(
    list_pages_are_stable_while_operations_are_added,
    list_refuses_bad_sizes_and_tokens,
    list_finds_by_id_prefix_and_description_across_pages,
    wait_returns_at_completion_or_the_running_state_at_timeout,
    a_watch_sees_create_progress_done_in_order_and_ends,
    ten_thousand_watchers_all_see_the_end,
    lapsed_leases_and_passed_deadlines_complete_exactly_once,
    the_resource_guard_refuses_a_second_exclusive_operation,
    retention_deletes_exactly_the_expired_done_operations,
    running_operations_carry_a_poll_hint,
    progress_is_returned_everywhere_and_refused_once_done,
    a_watcher_on_one_replica_wakes_when_another_completes,
    a_reported_failure_shows_everywhere_while_running,
    a_failing_operation_ends_with_the_error_that_ends_it,
    malformed_failure_reports_are_refused_with_their_field,
    the_timeline_records_every_change_with_its_actor,
    the_feed_resumes_exactly_after_its_token,
    a_token_older_than_retention_is_out_of_range,
    a_feed_opens_with_a_bookmark_of_where_it_starts,
    the_overview_comes_from_the_store_alike_on_every_replica,
);

/// On PostgreSQL the replicas have separate stores: the change crosses the
/// database (LISTEN/NOTIFY) to wake waiters and watchers on the other replica.
async fn a_watcher_on_one_replica_wakes_when_another_completes(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 2).await else {
        return;
    };
    let (a, b) = (
        &deployment.replicas[0].client,
        &deployment.replicas[1].client,
    );
    let mut cooperative = NewOperation::new("x");
    cooperative.cancellation_policy = CancellationPolicy::Cooperative;
    let op = create(&TestServerRef(a), cooperative).await;
    let mut watch_on_b = b.watch(&op.id).await.unwrap();
    watch_on_b.message().await.unwrap().unwrap();
    let wait_on_b = {
        let (b, id) = (b.clone(), op.id.clone());
        tokio::spawn(async move { b.wait(&id, Some(std::time::Duration::from_secs(60))).await })
    };

    // Cancel through B: the producer heartbeating through A is told.
    b.cancel(&op.id).await.unwrap();
    assert!(a.heartbeat(&op.id, None).await.unwrap().cancel_requested);

    let done = a.complete(&op.id, failure(1, "stopped")).await.unwrap();
    let mut last = None;
    while let Some(message) = watch_on_b.message().await.unwrap() {
        last = Some(message);
    }
    assert_eq!(last.unwrap(), done);
    assert_eq!(wait_on_b.await.unwrap().unwrap(), done);
    deployment.stop().await;
}

fn ids_of(ops: &[opsd_client::OpsdOperation]) -> Vec<String> {
    ops.iter()
        .map(|op| op.operation.as_ref().unwrap().id.clone())
        .collect()
}

async fn list_pages_are_stable_while_operations_are_added(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let mut created = Vec::new();
    for i in 0..25 {
        // Distinct creation times, one microsecond apart.
        deployment
            .clock
            .advance(std::time::Duration::from_micros(1));
        let mut new = NewOperation::new(format!("op {i}"));
        new.resource_id = Some(if i % 5 == 0 {
            "disk-1".into()
        } else {
            format!("vm-{i}")
        });
        created.push(create(&TestServerRef(client), new).await.id);
    }
    created.reverse(); // newest first

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list(opsd_client::ListOperationsRequest {
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(ids_of(&page.operations));
        // Operations created between pages land before the first page, never inside.
        deployment
            .clock
            .advance(std::time::Duration::from_micros(1));
        create(
            &TestServerRef(client),
            NewOperation::new("added while paging"),
        )
        .await;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, created, "every operation once, newest first, no gaps");

    let disk = client
        .list(opsd_client::ListOperationsRequest {
            resource_id: "disk-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(disk.operations.len(), 5);
    assert!(disk.next_page_token.is_empty());
    let done = client
        .list(opsd_client::ListOperationsRequest {
            state: opsd_client::StateFilter::Done.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(done.operations.is_empty());
    deployment.stop().await;
}

async fn list_finds_by_id_prefix_and_description_across_pages(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let mut wanted = Vec::new();
    for i in 0..30 {
        deployment
            .clock
            .advance(std::time::Duration::from_micros(1));
        let mut new = NewOperation::new(if i % 10 == 3 {
            format!("Resize ÄRGER-disk {i} (50%_done)")
        } else {
            format!("snapshot {i}")
        });
        new.id_prefix = Some(if i < 5 { "fhm" } else { "epd" }.into());
        let op = create(&TestServerRef(client), new).await;
        if i % 10 == 3 && i < 5 {
            wanted.push(op.id.clone());
        }
    }
    let list = |request: opsd_client::ListOperationsRequest| async move {
        let mut seen = Vec::new();
        let mut request = request;
        loop {
            let page = client.list(request.clone()).await.unwrap();
            seen.extend(page.operations);
            if page.next_page_token.is_empty() {
                return seen;
            }
            request.page_token = page.next_page_token;
        }
    };
    // Both filters reach past the first unfiltered page (the oldest five are fhm).
    let by_prefix = list(opsd_client::ListOperationsRequest {
        id_prefix: "fhm".into(),
        page_size: 2,
        ..Default::default()
    })
    .await;
    assert_eq!(by_prefix.len(), 5);
    assert!(ids_of(&by_prefix).iter().all(|id| id.starts_with("fhm")));
    let by_text = list(opsd_client::ListOperationsRequest {
        description_contains: "ärger-DISK".into(),
        page_size: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(by_text.len(), 3, "3, 13 and 23");
    let both = list(opsd_client::ListOperationsRequest {
        id_prefix: "fhm".into(),
        description_contains: "50%_".into(),
        page_size: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(ids_of(&both), wanted);
    let none = list(opsd_client::ListOperationsRequest {
        description_contains: "5%".into(),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty(), "% is a plain character");
    // A token made for one search is refused for another.
    let first = client
        .list(opsd_client::ListOperationsRequest {
            description_contains: "snapshot".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let status = status(
        client
            .list(opsd_client::ListOperationsRequest {
                description_contains: "Snapshot".into(),
                page_size: 1,
                page_token: first.next_page_token,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "page_token"
    );
    deployment.stop().await;
}

/// `create` takes a server; this adapts a bare client.
struct TestServerRef<'a>(&'a Client);

async fn list_refuses_bad_sizes_and_tokens(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    for _ in 0..3 {
        create(&TestServerRef(client), NewOperation::new("x")).await;
    }
    for (request, field) in [
        (
            opsd_client::ListOperationsRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            opsd_client::ListOperationsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            opsd_client::ListOperationsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            opsd_client::ListOperationsRequest {
                resource_id: "disk\u{0}1".into(),
                ..Default::default()
            },
            "resource_id",
        ),
        (
            opsd_client::ListOperationsRequest {
                scope: "not a scope!".into(),
                ..Default::default()
            },
            "scope",
        ),
        (
            opsd_client::ListOperationsRequest {
                id_prefix: "OPS".into(),
                ..Default::default()
            },
            "id_prefix",
        ),
        (
            opsd_client::ListOperationsRequest {
                id_prefix: "o".repeat(21),
                ..Default::default()
            },
            "id_prefix",
        ),
        (
            opsd_client::ListOperationsRequest {
                description_contains: "ä".repeat(257),
                ..Default::default()
            },
            "description_contains",
        ),
        (
            opsd_client::ListOperationsRequest {
                description_contains: "a\u{0}".into(),
                ..Default::default()
            },
            "description_contains",
        ),
    ] {
        let status = status(client.list(request).await);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status
                .get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    // A token is bound to the filters it was made for.
    let first = client
        .list(opsd_client::ListOperationsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let other_filter = opsd_client::ListOperationsRequest {
        page_size: 1,
        page_token: first.next_page_token,
        created_by: "someone-else".into(),
        ..Default::default()
    };
    assert_eq!(code(client.list(other_filter).await), Code::InvalidArgument);
    deployment.stop().await;
}

async fn wait_returns_at_completion_or_the_running_state_at_timeout(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client().clone();
    let op = create(&TestServerRef(&client), NewOperation::new("x")).await;

    // A timeout is not an error: the running state comes back.
    let running = client
        .wait(&op.id, Some(std::time::Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(
        running.state(),
        opsd_proto::opsd::v1::OperationState::Running
    );

    // The call's own deadline caps the wait: still an answer, not DEADLINE_EXCEEDED.
    let mut opsd = opsd_proto::opsd::v1::operation_service_client::OperationServiceClient::connect(
        format!("http://{}", deployment.replicas[0].address),
    )
    .await
    .unwrap();
    let mut request = tonic::Request::new(opsd_proto::opsd::v1::WaitOperationRequest {
        operation_id: op.id.clone(),
        timeout: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
    });
    request.set_timeout(std::time::Duration::from_millis(500));
    let capped = opsd
        .wait(request)
        .await
        .expect("answered before the call's deadline");
    assert!(!capped.into_inner().operation.unwrap().done);

    let waiter = {
        let (client, id) = (client.clone(), op.id.clone());
        tokio::spawn(async move {
            client
                .wait(&id, Some(std::time::Duration::from_secs(60)))
                .await
        })
    };
    // Let the waiter register, then complete; it answers at once with the result.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while deployment.replicas[0].service.watchers().active() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the waiter registered");
    let completed_at = std::time::Instant::now();
    let done = client
        .complete(&op.id, struct_response("vm-1"))
        .await
        .unwrap();
    let waited = waiter.await.unwrap().unwrap();
    assert_eq!(waited, done);
    assert!(completed_at.elapsed() < std::time::Duration::from_secs(5));
    deployment.stop().await;
}

async fn a_watch_sees_create_progress_done_in_order_and_ends(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let op = create(&TestServerRef(client), NewOperation::new("snapshot")).await;
    let mut stream = client.watch(&op.id).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.state(), opsd_proto::opsd::v1::OperationState::Running);

    let mut versions = Vec::new();
    for done in 1..=3 {
        let progress = opsd_client::Progress {
            work_done: done,
            work_total: 3,
            ..Default::default()
        };
        client.update(&op.id, None, Some(progress)).await.unwrap();
        // A slow reader may skip intermediate states, never go back.
        let seen = stream.message().await.unwrap().unwrap();
        versions.push(seen.progress.unwrap().work_done);
    }
    assert_eq!(versions, [1, 2, 3], "each change, in order");
    client
        .complete(&op.id, struct_response("snap-1"))
        .await
        .unwrap();
    let last = stream.message().await.unwrap().unwrap();
    assert_eq!(last.state(), opsd_proto::opsd::v1::OperationState::Done);
    assert!(
        stream.message().await.unwrap().is_none(),
        "the stream ends after done"
    );
    deployment.stop().await;
}

async fn ten_thousand_watchers_all_see_the_end(backend: Backend) {
    const WATCHERS: usize = 10_000;
    const CONNECTIONS: usize = 50;
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let op = create(
        &TestServerRef(deployment.client()),
        NewOperation::new("popular"),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(
            Client::connect(&deployment.replicas[0].address.to_string())
                .await
                .unwrap(),
        );
    }
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|i| {
            let (client, id) = (clients[i % CONNECTIONS].clone(), op.id.clone());
            tokio::spawn(async move {
                let mut stream = client.watch(&id).await.unwrap();
                let mut last = None;
                while let Some(message) = stream.message().await.unwrap() {
                    last = Some(message);
                }
                last.unwrap()
            })
        })
        .collect();
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while deployment.replicas[0].service.watchers().active() < WATCHERS {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every watcher registered within 2 minutes");
    let done = deployment
        .client()
        .complete(&op.id, struct_response("done"))
        .await
        .unwrap();
    for watcher in watchers {
        assert_eq!(watcher.await.unwrap(), done);
    }
    assert_eq!(deployment.replicas[0].service.watchers().active(), 0);
    deployment.stop().await;
}

async fn lapsed_leases_and_passed_deadlines_complete_exactly_once(backend: Backend) {
    // Two replicas, both running the reaper at the same moment.
    let Some(deployment) = Deployment::start(backend, 2).await else {
        return;
    };
    let client = deployment.client();
    let mut leased = NewOperation::new("leased");
    leased.lease_duration = Some(std::time::Duration::from_secs(10));
    let leased = create(&TestServerRef(client), leased).await;
    let mut deadlined = NewOperation::new("deadlined");
    let now =
        opsd_core::Clock::now(&deployment.clock).saturating_add(std::time::Duration::from_secs(60));
    let (seconds, nanos) = now.seconds_and_nanos();
    deadlined.deadline = Some(prost_types::Timestamp { seconds, nanos });
    let deadlined = create(&TestServerRef(client), deadlined).await;

    // A heartbeat renews the lease and answers whether cancellation was requested.
    deployment.clock.advance(std::time::Duration::from_secs(8));
    let beat = client
        .heartbeat(&leased.id, Some(std::time::Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(!beat.cancel_requested);
    deployment.clock.advance(std::time::Duration::from_secs(8));
    let reap = |d: &Deployment| {
        let services: Vec<_> = d.replicas.iter().map(|r| Arc::clone(&r.service)).collect();
        async move {
            let passes: Vec<_> = services
                .into_iter()
                .map(|s| tokio::spawn(async move { s.expire_due().await.unwrap() }))
                .collect();
            let mut total = 0;
            for pass in passes {
                total += pass.await.unwrap();
            }
            total
        }
    };
    assert_eq!(reap(&deployment).await, 0, "renewed in time");

    deployment.clock.advance(std::time::Duration::from_secs(3));
    assert_eq!(
        reap(&deployment).await,
        1,
        "one completion between both reapers"
    );
    let aborted = client.get(&leased.id).await.unwrap();
    match aborted.result {
        Some(opsd_proto::yandex::cloud::operation::operation::Result::Error(s)) => {
            assert_eq!(s.code, Code::Aborted as i32);
            assert!(s.message.contains("lease"));
        }
        other => panic!("expected ABORTED, got {other:?}"),
    }
    assert_eq!(
        code(client.heartbeat(&leased.id, None).await),
        Code::FailedPrecondition
    );

    deployment.clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(reap(&deployment).await, 1);
    match client.get(&deadlined.id).await.unwrap().result {
        Some(opsd_proto::yandex::cloud::operation::operation::Result::Error(s)) => {
            assert_eq!(s.code, Code::DeadlineExceeded as i32)
        }
        other => panic!("expected DEADLINE_EXCEEDED, got {other:?}"),
    }
    assert_eq!(reap(&deployment).await, 0, "exactly once");
    deployment.stop().await;
}

async fn the_resource_guard_refuses_a_second_exclusive_operation(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let exclusive = || NewOperation {
        resource_id: Some("disk-1".into()),
        exclusive: true,
        ..NewOperation::new("resize disk-1")
    };
    let first = create(&TestServerRef(client), exclusive()).await;
    let refused = status(client.create(exclusive()).await);
    assert_eq!(refused.code(), Code::Aborted);
    assert!(
        refused.message().contains(&first.id),
        "{}",
        refused.message()
    );
    assert_eq!(
        refused
            .get_error_details()
            .resource_info()
            .unwrap()
            .resource_name,
        first.id
    );
    let mut no_resource = exclusive();
    no_resource.resource_id = None;
    assert_eq!(
        code(client.create(no_resource).await),
        Code::InvalidArgument
    );

    client
        .complete(&first.id, struct_response("ok"))
        .await
        .unwrap();
    create(&TestServerRef(client), exclusive()).await;
    deployment.stop().await;
}

async fn retention_deletes_exactly_the_expired_done_operations(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let service = &deployment.replicas[0].service;
    let retention = service.config().retention;
    let old_done = create(&TestServerRef(client), NewOperation::new("old")).await;
    client
        .complete(&old_done.id, struct_response("x"))
        .await
        .unwrap();
    let old_running = create(&TestServerRef(client), NewOperation::new("still running")).await;
    deployment.clock.advance(retention / 2);
    let young_done = create(&TestServerRef(client), NewOperation::new("young")).await;
    client
        .complete(&young_done.id, failure(9, "x"))
        .await
        .unwrap();

    deployment
        .clock
        .advance(retention / 2 + std::time::Duration::from_secs(1));
    assert_eq!(service.collect_garbage().await.unwrap(), 1);
    assert_eq!(code(client.get(&old_done.id).await), Code::NotFound);
    assert!(
        client.get(&old_running.id).await.is_ok(),
        "running operations are never deleted"
    );
    assert!(client.get(&young_done.id).await.is_ok());
    assert_eq!(service.collect_garbage().await.unwrap(), 0);
    deployment.stop().await;
}

async fn running_operations_carry_a_poll_hint(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let op = create(&TestServerRef(deployment.client()), NewOperation::new("x")).await;
    let mut cloud =
        opsd_proto::yandex::cloud::operation::operation_service_client::OperationServiceClient::connect(
            format!("http://{}", deployment.replicas[0].address),
        )
        .await
        .unwrap();
    let request = || opsd_proto::yandex::cloud::operation::GetOperationRequest {
        operation_id: op.id.clone(),
    };
    let running = cloud.get(request()).await.unwrap();
    assert_eq!(
        running.metadata().get("x-operation-poll-interval").unwrap(),
        "1"
    );
    deployment
        .client()
        .complete(&op.id, struct_response("x"))
        .await
        .unwrap();
    let done = cloud.get(request()).await.unwrap();
    assert!(done.metadata().get("x-operation-poll-interval").is_none());
    deployment.stop().await;
}

async fn progress_is_returned_everywhere_and_refused_once_done(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let op = create(&TestServerRef(client), NewOperation::new("x")).await;
    let progress = opsd_client::Progress {
        work_done: 2,
        work_total: 5,
        message: "copying".into(),
        steps: vec![opsd_client::Step {
            name: "copy".into(),
            state: 2,
        }],
    };
    client
        .update(&op.id, None, Some(progress.clone()))
        .await
        .unwrap();
    assert_eq!(
        client.get_details(&op.id).await.unwrap().progress,
        Some(progress.clone())
    );
    let listed = client.list(Default::default()).await.unwrap();
    assert_eq!(listed.operations[0].progress, Some(progress.clone()));
    let waited = client
        .wait(&op.id, Some(std::time::Duration::from_millis(10)))
        .await
        .unwrap();
    assert_eq!(waited.progress, Some(progress.clone()));

    let impossible = opsd_client::Progress {
        work_done: 6,
        work_total: 5,
        ..Default::default()
    };
    let refused = status(client.update(&op.id, None, Some(impossible)).await);
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        code(client.update(&op.id, None, None).await),
        Code::InvalidArgument
    );

    client.complete(&op.id, struct_response("x")).await.unwrap();
    assert_eq!(
        code(client.update(&op.id, None, Some(progress)).await),
        Code::FailedPrecondition
    );
    deployment.stop().await;
}

/// The opsd binary runs the reaper by itself: a producer that never heartbeats
/// loses its operation to ABORTED without anyone calling anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reaps_lapsed_leases_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start_with(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--reaper-interval",
        "100ms",
    ]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    let mut leased = NewOperation::new("abandoned");
    leased.lease_duration = Some(std::time::Duration::from_secs(1));
    let op = create(&TestServerRef(&client), leased).await;
    let done = client
        .wait(&op.id, Some(std::time::Duration::from_secs(30)))
        .await
        .unwrap();
    let public = done.operation.unwrap();
    assert!(public.done, "reaped within the wait");
    match public.result {
        Some(opsd_proto::yandex::cloud::operation::operation::Result::Error(s)) => {
            assert_eq!(s.code, Code::Aborted as i32)
        }
        other => panic!("expected ABORTED, got {other:?}"),
    }
    server.terminate().await;
}

/// TLS: a client trusting the test CA connects, one without it is refused,
/// and replacing the certificate files takes effect without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_verify_the_certificate_and_reloads_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let first = opsd_testkit::TestCertificates::new();
    let (ca, cert, key) = first.write_to(dir.path());
    let certificate = opsd_server::tls::ReloadingCertificate::load(&cert, &key).unwrap();
    let store: Arc<dyn OperationStore> = Arc::new(opsd_store::MemoryStore::new());
    let service = Arc::new(OperationService::new(
        Arc::clone(&store),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    let mut server = Listening::start(
        service,
        opsd_server::ServeOptions {
            tls: Some(certificate.server_config().unwrap()),
            ..Default::default()
        },
    )
    .await;
    let https = format!("https://{}", server.address);
    let trusting = |ca: &std::path::Path| opsd_client::ConnectOptions {
        ca_pem: Some(std::fs::read(ca).unwrap()),
        ..Default::default()
    };

    let client = Client::connect_with(&https, trusting(&ca)).await.unwrap();
    create(&TestServerRef(&client), NewOperation::new("over tls")).await;
    let untrusted = Client::connect_with(&https, Default::default()).await;
    assert!(
        matches!(untrusted, Err(ClientError::Connect { .. })),
        "{untrusted:?}"
    );

    // A new CA and certificate on disk, then a reload: new connections see it,
    // the open one keeps working.
    let second = opsd_testkit::TestCertificates::new();
    let second_dir = tempfile::tempdir().unwrap();
    let (second_ca, _, _) = second.write_to(second_dir.path());
    second.write_to(dir.path());
    certificate.reload().unwrap();
    assert!(
        Client::connect_with(&https, trusting(&second_ca))
            .await
            .is_ok()
    );
    create(
        &TestServerRef(&client),
        NewOperation::new("same connection"),
    )
    .await;

    server.stop().await;
}

/// `GET /metrics` over plain HTTP/1.1, the body only.
pub(crate) async fn scrape(address: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: opsd\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    assert!(body.contains("opsd_build_info"), "{body}");
    body
}

/// The value of the sample named exactly `series` (name and labels), 0 if absent.
pub(crate) fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_the_traffic() {
    let server = TestServer::start().await;
    let before = scrape(server.address).await;

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&server, NewOperation::new("counted")).await.id);
    }
    server.client.get(&ids[0]).await.unwrap();
    server.client.get(&ids[1]).await.unwrap();
    assert_eq!(
        code(server.client.get("ops00000000000000000").await),
        Code::NotFound
    );
    server
        .client
        .complete(&ids[0], struct_response("x"))
        .await
        .unwrap();
    server.client.cancel(&ids[1]).await.unwrap();

    let after = scrape(server.address).await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let grpc = |method: &str, code: &str| {
        format!(r#"opsd_requests_total{{protocol="grpc",method="{method}",code="{code}"}}"#)
    };
    assert_eq!(moved(&grpc("/opsd.v1.ProducerService/Create", "OK")), 3.0);
    assert_eq!(
        moved(&grpc("/yandex.cloud.operation.OperationService/Get", "OK")),
        2.0
    );
    assert_eq!(
        moved(&grpc(
            "/yandex.cloud.operation.OperationService/Get",
            "NOT_FOUND"
        )),
        1.0
    );
    assert_eq!(moved(&grpc("/opsd.v1.ProducerService/Complete", "OK")), 1.0);
    assert_eq!(
        moved(&grpc(
            "/yandex.cloud.operation.OperationService/Cancel",
            "OK"
        )),
        1.0
    );
    assert_eq!(moved("opsd_operations_created_total"), 3.0);
    assert_eq!(
        moved(r#"opsd_operations_completed_total{outcome="response"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"opsd_operations_completed_total{outcome="cancelled"}"#),
        1.0
    );
    assert_eq!(moved("opsd_cancel_requests_total"), 1.0);
    assert_eq!(sample(&after, "opsd_operations_running"), 1.0);
    assert_eq!(sample(&after, "opsd_watchers_active"), 0.0);
    assert!(moved(r#"opsd_store_duration_seconds_count{operation="insert"}"#) >= 3.0);
    assert_eq!(
        moved(
            r#"opsd_request_duration_seconds_count{protocol="grpc",method="/opsd.v1.ProducerService/Create"}"#
        ),
        3.0
    );
    server.stop().await;
}

/// The opsd binary picks up a replaced certificate (SIGHUP, or the files'
/// change) without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reloads_a_replaced_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, cert, key) = opsd_testkit::TestCertificates::new().write_to(dir.path());
    let server = Process::start_with(&[
        "--store",
        "memory",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let https = format!("https://{}", server.endpoint);
    let trusting = |ca: &std::path::Path| opsd_client::ConnectOptions {
        ca_pem: Some(std::fs::read(ca).unwrap()),
        ..Default::default()
    };
    let old_ca_pem = std::fs::read(&old_ca).unwrap();
    Client::connect_with(&https, trusting(&old_ca))
        .await
        .unwrap();

    let replacement = opsd_testkit::TestCertificates::new();
    let new_dir = tempfile::tempdir().unwrap();
    let (new_ca, _, _) = replacement.write_to(new_dir.path());
    replacement.write_to(dir.path());
    let hangup = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Client::connect_with(&https, trusting(&new_ca))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stale = Client::connect_with(
        &https,
        opsd_client::ConnectOptions {
            ca_pem: Some(old_ca_pem),
            ..Default::default()
        },
    )
    .await;
    assert!(stale.is_err(), "the old certificate is gone");
    server.terminate().await;
}

/// A stopping server ends its Watch streams, so clients move to another
/// replica instead of holding the shutdown up for the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_open_watches() {
    let server = TestServer::start().await;
    let op = create(&server, NewOperation::new("watched through a shutdown")).await;
    let mut stream = server.client.watch(&op.id).await.unwrap();
    stream.message().await.unwrap().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server.stop())
        .await
        .expect("the shutdown did not wait for the watch");
    match stream.message().await {
        Ok(None) | Err(_) => {}
        Ok(Some(message)) => panic!("unexpected message after shutdown: {message:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_waits_past_a_poll_interval_and_unpacks_typed_results() {
    use opsd_client::{OperationExt, WaitOptions};
    let server = TestServer::start().await;
    let op = create(&server, NewOperation::new("slow")).await;
    let producer = {
        let (client, id) = (server.client.clone(), op.id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
            let progress = opsd_client::Progress {
                work_done: 7,
                ..Default::default()
            };
            client
                .complete(&id, Completion::Response(opsd_client::pack(&progress)))
                .await
                .unwrap()
        })
    };
    let done = server
        .client
        .wait_until_done(&op.id, WaitOptions::default())
        .await
        .unwrap();
    assert_eq!(done, producer.await.unwrap());
    assert_eq!(
        done.response::<opsd_client::Progress>().unwrap().work_done,
        7
    );
    assert!(matches!(
        done.response::<opsd_client::Step>(),
        Err(ClientError::TypeMismatch { .. })
    ));
    assert!(matches!(
        done.metadata::<opsd_client::Progress>(),
        Err(ClientError::NoPayload { .. })
    ));

    // A failure is an error carrying the operation's status.
    let failing = create(&server, NewOperation::new("doomed")).await;
    server
        .client
        .complete(&failing.id, failure(9, "quota exceeded"))
        .await
        .unwrap();
    match server
        .client
        .wait_until_done(&failing.id, WaitOptions::default())
        .await
    {
        Err(ClientError::OperationFailed { status, .. }) => {
            assert_eq!(
                (status.code, status.message.as_str()),
                (9, "quota exceeded")
            )
        }
        other => panic!("expected the operation's failure, got {other:?}"),
    }
    // Unknown ids are final, not retried.
    assert_eq!(
        code(
            server
                .client
                .wait_until_done("ops00000000000000000", WaitOptions::default())
                .await
        ),
        Code::NotFound
    );
    // The caller can stop waiting.
    let running = create(&server, NewOperation::new("never done")).await;
    let gave_up = server
        .client
        .wait_until_done(
            &running.id,
            WaitOptions {
                timeout: Some(std::time::Duration::from_millis(300)),
                ..WaitOptions::default()
            },
        )
        .await;
    assert!(
        matches!(gave_up, Err(ClientError::WaitTimedOut { .. })),
        "{gave_up:?}"
    );
    server.stop().await;
}

/// The server is killed and comes back on the same address while a client
/// waits: the wait rides it out and returns the completion made afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_waits_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Process::start(dir.path());
    let endpoint = first.endpoint.clone();
    let client = Client::connect(&endpoint).await.unwrap();
    let op = create(
        &TestServerRef(&client),
        NewOperation::new("outlives its server"),
    )
    .await;
    let waiter = {
        let (client, id) = (client.clone(), op.id.clone());
        tokio::spawn(async move {
            client
                .wait_until_done(&id, opsd_client::WaitOptions::default())
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    first.kill_9().await;

    let second = Process::start_with(&[
        "--listen",
        &endpoint,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let producer = Client::connect(&second.endpoint).await.unwrap();
    let done = producer
        .complete(&op.id, struct_response("after restart"))
        .await
        .unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
        .await
        .expect("the waiter came back")
        .unwrap()
        .unwrap();
    assert_eq!(waited, done);
    second.terminate().await;
}

/// Three events of one operation, written through `client`: created,
/// metadata_updated (progress), completed. Returns its id.
async fn three_events(client: &Client, description: &str) -> String {
    let id = client
        .create(NewOperation::new(description))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;
    let progress = opsd_client::Progress {
        work_done: 1,
        work_total: 2,
        message: "halfway".into(),
        steps: Vec::new(),
    };
    client.update(&id, None, Some(progress)).await.unwrap();
    client
        .complete(&id, struct_response(description))
        .await
        .unwrap();
    id
}

/// The client's feed follower rides out a crash (kill -9) and a graceful
/// restart (the server drains its feeds): every event arrives in commit
/// order, once, including those committed while it was cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_follower_resumes_across_restarts_without_a_gap_or_a_duplicate() {
    use opsd_client::{FeedFilter, FeedNotice, FollowOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let first = Process::start(dir.path());
    let endpoint = first.endpoint.clone();
    let restart = || Process::start_with(&["--listen", &endpoint, "--data-dir", &data]);

    let (interrupted, resumed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let options = FollowOptions {
        max_backoff: std::time::Duration::from_millis(500),
        notify: Some({
            let (interrupted, resumed) = (Arc::clone(&interrupted), Arc::clone(&resumed));
            Arc::new(move |notice: FeedNotice<'_>| {
                let counter = match notice {
                    FeedNotice::Interrupted(_) => &interrupted,
                    FeedNotice::Resumed => &resumed,
                };
                counter.fetch_add(1, Ordering::SeqCst);
            })
        }),
    };
    let follower = Client::connect(&endpoint).await.unwrap();
    // Open once this returns: every later commit reaches it.
    let mut feed = follower
        .follow_operations(FeedFilter::default(), None, options)
        .await
        .unwrap();
    let mut expected: Vec<(String, i64)> = Vec::new();
    let mut seen = Vec::new();
    // Reads until as many events arrived as were written. Between reads
    // nothing reads the feed, so a broken stream is noticed, and the feed
    // resumed, only here: after the events written meanwhile were committed.
    macro_rules! collect {
        () => {
            while seen.len() < expected.len() {
                let item = tokio::time::timeout(std::time::Duration::from_secs(30), feed.next())
                    .await
                    .expect("the follower delivers within 30s")
                    .expect("a follower rides out failures")
                    .expect("a follower's feed never ends");
                seen.push(item);
            }
        };
    }
    let write = async |client: &Client, name: &str, expected: &mut Vec<(String, i64)>| {
        let id = three_events(client, name).await;
        expected.extend((1..=3).map(|sequence| (id.clone(), sequence)));
    };

    let producer = Client::connect(&endpoint).await.unwrap();
    write(&producer, "before the crash", &mut expected).await;
    collect!();
    first.kill_9().await;

    let second = restart();
    let producer = Client::connect(&second.endpoint).await.unwrap();
    write(&producer, "after the crash", &mut expected).await;
    collect!();
    second.terminate().await;

    let third = restart();
    let producer = Client::connect(&third.endpoint).await.unwrap();
    write(&producer, "after the drain", &mut expected).await;
    // One more: had anything come twice, it would arrive before this.
    let last = producer
        .create(NewOperation::new("the last"))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;
    expected.push((last, 1));
    collect!();

    let delivered: Vec<(String, i64)> = seen
        .iter()
        .map(|item| (item.event.operation_id.clone(), item.event.sequence))
        .collect();
    assert_eq!(delivered, expected, "in commit order, each once");
    let kinds: Vec<_> = seen
        .iter()
        .map(|item| item.event.kind().as_str_name())
        .collect();
    assert_eq!(
        &kinds[..3],
        [
            "EVENT_KIND_CREATED",
            "EVENT_KIND_METADATA_UPDATED",
            "EVENT_KIND_COMPLETED"
        ]
    );
    let tokens: std::collections::BTreeSet<_> = seen.iter().map(|i| &i.resume_token).collect();
    assert_eq!(tokens.len(), seen.len(), "a token per event");
    assert!(
        interrupted.load(Ordering::SeqCst) >= 2,
        "it was cut off twice"
    );
    assert!(resumed.load(Ordering::SeqCst) >= 2, "and came back twice");
    assert_eq!(
        feed.resume_token(),
        Some(seen.last().unwrap().resume_token.as_str())
    );
    drop(feed);
    third.terminate().await;
}

/// A resume token older than what retention kept is FeedTooOld (OUT_OF_RANGE),
/// for a single watch and for a follower alike: no resuming past lost events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_older_than_retention_kept_is_feed_too_old() {
    use opsd_client::{FeedFilter, FollowOptions};
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start_with(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--retention",
        "1s",
        "--retention-interval",
        "100ms",
    ]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    let mut feed = client
        .watch_operations(FeedFilter::default(), None)
        .await
        .unwrap();
    let id = three_events(&client, "soon gone").await;
    let first = feed.next().await.unwrap().expect("the created event");
    assert_eq!(first.event.operation_id, id);
    assert_eq!(feed.resume_token(), Some(first.resume_token.as_str()));
    // Retention takes the operation, and its events, about a second after it is done.
    let mut gone = false;
    for _ in 0..100 {
        if client
            .get(&id)
            .await
            .is_err_and(|e| e.status().is_some_and(|s| s.code() == Code::NotFound))
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "retention collected the operation");
    let refused = client
        .watch_operations(FeedFilter::default(), Some(first.resume_token.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::FeedTooOld { .. }),
        "{refused}"
    );
    let refused = client
        .follow_operations(
            FeedFilter::default(),
            Some(first.resume_token),
            FollowOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::FeedTooOld { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().starts_with("OUT_OF_RANGE: "),
        "{refused}"
    );
    server.terminate().await;
}

/// The producer helper keeps the lease alive while work runs, tells the work
/// of a cancel request at once, and fails an operation it was dropped with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_helper_renews_listens_and_fails_when_dropped() {
    use opsd_client::ProducerOptions;
    let dir = tempfile::tempdir().unwrap();
    // The real binary, so its reaper runs: a lapsed lease would show.
    let server = Process::start_with(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--reaper-interval",
        "100ms",
    ]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    let short_lease = ProducerOptions {
        lease: std::time::Duration::from_secs(2),
    };

    // Work for more than two leases' worth of time: still running, then done by us.
    let handle = client
        .start_operation(NewOperation::new("long work"), short_lease.clone())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(4_500)).await;
    assert!(
        !client.get(handle.id()).await.unwrap().done,
        "the lease was renewed"
    );
    let done = handle
        .succeed(opsd_client::pack_struct(&Default::default()))
        .await
        .unwrap();
    assert!(done.operation.unwrap().done);

    // A cancel request reaches the work through the watch, not the next heartbeat.
    let mut cooperative = NewOperation::new("cancellable");
    cooperative.cancellation_policy = CancellationPolicy::Cooperative;
    let handle = client
        .start_operation(cooperative, ProducerOptions::default())
        .await
        .unwrap();
    client.cancel(handle.id()).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), handle.cancellation())
        .await
        .expect("the cancel request arrived well before a 10 s heartbeat");
    assert!(handle.is_cancel_requested());
    handle.fail(1, "cancelled on request").await.unwrap();

    // Dropped without completing: failed at once with the documented error.
    let handle = client
        .start_operation(NewOperation::new("abandoned"), ProducerOptions::default())
        .await
        .unwrap();
    let id = handle.id().to_owned();
    drop(handle);
    let failed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.wait_until_done(&id, opsd_client::WaitOptions::default()),
    )
    .await
    .unwrap();
    match failed {
        Err(ClientError::OperationFailed { status, .. }) => {
            assert_eq!(status.code, Code::Aborted as i32);
            assert_eq!(status.message, opsd_client::DROPPED_MESSAGE);
        }
        other => panic!("expected the drop to fail the operation, got {other:?}"),
    }
    server.terminate().await;
}

fn rpc_status(code: i32, message: &str) -> opsd_proto::RpcStatus {
    opsd_proto::RpcStatus {
        code,
        message: message.into(),
        details: vec![],
    }
}

fn error_of(op: &opsd_client::Operation) -> Option<&opsd_proto::RpcStatus> {
    match &op.result {
        Some(opsd_proto::yandex::cloud::operation::operation::Result::Error(status)) => {
            Some(status)
        }
        _ => None,
    }
}

/// A failure reported through one replica is on every read of the other at
/// once (done=false, error set), and from then on only an error completes it.
async fn a_reported_failure_shows_everywhere_while_running(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 2).await else {
        return;
    };
    let (a, b) = (
        &deployment.replicas[0].client,
        &deployment.replicas[1].client,
    );
    let op = create(&TestServerRef(a), policy(CancellationPolicy::Cooperative)).await;
    let mut watch_on_b = b.watch(&op.id).await.unwrap();
    assert!(
        watch_on_b
            .message()
            .await
            .unwrap()
            .unwrap()
            .reported_failure
            .is_none()
    );

    let quota = rpc_status(8, "disk quota exceeded, releasing the half-created disk");
    let reported = a.report_failure(&op.id, quota.clone()).await.unwrap();
    let public = reported.operation.clone().unwrap();
    assert!(!public.done, "a reported failure does not complete");
    assert_eq!(error_of(&public), Some(&quota));
    assert_eq!(reported.reported_failure.as_ref(), Some(&quota));
    assert!(reported.failure_reported_at.is_some());
    assert_eq!(
        reported.state(),
        opsd_proto::opsd::v1::OperationState::Running
    );

    // Every consumer call of the other replica shows it.
    let seen = watch_on_b.message().await.unwrap().unwrap();
    assert_eq!(seen, reported);
    let got = b.get(&op.id).await.unwrap();
    assert!(!got.done);
    assert_eq!(error_of(&got), Some(&quota));
    assert_eq!(b.get_details(&op.id).await.unwrap(), reported);
    let listed = b.list(Default::default()).await.unwrap();
    assert_eq!(listed.operations, std::slice::from_ref(&reported));
    let waited = b
        .wait(&op.id, Some(std::time::Duration::from_millis(10)))
        .await
        .unwrap();
    assert_eq!(waited, reported, "Wait still waits for done");

    // A second report replaces the first; the identical one is a no-op.
    let rollback = rpc_status(8, "rolling back");
    let replaced = b.report_failure(&op.id, rollback.clone()).await.unwrap();
    assert_eq!(replaced.reported_failure.as_ref(), Some(&rollback));
    let repeated = a.report_failure(&op.id, rollback.clone()).await.unwrap();
    assert_eq!(repeated, replaced, "a repeat changes nothing");

    // Cooperative cancel keeps the failure visible and still not done.
    let cancelled = b.cancel(&op.id).await.unwrap();
    assert!(!cancelled.done);
    assert_eq!(error_of(&cancelled), Some(&rollback));

    // A response is refused, naming why.
    let refused = status(a.complete(&op.id, struct_response("disk-1")).await);
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused
            .get_error_details()
            .precondition_failure()
            .unwrap()
            .violations[0]
            .r#type,
        "FAILURE_REPORTED"
    );
    // No result: done with the reported error; repeating that is a no-op.
    let done = a
        .complete(&op.id, Completion::ReportedFailure)
        .await
        .unwrap();
    let public = done.operation.clone().unwrap();
    assert!(public.done);
    assert_eq!(error_of(&public), Some(&rollback));
    assert_eq!(
        done.reported_failure.as_ref(),
        Some(&rollback),
        "kept once done"
    );
    assert!(done.cancel_requested_at.is_some());
    assert_eq!(
        b.complete(&op.id, Completion::ReportedFailure)
            .await
            .unwrap(),
        done
    );
    let mut last = None;
    while let Some(message) = watch_on_b.message().await.unwrap() {
        last = Some(message);
    }
    assert_eq!(last.unwrap(), done, "the watch ends with the completion");

    // A done operation takes no report.
    let late = status(b.report_failure(&op.id, rpc_status(13, "late")).await);
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(
        late.get_error_details()
            .precondition_failure()
            .unwrap()
            .violations[0]
            .r#type,
        "ALREADY_DONE"
    );
    deployment.stop().await;
}

/// Complete with an error of the producer's choosing after a report; cancel
/// and the reaper end a failing operation with their own errors.
async fn a_failing_operation_ends_with_the_error_that_ends_it(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let quota = rpc_status(8, "quota");

    let chosen = create(&TestServerRef(client), NewOperation::new("chosen")).await;
    client
        .report_failure(&chosen.id, quota.clone())
        .await
        .unwrap();
    let done = client
        .complete(&chosen.id, failure(13, "cleanup failed too"))
        .await
        .unwrap();
    assert_eq!(error_of(done.operation.as_ref().unwrap()).unwrap().code, 13);

    let immediate = create(
        &TestServerRef(client),
        policy(CancellationPolicy::Immediate),
    )
    .await;
    client
        .report_failure(&immediate.id, quota.clone())
        .await
        .unwrap();
    let cancelled = client.cancel(&immediate.id).await.unwrap();
    assert!(cancelled.done);
    assert_eq!(error_of(&cancelled).unwrap().code, Code::Cancelled as i32);

    let mut leased = NewOperation::new("leased");
    leased.lease_duration = Some(std::time::Duration::from_secs(10));
    let leased = create(&TestServerRef(client), leased).await;
    client
        .report_failure(&leased.id, quota.clone())
        .await
        .unwrap();
    deployment.clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(
        deployment.replicas[0].service.expire_due().await.unwrap(),
        1
    );
    let lapsed = client.get_details(&leased.id).await.unwrap();
    assert_eq!(
        error_of(lapsed.operation.as_ref().unwrap()).unwrap().code,
        Code::Aborted as i32
    );
    assert_eq!(
        lapsed.reported_failure,
        Some(quota),
        "the report stays readable"
    );
    deployment.stop().await;
}

/// Each malformed report is INVALID_ARGUMENT naming its field; unknown ids are
/// NOT_FOUND; a completion without a result needs a report first.
async fn malformed_failure_reports_are_refused_with_their_field(backend: Backend) {
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let op = create(&TestServerRef(client), NewOperation::new("x")).await;
    let field = |result: Result<opsd_client::OpsdOperation, ClientError>| {
        let status = status(result);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field
            .clone()
    };
    assert_eq!(
        field(client.report_failure(&op.id, rpc_status(0, "ok?")).await),
        "error.code"
    );
    assert_eq!(
        field(client.report_failure(&op.id, rpc_status(17, "x")).await),
        "error.code"
    );
    assert_eq!(
        field(
            client
                .report_failure(&op.id, rpc_status(8, &"m".repeat(100_000)))
                .await
        ),
        "error.message"
    );
    assert_eq!(
        field(client.report_failure("", rpc_status(8, "x")).await),
        "operation_id"
    );
    let missing = opsd_proto::opsd::v1::ReportFailureRequest {
        operation_id: op.id.clone(),
        error: None,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        deployment.replicas[0].address
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let answer = opsd_proto::opsd::v1::producer_service_client::ProducerServiceClient::new(channel)
        .report_failure(missing)
        .await
        .unwrap_err();
    assert_eq!(answer.code(), Code::InvalidArgument);
    assert_eq!(
        answer
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "error"
    );
    assert_eq!(
        code(
            client
                .report_failure("zzz00000000000000000", rpc_status(8, "x"))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        field(client.complete(&op.id, Completion::ReportedFailure).await),
        "result"
    );
    let unchanged = client.get_details(&op.id).await.unwrap();
    assert_eq!(unchanged.reported_failure, None, "refusals change nothing");
    assert_eq!(unchanged.operation.unwrap().modified_at, op.modified_at);
    deployment.stop().await;
}

/// The client's waiter waits past a reported failure by default, and stops at
/// it when asked; the producer handle reports and then completes as reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_waits_past_a_reported_failure_unless_asked_to_stop() {
    use opsd_client::{ProducerOptions, WaitOptions};
    let server = TestServer::start().await;
    let client = server.client.clone();
    let handle = client
        .start_operation(NewOperation::new("create disk"), ProducerOptions::default())
        .await
        .unwrap();
    let id = handle.id().to_owned();

    let waiting = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move { client.wait_until_done(&id, WaitOptions::default()).await })
    };
    let stopping = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            let options = WaitOptions {
                stop_at_reported_failure: true,
                ..Default::default()
            };
            client.wait_until_done(&id, options).await
        })
    };
    let reported = handle.report_failure(8, "quota exceeded").await.unwrap();
    assert!(!reported.operation.unwrap().done);
    match tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap()
    {
        Err(ClientError::FailureReported { status, .. }) => {
            assert_eq!(status.code, 8);
            assert_eq!(status.message, "quota exceeded");
        }
        other => panic!("expected FailureReported, got {other:?}"),
    }
    // The default waiter is still waiting: the operation is not done.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "waits past a reported failure");

    let done = handle.fail_as_reported().await.unwrap();
    assert!(done.operation.unwrap().done);
    match tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
    {
        Err(ClientError::OperationFailed { status, .. }) => {
            assert_eq!(status.code, 8);
            assert_eq!(status.message, "quota exceeded");
        }
        other => panic!("expected OperationFailed, got {other:?}"),
    }
    server.stop().await;
}

fn opsd_channel(
    address: SocketAddr,
) -> opsd_proto::opsd::v1::operation_service_client::OperationServiceClient<tonic::transport::Channel>
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    opsd_proto::opsd::v1::operation_service_client::OperationServiceClient::new(channel)
}

async fn all_events(
    client: &mut opsd_proto::opsd::v1::operation_service_client::OperationServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
    page_size: i32,
) -> Vec<opsd_proto::opsd::v1::Event> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_events(opsd_proto::opsd::v1::ListEventsRequest {
                operation_id: id.to_owned(),
                page_size,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

/// Every change that matters makes one event, with who made it; a lease
/// renewal makes none; the reaper's changes are opsd's.
async fn the_timeline_records_every_change_with_its_actor(backend: Backend) {
    use opsd_proto::opsd::v1::EventKind as Kind;
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let mut events = opsd_channel(deployment.replicas[0].address);
    let op = create(
        &TestServerRef(client),
        policy(CancellationPolicy::Cooperative),
    )
    .await;
    client.heartbeat(&op.id, None).await.unwrap();
    client.heartbeat(&op.id, None).await.unwrap();
    let progress = opsd_client::Progress {
        work_done: 3,
        work_total: 10,
        message: "copying".into(),
        steps: vec![],
    };
    client
        .update(&op.id, None, Some(progress.clone()))
        .await
        .unwrap();
    client
        .report_failure(&op.id, rpc_status(8, "quota exceeded"))
        .await
        .unwrap();
    client.cancel(&op.id).await.unwrap();
    let done = client
        .complete(&op.id, Completion::ReportedFailure)
        .await
        .unwrap();

    let timeline = all_events(&mut events, &op.id, 2).await;
    let kinds: Vec<Kind> = timeline.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            Kind::Created,
            Kind::LeaseTaken,
            Kind::MetadataUpdated,
            Kind::FailureReported,
            Kind::CancelRequested,
            Kind::Completed,
        ],
        "the renewal made no event"
    );
    let sequences: Vec<i64> = timeline.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
    assert_eq!(timeline[0].version, 1);
    assert_eq!(timeline[2].version, 4, "the renewal was version 3");
    assert_eq!(timeline[5].version, 7);
    assert!(
        timeline
            .iter()
            .all(|e| e.actor == "anonymous" && e.operation_id == op.id)
    );
    assert_eq!(timeline[0].description, "create instance");
    assert_eq!(timeline[2].progress, Some(progress));
    assert_eq!(timeline[3].error, Some(rpc_status(8, "quota exceeded")));
    assert_eq!(timeline[5].error, Some(rpc_status(8, "quota exceeded")));
    assert_eq!(
        timeline[5].time,
        done.operation.as_ref().unwrap().modified_at,
        "an event has the time of its change"
    );

    // The reaper is the actor of what it does.
    let mut leased = NewOperation::new("leased");
    leased.lease_duration = Some(std::time::Duration::from_secs(10));
    let leased = create(&TestServerRef(client), leased).await;
    deployment.clock.advance(std::time::Duration::from_secs(11));
    deployment.replicas[0].service.expire_due().await.unwrap();
    let lapsed = all_events(&mut events, &leased.id, 100).await;
    assert_eq!(lapsed.last().unwrap().kind(), Kind::LeaseLapsed);
    assert_eq!(lapsed.last().unwrap().actor, "opsd");
    assert_eq!(
        lapsed.last().unwrap().error.as_ref().unwrap().code,
        Code::Aborted as i32
    );

    // Unknown and malformed: as for Get.
    let unknown = events
        .list_events(opsd_proto::opsd::v1::ListEventsRequest {
            operation_id: "zzz00000000000000000".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad_token = events
        .list_events(opsd_proto::opsd::v1::ListEventsRequest {
            operation_id: op.id.clone(),
            page_size: 1,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    // A token of another operation's events is refused.
    let page = events
        .list_events(opsd_proto::opsd::v1::ListEventsRequest {
            operation_id: op.id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let foreign = events
        .list_events(opsd_proto::opsd::v1::ListEventsRequest {
            operation_id: leased.id.clone(),
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
    deployment.stop().await;
}

/// The next message that carries an event (past the opening bookmark).
async fn next_event(
    stream: &mut tonic::Streaming<opsd_proto::opsd::v1::WatchOperationsResponse>,
) -> opsd_proto::opsd::v1::WatchOperationsResponse {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the feed does not end");
        if message.event.is_some() {
            return message;
        }
    }
}

/// A feed opens with a bookmark: no event, the token of where it starts, so
/// a reader that drops before the first event resumes without a gap.
async fn a_feed_opens_with_a_bookmark_of_where_it_starts(backend: Backend) {
    use opsd_proto::opsd::v1::WatchOperationsRequest;
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let mut feed = opsd_channel(deployment.replicas[0].address);
    let mut stream = feed
        .watch_operations(WatchOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let bookmark = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(bookmark.event, None);
    assert!(!bookmark.resume_token.is_empty());
    drop(stream);
    // Committed while no reader was connected: found from the bookmark.
    let op = create(&TestServerRef(client), NewOperation::new("while away")).await;
    let mut resumed = feed
        .watch_operations(WatchOperationsRequest {
            resume_token: bookmark.resume_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_event(&mut resumed).await;
    assert_eq!(first.event.unwrap().operation_id, op.id);
    deployment.stop().await;
}

/// From now, through both replicas: every matching event once, in commit
/// order; a reader that reconnects with a token gets exactly the rest.
async fn the_feed_resumes_exactly_after_its_token(backend: Backend) {
    use opsd_proto::opsd::v1::{EventKind as Kind, WatchOperationsRequest};
    let Some(deployment) = Deployment::start(backend, 2).await else {
        return;
    };
    let (a, b) = (
        &deployment.replicas[0].client,
        &deployment.replicas[1].client,
    );
    // Before the reader starts: not in a feed that starts at now.
    let before = create(&TestServerRef(a), NewOperation::new("before")).await;
    let mut feed_b = opsd_channel(deployment.replicas[1].address);
    let on_disk = WatchOperationsRequest {
        resource_id: "disk-1".into(),
        ..Default::default()
    };
    let mut stream = feed_b
        .watch_operations(on_disk.clone())
        .await
        .unwrap()
        .into_inner();

    let mut expected = Vec::new();
    for n in 0..3 {
        let mut new = NewOperation::new(format!("snapshot {n}"));
        new.resource_id = Some("disk-1".into());
        let op = create(&TestServerRef(if n % 2 == 0 { a } else { b }), new).await;
        // Another resource's operation, filtered out.
        create(&TestServerRef(a), NewOperation::new("elsewhere")).await;
        a.complete(&op.id, struct_response("snap")).await.unwrap();
        expected.push((op.id.clone(), Kind::Created));
        expected.push((op.id, Kind::Completed));
    }
    client_complete_quietly(a, &before.id).await;
    let mut seen = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..expected.len() {
        let message = next_event(&mut stream).await;
        let event = message.event.unwrap();
        let kind = event.kind();
        seen.push((event.operation_id, kind));
        tokens.push(message.resume_token);
    }
    assert_eq!(seen, expected, "every matching event once, in commit order");
    drop(stream);

    // Resume from the middle, on the other replica: exactly the rest.
    let mut feed_a = opsd_channel(deployment.replicas[0].address);
    let mut resumed = feed_a
        .watch_operations(WatchOperationsRequest {
            resume_token: tokens[2].clone(),
            ..on_disk.clone()
        })
        .await
        .unwrap()
        .into_inner();
    for want in &expected[3..] {
        let event = next_event(&mut resumed).await.event.unwrap();
        let kind = event.kind();
        assert_eq!(&(event.operation_id, kind), want);
    }
    // Only completions, from the start of what this reader saw.
    let mut completions = feed_a
        .watch_operations(WatchOperationsRequest {
            resume_token: tokens[0].clone(),
            kinds: vec![Kind::Completed as i32],
            ..on_disk
        })
        .await
        .unwrap()
        .into_inner();
    for want in expected.iter().filter(|(_, kind)| *kind == Kind::Completed) {
        let event = next_event(&mut completions).await.event.unwrap();
        let kind = event.kind();
        assert_eq!(&(event.operation_id, kind), want);
    }
    for (request, field) in [
        (
            WatchOperationsRequest {
                resume_token: "junk".into(),
                ..Default::default()
            },
            "resume_token",
        ),
        (
            WatchOperationsRequest {
                kinds: vec![99],
                ..Default::default()
            },
            "kinds[0]",
        ),
        (
            WatchOperationsRequest {
                id_prefix: "ABC".into(),
                ..Default::default()
            },
            "id_prefix",
        ),
    ] {
        let refused = feed_a.watch_operations(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(
            refused
                .get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    deployment.stop().await;
}

async fn client_complete_quietly(client: &Client, id: &str) {
    client.complete(id, struct_response("x")).await.unwrap();
}

/// A token from before what retention deleted is OUT_OF_RANGE, saying to re-list.
async fn a_token_older_than_retention_is_out_of_range(backend: Backend) {
    use opsd_proto::opsd::v1::WatchOperationsRequest;
    let Some(deployment) = Deployment::start(backend, 1).await else {
        return;
    };
    let client = deployment.client();
    let mut feed = opsd_channel(deployment.replicas[0].address);
    let mut stream = feed
        .watch_operations(WatchOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let op = create(&TestServerRef(client), NewOperation::new("old")).await;
    let first = next_event(&mut stream).await;
    client.complete(&op.id, struct_response("x")).await.unwrap();
    next_event(&mut stream).await;
    // The token after the last event is still good; the first one is not, once
    // retention has taken the events after it.
    deployment
        .clock
        .advance(ServiceConfig::default().retention + std::time::Duration::from_secs(1));
    assert_eq!(
        deployment.replicas[0]
            .service
            .collect_garbage()
            .await
            .unwrap(),
        1
    );
    let refused = feed
        .watch_operations(WatchOperationsRequest {
            resume_token: first.resume_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(
        refused.message().contains("list the operations again"),
        "{refused:?}"
    );
    deployment.stop().await;
}

/// The overview on a manual clock: every stuck rule with its numbers, failed
/// apart from cancelled, a cooperative producer ignoring Cancel, percentiles;
/// and the same answer from either replica (on PostgreSQL, two stores on one
/// database), since it is read from the store.
async fn the_overview_comes_from_the_store_alike_on_every_replica(backend: Backend) {
    use opsd_client::{GetOverviewRequest, stuck_reason::Rule};
    use std::time::Duration;
    let Some(deployment) = Deployment::start(backend, 2).await else {
        return;
    };
    let client = deployment.client();
    let clock = &deployment.clock;
    let step = |d: Duration| clock.advance(d);
    let new = |prefix: &str, policy: CancellationPolicy| NewOperation {
        id_prefix: Some(prefix.to_owned()),
        cancellation_policy: policy,
        ..NewOperation::new(format!("{prefix} work"))
    };
    let server = TestServerRef(client);
    let immediate = CancellationPolicy::Immediate;
    let cooperative = CancellationPolicy::Cooperative;
    let quiet = create(&server, new("snp", immediate)).await;
    let ok = create(&server, new("snp", immediate)).await;
    step(Duration::from_secs(2));
    client
        .complete(&ok.id, struct_response("ok"))
        .await
        .unwrap();
    let bad = create(&server, new("snp", immediate)).await;
    step(Duration::from_secs(2));
    client
        .complete(&bad.id, failure(9, "disk is busy"))
        .await
        .unwrap();
    let ignoring = create(&server, new("coo", cooperative)).await;
    client.cancel(&ignoring.id).await.unwrap();
    let polite = create(&server, new("coo", cooperative)).await;
    client.cancel(&polite.id).await.unwrap();
    step(Duration::from_secs(1));
    client
        .complete(&polite.id, failure(1, "cancelled"))
        .await
        .unwrap();
    let chatty = create(&server, new("cpy", immediate)).await;
    for n in 1..=4 {
        step(Duration::from_millis(100));
        let progress = opsd_client::Progress {
            work_done: n,
            work_total: 10,
            ..Default::default()
        };
        client
            .update(&chatty.id, None, Some(progress))
            .await
            .unwrap();
    }
    step(Duration::from_millis(100));
    let leased = create(
        &server,
        NewOperation {
            lease_duration: Some(Duration::from_secs(20)),
            ..new("rsz", immediate)
        },
    )
    .await;
    step(Duration::from_secs(5));

    let secs = |s: u64, ms: u32| {
        Some(prost_types::Duration {
            seconds: s as i64,
            nanos: ms as i32 * 1_000_000,
        })
    };
    let asked = GetOverviewRequest {
        stuck_after: secs(3, 0),
        ..Default::default()
    };
    let overview = client.overview(asked).await.unwrap();
    assert_eq!(overview.running, 4);
    assert_eq!(overview.window, secs(3600, 0));
    assert_eq!(overview.stuck_after, secs(3, 0));
    let oldest: Vec<&str> = overview
        .oldest_running
        .iter()
        .map(|op| op.operation.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(oldest, [&quiet.id, &ignoring.id, &chatty.id, &leased.id]);
    let stuck: Vec<(&str, Vec<Rule>)> = overview
        .stuck
        .iter()
        .map(|s| {
            (
                s.operation
                    .as_ref()
                    .unwrap()
                    .operation
                    .as_ref()
                    .unwrap()
                    .id
                    .as_str(),
                s.reasons.iter().map(|r| r.rule.unwrap()).collect(),
            )
        })
        .collect();
    let unchanged = |quiet: Option<prost_types::Duration>| {
        Rule::Unchanged(opsd_client::stuck_reason::Unchanged {
            quiet,
            threshold: secs(3, 0),
        })
    };
    assert_eq!(
        stuck,
        [
            (quiet.id.as_str(), vec![unchanged(secs(10, 500))]),
            // The cancel request changed it 1ns after its creation (modified_at
            // always moves on).
            (
                ignoring.id.as_str(),
                vec![unchanged(Some(prost_types::Duration {
                    seconds: 6,
                    nanos: 499_999_999
                }))]
            ),
            (
                chatty.id.as_str(),
                vec![
                    unchanged(secs(5, 100)),
                    Rule::SlowerThanUsual(opsd_client::stuck_reason::SlowerThanUsual {
                        quiet: secs(5, 100),
                        typical_gap: secs(0, 100),
                        factor: 10,
                        threshold: secs(1, 0),
                    })
                ]
            ),
            (
                leased.id.as_str(),
                vec![
                    unchanged(secs(5, 0)),
                    Rule::LeaseLapsing(opsd_client::stuck_reason::LeaseLapsing {
                        lapses_in: secs(15, 0),
                        warning: secs(30, 0),
                    })
                ]
            ),
        ]
    );
    assert_eq!(overview.stuck_count, 4);
    assert!(!overview.stuck_truncated && !overview.sampled);
    assert_eq!(overview.sample_size, 3);
    let producer = |prefix: &str| {
        overview
            .producers
            .iter()
            .find(|p| p.id_prefix == prefix)
            .unwrap_or_else(|| panic!("no {prefix} in {:?}", overview.producers))
            .clone()
    };
    let snp = producer("snp");
    assert_eq!(
        (snp.running, snp.completed, snp.failed, snp.cancelled),
        (1, 2, 1, 0)
    );
    assert_eq!((snp.p50_to_done, snp.p99_to_done), (secs(2, 0), secs(2, 0)));
    assert_eq!(snp.typical_gap, secs(2, 0));
    let coo = producer("coo");
    assert_eq!(
        (
            coo.running,
            coo.completed,
            coo.failed,
            coo.cancelled,
            coo.cancel_overdue
        ),
        (1, 1, 0, 1, 1),
        "the producer ignoring its cancel request stands out"
    );
    // Requested 1ns after creation, done 1s after creation.
    assert_eq!(
        coo.p50_cancel_to_done,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 999_999_999
        })
    );
    assert_eq!(coo.typical_gap, None, "one gap is too few");
    assert_eq!(producer("cpy").typical_gap, secs(0, 100));
    let prefixes: Vec<&str> = overview
        .producers
        .iter()
        .map(|p| p.id_prefix.as_str())
        .collect();
    assert_eq!(prefixes, ["coo", "cpy", "rsz", "snp"]);

    // The other replica answers the same from its own store.
    let other = deployment.replicas[1].client.overview(asked).await.unwrap();
    assert_eq!(other, overview);

    // With the server's threshold (10 minutes) only the other two rules fire,
    // and nobody has ignored a cancel request for that long.
    let default = client
        .overview(GetOverviewRequest::default())
        .await
        .unwrap();
    assert_eq!(default.stuck_after, secs(600, 0));
    let reasons: Vec<usize> = default.stuck.iter().map(|s| s.reasons.len()).collect();
    assert_eq!(reasons, [1, 1]);
    assert_eq!(default.stuck_count, 2);
    assert!(default.producers.iter().all(|p| p.cancel_overdue == 0));

    // Bad parameters name their field.
    let refused = status(
        client
            .overview(GetOverviewRequest {
                window: secs(8 * 24 * 3600, 0),
                oldest: 101,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "window: must be more than 0s and at most 7 days; oldest: must be 0-100"
    );
    deployment.stop().await;
}
