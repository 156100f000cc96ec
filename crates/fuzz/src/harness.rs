//! The server the gRPC and REST targets call: `opsd_server::router` (every
//! gRPC service, the REST gateway, tonic's decoding and opsd's refusal
//! mapping) over the real service and an in-memory store, called in-process
//! without sockets. Before every input the store goes back to the same six
//! operations and the clock to the same instant, so an input does the same
//! thing however often and in whatever order it runs. Time is tokio's paused
//! clock: a Wait that would wait ten minutes returns at once.

use std::cell::RefCell;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;
use opsd_core::{
    Any, CancellationPolicy, ListQuery, ManualClock, NewOperation, Operation, OperationId, Outcome,
    Progress, RpcStatus, Step, StepState, Timestamp, Transition,
};
use opsd_server::grpc::GrpcOptions;
use opsd_server::limits::{ConnectionWatchers, Limits};
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::{
    CHANGE_BUFFER, Change, Inserted, MemoryStore, OperationStore, StoreError, Swapped,
};
use tokio::sync::broadcast;
use tower::ServiceExt;

/// The instant every input runs at.
pub const NOW: Timestamp = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);
/// The largest request message the fuzzed server takes; inputs may be larger.
pub const MAX_MESSAGE_SIZE: usize = 2048;

pub const RUNNING: &str = "fzzrunning0000000001";
pub const COOPERATIVE: &str = "fzzcooperative000001";
pub const NOT_CANCELLABLE: &str = "fzznotcancellable001";
pub const DONE: &str = "fzzdone0000000000001";
pub const FAILED: &str = "fzzfailed00000000001";
pub const CANCELLED: &str = "fzzcancelled00000001";
/// Every fixture id; inputs name them to reach operations that exist.
pub const FIXTURE_IDS: [&str; 6] = [
    RUNNING,
    COOPERATIVE,
    NOT_CANCELLABLE,
    DONE,
    FAILED,
    CANCELLED,
];

/// A google.protobuf.Struct `{"size": "large"}`, packed.
pub fn struct_payload() -> Any {
    let value = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("large".into())),
    };
    let message = prost_types::Struct {
        fields: [("size".to_owned(), value)].into_iter().collect(),
    };
    Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: prost::Message::encode_to_vec(&message),
    }
}

/// The six operations every input starts from, in their stored versions.
pub fn fixtures() -> Vec<Operation> {
    let at = |seconds_before: u64| {
        Timestamp::from_unix_nanos(NOW.unix_nanos() - (seconds_before as i64) * 1_000_000_000)
    };
    let create = |id: &str, request: NewOperation, created: Timestamp| {
        Operation::create(
            OperationId::parse("id", id).expect("fixture ids are valid"),
            request,
            "anonymous",
            created,
        )
    };
    let changed = |transition: Transition| match transition {
        Transition::Changed(next, _) => next,
        Transition::Unchanged => unreachable!("fixture transitions change"),
    };
    let mut running = NewOperation::new("resize disk-1");
    running.resource_id = Some("disk-1".into());
    running.exclusive = true;
    running.metadata = Some(struct_payload());
    let running = create(RUNNING, running, at(60));

    let mut cooperative = NewOperation::new("snapshot disk-2");
    cooperative.cancellation = CancellationPolicy::Cooperative;
    cooperative.lease_duration = Some(Duration::from_secs(30));
    cooperative.resource_id = Some("disk-2".into());
    let cooperative = create(COOPERATIVE, cooperative, at(50));
    let cooperative = changed(
        cooperative
            .update(
                opsd_core::Update {
                    metadata: None,
                    progress: Some(Progress {
                        work_done: 3,
                        work_total: 10,
                        message: "copying".into(),
                        steps: vec![Step {
                            name: "copy".into(),
                            state: StepState::Running,
                        }],
                    }),
                },
                at(40),
            )
            .expect("a running operation takes progress"),
    );

    let mut not_cancellable = NewOperation::new("write object");
    not_cancellable.cancellation = CancellationPolicy::NotCancellable;
    not_cancellable.scope = Some("folder-a".into());
    let not_cancellable = create(NOT_CANCELLABLE, not_cancellable, at(40));

    let done = create(DONE, NewOperation::new("create vm"), at(30));
    let done = changed(
        done.complete(Outcome::Response(struct_payload()), at(20))
            .expect("a running operation completes"),
    );

    let failed = create(FAILED, NewOperation::new("delete vm"), at(30));
    let failed = changed(
        failed
            .complete(
                Outcome::Error(RpcStatus {
                    code: 9,
                    message: "quota exceeded".into(),
                    details: vec![Any {
                        type_url: "type.googleapis.com/acme.QuotaFailure".into(),
                        value: vec![1, 2, 3],
                    }],
                }),
                at(20),
            )
            .expect("a running operation completes"),
    );

    let cancelled = create(CANCELLED, NewOperation::new("restart vm"), at(30));
    let cancelled = changed(cancelled.cancel(at(10)).expect("immediate cancel"));

    vec![
        running,
        cooperative,
        not_cancellable,
        done,
        failed,
        cancelled,
    ]
}

/// A memory store that can start over; it announces its own changes, so the
/// service's watchers keep listening across resets.
struct ResettableStore {
    current: RwLock<Arc<MemoryStore>>,
    changes: broadcast::Sender<Change>,
}

impl ResettableStore {
    fn store(&self) -> Arc<MemoryStore> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Back to the fixtures at [`NOW`].
    pub fn reset(&self) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(MemoryStore::new());
    }

    fn committed(&self, op: &Operation) {
        let _ = self.changes.send(Change::Committed {
            id: op.id.clone(),
            version: op.version,
        });
    }
}

#[async_trait]
impl OperationStore for ResettableStore {
    async fn insert(
        &self,
        operation: &Operation,
        event: &opsd_core::NewEvent,
    ) -> Result<Inserted, StoreError> {
        let inserted = self.store().insert(operation, event).await?;
        if inserted == Inserted::Created {
            self.committed(operation);
        }
        Ok(inserted)
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        self.store().get(id).await
    }

    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&opsd_core::NewEvent>,
    ) -> Result<Swapped, StoreError> {
        let swapped = self.store().compare_and_swap(next, event).await?;
        if swapped == Swapped::Swapped {
            self.committed(next);
        }
        Ok(swapped)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        self.store().list(query).await
    }

    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<opsd_core::Event>, StoreError> {
        self.store().list_events(id, after, limit).await
    }

    async fn read_feed(
        &self,
        after: u64,
        filter: &opsd_core::EventFilter,
        limit: usize,
    ) -> Result<Vec<opsd_core::Event>, StoreError> {
        self.store().read_feed(after, filter, limit).await
    }

    async fn feed_bounds(&self) -> Result<opsd_store::FeedBounds, StoreError> {
        self.store().feed_bounds().await
    }

    async fn progress_samples(
        &self,
        query: &opsd_core::overview::ProgressQuery,
    ) -> Result<Vec<opsd_core::overview::ProgressSample>, StoreError> {
        self.store().progress_samples(query).await
    }

    async fn overview(
        &self,
        query: &opsd_core::overview::OverviewQuery,
    ) -> Result<opsd_core::overview::OverviewRows, StoreError> {
        self.store().overview(query).await
    }

    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        self.store().due_for_expiry(now, limit).await
    }

    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.store().delete_done_before(cutoff, limit).await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        self.store().count_running().await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.store().close().await
    }
}

/// An answer: head, body bytes (for a stream, up to the first message), trailers.
pub struct Answer {
    pub head: http::response::Parts,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

pub struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    store: Arc<ResettableStore>,
    clock: ManualClock,
    service: Arc<OperationService>,
    fixtures: Vec<Operation>,
}

thread_local! {
    static SERVER: RefCell<Option<Server>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's server, fresh from its fixtures.
pub fn with_server<R>(f: impl FnOnce(&Server) -> R) -> R {
    SERVER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let server = cell.get_or_insert_with(Server::start);
        server.reset();
        f(server)
    })
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let store = Arc::new(ResettableStore {
            current: RwLock::new(Arc::new(MemoryStore::new())),
            changes: broadcast::channel(CHANGE_BUFFER).0,
        });
        let clock = ManualClock::new(NOW);
        let (service, router) = runtime.block_on(async {
            let service = Arc::new(OperationService::new(
                Arc::clone(&store) as Arc<dyn OperationStore>,
                Arc::new(clock.clone()),
                ServiceConfig::default(),
            ));
            let gate = opsd_server::auth::Gatekeeper::new(
                Arc::new(opsd_server::auth::Authenticator::anonymous()),
                Arc::clone(service.metrics()),
            );
            let options = GrpcOptions {
                limits: Limits {
                    max_message_size: MAX_MESSAGE_SIZE,
                    ..Limits::default()
                },
                ..GrpcOptions::default()
            };
            let router = opsd_server::router(
                Arc::clone(&service),
                gate,
                &options,
                opsd_server::discovery::Endpoints::new("opsd.fuzz:443", &["compute".into()]),
            )
            .await
            .expect("the router builds");
            (service, router)
        });
        Self {
            runtime,
            router,
            store,
            clock,
            service,
            fixtures: fixtures(),
        }
    }

    /// Back to the fixtures at [`NOW`].
    pub fn reset(&self) {
        self.store.reset();
        self.clock.set(NOW);
        let store = self.store.store();
        self.runtime.block_on(async {
            for op in &self.fixtures {
                // The memory store keeps what it is given: version 1 first,
                // then straight to the stored version.
                let first = Operation {
                    version: 1,
                    ..op.clone()
                };
                assert_eq!(
                    store
                        .insert(&first, &opsd_store::conformance::created(&first))
                        .await,
                    Ok(Inserted::Created)
                );
                for version in 2..=op.version {
                    let step = Operation {
                        version,
                        ..op.clone()
                    };
                    assert_eq!(
                        store
                            .compare_and_swap(&step, Some(&opsd_store::conformance::changed(&step)))
                            .await,
                        Ok(Swapped::Swapped)
                    );
                }
            }
        });
        debug_assert_eq!(self.service.watchers().active(), 0);
    }

    /// The fixtures as stored.
    pub fn fixtures(&self) -> &[Operation] {
        &self.fixtures
    }

    /// The fixture with this id.
    pub fn fixture(&self, id: &str) -> Option<&Operation> {
        self.fixtures.iter().find(|op| op.id.as_str() == id)
    }

    /// Every operation stored now (the fixtures and what the input created).
    pub fn stored(&self) -> Vec<Operation> {
        let store = self.store.store();
        self.runtime.block_on(async {
            store
                .list(&ListQuery {
                    filter: Default::default(),
                    after: None,
                    limit: usize::MAX,
                })
                .await
                .expect("memory lists")
        })
    }

    /// Sends one request as a connection of its own would; for a stream,
    /// reads up to its first message.
    pub fn call(
        &self,
        mut request: http::Request<axum::body::Body>,
        first_message_only: bool,
    ) -> Answer {
        request
            .extensions_mut()
            .insert(ConnectionWatchers::default());
        let router = self.router.clone();
        self.runtime.block_on(async move {
            // Virtual time: only an input that waits on nothing at all hits this.
            tokio::time::timeout(Duration::from_secs(24 * 3600), async move {
                let response = router
                    .oneshot(request)
                    .await
                    .expect("routers are infallible");
                let (head, mut body) = response.into_parts();
                // The change feed as SSE never ends: its head is the answer.
                if head
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
                {
                    return Answer {
                        head,
                        body: Bytes::new(),
                        trailers: None,
                    };
                }
                let mut data = Vec::new();
                let mut trailers = None;
                while let Some(frame) = body.frame().await {
                    let frame = frame.expect("response bodies do not fail");
                    match frame.into_data() {
                        Ok(chunk) => data.extend_from_slice(&chunk),
                        Err(frame) => {
                            trailers = frame.into_trailers().ok();
                            break;
                        }
                    }
                    if first_message_only && data.len() >= 5 {
                        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                        if data.len() >= 5 + len {
                            break;
                        }
                    }
                }
                Answer {
                    head,
                    body: Bytes::from(data),
                    trailers,
                }
            })
            .await
            .expect("a request answers within a day of virtual time")
        })
    }
}
