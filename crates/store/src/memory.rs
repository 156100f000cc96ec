//! An in-memory backend: fast, not durable; for tests and experiments.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use opsd_core::event::{DEFAULT_MAX_EVENTS_PER_OPERATION, Placement, placement};
use opsd_core::overview::{
    DoneCount, DoneSample, OverviewQuery, OverviewRows, ProgressQuery, ProgressSample,
    RunningCount, prefix_of,
};
use opsd_core::{
    Event, EventFilter, ListQuery, NewEvent, Operation, OperationId, Outcome, Timestamp,
};

use tokio::sync::broadcast;

use crate::{CHANGE_BUFFER, Change, FeedBounds, Inserted, OperationStore, StoreError, Swapped};

#[derive(Default)]
struct Tables {
    operations: HashMap<OperationId, Operation>,
    /// (created_by, idempotency key) → the operation that key created.
    idempotency: HashMap<(String, String), OperationId>,
    /// Every event, by position.
    events: BTreeMap<u64, Event>,
    /// Each operation's event positions, in sequence order.
    timelines: HashMap<OperationId, Vec<u64>>,
    /// The last position handed out.
    head: u64,
    horizon: u64,
    closed: bool,
}

impl Tables {
    /// Appends (or folds) `new` into the timeline of `op`, at the next position.
    fn record(&mut self, op: &Operation, new: &NewEvent, max_events: u64) {
        self.head += 1;
        let position = self.head;
        let timeline = self.timelines.entry(op.id.clone()).or_default();
        let last = timeline.last().and_then(|p| self.events.get(p));
        let count = last.map_or(0, |e| e.sequence);
        match placement(new.kind, count, last.map(|e| e.kind), max_events) {
            Placement::FoldIntoLast => {
                let last_position = timeline.pop().expect("folding needs a last event");
                let last = self
                    .events
                    .remove(&last_position)
                    .expect("a timeline's positions are stored");
                self.events.insert(position, last.fold(new, position));
            }
            Placement::Append => {
                self.events
                    .insert(position, Event::stored(new, op, count + 1, position));
            }
        }
        timeline.push(position);
    }

    /// The events of `id`, in sequence order.
    fn timeline(&self, id: &OperationId) -> impl Iterator<Item = &Event> {
        self.timelines
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|position| self.events.get(position))
    }
}

pub struct MemoryStore {
    tables: Mutex<Tables>,
    changes: broadcast::Sender<Change>,
    max_events: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            tables: Mutex::default(),
            changes: broadcast::channel(CHANGE_BUFFER).0,
            max_events: DEFAULT_MAX_EVENTS_PER_OPERATION,
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Past `max` events of one operation, `metadata_updated` events fold.
    pub fn with_max_events_per_operation(mut self, max: u64) -> Self {
        self.max_events = max;
        self
    }

    fn committed(&self, op: &Operation) {
        // No subscribers is fine: nobody is waiting.
        let _ = self.changes.send(Change::Committed {
            id: op.id.clone(),
            version: op.version,
        });
    }

    fn tables(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        // A panic while holding the lock leaves plain data behind, still consistent
        // because every change below is a single insert.
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if tables.closed {
            return Err(StoreError::Closed);
        }
        Ok(tables)
    }
}

#[async_trait]
impl OperationStore for MemoryStore {
    async fn insert(
        &self,
        operation: &Operation,
        event: &NewEvent,
    ) -> Result<Inserted, StoreError> {
        let mut tables = self.tables()?;
        let key = operation
            .idempotency
            .as_ref()
            .map(|i| (operation.created_by.clone(), i.key.clone()));
        if let Some(existing) = key.as_ref().and_then(|k| tables.idempotency.get(k)) {
            let existing = tables.operations[existing].clone();
            return Ok(Inserted::IdempotencyKeyUsed(existing));
        }
        if tables.operations.contains_key(&operation.id) {
            return Ok(Inserted::IdTaken);
        }
        if operation.exclusive
            && let Some(running) = tables.operations.values().find(|other| {
                other.exclusive && !other.is_done() && other.resource_id == operation.resource_id
            })
        {
            return Ok(Inserted::ResourceBusy(running.clone()));
        }
        tables
            .operations
            .insert(operation.id.clone(), operation.clone());
        if let Some(key) = key {
            tables.idempotency.insert(key, operation.id.clone());
        }
        tables.record(operation, event, self.max_events);
        self.committed(operation);
        Ok(Inserted::Created)
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        Ok(self.tables()?.operations.get(id).cloned())
    }

    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError> {
        let mut tables = self.tables()?;
        let Some(current) = tables.operations.get_mut(&next.id) else {
            return Ok(Swapped::Missing);
        };
        if current.version + 1 != next.version {
            return Ok(Swapped::Stale(current.clone()));
        }
        *current = next.clone();
        if let Some(event) = event {
            tables.record(next, event, self.max_events);
        }
        self.committed(next);
        Ok(Swapped::Swapped)
    }

    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let tables = self.tables()?;
        Ok(tables
            .timeline(id)
            .filter(|e| e.sequence > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn read_feed(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let tables = self.tables()?;
        Ok(tables
            .events
            .range(after.saturating_add(1)..)
            .map(|(_, e)| e)
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        let tables = self.tables()?;
        Ok(FeedBounds {
            head: tables.head,
            horizon: tables.horizon,
        })
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        let tables = self.tables()?;
        let mut page: Vec<Operation> = tables
            .operations
            .values()
            .filter(|op| query.filter.matches(op))
            .filter(|op| query.after.as_ref().is_none_or(|c| c.precedes(op)))
            .cloned()
            .collect();
        page.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        page.truncate(query.limit);
        Ok(page)
    }

    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        let tables = self.tables()?;
        let mut due: Vec<Operation> = tables
            .operations
            .values()
            .filter(|op| op.expires_at().is_some_and(|t| t <= now))
            .cloned()
            .collect();
        due.sort_by_key(|op| op.expires_at());
        due.truncate(limit);
        Ok(due)
    }

    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut tables = self.tables()?;
        let expired: Vec<OperationId> = tables
            .operations
            .values()
            .filter(|op| op.is_done() && op.modified_at < cutoff)
            .take(limit)
            .map(|op| op.id.clone())
            .collect();
        for id in &expired {
            if let Some(op) = tables.operations.remove(id)
                && let Some(idempotency) = op.idempotency
            {
                tables.idempotency.remove(&(op.created_by, idempotency.key));
            }
        }
        for id in &expired {
            for position in tables.timelines.remove(id).unwrap_or_default() {
                tables.events.remove(&position);
                tables.horizon = tables.horizon.max(position);
            }
        }
        if !expired.is_empty() {
            let _ = self.changes.send(Change::Purged { before: cutoff });
        }
        Ok(expired.len())
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        let tables = self.tables()?;
        Ok(tables
            .operations
            .values()
            .filter(|op| !op.is_done())
            .count() as u64)
    }

    async fn progress_samples(
        &self,
        query: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError> {
        let tables = self.tables()?;
        let mut recent: HashMap<&str, Vec<&Operation>> = HashMap::new();
        for op in tables.operations.values() {
            let in_scope = query.scopes.as_ref().is_none_or(|s| s.contains(&op.scope));
            if in_scope && (!op.is_done() || op.modified_at >= query.changed_since) {
                recent.entry(prefix_of(&op.id)).or_default().push(op);
            }
        }
        let mut chosen: Vec<&OperationId> = Vec::new();
        for ops in recent.values_mut() {
            ops.sort_by(|a, b| (b.modified_at, &b.id).cmp(&(a.modified_at, &a.id)));
            chosen.extend(
                ops.iter()
                    .take(query.operations_per_prefix)
                    .map(|op| &op.id),
            );
        }
        chosen.sort();
        Ok(chosen
            .into_iter()
            .map(|id| {
                let events: Vec<&Event> = tables
                    .timeline(id)
                    .filter(|e| e.sequence <= query.events_per_operation as u64)
                    .collect();
                ProgressSample {
                    id: id.clone(),
                    events: events.into_iter().map(|e| (e.kind, e.at)).collect(),
                }
            })
            .collect())
    }

    async fn overview(&self, query: &OverviewQuery) -> Result<OverviewRows, StoreError> {
        let tables = self.tables()?;
        let visible: Vec<&Operation> = tables
            .operations
            .values()
            .filter(|op| query.scopes.as_ref().is_none_or(|s| s.contains(&op.scope)))
            .collect();
        let mut running: HashMap<&str, RunningCount> = HashMap::new();
        let mut done: HashMap<(&str, Option<i32>), u64> = HashMap::new();
        let mut oldest = Vec::new();
        let mut candidates = Vec::new();
        let mut sample = Vec::new();
        for op in visible {
            let prefix = prefix_of(&op.id);
            if !op.is_done() {
                let count = running.entry(prefix).or_insert_with(|| RunningCount {
                    prefix: prefix.to_owned(),
                    running: 0,
                    cancel_overdue: 0,
                });
                count.running += 1;
                if op
                    .cancel_requested_at()
                    .is_some_and(|t| t <= query.cancel_requested_before)
                {
                    count.cancel_overdue += 1;
                }
                oldest.push(op);
                if op.modified_at <= query.quiet_before
                    || op.lease_expires_at.is_some_and(|t| t <= query.lease_before)
                {
                    candidates.push(op);
                }
            } else if op.modified_at >= query.done_since {
                let error_code = match op.outcome() {
                    Some(Outcome::Error(status)) => Some(status.code),
                    _ => None,
                };
                *done.entry((prefix, error_code)).or_default() += 1;
                sample.push(DoneSample {
                    id: op.id.clone(),
                    created_at: op.created_at,
                    modified_at: op.modified_at,
                    cancel_requested_at: op.cancel_requested_at(),
                    error_code,
                });
            }
        }
        oldest.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        oldest.truncate(query.oldest);
        candidates.sort_by(|a, b| (a.modified_at, &a.id).cmp(&(b.modified_at, &b.id)));
        candidates.truncate(query.candidates);
        sample.sort_by(|a, b| (b.modified_at, &b.id).cmp(&(a.modified_at, &a.id)));
        sample.truncate(query.sample);
        let mut rows = OverviewRows {
            running: running.into_values().collect(),
            done: done
                .into_iter()
                .map(|((prefix, error_code), count)| DoneCount {
                    prefix: prefix.to_owned(),
                    error_code,
                    count,
                })
                .collect(),
            oldest: oldest.into_iter().cloned().collect(),
            candidates: candidates.into_iter().cloned().collect(),
            sample,
        };
        crate::sort_overview_counts(&mut rows);
        Ok(rows)
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.closed = true;
        Ok(())
    }
}
