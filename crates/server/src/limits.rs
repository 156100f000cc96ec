//! Limits on what one caller can make the server hold: the size of a request
//! message, HTTP/2 streams per connection, and open Watch streams and Wait
//! calls per connection and in total. Over a limit the caller gets an answer
//! naming it (RESOURCE_EXHAUSTED, or INVALID_ARGUMENT for a REST body), never
//! a silent queue or a dropped connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opsd_core::Error;
use opsd_service::Metrics;

/// The default of `--max-message-size`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;
/// The default of `--max-streams-per-connection`.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// The default of `--max-watchers-per-connection`: half the streams, so a
/// connection full of watchers still has room for its other calls.
pub const DEFAULT_MAX_WATCHERS_PER_CONNECTION: usize = 512;
/// The default of `--max-watchers`.
pub const DEFAULT_MAX_WATCHERS: usize = 50_000;
/// The default of `--max-feed-readers-per-connection`.
pub const DEFAULT_MAX_FEED_READERS_PER_CONNECTION: usize = 16;
/// The default of `--max-feed-readers`: each reads the store on every
/// commit, so far fewer than watchers (which share one read per change).
pub const DEFAULT_MAX_FEED_READERS: usize = 1_000;

/// The configured limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request: a gRPC message (before decoding, after
    /// decompression) or a REST body, in bytes.
    pub max_message_size: usize,
    /// HTTP/2 streams (calls in flight) one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Watch streams and Wait calls one connection may hold open at once.
    pub max_watchers_per_connection: usize,
    /// Watch streams and Wait calls the server holds open at once.
    pub max_watchers: usize,
    /// WatchOperations streams (gRPC and SSE) one connection may hold open.
    pub max_feed_readers_per_connection: usize,
    /// WatchOperations streams the server holds open at once.
    pub max_feed_readers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_watchers_per_connection: DEFAULT_MAX_WATCHERS_PER_CONNECTION,
            max_watchers: DEFAULT_MAX_WATCHERS,
            max_feed_readers_per_connection: DEFAULT_MAX_FEED_READERS_PER_CONNECTION,
            max_feed_readers: DEFAULT_MAX_FEED_READERS,
        }
    }
}

/// The open watchers and feed readers of one connection; the listener gives
/// every connection its own (a request extension).
#[derive(Clone, Debug, Default)]
pub struct ConnectionWatchers {
    watchers: Arc<AtomicUsize>,
    feed_readers: Arc<AtomicUsize>,
}

impl ConnectionWatchers {
    /// How many watchers this connection holds open now.
    pub fn open(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// What a [`WatcherLimits`] counts, and the names its refusals use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Watchers,
    FeedReaders,
}

impl Held {
    /// (metric label per connection, flag, metric label in total, flag, what, what else to do)
    fn names(self) -> [&'static str; 6] {
        match self {
            Held::Watchers => [
                "watchers_per_connection",
                "--max-watchers-per-connection",
                "watchers",
                "--max-watchers",
                "open Watch streams and Wait calls",
                "poll with Get",
            ],
            Held::FeedReaders => [
                "feed_readers_per_connection",
                "--max-feed-readers-per-connection",
                "feed_readers",
                "--max-feed-readers",
                "open WatchOperations streams",
                "share one feed reader between consumers",
            ],
        }
    }

    fn counter(self, connection: &ConnectionWatchers) -> &Arc<AtomicUsize> {
        match self {
            Held::Watchers => &connection.watchers,
            Held::FeedReaders => &connection.feed_readers,
        }
    }
}

/// Admits Watch streams and Wait calls while both the connection's and the
/// server's count are under their limits.
#[derive(Clone)]
pub struct WatcherLimits {
    held: Held,
    open: Arc<AtomicUsize>,
    max_total: usize,
    max_per_connection: usize,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for WatcherLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatcherLimits")
            .field("open", &self.open())
            .field("max_total", &self.max_total)
            .field("max_per_connection", &self.max_per_connection)
            .finish()
    }
}

impl WatcherLimits {
    pub fn new(limits: &Limits, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            held: Held::Watchers,
            open: Arc::default(),
            max_total: limits.max_watchers,
            max_per_connection: limits.max_watchers_per_connection,
            metrics,
        }
    }

    /// The limits of change feed readers (WatchOperations, gRPC and SSE).
    pub fn feed_readers(limits: &Limits, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            held: Held::FeedReaders,
            open: Arc::default(),
            max_total: limits.max_feed_readers,
            max_per_connection: limits.max_feed_readers_per_connection,
            metrics,
        }
    }

    /// How many are open in the whole server.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A permit to hold one watcher open; dropping it frees the place.
    /// Without a connection (a caller outside the listener) only the total counts.
    pub fn admit(&self, connection: Option<&ConnectionWatchers>) -> Result<WatchPermit, Error> {
        let [
            per_connection_label,
            per_connection_flag,
            total_label,
            total_flag,
            what,
            instead,
        ] = self.held.names();
        let connection = match connection {
            Some(connection) => {
                let counter = self.held.counter(connection);
                if !take(counter, self.max_per_connection) {
                    return Err(self.refuse(
                        per_connection_label,
                        format!(
                            "this connection already holds {} {what}, the limit ({per_connection_flag}); wait for one to end or open another connection",
                            self.max_per_connection
                        ),
                    ));
                }
                Some(Arc::clone(counter))
            }
            None => None,
        };
        if !take(&self.open, self.max_total) {
            if let Some(connection) = &connection {
                connection.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(self.refuse(
                total_label,
                format!(
                    "the server already holds {} {what}, the limit ({total_flag}); retry later or {instead}",
                    self.max_total
                ),
            ));
        }
        Ok(WatchPermit {
            total: Arc::clone(&self.open),
            connection,
        })
    }

    fn refuse(&self, limit: &str, message: String) -> Error {
        if let Some(metrics) = &self.metrics {
            metrics.limit_refused(limit);
        }
        Error::ResourceExhausted(message)
    }
}

/// Counts one more on `counter` unless it is at `max`.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < max).then_some(open + 1)
        })
        .is_ok()
}

/// One open watcher's place.
#[derive(Debug)]
pub struct WatchPermit {
    total: Arc<AtomicUsize>,
    connection: Option<Arc<AtomicUsize>>,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(connection) = &self.connection {
            connection.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A size as people read it: `4 MiB`, `512 KiB`, `1000 bytes`.
pub fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_connection: usize) -> WatcherLimits {
        WatcherLimits::new(
            &Limits {
                max_watchers: total,
                max_watchers_per_connection: per_connection,
                ..Limits::default()
            },
            None,
        )
    }

    #[test]
    fn a_connection_holds_at_most_its_share() {
        let limits = limits(10, 2);
        let connection = ConnectionWatchers::default();
        let first = limits.admit(Some(&connection)).unwrap();
        let _second = limits.admit(Some(&connection)).unwrap();
        let refused = limits.admit(Some(&connection)).unwrap_err();
        assert_eq!(refused.code(), opsd_core::Code::ResourceExhausted);
        assert!(
            refused
                .to_string()
                .contains("--max-watchers-per-connection"),
            "{refused}"
        );
        // Another connection is not held back, and a freed place is free again.
        let _other = limits.admit(Some(&ConnectionWatchers::default())).unwrap();
        drop(first);
        let _again = limits.admit(Some(&connection)).unwrap();
        assert_eq!(connection.open(), 2);
        assert_eq!(limits.open(), 3);
    }

    #[test]
    fn the_server_holds_at_most_the_total() {
        let limits = limits(2, 2);
        let connection = ConnectionWatchers::default();
        let _a = limits.admit(Some(&connection)).unwrap();
        let _b = limits.admit(None).unwrap();
        let refused = limits.admit(Some(&connection)).unwrap_err();
        assert!(refused.to_string().contains("--max-watchers)"), "{refused}");
        // The refused call gave its connection place back.
        assert_eq!(connection.open(), 1);
        assert_eq!(limits.open(), 2);
    }

    #[test]
    fn racing_callers_never_pass_the_limit() {
        let limits = limits(64, 64);
        let connection = ConnectionWatchers::default();
        let permits = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(permit) = limits.admit(Some(&connection)) {
                            permits.lock().unwrap().push(permit);
                        }
                    }
                });
            }
        });
        assert_eq!(permits.lock().unwrap().len(), 64);
        assert_eq!(connection.open(), 64);
        permits.lock().unwrap().clear();
        assert_eq!((connection.open(), limits.open()), (0, 0));
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(4 << 20), "4 MiB");
        assert_eq!(human_size(512 << 10), "512 KiB");
        assert_eq!(human_size(1000), "1000 bytes");
        assert_eq!(human_size((4 << 20) + 1), "4194305 bytes");
    }
}
