//! The gRPC adapter: the clouds' `yandex.cloud.operation.OperationService` and
//! opsd's own `opsd.v1` services, translating to [`OperationService`] calls,
//! and the clouds' IAM token exchange ([`iam`]).

pub mod calls;
pub mod convert;
pub mod deadline;
pub mod iam;
pub mod refusals;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use opsd_core::{Error, Operation, OperationId, Principal};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::OperationService;
use tonic::{Request, Response, Status};

use convert::{duration_from_wire, non_empty, operation_to_opsd_wire, operation_to_wire};
use status::to_status;

use crate::limits::{ConnectionWatchers, Limits, WatcherLimits};
use crate::translate;

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
    /// Turns true when the server starts shutting down: open Watch streams
    /// end and Waits answer at once, so clients move to another replica
    /// instead of holding the shutdown up.
    pub draining: Option<tokio::sync::watch::Receiver<bool>>,
    /// Message sizes, streams and watchers (REST honours them too).
    pub limits: Limits,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            draining: None,
            limits: Limits::default(),
        }
    }
}

/// Resolves once the server drains (or never, without a drain signal).
pub(crate) async fn drained(draining: Option<tokio::sync::watch::Receiver<bool>>) {
    match draining {
        Some(mut draining) => {
            // A dropped sender means the server is gone: drained as well.
            let _ = draining.wait_for(|draining| *draining).await;
        }
        None => std::future::pending().await,
    }
}

/// A feed reader's events, for gRPC and REST alike: it ends after the
/// first error (which it yields) or when the server drains, as the reader
/// then resumes elsewhere with its last token. `admission` (the reader's
/// permit) is held as long as the stream.
pub(crate) fn feed_events<A: Send + 'static>(
    feed: opsd_service::Feed,
    admission: A,
    draining: Option<tokio::sync::watch::Receiver<bool>>,
) -> impl Stream<Item = Result<opsd_core::Event, Error>> + Send + 'static {
    futures_util::stream::unfold(
        (feed, admission, false),
        move |(mut feed, admission, failed)| {
            let draining = draining.clone();
            async move {
                if failed {
                    return None;
                }
                tokio::select! {
                    next = feed.next() => {
                        let failed = next.is_err();
                        Some((next, (feed, admission, failed)))
                    }
                    () = drained(draining) => None,
                }
            }
        },
    )
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
pub fn interceptor(
    gate: crate::auth::Gatekeeper,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let principal = gate.admit(request.metadata().as_ref())?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

#[allow(clippy::result_large_err)]
fn caller<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
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
    /// Shared with the REST gateway: one count of open Waits and Watches.
    pub watchers: WatcherLimits,
    /// Shared with the REST gateway: one count of open feed readers.
    pub feed_readers: WatcherLimits,
}

impl OpsdOperations {
    /// A place for one more open Wait or Watch on the caller's connection.
    #[allow(clippy::result_large_err)]
    fn admit_watcher<T>(&self, request: &Request<T>) -> Result<crate::limits::WatchPermit, Status> {
        self.watchers
            .admit(request.extensions().get::<ConnectionWatchers>())
            .map_err(to_status)
    }
}

type OperationStream = Pin<Box<dyn Stream<Item = Result<pb::Operation, Status>> + Send>>;
type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOperationsResponse, Status>> + Send>>;

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
        let query = translate::list_query(body).map_err(to_status)?;
        let page = self
            .service
            .list(&caller, &query)
            .await
            .map_err(to_status)?;
        Ok(Response::new(translate::list_response(&query, &page)))
    }

    async fn get_overview(
        &self,
        request: Request<pb::GetOverviewRequest>,
    ) -> Result<Response<pb::GetOverviewResponse>, Status> {
        let caller = caller(&request)?;
        let params =
            translate::overview_params(request.into_inner(), self.service.config().stuck_after)
                .map_err(to_status)?;
        let overview = self
            .service
            .overview(&caller, &params)
            .await
            .map_err(to_status)?;
        Ok(Response::new(translate::overview_response(&overview)))
    }

    async fn wait(
        &self,
        request: Request<pb::WaitOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let _permit = self.admit_watcher(&request)?;
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
        let op = tokio::select! {
            waited = self.service.wait(&caller, &id, timeout) => waited.map_err(to_status)?,
            () = drained(self.options.draining.clone()) => {
                Arc::new(self.service.get(&caller, &id).await.map_err(to_status)?)
            }
        };
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }

    type WatchStream = OperationStream;

    async fn watch(
        &self,
        request: Request<pb::WatchOperationRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let permit = self.admit_watcher(&request)?;
        let watching = self.service.watch(&caller, &id).await.map_err(to_status)?;
        // First the current state, then each newer one; the stream ends after
        // done, or early when the server drains (the client watches again).
        // The permit lives as long as the stream.
        let draining = self.options.draining.clone();
        let stream = futures_util::stream::unfold(
            (watching, true, false, permit),
            move |(mut watching, first, finished, permit)| {
                let draining = draining.clone();
                async move {
                    if finished {
                        return None;
                    }
                    let op = if first {
                        watching.current_and_mark_seen()
                    } else {
                        tokio::select! {
                            op = watching.changed() => op,
                            () = drained(draining) => return None,
                        }
                    };
                    let done = op.is_done();
                    Some((
                        Ok(operation_to_opsd_wire(&op)),
                        (watching, false, done, permit),
                    ))
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let (after, limit) = translate::events_page(&id, &body).map_err(to_status)?;
        let events = self
            .service
            .list_events(&caller, &id, after, limit)
            .await
            .map_err(to_status)?;
        Ok(Response::new(translate::events_response(
            &id, limit, &events,
        )))
    }

    type WatchOperationsStream = FeedStream;

    async fn watch_operations(
        &self,
        request: Request<pb::WatchOperationsRequest>,
    ) -> Result<Response<Self::WatchOperationsStream>, Status> {
        let caller = caller(&request)?;
        let (filter, resume) = translate::feed_request(request.get_ref()).map_err(to_status)?;
        let permit = self
            .feed_readers
            .admit(request.extensions().get::<ConnectionWatchers>())
            .map_err(to_status)?;
        let feed = self
            .service
            .feed(&caller, filter, resume)
            .await
            .map_err(to_status)?;
        // First a bookmark (no event, the token of where the feed starts), so
        // a reader holds a token before any event; then every event. Ends only
        // on a store error or when the server drains (the client resumes
        // elsewhere with its last token). The permit lives as long.
        let bookmark = pb::WatchOperationsResponse {
            event: None,
            resume_token: opsd_core::event::encode_resume_token(feed.position()),
        };
        let events = futures_util::StreamExt::map(
            feed_events(feed, permit, self.options.draining.clone()),
            |next| match next {
                Ok(event) => Ok(translate::feed_message(&event)),
                Err(error) => Err(to_status(error)),
            },
        );
        let stream =
            futures_util::StreamExt::chain(futures_util::stream::iter([Ok(bookmark)]), events);
        Ok(Response::new(Box::pin(stream)))
    }
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
        let new = translate::new_operation(request.into_inner(), header_key).map_err(to_status)?;
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
        let update = translate::update(body).map_err(to_status)?;
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
        Ok(Response::new(translate::heartbeat_response(&op)))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let outcome = translate::outcome(body.result);
        let op = self
            .service
            .complete(&caller, &id, outcome)
            .await
            .map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }

    async fn report_failure(
        &self,
        request: Request<pb::ReportFailureRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let status = translate::reported_failure(body).map_err(to_status)?;
        let op = self
            .service
            .report_failure(&caller, &id, status)
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
