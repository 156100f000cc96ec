//! The behaviour every [`OperationStore`] backend must have. Each case is a
//! plain async function; [`conformance_suite!`](crate::conformance_suite) turns
//! them into one `#[tokio::test]` per case for a backend.

use std::sync::Arc;

use opsd_core::{
    Any, CancellationPolicy, Cursor, EventKind, Idempotency, ListFilter, ListQuery, NewEvent,
    Operation, OperationId, Outcome, Progress, ReportedFailure, RpcStatus, SpanRef, State,
    StateFilter, Step, StepState, Timestamp, TraceContext,
};

use crate::{Change, Inserted, OperationStore, StoreError, Swapped};
use opsd_core::EventFilter;

/// Expands to one test per conformance case. `$make` is an expression giving a
/// future of `Option<(Arc<dyn OperationStore>, guard)>`; the guard (a temp dir,
/// say) lives until the case ends, and `None` means the backend is not
/// available here (the factory says so loudly, or fails when it is required).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases $make;
            insert_then_get_returns_it_unchanged,
            get_of_an_unknown_id_is_none,
            concurrent_gets_each_get_their_own_operation_and_see_every_acknowledged_write,
            insert_of_a_taken_id_is_refused,
            idempotency_key_returns_the_first_operation,
            idempotency_keys_are_scoped_to_the_creator,
            racing_creates_with_one_idempotency_key_make_one_operation,
            compare_and_swap_replaces_the_expected_version,
            compare_and_swap_with_a_stale_version_returns_the_current_one,
            compare_and_swap_of_a_missing_operation,
            racing_swaps_have_exactly_one_winner,
            every_state_and_field_round_trips,
            a_reported_failure_is_stored_through_every_state,
            the_trace_is_kept_on_the_operation_and_each_event,
            every_committed_change_and_only_it_has_its_event,
            events_past_the_limit_fold_only_metadata_updates,
            the_feed_delivers_every_event_once_in_commit_order,
            the_feed_filters_by_scope_resource_creator_prefix_and_kind,
            retention_deletes_events_and_moves_the_feed_horizon,
            the_overview_counts_by_prefix_and_reads_oldest_quiet_and_done,
            progress_samples_are_the_first_events_of_each_prefixs_recent_operations,
            concurrent_inserts_are_all_readable_at_once,
            subscribers_hear_every_committed_change,
            list_pages_newest_first_without_gaps_or_duplicates,
            list_filters_by_resource_creator_state_and_time,
            list_filters_by_id_prefix,
            list_pages_through_an_id_prefix_with_tokens,
            list_searches_descriptions_case_insensitively,
            list_searches_descriptions_for_wildcards_literally,
            list_combines_search_with_the_other_filters_and_scopes,
            list_search_reads_past_many_rows_that_do_not_match,
            the_resource_guard_admits_one_running_exclusive_operation,
            due_for_expiry_finds_lapsed_leases_and_deadlines,
            retention_deletes_exactly_the_expired_done_operations,
            retention_is_announced_to_subscribers,
            a_closed_store_refuses_calls
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some((store, _guard)) = $make.await else {
                    return;
                };
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

fn id(n: u64) -> OperationId {
    OperationId::parse("id", &format!("tst{n:017}")).expect("test ids are well-formed")
}

fn at(nanos: i64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

/// A running operation with every optional field empty.
pub fn sample(n: u64) -> Operation {
    Operation {
        id: id(n),
        version: 1,
        description: format!("operation {n}"),
        created_at: at(1_700_000_000_000_000_000),
        created_by: "alice".into(),
        modified_at: at(1_700_000_000_000_000_000),
        resource_id: None,
        cancellation: CancellationPolicy::Immediate,
        metadata: None,
        progress: None,
        state: State::Running,
        idempotency: None,
        deadline: None,
        lease_expires_at: None,
        exclusive: false,
        scope: "folder-1".into(),
        reported_failure: None,
        trace: None,
    }
}

/// The event limit per operation the suite's stores are opened with.
pub const MAX_EVENTS_PER_OPERATION: u64 = 6;

/// The `created` event of a new operation, as the service makes it.
pub fn created(op: &Operation) -> NewEvent {
    NewEvent::of(EventKind::Created, op, &op.created_by)
}

/// An event for the change that made `next`, of the kind its state suggests.
pub fn changed(next: &Operation) -> NewEvent {
    let kind = match next.state {
        State::Done { .. } => EventKind::Completed,
        State::CancelRequested { .. } => EventKind::CancelRequested,
        State::Running => EventKind::MetadataUpdated,
    };
    NewEvent::of(kind, next, "bob")
}

fn with_key(mut op: Operation, created_by: &str, key: &str) -> Operation {
    op.created_by = created_by.into();
    op.idempotency = Some(Idempotency {
        key: key.into(),
        fingerprint: [7; 32],
    });
    op
}

fn next_version(op: &Operation, state: State) -> Operation {
    let mut next = op.clone();
    next.version += 1;
    next.modified_at = op.modified_at.next();
    next.state = state;
    next
}

fn response(tag: u8) -> Outcome {
    Outcome::Response(Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: vec![tag; 3],
    })
}

pub async fn insert_then_get_returns_it_unchanged(store: Arc<dyn OperationStore>) {
    let op = sample(1);
    assert_eq!(
        store.insert(&op, &created(&op)).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(store.get(&op.id).await.unwrap(), Some(op));
}

pub async fn get_of_an_unknown_id_is_none(store: Arc<dyn OperationStore>) {
    assert_eq!(store.get(&id(404)).await.unwrap(), None);
}

/// Many Gets at once (a backend may answer them together), of different
/// operations, the same one twice and ones that do not exist, interleaved
/// with writes: each gets its own operation, at least at the version
/// acknowledged before it started.
pub async fn concurrent_gets_each_get_their_own_operation_and_see_every_acknowledged_write(
    store: Arc<dyn OperationStore>,
) {
    let mut ops = Vec::new();
    for n in 1..=20 {
        let op = sample(n);
        store.insert(&op, &created(&op)).await.unwrap();
        ops.push(op);
    }
    for round in 0..5 {
        // Every operation moves on a version; then everything is read at once.
        for op in &mut ops {
            let next = next_version(op, State::Running);
            assert_eq!(
                store
                    .compare_and_swap(&next, Some(&changed(&next)))
                    .await
                    .unwrap(),
                Swapped::Swapped
            );
            *op = next;
        }
        let mut reads = Vec::new();
        for op in ops.iter().chain(ops.iter().take(5)) {
            let store = Arc::clone(&store);
            let op = op.clone();
            reads.push(tokio::spawn(async move {
                assert_eq!(store.get(&op.id).await.unwrap(), Some(op), "round {round}");
            }));
        }
        for missing in 900..905 {
            let store = Arc::clone(&store);
            reads.push(tokio::spawn(async move {
                assert_eq!(store.get(&id(missing)).await.unwrap(), None);
            }));
        }
        for read in reads {
            read.await.unwrap();
        }
    }
}

pub async fn insert_of_a_taken_id_is_refused(store: Arc<dyn OperationStore>) {
    let first = sample(1);
    store.insert(&first, &created(&first)).await.unwrap();
    let mut second = sample(1);
    second.description = "another".into();
    assert_eq!(
        store.insert(&second, &created(&second)).await.unwrap(),
        Inserted::IdTaken
    );
    assert_eq!(store.get(&first.id).await.unwrap(), Some(first));
}

pub async fn idempotency_key_returns_the_first_operation(store: Arc<dyn OperationStore>) {
    let first = with_key(sample(1), "alice", "key-1");
    assert_eq!(
        store.insert(&first, &created(&first)).await.unwrap(),
        Inserted::Created
    );
    let retry = with_key(sample(2), "alice", "key-1");
    assert_eq!(
        store.insert(&retry, &created(&retry)).await.unwrap(),
        Inserted::IdempotencyKeyUsed(first.clone())
    );
    assert_eq!(
        store.get(&retry.id).await.unwrap(),
        None,
        "no second operation"
    );

    // The key still finds the operation after it changed.
    let done = next_version(
        &first,
        State::Done {
            outcome: response(1),
            cancel_requested_at: None,
        },
    );
    assert_eq!(
        store
            .compare_and_swap(&done, Some(&changed(&done)))
            .await
            .unwrap(),
        Swapped::Swapped
    );
    assert_eq!(
        store.insert(&retry, &created(&retry)).await.unwrap(),
        Inserted::IdempotencyKeyUsed(done)
    );
}

pub async fn idempotency_keys_are_scoped_to_the_creator(store: Arc<dyn OperationStore>) {
    let alice = with_key(sample(1), "alice", "key-1");
    let bob = with_key(sample(2), "bob", "key-1");
    assert_eq!(
        store.insert(&alice, &created(&alice)).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(
        store.insert(&bob, &created(&bob)).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(store.get(&bob.id).await.unwrap(), Some(bob));
}

pub async fn compare_and_swap_replaces_the_expected_version(store: Arc<dyn OperationStore>) {
    let op = sample(1);
    store.insert(&op, &created(&op)).await.unwrap();
    let next = next_version(
        &op,
        State::CancelRequested {
            requested_at: at(5),
        },
    );
    assert_eq!(
        store
            .compare_and_swap(&next, Some(&changed(&next)))
            .await
            .unwrap(),
        Swapped::Swapped
    );
    assert_eq!(store.get(&op.id).await.unwrap(), Some(next));
}

pub async fn compare_and_swap_with_a_stale_version_returns_the_current_one(
    store: Arc<dyn OperationStore>,
) {
    let op = sample(1);
    store.insert(&op, &created(&op)).await.unwrap();
    let winner = next_version(
        &op,
        State::Done {
            outcome: response(1),
            cancel_requested_at: None,
        },
    );
    store
        .compare_and_swap(&winner, Some(&changed(&winner)))
        .await
        .unwrap();
    let loser = next_version(
        &op,
        State::Done {
            outcome: response(2),
            cancel_requested_at: None,
        },
    );
    assert_eq!(
        store
            .compare_and_swap(&loser, Some(&changed(&loser)))
            .await
            .unwrap(),
        Swapped::Stale(winner.clone())
    );
    // A version from the future is just as stale.
    let mut skipping = next_version(&winner, State::Running);
    skipping.version += 5;
    assert_eq!(
        store
            .compare_and_swap(&skipping, Some(&changed(&skipping)))
            .await
            .unwrap(),
        Swapped::Stale(winner.clone())
    );
    assert_eq!(store.get(&op.id).await.unwrap(), Some(winner));
}

pub async fn compare_and_swap_of_a_missing_operation(store: Arc<dyn OperationStore>) {
    let next = next_version(&sample(9), State::Running);
    assert_eq!(
        store
            .compare_and_swap(&next, Some(&changed(&next)))
            .await
            .unwrap(),
        Swapped::Missing
    );
    assert_eq!(store.get(&next.id).await.unwrap(), None);
}

pub async fn racing_swaps_have_exactly_one_winner(store: Arc<dyn OperationStore>) {
    const RACERS: u8 = 32;
    for round in 0..5u64 {
        let op = sample(100 + round);
        store.insert(&op, &created(&op)).await.unwrap();
        let tasks: Vec<_> = (0..RACERS)
            .map(|tag| {
                let store = Arc::clone(&store);
                let next = next_version(
                    &op,
                    State::Done {
                        outcome: response(tag),
                        cancel_requested_at: None,
                    },
                );
                tokio::spawn(async move {
                    (
                        store
                            .compare_and_swap(&next, Some(&changed(&next)))
                            .await
                            .unwrap(),
                        next,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (result, attempted) = task.await.unwrap();
            match result {
                Swapped::Swapped => winners.push(attempted),
                Swapped::Stale(current) => assert_eq!(current.version, 2),
                Swapped::Missing => panic!("operation vanished"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one racer wins");
        assert_eq!(store.get(&op.id).await.unwrap(), Some(winners.remove(0)));
    }
}

pub async fn every_state_and_field_round_trips(store: Arc<dyn OperationStore>) {
    let mut ops = Vec::new();

    let mut full = with_key(sample(1), "aje1234567890abcdefg", "k");
    full.progress = Some(Progress {
        work_done: 3,
        work_total: 10,
        message: "copying ✓".into(),
        steps: vec![
            Step {
                name: "copy".into(),
                state: StepState::Running,
            },
            Step {
                name: "verify".into(),
                state: StepState::Pending,
            },
        ],
    });
    full.deadline = Some(at(1_800_000_000_000_000_000));
    full.lease_expires_at = Some(at(1_700_000_030_000_000_000));
    full.exclusive = true;
    full.description = "я".repeat(256);
    full.resource_id = Some("disk/fhm123 ünïcode".into());
    full.cancellation = CancellationPolicy::Cooperative;
    full.metadata = Some(Any {
        type_url: "type.googleapis.com/opsd.test.Big".into(),
        value: (0..=255u8).cycle().take(1 << 20).collect(),
    });
    ops.push(full);

    let mut empty_resource = sample(2);
    empty_resource.resource_id = Some(String::new());
    empty_resource.cancellation = CancellationPolicy::NotCancellable;
    empty_resource.metadata = Some(Any {
        type_url: "type.googleapis.com/google.protobuf.Empty".into(),
        value: vec![],
    });
    ops.push(empty_resource);

    let mut cancel_requested = sample(3);
    cancel_requested.state = State::CancelRequested {
        requested_at: at(-1),
    };
    ops.push(cancel_requested);

    let mut failed = sample(4);
    failed.state = State::Done {
        outcome: Outcome::Error(RpcStatus {
            code: 9,
            message: "quota exceeded".into(),
            details: vec![
                Any {
                    type_url: "type.googleapis.com/google.rpc.QuotaFailure".into(),
                    value: vec![1, 2, 3],
                },
                Any {
                    type_url: "type.googleapis.com/google.rpc.Help".into(),
                    value: vec![],
                },
            ],
        }),
        cancel_requested_at: Some(at(i64::MAX)),
    };
    ops.push(failed);

    let mut cancelled = sample(5);
    cancelled.state = State::Done {
        outcome: Outcome::Error(RpcStatus {
            code: 1,
            message: String::new(),
            details: vec![],
        }),
        cancel_requested_at: Some(at(i64::MIN)),
    };
    ops.push(cancelled);

    let mut succeeded = sample(6);
    succeeded.version = u64::try_from(i64::MAX).unwrap();
    succeeded.state = State::Done {
        outcome: Outcome::Response(Any {
            type_url: "t/x".into(),
            value: vec![],
        }),
        cancel_requested_at: None,
    };
    ops.push(succeeded);

    for op in &ops {
        assert_eq!(
            store.insert(op, &created(op)).await.unwrap(),
            Inserted::Created
        );
    }
    for op in &ops {
        assert_eq!(store.get(&op.id).await.unwrap().as_ref(), Some(op));
    }
}

/// A failure reported while running is stored with its details and time, is
/// replaced by a later report, and stays once the operation is done.
pub async fn a_reported_failure_is_stored_through_every_state(store: Arc<dyn OperationStore>) {
    let failure = |message: &str, nanos: i64| ReportedFailure {
        status: RpcStatus {
            code: 8,
            message: message.into(),
            details: vec![Any {
                type_url: "type.googleapis.com/google.rpc.QuotaFailure".into(),
                value: vec![0, 1, 2],
            }],
        },
        reported_at: at(nanos),
    };
    let mut op = sample(1);
    op.reported_failure = Some(failure("disk quota exceeded", 1_700_000_000_000_000_001));
    assert_eq!(
        store.insert(&op, &created(&op)).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(store.get(&op.id).await.unwrap().as_ref(), Some(&op));

    let mut replaced = next_version(
        &op,
        State::CancelRequested {
            requested_at: at(1_700_000_000_000_000_002),
        },
    );
    replaced.reported_failure = Some(failure("rolling back: quota", 1_700_000_000_000_000_003));
    assert_eq!(
        store
            .compare_and_swap(&replaced, Some(&changed(&replaced)))
            .await
            .unwrap(),
        Swapped::Swapped
    );
    assert_eq!(store.get(&op.id).await.unwrap().as_ref(), Some(&replaced));

    let status = replaced.reported_failure.clone().unwrap().status;
    let done = next_version(
        &replaced,
        State::Done {
            outcome: Outcome::Error(status),
            cancel_requested_at: replaced.cancel_requested_at(),
        },
    );
    assert_eq!(
        store
            .compare_and_swap(&done, Some(&changed(&done)))
            .await
            .unwrap(),
        Swapped::Swapped
    );
    assert_eq!(store.get(&op.id).await.unwrap().as_ref(), Some(&done));

    // And without one the column stays empty: no failure appears from nowhere.
    let plain = sample(2);
    store.insert(&plain, &created(&plain)).await.unwrap();
    let completed = next_version(
        &plain,
        State::Done {
            outcome: response(1),
            cancel_requested_at: None,
        },
    );
    store
        .compare_and_swap(&completed, Some(&changed(&completed)))
        .await
        .unwrap();
    assert_eq!(
        store
            .get(&plain.id)
            .await
            .unwrap()
            .unwrap()
            .reported_failure,
        None
    );
}

pub async fn concurrent_inserts_are_all_readable_at_once(store: Arc<dyn OperationStore>) {
    let tasks: Vec<_> = (0..200u64)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let op = sample(1_000 + n);
                assert_eq!(
                    store.insert(&op, &created(&op)).await.unwrap(),
                    Inserted::Created
                );
                // Read-your-writes: visible the moment the insert is acknowledged.
                assert_eq!(store.get(&op.id).await.unwrap(), Some(op));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

pub async fn a_closed_store_refuses_calls(store: Arc<dyn OperationStore>) {
    let op = sample(1);
    store.insert(&op, &created(&op)).await.unwrap();
    store.close().await.unwrap();
    assert_eq!(
        store.insert(&sample(2), &created(&sample(2))).await,
        Err(StoreError::Closed)
    );
    assert_eq!(store.get(&op.id).await, Err(StoreError::Closed));
    let next = next_version(&op, State::Running);
    assert_eq!(
        store.compare_and_swap(&next, Some(&changed(&next))).await,
        Err(StoreError::Closed)
    );
}

pub async fn subscribers_hear_every_committed_change(store: Arc<dyn OperationStore>) {
    let mut changes = store.subscribe();
    let op = sample(1);
    store.insert(&op, &created(&op)).await.unwrap();
    let next = next_version(
        &op,
        State::CancelRequested {
            requested_at: at(5),
        },
    );
    store
        .compare_and_swap(&next, Some(&changed(&next)))
        .await
        .unwrap();

    let mut expected = vec![(op.id.clone(), 1), (op.id.clone(), 2)];
    // Notifications may travel through the database; bounded wait, no polling.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !expected.is_empty() {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("the change was announced within 10 s")
            .expect("the change stream stays open");
        if let Change::Committed { id, version } = change {
            expected.retain(|e| *e != (id.clone(), version));
        }
    }
}

fn done(op: &Operation, tag: u8) -> Operation {
    next_version(
        op,
        State::Done {
            outcome: response(tag),
            cancel_requested_at: None,
        },
    )
}

/// An operation created `n` ticks after the sample's time.
fn created_at_tick(n: u64, tick: i64) -> Operation {
    let mut op = sample(n);
    op.created_at = at(1_700_000_000_000_000_000 + tick);
    op.modified_at = op.created_at;
    op
}

async fn all_pages(store: &dyn OperationStore, filter: &ListFilter, size: usize) -> Vec<Operation> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                filter: filter.clone(),
                after: after.clone(),
                limit: size,
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(Cursor::of(last));
        let full = page.len() == size;
        seen.extend(page);
        if !full {
            break;
        }
    }
    seen
}

pub async fn list_pages_newest_first_without_gaps_or_duplicates(store: Arc<dyn OperationStore>) {
    // Ties on created_at are broken by id.
    for n in 0..25u64 {
        let op = created_at_tick(n, (n / 2) as i64);
        store.insert(&op, &created(&op)).await.unwrap();
    }
    let filter = ListFilter::default();
    let first = store
        .list(&ListQuery {
            filter: filter.clone(),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(first.len(), 10);
    // Operations created while paging come before the first page, not inside later ones.
    for n in 100..105u64 {
        store
            .insert(
                &created_at_tick(n, 1_000 + n as i64),
                &created(&created_at_tick(n, 1_000 + n as i64)),
            )
            .await
            .unwrap();
    }
    let mut seen = first.clone();
    let mut after = Some(Cursor::of(first.last().unwrap()));
    loop {
        let page = store
            .list(&ListQuery {
                filter: filter.clone(),
                after: after.clone(),
                limit: 10,
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(Cursor::of(page.last().unwrap()));
        seen.extend(page);
    }
    let ids: Vec<_> = seen.iter().map(|op| op.id.clone()).collect();
    let expected: Vec<_> = (0..25u64).rev().map(id).collect();
    assert_eq!(ids, expected, "newest first, every operation once");
    assert_eq!(all_pages(store.as_ref(), &filter, 7).await.len(), 30);
}

pub async fn list_filters_by_resource_creator_state_and_time(store: Arc<dyn OperationStore>) {
    let mut expected_disk = Vec::new();
    for n in 0..12u64 {
        let mut op = created_at_tick(n, n as i64 * 10);
        op.resource_id = Some(if n % 3 == 0 {
            "disk-1".into()
        } else {
            format!("vm-{n}")
        });
        op.created_by = if n % 2 == 0 {
            "alice".into()
        } else {
            "bob".into()
        };
        if n % 3 == 1 {
            op.scope = "folder-2".into();
        }
        store.insert(&op, &created(&op)).await.unwrap();
        if n % 4 == 0 {
            store
                .compare_and_swap(&done(&op, 1), Some(&changed(&done(&op, 1))))
                .await
                .unwrap();
        }
        if n % 3 == 0 {
            expected_disk.push(op.id.clone());
        }
    }
    let ids = |ops: Vec<Operation>| ops.into_iter().map(|op| op.id).collect::<Vec<_>>();
    let by = |filter: ListFilter| {
        let store = Arc::clone(&store);
        async move { ids(all_pages(store.as_ref(), &filter, 4).await) }
    };
    expected_disk.reverse();
    assert_eq!(
        by(ListFilter {
            resource_id: Some("disk-1".into()),
            ..ListFilter::default()
        })
        .await,
        expected_disk
    );
    let bobs = by(ListFilter {
        created_by: Some("bob".into()),
        ..ListFilter::default()
    })
    .await;
    assert_eq!(bobs, [11u64, 9, 7, 5, 3, 1].map(id));
    let done_ops = by(ListFilter {
        state: StateFilter::Done,
        ..ListFilter::default()
    })
    .await;
    assert_eq!(done_ops, [8u64, 4, 0].map(id));
    let running = by(ListFilter {
        state: StateFilter::Running,
        ..ListFilter::default()
    })
    .await;
    assert_eq!(running.len(), 9);
    let window = by(ListFilter {
        created_after: Some(at(1_700_000_000_000_000_000 + 30)),
        created_before: Some(at(1_700_000_000_000_000_000 + 60)),
        ..ListFilter::default()
    })
    .await;
    assert_eq!(
        window,
        [5u64, 4, 3].map(id),
        "after is inclusive, before exclusive"
    );
    let scoped = by(ListFilter {
        scopes: Some(["folder-2".to_owned()].into()),
        ..ListFilter::default()
    })
    .await;
    assert_eq!(scoped, [10u64, 7, 4, 1].map(id), "only the listed scopes");
    let no_scope = by(ListFilter {
        scopes: Some(Default::default()),
        ..ListFilter::default()
    })
    .await;
    assert!(no_scope.is_empty());
    let combined = by(ListFilter {
        created_by: Some("alice".into()),
        state: StateFilter::Running,
        resource_id: Some("disk-1".into()),
        ..ListFilter::default()
    })
    .await;
    assert_eq!(combined, [6u64].map(id));
}

/// An operation with this id (padded to an id's length with `0`) at `tick`.
fn with_id(id: &str, tick: i64) -> Operation {
    let mut op = created_at_tick(0, tick);
    op.id = OperationId::parse("id", &format!("{id:0<20}")).expect("test ids are well-formed");
    op
}

fn described(n: u64, tick: i64, description: &str) -> Operation {
    let mut op = created_at_tick(n, tick);
    op.description = description.into();
    op
}

async fn insert_all(store: &dyn OperationStore, ops: &[Operation]) {
    for op in ops {
        store.insert(op, &created(op)).await.unwrap();
    }
}

fn ids_of(ops: &[Operation]) -> Vec<String> {
    ops.iter().map(|op| op.id.to_string()).collect()
}

pub async fn list_filters_by_id_prefix(store: Arc<dyn OperationStore>) {
    // Neighbours on both sides of every range's ends.
    let names = [
        "ab8", "ab9", "aba", "abc1", "abc2", "abd", "abz", "abzz", "ac0", "b", "zzy", "zzz",
    ];
    let ops: Vec<Operation> = names
        .iter()
        .enumerate()
        .map(|(i, name)| with_id(name, i as i64))
        .collect();
    insert_all(store.as_ref(), &ops).await;
    let by = |prefix: &str| {
        let store = Arc::clone(&store);
        let filter = ListFilter {
            id_prefix: Some(prefix.into()),
            ..ListFilter::default()
        };
        async move { ids_of(&all_pages(store.as_ref(), &filter, 3).await) }
    };
    let padded = |names: &[&str]| -> Vec<String> {
        names.iter().map(|name| format!("{name:0<20}")).collect()
    };
    assert_eq!(by("abc").await, padded(&["abc2", "abc1"]));
    assert_eq!(
        by("ab").await,
        padded(&["abzz", "abz", "abd", "abc2", "abc1", "aba", "ab9", "ab8"])
    );
    assert_eq!(by("ab9").await, padded(&["ab9"]), "9 is followed by a");
    assert_eq!(
        by("abz").await,
        padded(&["abzz", "abz"]),
        "z ends the range"
    );
    assert_eq!(by("zz").await, padded(&["zzz", "zzy"]), "no id is above z");
    assert_eq!(by("b").await, padded(&["b"]));
    assert_eq!(by(&format!("{:0<20}", "abc1")).await, padded(&["abc1"]));
    for none in ["abe", "abc3", "c", "0", "abc10000000000000001"] {
        assert!(by(none).await.is_empty(), "{none}");
    }
}

pub async fn list_pages_through_an_id_prefix_with_tokens(store: Arc<dyn OperationStore>) {
    use opsd_core::list::{decode_page_token, encode_page_token};
    // Matching ids interleaved in time with others, ties on time broken by id.
    let mut expected = Vec::new();
    for n in 0..9u64 {
        let op = with_id(&format!("pag{n}"), (n / 2) as i64);
        let other = with_id(&format!("paf{n}"), (n / 2) as i64);
        insert_all(store.as_ref(), &[op.clone(), other]).await;
        expected.push(op.id.to_string());
    }
    expected.reverse();
    let filter = ListFilter {
        id_prefix: Some("pag".into()),
        ..ListFilter::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store
            .list(&ListQuery {
                filter: filter.clone(),
                after: after.clone(),
                limit: 2,
            })
            .await
            .unwrap();
        seen.extend(ids_of(&page));
        if page.len() < 2 {
            break;
        }
        let token = encode_page_token(&filter, &Cursor::of(page.last().unwrap()));
        after = Some(decode_page_token(&filter, &token).unwrap());
    }
    assert_eq!(seen, expected, "every match once, newest first");
}

pub async fn list_searches_descriptions_case_insensitively(store: Arc<dyn OperationStore>) {
    let ops = [
        described(1, 1, "Viel ÄRGER mit disk-1"),
        described(2, 2, "viel ärger"),
        described(3, 3, "arger ohne umlaut"),
        described(4, 4, "Snapshot DISK-2"),
        described(5, 5, "ΣΟΦΊΑ"),
        described(6, 6, "straße"),
        described(7, 7, ""),
    ];
    insert_all(store.as_ref(), &ops).await;
    let by = |text: &str| {
        let store = Arc::clone(&store);
        let filter = ListFilter {
            description_contains: Some(text.into()),
            ..ListFilter::default()
        };
        async move { all_pages(store.as_ref(), &filter, 2).await }
    };
    let numbers = |ops: Vec<Operation>| ops.into_iter().map(|op| op.id).collect::<Vec<_>>();
    assert_eq!(numbers(by("ärger").await), [id(2), id(1)]);
    assert_eq!(
        numbers(by("ÄRGER").await),
        [id(2), id(1)],
        "non-ascii folds"
    );
    assert_eq!(numbers(by("äRgEr").await), [id(2), id(1)]);
    assert_eq!(numbers(by("disk").await), [id(4), id(1)], "ascii folds");
    assert_eq!(numbers(by("DISK-1").await), [id(1)]);
    assert_eq!(numbers(by("σοφία").await), [id(5)]);
    assert_eq!(
        numbers(by("STRASSE").await),
        [],
        "lowercase, not case folding"
    );
    assert_eq!(numbers(by("Straße").await), [id(6)]);
    assert_eq!(numbers(by("viel ärger mit disk-1").await), [id(1)]);
    assert_eq!(numbers(by("nothing like it").await), []);
    let found = by("snapshot").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], ops[3], "found rows come back whole");
}

pub async fn list_searches_descriptions_for_wildcards_literally(store: Arc<dyn OperationStore>) {
    let ops = [
        described(1, 1, "50% done"),
        described(2, 2, "500 done"),
        described(3, 3, "a_b"),
        described(4, 4, "axb"),
        described(5, 5, r"back\slash"),
        described(6, 6, "backslash"),
        described(7, 7, r"100%\_"),
    ];
    insert_all(store.as_ref(), &ops).await;
    let by = |text: &str| {
        let store = Arc::clone(&store);
        let filter = ListFilter {
            description_contains: Some(text.into()),
            ..ListFilter::default()
        };
        async move {
            all_pages(store.as_ref(), &filter, 10)
                .await
                .into_iter()
                .map(|op| op.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by("50%").await, [id(1)]);
    assert_eq!(by("%").await, [id(7), id(1)]);
    assert_eq!(by("5%0").await, []);
    assert_eq!(by("a_b").await, [id(3)]);
    assert_eq!(by("_").await, [id(7), id(3)]);
    assert_eq!(by(r"\").await, [id(7), id(5)]);
    assert_eq!(by(r"k\s").await, [id(5)]);
    assert_eq!(by(r"%\_").await, [id(7)]);
    assert_eq!(by(r"\%").await, []);
    assert_eq!(by("'").await, []);
}

pub async fn list_combines_search_with_the_other_filters_and_scopes(
    store: Arc<dyn OperationStore>,
) {
    let mut ops = Vec::new();
    for n in 0..12u64 {
        let mut op = with_id(if n % 2 == 0 { "fhm" } else { "epd" }, n as i64);
        op.id = OperationId::parse("id", &format!("{}{n:017}", &op.id.as_str()[..3])).unwrap();
        op.description = if n % 3 == 0 {
            format!("Resize DISK {n}")
        } else {
            format!("snapshot {n}")
        };
        op.resource_id = Some(format!("disk-{}", n % 2));
        op.created_by = if n < 6 { "alice" } else { "bob" }.into();
        op.scope = if n % 4 == 1 { "folder-2" } else { "folder-1" }.into();
        store.insert(&op, &created(&op)).await.unwrap();
        if n % 4 == 0 {
            store
                .compare_and_swap(&done(&op, 1), Some(&changed(&done(&op, 1))))
                .await
                .unwrap();
        }
        ops.push(op);
    }
    let by = |filter: ListFilter| {
        let store = Arc::clone(&store);
        async move { ids_of(&all_pages(store.as_ref(), &filter, 2).await) }
    };
    let expect = |pick: &dyn Fn(u64) -> bool| -> Vec<String> {
        (0..12u64)
            .rev()
            .filter(|n| pick(*n))
            .map(|n| ops[n as usize].id.to_string())
            .collect()
    };
    let disk = || Some("disk".to_owned());
    let fhm = || Some("fhm".to_owned());
    assert_eq!(
        by(ListFilter {
            description_contains: disk(),
            id_prefix: fhm(),
            ..ListFilter::default()
        })
        .await,
        expect(&|n| n % 3 == 0 && n % 2 == 0)
    );
    assert_eq!(
        by(ListFilter {
            description_contains: disk(),
            state: StateFilter::Running,
            ..ListFilter::default()
        })
        .await,
        expect(&|n| n % 3 == 0 && n % 4 != 0)
    );
    assert_eq!(
        by(ListFilter {
            description_contains: Some("SNAPSHOT".into()),
            created_by: Some("bob".into()),
            resource_id: Some("disk-1".into()),
            ..ListFilter::default()
        })
        .await,
        expect(&|n| n % 3 != 0 && n >= 6 && n % 2 == 1)
    );
    assert_eq!(
        by(ListFilter {
            description_contains: Some("snapshot".into()),
            id_prefix: Some("epd".into()),
            scopes: Some(["folder-2".to_owned()].into()),
            ..ListFilter::default()
        })
        .await,
        expect(&|n| n % 3 != 0 && n % 2 == 1 && n % 4 == 1)
    );
    assert_eq!(
        by(ListFilter {
            description_contains: disk(),
            created_after: Some(at(1_700_000_000_000_000_000 + 3)),
            created_before: Some(at(1_700_000_000_000_000_000 + 9)),
            ..ListFilter::default()
        })
        .await,
        expect(&|n| n % 3 == 0 && (3..9).contains(&n))
    );
    assert!(
        by(ListFilter {
            description_contains: disk(),
            scopes: Some(Default::default()),
            ..ListFilter::default()
        })
        .await
        .is_empty()
    );
    assert!(
        by(ListFilter {
            description_contains: disk(),
            id_prefix: Some("epd".into()),
            state: StateFilter::Done,
            ..ListFilter::default()
        })
        .await
        .is_empty(),
        "done ones are all fhm"
    );
}

pub async fn list_search_reads_past_many_rows_that_do_not_match(store: Arc<dyn OperationStore>) {
    // More rows that do not match than a backend reads at once, newer than the matches.
    let mut ops = Vec::new();
    for n in 0..3u64 {
        ops.push(described(n, n as i64, &format!("needle {n}")));
    }
    for n in 3..1_100u64 {
        ops.push(described(n, n as i64, "hay"));
    }
    ops.push(described(2_000, 2_000, "last NEEDLE"));
    insert_all(store.as_ref(), &ops).await;
    let filter = ListFilter {
        description_contains: Some("needle".into()),
        ..ListFilter::default()
    };
    let first = store
        .list(&ListQuery {
            filter: filter.clone(),
            after: None,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|op| op.id.clone()).collect::<Vec<_>>(),
        [id(2_000), id(2)]
    );
    let rest = store
        .list(&ListQuery {
            filter: filter.clone(),
            after: Some(Cursor::of(&first[1])),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|op| op.id.clone()).collect::<Vec<_>>(),
        [id(1), id(0)]
    );
    assert_eq!(all_pages(store.as_ref(), &filter, 1).await.len(), 4);
}

/// Creates racing with one idempotency key (a batching store may write them
/// in one statement) make one operation; plain creates among them all land.
pub async fn racing_creates_with_one_idempotency_key_make_one_operation(
    store: Arc<dyn OperationStore>,
) {
    let racers: Vec<_> = (0..32u64)
        .map(|n| {
            let store = Arc::clone(&store);
            let op = if n % 2 == 0 {
                with_key(sample(n), "alice", "one-key")
            } else {
                sample(n)
            };
            tokio::spawn(async move {
                let inserted = store.insert(&op, &created(&op)).await.unwrap();
                (op, inserted)
            })
        })
        .collect();
    let mut keyed_winners = Vec::new();
    let mut answers = Vec::new();
    for racer in racers {
        let (op, inserted) = racer.await.unwrap();
        if op.idempotency.is_none() {
            assert_eq!(inserted, Inserted::Created, "a plain create among them");
            assert_eq!(store.get(&op.id).await.unwrap(), Some(op));
        } else if inserted == Inserted::Created {
            keyed_winners.push(op);
        } else {
            answers.push((op, inserted));
        }
    }
    assert_eq!(keyed_winners.len(), 1, "one operation for the key");
    let winner = &keyed_winners[0];
    for (op, inserted) in answers {
        assert_eq!(inserted, Inserted::IdempotencyKeyUsed(winner.clone()));
        assert_eq!(
            store.get(&op.id).await.unwrap(),
            None,
            "no second operation"
        );
    }
    let timeline = store.list_events(&winner.id, 0, 10).await.unwrap();
    assert_eq!(timeline.len(), 1, "{timeline:?}");
}

pub async fn the_resource_guard_admits_one_running_exclusive_operation(
    store: Arc<dyn OperationStore>,
) {
    let exclusive = |n| {
        let mut op = sample(n);
        op.resource_id = Some("disk-1".into());
        op.exclusive = true;
        op
    };
    let first = exclusive(1);
    assert_eq!(
        store.insert(&first, &created(&first)).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(
        store
            .insert(&exclusive(2), &created(&exclusive(2)))
            .await
            .unwrap(),
        Inserted::ResourceBusy(first.clone())
    );
    // Non-exclusive work on the resource, and exclusive work elsewhere, go ahead.
    let mut shared = sample(3);
    shared.resource_id = Some("disk-1".into());
    assert_eq!(
        store.insert(&shared, &created(&shared)).await.unwrap(),
        Inserted::Created
    );
    let mut elsewhere = exclusive(4);
    elsewhere.resource_id = Some("disk-2".into());
    assert_eq!(
        store
            .insert(&elsewhere, &created(&elsewhere))
            .await
            .unwrap(),
        Inserted::Created
    );

    // Once the first is done, the next exclusive operation is admitted.
    store
        .compare_and_swap(&done(&first, 1), Some(&changed(&done(&first, 1))))
        .await
        .unwrap();
    assert_eq!(
        store
            .insert(&exclusive(5), &created(&exclusive(5)))
            .await
            .unwrap(),
        Inserted::Created
    );

    // Racing exclusive creates: exactly one is admitted.
    let racers: Vec<_> = (0..16u64)
        .map(|n| {
            let store = Arc::clone(&store);
            let mut op = exclusive(100 + n);
            op.resource_id = Some("disk-3".into());
            tokio::spawn(async move { store.insert(&op, &created(&op)).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for racer in racers {
        if racer.await.unwrap() == Inserted::Created {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 1);
}

pub async fn due_for_expiry_finds_lapsed_leases_and_deadlines(store: Arc<dyn OperationStore>) {
    let base = 1_700_000_000_000_000_000i64;
    let mut leased = sample(1);
    leased.lease_expires_at = Some(at(base + 100));
    let mut deadlined = sample(2);
    deadlined.deadline = Some(at(base + 50));
    let mut both = sample(3);
    both.deadline = Some(at(base + 500));
    both.lease_expires_at = Some(at(base + 300));
    let plain = sample(4);
    for op in [&leased, &deadlined, &both, &plain] {
        store.insert(op, &created(op)).await.unwrap();
    }
    let due = |now: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .due_for_expiry(at(now), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|op| op.id)
                .collect::<Vec<_>>()
        }
    };
    assert!(due(base + 49).await.is_empty());
    assert_eq!(due(base + 100).await, [id(2), id(1)], "earliest first");
    assert_eq!(due(base + 300).await, [id(2), id(1), id(3)]);
    assert_eq!(
        store.due_for_expiry(at(base + 300), 1).await.unwrap().len(),
        1
    );

    // A renewed lease moves out of reach; a done operation is never due.
    let mut renewed = next_version(&leased, State::Running);
    renewed.lease_expires_at = Some(at(base + 10_000));
    store
        .compare_and_swap(&renewed, Some(&changed(&renewed)))
        .await
        .unwrap();
    store
        .compare_and_swap(&done(&deadlined, 1), Some(&changed(&done(&deadlined, 1))))
        .await
        .unwrap();
    assert_eq!(due(base + 300).await, [id(3)]);
    assert_eq!(
        store.count_running().await.unwrap(),
        3,
        "all but the done one"
    );
}

pub async fn retention_deletes_exactly_the_expired_done_operations(store: Arc<dyn OperationStore>) {
    let base = 1_700_000_000_000_000_000i64;
    let mut finished = Vec::new();
    for n in 0..10u64 {
        let mut op = sample(n);
        op.modified_at = at(base + n as i64);
        op.idempotency = Some(Idempotency {
            key: format!("k{n}"),
            fingerprint: [1; 32],
        });
        store.insert(&op, &created(&op)).await.unwrap();
        if n < 8 {
            let finished_op = done(&op, 1);
            store
                .compare_and_swap(&finished_op, Some(&changed(&finished_op)))
                .await
                .unwrap();
            finished.push(finished_op);
        }
    }
    // Done ones last changed before base+5 (0..=3, modified_at = base+n+1) go; in batches.
    let cutoff = at(base + 5);
    assert_eq!(store.delete_done_before(cutoff, 3).await.unwrap(), 3);
    assert_eq!(store.delete_done_before(cutoff, 3).await.unwrap(), 1);
    assert_eq!(store.delete_done_before(cutoff, 3).await.unwrap(), 0);
    for n in 0..10u64 {
        let present = store.get(&id(n)).await.unwrap().is_some();
        assert_eq!(present, n >= 4, "operation {n}");
    }
    // Running operations are never deleted, however old.
    assert_eq!(
        store.delete_done_before(at(i64::MAX), 100).await.unwrap(),
        4
    );
    assert!(store.get(&id(8)).await.unwrap().is_some());
    assert!(store.get(&id(9)).await.unwrap().is_some());
    // A deleted operation's idempotency key is free again.
    let reused = with_key(sample(50), "alice", "k0");
    assert_eq!(
        store.insert(&reused, &created(&reused)).await.unwrap(),
        Inserted::Created
    );
}

pub async fn retention_is_announced_to_subscribers(store: Arc<dyn OperationStore>) {
    let mut changes = store.subscribe();
    let base = 1_700_000_000_000_000_000i64;
    let mut op = sample(1);
    op.modified_at = at(base);
    store.insert(&op, &created(&op)).await.unwrap();
    store
        .compare_and_swap(&done(&op, 1), Some(&changed(&done(&op, 1))))
        .await
        .unwrap();
    // Nothing deleted: nothing to announce. Then one deletion, announced with its cutoff.
    assert_eq!(store.delete_done_before(at(base), 10).await.unwrap(), 0);
    assert_eq!(
        store.delete_done_before(at(base + 10), 10).await.unwrap(),
        1
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("the purge was announced within 10 s")
            .expect("the change stream stays open");
        match change {
            Change::Purged { before } => {
                assert_eq!(before, at(base + 10), "only the deleting call is announced");
                break;
            }
            Change::Committed { .. } => {}
            Change::Resync => panic!("unexpected resync"),
        }
    }
}

async fn timeline(store: &dyn OperationStore, op: &Operation) -> Vec<opsd_core::Event> {
    store.list_events(&op.id, 0, 1_000).await.unwrap()
}

async fn whole_feed(store: &dyn OperationStore, filter: &EventFilter) -> Vec<opsd_core::Event> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_feed(after, filter, 3).await.unwrap();
        let Some(last) = page.last() else {
            return events;
        };
        after = last.position;
        events.extend(page);
    }
}

fn progressed(op: &Operation, work_done: i64) -> Operation {
    let mut next = next_version(op, op.state.clone());
    next.progress = Some(Progress {
        work_done,
        work_total: 100,
        message: format!("step {work_done}"),
        steps: vec![],
    });
    next
}

/// A stored change has exactly its event, with the sequence, version, actor
/// and details it was given; a refused or stale write leaves no event, and a
/// change without one (a lease renewal) adds none.
pub async fn every_committed_change_and_only_it_has_its_event(store: Arc<dyn OperationStore>) {
    let mut op = sample(1);
    op.resource_id = Some("disk-1".into());
    op.exclusive = true;
    op.lease_expires_at = Some(at(1_700_000_030_000_000_000));
    assert_eq!(
        store.insert(&op, &created(&op)).await.unwrap(),
        Inserted::Created
    );

    // Refused inserts write nothing.
    let mut taken = sample(1);
    taken.description = "another".into();
    assert_eq!(
        store.insert(&taken, &created(&taken)).await.unwrap(),
        Inserted::IdTaken
    );
    let mut busy = sample(2);
    busy.resource_id = Some("disk-1".into());
    busy.exclusive = true;
    assert!(matches!(
        store.insert(&busy, &created(&busy)).await.unwrap(),
        Inserted::ResourceBusy(_)
    ));
    assert_eq!(timeline(&*store, &busy).await, []);

    let progress = progressed(&op, 3);
    let update = NewEvent::of(EventKind::MetadataUpdated, &progress, "producer-1");
    assert_eq!(
        store
            .compare_and_swap(&progress, Some(&update))
            .await
            .unwrap(),
        Swapped::Swapped
    );
    // A stale write (another racer's view) writes no event either.
    let stale = progressed(&op, 4);
    assert!(matches!(
        store
            .compare_and_swap(
                &stale,
                Some(&NewEvent::of(EventKind::MetadataUpdated, &stale, "x"))
            )
            .await
            .unwrap(),
        Swapped::Stale(_)
    ));
    // A renewal: a new version, no event.
    let mut renewed = next_version(&progress, State::Running);
    renewed.lease_expires_at = Some(at(1_700_000_060_000_000_000));
    assert_eq!(
        store.compare_and_swap(&renewed, None).await.unwrap(),
        Swapped::Swapped
    );
    let done = next_version(
        &renewed,
        State::Done {
            outcome: Outcome::Error(RpcStatus {
                code: 8,
                message: "quota".into(),
                details: vec![Any {
                    type_url: "type.googleapis.com/google.rpc.QuotaFailure".into(),
                    value: vec![1],
                }],
            }),
            cancel_requested_at: None,
        },
    );
    let completion = NewEvent::of(EventKind::Completed, &done, "producer-1");
    assert_eq!(
        store
            .compare_and_swap(&done, Some(&completion))
            .await
            .unwrap(),
        Swapped::Swapped
    );

    let events = timeline(&*store, &op).await;
    let summary: Vec<(u64, EventKind, u64, &str)> = events
        .iter()
        .map(|e| (e.sequence, e.kind, e.version, e.actor.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, EventKind::Created, 1, "alice"),
            (2, EventKind::MetadataUpdated, 2, "producer-1"),
            (3, EventKind::Completed, 4, "producer-1"),
        ]
    );
    assert_eq!(events[0].details, created(&op).details);
    assert_eq!(events[0].details.lease_expires_at, op.lease_expires_at);
    assert_eq!(events[1].details.progress, progress.progress);
    assert_eq!(events[1].at, progress.modified_at);
    assert_eq!(events[2].details.error.as_ref().unwrap().code, 8);
    assert_eq!(events[2].details, completion.details);
    for event in &events {
        assert_eq!(event.operation_id, op.id);
        assert_eq!(event.scope, op.scope);
        assert_eq!(event.resource_id, op.resource_id);
        assert_eq!(event.created_by, op.created_by);
        assert_eq!(event.folded, 0);
    }
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    // Paging by sequence.
    let page = store.list_events(&op.id, 1, 1).await.unwrap();
    assert_eq!(page, events[1..2]);
    assert_eq!(store.list_events(&id(404), 0, 10).await.unwrap(), []);
}

/// Past the limit, each further metadata update replaces the last one (which
/// counts the folds and moves to a new feed position); other kinds are kept.
/// The creating call's trace context stays on the operation through every
/// change, and each event keeps the span of the call that made it (a folded
/// event the latest call's).
pub async fn the_trace_is_kept_on_the_operation_and_each_event(store: Arc<dyn OperationStore>) {
    let span = |n: u8| SpanRef::new([n; 16], [n; 8]).unwrap();
    let mut op = sample(1);
    op.trace = Some(TraceContext {
        span: span(1),
        flags: 1,
        state: Some("vendor=abc,other=1".into()),
    });
    store
        .insert(&op, &created(&op).traced(Some(span(1))))
        .await
        .unwrap();
    assert_eq!(store.get(&op.id).await.unwrap().as_ref(), Some(&op));

    let mut current = op.clone();
    // Past the limit, metadata updates fold: the folded event names the last span.
    for n in 2..=(MAX_EVENTS_PER_OPERATION as u8 + 2) {
        let next = progressed(&current, i64::from(n));
        let event = NewEvent::of(EventKind::MetadataUpdated, &next, "producer");
        // Every other change comes from an untraced call.
        let traced = n.is_multiple_of(2).then(|| span(n));
        store
            .compare_and_swap(&next, Some(&event.traced(traced)))
            .await
            .unwrap();
        current = next;
    }
    let done = next_version(
        &current,
        State::Done {
            outcome: response(1),
            cancel_requested_at: None,
        },
    );
    store
        .compare_and_swap(&done, Some(&changed(&done).traced(Some(span(0xee)))))
        .await
        .unwrap();
    let stored = store.get(&op.id).await.unwrap().unwrap();
    assert_eq!(stored.trace, op.trace, "the trace context never changes");

    let events = timeline(&*store, &op).await;
    let traces: Vec<Option<SpanRef>> = events.iter().map(|e| e.trace).collect();
    let last_update = MAX_EVENTS_PER_OPERATION as u8 + 2;
    let mut expected: Vec<Option<SpanRef>> = vec![Some(span(1))];
    expected
        .extend((2..MAX_EVENTS_PER_OPERATION as u8).map(|n| n.is_multiple_of(2).then(|| span(n))));
    expected.push(last_update.is_multiple_of(2).then(|| span(last_update)));
    expected.push(Some(span(0xee)));
    assert_eq!(traces, expected);
    let feed = store
        .read_feed(0, &EventFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        feed.iter().map(|e| e.trace).collect::<Vec<_>>(),
        expected,
        "the feed carries the same spans"
    );

    // Without a trace nothing appears from nowhere.
    let plain = sample(2);
    store.insert(&plain, &created(&plain)).await.unwrap();
    assert_eq!(store.get(&plain.id).await.unwrap().unwrap().trace, None);
    assert_eq!(timeline(&*store, &plain).await[0].trace, None);
}

pub async fn events_past_the_limit_fold_only_metadata_updates(store: Arc<dyn OperationStore>) {
    let op = sample(1);
    store.insert(&op, &created(&op)).await.unwrap();
    let mut current = op.clone();
    for n in 1..=(MAX_EVENTS_PER_OPERATION + 3) {
        let next = progressed(&current, n as i64);
        let event = NewEvent::of(EventKind::MetadataUpdated, &next, "producer");
        store.compare_and_swap(&next, Some(&event)).await.unwrap();
        current = next;
    }
    let events = timeline(&*store, &op).await;
    assert_eq!(events.len() as u64, MAX_EVENTS_PER_OPERATION);
    let last = events.last().unwrap();
    assert_eq!(last.sequence, MAX_EVENTS_PER_OPERATION);
    assert_eq!(last.kind, EventKind::MetadataUpdated);
    assert_eq!(last.folded, 4, "the last and the three after it, in one");
    assert_eq!(last.version, current.version);
    assert_eq!(
        last.details.progress, current.progress,
        "the latest progress"
    );
    let head = store.feed_bounds().await.unwrap().head;
    assert_eq!(
        last.position, head,
        "a fold moves the event to the feed's end"
    );

    // Other kinds are kept past the limit; a metadata update after one is kept too.
    let failing = {
        let mut next = next_version(&current, State::Running);
        next.reported_failure = Some(ReportedFailure {
            status: RpcStatus {
                code: 8,
                message: "quota".into(),
                details: vec![],
            },
            reported_at: next.modified_at,
        });
        next
    };
    let report = NewEvent::of(EventKind::FailureReported, &failing, "producer");
    store
        .compare_and_swap(&failing, Some(&report))
        .await
        .unwrap();
    let after = progressed(&failing, 99);
    let event = NewEvent::of(EventKind::MetadataUpdated, &after, "producer");
    store.compare_and_swap(&after, Some(&event)).await.unwrap();
    let kinds: Vec<(u64, EventKind)> = timeline(&*store, &op)
        .await
        .iter()
        .map(|e| (e.sequence, e.kind))
        .skip(MAX_EVENTS_PER_OPERATION as usize - 1)
        .collect();
    assert_eq!(
        kinds,
        [
            (MAX_EVENTS_PER_OPERATION, EventKind::MetadataUpdated),
            (MAX_EVENTS_PER_OPERATION + 1, EventKind::FailureReported),
            (MAX_EVENTS_PER_OPERATION + 2, EventKind::MetadataUpdated),
        ]
    );
}

/// Concurrent writers: every committed change's event appears in the feed
/// exactly once, positions only grow, and each operation's events come in
/// their sequence order. A reader that resumes after any position sees
/// exactly the rest.
pub async fn the_feed_delivers_every_event_once_in_commit_order(store: Arc<dyn OperationStore>) {
    let start = store.feed_bounds().await.unwrap().head;
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut written = 0;
                for n in 0..5u64 {
                    let op = sample(w * 100 + n);
                    store.insert(&op, &created(&op)).await.unwrap();
                    let next = progressed(&op, 1);
                    let event = NewEvent::of(EventKind::MetadataUpdated, &next, "w");
                    store.compare_and_swap(&next, Some(&event)).await.unwrap();
                    written += 2;
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    let feed = whole_feed(&*store, &EventFilter::default()).await;
    assert_eq!(feed.len(), written);
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    assert!(feed.iter().all(|e| e.position > start));
    let mut seen = std::collections::HashSet::new();
    let mut last_sequence = std::collections::HashMap::new();
    for event in &feed {
        assert!(
            seen.insert((event.operation_id.clone(), event.sequence)),
            "once"
        );
        let previous = last_sequence.insert(event.operation_id.clone(), event.sequence);
        assert_eq!(
            previous.unwrap_or(0) + 1,
            event.sequence,
            "in sequence order"
        );
    }
    assert_eq!(
        store.feed_bounds().await.unwrap().head,
        feed.last().unwrap().position
    );
    // Resuming after any position gives exactly the rest.
    for cut in [0, 1, feed.len() / 2, feed.len() - 1] {
        let rest = store
            .read_feed(feed[cut].position, &EventFilter::default(), 1_000)
            .await
            .unwrap();
        assert_eq!(rest, feed[cut + 1..]);
    }
}

pub async fn the_feed_filters_by_scope_resource_creator_prefix_and_kind(
    store: Arc<dyn OperationStore>,
) {
    let mut a = sample(1);
    a.scope = "folder-a".into();
    a.resource_id = Some("disk-1".into());
    let mut b = sample(2);
    b.scope = "folder-b".into();
    b.created_by = "bob".into();
    let mut c = sample(3);
    c.id = OperationId::parse("id", "fhm00000000000000003").unwrap();
    c.scope = "folder-a".into();
    for op in [&a, &b, &c] {
        store.insert(op, &created(op)).await.unwrap();
    }
    let done = next_version(
        &a,
        State::Done {
            outcome: response(1),
            cancel_requested_at: None,
        },
    );
    store
        .compare_and_swap(&done, Some(&changed(&done)))
        .await
        .unwrap();
    let ids = |events: Vec<opsd_core::Event>| -> Vec<(String, EventKind)> {
        events
            .into_iter()
            .map(|e| (e.operation_id.to_string(), e.kind))
            .collect()
    };
    let (ia, ib, ic) = (a.id.to_string(), b.id.to_string(), c.id.to_string());
    let created = EventKind::Created;
    let scoped = EventFilter {
        scopes: Some(["folder-a".to_owned()].into()),
        ..EventFilter::default()
    };
    assert_eq!(
        ids(whole_feed(&*store, &scoped).await),
        [
            (ia.clone(), created),
            (ic.clone(), created),
            (ia.clone(), EventKind::Completed)
        ]
    );
    let nothing = EventFilter {
        scopes: Some(Default::default()),
        ..EventFilter::default()
    };
    assert_eq!(whole_feed(&*store, &nothing).await, []);
    let on_disk = EventFilter {
        resource_id: Some("disk-1".into()),
        kinds: Some([EventKind::Completed].into()),
        ..EventFilter::default()
    };
    assert_eq!(
        ids(whole_feed(&*store, &on_disk).await),
        [(ia.clone(), EventKind::Completed)]
    );
    let by_bob = EventFilter {
        created_by: Some("bob".into()),
        ..EventFilter::default()
    };
    assert_eq!(ids(whole_feed(&*store, &by_bob).await), [(ib, created)]);
    let prefixed = EventFilter {
        id_prefix: Some("fhm".into()),
        ..EventFilter::default()
    };
    assert_eq!(ids(whole_feed(&*store, &prefixed).await), [(ic, created)]);
}

/// Retention takes an operation's events with it and moves the horizon past
/// the highest of them; the events of others stay.
pub async fn retention_deletes_events_and_moves_the_feed_horizon(store: Arc<dyn OperationStore>) {
    assert_eq!(store.feed_bounds().await.unwrap().horizon, 0);
    let old = sample(1);
    let kept = sample(2);
    store.insert(&old, &created(&old)).await.unwrap();
    store.insert(&kept, &created(&kept)).await.unwrap();
    let done = next_version(
        &old,
        State::Done {
            outcome: response(1),
            cancel_requested_at: None,
        },
    );
    store
        .compare_and_swap(&done, Some(&changed(&done)))
        .await
        .unwrap();
    let completion = timeline(&*store, &old).await.pop().unwrap();
    let head = store.feed_bounds().await.unwrap().head;
    assert_eq!(
        store
            .delete_done_before(done.modified_at.next(), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(timeline(&*store, &old).await, []);
    assert_eq!(timeline(&*store, &kept).await.len(), 1);
    let bounds = store.feed_bounds().await.unwrap();
    assert_eq!(bounds.horizon, completion.position);
    assert_eq!(bounds.head, head, "the head never moves back");
}

const OVERVIEW_T0: i64 = 1_700_000_000_000_000_000;

fn second(n: i64) -> Timestamp {
    at(OVERVIEW_T0 + n * 1_000_000_000)
}

fn prefixed(prefix: &str, n: u64) -> Operation {
    let mut op = sample(n);
    op.id = OperationId::parse("id", &format!("{prefix}{n:017}")).unwrap();
    op
}

/// Inserts `op` as created at `created`, then writes its next version with
/// `state` last changed at `modified` (unless it stays running and unchanged).
async fn stored_at(
    store: &dyn OperationStore,
    mut op: Operation,
    created: i64,
    modified: i64,
    state: State,
) -> Operation {
    op.created_at = second(created);
    op.modified_at = second(created);
    store.insert(&op, &created_event(&op)).await.unwrap();
    if modified == created && state == State::Running {
        return op;
    }
    let mut next = next_version(&op, state);
    next.modified_at = second(modified);
    assert_eq!(
        store
            .compare_and_swap(&next, Some(&changed(&next)))
            .await
            .unwrap(),
        Swapped::Swapped
    );
    next
}

fn created_event(op: &Operation) -> NewEvent {
    created(op)
}

fn failed_with(code: i32, cancel_requested_at: Option<Timestamp>) -> State {
    State::Done {
        outcome: Outcome::Error(RpcStatus {
            code,
            message: "failed".into(),
            details: Vec::new(),
        }),
        cancel_requested_at,
    }
}

/// The overview's rows: exact counts of running operations (with overdue
/// cancel requests) and of the window's done ones by prefix and error code;
/// the oldest running; running ones quiet or with a lapsing lease, quietest
/// first; the window's done ones, most recent first; all within the scopes
/// and the limits.
pub async fn the_overview_counts_by_prefix_and_reads_oldest_quiet_and_done(
    store: Arc<dyn OperationStore>,
) {
    use opsd_core::overview::{DoneCount, OverviewQuery, RunningCount};
    let store = &*store;
    let r1 = stored_at(store, prefixed("snp", 1), 0, 0, State::Running).await;
    let r2 = stored_at(
        store,
        prefixed("snp", 2),
        10,
        20,
        State::CancelRequested {
            requested_at: second(20),
        },
    )
    .await;
    let mut leased = prefixed("cpy", 3);
    leased.lease_expires_at = Some(second(105));
    let r3 = stored_at(store, leased, 30, 100, State::Running).await;
    let mut elsewhere = prefixed("cpy", 4);
    elsewhere.scope = "folder-2".into();
    let r4 = stored_at(store, elsewhere, 40, 100, State::Running).await;
    let ok = State::Done {
        outcome: response(1),
        cancel_requested_at: None,
    };
    let d5 = stored_at(store, prefixed("snp", 5), 0, 50, ok.clone()).await;
    let d6 = stored_at(store, prefixed("snp", 6), 0, 60, failed_with(9, None)).await;
    let d7 = stored_at(
        store,
        prefixed("snp", 7),
        0,
        70,
        failed_with(1, Some(second(55))),
    )
    .await;
    // Done before the window.
    stored_at(store, prefixed("cpy", 8), 0, 5, ok).await;

    let query = OverviewQuery {
        scopes: None,
        done_since: second(40),
        cancel_requested_before: second(25),
        quiet_before: second(50),
        lease_before: second(110),
        oldest: 2,
        candidates: 10,
        sample: 10,
    };
    let rows = store.overview(&query).await.unwrap();
    let running = |prefix: &str, running, cancel_overdue| RunningCount {
        prefix: prefix.into(),
        running,
        cancel_overdue,
    };
    assert_eq!(rows.running, [running("cpy", 2, 0), running("snp", 2, 1)]);
    let done = |error_code, count| DoneCount {
        prefix: "snp".into(),
        error_code,
        count,
    };
    assert_eq!(
        rows.done,
        [done(None, 1), done(Some(1), 1), done(Some(9), 1)]
    );
    assert_eq!(rows.oldest, [r1.clone(), r2.clone()]);
    assert_eq!(ids_of(&rows.candidates), ids_of(&[r1.clone(), r2, r3]));
    type Sampled = (String, Timestamp, Timestamp, Option<Timestamp>, Option<i32>);
    let sampled: Vec<Sampled> = rows
        .sample
        .iter()
        .map(|d| {
            (
                d.id.to_string(),
                d.created_at,
                d.modified_at,
                d.cancel_requested_at,
                d.error_code,
            )
        })
        .collect();
    assert_eq!(
        sampled,
        [
            (
                d7.id.to_string(),
                second(0),
                second(70),
                Some(second(55)),
                Some(1)
            ),
            (d6.id.to_string(), second(0), second(60), None, Some(9)),
            (d5.id.to_string(), second(0), second(50), None, None),
        ]
    );

    let limited = store
        .overview(&OverviewQuery {
            candidates: 1,
            sample: 1,
            oldest: 0,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(limited.oldest, []);
    assert_eq!(ids_of(&limited.candidates), ids_of(&[r1]));
    assert_eq!(limited.sample.len(), 1);
    assert_eq!(limited.sample[0].id, d7.id);

    let scoped = store
        .overview(&OverviewQuery {
            scopes: Some(["folder-2".to_owned()].into()),
            quiet_before: second(100),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(scoped.running, [running("cpy", 1, 0)]);
    assert_eq!(scoped.done, []);
    assert_eq!(scoped.oldest, std::slice::from_ref(&r4));
    assert_eq!(scoped.candidates, [r4]);
    assert_eq!(scoped.sample, []);
    let none = store
        .overview(&OverviewQuery {
            scopes: Some(Default::default()),
            ..query
        })
        .await
        .unwrap();
    assert_eq!(none, opsd_core::overview::OverviewRows::default());
}

/// For the typical gaps: the first events of the most recently changed
/// operations of each prefix, running or done since the cutoff, in the scopes.
pub async fn progress_samples_are_the_first_events_of_each_prefixs_recent_operations(
    store: Arc<dyn OperationStore>,
) {
    use opsd_core::overview::ProgressQuery;
    let store = &*store;
    // snp 1 reports at 0, 10, 20; snp 2 changed last at 5; snp 3 done before the cutoff.
    let a1 = stored_at(store, prefixed("snp", 1), 0, 10, State::Running).await;
    let mut a1_again = next_version(&a1, State::Running);
    a1_again.modified_at = second(20);
    store
        .compare_and_swap(&a1_again, Some(&changed(&a1_again)))
        .await
        .unwrap();
    stored_at(store, prefixed("snp", 2), 0, 5, State::Running).await;
    let done = State::Done {
        outcome: response(2),
        cancel_requested_at: None,
    };
    stored_at(store, prefixed("snp", 3), 0, 30, done.clone()).await;
    stored_at(store, prefixed("snp", 4), 0, 1, done.clone()).await;
    let b1 = stored_at(store, prefixed("cpy", 5), 0, 8, done).await;
    let mut other = prefixed("cpy", 6);
    other.scope = "folder-2".into();
    stored_at(store, other, 0, 9, State::Running).await;

    let query = ProgressQuery {
        scopes: Some(["folder-1".to_owned()].into()),
        changed_since: second(8),
        operations_per_prefix: 2,
        events_per_operation: 2,
    };
    let samples = store.progress_samples(&query).await.unwrap();
    let seen: Vec<(String, Vec<(EventKind, Timestamp)>)> = samples
        .into_iter()
        .map(|s| (s.id.to_string(), s.events))
        .collect();
    let snp3 = prefixed("snp", 3).id.to_string();
    assert_eq!(
        seen,
        [
            (
                b1.id.to_string(),
                vec![
                    (EventKind::Created, second(0)),
                    (EventKind::Completed, second(8))
                ]
            ),
            (
                a1.id.to_string(),
                vec![
                    (EventKind::Created, second(0)),
                    (EventKind::MetadataUpdated, second(10))
                ]
            ),
            (
                snp3,
                vec![
                    (EventKind::Created, second(0)),
                    (EventKind::Completed, second(30))
                ]
            ),
        ]
    );
    let one_each = store
        .progress_samples(&ProgressQuery {
            scopes: None,
            operations_per_prefix: 1,
            events_per_operation: 10,
            ..query
        })
        .await
        .unwrap();
    let ids: Vec<String> = one_each.iter().map(|s| s.id.to_string()).collect();
    // cpy 6 (9) is more recent than cpy 5 (8); snp 3 (30) than snp 1 (20).
    assert_eq!(
        ids,
        [
            prefixed("cpy", 6).id.to_string(),
            prefixed("snp", 3).id.to_string()
        ]
    );
    assert_eq!(one_each[1].events.len(), 2);
}
