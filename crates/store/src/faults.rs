//! A decorator that makes a real store slow or failing on demand, to test how
//! the layers above behave: deadlines, error mapping, retries and recovery.
//!
//! [`FaultyStore`] delegates every call to the store it wraps; the [`Faults`]
//! it shares with the test decide, call by call, whether to add latency or to
//! fail. A failure is injected either before the call reaches the store (the
//! write is not applied) or after (the write is applied and its answer is
//! lost, the ambiguous case every client must survive).
//!
//! ```
//! # async fn example() {
//! use std::sync::Arc;
//! use opsd_store::faults::{Calls, Fault, Faults, FaultyStore};
//! use opsd_store::{MemoryStore, OperationStore, StoreError};
//!
//! let faults = Faults::new();
//! let store = FaultyStore::new(Arc::new(MemoryStore::new()), Arc::clone(&faults));
//! faults.inject(Calls::Writes, Fault::FailBefore(StoreError::Unavailable("down".into())));
//! // … every insert and compare-and-swap now fails without being applied …
//! faults.clear();
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opsd_core::overview::{OverviewQuery, OverviewRows, ProgressQuery, ProgressSample};
use opsd_core::{Event, EventFilter, ListQuery, NewEvent, Operation, OperationId, Timestamp};
use tokio::sync::broadcast;

use crate::{Change, FeedBounds, Inserted, OperationStore, StoreError, Swapped};

/// One method of [`OperationStore`] that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Insert,
    Get,
    CompareAndSwap,
    List,
    DueForExpiry,
    DeleteDoneBefore,
    CountRunning,
    ListEvents,
    ReadFeed,
    FeedBounds,
    ProgressSamples,
    Overview,
}

impl Call {
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Call::Insert | Call::CompareAndSwap | Call::DeleteDoneBefore
        )
    }
}

/// Which calls a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calls {
    All,
    Reads,
    Writes,
    Only(Call),
}

impl Calls {
    fn matches(self, call: Call) -> bool {
        match self {
            Calls::All => true,
            Calls::Reads => !call.is_write(),
            Calls::Writes => call.is_write(),
            Calls::Only(only) => only == call,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// The call waits this long before it reaches the store.
    Latency(Duration),
    /// The call fails with this error without reaching the store.
    FailBefore(StoreError),
    /// The call reaches the store (a write is applied, its change announced)
    /// and then fails with this error: the answer was lost on the way back.
    FailAfter(StoreError),
}

struct Rule {
    calls: Calls,
    fault: Fault,
    /// Chance that the rule fires on a matching call, in millionths.
    chance: u32,
    /// How many more times it may fire; `None` for no limit.
    remaining: Option<u64>,
}

/// What [`FaultyStore`]s inject; shared with the test that steers them.
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    random: AtomicU64,
    injected: AtomicU64,
}

/// What one call is made to suffer.
#[derive(Default)]
struct Decision {
    latency: Duration,
    error: Option<(StoreError, bool)>,
}

impl Faults {
    pub fn new() -> Arc<Self> {
        Self::with_seed(0x5eed_f417)
    }

    /// Random choices (for [`Faults::inject_sometimes`]) follow `seed`.
    pub fn with_seed(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            rules: Mutex::new(Vec::new()),
            random: AtomicU64::new(seed),
            injected: AtomicU64::new(0),
        })
    }

    /// Every matching call suffers `fault` until [`Faults::clear`].
    pub fn inject(&self, calls: Calls, fault: Fault) {
        self.add(calls, fault, 1.0, None);
    }

    /// Each matching call suffers `fault` with this probability (0 to 1).
    pub fn inject_sometimes(&self, calls: Calls, fault: Fault, probability: f64) {
        self.add(calls, fault, probability, None);
    }

    /// The next `times` matching calls suffer `fault`.
    pub fn inject_times(&self, calls: Calls, fault: Fault, times: u64) {
        self.add(calls, fault, 1.0, Some(times));
    }

    fn add(&self, calls: Calls, fault: Fault, probability: f64, remaining: Option<u64>) {
        let chance = (probability.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
        self.lock().push(Rule {
            calls,
            fault,
            chance,
            remaining,
        });
    }

    /// Removes every fault: calls go straight to the store again.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many calls were delayed or failed so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SplitMix64: enough randomness to pick calls, and reproducible.
    fn next_random(&self) -> u64 {
        let mut z = self
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn decide(&self, call: Call) -> Decision {
        let mut decision = Decision::default();
        let mut rules = self.lock();
        for rule in rules.iter_mut().filter(|rule| rule.calls.matches(call)) {
            if rule.remaining == Some(0) {
                continue;
            }
            if rule.chance < 1_000_000 && (self.next_random() % 1_000_000) as u32 >= rule.chance {
                continue;
            }
            let fires = match &rule.fault {
                Fault::Latency(latency) => {
                    decision.latency += *latency;
                    true
                }
                Fault::FailBefore(error) if decision.error.is_none() => {
                    decision.error = Some((error.clone(), false));
                    true
                }
                Fault::FailAfter(error) if decision.error.is_none() => {
                    decision.error = Some((error.clone(), true));
                    true
                }
                Fault::FailBefore(_) | Fault::FailAfter(_) => false,
            };
            if fires && let Some(remaining) = &mut rule.remaining {
                *remaining -= 1;
            }
        }
        rules.retain(|rule| rule.remaining != Some(0));
        if !decision.latency.is_zero() || decision.error.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        decision
    }
}

/// A real store, with the faults of a [`Faults`] injected into its calls.
pub struct FaultyStore {
    inner: Arc<dyn OperationStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn OperationStore>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }

    async fn call<T, F>(&self, call: Call, run: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let decision = self.faults.decide(call);
        if !decision.latency.is_zero() {
            tokio::time::sleep(decision.latency).await;
        }
        match decision.error {
            None => run.await,
            Some((error, false)) => Err(error),
            Some((error, true)) => {
                let _ = run.await;
                Err(error)
            }
        }
    }
}

#[async_trait]
impl OperationStore for FaultyStore {
    async fn insert(
        &self,
        operation: &Operation,
        event: &NewEvent,
    ) -> Result<Inserted, StoreError> {
        self.call(Call::Insert, self.inner.insert(operation, event))
            .await
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        self.call(Call::Get, self.inner.get(id)).await
    }

    async fn compare_and_swap(
        &self,
        next: &Operation,
        event: Option<&NewEvent>,
    ) -> Result<Swapped, StoreError> {
        self.call(
            Call::CompareAndSwap,
            self.inner.compare_and_swap(next, event),
        )
        .await
    }

    async fn list_events(
        &self,
        id: &OperationId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.call(Call::ListEvents, self.inner.list_events(id, after, limit))
            .await
    }

    async fn read_feed(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.call(Call::ReadFeed, self.inner.read_feed(after, filter, limit))
            .await
    }

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.call(Call::FeedBounds, self.inner.feed_bounds()).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Operation>, StoreError> {
        self.call(Call::List, self.inner.list(query)).await
    }

    async fn due_for_expiry(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Operation>, StoreError> {
        self.call(Call::DueForExpiry, self.inner.due_for_expiry(now, limit))
            .await
    }

    async fn delete_done_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.call(
            Call::DeleteDoneBefore,
            self.inner.delete_done_before(cutoff, limit),
        )
        .await
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        self.call(Call::CountRunning, self.inner.count_running())
            .await
    }

    async fn progress_samples(
        &self,
        query: &ProgressQuery,
    ) -> Result<Vec<ProgressSample>, StoreError> {
        self.call(Call::ProgressSamples, self.inner.progress_samples(query))
            .await
    }

    async fn overview(&self, query: &OverviewQuery) -> Result<OverviewRows, StoreError> {
        self.call(Call::Overview, self.inner.overview(query)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::conformance::sample;

    fn unavailable() -> StoreError {
        StoreError::Unavailable("injected".into())
    }

    fn faulty() -> (FaultyStore, Arc<dyn OperationStore>, Arc<Faults>) {
        let inner: Arc<dyn OperationStore> = Arc::new(MemoryStore::new());
        let faults = Faults::new();
        (
            FaultyStore::new(Arc::clone(&inner), Arc::clone(&faults)),
            inner,
            faults,
        )
    }

    #[tokio::test]
    async fn a_failure_before_leaves_the_store_alone_and_after_applies_the_write() {
        let (store, inner, faults) = faulty();
        faults.inject(Calls::Writes, Fault::FailBefore(unavailable()));
        let op = sample(1);
        assert_eq!(
            store.insert(&op, &crate::conformance::created(&op)).await,
            Err(unavailable())
        );
        assert_eq!(inner.get(&op.id).await.unwrap(), None);
        // Reads are not writes: they pass.
        assert_eq!(store.get(&op.id).await.unwrap(), None);

        faults.clear();
        faults.inject(Calls::Only(Call::Insert), Fault::FailAfter(unavailable()));
        assert_eq!(
            store.insert(&op, &crate::conformance::created(&op)).await,
            Err(unavailable())
        );
        assert_eq!(inner.get(&op.id).await.unwrap(), Some(op.clone()));

        faults.clear();
        assert_eq!(store.get(&op.id).await.unwrap(), Some(op));
        assert_eq!(faults.injected(), 2);
    }

    #[tokio::test]
    async fn counted_faults_stop_after_their_count() {
        let (store, _, faults) = faulty();
        faults.inject_times(Calls::Reads, Fault::FailBefore(unavailable()), 3);
        let id = sample(1).id;
        for _ in 0..3 {
            assert_eq!(store.get(&id).await, Err(unavailable()));
        }
        assert_eq!(store.get(&id).await, Ok(None));
        assert_eq!(store.count_running().await, Ok(0));
    }

    #[tokio::test]
    async fn occasional_faults_hit_about_their_share() {
        let (store, _, faults) = faulty();
        faults.inject_sometimes(Calls::All, Fault::FailBefore(unavailable()), 0.25);
        let id = sample(1).id;
        let mut failed = 0;
        for _ in 0..4000 {
            if store.get(&id).await.is_err() {
                failed += 1;
            }
        }
        assert!((800..1200).contains(&failed), "{failed} of 4000 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_the_call() {
        let (store, _, faults) = faulty();
        faults.inject(
            Calls::Only(Call::Get),
            Fault::Latency(Duration::from_secs(3)),
        );
        let started = tokio::time::Instant::now();
        store.get(&sample(1).id).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        store.count_running().await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
