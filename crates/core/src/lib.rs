//! The operation domain of opsd, free of any transport or storage.
//!
//! An [`Operation`] runs until it is done with exactly one [`Outcome`]; every
//! rule about how it may change lives in [`operation`]; every rule about which
//! inputs are acceptable lives in [`validate`]. Errors carry a [`Code`] from the
//! one table that adapters map to gRPC and HTTP.

pub mod error;
pub mod event;
pub mod id;
pub mod list;
pub mod operation;
pub mod overview;
pub mod payload;
pub mod principal;
pub mod progress;
pub mod time;
pub mod trace;
pub mod validate;

pub use error::{Code, Error, FieldViolation, Precondition};
pub use event::{Event, EventDetails, EventFilter, EventKind, NewEvent};
pub use id::{IdPrefix, OperationId};
pub use list::{Cursor, ListFilter, ListQuery, StateFilter};
pub use operation::{
    CancellationPolicy, Idempotency, NewOperation, Operation, Outcome, ReportedFailure, State,
    Transition, Update,
};
pub use payload::{Any, RpcStatus};
pub use principal::{Action, Principal, Role, Scopes};
pub use progress::{Progress, Step, StepState};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use trace::{SpanRef, TraceContext};
