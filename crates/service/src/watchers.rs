//! Fan-out of operation changes to waiters and watchers.
//!
//! One task per process reads the store's change stream. For each operation
//! that somebody watches it re-reads the operation once and publishes it on a
//! `tokio::sync::watch` channel shared by all of that operation's watchers:
//! a change costs one store read however many watch it, idle watchers cost
//! nothing, and a slow watcher only ever sees the latest state (a watch
//! channel keeps one value) instead of holding writers back. Starting to
//! watch reads the store, like a Get, so that no watcher starts behind; the
//! watchers that arrive together share that read (see [`SharedReads`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsd_core::{Error, Operation, OperationId};
use opsd_store::{Change, OperationStore, StoreError};
use tokio::sync::{broadcast, watch};

/// The longest a watcher waits between re-reads while the store fails, so
/// that it hears of changes within about a second of the store's return.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

pub struct Watchers {
    store: Arc<dyn OperationStore>,
    entries: Mutex<HashMap<OperationId, Entry>>,
    /// Per operation being read for new watchers: the shared reads and how
    /// many callers use them.
    reads: Mutex<HashMap<OperationId, (Arc<SharedReads>, usize)>>,
}

/// Store reads of one operation, shared by callers: a caller may use a read
/// only if it began after the caller arrived (so it reflects everything
/// acknowledged before the call), and one read serves every caller that
/// arrived before it began. Thousands of watchers starting at once cost a
/// few reads, one at a time, instead of one each.
#[derive(Default)]
struct SharedReads {
    /// Callers so far; a read records the count when it begins.
    arrivals: AtomicU64,
    /// The last read: the arrivals it covers, and what it found.
    last: tokio::sync::Mutex<Option<(u64, Found)>>,
}

/// What a store read of one operation found.
type Found = Result<Option<Operation>, StoreError>;

struct Entry {
    latest: watch::Sender<Arc<Operation>>,
    watchers: usize,
}

/// One watcher's view of an operation; unregisters when dropped.
pub struct Watching {
    receiver: watch::Receiver<Arc<Operation>>,
    id: OperationId,
    watchers: Arc<Watchers>,
}

impl Watching {
    /// The latest known state.
    pub fn current(&self) -> Arc<Operation> {
        Arc::clone(&self.receiver.borrow())
    }

    /// Waits for a state newer than the last one returned by `changed` or
    /// `current_and_mark_seen`, and returns it.
    pub async fn changed(&mut self) -> Arc<Operation> {
        // The sender lives as long as any watcher of this id, so this only fails if
        // the entry was torn down, which cannot happen while `self` is registered.
        let _ = self.receiver.changed().await;
        Arc::clone(&self.receiver.borrow_and_update())
    }

    /// The latest state, marking it seen so that `changed` waits for a newer one.
    pub fn current_and_mark_seen(&mut self) -> Arc<Operation> {
        Arc::clone(&self.receiver.borrow_and_update())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut entries = self.watchers.lock();
        if let Some(entry) = entries.get_mut(&self.id) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                entries.remove(&self.id);
            }
        }
    }
}

impl Watchers {
    /// Starts the fan-out task; it ends when the store's change stream closes
    /// or the returned handle is aborted.
    pub fn start(store: Arc<dyn OperationStore>) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let watchers = Arc::new(Self {
            store: Arc::clone(&store),
            entries: Mutex::default(),
            reads: Mutex::default(),
        });
        let changes = store.subscribe();
        let task = tokio::spawn(Arc::clone(&watchers).dispatch(changes));
        (watchers, task)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OperationId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many watchers (waiters included) are registered right now.
    pub fn active(&self) -> usize {
        self.lock().values().map(|e| e.watchers).sum()
    }

    /// Starts watching an operation; NOT_FOUND when it does not exist.
    ///
    /// The first state is read from the store even when others already watch
    /// the operation: their shared state may not yet reflect a change that was
    /// acknowledged before this call began (the dispatcher re-reads after the
    /// commit, and on a shared database another replica's notification takes
    /// its time), and a watcher must never start from a state older than one
    /// a call that ended before it already returned.
    pub async fn watch(self: &Arc<Self>, id: &OperationId) -> Result<Watching, Error> {
        let op = self
            .fresh_read(id)
            .await?
            .ok_or_else(|| Error::NotFound { id: id.to_string() })?;
        let (receiver, joined) = {
            let mut entries = self.lock();
            match entries.get_mut(id) {
                Some(entry) => {
                    entry.watchers += 1;
                    publish(&entry.latest, op);
                    (entry.latest.subscribe(), true)
                }
                None => {
                    let (latest, receiver) = watch::channel(Arc::new(op));
                    entries.insert(
                        id.clone(),
                        Entry {
                            latest,
                            watchers: 1,
                        },
                    );
                    (receiver, false)
                }
            }
        };
        let watching = self.watching(id, receiver);
        if !joined {
            // A change committed between the read above and the registration
            // was dispatched to nobody: read once more now that we are registered.
            self.refresh(id.clone()).await;
        }
        Ok(watching)
    }

    /// The operation as stored at some moment after this call began, from a
    /// read shared with the callers that arrived before that read began.
    async fn fresh_read(&self, id: &OperationId) -> Found {
        let (shared, arrival) = {
            let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            let (shared, users) = reads.entry(id.clone()).or_default();
            *users += 1;
            let arrival = shared.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
            (Arc::clone(shared), arrival)
        };
        // Leaves the map when the last user is done (or dropped mid-read).
        let _user = ReadUser { watchers: self, id };
        let mut last = shared.last.lock().await;
        if let Some((covered, found)) = last.as_ref()
            && *covered >= arrival
        {
            return found.clone();
        }
        let covered = shared.arrivals.load(Ordering::SeqCst);
        let found = self.store.get(id).await;
        *last = Some((covered, found.clone()));
        found
    }

    fn watching(
        self: &Arc<Self>,
        id: &OperationId,
        receiver: watch::Receiver<Arc<Operation>>,
    ) -> Watching {
        Watching {
            receiver,
            id: id.clone(),
            watchers: Arc::clone(self),
        }
    }

    async fn dispatch(self: Arc<Self>, mut changes: broadcast::Receiver<Change>) {
        loop {
            match changes.recv().await {
                Ok(Change::Committed { id, version }) => {
                    let stale = self
                        .lock()
                        .get(&id)
                        .is_some_and(|e| e.latest.borrow().version < version);
                    if stale {
                        tokio::spawn(Arc::clone(&self).refresh_with_retries(id));
                    }
                }
                // Retention deletes only done operations, which nobody waits on.
                Ok(Change::Purged { .. }) => {}
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let watched: Vec<OperationId> = self.lock().keys().cloned().collect();
                    tracing::debug!(
                        watched = watched.len(),
                        "re-reading every watched operation"
                    );
                    for id in watched {
                        tokio::spawn(Arc::clone(&self).refresh_with_retries(id));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }

    /// Re-reads one operation for its watchers; returns false if the read failed.
    async fn refresh(&self, id: OperationId) -> bool {
        match self.store.get(&id).await {
            Ok(Some(op)) => {
                if let Some(entry) = self.lock().get(&id) {
                    publish(&entry.latest, op);
                }
                true
            }
            // Deleted by retention: watchers keep the last state they saw.
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(operation_id = %id, error = %e, "cannot re-read a watched operation");
                false
            }
        }
    }

    /// A store outage must not leave watchers on a stale state for good, nor
    /// for long once the store is back: retries back off to at most
    /// [`MAX_RETRY_DELAY`] apart.
    async fn refresh_with_retries(self: Arc<Self>, id: OperationId) {
        let mut delay = Duration::from_millis(100);
        while !self.refresh(id.clone()).await {
            if !self.lock().contains_key(&id) {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}

/// One caller of [`Watchers::fresh_read`]; the last one out removes the entry.
struct ReadUser<'a> {
    watchers: &'a Watchers,
    id: &'a OperationId,
}

impl Drop for ReadUser<'_> {
    fn drop(&mut self) {
        let mut reads = self
            .watchers
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, users)) = reads.get_mut(self.id) {
            *users -= 1;
            if *users == 0 {
                reads.remove(self.id);
            }
        }
    }
}

/// Replaces the published state only with a newer version.
fn publish(latest: &watch::Sender<Arc<Operation>>, op: Operation) {
    latest.send_if_modified(|current| {
        if op.version > current.version {
            *current = Arc::new(op);
            true
        } else {
            false
        }
    });
}
