//! The change feed as a history: concurrent writers on every replica, one
//! reader of `opsd.v1.OperationService/WatchOperations` that drops its stream
//! at random points (sometimes moving to the other replica) and resumes with
//! the last `resume_token` it received.
//!
//! Producers create operations, take and renew leases, report progress and
//! failures, cancel and complete them (some cancels race their completion on
//! the other replica), each call through either replica, and write down every
//! acknowledged change with its start and end. When they are done, a last
//! operation (the sentinel) is created: everything committed before it comes
//! before it in the feed, so the reader stops at its `created` event.
//!
//! Then every operation's timeline is read with `ListEvents`, the source of
//! truth, and held against what the reader collected:
//!
//! - every event delivered exactly once (no gaps, no duplicates), exactly as
//!   ListEvents has it, and nothing ListEvents does not have;
//! - per operation in sequence order (1, 2, 3, …), and feed positions growing
//!   across the whole run, reconnects and replica switches included;
//! - in real-time order: a change acknowledged before another was sent sits
//!   earlier in the feed, whichever replicas wrote them;
//! - every acknowledged change made its event (lease renewals made none), and
//!   every timeline is well formed ([`timeline_problems`]).
//!
//! Size: `OPSD_FEED_HISTORY_OPERATIONS` operations (300 by default, 3000 for
//! the long run in the README), written by `OPSD_FEED_HISTORY_PRODUCERS`
//! concurrent producers (24), who start no new operation after
//! `OPSD_FEED_HISTORY_SECONDS` (120).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opsd_client::{CancellationPolicy, Client, ClientError, Completion, NewOperation};
use opsd_proto::opsd::v1 as pb;
use pb::operation_service_client::OperationServiceClient;
use rand::Rng;
use tonic::transport::Channel;

use crate::process::Process;
use crate::support::env_size;

/// A raw client of `opsd.v1.OperationService` (ListEvents, WatchOperations).
pub type Opsd = OperationServiceClient<Channel>;

/// The most messages the reader takes from one stream before dropping it.
const MAX_BURST: usize = 48;
/// Connections per replica, for the writers and for the reader each.
const CONNECTIONS: usize = 2;
/// The feed must deliver something within this while the writers write.
const STALL: Duration = Duration::from_secs(60);
/// The description the reader stops at.
const SENTINEL: &str = "feed history sentinel";
/// Leases taken by the writers: longer than any run, so the reaper never
/// completes an operation behind the sentinel's back.
const LEASE: Duration = Duration::from_secs(3600);

pub async fn connect_opsd(endpoint: &str) -> Opsd {
    OperationServiceClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap()
}

/// An operation's whole timeline through ListEvents, page after page.
pub async fn list_events(opsd: &Opsd, id: &str) -> Result<Vec<pb::Event>, tonic::Status> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    for _ in 0..10_000 {
        let page = opsd
            .clone()
            .list_events(pb::ListEventsRequest {
                operation_id: id.to_owned(),
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(events);
        }
        page_token = page.next_page_token;
    }
    panic!("the events of {id} did not end");
}

/// The timelines of many operations, a few calls at a time.
pub async fn list_many_events(
    opsd: &Opsd,
    ids: impl IntoIterator<Item = String>,
) -> HashMap<String, Result<Vec<pb::Event>, tonic::Status>> {
    futures_util::stream::iter(ids)
        .map(|id| async move {
            let events = list_events(opsd, &id).await;
            (id, events)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// The feed position a resume token names.
pub fn position(token: &str) -> u64 {
    opsd_core::event::decode_resume_token("resume_token", token)
        .unwrap_or_else(|e| panic!("a resume token opsd cannot read back {token:?}: {e:?}"))
}

fn at(t: Option<&prost_types::Timestamp>) -> Option<(i64, i32)> {
    t.map(|t| (t.seconds, t.nanos))
}

fn kind(event: &pb::Event) -> pb::EventKind {
    pb::EventKind::try_from(event.kind).unwrap_or(pb::EventKind::Unspecified)
}

fn completes(kind: pb::EventKind) -> bool {
    matches!(
        kind,
        pb::EventKind::Completed | pb::EventKind::LeaseLapsed | pb::EventKind::DeadlineExceeded
    )
}

/// What an operation's timeline must be, given the operation as it is now:
/// a `created` event first, sequence numbers 1..n, versions and times
/// strictly increasing, the last event no later than the operation's last
/// change (`modified_at`, which moves with every version), a completion kind
/// last exactly when it is done, and the events agreeing with the
/// operation's cancel request, reported failure, progress and result.
///
/// With `every_change_has_an_event` (no lease renewals were made), the
/// versions are exactly 1..n and the last event is the last change.
pub fn timeline_problems(
    op: &pb::Operation,
    events: &[pb::Event],
    every_change_has_an_event: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(wire) = op.operation.as_ref() else {
        return vec!["an operation without its operation".into()];
    };
    let id = &wire.id;
    let mut problem = |what: String| problems.push(format!("{id}: {what}"));
    let Some(first) = events.first() else {
        problem("no events".into());
        return problems;
    };
    if kind(first) != pb::EventKind::Created || first.version != 1 {
        problem(format!("the first event is not its creation: {first:?}"));
    }
    if at(first.time.as_ref()) != at(wire.created_at.as_ref()) {
        problem(format!(
            "created at {:?}, its created event at {:?}",
            wire.created_at, first.time
        ));
    }
    for (i, event) in events.iter().enumerate() {
        if event.operation_id != *id {
            problem(format!(
                "an event of {} in its timeline",
                event.operation_id
            ));
        }
        if event.sequence != i as i64 + 1 {
            problem(format!("event {} has sequence {}", i + 1, event.sequence));
        }
        if every_change_has_an_event && event.version != i as i64 + 1 {
            problem(format!(
                "event {} has version {}, but every change makes an event",
                i + 1,
                event.version
            ));
        }
        if completes(kind(event)) && i + 1 != events.len() {
            problem(format!(
                "a completion ({:?}) followed by more events",
                kind(event)
            ));
        }
    }
    for pair in events.windows(2) {
        if pair[1].version <= pair[0].version {
            problem(format!(
                "versions {} then {}",
                pair[0].version, pair[1].version
            ));
        }
        if at(pair[1].time.as_ref()) <= at(pair[0].time.as_ref()) {
            problem(format!("times {:?} then {:?}", pair[0].time, pair[1].time));
        }
    }
    let last = events.last().unwrap();
    let (last_at, modified_at) = (at(last.time.as_ref()), at(wire.modified_at.as_ref()));
    if last_at > modified_at {
        problem(format!(
            "its last event ({:?}) is later than its last change ({:?})",
            last.time, wire.modified_at
        ));
    }
    if every_change_has_an_event && last_at != modified_at {
        problem(format!(
            "its last change ({:?}) made no event (the last is at {:?})",
            wire.modified_at, last.time
        ));
    }
    if wire.done != completes(kind(last)) {
        problem(format!(
            "done {}, but its last event is {:?}",
            wire.done,
            kind(last)
        ));
    }
    use opsd_proto::yandex::cloud::operation::operation::Result as Outcome;
    if wire.done {
        match &wire.result {
            Some(Outcome::Error(status))
                if last.error.as_ref().map(|e| (e.code, &e.message))
                    != Some((status.code, &status.message)) =>
            {
                problem(format!(
                    "ended with {status:?}, its completion says {:?}",
                    last.error
                ));
            }
            Some(Outcome::Response(any))
                if last.response_type_url != any.type_url || last.error.is_some() =>
            {
                problem(format!(
                    "ended with a {}, its completion says {:?} / {:?}",
                    any.type_url, last.response_type_url, last.error
                ));
            }
            _ => {}
        }
    }
    let of = |wanted: pb::EventKind| events.iter().filter(move |e| kind(e) == wanted);
    if op.state() == pb::OperationState::CancelRequested {
        let requested = of(pb::EventKind::CancelRequested).next_back();
        if requested.map(|e| at(e.time.as_ref())) != Some(at(op.cancel_requested_at.as_ref())) {
            problem(format!(
                "cancel requested at {:?}, its event: {requested:?}",
                op.cancel_requested_at
            ));
        }
    }
    if let Some(reported) = &op.reported_failure {
        let event = of(pb::EventKind::FailureReported).next_back();
        if event.and_then(|e| e.error.as_ref()).map(|e| e.code) != Some(reported.code) {
            problem(format!("reported {reported:?}, its event: {event:?}"));
        }
    }
    if op.progress.is_some() {
        let event = of(pb::EventKind::MetadataUpdated).next_back();
        if event.map(|e| &e.progress) != Some(&op.progress) {
            problem(format!(
                "progress {:?}, its last update: {event:?}",
                op.progress
            ));
        }
    }
    problems
}

/// An acknowledged write and the change it made.
struct Write {
    id: String,
    what: &'static str,
    start: Duration,
    end: Duration,
    /// The operation's `modified_at` after it: the time of its event.
    at: Option<(i64, i32)>,
    /// False for a lease renewal, which changes the operation but makes no event.
    makes_event: bool,
}

/// The writers' side: clients of every replica and what they were told.
struct Writers {
    /// Per replica, a few connections.
    clients: Vec<Vec<Client>>,
    epoch: Instant,
    writes: Mutex<Vec<Write>>,
    ids: Mutex<Vec<String>>,
    /// Writes refused with FAILED_PRECONDITION (a race lost, a cancel of a
    /// not-cancellable operation).
    refused: AtomicU64,
    problems: Mutex<Vec<String>>,
    next: AtomicUsize,
}

fn pick(clients: &[Vec<Client>], replica: usize) -> Client {
    let connections = &clients[replica % clients.len()];
    connections[rand::rng().random_range(0..connections.len())].clone()
}

/// Sometimes a short pause, to vary the interleavings.
async fn pause() {
    let pause = {
        let mut rng = rand::rng();
        rng.random_bool(0.3)
            .then(|| Duration::from_micros(rng.random_range(0..3000)))
    };
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
}

fn modified_at(op: &opsd_client::OpsdOperation) -> Option<(i64, i32)> {
    at(op.operation.as_ref().and_then(|o| o.modified_at.as_ref()))
}

impl Writers {
    fn random_replica(&self) -> usize {
        rand::rng().random_range(0..self.clients.len())
    }

    /// Sends one write through `replica`, recording it when acknowledged.
    /// Returns whether it was.
    async fn write<F>(
        &self,
        id: &str,
        what: &'static str,
        makes_event: bool,
        replica: usize,
        call: impl FnOnce(Client) -> F,
    ) -> bool
    where
        F: std::future::Future<Output = Result<Option<(i64, i32)>, ClientError>>,
    {
        let client = pick(&self.clients, replica);
        let start = self.epoch.elapsed();
        let answer = call(client).await;
        let end = self.epoch.elapsed();
        match answer {
            Ok(at) => {
                self.writes.lock().unwrap().push(Write {
                    id: id.to_owned(),
                    what,
                    start,
                    end,
                    at,
                    makes_event,
                });
                true
            }
            Err(ClientError::Rpc(status)) if status.code() == tonic::Code::FailedPrecondition => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(e) => {
                self.problems
                    .lock()
                    .unwrap()
                    .push(format!("{what} of {id} failed: {e}"));
                false
            }
        }
    }

    /// One operation's life: created, perhaps leased, updated, a failure
    /// reported; then cancelled, completed, both at once, or left running.
    async fn operation(&self, n: usize) {
        let (policy, lease, updates, report, ending) = {
            let mut rng = rand::rng();
            let policy = match rng.random_range(0..3) {
                0 => CancellationPolicy::Immediate,
                1 => CancellationPolicy::Cooperative,
                _ => CancellationPolicy::NotCancellable,
            };
            (
                policy,
                rng.random_bool(0.25),
                rng.random_range(0..=3),
                rng.random_bool(0.2),
                rng.random_range(0..6),
            )
        };
        let replica = self.random_replica();
        let client = pick(&self.clients, replica);
        let start = self.epoch.elapsed();
        let created = client
            .create(NewOperation {
                cancellation_policy: policy,
                ..NewOperation::new(format!("feed {n}"))
            })
            .await;
        let end = self.epoch.elapsed();
        let op = match created {
            Ok(op) => op,
            Err(e) => {
                self.problems
                    .lock()
                    .unwrap()
                    .push(format!("create {n} failed: {e}"));
                return;
            }
        };
        let id = op.operation.as_ref().unwrap().id.clone();
        self.ids.lock().unwrap().push(id.clone());
        self.writes.lock().unwrap().push(Write {
            id: id.clone(),
            what: "create",
            start,
            end,
            at: modified_at(&op),
            makes_event: true,
        });
        let id = id.as_str();

        let heartbeat = |makes_event| {
            self.write(
                id,
                "heartbeat",
                makes_event,
                self.random_replica(),
                |c| async move {
                    let answer = c.heartbeat(id, Some(LEASE)).await?;
                    Ok(answer.operation.as_ref().and_then(modified_at))
                },
            )
        };
        if lease {
            pause().await;
            heartbeat(true).await;
        }
        for step in 1..=updates {
            pause().await;
            let progress = opsd_client::Progress {
                work_done: step,
                work_total: 3,
                message: format!("step {step} of {n}"),
                steps: vec![],
            };
            self.write(id, "update", true, self.random_replica(), |c| async move {
                Ok(modified_at(&c.update(id, None, Some(progress)).await?))
            })
            .await;
            if lease && step == 1 {
                heartbeat(false).await;
            }
        }
        if report {
            pause().await;
            let error = opsd_proto::RpcStatus {
                code: 14,
                message: format!("failing {n}"),
                details: vec![],
            };
            self.write(
                id,
                "report failure",
                true,
                self.random_replica(),
                |c| async move { Ok(modified_at(&c.report_failure(id, error).await?)) },
            )
            .await;
        }
        let completion = || {
            if report {
                Completion::ReportedFailure
            } else if n.is_multiple_of(2) {
                Completion::Response(opsd_client::pack_struct(&prost_types::Struct::default()))
            } else {
                Completion::Error(opsd_proto::RpcStatus {
                    code: 9,
                    message: format!("failed {n}"),
                    details: vec![],
                })
            }
        };
        let complete = |replica| {
            let completion = completion();
            self.write(id, "complete", true, replica, |c| async move {
                Ok(modified_at(&c.complete(id, completion).await?))
            })
        };
        let cancel = |replica| {
            self.write(id, "cancel", true, replica, |c| async move {
                Ok(at(c.cancel(id).await?.modified_at.as_ref()))
            })
        };
        pause().await;
        match ending {
            // Left running (with its lease, if it took one, far from lapsing).
            0 => {}
            1 => {
                let cancelled = cancel(self.random_replica()).await;
                if !cancelled || policy == CancellationPolicy::Cooperative {
                    pause().await;
                    complete(self.random_replica()).await;
                }
            }
            // A cancel racing the completion on the other replica.
            2 => {
                let replica = self.random_replica();
                tokio::join!(cancel(replica), complete(replica + 1));
            }
            _ => {
                complete(self.random_replica()).await;
            }
        }
    }

    /// Takes operations until there are no more or time is up.
    async fn produce(self: Arc<Self>, operations: usize, until: Instant) {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= operations || Instant::now() >= until {
                return;
            }
            self.operation(n).await;
        }
    }
}

/// A feed message as the reader received it.
struct Delivered {
    event: pb::Event,
    position: u64,
    received: Duration,
}

#[derive(Default)]
struct Reading {
    delivered: Vec<Delivered>,
    reconnects: usize,
    switches: usize,
    /// Streams that ended with an error status (the reader resumed after each).
    stream_errors: Vec<tonic::Status>,
}

/// Reads the feed from `first` on until the sentinel's `created` event,
/// dropping the stream after a random number of messages and resuming with
/// the last token, on either replica.
async fn read(
    readers: Vec<Vec<Opsd>>,
    mut stream: tonic::Streaming<pb::WatchOperationsResponse>,
    epoch: Instant,
    until: Instant,
) -> Reading {
    let mut reading = Reading::default();
    let mut replica = 0;
    let mut token: Option<String> = None;
    loop {
        let budget = rand::rng().random_range(1..=MAX_BURST);
        for _ in 0..budget {
            let next = tokio::time::timeout(STALL, stream.message())
                .await
                .unwrap_or_else(|_| panic!("the feed delivered nothing for {STALL:?}"));
            match next {
                Ok(Some(message)) => {
                    // The opening bookmark: only a token, where the feed starts.
                    let Some(event) = message.event else {
                        token = Some(message.resume_token);
                        continue;
                    };
                    let sentinel =
                        kind(&event) == pb::EventKind::Created && event.description == SENTINEL;
                    reading.delivered.push(Delivered {
                        event,
                        position: position(&message.resume_token),
                        received: epoch.elapsed(),
                    });
                    token = Some(message.resume_token);
                    if sentinel {
                        return reading;
                    }
                }
                Ok(None) => panic!("the feed ended by itself"),
                Err(status) => {
                    reading.stream_errors.push(status);
                    break;
                }
            }
            // Now and then a slow reader: the server runs ahead, and what it
            // sent after the last message taken is dropped with the stream.
            let slow = {
                let mut rng = rand::rng();
                rng.random_bool(0.02)
                    .then(|| Duration::from_millis(rng.random_range(1..20)))
            };
            if let Some(slow) = slow {
                tokio::time::sleep(slow).await;
            }
        }
        assert!(Instant::now() < until, "the reader did not finish in time");
        drop(stream);
        reading.reconnects += 1;
        let (switch, connection) = {
            let mut rng = rand::rng();
            (rng.random_bool(0.5), rng.random_range(0..CONNECTIONS))
        };
        if switch && readers.len() > 1 {
            replica = (replica + 1) % readers.len();
            reading.switches += 1;
        }
        let resume_token = token
            .clone()
            .expect("the first stream delivered a message before it was dropped");
        stream = loop {
            let request = pb::WatchOperationsRequest {
                resume_token: resume_token.clone(),
                ..Default::default()
            };
            match readers[replica][connection]
                .clone()
                .watch_operations(request)
                .await
            {
                Ok(response) => break response.into_inner(),
                Err(status) => {
                    assert!(
                        Instant::now() < until,
                        "the reader could not resume: {status:?}"
                    );
                    reading.stream_errors.push(status);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
    }
}

#[derive(Default, Debug)]
struct Figures {
    operations: usize,
    written: usize,
    delivered: usize,
    gaps: usize,
    duplicates: usize,
    reorderings: usize,
    /// Delivered events that differ from ListEvents' or that it does not have.
    mismatches: usize,
    /// Feed positions not above the one before.
    position_regressions: usize,
    /// Acknowledged changes found later in the feed than a change sent after
    /// their acknowledgement.
    out_of_real_time_order: usize,
    slowest_delivery: Duration,
}

/// Writes, reads and checks on the replicas at `endpoints`.
async fn write_read_and_check(endpoints: &[String], label: &str) {
    let operations = env_size("OPSD_FEED_HISTORY_OPERATIONS", 300);
    let producers = env_size("OPSD_FEED_HISTORY_PRODUCERS", 24).max(1);
    let seconds = env_size("OPSD_FEED_HISTORY_SECONDS", 120) as u64;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for endpoint in endpoints {
        let (mut writing, mut reading) = (Vec::new(), Vec::new());
        for _ in 0..CONNECTIONS {
            writing.push(Client::connect(endpoint).await.unwrap());
            reading.push(connect_opsd(endpoint).await);
        }
        clients.push(writing);
        readers.push(reading);
    }
    let writers = Arc::new(Writers {
        clients,
        epoch: started,
        writes: Mutex::new(Vec::new()),
        ids: Mutex::new(Vec::new()),
        refused: AtomicU64::new(0),
        problems: Mutex::new(Vec::new()),
        next: AtomicUsize::new(0),
    });

    // From now: once the call is answered the reader's place is fixed, and
    // every later commit comes after it.
    let first = readers[0][0]
        .clone()
        .watch_operations(pb::WatchOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let reader = tokio::spawn(read(
        readers.clone(),
        first,
        started,
        until + Duration::from_secs(120),
    ));

    let tasks: Vec<_> = (0..producers)
        .map(|_| tokio::spawn(Arc::clone(&writers).produce(operations, until)))
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(seconds + 120), task)
            .await
            .expect("the producers finished")
            .unwrap();
    }
    let wrote = started.elapsed();
    let sentinel = pick(&writers.clients, writers.random_replica())
        .create(NewOperation::new(SENTINEL))
        .await
        .expect("create the sentinel");
    let sentinel_id = sentinel.operation.as_ref().unwrap().id.clone();
    let reading = tokio::time::timeout(Duration::from_secs(180), reader)
        .await
        .expect("the reader reached the sentinel")
        .unwrap();
    let caught_up = started.elapsed() - wrote;

    // The source of truth, once nothing is written any more.
    let mut ids: HashSet<String> = writers.ids.lock().unwrap().iter().cloned().collect();
    ids.insert(sentinel_id.clone());
    let mut problems = std::mem::take(&mut *writers.problems.lock().unwrap());
    for delivered in &reading.delivered {
        if ids.insert(delivered.event.operation_id.clone()) {
            problems.push(format!(
                "the feed delivered an event of {}, which nobody created: {:?}",
                delivered.event.operation_id, delivered.event
            ));
        }
    }
    let truth_client = &readers[readers.len() - 1][0];
    let timelines = list_many_events(truth_client, ids.iter().cloned()).await;
    let mut truth: HashMap<String, Vec<pb::Event>> = HashMap::new();
    for (id, timeline) in timelines {
        match timeline {
            Ok(events) => {
                truth.insert(id, events);
            }
            Err(status) => problems.push(format!("list events of {id}: {status:?}")),
        }
    }
    for id in &ids {
        let Some(events) = truth.get(id) else {
            continue;
        };
        match pick(&writers.clients, 0).get_details(id).await {
            Ok(op) => problems.extend(timeline_problems(&op, events, false)),
            Err(e) => problems.push(format!("get {id}: {e}")),
        }
    }

    let mut figures = Figures {
        operations: ids.len(),
        written: truth.values().map(Vec::len).sum(),
        delivered: reading.delivered.len(),
        ..Default::default()
    };

    // Exactly once, in order, as ListEvents has it.
    let mut seen: HashMap<&str, BTreeMap<i64, usize>> = HashMap::new();
    let mut highest: HashMap<&str, i64> = HashMap::new();
    let mut last_position = 0;
    for (n, delivered) in reading.delivered.iter().enumerate() {
        let event = &delivered.event;
        let id = event.operation_id.as_str();
        if delivered.position <= last_position {
            figures.position_regressions += 1;
            problems.push(format!(
                "message {n} at position {} after position {last_position}",
                delivered.position
            ));
        }
        last_position = last_position.max(delivered.position);
        let times = seen
            .entry(id)
            .or_default()
            .entry(event.sequence)
            .or_insert(0);
        *times += 1;
        if *times > 1 {
            figures.duplicates += 1;
            problems.push(format!("{id} event {} delivered again", event.sequence));
            continue;
        }
        let top = highest.entry(id).or_insert(0);
        if event.sequence < *top {
            figures.reorderings += 1;
            problems.push(format!(
                "{id} event {} delivered after its event {top}",
                event.sequence
            ));
        }
        *top = (*top).max(event.sequence);
        let stored = truth.get(id).and_then(|events| {
            usize::try_from(event.sequence - 1)
                .ok()
                .and_then(|i| events.get(i))
        });
        if stored != Some(event) {
            figures.mismatches += 1;
            problems.push(format!(
                "{id} event {} delivered as {event:?}, stored as {stored:?}",
                event.sequence
            ));
        }
    }
    for (id, events) in &truth {
        for event in events {
            let delivered = seen
                .get(id.as_str())
                .is_some_and(|seen| seen.contains_key(&event.sequence));
            if !delivered {
                figures.gaps += 1;
                problems.push(format!(
                    "{id} event {} never delivered: {event:?}",
                    event.sequence
                ));
            }
        }
    }

    // Every acknowledged change has its event, and the feed has them in
    // real-time order.
    type Change<'a> = (&'a str, Option<(i64, i32)>);
    let positions: HashMap<Change, &Delivered> = reading
        .delivered
        .iter()
        .map(|d| {
            (
                (d.event.operation_id.as_str(), at(d.event.time.as_ref())),
                d,
            )
        })
        .collect();
    let writes = std::mem::take(&mut *writers.writes.lock().unwrap());
    let mut ordered = Vec::new();
    let mut claimed = HashSet::new();
    for write in &writes {
        let event = truth
            .get(&write.id)
            .and_then(|events| events.iter().find(|e| at(e.time.as_ref()) == write.at));
        match (write.makes_event, event) {
            (true, None) => problems.push(format!(
                "{} of {} was acknowledged at {:?} without its event",
                write.what, write.id, write.at
            )),
            (false, Some(event)) => problems.push(format!(
                "{} of {} made an event: {event:?}",
                write.what, write.id
            )),
            (true, Some(event)) => {
                if !claimed.insert((write.id.as_str(), event.sequence)) {
                    problems.push(format!(
                        "two acknowledged writes made {} event {}",
                        write.id, event.sequence
                    ));
                }
                if let Some(delivered) = positions.get(&(write.id.as_str(), write.at)) {
                    ordered.push((write.start, write.end, delivered.position));
                    figures.slowest_delivery = figures
                        .slowest_delivery
                        .max(delivered.received.saturating_sub(write.end));
                }
            }
            (false, None) => {}
        }
    }
    figures.out_of_real_time_order = real_time_violations(&ordered);
    if figures.out_of_real_time_order > 0 {
        problems.push(format!(
            "{} changes sit in the feed before a change acknowledged before they were sent",
            figures.out_of_real_time_order
        ));
    }

    eprintln!(
        "feed history {label}: {} replicas, {} operations, {} writes acknowledged ({} refused), \
         {} events written, {} delivered, {} reconnects ({} to the other replica, {} stream errors), \
         {} gaps, {} duplicates, {} reorderings, {} mismatches, {} position regressions, \
         {} out of real-time order, slowest delivery {:?}, caught up {:?} after the last write, writing {:.1} s, \
         all {:.1} s",
        endpoints.len(),
        figures.operations,
        writes.len(),
        writers.refused.load(Ordering::Relaxed),
        figures.written,
        figures.delivered,
        reading.reconnects,
        reading.switches,
        reading.stream_errors.len(),
        figures.gaps,
        figures.duplicates,
        figures.reorderings,
        figures.mismatches,
        figures.position_regressions,
        figures.out_of_real_time_order,
        figures.slowest_delivery,
        caught_up,
        wrote.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        problems.is_empty(),
        "{} problems, the first ones:\n{}\nstream errors: {:?}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n"),
        reading.stream_errors
    );
    assert_eq!(figures.delivered, figures.written);
    assert!(figures.operations > producers, "too few operations to tell");
    assert!(reading.reconnects > 0, "the reader never resumed");
}

/// How many changes (start, end, position) have an earlier position than a
/// change acknowledged before they were sent.
fn real_time_violations(changes: &[(Duration, Duration, u64)]) -> usize {
    let mut by_end: Vec<_> = changes
        .iter()
        .map(|&(_, end, position)| (end, position))
        .collect();
    by_end.sort_unstable();
    let mut by_start: Vec<_> = changes
        .iter()
        .map(|&(start, _, position)| (start, position))
        .collect();
    by_start.sort_unstable();
    let (mut done, mut highest, mut violations) = (0, 0, 0);
    for (start, position) in by_start {
        while done < by_end.len() && by_end[done].0 < start {
            highest = highest.max(by_end[done].1);
            done += 1;
        }
        violations += usize::from(highest > position);
    }
    violations
}

#[test]
fn real_time_order_is_judged_on_acknowledged_changes_only() {
    let ms = Duration::from_millis;
    // Overlapping changes may commit in either order.
    assert_eq!(
        real_time_violations(&[(ms(0), ms(10), 2), (ms(5), ms(15), 1)]),
        0
    );
    // One acknowledged before the other was sent must come first.
    assert_eq!(
        real_time_violations(&[(ms(0), ms(10), 2), (ms(11), ms(15), 1)]),
        1
    );
    assert_eq!(
        real_time_violations(&[(ms(0), ms(10), 1), (ms(11), ms(15), 2)]),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_delivers_every_event_once_in_order_across_reconnects_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start(dir.path());
    write_read_and_check(std::slice::from_ref(&server.endpoint), "sqlite").await;
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_delivers_every_event_once_in_order_across_two_postgres_replicas() {
    let Some(database) = opsd_testkit::postgres().await else {
        return;
    };
    let a = Process::start_with(&["--store", &database.url]);
    let b = Process::start_with(&["--store", &database.url]);
    write_read_and_check(&[a.endpoint.clone(), b.endpoint.clone()], "postgres").await;
    a.terminate().await;
    b.terminate().await;
}
