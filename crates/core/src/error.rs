//! The error enum of opsd and the one table that maps it to gRPC and HTTP codes.

use std::fmt;

/// Canonical status codes (the numbers are gRPC's), each with its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Cancelled,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    /// The gRPC status code number.
    pub const fn grpc(self) -> i32 {
        match self {
            Code::Cancelled => 1,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
        }
    }

    /// The HTTP status the REST gateway answers with, as google.rpc.Code documents it.
    pub const fn http_status(self) -> u16 {
        match self {
            Code::Cancelled => 499,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }
}

/// One invalid field of a request, named by its path in the request message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why an operation's state refuses a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The producer declared the operation not cancellable.
    NotCancellable,
    /// Cancel of an operation that is already done (and not cancelled).
    AlreadyDone,
    /// Complete with a result other than the one the operation already has.
    CompletedDifferently,
    /// Metadata update of an operation that is already done.
    MetadataOfDone,
    /// An idempotency key reused for a create request with other contents.
    IdempotencyKeyReused,
    /// A heartbeat for an operation that is already done.
    HeartbeatOfDone,
    /// A heartbeat after the lease lapsed or the deadline passed.
    LeaseLapsed,
    /// A response for an operation whose producer already reported a failure.
    FailureReported,
    /// A failure report for an operation that is already done.
    FailureOfDone,
}

impl Precondition {
    /// A stable, machine-readable name (used as the precondition violation type).
    pub const fn reason(self) -> &'static str {
        match self {
            Precondition::NotCancellable => "NOT_CANCELLABLE",
            Precondition::AlreadyDone => "ALREADY_DONE",
            Precondition::CompletedDifferently => "COMPLETED_DIFFERENTLY",
            Precondition::MetadataOfDone => "ALREADY_DONE",
            Precondition::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Precondition::HeartbeatOfDone => "ALREADY_DONE",
            Precondition::LeaseLapsed => "LEASE_LAPSED",
            Precondition::FailureReported => "FAILURE_REPORTED",
            Precondition::FailureOfDone => "ALREADY_DONE",
        }
    }

    const fn message(self) -> &'static str {
        match self {
            Precondition::NotCancellable => "operation is not cancellable",
            Precondition::AlreadyDone => "operation is already done",
            Precondition::CompletedDifferently => {
                "operation is already done with a different result"
            }
            Precondition::MetadataOfDone => "metadata of a done operation cannot change",
            Precondition::IdempotencyKeyReused => {
                "idempotency key was already used for a different create request"
            }
            Precondition::HeartbeatOfDone => "operation is already done, stop working on it",
            Precondition::LeaseLapsed => {
                "the lease lapsed or the deadline passed: the operation is being aborted"
            }
            Precondition::FailureReported => {
                "a failure was reported, the operation can only complete with an error"
            }
            Precondition::FailureOfDone => "operation is already done, its failure cannot change",
        }
    }
}

/// Everything that can go wrong in a request, named by outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("operation {id} not found")]
    NotFound { id: String },
    #[error("{}: {id}", .precondition.message())]
    FailedPrecondition {
        id: String,
        precondition: Precondition,
    },
    /// An exclusive operation on the resource is already running (AIP-151).
    #[error("resource {resource_id} is busy with running operation {running_id}")]
    ResourceBusy {
        resource_id: String,
        running_id: String,
    },
    /// The caller is known but lacks the role for this request.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No, malformed, unknown or expired credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A limit of this server is reached (open watchers, say): the message
    /// names the limit. Retrying later may succeed.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A position outside what is kept (a feed resume token older than
    /// retention): start over from a fresh listing.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A transient failure (storage down, too much contention): retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupted data; never the caller's mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    let mut out = String::new();
    for (i, v) in violations.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        fmt::Write::write_fmt(&mut out, format_args!("{}: {}", v.field, v.description))
            .expect("writing to a string cannot fail");
    }
    out
}

impl Error {
    pub fn invalid_argument(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::ResourceBusy { .. } => Code::Aborted,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_punctuation() {
        let errors = [
            Error::invalid_argument("operation_id", "is required"),
            Error::NotFound { id: "x".into() },
            Error::FailedPrecondition {
                id: "x".into(),
                precondition: Precondition::NotCancellable,
            },
            Error::Unavailable("storage is unreachable".into()),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.starts_with(char::is_uppercase), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn caller_mistakes_never_map_to_internal() {
        for (error, grpc, http) in [
            (Error::invalid_argument("f", "bad"), 3, 400),
            (Error::NotFound { id: "x".into() }, 5, 404),
            (
                Error::FailedPrecondition {
                    id: "x".into(),
                    precondition: Precondition::AlreadyDone,
                },
                9,
                400,
            ),
            (Error::ResourceExhausted("too many watchers".into()), 8, 429),
            (Error::Unavailable("down".into()), 14, 503),
        ] {
            assert_eq!(error.code().grpc(), grpc);
            assert_eq!(error.code().http_status(), http);
        }
    }
}
