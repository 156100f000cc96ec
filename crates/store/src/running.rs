//! [`RunningCache`]: the SQLite store's running operations, in memory.
//!
//! SQLite has one writer, inside this process, so this process sees every
//! change before anyone can read it: the writer forgets the operations a
//! batch will change before applying it and remembers the versions it wrote
//! once the batch is committed, before any caller hears of it. A Get of a
//! running operation then costs what a Get of a done one costs, instead of a
//! read transaction.
//!
//! Readers may fill the cache with what they read from the database too (after
//! a restart nothing is cached), but only when no batch began or ended while
//! they read: a read that overlapped a batch may hold a version the batch has
//! replaced, and caching it could serve that version after the new one was
//! acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opsd_core::{Operation, OperationId};

use crate::cache::ByApproximateSize;

pub(crate) struct RunningCache {
    entries: quick_cache::sync::Cache<OperationId, Arc<Operation>, ByApproximateSize>,
    /// Bumped when the writer begins a batch and when it ends one, so it is
    /// odd while a batch is applied. Changed only while holding `gate`.
    batches: AtomicU64,
    /// Orders a reader's check-and-insert against the writer's batches.
    gate: Mutex<()>,
}

/// What a reader saw of the writer before it read: hand it back to
/// [`RunningCache::remember_read`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadStamp(u64);

impl RunningCache {
    /// Holds at most about `capacity_bytes` of running operations; 0 caches nothing.
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        let estimated_items = usize::try_from(capacity_bytes / 1024)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            entries: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                capacity_bytes.max(1),
                ByApproximateSize,
            ),
            batches: AtomicU64::new(0),
            gate: Mutex::new(()),
        }
    }

    /// The cached version of a running operation.
    pub(crate) fn get(&self, id: &OperationId) -> Option<Operation> {
        self.entries.get(id).map(|op| Operation::clone(&op))
    }

    /// Taken before a reader looks in the database.
    pub(crate) fn stamp(&self) -> ReadStamp {
        ReadStamp(self.batches.load(Ordering::Acquire))
    }

    /// Caches what a reader read, if it is running and no batch began or
    /// ended since `stamp` (so the read saw the latest committed version).
    pub(crate) fn remember_read(&self, op: &Operation, stamp: ReadStamp) {
        if op.is_done() || stamp.0 % 2 == 1 {
            return;
        }
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if self.batches.load(Ordering::Acquire) == stamp.0 {
            self.entries.insert(op.id.clone(), Arc::new(op.clone()));
        }
    }

    /// The writer, before it applies a batch: forgets the operations it may change.
    pub(crate) fn begin<'a>(&self, changing: impl IntoIterator<Item = &'a OperationId>) {
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        self.batches.fetch_add(1, Ordering::AcqRel);
        for id in changing {
            self.entries.remove(id);
        }
    }

    /// The writer, after the batch committed (or failed): remembers the
    /// running versions it wrote. Done ones stay forgotten.
    pub(crate) fn end<'a>(&self, written: impl IntoIterator<Item = &'a Operation>) {
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        for op in written {
            if !op.is_done() {
                self.entries.insert(op.id.clone(), Arc::new(op.clone()));
            }
        }
        self.batches.fetch_add(1, Ordering::AcqRel);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::sample;
    use opsd_core::{Any, Outcome, State};

    fn running(version: u64) -> Operation {
        let mut op = sample(1);
        op.version = version;
        op
    }

    fn done_from(op: &Operation) -> Operation {
        let mut done = op.clone();
        done.version += 1;
        done.state = State::Done {
            outcome: Outcome::Response(Any {
                type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                value: Vec::new(),
            }),
            cancel_requested_at: None,
        };
        done
    }

    #[test]
    fn the_writer_replaces_what_it_changes() {
        let cache = RunningCache::new(1 << 20);
        let v1 = running(1);
        cache.begin([&v1.id]);
        cache.end([&v1]);
        assert_eq!(cache.get(&v1.id), Some(v1.clone()));
        let v2 = running(2);
        cache.begin([&v2.id]);
        assert_eq!(
            cache.get(&v2.id),
            None,
            "forgotten while the batch is applied"
        );
        cache.end([&v2]);
        assert_eq!(cache.get(&v2.id).map(|op| op.version), Some(2));
    }

    #[test]
    fn done_operations_are_not_kept() {
        let cache = RunningCache::new(1 << 20);
        let op = running(1);
        cache.begin([&op.id]);
        cache.end([&op]);
        let done = done_from(&op);
        cache.begin([&done.id]);
        cache.end([&done]);
        assert_eq!(cache.get(&done.id), None);
        cache.remember_read(&done, cache.stamp());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_read_that_overlapped_a_batch_is_not_cached() {
        let cache = RunningCache::new(1 << 20);
        let stale = running(1);
        // Read began before the batch that writes version 2 ended.
        let stamp = cache.stamp();
        cache.begin([&stale.id]);
        cache.remember_read(&stale, stamp);
        assert_eq!(cache.get(&stale.id), None);
        // Read began while the batch was applied.
        let stamp = cache.stamp();
        cache.end(std::iter::empty());
        cache.remember_read(&stale, stamp);
        assert_eq!(cache.get(&stale.id), None);
        // A read with no batch around it is cached.
        let stamp = cache.stamp();
        cache.remember_read(&stale, stamp);
        assert_eq!(cache.get(&stale.id), Some(stale));
    }
}
