//! Checks that a recorded history of calls on operations is consistent with
//! one order of state changes per operation, as design.md §3 promises.
//!
//! Every call is recorded with when it started and ended (one clock, the
//! test's) and what it returned. A returned state is identified by its
//! `modified_at`, which strictly increases with every change of an operation
//! (so it orders the versions of one operation). Per operation the checker
//! verifies:
//!
//! 1. one state per version: two answers with the same `modified_at` are identical;
//! 2. a valid chain: ordered by `modified_at`, nothing follows a done state (so
//!    there is a single outcome and done never reverts), a cancel request never
//!    disappears, and what never changes (id, creator, description, policy…) does not;
//! 3. monotonic reads in real time: a call that started after another call ended
//!    never returns an older state than that call returned, whatever replica
//!    each went to (writes count: their answer is the state they made);
//! 4. answers agree with the outcome: an acknowledged completion returned its
//!    own outcome, an acknowledged cancel returned a cancel request or the
//!    CANCELLED outcome, and a refusal (FAILED_PRECONDITION) is justified by a
//!    completion that had begun before the refusal ended;
//! 5. every Watch stream moves strictly forward, and ends only after done;
//! 6. no other error: nothing is NOT_FOUND once created, nothing is INTERNAL.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use opsd_client::{CancellationPolicy, Operation, OpsdOperation};
use opsd_proto::opsd::v1::OperationState;
use opsd_proto::yandex::cloud::operation::operation::Result as WireOutcome;
use tonic::Code;

/// gRPC's CANCELLED, the code of a cancelled operation's error.
const CANCELLED: i32 = 1;

#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Create,
    Cancel,
    /// A completion asking for this outcome.
    Complete(WireOutcome),
    Get,
    Wait,
    /// One message of a Watch stream, or its end.
    Watch {
        stream: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    State(Box<OpsdOperation>),
    Failed(Code),
    /// A Watch stream ended without an error.
    Ended,
}

/// One call, or one message of a stream.
#[derive(Clone, Debug)]
pub struct Event {
    pub operation: String,
    pub call: Call,
    pub replica: usize,
    /// When the call started and when this answer arrived (one clock for all).
    pub start: Duration,
    pub end: Duration,
    pub answer: Answer,
}

#[derive(Debug, Default)]
pub struct Report {
    pub operations: usize,
    pub events: usize,
    /// Operations whose cancel or completion was refused: contested races.
    pub contested: usize,
    pub violations: Vec<String>,
}

/// Which errors are expected besides refusals (an outage's UNAVAILABLE, say).
/// A write that failed so is ambiguous: it may or may not have happened.
pub fn check(events: &[Event], tolerated: &[Code]) -> Report {
    let mut by_operation: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_operation
            .entry(event.operation.as_str())
            .or_default()
            .push(event);
    }
    let mut report = Report {
        operations: by_operation.len(),
        events: events.len(),
        ..Report::default()
    };
    for (id, events) in by_operation {
        let mut violations = Vec::new();
        let contested = check_operation(&events, tolerated, &mut violations);
        report.contested += usize::from(contested);
        report.violations.extend(
            violations
                .into_iter()
                .map(|v| format!("operation {id}: {v}")),
        );
    }
    report
}

type Version = (i64, i32);

fn version(op: &OpsdOperation) -> Version {
    op.operation
        .as_ref()
        .and_then(|o| o.modified_at.as_ref())
        .map_or((i64::MIN, 0), |t| (t.seconds, t.nanos))
}

fn is_done(op: &OpsdOperation) -> bool {
    op.operation.as_ref().is_some_and(|o| o.done)
}

fn outcome(op: &OpsdOperation) -> Option<&WireOutcome> {
    op.operation.as_ref().and_then(|o| o.result.as_ref())
}

fn final_outcome_of(done: Option<&OpsdOperation>) -> Option<&WireOutcome> {
    done.and_then(outcome)
}

fn is_cancelled(outcome: &WireOutcome) -> bool {
    matches!(outcome, WireOutcome::Error(status) if status.code == CANCELLED)
}

fn cancel_requested(op: &OpsdOperation) -> bool {
    op.cancel_requested_at.is_some()
}

/// Whether this is opsd's full view; the clouds' Cancel answers only the
/// public part (see [`cloud_view`]), without the cancel request or policy.
fn is_full(op: &OpsdOperation) -> bool {
    op.state != OperationState::Unspecified as i32
}

/// The clouds' view of an operation (what their Cancel answers), as a state
/// the checker compares on the public fields only.
pub fn cloud_view(op: Operation) -> OpsdOperation {
    OpsdOperation {
        operation: Some(op),
        ..OpsdOperation::default()
    }
}

/// Two answers describe the same state (on the fields both carry).
fn same_state(a: &OpsdOperation, b: &OpsdOperation) -> bool {
    if is_full(a) && is_full(b) {
        a == b
    } else {
        a.operation == b.operation
    }
}

/// What never changes over an operation's life, in the public view…
fn public_identity(op: &OpsdOperation) -> impl PartialEq + std::fmt::Debug + '_ {
    op.operation
        .as_ref()
        .map(|o| (&o.id, &o.description, &o.created_at, &o.created_by))
}

/// …and in opsd's own.
fn identity(op: &OpsdOperation) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        public_identity(op),
        &op.resource_id,
        op.cancellation_policy,
        &op.scope,
        op.exclusive,
        &op.deadline,
    )
}

fn describe(call: &Call) -> &'static str {
    match call {
        Call::Create => "Create",
        Call::Cancel => "Cancel",
        Call::Complete(_) => "Complete",
        Call::Get => "Get",
        Call::Wait => "Wait",
        Call::Watch { .. } => "Watch",
    }
}

/// Returns whether a cancel or completion was refused (a contested race).
fn check_operation(events: &[&Event], tolerated: &[Code], violations: &mut Vec<String>) -> bool {
    let states: Vec<(&Event, &OpsdOperation)> = events
        .iter()
        .filter_map(|e| match &e.answer {
            Answer::State(op) => Some((*e, op.as_ref())),
            _ => None,
        })
        .collect();

    // 1. One state per version (opsd's full view preferred over the public one).
    let mut versions: BTreeMap<Version, &OpsdOperation> = BTreeMap::new();
    for (event, op) in &states {
        match versions.get(&version(op)) {
            Some(seen) if !same_state(seen, op) => violations.push(format!(
                "two different states at modified_at {:?}: {seen:?} and, from {} on replica {}, {op:?}",
                version(op),
                describe(&event.call),
                event.replica
            )),
            Some(seen) if is_full(seen) || !is_full(op) => {}
            _ => {
                versions.insert(version(op), op);
            }
        }
    }

    // 2. A valid chain of versions.
    let chain: Vec<&OpsdOperation> = versions.values().copied().collect();
    for pair in chain.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if is_done(before) {
            violations.push(format!(
                "changed after done: {:?} followed by {:?}",
                outcome(before),
                outcome(after)
            ));
        }
        if public_identity(before) != public_identity(after) {
            violations.push(format!(
                "immutable fields changed: {:?} became {:?}",
                public_identity(before),
                public_identity(after)
            ));
        }
    }
    let full: Vec<&OpsdOperation> = chain.iter().copied().filter(|op| is_full(op)).collect();
    for pair in full.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if cancel_requested(before) && !cancel_requested(after) {
            violations.push(format!(
                "cancel request reverted at modified_at {:?}",
                version(after)
            ));
        }
        if identity(before) != identity(after) {
            violations.push(format!(
                "immutable fields changed: {:?} became {:?}",
                identity(before),
                identity(after)
            ));
        }
    }
    for op in &chain {
        if is_done(op) != outcome(op).is_some() {
            violations.push(format!(
                "done is {} but the result is {:?}",
                is_done(op),
                outcome(op)
            ));
        }
    }
    for op in &full {
        let expected = match (is_done(op), cancel_requested(op)) {
            (true, _) => OperationState::Done,
            (false, true) => OperationState::CancelRequested,
            (false, false) => OperationState::Running,
        };
        if op.state() != expected {
            violations.push(format!(
                "state {:?} at modified_at {:?} should be {expected:?}",
                op.state(),
                version(op)
            ));
        }
    }
    let policy = full.first().map(|op| op.cancellation_policy());
    let done = chain.iter().copied().find(|op| is_done(op));
    if policy == Some(CancellationPolicy::NotCancellable)
        && done.and_then(outcome).is_some_and(is_cancelled)
        && !states
            .iter()
            .any(|(e, _)| matches!(&e.call, Call::Complete(o) if is_cancelled(o)))
    {
        violations.push("a not-cancellable operation was cancelled".into());
    }

    // 3. Monotonic reads in real time: sweep by start, with the newest state
    // among the calls that had ended before.
    let mut by_start: Vec<&(&Event, &OpsdOperation)> = states.iter().collect();
    by_start.sort_by_key(|(e, _)| e.start);
    let mut by_end: Vec<&(&Event, &OpsdOperation)> = states.iter().collect();
    by_end.sort_by_key(|(e, _)| e.end);
    let mut ended = by_end.iter().peekable();
    let mut newest: Option<&(&Event, &OpsdOperation)> = None;
    for current in by_start {
        while let Some(earlier) = ended.next_if(|(e, _)| e.end < current.0.start) {
            if newest.is_none_or(|(_, n)| version(earlier.1) > version(n)) {
                newest = Some(earlier);
            }
        }
        if let Some((earlier, seen)) = newest
            && version(current.1) < version(seen)
        {
            violations.push(format!(
                "stale answer: {} on replica {} started at {:?} returned modified_at {:?} (done {}), \
                 but {} on replica {} had returned {:?} (done {}) by {:?}",
                describe(&current.0.call),
                current.0.replica,
                current.0.start,
                version(current.1),
                is_done(current.1),
                describe(&earlier.call),
                earlier.replica,
                version(seen),
                is_done(seen),
                earlier.end,
            ));
        }
    }

    // 4. Answers agree with the outcome; refusals are justified.
    let final_outcome = done.and_then(outcome);
    // When the first call that may have made the operation done began: one
    // that answered the done state, or one whose answer was lost (a tolerated
    // error) asking for the outcome that won.
    let winner_start = events
        .iter()
        .filter(|e| match (&e.call, &e.answer) {
            (Call::Complete(_) | Call::Cancel, Answer::State(op)) => {
                done.is_some_and(|done| is_done(op) && same_state(op, done))
            }
            (Call::Complete(asked), Answer::Failed(code)) => {
                tolerated.contains(code) && final_outcome_of(done) == Some(asked)
            }
            (Call::Cancel, Answer::Failed(code)) => {
                tolerated.contains(code) && final_outcome_of(done).is_some_and(is_cancelled)
            }
            _ => false,
        })
        .map(|e| e.start)
        .min();
    let mut contested = false;
    for event in events {
        match (&event.call, &event.answer) {
            (Call::Complete(asked), Answer::State(op)) if outcome(op) != Some(asked) => {
                violations.push(format!(
                    "an acknowledged completion asking for {asked:?} answered {:?}",
                    outcome(op)
                ));
            }
            (Call::Cancel, Answer::State(op)) => {
                let fine = match outcome(op) {
                    Some(o) => is_cancelled(o),
                    // The public view cannot show the request; the final state must.
                    None if !is_full(op) => done.is_none_or(|d| !is_full(d) || cancel_requested(d)),
                    None => cancel_requested(op),
                };
                if !fine || policy == Some(CancellationPolicy::NotCancellable) {
                    violations.push(format!(
                        "an acknowledged cancel answered done {} with {:?}, cancel requested {}",
                        is_done(op),
                        outcome(op),
                        cancel_requested(op)
                    ));
                }
            }
            (Call::Complete(asked), Answer::Failed(Code::FailedPrecondition)) => {
                contested = true;
                match final_outcome {
                    Some(won) if won != asked => {
                        if winner_start.is_some_and(|start| start > event.end) {
                            violations.push(format!(
                                "a completion refused at {:?} before any winning call began",
                                event.end
                            ));
                        }
                    }
                    other => violations.push(format!(
                        "a completion asking for {asked:?} was refused, but the outcome is {other:?}"
                    )),
                }
            }
            (Call::Cancel, Answer::Failed(Code::FailedPrecondition)) => {
                contested = true;
                if policy != Some(CancellationPolicy::NotCancellable) {
                    match final_outcome {
                        Some(won) if !is_cancelled(won) => {
                            if winner_start.is_some_and(|start| start > event.end) {
                                violations.push(format!(
                                    "a cancel refused at {:?} before any winning call began",
                                    event.end
                                ));
                            }
                        }
                        other => violations.push(format!(
                            "a cancel was refused, but the outcome is {other:?}"
                        )),
                    }
                }
            }
            (call, Answer::Failed(code)) if !tolerated.contains(code) => {
                violations.push(format!(
                    "{} on replica {} failed with {code:?}",
                    describe(call),
                    event.replica
                ));
            }
            (call, Answer::Ended) if !matches!(call, Call::Watch { .. }) => {
                violations.push(format!("{} answered a stream end", describe(call)));
            }
            _ => {}
        }
    }

    // 5. Watch streams move forward and end only after done.
    let mut streams: HashMap<u64, Vec<&Event>> = HashMap::new();
    for event in events {
        if let Call::Watch { stream } = event.call {
            streams.entry(stream).or_default().push(event);
        }
    }
    for (stream, mut messages) in streams {
        messages.sort_by_key(|e| e.end);
        let mut last: Option<&OpsdOperation> = None;
        for message in messages {
            match &message.answer {
                Answer::State(op) => {
                    if let Some(last) = last {
                        if is_done(last) {
                            violations.push(format!("watch {stream} went on after done"));
                        }
                        if version(op) <= version(last) {
                            violations.push(format!(
                                "watch {stream} went from modified_at {:?} to {:?}",
                                version(last),
                                version(op)
                            ));
                        }
                    }
                    last = Some(op);
                }
                Answer::Ended => {
                    if !last.is_some_and(is_done) {
                        violations.push(format!("watch {stream} ended before done"));
                    }
                }
                Answer::Failed(_) => {}
            }
        }
    }
    contested
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ops00000000000000001";

    fn response(name: &str) -> WireOutcome {
        WireOutcome::Response(prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: name.as_bytes().to_vec(),
        })
    }

    fn cancelled() -> WireOutcome {
        WireOutcome::Error(opsd_proto::RpcStatus {
            code: CANCELLED,
            message: "operation cancelled".into(),
            details: vec![],
        })
    }

    fn state(
        modified: i32,
        policy: CancellationPolicy,
        cancel_requested_at: Option<i32>,
        result: Option<WireOutcome>,
    ) -> Box<OpsdOperation> {
        let at = |nanos| prost_types::Timestamp {
            seconds: 1_000,
            nanos,
        };
        let mut op = OpsdOperation {
            operation: Some(Operation {
                id: ID.into(),
                description: "x".into(),
                created_at: Some(at(0)),
                created_by: "anonymous".into(),
                modified_at: Some(at(modified)),
                done: result.is_some(),
                metadata: None,
                result,
            }),
            cancel_requested_at: cancel_requested_at.map(at),
            scope: "default".into(),
            ..OpsdOperation::default()
        };
        op.set_cancellation_policy(policy);
        op.set_state(
            match (
                op.operation.as_ref().unwrap().done,
                op.cancel_requested_at.is_some(),
            ) {
                (true, _) => OperationState::Done,
                (false, true) => OperationState::CancelRequested,
                (false, false) => OperationState::Running,
            },
        );
        Box::new(op)
    }

    fn event(call: Call, start: u64, end: u64, answer: Answer) -> Event {
        Event {
            operation: ID.into(),
            call,
            replica: 0,
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            answer,
        }
    }

    const IMMEDIATE: CancellationPolicy = CancellationPolicy::Immediate;

    fn running() -> Answer {
        Answer::State(state(0, IMMEDIATE, None, None))
    }

    fn done_with(outcome: WireOutcome, at: i32) -> Answer {
        let requested = is_cancelled(&outcome).then_some(at);
        Answer::State(state(at, IMMEDIATE, requested, Some(outcome)))
    }

    /// A contested race, won by the completion: consistent.
    fn good_history() -> Vec<Event> {
        vec![
            event(Call::Create, 0, 1, running()),
            event(
                Call::Complete(response("a")),
                2,
                5,
                done_with(response("a"), 10),
            ),
            event(Call::Cancel, 2, 6, Answer::Failed(Code::FailedPrecondition)),
            event(Call::Get, 3, 4, running()),
            event(Call::Watch { stream: 1 }, 2, 3, running()),
            event(
                Call::Watch { stream: 1 },
                2,
                5,
                done_with(response("a"), 10),
            ),
            event(Call::Watch { stream: 1 }, 2, 6, Answer::Ended),
            event(Call::Wait, 6, 7, done_with(response("a"), 10)),
        ]
    }

    fn violations(events: &[Event]) -> Vec<String> {
        check(events, &[]).violations
    }

    #[test]
    fn a_consistent_history_passes() {
        let report = check(&good_history(), &[]);
        assert_eq!(report.violations, Vec::<String>::new());
        assert_eq!((report.operations, report.contested), (1, 1));
    }

    #[test]
    fn two_outcomes_are_caught() {
        let mut events = good_history();
        events[2] = event(Call::Cancel, 2, 6, done_with(cancelled(), 11));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("changed after done")),
            "{found:?}"
        );
    }

    #[test]
    fn done_reverting_is_caught() {
        let mut events = good_history();
        // Running again, at a later version.
        events.push(event(
            Call::Get,
            8,
            9,
            Answer::State(state(20, IMMEDIATE, None, None)),
        ));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("changed after done")),
            "{found:?}"
        );
    }

    #[test]
    fn a_stale_read_after_a_newer_one_is_caught() {
        let mut events = good_history();
        // Started after the completion was acknowledged, yet running.
        events.push(event(Call::Get, 6, 7, running()));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("stale answer")),
            "{found:?}"
        );
        // Overlapping the completion, the same answer is fine.
        let mut events = good_history();
        events.push(event(Call::Get, 4, 7, running()));
        assert_eq!(violations(&events), Vec::<String>::new());
    }

    #[test]
    fn a_lost_acknowledged_completion_is_caught() {
        let mut events = good_history();
        events.truncate(4);
        // After the completion was acknowledged, every read still says running.
        events.push(event(Call::Get, 7, 8, running()));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("stale answer")),
            "{found:?}"
        );
    }

    #[test]
    fn two_states_at_one_version_are_caught() {
        let mut events = good_history();
        events.push(event(
            Call::Get,
            8,
            9,
            Answer::State(state(10, IMMEDIATE, None, Some(response("b")))),
        ));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("two different states")),
            "{found:?}"
        );
    }

    #[test]
    fn a_completion_answering_another_outcome_is_caught() {
        let mut events = good_history();
        events.push(event(
            Call::Complete(response("b")),
            6,
            7,
            done_with(response("a"), 10),
        ));
        let found = violations(&events);
        assert!(
            found
                .iter()
                .any(|v| v.contains("acknowledged completion asking")),
            "{found:?}"
        );
    }

    #[test]
    fn an_unjustified_refusal_is_caught() {
        // Refused, though nothing else ever completed it.
        let events = vec![
            event(Call::Create, 0, 1, running()),
            event(
                Call::Complete(response("a")),
                2,
                3,
                Answer::Failed(Code::FailedPrecondition),
            ),
            event(Call::Get, 4, 5, running()),
        ];
        let found = violations(&events);
        assert!(found.iter().any(|v| v.contains("was refused")), "{found:?}");
        // Refused before the winner even began.
        let events = vec![
            event(Call::Create, 0, 1, running()),
            event(Call::Cancel, 2, 3, Answer::Failed(Code::FailedPrecondition)),
            event(
                Call::Complete(response("a")),
                4,
                5,
                done_with(response("a"), 10),
            ),
        ];
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("before any winning call")),
            "{found:?}"
        );
    }

    #[test]
    fn watch_streams_must_move_forward_and_end_after_done() {
        let mut events = good_history();
        events.retain(|e| !matches!(e.call, Call::Watch { .. }));
        events.push(event(Call::Watch { stream: 2 }, 2, 6, running()));
        events.push(event(Call::Watch { stream: 2 }, 2, 7, Answer::Ended));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("ended before done")),
            "{found:?}"
        );
        let mut events = good_history();
        events.push(event(
            Call::Watch { stream: 3 },
            2,
            5,
            done_with(response("a"), 10),
        ));
        events.push(event(Call::Watch { stream: 3 }, 2, 6, running()));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("watch 3 went")),
            "{found:?}"
        );
    }

    #[test]
    fn unexpected_errors_are_caught_unless_tolerated() {
        let mut events = good_history();
        events.push(event(Call::Get, 8, 9, Answer::Failed(Code::NotFound)));
        assert_eq!(violations(&events).len(), 1);
        events.pop();
        events.push(event(Call::Get, 8, 9, Answer::Failed(Code::Unavailable)));
        assert_eq!(violations(&events).len(), 1);
        assert!(check(&events, &[Code::Unavailable]).violations.is_empty());
    }

    #[test]
    fn a_not_cancellable_operation_cannot_be_cancelled() {
        let policy = CancellationPolicy::NotCancellable;
        let events = vec![
            event(
                Call::Create,
                0,
                1,
                Answer::State(state(0, policy, None, None)),
            ),
            event(
                Call::Cancel,
                2,
                3,
                Answer::State(state(5, policy, Some(5), Some(cancelled()))),
            ),
        ];
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("not-cancellable")),
            "{found:?}"
        );
    }

    #[test]
    fn a_cancel_answered_in_the_public_view_must_leave_its_request() {
        let cooperative = CancellationPolicy::Cooperative;
        let requested = state(5, cooperative, Some(5), None);
        let completed = state(9, cooperative, Some(5), Some(response("a")));
        let cancel_answer =
            Answer::State(Box::new(cloud_view(requested.operation.clone().unwrap())));
        let events = vec![
            event(
                Call::Create,
                0,
                1,
                Answer::State(state(0, cooperative, None, None)),
            ),
            event(Call::Cancel, 2, 3, cancel_answer.clone()),
            event(Call::Get, 3, 4, Answer::State(requested)),
            event(
                Call::Complete(response("a")),
                4,
                5,
                Answer::State(completed),
            ),
        ];
        assert_eq!(violations(&events), Vec::<String>::new());
        // The final state forgot the acknowledged request.
        let mut events = events;
        events.truncate(2);
        events.push(event(
            Call::Complete(response("a")),
            4,
            5,
            Answer::State(state(9, cooperative, None, Some(response("a")))),
        ));
        let found = violations(&events);
        assert!(
            found.iter().any(|v| v.contains("acknowledged cancel")),
            "{found:?}"
        );
    }

    #[test]
    fn a_winner_whose_answer_was_lost_justifies_refusals() {
        // The completion was applied but answered UNAVAILABLE; the cancel that
        // lost ended before the completion's retry began.
        let events = vec![
            event(Call::Create, 0, 1, running()),
            event(
                Call::Complete(response("a")),
                2,
                3,
                Answer::Failed(Code::Unavailable),
            ),
            event(Call::Cancel, 3, 4, Answer::Failed(Code::FailedPrecondition)),
            event(
                Call::Complete(response("a")),
                5,
                6,
                done_with(response("a"), 10),
            ),
        ];
        assert_eq!(
            check(&events, &[Code::Unavailable]).violations,
            Vec::<String>::new()
        );
        // Without the lost answer, the refusal came before any winner began.
        let found = check(&[&events[..1], &events[2..]].concat(), &[]).violations;
        assert!(
            found.iter().any(|v| v.contains("before any winning call")),
            "{found:?}"
        );
    }
}
