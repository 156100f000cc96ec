//! Crash safety: a write storm against a real opsd process, killed with
//! SIGKILL at a random moment, then restarted on the same data; round after
//! round.
//!
//! Producers create operations (with an idempotency key), report progress,
//! cancel and complete them, and write down every answer in a ledger. A write
//! that got no answer (the process died under it) is ambiguous: it may or may
//! not have happened. After each restart every operation stored is read back
//! and must be:
//!
//! - present and unchanged when its last write was acknowledged;
//! - either unchanged or exactly the ambiguous write applied, nothing in
//!   between (no half-written operation);
//! - well formed (done exactly when it has one result, state and cancel
//!   request consistent, never changed before it was created);
//! - known: every stored operation is one the ledger has, or one whose create
//!   was in flight; and retrying that create with its key finds it again.
//!
//! Every change writes its event in the same transaction, so the timelines
//! must agree with the operations after every crash: each stored operation's
//! (read with ListEvents from the restarted server) starts with `created`,
//! numbers its events 1..n, has one event per change (the storm renews no
//! lease) with its last event being its last change, and ends with a
//! completion exactly when it is done ([`timeline_problems`]). And the feed,
//! read from its very beginning, holds exactly the events of the stored
//! operations, each once, in order: no event of an operation that does not
//! exist.
//!
//! On PostgreSQL the rounds take turns killing opsd, the database server (all
//! its processes, SIGKILL, opsd stays up and must recover by itself), or both.
//!
//! Size: `OPSD_CRASH_ROUNDS` rounds per backend (5 by default, 20 for the
//! long run in the README), `OPSD_CRASH_PRODUCERS` concurrent producers (64).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsd_client::{
    CancellationPolicy, Client, ClientError, Completion, NewOperation, OpsdOperation,
};
use opsd_proto::opsd::v1::OperationState;
use opsd_proto::yandex::cloud::operation::operation::Result as WireOutcome;
use rand::Rng;

use crate::feed_history::{connect_opsd, list_many_events, position, timeline_problems};
use crate::history::checker::cloud_view;
use crate::process::Process;
use crate::support::env_size;

/// The storm runs this long (uniformly random) before the kill.
const KILL_AFTER: std::ops::Range<u64> = 100..1500;
/// Connections the producers share (each an HTTP/2 channel).
const CONNECTIONS: usize = 4;
/// Bounds one producer's work in a round, whatever the kill timing.
const MAX_OPERATIONS_PER_PRODUCER: usize = 10_000;

#[derive(Clone, Debug)]
enum Intent {
    Update(opsd_client::Progress),
    Cancel,
    Complete(WireOutcome),
}

struct Tracked {
    /// The last acknowledged state (only its public part after a Cancel,
    /// which answers in the clouds' view).
    acked: OpsdOperation,
    /// A write sent after `acked` that got no answer.
    pending: Option<Intent>,
    policy: CancellationPolicy,
}

#[derive(Default)]
struct Ledger {
    operations: HashMap<String, Tracked>,
    /// Creates sent but not answered, by idempotency key.
    pending_creates: HashMap<String, NewOperation>,
    acknowledged_writes: u64,
}

#[derive(Default, Debug)]
struct Figures {
    rounds: usize,
    acknowledged_writes: u64,
    /// Operations read back and compared with the ledger, summed over the checks.
    operations_checked: usize,
    ambiguous_applied: usize,
    ambiguous_not_applied: usize,
    creates_in_flight_found: usize,
    creates_in_flight_absent: usize,
    /// Timelines read back and held against their operations, summed over the checks.
    timelines_checked: usize,
    /// Events in those timelines.
    events_checked: usize,
    /// Events read from the feed (from its beginning) and matched with them.
    feed_events_checked: usize,
}

fn is_full(op: &OpsdOperation) -> bool {
    op.state != OperationState::Unspecified as i32
}

fn version(op: &OpsdOperation) -> (i64, i32) {
    op.operation
        .as_ref()
        .and_then(|o| o.modified_at.as_ref())
        .map_or((i64::MIN, 0), |t| (t.seconds, t.nanos))
}

fn public_identity(op: &OpsdOperation) -> impl PartialEq + '_ {
    op.operation
        .as_ref()
        .map(|o| (&o.id, &o.description, &o.created_at, &o.created_by))
}

/// `stored` is exactly the acknowledged state (on the fields `acked` carries).
fn unchanged(acked: &OpsdOperation, stored: &OpsdOperation) -> bool {
    if is_full(acked) {
        acked == stored
    } else {
        acked.operation == stored.operation
    }
}

/// `stored` is `acked` with `intent` applied, and nothing else changed.
fn applied(
    acked: &OpsdOperation,
    intent: &Intent,
    policy: CancellationPolicy,
    stored: &OpsdOperation,
) -> bool {
    let (Some(before), Some(after)) = (&acked.operation, &stored.operation) else {
        return false;
    };
    let full = is_full(acked);
    let kept_progress = !full || acked.progress == stored.progress;
    let kept_request = !full || acked.cancel_requested_at == stored.cancel_requested_at;
    let requested_now = stored.cancel_requested_at == after.modified_at;
    let moved_on = version(stored) > version(acked)
        && public_identity(acked) == public_identity(stored)
        && before.metadata == after.metadata
        && !before.done;
    moved_on
        && match intent {
            Intent::Update(progress) => {
                !after.done && stored.progress.as_ref() == Some(progress) && kept_request
            }
            Intent::Cancel => {
                kept_progress
                    && requested_now
                    && match policy {
                        CancellationPolicy::Immediate | CancellationPolicy::Unspecified => {
                            after.done
                                && matches!(&after.result, Some(WireOutcome::Error(s)) if s.code == 1)
                        }
                        CancellationPolicy::Cooperative => {
                            !after.done && stored.state() == OperationState::CancelRequested
                        }
                        CancellationPolicy::NotCancellable => false,
                    }
            }
            Intent::Complete(outcome) => {
                after.done
                    && after.result.as_ref() == Some(outcome)
                    && kept_progress
                    && kept_request
            }
        }
}

/// What every stored operation must be, whatever happened to the process.
fn well_formed(op: &OpsdOperation) -> Result<(), String> {
    let wire = op.operation.as_ref().ok_or("no operation")?;
    if wire.id.len() != 20 {
        return Err(format!("malformed id {:?}", wire.id));
    }
    if wire.done != wire.result.is_some() {
        return Err(format!("done {} with result {:?}", wire.done, wire.result));
    }
    let expected = match (wire.done, op.cancel_requested_at.is_some()) {
        (true, _) => OperationState::Done,
        (false, true) => OperationState::CancelRequested,
        (false, false) => OperationState::Running,
    };
    if op.state() != expected {
        return Err(format!("state {:?}, expected {expected:?}", op.state()));
    }
    let at = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
    if at(&wire.modified_at) < at(&wire.created_at) {
        return Err("modified before it was created".into());
    }
    if !wire.description.starts_with("storm ") {
        return Err(format!("unknown description {:?}", wire.description));
    }
    Ok(())
}

fn struct_of(entries: &[(&str, String)]) -> prost_types::Any {
    let fields = entries
        .iter()
        .map(|(name, value)| {
            (
                (*name).to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(value.clone())),
                },
            )
        })
        .collect();
    opsd_client::pack_struct(&prost_types::Struct { fields })
}

/// Sends one write of an operation, with the ledger knowing it is in flight.
/// Returns false when it got no answer (the producer then stops).
async fn write(
    ledger: &Mutex<Ledger>,
    id: &str,
    intent: Intent,
    call: impl std::future::Future<Output = Result<OpsdOperation, ClientError>>,
) -> bool {
    ledger
        .lock()
        .unwrap()
        .operations
        .get_mut(id)
        .expect("tracked")
        .pending = Some(intent);
    let Ok(op) = call.await else {
        return false;
    };
    let mut ledger = ledger.lock().unwrap();
    let tracked = ledger.operations.get_mut(id).expect("tracked");
    tracked.acked = op;
    tracked.pending = None;
    ledger.acknowledged_writes += 1;
    true
}

/// Creates, updates, cancels and completes operations until told to stop or
/// until a call goes unanswered.
async fn produce(
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    round: usize,
    producer: usize,
    stop: Arc<AtomicBool>,
) {
    for n in 0..MAX_OPERATIONS_PER_PRODUCER {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (policy, updates, ending) = {
            let mut rng = rand::rng();
            let policy = match rng.random_range(0..3) {
                0 => CancellationPolicy::Immediate,
                1 => CancellationPolicy::Cooperative,
                _ => CancellationPolicy::NotCancellable,
            };
            (policy, rng.random_range(0..=3), rng.random_range(0..5))
        };
        let key = format!("storm-r{round}-p{producer}-n{n}");
        let request = NewOperation {
            metadata: Some(struct_of(&[("key", key.clone())])),
            cancellation_policy: policy,
            idempotency_key: Some(key.clone()),
            ..NewOperation::new(format!("storm round {round} producer {producer} #{n}"))
        };
        ledger
            .lock()
            .unwrap()
            .pending_creates
            .insert(key.clone(), request.clone());
        let Ok(op) = client.create(request).await else {
            return;
        };
        let id = op.operation.as_ref().unwrap().id.clone();
        {
            let mut ledger = ledger.lock().unwrap();
            ledger.pending_creates.remove(&key);
            ledger.acknowledged_writes += 1;
            ledger.operations.insert(
                id.clone(),
                Tracked {
                    acked: op,
                    pending: None,
                    policy,
                },
            );
        }
        for step in 1..=updates {
            let progress = opsd_client::Progress {
                work_done: step,
                work_total: 3,
                message: format!("step {step} of {key}"),
                steps: vec![],
            };
            let call = client.update(&id, None, Some(progress.clone()));
            if !write(&ledger, &id, Intent::Update(progress), call).await {
                return;
            }
        }
        // Most end; some stay running, to be found running after the crash.
        if ending == 0 {
            continue;
        }
        if ending == 1 && policy != CancellationPolicy::NotCancellable {
            let call = async { client.cancel(&id).await.map(cloud_view) };
            if !write(&ledger, &id, Intent::Cancel, call).await {
                return;
            }
            if policy == CancellationPolicy::Immediate {
                continue;
            }
        }
        let outcome = if ending % 2 == 0 {
            WireOutcome::Response(struct_of(&[("result", format!("done {key}"))]))
        } else {
            WireOutcome::Error(opsd_proto::RpcStatus {
                code: 9,
                message: format!("failed {key}"),
                details: vec![],
            })
        };
        let completion = match outcome.clone() {
            WireOutcome::Response(any) => Completion::Response(any),
            WireOutcome::Error(status) => Completion::Error(status),
        };
        let call = client.complete(&id, completion);
        if !write(&ledger, &id, Intent::Complete(outcome), call).await {
            return;
        }
    }
}

/// Every stored operation, through List.
pub async fn list_all(client: &Client) -> Result<Vec<OpsdOperation>, ClientError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..100_000 {
        let page = client
            .list(opsd_client::ListOperationsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?;
        all.extend(page.operations);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
    panic!("list did not end");
}

/// Reads back everything and holds it against the ledger; resolves the
/// ambiguous writes to what was found. Returns the problems.
async fn verify(client: &Client, ledger: &mut Ledger, figures: &mut Figures) -> Vec<String> {
    let mut problems = Vec::new();
    let listed = list_all(client).await.expect("list after restart");
    let mut stored: HashMap<String, OpsdOperation> = HashMap::new();
    for op in listed {
        let id = op
            .operation
            .as_ref()
            .map(|o| o.id.clone())
            .unwrap_or_default();
        if let Err(e) = well_formed(&op) {
            problems.push(format!("{id} is malformed: {e}: {op:?}"));
        }
        if stored.insert(id.clone(), op).is_some() {
            problems.push(format!("{id} listed twice"));
        }
    }

    for (id, tracked) in &mut ledger.operations {
        let Some(found) = stored.get(id) else {
            problems.push(format!("acknowledged operation {id} is lost"));
            continue;
        };
        figures.operations_checked += 1;
        match tracked.pending.take() {
            None => {
                if !unchanged(&tracked.acked, found) {
                    problems.push(format!(
                        "{id} changed: acknowledged {:?}, stored {found:?}",
                        tracked.acked
                    ));
                }
            }
            Some(intent) => {
                if unchanged(&tracked.acked, found) {
                    figures.ambiguous_not_applied += 1;
                } else if applied(&tracked.acked, &intent, tracked.policy, found) {
                    figures.ambiguous_applied += 1;
                } else {
                    problems.push(format!(
                        "{id} half-written: acknowledged {:?}, in flight {intent:?}, stored {found:?}",
                        tracked.acked
                    ));
                }
            }
        }
        tracked.acked = found.clone();
    }

    // Operations the ledger does not know must be creates that were in flight,
    // stored exactly as asked and untouched since.
    let in_flight: HashMap<String, String> = ledger
        .pending_creates
        .iter()
        .map(|(key, request)| (request.description.clone(), key.clone()))
        .collect();
    for (id, op) in &stored {
        if ledger.operations.contains_key(id) {
            continue;
        }
        let wire = op.operation.as_ref().unwrap();
        let Some(key) = in_flight.get(&wire.description) else {
            problems.push(format!("{id} was never created by anyone: {op:?}"));
            continue;
        };
        let request = &ledger.pending_creates[key];
        figures.operations_checked += 1;
        let fresh = !wire.done
            && wire.modified_at == wire.created_at
            && op.progress.is_none()
            && op.cancel_requested_at.is_none()
            && wire.metadata == request.metadata
            && op.cancellation_policy() == request.cancellation_policy;
        if !fresh {
            problems.push(format!(
                "{id}, created while the process died, is not as asked: {op:?}"
            ));
        }
        ledger.operations.insert(
            id.clone(),
            Tracked {
                acked: op.clone(),
                pending: None,
                policy: request.cancellation_policy,
            },
        );
    }

    // Retrying an unanswered create with its key finds what it made, if anything.
    for (key, request) in std::mem::take(&mut ledger.pending_creates) {
        let earlier = in_flight_id(&stored, &request.description);
        match client.create(request.clone()).await {
            Ok(op) => {
                let id = op.operation.as_ref().unwrap().id.clone();
                match earlier {
                    Some(earlier) => {
                        figures.creates_in_flight_found += 1;
                        if earlier != id {
                            problems.push(format!(
                                "retrying create {key} made {id} although {earlier} exists"
                            ));
                        }
                    }
                    None => {
                        figures.creates_in_flight_absent += 1;
                        ledger.operations.insert(
                            id,
                            Tracked {
                                acked: op,
                                pending: None,
                                policy: request.cancellation_policy,
                            },
                        );
                    }
                }
            }
            Err(e) => problems.push(format!("retrying create {key} failed: {e}")),
        }
    }

    // Get agrees with List, for a sample and for everything that was in flight.
    let sample: Vec<String> = {
        let mut rng = rand::rng();
        stored
            .keys()
            .filter(|_| rng.random_range(0..20) == 0)
            .cloned()
            .collect()
    };
    for id in sample {
        match client.get_details(&id).await {
            Ok(op) if op == stored[&id] => {}
            other => problems.push(format!("get {id} disagrees with list: {other:?}")),
        }
    }
    problems
}

/// How a round ends on PostgreSQL.
#[derive(Clone, Copy, Debug)]
enum Kill {
    Opsd,
    Database,
    Both,
}

fn in_flight_id(stored: &HashMap<String, OpsdOperation>, description: &str) -> Option<String> {
    stored
        .iter()
        .find(|(_, op)| op.operation.as_ref().unwrap().description == description)
        .map(|(id, _)| id.clone())
}

/// Runs the storm against `endpoint` until a random moment, then calls
/// `kill` (with the producers' calls in flight) and waits for the producers
/// to notice. Returns how long the storm ran.
async fn storm(
    endpoint: &str,
    ledger: &Arc<Mutex<Ledger>>,
    round: usize,
    kill: impl FnOnce(),
) -> Duration {
    let producers = env_size("OPSD_CRASH_PRODUCERS", 64);
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(Client::connect(endpoint).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..producers)
        .map(|producer| {
            tokio::spawn(produce(
                clients[producer % CONNECTIONS].clone(),
                Arc::clone(ledger),
                round,
                producer,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let after = Duration::from_millis(rand::rng().random_range(KILL_AFTER));
    tokio::time::sleep(after).await;
    tokio::task::block_in_place(kill);
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a producer noticed the kill within 60 s")
            .unwrap();
    }
    after
}

fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until `client` can read again (after a restart of the database).
async fn until_serving(client: &Client) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        match client.list(Default::default()).await {
            Ok(_) => return started.elapsed(),
            Err(e) => {
                assert!(Instant::now() < deadline, "opsd did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn report(backend: &str, figures: &Figures, ledger: &Ledger, elapsed: Duration) {
    eprintln!(
        "crash {backend}: {} rounds survived, {} acknowledged writes, {} operations stored, \
         {} operation checks, ambiguous writes {} applied / {} not, creates in flight {} stored / {} not, \
         {} timeline checks ({} events, {} in the feed), {:.1} s",
        figures.rounds,
        figures.acknowledged_writes,
        ledger.operations.len(),
        figures.operations_checked,
        figures.ambiguous_applied,
        figures.ambiguous_not_applied,
        figures.creates_in_flight_found,
        figures.creates_in_flight_absent,
        figures.timelines_checked,
        figures.events_checked,
        figures.feed_events_checked,
        elapsed.as_secs_f64()
    );
}

/// Holds every timeline against its operation, and the whole feed against
/// the timelines; returns the problems. Runs after [`verify`], once the
/// ledger knows every stored operation. A sentinel operation created first
/// marks the feed's end (it is tracked like any other from then on).
async fn verify_timelines(
    client: &Client,
    endpoint: &str,
    ledger: &mut Ledger,
    round: usize,
    figures: &mut Figures,
) -> Vec<String> {
    let mut problems = Vec::new();
    let sentinel = client
        .create(NewOperation::new(format!(
            "storm sentinel after round {round}"
        )))
        .await
        .expect("create the sentinel");
    let sentinel_id = sentinel.operation.as_ref().unwrap().id.clone();
    ledger.operations.insert(
        sentinel_id.clone(),
        Tracked {
            acked: sentinel,
            pending: None,
            policy: CancellationPolicy::default(),
        },
    );

    let stored: HashMap<String, OpsdOperation> = list_all(client)
        .await
        .expect("list after restart")
        .into_iter()
        .map(|op| (op.operation.as_ref().unwrap().id.clone(), op))
        .collect();
    let opsd = connect_opsd(endpoint).await;
    let ids: std::collections::BTreeSet<String> = stored
        .keys()
        .chain(ledger.operations.keys())
        .cloned()
        .collect();
    let mut timelines: HashMap<String, Vec<opsd_proto::opsd::v1::Event>> = HashMap::new();
    for (id, timeline) in list_many_events(&opsd, ids).await {
        match (stored.get(&id), timeline) {
            (Some(op), Ok(events)) => {
                problems.extend(timeline_problems(op, &events, true));
                figures.timelines_checked += 1;
                figures.events_checked += events.len();
                timelines.insert(id, events);
            }
            (Some(_), Err(status)) => problems.push(format!("list events of {id}: {status:?}")),
            // Lost (reported by `verify`): it must have no timeline either.
            (None, Err(status)) if status.code() == tonic::Code::NotFound => {}
            (None, other) => problems.push(format!(
                "{id} is not stored, but list events answers {other:?}"
            )),
        }
    }

    // The feed from its beginning to the sentinel: exactly these events.
    let mut feed = opsd
        .clone()
        .watch_operations(opsd_proto::opsd::v1::WatchOperationsRequest {
            resume_token: opsd_core::event::encode_resume_token(0),
            ..Default::default()
        })
        .await
        .expect("follow the feed from its beginning")
        .into_inner();
    let mut found: HashMap<(String, i64), usize> = HashMap::new();
    let mut last_position = 0;
    for _ in 0..10_000_000 {
        let message = tokio::time::timeout(Duration::from_secs(60), feed.message())
            .await
            .expect("the feed reached the sentinel within 60 s")
            .expect("the feed did not fail")
            .expect("the feed did not end");
        // The opening bookmark carries only the starting position.
        let Some(event) = message.event else {
            continue;
        };
        let at = position(&message.resume_token);
        if at <= last_position {
            problems.push(format!("feed position {at} after {last_position}"));
        }
        last_position = at;
        figures.feed_events_checked += 1;
        let id = event.operation_id.clone();
        let stored_event = timelines
            .get(&id)
            .and_then(|events| events.get(usize::try_from(event.sequence - 1).ok()?));
        if !stored.contains_key(&id) {
            problems.push(format!(
                "the feed has an event of {id}, which does not exist: {event:?}"
            ));
        } else if stored_event != Some(&event) {
            problems.push(format!(
                "the feed has {id} event {} as {event:?}, its timeline as {stored_event:?}",
                event.sequence
            ));
        }
        let times = found.entry((id.clone(), event.sequence)).or_default();
        *times += 1;
        if *times > 1 {
            problems.push(format!("the feed has {id} event {} twice", event.sequence));
        }
        if id == sentinel_id {
            break;
        }
    }
    for (id, events) in &timelines {
        for event in events {
            if !found.contains_key(&(id.clone(), event.sequence)) {
                problems.push(format!(
                    "{id} event {} is not in the feed: {event:?}",
                    event.sequence
                ));
            }
        }
    }
    problems
}

/// Waits until no opsd session is left in the database (opsd names its
/// connections `opsd`).
async fn until_sessions_end(admin_url: &str) {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sessions: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'opsd'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if sessions == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sessions} sessions of a killed opsd outlived it by 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    let _ = connection.await;
}

/// Checks the ledger through `client`, counting the round when all is well.
async fn check_round(
    backend: &str,
    round: usize,
    client: &Client,
    server: &Process,
    ledger: &Mutex<Ledger>,
    figures: &mut Figures,
) {
    // The producers are done: the ledger is ours until the next storm.
    let mut taken = std::mem::take(&mut *ledger.lock().unwrap());
    figures.acknowledged_writes = taken.acknowledged_writes;
    let mut problems = verify(client, &mut taken, figures).await;
    problems.extend(verify_timelines(client, &server.endpoint, &mut taken, round, figures).await);
    *ledger.lock().unwrap() = taken;
    assert!(
        problems.is_empty(),
        "{backend} round {round}: {} problems, the first ones:\n{}\nopsd log:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n"),
        server.log_tail()
    );
    figures.rounds += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_in_a_write_storm_on_sqlite() {
    let rounds = env_size("OPSD_CRASH_ROUNDS", 5);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut figures = Figures::default();
    let mut server = Process::start(dir.path());
    for round in 0..rounds {
        let pid = server.pid();
        let after = storm(&server.endpoint, &ledger, round, || sigkill(pid)).await;
        drop(server);
        server = Process::start(dir.path());
        let client = Client::connect(&server.endpoint).await.unwrap();
        check_round("sqlite", round, &client, &server, &ledger, &mut figures).await;
        eprintln!("crash sqlite round {round}: opsd killed {after:?} into the storm");
    }
    report(
        "sqlite",
        &figures,
        &ledger.lock().unwrap(),
        started.elapsed(),
    );
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_opsd_and_postgres_in_a_write_storm() {
    let Some(cluster) = opsd_testkit::dedicated_cluster() else {
        return;
    };
    let rounds = env_size("OPSD_CRASH_ROUNDS", 5);
    let started = Instant::now();
    let url = cluster.admin_url.clone();
    let start = || Process::start_with(&["--store", &url, "--store-timeout", "2s"]);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut figures = Figures::default();
    let mut server = start();
    for round in 0..rounds {
        let kill = [Kill::Opsd, Kill::Database, Kill::Both][round % 3];
        let pid = server.pid();
        let after = storm(&server.endpoint, &ledger, round, || match kill {
            Kill::Opsd => sigkill(pid),
            Kill::Database => cluster.kill_9(),
            Kill::Both => {
                sigkill(pid);
                cluster.kill_9();
            }
        })
        .await;
        if matches!(kill, Kill::Database | Kill::Both) {
            tokio::task::block_in_place(|| cluster.start());
        }
        if matches!(kill, Kill::Opsd) {
            // A statement the dead process sent may still be running in the
            // database and commit later: such a write is one of the ambiguous
            // ones, and the check must come after it settled.
            until_sessions_end(&url).await;
        }
        let recovered = if matches!(kill, Kill::Database) {
            // opsd stayed up through the database's crash and serves again by itself.
            assert!(server.is_running(), "opsd died with its database");
            let client = Client::connect(&server.endpoint).await.unwrap();
            until_serving(&client).await
        } else {
            drop(server);
            server = start();
            Duration::ZERO
        };
        let client = Client::connect(&server.endpoint).await.unwrap();
        check_round("postgres", round, &client, &server, &ledger, &mut figures).await;
        eprintln!(
            "crash postgres round {round}: {kill:?} killed {after:?} into the storm, serving again after {recovered:?}"
        );
    }
    report(
        "postgres",
        &figures,
        &ledger.lock().unwrap(),
        started.elapsed(),
    );
    server.terminate().await;
}
