//! The REST/JSON gateway: the clouds' REST mapping (operations and the IAM
//! token exchange) and opsd.v1 routes, bodies in the proto3 JSON mapping,
//! errors as google.rpc.Status JSON.
//!
//! Each route reads its request message (from the JSON body or the query),
//! translates it as the gRPC adapter does and prints the answer with
//! [`opsd_proto::json::to_json`], so both adapters answer alike. `Watch` is
//! gRPC-only.

mod error;
pub mod input;

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opsd_core::{Operation, OperationId, Principal};
use opsd_proto::json::JsonError;
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::iam::v1 as yciam;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::OperationService;

use crate::grpc::convert::{
    duration_from_wire, non_empty, operation_to_opsd_wire, operation_to_wire,
};
use crate::grpc::{GrpcOptions, IDEMPOTENCY_KEY_HEADER, POLL_INTERVAL_HEADER};
use crate::limits::{ConnectionWatchers, WatcherLimits};
use crate::translate;
pub use error::RestError;
pub use input::MAX_BODY_BYTES;
use input::{Caller, Target, from_params, query_params};

/// The OpenAPI document of these routes, served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi/opsd.yaml");

struct Gateway {
    service: Arc<OperationService>,
    gate: crate::auth::Gatekeeper,
    poll_interval: Duration,
    draining: Option<tokio::sync::watch::Receiver<bool>>,
    /// The largest body read.
    max_body: usize,
    /// Open Waits, counted with the gRPC adapter's.
    watchers: WatcherLimits,
    /// Open SSE feed readers, counted with the gRPC adapter's.
    feed_readers: WatcherLimits,
}

type Shared = State<Arc<Gateway>>;
type Answer = Result<Response, RestError>;

/// The REST routes, for the listener that also serves gRPC.
pub fn router(
    service: Arc<OperationService>,
    gate: crate::auth::Gatekeeper,
    options: &GrpcOptions,
    watchers: WatcherLimits,
    feed_readers: WatcherLimits,
) -> Router {
    let gateway = Arc::new(Gateway {
        service,
        gate,
        poll_interval: options.poll_interval,
        draining: options.draining.clone(),
        max_body: options.limits.max_message_size,
        watchers,
        feed_readers,
    });
    Router::new()
        .route(
            "/operations/{target}",
            get(cloud_get).post(cloud_post).fallback(no_route),
        )
        .route("/v1/operations", get(list).post(create).fallback(no_route))
        .route("/v1/operations:watch", get(watch_feed).fallback(no_route))
        .route(
            "/v1/operations/{target}/events",
            get(list_events).fallback(no_route),
        )
        .route(
            "/v1/operations/{target}",
            get(opsd_get).post(opsd_post).fallback(no_route),
        )
        .route(
            "/iam/v1/tokens",
            axum::routing::post(iam_create).fallback(no_route),
        )
        .route("/v1/overview", get(overview).fallback(no_route))
        .route("/v1/caller", get(caller).fallback(no_route))
        .route("/openapi.yaml", get(openapi))
        .with_state(gateway)
}

async fn no_route(method: Method, uri: Uri) -> RestError {
    RestError::no_route(&method, uri.path())
}

/// For the listener's fallback: a gRPC call of an unknown method gets
/// UNIMPLEMENTED, as tonic answers it; any other request a JSON 404.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let is_grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        tonic::Status::unimplemented("").into_http::<axum::body::Body>()
    } else {
        RestError::no_route(&method, uri.path()).into_response()
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

/// `GET /operations/{id}` (yandex.cloud.operation Get) and `GET /operations/{id}:cancel`.
async fn cloud_get(
    State(gateway): Shared,
    Caller(caller): Caller,
    target: Target,
    method: Method,
    uri: Uri,
) -> Answer {
    let params = query_params(&uri)?;
    match target.verb.as_deref() {
        None => {
            let request: ycop::GetOperationRequest = from_params(&params)?;
            let id = target.operation_id(&request.operation_id)?;
            let op = gateway.service.get(&caller, &id).await?;
            gateway.answer_get(&operation_to_wire(&op), &op)
        }
        Some("cancel") => {
            let request: ycop::CancelOperationRequest = from_params(&params)?;
            let id = target.operation_id(&request.operation_id)?;
            gateway.cancel(&caller, &id).await
        }
        Some(_) => Err(RestError::no_route(&method, uri.path())),
    }
}

/// `POST /operations/{id}:cancel`.
async fn cloud_post(
    State(gateway): Shared,
    Caller(caller): Caller,
    target: Target,
    request: Request,
) -> Answer {
    match target.verb.as_deref() {
        Some("cancel") => {
            let body: ycop::CancelOperationRequest = gateway.read_json(request).await?;
            let id = target.operation_id(&body.operation_id)?;
            gateway.cancel(&caller, &id).await
        }
        _ => Err(RestError::no_route(request.method(), request.uri().path())),
    }
}

/// `POST /iam/v1/tokens` (yandex.cloud.iam.v1 IamTokenService Create). Like
/// the gRPC method it needs no credentials: it is how a caller gets them.
async fn iam_create(State(gateway): Shared, request: Request) -> Answer {
    gateway.gate.iam_enabled()?;
    let body: yciam::CreateIamTokenRequest = gateway.read_json(request).await?;
    let credential = translate::iam_credential(&body)?;
    let issued = gateway.gate.exchange(credential)?;
    json(&translate::iam_token_response(issued))
}

/// `GET /v1/caller`: who the credentials name and what they allow, for a
/// client (the console) that shows only what the caller may do. Advice
/// only: every call is still authorized on its own.
async fn caller(Caller(caller): Caller) -> Answer {
    use opsd_core::Action;
    use opsd_core::Scopes;
    let scopes = match &caller.scopes {
        Scopes::All => serde_json::Value::Null,
        Scopes::Only(scopes) => serde_json::json!(scopes),
    };
    let roles: Vec<&str> = caller.roles.iter().map(|r| r.name()).collect();
    Ok(axum::Json(serde_json::json!({
        "id": caller.id,
        "allScopes": matches!(caller.scopes, Scopes::All),
        "scopes": scopes,
        "roles": roles,
        "may": {
            "read": caller.may(Action::Read),
            "cancel": caller.may(Action::Cancel),
            "produce": caller.may(Action::Produce),
        },
    }))
    .into_response())
}

/// `GET /v1/operations`.
async fn list(State(gateway): Shared, Caller(caller): Caller, uri: Uri) -> Answer {
    let query = translate::list_query(list_request(&uri)?)?;
    let page = gateway.service.list(&caller, &query).await?;
    json(&translate::list_response(&query, &page))
}

/// `GET /v1/overview?window=3600s&stuckAfter=600s&oldest=10`.
async fn overview(State(gateway): Shared, Caller(caller): Caller, uri: Uri) -> Answer {
    let request: pb::GetOverviewRequest = from_params(&query_params(&uri)?)?;
    let params = translate::overview_params(request, gateway.service.config().stuck_after)?;
    let overview = gateway.service.overview(&caller, &params).await?;
    json(&translate::overview_response(&overview))
}

/// The List request a query string spells; `state` may be short (`running`).
pub fn list_request(uri: &Uri) -> Result<pb::ListOperationsRequest, RestError> {
    let mut params = query_params(uri)?;
    for (name, value) in &mut params {
        let short = value.to_ascii_uppercase();
        if name == "state" && matches!(short.as_str(), "ANY" | "RUNNING" | "DONE") {
            *value = format!("STATE_FILTER_{short}");
        }
    }
    from_params(&params)
}

/// `GET /v1/operations/{id}` and `GET /v1/operations/{id}:wait`.
async fn opsd_get(
    State(gateway): Shared,
    Caller(caller): Caller,
    target: Target,
    connection: Option<Extension<ConnectionWatchers>>,
    method: Method,
    uri: Uri,
) -> Answer {
    let params = query_params(&uri)?;
    match target.verb.as_deref() {
        None => {
            let request: pb::GetOperationRequest = from_params(&params)?;
            let id = target.operation_id(&request.operation_id)?;
            let op = gateway.service.get(&caller, &id).await?;
            gateway.answer_get(&operation_to_opsd_wire(&op), &op)
        }
        Some("wait") => {
            let request: pb::WaitOperationRequest = from_params(&params)?;
            let id = target.operation_id(&request.operation_id)?;
            let _permit = gateway
                .watchers
                .admit(connection.as_ref().map(|Extension(c)| c))?;
            // Unset: as long as the server lets one Wait last.
            let timeout = request
                .timeout
                .map(|t| duration_from_wire("timeout", t))
                .transpose()?
                .unwrap_or(Duration::MAX);
            // A draining server answers at once, as gRPC Wait does.
            let op = tokio::select! {
                waited = gateway.service.wait(&caller, &id, timeout) => waited?,
                () = crate::grpc::drained(gateway.draining.clone()) => {
                    Arc::new(gateway.service.get(&caller, &id).await?)
                }
            };
            json(&operation_to_opsd_wire(&op))
        }
        Some(_) => Err(RestError::no_route(&method, uri.path())),
    }
}

/// `GET /v1/operations/{id}/events` (opsd.v1 ListEvents).
async fn list_events(
    State(gateway): Shared,
    Caller(caller): Caller,
    target: Target,
    method: Method,
    uri: Uri,
) -> Answer {
    if target.verb.is_some() {
        return Err(RestError::no_route(&method, uri.path()));
    }
    let request: pb::ListEventsRequest = from_params(&query_params(&uri)?)?;
    let id = target.operation_id(&request.operation_id)?;
    let (after, limit) = translate::events_page(&id, &request)?;
    let events = gateway
        .service
        .list_events(&caller, &id, after, limit)
        .await?;
    json(&translate::events_response(&id, limit, &events))
}

/// The WatchOperations request a query string spells. `kinds` is one
/// parameter of comma-separated kinds, by enum name or short name
/// (`kinds=completed,failure_reported`).
pub fn feed_request(uri: &Uri) -> Result<pb::WatchOperationsRequest, RestError> {
    let mut params = query_params(uri)?;
    let mut kinds = Vec::new();
    if let Some(at) = params.iter().position(|(name, _)| name == "kinds") {
        let (_, value) = params.remove(at);
        for name in value.split(',').filter(|n| !n.is_empty()) {
            let full = name.to_ascii_uppercase();
            let full = if full.starts_with("EVENT_KIND_") {
                full
            } else {
                format!("EVENT_KIND_{full}")
            };
            match pb::EventKind::from_str_name(&full) {
                Some(kind) if kind != pb::EventKind::Unspecified => kinds.push(kind as i32),
                _ => {
                    return Err(RestError::invalid_as_given(
                        "kinds",
                        format!("{name:?} is not an event kind"),
                    ));
                }
            }
        }
    }
    let mut request: pb::WatchOperationsRequest = from_params(&params)?;
    request.kinds = kinds;
    Ok(request)
}

/// `GET /v1/operations:watch`: the change feed as Server-Sent Events. Each
/// event's `id:` is its resume token, so a browser's `EventSource` (or any
/// client sending `Last-Event-ID`) resumes where it left off.
async fn watch_feed(
    State(gateway): Shared,
    Caller(caller): Caller,
    connection: Option<Extension<ConnectionWatchers>>,
    headers: HeaderMap,
    uri: Uri,
) -> Answer {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let mut request = feed_request(&uri)?;
    if request.resume_token.is_empty()
        && let Some(last) = headers.get("last-event-id")
    {
        let token = last
            .to_str()
            .map_err(|_| RestError::invalid("last-event-id", "header must be printable ascii"))?;
        // Refused under the header's name, which is what the caller sent.
        opsd_core::event::decode_resume_token("last-event-id", token)?;
        request.resume_token = token.to_owned();
    }
    let (filter, resume) = translate::feed_request(&request)?;
    let permit = gateway
        .feed_readers
        .admit(connection.as_ref().map(|Extension(c)| c))?;
    let feed = gateway.service.feed(&caller, filter, resume).await?;
    // An `id:` without data: no event for the client, but the token its
    // EventSource sends back as Last-Event-ID if it reconnects before the first event.
    let bookmark = SseEvent::default().id(opsd_core::event::encode_resume_token(feed.position()));
    let events = futures_util::StreamExt::map(
        crate::grpc::feed_events(feed, permit, gateway.draining.clone()),
        |next| {
            let event = match next {
                Ok(event) => {
                    let message = translate::feed_message(&event);
                    let data = opsd_proto::json::to_json(&message.event.unwrap_or_default())
                        .map(|json| json.to_string())
                        .unwrap_or_else(|e| {
                            serde_json::json!({"error": e.to_string()}).to_string()
                        });
                    SseEvent::default()
                        .id(message.resume_token)
                        .event(event.kind.name())
                        .data(data)
                }
                // The stream ends with the error, as google.rpc.Status JSON.
                Err(error) => {
                    let status = crate::grpc::status::to_status(error);
                    let data = serde_json::json!({
                        "code": status.code() as i32,
                        "message": status.message(),
                    })
                    .to_string();
                    SseEvent::default().event("error").data(data)
                }
            };
            Ok::<_, std::convert::Infallible>(event)
        },
    );
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bookmark)]),
        events,
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `POST /v1/operations` (opsd.v1 ProducerService Create).
async fn create(State(gateway): Shared, Caller(caller): Caller, request: Request) -> Answer {
    let header_key = idempotency_header(request.headers())?;
    let body: pb::CreateOperationRequest = gateway.read_json(request).await?;
    let new = translate::new_operation(body, header_key)?;
    let op = gateway.service.create(&caller, new).await?;
    json(&operation_to_opsd_wire(&op))
}

/// `POST /v1/operations/{id}:updateMetadata`, `:heartbeat`, `:complete` and `:reportFailure`.
async fn opsd_post(
    State(gateway): Shared,
    Caller(caller): Caller,
    target: Target,
    request: Request,
) -> Answer {
    let service = &gateway.service;
    match target.verb.as_deref() {
        Some("updateMetadata") => {
            let body: pb::UpdateMetadataRequest = gateway.read_json(request).await?;
            let id = target.operation_id(&body.operation_id)?;
            let op = service
                .update(&caller, &id, translate::update(body)?)
                .await?;
            json(&operation_to_opsd_wire(&op))
        }
        Some("heartbeat") => {
            let body: pb::HeartbeatRequest = gateway.read_json(request).await?;
            let id = target.operation_id(&body.operation_id)?;
            let lease = body
                .lease_duration
                .map(|d| duration_from_wire("lease_duration", d))
                .transpose()?;
            let op = service.heartbeat(&caller, &id, lease).await?;
            json(&translate::heartbeat_response(&op))
        }
        Some("complete") => {
            let body: pb::CompleteOperationRequest = gateway.read_json(request).await?;
            let id = target.operation_id(&body.operation_id)?;
            let op = service
                .complete(&caller, &id, translate::outcome(body.result))
                .await?;
            json(&operation_to_opsd_wire(&op))
        }
        Some("reportFailure") => {
            let body: pb::ReportFailureRequest = gateway.read_json(request).await?;
            let id = target.operation_id(&body.operation_id)?;
            let op = service
                .report_failure(&caller, &id, translate::reported_failure(body)?)
                .await?;
            json(&operation_to_opsd_wire(&op))
        }
        _ => Err(RestError::no_route(request.method(), request.uri().path())),
    }
}

impl Gateway {
    async fn read_json<M: prost::Name + Default>(&self, request: Request) -> Result<M, RestError> {
        input::read_json(request, self.max_body).await
    }

    async fn cancel(&self, caller: &Principal, id: &OperationId) -> Answer {
        let op = self.service.cancel(caller, id).await?;
        json(&operation_to_wire(&op))
    }

    /// A Get answer, with the poll hint while the operation runs, as over gRPC.
    fn answer_get<M: prost::Name>(&self, message: &M, op: &Operation) -> Answer {
        let mut response = json(message)?;
        if !op.is_done() {
            let seconds = self.poll_interval.as_secs().max(1);
            response
                .headers_mut()
                .insert(POLL_INTERVAL_HEADER, HeaderValue::from(seconds));
        }
        Ok(response)
    }
}

/// The message in the proto3 JSON mapping.
fn json<M: prost::Name>(message: &M) -> Answer {
    // Fails for a payload (metadata, response, error detail) whose type the
    // JSON mapping has no descriptor of; gRPC callers still read it.
    let value = opsd_proto::json::to_json(message).map_err(|e| {
        let reason = match e {
            JsonError::Json { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        opsd_core::Error::Internal(format!("cannot print {} as json: {reason}", M::full_name()))
    })?;
    Ok(axum::Json(value).into_response())
}

fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, RestError> {
    match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|s| non_empty(s.to_owned()))
            .map_err(|_| RestError::invalid("idempotency-key", "header must be printable ascii")),
    }
}
