//! The embedded backend: one SQLite database in WAL mode with full sync, so a
//! write is on disk before it is acknowledged.
//!
//! All writes go through one writer thread that owns the only read-write
//! connection. It takes every request that is waiting, applies them in one
//! transaction and commits once (group commit): one sync covers the whole
//! batch, and each caller hears back only after that sync.
//! Reads run on a small pool of read-only connections; WAL lets them proceed
//! while the writer commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use opsd_core::event::{Placement, placement};
use opsd_core::overview::{OverviewQuery, OverviewRows, ProgressQuery, ProgressSample};
use opsd_core::{
    Event, EventFilter, EventKind, ListQuery, NewEvent, Operation, OperationId, Timestamp,
};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{Semaphore, broadcast, oneshot};

use crate::record::{COLUMNS, EVENT_COLUMNS, EventRecord, Record};
use crate::running::RunningCache;
use crate::sql::{self, Param};
use tails::{Tail, Tails};

mod tails;

use crate::{
    CHANGE_BUFFER, Change, FeedBounds, Inserted, OperationStore, SchemaVersion, StoreError,
    Swapped, newer_schema,
};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE operations (
    id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    modified_at INTEGER NOT NULL,
    resource_id TEXT,
    cancellation INTEGER NOT NULL,
    metadata_type_url TEXT,
    metadata_value BLOB,
    state INTEGER NOT NULL,
    cancel_requested_at INTEGER,
    response_type_url TEXT,
    response_value BLOB,
    error_code INTEGER,
    error_message TEXT,
    error_details BLOB,
    idempotency_key TEXT,
    idempotency_fingerprint BLOB,
    progress BLOB,
    deadline INTEGER,
    lease_expires_at INTEGER,
    exclusive INTEGER NOT NULL,
    expires_at INTEGER,
    scope TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX operations_by_idempotency_key
    ON operations (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX operations_exclusive_running
    ON operations (resource_id) WHERE exclusive = 1 AND state != 2;
CREATE INDEX operations_by_creation ON operations (created_at, id);
CREATE INDEX operations_by_resource
    ON operations (resource_id, created_at, id) WHERE resource_id IS NOT NULL;
CREATE INDEX operations_by_creator ON operations (created_by, created_at, id);
CREATE INDEX operations_by_scope ON operations (scope, created_at, id);
CREATE INDEX operations_by_expiry ON operations (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX operations_done_by_age ON operations (modified_at) WHERE state = 2;
CREATE INDEX operations_running ON operations (created_at) WHERE state != 2;
"#,
    r#"
ALTER TABLE operations ADD COLUMN reported_failure BLOB;
ALTER TABLE operations ADD COLUMN failure_reported_at INTEGER;
"#,
    r#"
CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    version INTEGER NOT NULL,
    details BLOB NOT NULL,
    folded INTEGER NOT NULL,
    scope TEXT NOT NULL,
    resource_id TEXT,
    created_by TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX events_by_operation ON events (operation_id, sequence);
CREATE TABLE feed_horizon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
) STRICT;
INSERT INTO feed_horizon (id, position) VALUES (1, 0);
"#,
    r#"
ALTER TABLE operations ADD COLUMN trace_parent TEXT;
ALTER TABLE operations ADD COLUMN trace_state TEXT;
"#,
];

/// Page cache of the writer connection. Kept small on purpose: after a
/// B-tree split SQLite's commit walks the cache's whole hash table (the split
/// parks a page under a page number far past the end of the file), so every
/// cached page costs each such commit. With 64 MiB that walk was 7% of the
/// writer's time; the writer's pages are recent ones, and 8 MiB holds them.
const WRITER_CACHE_KIB: u32 = 8 * 1024;

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The database file; its directory must exist.
    pub path: PathBuf,
    /// Read-only connections serving `get` concurrently.
    pub readers: usize,
    /// The most writes one commit (and one sync) may carry.
    pub max_batch: usize,
    /// How long a connection waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Caps the database at this many pages (SQLite's `max_page_count`):
    /// writes that would grow it further fail as on a full disk. Tests use it
    /// where they cannot fill a real filesystem.
    pub max_page_count: Option<u64>,
    /// Past this many events of one operation, `metadata_updated` events fold.
    pub max_events_per_operation: u64,
    /// Whether writes append to the timeline (`true` unless set otherwise).
    /// Exists only to measure what the timeline costs a write (the `feed`
    /// scenario of `opsd-bench`); nothing else should turn it off. Without
    /// events the store never pretends to have a timeline: `list_events`,
    /// `read_feed` and `feed_bounds` fail with
    /// [`StoreError::EventsNotRecorded`]. Only a new, empty database can be
    /// opened so; it is marked (table `events_not_recorded`) and is refused
    /// afterwards by a store that records events, whose timelines would miss
    /// what was written before.
    pub record_events: bool,
    /// Bring the schema up to date at open (the default); when false, a
    /// schema behind this binary is refused instead (`--no-migrate`).
    pub migrate: bool,
    /// Memory for running operations held by the store (the writer keeps
    /// what it wrote), so a Get of one reads no database; 0 holds none.
    pub running_cache_bytes: u64,
}

/// Running operations the store holds by default.
pub const DEFAULT_RUNNING_CACHE_BYTES: u64 = 64 << 20;

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            readers: 4,
            max_batch: 512,
            busy_timeout: Duration::from_secs(5),
            max_page_count: None,
            max_events_per_operation: opsd_core::event::DEFAULT_MAX_EVENTS_PER_OPERATION,
            record_events: true,
            migrate: true,
            running_cache_bytes: DEFAULT_RUNNING_CACHE_BYTES,
        }
    }
}

enum Write {
    Insert(Operation, NewEvent),
    Import(Vec<Operation>),
    Swap(Operation, Option<NewEvent>),
    DeleteDoneBefore { cutoff: Timestamp, limit: usize },
}

impl Write {
    /// The operations this write may change.
    fn changes(&self) -> Box<dyn Iterator<Item = &OperationId> + '_> {
        match self {
            Write::Insert(op, _) | Write::Swap(op, _) => Box::new(std::iter::once(&op.id)),
            Write::Import(ops) => Box::new(ops.iter().map(|op| &op.id)),
            // Only done operations, which the running cache never holds.
            Write::DeleteDoneBefore { .. } => Box::new(std::iter::empty()),
        }
    }
}

enum Written {
    Inserted(Inserted),
    Imported(usize),
    Swapped(Swapped),
    Deleted(usize),
}

struct WriteRequest {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

pub struct SqliteStore {
    changes: broadcast::Sender<Change>,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Readers>,
    /// Running operations as the writer last wrote them (see [`RunningCache`]).
    running: Arc<RunningCache>,
    record_events: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_connection(
            &options.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            options.busy_timeout,
        )?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "sqlite refused wal journal mode (got {mode})"
            )));
        }
        // FULL syncs the WAL on every commit: acknowledged writes survive power loss.
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(classify)?;
        // Ids are random, so inserts touch index pages all over the file: the
        // writer keeps far more of them in memory than SQLite's default 2 MiB.
        conn.execute_batch(&format!("PRAGMA cache_size = -{}", WRITER_CACHE_KIB))
            .map_err(classify)?;
        if options.migrate {
            migrate(&mut conn, None)?;
        } else {
            schema_version(&conn)?
                .check()
                .map_err(|e| StoreError::Unavailable(format!("{e} (--no-migrate is set)")))?;
        }
        check_events_recorded(&mut conn, &options.path, options.record_events)?;
        if let Some(pages) = options.max_page_count {
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(classify)?;
        }

        let (sender, receiver) = mpsc::channel();
        let limits = WriterLimits {
            max_batch: options.max_batch.max(1),
            max_events: options.max_events_per_operation,
            record_events: options.record_events,
        };
        let changes = broadcast::channel(CHANGE_BUFFER).0;
        let committed = changes.clone();
        let running = Arc::new(RunningCache::new(options.running_cache_bytes));
        let writer_running = Arc::clone(&running);
        let writer_thread = std::thread::Builder::new()
            .name("opsd-sqlite-writer".into())
            .spawn(move || run_writer(conn, receiver, limits, committed, &writer_running))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;

        Ok(Self {
            changes,
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(writer_thread)),
            readers: Arc::new(Readers {
                path: options.path,
                busy_timeout: options.busy_timeout,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(options.readers.max(1)),
                closed: AtomicBool::new(false),
                #[cfg(test)]
                reads_here: std::sync::atomic::AtomicU64::new(0),
            }),
            running,
            record_events: options.record_events,
        })
    }

    /// The schema version of the database at `path` (0 when there is none
    /// yet), and this binary's. Creates nothing.
    pub fn schema_version(path: &Path) -> Result<SchemaVersion, StoreError> {
        if !path.exists() {
            return Ok(SchemaVersion {
                database: 0,
                binary: MIGRATIONS.len() as u64,
            });
        }
        let conn = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY,
            Duration::from_secs(5),
        )?;
        schema_version(&conn)
    }

    /// Creates the database at `path` if needed and brings its schema up to
    /// this binary's version, or to `up_to` if lower; the versions before and after.
    pub fn migrate_database(path: &Path, up_to: Option<u64>) -> Result<(u64, u64), StoreError> {
        let mut conn = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            Duration::from_secs(5),
        )?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "sqlite refused wal journal mode (got {mode})"
            )));
        }
        migrate(&mut conn, up_to)
    }

    /// Refuses reads of a timeline this store does not write.
    fn events_recorded(&self) -> Result<(), StoreError> {
        if self.record_events {
            Ok(())
        } else {
            Err(StoreError::EventsNotRecorded(
                "the sqlite store was opened with record_events = false (a benchmark setting)"
                    .into(),
            ))
        }
    }

    /// Stores many new operations in one transaction and one sync: the fast
    /// path for loading a store (benchmarks, migrations). Operations whose id
    /// or idempotency key is taken are skipped; returns how many were stored.
    /// Subscribers hear nothing of them.
    pub async fn import(&self, operations: Vec<Operation>) -> Result<usize, StoreError> {
        match self.write(Write::Import(operations)).await? {
            Written::Imported(count) => Ok(count),
            _ => unreachable!("the writer answers an import with Imported"),
        }
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let sender = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(WriteRequest { write, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl OperationStore for SqliteStore {
    async fn insert(
        &self,
        operation: &Operation,
        event: &NewEvent,
    ) -> Result<Inserted, StoreError> {
        match self
            .write(Write::Insert(operation.clone(), event.clone()))
            .await?
        {
            Written::Inserted(inserted) => Ok(inserted),
            _ => unreachable!("the writer answers an insert with Inserted"),
        }
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        if self.readers.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        if let Some(op) = self.running.get(id) {
            return Ok(Some(op));
        }
        let stamp = self.running.stamp();
        // A lookup by primary key in a WAL database takes microseconds, less
        // than handing it to the blocking pool and back; longer reads go there.
        let op = self
            .readers
            .run_here(|conn| select_by_id(conn, id.as_str()))?;
        if let Some(op) = &op {
            self.running.remember_read(op, stamp);
        }
        Ok(op)
    }

    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError> {
        match self
            .write(Write::Swap(next.clone(), event.cloned()))
            .await?
        {
            Written::Swapped(swapped) => Ok(swapped),
            _ => unreachable!("the writer answers a swap with Swapped"),
        }
    }

    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.events_recorded()?;
        let statement = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE operation_id = ?1 AND sequence > ?2 \
             ORDER BY sequence LIMIT ?3"
        );
        let params = [
            Param::Text(id.to_string()),
            Param::Int(i64::try_from(after).unwrap_or(i64::MAX)),
            Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.readers
            .run(move |conn| select_events(conn, &statement, &params))
            .await
    }

    async fn read_feed(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.events_recorded()?;
        let (statement, params) = sql::feed(after, filter, limit, |n| format!("?{n}"));
        self.readers
            .run(move |conn| select_events(conn, &statement, &params))
            .await
    }

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.events_recorded()?;
        self.readers
            .run(|conn| {
                conn.prepare_cached(
                    "SELECT (SELECT COALESCE(max(position), 0) FROM events), \
                     (SELECT position FROM feed_horizon)",
                )
                .and_then(|mut stmt| {
                    stmt.query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
                })
                .map(|(head, horizon)| FeedBounds {
                    head: head.max(horizon).max(0) as u64,
                    horizon: horizon.max(0) as u64,
                })
                .map_err(classify)
            })
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        let (statement, params) = sql::list(
            query,
            sql::DescriptionSearch::Function(DESCRIPTION_MATCHES),
            |n| format!("?{n}"),
        );
        self.readers
            .run(move |conn| select_many(conn, &statement, &params))
            .await
    }

    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM operations WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2"
        );
        let params = [
            Param::Int(now.unix_nanos()),
            Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.readers
            .run(move |conn| select_many(conn, &statement, &params))
            .await
    }

    async fn progress_samples(
        &self,
        samples: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError> {
        // A store without events has no timelines: no sample, no typical gap.
        let (statement, params) = sql::progress_samples(samples, |n| format!("?{n}"));
        let rows = self
            .readers
            .run(move |conn| {
                query(conn, &statement, &params, |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
            })
            .await?;
        sql::samples_from_rows(rows)
    }

    async fn overview(&self, wanted: &OverviewQuery) -> Result<OverviewRows, StoreError> {
        let statements = sql::overview(wanted, |n| format!("?{n}"));
        let raw = self
            .readers
            .run(move |conn| {
                let (running, p) = &statements.running;
                let running = query(conn, running, p, |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?;
                let (done, p) = &statements.done;
                let done = query(conn, done, p, |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?;
                let (oldest, p) = &statements.oldest;
                let oldest = select_many(conn, oldest, p)?;
                let (candidates, p) = &statements.candidates;
                let candidates = select_many(conn, candidates, p)?;
                let (sample, p) = &statements.sample;
                let sample = query(conn, sample, p, |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })?;
                Ok(sql::OverviewRaw {
                    running,
                    done,
                    oldest,
                    candidates,
                    sample,
                })
            })
            .await?;
        raw.into_rows()
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        self.readers
            .run(|conn| {
                conn.prepare_cached("SELECT count(*) FROM operations WHERE state != 2")
                    .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
                    .map(|n| n.max(0) as u64)
                    .map_err(classify)
            })
            .await
    }

    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        match self
            .write(Write::DeleteDoneBefore { cutoff, limit })
            .await?
        {
            Written::Deleted(count) => Ok(count),
            _ => unreachable!("the writer answers a delete with Deleted"),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.readers.closed.store(true, Ordering::SeqCst);
        self.readers
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // Dropping the sender lets the writer finish what is queued and stop.
        drop(self.writer.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| StoreError::Unavailable(format!("writer shutdown failed: {e}")))?
                .map_err(|_| StoreError::Unavailable("writer thread panicked".into()))?;
        }
        Ok(())
    }
}

fn open_connection(
    path: &Path,
    flags: OpenFlags,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(
        |e| {
            StoreError::Unavailable(format!(
                "cannot open sqlite database {}: {e}",
                path.display()
            ))
        },
    )?;
    conn.busy_timeout(busy_timeout).map_err(classify)?;
    register_functions(&conn)?;
    Ok(conn)
}

/// The SQL function of (description, text) behind `ListFilter::description_contains`.
const DESCRIPTION_MATCHES: &str = "opsd_description_matches";

/// SQLite's `lower()` and `LIKE` fold only ASCII: the description search runs
/// core's own rule instead, so that every backend gives the same answer.
fn register_functions(conn: &Connection) -> Result<(), StoreError> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        DESCRIPTION_MATCHES,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let description = ctx.get_raw(0).as_str().unwrap_or_default();
            let text = ctx.get_raw(1).as_str().unwrap_or_default();
            Ok(opsd_core::list::description_matches(text, description))
        },
    )
    .map_err(classify)
}

fn schema_version(conn: &Connection) -> Result<SchemaVersion, StoreError> {
    let applied: u64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(classify)?;
    Ok(SchemaVersion {
        database: applied,
        binary: MIGRATIONS.len() as u64,
    })
}

/// Applies the migrations the database lacks (up to `up_to`, or all), in one
/// exclusive transaction; the versions before and after.
fn migrate(conn: &mut Connection, up_to: Option<u64>) -> Result<(u64, u64), StoreError> {
    let known = MIGRATIONS.len() as u64;
    let target = up_to.unwrap_or(known).min(known);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(classify)?;
    let applied: u64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(classify)?;
    if applied > known {
        return Err(StoreError::Corrupt(newer_schema(applied, known)));
    }
    for (index, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(applied as usize)
    {
        tx.execute_batch(migration).map_err(classify)?;
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(classify)?;
        tracing::info!(version = index + 1, "applied sqlite schema migration");
    }
    tx.commit().map_err(classify)?;
    Ok((applied, applied.max(target)))
}

/// A database written without events says so, so that no store ever serves
/// its incomplete timelines; see [`SqliteOptions::record_events`].
const NO_EVENTS_MARK: &str = "events_not_recorded";

/// Without events: only a new database (or one already written so), which is
/// marked. With events: never a marked one.
fn check_events_recorded(
    conn: &mut Connection,
    path: &Path,
    record_events: bool,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(classify)?;
    let marked: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [NO_EVENTS_MARK],
            |row| row.get(0),
        )
        .map_err(classify)?;
    match (record_events, marked) {
        (true, false) | (false, true) => return Ok(()),
        (true, true) => {
            return Err(StoreError::EventsNotRecorded(format!(
                "database {} was written with record_events = false (a benchmark setting): \
                 its timelines are incomplete, so it cannot be opened with events",
                path.display()
            )));
        }
        (false, false) => {}
    }
    let empty: bool = tx
        .query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM operations) AND NOT EXISTS (SELECT 1 FROM events)",
            [],
            |row| row.get(0),
        )
        .map_err(classify)?;
    if !empty {
        return Err(StoreError::EventsNotRecorded(format!(
            "database {} holds operations: only a new database can be written with \
             record_events = false (a benchmark setting)",
            path.display()
        )));
    }
    tx.execute_batch(&format!(
        "CREATE TABLE {NO_EVENTS_MARK} (note TEXT NOT NULL) STRICT; \
         INSERT INTO {NO_EVENTS_MARK} (note) VALUES ('written with record_events = false \
         to measure the cost of the timeline: operations have no events');"
    ))
    .map_err(classify)?;
    tx.commit().map_err(classify)
}

// Hot statements, built once: `prepare_cached` finds them by text, and
// formatting the text anew on every call cost an allocation and a copy.
static SELECT_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM operations WHERE id = ?1"));
static SELECT_BY_IDEMPOTENCY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM operations WHERE created_by = ?1 AND idempotency_key = ?2")
});
static INSERT_OPERATION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO operations ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
          ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29) \
         ON CONFLICT DO NOTHING"
    )
});

#[derive(Clone, Copy)]
struct WriterLimits {
    max_batch: usize,
    max_events: u64,
    record_events: bool,
}

fn run_writer(
    mut conn: Connection,
    requests: mpsc::Receiver<WriteRequest>,
    limits: WriterLimits,
    changes: broadcast::Sender<Change>,
    running: &RunningCache,
) {
    let mut batch = Vec::with_capacity(limits.max_batch);
    let mut tails = Tails::default();
    // `recv` fails only once every sender is gone and the queue is empty.
    while let Ok(first) = requests.recv() {
        batch.push(first);
        while batch.len() < limits.max_batch {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        running.begin(batch.iter().flat_map(|request| request.write.changes()));
        let results = commit_batch(&mut conn, &batch, limits, &mut tails);
        // Before anyone hears of the batch: a caller told its write is done
        // and a watcher woken by it must both read the new version.
        running.end(batch.iter().zip(&results).filter_map(|(request, result)| {
            match (&request.write, result) {
                (Write::Insert(op, _), Ok(Written::Inserted(Inserted::Created)))
                | (Write::Swap(op, _), Ok(Written::Swapped(Swapped::Swapped))) => Some(op),
                _ => None,
            }
        }));
        for (request, result) in batch.iter().zip(&results) {
            let change = match (&request.write, result) {
                (Write::Insert(op, _), Ok(Written::Inserted(Inserted::Created)))
                | (Write::Swap(op, _), Ok(Written::Swapped(Swapped::Swapped))) => {
                    Change::Committed {
                        id: op.id.clone(),
                        version: op.version,
                    }
                }
                (Write::DeleteDoneBefore { cutoff, .. }, Ok(Written::Deleted(n))) if *n > 0 => {
                    Change::Purged { before: *cutoff }
                }
                _ => continue,
            };
            let _ = changes.send(change);
        }
        for (request, result) in batch.drain(..).zip(results) {
            // The caller may have gone away; its write is committed all the same.
            let _ = request.reply.send(result);
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "sqlite checkpoint at close failed");
    }
}

/// Applies every write in one transaction and commits once. Writes fail
/// rarely (a conflict is an answer, not an error), so the batch is first
/// applied without savepoints, which cost a copy of every page a write
/// touches; if any write fails, that attempt is rolled back and the batch is
/// applied again with each write in its own savepoint, so the failing one
/// does not undo the others.
fn commit_batch(
    conn: &mut Connection,
    batch: &[WriteRequest],
    limits: WriterLimits,
    tails: &mut Tails,
) -> Vec<Result<Written, StoreError>> {
    match apply_batch(conn, batch, limits, Isolation::Together, tails) {
        Some(results) => results,
        None => apply_batch(conn, batch, limits, Isolation::EachInSavepoint, tails)
            .expect("a batch applied write by write answers every write"),
    }
}

/// How the writes of one batch are kept apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoints: any failing write rolls the whole attempt back.
    Together,
    /// Each write in a savepoint of its own.
    EachInSavepoint,
}

/// One attempt at a batch. `None` only with [`Isolation::Together`], when a
/// write failed and nothing was committed.
fn apply_batch(
    conn: &mut Connection,
    batch: &[WriteRequest],
    limits: WriterLimits,
    isolation: Isolation,
    tails: &mut Tails,
) -> Option<Vec<Result<Written, StoreError>>> {
    let touched = || {
        batch
            .iter()
            .flat_map(|request| request.write.changes())
            .map(OperationId::as_str)
    };
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let error = classify(e);
            return Some(batch.iter().map(|_| Err(error.clone())).collect());
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        let result = match isolation {
            Isolation::Together => apply(&tx, &request.write, limits, tails),
            Isolation::EachInSavepoint => {
                apply_in_savepoint(&mut tx, &request.write, limits, tails)
            }
        };
        if tx.is_autocommit() {
            // SQLite rolled back the whole transaction, not just this write (it
            // may on a full disk or an I/O error): nothing of the batch is
            // stored, and going on would commit each later write on its own.
            let error = match result {
                Err(e) => e,
                Ok(_) => StoreError::Unavailable("sqlite ended the transaction".into()),
            };
            tracing::warn!(error = %error, writes = batch.len(), "sqlite rolled back a whole batch");
            tails.abandon(touched());
            return Some(batch.iter().map(|_| Err(error.clone())).collect());
        }
        if isolation == Isolation::Together && result.is_err() {
            // Dropping the transaction rolls this attempt back.
            tracing::debug!(
                writes = batch.len(),
                "a write of the batch failed, applying it write by write"
            );
            tails.abandon(touched());
            return None;
        }
        results.push(result);
    }
    if let Err(e) = tx.commit() {
        let error = classify(e);
        tracing::warn!(error = %error, writes = batch.len(), "sqlite commit failed");
        tails.abandon(touched());
        return Some(batch.iter().map(|_| Err(error.clone())).collect());
    }
    tails.commit();
    Some(results)
}

fn apply_in_savepoint(
    tx: &mut Transaction<'_>,
    write: &Write,
    limits: WriterLimits,
    tails: &mut Tails,
) -> Result<Written, StoreError> {
    let mark = tails.mark();
    let result = tx.savepoint().map_err(classify).and_then(|savepoint| {
        let result = apply(&savepoint, write, limits, tails)?;
        savepoint.commit().map_err(classify)?;
        Ok(result)
    });
    if result.is_err() {
        // A dropped savepoint rolls back; so does what the write staged.
        tails.undo_to(mark);
    }
    result
}

fn apply(
    conn: &Connection,
    write: &Write,
    limits: WriterLimits,
    tails: &mut Tails,
) -> Result<Written, StoreError> {
    match write {
        Write::Insert(op, event) => {
            insert(conn, op, event, limits, Some(tails)).map(Written::Inserted)
        }
        // In id order, so consecutive rows land on neighbouring index pages.
        Write::Import(ops) => {
            let mut ops: Vec<&Operation> = ops.iter().collect();
            ops.sort_unstable_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
            ops.into_iter()
                .try_fold(0, |created, op| {
                    // A loaded operation starts its timeline at its creation.
                    let event = NewEvent::of(EventKind::Created, op, &op.created_by);
                    // Not remembered: an import may hold far more than a batch.
                    let inserted = insert(conn, op, &event, limits, None)?;
                    Ok(created + usize::from(inserted == Inserted::Created))
                })
                .map(Written::Imported)
        }
        Write::Swap(op, event) => {
            swap(conn, op, event.as_ref(), limits, tails).map(Written::Swapped)
        }
        Write::DeleteDoneBefore { cutoff, limit } => {
            delete_done_before(conn, *cutoff, *limit, tails).map(Written::Deleted)
        }
    }
}

fn insert(
    conn: &Connection,
    op: &Operation,
    event: &NewEvent,
    limits: WriterLimits,
    tails: Option<&mut Tails>,
) -> Result<Inserted, StoreError> {
    if let Some(idempotency) = &op.idempotency {
        let existing = conn
            .prepare_cached(&SELECT_BY_IDEMPOTENCY_KEY)
            .and_then(|mut stmt| {
                stmt.query_row(params![op.created_by, idempotency.key], read_record)
                    .optional()
            })
            .map_err(classify)?;
        if let Some(existing) = existing {
            return Ok(Inserted::IdempotencyKeyUsed(existing.try_into()?));
        }
    }
    let r = Record::from(op);
    let inserted = conn
        .prepare_cached(&INSERT_OPERATION)
        .and_then(|mut stmt| {
            stmt.execute(params![
                r.id,
                r.version,
                r.description,
                r.created_at,
                r.created_by,
                r.modified_at,
                r.resource_id,
                r.cancellation,
                r.metadata_type_url,
                r.metadata_value,
                r.state,
                r.cancel_requested_at,
                r.response_type_url,
                r.response_value,
                r.error_code,
                r.error_message,
                r.error_details,
                r.idempotency_key,
                r.idempotency_fingerprint,
                r.progress,
                r.deadline,
                r.lease_expires_at,
                r.exclusive,
                r.expires_at,
                r.scope,
                r.reported_failure,
                r.failure_reported_at,
                r.trace_parent,
                r.trace_state,
            ])
        })
        .map_err(classify)?;
    if inserted == 1 {
        if limits.record_events {
            // A new operation has no timeline yet: nothing to look up.
            record_event(conn, op, event, limits.max_events, Timeline::Empty, tails)?;
        }
        return Ok(Inserted::Created);
    }
    // The idempotency key was looked up above; the conflict is the resource guard or the id.
    if op.exclusive
        && let Some(resource_id) = &op.resource_id
    {
        let running = conn
            .prepare_cached(&sql::running_exclusive("?1"))
            .and_then(|mut stmt| stmt.query_row([resource_id], read_record).optional())
            .map_err(classify)?;
        if let Some(running) = running {
            return Ok(Inserted::ResourceBusy(running.try_into()?));
        }
    }
    Ok(Inserted::IdTaken)
}

fn delete_done_before(
    conn: &Connection,
    cutoff: Timestamp,
    limit: usize,
    tails: &mut Tails,
) -> Result<usize, StoreError> {
    let deleted: Vec<String> = conn
        .prepare_cached(
            "DELETE FROM operations WHERE id IN \
             (SELECT id FROM operations WHERE state = 2 AND modified_at < ?1 LIMIT ?2) \
             RETURNING id",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![
                    cutoff.unix_nanos(),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| row.get(0),
            )?
            .collect()
        })
        .map_err(classify)?;
    // Their events go with them; the feed's horizon moves past the highest.
    let mut horizon = 0i64;
    for id in &deleted {
        // Only done operations are deleted, and those are not remembered;
        // forgetting them keeps that true whatever a future change does.
        tails.stage(id, None);
        let highest: Option<i64> = conn
            .prepare_cached("DELETE FROM events WHERE operation_id = ?1 RETURNING position")
            .and_then(|mut stmt| {
                stmt.query_map([id], |row| row.get::<_, i64>(0))?
                    .try_fold(None, |max: Option<i64>, p| {
                        Ok(Some(max.unwrap_or(0).max(p?)))
                    })
            })
            .map_err(classify)?;
        horizon = horizon.max(highest.unwrap_or(0));
    }
    if horizon > 0 {
        conn.prepare_cached("UPDATE feed_horizon SET position = max(position, ?1) WHERE id = 1")
            .and_then(|mut stmt| stmt.execute([horizon]))
            .map_err(classify)?;
    }
    Ok(deleted.len())
}

/// The rows of a generated statement, each read by `read`.
fn query<T>(
    conn: &Connection,
    statement: &str,
    params: &[Param],
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let values: Vec<rusqlite::types::Value> = params
        .iter()
        .map(|p| match p {
            Param::Text(text) => rusqlite::types::Value::Text(text.clone()),
            Param::Int(n) => rusqlite::types::Value::Integer(*n),
        })
        .collect();
    let mut stmt = conn.prepare_cached(statement).map_err(classify)?;
    stmt.query_map(rusqlite::params_from_iter(values), read)
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(classify)
}

fn select_many(
    conn: &Connection,
    statement: &str,
    params: &[Param],
) -> Result<Vec<Operation>, StoreError> {
    query(conn, statement, params, read_record)?
        .into_iter()
        .map(Operation::try_from)
        .collect()
}

fn swap(
    conn: &Connection,
    next: &Operation,
    event: Option<&NewEvent>,
    limits: WriterLimits,
    tails: &mut Tails,
) -> Result<Swapped, StoreError> {
    let r = Record::from(next);
    let updated = conn
        .prepare_cached(
            "UPDATE operations SET version = ?2, modified_at = ?3, metadata_type_url = ?4, \
             metadata_value = ?5, state = ?6, cancel_requested_at = ?7, response_type_url = ?8, \
             response_value = ?9, error_code = ?10, error_message = ?11, error_details = ?12, \
             progress = ?13, lease_expires_at = ?14, expires_at = ?15, reported_failure = ?16, \
             failure_reported_at = ?17 \
             WHERE id = ?1 AND version = ?2 - 1",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                r.id,
                r.version,
                r.modified_at,
                r.metadata_type_url,
                r.metadata_value,
                r.state,
                r.cancel_requested_at,
                r.response_type_url,
                r.response_value,
                r.error_code,
                r.error_message,
                r.error_details,
                r.progress,
                r.lease_expires_at,
                r.expires_at,
                r.reported_failure,
                r.failure_reported_at,
            ])
        })
        .map_err(classify)?;
    if updated == 1 {
        if let Some(event) = event
            && limits.record_events
        {
            record_event(
                conn,
                next,
                event,
                limits.max_events,
                Timeline::Stored,
                Some(tails),
            )?;
        } else if next.is_done() {
            tails.stage(&r.id, None);
        }
        return Ok(Swapped::Swapped);
    }
    Ok(match select_by_id(conn, &r.id)? {
        Some(current) => Swapped::Stale(current),
        None => Swapped::Missing,
    })
}

/// Where the timeline of the operation an event is recorded for stands.
#[derive(Clone, Copy)]
enum Timeline {
    /// The operation was inserted by this write: it has no events.
    Empty,
    /// Its last event is the writer's to remember, or to look up.
    Stored,
}

/// Appends `new` to the timeline of `op` (or folds it into the last event),
/// in the write that changed `op`. Positions come from AUTOINCREMENT, which
/// never reuses one: with a single writer they grow in commit order.
/// With `tails`, the new last event of a running operation is remembered
/// and a remembered one saves the look-up.
fn record_event(
    conn: &Connection,
    op: &Operation,
    new: &NewEvent,
    max_events: u64,
    timeline: Timeline,
    tails: Option<&mut Tails>,
) -> Result<(), StoreError> {
    let remembered = match (&tails, timeline) {
        (Some(tails), Timeline::Stored) => tails.known(op.id.as_str()),
        _ => None,
    };
    let last: Option<(i64, i64, i64, i64)> = match (timeline, remembered) {
        (Timeline::Empty, _) => None,
        (Timeline::Stored, Some(tail)) => {
            Some((tail.sequence, tail.kind, tail.folded, tail.position))
        }
        (Timeline::Stored, None) => conn
            .prepare_cached(
                "SELECT sequence, kind, folded, position FROM events WHERE operation_id = ?1 \
                 ORDER BY sequence DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([op.id.as_str()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()
            })
            .map_err(classify)?,
    };
    let count = last.map_or(0, |(sequence, ..)| sequence.max(0) as u64);
    let last_kind = last.and_then(|(_, kind, ..)| EventKind::from_number(kind as i32));
    let record = match placement(new.kind, count, last_kind, max_events) {
        Placement::FoldIntoLast => {
            let (sequence, _, folded, position) = last.expect("folding needs a last event");
            conn.prepare_cached("DELETE FROM events WHERE position = ?1")
                .and_then(|mut stmt| stmt.execute([position]))
                .map_err(classify)?;
            EventRecord::of(new, op, sequence, folded + 1)
        }
        Placement::Append => {
            EventRecord::of(new, op, i64::try_from(count + 1).unwrap_or(i64::MAX), 0)
        }
    };
    conn.prepare_cached(
        "INSERT INTO events (operation_id, sequence, kind, at, actor, version, details, folded, \
         scope, resource_id, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            record.operation_id,
            record.sequence,
            record.kind,
            record.at,
            record.actor,
            record.version,
            record.details,
            record.folded,
            record.scope,
            record.resource_id,
            record.created_by,
        ])
    })
    .map_err(classify)?;
    if let Some(tails) = tails {
        let tail = (!op.is_done()).then(|| Tail {
            sequence: record.sequence,
            kind: record.kind,
            folded: record.folded,
            position: conn.last_insert_rowid(),
        });
        tails.stage(op.id.as_str(), tail);
    }
    Ok(())
}

fn select_events(
    conn: &Connection,
    statement: &str,
    params: &[Param],
) -> Result<Vec<Event>, StoreError> {
    let read = |row: &rusqlite::Row<'_>| {
        Ok(EventRecord {
            position: row.get(0)?,
            operation_id: row.get(1)?,
            sequence: row.get(2)?,
            kind: row.get(3)?,
            at: row.get(4)?,
            actor: row.get(5)?,
            version: row.get(6)?,
            details: row.get(7)?,
            folded: row.get(8)?,
            scope: row.get(9)?,
            resource_id: row.get(10)?,
            created_by: row.get(11)?,
        })
    };
    query(conn, statement, params, read)?
        .into_iter()
        .map(Event::try_from)
        .collect()
}

fn select_by_id(conn: &Connection, id: &str) -> Result<Option<Operation>, StoreError> {
    let record = conn
        .prepare_cached(&SELECT_BY_ID)
        .and_then(|mut stmt| stmt.query_row([id], read_record).optional())
        .map_err(classify)?;
    record.map(Operation::try_from).transpose()
}

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: row.get(0)?,
        version: row.get(1)?,
        description: row.get(2)?,
        created_at: row.get(3)?,
        created_by: row.get(4)?,
        modified_at: row.get(5)?,
        resource_id: row.get(6)?,
        cancellation: row.get(7)?,
        metadata_type_url: row.get(8)?,
        metadata_value: row.get(9)?,
        state: row.get(10)?,
        cancel_requested_at: row.get(11)?,
        response_type_url: row.get(12)?,
        response_value: row.get(13)?,
        error_code: row.get(14)?,
        error_message: row.get(15)?,
        error_details: row.get(16)?,
        idempotency_key: row.get(17)?,
        idempotency_fingerprint: row.get(18)?,
        progress: row.get(19)?,
        deadline: row.get(20)?,
        lease_expires_at: row.get(21)?,
        exclusive: row.get(22)?,
        expires_at: row.get(23)?,
        scope: row.get(24)?,
        reported_failure: row.get(25)?,
        failure_reported_at: row.get(26)?,
        trace_parent: row.get(27)?,
        trace_state: row.get(28)?,
    })
}

/// Corruption is a bug to surface; anything else (busy, full disk, I/O) may pass.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase
            ) =>
        {
            StoreError::Corrupt(e.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Read-only connections, opened on demand and reused.
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    closed: AtomicBool,
    /// Reads run on the calling thread, for tests to see the running cache work.
    #[cfg(test)]
    reads_here: std::sync::atomic::AtomicU64,
}

impl Readers {
    /// Runs a short read on the calling thread.
    fn run_here<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        #[cfg(test)]
        self.reads_here.fetch_add(1, Ordering::SeqCst);
        let conn = self.take()?;
        let result = read(&conn);
        self.put_back(conn);
        result
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => open_connection(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY,
                self.busy_timeout,
            ),
        }
    }

    fn put_back(&self, conn: Connection) {
        if !self.closed.load(Ordering::SeqCst) {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }

    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(self);
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let result = tokio::task::spawn_blocking(move || {
            if readers.closed.load(Ordering::SeqCst) {
                return Err(StoreError::Closed);
            }
            let conn = readers.take()?;
            let result = read(&conn);
            readers.put_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite read task failed: {e}")))?;
        drop(permit);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::sample;

    /// Every statement of the overview reads through the running or the
    /// done-by-age index (never a scan of the table or of a whole scope),
    /// so its cost follows what runs and what was done in the window.
    #[test]
    fn the_overview_reads_through_the_running_and_done_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        for migration in MIGRATIONS {
            conn.execute_batch(migration).unwrap();
        }
        let scopes = Some(["folder-1".to_owned(), "folder-2".to_owned()].into());
        let now = Timestamp::from_unix_nanos(1_000);
        let statements = sql::overview(
            &opsd_core::overview::OverviewQuery {
                scopes: scopes.clone(),
                done_since: now,
                cancel_requested_before: now,
                quiet_before: now,
                lease_before: now,
                oldest: 10,
                candidates: 10,
                sample: 10,
            },
            |n| format!("?{n}"),
        );
        let progress = sql::progress_samples(
            &opsd_core::overview::ProgressQuery {
                scopes,
                changed_since: now,
                operations_per_prefix: 2,
                events_per_operation: 3,
            },
            |n| format!("?{n}"),
        );
        for (statement, params) in [
            statements.running,
            statements.done,
            statements.oldest,
            statements.candidates,
            statements.sample,
            progress,
        ] {
            let values: Vec<rusqlite::types::Value> = params
                .iter()
                .map(|p| match p {
                    Param::Text(text) => rusqlite::types::Value::Text(text.clone()),
                    Param::Int(n) => rusqlite::types::Value::Integer(*n),
                })
                .collect();
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
                .unwrap();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(values), |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let reads: Vec<&String> = plan
                .iter()
                .filter(|step| step.contains(" operations") || step.contains(" e "))
                .collect();
            assert!(!reads.is_empty(), "{statement}: {plan:?}");
            for step in reads {
                assert!(
                    step.contains("operations_running")
                        || step.contains("operations_done_by_age")
                        || step.contains("events_by_operation"),
                    "{statement}: {plan:?}"
                );
            }
        }
    }

    /// When the event of a change cannot be written, the change is not
    /// written either (and the other writes of its batch still are).
    #[tokio::test]
    async fn a_change_whose_event_fails_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsd.db");
        let store = Arc::new(SqliteStore::open(SqliteOptions::new(&path)).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON events WHEN NEW.actor = 'refused' \
                 BEGIN SELECT RAISE(ABORT, 'injected event failure'); END;",
            )
            .unwrap();
        }
        let op = sample(1);
        let refused_create = NewEvent::of(EventKind::Created, &op, "refused");
        assert!(store.insert(&op, &refused_create).await.is_err());
        assert_eq!(
            store.get(&op.id).await.unwrap(),
            None,
            "no operation without its event"
        );

        store
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        let mut next = op.clone();
        next.version = 2;
        next.description = "changed".into();
        let refused_change = NewEvent::of(EventKind::MetadataUpdated, &next, "refused");
        let neighbour = sample(2);
        let neighbour_created = crate::conformance::created(&neighbour);
        let (refused, accepted) = tokio::join!(
            store.compare_and_swap(&next, Some(&refused_change)),
            store.insert(&neighbour, &neighbour_created),
        );
        assert!(refused.is_err());
        assert_eq!(accepted.unwrap(), Inserted::Created);
        assert_eq!(
            store.get(&op.id).await.unwrap(),
            Some(op.clone()),
            "unchanged"
        );
        assert_eq!(store.list_events(&op.id, 0, 10).await.unwrap().len(), 1);
        assert_eq!(
            store.list_events(&neighbour.id, 0, 10).await.unwrap().len(),
            1
        );
        store.close().await.unwrap();
    }

    /// A store whose database carries `trigger`, which makes chosen writes fail.
    fn store_with_trigger(trigger: &str) -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsd.db");
        let store = Arc::new(SqliteStore::open(SqliteOptions::new(&path)).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch(trigger)
            .unwrap();
        (dir, store)
    }

    /// The writer remembers each running operation's last event. A batch
    /// whose first attempt failed (one refused event among many changes) is
    /// applied again: what the failed attempt wrote must not be remembered,
    /// or the neighbours' next events would skip a sequence number.
    #[tokio::test]
    async fn remembered_timeline_tails_never_outlive_a_failed_attempt() {
        let (_dir, store) = store_with_trigger(
            "CREATE TRIGGER refuse_events BEFORE INSERT ON events WHEN NEW.actor = 'refused' \
             BEGIN SELECT RAISE(ABORT, 'injected event failure'); END;",
        );
        let ops: Vec<_> = (0..32).map(sample).collect();
        for op in &ops {
            store
                .insert(op, &crate::conformance::created(op))
                .await
                .unwrap();
        }
        for round in 0..3u64 {
            let changes: Vec<_> = ops
                .iter()
                .enumerate()
                .map(|(n, op)| {
                    let mut next = op.clone();
                    next.version = 2 + round;
                    next.description = format!("round {round}");
                    // One refused change per round, at a different place in the batch.
                    let actor = if n as u64 == 5 + 10 * round {
                        "refused"
                    } else {
                        "bob"
                    };
                    let event = NewEvent::of(EventKind::MetadataUpdated, &next, actor);
                    let store = Arc::clone(&store);
                    async move { store.compare_and_swap(&next, Some(&event)).await }
                })
                .collect();
            let results = futures_util::future::join_all(changes).await;
            for (n, result) in results.into_iter().enumerate() {
                if n as u64 == 5 + 10 * round {
                    assert!(result.is_err(), "the refused change fails");
                } else {
                    assert_eq!(result.unwrap(), Swapped::Swapped);
                }
            }
            // The refused operation catches up, with its own event.
            let refused = &ops[(5 + 10 * round) as usize];
            let mut next = refused.clone();
            next.version = 2 + round;
            next.description = format!("round {round}");
            let event = NewEvent::of(EventKind::MetadataUpdated, &next, "bob");
            assert_eq!(
                store.compare_and_swap(&next, Some(&event)).await.unwrap(),
                Swapped::Swapped
            );
        }
        for op in &ops {
            let events = store.list_events(&op.id, 0, 10).await.unwrap();
            let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
            assert_eq!(sequences, [1, 2, 3, 4], "{}", op.id);
            let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
            assert_eq!(versions, [1, 2, 3, 4], "{}", op.id);
        }
        store.close().await.unwrap();
    }

    /// A database written by schema version 1 (before reported failures)
    /// opens, keeps its operations, and takes the new column's data.
    #[tokio::test]
    async fn a_version_1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsd.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO operations (id, version, description, created_at, created_by, \
                 modified_at, cancellation, state, exclusive, scope) \
                 VALUES ('tst00000000000000001', 1, 'old', 5, 'alice', 5, 0, 0, 0, 'folder-1')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let id = OperationId::parse("id", "tst00000000000000001").unwrap();
        let old = store
            .get(&id)
            .await
            .unwrap()
            .expect("kept by the migration");
        assert_eq!(old.description, "old");
        assert_eq!(old.reported_failure, None);

        let mut failing = old.clone();
        failing.version += 1;
        failing.reported_failure = Some(opsd_core::ReportedFailure {
            status: opsd_core::RpcStatus {
                code: 8,
                message: "quota".into(),
                details: vec![],
            },
            reported_at: Timestamp::from_unix_nanos(6),
        });
        assert_eq!(
            store
                .compare_and_swap(&failing, Some(&crate::conformance::changed(&failing)))
                .await
                .unwrap(),
            Swapped::Swapped
        );
        assert_eq!(store.get(&id).await.unwrap(), Some(failing));
        store.close().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    #[tokio::test]
    async fn running_operations_are_served_by_the_writers_cache_and_never_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap());
        let reads = || store.readers.reads_here.load(Ordering::SeqCst);
        let op = sample(1);
        store
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        let before = reads();
        assert_eq!(store.get(&op.id).await.unwrap(), Some(op.clone()));
        assert_eq!(reads(), before, "the writer cached what it wrote");

        // Readers racing the writer: every Get returns at least the version
        // acknowledged before it started, and never goes back.
        let acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let store = Arc::clone(&store);
                let acknowledged = Arc::clone(&acknowledged);
                let id = op.id.clone();
                tokio::spawn(async move {
                    let mut seen = 0;
                    while seen < 200 {
                        let floor = acknowledged.load(Ordering::SeqCst);
                        let got = store.get(&id).await.unwrap().unwrap().version;
                        assert!(
                            got >= floor,
                            "read version {got} after {floor} was acknowledged"
                        );
                        assert!(got >= seen, "read version {got} after reading {seen}");
                        seen = got;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut current = op;
        for _ in 1..200 {
            let mut next = current.clone();
            next.version += 1;
            next.modified_at = Timestamp::from_unix_nanos(next.modified_at.unix_nanos() + 1_000);
            let swapped = store
                .compare_and_swap(&next, Some(&crate::conformance::changed(&next)))
                .await
                .unwrap();
            assert_eq!(swapped, Swapped::Swapped);
            acknowledged.store(next.version, Ordering::SeqCst);
            current = next;
        }
        for reader in readers {
            reader.await.unwrap();
        }

        // After a restart nothing is cached: the first Get reads, the next does not.
        store.close().await.unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap();
        assert_eq!(store.get(&current.id).await.unwrap(), Some(current.clone()));
        let before = store.readers.reads_here.load(Ordering::SeqCst);
        assert_eq!(store.get(&current.id).await.unwrap(), Some(current.clone()));
        assert_eq!(store.readers.reads_here.load(Ordering::SeqCst), before);
        // Done operations are not kept: the done cache is another layer's.
        let mut done = current.clone();
        done.version += 1;
        done.state = opsd_core::State::Done {
            outcome: opsd_core::Outcome::Response(opsd_core::Any {
                type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                value: Vec::new(),
            }),
            cancel_requested_at: None,
        };
        store
            .compare_and_swap(&done, Some(&crate::conformance::changed(&done)))
            .await
            .unwrap();
        let before = store.readers.reads_here.load(Ordering::SeqCst);
        assert_eq!(store.get(&done.id).await.unwrap(), Some(done));
        assert_eq!(store.readers.reads_here.load(Ordering::SeqCst), before + 1);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsd.db");
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let op = sample(1);
        store
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        // No close: dropping the store is what a crash of the process looks like to SQLite's
        // files, short of losing the page cache, which full sync covers.
        drop(store);
        let reopened = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        assert_eq!(reopened.get(&op.id).await.unwrap(), Some(op));
        reopened.close().await.unwrap();
    }

    fn without_events(path: &Path) -> SqliteOptions {
        SqliteOptions {
            record_events: false,
            ..SqliteOptions::new(path)
        }
    }

    /// The benchmark knob writes operations alone, and the store then says it
    /// has no timeline instead of answering with an empty one.
    #[tokio::test]
    async fn without_events_writes_none_and_refuses_to_read_a_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsd.db");
        let store = SqliteStore::open(without_events(&path)).unwrap();
        let mut changes = store.subscribe();
        let op = sample(1);
        store
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        let mut done = op.clone();
        done.version += 1;
        done.state = opsd_core::State::Done {
            outcome: opsd_core::Outcome::Response(opsd_core::Any {
                type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                value: vec![],
            }),
            cancel_requested_at: None,
        };
        assert_eq!(
            store
                .compare_and_swap(&done, Some(&crate::conformance::changed(&done)))
                .await
                .unwrap(),
            Swapped::Swapped
        );
        assert_eq!(store.get(&op.id).await.unwrap(), Some(done));
        // Waiters and watchers still hear of every commit.
        for version in [1, 2] {
            assert_eq!(
                changes.recv().await.unwrap(),
                Change::Committed {
                    id: op.id.clone(),
                    version
                }
            );
        }
        assert!(matches!(
            store.list_events(&op.id, 0, 10).await,
            Err(StoreError::EventsNotRecorded(_))
        ));
        assert!(matches!(
            store.read_feed(0, &EventFilter::default(), 10).await,
            Err(StoreError::EventsNotRecorded(_))
        ));
        assert!(matches!(
            store.feed_bounds().await,
            Err(StoreError::EventsNotRecorded(_))
        ));
        store.close().await.unwrap();
        let events: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(events, 0);
    }

    /// A database written without events is never served as if its
    /// timelines were whole, and a database with operations is never opened
    /// without events (its timelines would get holes).
    #[tokio::test]
    async fn databases_with_and_without_events_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bare.db");
        let store = SqliteStore::open(without_events(&bare)).unwrap();
        let op = sample(1);
        store
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        store.close().await.unwrap();
        let refused = SqliteStore::open(SqliteOptions::new(&bare));
        assert!(
            matches!(&refused, Err(StoreError::EventsNotRecorded(m)) if m.contains("bare.db")),
            "{:?}",
            refused.err()
        );
        // Still opens as it was written.
        let again = SqliteStore::open(without_events(&bare)).unwrap();
        assert_eq!(again.get(&op.id).await.unwrap(), Some(op.clone()));
        again.close().await.unwrap();

        let whole = dir.path().join("whole.db");
        let store = SqliteStore::open(SqliteOptions::new(&whole)).unwrap();
        store
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        store.close().await.unwrap();
        assert!(matches!(
            SqliteStore::open(without_events(&whole)),
            Err(StoreError::EventsNotRecorded(_))
        ));
        let store = SqliteStore::open(SqliteOptions::new(&whole)).unwrap();
        assert_eq!(store.list_events(&op.id, 0, 10).await.unwrap().len(), 1);
        store.close().await.unwrap();

        // A new database that was only opened with events is not new any more
        // once it holds something; an empty one may still go either way.
        let empty = dir.path().join("empty.db");
        SqliteStore::open(SqliteOptions::new(&empty))
            .unwrap()
            .close()
            .await
            .unwrap();
        SqliteStore::open(without_events(&empty))
            .unwrap()
            .close()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reopening_keeps_the_schema_and_refuses_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsd.db");
        SqliteStore::open(SqliteOptions::new(&path))
            .unwrap()
            .close()
            .await
            .unwrap();
        SqliteStore::open(SqliteOptions::new(&path))
            .unwrap()
            .close()
            .await
            .unwrap();

        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(SqliteOptions::new(&path)),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_its_batch_neighbours() {
        let (_dir, store) = store_with_trigger(
            "CREATE TRIGGER poison BEFORE INSERT ON operations \
             WHEN NEW.description = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        );
        let mut ops: Vec<_> = (0..64).map(sample).collect();
        ops[17].description = "poison".into();
        let tasks: Vec<_> = ops
            .iter()
            .cloned()
            .map(|op| {
                let store = Arc::clone(&store);
                tokio::spawn(
                    async move { store.insert(&op, &crate::conformance::created(&op)).await },
                )
            })
            .collect();
        for (op, task) in ops.iter().zip(tasks) {
            let result = task.await.unwrap();
            if op.description == "poison" {
                assert!(
                    matches!(result, Err(StoreError::Unavailable(_))),
                    "{result:?}"
                );
                assert_eq!(store.get(&op.id).await.unwrap(), None);
            } else {
                assert_eq!(result.unwrap(), Inserted::Created);
                assert_eq!(store.get(&op.id).await.unwrap().as_ref(), Some(op));
            }
        }
    }

    /// Some errors (a full disk, I/O errors) make SQLite roll back the whole
    /// transaction, not just the failing statement. The writes after it in the
    /// batch must then fail too, not commit on their own while reported
    /// failed (unannounced to watchers, and retried by their callers).
    #[tokio::test]
    async fn a_write_that_rolls_back_the_transaction_fails_its_whole_batch_truthfully() {
        let (_dir, store) = store_with_trigger(
            "CREATE TRIGGER doom BEFORE INSERT ON operations \
             WHEN NEW.description = 'doom' BEGIN SELECT RAISE(ROLLBACK, 'doomed'); END",
        );
        let mut changes = store.subscribe();
        let mut ops: Vec<_> = (0..64).map(sample).collect();
        ops[17].description = "doom".into();
        // Queued together, so that they share a batch.
        let tasks: Vec<_> = ops
            .iter()
            .cloned()
            .map(|op| {
                let store = Arc::clone(&store);
                tokio::spawn(
                    async move { store.insert(&op, &crate::conformance::created(&op)).await },
                )
            })
            .collect();
        let mut acknowledged = 0;
        for (op, task) in ops.iter().zip(tasks) {
            let answer = task.await.unwrap();
            let stored = store.get(&op.id).await.unwrap();
            match answer {
                Ok(inserted) => {
                    assert_eq!(inserted, Inserted::Created);
                    assert_eq!(stored.as_ref(), Some(op), "acknowledged but not stored");
                    acknowledged += 1;
                }
                Err(e) => {
                    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
                    assert_eq!(stored, None, "{} reported failed but stored", op.id);
                }
            }
        }
        let mut announced = 0;
        while let Ok(change) = changes.try_recv() {
            assert!(matches!(change, Change::Committed { .. }));
            announced += 1;
        }
        assert_eq!(announced, acknowledged, "every stored write is announced");
        // The store keeps working.
        let after = sample(100);
        assert_eq!(
            store
                .insert(&after, &crate::conformance::created(&after))
                .await
                .unwrap(),
            Inserted::Created
        );
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn unreadable_rows_are_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsd.db");
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let op = sample(1);
        store
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        store.close().await.unwrap();
        // Tampered with while no opsd runs (a running one holds what it wrote).
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE operations SET state = 2", []).unwrap();
        drop(conn);
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        assert!(matches!(
            store.get(&op.id).await,
            Err(StoreError::Corrupt(_))
        ));
    }
}
