//! Hostile callers: HTTP/2 streams opened and reset as fast as a client can
//! (the "rapid reset" attack), more streams than a connection may open,
//! oversized and undecodable messages, payloads over their limits on every
//! path, and watchers over the per-connection and total caps. After each the
//! server must still answer, promptly, with the limit named in the refusal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opsd_client::{Client, ClientError, Completion, NewOperation, Progress, Step};
use opsd_core::SystemClock;
use opsd_server::ServeOptions;
use opsd_server::grpc::GrpcOptions;
use opsd_server::limits::Limits;
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::MemoryStore;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_types::StatusExt;

use crate::grpc::{sample, scrape};
use crate::process::Process;
use crate::support::Listening;

/// An in-process server on the memory store with these limits.
async fn serve(limits: Limits) -> Listening {
    let service = Arc::new(OperationService::new(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    ));
    Listening::start(
        service,
        ServeOptions {
            grpc: GrpcOptions {
                limits,
                ..GrpcOptions::default()
            },
            ..ServeOptions::default()
        },
    )
    .await
}

fn rpc_status(result: Result<impl std::fmt::Debug, ClientError>) -> tonic::Status {
    match result {
        Err(ClientError::Rpc(status)) => status,
        other => panic!("expected an rpc error, got {other:?}"),
    }
}

fn first_violation(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_else(|| panic!("no field violation in {status:?}"))
}

/// A Get on a fresh connection answers within `within`; the server is alive.
async fn answers_promptly(address: &str, id: &str, within: Duration) {
    tokio::time::timeout(within, async {
        let client = Client::connect(address).await.unwrap();
        assert_eq!(client.get(id).await.unwrap().id, id);
    })
    .await
    .unwrap_or_else(|_| panic!("no answer within {within:?} on a fresh connection"));
}

fn grpc_request(address: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{address}{path}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

fn get_message(id: &str) -> Bytes {
    let message = opsd_proto::yandex::cloud::operation::GetOperationRequest {
        operation_id: id.to_owned(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

const GET_PATH: &str = "/yandex.cloud.operation.OperationService/Get";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rapid_reset_streams_leave_the_server_answering() {
    const STREAMS: usize = 20_000;
    const MAX_CONNECTIONS: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start_with(&[
        "--store",
        "memory",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let address = process.endpoint.clone();
    let client = Client::connect(&address).await.unwrap();
    let id = client
        .create(NewOperation::new("under attack"))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;

    // A well-behaved caller keeps calling Get on its own connection meanwhile.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let bystander = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut calls = 0u32;
            loop {
                let started = Instant::now();
                client
                    .get(&id)
                    .await
                    .expect("the bystander's Get is answered");
                slowest = slowest.max(started.elapsed());
                calls += 1;
                tokio::select! {
                    _ = &mut stopped => return (calls, slowest),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
    };

    // The attacker: open a stream and reset it at once, again and again; when
    // the server closes the connection, connect again and go on.
    let started = Instant::now();
    let (mut sent, mut connections) = (0, 0);
    let (mut closed_by_server, mut closed_calmly) = (0, 0);
    let attack = tokio::time::timeout(Duration::from_secs(60), async {
        while sent < STREAMS && connections < MAX_CONNECTIONS {
            connections += 1;
            let tcp = TcpStream::connect(&address).await.unwrap();
            let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
            let connection = tokio::spawn(connection);
            let mut h2 = Some(h2);
            while sent < STREAMS {
                let Some(Ok(mut ready)) = (match h2.take() {
                    Some(h2) => Some(h2.ready().await),
                    None => None,
                }) else {
                    break;
                };
                let Ok((response, mut stream)) =
                    ready.send_request(grpc_request(&address, GET_PATH), false)
                else {
                    break;
                };
                stream.send_reset(h2::Reason::CANCEL);
                drop(response);
                sent += 1;
                h2 = Some(ready);
            }
            // Done with it: let the connection end unless the server ended it.
            drop(h2);
            // How the connection ended: the server's GOAWAY names the reason.
            // How the connection ended: the server's GOAWAY names the reason
            // (or the socket is gone before the client read it).
            if let Ok(Ok(Err(error))) =
                tokio::time::timeout(Duration::from_secs(10), connection).await
            {
                closed_by_server += 1;
                if error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                    closed_calmly += 1;
                }
            }
        }
    })
    .await;
    assert!(attack.is_ok(), "the attack loop is bounded in time");
    eprintln!(
        "rapid reset: {sent} streams opened and reset over {connections} connections in {:?}; \
         the server closed {closed_by_server}, {closed_calmly} with GOAWAY ENHANCE_YOUR_CALM",
        started.elapsed()
    );
    assert_eq!(sent, STREAMS, "the attacker was never refused a connection");
    // Every connection but the last, which the attacker ended itself.
    assert!(
        closed_by_server >= connections - 1 && closed_calmly > 0,
        "the server spots the pattern and closes the attacker's connections"
    );

    let _ = stop.send(());
    let (calls, slowest) = bystander.await.unwrap();
    assert!(calls > 0);
    eprintln!("bystander: {calls} Gets during the attack, slowest {slowest:?}");
    // Liveness, not speed: a generous bound a loaded CI machine still meets.
    assert!(slowest < Duration::from_secs(10), "a Get took {slowest:?}");
    answers_promptly(&address, &id, Duration::from_secs(10)).await;

    let mut process = process;
    assert!(process.is_running(), "the opsd process is still running");
    let metrics = scrape(address.parse().unwrap()).await;
    assert!(
        sample(
            &metrics,
            r#"opsd_requests_total{protocol="grpc",method="/yandex.cloud.operation.OperationService/Get",code="OK"}"#
        ) >= 1.0
    );
    process.terminate().await;
}

/// A raw HTTP/2 connection: the preface, settings, and frames written by
/// hand, so that it can do what well-behaved clients never do.
struct RawConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ACK: u8 = 1;
const REFUSED_STREAM: u32 = 7;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;

impl RawConnection {
    /// Connects, exchanges settings, and returns the server's MAX_CONCURRENT_STREAMS.
    async fn open(address: SocketAddr) -> (Self, Option<u32>) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut connection = Self {
            stream,
            buffer: Vec::new(),
        };
        connection.write(SETTINGS, 0, 0, &[]).await;
        let (mut max_streams, mut got_settings, mut got_ack) = (None, false, false);
        while !(got_settings && got_ack) {
            let frame = connection
                .read(Duration::from_secs(10))
                .await
                .expect("settings");
            if frame.kind != SETTINGS {
                continue;
            }
            if frame.flags & ACK != 0 {
                got_ack = true;
                continue;
            }
            for setting in frame.payload.chunks_exact(6) {
                if u16::from_be_bytes([setting[0], setting[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
                    max_streams = Some(u32::from_be_bytes([
                        setting[2], setting[3], setting[4], setting[5],
                    ]));
                }
            }
            connection.write(SETTINGS, ACK, 0, &[]).await;
            got_settings = true;
        }
        (connection, max_streams)
    }

    async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame, or `None` when the connection ends or `within` passes.
    async fn read(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if self.buffer.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]])
                    as usize;
                if self.buffer.len() >= 9 + len {
                    let frame = Frame {
                        kind: self.buffer[3],
                        flags: self.buffer[4],
                        stream: u32::from_be_bytes([
                            self.buffer[5],
                            self.buffer[6],
                            self.buffer[7],
                            self.buffer[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buffer[9..9 + len].to_vec(),
                    };
                    self.buffer.drain(..9 + len);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 16 << 10];
            let remaining = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(remaining, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A request header block in HPACK, literal fields only (no table, no Huffman).
fn header_block(path: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, text: &str) {
        assert!(text.len() < 127);
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    block.push(0x04); // :path, literal value
    string(&mut block, path);
    block.push(0x01); // :authority, literal value
    string(&mut block, "opsd");
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31), literal value
    string(&mut block, "application/grpc");
    block.push(0x00); // a new name: te
    string(&mut block, "te");
    string(&mut block, "trailers");
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_connection_limit_are_refused_and_the_rest_served() {
    const LIMIT: u32 = 16;
    const EXTRA: u32 = 100;
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start_with(&[
        "--store",
        "memory",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-streams-per-connection",
        &LIMIT.to_string(),
    ]);
    let address: SocketAddr = process.endpoint.parse().unwrap();
    let client = Client::connect(&process.endpoint).await.unwrap();
    let id = client
        .create(NewOperation::new("flooded"))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;

    let (mut raw, max_streams) = RawConnection::open(address).await;
    assert_eq!(
        max_streams,
        Some(LIMIT),
        "the server announces --max-streams-per-connection"
    );
    // Open every stream with its headers and no body, so each stays open.
    let block = header_block(GET_PATH);
    for n in 0..LIMIT + EXTRA {
        raw.write(HEADERS, END_HEADERS, 2 * n + 1, &block).await;
    }
    let mut refused = Vec::new();
    let mut goaway = None;
    while refused.len() < EXTRA as usize && goaway.is_none() {
        let Some(frame) = raw.read(Duration::from_secs(10)).await else {
            break;
        };
        match frame.kind {
            RST_STREAM => {
                let code = u32::from_be_bytes(frame.payload[..4].try_into().unwrap());
                assert_eq!(code, REFUSED_STREAM, "streams over the limit are refused");
                refused.push(frame.stream);
            }
            GOAWAY => goaway = Some(frame),
            _ => {}
        }
    }
    assert!(
        goaway.is_none(),
        "refusing streams does not end the connection: {goaway:?}"
    );
    assert_eq!(
        refused.len(),
        EXTRA as usize,
        "every stream over the limit is refused"
    );
    assert!(
        refused.iter().all(|&stream| stream > 2 * LIMIT - 1),
        "the first {LIMIT} streams are kept: {refused:?}"
    );

    // The streams within the limit are still served: finish the first one.
    raw.write(DATA, END_STREAM, 1, &get_message(&id)).await;
    let mut answered = false;
    while let Some(frame) = raw.read(Duration::from_secs(10)).await {
        if frame.kind == HEADERS && frame.stream == 1 {
            answered = true;
            break;
        }
    }
    assert!(answered, "a stream within the limit is answered");

    answers_promptly(&process.endpoint, &id, Duration::from_secs(10)).await;
    drop(raw);
    process.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_over_the_connection_and_server_limits_are_resource_exhausted() {
    let mut server = serve(Limits {
        max_watchers_per_connection: 3,
        max_watchers: 5,
        ..Limits::default()
    })
    .await;
    let address = server.address.to_string();
    let first = Client::connect(&address).await.unwrap();
    let id = first
        .create(NewOperation::new("watched"))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(first.watch(&id).await.unwrap());
    }
    let refused = rpc_status(first.watch(&id).await);
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-watchers-per-connection"),
        "{refused:?}"
    );
    let refused = rpc_status(first.wait(&id, Some(Duration::from_secs(1))).await);
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "Wait counts too: {refused:?}"
    );
    // The connection still serves everything else.
    assert_eq!(first.get(&id).await.unwrap().id, id);

    let second = Client::connect(&address).await.unwrap();
    held.push(second.watch(&id).await.unwrap());
    held.push(second.watch(&id).await.unwrap());
    let refused = rpc_status(second.watch(&id).await);
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("(--max-watchers)"),
        "{refused:?}"
    );
    // REST Waits count towards the same total.
    let rest = reqwest::get(format!(
        "http://{address}/v1/operations/{id}:wait?timeout=1s"
    ))
    .await
    .unwrap();
    assert_eq!(rest.status(), 429);
    let body: serde_json::Value = rest.json().await.unwrap();
    assert_eq!(body["code"], 8);
    assert!(
        body["message"].as_str().unwrap().contains("--max-watchers"),
        "{body}"
    );

    // The client's waiter, refused a Watch, polls with Get instead.
    let other = first
        .create(NewOperation::new("waited by polling"))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;
    let waiter = {
        let (client, other) = (first.clone(), other.clone());
        tokio::spawn(async move {
            let options = opsd_client::WaitOptions {
                timeout: Some(Duration::from_secs(30)),
                poll_interval: Duration::from_millis(50),
                ..Default::default()
            };
            client.wait_until_done(&other, options).await
        })
    };
    let response = opsd_client::pack_struct(&Default::default());
    second
        .complete(&other, Completion::Response(response))
        .await
        .unwrap();
    let waited = waiter.await.unwrap().expect("the waiter polls to the end");
    assert!(waited.operation.unwrap().done);

    // A watcher that goes away frees its place.
    held.remove(0);
    let admitted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match first.watch(&id).await {
                Ok(stream) => return stream,
                Err(ClientError::Rpc(status)) if status.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("a freed place is taken again within 10 s");
    held.push(admitted);

    // Every held watcher still sees the end.
    first
        .complete(
            &id,
            Completion::Response(opsd_client::pack_struct(&Default::default())),
        )
        .await
        .unwrap();
    for mut stream in held {
        let mut last = None;
        while let Some(op) = stream.message().await.unwrap() {
            last = Some(op);
        }
        assert!(last.unwrap().operation.unwrap().done);
    }
    let metrics = scrape(server.address).await;
    assert!(
        sample(
            &metrics,
            r#"opsd_limit_refusals_total{limit="watchers_per_connection"}"#
        ) >= 2.0
    );
    assert!(sample(&metrics, r#"opsd_limit_refusals_total{limit="watchers"}"#) >= 2.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undecodable_messages_are_refused_naming_why() {
    const LIMIT: usize = 64 << 10;
    let mut server = serve(Limits {
        max_message_size: LIMIT,
        ..Limits::default()
    })
    .await;
    let address = server.address.to_string();
    let client = Client::connect(&address).await.unwrap();
    let payload = |bytes: usize| prost_types::Any {
        type_url: "type.googleapis.com/acme.Blob".into(),
        value: vec![7; bytes],
    };

    let mut fits = NewOperation::new("fits");
    fits.metadata = Some(payload(LIMIT - 1024));
    client.create(fits).await.unwrap();
    let mut too_large = NewOperation::new("too large");
    too_large.metadata = Some(payload(LIMIT + 1));
    let status = rpc_status(client.create(too_large).await);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("larger than the limit of 64 KiB (--max-message-size)"),
        "{status:?}"
    );
    // The connection goes on serving.
    client.create(NewOperation::new("after")).await.unwrap();

    // REST bodies share the limit.
    let body = serde_json::json!({"description": "x".repeat(LIMIT)}).to_string();
    let answer = reqwest::Client::new()
        .post(format!("http://{address}/v1/operations"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let json: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(json["message"], "body: is larger than 64 KiB", "{json}");

    // Bytes that are no protobuf message: INVALID_ARGUMENT, never INTERNAL.
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    for body in [
        &[0u8, 0, 0, 0, 3, 0x0a, 0x05, 0xff][..], // a string longer than the message
        &[0, 0, 0, 0, 2, 0x0f, 0x01],             // wire type 7
        &[0, 0, 0, 0, 9, 0x0a],                   // a frame cut short
        &[],                                      // no message at all
    ] {
        let (response, mut stream) = h2
            .send_request(grpc_request(&address, GET_PATH), false)
            .unwrap();
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .unwrap();
        let response = response.await.unwrap();
        let status = tonic::Status::from_header_map(response.headers())
            .expect("a refusal before the handler is trailers-only");
        assert_eq!(status.code(), Code::InvalidArgument, "{body:?}: {status:?}");
        assert!(
            status
                .message()
                .starts_with("request: is not a valid request message: "),
            "{status:?}"
        );
        assert_eq!(first_violation(&status), "request");
        h2 = h2.ready().await.unwrap();
    }
    let metrics = scrape(server.address).await;
    assert_eq!(
        sample(
            &metrics,
            r#"opsd_limit_refusals_total{limit="message_size"}"#
        ),
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limits_hold_on_every_path() {
    let mut server = serve(Limits::default()).await;
    let client = Client::connect(&server.address.to_string()).await.unwrap();
    let over = prost_types::Any {
        type_url: "type.googleapis.com/acme.Blob".into(),
        value: vec![1; opsd_core::validate::MAX_PAYLOAD_BYTES + 1],
    };

    let mut new = NewOperation::new("x");
    new.metadata = Some(over.clone());
    assert_eq!(
        first_violation(&rpc_status(client.create(new).await)),
        "metadata.value"
    );
    let mut new = NewOperation::new("x");
    new.resource_id = Some("r".repeat(257));
    assert_eq!(
        first_violation(&rpc_status(client.create(new).await)),
        "resource_id"
    );
    let mut new = NewOperation::new("x");
    new.idempotency_key = Some("k".repeat(129));
    assert_eq!(
        first_violation(&rpc_status(client.create(new).await)),
        "idempotency_key"
    );

    let id = client
        .create(NewOperation::new("target"))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;
    let status = rpc_status(client.update(&id, Some(over.clone()), None).await);
    assert_eq!(first_violation(&status), "metadata.value");
    let progress = |message: String, steps: usize| Progress {
        work_done: 1,
        work_total: 2,
        message,
        steps: vec![
            Step {
                name: "s".into(),
                state: 0,
            };
            steps
        ],
    };
    let status = rpc_status(
        client
            .update(&id, None, Some(progress("я".repeat(257), 0)))
            .await,
    );
    assert_eq!(first_violation(&status), "progress.message");
    let status = rpc_status(
        client
            .update(&id, None, Some(progress(String::new(), 65)))
            .await,
    );
    assert_eq!(first_violation(&status), "progress.steps");

    let status = rpc_status(
        client
            .complete(&id, Completion::Response(over.clone()))
            .await,
    );
    assert_eq!(first_violation(&status), "response.value");
    let failure = |message: String, details: Vec<prost_types::Any>| {
        Completion::Error(opsd_proto::RpcStatus {
            code: 9,
            message,
            details,
        })
    };
    let status = rpc_status(
        client
            .complete(&id, failure("m".repeat(4097), vec![]))
            .await,
    );
    assert_eq!(first_violation(&status), "error.message");
    let status = rpc_status(client.complete(&id, failure("m".into(), vec![over])).await);
    assert_eq!(first_violation(&status), "error.details[0].value");
    let small = prost_types::Any {
        type_url: "type.googleapis.com/acme.Detail".into(),
        value: vec![],
    };
    let status = rpc_status(
        client
            .complete(&id, failure("m".into(), vec![small; 17]))
            .await,
    );
    assert_eq!(first_violation(&status), "error.details");

    // Nothing refused was written.
    let op = client.get(&id).await.unwrap();
    assert!(!op.done && op.metadata.is_none());
    server.stop().await;
}

/// Feed readers have limits of their own, per connection and in total, over
/// gRPC and SSE alike; a reader that goes away frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_readers_over_their_limits_are_resource_exhausted() {
    use opsd_proto::opsd::v1::WatchOperationsRequest;
    use opsd_proto::opsd::v1::operation_service_client::OperationServiceClient;
    let mut server = serve(Limits {
        max_feed_readers_per_connection: 2,
        max_feed_readers: 3,
        ..Limits::default()
    })
    .await;
    let address = server.address;
    let connect = || async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        OperationServiceClient::new(channel)
    };
    let mut first = connect().await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            first
                .watch_operations(WatchOperationsRequest::default())
                .await
                .unwrap(),
        );
    }
    let refused = first
        .watch_operations(WatchOperationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("--max-feed-readers-per-connection"),
        "{refused:?}"
    );
    // Watchers are counted apart: the connection may still watch operations.
    let client = Client::connect(&address.to_string()).await.unwrap();
    let id = client
        .create(NewOperation::new("watched"))
        .await
        .unwrap()
        .operation
        .unwrap()
        .id;
    let _watch = client.watch(&id).await.unwrap();

    let mut second = connect().await;
    held.push(
        second
            .watch_operations(WatchOperationsRequest::default())
            .await
            .unwrap(),
    );
    let refused = second
        .watch_operations(WatchOperationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("(--max-feed-readers)"),
        "{refused:?}"
    );
    // SSE readers count towards the same total.
    let rest = reqwest::get(format!("http://{address}/v1/operations:watch"))
        .await
        .unwrap();
    assert_eq!(rest.status(), 429);
    let body: serde_json::Value = rest.json().await.unwrap();
    assert_eq!(body["code"], 8);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--max-feed-readers"),
        "{body}"
    );

    // A reader that goes away frees its place.
    held.remove(0);
    let admitted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match second
                .watch_operations(WatchOperationsRequest::default())
                .await
            {
                Ok(stream) => return stream,
                Err(status) if status.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("a freed place is taken again");
    drop(admitted);
    drop(held);
    server.stop().await;
}
