//! Translation between wire messages and domain types. Nothing here decides
//! anything: validation lives in `opsd_core`, rules in the service.

use opsd_core::{Any, CancellationPolicy, Operation, Outcome, RpcStatus, State, Timestamp};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.seconds_and_nanos();
    prost_types::Timestamp { seconds, nanos }
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
    let result = op.outcome().map(|outcome| match outcome {
        Outcome::Response(any) => ycop::operation::Result::Response(any_to_wire(any)),
        Outcome::Error(status) => ycop::operation::Result::Error(status_to_wire(status)),
    });
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
