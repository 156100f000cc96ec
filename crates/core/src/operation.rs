//! The operation state machine. Every change to an operation is one of the
//! transitions here; each returns the next version of the operation (or says
//! that nothing changes) and never mutates in place, so the store can write it
//! with a compare-and-set on `version`.
//!
//! Invariants kept by construction:
//! - `done` never reverts: no transition leaves [`State::Done`];
//! - a done operation has exactly one [`Outcome`] (a response or an error);
//! - `modified_at` strictly increases with every change and is never before `created_at`;
//! - the first completion wins; repeating it is a no-op, a different one is refused;
//! - once a failure is reported, only an error can finish the operation.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Precondition};
use crate::event::EventKind;
use crate::id::{IdPrefix, OperationId};
use crate::payload::{Any, RpcStatus};
use crate::progress::Progress;
use crate::time::Timestamp;
use crate::trace::TraceContext;
use crate::validate::Violations;

/// gRPC's CANCELLED, which the clouds put in `error.code` of a cancelled operation.
pub const CANCELLED_CODE: i32 = 1;
pub const CANCELLED_MESSAGE: &str = "operation cancelled";
/// gRPC's ABORTED: the producer stopped heartbeating.
pub const LEASE_LAPSED_CODE: i32 = 10;
pub const LEASE_LAPSED_MESSAGE: &str = "the producer stopped renewing its lease";
/// gRPC's DEADLINE_EXCEEDED: the operation outlived its deadline.
pub const DEADLINE_CODE: i32 = 4;
pub const DEADLINE_MESSAGE: &str = "the operation did not finish before its deadline";

pub const MIN_LEASE: Duration = Duration::from_secs(1);
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How an operation reacts to Cancel; declared by its producer at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CancellationPolicy {
    /// Cancel completes it at once with error code 1 (CANCELLED).
    #[default]
    Immediate,
    /// Cancel marks it cancel-requested; the producer cleans up and completes it.
    Cooperative,
    /// Cancel is refused with FAILED_PRECONDITION.
    NotCancellable,
}

/// The result of a done operation: exactly one of a response or an error.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Response(Any),
    Error(RpcStatus),
}

impl Outcome {
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Outcome::Error(status) if status.code == CANCELLED_CODE)
    }

    fn cancelled() -> Self {
        Self::failure(CANCELLED_CODE, CANCELLED_MESSAGE)
    }

    fn failure(code: i32, message: &str) -> Self {
        Outcome::Error(RpcStatus {
            code,
            message: message.to_owned(),
            details: Vec::new(),
        })
    }
}

/// A failure the producer reported while the operation still ran (cleanup under
/// way). Consumers see it as `error` on a not-done operation; it is kept once
/// the operation is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedFailure {
    pub status: RpcStatus,
    /// When the latest report was recorded.
    pub reported_at: Timestamp,
}

/// Where an operation is in its life, with the data that belongs to that state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    /// Running, and a consumer asked a cooperative producer to stop.
    CancelRequested {
        requested_at: Timestamp,
    },
    Done {
        outcome: Outcome,
        /// Kept so a producer can tell a requested cancellation from its own failure.
        cancel_requested_at: Option<Timestamp>,
    },
}

/// An idempotency key and the fingerprint of the create request that first used it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: [u8; 32],
}

/// A validated create request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOperation {
    pub description: String,
    pub resource_id: Option<String>,
    pub metadata: Option<Any>,
    pub cancellation: CancellationPolicy,
    pub idempotency_key: Option<String>,
    pub id_prefix: Option<IdPrefix>,
    /// Take a lease at creation, lasting this long.
    pub lease_duration: Option<Duration>,
    pub deadline: Option<Timestamp>,
    /// At most one running exclusive operation per resource id.
    pub exclusive: bool,
    /// The folder or project the operation belongs to; the service resolves
    /// it from the caller when the request names none.
    pub scope: Option<String>,
    /// The trace the operation's life joins: the creating call's span. Not
    /// part of the idempotency fingerprint (every retry is its own call).
    pub trace: Option<TraceContext>,
}

/// Checks a requested lease length.
pub fn validate_lease(field: &str, lease: Duration) -> Result<(), Error> {
    if (MIN_LEASE..=MAX_LEASE).contains(&lease) {
        Ok(())
    } else {
        Err(Error::invalid_argument(field, "must be between 1s and 1h"))
    }
}

impl NewOperation {
    /// A request with only a description; everything else default.
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            resource_id: None,
            metadata: None,
            cancellation: CancellationPolicy::default(),
            idempotency_key: None,
            id_prefix: None,
            lease_duration: None,
            deadline: None,
            exclusive: false,
            scope: None,
            trace: None,
        }
    }

    /// Checks every field; all violations are reported together.
    pub fn validate(&self, now: Timestamp) -> Result<(), Error> {
        let mut v = Violations::default();
        v.description("description", &self.description);
        if let Some(resource_id) = &self.resource_id {
            v.resource_id("resource_id", resource_id);
        }
        if self.exclusive && self.resource_id.as_deref().unwrap_or("").is_empty() {
            v.add("resource_id", "is required for an exclusive operation");
        }
        if let Some(lease) = self.lease_duration {
            v.merge(validate_lease("lease_duration", lease));
        }
        if self.deadline.is_some_and(|deadline| deadline <= now) {
            v.add("deadline", "must be in the future");
        }
        if let Some(metadata) = &self.metadata {
            v.any("metadata", metadata);
        }
        if let Some(key) = &self.idempotency_key {
            v.idempotency_key("idempotency_key", key);
        }
        v.into_result()
    }

    /// A digest of everything the request asks for, to tell a retry from a reused key.
    pub fn fingerprint(&self) -> [u8; 32] {
        fn field(h: &mut Sha256, bytes: &[u8]) {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        let mut h = Sha256::new();
        field(&mut h, self.description.as_bytes());
        field(&mut h, self.resource_id.as_deref().unwrap_or("").as_bytes());
        h.update([u8::from(self.resource_id.is_some())]);
        match &self.metadata {
            Some(m) => {
                h.update([1]);
                field(&mut h, m.type_url.as_bytes());
                field(&mut h, &m.value);
            }
            None => h.update([0]),
        }
        h.update([match self.cancellation {
            CancellationPolicy::Immediate => 0,
            CancellationPolicy::Cooperative => 1,
            CancellationPolicy::NotCancellable => 2,
        }]);
        field(
            &mut h,
            self.id_prefix
                .as_ref()
                .map_or("", IdPrefix::as_str)
                .as_bytes(),
        );
        // Absent and present-but-zero must differ: a flag, then the value.
        for value in [
            self.lease_duration
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            self.deadline.map(Timestamp::unix_nanos),
        ] {
            h.update([u8::from(value.is_some())]);
            h.update(value.unwrap_or(0).to_le_bytes());
        }
        h.update([u8::from(self.exclusive)]);
        h.update([u8::from(self.scope.is_some())]);
        field(&mut h, self.scope.as_deref().unwrap_or("").as_bytes());
        h.finalize().into()
    }
}

/// A long-running operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: OperationId,
    /// Starts at 1 and grows by one with every stored change; the store's compare-and-set key.
    pub version: u64,
    pub description: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub modified_at: Timestamp,
    pub resource_id: Option<String>,
    pub cancellation: CancellationPolicy,
    pub metadata: Option<Any>,
    pub progress: Option<Progress>,
    pub state: State,
    pub idempotency: Option<Idempotency>,
    /// Completed with DEADLINE_EXCEEDED if still running then.
    pub deadline: Option<Timestamp>,
    /// Completed with ABORTED if still running then (unless renewed).
    pub lease_expires_at: Option<Timestamp>,
    pub exclusive: bool,
    /// The folder or project it belongs to: who may see it.
    pub scope: String,
    /// Set by [`Operation::report_failure`] while running; from then on only
    /// an error completes the operation.
    pub reported_failure: Option<ReportedFailure>,
    /// The span of the call that created it, set once at creation: the
    /// later calls' spans link to it.
    pub trace: Option<TraceContext>,
}

/// A producer's progress report: whatever is `Some` replaces what was there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub metadata: Option<Any>,
    pub progress: Option<Progress>,
}

/// What a transition does to an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The request is already satisfied; nothing to write.
    Unchanged,
    /// The next version, to be stored in place of the current one, and the
    /// kind of event the change makes in the timeline (`None` for a lease
    /// renewal, which makes none).
    Changed(Operation, Option<EventKind>),
}

impl Operation {
    /// A new running operation. The request must have passed [`NewOperation::validate`].
    pub fn create(
        id: OperationId,
        request: NewOperation,
        created_by: &str,
        now: Timestamp,
    ) -> Self {
        let idempotency = request.idempotency_key.as_ref().map(|key| Idempotency {
            key: key.clone(),
            fingerprint: request.fingerprint(),
        });
        Self {
            id,
            version: 1,
            description: request.description,
            created_at: now,
            created_by: created_by.to_owned(),
            modified_at: now,
            resource_id: request.resource_id,
            cancellation: request.cancellation,
            metadata: request.metadata,
            progress: None,
            state: State::Running,
            idempotency,
            deadline: request.deadline,
            lease_expires_at: request
                .lease_duration
                .map(|lease| now.saturating_add(lease)),
            exclusive: request.exclusive,
            scope: request
                .scope
                .unwrap_or_else(|| crate::principal::DEFAULT_SCOPE.to_owned()),
            reported_failure: None,
            trace: request.trace,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::Done { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// The error a consumer sees: the outcome's once done, else the reported
    /// failure, if any.
    pub fn visible_error(&self) -> Option<&RpcStatus> {
        match &self.state {
            State::Done {
                outcome: Outcome::Error(status),
                ..
            } => Some(status),
            State::Done { .. } => None,
            State::Running | State::CancelRequested { .. } => {
                self.reported_failure.as_ref().map(|f| &f.status)
            }
        }
    }

    pub fn cancel_requested_at(&self) -> Option<Timestamp> {
        match self.state {
            State::Running => None,
            State::CancelRequested { requested_at } => Some(requested_at),
            State::Done {
                cancel_requested_at,
                ..
            } => cancel_requested_at,
        }
    }

    /// A create request that carries the idempotency key this operation was
    /// created with: a true retry gets this operation back, a different request
    /// with the same key is refused.
    pub fn answer_retry(&self, request: &NewOperation) -> Result<(), Error> {
        match &self.idempotency {
            Some(idempotency) if idempotency.fingerprint == request.fingerprint() => Ok(()),
            _ => Err(self.refuse(Precondition::IdempotencyKeyReused)),
        }
    }

    /// A consumer asks to cancel.
    pub fn cancel(&self, now: Timestamp) -> Result<Transition, Error> {
        match &self.state {
            // Cancelling a cancelled operation returns it unchanged.
            State::Done { outcome, .. } if outcome.is_cancelled() => Ok(Transition::Unchanged),
            State::Done { .. } => Err(self.refuse(Precondition::AlreadyDone)),
            State::CancelRequested { .. } => Ok(Transition::Unchanged),
            State::Running => match self.cancellation {
                CancellationPolicy::NotCancellable => {
                    Err(self.refuse(Precondition::NotCancellable))
                }
                CancellationPolicy::Immediate => {
                    Ok(self.next(now, EventKind::Completed, |op, at| {
                        op.state = State::Done {
                            outcome: Outcome::cancelled(),
                            cancel_requested_at: Some(at),
                        };
                    }))
                }
                CancellationPolicy::Cooperative => {
                    Ok(self.next(now, EventKind::CancelRequested, |op, at| {
                        op.state = State::CancelRequested { requested_at: at };
                    }))
                }
            },
        }
    }

    /// The producer completes the operation. The outcome must have been
    /// validated; `None` means "with the reported failure".
    pub fn complete(
        &self,
        outcome: impl Into<Option<Outcome>>,
        now: Timestamp,
    ) -> Result<Transition, Error> {
        let outcome = match outcome.into() {
            Some(outcome) => outcome,
            None => match &self.reported_failure {
                Some(failure) => Outcome::Error(failure.status.clone()),
                None => {
                    return Err(Error::invalid_argument(
                        "result",
                        "one of response or error is required (no failure was reported)",
                    ));
                }
            },
        };
        match &self.state {
            State::Done {
                outcome: current, ..
            } if *current == outcome => Ok(Transition::Unchanged),
            State::Done { .. } => Err(self.refuse(Precondition::CompletedDifferently)),
            State::Running | State::CancelRequested { .. } => {
                if self.reported_failure.is_some() && matches!(outcome, Outcome::Response(_)) {
                    return Err(self.refuse(Precondition::FailureReported));
                }
                let cancel_requested_at = self.cancel_requested_at();
                Ok(self.next(now, EventKind::Completed, |op, _| {
                    op.state = State::Done {
                        outcome,
                        cancel_requested_at,
                    };
                }))
            }
        }
    }

    /// The producer reports a failure but keeps working (cleaning up): the
    /// operation stays running, shows the error, and can now only end in an
    /// error. A later report replaces the earlier one. The status must have
    /// been validated.
    pub fn report_failure(&self, status: RpcStatus, now: Timestamp) -> Result<Transition, Error> {
        if self.is_done() {
            return Err(self.refuse(Precondition::FailureOfDone));
        }
        if self
            .reported_failure
            .as_ref()
            .is_some_and(|failure| failure.status == status)
        {
            return Ok(Transition::Unchanged);
        }
        Ok(self.next(now, EventKind::FailureReported, |op, at| {
            op.reported_failure = Some(ReportedFailure {
                status,
                reported_at: at,
            });
        }))
    }

    /// The producer reports progress. The update must have been validated.
    pub fn update(&self, update: Update, now: Timestamp) -> Result<Transition, Error> {
        if self.is_done() {
            return Err(self.refuse(Precondition::MetadataOfDone));
        }
        let metadata = update.metadata.or_else(|| self.metadata.clone());
        let progress = update.progress.or_else(|| self.progress.clone());
        if metadata == self.metadata && progress == self.progress {
            return Ok(Transition::Unchanged);
        }
        Ok(self.next(now, EventKind::MetadataUpdated, |op, _| {
            op.metadata = metadata;
            op.progress = progress;
        }))
    }

    /// The producer takes or renews its lease. The length must have been validated.
    pub fn heartbeat(&self, lease: Duration, now: Timestamp) -> Result<Transition, Error> {
        if self.is_done() {
            return Err(self.refuse(Precondition::HeartbeatOfDone));
        }
        // A lapsed lease (or a passed deadline) is lost even before the reaper
        // gets to it: a late heartbeat must not revive the operation.
        if self.expires_at().is_some_and(|at| at <= now) {
            return Err(self.refuse(Precondition::LeaseLapsed));
        }
        // Taking a lease is an event; renewing it is not.
        let kind = self
            .lease_expires_at
            .is_none()
            .then_some(EventKind::LeaseTaken);
        let mut next = self.next_version(now);
        next.lease_expires_at = Some(next.modified_at.saturating_add(lease));
        Ok(Transition::Changed(next, kind))
    }

    /// The earliest time at which [`Operation::expire`] would complete it.
    pub fn expires_at(&self) -> Option<Timestamp> {
        if self.is_done() {
            return None;
        }
        match (self.deadline, self.lease_expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Completes a running operation whose deadline passed (DEADLINE_EXCEEDED)
    /// or whose lease lapsed (ABORTED); otherwise leaves it alone.
    pub fn expire(&self, now: Timestamp) -> Transition {
        if self.is_done() {
            return Transition::Unchanged;
        }
        let (outcome, kind) = if self.deadline.is_some_and(|d| d <= now) {
            (
                Outcome::failure(DEADLINE_CODE, DEADLINE_MESSAGE),
                EventKind::DeadlineExceeded,
            )
        } else if self.lease_expires_at.is_some_and(|l| l <= now) {
            (
                Outcome::failure(LEASE_LAPSED_CODE, LEASE_LAPSED_MESSAGE),
                EventKind::LeaseLapsed,
            )
        } else {
            return Transition::Unchanged;
        };
        let cancel_requested_at = self.cancel_requested_at();
        self.next(now, kind, |op, _| {
            op.state = State::Done {
                outcome,
                cancel_requested_at,
            }
        })
    }

    /// The next version, making an event of `kind`.
    fn next(
        &self,
        now: Timestamp,
        kind: EventKind,
        change: impl FnOnce(&mut Operation, Timestamp),
    ) -> Transition {
        let mut next = self.next_version(now);
        let at = next.modified_at;
        change(&mut next, at);
        Transition::Changed(next, Some(kind))
    }

    /// `modified_at` moves forward even if the clock stalls or steps back.
    fn next_version(&self, now: Timestamp) -> Operation {
        let mut next = self.clone();
        next.version += 1;
        next.modified_at = now.max(self.modified_at.next());
        next
    }

    fn refuse(&self, precondition: Precondition) -> Error {
        Error::FailedPrecondition {
            id: self.id.to_string(),
            precondition,
        }
    }
}

#[cfg(test)]
mod tests;
