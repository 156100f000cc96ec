//! Point reads for PostgreSQL, batched: Gets waiting at the same moment are
//! answered by one `SELECT … WHERE id = ANY($1)`, the read-side twin of
//! [`super::batch`]'s group commit.
//!
//! A Get of a running operation is a pool checkout, a statement, a round
//! trip and a row decode; with many callers polling at once the database
//! spends most of that per statement, not per row. A few lanes each take
//! every read waiting and run one statement for all of them. A read joins a
//! batch only after its request arrived and the statement starts after that,
//! so it still sees every write acknowledged before the request: reads stay
//! linearizable.
//!
//! The statement is prepared once per connection, and its plan cannot go
//! stale: the pool's sessions run with `enable_seqscan = off`, so even a
//! generic plan made while the table was empty probes the primary key with
//! the array (`a_prepared_point_read_probes_the_index_whatever_the_table_was`).
//! Before that setting, such a plan scanned the whole table, so the read was
//! planned on every run. Behind a transaction-mode pooler nothing stays
//! prepared, and it is planned on every run still.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::Type;

use opsd_core::Operation;

use super::{read_row, rows};
use crate::StoreError;
use crate::record::COLUMNS;

pub(super) static POINT_READ: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM operations WHERE id = ANY($1)"));

/// The most ids one statement asks for.
const MAX_BATCH: usize = 256;

struct Wanted {
    id: String,
    reply: oneshot::Sender<Result<Option<Operation>, StoreError>>,
}

pub(super) struct PointReads {
    queue: mpsc::UnboundedSender<Wanted>,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

impl PointReads {
    /// `lanes` statements may run at once, each on a pool connection;
    /// `cache_statements` false (behind a transaction-mode pooler) plans the
    /// statement on every run.
    pub(super) fn start(pool: Pool, lanes: usize, cache_statements: bool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        let lanes = (0..lanes.max(1))
            .map(|_| {
                tokio::spawn(run_lane(
                    pool.clone(),
                    Arc::clone(&waiting),
                    cache_statements,
                ))
            })
            .collect();
        Self { queue, lanes }
    }

    /// The operation as the next batch of reads finds it.
    pub(super) async fn get(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Wanted {
                id: id.to_owned(),
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the read was dropped before its batch finished".into())
        })?
    }
}

impl Drop for PointReads {
    fn drop(&mut self) {
        for lane in &self.lanes {
            lane.abort();
        }
    }
}

async fn run_lane(
    pool: Pool,
    waiting: Arc<Mutex<mpsc::UnboundedReceiver<Wanted>>>,
    cache_statements: bool,
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
        // Callers that gave up (their deadline passed) need no read.
        batch.retain(|wanted| !wanted.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut found = read_all(&pool, &batch, cache_statements).await;
        for wanted in batch.drain(..) {
            let answer = match &mut found {
                Ok(by_id) => by_id
                    .get(&wanted.id)
                    .cloned()
                    .transpose()
                    .map(Option::flatten),
                Err(error) => Err(error.clone()),
            };
            let _ = wanted.reply.send(answer);
        }
    }
}

/// The operations of a batch by id; a row that cannot be read fails only its own Gets.
async fn read_all(
    pool: &Pool,
    batch: &[Wanted],
    cache_statements: bool,
) -> Result<HashMap<String, Result<Option<Operation>, StoreError>>, StoreError> {
    let mut ids: Vec<&str> = batch.iter().map(|wanted| wanted.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let client = match pool.get().await {
        Ok(client) => client,
        Err(deadpool_postgres::PoolError::Closed) => return Err(StoreError::Closed),
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "no database connection: {e}"
            )));
        }
    };
    let found = rows(
        &client,
        cache_statements,
        &POINT_READ,
        &[(&ids, Type::TEXT_ARRAY)],
    )
    .await?;
    let mut by_id: HashMap<String, Result<Option<Operation>, StoreError>> =
        ids.iter().map(|&id| (id.to_owned(), Ok(None))).collect();
    for row in &found {
        let id: String = match row.try_get(0) {
            Ok(id) => id,
            Err(e) => return Err(StoreError::Corrupt(format!("unreadable operation id: {e}"))),
        };
        by_id.insert(id, read_row(row).map(Some));
    }
    Ok(by_id)
}
