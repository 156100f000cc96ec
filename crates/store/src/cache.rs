//! [`CachingStore`]: serves done operations from memory.
//!
//! A done operation never changes again; the only thing that can happen to it
//! is deletion by retention, which removes done operations last changed before
//! a cutoff. So the cache needs no per-entry invalidation: it remembers the
//! highest cutoff any replica purged with ([`Change::Purged`]) and treats a
//! cached operation older than that as gone, reading the store instead. When
//! changes may have been missed ([`Change::Resync`], or a lagging feed) it
//! forgets everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use opsd_core::overview::{OverviewQuery, OverviewRows, ProgressQuery, ProgressSample};
use opsd_core::{
    Any, Event, EventFilter, ListQuery, NewEvent, Operation, OperationId, Outcome, State, Timestamp,
};
use quick_cache::Weighter;
use tokio::sync::broadcast;

use crate::{Change, FeedBounds, Inserted, OperationStore, StoreError, Swapped};

/// Decorates a store with a bounded cache of done operations.
pub struct CachingStore {
    inner: Arc<dyn OperationStore>,
    shared: Arc<Shared>,
    invalidator: tokio::task::JoinHandle<()>,
}

struct Shared {
    done: quick_cache::sync::Cache<OperationId, Arc<Operation>, ByApproximateSize>,
    /// Cached operations last changed before this (unix nanos) may be deleted.
    purged_before: AtomicI64,
    /// Bumped whenever the cache is emptied: an operation read before a
    /// reset must not be cached after it.
    resets: AtomicU64,
}

/// Weighs cached operations by [`approximate_size`].
#[derive(Clone, Copy)]
pub(crate) struct ByApproximateSize;

impl Weighter<OperationId, Arc<Operation>> for ByApproximateSize {
    fn weight(&self, _id: &OperationId, op: &Arc<Operation>) -> u64 {
        approximate_size(op) as u64
    }
}

/// Heap bytes an operation holds, roughly, plus its fixed size and the
/// cache's own per-entry bookkeeping.
fn approximate_size(op: &Operation) -> usize {
    fn any(a: &Any) -> usize {
        a.type_url.len() + a.value.len()
    }
    let outcome = match &op.state {
        State::Done {
            outcome: Outcome::Response(response),
            ..
        } => any(response),
        State::Done {
            outcome: Outcome::Error(status),
            ..
        } => status.message.len() + status.details.iter().map(any).sum::<usize>(),
        _ => 0,
    };
    std::mem::size_of::<Operation>()
        + 64
        + op.description.len()
        + op.created_by.len()
        + op.scope.len()
        + op.resource_id.as_ref().map_or(0, String::len)
        + op.metadata.as_ref().map_or(0, any)
        + op.idempotency.as_ref().map_or(0, |i| i.key.len() + 32)
        + outcome
}

impl CachingStore {
    /// Wraps `inner`, holding at most about `capacity_bytes` of done
    /// operations. Must be called within a Tokio runtime (it listens to the
    /// store's changes).
    pub fn new(inner: Arc<dyn OperationStore>, capacity_bytes: u64) -> Self {
        let estimated_items = usize::try_from(capacity_bytes / 1024)
            .unwrap_or(usize::MAX)
            .max(16);
        let shared = Arc::new(Shared {
            done: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                capacity_bytes.max(1),
                ByApproximateSize,
            ),
            purged_before: AtomicI64::new(i64::MIN),
            resets: AtomicU64::new(0),
        });
        let invalidator = tokio::spawn(invalidate(inner.subscribe(), Arc::clone(&shared)));
        Self {
            inner,
            shared,
            invalidator,
        }
    }

    /// How many operations the cache holds now.
    pub fn cached(&self) -> usize {
        self.shared.done.len()
    }
}

impl Drop for CachingStore {
    fn drop(&mut self) {
        self.invalidator.abort();
    }
}

async fn invalidate(mut changes: broadcast::Receiver<Change>, shared: Arc<Shared>) {
    loop {
        match changes.recv().await {
            Ok(Change::Committed { .. }) => {}
            Ok(Change::Purged { before }) => shared.purge(before),
            Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => shared.reset(),
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

impl Shared {
    fn purge(&self, before: Timestamp) {
        self.purged_before
            .fetch_max(before.unix_nanos(), Ordering::SeqCst);
    }

    fn reset(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.done.clear();
    }

    fn lookup(&self, id: &OperationId) -> Option<Operation> {
        let op = self.done.get(id)?;
        if op.modified_at.unix_nanos() < self.purged_before.load(Ordering::SeqCst) {
            // Retention may have deleted it: only the store knows.
            self.done.remove(id);
            return None;
        }
        Some(Operation::clone(&op))
    }

    /// Caches `op` if it is done, unless the cache was reset since
    /// `resets_before` was read (the read may predate a missed purge).
    fn remember(&self, op: &Operation, resets_before: u64) {
        if op.is_done()
            && op.modified_at.unix_nanos() >= self.purged_before.load(Ordering::SeqCst)
            && self.resets.load(Ordering::SeqCst) == resets_before
        {
            self.done.insert(op.id.clone(), Arc::new(op.clone()));
        }
    }
}

#[async_trait]
impl OperationStore for CachingStore {
    async fn insert(
        &self,
        operation: &Operation,
        event: &NewEvent,
    ) -> Result<Inserted, StoreError> {
        self.inner.insert(operation, event).await
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        if let Some(op) = self.shared.lookup(id) {
            return Ok(Some(op));
        }
        let resets = self.shared.resets.load(Ordering::SeqCst);
        let op = self.inner.get(id).await?;
        if let Some(op) = &op {
            self.shared.remember(op, resets);
        }
        Ok(op)
    }

    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError> {
        let resets = self.shared.resets.load(Ordering::SeqCst);
        let swapped = self.inner.compare_and_swap(next, event).await?;
        match &swapped {
            Swapped::Swapped => self.shared.remember(next, resets),
            Swapped::Stale(current) => self.shared.remember(current, resets),
            Swapped::Missing => {}
        }
        Ok(swapped)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        self.inner.list(query).await
    }

    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.list_events(id, after, limit).await
    }

    async fn read_feed(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.read_feed(after, filter, limit).await
    }

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.inner.feed_bounds().await
    }

    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        self.inner.due_for_expiry(now, limit).await
    }

    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        // Before deleting, so that no read after the delete can see a deleted
        // operation here; the notification then tells the other replicas.
        self.shared.purge(cutoff);
        self.inner.delete_done_before(cutoff, limit).await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        self.inner.count_running().await
    }

    async fn progress_samples(
        &self,
        query: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError> {
        self.inner.progress_samples(query).await
    }

    async fn overview(&self, query: &OverviewQuery) -> Result<OverviewRows, StoreError> {
        self.inner.overview(query).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.shared.reset();
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::conformance::sample;
    use opsd_core::RpcStatus;

    fn finished(op: &Operation, at: i64) -> Operation {
        let mut done = op.clone();
        done.version += 1;
        done.modified_at = Timestamp::from_unix_nanos(at);
        done.state = State::Done {
            outcome: Outcome::Error(RpcStatus {
                code: 13,
                message: "broken".into(),
                details: vec![],
            }),
            cancel_requested_at: None,
        };
        done
    }

    #[tokio::test]
    async fn done_operations_are_served_from_memory_and_running_ones_are_not() {
        let inner = Arc::new(MemoryStore::new());
        let cache = CachingStore::new(inner.clone(), 1 << 20);
        let (running, done) = (sample(1), sample(2));
        cache
            .insert(&running, &crate::conformance::created(&running))
            .await
            .unwrap();
        cache
            .insert(&done, &crate::conformance::created(&done))
            .await
            .unwrap();
        let done = finished(&done, 5);
        assert_eq!(
            cache
                .compare_and_swap(&done, Some(&crate::conformance::changed(&done)))
                .await
                .unwrap(),
            Swapped::Swapped
        );
        assert_eq!(cache.cached(), 1);

        // With the store gone, only what the cache holds can still be read.
        inner.close().await.unwrap();
        assert_eq!(cache.get(&done.id).await.unwrap(), Some(done));
        assert_eq!(cache.get(&running.id).await, Err(StoreError::Closed));
    }

    #[tokio::test]
    async fn retention_here_hides_cached_operations_at_once() {
        let inner = Arc::new(MemoryStore::new());
        let cache = CachingStore::new(inner.clone(), 1 << 20);
        let (old, young) = (sample(1), sample(2));
        cache
            .insert(&old, &crate::conformance::created(&old))
            .await
            .unwrap();
        cache
            .insert(&young, &crate::conformance::created(&young))
            .await
            .unwrap();
        let (old, young) = (finished(&old, 10), finished(&young, 30));
        cache
            .compare_and_swap(&old, Some(&crate::conformance::changed(&old)))
            .await
            .unwrap();
        cache
            .compare_and_swap(&young, Some(&crate::conformance::changed(&young)))
            .await
            .unwrap();
        assert_eq!(
            cache
                .delete_done_before(Timestamp::from_unix_nanos(20), 10)
                .await
                .unwrap(),
            1
        );
        // No waiting for the notification: the deleting replica knows first.
        assert_eq!(cache.get(&old.id).await.unwrap(), None);
        assert_eq!(cache.get(&young.id).await.unwrap(), Some(young));
    }

    #[tokio::test]
    async fn missed_changes_empty_the_cache() {
        let inner = Arc::new(MemoryStore::new());
        let cache = CachingStore::new(inner.clone(), 1 << 20);
        let op = sample(1);
        cache
            .insert(&op, &crate::conformance::created(&op))
            .await
            .unwrap();
        cache
            .compare_and_swap(&finished(&op, 5), None)
            .await
            .unwrap();
        assert_eq!(cache.cached(), 1);
        // On this single-threaded runtime the listener cannot run before the
        // loop ends, so it falls behind the change feed (which may have hidden
        // a purge) and must forget everything.
        for n in 0..(crate::CHANGE_BUFFER as u64 + 10) {
            inner
                .insert(
                    &sample(1_000 + n),
                    &crate::conformance::created(&sample(1_000 + n)),
                )
                .await
                .unwrap();
        }
        for _ in 0..100 {
            if cache.cached() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(cache.cached(), 0);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_budget() {
        let inner = Arc::new(MemoryStore::new());
        let budget = 64 * 1024;
        let cache = CachingStore::new(inner, budget);
        for n in 0..2_000 {
            let op = sample(n);
            cache
                .insert(&op, &crate::conformance::created(&op))
                .await
                .unwrap();
            cache
                .compare_and_swap(&finished(&op, 5), None)
                .await
                .unwrap();
        }
        assert!(
            cache.shared.done.weight() <= budget,
            "{}",
            cache.shared.done.weight()
        );
        assert!(
            cache.cached() > 10 && cache.cached() < 2_000,
            "{}",
            cache.cached()
        );
    }
}
