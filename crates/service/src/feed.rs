//! The change feed: the events of many operations, in commit order, from a
//! position on. The store is the source of truth; its change notifications
//! only say when to read again. A reader reads at its own pace, so a slow one
//! never holds writers back: it falls behind and catches up from the store.

use std::sync::Arc;
use std::time::Duration;

use opsd_core::{Error, Event, EventFilter};
use opsd_store::{Change, OperationStore};
use tokio::sync::broadcast;

/// The most events one read of the store returns.
pub const FEED_PAGE: usize = 256;

/// Reads again this often even without a notification: a notification lost
/// with a connection is followed by a resync, but a reader should never wait
/// on the notification path alone.
const QUIET_READ: Duration = Duration::from_secs(5);

/// One reader's place in the feed.
pub struct Feed {
    store: Arc<dyn OperationStore>,
    filter: EventFilter,
    /// The position of the last event handed out (or where the reader started).
    position: u64,
    changes: broadcast::Receiver<Change>,
    /// Read events not yet handed out, oldest first.
    pending: std::collections::VecDeque<Event>,
    /// The last read reached the end of the feed as it stood then: only a
    /// change announced since can bring more.
    at_end: bool,
}

impl Feed {
    /// From after `resume`, or from the feed's current end. A position that
    /// retention has deleted events above is OUT_OF_RANGE.
    pub(crate) async fn start(
        store: Arc<dyn OperationStore>,
        filter: EventFilter,
        resume: Option<u64>,
    ) -> Result<Self, Error> {
        // Subscribed before the first read, so no commit falls in between.
        let changes = store.subscribe();
        let bounds = store.feed_bounds().await?;
        let position = match resume {
            None => bounds.head,
            Some(position) => {
                check_kept(position, bounds.horizon)?;
                position
            }
        };
        Ok(Self {
            store,
            filter,
            position,
            changes,
            pending: Default::default(),
            at_end: false,
        })
    }

    /// The position the reader stands at: a resume token for "everything after this".
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next matching event; waits for one to be committed.
    pub async fn next(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.position = event.position;
                return Ok(event);
            }
            if self.at_end {
                self.wait_for_a_change().await?;
            }
            let events = self
                .store
                .read_feed(self.position, &self.filter, FEED_PAGE)
                .await?;
            self.at_end = events.len() < FEED_PAGE;
            self.pending.extend(events);
        }
    }

    /// Waits for one change, then takes every change already announced as
    /// well: each was committed before it was announced, so the one read that
    /// follows sees them all. (Reading once per announcement made a reader
    /// read the store once per event of a group commit.)
    async fn wait_for_a_change(&mut self) -> Result<(), Error> {
        let mut purged = match tokio::time::timeout(QUIET_READ, self.changes.recv()).await {
            Ok(Ok(change)) => matches!(change, Change::Purged { .. }),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => false,
            Ok(Err(broadcast::error::RecvError::Closed)) => return Err(stopped()),
        };
        loop {
            match self.changes.try_recv() {
                Ok(change) => purged |= matches!(change, Change::Purged { .. }),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => return Err(stopped()),
            }
        }
        if purged {
            // Retention may have taken events this reader has not read yet.
            let bounds = self.store.feed_bounds().await?;
            check_kept(self.position, bounds.horizon)?;
        }
        Ok(())
    }
}

fn stopped() -> Error {
    Error::Unavailable("the store stopped announcing changes".into())
}

fn check_kept(position: u64, horizon: u64) -> Result<(), Error> {
    if position < horizon {
        return Err(Error::OutOfRange(
            "the resume token is older than the events still kept (retention deleted events \
             after it): list the operations again, then follow the feed from now"
                .to_owned(),
        ));
    }
    Ok(())
}
