//! Prometheus metrics of one opsd process: requests, operation outcomes,
//! watchers, store latency (a decorator around the store) and build info.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsd_core::overview::{OverviewQuery, OverviewRows, ProgressQuery, ProgressSample};
use opsd_core::{
    Event, EventFilter, ListQuery, NewEvent, Operation, OperationId, Outcome, Timestamp,
};
use opsd_store::{Change, FeedBounds, Inserted, OperationStore, StoreError, Swapped};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label value: borrowed on the hot path, owned when it had to be built.
pub type Label = Cow<'static, str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `grpc` or `http`.
    pub protocol: Label,
    /// The gRPC method path, or the REST route template.
    pub method: Label,
    /// The gRPC code name, or the HTTP status.
    pub code: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub protocol: Label,
    pub method: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `response`, `error`, `cancelled`, `lease_lapsed` or `deadline_exceeded`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `watchers_per_connection`, `watchers` or `message_size`.
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

/// The counter and histogram of one (protocol, method, code); clones share them.
#[derive(Clone, Debug)]
pub struct RequestSeries {
    count: Counter,
    duration: Histogram,
}

impl RequestSeries {
    pub fn record(&self, elapsed: Duration) {
        self.count.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<MethodLabels, Histogram>,
    pub operations_created: Counter,
    pub operations_completed: Family<OutcomeLabels, Counter>,
    pub cancel_requests: Counter,
    pub failures_reported: Counter,
    pub operations_deleted: Counter,
    pub operations_running: Gauge,
    pub watchers_active: Gauge,
    pub store_duration: Family<StoreLabels, Histogram>,
    pub store_errors: Family<StoreLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub limit_refusals: Family<LimitLabels, Counter>,
}

/// Spans the trace exporter could not deliver: its queue was full (the
/// collector is slow or down) or the collector refused or never answered a
/// batch. Process-wide, as the exporter is.
pub fn trace_spans_dropped() -> &'static Counter {
    static DROPPED: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    DROPPED.get_or_init(Counter::default)
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~3 s.
    Histogram::new(exponential_buckets(0.00005, 3.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("opsd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by protocol, method and result code",
            requests.clone(),
        );
        let request_duration = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request (to the first byte of a stream)",
            request_duration.clone(),
        );
        let operations_created = Counter::default();
        registry.register(
            "operations_created",
            "Operations created (not idempotent replays)",
            operations_created.clone(),
        );
        let operations_completed = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "operations_completed",
            "Operations completed, by outcome",
            operations_completed.clone(),
        );
        let cancel_requests = Counter::default();
        registry.register(
            "cancel_requests",
            "Cancel requests that changed an operation",
            cancel_requests.clone(),
        );
        let failures_reported = Counter::default();
        registry.register(
            "failures_reported",
            "Failure reports that changed a running operation",
            failures_reported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans the trace exporter dropped: its queue was full or the collector failed",
            trace_spans_dropped().clone(),
        );
        let operations_deleted = Counter::default();
        registry.register(
            "operations_deleted",
            "Done operations deleted by retention",
            operations_deleted.clone(),
        );
        let operations_running = Gauge::default();
        registry.register(
            "operations_running",
            "Operations not done yet, in the whole store",
            operations_running.clone(),
        );
        let watchers_active = Gauge::default();
        registry.register(
            "watchers_active",
            "Waiters and watchers registered in this process",
            watchers_active.clone(),
        );
        let store_duration = Family::<StoreLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "store_duration_seconds",
            "Store call latency",
            store_duration.clone(),
        );
        let store_errors = Family::<StoreLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Store calls that failed",
            store_errors.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused as unauthenticated, by reason",
            auth_failures.clone(),
        );
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Requests refused because a configured limit was reached, by limit",
            limit_refusals.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "The running opsd's version", build_info);
        Self {
            registry,
            requests,
            request_duration,
            operations_created,
            operations_completed,
            cancel_requests,
            failures_reported,
            operations_deleted,
            operations_running,
            watchers_active,
            store_duration,
            store_errors,
            auth_failures,
            limit_refusals,
        }
    }

    /// One request refused by a limit (`watchers_per_connection`, `watchers`, `message_size`).
    pub fn limit_refused(&self, limit: &str) {
        self.limit_refusals
            .get_or_create(&LimitLabels {
                limit: limit.to_owned(),
            })
            .inc();
    }

    /// One refused authentication (`missing`, `malformed`, `unknown_token`, …).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The series one kind of answer is counted in, looked up once: a caller
    /// that keeps them records a request without a label lookup.
    pub fn request_series(
        &self,
        protocol: &'static str,
        method: Label,
        code: Label,
    ) -> RequestSeries {
        let labels = RequestLabels {
            protocol: Cow::Borrowed(protocol),
            method,
            code,
        };
        let count = self.requests.get_or_create(&labels).clone();
        let duration = self
            .request_duration
            .get_or_create(&MethodLabels {
                protocol: labels.protocol,
                method: labels.method,
            })
            .clone();
        RequestSeries { count, duration }
    }

    /// One answered request.
    pub fn request(&self, protocol: &'static str, method: Label, code: Label, elapsed: Duration) {
        let labels = RequestLabels {
            protocol: Cow::Borrowed(protocol),
            method,
            code,
        };
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&MethodLabels {
                protocol: labels.protocol,
                method: labels.method,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn completed(&self, outcome: &Outcome, by_expiry: bool) {
        let outcome = match outcome {
            Outcome::Response(_) => "response",
            Outcome::Error(status) if by_expiry && status.code == 4 => "deadline_exceeded",
            Outcome::Error(_) if by_expiry => "lease_lapsed",
            Outcome::Error(status) if status.code == opsd_core::operation::CANCELLED_CODE => {
                "cancelled"
            }
            Outcome::Error(_) => "error",
        };
        self.operations_completed
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a string cannot fail");
        text
    }
}

/// The store, timed: every call's latency and failures go to [`Metrics`].
pub struct MeteredStore {
    inner: Arc<dyn OperationStore>,
    insert: StoreCallMetrics,
    get: StoreCallMetrics,
    compare_and_swap: StoreCallMetrics,
    list: StoreCallMetrics,
    due_for_expiry: StoreCallMetrics,
    delete_done_before: StoreCallMetrics,
    count_running: StoreCallMetrics,
    progress_samples: StoreCallMetrics,
    overview: StoreCallMetrics,
    list_events: StoreCallMetrics,
    read_feed: StoreCallMetrics,
    feed_bounds: StoreCallMetrics,
}

/// One store call's series, looked up once (they share the families' state).
struct StoreCallMetrics {
    duration: Histogram,
    errors: Counter,
}

impl StoreCallMetrics {
    fn new(metrics: &Metrics, operation: &str) -> Self {
        let labels = StoreLabels {
            operation: operation.to_owned(),
        };
        Self {
            duration: metrics.store_duration.get_or_create(&labels).clone(),
            errors: metrics.store_errors.get_or_create(&labels).clone(),
        }
    }

    async fn time<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.duration.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors.inc();
        }
        result
    }
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn OperationStore>, metrics: Arc<Metrics>) -> Self {
        let call = |operation| StoreCallMetrics::new(&metrics, operation);
        Self {
            insert: call("insert"),
            get: call("get"),
            compare_and_swap: call("compare_and_swap"),
            list: call("list"),
            due_for_expiry: call("due_for_expiry"),
            delete_done_before: call("delete_done_before"),
            count_running: call("count_running"),
            progress_samples: call("progress_samples"),
            overview: call("overview"),
            list_events: call("list_events"),
            read_feed: call("read_feed"),
            feed_bounds: call("feed_bounds"),
            inner,
        }
    }
}

#[async_trait]
impl OperationStore for MeteredStore {
    async fn insert(
        &self,
        operation: &Operation,
        event: &NewEvent,
    ) -> Result<Inserted, StoreError> {
        self.insert.time(self.inner.insert(operation, event)).await
    }
    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        self.get.time(self.inner.get(id)).await
    }
    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError> {
        self.compare_and_swap
            .time(self.inner.compare_and_swap(next, event))
            .await
    }
    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.list_events
            .time(self.inner.list_events(id, after, limit))
            .await
    }
    async fn read_feed(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read_feed
            .time(self.inner.read_feed(after, filter, limit))
            .await
    }
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.feed_bounds.time(self.inner.feed_bounds()).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        self.list.time(self.inner.list(query)).await
    }
    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        self.due_for_expiry
            .time(self.inner.due_for_expiry(now, limit))
            .await
    }
    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.delete_done_before
            .time(self.inner.delete_done_before(cutoff, limit))
            .await
    }
    async fn count_running(&self) -> Result<u64, StoreError> {
        self.count_running.time(self.inner.count_running()).await
    }
    async fn progress_samples(
        &self,
        query: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError> {
        self.progress_samples
            .time(self.inner.progress_samples(query))
            .await
    }
    async fn overview(&self, query: &OverviewQuery) -> Result<OverviewRows, StoreError> {
        self.overview.time(self.inner.overview(query)).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.inner.subscribe()
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}
