//! REST requests through the real gateway: the first byte picks the route,
//! the second the operation in the path (a fixture, an unknown id, or one
//! spelled by the input) and whether a JSON content type is sent; the rest
//! is the body or the query string.
//!
//! What holds: never a 5xx (but the 501 of the IAM token exchange, which the
//! harness's server does not serve); every answer is JSON; an error is a
//! google.rpc.Status whose code matches the HTTP status, INVALID_ARGUMENT
//! naming fields; and whatever the gateway accepts, the gRPC adapter answers
//! alike from the same state: the same code, and the same operation printed
//! the same way.

use opsd_core::Code;
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_server::rest::RestError;
use opsd_server::rest::input::{from_params, parse_body, query_params};
use prost::Message;
use serde_json::Value;

use super::grpc::{frame, reply, request as grpc_request, status_of};
use crate::harness::{self, Server};

pub const DICTIONARY: &[&[u8]] = &[
    harness::RUNNING.as_bytes(),
    harness::COOPERATIVE.as_bytes(),
    harness::DONE.as_bytes(),
    b"{}",
    b"{\"",
    b"\":",
    b"null",
    b"true",
    b"\"\"",
    b"[]",
    b"\"operationId\":",
    b"\"description\":",
    b"\"resourceId\":",
    b"\"metadata\":",
    b"\"@type\":",
    b"\"type.googleapis.com/google.protobuf.Struct\"",
    b"\"type.googleapis.com/google.protobuf.Value\"",
    b"\"type.googleapis.com/google.protobuf.Duration\"",
    b"\"type.googleapis.com/google.protobuf.Timestamp\"",
    b"\"type.googleapis.com/google.rpc.BadRequest\"",
    b"\"type.googleapis.com/acme.Unknown\"",
    b"\"value\":",
    b"\"cancellationPolicy\":",
    b"\"CANCELLATION_POLICY_COOPERATIVE\"",
    b"\"idempotencyKey\":",
    b"\"idPrefix\":",
    b"\"leaseDuration\":",
    b"\"deadline\":",
    b"\"exclusive\":",
    b"\"scope\":",
    b"\"progress\":",
    b"\"workDone\":",
    b"\"workTotal\":",
    b"\"steps\":",
    b"\"STATE_DONE\"",
    b"\"response\":",
    b"\"error\":",
    b"\"code\":",
    b"\"message\":",
    b"\"details\":",
    b"\"fieldViolations\":",
    b"\"30s\"",
    b"\"-1s\"",
    b"\"315576000001s\"",
    b"\"0.000000001s\"",
    b"\"2262-04-11T23:47:16.854775807Z\"",
    b"\"1677-09-21T00:12:43.145224192Z\"",
    b"\"0001-01-01T00:00:00Z\"",
    b"\"9223372036854775807\"",
    b"1e400",
    b"\\u0000",
    b"\\ud800",
    b"timeout=",
    b"pageSize=",
    b"pageToken=",
    b"state=",
    b"operationId=",
    b"&",
    b"%",
    b":cancel",
    b":wait",
    b":complete",
    b":reportFailure",
    b"/events",
    b":watch",
    b"resumeToken=",
    b"kinds=",
    b"/v1/operations/",
    b"/operations/",
    b"/v1/caller",
    b"/v1/overview",
    b"window=",
    b"stuckAfter=",
    b"oldest=",
    b"GET ",
    b"POST ",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    CloudGet,
    CloudCancelGet,
    CloudCancelPost,
    List,
    Create,
    Get,
    Wait,
    UpdateMetadata,
    Heartbeat,
    Complete,
    Raw,
}

const ROUTES: [Route; 11] = [
    Route::CloudGet,
    Route::CloudCancelGet,
    Route::CloudCancelPost,
    Route::List,
    Route::Create,
    Route::Get,
    Route::Wait,
    Route::UpdateMetadata,
    Route::Heartbeat,
    Route::Complete,
    Route::Raw,
];

/// The printed reply of the gRPC call the gateway stands for.
enum Reply {
    Cloud,
    Opsd,
    List,
    Heartbeat,
}

/// What the gRPC adapter is asked for the same request.
struct Equivalent {
    path: &'static str,
    message: Vec<u8>,
    reply: Reply,
}

pub fn run(data: &[u8]) -> String {
    let mut bytes = data.iter().copied();
    let route = ROUTES[usize::from(bytes.next().unwrap_or(0)) % ROUTES.len()];
    let options = bytes.next().unwrap_or(0);
    let rest = data.get(2..).unwrap_or_default();
    let json_content = options & 0x80 == 0;
    let text = String::from_utf8_lossy(rest);
    let (path_id, payload): (String, &[u8]) = match options & 7 {
        n @ 0..=5 => (harness::FIXTURE_IDS[usize::from(n)].to_owned(), rest),
        6 => ("ops00000000000000000".to_owned(), rest),
        _ => match text.split_once('\n') {
            Some((id, _)) => {
                let at = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                (id.to_owned(), &rest[at..])
            }
            None => (text.clone().into_owned(), &[][..]),
        },
    };
    let query = String::from_utf8_lossy(payload).into_owned();
    let (method, uri, body): (http::Method, String, Vec<u8>) = match route {
        Route::CloudGet => (
            http::Method::GET,
            format!("/operations/{path_id}?{query}"),
            vec![],
        ),
        Route::CloudCancelGet => (
            http::Method::GET,
            format!("/operations/{path_id}:cancel?{query}"),
            vec![],
        ),
        Route::CloudCancelPost => (
            http::Method::POST,
            format!("/operations/{path_id}:cancel"),
            payload.to_vec(),
        ),
        Route::List => (http::Method::GET, format!("/v1/operations?{query}"), vec![]),
        Route::Create => (
            http::Method::POST,
            "/v1/operations".to_owned(),
            rest.to_vec(),
        ),
        Route::Get => (
            http::Method::GET,
            format!("/v1/operations/{path_id}?{query}"),
            vec![],
        ),
        Route::Wait => (
            http::Method::GET,
            format!("/v1/operations/{path_id}:wait?{query}"),
            vec![],
        ),
        Route::UpdateMetadata => (
            http::Method::POST,
            format!("/v1/operations/{path_id}:updateMetadata"),
            payload.to_vec(),
        ),
        Route::Heartbeat => (
            http::Method::POST,
            format!("/v1/operations/{path_id}:heartbeat"),
            payload.to_vec(),
        ),
        Route::Complete => (
            http::Method::POST,
            format!("/v1/operations/{path_id}:complete"),
            payload.to_vec(),
        ),
        Route::Raw => {
            let (line, body) = match text.split_once('\n') {
                Some((line, _)) => {
                    let at = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |i| i + 1);
                    (line.to_owned(), rest[at..].to_vec())
                }
                None => (text.clone().into_owned(), vec![]),
            };
            let (method, path) = line.split_once(' ').unwrap_or(("GET", &line));
            let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
                return "raw:bad-method".to_owned();
            };
            (method, path.to_owned(), body)
        }
    };
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return format!("{route:?}:bad-uri");
    };
    // What never reaches the gateway's JSON: these answer in their own formats.
    if route == Route::Raw && (uri.path() == "/openapi.yaml" || uri.path() == "/metrics") {
        return "raw:not-json".to_owned();
    }
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(uri.clone());
    if json_content {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(axum::body::Body::from(body.clone()))
        .expect("a valid request");

    harness::with_server(|server| {
        let answer = server.call(request, false);
        let status = answer.head.status;
        // The harness's server has no --iam-signing-key: the IAM token
        // exchange answers 501, naming the flag, whatever it is sent.
        if method == http::Method::POST && uri.path() == "/iam/v1/tokens" {
            let json: Value = serde_json::from_slice(&answer.body).expect("json");
            assert_eq!(status.as_u16(), 501, "{uri}: {json}");
            assert_eq!(json["code"], 12);
            assert_eq!(json["message"], opsd_server::auth::IAM_OFF);
            super::assert_unchanged(&server.stored(), server.fixtures());
            return "raw:iam-off".to_owned();
        }
        assert!(
            status.as_u16() < 500,
            "{method} {uri} answered {status}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        // The change feed, admitted: an endless SSE stream (the harness keeps its head).
        if answer
            .head
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
        {
            assert!(status.is_success(), "{uri}: {status}");
            assert_eq!(uri.path(), "/v1/operations:watch", "only the feed streams");
            super::assert_unchanged(&server.stored(), server.fixtures());
            return "raw:feed".to_owned();
        }
        let json: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{method} {uri} answered {status} with a body that is not json ({e}): {}",
                String::from_utf8_lossy(&answer.body)
            )
        });
        let label = if status.is_success() {
            format!("{route:?}:{}", status.as_u16())
        } else {
            let code = check_error(status, &json);
            super::assert_unchanged(&server.stored(), server.fixtures());
            format!("{route:?}:{code:?}")
        };
        // The path segment reaches the gateway as it is only when plain: a
        // percent sign is decoded, a colon splits off a verb, a slash is
        // another route. Those get the checks above and no comparison.
        let plain = !path_id.is_empty()
            && path_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if route == Route::Raw || (!plain && !matches!(route, Route::Create | Route::List)) {
            return label;
        }
        let equivalent = match equivalent(route, &path_id, &uri, json_content, &body) {
            Ok(equivalent) => equivalent,
            Err(refusal) => {
                // Refused before the gRPC adapter's part: a 400 naming the field.
                let expected = refusal.status();
                assert_eq!(
                    (status.as_u16(), json["code"].as_i64()),
                    (400, Some(i64::from(expected.code() as i32))),
                    "{method} {uri}: {json}"
                );
                assert_eq!(json["message"].as_str(), Some(expected.message()));
                return label;
            }
        };
        compare_with_grpc(server, route, &answer.head, &json, equivalent);
        label
    })
}

/// The error body: a google.rpc.Status with the HTTP status of its code.
fn check_error(status: http::StatusCode, json: &Value) -> Code {
    let code = json["code"].as_i64().expect("errors carry a numeric code");
    let message = json["message"].as_str().expect("errors carry a message");
    assert!(json["details"].is_array(), "{json}");
    assert!(!message.is_empty(), "{json}");
    let code = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::ResourceExhausted,
    ]
    .into_iter()
    .find(|c| i64::from(c.grpc()) == code)
    .unwrap_or_else(|| panic!("a caller may not see code {code}: {json}"));
    assert_eq!(status.as_u16(), code.http_status(), "{json}");
    if code == Code::InvalidArgument {
        let violations = json["details"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
            .and_then(|d| d["fieldViolations"].as_array())
            .cloned()
            .unwrap_or_default();
        assert!(
            !violations.is_empty()
                && violations
                    .iter()
                    .all(|v| v["field"].as_str().is_some_and(|f| !f.is_empty())),
            "INVALID_ARGUMENT names the fields: {json}"
        );
        // The field may be the caller's own word (a query parameter); what
        // opsd says about it is lowercase.
        for v in &violations {
            let description = v["description"].as_str().unwrap_or_default();
            assert!(
                !description.starts_with(|c: char| c.is_uppercase()),
                "descriptions are lowercase: {json}"
            );
        }
    } else {
        assert!(
            !message.starts_with(|c: char| c.is_uppercase()),
            "messages are lowercase: {json}"
        );
    }
    code
}

/// The request message the gateway reads, as the gRPC adapter would get it;
/// `Err` when the gateway refuses it on its own (bad JSON, a mismatched id).
fn equivalent(
    route: Route,
    path_id: &str,
    uri: &http::Uri,
    json_content: bool,
    body: &[u8],
) -> Result<Equivalent, RestError> {
    fn same_id(in_message: &mut String, path_id: &str) -> Result<(), RestError> {
        if !in_message.is_empty() && in_message != path_id {
            return Err(RestError::invalid(
                "operationId",
                "differs from the operation id in the path",
            ));
        }
        *in_message = path_id.to_owned();
        Ok(())
    }
    Ok(match route {
        Route::CloudGet | Route::CloudCancelGet => {
            let params = query_params(uri)?;
            if route == Route::CloudGet {
                let mut m: ycop::GetOperationRequest = from_params(&params)?;
                same_id(&mut m.operation_id, path_id)?;
                Equivalent {
                    path: "/yandex.cloud.operation.OperationService/Get",
                    message: m.encode_to_vec(),
                    reply: Reply::Cloud,
                }
            } else {
                let mut m: ycop::CancelOperationRequest = from_params(&params)?;
                same_id(&mut m.operation_id, path_id)?;
                Equivalent {
                    path: "/yandex.cloud.operation.OperationService/Cancel",
                    message: m.encode_to_vec(),
                    reply: Reply::Cloud,
                }
            }
        }
        Route::CloudCancelPost => {
            let mut m: ycop::CancelOperationRequest = parse_body(json_content, body)?;
            same_id(&mut m.operation_id, path_id)?;
            Equivalent {
                path: "/yandex.cloud.operation.OperationService/Cancel",
                message: m.encode_to_vec(),
                reply: Reply::Cloud,
            }
        }
        Route::List => Equivalent {
            path: "/opsd.v1.OperationService/List",
            message: opsd_server::rest::list_request(uri)?.encode_to_vec(),
            reply: Reply::List,
        },
        Route::Create => {
            let m: pb::CreateOperationRequest = parse_body(json_content, body)?;
            Equivalent {
                path: "/opsd.v1.ProducerService/Create",
                message: m.encode_to_vec(),
                reply: Reply::Opsd,
            }
        }
        Route::Get => {
            let mut m: pb::GetOperationRequest = from_params(&query_params(uri)?)?;
            same_id(&mut m.operation_id, path_id)?;
            Equivalent {
                path: "/opsd.v1.OperationService/Get",
                message: m.encode_to_vec(),
                reply: Reply::Opsd,
            }
        }
        Route::Wait => {
            let mut m: pb::WaitOperationRequest = from_params(&query_params(uri)?)?;
            same_id(&mut m.operation_id, path_id)?;
            Equivalent {
                path: "/opsd.v1.OperationService/Wait",
                message: m.encode_to_vec(),
                reply: Reply::Opsd,
            }
        }
        Route::UpdateMetadata => {
            let mut m: pb::UpdateMetadataRequest = parse_body(json_content, body)?;
            same_id(&mut m.operation_id, path_id)?;
            Equivalent {
                path: "/opsd.v1.ProducerService/UpdateMetadata",
                message: m.encode_to_vec(),
                reply: Reply::Opsd,
            }
        }
        Route::Heartbeat => {
            let mut m: pb::HeartbeatRequest = parse_body(json_content, body)?;
            same_id(&mut m.operation_id, path_id)?;
            Equivalent {
                path: "/opsd.v1.ProducerService/Heartbeat",
                message: m.encode_to_vec(),
                reply: Reply::Heartbeat,
            }
        }
        Route::Complete => {
            let mut m: pb::CompleteOperationRequest = parse_body(json_content, body)?;
            same_id(&mut m.operation_id, path_id)?;
            Equivalent {
                path: "/opsd.v1.ProducerService/Complete",
                message: m.encode_to_vec(),
                reply: Reply::Opsd,
            }
        }
        Route::Raw => unreachable!("raw requests have no equivalent"),
    })
}

/// From the same fixtures, the gRPC adapter answers alike.
fn compare_with_grpc(
    server: &Server,
    route: Route,
    head: &http::response::Parts,
    json: &Value,
    equivalent: Equivalent,
) {
    // An id the router cannot route (a colon or slash of its own) never reached a handler.
    if head.status == http::StatusCode::NOT_FOUND
        && json["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no route for"))
    {
        return;
    }
    if equivalent.message.len() > harness::MAX_MESSAGE_SIZE {
        return;
    }
    server.reset();
    let answer = server.call(
        grpc_request(equivalent.path, frame(&equivalent.message)),
        false,
    );
    let status = status_of(&answer);
    let rest_code = json["code"].as_i64();
    if head.status.is_success() {
        assert_eq!(
            status.code(),
            tonic::Code::Ok,
            "REST answered {json}: {status:?}"
        );
        let mut printed = match equivalent.reply {
            Reply::Cloud => opsd_proto::json::to_json(&reply::<ycop::Operation>(&answer.body)),
            Reply::Opsd => opsd_proto::json::to_json(&reply::<pb::Operation>(&answer.body)),
            Reply::List => {
                opsd_proto::json::to_json(&reply::<pb::ListOperationsResponse>(&answer.body))
            }
            Reply::Heartbeat => {
                opsd_proto::json::to_json(&reply::<pb::HeartbeatResponse>(&answer.body))
            }
        }
        .expect("a gRPC answer prints");
        if route == Route::Create {
            // New ids are random: the rest must agree.
            printed["operation"]["id"] = json["operation"]["id"].clone();
        }
        assert_eq!(&printed, json, "REST and gRPC answer alike");
        let hint = |headers: &http::HeaderMap| {
            headers
                .get(opsd_server::grpc::POLL_INTERVAL_HEADER)
                .map(|v| v.as_bytes().to_vec())
        };
        assert_eq!(
            hint(&head.headers),
            hint(&answer.head.headers),
            "the same poll hint"
        );
    } else {
        assert_eq!(
            Some(i64::from(status.code() as i32)),
            rest_code,
            "REST answered {json}, gRPC {status:?}"
        );
        if status.code() != tonic::Code::InvalidArgument {
            // Field names differ (JSON names in REST), so messages only elsewhere.
            assert_eq!(Some(status.message()), json["message"].as_str());
        }
    }
}
