use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::Code;

fn new_request(cancellation: CancellationPolicy) -> NewOperation {
    NewOperation {
        resource_id: Some("vm-1".into()),
        cancellation,
        ..NewOperation::new("create instance")
    }
}

fn metadata_update(meta: Any) -> Update {
    Update {
        metadata: Some(meta),
        progress: None,
    }
}

fn running(cancellation: CancellationPolicy) -> Operation {
    let id = OperationId::parse("id", "ops0000000000000000a").unwrap();
    Operation::create(
        id,
        new_request(cancellation),
        "alice",
        Timestamp::from_unix_nanos(1_000),
    )
}

fn at(nanos: i64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

fn response(tag: u8) -> Outcome {
    Outcome::Response(Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".into(),
        value: vec![tag],
    })
}

fn failure(code: i32) -> Outcome {
    Outcome::Error(RpcStatus {
        code,
        message: "quota exceeded".into(),
        details: vec![],
    })
}

fn changed(t: Result<Transition, Error>) -> Operation {
    match t {
        Ok(Transition::Changed(op, _)) => op,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn precondition(t: Result<Transition, Error>) -> Precondition {
    match t {
        Err(Error::FailedPrecondition { precondition, .. }) => precondition,
        other => panic!("expected failed precondition, got {other:?}"),
    }
}

#[test]
fn a_new_operation_runs_and_records_its_creator() {
    let op = running(CancellationPolicy::Immediate);
    assert_eq!(op.state, State::Running);
    assert_eq!(op.created_by, "alice");
    assert_eq!(op.created_at, op.modified_at);
    assert_eq!(op.version, 1);
}

#[test]
fn immediate_cancel_completes_with_code_1() {
    let op = changed(running(CancellationPolicy::Immediate).cancel(at(2_000)));
    assert!(op.is_done());
    assert!(op.outcome().unwrap().is_cancelled());
    assert_eq!(op.cancel_requested_at(), Some(at(2_000)));
    assert_eq!(op.version, 2);
    // Cancelling again returns it unchanged.
    assert_eq!(op.cancel(at(3_000)), Ok(Transition::Unchanged));
}

#[test]
fn cooperative_cancel_waits_for_the_producer() {
    let op = changed(running(CancellationPolicy::Cooperative).cancel(at(2_000)));
    assert_eq!(
        op.state,
        State::CancelRequested {
            requested_at: at(2_000)
        }
    );
    assert_eq!(op.cancel(at(2_500)), Ok(Transition::Unchanged));
    // Progress may still be reported while the producer cleans up.
    let meta = Any {
        type_url: "type.googleapis.com/x.Y".into(),
        value: vec![1],
    };
    let op = changed(op.update(metadata_update(meta), at(2_600)));
    let done = changed(op.complete(failure(CANCELLED_CODE), at(3_000)));
    assert!(done.outcome().unwrap().is_cancelled());
    assert_eq!(done.cancel_requested_at(), Some(at(2_000)));
}

#[test]
fn not_cancellable_refuses_cancel() {
    let op = running(CancellationPolicy::NotCancellable);
    assert_eq!(
        precondition(op.cancel(at(2_000))),
        Precondition::NotCancellable
    );
}

#[test]
fn cancel_of_a_completed_operation_is_refused() {
    let op = changed(running(CancellationPolicy::Immediate).complete(response(1), at(2_000)));
    assert_eq!(
        precondition(op.cancel(at(3_000))),
        Precondition::AlreadyDone
    );
    let failed = changed(running(CancellationPolicy::Immediate).complete(failure(9), at(2_000)));
    assert_eq!(
        precondition(failed.cancel(at(3_000))),
        Precondition::AlreadyDone
    );
}

#[test]
fn the_first_completion_wins() {
    let op = changed(running(CancellationPolicy::Immediate).complete(response(1), at(2_000)));
    assert_eq!(
        op.complete(response(1), at(3_000)),
        Ok(Transition::Unchanged)
    );
    assert_eq!(
        precondition(op.complete(response(2), at(3_000))),
        Precondition::CompletedDifferently
    );
    assert_eq!(
        precondition(op.complete(failure(9), at(3_000))),
        Precondition::CompletedDifferently
    );
}

#[test]
fn completing_an_immediately_cancelled_operation_is_refused() {
    let op = changed(running(CancellationPolicy::Immediate).cancel(at(2_000)));
    assert_eq!(
        precondition(op.complete(response(1), at(3_000))),
        Precondition::CompletedDifferently
    );
}

fn status(code: i32, message: &str) -> RpcStatus {
    RpcStatus {
        code,
        message: message.into(),
        details: vec![],
    }
}

#[test]
fn a_reported_failure_shows_while_the_operation_runs() {
    let op = running(CancellationPolicy::Immediate);
    assert_eq!(op.visible_error(), None);
    let failing = changed(op.report_failure(status(8, "quota exceeded"), at(2_000)));
    assert!(!failing.is_done(), "a reported failure does not complete");
    assert_eq!(failing.state, State::Running);
    assert_eq!(failing.visible_error(), Some(&status(8, "quota exceeded")));
    assert_eq!(
        failing.reported_failure,
        Some(ReportedFailure {
            status: status(8, "quota exceeded"),
            reported_at: at(2_000),
        })
    );
    assert_eq!(failing.version, 2);
    // The same report again is a no-op; another replaces it.
    assert_eq!(
        failing.report_failure(status(8, "quota exceeded"), at(3_000)),
        Ok(Transition::Unchanged)
    );
    let replaced = changed(failing.report_failure(status(8, "rolling back"), at(3_000)));
    assert_eq!(replaced.visible_error(), Some(&status(8, "rolling back")));
    assert_eq!(replaced.reported_failure.unwrap().reported_at, at(3_000));
}

#[test]
fn after_a_reported_failure_only_an_error_completes() {
    let failing = changed(
        running(CancellationPolicy::Immediate).report_failure(status(8, "quota"), at(2_000)),
    );
    assert_eq!(
        precondition(failing.complete(response(1), at(3_000))),
        Precondition::FailureReported
    );
    assert_eq!(Precondition::FailureReported.reason(), "FAILURE_REPORTED");

    // No result: the reported error; and repeating that is a no-op.
    let done = changed(failing.complete(None, at(3_000)));
    assert_eq!(done.outcome(), Some(&Outcome::Error(status(8, "quota"))));
    assert_eq!(done.complete(None, at(4_000)), Ok(Transition::Unchanged));
    assert_eq!(
        done.complete(Outcome::Error(status(8, "quota")), at(4_000)),
        Ok(Transition::Unchanged)
    );
    assert_eq!(
        precondition(done.complete(failure(9), at(4_000))),
        Precondition::CompletedDifferently
    );
    // The report stays on the done operation.
    assert_eq!(done.reported_failure, failing.reported_failure);
    assert_eq!(done.visible_error(), Some(&status(8, "quota")));

    // An error of the producer's choosing wins over the reported one.
    let other = changed(failing.complete(failure(13), at(3_000)));
    assert_eq!(other.outcome(), Some(&failure(13)));
}

#[test]
fn completing_without_a_result_needs_a_reported_failure() {
    let op = running(CancellationPolicy::Immediate);
    match op.complete(None, at(2_000)) {
        Err(Error::InvalidArgument(violations)) => assert_eq!(violations[0].field, "result"),
        other => panic!("expected invalid argument, got {other:?}"),
    }
    let done = changed(op.complete(response(1), at(2_000)));
    assert_eq!(
        done.complete(None, at(3_000)).unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[test]
fn a_done_operation_takes_no_failure_report() {
    let done = changed(running(CancellationPolicy::Immediate).complete(response(1), at(2_000)));
    assert_eq!(
        precondition(done.report_failure(status(8, "late"), at(3_000))),
        Precondition::FailureOfDone
    );
}

#[test]
fn cancel_lease_and_deadline_end_a_failing_operation_with_their_own_error() {
    let report = |op: Operation| changed(op.report_failure(status(8, "quota"), at(2_000)));

    let immediate = report(running(CancellationPolicy::Immediate));
    let cancelled = changed(immediate.cancel(at(3_000)));
    assert!(cancelled.outcome().unwrap().is_cancelled());

    // Cooperative: the request is recorded, the failure stays, the producer finishes.
    let cooperative = report(running(CancellationPolicy::Cooperative));
    let requested = changed(cooperative.cancel(at(3_000)));
    assert!(!requested.is_done());
    assert_eq!(requested.visible_error(), Some(&status(8, "quota")));
    let done = changed(requested.complete(None, at(4_000)));
    assert_eq!(done.outcome(), Some(&Outcome::Error(status(8, "quota"))));
    assert_eq!(done.cancel_requested_at(), Some(at(3_000)));

    let mut leased = report(running(CancellationPolicy::Immediate));
    leased.lease_expires_at = Some(at(5_000));
    let lapsed = changed(Ok(leased.expire(at(5_000))));
    assert_eq!(
        lapsed.outcome(),
        Some(&Outcome::Error(status(
            LEASE_LAPSED_CODE,
            LEASE_LAPSED_MESSAGE
        )))
    );

    let mut bounded = report(running(CancellationPolicy::Immediate));
    bounded.deadline = Some(at(5_000));
    let exceeded = changed(Ok(bounded.expire(at(5_000))));
    assert_eq!(
        exceeded.outcome(),
        Some(&Outcome::Error(status(DEADLINE_CODE, DEADLINE_MESSAGE)))
    );
}

#[test]
fn metadata_of_a_done_operation_cannot_change() {
    let op = changed(running(CancellationPolicy::Immediate).complete(response(1), at(2_000)));
    let meta = Any {
        type_url: "type.googleapis.com/x.Y".into(),
        value: vec![],
    };
    let err = op.update(metadata_update(meta), at(3_000)).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[test]
fn modified_at_moves_forward_when_the_clock_steps_back() {
    let op = running(CancellationPolicy::Cooperative);
    let next = changed(op.cancel(at(10)));
    assert!(next.modified_at > op.modified_at);
    assert!(next.created_at <= next.modified_at);
}

#[test]
fn a_retry_is_told_from_a_reused_key() {
    let mut request = new_request(CancellationPolicy::Immediate);
    request.idempotency_key = Some("key-1".into());
    let id = OperationId::parse("id", "ops0000000000000000a").unwrap();
    let op = Operation::create(id, request.clone(), "alice", at(1));
    assert_eq!(op.answer_retry(&request), Ok(()));
    let mut other = request.clone();
    other.description = "something else".into();
    assert_eq!(
        op.answer_retry(&other).unwrap_err().code(),
        Code::FailedPrecondition
    );
}

#[test]
fn fingerprints_separate_fields() {
    let mut a = new_request(CancellationPolicy::Immediate);
    a.description = "ab".into();
    a.resource_id = Some("c".into());
    let mut b = a.clone();
    b.description = "a".into();
    b.resource_id = Some("bc".into());
    assert_ne!(a.fingerprint(), b.fingerprint());
    let mut c = a.clone();
    c.resource_id = None;
    let mut d = a.clone();
    d.resource_id = Some(String::new());
    assert_ne!(c.fingerprint(), d.fingerprint());
}

#[derive(Clone, Debug)]
enum Command {
    Cancel,
    Complete(Outcome),
    /// Complete without a result: with the reported failure.
    CompleteAsReported,
    ReportFailure(i32),
    UpdateMetadata(u8),
    Heartbeat(u64),
    Expire,
    /// Moves the clock by this many nanoseconds (backwards too).
    Tick(i64),
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Cancel),
        (0u8..3).prop_map(|t| Command::Complete(response(t))),
        prop_oneof![Just(1), Just(9), Just(13)].prop_map(|c| Command::Complete(failure(c))),
        Just(Command::CompleteAsReported),
        prop_oneof![Just(8), Just(9)].prop_map(Command::ReportFailure),
        (0u8..4).prop_map(Command::UpdateMetadata),
        (1u64..3).prop_map(Command::Heartbeat),
        Just(Command::Expire),
        (-5_000i64..5_000).prop_map(Command::Tick),
        (0i64..3_000_000_000).prop_map(Command::Tick),
    ]
}

fn policy() -> impl Strategy<Value = CancellationPolicy> {
    prop_oneof![
        Just(CancellationPolicy::Immediate),
        Just(CancellationPolicy::Cooperative),
        Just(CancellationPolicy::NotCancellable),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn random_histories_keep_every_invariant(
        cancellation in policy(),
        lease in prop::option::of(1u64..3),
        deadline in prop::option::of(1i64..6_000_000_000),
        commands in prop::collection::vec(command(), 0..40),
    ) {
        let mut op = running(cancellation);
        op.lease_expires_at = lease.map(|secs| op.created_at.saturating_add(Duration::from_secs(secs)));
        op.deadline = deadline.map(|d| Timestamp::from_unix_nanos(op.created_at.unix_nanos() + d));
        let mut now = 1_000i64;
        let mut first_outcome: Option<Outcome> = None;

        for command in commands {
            let before = op.clone();
            let result = match command.clone() {
                Command::Tick(delta) => { now += delta; continue; }
                Command::Cancel => op.cancel(at(now)),
                Command::Complete(outcome) => op.complete(outcome, at(now)),
                Command::CompleteAsReported => op.complete(None, at(now)),
                Command::ReportFailure(code) => op.report_failure(
                    RpcStatus { code, message: format!("failing {code}"), details: vec![] },
                    at(now),
                ),
                Command::UpdateMetadata(tag) => op.update(
                    metadata_update(Any { type_url: "type.googleapis.com/x.Progress".into(), value: vec![tag] }),
                    at(now),
                ),
                Command::Heartbeat(secs) => op.heartbeat(Duration::from_secs(secs), at(now)),
                Command::Expire => Ok(op.expire(at(now))),
            };
            let refused = result.is_err();
            let unchanged = matches!(result, Ok(Transition::Unchanged));
            match result {
                Ok(Transition::Changed(next, kind)) => {
                    // Every change makes one event, except renewing a held lease.
                    let renewal = matches!(command, Command::Heartbeat(_)) && before.lease_expires_at.is_some();
                    prop_assert_eq!(kind.is_none(), renewal, "{:?} made {:?}", command, kind);
                    if let Some(kind) = kind {
                        prop_assert_eq!(kind.completes() || (kind == crate::EventKind::Completed), next.is_done());
                        let expected = match &command {
                            Command::Cancel if next.is_done() => crate::EventKind::Completed,
                            Command::Cancel => crate::EventKind::CancelRequested,
                            Command::Complete(_) | Command::CompleteAsReported => crate::EventKind::Completed,
                            Command::ReportFailure(_) => crate::EventKind::FailureReported,
                            Command::UpdateMetadata(_) => crate::EventKind::MetadataUpdated,
                            Command::Heartbeat(_) => crate::EventKind::LeaseTaken,
                            Command::Expire if before.deadline.is_some_and(|d| d <= at(now)) => crate::EventKind::DeadlineExceeded,
                            Command::Expire => crate::EventKind::LeaseLapsed,
                            Command::Tick(_) => unreachable!("ticks change nothing"),
                        };
                        prop_assert_eq!(kind, expected);
                    }
                    prop_assert_eq!(next.version, before.version + 1);
                    prop_assert!(next.modified_at > before.modified_at, "modified_at moves on every change");
                    prop_assert_eq!(&next.id, &before.id);
                    prop_assert_eq!(next.created_at, before.created_at);
                    prop_assert!(!before.is_done(), "a done operation never changes");
                    op = next;
                }
                Ok(Transition::Unchanged) => {}
                Err(e) if matches!(command, Command::CompleteAsReported) && before.reported_failure.is_none() => {
                    // Nothing to complete with: the request itself is incomplete.
                    prop_assert_eq!(e.code(), Code::InvalidArgument);
                }
                Err(e) => {
                    prop_assert_eq!(e.code(), Code::FailedPrecondition);
                    if let Command::Cancel = command {
                        let cancellable_running = !before.is_done()
                            && before.cancellation != CancellationPolicy::NotCancellable;
                        prop_assert!(!cancellable_running);
                    }
                }
            }
            prop_assert!(op.created_at <= op.modified_at);
            if before.is_done() {
                prop_assert!(op.is_done(), "done never reverts");
            }
            if before.reported_failure.is_some() {
                // A reported failure is never taken back, and never turns into a response.
                prop_assert!(op.reported_failure.is_some());
                prop_assert!(!matches!(op.outcome(), Some(Outcome::Response(_))));
            }
            if !op.is_done() {
                // While running, the visible error is exactly the reported one.
                prop_assert_eq!(op.visible_error(), op.reported_failure.as_ref().map(|f| &f.status));
            }
            if let Command::ReportFailure(_) = command {
                prop_assert_eq!(refused, before.is_done(), "a report is refused exactly when done");
            }
            if let Some(outcome) = op.outcome() {
                // Exactly one result by construction; and it is the first one.
                let first = first_outcome.get_or_insert_with(|| outcome.clone());
                prop_assert_eq!(&*first, outcome, "the first completion wins");
            }
            if let Command::Expire = command {
                // Expiry completes exactly the running operations past their deadline or lease.
                let due = before.expires_at().is_some_and(|t| t <= at(now));
                prop_assert_eq!(op.is_done() && !before.is_done(), due);
                if due {
                    let code = match op.outcome() { Some(Outcome::Error(s)) => s.code, _ => 0 };
                    let deadline_passed = before.deadline.is_some_and(|d| d <= at(now));
                    prop_assert_eq!(code, if deadline_passed { DEADLINE_CODE } else { LEASE_LAPSED_CODE });
                }
            }
            if let (Command::Complete(attempt), true) = (&command, before.is_done()) {
                // A repeat of the identical completion is a no-op success, anything else is refused.
                let repeat = before.outcome() == Some(attempt);
                prop_assert_eq!(unchanged, repeat);
                prop_assert_eq!(refused, !repeat);
            }
        }
    }
}

#[test]
fn a_lapsed_lease_aborts_and_a_passed_deadline_exceeds_once() {
    let mut op = running(CancellationPolicy::Immediate);
    op.lease_expires_at = Some(at(5_000));
    assert_eq!(op.expire(at(4_999)), Transition::Unchanged);
    let renewed = changed(op.heartbeat(Duration::from_secs(1), at(4_000)));
    assert_eq!(renewed.lease_expires_at, Some(at(1_000_004_000)));
    assert_eq!(
        renewed.expire(at(5_000)),
        Transition::Unchanged,
        "renewed in time"
    );
    let Transition::Changed(aborted, _) = renewed.expire(at(1_000_004_000)) else {
        panic!("expected the lease to lapse");
    };
    assert!(matches!(aborted.outcome(), Some(Outcome::Error(s)) if s.code == LEASE_LAPSED_CODE));
    assert_eq!(
        aborted.expire(at(i64::MAX)),
        Transition::Unchanged,
        "exactly once"
    );
    assert_eq!(
        precondition(aborted.heartbeat(Duration::from_secs(1), at(2_000_000_000))),
        Precondition::HeartbeatOfDone
    );

    let mut op = running(CancellationPolicy::Immediate);
    op.deadline = Some(at(3_000));
    op.lease_expires_at = Some(at(3_000));
    let Transition::Changed(late, _) = op.expire(at(3_000)) else {
        panic!("expected the deadline to pass");
    };
    assert!(matches!(late.outcome(), Some(Outcome::Error(s)) if s.code == DEADLINE_CODE));
}

#[test]
fn progress_and_metadata_update_independently() {
    let op = running(CancellationPolicy::Immediate);
    let progress = crate::Progress {
        work_done: 1,
        work_total: 4,
        ..Default::default()
    };
    let with_progress = changed(op.update(
        Update {
            metadata: None,
            progress: Some(progress.clone()),
        },
        at(2_000),
    ));
    let meta = Any {
        type_url: "type.googleapis.com/x.Y".into(),
        value: vec![1],
    };
    let both = changed(with_progress.update(metadata_update(meta.clone()), at(3_000)));
    assert_eq!(both.progress, Some(progress));
    assert_eq!(both.metadata, Some(meta.clone()));
    assert_eq!(
        both.update(metadata_update(meta), at(4_000)),
        Ok(Transition::Unchanged)
    );
}

#[test]
fn create_requests_are_checked_against_the_clock() {
    let now = at(1_000);
    let mut request = NewOperation::new("x");
    request.deadline = Some(now);
    assert!(
        request.validate(now).is_err(),
        "a deadline must be in the future"
    );
    request.deadline = Some(at(1_001));
    assert!(request.validate(now).is_ok());
    request.exclusive = true;
    assert!(
        request.validate(now).is_err(),
        "exclusive needs a resource id"
    );
    request.resource_id = Some("disk-1".into());
    assert!(request.validate(now).is_ok());
    request.lease_duration = Some(Duration::from_millis(10));
    assert!(request.validate(now).is_err());
}

#[test]
fn every_request_field_is_in_the_fingerprint() {
    let base = new_request(CancellationPolicy::Immediate);
    let variants: Vec<fn(&mut NewOperation)> = vec![
        |r| r.description.push('!'),
        |r| r.resource_id = None,
        |r| {
            r.metadata = Some(Any {
                type_url: "t/x".into(),
                value: vec![],
            })
        },
        |r| r.cancellation = CancellationPolicy::Cooperative,
        |r| r.id_prefix = Some(IdPrefix::parse("p", "fhm").unwrap()),
        |r| r.lease_duration = Some(Duration::from_secs(5)),
        |r| r.deadline = Some(at(5)),
        |r| r.exclusive = true,
        |r| r.scope = Some("folder-b".into()),
    ];
    for (i, change) in variants.iter().enumerate() {
        let mut changed = base.clone();
        change(&mut changed);
        assert_ne!(changed.fingerprint(), base.fingerprint(), "field {i}");
    }
}

#[test]
fn a_late_heartbeat_does_not_revive_a_lapsed_lease() {
    let mut op = running(CancellationPolicy::Immediate);
    op.lease_expires_at = Some(at(5_000));
    assert_eq!(
        precondition(op.heartbeat(Duration::from_secs(1), at(5_000))),
        Precondition::LeaseLapsed
    );
    assert!(op.heartbeat(Duration::from_secs(1), at(4_999)).is_ok());
}
