//! Time as opsd sees it: nanoseconds since the Unix epoch, read from an injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (UTC); covers the years 1678 to 2262.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Seconds and the non-negative nanosecond remainder, as `google.protobuf.Timestamp` has them.
    pub const fn seconds_and_nanos(self) -> (i64, i32) {
        (
            self.0.div_euclid(1_000_000_000),
            self.0.rem_euclid(1_000_000_000) as i32,
        )
    }

    /// The timestamp for seconds and nanos, or `None` when it does not fit.
    pub fn from_seconds_and_nanos(seconds: i64, nanos: i32) -> Option<Self> {
        if !(0..1_000_000_000).contains(&nanos) {
            return None;
        }
        let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        i64::try_from(total).ok().map(Self)
    }

    pub fn saturating_add(self, duration: Duration) -> Self {
        let nanos = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(nanos))
    }

    /// The smallest timestamp after `self`.
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

/// Where opsd reads the current time; injected so that tests can drive it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            nanos: Arc::new(AtomicI64::new(start.0)),
        }
    }

    pub fn set(&self, to: Timestamp) {
        self.nanos.store(to.0, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_nanos_round_trip_before_and_after_the_epoch() {
        for nanos in [
            0,
            1,
            999_999_999,
            1_000_000_000,
            -1,
            -1_000_000_001,
            i64::MAX,
            i64::MIN,
        ] {
            let t = Timestamp::from_unix_nanos(nanos);
            let (s, n) = t.seconds_and_nanos();
            assert!((0..1_000_000_000).contains(&n));
            assert_eq!(Timestamp::from_seconds_and_nanos(s, n), Some(t));
        }
    }

    #[test]
    fn out_of_range_timestamps_are_refused() {
        assert_eq!(Timestamp::from_seconds_and_nanos(i64::MAX, 0), None);
        assert_eq!(Timestamp::from_seconds_and_nanos(0, -1), None);
        assert_eq!(Timestamp::from_seconds_and_nanos(0, 1_000_000_000), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix_nanos(5));
        assert_eq!(clock.now(), Timestamp::from_unix_nanos(5));
        clock.clone().advance(Duration::from_nanos(10));
        assert_eq!(clock.now(), Timestamp::from_unix_nanos(15));
    }
}
