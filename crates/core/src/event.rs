//! The timeline of an operation: one event per change that matters to a
//! person or a controller, written by the store in the same transaction as
//! the change. Lease renewals change the operation (its lease) but make no
//! event, or a busy producer's heartbeats would drown its timeline.

use crate::error::Error;
use crate::id::OperationId;
use crate::operation::{Operation, Outcome};
use crate::payload::RpcStatus;
use crate::progress::Progress;
use crate::time::Timestamp;
use crate::trace::SpanRef;

/// The actor of the changes opsd makes by itself (the reaper's expiries).
pub const REAPER_ACTOR: &str = "opsd";

/// Events of one operation beyond which `metadata_updated` events fold into
/// the last one, unless configured otherwise.
pub const DEFAULT_MAX_EVENTS_PER_OPERATION: u64 = 1000;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Created,
    MetadataUpdated,
    /// The first heartbeat of an operation created without a lease.
    LeaseTaken,
    /// The reaper completed it with ABORTED.
    LeaseLapsed,
    /// A cooperative cancel: the producer was asked to stop.
    CancelRequested,
    FailureReported,
    /// Done by the producer, or by an immediate cancel (error CANCELLED).
    Completed,
    /// The reaper completed it with DEADLINE_EXCEEDED.
    DeadlineExceeded,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Created,
        EventKind::MetadataUpdated,
        EventKind::LeaseTaken,
        EventKind::LeaseLapsed,
        EventKind::CancelRequested,
        EventKind::FailureReported,
        EventKind::Completed,
        EventKind::DeadlineExceeded,
    ];

    /// The stable name, as the API and the timeline print it.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::MetadataUpdated => "metadata_updated",
            EventKind::LeaseTaken => "lease_taken",
            EventKind::LeaseLapsed => "lease_lapsed",
            EventKind::CancelRequested => "cancel_requested",
            EventKind::FailureReported => "failure_reported",
            EventKind::Completed => "completed",
            EventKind::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// The number stores and the wire use (1-based; 0 is "unspecified" on the wire).
    pub const fn number(self) -> i32 {
        match self {
            EventKind::Created => 1,
            EventKind::MetadataUpdated => 2,
            EventKind::LeaseTaken => 3,
            EventKind::LeaseLapsed => 4,
            EventKind::CancelRequested => 5,
            EventKind::FailureReported => 6,
            EventKind::Completed => 7,
            EventKind::DeadlineExceeded => 8,
        }
    }

    pub fn from_number(n: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.number() == n)
    }

    /// Whether the change that made this event completed the operation.
    pub const fn completes(self) -> bool {
        matches!(
            self,
            EventKind::Completed | EventKind::LeaseLapsed | EventKind::DeadlineExceeded
        )
    }
}

/// The attributes of an event, those of its kind set, the rest empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventDetails {
    /// `created`: the description.
    pub description: Option<String>,
    /// `created`, `lease_taken`: when the lease lapses.
    pub lease_expires_at: Option<Timestamp>,
    /// `created`: the deadline.
    pub deadline: Option<Timestamp>,
    /// `created`, `metadata_updated`: the metadata's type.
    pub metadata_type_url: Option<String>,
    /// `metadata_updated`: the progress after the change.
    pub progress: Option<Progress>,
    /// `failure_reported`, and completions with an error: its code and
    /// message (details are on the operation, not copied here).
    pub error: Option<RpcStatus>,
    /// Completions with a response: its type.
    pub response_type_url: Option<String>,
}

impl EventDetails {
    /// What an event of `kind` says about the operation as the change left it.
    pub fn of(kind: EventKind, op: &Operation) -> Self {
        let mut details = EventDetails::default();
        match kind {
            EventKind::Created => {
                details.description = Some(op.description.clone());
                details.lease_expires_at = op.lease_expires_at;
                details.deadline = op.deadline;
                details.metadata_type_url = op.metadata.as_ref().map(|m| m.type_url.clone());
            }
            EventKind::MetadataUpdated => {
                details.metadata_type_url = op.metadata.as_ref().map(|m| m.type_url.clone());
                details.progress = op.progress.clone();
            }
            EventKind::LeaseTaken => details.lease_expires_at = op.lease_expires_at,
            EventKind::CancelRequested => {}
            EventKind::FailureReported => {
                details.error = op
                    .reported_failure
                    .as_ref()
                    .map(|failure| summary(&failure.status));
            }
            EventKind::Completed | EventKind::LeaseLapsed | EventKind::DeadlineExceeded => {
                match op.outcome() {
                    Some(Outcome::Response(any)) => {
                        details.response_type_url = Some(any.type_url.clone());
                    }
                    Some(Outcome::Error(status)) => details.error = Some(summary(status)),
                    None => {}
                }
            }
        }
        details
    }
}

fn summary(status: &RpcStatus) -> RpcStatus {
    RpcStatus {
        code: status.code,
        message: status.message.clone(),
        details: Vec::new(),
    }
}

/// An event as the service hands it to the store with the change that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub at: Timestamp,
    /// The principal that made the change, or [`REAPER_ACTOR`].
    pub actor: String,
    /// The operation's version after the change.
    pub version: u64,
    pub details: EventDetails,
    /// The span of the call that made the change, when it was traced.
    pub trace: Option<SpanRef>,
}

impl NewEvent {
    /// The event of a change that left the operation as `op`.
    pub fn of(kind: EventKind, op: &Operation, actor: &str) -> Self {
        Self {
            kind,
            at: op.modified_at,
            actor: actor.to_owned(),
            version: op.version,
            details: EventDetails::of(kind, op),
            trace: None,
        }
    }

    /// `self` made by the call traced as `span`.
    pub fn traced(mut self, span: Option<SpanRef>) -> Self {
        self.trace = span;
        self
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub operation_id: OperationId,
    /// 1, 2, 3 … per operation, in the order of its changes.
    pub sequence: u64,
    /// Where the event sits in the change feed of all operations: grows in
    /// commit order, with gaps. A folded event moves to a new position.
    pub position: u64,
    pub kind: EventKind,
    pub at: Timestamp,
    pub actor: String,
    pub version: u64,
    pub details: EventDetails,
    /// The span of the call that made the change, when it was traced.
    pub trace: Option<SpanRef>,
    /// How many later `metadata_updated` events were folded into this one
    /// because the operation reached its event limit.
    pub folded: u64,
    /// Copied from the operation, for the feed's filters and scopes.
    pub scope: String,
    pub resource_id: Option<String>,
    pub created_by: String,
}

impl Event {
    /// The stored form of `new`, for the operation `op` it changed.
    pub fn stored(new: &NewEvent, op: &Operation, sequence: u64, position: u64) -> Self {
        Self {
            operation_id: op.id.clone(),
            sequence,
            position,
            kind: new.kind,
            at: new.at,
            actor: new.actor.clone(),
            version: new.version,
            details: new.details.clone(),
            trace: new.trace,
            folded: 0,
            scope: op.scope.clone(),
            resource_id: op.resource_id.clone(),
            created_by: op.created_by.clone(),
        }
    }

    /// `self` with a later `metadata_updated` event folded in.
    pub fn fold(&self, new: &NewEvent, position: u64) -> Self {
        Self {
            position,
            at: new.at,
            actor: new.actor.clone(),
            version: new.version,
            details: new.details.clone(),
            trace: new.trace,
            folded: self.folded + 1,
            ..self.clone()
        }
    }
}

/// How a store places a new event in an operation's timeline that already
/// has `count` events, the last of kind `last`, under a limit of `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Append,
    /// Replace the last event (a `metadata_updated` past the limit).
    FoldIntoLast,
}

/// Past the limit, a `metadata_updated` event folds into the last event when
/// that one is a `metadata_updated` too; every other kind is always kept.
pub fn placement(new: EventKind, count: u64, last: Option<EventKind>, max: u64) -> Placement {
    if new == EventKind::MetadataUpdated && count >= max && last == Some(EventKind::MetadataUpdated)
    {
        Placement::FoldIntoLast
    } else {
        Placement::Append
    }
}

/// Which events a feed reader wants; `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these scopes (the service always narrows to the caller's).
    pub scopes: Option<std::collections::BTreeSet<String>>,
    pub resource_id: Option<String>,
    pub created_by: Option<String>,
    pub id_prefix: Option<String>,
    pub kinds: Option<std::collections::BTreeSet<EventKind>>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|scopes| scopes.contains(&event.scope))
            && self
                .resource_id
                .as_ref()
                .is_none_or(|r| event.resource_id.as_ref() == Some(r))
            && self
                .created_by
                .as_ref()
                .is_none_or(|c| &event.created_by == c)
            && self
                .id_prefix
                .as_ref()
                .is_none_or(|p| event.operation_id.as_str().starts_with(p.as_str()))
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&event.kind))
    }
}

const EVENT_PAGE_TOKEN_VERSION: u8 = 1;
const RESUME_TOKEN_VERSION: u8 = 1;

/// The token of the next page of `operation`'s events, after `sequence`.
pub fn encode_event_page_token(operation: &OperationId, sequence: u64) -> String {
    use base64::Engine;
    let mut bytes = vec![EVENT_PAGE_TOKEN_VERSION];
    bytes.extend_from_slice(&sequence.to_be_bytes());
    bytes.extend_from_slice(operation.as_str().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The sequence a page token continues after; it must be `operation`'s.
pub fn decode_event_page_token(operation: &OperationId, token: &str) -> Result<u64, Error> {
    use base64::Engine;
    let invalid = || Error::invalid_argument("page_token", "is not a token from a previous page");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    if bytes.len() < 9 || bytes[0] != EVENT_PAGE_TOKEN_VERSION {
        return Err(invalid());
    }
    if &bytes[9..] != operation.as_str().as_bytes() {
        return Err(Error::invalid_argument(
            "page_token",
            "was made for the events of another operation",
        ));
    }
    Ok(u64::from_be_bytes(
        bytes[1..9].try_into().map_err(|_| invalid())?,
    ))
}

/// The resume token of a feed position.
pub fn encode_resume_token(position: u64) -> String {
    use base64::Engine;
    let mut bytes = vec![RESUME_TOKEN_VERSION];
    bytes.extend_from_slice(&position.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The feed position a resume token names; `field` names it in the refusal.
pub fn decode_resume_token(field: &str, token: &str) -> Result<u64, Error> {
    use base64::Engine;
    let invalid = || Error::invalid_argument(field, "is not a resume token of this feed");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    if bytes.len() != 9 || bytes[0] != RESUME_TOKEN_VERSION {
        return Err(invalid());
    }
    Ok(u64::from_be_bytes(
        bytes[1..9].try_into().map_err(|_| invalid())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn resume_tokens_round_trip_and_junk_is_refused(position in any::<u64>(), junk in "\\PC*") {
            let token = encode_resume_token(position);
            prop_assert_eq!(decode_resume_token("resume_token", &token), Ok(position));
            if let Ok(decoded) = decode_resume_token("resume_token", &junk) {
                prop_assert_eq!(encode_resume_token(decoded), junk);
            }
        }

        #[test]
        fn event_page_tokens_are_bound_to_their_operation(sequence in any::<u64>(), junk in "\\PC*") {
            let a = OperationId::parse("id", "ops0000000000000000a").unwrap();
            let b = OperationId::parse("id", "ops0000000000000000b").unwrap();
            let token = encode_event_page_token(&a, sequence);
            prop_assert_eq!(decode_event_page_token(&a, &token), Ok(sequence));
            prop_assert!(decode_event_page_token(&b, &token).is_err());
            let _ = decode_event_page_token(&a, &junk);
        }
    }

    #[test]
    fn kinds_have_stable_names_and_numbers() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_number(kind.number()), Some(kind));
        }
        assert_eq!(EventKind::from_number(0), None);
        assert_eq!(EventKind::from_number(9), None);
        assert_eq!(EventKind::MetadataUpdated.name(), "metadata_updated");
    }

    #[test]
    fn only_metadata_updates_past_the_limit_fold() {
        use EventKind::*;
        assert_eq!(
            placement(MetadataUpdated, 3, Some(MetadataUpdated), 3),
            Placement::FoldIntoLast
        );
        assert_eq!(
            placement(MetadataUpdated, 2, Some(MetadataUpdated), 3),
            Placement::Append
        );
        // After another kind, the first metadata update past the limit is kept.
        assert_eq!(
            placement(MetadataUpdated, 5, Some(FailureReported), 3),
            Placement::Append
        );
        for kind in [Completed, FailureReported, CancelRequested, LeaseTaken] {
            assert_eq!(
                placement(kind, 10, Some(MetadataUpdated), 3),
                Placement::Append
            );
        }
    }
}
