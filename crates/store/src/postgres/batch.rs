//! Group commit for PostgreSQL: state changes waiting at the same moment are
//! committed together, in one transaction.
//!
//! Each written row is announced with `pg_notify` by the statement that
//! writes it, so what commits is announced exactly as one change at a time
//! would be. PostgreSQL serializes the commits of transactions that notify (a
//! global lock held through the WAL flush), so one commit per change caps a
//! whole cluster at one flush per change; a batch pays one flush for all of
//! its changes.
//!
//! A batch's inserts are one statement whatever their number (`INSERT …
//! SELECT FROM unnest(…)`, arrays of one element per change), and so are its
//! new events; with a statement per change the database's work per batch had
//! been mostly per statement. Its swaps stay one statement each, pipelined in
//! id order: two batches then lock rows in the same order and cannot
//! deadlock, and a point update's cached plan probes the primary key whatever
//! size the table had when the plan was made (a cached plan joining an array
//! to `operations`, made on an empty table, scanned a whole index per batch).
//! If any statement fails, the batch is rolled back and every change runs on
//! its own, so one bad change never fails its neighbours; a batch that names
//! one operation twice (only a store-level race can) runs that way too, so
//! that what the insert returns maps back to its change by id.
//!
//! Each change that wrote its row also writes its event, in the same
//! transaction, after all of the batch's row changes: the events take their
//! feed positions from a sequence under one advisory lock held until commit,
//! so positions grow in commit order across every replica (a reader that has
//! seen position N can never later find a smaller one committed). The lock
//! is taken only once the batch holds all of its rows, so it cannot close a
//! cycle with row locks.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use deadpool_postgres::Pool;
use futures_util::future::join_all;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::ToSql;

use opsd_core::EventKind;
use opsd_core::event::{Placement, placement};

use super::{CHANNEL, FEED_LOCK, classify};
use crate::StoreError;
use crate::record::COLUMNS;
use crate::record::{EventRecord, Record};

/// The most changes one transaction carries.
const MAX_BATCH: usize = 256;

/// A change's statement: insert a new operation, or swap in its next
/// version; with the event it makes (its sequence and position to be found).
pub(super) enum Change {
    Insert(Record, EventRecord),
    Swap(Record, Option<EventRecord>),
}

impl Change {
    fn id(&self) -> &str {
        match self {
            Change::Insert(r, _) | Change::Swap(r, _) => &r.id,
        }
    }

    /// The event, and whether its operation may already have a timeline (a
    /// new one has none, so its last event is not looked up).
    fn event(&self) -> Option<(&EventRecord, bool)> {
        match self {
            Change::Insert(_, event) => Some((event, false)),
            Change::Swap(_, event) => event.as_ref().map(|event| (event, true)),
        }
    }
}

struct Queued {
    change: Change,
    /// Rows the statement changed (0 or 1).
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Queued>,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

impl Batcher {
    /// `lanes` transactions may be open at once, each on a pool connection;
    /// past `max_events` events of an operation, metadata updates fold.
    /// `cache_statements` false (behind a transaction-mode pooler) prepares
    /// every statement anew in its transaction, and closes it there.
    pub(super) fn start(pool: Pool, lanes: usize, max_events: u64, cache_statements: bool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        let settings = Settings {
            max_events,
            cache_statements,
        };
        let lanes = (0..lanes.max(1))
            .map(|_| tokio::spawn(run_lane(pool.clone(), Arc::clone(&waiting), settings)))
            .collect();
        Self { queue, lanes }
    }

    /// Runs the change in the next batch; answers once that batch committed.
    pub(super) async fn apply(&self, change: Change) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { change, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the write was dropped before its batch finished".into())
        })?
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        for lane in &self.lanes {
            lane.abort();
        }
    }
}

async fn run_lane(
    pool: Pool,
    waiting: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>,
    settings: Settings,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut waiting = waiting.lock().await;
            match waiting.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        batch.sort_by(|a, b| a.change.id().cmp(b.change.id()));
        let results = commit(&pool, &batch, settings).await;
        for (queued, result) in batch.drain(..).zip(results) {
            // The caller may have gone (its deadline passed); the result stands.
            let _ = queued.reply.send(result);
        }
    }
}

async fn commit(pool: &Pool, batch: &[Queued], settings: Settings) -> Vec<Result<u64, StoreError>> {
    let fail_all = |error: StoreError| batch.iter().map(|_| Err(error.clone())).collect();
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(deadpool_postgres::PoolError::Closed) => return fail_all(StoreError::Closed),
        Err(e) => {
            return fail_all(StoreError::Unavailable(format!(
                "no database connection: {e}"
            )));
        }
    };
    let changes: Vec<&Change> = batch.iter().map(|q| &q.change).collect();
    // Sorted by id, so a repeated id sits next to its twin.
    let names_one_twice = changes.windows(2).any(|pair| pair[0].id() == pair[1].id());
    if batch.len() == 1 || names_one_twice {
        return one_by_one(&mut client, &changes, settings).await;
    }
    let together = async {
        let transaction = client.transaction().await.map_err(classify)?;
        let results = write_all(&transaction, &changes, settings).await;
        let Ok(results) = results else {
            // Rolled back when dropped; each change is tried on its own below.
            return Ok(None);
        };
        transaction.commit().await.map_err(classify)?;
        Ok::<_, StoreError>(Some(results))
    };
    match together.await {
        Ok(Some(results)) => results.into_iter().map(Ok).collect(),
        Ok(None) => one_by_one(&mut client, &changes, settings).await,
        // A failed commit leaves every change's fate unknown to this process:
        // the same answer a single statement gets when its connection drops.
        Err(error) => fail_all(error),
    }
}

/// Each change in a transaction of its own, in the batch's order.
async fn one_by_one(
    client: &mut deadpool_postgres::Object,
    changes: &[&Change],
    settings: Settings,
) -> Vec<Result<u64, StoreError>> {
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        results.push(alone(client, change, settings).await.map(|rows| rows[0]));
    }
    results
}

/// One change and its event in a transaction of their own.
async fn alone(
    client: &mut deadpool_postgres::Object,
    change: &Change,
    settings: Settings,
) -> Result<Vec<u64>, StoreError> {
    let transaction = client.transaction().await.map_err(classify)?;
    let rows = write_all(&transaction, &[change], settings).await?;
    transaction.commit().await.map_err(classify)?;
    Ok(rows)
}

/// The row changes, then the events of those that wrote a row; the rows
/// each change wrote (0 or 1). Any failure fails the whole.
///
/// A batch names each operation once (see [`commit`]), so the ids the
/// statements report map back to their changes.
async fn write_all(
    transaction: &deadpool_postgres::Transaction<'_>,
    changes: &[&Change],
    settings: Settings,
) -> Result<Vec<u64>, StoreError> {
    let inserts: Vec<&Record> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Insert(record, _) => Some(record),
            Change::Swap(..) => None,
        })
        .collect();
    let swaps: Vec<&Record> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Swap(record, _) => Some(record),
            Change::Insert(..) => None,
        })
        .collect();
    // Pipelined, inserts first: new rows lock nothing another batch waits
    // for, and the swaps then lock existing rows in id order.
    let (inserted, swapped) = futures_util::future::try_join(
        insert_rows(transaction, &inserts, settings.cache_statements),
        swap_rows(transaction, &swaps, settings.cache_statements),
    )
    .await?;
    let rows: Vec<u64> = changes
        .iter()
        .map(|change| match change {
            Change::Insert(record, _) => u64::from(inserted.contains(record.id.as_str())),
            Change::Swap(record, _) => u64::from(swapped.contains(record.id.as_str())),
        })
        .collect();
    let events: Vec<(&EventRecord, bool)> = changes
        .iter()
        .zip(&rows)
        .filter(|(_, rows)| **rows == 1)
        .filter_map(|(change, _)| change.event())
        .collect();
    if !events.is_empty() {
        record_events(transaction, &events, settings).await?;
    }
    Ok(rows)
}

/// One column of a statement's array parameters: the field of every record.
type Column<'a> = Box<dyn ToSql + Sync + Send + 'a>;

fn column<'a, R, T>(records: &[&'a R], field: impl Fn(&'a R) -> T) -> Column<'a>
where
    T: ToSql + Sync + Send + 'a,
{
    Box::new(
        records
            .iter()
            .map(|record| field(record))
            .collect::<Vec<T>>(),
    )
}

fn parameters<'a>(columns: &'a [Column<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    columns
        .iter()
        .map(|column| column.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Inserts the new operations that do not collide with a stored one (id,
/// idempotency key, exclusive resource), announcing each; the ids inserted.
async fn insert_rows<'a>(
    transaction: &deadpool_postgres::Transaction<'_>,
    records: &[&'a Record],
    cache: bool,
) -> Result<HashSet<String>, StoreError> {
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    let statement = prepare_statement(transaction, &INSERT_ROWS, cache)
        .await
        .map_err(classify)?;
    let columns = [
        column(records, |r: &'a Record| r.id.as_str()),
        column(records, |r: &'a Record| r.version),
        column(records, |r: &'a Record| r.description.as_str()),
        column(records, |r: &'a Record| r.created_at),
        column(records, |r: &'a Record| r.created_by.as_str()),
        column(records, |r: &'a Record| r.modified_at),
        column(records, |r: &'a Record| r.resource_id.as_deref()),
        column(records, |r: &'a Record| r.cancellation),
        column(records, |r: &'a Record| r.metadata_type_url.as_deref()),
        column(records, |r: &'a Record| r.metadata_value.as_deref()),
        column(records, |r: &'a Record| r.state),
        column(records, |r: &'a Record| r.cancel_requested_at),
        column(records, |r: &'a Record| r.response_type_url.as_deref()),
        column(records, |r: &'a Record| r.response_value.as_deref()),
        column(records, |r: &'a Record| r.error_code),
        column(records, |r: &'a Record| r.error_message.as_deref()),
        column(records, |r: &'a Record| r.error_details.as_deref()),
        column(records, |r: &'a Record| r.idempotency_key.as_deref()),
        column(records, |r: &'a Record| {
            r.idempotency_fingerprint.as_deref()
        }),
        column(records, |r: &'a Record| r.progress.as_deref()),
        column(records, |r: &'a Record| r.deadline),
        column(records, |r: &'a Record| r.lease_expires_at),
        column(records, |r: &'a Record| r.exclusive),
        column(records, |r: &'a Record| r.expires_at),
        column(records, |r: &'a Record| r.scope.as_str()),
        column(records, |r: &'a Record| r.reported_failure.as_deref()),
        column(records, |r: &'a Record| r.failure_reported_at),
        column(records, |r: &'a Record| r.trace_parent.as_deref()),
        column(records, |r: &'a Record| r.trace_state.as_deref()),
    ];
    Ok(transaction
        .query(&statement, &parameters(&columns))
        .await
        .map_err(classify)?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// Swaps in each operation's next version where the stored one is the one
/// before it, announcing each; the ids swapped. One statement per swap,
/// pipelined in id order: two batches lock rows in the same order and cannot
/// deadlock, and a point update's cached plan is an index probe whatever size
/// the table had when it was made (one statement joining an array to
/// `operations` got, from a plan made on an empty table, a scan of a whole
/// index per batch).
async fn swap_rows(
    transaction: &deadpool_postgres::Transaction<'_>,
    records: &[&Record],
    cache: bool,
) -> Result<HashSet<String>, StoreError> {
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    let statement = prepare_statement(transaction, &SWAP_ROW, cache)
        .await
        .map_err(classify)?;
    let statement = &statement;
    let swaps = records.iter().map(|r| async move {
        transaction
            .execute(
                statement,
                &[
                    &r.id,
                    &r.version,
                    &r.modified_at,
                    &r.metadata_type_url,
                    &r.metadata_value,
                    &r.state,
                    &r.cancel_requested_at,
                    &r.response_type_url,
                    &r.response_value,
                    &r.error_code,
                    &r.error_message,
                    &r.error_details,
                    &r.progress,
                    &r.lease_expires_at,
                    &r.expires_at,
                    &r.reported_failure,
                    &r.failure_reported_at,
                ],
            )
            .await
            .map(|rows| (r.id.as_str(), rows))
    });
    let mut swapped = HashSet::with_capacity(records.len());
    for result in join_all(swaps).await {
        let (id, rows) = result.map_err(classify)?;
        if rows == 1 {
            swapped.insert(id.to_owned());
        }
    }
    Ok(swapped)
}

/// Appends (or folds) each event into its operation's timeline. The last
/// event of every changed operation is read first (the batch holds their
/// rows, so nobody else writes those timelines), then the feed lock is taken
/// and the events get their positions. Each event comes with whether its
/// operation may have a timeline already (not so for a new one).
async fn record_events(
    transaction: &deadpool_postgres::Transaction<'_>,
    events: &[(&EventRecord, bool)],
    settings: Settings,
) -> Result<(), StoreError> {
    let Settings {
        max_events,
        cache_statements: cache,
    } = settings;
    let ids: Vec<&str> = events
        .iter()
        .filter(|(_, stored)| *stored)
        .map(|(e, _)| e.operation_id.as_str())
        .collect();
    let mut last: std::collections::HashMap<String, (i64, i64, i64, i64)> = Default::default();
    if !ids.is_empty() {
        // One index probe per operation, whatever the statistics say: for
        // `operation_id = ANY($1)` without fresh statistics (a new or
        // fast-growing table) PostgreSQL estimated thousands of rows and
        // scanned the table.
        let statement = prepare_statement(
            transaction,
            "SELECT wanted.id, last.sequence, last.kind, last.folded, last.position \
                 FROM unnest($1::text[]) AS wanted(id) CROSS JOIN LATERAL \
                 (SELECT sequence, kind, folded, position FROM events \
                  WHERE operation_id = wanted.id ORDER BY sequence DESC LIMIT 1) AS last",
            cache,
        )
        .await
        .map_err(classify)?;
        last = transaction
            .query(&statement, &[&ids])
            .await
            .map_err(classify)?
            .into_iter()
            .map(|row| {
                (
                    row.get::<_, String>(0),
                    (row.get(1), row.get(2), row.get(3), row.get(4)),
                )
            })
            .collect();
    }
    let lock = prepare_statement(transaction, "SELECT pg_advisory_xact_lock($1)", cache)
        .await
        .map_err(classify)?;
    transaction
        .execute(&lock, &[&FEED_LOCK])
        .await
        .map_err(classify)?;
    // A batch changes an operation at most once (a second change of it is
    // computed only after the first is acknowledged), so its events are
    // independent of each other: the appended ones go out as one statement,
    // the folds (past the per-operation limit) beside it.
    let mut appended: Vec<(&EventRecord, i64)> = Vec::with_capacity(events.len());
    let mut folds: Vec<(&EventRecord, i64, i64)> = Vec::new();
    for (event, _) in events {
        let previous = last.get(&event.operation_id).copied();
        let count = previous.map_or(0, |(sequence, ..)| sequence.max(0) as u64);
        let last_kind = previous.and_then(|(_, kind, ..)| EventKind::from_number(kind as i32));
        let kind = EventKind::from_number(event.kind as i32).unwrap_or(EventKind::Created);
        match (placement(kind, count, last_kind, max_events), previous) {
            (Placement::FoldIntoLast, Some((_, _, folded, position))) => {
                folds.push((event, position, folded + 1));
            }
            _ => appended.push((event, i64::try_from(count + 1).unwrap_or(i64::MAX))),
        }
    }
    let append = async {
        if appended.is_empty() {
            return Ok(0);
        }
        let statement = prepare_statement(transaction, APPEND_EVENTS, cache).await?;
        let events: Vec<&EventRecord> = appended.iter().map(|(event, _)| *event).collect();
        let columns = [
            column(&events, |e: &EventRecord| e.operation_id.as_str()),
            Box::new(
                appended
                    .iter()
                    .map(|(_, sequence)| *sequence)
                    .collect::<Vec<i64>>(),
            ),
            column(&events, |e: &EventRecord| e.kind),
            column(&events, |e: &EventRecord| e.at),
            column(&events, |e: &EventRecord| e.actor.as_str()),
            column(&events, |e: &EventRecord| e.version),
            column(&events, |e: &EventRecord| e.details.as_slice()),
            column(&events, |e: &EventRecord| e.scope.as_str()),
            column(&events, |e: &EventRecord| e.resource_id.as_deref()),
            column(&events, |e: &EventRecord| e.created_by.as_str()),
        ];
        transaction.execute(&statement, &parameters(&columns)).await
    };
    let fold = async {
        if folds.is_empty() {
            return Ok(());
        }
        let statement = prepare_statement(
            transaction,
            "UPDATE events SET position = nextval('event_positions'), at = $2, actor = $3, \
                 version = $4, details = $5, folded = $6 WHERE position = $1",
            cache,
        )
        .await?;
        let statement = &statement;
        let writes = folds.iter().map(|(event, position, folded)| async move {
            transaction
                .execute(
                    statement,
                    &[
                        position,
                        &event.at,
                        &event.actor,
                        &event.version,
                        &event.details,
                        folded,
                    ],
                )
                .await
        });
        for written in join_all(writes).await {
            written?;
        }
        Ok(())
    };
    futures_util::future::try_join(append, fold)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Every new operation of a batch, announced as it is inserted; one that
/// collides with a stored one (id, idempotency key, exclusive resource) is
/// skipped. Returns the ids inserted.
static INSERT_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH inserted AS ( \
           INSERT INTO operations ({COLUMNS}) \
           SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::text[], \
             $6::int8[], $7::text[], $8::int8[], $9::text[], $10::bytea[], $11::int8[], \
             $12::int8[], $13::text[], $14::bytea[], $15::int8[], $16::text[], $17::bytea[], \
             $18::text[], $19::bytea[], $20::bytea[], $21::int8[], $22::int8[], $23::int8[], \
             $24::int8[], $25::text[], $26::bytea[], $27::int8[], $28::text[], $29::text[]) \
           ON CONFLICT DO NOTHING RETURNING id, version) \
         SELECT id, pg_notify('{CHANNEL}', id || ':' || version) FROM inserted"
    )
});

/// Swaps in the next version if the stored one is the one before it,
/// announcing it in the same statement.
static SWAP_ROW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH updated AS ( \
           UPDATE operations SET version = $2::BIGINT, modified_at = $3, metadata_type_url = $4, \
           metadata_value = $5, state = $6, cancel_requested_at = $7, response_type_url = $8, \
           response_value = $9, error_code = $10, error_message = $11, error_details = $12, \
           progress = $13, lease_expires_at = $14, expires_at = $15, reported_failure = $16, \
           failure_reported_at = $17 \
           WHERE id = $1 AND version = $2::BIGINT - 1 RETURNING id, version) \
         SELECT pg_notify('{CHANNEL}', id || ':' || version) FROM updated"
    )
});

/// Appends a batch's events, each taking the next feed position.
const APPEND_EVENTS: &str = "INSERT INTO events (position, operation_id, sequence, kind, at, \
       actor, version, details, folded, scope, resource_id, created_by) \
     SELECT nextval('event_positions'), operation_id, sequence, kind, at, actor, version, \
       details, 0, scope, resource_id, created_by \
     FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::int8[], \
       $7::bytea[], $8::text[], $9::text[], $10::text[]) \
     AS n(operation_id, sequence, kind, at, actor, version, details, scope, resource_id, \
       created_by)";

#[derive(Clone, Copy)]
struct Settings {
    max_events: u64,
    cache_statements: bool,
}

/// Prepared once per connection, or (behind a transaction-mode pooler) in
/// this transaction only: dropped before the commit, its close goes to the
/// same server connection.
async fn prepare_statement<C: deadpool_postgres::GenericClient>(
    client: &C,
    statement: &str,
    cache: bool,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    if cache {
        client.prepare_cached(statement).await
    } else {
        client.prepare(statement).await
    }
}
