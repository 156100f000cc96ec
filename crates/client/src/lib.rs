//! A typed client for opsd: the clouds' `OperationService` (get, cancel),
//! opsd's own consumer extensions (list, wait, watch, timelines, the change
//! feed) and its producer API (create, update metadata, report a failure, complete).
//!
//! ```no_run
//! # async fn example() -> Result<(), opsd_client::ClientError> {
//! use opsd_client::{Client, NewOperation};
//!
//! let client = Client::connect("127.0.0.1:7117").await?;
//! let op = client.create(NewOperation::new("snapshot disk-1")).await?;
//! let id = op.operation.unwrap().id;
//! let current = client.get(&id).await?;
//! assert!(!current.done);
//! # Ok(())
//! # }
//! ```
//!
//! # Timelines and the change feed
//!
//! [`Client::list_events`] pages through one operation's timeline (created,
//! metadata updated, lease taken, cancel requested, failure reported,
//! completed, …), oldest first. [`Client::follow_operations`] follows the
//! events of every operation the caller may see, in commit order, narrowed by
//! a [`FeedFilter`], and resumes by itself: after UNAVAILABLE, a dropped
//! connection or a server draining for shutdown it waits a jittered, growing
//! pause and reconnects with the resume token of the last event it handed
//! out, so no event is missed and none is delivered twice. Keep
//! [`OperationFeed::resume_token`] to continue in a later process. A token
//! older than the events the server still keeps fails with
//! [`ClientError::FeedTooOld`] (OUT_OF_RANGE): list the operations again, then
//! follow from now. [`Client::watch_operations`] is the same feed over a single
//! connection, its failures left to the caller.
//!
//! ```no_run
//! # async fn example(client: opsd_client::Client) -> Result<(), opsd_client::ClientError> {
//! use opsd_client::{FeedFilter, FollowOptions};
//!
//! let filter = FeedFilter {
//!     resource_id: Some("disk-1".into()),
//!     ..FeedFilter::default()
//! };
//! let mut feed = client
//!     .follow_operations(filter, None, FollowOptions::default())
//!     .await?;
//! while let Some(item) = feed.next().await? {
//!     println!("{} #{}: {:?}", item.event.operation_id, item.event.sequence, item.event.kind());
//!     // Store item.resume_token to pick up here after a restart of this process.
//! }
//! # Ok(())
//! # }
//! ```

mod feed;
mod producer;
mod trace;
mod wait;

pub use feed::{
    Event, EventKind, FeedEvent, FeedFilter, FeedHook, FeedNotice, FollowOptions,
    ListEventsResponse, OperationFeed, WatchOperationsResponse,
};
pub use producer::{DROPPED_MESSAGE, OperationHandle, ProducerOptions};
pub use trace::trace_id_of;
pub use wait::{OperationExt, WaitOptions, is_transient, unpack};

use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use opsd_proto::opsd::v1::Operation as OpsdOperation;
pub use opsd_proto::opsd::v1::{
    CancellationPolicy, HeartbeatResponse, ListOperationsRequest, ListOperationsResponse, Progress,
    StateFilter, Step,
};
pub use opsd_proto::opsd::v1::{
    GetOverviewRequest, GetOverviewResponse, ProducerOverview, StuckOperation, StuckReason,
    stuck_reason,
};
pub use opsd_proto::yandex::cloud::operation::Operation;

/// Type URL of `google.protobuf.Struct`, how JSON travels inside `Any`.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {endpoint}: {}", root_cause(.source))]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("the token cannot be sent as a header value")]
    Token,
    /// The server answered with an error status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(#[from] tonic::Status),
    /// The operation finished, with this error.
    #[error("operation {operation_id} failed: {}: {}", code_name(tonic::Code::from_i32(.status.code)), .status.message)]
    OperationFailed {
        operation_id: String,
        status: opsd_proto::RpcStatus,
    },
    /// The operation is still running, but its producer reported this failure
    /// (only with [`WaitOptions::stop_at_reported_failure`]).
    #[error("operation {operation_id} is failing (still running): {}: {}", code_name(tonic::Code::from_i32(.status.code)), .status.message)]
    FailureReported {
        operation_id: String,
        status: opsd_proto::RpcStatus,
    },
    #[error("operation {operation_id} was not done before the wait's timeout")]
    WaitTimedOut { operation_id: String },
    /// A packed payload is not of the type the caller asked for.
    #[error("payload is {actual}, not {expected}")]
    TypeMismatch { expected: String, actual: String },
    #[error("the operation has no {what}")]
    NoPayload { what: &'static str },
    /// The feed's resume token is older than the events the server still
    /// keeps (OUT_OF_RANGE: retention deleted events after it). List the
    /// operations again, then follow the feed from now.
    #[error("OUT_OF_RANGE: {message}")]
    FeedTooOld { message: String },
}

impl ClientError {
    /// The gRPC status, when the server answered with one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Rpc(status) => Some(status),
            _ => None,
        }
    }
}

/// The innermost error: transport errors nest the same words several times.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

pub use opsd_proto::grpc_code_name as code_name;

/// What a producer asks for when it creates an operation.
#[derive(Clone, Debug, Default)]
pub struct NewOperation {
    pub description: String,
    pub resource_id: Option<String>,
    pub metadata: Option<prost_types::Any>,
    pub cancellation_policy: CancellationPolicy,
    pub idempotency_key: Option<String>,
    pub id_prefix: Option<String>,
    /// Take a lease at creation; heartbeat before it lapses.
    pub lease_duration: Option<std::time::Duration>,
    pub deadline: Option<prost_types::Timestamp>,
    /// At most one running exclusive operation per resource id.
    pub exclusive: bool,
    /// The folder or project; may be left out when the caller has one scope.
    pub scope: Option<String>,
}

impl NewOperation {
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            ..Self::default()
        }
    }
}

/// How an operation ends.
#[derive(Clone, Debug)]
pub enum Completion {
    Response(prost_types::Any),
    Error(opsd_proto::RpcStatus),
    /// With the failure reported earlier through [`Client::report_failure`].
    ReportedFailure,
}

/// Packs a message into `Any` with the type URL the official SDKs expect.
/// (`type.googleapis.com/<full name>`, whatever domain `M`'s `Name` impl uses).
pub fn pack<M: prost::Name>(message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("{}{}", opsd_proto::TYPE_URL_PREFIX, M::full_name()),
        value: message.encode_to_vec(),
    }
}

/// Packs a `google.protobuf.Struct` (the form JSON takes inside `Any`).
pub fn pack_struct(value: &prost_types::Struct) -> prost_types::Any {
    use prost::Message;
    prost_types::Any {
        type_url: STRUCT_TYPE_URL.to_owned(),
        value: value.encode_to_vec(),
    }
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// How to reach the server.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// PEM of the CA that signed the server's certificate (for `https://`).
    pub ca_pem: Option<Vec<u8>>,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// A W3C `traceparent` (and its `tracestate`) for calls made outside
    /// any span, as `opsctl` takes them from `TRACEPARENT` / `TRACESTATE`.
    /// Calls inside a span (with `tracing-opentelemetry` or OpenTelemetry's
    /// current context) carry that span's context instead. A malformed one is
    /// ignored.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    credentials: Credentials,
    operations: ycop::operation_service_client::OperationServiceClient<Authorized>,
    opsd: pb::operation_service_client::OperationServiceClient<Authorized>,
    producer: pb::producer_service_client::ProducerServiceClient<Authorized>,
}

type Authorized = InterceptedService<Channel, Credentials>;

/// Adds `authorization: Bearer <token>` to every call when a token is set,
/// and the W3C trace context of the call (see [`ConnectOptions::traceparent`]).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    token: Option<MetadataValue<Ascii>>,
    trace: Option<trace::FixedTrace>,
}

impl Credentials {
    /// A bearer token; refused if it cannot be a header value.
    pub fn bearer(token: &str) -> Result<Self, ClientError> {
        MetadataValue::try_from(format!("Bearer {token}"))
            .map(|value| Self {
                token: Some(value),
                trace: None,
            })
            .map_err(|_| ClientError::Token)
    }

    /// Calls outside any span carry `traceparent` (ignored unless well-formed).
    pub fn with_traceparent(mut self, traceparent: &str, tracestate: Option<&str>) -> Self {
        self.trace = trace::FixedTrace::new(traceparent, tracestate, false);
        self
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        trace::inject(request.metadata_mut(), self.trace.as_ref());
        Ok(request)
    }
}

impl Client {
    /// Connects to `HOST:PORT` (plaintext) or a full `http://` / `https://` URI.
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, ConnectOptions::default()).await
    }

    /// Connects with TLS settings: `https://` URIs verify the server against
    /// `ca_pem` when given, else against the built-in web PKI roots.
    pub async fn connect_with(
        endpoint: &str,
        options: ConnectOptions,
    ) -> Result<Self, ClientError> {
        let uri = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let invalid = |source| ClientError::Endpoint {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut builder = Endpoint::from_shared(uri.clone()).map_err(invalid)?;
        if uri.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            tls = match options.ca_pem {
                Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                None => tls.with_webpki_roots(),
            };
            builder = builder.tls_config(tls).map_err(invalid)?;
        }
        let channel = builder
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let mut credentials = match options.token.as_deref() {
            Some(token) => Credentials::bearer(token)?,
            None => Credentials::default(),
        };
        if let Some(traceparent) = options.traceparent.as_deref() {
            credentials = credentials.with_traceparent(traceparent, options.tracestate.as_deref());
        }
        Ok(Self::from_channel(channel, credentials))
    }

    pub fn from_channel(channel: Channel, credentials: Credentials) -> Self {
        let authorized = || InterceptedService::new(channel.clone(), credentials.clone());
        Self {
            operations: ycop::operation_service_client::OperationServiceClient::new(authorized()),
            opsd: pb::operation_service_client::OperationServiceClient::new(authorized()),
            producer: pb::producer_service_client::ProducerServiceClient::new(authorized()),
            channel,
            credentials,
        }
    }

    /// This client with its calls in the trace of `traceparent` (an
    /// operation's `trace_parent`): a call inside a span of that trace
    /// carries its own span, any other call `traceparent`. The same client
    /// when `traceparent` is not a well-formed W3C header (or empty).
    pub fn in_trace(&self, traceparent: &str, tracestate: Option<&str>) -> Client {
        match trace::FixedTrace::new(traceparent, tracestate, true) {
            Some(fixed) => {
                let credentials = Credentials {
                    trace: Some(fixed),
                    ..self.credentials.clone()
                };
                Self::from_channel(self.channel.clone(), credentials)
            }
            None => self.clone(),
        }
    }

    /// `yandex.cloud.operation.OperationService/Get`.
    pub async fn get(&self, operation_id: &str) -> Result<Operation, ClientError> {
        let request = ycop::GetOperationRequest {
            operation_id: operation_id.to_owned(),
        };
        Ok(self.operations.clone().get(request).await?.into_inner())
    }

    /// `yandex.cloud.operation.OperationService/Cancel`.
    pub async fn cancel(&self, operation_id: &str) -> Result<Operation, ClientError> {
        let request = ycop::CancelOperationRequest {
            operation_id: operation_id.to_owned(),
        };
        Ok(self.operations.clone().cancel(request).await?.into_inner())
    }

    /// `opsd.v1.OperationService/Get`: the operation with opsd's extra fields,
    /// such as whether cancellation was requested.
    pub async fn get_details(&self, operation_id: &str) -> Result<OpsdOperation, ClientError> {
        let request = pb::GetOperationRequest {
            operation_id: operation_id.to_owned(),
        };
        Ok(self.opsd.clone().get(request).await?.into_inner())
    }

    pub async fn create(&self, new: NewOperation) -> Result<OpsdOperation, ClientError> {
        let request = pb::CreateOperationRequest {
            description: new.description,
            resource_id: new.resource_id.unwrap_or_default(),
            metadata: new.metadata,
            cancellation_policy: new.cancellation_policy.into(),
            idempotency_key: new.idempotency_key.unwrap_or_default(),
            id_prefix: new.id_prefix.unwrap_or_default(),
            lease_duration: new.lease_duration.map(duration),
            deadline: new.deadline,
            exclusive: new.exclusive,
            scope: new.scope.unwrap_or_default(),
        };
        Ok(self.producer.clone().create(request).await?.into_inner())
    }

    pub async fn update_metadata(
        &self,
        operation_id: &str,
        metadata: prost_types::Any,
    ) -> Result<OpsdOperation, ClientError> {
        self.update(operation_id, Some(metadata), None).await
    }

    /// Reports metadata and/or structured progress of a running operation.
    pub async fn update(
        &self,
        operation_id: &str,
        metadata: Option<prost_types::Any>,
        progress: Option<Progress>,
    ) -> Result<OpsdOperation, ClientError> {
        let request = pb::UpdateMetadataRequest {
            operation_id: operation_id.to_owned(),
            metadata,
            progress,
        };
        Ok(self
            .producer
            .clone()
            .update_metadata(request)
            .await?
            .into_inner())
    }

    /// Takes or renews the lease on a running operation (server default: 30 s).
    pub async fn heartbeat(
        &self,
        operation_id: &str,
        lease: Option<std::time::Duration>,
    ) -> Result<HeartbeatResponse, ClientError> {
        let request = pb::HeartbeatRequest {
            operation_id: operation_id.to_owned(),
            lease_duration: lease.map(duration),
        };
        Ok(self.producer.clone().heartbeat(request).await?.into_inner())
    }

    /// One page of operations, newest first.
    pub async fn list(
        &self,
        request: ListOperationsRequest,
    ) -> Result<ListOperationsResponse, ClientError> {
        Ok(self.opsd.clone().list(request).await?.into_inner())
    }

    /// What runs, what is stuck and how each producer fared (see
    /// `GetOverviewRequest` for the window, the stuck threshold and how many
    /// oldest running operations to list).
    pub async fn overview(
        &self,
        request: GetOverviewRequest,
    ) -> Result<GetOverviewResponse, ClientError> {
        Ok(self.opsd.clone().get_overview(request).await?.into_inner())
    }

    /// Returns when the operation is done, or its latest state after `timeout`.
    pub async fn wait(
        &self,
        operation_id: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<OpsdOperation, ClientError> {
        let request = pb::WaitOperationRequest {
            operation_id: operation_id.to_owned(),
            timeout: timeout.map(duration),
        };
        Ok(self.opsd.clone().wait(request).await?.into_inner())
    }

    /// The current state, then every change, ending after done.
    pub async fn watch(
        &self,
        operation_id: &str,
    ) -> Result<tonic::Streaming<OpsdOperation>, ClientError> {
        let request = pb::WatchOperationRequest {
            operation_id: operation_id.to_owned(),
        };
        Ok(self.opsd.clone().watch(request).await?.into_inner())
    }

    pub async fn complete(
        &self,
        operation_id: &str,
        completion: Completion,
    ) -> Result<OpsdOperation, ClientError> {
        use pb::complete_operation_request::Result as Wire;
        let result = match completion {
            Completion::Response(any) => Some(Wire::Response(any)),
            Completion::Error(status) => Some(Wire::Error(status)),
            Completion::ReportedFailure => None,
        };
        let request = pb::CompleteOperationRequest {
            operation_id: operation_id.to_owned(),
            result,
        };
        Ok(self.producer.clone().complete(request).await?.into_inner())
    }

    /// Records a failure on a running operation that the producer is still
    /// cleaning up: consumers see the error at once, while `done` stays false.
    pub async fn report_failure(
        &self,
        operation_id: &str,
        error: opsd_proto::RpcStatus,
    ) -> Result<OpsdOperation, ClientError> {
        let request = pb::ReportFailureRequest {
            operation_id: operation_id.to_owned(),
            error: Some(error),
        };
        Ok(self
            .producer
            .clone()
            .report_failure(request)
            .await?
            .into_inner())
    }
}
