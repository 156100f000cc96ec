//! Group commit for PostgreSQL: state changes waiting at the same moment are
//! committed together, in one transaction.
//!
//! Each change is still one statement with its `pg_notify`, so what commits
//! is announced exactly as before. What changes is the commit: PostgreSQL
//! serializes the commits of transactions that notify (a global lock held
//! through the WAL flush), so one commit per change caps a whole cluster at
//! one flush per change. A batch pays one flush for all of its changes.
//!
//! Statements of a batch run in id order, pipelined on one connection, so two
//! batches lock rows in the same order and cannot deadlock. If any statement
//! fails, the batch is rolled back and every change runs on its own, so one
//! bad change never fails its neighbours.
//!
//! Each change that wrote its row also writes its event, in the same
//! transaction, after all of the batch's row changes: the events take their
//! feed positions from a sequence under one advisory lock held until commit,
//! so positions grow in commit order across every replica (a reader that has
//! seen position N can never later find a smaller one committed). The lock
//! is taken only once the batch holds all of its rows, so it cannot close a
//! cycle with row locks.

use std::sync::Arc;

use deadpool_postgres::Pool;
use futures_util::future::join_all;
use tokio::sync::{Mutex, mpsc, oneshot};

use opsd_core::EventKind;
use opsd_core::event::{Placement, placement};

use super::{FEED_LOCK, classify, insert_statement, swap_statement};
use crate::StoreError;
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
    if batch.len() == 1 {
        return vec![
            alone(&mut client, changes[0], settings)
                .await
                .map(|rows| rows[0]),
        ];
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
        Ok(None) => {
            let mut results = Vec::with_capacity(batch.len());
            for change in changes {
                results.push(
                    alone(&mut client, change, settings)
                        .await
                        .map(|rows| rows[0]),
                );
            }
            results
        }
        // A failed commit leaves every change's fate unknown to this process:
        // the same answer a single statement gets when its connection drops.
        Err(error) => fail_all(error),
    }
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

/// The row changes (pipelined), then the events of those that wrote a row;
/// the rows each statement changed (0 or 1). Any failure fails the whole.
async fn write_all(
    transaction: &deadpool_postgres::Transaction<'_>,
    changes: &[&Change],
    settings: Settings,
) -> Result<Vec<u64>, StoreError> {
    let rows = join_all(
        changes
            .iter()
            .map(|change| execute(transaction, change, settings.cache_statements)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<u64>, StoreError>>()?;
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
    let insert = prepare_statement(
        transaction,
        "INSERT INTO events (position, operation_id, sequence, kind, at, actor, version, \
             details, folded, scope, resource_id, created_by) VALUES \
             (nextval('event_positions'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        cache,
    )
    .await
    .map_err(classify)?;
    let fold = prepare_statement(
        transaction,
        "UPDATE events SET position = nextval('event_positions'), at = $2, actor = $3, \
             version = $4, details = $5, folded = $6 WHERE position = $1",
        cache,
    )
    .await
    .map_err(classify)?;
    // A batch changes an operation at most once (a second change of it is
    // computed only after the first is acknowledged), so its events are
    // independent of each other and go out pipelined.
    let writes = events.iter().map(|(event, _)| {
        let previous = last.get(&event.operation_id).copied();
        let count = previous.map_or(0, |(sequence, ..)| sequence.max(0) as u64);
        let last_kind = previous.and_then(|(_, kind, ..)| EventKind::from_number(kind as i32));
        let kind = EventKind::from_number(event.kind as i32).unwrap_or(EventKind::Created);
        let (insert, fold) = (&insert, &fold);
        async move {
            match placement(kind, count, last_kind, max_events) {
                Placement::FoldIntoLast => {
                    let (_, _, folded, position) = previous.expect("folding needs a last event");
                    transaction
                        .execute(
                            fold,
                            &[
                                &position,
                                &event.at,
                                &event.actor,
                                &event.version,
                                &event.details,
                                &(folded + 1),
                            ],
                        )
                        .await
                }
                Placement::Append => {
                    let sequence = i64::try_from(count + 1).unwrap_or(i64::MAX);
                    transaction
                        .execute(
                            insert,
                            &[
                                &event.operation_id,
                                &sequence,
                                &event.kind,
                                &event.at,
                                &event.actor,
                                &event.version,
                                &event.details,
                                &0i64,
                                &event.scope,
                                &event.resource_id,
                                &event.created_by,
                            ],
                        )
                        .await
                }
            }
        }
    });
    for written in join_all(writes).await {
        written.map_err(classify)?;
    }
    Ok(())
}

async fn execute<C: deadpool_postgres::GenericClient>(
    client: &C,
    change: &Change,
    cache: bool,
) -> Result<u64, StoreError> {
    match change {
        Change::Insert(r, _) => {
            let statement = prepare_statement(client, &insert_statement(), cache)
                .await
                .map_err(classify)?;
            client
                .execute(
                    &statement,
                    &[
                        &r.id,
                        &r.version,
                        &r.description,
                        &r.created_at,
                        &r.created_by,
                        &r.modified_at,
                        &r.resource_id,
                        &r.cancellation,
                        &r.metadata_type_url,
                        &r.metadata_value,
                        &r.state,
                        &r.cancel_requested_at,
                        &r.response_type_url,
                        &r.response_value,
                        &r.error_code,
                        &r.error_message,
                        &r.error_details,
                        &r.idempotency_key,
                        &r.idempotency_fingerprint,
                        &r.progress,
                        &r.deadline,
                        &r.lease_expires_at,
                        &r.exclusive,
                        &r.expires_at,
                        &r.scope,
                        &r.reported_failure,
                        &r.failure_reported_at,
                        &r.trace_parent,
                        &r.trace_state,
                    ],
                )
                .await
                .map_err(classify)
        }
        Change::Swap(r, _) => {
            let statement = prepare_statement(client, &swap_statement(), cache)
                .await
                .map_err(classify)?;
            client
                .execute(
                    &statement,
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
                .map_err(classify)
        }
    }
}

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
