//! gRPC request bytes into every method of the real router. The first byte
//! picks the method (and, with its top bit, whether the rest is sent as the
//! HTTP body as is instead of as one gRPC message).
//!
//! The answer is checked against the domain: the request decoded with prost
//! and translated as the adapter translates it, then the rule for that method
//! applied to the fixture it names. So beyond "no INTERNAL", a field lost or
//! misread on the way, a wrong code, or a refusal that still wrote shows up.

use bytes::Bytes;
use opsd_core::operation::{DEFAULT_LEASE, validate_lease};
use opsd_core::validate::Violations;
use opsd_core::{Error, Operation, OperationId, Principal, Transition, Update};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::endpoint as ycep;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_server::grpc::convert::{duration_from_wire, operation_to_opsd_wire, operation_to_wire};
use opsd_server::grpc::status::to_status;
use opsd_server::translate;
use prost::Message;

use super::{assert_unchanged, check_json, check_opsd_operation, check_status};
use crate::harness::{self, Answer, MAX_MESSAGE_SIZE, NOW, Server};

pub const DICTIONARY: &[&[u8]] = &[
    harness::RUNNING.as_bytes(),
    harness::COOPERATIVE.as_bytes(),
    harness::NOT_CANCELLABLE.as_bytes(),
    harness::DONE.as_bytes(),
    harness::FAILED.as_bytes(),
    harness::CANCELLED.as_bytes(),
    b"type.googleapis.com/google.protobuf.Struct",
    b"type.googleapis.com/google.protobuf.Value",
    b"type.googleapis.com/google.protobuf.Duration",
    b"type.googleapis.com/google.rpc.BadRequest",
    b"type.googleapis.com/acme.Unknown",
    b"disk-1",
    b"folder-a",
    b"fhm",
    // field keys: 1..=15 as varint, length-delimited and fixed types
    b"\x08",
    b"\x0a",
    b"\x10",
    b"\x12",
    b"\x18",
    b"\x1a",
    b"\x20",
    b"\x22",
    b"\x28",
    b"\x2a",
    b"\x30",
    b"\x32",
    b"\x38",
    b"\x3a",
    b"\x40",
    b"\x42",
    b"\x48",
    b"\x4a",
    b"\x50",
    b"\x52",
    b"\x58",
    b"\x5a",
    b"\x60",
    b"\x62",
    // varint edges
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\x80\x01",
    b"\xff\xff\xff\xff\x0f",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
    // a Duration / Timestamp body: seconds then nanos
    b"\x08\x1e",
    b"\x10\xff\xff\xff\xff\x07",
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
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
    EndpointGet,
    EndpointList,
    ReportFailure,
    ListEvents,
}

const METHODS: [(Method, &str); 14] = [
    (
        Method::CloudGet,
        "/yandex.cloud.operation.OperationService/Get",
    ),
    (
        Method::CloudCancel,
        "/yandex.cloud.operation.OperationService/Cancel",
    ),
    (Method::Get, "/opsd.v1.OperationService/Get"),
    (Method::List, "/opsd.v1.OperationService/List"),
    (Method::Wait, "/opsd.v1.OperationService/Wait"),
    (Method::Watch, "/opsd.v1.OperationService/Watch"),
    (Method::Create, "/opsd.v1.ProducerService/Create"),
    (
        Method::UpdateMetadata,
        "/opsd.v1.ProducerService/UpdateMetadata",
    ),
    (Method::Heartbeat, "/opsd.v1.ProducerService/Heartbeat"),
    (Method::Complete, "/opsd.v1.ProducerService/Complete"),
    (
        Method::EndpointGet,
        "/yandex.cloud.endpoint.ApiEndpointService/Get",
    ),
    (
        Method::EndpointList,
        "/yandex.cloud.endpoint.ApiEndpointService/List",
    ),
    // Appended, so that the corpus keeps meaning what it meant.
    (
        Method::ReportFailure,
        "/opsd.v1.ProducerService/ReportFailure",
    ),
    (Method::ListEvents, "/opsd.v1.OperationService/ListEvents"),
];

/// `message` as one uncompressed gRPC frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 5);
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    body
}

pub fn request(path: &str, body: Vec<u8>) -> http::Request<axum::body::Body> {
    http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(axum::body::Body::from(body))
        .expect("a valid request")
}

/// The status of an answer: trailers-only, or in the trailers.
pub fn status_of(answer: &Answer) -> tonic::Status {
    if let Some(status) = tonic::Status::from_header_map(&answer.head.headers) {
        assert!(answer.body.is_empty(), "a trailers-only answer has no body");
        return status;
    }
    match &answer.trailers {
        Some(trailers) => {
            tonic::Status::from_header_map(trailers).expect("the trailers carry grpc-status")
        }
        // A stream read up to its first message: going on, so far fine.
        None => {
            assert!(
                !answer.body.is_empty(),
                "an answer without status carries a message"
            );
            tonic::Status::ok("")
        }
    }
}

/// The first message of a successful answer.
pub fn reply<M: Message + Default>(body: &Bytes) -> M {
    assert!(body.len() >= 5, "a successful answer carries a message");
    assert_eq!(body[0], 0, "answers are not compressed");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert!(body.len() >= 5 + len, "the message is complete");
    M::decode(&body[5..5 + len]).expect("answers decode")
}

pub fn run(data: &[u8]) -> String {
    let Some((&selector, message)) = data.split_first() else {
        return "empty".to_owned();
    };
    let (method, path) = METHODS[usize::from(selector & 0x7f) % METHODS.len()];
    let raw = selector & 0x80 != 0;
    let body = if raw {
        message.to_vec()
    } else {
        frame(message)
    };
    harness::with_server(|server| {
        let answer = server.call(request(path, body), method == Method::Watch);
        let status = status_of(&answer);
        let label = check_status(&status);
        let code = status.code();
        let label = format!("{method:?}{}:{label}", if raw { ":raw" } else { "" });
        if code != tonic::Code::Ok {
            assert_unchanged(&server.stored(), server.fixtures());
        }
        if raw {
            // Whatever tonic makes of the body; the discipline above is what holds.
            if code == tonic::Code::Ok {
                check_answer(server, method, None, &answer, &status);
            }
            return label;
        }
        if message.len() > MAX_MESSAGE_SIZE {
            assert_eq!(code, tonic::Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("--max-message-size"),
                "{status:?}"
            );
            return label;
        }
        assert_ne!(
            code,
            tonic::Code::ResourceExhausted,
            "a message within the limit is read: {status:?}"
        );
        check_answer(server, method, Some(message), &answer, &status);
        label
    })
}

/// What the domain says the answer to `request` must be.
enum Expected<T> {
    Ok(T),
    Refused(Error),
    /// Not modelled here beyond the status discipline.
    Any,
}

fn expect_code<T>(expected: &Expected<T>, status: &tonic::Status) {
    match expected {
        Expected::Ok(_) => assert_eq!(status.code(), tonic::Code::Ok, "{status:?}"),
        Expected::Refused(error) => {
            let want = to_status(error.clone());
            assert_eq!(
                (status.code(), status.message()),
                (want.code(), want.message()),
                "the answer the domain gives"
            );
        }
        Expected::Any => {}
    }
}

fn decoded<M: Message + Default>(message: Option<&[u8]>, status: &tonic::Status) -> Option<M> {
    let message = message?;
    match M::decode(message) {
        Ok(m) => Some(m),
        Err(_) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(
                status
                    .message()
                    .starts_with("request: is not a valid request message"),
                "{status:?}"
            );
            None
        }
    }
}

fn fixture_or_not_found(server: &Server, id: &str) -> Result<Operation, Error> {
    let id = OperationId::parse("operation_id", id)?;
    server
        .fixture(id.as_str())
        .cloned()
        .ok_or_else(|| Error::NotFound { id: id.to_string() })
}

/// The result of a transition on a fixture, as the service returns it.
fn transition(
    server: &Server,
    id: &str,
    change: impl FnOnce(&Operation) -> Result<Transition, Error>,
) -> Expected<Operation> {
    let op = match fixture_or_not_found(server, id) {
        Ok(op) => op,
        Err(e) => return Expected::Refused(e),
    };
    match change(&op) {
        Ok(Transition::Unchanged) => Expected::Ok(op),
        Ok(Transition::Changed(next, _)) => Expected::Ok(next),
        Err(e) => Expected::Refused(e),
    }
}

/// A stored operation after a successful change must be what was answered.
fn assert_stored(server: &Server, op: &Operation) {
    let stored = server.stored();
    let found = stored
        .iter()
        .find(|s| s.id == op.id)
        .expect("an answered operation is stored");
    assert_eq!(found, op, "the store holds what was answered");
    assert_eq!(
        stored.len(),
        server.fixtures().len() + usize::from(server.fixture(op.id.as_str()).is_none())
    );
}

fn check_answer(
    server: &Server,
    method: Method,
    message: Option<&[u8]>,
    answer: &Answer,
    status: &tonic::Status,
) {
    let ok = status.code() == tonic::Code::Ok;
    match method {
        Method::CloudGet | Method::CloudCancel => {
            let id = if method == Method::CloudGet {
                decoded::<ycop::GetOperationRequest>(message, status).map(|r| r.operation_id)
            } else {
                decoded::<ycop::CancelOperationRequest>(message, status).map(|r| r.operation_id)
            };
            let expected = match &id {
                None => Expected::Any,
                Some(id) if method == Method::CloudGet => {
                    transition(server, id, |_| Ok(Transition::Unchanged))
                }
                Some(id) => transition(server, id, |op| op.cancel(NOW)),
            };
            expect_code(&expected, status);
            if ok {
                let got: ycop::Operation = reply(&answer.body);
                super::check_cloud_operation(&got);
                check_json(&got);
                if let Expected::Ok(op) = &expected {
                    assert_eq!(got, operation_to_wire(op));
                    if method == Method::CloudCancel {
                        assert_stored(server, op);
                    }
                }
                check_poll_hint(answer, got.done, method == Method::CloudGet);
            }
        }
        Method::Get | Method::Wait | Method::Watch => {
            let id = match method {
                Method::Get => decoded::<pb::GetOperationRequest>(message, status)
                    .map(|r| (r.operation_id, None)),
                Method::Wait => decoded::<pb::WaitOperationRequest>(message, status)
                    .map(|r| (r.operation_id, r.timeout)),
                _ => decoded::<pb::WatchOperationRequest>(message, status)
                    .map(|r| (r.operation_id, None)),
            };
            let expected = match id {
                None => Expected::Any,
                Some((id, timeout)) => {
                    match OperationId::parse("operation_id", &id).and_then(|_| {
                        timeout
                            .map(|t| duration_from_wire("timeout", t))
                            .transpose()
                    }) {
                        Err(e) => Expected::Refused(e),
                        // Nothing changes while it waits: the fixture as stored.
                        Ok(_) => transition(server, &id, |_| Ok(Transition::Unchanged)),
                    }
                }
            };
            expect_code(&expected, status);
            if ok {
                let got: pb::Operation = reply(&answer.body);
                check_opsd_operation(&got);
                check_json(&got);
                if let Expected::Ok(op) = &expected {
                    assert_eq!(got, operation_to_opsd_wire(op));
                }
                if method == Method::Get {
                    check_poll_hint(answer, got.operation.as_ref().is_some_and(|o| o.done), true);
                }
            }
        }
        Method::List => {
            let expected =
                decoded::<pb::ListOperationsRequest>(message, status).map(translate::list_query);
            match &expected {
                Some(Err(e)) => expect_code(&Expected::<()>::Refused(e.clone()), status),
                Some(Ok(_)) => assert!(ok, "a valid listing is answered: {status:?}"),
                None => {}
            }
            if ok {
                let got: pb::ListOperationsResponse = reply(&answer.body);
                check_json(&got);
                got.operations.iter().for_each(check_opsd_operation);
                if let Some(Ok(query)) = &expected {
                    let mut want: Vec<Operation> = server
                        .fixtures()
                        .iter()
                        .filter(|op| query.filter.matches(op))
                        .filter(|op| query.after.as_ref().is_none_or(|c| c.precedes(op)))
                        .cloned()
                        .collect();
                    want.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
                    want.truncate(query.limit);
                    assert_eq!(got, translate::list_response(query, &want));
                }
            }
        }
        Method::Create => {
            let expected = decoded::<pb::CreateOperationRequest>(message, status).map(|request| {
                let new = translate::new_operation(request, None)?;
                new.validate(NOW)?;
                let mut new = new;
                new.scope = Some(Principal::anonymous().scope_for_create(new.scope.as_deref())?);
                Ok::<_, Error>(new)
            });
            let busy = |new: &opsd_core::NewOperation| {
                new.exclusive && new.resource_id.as_deref() == Some("disk-1")
            };
            match &expected {
                Some(Err(e)) => expect_code(&Expected::<()>::Refused(e.clone()), status),
                Some(Ok(new)) if busy(new) => {
                    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}")
                }
                Some(Ok(_)) => assert!(ok, "a valid create is answered: {status:?}"),
                None => {}
            }
            if ok {
                let got: pb::Operation = reply(&answer.body);
                check_opsd_operation(&got);
                check_json(&got);
                if let Some(Ok(new)) = expected {
                    let id = &got.operation.as_ref().expect("set").id;
                    let id = OperationId::parse("id", id).expect("a valid id");
                    let prefix = new.id_prefix.as_ref().map_or("ops", |p| p.as_str());
                    assert!(id.as_str().starts_with(prefix), "{id} has prefix {prefix}");
                    let want = Operation::create(id, new, "anonymous", NOW);
                    assert_eq!(got, operation_to_opsd_wire(&want), "created as asked");
                    assert_stored(server, &want);
                }
            }
        }
        Method::UpdateMetadata => {
            let expected = decoded::<pb::UpdateMetadataRequest>(message, status).map(|request| {
                let attempt = || {
                    OperationId::parse("operation_id", &request.operation_id)?;
                    let update = translate::update(request.clone())?;
                    validate_update(&update)?;
                    Ok::<_, Error>(transition(server, &request.operation_id, |op| {
                        op.update(update.clone(), NOW)
                    }))
                };
                attempt().unwrap_or_else(Expected::Refused)
            });
            check_transition(server, expected, answer, status);
        }
        Method::Heartbeat => {
            let expected = decoded::<pb::HeartbeatRequest>(message, status).map(|request| {
                let attempt = || {
                    OperationId::parse("operation_id", &request.operation_id)?;
                    let lease = request
                        .lease_duration
                        .map(|d| duration_from_wire("lease_duration", d))
                        .transpose()?
                        .unwrap_or(DEFAULT_LEASE);
                    validate_lease("lease_duration", lease)?;
                    Ok::<_, Error>(transition(server, &request.operation_id, |op| {
                        op.heartbeat(lease, NOW)
                    }))
                };
                attempt().unwrap_or_else(Expected::Refused)
            });
            expect_code(expected.as_ref().unwrap_or(&Expected::Any), status);
            if ok {
                let got: pb::HeartbeatResponse = reply(&answer.body);
                check_json(&got);
                let operation = got.operation.as_ref().expect("the operation is set");
                check_opsd_operation(operation);
                if let Some(Expected::Ok(op)) = &expected {
                    assert_eq!(got, translate::heartbeat_response(op));
                    assert_stored(server, op);
                }
            }
        }
        Method::Complete => {
            let expected =
                decoded::<pb::CompleteOperationRequest>(message, status).map(|request| {
                    let attempt = || {
                        OperationId::parse("operation_id", &request.operation_id)?;
                        let outcome = translate::outcome(request.result.clone());
                        let mut v = Violations::default();
                        match &outcome {
                            Some(opsd_core::Outcome::Response(any)) => v.any("response", any),
                            Some(opsd_core::Outcome::Error(status)) => {
                                v.error_status("error", status)
                            }
                            None => {}
                        }
                        v.into_result()?;
                        Ok::<_, Error>(transition(server, &request.operation_id, |op| {
                            op.complete(outcome.clone(), NOW)
                        }))
                    };
                    attempt().unwrap_or_else(Expected::Refused)
                });
            check_transition(server, expected, answer, status);
        }
        Method::ListEvents => {
            let request = decoded::<pb::ListEventsRequest>(message, status);
            let expected = match &request {
                None => Expected::Any,
                Some(request) => match OperationId::parse("operation_id", &request.operation_id)
                    .and_then(|id| translate::events_page(&id, request).map(|page| (id, page)))
                {
                    Err(e) => Expected::Refused(e),
                    Ok((id, _)) => match server.fixture(id.as_str()) {
                        None => Expected::Refused(Error::NotFound { id: id.to_string() }),
                        Some(op) => Expected::Ok(op.clone()),
                    },
                },
            };
            expect_code(&expected, status);
            if ok {
                let got: pb::ListEventsResponse = reply(&answer.body);
                check_json(&got);
                if let Expected::Ok(op) = &expected {
                    // Its own events only, in sequence order, none past its version.
                    assert!(got.events.iter().all(|e| e.operation_id == op.id.as_str()));
                    assert!(got.events.windows(2).all(|w| w[0].sequence < w[1].sequence));
                    assert!(got.events.iter().all(|e| e.version as u64 <= op.version));
                }
            }
        }
        Method::ReportFailure => {
            let expected = decoded::<pb::ReportFailureRequest>(message, status).map(|request| {
                let attempt = || {
                    OperationId::parse("operation_id", &request.operation_id)?;
                    let failure = translate::reported_failure(request.clone())?;
                    let mut v = Violations::default();
                    v.error_status("error", &failure);
                    v.into_result()?;
                    Ok::<_, Error>(transition(server, &request.operation_id, |op| {
                        op.report_failure(failure.clone(), NOW)
                    }))
                };
                attempt().unwrap_or_else(Expected::Refused)
            });
            check_transition(server, expected, answer, status);
        }
        Method::EndpointGet => {
            let request = decoded::<ycep::GetApiEndpointRequest>(message, status);
            if let Some(request) = &request {
                let known =
                    ["operation", "iam", "compute"].contains(&request.api_endpoint_id.as_str());
                assert_eq!(ok, known, "{request:?}: {status:?}");
            }
            if ok {
                let got: ycep::ApiEndpoint = reply(&answer.body);
                assert_eq!(got.address, "opsd.fuzz:443");
                if let Some(request) = request {
                    assert_eq!(got.id, request.api_endpoint_id);
                }
            }
        }
        Method::EndpointList => {
            if decoded::<ycep::ListApiEndpointsRequest>(message, status).is_some() {
                assert!(ok, "{status:?}");
            }
            if ok {
                let got: ycep::ListApiEndpointsResponse = reply(&answer.body);
                let ids: Vec<&str> = got.endpoints.iter().map(|e| e.id.as_str()).collect();
                assert_eq!(ids, ["operation", "iam", "compute"]);
            }
        }
    }
}

/// What the service validates in an update before it looks at the operation.
fn validate_update(update: &Update) -> Result<(), Error> {
    let mut v = Violations::default();
    if let Some(metadata) = &update.metadata {
        v.any("metadata", metadata);
    }
    if let Some(progress) = &update.progress {
        v.progress("progress", progress);
    }
    if update.metadata.is_none() && update.progress.is_none() {
        v.add("metadata", "metadata or progress is required");
    }
    v.into_result()
}

fn check_transition(
    server: &Server,
    expected: Option<Expected<Operation>>,
    answer: &Answer,
    status: &tonic::Status,
) {
    expect_code(expected.as_ref().unwrap_or(&Expected::Any), status);
    if status.code() == tonic::Code::Ok {
        let got: pb::Operation = reply(&answer.body);
        check_opsd_operation(&got);
        check_json(&got);
        if let Some(Expected::Ok(op)) = &expected {
            assert_eq!(got, operation_to_opsd_wire(op), "the domain's answer");
            assert_stored(server, op);
        }
    }
}

/// Get of a running operation carries the poll hint; of a done one, not.
fn check_poll_hint(answer: &Answer, done: bool, is_get: bool) {
    let hint = answer
        .head
        .headers
        .get(opsd_server::grpc::POLL_INTERVAL_HEADER);
    if is_get {
        assert_eq!(hint.is_some(), !done, "the poll hint while running");
    }
    if let Some(hint) = hint {
        let seconds: u64 = hint.to_str().unwrap().parse().unwrap();
        assert!(seconds >= 1);
    }
}
