use std::sync::Arc;
use std::time::Duration;

use opsd_core::{Any, CancellationPolicy, Code, ManualClock, RpcStatus, State, Timestamp};
use opsd_store::MemoryStore;

use super::*;
use opsd_core::ListQuery;

fn service() -> (OperationService, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
    let service = OperationService::new(
        Arc::new(MemoryStore::new()),
        Arc::new(clock.clone()),
        ServiceConfig::default(),
    );
    (service, clock)
}

fn request(cancellation: CancellationPolicy) -> NewOperation {
    NewOperation {
        resource_id: Some("disk-1".into()),
        cancellation,
        ..NewOperation::new("snapshot disk")
    }
}

fn alice() -> Principal {
    Principal {
        id: "alice".into(),
        ..Principal::anonymous()
    }
}

fn response(tag: u8) -> Outcome {
    Outcome::Response(Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: vec![tag],
    })
}

#[tokio::test]
async fn created_by_comes_from_the_caller_and_ids_from_the_prefix() {
    let (service, _) = service();
    let op = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    assert_eq!(op.created_by, "alice");
    assert!(op.id.as_str().starts_with("ops"));

    let mut named = request(CancellationPolicy::Immediate);
    named.id_prefix = Some(IdPrefix::parse("id_prefix", "fhm").unwrap());
    let op = service.create(&alice(), named).await.unwrap();
    assert!(op.id.as_str().starts_with("fhm"));
}

#[tokio::test]
async fn idempotent_create_returns_the_first_operation() {
    let (service, _) = service();
    let mut keyed = request(CancellationPolicy::Immediate);
    keyed.idempotency_key = Some("k1".into());
    let first = service.create(&alice(), keyed.clone()).await.unwrap();
    let again = service.create(&alice(), keyed.clone()).await.unwrap();
    assert_eq!(first, again);

    let bob = Principal {
        id: "bob".into(),
        ..Principal::anonymous()
    };
    let bobs = service.create(&bob, keyed.clone()).await.unwrap();
    assert_ne!(bobs.id, first.id, "keys are scoped to the caller");

    keyed.description = "another thing".into();
    let err = service.create(&alice(), keyed).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_stored() {
    let (service, _) = service();
    let mut long = request(CancellationPolicy::Immediate);
    long.description = "x".repeat(257);
    let err = service.create(&alice(), long).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let op = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    let bad = Outcome::Error(RpcStatus {
        code: 0,
        message: String::new(),
        details: vec![],
    });
    assert_eq!(
        service
            .complete(&alice(), &op.id, bad)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        service.get(&alice(), &op.id).await.unwrap(),
        op,
        "nothing was written"
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let (service, _) = service();
    let id = OperationId::parse("id", "ops00000000000000000").unwrap();
    assert_eq!(
        service.get(&alice(), &id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        service.cancel(&alice(), &id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        service
            .complete(&alice(), &id, response(1))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn modified_at_follows_the_injected_clock() {
    let (service, clock) = service();
    let op = service
        .create(&alice(), request(CancellationPolicy::Cooperative))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5));
    let cancelled = service.cancel(&alice(), &op.id).await.unwrap();
    assert_eq!(
        cancelled.modified_at,
        op.created_at.saturating_add(Duration::from_secs(5))
    );
    assert!(matches!(cancelled.state, State::CancelRequested { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_cancel_and_complete_leave_exactly_one_outcome() {
    let (service, _) = service();
    let service = Arc::new(service);
    for _ in 0..200 {
        let op = service
            .create(&alice(), request(CancellationPolicy::Immediate))
            .await
            .unwrap();
        let canceller = {
            let (service, id) = (Arc::clone(&service), op.id.clone());
            tokio::spawn(async move { service.cancel(&alice(), &id).await })
        };
        let completer = {
            let (service, id) = (Arc::clone(&service), op.id.clone());
            tokio::spawn(async move { service.complete(&alice(), &id, response(7)).await })
        };
        let cancel = canceller.await.unwrap();
        let complete = completer.await.unwrap();
        let stored = service.get(&alice(), &op.id).await.unwrap();
        // Whoever won, the loser was told so and the stored outcome is the winner's.
        match stored.outcome().unwrap() {
            outcome if outcome.is_cancelled() => {
                assert_eq!(cancel.unwrap(), stored);
                assert_eq!(complete.unwrap_err().code(), Code::FailedPrecondition);
            }
            outcome => {
                assert_eq!(outcome, &response(7));
                assert_eq!(complete.unwrap(), stored);
                assert_eq!(cancel.unwrap_err().code(), Code::FailedPrecondition);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn wait_returns_at_completion_or_the_running_state_at_timeout() {
    let (service, _) = service();
    let service = Arc::new(service);
    let op = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();

    // Nobody completes it: after the timeout, the running state, not an error.
    let started = tokio::time::Instant::now();
    let latest = service
        .wait(&alice(), &op.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!latest.is_done());
    assert_eq!(started.elapsed(), Duration::from_secs(30));

    // Completed while waiting: returns at once with the result.
    let waiter = {
        let (service, id) = (Arc::clone(&service), op.id.clone());
        tokio::spawn(async move { service.wait(&alice(), &id, Duration::from_secs(3600)).await })
    };
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let done = service
        .complete(&alice(), &op.id, response(1))
        .await
        .unwrap();
    let waited = waiter.await.unwrap().unwrap();
    assert_eq!(*waited, done);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(service.watchers().active(), 0, "waiters unregister");
}

#[tokio::test]
async fn a_watcher_sees_every_state_up_to_done() {
    let (service, _) = service();
    let op = service
        .create(&alice(), request(CancellationPolicy::Cooperative))
        .await
        .unwrap();
    let mut watching = service.watch(&alice(), &op.id).await.unwrap();
    assert_eq!(*watching.current_and_mark_seen(), op);
    service.cancel(&alice(), &op.id).await.unwrap();
    assert!(matches!(
        watching.changed().await.state,
        State::CancelRequested { .. }
    ));
    service
        .complete(&alice(), &op.id, response(2))
        .await
        .unwrap();
    assert!(watching.changed().await.is_done());
}

/// Regression: joining an operation that others already watch used to start
/// from their shared state, which the change fan-out updates only after the
/// write is acknowledged; a consumer told of a completion could then Wait or
/// Watch and be answered "running". (On this current-thread runtime the
/// fan-out task cannot run between the completion and the calls below.)
#[tokio::test]
async fn joining_watchers_start_from_the_latest_acknowledged_state() {
    let (service, _) = service();
    let op = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    let _earlier = service.watch(&alice(), &op.id).await.unwrap();
    let done = service
        .complete(&alice(), &op.id, response(3))
        .await
        .unwrap();
    let mut joined = service.watch(&alice(), &op.id).await.unwrap();
    assert_eq!(*joined.current_and_mark_seen(), done);
    let waited = service
        .wait(&alice(), &op.id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(*waited, done);
}

/// Starting to watch reads the store, but watchers arriving together share
/// the reads: a thousand cost a handful, not a thousand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_arriving_together_share_their_reads() {
    use opsd_store::faults::{Call, Calls, Fault, Faults, FaultyStore};
    let faults = Faults::new();
    let clock = ManualClock::new(Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
    let service = Arc::new(OperationService::new(
        Arc::new(FaultyStore::new(
            Arc::new(MemoryStore::new()),
            Arc::clone(&faults),
        )),
        Arc::new(clock),
        ServiceConfig::default(),
    ));
    let op = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    // Every read now takes a while (and is counted).
    faults.inject(
        Calls::Only(Call::Get),
        Fault::Latency(Duration::from_millis(20)),
    );
    let watchers: Vec<_> = (0..1000)
        .map(|_| {
            let (service, id) = (Arc::clone(&service), op.id.clone());
            tokio::spawn(async move { service.watch(&alice(), &id).await.map(|w| w.current()) })
        })
        .collect();
    for watcher in watchers {
        assert_eq!(*watcher.await.unwrap().unwrap(), op);
    }
    let reads = faults.injected();
    assert!(reads <= 10, "{reads} store reads for 1000 watchers");
}

#[tokio::test]
async fn lapsed_leases_and_deadlines_are_completed_exactly_once() {
    let (service, clock) = service();
    let mut leased = request(CancellationPolicy::Immediate);
    leased.lease_duration = Some(Duration::from_secs(10));
    let leased = service.create(&alice(), leased).await.unwrap();
    let mut deadlined = request(CancellationPolicy::Immediate);
    deadlined.deadline = Some(clock.now().saturating_add(Duration::from_secs(60)));
    let deadlined = service.create(&alice(), deadlined).await.unwrap();

    clock.advance(Duration::from_secs(9));
    assert_eq!(service.expire_due().await.unwrap(), 0);
    service
        .heartbeat(&alice(), &leased.id, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        service.expire_due().await.unwrap(),
        0,
        "the heartbeat renewed the lease"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(service.expire_due().await.unwrap(), 1);
    let aborted = service.get(&alice(), &leased.id).await.unwrap();
    assert!(matches!(aborted.outcome(), Some(Outcome::Error(s)) if s.code == 10));

    clock.advance(Duration::from_secs(60));
    assert_eq!(service.expire_due().await.unwrap(), 1);
    let late = service.get(&alice(), &deadlined.id).await.unwrap();
    assert!(matches!(late.outcome(), Some(Outcome::Error(s)) if s.code == 4));
    assert_eq!(service.expire_due().await.unwrap(), 0, "exactly once");
    assert_eq!(
        service
            .heartbeat(&alice(), &leased.id, None)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn the_resource_guard_names_the_running_operation() {
    let (service, _) = service();
    let mut exclusive = request(CancellationPolicy::Immediate);
    exclusive.exclusive = true;
    let first = service.create(&alice(), exclusive.clone()).await.unwrap();
    match service
        .create(&alice(), exclusive.clone())
        .await
        .unwrap_err()
    {
        Error::ResourceBusy {
            resource_id,
            running_id,
        } => {
            assert_eq!(resource_id, "disk-1");
            assert_eq!(running_id, first.id.to_string());
        }
        other => panic!("expected resource busy, got {other:?}"),
    }
    service
        .complete(&alice(), &first.id, response(1))
        .await
        .unwrap();
    service.create(&alice(), exclusive).await.unwrap();
}

/// A backlog is deleted in batches with pauses in between: a batch that took
/// 10 ms is followed by 90 ms of rest at the default share of 0.1.
#[tokio::test(start_paused = true)]
async fn retention_spends_at_most_its_share_of_the_time_deleting() {
    use opsd_store::faults::{Call, Calls, Fault, Faults, FaultyStore};
    let faults = Faults::new();
    let clock = ManualClock::new(Timestamp::from_unix_nanos(1_700_000_000_000_000_000));
    let config = ServiceConfig {
        retention_batch: 2,
        ..ServiceConfig::default()
    };
    assert_eq!(config.retention_share, 0.1);
    let service = OperationService::new(
        Arc::new(FaultyStore::new(
            Arc::new(MemoryStore::new()),
            Arc::clone(&faults),
        )),
        Arc::new(clock.clone()),
        config,
    );
    for tag in 0..7 {
        let op = service
            .create(&alice(), request(CancellationPolicy::Immediate))
            .await
            .unwrap();
        service
            .complete(&alice(), &op.id, response(tag))
            .await
            .unwrap();
    }
    clock.advance(service.config().retention + Duration::from_secs(1));
    faults.inject(
        Calls::Only(Call::DeleteDoneBefore),
        Fault::Latency(Duration::from_millis(10)),
    );
    let started = tokio::time::Instant::now();
    assert_eq!(service.collect_garbage().await.unwrap(), 7);
    // Four batches (2, 2, 2, 1) of 10 ms each, and a 90 ms pause after each
    // full one; none after the last, which found the backlog gone.
    assert_eq!(started.elapsed(), Duration::from_millis(4 * 10 + 3 * 90));
    assert_eq!(faults.injected(), 4);
}

#[test]
fn the_retention_pause_keeps_the_share_and_never_panics() {
    let ms = Duration::from_millis;
    assert_eq!(retention_pause(ms(10), 0.1), ms(90));
    assert_eq!(retention_pause(ms(10), 0.5), ms(10));
    assert_eq!(retention_pause(ms(10), 1.0), Duration::ZERO);
    for share in [0.0, -1.0, f64::NAN, f64::INFINITY, 2.0] {
        assert_eq!(retention_pause(ms(10), share), Duration::ZERO, "{share}");
    }
    assert_eq!(retention_pause(Duration::MAX, 0.01), Duration::MAX);
}

#[tokio::test]
async fn retention_deletes_only_done_operations_past_it() {
    let (service, clock) = service();
    let running = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    let finished = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    service
        .complete(&alice(), &finished.id, response(1))
        .await
        .unwrap();
    clock.advance(service.config().retention - Duration::from_secs(1));
    assert_eq!(service.collect_garbage().await.unwrap(), 0);
    clock.advance(Duration::from_secs(2));
    assert_eq!(service.collect_garbage().await.unwrap(), 1);
    assert_eq!(
        service
            .get(&alice(), &finished.id)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(service.get(&alice(), &running.id).await.is_ok());
}

fn principal(id: &str, scopes: &[&str], roles: &[opsd_core::Role]) -> Principal {
    Principal {
        id: id.into(),
        scopes: opsd_core::Scopes::Only(scopes.iter().map(|s| (*s).to_owned()).collect()),
        roles: roles.iter().copied().collect(),
    }
}

#[tokio::test]
async fn callers_see_their_scopes_and_act_within_their_roles() {
    use opsd_core::Role::*;
    let (service, _) = service();
    let producer_a = principal("compute", &["folder-a"], &[Producer]);
    let viewer_a = principal("auditor", &["folder-a"], &[Viewer]);
    let operator_b = principal("oncall", &["folder-b"], &[Operator]);

    let op = service
        .create(&producer_a, request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    assert_eq!(op.scope, "folder-a", "a caller's only scope is the default");
    assert_eq!(op.created_by, "compute");

    // In scope with the role: allowed. In scope without it: PERMISSION_DENIED.
    assert_eq!(service.get(&viewer_a, &op.id).await.unwrap(), op);
    assert_eq!(
        service.cancel(&viewer_a, &op.id).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        service.get(&producer_a, &op.id).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Out of scope: NOT_FOUND, exactly as for an id that does not exist.
    let unknown = OperationId::parse("id", "ops00000000000000000").unwrap();
    assert_eq!(
        service.cancel(&operator_b, &op.id).await.unwrap_err(),
        Error::NotFound {
            id: op.id.to_string()
        }
    );
    assert_eq!(
        service.get(&operator_b, &unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        service
            .watch(&operator_b, &op.id)
            .await
            .err()
            .unwrap()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        service
            .complete(
                &principal("other", &["folder-b"], &[Producer]),
                &op.id,
                response(1)
            )
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Creating in a scope the caller does not have is refused.
    let mut foreign = request(CancellationPolicy::Immediate);
    foreign.scope = Some("folder-b".into());
    assert_eq!(
        service
            .create(&producer_a, foreign)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        service
            .create(&viewer_a, request(CancellationPolicy::Immediate))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Listing shows only the caller's scopes.
    let query = ListQuery {
        filter: Default::default(),
        after: None,
        limit: 100,
    };
    assert_eq!(service.list(&viewer_a, &query).await.unwrap(), [op]);
    assert!(service.list(&operator_b, &query).await.unwrap().is_empty());
    assert_eq!(
        service.list(&producer_a, &query).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn an_idempotency_key_never_hands_over_another_scopes_operation() {
    use opsd_core::Role::*;
    let (service, _) = service();
    let in_a = principal("svc", &["folder-a"], &[Producer, Viewer]);
    let in_b = principal("svc", &["folder-b"], &[Producer, Viewer]);
    let mut keyed = request(CancellationPolicy::Immediate);
    keyed.idempotency_key = Some("k".into());
    keyed.description = "secret of folder a".into();
    let first = service.create(&in_a, keyed.clone()).await.unwrap();
    let error = service.create(&in_b, keyed).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(!error.to_string().contains(first.id.as_str()), "{error}");
}

/// How often the service has read the feed from the store.
fn feed_reads(service: &OperationService) -> u64 {
    service
        .metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("opsd_store_duration_seconds_count{operation=\"read_feed\"} "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// A group commit announces each of its writes. A reader woken by the first
/// announcement reads once for all of them, and then waits: it does not read
/// the store again for every announcement that was already queued.
#[tokio::test(start_paused = true)]
async fn a_feed_reader_reads_once_per_wake_up_not_once_per_announced_change() {
    let (service, _) = service();
    let mut feed = service
        .feed(&alice(), opsd_core::EventFilter::default(), None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let op = service
            .create(&alice(), request(CancellationPolicy::Immediate))
            .await
            .unwrap();
        ids.push(op.id);
    }
    for id in &ids {
        assert_eq!(feed.next().await.unwrap().operation_id, *id);
    }
    let before = feed_reads(&service);
    // Fifty announcements are queued; one more change comes.
    let last = service
        .create(&alice(), request(CancellationPolicy::Immediate))
        .await
        .unwrap();
    assert_eq!(feed.next().await.unwrap().operation_id, last.id);
    // Nothing else was committed: the reader waits (time is paused, so the
    // timeout passes as soon as the reader has nothing left to do).
    assert!(
        tokio::time::timeout(Duration::from_secs(1), feed.next())
            .await
            .is_err()
    );
    assert_eq!(
        feed_reads(&service) - before,
        1,
        "one read for the queued announcements and the new change together"
    );
}
