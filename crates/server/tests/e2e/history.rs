//! Racing cancels and completions, checked as histories.
//!
//! Concurrent clients Create, Cancel, Complete, Get, Wait and Watch a shared
//! set of operations on real opsd processes (one on SQLite; two replicas on
//! one PostgreSQL database, each call going to either), recording every call
//! with its start, end and answer. [`checker`] then verifies, per operation,
//! that what was observed is consistent with one order of state changes.
//!
//! Size: `OPSD_HISTORY_PAIRS` racing cancel/complete pairs (one operation
//! each; 1000 by default, 10000 for the long run in the README) with
//! `OPSD_HISTORY_CONCURRENCY` operations in flight (default 24).

pub mod checker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checker::{Answer, Call, Event};
use opsd_client::{CancellationPolicy, Client, ClientError, Completion, NewOperation};
use opsd_proto::yandex::cloud::operation::operation::Result as WireOutcome;
use rand::Rng;

use crate::process::Process;
use crate::support::env_size;

/// Records calls against the replicas of one deployment.
struct Recorder {
    /// Per replica, a few connections (each an HTTP/2 channel).
    clients: Vec<Vec<Client>>,
    epoch: Instant,
    events: Mutex<Vec<Event>>,
    streams: AtomicU64,
}

impl Recorder {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// A random replica and one of its connections.
    fn pick(&self) -> (usize, &Client) {
        let mut rng = rand::rng();
        let replica = rng.random_range(0..self.clients.len());
        let connections = &self.clients[replica];
        (
            replica,
            &connections[rng.random_range(0..connections.len())],
        )
    }

    fn record(&self, operation: &str, call: Call, replica: usize, start: Duration, answer: Answer) {
        let end = self.now();
        self.events.lock().unwrap().push(Event {
            operation: operation.to_owned(),
            call,
            replica,
            start,
            end,
            answer,
        });
    }

    /// Records a unary call's answer.
    async fn unary<F>(&self, id: &str, call: Call, run: impl FnOnce(Client) -> F)
    where
        F: std::future::Future<Output = Result<opsd_client::OpsdOperation, ClientError>>,
    {
        let (replica, client) = self.pick();
        let client = client.clone();
        let start = self.now();
        let answer = answer(run(client).await);
        self.record(id, call, replica, start, answer);
    }

    /// Follows a Watch to its end, or only its first message.
    async fn watch(&self, id: &str, to_the_end: bool) {
        let (replica, client) = self.pick();
        let stream = self.streams.fetch_add(1, Ordering::Relaxed);
        let call = Call::Watch { stream };
        let start = self.now();
        let mut messages = match client.watch(id).await {
            Ok(messages) => messages,
            Err(e) => return self.record(id, call, replica, start, answer(Err(e))),
        };
        loop {
            let next = messages.message().await;
            let (answer, more) = match next {
                Ok(Some(op)) => (Answer::State(Box::new(op)), to_the_end),
                Ok(None) => (Answer::Ended, false),
                Err(status) => (Answer::Failed(status.code()), false),
            };
            self.record(id, call.clone(), replica, start, answer);
            if !more {
                return;
            }
        }
    }
}

fn answer(result: Result<opsd_client::OpsdOperation, ClientError>) -> Answer {
    match result {
        Ok(op) => Answer::State(Box::new(op)),
        Err(ClientError::Rpc(status)) => Answer::Failed(status.code()),
        Err(other) => panic!("transport failure: {other}"),
    }
}

fn response(n: usize) -> prost_types::Any {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "winner".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(format!(
                "complete {n}"
            ))),
        },
    );
    opsd_client::pack_struct(&prost_types::Struct { fields })
}

fn failure(n: usize) -> opsd_proto::RpcStatus {
    opsd_proto::RpcStatus {
        code: 9,
        message: format!("failed {n}"),
        details: vec![],
    }
}

/// One operation: created, then cancelled and completed at the same moment
/// from different clients (sometimes completed twice, differently), while
/// others read it; the completer reads right after its answer.
async fn race(recorder: Arc<Recorder>, n: usize) {
    let policy = match n % 3 {
        0 => CancellationPolicy::Immediate,
        1 => CancellationPolicy::Cooperative,
        _ => CancellationPolicy::NotCancellable,
    };
    let (replica, client) = recorder.pick();
    let start = recorder.now();
    let created = client
        .create(NewOperation {
            cancellation_policy: policy,
            ..NewOperation::new(format!("race {n}"))
        })
        .await;
    let id = match &created {
        Ok(op) => op.operation.as_ref().unwrap().id.clone(),
        Err(_) => format!("create {n}"),
    };
    recorder.record(&id, Call::Create, replica, start, answer(created));
    if id.starts_with("create ") {
        return;
    }
    let r = &recorder;
    let id = id.as_str();
    let twice = n.is_multiple_of(4);
    tokio::join!(
        r.unary(id, Call::Cancel, |c| async move {
            c.cancel(id).await.map(checker::cloud_view)
        }),
        async {
            let wanted = response(n);
            r.unary(
                id,
                Call::Complete(WireOutcome::Response(wanted.clone())),
                |c| async move { c.complete(id, Completion::Response(wanted)).await },
            )
            .await;
            // Right after the answer: what a consumer told of it would see.
            r.unary(id, Call::Wait, |c| async move {
                c.wait(id, Some(Duration::ZERO)).await
            })
            .await;
            r.watch(id, false).await;
            r.unary(id, Call::Get, |c| async move { c.get_details(id).await })
                .await;
        },
        async {
            if twice {
                let wanted = failure(n);
                r.unary(
                    id,
                    Call::Complete(WireOutcome::Error(wanted.clone())),
                    |c| async move { c.complete(id, Completion::Error(wanted)).await },
                )
                .await;
            }
        },
        r.watch(id, true),
        async {
            r.unary(id, Call::Get, |c| async move { c.get_details(id).await })
                .await;
            r.unary(id, Call::Wait, |c| async move {
                c.wait(id, Some(Duration::from_millis(1))).await
            })
            .await;
            r.unary(id, Call::Get, |c| async move { c.get_details(id).await })
                .await;
        },
        r.unary(id, Call::Wait, |c| async move {
            c.wait(id, Some(Duration::from_secs(20))).await
        }),
    );
}

/// Runs the races against `endpoints` (one per replica) and checks the history.
async fn race_and_check(endpoints: &[String], label: &str) {
    let pairs = env_size("OPSD_HISTORY_PAIRS", 1000);
    let concurrency = env_size("OPSD_HISTORY_CONCURRENCY", 24).max(1);
    let mut clients = Vec::new();
    for endpoint in endpoints {
        let mut connections = Vec::new();
        for _ in 0..2 {
            connections.push(Client::connect(endpoint).await.unwrap());
        }
        clients.push(connections);
    }
    let recorder = Arc::new(Recorder {
        clients,
        epoch: Instant::now(),
        events: Mutex::new(Vec::new()),
        streams: AtomicU64::new(0),
    });

    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(pairs);
    for n in 0..pairs {
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        let recorder = Arc::clone(&recorder);
        tasks.push(tokio::spawn(async move {
            let finished = tokio::time::timeout(Duration::from_secs(60), race(recorder, n)).await;
            drop(permit);
            finished.is_ok()
        }));
    }
    let mut unfinished = 0;
    for task in tasks {
        unfinished += usize::from(!task.await.unwrap());
    }
    let raced = started.elapsed();

    // At the end, every replica must say done for every operation.
    let ids: std::collections::BTreeSet<String> = recorder
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.operation.clone())
        .collect();
    let mut not_done = Vec::new();
    for id in &ids {
        for (replica, connections) in recorder.clients.iter().enumerate() {
            let start = recorder.now();
            let got = connections[0].get_details(id).await;
            if !matches!(&got, Ok(op) if op.operation.as_ref().is_some_and(|o| o.done)) {
                not_done.push(format!("{id} on replica {replica}: {got:?}"));
            }
            recorder.record(id, Call::Get, replica, start, answer(got));
        }
    }

    let events = std::mem::take(&mut *recorder.events.lock().unwrap());
    let report = checker::check(&events, &[]);
    eprintln!(
        "history {label}: {} operations ({} contested), {} calls and watch messages checked, \
         {} replicas, {:.1} s, {} violations",
        report.operations,
        report.contested,
        report.events,
        endpoints.len(),
        raced.as_secs_f64(),
        report.violations.len()
    );
    assert_eq!(unfinished, 0, "races did not finish within 60 s");
    assert!(not_done.is_empty(), "not done at the end: {not_done:#?}");
    assert_eq!(report.operations, pairs, "one operation per pair");
    assert!(
        report.violations.is_empty(),
        "{} violations, the first ones:\n{}",
        report.violations.len(),
        report.violations[..report.violations.len().min(20)].join("\n")
    );
    // The races were real: some cancels or completions lost.
    assert!(report.contested > 0, "no race was contested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_histories_are_consistent_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start(dir.path());
    race_and_check(std::slice::from_ref(&server.endpoint), "sqlite").await;
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_histories_are_consistent_across_two_postgres_replicas() {
    let Some(database) = opsd_testkit::postgres().await else {
        return;
    };
    let a = Process::start_with(&["--store", &database.url]);
    let b = Process::start_with(&["--store", &database.url]);
    race_and_check(&[a.endpoint.clone(), b.endpoint.clone()], "postgres").await;
    a.terminate().await;
    b.terminate().await;
}
