//! Where operations live. [`OperationStore`] is the one interface; backends:
//! [`MemoryStore`] (tests), [`SqliteStore`] (embedded, durable, the default) and
//! [`PostgresStore`] (shared by many opsd replicas).
//! Every backend passes the same [`conformance`] suite.
//!
//! Stores hold no rules: the service computes the next version of an operation
//! with `opsd_core` and the store writes it only if nobody changed the operation
//! in between (compare-and-set on `version`), so racing writers never both win.

mod cache;
pub mod conformance;
pub mod faults;
mod memory;
mod postgres;
mod record;
mod running;
mod sql;
mod sqlite;

use async_trait::async_trait;
use opsd_core::overview::{OverviewQuery, OverviewRows, ProgressQuery, ProgressSample};
use opsd_core::{Event, EventFilter, ListQuery, NewEvent, Operation, OperationId, Timestamp};

pub use cache::CachingStore;
pub use memory::MemoryStore;
pub use postgres::{PostgresOptions, PostgresStore, connect::SslMode};
pub use sqlite::{SqliteOptions, SqliteStore};

/// Outcome of [`OperationStore::insert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// The creator already used this idempotency key; this is the operation it made.
    IdempotencyKeyUsed(Operation),
    /// Another operation has this id (a random collision): pick another id.
    IdTaken,
    /// The operation is exclusive and this exclusive operation is running on
    /// the same resource.
    ResourceBusy(Operation),
}

/// Outcome of [`OperationStore::compare_and_swap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swapped {
    Swapped,
    /// Someone changed the operation first; this is its current version.
    Stale(Operation),
    Missing,
}

/// What subscribers of [`OperationStore::subscribe`] hear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// This version of the operation was committed (by this process or, for a
    /// shared database, by any replica).
    Committed { id: OperationId, version: u64 },
    /// Retention deleted done operations last changed before this time (some
    /// of them, at least: deletion runs in batches).
    Purged { before: Timestamp },
    /// Changes may have been missed (the notification connection dropped and
    /// came back): re-read whatever you are waiting on.
    Resync,
}

/// Where the change feed stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedBounds {
    /// The highest position written so far (0 for none).
    pub head: u64,
    /// Retention deleted events at or below this position: a reader that
    /// stands below it may have missed some.
    pub horizon: u64,
}

/// The schema version a database holds and the one this binary knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaVersion {
    pub database: u64,
    pub binary: u64,
}

impl SchemaVersion {
    /// Ok when the database is at this binary's version; otherwise what is wrong.
    pub fn check(self) -> Result<(), String> {
        let SchemaVersion { database, binary } = self;
        match database.cmp(&binary) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(format!(
                "database schema version {database} is behind this opsd ({binary}): run opsd migrate"
            )),
            std::cmp::Ordering::Greater => Err(newer_schema(database, binary)),
        }
    }
}

pub(crate) fn newer_schema(database: u64, binary: u64) -> String {
    format!(
        "database schema version {database} is newer than this opsd knows ({binary}): \
         run an opsd release of schema version {database} or later"
    )
}

/// Puts an overview's counts in the order the contract names (SQL backends
/// group without ordering).
pub(crate) fn sort_overview_counts(rows: &mut OverviewRows) {
    rows.running.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    rows.done
        .sort_by(|a, b| (&a.prefix, a.error_code).cmp(&(&b.prefix, b.error_code)));
}

/// Room for bursts of changes before a slow subscriber lags (and must resync).
pub const CHANGE_BUFFER: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Transient: the storage cannot be reached or is overloaded; retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data that opsd cannot read back: a bug or tampering.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store is closed")]
    Closed,
    /// The store was set up not to record events (a benchmark setting, see
    /// [`SqliteOptions::record_events`]): it has no timeline to read, or
    /// refuses a database whose timelines are incomplete.
    #[error("events are not recorded: {0}")]
    EventsNotRecorded(String),
}

impl From<StoreError> for opsd_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Closed => {
                opsd_core::Error::Unavailable(e.to_string())
            }
            StoreError::Corrupt(_) | StoreError::EventsNotRecorded(_) => {
                opsd_core::Error::Internal(e.to_string())
            }
        }
    }
}

#[async_trait]
pub trait OperationStore: Send + Sync + 'static {
    /// Stores a new operation (version 1) and its `created` event, together.
    /// When it carries an idempotency key that its creator already used,
    /// nothing is written and the earlier operation is returned instead.
    async fn insert(&self, operation: &Operation, event: &NewEvent)
    -> Result<Inserted, StoreError>;

    /// The current version of an operation; readable as soon as the write that
    /// made it was acknowledged.
    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError>;

    /// Replaces the stored operation with `next` if the stored version is
    /// exactly `next.version - 1`, appending `event` (if any) to its timeline
    /// in the same write: both are stored, or neither.
    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError>;

    /// An operation's events after `after` (a sequence number), oldest first.
    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Events of any operation after feed position `after` that match the
    /// filter, in position (commit) order.
    async fn read_feed(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError>;

    /// One page of operations matching the filter, newest first (by
    /// `created_at`, then `id`), starting after the cursor.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError>;

    /// Running operations whose deadline or lease is at or before `now`,
    /// earliest first.
    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError>;

    /// Deletes up to `limit` done operations last changed before `cutoff`,
    /// with their events; returns how many. Running operations are never
    /// deleted. When any were deleted, subscribers (of every replica) hear
    /// [`Change::Purged`], and the feed's horizon moves past their events.
    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;

    /// How many operations are not done yet.
    async fn count_running(&self) -> Result<u64, StoreError>;

    /// For the overview's typical gaps: of each id prefix, the
    /// `operations_per_prefix` most recently changed operations (by
    /// `(modified_at, id)`) among the running ones and those done at or after
    /// `changed_since`, in the scopes; of each, its first
    /// `events_per_operation` events. Ordered by id.
    async fn progress_samples(
        &self,
        query: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError>;

    /// For the overview: exact counts by id prefix, the oldest running
    /// operations, the stuck candidates and a sample of recently done
    /// operations, as [`OverviewQuery`] describes them; counts sorted by
    /// prefix (and error code, a response first).
    async fn overview(&self, query: &OverviewQuery) -> Result<OverviewRows, StoreError>;

    /// Every committed change from now on. A receiver that falls more than
    /// [`CHANGE_BUFFER`] changes behind gets `Lagged` and should treat it as
    /// [`Change::Resync`].
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change>;

    /// Finishes pending writes and releases the storage; later calls fail with `Closed`.
    async fn close(&self) -> Result<(), StoreError>;
}
