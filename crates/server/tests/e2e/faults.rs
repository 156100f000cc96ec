//! Faults and outages: storage that fails, hangs or fills up, and a database
//! that goes away under load. What must hold: callers get UNAVAILABLE
//! (retryable) in bounded time, never INTERNAL for an outage and never a
//! hang; deadlines are kept; nothing acknowledged is lost; service resumes by
//! itself when storage does.
//!
//! Most tests run the real SQLite store behind [`FaultyStore`], a decorator
//! that injects latency and errors into the real calls; the outage and freeze
//! tests stop a real PostgreSQL server under a real opsd process; the
//! full-disk test fills a small filesystem under a real opsd process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opsd_client::{CancellationPolicy, Client, ClientError, Completion, NewOperation};
use opsd_core::SystemClock;
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::faults::{Call, Calls, Fault, Faults, FaultyStore};
use opsd_store::{OperationStore, SqliteOptions, SqliteStore, StoreError};
use tonic::Code;

use crate::history::checker::{self, Answer, Event};
use crate::process::Process;
use crate::support::{Listening, env_size};

/// An in-process server whose SQLite store suffers the injected faults.
struct Faulty {
    faults: Arc<Faults>,
    address: SocketAddr,
    client: Client,
    listening: Listening,
    store: Arc<dyn OperationStore>,
    _dir: tempfile::TempDir,
}

impl Faulty {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn OperationStore> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap());
        let faults = Faults::new();
        let service = Arc::new(OperationService::new(
            Arc::new(FaultyStore::new(Arc::clone(&store), Arc::clone(&faults))),
            Arc::new(SystemClock),
            ServiceConfig::default(),
        ));
        let listening = Listening::start(service, Default::default()).await;
        let address = listening.address;
        Self {
            faults,
            address,
            client: Client::connect(&address.to_string()).await.unwrap(),
            listening,
            store,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        self.listening.stop().await;
        self.store.close().await.unwrap();
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    match result {
        Err(ClientError::Rpc(status)) => status.code(),
        other => panic!("expected an rpc error, got {other:?}"),
    }
}

fn response(name: &str) -> Completion {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "name".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(name.to_owned())),
        },
    );
    Completion::Response(opsd_client::pack_struct(&prost_types::Struct { fields }))
}

async fn create(client: &Client, new: NewOperation) -> opsd_client::OpsdOperation {
    client.create(new).await.unwrap()
}

fn id_of(op: &opsd_client::OpsdOperation) -> String {
    op.operation.as_ref().unwrap().id.clone()
}

/// Every RPC that touches the store, with the code it answered.
async fn every_call(server: &Faulty, id: &str) -> Vec<(&'static str, Code)> {
    let c = &server.client;
    let mut watch = c.watch(id).await;
    let watched = match &mut watch {
        Ok(stream) => stream.message().await.map(|_| ()).map_err(ClientError::Rpc),
        Err(_) => watch.map(|_| ()),
    };
    vec![
        ("cloud get", code_or_ok(c.get(id).await)),
        ("cloud cancel", code_or_ok(c.cancel(id).await)),
        ("get", code_or_ok(c.get_details(id).await)),
        ("list", code_or_ok(c.list(Default::default()).await)),
        (
            "wait",
            code_or_ok(c.wait(id, Some(Duration::from_millis(10))).await),
        ),
        ("watch", code_or_ok(watched)),
        ("create", code_or_ok(c.create(NewOperation::new("x")).await)),
        (
            "update",
            code_or_ok(
                c.update(
                    id,
                    None,
                    Some(opsd_client::Progress {
                        work_done: 1,
                        ..Default::default()
                    }),
                )
                .await,
            ),
        ),
        ("heartbeat", code_or_ok(c.heartbeat(id, None).await)),
        ("complete", code_or_ok(c.complete(id, response("x")).await)),
    ]
}

fn code_or_ok<T>(result: Result<T, ClientError>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(ClientError::Rpc(status)) => status.code(),
        Err(other) => panic!("transport failure: {other}"),
    }
}

/// Storage errors reach callers as UNAVAILABLE on every call, over gRPC and
/// REST (503); corruption is INTERNAL; and the first call after the storage
/// recovers succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_answer_unavailable_on_every_call_and_service_resumes_at_once() {
    let server = Faulty::start().await;
    let op = create(
        &server.client,
        NewOperation {
            cancellation_policy: CancellationPolicy::Cooperative,
            ..NewOperation::new("x")
        },
    )
    .await;
    let id = id_of(&op);
    let http = reqwest::Client::new();
    let rest = format!("http://{}/operations/{id}", server.address);

    for error in [
        StoreError::Unavailable("injected: connection refused".into()),
        StoreError::Closed,
    ] {
        server
            .faults
            .inject(Calls::All, Fault::FailBefore(error.clone()));
        for (call, answered) in every_call(&server, &id).await {
            assert_eq!(answered, Code::Unavailable, "{call} with {error:?}");
        }
        let answer = http.get(&rest).send().await.unwrap();
        assert_eq!(answer.status(), 503, "REST get with {error:?}");
        server.faults.clear();
    }

    // Unreadable stored data is a bug to surface, not an outage to retry.
    server.faults.inject(
        Calls::Only(Call::Get),
        Fault::FailBefore(StoreError::Corrupt("injected".into())),
    );
    assert_eq!(code(server.client.get(&id).await), Code::Internal);
    assert_eq!(http.get(&rest).send().await.unwrap().status(), 500);
    server.faults.clear();

    // Recovered: everything works again at the first try.
    let answered = every_call(&server, &id).await;
    assert!(
        answered.iter().all(|(_, code)| *code == Code::Ok),
        "{answered:?}"
    );
    assert!(server.faults.injected() > 20);
    server.stop().await;
}

/// A store that hangs does not hang callers past their deadline (the
/// grpc-timeout header), and does not hold up calls that do not need it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_kept_when_the_store_hangs() {
    const DEADLINE: Duration = Duration::from_millis(300);
    const SLACK: Duration = Duration::from_millis(700);
    let server = Faulty::start().await;
    let op = create(&server.client, NewOperation::new("x")).await;
    let id = id_of(&op);
    // A client that sends its deadline but does not give up by itself (tonic's
    // and grpc-core's channels would): the answer at the deadline is opsd's.
    let raw = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, tonic::body::Body>(hyper_util::client::legacy::connect::HttpConnector::new());
    let origin: http::Uri = format!("http://{}", server.address).parse().unwrap();
    let mut cloud = ycop::operation_service_client::OperationServiceClient::with_origin(
        raw.clone(),
        origin.clone(),
    );
    let mut opsd = pb::operation_service_client::OperationServiceClient::with_origin(
        raw.clone(),
        origin.clone(),
    );
    let mut producer = pb::producer_service_client::ProducerServiceClient::with_origin(raw, origin);
    fn with_deadline<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(DEADLINE);
        request
    }

    server.faults.inject(
        Calls::Only(Call::Get),
        Fault::Latency(Duration::from_secs(60)),
    );
    server
        .faults
        .inject(Calls::Writes, Fault::Latency(Duration::from_secs(60)));
    let slowest = std::cell::Cell::new(Duration::ZERO);
    let timed = |started: Instant, what: &str, result: Code| {
        assert_eq!(result, Code::DeadlineExceeded, "{what}");
        let took = started.elapsed();
        assert!(took < DEADLINE + SLACK, "{what} took {took:?}");
        slowest.set(slowest.get().max(took));
    };
    let started = Instant::now();
    let got = cloud
        .get(with_deadline(ycop::GetOperationRequest {
            operation_id: id.clone(),
        }))
        .await;
    timed(started, "cloud get", got.unwrap_err().code());
    let started = Instant::now();
    let waited = opsd
        .wait(with_deadline(pb::WaitOperationRequest {
            operation_id: id.clone(),
            timeout: None,
        }))
        .await;
    timed(started, "wait", waited.unwrap_err().code());
    let started = Instant::now();
    let created = producer
        .create(with_deadline(pb::CreateOperationRequest {
            description: "slow".into(),
            ..Default::default()
        }))
        .await;
    timed(started, "create", created.unwrap_err().code());

    // Calls the hang does not touch are answered meanwhile.
    let started = Instant::now();
    let listed = opsd
        .list(with_deadline(pb::ListOperationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.operations.len(), 1, "the slow create was abandoned");
    assert!(started.elapsed() < DEADLINE);

    server.faults.clear();
    let got = cloud
        .get(with_deadline(ycop::GetOperationRequest {
            operation_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, id);
    eprintln!(
        "deadlines: store calls hung 60 s; Get, Wait and Create with a {DEADLINE:?} deadline \
         answered DEADLINE_EXCEEDED, the slowest in {:?}",
        slowest.get()
    );
    server.stop().await;
}

/// A write whose answer was lost (the store applied it, the caller heard
/// UNAVAILABLE) is safe to retry: the same completion is a no-op success,
/// the same create with its key returns the same operation, and waiters hear
/// of the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_answer_was_lost_are_safe_to_retry() {
    let server = Faulty::start().await;
    let lost = || Fault::FailAfter(StoreError::Unavailable("injected: answer lost".into()));
    let keyed = NewOperation {
        idempotency_key: Some("retry-me".into()),
        ..NewOperation::new("keyed")
    };

    server
        .faults
        .inject_times(Calls::Only(Call::Insert), lost(), 1);
    assert_eq!(
        code(server.client.create(keyed.clone()).await),
        Code::Unavailable
    );
    let op = create(&server.client, keyed.clone()).await;
    let again = create(&server.client, keyed).await;
    assert_eq!(op, again);
    let listed = server.client.list(Default::default()).await.unwrap();
    assert_eq!(
        listed.operations,
        vec![op.clone()],
        "one operation, not two"
    );

    let id = id_of(&op);
    let waiter = {
        let (client, id) = (server.client.clone(), id.clone());
        tokio::spawn(async move { client.wait(&id, Some(Duration::from_secs(30))).await })
    };
    server
        .faults
        .inject_times(Calls::Only(Call::CompareAndSwap), lost(), 1);
    assert_eq!(
        code(server.client.complete(&id, response("first")).await),
        Code::Unavailable
    );
    let done = server
        .client
        .complete(&id, response("first"))
        .await
        .unwrap();
    assert!(done.operation.as_ref().unwrap().done);
    assert_eq!(
        code(server.client.complete(&id, response("second")).await),
        Code::FailedPrecondition
    );
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter heard of the completion")
        .unwrap()
        .unwrap();
    assert_eq!(waited, done);
    server.stop().await;
}

/// Watchers miss nothing while the store cannot be read: when reads come
/// back, a completion made meanwhile reaches them within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_catch_up_within_2_s_once_reads_recover() {
    let outage = Duration::from_secs(env_size("OPSD_OUTAGE_SECS", 3) as u64);
    let server = Faulty::start().await;
    let op = create(&server.client, NewOperation::new("x")).await;
    let id = id_of(&op);
    let mut watch = server.client.watch(&id).await.unwrap();
    watch.message().await.unwrap().unwrap();

    server.faults.inject(
        Calls::Reads,
        Fault::FailBefore(StoreError::Unavailable("injected: reads down".into())),
    );
    // Completed by another writer (as another replica would), straight in the store.
    let operation_id = opsd_core::OperationId::parse("id", &id).unwrap();
    let current = server.store.get(&operation_id).await.unwrap().unwrap();
    let outcome = opsd_core::Outcome::Response(opsd_core::Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: vec![],
    });
    let opsd_core::Transition::Changed(next, kind) = current
        .complete(outcome, opsd_core::Clock::now(&SystemClock))
        .unwrap()
    else {
        panic!("a running operation completes");
    };
    let event = kind.map(|kind| opsd_core::NewEvent::of(kind, &next, "anonymous"));
    server
        .store
        .compare_and_swap(&next, event.as_ref())
        .await
        .unwrap();
    let missed = tokio::time::timeout(outage, watch.message()).await;
    assert!(missed.is_err(), "nothing can be read, so nothing is told");
    server.faults.clear();
    let recovered = Instant::now();
    let told = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watcher heard of the completion")
        .unwrap()
        .unwrap();
    let recovery = recovered.elapsed();
    eprintln!("reads down {outage:?}: the watcher was told {recovery:?} after they recovered");
    assert_eq!(told, server.client.get_details(&id).await.unwrap());
    assert!(told.operation.as_ref().unwrap().done);
    assert!(
        recovery < Duration::from_secs(2),
        "told {recovery:?} after the reads recovered"
    );
    server.stop().await;
}

/// Random failures (before and after the write), latency and racing
/// cancels under concurrent load: callers retry what failed, and the
/// history is still one outcome per operation, each acknowledged.
/// `OPSD_FAULT_OPERATIONS` operations (300 by default, 2000 in the long run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_store_faults_under_load_leave_consistent_histories() {
    let operations = env_size("OPSD_FAULT_OPERATIONS", 300);
    let server = Faulty::start().await;
    let unavailable = || StoreError::Unavailable("injected".into());
    server
        .faults
        .inject_sometimes(Calls::All, Fault::FailBefore(unavailable()), 0.1);
    server
        .faults
        .inject_sometimes(Calls::Writes, Fault::FailAfter(unavailable()), 0.1);
    server
        .faults
        .inject_sometimes(Calls::All, Fault::Latency(Duration::from_millis(5)), 0.2);
    let epoch = Instant::now();
    let events = Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
    let record = {
        let events = Arc::clone(&events);
        move |id: &str, call: checker::Call, start: Duration, answer: Answer| {
            events.lock().unwrap().push(Event {
                operation: id.to_owned(),
                call,
                replica: 0,
                start,
                end: epoch.elapsed(),
                answer,
            })
        }
    };
    let tasks: Vec<_> = (0..operations)
        .map(|n| {
            let (client, record) = (server.client.clone(), record.clone());
            tokio::spawn(async move {
                // Retried until answered: the key makes retries one operation.
                let new = NewOperation {
                    idempotency_key: Some(format!("op-{n}")),
                    cancellation_policy: if n % 2 == 0 {
                        CancellationPolicy::Immediate
                    } else {
                        CancellationPolicy::Cooperative
                    },
                    ..NewOperation::new(format!("op {n}"))
                };
                let op = loop {
                    match client.create(new.clone()).await {
                        Ok(op) => break op,
                        Err(e) => assert_eq!(code::<()>(Err(e)), Code::Unavailable),
                    }
                };
                let id = id_of(&op);
                record(
                    &id,
                    checker::Call::Create,
                    Duration::ZERO,
                    Answer::State(Box::new(op)),
                );
                let wanted = match response(&format!("op {n}")) {
                    Completion::Response(any) => any,
                    _ => unreachable!(),
                };
                let complete = async {
                    for _ in 0..100 {
                        let start = epoch.elapsed();
                        let result = client
                            .complete(&id, Completion::Response(wanted.clone()))
                            .await;
                        let answered = super_answer(result);
                        let retry = answered == Answer::Failed(Code::Unavailable);
                        record(
                            &id,
                            checker::Call::Complete(
                                opsd_proto::yandex::cloud::operation::operation::Result::Response(
                                    wanted.clone(),
                                ),
                            ),
                            start,
                            answered,
                        );
                        if !retry {
                            return;
                        }
                    }
                    panic!("a completion failed 100 times in a row");
                };
                let cancel = async {
                    for _ in 0..100 {
                        let start = epoch.elapsed();
                        let answered =
                            super_answer(client.cancel(&id).await.map(checker::cloud_view));
                        let retry = answered == Answer::Failed(Code::Unavailable);
                        record(&id, checker::Call::Cancel, start, answered);
                        if !retry {
                            return;
                        }
                    }
                    panic!("a cancel failed 100 times in a row");
                };
                let read = async {
                    let start = epoch.elapsed();
                    let answered = super_answer(client.get_details(&id).await);
                    record(&id, checker::Call::Get, start, answered);
                };
                tokio::join!(complete, cancel, read);
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("every operation settles within 2 minutes")
            .unwrap();
    }
    server.faults.clear();
    let injected = server.faults.injected();

    // Afterwards: each operation done, once, as the history says.
    let listed = crate::crash::list_all(&server.client).await.unwrap();
    assert_eq!(
        listed.len(),
        operations,
        "retried creates made no duplicates"
    );
    for op in listed {
        let start = epoch.elapsed();
        assert!(op.operation.as_ref().unwrap().done, "{op:?}");
        record(
            &id_of(&op),
            checker::Call::Get,
            start,
            Answer::State(Box::new(op)),
        );
    }
    let events = std::mem::take(&mut *events.lock().unwrap());
    let report = checker::check(&events, &[Code::Unavailable]);
    eprintln!(
        "faults: {} operations, {} calls checked, {} faults injected, {} contested, {} violations",
        report.operations,
        report.events,
        injected,
        report.contested,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "{}",
        report.violations[..report.violations.len().min(20)].join("\n")
    );
    assert!(injected > operations as u64, "faults were injected");
    server.stop().await;
}

fn super_answer(result: Result<opsd_client::OpsdOperation, ClientError>) -> Answer {
    match result {
        Ok(op) => Answer::State(Box::new(op)),
        Err(ClientError::Rpc(status)) => Answer::Failed(status.code()),
        Err(other) => panic!("transport failure: {other}"),
    }
}

/// PostgreSQL goes away under load for `OPSD_OUTAGE_SECS` (3 s by default,
/// 10 s in the long run): opsd stays up, answers UNAVAILABLE in bounded time
/// (never INTERNAL, never a hang), serves writes and wakes watchers again
/// within 2 s of the database's return without a restart, and loses nothing
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_unavailable_and_recovers_within_2_s() {
    const PRODUCERS: usize = 16;
    const STORE_TIMEOUT: Duration = Duration::from_secs(2);
    let outage = Duration::from_secs(env_size("OPSD_OUTAGE_SECS", 3) as u64);
    let Some(cluster) = opsd_testkit::dedicated_cluster() else {
        return;
    };
    let url = cluster.admin_url.clone();
    let mut server = Process::start_with(&["--store", &url, "--store-timeout", "2s"]);
    let client = Client::connect(&server.endpoint).await.unwrap();

    let mut acknowledged = Vec::new();
    for _ in 0..20 {
        acknowledged.push(create(&client, NewOperation::new("before")).await);
    }
    // Watched through the outage, completed after it.
    let watched = create(&client, NewOperation::new("watched")).await;
    let mut watch = client.watch(&id_of(&watched)).await.unwrap();
    watch.message().await.unwrap().unwrap();

    // Producers create and complete through the whole outage (bounded in count).
    let running = Arc::new(AtomicBool::new(true));
    let load: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (client, running) = (client.clone(), Arc::clone(&running));
            tokio::spawn(async move {
                let (mut acked, mut unavailable, mut slowest) = (Vec::new(), 0, Duration::ZERO);
                for _ in 0..5_000 {
                    if !running.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = Instant::now();
                    let result = match client.create(NewOperation::new("under load")).await {
                        Ok(op) => client
                            .complete(&id_of(&op), response("under load"))
                            .await
                            .map(|done| acked.push(done)),
                        Err(e) => Err(e),
                    };
                    slowest = slowest.max(started.elapsed());
                    match result {
                        Ok(()) => {}
                        Err(ClientError::Rpc(s)) if s.code() == Code::Unavailable => {
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(other) => panic!("only UNAVAILABLE is acceptable, got {other:?}"),
                    }
                }
                (acked, unavailable, slowest)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| cluster.stop());
    let down = Instant::now();

    // Down: every call ends in bounded time with UNAVAILABLE.
    for op in acknowledged.iter().take(5) {
        let started = Instant::now();
        assert_eq!(code(client.get(&id_of(op)).await), Code::Unavailable);
        assert!(started.elapsed() < STORE_TIMEOUT + Duration::from_secs(1));
    }
    assert_eq!(
        code(client.create(NewOperation::new("x")).await),
        Code::Unavailable
    );
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    assert!(server.is_running(), "opsd stays up through the outage");

    tokio::task::block_in_place(|| cluster.start());
    let up = Instant::now();

    // Up again: writes succeed within 2 s, without a restart of opsd.
    let write_recovered = loop {
        match client.create(NewOperation::new("after the outage")).await {
            Ok(op) => {
                acknowledged.push(op);
                break up.elapsed();
            }
            Err(ClientError::Rpc(status)) if status.code() == Code::Unavailable => {
                assert!(
                    up.elapsed() < Duration::from_secs(30),
                    "opsd did not recover"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    };
    // …and the watcher's notification connection is back: it hears a completion.
    let done = loop {
        match client.complete(&id_of(&watched), response("after")).await {
            Ok(done) => break done,
            Err(e) => {
                assert_eq!(code::<()>(Err(e)), Code::Unavailable);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let told = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.message().await.unwrap() {
                Some(op) if op.operation.as_ref().unwrap().done => return op,
                Some(_) => {}
                None => panic!("the watch ended before done"),
            }
        }
    })
    .await
    .expect("the watcher heard of the completion");
    let watch_recovered = up.elapsed();
    assert_eq!(told, done);

    // The load goes on a while after the outage, then stops.
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::SeqCst);
    let (mut refused, mut slowest) = (0, Duration::ZERO);
    for task in load {
        let (acked, unavailable, slow) = task.await.unwrap();
        acknowledged.extend(acked);
        refused += unavailable;
        slowest = slowest.max(slow);
    }
    let mut lost = 0;
    for op in &acknowledged {
        if client.get_details(&id_of(op)).await.unwrap() != *op {
            lost += 1;
        }
    }
    eprintln!(
        "outage: {:?} down, {} calls refused with UNAVAILABLE, slowest call {:?}, \
         writes back {:?} and watchers {:?} after the database, {} acknowledged checked, {} lost",
        outage,
        refused,
        slowest,
        write_recovered,
        watch_recovered,
        acknowledged.len(),
        lost
    );
    assert!(refused > 0, "the load saw the outage");
    assert_eq!(lost, 0, "acknowledged operations changed or lost");
    assert!(
        slowest < 2 * STORE_TIMEOUT + Duration::from_secs(1),
        "a call took {slowest:?}"
    );
    assert!(
        write_recovered < Duration::from_secs(2),
        "{write_recovered:?}"
    );
    assert!(
        watch_recovered < Duration::from_secs(2),
        "{watch_recovered:?}"
    );
    server.terminate().await;
}

/// The database stops answering without closing anything (SIGSTOP: a hung
/// machine, a network that drops packets): calls answer UNAVAILABLE within
/// the store timeout instead of hanging, and service resumes when it thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_answers_unavailable_within_the_store_timeout() {
    const STORE_TIMEOUT: Duration = Duration::from_secs(1);
    let Some(cluster) = opsd_testkit::dedicated_cluster() else {
        return;
    };
    let url = cluster.admin_url.clone();
    let server = Process::start_with(&["--store", &url, "--store-timeout", "1s"]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    let op = create(&client, NewOperation::new("before")).await;
    let id = id_of(&op);

    cluster.freeze();
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(code(client.get_details(&id).await), Code::Unavailable);
        slowest = slowest.max(started.elapsed());
        let started = Instant::now();
        let create = client.create(NewOperation::new("frozen")).await;
        assert_eq!(code(create), Code::Unavailable);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < STORE_TIMEOUT + Duration::from_secs(1),
        "a call took {slowest:?}"
    );
    cluster.thaw();
    let thawed = Instant::now();
    loop {
        match client.get_details(&id).await {
            Ok(got) => {
                assert_eq!(got, op);
                break;
            }
            Err(e) => {
                assert_eq!(code::<()>(Err(e)), Code::Unavailable);
                assert!(thawed.elapsed() < Duration::from_secs(10), "no recovery");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let recovered = thawed.elapsed();
    create(&client, NewOperation::new("after")).await;
    eprintln!(
        "frozen database: 6 calls answered UNAVAILABLE, the slowest in {slowest:?} \
         (store timeout {STORE_TIMEOUT:?}), served again {recovered:?} after the thaw"
    );
    server.terminate().await;
}

/// A small tmpfs the test mounts (and unmounts when dropped).
struct SmallFilesystem {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFilesystem {
    /// `Err` with the reason when this machine does not let us mount.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("small");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Self { path, _dir: dir })
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills `path`'s filesystem with a file until it refuses more.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0;
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0xa5u8; chunk];
        while file.write_all(&block).is_ok() && file.sync_all().is_ok() {
            written += chunk as u64;
        }
    }
    written
}

fn big_metadata(n: usize) -> prost_types::Any {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "ballast".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(format!(
                "{n:08}{}",
                "x".repeat(16 * 1024)
            ))),
        },
    );
    opsd_client::pack_struct(&prost_types::Struct { fields })
}

/// Creates operations (with big metadata) from 8 concurrent writers, so
/// that commits carry several writes, until writes keep failing; every
/// failure must be UNAVAILABLE. Returns what was acknowledged and how many
/// writes were refused.
async fn write_until_full(client: &Client) -> (Vec<opsd_client::OpsdOperation>, usize) {
    const WRITERS: usize = 8;
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (client, refused) = (client.clone(), Arc::clone(&refused));
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in (writer..20_000).step_by(WRITERS) {
                    if refused.load(Ordering::SeqCst) >= 20 {
                        break;
                    }
                    let new = NewOperation {
                        metadata: Some(big_metadata(n)),
                        ..NewOperation::new(format!("filling {n}"))
                    };
                    match client.create(new).await {
                        // After a refusal, a checkpoint may have freed room: fine.
                        Ok(op) => acknowledged.push(op),
                        Err(e) => {
                            assert_eq!(
                                code::<()>(Err(e)),
                                Code::Unavailable,
                                "a full disk is retryable"
                            );
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the disk did not fill in 2 minutes"
                    );
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let refused = refused.load(Ordering::SeqCst);
    assert!(refused >= 20, "writes never failed");
    (acknowledged, refused)
}

async fn assert_all_there(client: &Client, acknowledged: &[opsd_client::OpsdOperation]) {
    for op in acknowledged {
        assert_eq!(&client.get_details(&id_of(op)).await.unwrap(), op);
    }
}

/// Retries a create until it succeeds; returns how long that took.
async fn until_writable(client: &Client) -> (opsd_client::OpsdOperation, Duration) {
    let started = Instant::now();
    loop {
        match client.create(NewOperation::new("space is back")).await {
            Ok(op) => return (op, started.elapsed()),
            Err(e) => {
                assert_eq!(code::<()>(Err(e)), Code::Unavailable);
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "writes did not resume"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// SQLite's data directory fills up: writes fail with UNAVAILABLE (no panic,
/// no crash, no corruption), reads are still served, and writes resume by
/// themselves once space returns, with everything acknowledged intact (also
/// after a kill -9 and a restart). The test mounts a small tmpfs for the data
/// directory; where mounting is not allowed it caps the database with
/// SQLite's max_page_count instead (same SQLITE_FULL path, in process), and
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_cleanly_and_they_resume_when_space_returns() {
    let forced_fallback = std::env::var("OPSD_FULL_DISK_FALLBACK").as_deref() == Ok("1");
    let mounted = if forced_fallback {
        Err("OPSD_FULL_DISK_FALLBACK=1".to_owned())
    } else {
        SmallFilesystem::mount("16m")
    };
    match mounted {
        Ok(filesystem) => full_tmpfs(filesystem).await,
        Err(reason) => {
            eprintln!(
                "full disk: cannot mount a tmpfs ({reason}); capping the database with max_page_count instead"
            );
            full_page_cap().await;
        }
    }
}

async fn full_tmpfs(filesystem: SmallFilesystem) {
    let data = filesystem.path.join("data");
    // Room opsd cannot have until the test gives it back.
    let reserve = filesystem.path.join("reserve");
    std::fs::write(&reserve, vec![0u8; 4 << 20]).unwrap();
    let mut server = Process::start(&data);
    let client = Client::connect(&server.endpoint).await.unwrap();

    let (mut acknowledged, refused) = write_until_full(&client).await;
    // Whatever opsd left, take it, so that no write can succeed by luck.
    let filler = filesystem.path.join("filler");
    fill(&filler);
    // Full: writes fail promptly with UNAVAILABLE (one may still fit where
    // SQLite reuses room its write-ahead log already has: then it counts).
    let mut refused_when_full = 0;
    for _ in 0..10 {
        let started = Instant::now();
        match client.create(NewOperation::new("no room")).await {
            Ok(op) => acknowledged.push(op),
            Err(e) => {
                assert_eq!(code::<()>(Err(e)), Code::Unavailable);
                refused_when_full += 1;
            }
        }
        let first = id_of(&acknowledged[0]);
        match client.complete(&first, response("no room")).await {
            Ok(done) => acknowledged[0] = done,
            Err(e) => {
                assert_eq!(code::<()>(Err(e)), Code::Unavailable);
                refused_when_full += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert!(refused_when_full > 0, "nothing was refused on a full disk");
    // Reads go on.
    assert_all_there(&client, &acknowledged).await;
    assert!(client.list(Default::default()).await.is_ok());
    assert!(server.is_running(), "opsd survives a full disk");

    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&reserve).unwrap();
    let (op, resumed) = until_writable(&client).await;
    acknowledged.push(op);
    assert_all_there(&client, &acknowledged).await;

    // Crashed now, the database is intact and everything is still there.
    server.kill_9().await;
    let check: String = rusqlite::Connection::open(data.join("opsd.db"))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    server = Process::start(&data);
    let client = Client::connect(&server.endpoint).await.unwrap();
    assert_all_there(&client, &acknowledged).await;
    eprintln!(
        "full disk (tmpfs of 16 MiB): {} operations acknowledged, {} writes refused with UNAVAILABLE, \
         writes resumed {resumed:?} after space returned, integrity ok after kill -9",
        acknowledged.len(),
        refused + refused_when_full
    );
    server.terminate().await;
    drop(filesystem);
}

async fn full_page_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opsd.db");
    let store: Arc<dyn OperationStore> = Arc::new(
        SqliteStore::open(SqliteOptions {
            max_page_count: Some(1024),
            ..SqliteOptions::new(&path)
        })
        .unwrap(),
    );
    let service = Arc::new(OperationService::new(
        Arc::clone(&store),
        Arc::new(SystemClock),
        ServiceConfig {
            retention: Duration::ZERO,
            ..ServiceConfig::default()
        },
    ));
    let mut listening = Listening::start(Arc::clone(&service), Default::default()).await;
    let client = Client::connect(&listening.address.to_string())
        .await
        .unwrap();

    let (acknowledged, refused) = write_until_full(&client).await;
    assert_all_there(&client, &acknowledged).await;
    // Space returns: the retention collector deletes what is done.
    let (done, running) = acknowledged.split_at(acknowledged.len() / 2);
    for op in done {
        // Completing rewrites rows in place; on a full database some may fail.
        let _ = client.complete(&id_of(op), response("collect me")).await;
    }
    service.collect_garbage().await.unwrap();
    let (op, resumed) = until_writable(&client).await;
    let mut kept: Vec<_> = Vec::new();
    for op in running.iter().chain([&op]) {
        kept.push(op.clone());
    }
    assert_all_there(&client, &kept).await;
    listening.stop().await;
    store.close().await.unwrap();
    let check: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    eprintln!(
        "full disk (max_page_count): {} operations acknowledged, {refused} writes refused with \
         UNAVAILABLE, writes resumed {resumed:?} after space returned",
        acknowledged.len()
    );
}
