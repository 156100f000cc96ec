//! The shared backend: many stateless opsd replicas on one PostgreSQL database.
//!
//! Every state change is one statement: an `INSERT … ON CONFLICT DO NOTHING`
//! or an `UPDATE … WHERE version = expected`, so two replicas racing on an
//! operation cannot both win. The same statement calls `pg_notify`, so a
//! notification goes out exactly when (and only if) the change commits; every
//! replica LISTENs and turns notifications into [`Change`]s. When the
//! listening connection drops, it reconnects and announces [`Change::Resync`]
//! so that waiters re-read instead of missing what happened in between.
//! Changes waiting at the same moment commit together ([`batch`]).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use opsd_core::overview::{OverviewQuery, OverviewRows, ProgressQuery, ProgressSample};
use opsd_core::{Event, EventFilter, ListQuery, NewEvent, Operation, OperationId, Timestamp};
use tokio::sync::{broadcast, oneshot};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Row};

mod batch;
pub mod connect;
mod reads;

use crate::record::{COLUMNS, EVENT_COLUMNS, EventRecord, Record};
use crate::sql::{self, Param};
use crate::{
    CHANGE_BUFFER, Change, FeedBounds, Inserted, OperationStore, SchemaVersion, StoreError,
    Swapped, newer_schema,
};

const CHANNEL: &str = "opsd_changes";
/// Prefix of the notification retention sends; ids never contain a colon.
const PURGED: &str = "purged:";
/// The longest between two attempts to get the notification connection back,
/// so that waiters hear of changes within about a second of the database's return.
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(1);
/// Serializes schema migrations across replicas starting at once.
const MIGRATION_LOCK: i64 = 0x6f70_7364_6d69_6772; // "opsdmigr"
/// Held from a transaction's first event to its commit, so that feed
/// positions are taken in commit order (see `batch.rs`).
pub(crate) const FEED_LOCK: i64 = 0x6f70_7364_6665_6564; // "opsdfeed"

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    modified_at BIGINT NOT NULL,
    resource_id TEXT,
    cancellation BIGINT NOT NULL,
    metadata_type_url TEXT,
    metadata_value BYTEA,
    state BIGINT NOT NULL,
    cancel_requested_at BIGINT,
    response_type_url TEXT,
    response_value BYTEA,
    error_code BIGINT,
    error_message TEXT,
    error_details BYTEA,
    idempotency_key TEXT,
    idempotency_fingerprint BYTEA,
    progress BYTEA,
    deadline BIGINT,
    lease_expires_at BIGINT,
    exclusive BIGINT NOT NULL,
    expires_at BIGINT,
    scope TEXT NOT NULL
);
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
ALTER TABLE operations ADD COLUMN reported_failure BYTEA;
ALTER TABLE operations ADD COLUMN failure_reported_at BIGINT;
"#,
    r#"
CREATE SEQUENCE event_positions;
CREATE TABLE events (
    position BIGINT PRIMARY KEY,
    operation_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    kind BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    version BIGINT NOT NULL,
    details BYTEA NOT NULL,
    folded BIGINT NOT NULL,
    scope TEXT NOT NULL,
    resource_id TEXT,
    created_by TEXT NOT NULL
);
CREATE UNIQUE INDEX events_by_operation ON events (operation_id, sequence);
CREATE TABLE feed_horizon (
    id INT PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL
);
INSERT INTO feed_horizon (id, position) VALUES (1, 0);
"#,
    r#"
ALTER TABLE operations ADD COLUMN trace_parent TEXT;
ALTER TABLE operations ADD COLUMN trace_state TEXT;
"#,
];

#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database?…` (libpq URL or key=value
    /// form; several hosts for failover; TLS as in [`connect`]).
    pub url: String,
    /// Where the notification connection goes, when not to `url`: straight to
    /// the database when `url` goes through a transaction-mode pooler, which
    /// cannot hold a LISTEN.
    pub listen_url: Option<String>,
    /// `url` goes through a transaction-mode pooler (PgBouncer
    /// `pool_mode = transaction`): no statement is kept prepared across
    /// transactions, and `listen_url` is required.
    pub pooled: bool,
    /// Bring the schema up to date at open (the default); when false, a
    /// schema behind this binary is refused instead (`--no-migrate`).
    pub migrate: bool,
    /// Most connections this process opens for requests (the listener uses one more).
    pub max_connections: usize,
    /// The longest a store call takes (waiting for a connection, connecting
    /// and its statements together) before it fails as unavailable.
    pub timeout: Duration,
    /// Past this many events of one operation, `metadata_updated` events fold.
    pub max_events_per_operation: u64,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            listen_url: None,
            pooled: false,
            migrate: true,
            max_connections: 16,
            timeout: Duration::from_secs(5),
            max_events_per_operation: opsd_core::event::DEFAULT_MAX_EVENTS_PER_OPERATION,
        }
    }

    /// The request connections' target, with opsd's session settings.
    fn request_target(&self) -> Result<connect::Target, StoreError> {
        let mut target = connect::target(&self.url).map_err(StoreError::Unavailable)?;
        let config = &mut target.config;
        config
            .connect_timeout(self.timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("opsd");
        }
        // A pooler refuses startup options (PgBouncer: unless ignored); there
        // the role's statement_timeout applies, and the client-side bound.
        if config.get_options().is_none() && !self.pooled {
            // A statement that outlives this is cancelled, so a request never hangs.
            config.options(format!("-c statement_timeout={}", self.timeout.as_millis()));
        }
        Ok(target)
    }

    /// The notification connection's target: `listen_url`, or `url`.
    fn listen_target(&self) -> Result<connect::Target, StoreError> {
        let Some(url) = &self.listen_url else {
            return self.request_target();
        };
        let mut target = connect::target(url)
            .map_err(|e| StoreError::Unavailable(format!("postgres listen url: {e}")))?;
        target
            .config
            .connect_timeout(self.timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if target.config.get_application_name().is_none() {
            target.config.application_name("opsd");
        }
        Ok(target)
    }
}

pub struct PostgresStore {
    pool: Pool,
    batcher: batch::Batcher,
    reads: reads::PointReads,
    /// The longest any store call takes, whatever the database does.
    timeout: Duration,
    /// Statements are prepared once per connection (false behind a pooler).
    cache_statements: bool,
    changes: broadcast::Sender<Change>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PostgresStore {
    /// Connects, brings the schema up to date (unless told not to) and starts
    /// listening for changes. Fails when the database cannot be reached now,
    /// its certificate is refused, its schema does not fit, or notifications
    /// would not reach this process (so waiters could never be woken).
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        if options.pooled && options.listen_url.is_none() {
            return Err(StoreError::Unavailable(
                "a transaction-mode pooler cannot hold a LISTEN, so waiters could not be woken: \
                 give a listen url straight to the database (--postgres-listen-url)"
                    .into(),
            ));
        }
        let target = options.request_target()?;
        {
            let (client, connection) = first_connection(&target).await?;
            let schema = if options.migrate {
                migrate(&client, None).await.map(|_| ())
            } else {
                schema_version(&client).await.and_then(|version| {
                    version
                        .check()
                        .map_err(|e| StoreError::Unavailable(format!("{e} (--no-migrate is set)")))
                })
            };
            drop(client);
            connection.abort();
            schema?;
        }
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let mut pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .runtime(Runtime::Tokio1);
        if !options.pooled {
            pool = pool.post_create(index_plans_only());
        }
        let pool = pool.build().map_err(|e| {
            StoreError::Unavailable(format!("cannot build the connection pool: {e}"))
        })?;

        let listen_target = options.listen_target()?;
        let probe_channel = format!("opsd_probe_{:016x}", rand_u64());
        let changes = broadcast::channel(CHANGE_BUFFER).0;
        let (probes, mut probed) = tokio::sync::mpsc::unbounded_channel();
        let (listening, ready) = oneshot::channel();
        let listener = tokio::spawn(listen(
            listen_target.clone(),
            probe_channel.clone(),
            changes.clone(),
            probes,
            listening,
        ));
        // Changes committed after `open` returns must not be missed.
        match tokio::time::timeout(options.timeout, ready).await {
            Ok(Ok(())) => {}
            _ => {
                listener.abort();
                // Say why: the listener's own attempt only went to the log.
                let why = match first_connection(&listen_target).await {
                    Ok(_) => "it did not answer in time".to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(StoreError::Unavailable(format!(
                    "cannot listen for change notifications: {why}"
                )));
            }
        }
        // A notification sent like the writes send theirs must arrive on the
        // listening connection; through a transaction-mode pooler it never does.
        let nonce = format!("{:016x}", rand_u64());
        let probe = async {
            let client = pool
                .get()
                .await
                .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))?;
            client
                .query_typed(
                    "SELECT pg_notify($1, $2)",
                    &[(&probe_channel, Type::TEXT), (&nonce, Type::TEXT)],
                )
                .await
                .map_err(classify)?;
            while let Some(heard) = probed.recv().await {
                if heard == nonce {
                    return Ok(());
                }
            }
            Err(StoreError::Unavailable(
                "the notification listener stopped".into(),
            ))
        };
        match tokio::time::timeout(options.timeout, probe).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                listener.abort();
                return Err(e);
            }
            Err(_) => {
                listener.abort();
                return Err(StoreError::Unavailable(format!(
                    "a notification sent through the store url did not reach the listening \
                     connection within {:?}, so waiters could not be woken: the listen url must \
                     reach the same primary, straight (a transaction-mode pooler cannot hold a \
                     LISTEN: give --postgres-listen-url to the database itself)",
                    options.timeout
                )));
            }
        }
        tracing::info!(
            sslmode = target.ssl_mode.as_str(),
            listen_sslmode = listen_target.ssl_mode.as_str(),
            pooled = options.pooled,
            "postgres store open"
        );
        // One batch at a time: PostgreSQL serializes notifying commits anyway,
        // and measured (opsd-bench write, 64 producers) four lanes committed
        // half as much as one, whose batches grow while the last one commits.
        Ok(Self {
            batcher: batch::Batcher::start(
                pool.clone(),
                1,
                options.max_events_per_operation,
                !options.pooled,
            ),
            // Reads wait on the database, not on each other: a lane per eight
            // connections (at least one) keeps the pool for the rest. Fewer
            // lanes make bigger batches: with 16 connections, 2 lanes served
            // 9-14% more running Gets than 4 at less CPU per Get.
            reads: reads::PointReads::start(
                pool.clone(),
                (options.max_connections / 8).max(1),
                !options.pooled,
            ),
            pool,
            timeout: options.timeout,
            cache_statements: !options.pooled,
            changes,
            listener: Mutex::new(Some(listener)),
        })
    }

    /// The schema version of the database `options` names, and this binary's.
    pub async fn schema_version(options: &PostgresOptions) -> Result<SchemaVersion, StoreError> {
        let target = options.request_target()?;
        let (client, connection) = first_connection(&target).await?;
        let version = schema_version(&client).await;
        drop(client);
        connection.abort();
        version
    }

    /// Brings the schema of the database `options` names up to this binary's
    /// version, or to `up_to` if lower (tests build older schemas so);
    /// returns the versions before and after.
    pub async fn migrate_database(
        options: &PostgresOptions,
        up_to: Option<u64>,
    ) -> Result<(u64, u64), StoreError> {
        let target = options.request_target()?;
        let (client, connection) = first_connection(&target).await?;
        let migrated = migrate(&client, up_to).await;
        drop(client);
        connection.abort();
        migrated
    }

    /// The rows of a generated statement.
    async fn query(&self, statement: &str, params: &[Param]) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let values: Vec<(Box<dyn ToSql + Sync + Send>, Type)> = params
            .iter()
            .map(|p| -> (Box<dyn ToSql + Sync + Send>, Type) {
                match p {
                    Param::Text(text) => (Box::new(text.clone()), Type::TEXT),
                    Param::Int(n) => (Box::new(*n), Type::INT8),
                }
            })
            .collect();
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = values
            .iter()
            .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect();
        rows(&client, self.cache_statements, statement, &typed).await
    }

    async fn select_many(
        &self,
        statement: &str,
        params: &[Param],
    ) -> Result<Vec<Operation>, StoreError> {
        self.query(statement, params)
            .await?
            .iter()
            .map(read_row)
            .collect()
    }

    async fn select_events(
        &self,
        statement: &str,
        params: &[Param],
    ) -> Result<Vec<Event>, StoreError> {
        self.query(statement, params)
            .await?
            .iter()
            .map(read_event_row)
            .collect()
    }

    /// Ends `call` with UNAVAILABLE after the store timeout. The server's
    /// statement timeout cannot help when the server itself stops answering
    /// (a hung machine, a network that drops packets): then only this does.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres did not answer {what} within {:?}",
                self.timeout
            ))),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            other => StoreError::Unavailable(format!("no database connection: {other}")),
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            listener.abort();
        }
    }
}

/// A connection of its own to `target`, failing with what an operator
/// needs to know (a refused certificate, no writable primary).
async fn first_connection(
    target: &connect::Target,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    StoreError,
> {
    let (client, connection) = target
        .config
        .connect(target.tls.clone())
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to postgres: {}",
                connect::describe_connect_error(&e, target.ssl_mode)
            ))
        })?;
    Ok((client, tokio::spawn(connection)))
}

fn rand_u64() -> u64 {
    rand::random()
}

const SCHEMA_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS opsd_schema_migrations (version BIGINT PRIMARY KEY)";

async fn schema_version(client: &tokio_postgres::Client) -> Result<SchemaVersion, StoreError> {
    // Read only: a database never migrated has no table yet (version 0).
    let exists: bool = client
        .query_typed_one(
            "SELECT to_regclass('opsd_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(classify)?
        .get(0);
    let applied: i64 = if exists {
        client
            .query_typed_one(
                "SELECT COALESCE(MAX(version), 0) FROM opsd_schema_migrations",
                &[],
            )
            .await
            .map_err(classify)?
            .get(0)
    } else {
        0
    };
    Ok(SchemaVersion {
        database: applied.max(0) as u64,
        binary: MIGRATIONS.len() as u64,
    })
}

/// Applies the migrations the database lacks (up to `up_to`, or all), in
/// one transaction under the migration lock; the versions before and after.
async fn migrate(
    client: &tokio_postgres::Client,
    up_to: Option<u64>,
) -> Result<(u64, u64), StoreError> {
    let known = MIGRATIONS.len() as u64;
    let target = up_to.unwrap_or(known).min(known);
    client.batch_execute("BEGIN").await.map_err(classify)?;
    let migrated = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(classify)?;
        client.batch_execute(SCHEMA_TABLE).await.map_err(classify)?;
        let applied: i64 = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM opsd_schema_migrations",
                &[],
            )
            .await
            .map_err(classify)?
            .get(0);
        let applied = applied.max(0) as u64;
        if applied > known {
            return Err(StoreError::Corrupt(newer_schema(applied, known)));
        }
        for (index, migration) in MIGRATIONS
            .iter()
            .enumerate()
            .take(target as usize)
            .skip(applied as usize)
        {
            let version = index as i64 + 1;
            client.batch_execute(migration).await.map_err(classify)?;
            client
                .execute(
                    "INSERT INTO opsd_schema_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .await
                .map_err(classify)?;
            tracing::info!(version, "applied postgres schema migration");
        }
        Ok((applied, applied.max(target)))
    }
    .await;
    match migrated {
        Ok(versions) => {
            client.batch_execute("COMMIT").await.map_err(classify)?;
            Ok(versions)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Keeps one connection LISTENing, reconnecting with backoff when it drops
/// (after a failover, to whichever host is the writable primary now).
async fn listen(
    target: connect::Target,
    probe_channel: String,
    changes: broadcast::Sender<Change>,
    probes: tokio::sync::mpsc::UnboundedSender<String>,
    listening: oneshot::Sender<()>,
) {
    let mut listening = Some(listening);
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut listened = false;
        let outcome = listen_once(
            &target,
            &probe_channel,
            &changes,
            &probes,
            &mut listening,
            &mut listened,
        )
        .await;
        // A connection that worked starts the next outage's backoff afresh,
        // so waiters hear of a failover's new primary within a fraction of a second.
        if listened {
            backoff = FIRST_BACKOFF;
        }
        match outcome {
            Ok(()) => tracing::warn!("change notification connection closed, reconnecting"),
            Err(e) => {
                tracing::warn!(
                    error = connect::describe_connect_error(&e, target.ssl_mode),
                    retry_in = ?backoff,
                    "change notification connection failed"
                )
            }
        }
        tokio::time::sleep(backoff).await;
        // Capped low: waiters on this replica hear nothing until it is back.
        backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
    }
}

async fn listen_once(
    target: &connect::Target,
    probe_channel: &str,
    changes: &broadcast::Sender<Change>,
    probes: &tokio::sync::mpsc::UnboundedSender<String>,
    listening: &mut Option<oneshot::Sender<()>>,
    listened: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = target.config.connect(target.tls.clone()).await?;
    let (notifications, mut received) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let driver = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(n) = message?
                && notifications
                    .send((n.channel().to_owned(), n.payload().to_owned()))
                    .is_err()
            {
                break;
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {probe_channel}"))
        .await?;
    *listened = true;
    // Whatever committed while no connection listened is unknown: waiters re-read.
    let _ = changes.send(Change::Resync);
    if let Some(listening) = listening.take() {
        let _ = listening.send(());
    }
    while let Some((channel, payload)) = received.recv().await {
        if channel == probe_channel {
            let _ = probes.send(payload);
            continue;
        }
        match parse_notification(&payload) {
            Some(change) => {
                let _ = changes.send(change);
            }
            None => tracing::warn!(payload, "ignoring a malformed change notification"),
        }
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Run on every pool connection as it is made: no plan of this session
/// scans a whole table while an index could answer.
///
/// Every statement opsd sends is meant for an index, and a statement stays
/// prepared (with its plan) for the connection's life. A plan made while a
/// table was nearly empty (a new database, or one retention emptied) was a
/// sequential scan, and stayed one while the table grew: Create + Complete
/// fell from about 4,000 to 1,178 operations/s at 837 µs of CPU each, the
/// database reading 220 million rows in 80,000 scans. Behind a
/// transaction-mode pooler nothing stays prepared (each transaction plans
/// anew) and a session setting would leak to other clients, so it is left out.
fn index_plans_only() -> deadpool_postgres::Hook {
    deadpool_postgres::Hook::async_fn(|client, _| {
        Box::pin(async move {
            client
                .batch_execute("SET enable_seqscan = off")
                .await
                .map_err(deadpool_postgres::HookError::Backend)
        })
    })
}

/// `id:version`, as the write statements send it, or `purged:<unix nanos>`
/// from retention.
fn parse_notification(payload: &str) -> Option<Change> {
    if let Some(before) = payload.strip_prefix(PURGED) {
        return Some(Change::Purged {
            before: Timestamp::from_unix_nanos(before.parse().ok()?),
        });
    }
    let (id, version) = payload.rsplit_once(':')?;
    let id = OperationId::parse("id", id).ok()?;
    Some(Change::Committed {
        id,
        version: version.parse().ok()?,
    })
}

/// The store calls, each bounded by [`PostgresStore::bounded`] in the trait impl.
impl PostgresStore {
    async fn insert_unbounded(
        &self,
        operation: &Operation,
        event: &NewEvent,
    ) -> Result<Inserted, StoreError> {
        let r = Record::from(operation);
        let event = EventRecord::of(event, operation, 0, 0);
        let inserted = self
            .batcher
            .apply(batch::Change::Insert(r.clone(), event))
            .await?;
        if inserted == 1 {
            return Ok(Inserted::Created);
        }
        let client = self.client().await?;
        // A conflict: the idempotency key (checked first, it is the likely one) or the id.
        if let Some(key) = &r.idempotency_key {
            let found = rows(
                &client,
                self.cache_statements,
                &format!(
                    "SELECT {COLUMNS} FROM operations WHERE created_by = $1 AND idempotency_key = $2"
                ),
                &[(&r.created_by, Type::TEXT), (key, Type::TEXT)],
            )
            .await?;
            if let Some(row) = found.first() {
                return Ok(Inserted::IdempotencyKeyUsed(read_row(row)?));
            }
        }
        if operation.exclusive
            && let Some(resource_id) = &r.resource_id
        {
            let found = rows(
                &client,
                self.cache_statements,
                &sql::running_exclusive("$1"),
                &[(resource_id, Type::TEXT)],
            )
            .await?;
            if let Some(row) = found.first() {
                return Ok(Inserted::ResourceBusy(read_row(row)?));
            }
        }
        Ok(Inserted::IdTaken)
    }

    async fn get_unbounded(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::Closed);
        }
        self.reads.get(id.as_str()).await
    }

    async fn compare_and_swap_unbounded(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError> {
        let r = Record::from(next);
        let event = event.map(|event| EventRecord::of(event, next, 0, 0));
        let updated = self.batcher.apply(batch::Change::Swap(r, event)).await?;
        if updated == 1 {
            return Ok(Swapped::Swapped);
        }
        let client = self.client().await?;
        Ok(
            match select_by_id(&client, self.cache_statements, next.id.as_str()).await? {
                Some(current) => Swapped::Stale(current),
                None => Swapped::Missing,
            },
        )
    }

    async fn list_events_unbounded(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let statement = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE operation_id = $1 AND sequence > $2 \
             ORDER BY sequence LIMIT $3"
        );
        let params = [
            Param::Text(id.to_string()),
            Param::Int(i64::try_from(after).unwrap_or(i64::MAX)),
            Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.select_events(&statement, &params).await
    }

    async fn read_feed_unbounded(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let (statement, params) = sql::feed(after, filter, limit, |n| format!("${n}"));
        self.select_events(&statement, &params).await
    }

    async fn feed_bounds_unbounded(&self) -> Result<FeedBounds, StoreError> {
        let client = self.client().await?;
        // Committed events only: a position taken by a transaction still
        // open is not "now" yet.
        let found = rows(
            &client,
            self.cache_statements,
            "SELECT (SELECT COALESCE(max(position), 0) FROM events), \
             (SELECT position FROM feed_horizon)",
            &[],
        )
        .await?;
        let row = one(&found)?;
        let (head, horizon): (i64, i64) = (row.get(0), row.get(1));
        Ok(FeedBounds {
            head: head.max(horizon).max(0) as u64,
            horizon: horizon.max(0) as u64,
        })
    }

    async fn list_unbounded(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        let Some(text) = &query.filter.description_contains else {
            let (statement, params) =
                sql::list(query, sql::DescriptionSearch::Omit, |n| format!("${n}"));
            return self.select_many(&statement, &params).await;
        };
        // PostgreSQL's lower() and ILIKE depend on the database's collation:
        // read what the other filters select, newest first in batches, and
        // keep what core's rule matches, until the page is full.
        let mut scan = query.clone();
        scan.limit = query.limit.max(DESCRIPTION_SCAN_BATCH);
        let mut page = Vec::new();
        loop {
            let (statement, params) =
                sql::list(&scan, sql::DescriptionSearch::Omit, |n| format!("${n}"));
            let batch = self.select_many(&statement, &params).await?;
            let exhausted = batch.len() < scan.limit;
            scan.after = batch.last().map(opsd_core::Cursor::of);
            for op in batch {
                if opsd_core::list::description_matches(text, &op.description) {
                    page.push(op);
                    if page.len() == query.limit {
                        return Ok(page);
                    }
                }
            }
            if exhausted {
                return Ok(page);
            }
        }
    }

    async fn due_for_expiry_unbounded(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM operations WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2"
        );
        let params = [
            Param::Int(now.unix_nanos()),
            Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.select_many(&statement, &params).await
    }

    async fn progress_samples_unbounded(
        &self,
        query: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError> {
        let (statement, params) = sql::progress_samples(query, |n| format!("${n}"));
        let rows = self
            .query(&statement, &params)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(classify)?;
        sql::samples_from_rows(rows)
    }

    async fn overview_unbounded(&self, query: &OverviewQuery) -> Result<OverviewRows, StoreError> {
        let statements = sql::overview(query, |n| format!("${n}"));
        let (running, p) = &statements.running;
        let running = self
            .query(running, p)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(classify)?;
        let (done, p) = &statements.done;
        let done = self
            .query(done, p)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(classify)?;
        let (oldest, p) = &statements.oldest;
        let oldest = self.select_many(oldest, p).await?;
        let (candidates, p) = &statements.candidates;
        let candidates = self.select_many(candidates, p).await?;
        let (sample, p) = &statements.sample;
        let sample = self
            .query(sample, p)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                ))
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(classify)?;
        sql::OverviewRaw {
            running,
            done,
            oldest,
            candidates,
            sample,
        }
        .into_rows()
    }

    async fn count_running_unbounded(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let found = rows(
            &client,
            self.cache_statements,
            "SELECT count(*) FROM operations WHERE state != 2",
            &[],
        )
        .await?;
        let count: i64 = one(&found)?.get(0);
        Ok(count.max(0) as u64)
    }

    async fn delete_done_before_unbounded(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        // The notification is part of the statement: every replica's cache
        // hears of the deletion iff it committed.
        let cutoff = cutoff.unix_nanos();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found = rows(
            &client,
            self.cache_statements,
            &format!(
                "WITH deleted AS (DELETE FROM operations WHERE id IN \
                 (SELECT id FROM operations WHERE state = 2 AND modified_at < $1 LIMIT $2) \
                 RETURNING id), \
                 deleted_events AS (DELETE FROM events WHERE operation_id IN \
                 (SELECT id FROM deleted) RETURNING position), \
                 horizon AS (UPDATE feed_horizon SET position = \
                 GREATEST(position, (SELECT max(position) FROM deleted_events)) \
                 WHERE id = 1 AND EXISTS (SELECT 1 FROM deleted_events) RETURNING 1), \
                 announced AS (SELECT pg_notify('{CHANNEL}', '{PURGED}' || $1::text) \
                 FROM (SELECT 1 FROM deleted LIMIT 1) AS any_deleted) \
                 SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM announced), \
                 (SELECT count(*) FROM horizon)"
            ),
            &[(&cutoff, Type::INT8), (&limit, Type::INT8)],
        )
        .await?;
        let deleted: i64 = one(&found)?.get(0);
        Ok(usize::try_from(deleted).unwrap_or(0))
    }
}

/// Rows read per statement while a listing searches descriptions.
const DESCRIPTION_SCAN_BATCH: usize = 500;

#[async_trait]
impl OperationStore for PostgresStore {
    async fn insert(
        &self,
        operation: &Operation,
        event: &NewEvent,
    ) -> Result<Inserted, StoreError> {
        self.bounded("insert", self.insert_unbounded(operation, event))
            .await
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        self.bounded("get", self.get_unbounded(id)).await
    }

    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError> {
        self.bounded(
            "compare_and_swap",
            self.compare_and_swap_unbounded(next, event),
        )
        .await
    }

    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.bounded("list_events", self.list_events_unbounded(id, after, limit))
            .await
    }

    async fn read_feed(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.bounded("read_feed", self.read_feed_unbounded(after, filter, limit))
            .await
    }

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.bounded("feed_bounds", self.feed_bounds_unbounded())
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        self.bounded("list", self.list_unbounded(query)).await
    }

    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        self.bounded("due_for_expiry", self.due_for_expiry_unbounded(now, limit))
            .await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        self.bounded("count_running", self.count_running_unbounded())
            .await
    }

    async fn progress_samples(
        &self,
        query: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError> {
        self.bounded("progress_samples", self.progress_samples_unbounded(query))
            .await
    }

    async fn overview(&self, query: &OverviewQuery) -> Result<OverviewRows, StoreError> {
        self.bounded("overview", self.overview_unbounded(query))
            .await
    }

    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.bounded(
            "delete_done_before",
            self.delete_done_before_unbounded(cutoff, limit),
        )
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        if let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            listener.abort();
        }
        self.pool.close();
        Ok(())
    }
}

async fn select_by_id(
    client: &deadpool_postgres::Object,
    cache_statements: bool,
    id: &str,
) -> Result<Option<Operation>, StoreError> {
    let id = id.to_owned();
    let found = rows(
        client,
        cache_statements,
        &format!("SELECT {COLUMNS} FROM operations WHERE id = $1"),
        &[(&id, Type::TEXT)],
    )
    .await?;
    found.first().map(read_row).transpose()
}

/// Runs one statement outside a transaction: prepared once per connection,
/// or, behind a transaction-mode pooler, unnamed and in one round trip (a
/// statement prepared on one server connection would be missing on the next).
async fn rows(
    client: &deadpool_postgres::Object,
    cache_statements: bool,
    statement: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<Row>, StoreError> {
    if cache_statements {
        let prepared = client.prepare_cached(statement).await.map_err(classify)?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        client.query(&prepared, &values).await.map_err(classify)
    } else {
        client
            .query_typed(statement, params)
            .await
            .map_err(classify)
    }
}

/// The one row a statement returns.
fn one(found: &[Row]) -> Result<&Row, StoreError> {
    found
        .first()
        .ok_or_else(|| StoreError::Unavailable("postgres returned no row".into()))
}

fn read_event_row(row: &Row) -> Result<Event, StoreError> {
    let record = (|| -> Result<EventRecord, tokio_postgres::Error> {
        Ok(EventRecord {
            position: row.try_get(0)?,
            operation_id: row.try_get(1)?,
            sequence: row.try_get(2)?,
            kind: row.try_get(3)?,
            at: row.try_get(4)?,
            actor: row.try_get(5)?,
            version: row.try_get(6)?,
            details: row.try_get(7)?,
            folded: row.try_get(8)?,
            scope: row.try_get(9)?,
            resource_id: row.try_get(10)?,
            created_by: row.try_get(11)?,
        })
    })()
    .map_err(|e| StoreError::Corrupt(format!("unreadable event row: {e}")))?;
    Event::try_from(record)
}

fn read_row(row: &Row) -> Result<Operation, StoreError> {
    let record = (|| -> Result<Record, tokio_postgres::Error> {
        Ok(Record {
            id: row.try_get(0)?,
            version: row.try_get(1)?,
            description: row.try_get(2)?,
            created_at: row.try_get(3)?,
            created_by: row.try_get(4)?,
            modified_at: row.try_get(5)?,
            resource_id: row.try_get(6)?,
            cancellation: row.try_get(7)?,
            metadata_type_url: row.try_get(8)?,
            metadata_value: row.try_get(9)?,
            state: row.try_get(10)?,
            cancel_requested_at: row.try_get(11)?,
            response_type_url: row.try_get(12)?,
            response_value: row.try_get(13)?,
            error_code: row.try_get(14)?,
            error_message: row.try_get(15)?,
            error_details: row.try_get(16)?,
            idempotency_key: row.try_get(17)?,
            idempotency_fingerprint: row.try_get(18)?,
            progress: row.try_get(19)?,
            deadline: row.try_get(20)?,
            lease_expires_at: row.try_get(21)?,
            exclusive: row.try_get(22)?,
            expires_at: row.try_get(23)?,
            scope: row.try_get(24)?,
            reported_failure: row.try_get(25)?,
            failure_reported_at: row.try_get(26)?,
            trace_parent: row.try_get(27)?,
            trace_state: row.try_get(28)?,
        })
    })()
    .map_err(|e| StoreError::Corrupt(format!("unreadable operation row: {e}")))?;
    Operation::try_from(record)
}

/// Corruption is a bug to surface; everything else (a dropped connection, a
/// timeout, the server restarting) passes and is retryable.
fn classify(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code) if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED => {
            StoreError::Corrupt(e.to_string())
        }
        // A statement prepared on one server connection and run on another:
        // a transaction-mode pooler that opsd was not told about.
        Some(code)
            if *code == SqlState::INVALID_SQL_STATEMENT_NAME
                || *code == SqlState::DUPLICATE_PSTATEMENT =>
        {
            StoreError::Unavailable(format!(
                "postgres: {} (behind a transaction-mode pooler? set --postgres-pooler=transaction)",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |db| db.message().to_owned())
            ))
        }
        _ => StoreError::Unavailable(match e.as_db_error() {
            Some(db) => format!("postgres: {}", db.message()),
            None => format!("postgres: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point write prepared while `operations` was empty (and analyzed so)
    /// must still use an index once the table has grown: a plan cached per
    /// connection outlives the table's size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_prepared_on_an_empty_table_still_uses_its_index() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let store = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let client = store.pool.get().await.unwrap();
        client
            .batch_execute(
                "ANALYZE operations; \
                 PREPARE point_write(text) AS \
                 UPDATE operations SET version = version + 1 WHERE id = $1",
            )
            .await
            .unwrap();
        // Past five runs PostgreSQL may keep one generic plan for good.
        for _ in 0..8 {
            client
                .batch_execute("EXECUTE point_write('missing')")
                .await
                .unwrap();
        }
        grow_operations(&store, 300).await;
        let plan = explain(&client, "EXPLAIN EXECUTE point_write('missing')").await;
        // Not necessarily the primary key: on an analyzed, empty table a scan
        // of `operations_by_scope` (whose last column is the id) expects no
        // row and costs less than the primary key's probe, which expects one
        // (docs/performance.md, "plans that go stale").
        assert!(
            plan.contains("Index Scan") && !plan.contains("Seq Scan"),
            "{plan}"
        );
        drop(client);
        store.close().await.unwrap();
    }

    /// The batched point read is prepared once per connection: its generic
    /// plan, made while `operations` was empty, must still probe the primary
    /// key with the array once the table has grown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepared_point_read_probes_the_index_whatever_the_table_was() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let store = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let client = store.pool.get().await.unwrap();
        client.batch_execute("ANALYZE operations").await.unwrap();
        let statement = client.prepare_cached(&reads::POINT_READ).await.unwrap();
        let missing = vec!["missing".to_owned()];
        // Past five runs PostgreSQL may keep one generic plan for good.
        for _ in 0..8 {
            client.query(&statement, &[&missing]).await.unwrap();
        }
        grow_operations(&store, 300).await;
        client
            .batch_execute(&format!(
                "PREPARE point_read(text[]) AS {}; SET plan_cache_mode = force_generic_plan",
                *reads::POINT_READ
            ))
            .await
            .unwrap();
        let plan = explain(&client, "EXPLAIN EXECUTE point_read('{missing}')").await;
        assert!(
            plan.contains("Index Cond: (id = ANY") && !plan.contains("Seq Scan"),
            "{plan}"
        );
        drop(client);
        store.close().await.unwrap();
    }

    async fn grow_operations(store: &PostgresStore, count: u32) {
        let operations: Vec<Operation> = (0..u64::from(count))
            .map(crate::conformance::sample)
            .collect();
        for chunk in operations.chunks(100) {
            futures_util::future::try_join_all(
                chunk.iter().map(|op| async move {
                    store.insert(op, &crate::conformance::created(op)).await
                }),
            )
            .await
            .unwrap();
        }
    }

    async fn explain(client: &deadpool_postgres::Object, statement: &str) -> String {
        let lines: Vec<String> = client
            .query(statement, &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        lines.join("\n")
    }

    #[test]
    fn notifications_parse_or_are_ignored() {
        assert_eq!(
            parse_notification("ops00000000000000001:7"),
            Some(Change::Committed {
                id: OperationId::parse("id", "ops00000000000000001").unwrap(),
                version: 7
            })
        );
        for bad in [
            "",
            ":",
            "ops00000000000000001",
            "bad:1",
            "ops00000000000000001:x",
        ] {
            assert_eq!(parse_notification(bad), None, "{bad}");
        }
    }
}
