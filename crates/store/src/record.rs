//! The flat, column-per-field form of an operation that SQL backends store,
//! and its checked conversion back into the domain type.

use opsd_core::{
    Any, CancellationPolicy, Event, EventDetails, EventKind, Idempotency, NewEvent, Operation,
    OperationId, Outcome, Progress, ReportedFailure, RpcStatus, SpanRef, State, Step, StepState,
    Timestamp, TraceContext,
};
use prost::Message;

use crate::StoreError;

pub const STATE_RUNNING: i64 = 0;
pub const STATE_CANCEL_REQUESTED: i64 = 1;
pub const STATE_DONE: i64 = 2;

/// One stored row. Integers are i64 because that is what SQL engines have.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub id: String,
    pub version: i64,
    pub description: String,
    pub created_at: i64,
    pub created_by: String,
    pub modified_at: i64,
    pub resource_id: Option<String>,
    pub cancellation: i64,
    pub metadata_type_url: Option<String>,
    pub metadata_value: Option<Vec<u8>>,
    pub state: i64,
    pub cancel_requested_at: Option<i64>,
    pub response_type_url: Option<String>,
    pub response_value: Option<Vec<u8>>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// The error's details, encoded as a protobuf message of repeated Any.
    pub error_details: Option<Vec<u8>>,
    pub idempotency_key: Option<String>,
    pub idempotency_fingerprint: Option<Vec<u8>>,
    /// Progress, encoded as [`StoredProgress`].
    pub progress: Option<Vec<u8>>,
    pub deadline: Option<i64>,
    pub lease_expires_at: Option<i64>,
    pub exclusive: i64,
    /// When the reaper must look at the operation: the earlier of deadline and
    /// lease while running, NULL once done. Derived, stored for its index.
    pub expires_at: Option<i64>,
    pub scope: String,
    /// A failure reported while running, encoded as [`StoredStatus`] (schema version 2).
    pub reported_failure: Option<Vec<u8>>,
    pub failure_reported_at: Option<i64>,
    /// The creating call's W3C `traceparent` and `tracestate` (schema version 4).
    pub trace_parent: Option<String>,
    pub trace_state: Option<String>,
}

/// The column list in the order of [`Record`]'s fields, for SQL backends.
pub const COLUMNS: &str = "id, version, description, created_at, created_by, modified_at, \
    resource_id, cancellation, metadata_type_url, metadata_value, state, cancel_requested_at, \
    response_type_url, response_value, error_code, error_message, error_details, \
    idempotency_key, idempotency_fingerprint, progress, deadline, lease_expires_at, exclusive, \
    expires_at, scope, reported_failure, failure_reported_at, trace_parent, trace_state";

#[derive(Clone, PartialEq, prost::Message)]
struct StoredProgress {
    #[prost(int64, tag = "1")]
    work_done: i64,
    #[prost(int64, tag = "2")]
    work_total: i64,
    #[prost(string, tag = "3")]
    message: String,
    #[prost(message, repeated, tag = "4")]
    steps: Vec<StoredStep>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredStep {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    state: i32,
}

fn step_state_number(state: StepState) -> i32 {
    match state {
        StepState::Unspecified => 0,
        StepState::Pending => 1,
        StepState::Running => 2,
        StepState::Done => 3,
        StepState::Failed => 4,
        StepState::Skipped => 5,
    }
}

fn step_state_from_number(n: i32) -> Option<StepState> {
    Some(match n {
        0 => StepState::Unspecified,
        1 => StepState::Pending,
        2 => StepState::Running,
        3 => StepState::Done,
        4 => StepState::Failed,
        5 => StepState::Skipped,
        _ => return None,
    })
}

fn encode_progress(progress: &Progress) -> Vec<u8> {
    StoredProgress {
        work_done: progress.work_done,
        work_total: progress.work_total,
        message: progress.message.clone(),
        steps: progress
            .steps
            .iter()
            .map(|s| StoredStep {
                name: s.name.clone(),
                state: step_state_number(s.state),
            })
            .collect(),
    }
    .encode_to_vec()
}

fn decode_progress(bytes: &[u8]) -> Option<Progress> {
    let stored = StoredProgress::decode(bytes).ok()?;
    let steps = stored
        .steps
        .into_iter()
        .map(|s| {
            Some(Step {
                name: s.name,
                state: step_state_from_number(s.state)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Progress {
        work_done: stored.work_done,
        work_total: stored.work_total,
        message: stored.message,
        steps,
    })
}

#[derive(Clone, PartialEq, prost::Message)]
struct Details {
    #[prost(message, repeated, tag = "1")]
    details: Vec<prost_types::Any>,
}

/// A whole `google.rpc.Status` in one column (the done outcome keeps its
/// three columns from schema version 1).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

fn details_to_stored(details: &[Any]) -> Vec<prost_types::Any> {
    details
        .iter()
        .map(|d| prost_types::Any {
            type_url: d.type_url.clone(),
            value: d.value.clone(),
        })
        .collect()
}

fn details_from_stored(details: Vec<prost_types::Any>) -> Vec<Any> {
    details
        .into_iter()
        .map(|d| Any {
            type_url: d.type_url,
            value: d.value,
        })
        .collect()
}

impl From<&Operation> for Record {
    fn from(op: &Operation) -> Self {
        let (state, cancel_requested_at, outcome) = match &op.state {
            State::Running => (STATE_RUNNING, None, None),
            State::CancelRequested { requested_at } => (
                STATE_CANCEL_REQUESTED,
                Some(requested_at.unix_nanos()),
                None,
            ),
            State::Done {
                outcome,
                cancel_requested_at,
            } => (
                STATE_DONE,
                cancel_requested_at.map(Timestamp::unix_nanos),
                Some(outcome),
            ),
        };
        let mut record = Record {
            id: op.id.to_string(),
            version: i64::try_from(op.version).unwrap_or(i64::MAX),
            description: op.description.clone(),
            created_at: op.created_at.unix_nanos(),
            created_by: op.created_by.clone(),
            modified_at: op.modified_at.unix_nanos(),
            resource_id: op.resource_id.clone(),
            cancellation: match op.cancellation {
                CancellationPolicy::Immediate => 0,
                CancellationPolicy::Cooperative => 1,
                CancellationPolicy::NotCancellable => 2,
            },
            metadata_type_url: op.metadata.as_ref().map(|m| m.type_url.clone()),
            metadata_value: op.metadata.as_ref().map(|m| m.value.clone()),
            state,
            cancel_requested_at,
            idempotency_key: op.idempotency.as_ref().map(|i| i.key.clone()),
            idempotency_fingerprint: op.idempotency.as_ref().map(|i| i.fingerprint.to_vec()),
            progress: op.progress.as_ref().map(encode_progress),
            deadline: op.deadline.map(Timestamp::unix_nanos),
            lease_expires_at: op.lease_expires_at.map(Timestamp::unix_nanos),
            exclusive: i64::from(op.exclusive),
            expires_at: op.expires_at().map(Timestamp::unix_nanos),
            scope: op.scope.clone(),
            reported_failure: op.reported_failure.as_ref().map(|failure| {
                StoredStatus {
                    code: failure.status.code,
                    message: failure.status.message.clone(),
                    details: details_to_stored(&failure.status.details),
                }
                .encode_to_vec()
            }),
            failure_reported_at: op
                .reported_failure
                .as_ref()
                .map(|failure| failure.reported_at.unix_nanos()),
            trace_parent: op.trace.as_ref().map(TraceContext::traceparent),
            trace_state: op.trace.as_ref().and_then(|trace| trace.state.clone()),
            ..Record::default()
        };
        match outcome {
            Some(Outcome::Response(any)) => {
                record.response_type_url = Some(any.type_url.clone());
                record.response_value = Some(any.value.clone());
            }
            Some(Outcome::Error(status)) => {
                record.error_code = Some(i64::from(status.code));
                record.error_message = Some(status.message.clone());
                let details = Details {
                    details: details_to_stored(&status.details),
                };
                record.error_details = Some(details.encode_to_vec());
            }
            None => {}
        }
        record
    }
}

impl TryFrom<Record> for Operation {
    type Error = StoreError;

    fn try_from(r: Record) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("operation {}: {what}", r.id));
        let version = u64::try_from(r.version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| corrupt("version is not positive"))?;
        let cancellation = match r.cancellation {
            0 => CancellationPolicy::Immediate,
            1 => CancellationPolicy::Cooperative,
            2 => CancellationPolicy::NotCancellable,
            _ => return Err(corrupt("unknown cancellation policy")),
        };
        let metadata = match (r.metadata_type_url, r.metadata_value) {
            (Some(type_url), Some(value)) => Some(Any { type_url, value }),
            (None, None) => None,
            _ => return Err(corrupt("half-written metadata")),
        };
        let cancel_requested_at = r.cancel_requested_at.map(Timestamp::from_unix_nanos);
        let state = match r.state {
            STATE_RUNNING => State::Running,
            STATE_CANCEL_REQUESTED => State::CancelRequested {
                requested_at: cancel_requested_at
                    .ok_or_else(|| corrupt("cancel requested without a time"))?,
            },
            STATE_DONE => {
                let outcome = match (
                    r.response_type_url,
                    r.response_value,
                    r.error_code,
                    r.error_message,
                ) {
                    (Some(type_url), Some(value), None, None) => {
                        Outcome::Response(Any { type_url, value })
                    }
                    (None, None, Some(code), Some(message)) => {
                        let details = Details::decode(r.error_details.as_deref().unwrap_or(&[]))
                            .map_err(|_| corrupt("undecodable error details"))?;
                        Outcome::Error(RpcStatus {
                            code: i32::try_from(code)
                                .map_err(|_| corrupt("error code out of range"))?,
                            message,
                            details: details_from_stored(details.details),
                        })
                    }
                    _ => return Err(corrupt("done without exactly one result")),
                };
                State::Done {
                    outcome,
                    cancel_requested_at,
                }
            }
            _ => return Err(corrupt("unknown state")),
        };
        let idempotency = match (r.idempotency_key, r.idempotency_fingerprint) {
            (Some(key), Some(fingerprint)) => Some(Idempotency {
                key,
                fingerprint: fingerprint
                    .try_into()
                    .map_err(|_| corrupt("idempotency fingerprint is not 32 bytes"))?,
            }),
            (None, None) => None,
            _ => return Err(corrupt("half-written idempotency key")),
        };
        let progress = r
            .progress
            .as_deref()
            .map(|bytes| decode_progress(bytes).ok_or_else(|| corrupt("undecodable progress")))
            .transpose()?;
        let exclusive = match r.exclusive {
            0 => false,
            1 => true,
            _ => return Err(corrupt("exclusive is neither 0 nor 1")),
        };
        let reported_failure = match (r.reported_failure, r.failure_reported_at) {
            (Some(bytes), Some(at)) => {
                let stored = StoredStatus::decode(bytes.as_slice())
                    .map_err(|_| corrupt("undecodable reported failure"))?;
                Some(ReportedFailure {
                    status: RpcStatus {
                        code: stored.code,
                        message: stored.message,
                        details: details_from_stored(stored.details),
                    },
                    reported_at: Timestamp::from_unix_nanos(at),
                })
            }
            (None, None) => None,
            _ => return Err(corrupt("half-written reported failure")),
        };
        let trace = match r.trace_parent {
            Some(traceparent) => Some(
                TraceContext::parse(&traceparent, r.trace_state.as_deref())
                    .ok_or_else(|| corrupt("unparsable traceparent"))?,
            ),
            None => None,
        };
        Ok(Operation {
            id: OperationId::from_trusted(r.id),
            version,
            description: r.description,
            created_at: Timestamp::from_unix_nanos(r.created_at),
            created_by: r.created_by,
            modified_at: Timestamp::from_unix_nanos(r.modified_at),
            resource_id: r.resource_id,
            cancellation,
            metadata,
            progress,
            state,
            idempotency,
            deadline: r.deadline.map(Timestamp::from_unix_nanos),
            lease_expires_at: r.lease_expires_at.map(Timestamp::from_unix_nanos),
            exclusive,
            scope: r.scope,
            reported_failure,
            trace,
        })
    }
}

/// One stored event row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventRecord {
    pub position: i64,
    pub operation_id: String,
    pub sequence: i64,
    pub kind: i64,
    pub at: i64,
    pub actor: String,
    pub version: i64,
    /// [`StoredEventDetails`], encoded.
    pub details: Vec<u8>,
    pub folded: i64,
    pub scope: String,
    pub resource_id: Option<String>,
    pub created_by: String,
}

/// The event columns in the order of [`EventRecord`]'s fields.
pub const EVENT_COLUMNS: &str = "position, operation_id, sequence, kind, at, actor, version, \
    details, folded, scope, resource_id, created_by";

#[derive(Clone, PartialEq, prost::Message)]
struct StoredEventDetails {
    #[prost(string, optional, tag = "1")]
    description: Option<String>,
    #[prost(int64, optional, tag = "2")]
    lease_expires_at: Option<i64>,
    #[prost(int64, optional, tag = "3")]
    deadline: Option<i64>,
    #[prost(string, optional, tag = "4")]
    metadata_type_url: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    progress: Option<Vec<u8>>,
    #[prost(message, optional, tag = "6")]
    error: Option<StoredStatus>,
    #[prost(string, optional, tag = "7")]
    response_type_url: Option<String>,
    /// The span of the call that made the change: 16 bytes of trace id,
    /// then 8 of span id.
    #[prost(bytes = "vec", optional, tag = "8")]
    trace: Option<Vec<u8>>,
}

pub fn encode_event_details(details: &EventDetails, trace: Option<&SpanRef>) -> Vec<u8> {
    StoredEventDetails {
        description: details.description.clone(),
        lease_expires_at: details.lease_expires_at.map(Timestamp::unix_nanos),
        deadline: details.deadline.map(Timestamp::unix_nanos),
        metadata_type_url: details.metadata_type_url.clone(),
        progress: details.progress.as_ref().map(encode_progress),
        error: details.error.as_ref().map(|status| StoredStatus {
            code: status.code,
            message: status.message.clone(),
            details: details_to_stored(&status.details),
        }),
        response_type_url: details.response_type_url.clone(),
        trace: trace.map(|span| [span.trace_id.as_slice(), span.span_id.as_slice()].concat()),
    }
    .encode_to_vec()
}

impl EventRecord {
    /// The row of `new`, an event of `op`, at `sequence` and `position`
    /// (position 0: the database assigns it).
    pub fn of(new: &NewEvent, op: &Operation, sequence: i64, folded: i64) -> Self {
        EventRecord {
            position: 0,
            operation_id: op.id.to_string(),
            sequence,
            kind: i64::from(new.kind.number()),
            at: new.at.unix_nanos(),
            actor: new.actor.clone(),
            version: i64::try_from(new.version).unwrap_or(i64::MAX),
            details: encode_event_details(&new.details, new.trace.as_ref()),
            folded,
            scope: op.scope.clone(),
            resource_id: op.resource_id.clone(),
            created_by: op.created_by.clone(),
        }
    }
}

impl TryFrom<EventRecord> for Event {
    type Error = StoreError;

    fn try_from(r: EventRecord) -> Result<Self, StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!(
                "event {} of operation {}: {what}",
                r.sequence, r.operation_id
            ))
        };
        let positive = |n: i64, what: &str| {
            u64::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| corrupt(what))
        };
        let kind = i32::try_from(r.kind)
            .ok()
            .and_then(EventKind::from_number)
            .ok_or_else(|| corrupt("unknown kind"))?;
        let stored = StoredEventDetails::decode(r.details.as_slice())
            .map_err(|_| corrupt("undecodable details"))?;
        let progress = stored
            .progress
            .as_deref()
            .map(|bytes| decode_progress(bytes).ok_or_else(|| corrupt("undecodable progress")))
            .transpose()?;
        let trace = match stored.trace.as_deref() {
            Some(bytes) => {
                let (trace_id, span_id) = bytes
                    .split_at_checked(16)
                    .ok_or_else(|| corrupt("trace is not 24 bytes"))?;
                Some(
                    SpanRef::new(
                        trace_id
                            .try_into()
                            .map_err(|_| corrupt("trace is not 24 bytes"))?,
                        span_id
                            .try_into()
                            .map_err(|_| corrupt("trace is not 24 bytes"))?,
                    )
                    .ok_or_else(|| corrupt("trace ids are zero"))?,
                )
            }
            None => None,
        };
        Ok(Event {
            operation_id: OperationId::from_trusted(r.operation_id.clone()),
            sequence: positive(r.sequence, "sequence is not positive")?,
            position: positive(r.position, "position is not positive")?,
            kind,
            at: Timestamp::from_unix_nanos(r.at),
            actor: r.actor.clone(),
            version: positive(r.version, "version is not positive")?,
            details: EventDetails {
                description: stored.description,
                lease_expires_at: stored.lease_expires_at.map(Timestamp::from_unix_nanos),
                deadline: stored.deadline.map(Timestamp::from_unix_nanos),
                metadata_type_url: stored.metadata_type_url,
                progress,
                error: stored.error.map(|status| RpcStatus {
                    code: status.code,
                    message: status.message,
                    details: details_from_stored(status.details),
                }),
                response_type_url: stored.response_type_url,
            },
            trace,
            folded: u64::try_from(r.folded).map_err(|_| corrupt("negative fold count"))?,
            scope: r.scope,
            resource_id: r.resource_id,
            created_by: r.created_by,
        })
    }
}
