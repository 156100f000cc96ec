//! The gRPC adapter: the clouds' `yandex.cloud.operation.OperationService` and
//! opsd's own `opsd.v1` services, translating to [`OperationService`] calls.

pub mod convert;
pub mod deadline;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use opsd_core::list::{decode_page_token, encode_page_token, page_size};
use opsd_core::{
    Cursor, Error, IdPrefix, ListFilter, ListQuery, NewOperation, Operation, OperationId, Outcome,
    Principal, StateFilter, Update,
};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::OperationService;
use tonic::{Request, Response, Status};

use convert::{
    any_from_wire, duration_from_wire, non_empty, operation_to_opsd_wire, operation_to_wire,
    policy_from_wire, progress_from_wire, status_from_wire, timestamp, timestamp_from_wire,
};
use status::to_status;

/// The header the clouds' SDKs send an idempotency key in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header with which the Go SDK paces its polling (whole seconds).
pub const POLL_INTERVAL_HEADER: &str = "x-operation-poll-interval";
/// A Wait answers this long before the caller's deadline, so the answer arrives in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// Adapter settings.
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    /// Suggested poll interval for running operations, sent on Get.
    pub poll_interval: Duration,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A Get answer, with the poll hint while the operation runs.
fn answer_get<M>(message: M, op: &Operation, options: &GrpcOptions) -> Response<M> {
    let mut response = Response::new(message);
    if !op.is_done() {
        let seconds = options.poll_interval.as_secs().max(1);
        response.metadata_mut().insert(
            POLL_INTERVAL_HEADER,
            seconds
                .to_string()
                .parse()
                .expect("digits are a valid header value"),
        );
    }
    response
}

/// Identifies the caller once per request, before any handler runs.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn authenticate(mut request: Request<()>) -> Result<Request<()>, Status> {
    let headers = request.metadata().clone().into_headers();
    let principal = crate::auth::authenticate(&headers)?;
    request.extensions_mut().insert(principal);
    Ok(request)
}

#[allow(clippy::result_large_err)]
fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

#[allow(clippy::result_large_err)]
fn operation_id(raw: &str) -> Result<OperationId, Status> {
    OperationId::parse("operation_id", raw).map_err(to_status)
}

/// `yandex.cloud.operation.OperationService`.
pub struct CloudOperations {
    pub service: Arc<OperationService>,
    pub options: GrpcOptions,
}

#[tonic::async_trait]
impl ycop::operation_service_server::OperationService for CloudOperations {
    async fn get(
        &self,
        request: Request<ycop::GetOperationRequest>,
    ) -> Result<Response<ycop::Operation>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let op = self.service.get(&caller, &id).await.map_err(to_status)?;
        Ok(answer_get(operation_to_wire(&op), &op, &self.options))
    }

    async fn cancel(
        &self,
        request: Request<ycop::CancelOperationRequest>,
    ) -> Result<Response<ycop::Operation>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let op = self.service.cancel(&caller, &id).await.map_err(to_status)?;
        Ok(Response::new(operation_to_wire(&op)))
    }
}

/// `opsd.v1.OperationService`.
pub struct OpsdOperations {
    pub service: Arc<OperationService>,
    pub options: GrpcOptions,
}

type OperationStream = Pin<Box<dyn Stream<Item = Result<pb::Operation, Status>> + Send>>;

#[tonic::async_trait]
impl pb::operation_service_server::OperationService for OpsdOperations {
    async fn get(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let op = self.service.get(&caller, &id).await.map_err(to_status)?;
        Ok(answer_get(operation_to_opsd_wire(&op), &op, &self.options))
    }

    async fn list(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let query = list_query(body).map_err(to_status)?;
        let page = self
            .service
            .list(&caller, &query)
            .await
            .map_err(to_status)?;
        let next_page_token = match page.last() {
            Some(last) if page.len() == query.limit => {
                encode_page_token(&query.filter, &Cursor::of(last))
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListOperationsResponse {
            operations: page.iter().map(operation_to_opsd_wire).collect(),
            next_page_token,
        }))
    }

    async fn wait(
        &self,
        request: Request<pb::WaitOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let call_deadline = deadline::remaining(&request);
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let requested = body
            .timeout
            .map(|t| duration_from_wire("timeout", t))
            .transpose()
            .map_err(to_status)?;
        // The shortest of: what was asked, what the caller will wait for, the server's cap.
        let mut timeout = requested.unwrap_or(Duration::MAX);
        if let Some(remaining) = call_deadline {
            timeout = timeout.min(remaining.saturating_sub(DEADLINE_MARGIN));
        }
        let op = self
            .service
            .wait(&caller, &id, timeout)
            .await
            .map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }

    type WatchStream = OperationStream;

    async fn watch(
        &self,
        request: Request<pb::WatchOperationRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let watching = self.service.watch(&caller, &id).await.map_err(to_status)?;
        // First the current state, then each newer one; the stream ends after done.
        let stream = futures_util::stream::unfold(
            (watching, true, false),
            |(mut watching, first, finished)| async move {
                if finished {
                    return None;
                }
                let op = if first {
                    watching.current_and_mark_seen()
                } else {
                    watching.changed().await
                };
                let done = op.is_done();
                Some((Ok(operation_to_opsd_wire(&op)), (watching, false, done)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

fn list_query(body: pb::ListOperationsRequest) -> Result<ListQuery, Error> {
    let state = match pb::StateFilter::try_from(body.state) {
        Ok(pb::StateFilter::Unspecified | pb::StateFilter::Any) => StateFilter::Any,
        Ok(pb::StateFilter::Running) => StateFilter::Running,
        Ok(pb::StateFilter::Done) => StateFilter::Done,
        Err(_) => return Err(Error::invalid_argument("state", "unknown state filter")),
    };
    let filter = ListFilter {
        resource_id: non_empty(body.resource_id),
        created_by: non_empty(body.created_by),
        state,
        created_after: body
            .created_after
            .map(|t| timestamp_from_wire("created_after", t))
            .transpose()?,
        created_before: body
            .created_before
            .map(|t| timestamp_from_wire("created_before", t))
            .transpose()?,
    };
    let limit = page_size(i64::from(body.page_size))?;
    let after = non_empty(body.page_token)
        .map(|token| decode_page_token(&filter, &token))
        .transpose()?;
    Ok(ListQuery {
        filter,
        after,
        limit,
    })
}

/// `opsd.v1.ProducerService`.
pub struct Producers {
    pub service: Arc<OperationService>,
}

#[tonic::async_trait]
impl pb::producer_service_server::ProducerService for Producers {
    async fn create(
        &self,
        request: Request<pb::CreateOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let header_key = idempotency_header(&request)?;
        let body = request.into_inner();
        let idempotency_key = match (non_empty(body.idempotency_key), header_key) {
            (Some(field), Some(header)) if field != header => {
                return Err(to_status(Error::invalid_argument(
                    "idempotency_key",
                    "differs from the idempotency-key header",
                )));
            }
            (field, header) => field.or(header),
        };
        let cancellation = policy_from_wire(body.cancellation_policy).ok_or_else(|| {
            to_status(Error::invalid_argument(
                "cancellation_policy",
                "unknown cancellation policy",
            ))
        })?;
        let id_prefix = non_empty(body.id_prefix)
            .map(|p| IdPrefix::parse("id_prefix", &p))
            .transpose()
            .map_err(to_status)?;
        let lease_duration = body
            .lease_duration
            .map(|d| duration_from_wire("lease_duration", d))
            .transpose()
            .map_err(to_status)?;
        let deadline = body
            .deadline
            .map(|t| timestamp_from_wire("deadline", t))
            .transpose()
            .map_err(to_status)?;
        let new = NewOperation {
            description: body.description,
            resource_id: non_empty(body.resource_id),
            metadata: body.metadata.map(any_from_wire),
            cancellation,
            idempotency_key,
            id_prefix,
            lease_duration,
            deadline,
            exclusive: body.exclusive,
        };
        let op = self.service.create(&caller, new).await.map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }

    async fn update_metadata(
        &self,
        request: Request<pb::UpdateMetadataRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let update = Update {
            metadata: body.metadata.map(any_from_wire),
            progress: body
                .progress
                .map(progress_from_wire)
                .transpose()
                .map_err(to_status)?,
        };
        let op = self
            .service
            .update(&caller, &id, update)
            .await
            .map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let lease = body
            .lease_duration
            .map(|d| duration_from_wire("lease_duration", d))
            .transpose()
            .map_err(to_status)?;
        let op = self
            .service
            .heartbeat(&caller, &id, lease)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancel_requested: op.cancel_requested_at().is_some(),
            lease_expires_at: op.lease_expires_at.map(timestamp),
            operation: Some(operation_to_opsd_wire(&op)),
        }))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        use pb::complete_operation_request::Result as Wire;
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let outcome = match body.result {
            Some(Wire::Response(any)) => Outcome::Response(any_from_wire(any)),
            Some(Wire::Error(status)) => Outcome::Error(status_from_wire(status)),
            None => {
                return Err(to_status(Error::invalid_argument(
                    "result",
                    "one of response or error is required",
                )));
            }
        };
        let op = self
            .service
            .complete(&caller, &id, outcome)
            .await
            .map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }
}

#[allow(clippy::result_large_err)]
fn idempotency_header<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    match request.metadata().get(IDEMPOTENCY_KEY_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|s| non_empty(s.to_owned()))
            .map_err(|_| {
                to_status(Error::invalid_argument(
                    "idempotency-key",
                    "header must be printable ascii",
                ))
            }),
    }
}
