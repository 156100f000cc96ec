//! The behaviour every [`OperationStore`] backend must have. Each case is a
//! plain async function; [`conformance_suite!`](crate::conformance_suite) turns
//! them into one `#[tokio::test]` per case for a backend.

use std::sync::Arc;

use opsd_core::{
    Any, CancellationPolicy, Idempotency, Operation, OperationId, Outcome, RpcStatus, State,
    Timestamp,
};

use crate::{Change, Inserted, OperationStore, StoreError, Swapped};

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
            insert_of_a_taken_id_is_refused,
            idempotency_key_returns_the_first_operation,
            idempotency_keys_are_scoped_to_the_creator,
            compare_and_swap_replaces_the_expected_version,
            compare_and_swap_with_a_stale_version_returns_the_current_one,
            compare_and_swap_of_a_missing_operation,
            racing_swaps_have_exactly_one_winner,
            every_state_and_field_round_trips,
            concurrent_inserts_are_all_readable_at_once,
            subscribers_hear_every_committed_change,
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
        state: State::Running,
        idempotency: None,
    }
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
    assert_eq!(store.insert(&op).await.unwrap(), Inserted::Created);
    assert_eq!(store.get(&op.id).await.unwrap(), Some(op));
}

pub async fn get_of_an_unknown_id_is_none(store: Arc<dyn OperationStore>) {
    assert_eq!(store.get(&id(404)).await.unwrap(), None);
}

pub async fn insert_of_a_taken_id_is_refused(store: Arc<dyn OperationStore>) {
    let first = sample(1);
    store.insert(&first).await.unwrap();
    let mut second = sample(1);
    second.description = "another".into();
    assert_eq!(store.insert(&second).await.unwrap(), Inserted::IdTaken);
    assert_eq!(store.get(&first.id).await.unwrap(), Some(first));
}

pub async fn idempotency_key_returns_the_first_operation(store: Arc<dyn OperationStore>) {
    let first = with_key(sample(1), "alice", "key-1");
    assert_eq!(store.insert(&first).await.unwrap(), Inserted::Created);
    let retry = with_key(sample(2), "alice", "key-1");
    assert_eq!(
        store.insert(&retry).await.unwrap(),
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
        store.compare_and_swap(&done).await.unwrap(),
        Swapped::Swapped
    );
    assert_eq!(
        store.insert(&retry).await.unwrap(),
        Inserted::IdempotencyKeyUsed(done)
    );
}

pub async fn idempotency_keys_are_scoped_to_the_creator(store: Arc<dyn OperationStore>) {
    let alice = with_key(sample(1), "alice", "key-1");
    let bob = with_key(sample(2), "bob", "key-1");
    assert_eq!(store.insert(&alice).await.unwrap(), Inserted::Created);
    assert_eq!(store.insert(&bob).await.unwrap(), Inserted::Created);
    assert_eq!(store.get(&bob.id).await.unwrap(), Some(bob));
}

pub async fn compare_and_swap_replaces_the_expected_version(store: Arc<dyn OperationStore>) {
    let op = sample(1);
    store.insert(&op).await.unwrap();
    let next = next_version(
        &op,
        State::CancelRequested {
            requested_at: at(5),
        },
    );
    assert_eq!(
        store.compare_and_swap(&next).await.unwrap(),
        Swapped::Swapped
    );
    assert_eq!(store.get(&op.id).await.unwrap(), Some(next));
}

pub async fn compare_and_swap_with_a_stale_version_returns_the_current_one(
    store: Arc<dyn OperationStore>,
) {
    let op = sample(1);
    store.insert(&op).await.unwrap();
    let winner = next_version(
        &op,
        State::Done {
            outcome: response(1),
            cancel_requested_at: None,
        },
    );
    store.compare_and_swap(&winner).await.unwrap();
    let loser = next_version(
        &op,
        State::Done {
            outcome: response(2),
            cancel_requested_at: None,
        },
    );
    assert_eq!(
        store.compare_and_swap(&loser).await.unwrap(),
        Swapped::Stale(winner.clone())
    );
    // A version from the future is just as stale.
    let mut skipping = next_version(&winner, State::Running);
    skipping.version += 5;
    assert_eq!(
        store.compare_and_swap(&skipping).await.unwrap(),
        Swapped::Stale(winner.clone())
    );
    assert_eq!(store.get(&op.id).await.unwrap(), Some(winner));
}

pub async fn compare_and_swap_of_a_missing_operation(store: Arc<dyn OperationStore>) {
    let next = next_version(&sample(9), State::Running);
    assert_eq!(
        store.compare_and_swap(&next).await.unwrap(),
        Swapped::Missing
    );
    assert_eq!(store.get(&next.id).await.unwrap(), None);
}

pub async fn racing_swaps_have_exactly_one_winner(store: Arc<dyn OperationStore>) {
    const RACERS: u8 = 32;
    for round in 0..5u64 {
        let op = sample(100 + round);
        store.insert(&op).await.unwrap();
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
                tokio::spawn(async move { (store.compare_and_swap(&next).await.unwrap(), next) })
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
        assert_eq!(store.insert(op).await.unwrap(), Inserted::Created);
    }
    for op in &ops {
        assert_eq!(store.get(&op.id).await.unwrap().as_ref(), Some(op));
    }
}

pub async fn concurrent_inserts_are_all_readable_at_once(store: Arc<dyn OperationStore>) {
    let tasks: Vec<_> = (0..200u64)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let op = sample(1_000 + n);
                assert_eq!(store.insert(&op).await.unwrap(), Inserted::Created);
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
    store.insert(&op).await.unwrap();
    store.close().await.unwrap();
    assert_eq!(store.insert(&sample(2)).await, Err(StoreError::Closed));
    assert_eq!(store.get(&op.id).await, Err(StoreError::Closed));
    let next = next_version(&op, State::Running);
    assert_eq!(store.compare_and_swap(&next).await, Err(StoreError::Closed));
}

pub async fn subscribers_hear_every_committed_change(store: Arc<dyn OperationStore>) {
    let mut changes = store.subscribe();
    let op = sample(1);
    store.insert(&op).await.unwrap();
    let next = next_version(
        &op,
        State::CancelRequested {
            requested_at: at(5),
        },
    );
    store.compare_and_swap(&next).await.unwrap();

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
