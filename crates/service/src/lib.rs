//! The opsd service: the one place where requests meet the domain rules and
//! the store. Adapters (gRPC, REST, CLI) translate into these calls and back;
//! nothing here knows about a transport.

mod feed;
pub mod metrics;
pub mod trace;
mod watchers;

use std::sync::Arc;
use std::time::Duration;

use opsd_core::event::REAPER_ACTOR;
use opsd_core::operation::{DEFAULT_LEASE, validate_lease};
use opsd_core::overview::{self, Overview, OverviewParams};
use opsd_core::validate::Violations;
use opsd_core::{
    Action, Clock, Error, Event, EventKind, IdPrefix, ListQuery, NewEvent, NewOperation, Operation,
    OperationId, Outcome, Principal, RpcStatus, Scopes, Timestamp, Transition, Update,
};
use opsd_store::{Inserted, OperationStore, Swapped};
use tracing::Instrument;

pub use feed::{FEED_PAGE, Feed};
pub use metrics::Metrics;
pub use watchers::{Watchers, Watching};

/// How often a write retries after losing a compare-and-set race before
/// answering UNAVAILABLE; each loss means another writer made progress.
const MAX_WRITE_ATTEMPTS: usize = 64;
/// Random ids collide with negligible probability; a few retries make it nil.
const MAX_ID_ATTEMPTS: usize = 8;

/// A tenth of the collector's time: measured on SQLite with a backlog of a
/// million expired operations under 2,000 Gets/s, deleting flat out raised
/// Get p99 2.2x; see `docs/performance.md` for what this share keeps.
pub const DEFAULT_RETENTION_SHARE: f64 = 0.1;

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Prefix of new ids when the producer names none.
    pub default_id_prefix: IdPrefix,
    /// How long done operations are kept before they are deleted.
    pub retention: Duration,
    /// The longest a single Wait call waits.
    pub max_wait: Duration,
    /// Operations completed per reaper query; the reaper repeats while full.
    pub expiry_batch: usize,
    /// Operations deleted per retention statement, so deletion never holds
    /// the store for long.
    pub retention_batch: usize,
    /// The most of its time the retention collector spends deleting, in
    /// (0, 1]: after a batch that took `t` it waits `t × (1 / share − 1)`.
    /// A batch slowed by foreground load makes the wait longer too.
    pub retention_share: f64,
    /// The overview's stuck threshold when a request names none.
    pub stuck_after: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            default_id_prefix: IdPrefix::default(),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_wait: Duration::from_secs(600),
            expiry_batch: 100,
            retention_batch: 500,
            retention_share: DEFAULT_RETENTION_SHARE,
            stuck_after: overview::DEFAULT_STUCK_AFTER,
        }
    }
}

pub struct OperationService {
    store: Arc<dyn OperationStore>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    watchers: Arc<Watchers>,
    dispatcher: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Drop for OperationService {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

impl OperationService {
    /// Must be called inside a tokio runtime: it starts the change fan-out task.
    pub fn new(
        store: Arc<dyn OperationStore>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn OperationStore> =
            Arc::new(metrics::MeteredStore::new(store, Arc::clone(&metrics)));
        let (watchers, dispatcher) = Watchers::start(Arc::clone(&store));
        Self {
            store,
            clock,
            config,
            watchers,
            dispatcher,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The metrics as Prometheus scrapes them, with the gauges read now.
    pub async fn metrics_text(&self) -> String {
        self.metrics
            .watchers_active
            .set(i64::try_from(self.watchers.active()).unwrap_or(i64::MAX));
        match tokio::time::timeout(Duration::from_secs(2), self.store.count_running()).await {
            Ok(Ok(running)) => {
                self.metrics
                    .operations_running
                    .set(i64::try_from(running).unwrap_or(i64::MAX));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot count running operations"),
            Err(_) => tracing::warn!("counting running operations timed out"),
        }
        self.metrics.encode()
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    pub fn watchers(&self) -> &Arc<Watchers> {
        &self.watchers
    }

    /// One page of operations, newest first; the query must have been validated.
    /// Only ever the caller's scopes.
    pub async fn list(
        &self,
        caller: &Principal,
        query: &ListQuery,
    ) -> Result<Vec<Operation>, Error> {
        caller.require(Action::Read)?;
        let mut query = query.clone();
        if let Scopes::Only(visible) = &caller.scopes {
            let scopes = match query.filter.scopes.take() {
                Some(requested) => requested.intersection(visible).cloned().collect(),
                None => visible.clone(),
            };
            query.filter.scopes = Some(scopes);
        }
        Ok(self.store.list(&query).await?)
    }

    /// The overview of the operations the caller may see: what runs, what is
    /// stuck and how each producer fared in the window (rules in
    /// `opsd_core::overview`). Two bounded store reads: the typical gaps
    /// first, since they decide which quiet operations may be stuck.
    pub async fn overview(
        &self,
        caller: &Principal,
        params: &OverviewParams,
    ) -> Result<Overview, Error> {
        caller.require(Action::Overview)?;
        params.validate()?;
        let scopes = match &caller.scopes {
            Scopes::All => None,
            Scopes::Only(visible) => Some(visible.clone()),
        };
        let now = self.clock.now();
        let samples = self
            .store
            .progress_samples(&overview::progress_query(params, now, scopes.clone()))
            .await?;
        let gaps = overview::typical_gaps(&samples);
        let query = overview::overview_query(params, now, scopes, &gaps);
        let rows = self.store.overview(&query).await?;
        Ok(overview::assemble(params, now, &gaps, &query, rows))
    }

    /// Waits until the operation is done or `timeout` (capped by the
    /// configured maximum) passes, then returns its latest state.
    pub async fn wait(
        &self,
        caller: &Principal,
        id: &OperationId,
        timeout: Duration,
    ) -> Result<Arc<Operation>, Error> {
        let mut watching = self.watch(caller, id).await?;
        let mut latest = watching.current_and_mark_seen();
        let _ = tokio::time::timeout(timeout.min(self.config.max_wait), async {
            while !latest.is_done() {
                latest = watching.changed().await;
            }
        })
        .await;
        Ok(watching.current().max_by_version(latest))
    }

    /// Follows an operation's changes; see [`Watching`].
    pub async fn watch(&self, caller: &Principal, id: &OperationId) -> Result<Watching, Error> {
        let watching = self.watchers.watch(id).await?;
        caller.authorize(&watching.current().scope, id.as_str(), Action::Read)?;
        trace::link_to_creation(&watching.current());
        Ok(watching)
    }

    pub async fn get(&self, caller: &Principal, id: &OperationId) -> Result<Operation, Error> {
        let op = self.load(id).await?;
        caller.authorize(&op.scope, id.as_str(), Action::Read)?;
        Ok(op)
    }

    /// Creates a running operation owned by `caller`, or returns the one an
    /// earlier request with the same idempotency key created.
    pub async fn create(
        &self,
        caller: &Principal,
        mut request: NewOperation,
    ) -> Result<Operation, Error> {
        caller.require(Action::Produce)?;
        request.validate(self.clock.now())?;
        request.scope = Some(caller.scope_for_create(request.scope.as_deref())?);
        request.trace = trace::context_for_new_operation();
        let span = trace::current_span();
        let prefix = request
            .id_prefix
            .clone()
            .unwrap_or_else(|| self.config.default_id_prefix.clone());
        for _ in 0..MAX_ID_ATTEMPTS {
            let now = self.clock.now();
            let id = OperationId::generate(&prefix, now, &mut rand::rng());
            let operation = Operation::create(id, request.clone(), &caller.id, now);
            let event = NewEvent::of(EventKind::Created, &operation, &caller.id).traced(span);
            match self.store.insert(&operation, &event).await? {
                Inserted::Created => {
                    trace::created(&operation);
                    self.metrics.operations_created.inc();
                    tracing::debug!(operation_id = %operation.id, created_by = %caller.id, "operation created");
                    return Ok(operation);
                }
                Inserted::IdempotencyKeyUsed(existing) => {
                    // The same principal in another of its scopes (say, two JWTs for
                    // one subject): the key is taken, but the operation stays unseen.
                    if !caller.sees(&existing.scope) {
                        return Err(Error::FailedPrecondition {
                            id: "in another scope".into(),
                            precondition: opsd_core::Precondition::IdempotencyKeyReused,
                        });
                    }
                    existing.answer_retry(&request)?;
                    trace::link_to_creation(&existing);
                    tracing::debug!(operation_id = %existing.id, "create answered by idempotency key");
                    return Ok(existing);
                }
                Inserted::IdTaken => {
                    tracing::warn!(operation_id = %operation.id, "generated operation id was taken, retrying");
                }
                Inserted::ResourceBusy(running) => {
                    // Another scope's operation is not named: ids cannot be probed.
                    let running_id = if caller.sees(&running.scope) {
                        running.id.to_string()
                    } else {
                        "in another scope".to_owned()
                    };
                    return Err(Error::ResourceBusy {
                        resource_id: running.resource_id.unwrap_or_default(),
                        running_id,
                    });
                }
            }
        }
        Err(Error::Internal(
            "could not generate a free operation id".into(),
        ))
    }

    pub async fn cancel(&self, caller: &Principal, id: &OperationId) -> Result<Operation, Error> {
        let (op, changed) = self
            .transition(id, &caller.id, |op, now| {
                caller.authorize(&op.scope, id.as_str(), Action::Cancel)?;
                op.cancel(now)
            })
            .await?;
        if changed {
            self.metrics.cancel_requests.inc();
            if let Some(outcome) = op.outcome() {
                self.metrics.completed(outcome, false);
            }
        }
        tracing::debug!(operation_id = %id, caller = %caller.id, done = op.is_done(), "cancel requested");
        Ok(op)
    }

    /// The producer reports metadata and/or progress.
    pub async fn update(
        &self,
        caller: &Principal,
        id: &OperationId,
        update: Update,
    ) -> Result<Operation, Error> {
        let mut violations = Violations::default();
        if let Some(metadata) = &update.metadata {
            violations.any("metadata", metadata);
        }
        if let Some(progress) = &update.progress {
            violations.progress("progress", progress);
        }
        if update.metadata.is_none() && update.progress.is_none() {
            violations.add("metadata", "metadata or progress is required");
        }
        violations.into_result()?;
        let (op, _) = self
            .transition(id, &caller.id, |op, now| {
                caller.authorize(&op.scope, id.as_str(), Action::Produce)?;
                op.update(update.clone(), now)
            })
            .await?;
        Ok(op)
    }

    /// The producer takes or renews its lease (30 s when `lease` is `None`).
    pub async fn heartbeat(
        &self,
        caller: &Principal,
        id: &OperationId,
        lease: Option<Duration>,
    ) -> Result<Operation, Error> {
        let lease = lease.unwrap_or(DEFAULT_LEASE);
        validate_lease("lease_duration", lease)?;
        let (op, _) = self
            .transition(id, &caller.id, |op, now| {
                caller.authorize(&op.scope, id.as_str(), Action::Produce)?;
                op.heartbeat(lease, now)
            })
            .await?;
        Ok(op)
    }

    /// Completes every running operation whose deadline passed or whose lease
    /// lapsed; returns how many this call completed. Safe to run on every
    /// replica at once: compare-and-set lets exactly one complete each.
    pub async fn expire_due(&self) -> Result<usize, Error> {
        let mut completed = 0;
        loop {
            let due = self
                .store
                .due_for_expiry(self.clock.now(), self.config.expiry_batch)
                .await?;
            let full = due.len() == self.config.expiry_batch;
            let mut progressed = false;
            for op in due {
                // Each expiry is its own span, linked to the creating one.
                let span = tracing::info_span!(
                    target: trace::TARGET,
                    "opsd.reaper.expire",
                    otel.kind = "internal",
                    opsd.operation.id = %op.id,
                );
                match self
                    .transition(&op.id, REAPER_ACTOR, |op, now| Ok(op.expire(now)))
                    .instrument(span)
                    .await
                {
                    Ok((expired, true)) => {
                        completed += 1;
                        if let Some(outcome) = expired.outcome() {
                            self.metrics.completed(outcome, true);
                        }
                        progressed = true;
                        tracing::info!(operation_id = %expired.id, outcome = ?expired.outcome(), "expired operation completed");
                    }
                    Ok((_, false)) => {}
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if !full || !progressed {
                return Ok(completed);
            }
        }
    }

    /// Deletes done operations older than the retention, in small batches;
    /// returns how many. Running operations are never deleted.
    pub async fn collect_garbage(&self) -> Result<usize, Error> {
        let cutoff =
            Timestamp::from_unix_nanos(self.clock.now().unix_nanos().saturating_sub(
                i64::try_from(self.config.retention.as_nanos()).unwrap_or(i64::MAX),
            ));
        let mut deleted = 0;
        loop {
            let started = tokio::time::Instant::now();
            let batch = self
                .store
                .delete_done_before(cutoff, self.config.retention_batch)
                .await?;
            deleted += batch;
            self.metrics.operations_deleted.inc_by(batch as u64);
            if batch < self.config.retention_batch {
                if deleted > 0 {
                    tracing::info!(deleted, "deleted done operations past retention");
                }
                return Ok(deleted);
            }
            // A backlog is deleted at a bounded share of the time, so it never
            // crowds out the calls being served meanwhile.
            let pause = retention_pause(started.elapsed(), self.config.retention_share);
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Runs the reaper and the retention collector until the guard is dropped.
    pub fn spawn_background(
        self: &Arc<Self>,
        reaper_every: Duration,
        collector_every: Duration,
    ) -> BackgroundTasks {
        let reaper = {
            let service = Arc::clone(self);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(reaper_every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if let Err(e) = service.expire_due().await {
                        tracing::warn!(error = %e, "expiry pass failed");
                    }
                }
            })
        };
        let collector = {
            let service = Arc::clone(self);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(collector_every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if let Err(e) = service.collect_garbage().await {
                        tracing::warn!(error = %e, "retention pass failed");
                    }
                }
            })
        };
        BackgroundTasks {
            tasks: vec![reaper, collector],
        }
    }

    /// The producer completes the operation; `None` completes it with the
    /// failure it reported.
    pub async fn complete(
        &self,
        caller: &Principal,
        id: &OperationId,
        outcome: impl Into<Option<Outcome>>,
    ) -> Result<Operation, Error> {
        let outcome = outcome.into();
        let mut violations = Violations::default();
        match &outcome {
            Some(Outcome::Response(any)) => violations.any("response", any),
            Some(Outcome::Error(status)) => violations.error_status("error", status),
            None => {}
        }
        violations.into_result()?;
        let (op, changed) = self
            .transition(id, &caller.id, |op, now| {
                caller.authorize(&op.scope, id.as_str(), Action::Produce)?;
                op.complete(outcome.clone(), now)
            })
            .await?;
        if changed && let Some(outcome) = op.outcome() {
            self.metrics.completed(outcome, false);
        }
        tracing::debug!(operation_id = %id, "operation completed");
        Ok(op)
    }

    /// The producer reports a failure while it still cleans up: the operation
    /// stays running with the error visible.
    pub async fn report_failure(
        &self,
        caller: &Principal,
        id: &OperationId,
        status: RpcStatus,
    ) -> Result<Operation, Error> {
        let mut violations = Violations::default();
        violations.error_status("error", &status);
        violations.into_result()?;
        let (op, changed) = self
            .transition(id, &caller.id, |op, now| {
                caller.authorize(&op.scope, id.as_str(), Action::Produce)?;
                op.report_failure(status.clone(), now)
            })
            .await?;
        if changed {
            self.metrics.failures_reported.inc();
        }
        tracing::debug!(operation_id = %id, code = status.code, "failure reported");
        Ok(op)
    }

    /// One page of an operation's timeline, oldest first, after the event
    /// with sequence `after`. Visible exactly as the operation is.
    pub async fn list_events(
        &self,
        caller: &Principal,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        let op = self.load(id).await?;
        caller.authorize(&op.scope, id.as_str(), Action::Read)?;
        Ok(self.store.list_events(id, after, limit).await?)
    }

    /// Follows the events of every operation the caller may see that match
    /// `filter`, from after `resume` (a feed position), or from now.
    pub async fn feed(
        &self,
        caller: &Principal,
        mut filter: opsd_core::EventFilter,
        resume: Option<u64>,
    ) -> Result<Feed, Error> {
        caller.require(Action::Read)?;
        if let Scopes::Only(visible) = &caller.scopes {
            let scopes = match filter.scopes.take() {
                Some(requested) => requested.intersection(visible).cloned().collect(),
                None => visible.clone(),
            };
            filter.scopes = Some(scopes);
        }
        Feed::start(Arc::clone(&self.store), filter, resume).await
    }

    async fn load(&self, id: &OperationId) -> Result<Operation, Error> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound { id: id.to_string() })
    }

    /// Applies a domain transition with compare-and-set, retrying on the
    /// version that won when another writer got there first. Returns the
    /// operation and whether this call changed it.
    /// `actor` is who the change's event names.
    async fn transition(
        &self,
        id: &OperationId,
        actor: &str,
        change: impl Fn(&Operation, Timestamp) -> Result<Transition, Error>,
    ) -> Result<(Operation, bool), Error> {
        let mut current = self.load(id).await?;
        trace::link_to_creation(&current);
        let span = trace::current_span();
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (next, kind) = match change(&current, self.clock.now())? {
                Transition::Unchanged => return Ok((current, false)),
                Transition::Changed(next, kind) => (next, kind),
            };
            let event = kind.map(|kind| NewEvent::of(kind, &next, actor).traced(span));
            match self.store.compare_and_swap(&next, event.as_ref()).await? {
                Swapped::Swapped => return Ok((next, true)),
                Swapped::Stale(latest) => current = latest,
                Swapped::Missing => return Err(Error::NotFound { id: id.to_string() }),
            }
        }
        Err(Error::Unavailable(format!(
            "operation {id} is changing too fast, retry later"
        )))
    }
}

/// Background tasks of a service; dropping this stops them.
pub struct BackgroundTasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

trait NewestOf {
    fn max_by_version(self, other: Self) -> Self;
}

impl NewestOf for Arc<Operation> {
    fn max_by_version(self, other: Self) -> Self {
        if other.version > self.version {
            other
        } else {
            self
        }
    }
}

/// How long the retention collector waits after a batch that took `took`, to
/// spend at most `share` of its time deleting. A share outside (0, 1] is
/// treated as 1 (no wait); config validation refuses such shares first.
pub fn retention_pause(took: Duration, share: f64) -> Duration {
    if !(share > 0.0 && share < 1.0) {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(took.as_secs_f64() * ((1.0 - share) / share))
        .unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests;
