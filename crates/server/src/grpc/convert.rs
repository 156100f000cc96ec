//! Translation between wire messages and domain types. Nothing here decides
//! anything: validation lives in `opsd_core`, rules in the service.

use std::time::Duration;

use opsd_core::{
    Any, CancellationPolicy, Error, Operation, Outcome, Progress, RpcStatus, State, Step,
    StepState, Timestamp,
};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.seconds_and_nanos();
    prost_types::Timestamp { seconds, nanos }
}

/// A wire timestamp as a domain one; `field` names it in the violation.
pub fn timestamp_from_wire(field: &str, t: prost_types::Timestamp) -> Result<Timestamp, Error> {
    Timestamp::from_seconds_and_nanos(t.seconds, t.nanos)
        .ok_or_else(|| Error::invalid_argument(field, "is not a valid timestamp (1678-2262)"))
}

/// A wire duration as a non-negative domain one.
pub fn duration_from_wire(field: &str, d: prost_types::Duration) -> Result<Duration, Error> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(Error::invalid_argument(
            field,
            "must be a non-negative duration",
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A domain duration on the wire (saturating at the largest one).
pub fn duration_to_wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn progress_to_wire(progress: &Progress) -> pb::Progress {
    pb::Progress {
        work_done: progress.work_done,
        work_total: progress.work_total,
        message: progress.message.clone(),
        steps: progress
            .steps
            .iter()
            .map(|step| pb::Step {
                name: step.name.clone(),
                state: match step.state {
                    StepState::Unspecified => pb::step::State::Unspecified,
                    StepState::Pending => pb::step::State::Pending,
                    StepState::Running => pb::step::State::Running,
                    StepState::Done => pb::step::State::Done,
                    StepState::Failed => pb::step::State::Failed,
                    StepState::Skipped => pb::step::State::Skipped,
                }
                .into(),
            })
            .collect(),
    }
}

pub fn progress_from_wire(progress: pb::Progress) -> Result<Progress, Error> {
    let steps = progress
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let state = match pb::step::State::try_from(step.state) {
                Ok(pb::step::State::Unspecified) => StepState::Unspecified,
                Ok(pb::step::State::Pending) => StepState::Pending,
                Ok(pb::step::State::Running) => StepState::Running,
                Ok(pb::step::State::Done) => StepState::Done,
                Ok(pb::step::State::Failed) => StepState::Failed,
                Ok(pb::step::State::Skipped) => StepState::Skipped,
                Err(_) => {
                    return Err(Error::invalid_argument(
                        format!("progress.steps[{i}].state"),
                        "unknown step state",
                    ));
                }
            };
            Ok(Step {
                name: step.name,
                state,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Progress {
        work_done: progress.work_done,
        work_total: progress.work_total,
        message: progress.message,
        steps,
    })
}

pub fn any_to_wire(any: &Any) -> prost_types::Any {
    prost_types::Any {
        type_url: any.type_url.clone(),
        value: any.value.clone(),
    }
}

pub fn any_from_wire(any: prost_types::Any) -> Any {
    Any {
        type_url: any.type_url,
        value: any.value,
    }
}

pub fn status_to_wire(status: &RpcStatus) -> opsd_proto::RpcStatus {
    opsd_proto::RpcStatus {
        code: status.code,
        message: status.message.clone(),
        details: status.details.iter().map(any_to_wire).collect(),
    }
}

pub fn status_from_wire(status: opsd_proto::RpcStatus) -> RpcStatus {
    RpcStatus {
        code: status.code,
        message: status.message,
        details: status.details.into_iter().map(any_from_wire).collect(),
    }
}

/// The operation in the clouds' public shape.
pub fn operation_to_wire(op: &Operation) -> ycop::Operation {
    // A running operation whose producer reported a failure carries the error
    // while done is false, as the clouds' contract allows.
    let result = match op.outcome() {
        Some(Outcome::Response(any)) => Some(ycop::operation::Result::Response(any_to_wire(any))),
        Some(Outcome::Error(_)) | None => op
            .visible_error()
            .map(|status| ycop::operation::Result::Error(status_to_wire(status))),
    };
    ycop::Operation {
        id: op.id.to_string(),
        description: op.description.clone(),
        created_at: Some(timestamp(op.created_at)),
        created_by: op.created_by.clone(),
        modified_at: Some(timestamp(op.modified_at)),
        done: op.is_done(),
        metadata: op.metadata.as_ref().map(any_to_wire),
        result,
    }
}

/// The operation with opsd's extra fields.
pub fn operation_to_opsd_wire(op: &Operation) -> pb::Operation {
    let state = match op.state {
        State::Running => pb::OperationState::Running,
        State::CancelRequested { .. } => pb::OperationState::CancelRequested,
        State::Done { .. } => pb::OperationState::Done,
    };
    pb::Operation {
        operation: Some(operation_to_wire(op)),
        state: state.into(),
        resource_id: op.resource_id.clone().unwrap_or_default(),
        cancellation_policy: policy_to_wire(op.cancellation).into(),
        cancel_requested_at: op.cancel_requested_at().map(timestamp),
        progress: op.progress.as_ref().map(progress_to_wire),
        deadline: op.deadline.map(timestamp),
        lease_expires_at: op.lease_expires_at.map(timestamp),
        exclusive: op.exclusive,
        scope: op.scope.clone(),
        reported_failure: op
            .reported_failure
            .as_ref()
            .map(|failure| status_to_wire(&failure.status)),
        failure_reported_at: op
            .reported_failure
            .as_ref()
            .map(|failure| timestamp(failure.reported_at)),
        trace_parent: op
            .trace
            .as_ref()
            .map(opsd_core::TraceContext::traceparent)
            .unwrap_or_default(),
        trace_state: op
            .trace
            .as_ref()
            .and_then(|trace| trace.state.clone())
            .unwrap_or_default(),
    }
}

fn policy_to_wire(policy: CancellationPolicy) -> pb::CancellationPolicy {
    match policy {
        CancellationPolicy::Immediate => pb::CancellationPolicy::Immediate,
        CancellationPolicy::Cooperative => pb::CancellationPolicy::Cooperative,
        CancellationPolicy::NotCancellable => pb::CancellationPolicy::NotCancellable,
    }
}

/// `None` for numbers this version does not know.
pub fn policy_from_wire(raw: i32) -> Option<CancellationPolicy> {
    match pb::CancellationPolicy::try_from(raw).ok()? {
        pb::CancellationPolicy::Unspecified | pb::CancellationPolicy::Immediate => {
            Some(CancellationPolicy::Immediate)
        }
        pb::CancellationPolicy::Cooperative => Some(CancellationPolicy::Cooperative),
        pb::CancellationPolicy::NotCancellable => Some(CancellationPolicy::NotCancellable),
    }
}

/// An optional string field: proto3 has no presence, so empty means absent.
pub fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}
