//! The REST/JSON gateway over real HTTP, on the listener that also serves
//! gRPC. Answers are compared with what the gRPC adapter returns for the same
//! operation, printed with the same proto3 JSON mapping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsd_client::{Client, Completion, NewOperation, Progress, Step, pack_struct};
use opsd_core::SystemClock;
use opsd_proto::json::{from_json, to_json};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::MemoryStore;
use reqwest::StatusCode;
use tokio::sync::oneshot;

use crate::support::Listening;

struct Server {
    http: reqwest::Client,
    base: String,
    grpc: Client,
    address: SocketAddr,
    listening: Listening,
}

impl Server {
    async fn start() -> Self {
        let service = Arc::new(OperationService::new(
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
            ServiceConfig::default(),
        ));
        let listening = Listening::start(service, Default::default()).await;
        let address = listening.address;
        let grpc = Client::connect(&address.to_string()).await.unwrap();
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{address}"),
            grpc,
            address,
            listening,
        }
    }

    async fn stop(mut self) {
        self.listening.stop().await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// A POST with a JSON body.
    async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// A POST of a JSON body expected to succeed, read as the message `M`.
    async fn post_ok<M: prost::Name + Default>(&self, path: &str, body: &str) -> M {
        ok(self.post(path, body).await).await
    }

    async fn get_ok<M: prost::Name + Default>(&self, path: &str) -> M {
        ok(self.get(path).await).await
    }
}

/// The body of a successful answer, parsed as the message `M`.
async fn ok<M: prost::Name + Default>(response: reqwest::Response) -> M {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    from_json(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Gives `value` the type of `like`: serde_json is no dependency of these
/// tests, so its `Value` is named only as the type `to_json` returns.
fn same_type<T>(_like: &T, value: T) -> T {
    value
}

/// What an error answer says: its google.rpc.Status code, message and the
/// fields its BadRequest names.
#[derive(Debug)]
struct ErrorBody {
    code: i64,
    message: String,
    fields: Vec<String>,
    detail_types: Vec<String>,
}

/// Asserts the HTTP status and the google.rpc.Status JSON of an error answer.
async fn error(response: reqwest::Response, http: u16, code: i64) -> ErrorBody {
    assert_eq!(response.status().as_u16(), http);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let like = to_json(&ycop::GetOperationRequest::default()).unwrap();
    let body = same_type(&like, response.json().await.unwrap());
    let error = ErrorBody {
        code: body["code"].as_i64().unwrap(),
        message: body["message"].as_str().unwrap().to_owned(),
        fields: body["details"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
            .flat_map(|d| d["fieldViolations"].as_array().unwrap())
            .map(|v| v["field"].as_str().unwrap().to_owned())
            .collect(),
        detail_types: body["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["@type"].as_str().unwrap().to_owned())
            .collect(),
    };
    assert_eq!(error.code, code, "{error:?}");
    assert!(
        !error.message.starts_with(char::is_uppercase) && !error.message.ends_with('.'),
        "{error:?}"
    );
    if code == 3 {
        assert!(
            !error.fields.is_empty(),
            "a BadRequest names the field: {error:?}"
        );
    }
    error
}

fn id_of(op: &pb::Operation) -> String {
    op.operation.as_ref().unwrap().id.clone()
}

fn json_struct(pairs: &[(&str, &str)]) -> prost_types::Any {
    let fields = pairs
        .iter()
        .map(|(k, v)| {
            let value = prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue((*v).to_owned())),
            };
            ((*k).to_owned(), value)
        })
        .collect();
    pack_struct(&prost_types::Struct { fields })
}

async fn create_running(server: &Server, description: &str) -> String {
    let op: pb::Operation = server
        .post_ok(
            "/v1/operations",
            &format!(r#"{{"description":"{description}"}}"#),
        )
        .await;
    id_of(&op)
}

/// POSTs raw bytes to create: `framing` is the header that says how long
/// the body is, `body` the bytes after the head. Returns the answer's status
/// and text.
async fn post_raw(address: SocketAddr, framing: &str, body: Vec<u8>) -> (u16, String) {
    use std::io::{Read, Write};
    let head = format!(
        "POST /v1/operations HTTP/1.1\r\nhost: opsd\r\ncontent-type: application/json\r\n\
         connection: close\r\n{framing}\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        // The server may answer before it has read everything.
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, answer)
    })
    .await
    .unwrap()
}

/// `count` chunks of `size` spaces in chunked transfer encoding.
fn chunked(count: usize, size: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..count {
        body.extend(format!("{size:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b' ', size));
        body.extend(b"\r\n");
    }
    body.extend(b"0\r\n\r\n");
    body
}

#[tokio::test]
async fn operations_print_exactly_as_the_grpc_answer_in_json() {
    let server = Server::start().await;
    let mut new = NewOperation::new("snapshot disk-1");
    new.metadata = Some(json_struct(&[("step", "copy")]));
    new.resource_id = Some("disk-1".into());
    let id = id_of(&server.grpc.create(new).await.unwrap());
    let progress = Progress {
        work_done: 5,
        work_total: 12_345_678_901,
        message: "copying".into(),
        steps: vec![Step {
            name: "copy".into(),
            state: pb::step::State::Running as i32,
        }],
    };
    server.grpc.update(&id, None, Some(progress)).await.unwrap();

    // Running: the poll hint comes along, as over gRPC.
    let response = server.get(&format!("/operations/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-operation-poll-interval"], "1");
    assert_eq!(response.headers()["content-type"], "application/json");

    server
        .grpc
        .complete(
            &id,
            Completion::Response(json_struct(&[("snapshotId", "snap-1")])),
        )
        .await
        .unwrap();

    let public = server.grpc.get(&id).await.unwrap();
    let expected = to_json(&public).unwrap();
    let response = server.get(&format!("/operations/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("x-operation-poll-interval")
            .is_none()
    );
    assert_eq!(response.text().await.unwrap(), expected.to_string());

    let details = server.grpc.get_details(&id).await.unwrap();
    let expected_details = to_json(&details).unwrap();
    let response = server.get(&format!("/v1/operations/{id}")).await;
    assert_eq!(response.text().await.unwrap(), expected_details.to_string());

    // The mapping itself: camelCase, "@type" in Any, RFC 3339 times, int64 as strings.
    assert_eq!(expected["id"], id.as_str());
    assert_eq!(expected["createdBy"], "anonymous");
    assert_eq!(expected["done"], true);
    assert_eq!(
        expected["metadata"]["@type"],
        "type.googleapis.com/google.protobuf.Struct"
    );
    assert_eq!(expected["metadata"]["value"]["step"], "copy");
    assert_eq!(expected["response"]["value"]["snapshotId"], "snap-1");
    for time in ["createdAt", "modifiedAt"] {
        let text = expected[time].as_str().unwrap();
        assert!(
            text.len() >= 20 && text.as_bytes()[10] == b'T' && text.ends_with('Z'),
            "{time}: {text}"
        );
        assert!(text.parse::<prost_types::Timestamp>().is_ok(), "{text}");
    }
    assert_eq!(expected_details["state"], "OPERATION_STATE_DONE");
    assert_eq!(expected_details["resourceId"], "disk-1");
    assert_eq!(expected_details["progress"]["workDone"], "5");
    assert_eq!(expected_details["progress"]["workTotal"], "12345678901");
    assert_eq!(
        expected_details["progress"]["steps"][0]["state"],
        "STATE_RUNNING"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_producer_drives_an_operation_over_rest() {
    let server = Server::start().await;
    let created: pb::Operation = server
        .post_ok(
            "/v1/operations",
            r#"{
                "description": "resize vm-1",
                "resourceId": "vm-1",
                "metadata": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"size": "large"}},
                "cancellationPolicy": "CANCELLATION_POLICY_COOPERATIVE",
                "idPrefix": "fhm",
                "leaseDuration": "30s"
            }"#,
        )
        .await;
    let id = id_of(&created);
    assert!(id.starts_with("fhm"));
    assert_eq!(created.resource_id, "vm-1");
    assert!(created.lease_expires_at.is_some());
    assert_eq!(created, server.grpc.get_details(&id).await.unwrap());

    let updated: pb::Operation = server
        .post_ok(
            &format!("/v1/operations/{id}:updateMetadata"),
            r#"{"progress": {"workDone": "3", "workTotal": 10, "message": "copying"}}"#,
        )
        .await;
    assert_eq!(updated.progress.as_ref().unwrap().work_done, 3);
    // The id may be repeated in the body.
    let with_id: pb::Operation = server
        .post_ok(
            &format!("/v1/operations/{id}:updateMetadata"),
            &format!(r#"{{"operationId": "{id}", "progress": {{"workDone": 4}}}}"#),
        )
        .await;
    assert_eq!(with_id.progress.unwrap().work_done, 4);

    let beat: pb::HeartbeatResponse = server
        .post_ok(
            &format!("/v1/operations/{id}:heartbeat"),
            r#"{"leaseDuration": "10s"}"#,
        )
        .await;
    assert!(!beat.cancel_requested);
    assert!(beat.lease_expires_at.is_some());

    // A cooperative operation is only told about a cancel.
    let cancelled: ycop::Operation = server.get_ok(&format!("/operations/{id}:cancel")).await;
    assert!(!cancelled.done);
    // An empty heartbeat body (no content type needed) renews for the default lease.
    let response = server
        .http
        .post(server.url(&format!("/v1/operations/{id}:heartbeat")))
        .send()
        .await
        .unwrap();
    let beat: pb::HeartbeatResponse = ok(response).await;
    assert!(beat.cancel_requested);

    let done: pb::Operation = server
        .post_ok(
            &format!("/v1/operations/{id}:complete"),
            r#"{"error": {"code": 1, "message": "cancelled at the producer's end"}}"#,
        )
        .await;
    assert_eq!(done.state, pb::OperationState::Done as i32);
    assert!(done.cancel_requested_at.is_some());
    assert_eq!(done, server.grpc.get_details(&id).await.unwrap());

    // Repeating the completion is a no-op; a different one is refused.
    let again: pb::Operation = server
        .post_ok(
            &format!("/v1/operations/{id}:complete"),
            r#"{"error": {"code": 1, "message": "cancelled at the producer's end"}}"#,
        )
        .await;
    assert_eq!(again, done);
    let refused = server
        .post(
            &format!("/v1/operations/{id}:complete"),
            r#"{"response": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {}}}"#,
        )
        .await;
    let refused = error(refused, 400, 9).await;
    assert_eq!(
        refused.detail_types,
        ["type.googleapis.com/google.rpc.PreconditionFailure"]
    );
    server.stop().await;
}

#[tokio::test]
async fn cancel_answers_get_and_post() {
    let server = Server::start().await;
    let by_get = create_running(&server, "a").await;
    let cancelled: ycop::Operation = server.get_ok(&format!("/operations/{by_get}:cancel")).await;
    assert!(cancelled.done);
    match cancelled.result {
        Some(ycop::operation::Result::Error(ref status)) => assert_eq!(status.code, 1),
        ref other => panic!("expected an error result, got {other:?}"),
    }
    assert_eq!(cancelled, server.grpc.get(&by_get).await.unwrap());
    // Cancelling a cancelled operation returns it unchanged.
    let again: ycop::Operation = server.get_ok(&format!("/operations/{by_get}:cancel")).await;
    assert_eq!(again, cancelled);

    let by_post = create_running(&server, "b").await;
    // No body and no content type, as curl -X POST sends it.
    let response = server
        .http
        .post(server.url(&format!("/operations/{by_post}:cancel")))
        .send()
        .await
        .unwrap();
    let cancelled: ycop::Operation = ok(response).await;
    assert!(cancelled.done);
    // A body naming the operation is fine too; naming another is not.
    let body = format!(r#"{{"operationId": "{by_post}"}}"#);
    let again: ycop::Operation = server
        .post_ok(&format!("/operations/{by_post}:cancel"), &body)
        .await;
    assert_eq!(again, cancelled);
    let other = server
        .post(
            &format!("/operations/{by_post}:cancel"),
            r#"{"operationId": "ops00000000000000000"}"#,
        )
        .await;
    assert_eq!(error(other, 400, 3).await.fields, ["operationId"]);

    let not_cancellable: pb::Operation = server
        .post_ok(
            "/v1/operations",
            r#"{"cancellationPolicy": "CANCELLATION_POLICY_NOT_CANCELLABLE"}"#,
        )
        .await;
    let refused = server
        .get(&format!("/operations/{}:cancel", id_of(&not_cancellable)))
        .await;
    let refused = error(refused, 400, 9).await;
    assert!(refused.message.contains("not cancellable"), "{refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_idempotency_key_header_counts_on_create() {
    let server = Server::start().await;
    let create = |key: &'static str, body: &'static str| {
        server
            .http
            .post(server.url("/v1/operations"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let first: pb::Operation = ok(create("key-1", r#"{"description": "x"}"#).await.unwrap()).await;
    let second: pb::Operation = ok(create("key-1", r#"{"description": "x"}"#).await.unwrap()).await;
    assert_eq!(first, second);
    // The header and the field are one key.
    let by_field: pb::Operation = server
        .post_ok(
            "/v1/operations",
            r#"{"description": "x", "idempotencyKey": "key-1"}"#,
        )
        .await;
    assert_eq!(by_field, first);
    let other: pb::Operation = ok(create("key-2", r#"{"description": "x"}"#).await.unwrap()).await;
    assert_ne!(id_of(&other), id_of(&first));

    let reused = create("key-1", r#"{"description": "y"}"#).await.unwrap();
    let reused = error(reused, 400, 9).await;
    assert!(reused.message.contains("idempotency key"), "{reused:?}");
    let mismatch = create("key-1", r#"{"idempotencyKey": "key-2"}"#)
        .await
        .unwrap();
    assert_eq!(error(mismatch, 400, 3).await.fields, ["idempotencyKey"]);
    server.stop().await;
}

#[tokio::test]
async fn lists_page_with_tokens_and_filter() {
    let server = Server::start().await;
    let mut created = Vec::new();
    for i in 0..5 {
        let op: pb::Operation = server
            .post_ok(
                "/v1/operations",
                &format!(r#"{{"description": "op {i}", "resourceId": "disk-9"}}"#),
            )
            .await;
        created.push(id_of(&op));
    }
    create_running(&server, "elsewhere").await;
    created.reverse(); // newest first

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page: pb::ListOperationsResponse = server
            .get_ok(&format!(
                "/v1/operations?resourceId=disk-9&pageSize=2&pageToken={token}"
            ))
            .await;
        pages += 1;
        seen.extend(page.operations.iter().map(id_of));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, created);
    assert_eq!(pages, 3);

    // The same page as over gRPC, byte for byte.
    let over_grpc = server
        .grpc
        .list(opsd_client::ListOperationsRequest {
            resource_id: "disk-9".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let response = server
        .get("/v1/operations?resourceId=disk-9&pageSize=2")
        .await;
    assert_eq!(
        response.text().await.unwrap(),
        to_json(&over_grpc).unwrap().to_string()
    );

    server.grpc.cancel(&created[0]).await.unwrap();
    for (query, expected) in [
        ("state=DONE", 1),
        ("state=running", 5),
        ("state=STATE_FILTER_DONE", 1),
        ("state=RUNNING", 5),
        ("state=ANY", 6),
        ("createdBy=anonymous", 6),
        ("createdBy=someone-else", 0),
        ("createdAfter=2000-01-01T00:00:00Z", 6),
        ("createdBefore=2000-01-01T00:00:00%2B03:00", 0),
        ("idPrefix=ops", 6),
        ("idPrefix=", 6),
        (&format!("idPrefix={}", &created[1][..12]), 1),
        ("idPrefix=zzz", 0),
        ("descriptionContains=OP%203", 1),
        ("descriptionContains=op", 5),
        ("descriptionContains=ELSEWHERE&state=running", 1),
        ("descriptionContains=%25", 0),
        (
            "descriptionContains=op&idPrefix=ops&resourceId=disk-9&pageSize=4",
            4,
        ),
    ] {
        let page: pb::ListOperationsResponse =
            server.get_ok(&format!("/v1/operations?{query}")).await;
        assert_eq!(page.operations.len(), expected, "{query}");
    }

    for (query, field) in [
        ("pageSize=1001", "pageSize"),
        ("pageSize=ten", "pageSize"),
        ("pageToken=garbage", "pageToken"),
        ("state=SOMETIMES", "state"),
        ("createdAfter=yesterday", "createdAfter"),
        ("color=blue", "color"),
        ("pageSize=1&pageSize=2", "pageSize"),
        ("idPrefix=OPS", "idPrefix"),
        ("idPrefix=ops%25", "idPrefix"),
        (
            &format!("descriptionContains={}", "a".repeat(257)),
            "descriptionContains",
        ),
        ("descriptionContains=a%00", "descriptionContains"),
    ] {
        let response = server.get(&format!("/v1/operations?{query}")).await;
        assert_eq!(error(response, 400, 3).await.fields, [field], "{query}");
    }
    // A token is bound to the filters it was made for.
    let first: pb::ListOperationsResponse = server.get_ok("/v1/operations?pageSize=1").await;
    let response = server
        .get(&format!(
            "/v1/operations?pageSize=1&createdBy=x&pageToken={}",
            first.next_page_token
        ))
        .await;
    error(response, 400, 3).await;
    server.stop().await;
}

#[tokio::test]
async fn wait_returns_the_running_state_at_the_timeout_and_done_at_once() {
    let server = Server::start().await;
    let id = create_running(&server, "slow").await;
    let started = Instant::now();
    let running: pb::Operation = server
        .get_ok(&format!("/v1/operations/{id}:wait?timeout=0.2s"))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(running.state, pb::OperationState::Running as i32);

    let waiting = {
        let http = server.http.clone();
        let url = server.url(&format!("/v1/operations/{id}:wait?timeout=30s"));
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = server
        .grpc
        .complete(&id, Completion::Response(json_struct(&[])))
        .await
        .unwrap();
    let waited: pb::Operation = ok(waiting.await.unwrap()).await;
    assert_eq!(waited, done);

    for timeout in ["soon", "-1s", "30"] {
        let response = server
            .get(&format!("/v1/operations/{id}:wait?timeout={timeout}"))
            .await;
        assert_eq!(
            error(response, 400, 3).await.fields,
            ["timeout"],
            "{timeout}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_with_the_field_named() {
    let server = Server::start().await;
    let id = create_running(&server, "target").await;
    let update = format!("/v1/operations/{id}:updateMetadata");
    // Without a result, only after a reported failure (which this one has not).
    let complete = format!("/v1/operations/{id}:complete");

    // (path, content type, body, the field named)
    let oversized = format!(
        r#"{{"description": "{}"}}"#,
        "x".repeat(opsd_server::rest::MAX_BODY_BYTES)
    );
    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        (
            "/v1/operations",
            Some("application/json"),
            "{".into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            "not json".into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            "[]".into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"colour": "red"}"#.into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"description": 7}"#.into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"exclusive": "yes"}"#.into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"leaseDuration": "5 minutes"}"#.into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"metadata": {"a": 1}}"#.into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"metadata": {"@type": "type.googleapis.com/no.Such"}}"#.into(),
            "body",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{} {}"#.into(),
            "body",
        ),
        (
            "/v1/operations",
            None,
            r#"{"description": "x"}"#.into(),
            "content-type",
        ),
        (
            "/v1/operations",
            Some("text/plain"),
            r#"{"description": "x"}"#.into(),
            "content-type",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            oversized,
            "body",
        ),
        // Caught by the domain, named in JSON spelling.
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"cancellationPolicy": 9}"#.into(),
            "cancellationPolicy",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"idPrefix": "9ab"}"#.into(),
            "idPrefix",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"leaseDuration": "-5s"}"#.into(),
            "leaseDuration",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            format!(r#"{{"description": "{}"}}"#, "x".repeat(257)),
            "description",
        ),
        (
            "/v1/operations",
            Some("application/json"),
            r#"{"exclusive": true}"#.into(),
            "resourceId",
        ),
        (
            update.as_str(),
            Some("application/json"),
            "{}".into(),
            "metadata",
        ),
        (
            update.as_str(),
            Some("application/json"),
            r#"{"progress": {"workDone": "-1"}}"#.into(),
            "progress.workDone",
        ),
        (
            update.as_str(),
            Some("application/json; charset=utf-8"),
            r#"{"operationId": "ops00000000000000000", "progress": {}}"#.into(),
            "operationId",
        ),
        (
            complete.as_str(),
            Some("application/json"),
            "{}".into(),
            "result",
        ),
        (
            "/v1/operations/not-an-id:complete",
            Some("application/json"),
            r#"{"error": {"code": 9}}"#.into(),
            "operationId",
        ),
    ];
    for (path, content_type, body, field) in cases {
        let mut request = server.http.post(server.url(path)).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let shown = &body[..body.len().min(60)];
        let error = error(response, 400, 3).await;
        assert_eq!(error.fields, [field], "{path} {shown}: {error:?}");
        assert_eq!(
            error.detail_types,
            ["type.googleapis.com/google.rpc.BadRequest"]
        );
        assert!(error.message.starts_with(field), "{error:?}");
    }

    // Not valid UTF-8, and a chunked body past the limit with no length given.
    let response = server
        .http
        .post(server.url("/v1/operations"))
        .header("content-type", "application/json")
        .body(vec![b'"', 0xff, 0xfe, b'"'])
        .send()
        .await
        .unwrap();
    assert_eq!(error(response, 400, 3).await.fields, ["body"]);
    // Past the limit with no length given, and with a length far past it.
    for (framing, body) in [
        ("transfer-encoding: chunked", chunked(5, 1 << 20)),
        ("content-length: 1000000000", b"{}".to_vec()),
    ] {
        let (status, answer) = post_raw(server.address, framing, body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer.contains(r#""message":"body: is larger than 4 MiB""#),
            "{answer}"
        );
    }

    // Bad ids in the path.
    for path in [
        "/operations/not-an-id",
        "/operations/OPS00000000000000000:cancel",
        "/v1/operations/x",
        "/v1/operations/%20:wait",
    ] {
        let response = server.get(path).await;
        assert_eq!(
            error(response, 400, 3).await.fields,
            ["operationId"],
            "{path}"
        );
    }
    // Messages are JSON-escaped.
    let response = server.post("/v1/operations", "{\"a\\\"b\\nc\": 1}").await;
    let escaped = error(response, 400, 3).await;
    assert!(escaped.message.contains("a\"b\nc"), "{escaped:?}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_routes_are_not_found() {
    let server = Server::start().await;
    let missing = "ops00000000000000000";
    for response in [
        server.get(&format!("/operations/{missing}")).await,
        server.get(&format!("/operations/{missing}:cancel")).await,
        server
            .post(&format!("/operations/{missing}:cancel"), "{}")
            .await,
        server.get(&format!("/v1/operations/{missing}")).await,
        server
            .get(&format!("/v1/operations/{missing}:wait?timeout=1s"))
            .await,
        server
            .post(&format!("/v1/operations/{missing}:heartbeat"), "{}")
            .await,
    ] {
        let not_found = error(response, 404, 5).await;
        assert_eq!(not_found.message, format!("operation {missing} not found"));
        assert_eq!(
            not_found.detail_types,
            ["type.googleapis.com/google.rpc.ResourceInfo"]
        );
    }

    let id = create_running(&server, "x").await;
    for (method, path) in [
        ("GET", format!("/operations/{id}:frobnicate")),
        ("POST", format!("/operations/{id}:frobnicate")),
        ("POST", format!("/operations/{id}")),
        ("GET", format!("/operations/{id}:")),
        ("GET", format!("/v1/operations/{id}:heartbeat")),
        ("POST", format!("/v1/operations/{id}:wait")),
        ("DELETE", format!("/v1/operations/{id}")),
        ("PUT", "/v1/operations".to_owned()),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = server
            .http
            .request(method.clone(), server.url(&path))
            .send()
            .await
            .unwrap();
        let not_found = error(response, 404, 5).await;
        assert_eq!(not_found.message, format!("no route for {method} {path}"));
    }
    server.stop().await;
}

#[tokio::test]
async fn hostile_input_never_fails_the_server() {
    let server = Server::start().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested = format!(
        r#"{{"metadata": {{"@type": "type.googleapis.com/google.protobuf.Struct", "value": {}{}}}}}"#,
        r#"{"a":"#.repeat(200),
        "}".repeat(201)
    );
    for body in [
        deep.as_str(),
        &nested,
        r#"{"progress": {"workDone": "99999999999999999999999"}}"#,
        r#"{"progress": {"workDone": 1e400}}"#,
        r#"{"deadline": "9999-12-31T23:59:59Z"}"#,
        r#"{"deadline": "0001-01-01T00:00:00Z"}"#,
        r#"{"leaseDuration": "315576000001s"}"#,
        "\u{0}",
        "{\"description\": \"\u{0}\"}",
    ] {
        for path in [
            "/v1/operations",
            "/v1/operations/ops00000000000000000:updateMetadata",
        ] {
            let response = server.post(path, body).await;
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(
                status.is_client_error() || status.is_success(),
                "{path} {}: {status} {text}",
                &body[..body.len().min(40)]
            );
        }
    }
    for path in [
        "/operations/%FF%FE",
        "/operations/%00",
        "/v1/operations?pageSize=%FF",
        "/v1/operations?state=%00",
        "/v1/operations?createdAfter=99999-01-01T00:00:00Z",
        "/v1/operations/ops00000000000000000:wait?timeout=99999999999999999999s",
    ] {
        let response = server.get(path).await;
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let server = Server::start().await;
    let response = server.get("/openapi.yaml").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    let text = response.text().await.unwrap();
    assert_eq!(text, opsd_server::rest::OPENAPI_YAML);
    assert!(text.starts_with("openapi: 3.0.3\n"), "{}", &text[..40]);
    for path in [
        "/operations/{operation_id}:",
        "/operations/{operation_id}:cancel:",
        "/v1/operations:",
        "/v1/operations/{operation_id}:",
        "/v1/operations/{operation_id}:wait:",
        "/v1/operations/{operation_id}:updateMetadata:",
        "/v1/operations/{operation_id}:heartbeat:",
        "/v1/operations/{operation_id}:complete:",
        "/v1/operations/{operation_id}:reportFailure:",
        "/iam/v1/tokens:",
        "/v1/overview:",
        "/v1/caller:",
        "/openapi.yaml:",
    ] {
        assert!(
            text.lines().any(|line| line == format!("  {path}")),
            "{path} is not described"
        );
    }
    // YAML that a JSON-minded reader takes too: spaces only, and every
    // reference resolves to a schema of the document.
    assert!(!text.contains('\t'));
    for reference in text.split("$ref: '#/components/").skip(1) {
        let (kind, rest) = reference.split_once('/').unwrap();
        let name = rest.split('\'').next().unwrap();
        assert!(
            text.contains(&format!("\n  {kind}:\n")) && text.contains(&format!("\n    {name}:\n")),
            "{kind}/{name} is referenced but not defined"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn one_address_serves_grpc_and_rest() {
    let server = Server::start().await;
    let id = create_running(&server, "both").await;
    let over_rest: ycop::Operation = server.get_ok(&format!("/operations/{id}")).await;
    // A fresh gRPC connection to the same address, after the REST calls.
    let grpc = Client::connect(&server.address.to_string()).await.unwrap();
    assert_eq!(grpc.get(&id).await.unwrap(), over_rest);
    let cancelled = grpc.cancel(&id).await.unwrap();
    let over_rest: ycop::Operation = server.get_ok(&format!("/operations/{id}")).await;
    assert_eq!(over_rest, cancelled);
    server.stop().await;
}

#[tokio::test]
async fn the_offered_fallback_answers_rest_in_json_and_grpc_as_unimplemented() {
    // Not mounted yet (tonic's fallback answers every unknown path in gRPC):
    // this is the wiring `opsd_server::router` would take.
    let service = Arc::new(OperationService::new(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let endpoints = opsd_server::discovery::Endpoints::new(&address.to_string(), &[]);
    let gate =
        opsd_server::auth::Gatekeeper::new(Default::default(), Arc::clone(service.metrics()));
    let app = opsd_server::router(service, gate, &Default::default(), endpoints)
        .await
        .unwrap()
        .fallback(opsd_server::rest::fallback);
    let (stop, stopped) = oneshot::channel::<()>();
    let limits = opsd_server::limits::Limits::default();
    let task = tokio::spawn(async move {
        opsd_server::http::run(listener, app, None, &limits, async {
            let _ = stopped.await;
        })
        .await
    });

    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{address}/no/such/thing"))
        .send()
        .await
        .unwrap();
    let not_found = error(response, 404, 5).await;
    assert_eq!(not_found.message, "no route for GET /no/such/thing");
    let response = http
        .post(format!("http://{address}/no.Such/Method"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "12");
    // Known routes are unaffected.
    let grpc = Client::connect(&address.to_string()).await.unwrap();
    let op = grpc.create(NewOperation::new("x")).await.unwrap();
    let response = http
        .get(format!("http://{address}/operations/{}", id_of(&op)))
        .send()
        .await
        .unwrap();
    let _: ycop::Operation = ok(response).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failure_reported_over_rest_shows_while_running_and_ends_the_operation() {
    let server = Server::start().await;
    let id = create_running(&server, "create disk").await;
    let path = format!("/v1/operations/{id}:reportFailure");

    let reported: pb::Operation = server
        .post_ok(
            &path,
            r#"{"error": {"code": 8, "message": "quota exceeded, releasing the disk"}}"#,
        )
        .await;
    assert_eq!(reported, server.grpc.get_details(&id).await.unwrap());
    assert!(reported.failure_reported_at.is_some());
    // The clouds' REST Get: done is false (left out) and error is set.
    let response = server.get(&format!("/operations/{id}")).await;
    assert!(
        response.headers().contains_key("x-operation-poll-interval"),
        "still running: still polled"
    );
    let text = response.text().await.unwrap();
    let public: ycop::Operation = from_json(&text).unwrap();
    assert!(!public.done);
    assert!(!text.contains("\"done\""), "{text}");
    assert!(
        text.contains(r#""error":{"code":8,"message":"quota exceeded, releasing the disk"}"#),
        "{text}"
    );

    // Bad reports name their field; a done operation takes none.
    let bad = error(
        server.post(&path, r#"{"error": {"code": 0}}"#).await,
        400,
        3,
    )
    .await;
    assert_eq!(bad.fields, ["error.code"]);
    let missing = error(server.post(&path, "{}").await, 400, 3).await;
    assert_eq!(missing.fields, ["error"]);
    error(
        server
            .post(
                "/v1/operations/ops00000000000000000:reportFailure",
                r#"{"error": {"code": 8}}"#,
            )
            .await,
        404,
        5,
    )
    .await;

    // A response is refused; an empty completion takes the reported error.
    let complete = format!("/v1/operations/{id}:complete");
    let refused = server
        .post(
            &complete,
            r#"{"response": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {}}}"#,
        )
        .await;
    let refused = error(refused, 400, 9).await;
    assert!(
        refused.message.contains("failure was reported"),
        "{refused:?}"
    );
    let done: pb::Operation = server.post_ok(&complete, "{}").await;
    assert_eq!(done.state, pb::OperationState::Done as i32);
    assert_eq!(done.reported_failure, reported.reported_failure);
    let late = error(
        server.post(&path, r#"{"error": {"code": 13}}"#).await,
        400,
        9,
    )
    .await;
    assert_eq!(
        late.detail_types,
        ["type.googleapis.com/google.rpc.PreconditionFailure"]
    );

    // Without a report, an empty completion is refused and names the field.
    let plain = create_running(&server, "plain").await;
    let empty = error(
        server
            .post(&format!("/v1/operations/{plain}:complete"), "{}")
            .await,
        400,
        3,
    )
    .await;
    assert_eq!(empty.fields, ["result"]);
    server.stop().await;
}

/// Reads SSE frames from a streaming response until `count` events arrived:
/// (id, event, data) of each.
async fn sse_events(
    response: &mut reqwest::Response,
    count: usize,
) -> Vec<(String, String, String)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream goes on");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim_start().to_owned())
            };
            // Keep-alive comments have no event.
            if let Some(data) = field("data") {
                events.push((
                    field("id").unwrap_or_default(),
                    field("event").unwrap_or_default(),
                    data,
                ));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_timeline_and_the_feed_over_rest() {
    let server = Server::start().await;
    // The feed, from now, of one resource's operations.
    let mut feed = server
        .http
        .get(server.url("/v1/operations:watch?resourceId=disk-9&kinds=created,completed"))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    assert_eq!(feed.headers()["content-type"], "text/event-stream");

    let mut ids = Vec::new();
    for n in 0..2 {
        let op: pb::Operation = server
            .post_ok(
                "/v1/operations",
                &format!(r#"{{"description":"snap {n}","resourceId":"disk-9"}}"#),
            )
            .await;
        let id = id_of(&op);
        let _: pb::Operation = server
            .post_ok(
                &format!("/v1/operations/{id}:updateMetadata"),
                r#"{"progress":{"workDone":"1","workTotal":"2"}}"#,
            )
            .await;
        let _: pb::Operation = server
            .post_ok(
                &format!("/v1/operations/{id}:complete"),
                r#"{"error":{"code":9,"message":"no"}}"#,
            )
            .await;
        ids.push(id);
    }
    create_running(&server, "another resource").await;
    let events = sse_events(&mut feed, 4).await;
    let kinds: Vec<&str> = events.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["created", "completed", "created", "completed"]);
    let first: pb::Event = from_json(&events[0].2).unwrap();
    assert_eq!(first.operation_id, ids[0]);
    assert_eq!(first.description, "snap 0");
    drop(feed);

    // Last-Event-ID resumes right after that event.
    let mut resumed = server
        .http
        .get(server.url("/v1/operations:watch?resourceId=disk-9&kinds=created,completed"))
        .header("last-event-id", &events[1].0)
        .send()
        .await
        .unwrap();
    let rest = sse_events(&mut resumed, 2).await;
    assert_eq!(rest, events[2..]);
    drop(resumed);

    // The timeline of one operation, paged.
    let page: pb::ListEventsResponse = server
        .get_ok(&format!("/v1/operations/{}/events?pageSize=2", ids[0]))
        .await;
    assert_eq!(page.events.len(), 2);
    let last: pb::ListEventsResponse = server
        .get_ok(&format!(
            "/v1/operations/{}/events?pageToken={}",
            ids[0], page.next_page_token
        ))
        .await;
    let kinds: Vec<pb::EventKind> = page
        .events
        .iter()
        .chain(&last.events)
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            pb::EventKind::Created,
            pb::EventKind::MetadataUpdated,
            pb::EventKind::Completed
        ]
    );
    assert!(last.next_page_token.is_empty());

    // Refusals name their field.
    let bad = error(
        server.get("/v1/operations:watch?kinds=exploded").await,
        400,
        3,
    )
    .await;
    assert_eq!(bad.fields, ["kinds"]);
    let bad = error(
        server
            .http
            .get(server.url("/v1/operations:watch"))
            .header("last-event-id", "nonsense")
            .send()
            .await
            .unwrap(),
        400,
        3,
    )
    .await;
    assert_eq!(bad.fields, ["last-event-id"]);
    error(
        server
            .get("/v1/operations/ops00000000000000000/events")
            .await,
        404,
        5,
    )
    .await;
    let bad = error(
        server
            .get(&format!("/v1/operations/{}/events?pageToken=x", ids[0]))
            .await,
        400,
        3,
    )
    .await;
    assert_eq!(bad.fields, ["pageToken"]);
    server.stop().await;
}

/// `GET /v1/overview` reads its parameters from the query in their JSON
/// names, answers in camelCase JSON as gRPC's GetOverview, and refuses bad
/// parameters naming them.
#[tokio::test]
async fn the_overview_answers_in_json_with_its_parameters_from_the_query() {
    let server = Server::start().await;
    let quiet = create_running(&server, "snapshot disk-1").await;
    let failed = create_running(&server, "snapshot disk-2").await;
    let _: pb::Operation = server
        .post_ok(
            &format!("/v1/operations/{failed}:complete"),
            r#"{"error":{"code":9,"message":"disk is busy"}}"#,
        )
        .await;
    // Any time since its creation is longer than a threshold of 1ns.
    let response = server
        .get("/v1/overview?window=600s&stuckAfter=0.000000001s&oldest=5")
        .await;
    let text = response.text().await.unwrap();
    for name in [
        "\"stuckAfter\":\"0.000000001s\"",
        "\"oldestRunning\"",
        "\"idPrefix\":\"ops\"",
        "\"p50ToDone\"",
        "\"stuckGapFactor\":10",
        "\"leaseWarning\":\"30s\"",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    let overview: pb::GetOverviewResponse = from_json(&text).unwrap();
    assert_eq!(overview.window.unwrap().seconds, 600);
    assert_eq!(overview.running, 1);
    assert_eq!(id_of(&overview.oldest_running[0]), quiet);
    let stuck = &overview.stuck[0];
    assert_eq!(id_of(stuck.operation.as_ref().unwrap()), quiet);
    assert!(matches!(
        stuck.reasons[0].rule,
        Some(pb::stuck_reason::Rule::Unchanged(_))
    ));
    let ops = &overview.producers[0];
    assert_eq!((ops.completed, ops.failed, ops.cancelled), (1, 1, 0));

    // The same as gRPC's answer, but for the time it was taken at.
    let mut grpc = server
        .grpc
        .overview(pb::GetOverviewRequest {
            window: overview.window,
            stuck_after: overview.stuck_after,
            oldest: 5,
        })
        .await
        .unwrap();
    grpc.now = overview.now;
    for stuck in &mut grpc.stuck {
        stuck.reasons.clear();
    }
    let mut rest = overview.clone();
    for stuck in &mut rest.stuck {
        stuck.reasons.clear();
    }
    assert_eq!(grpc, rest);

    for (query, field) in [
        ("window=0s", "window"),
        ("stuckAfter=-1s", "stuckAfter"),
        ("oldest=101", "oldest"),
        ("oldest=many", "oldest"),
        ("since=1h", "since"),
    ] {
        let refused = error(server.get(&format!("/v1/overview?{query}")).await, 400, 3).await;
        assert_eq!(refused.fields, [field], "{query}: {refused:?}");
    }
    let refused = error(server.post("/v1/overview", "{}").await, 404, 5).await;
    assert_eq!(refused.message, "no route for POST /v1/overview");
    server.stop().await;
}
