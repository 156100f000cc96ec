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

use std::sync::Arc;

use deadpool_postgres::Pool;
use futures_util::future::join_all;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{classify, insert_statement, swap_statement};
use crate::StoreError;
use crate::record::Record;

/// The most changes one transaction carries.
const MAX_BATCH: usize = 256;

/// A change's statement: insert a new operation, or swap in its next version.
pub(super) enum Change {
    Insert(Record),
    Swap(Record),
}

impl Change {
    fn id(&self) -> &str {
        match self {
            Change::Insert(r) | Change::Swap(r) => &r.id,
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
    /// `lanes` transactions may be open at once, each on a pool connection.
    pub(super) fn start(pool: Pool, lanes: usize) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        let lanes = (0..lanes.max(1))
            .map(|_| tokio::spawn(run_lane(pool.clone(), Arc::clone(&waiting))))
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

async fn run_lane(pool: Pool, waiting: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>) {
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
        let results = commit(&pool, &batch).await;
        for (queued, result) in batch.drain(..).zip(results) {
            // The caller may have gone (its deadline passed); the result stands.
            let _ = queued.reply.send(result);
        }
    }
}

async fn commit(pool: &Pool, batch: &[Queued]) -> Vec<Result<u64, StoreError>> {
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
    if batch.len() == 1 {
        return vec![execute(&client, &batch[0].change).await];
    }
    let together = async {
        let transaction = client.transaction().await.map_err(classify)?;
        let results = join_all(batch.iter().map(|q| execute(&transaction, &q.change))).await;
        if results.iter().any(Result::is_err) {
            // Rolled back when dropped; each change is tried on its own below.
            return Ok(None);
        }
        transaction.commit().await.map_err(classify)?;
        Ok::<_, StoreError>(Some(results))
    };
    match together.await {
        Ok(Some(results)) => results,
        Ok(None) => {
            let mut results = Vec::with_capacity(batch.len());
            for queued in batch {
                results.push(execute(&client, &queued.change).await);
            }
            results
        }
        // A failed commit leaves every change's fate unknown to this process:
        // the same answer a single statement gets when its connection drops.
        Err(error) => fail_all(error),
    }
}

async fn execute<C: deadpool_postgres::GenericClient>(
    client: &C,
    change: &Change,
) -> Result<u64, StoreError> {
    match change {
        Change::Insert(r) => {
            let statement = client
                .prepare_cached(&insert_statement())
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
                    ],
                )
                .await
                .map_err(classify)
        }
        Change::Swap(r) => {
            let statement = client
                .prepare_cached(&swap_statement())
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
