//! The overview: what runs, what is stuck, and how each producer (id prefix)
//! fared in a recent window. The rules live here; a store only supplies rows
//! and counts ([`ProgressQuery`] and [`OverviewQuery`] say which), and the
//! service calls [`progress_query`], [`typical_gaps`], [`overview_query`] and
//! [`assemble`] in that order.
//!
//! A running operation is stuck when any of three rules fires:
//!
//! - **unchanged**: nothing changed it for longer than the stuck threshold
//!   (`--stuck-after`, or the request's own);
//! - **slower than usual**: nothing changed it for longer than
//!   [`STUCK_GAP_FACTOR`] times the typical gap between its producer's
//!   reports, and at least [`STUCK_GAP_FLOOR`]; the typical gap is the median
//!   gap between consecutive reports in the timelines of that prefix's most
//!   recently changed operations (at least [`MIN_GAPS`] gaps);
//! - **lease lapsing**: its lease lapses within [`LEASE_WARNING`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::Error;
use crate::event::EventKind;
use crate::id::{OperationId, PREFIX_LEN};
use crate::operation::{CANCELLED_CODE, Operation};
use crate::time::Timestamp;
use crate::validate::Violations;

/// The window of the per-producer numbers when the request names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// The longest window a request may ask for.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stuck threshold a server uses when not configured otherwise.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(600);
/// How many oldest running operations an overview lists unless asked otherwise.
pub const DEFAULT_OLDEST: usize = 10;
pub const MAX_OLDEST: usize = 100;
/// k: quiet for this many typical gaps is stuck.
pub const STUCK_GAP_FACTOR: u32 = 10;
/// The slower-than-usual rule never fires below this.
pub const STUCK_GAP_FLOOR: Duration = Duration::from_secs(1);
/// A lease lapsing within this is stuck.
pub const LEASE_WARNING: Duration = Duration::from_secs(30);
/// Running operations the store returns as stuck candidates, quietest first.
pub const STUCK_CANDIDATES: usize = 1000;
/// Stuck operations an overview lists (the count covers every candidate).
pub const MAX_STUCK_LISTED: usize = 100;
/// Done operations (most recently done first) the percentiles are computed over.
pub const DURATION_SAMPLE: usize = 10_000;
/// Operations per prefix whose timelines give the typical gap.
pub const GAP_OPERATIONS_PER_PREFIX: usize = 20;
/// Events read per such timeline (its first ones).
pub const GAP_EVENTS_PER_OPERATION: usize = 100;
/// Fewer gaps than this give no typical gap.
pub const MIN_GAPS: usize = 2;

/// What a caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverviewParams {
    /// The per-producer numbers cover operations done within this.
    pub window: Duration,
    /// The "unchanged" rule's threshold, and the age past which an unanswered
    /// cancel request counts as ignored.
    pub stuck_after: Duration,
    /// How many oldest running operations to list.
    pub oldest: usize,
}

impl OverviewParams {
    /// A request's parameters with the defaults filled in: no window is
    /// [`DEFAULT_WINDOW`], no stuck threshold is the server's, `oldest` 0 is
    /// [`DEFAULT_OLDEST`]; then validated.
    pub fn resolve(
        window: Option<Duration>,
        stuck_after: Option<Duration>,
        oldest: i32,
        server_stuck_after: Duration,
    ) -> Result<Self, Error> {
        let params = Self {
            window: window.unwrap_or(DEFAULT_WINDOW),
            stuck_after: stuck_after.unwrap_or(server_stuck_after),
            oldest: match usize::try_from(oldest) {
                Ok(0) => DEFAULT_OLDEST,
                Ok(n) => n,
                Err(_) => return Err(Error::invalid_argument("oldest", "must be 0-100")),
            },
        };
        params.validate()?;
        Ok(params)
    }

    pub fn validate(&self) -> Result<(), Error> {
        let mut v = Violations::default();
        if self.window.is_zero() || self.window > MAX_WINDOW {
            v.add("window", "must be more than 0s and at most 7 days");
        }
        if self.stuck_after.is_zero() || self.stuck_after > MAX_WINDOW {
            v.add("stuck_after", "must be more than 0s and at most 7 days");
        }
        if self.oldest > MAX_OLDEST {
            v.add("oldest", "must be 0-100");
        }
        v.into_result()
    }
}

/// Which timelines the store reads for the typical gaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressQuery {
    /// Only these scopes (the caller's); `None` for every scope.
    pub scopes: Option<BTreeSet<String>>,
    /// Running operations, and done ones last changed at or after this.
    pub changed_since: Timestamp,
    /// The most recently changed operations of each id prefix.
    pub operations_per_prefix: usize,
    /// The first events of each, by sequence.
    pub events_per_operation: usize,
}

/// One timeline as the store read it: its events' kinds and times, by sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressSample {
    pub id: OperationId,
    pub events: Vec<(EventKind, Timestamp)>,
}

/// What the store counts and reads for an overview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverviewQuery {
    pub scopes: Option<BTreeSet<String>>,
    /// Done operations last changed at or after this are in the window.
    pub done_since: Timestamp,
    /// Running operations whose cancel request is at or before this are counted.
    pub cancel_requested_before: Timestamp,
    /// Stuck candidates: running, last changed at or before this …
    pub quiet_before: Timestamp,
    /// … or with a lease lapsing at or before this.
    pub lease_before: Timestamp,
    /// Oldest running operations, by creation.
    pub oldest: usize,
    /// At most this many candidates, least recently changed first.
    pub candidates: usize,
    /// At most this many done operations of the window, most recently done first.
    pub sample: usize,
}

/// Running operations of one id prefix (exact counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningCount {
    pub prefix: String,
    pub running: u64,
    /// Of them, those whose cancel request is at or before `cancel_requested_before`.
    pub cancel_overdue: u64,
}

/// Done operations of one id prefix in the window with one error code
/// (`None`: a response), exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoneCount {
    pub prefix: String,
    pub error_code: Option<i32>,
    pub count: u64,
}

/// What the percentiles need of a done operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoneSample {
    pub id: OperationId,
    pub created_at: Timestamp,
    /// When it became done.
    pub modified_at: Timestamp,
    pub cancel_requested_at: Option<Timestamp>,
    pub error_code: Option<i32>,
}

/// The store's answer to an [`OverviewQuery`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverviewRows {
    pub running: Vec<RunningCount>,
    pub done: Vec<DoneCount>,
    /// Running, oldest first by `(created_at, id)`.
    pub oldest: Vec<Operation>,
    /// Running and quiet or with a lapsing lease, least recently changed first.
    pub candidates: Vec<Operation>,
    pub sample: Vec<DoneSample>,
}

/// Why a running operation is stuck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StuckReason {
    /// Unchanged for `quiet`, longer than the stuck threshold.
    Unchanged {
        quiet: Duration,
        threshold: Duration,
    },
    /// Unchanged for `quiet`, longer than `factor` × its producer's typical
    /// gap (`threshold`, at least the floor).
    SlowerThanUsual {
        quiet: Duration,
        typical_gap: Duration,
        factor: u32,
        threshold: Duration,
    },
    /// The lease lapses in `lapses_in` (zero when already lapsed), within `warning`.
    LeaseLapsing {
        lapses_in: Duration,
        warning: Duration,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckOperation {
    pub operation: Operation,
    pub reasons: Vec<StuckReason>,
}

/// How one producer (id prefix) fared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    pub prefix: String,
    pub running: u64,
    /// Done in the window: every outcome.
    pub completed: u64,
    /// Of them, done with an error other than CANCELLED.
    pub failed: u64,
    /// Of them, done with CANCELLED.
    pub cancelled: u64,
    /// Time from creation to done, over the sample.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Time from cancel request to done, over the sample's cancelled ones.
    pub cancel_p50: Option<Duration>,
    /// Running with a cancel request older than the stuck threshold.
    pub cancel_overdue: u64,
    /// The typical gap between its reports, when known.
    pub typical_gap: Option<Duration>,
    /// Done operations of the window the percentiles were computed over.
    pub sample_size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overview {
    pub now: Timestamp,
    pub window: Duration,
    pub stuck_after: Duration,
    pub running: u64,
    pub oldest: Vec<Operation>,
    /// Stuck operations, least recently changed first (at most [`MAX_STUCK_LISTED`]).
    pub stuck: Vec<StuckOperation>,
    /// Stuck operations found among the candidates.
    pub stuck_count: u64,
    /// The candidates were cut at their limit: more may be stuck.
    pub stuck_truncated: bool,
    /// By prefix.
    pub producers: Vec<ProducerStats>,
    /// The percentiles cover only the most recently done operations of the window.
    pub sampled: bool,
    pub sample_size: u64,
}

/// How a done operation ended, for the per-producer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    Succeeded,
    /// An error other than CANCELLED.
    Failed,
    Cancelled,
}

impl Completion {
    /// From a done operation's error code (`None`: a response).
    pub fn of(error_code: Option<i32>) -> Self {
        match error_code {
            None => Completion::Succeeded,
            Some(CANCELLED_CODE) => Completion::Cancelled,
            Some(_) => Completion::Failed,
        }
    }
}

/// The producer an id belongs to: its first three characters.
pub fn prefix_of(id: &OperationId) -> &str {
    id.as_str().get(..PREFIX_LEN).unwrap_or(id.as_str())
}

/// The nearest-rank percentile (`p` in 0..=1) of sorted values: the smallest
/// value with at least `p` of all at or below it. `None` for no values.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Whether an event is the producer's own report of progress: what the
/// typical gap is measured between. Cancel requests (a consumer's) and the
/// reaper's completions are not.
pub fn is_report(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Created
            | EventKind::MetadataUpdated
            | EventKind::LeaseTaken
            | EventKind::FailureReported
            | EventKind::Completed
    )
}

fn between(from: Timestamp, to: Timestamp) -> Duration {
    Duration::from_nanos(
        u64::try_from(to.unix_nanos().saturating_sub(from.unix_nanos())).unwrap_or(0),
    )
}

fn before(now: Timestamp, by: Duration) -> Timestamp {
    let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
    Timestamp::from_unix_nanos(now.unix_nanos().saturating_sub(nanos))
}

/// The timelines to read for the typical gaps: recently changed operations
/// (running, or done within the window) of the caller's scopes.
pub fn progress_query(
    params: &OverviewParams,
    now: Timestamp,
    scopes: Option<BTreeSet<String>>,
) -> ProgressQuery {
    ProgressQuery {
        scopes,
        changed_since: before(now, params.window),
        operations_per_prefix: GAP_OPERATIONS_PER_PREFIX,
        events_per_operation: GAP_EVENTS_PER_OPERATION,
    }
}

/// The typical gap per prefix: the median of the gaps between consecutive
/// reports within each sampled timeline; a prefix with fewer than
/// [`MIN_GAPS`] gaps has none.
pub fn typical_gaps(samples: &[ProgressSample]) -> BTreeMap<String, Duration> {
    let mut gaps: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for sample in samples {
        let times: Vec<Timestamp> = sample
            .events
            .iter()
            .filter(|(kind, _)| is_report(*kind))
            .map(|(_, at)| *at)
            .collect();
        let list = gaps.entry(prefix_of(&sample.id).to_owned()).or_default();
        list.extend(times.windows(2).map(|pair| between(pair[0], pair[1])));
    }
    gaps.into_iter()
        .filter(|(_, list)| list.len() >= MIN_GAPS)
        .filter_map(|(prefix, mut list)| {
            list.sort_unstable();
            percentile(&list, 0.5).map(|median| (prefix, median))
        })
        .collect()
}

/// How long an operation of a prefix with this typical gap may stay quiet
/// before the slower-than-usual rule fires.
pub fn usual_gap_threshold(typical_gap: Duration) -> Duration {
    typical_gap
        .saturating_mul(STUCK_GAP_FACTOR)
        .max(STUCK_GAP_FLOOR)
}

/// What the store must count and read, given the typical gaps: the quiet
/// bound is the shortest threshold any rule may use, so every stuck
/// operation is a candidate.
pub fn overview_query(
    params: &OverviewParams,
    now: Timestamp,
    scopes: Option<BTreeSet<String>>,
    gaps: &BTreeMap<String, Duration>,
) -> OverviewQuery {
    let shortest = gaps
        .values()
        .map(|gap| usual_gap_threshold(*gap))
        .fold(params.stuck_after, Duration::min);
    OverviewQuery {
        scopes,
        done_since: before(now, params.window),
        cancel_requested_before: before(now, params.stuck_after),
        quiet_before: before(now, shortest),
        lease_before: now.saturating_add(LEASE_WARNING),
        oldest: params.oldest,
        candidates: STUCK_CANDIDATES,
        sample: DURATION_SAMPLE,
    }
}

/// Why a running operation is stuck at `now` (empty: it is not). A done
/// operation is never stuck.
pub fn stuck_reasons(
    op: &Operation,
    now: Timestamp,
    stuck_after: Duration,
    typical_gap: Option<Duration>,
) -> Vec<StuckReason> {
    let mut reasons = Vec::new();
    if op.is_done() {
        return reasons;
    }
    let quiet = between(op.modified_at, now);
    if quiet > stuck_after {
        reasons.push(StuckReason::Unchanged {
            quiet,
            threshold: stuck_after,
        });
    }
    if let Some(typical_gap) = typical_gap {
        let threshold = usual_gap_threshold(typical_gap);
        if quiet > threshold {
            reasons.push(StuckReason::SlowerThanUsual {
                quiet,
                typical_gap,
                factor: STUCK_GAP_FACTOR,
                threshold,
            });
        }
    }
    if let Some(lease) = op.lease_expires_at
        && lease <= now.saturating_add(LEASE_WARNING)
    {
        reasons.push(StuckReason::LeaseLapsing {
            lapses_in: between(now, lease),
            warning: LEASE_WARNING,
        });
    }
    reasons
}

/// The overview from the store's rows.
pub fn assemble(
    params: &OverviewParams,
    now: Timestamp,
    gaps: &BTreeMap<String, Duration>,
    query: &OverviewQuery,
    rows: OverviewRows,
) -> Overview {
    let mut producers: BTreeMap<String, ProducerStats> = BTreeMap::new();
    fn stats<'a>(
        producers: &'a mut BTreeMap<String, ProducerStats>,
        prefix: &str,
    ) -> &'a mut ProducerStats {
        producers
            .entry(prefix.to_owned())
            .or_insert_with(|| ProducerStats {
                prefix: prefix.to_owned(),
                ..ProducerStats::default()
            })
    }
    let mut running = 0;
    for count in &rows.running {
        let s = stats(&mut producers, &count.prefix);
        s.running += count.running;
        s.cancel_overdue += count.cancel_overdue;
        running += count.running;
    }
    for count in &rows.done {
        let s = stats(&mut producers, &count.prefix);
        s.completed += count.count;
        match Completion::of(count.error_code) {
            Completion::Succeeded => {}
            Completion::Failed => s.failed += count.count,
            Completion::Cancelled => s.cancelled += count.count,
        }
    }
    let mut times: BTreeMap<String, (Vec<Duration>, Vec<Duration>)> = BTreeMap::new();
    for done in &rows.sample {
        let (to_done, to_cancel) = times.entry(prefix_of(&done.id).to_owned()).or_default();
        to_done.push(between(done.created_at, done.modified_at));
        if let Some(requested) = done.cancel_requested_at {
            to_cancel.push(between(requested, done.modified_at));
        }
    }
    for (prefix, (mut to_done, mut to_cancel)) in times {
        to_done.sort_unstable();
        to_cancel.sort_unstable();
        let s = stats(&mut producers, &prefix);
        s.p50 = percentile(&to_done, 0.5);
        s.p99 = percentile(&to_done, 0.99);
        s.cancel_p50 = percentile(&to_cancel, 0.5);
        s.sample_size = to_done.len() as u64;
    }
    for (prefix, gap) in gaps {
        if let Some(s) = producers.get_mut(prefix) {
            s.typical_gap = Some(*gap);
        }
    }
    let stuck_truncated = rows.candidates.len() >= query.candidates;
    let mut stuck = Vec::new();
    let mut stuck_count = 0;
    for op in rows.candidates {
        let gap = gaps.get(prefix_of(&op.id)).copied();
        let reasons = stuck_reasons(&op, now, params.stuck_after, gap);
        if reasons.is_empty() {
            continue;
        }
        stuck_count += 1;
        if stuck.len() < MAX_STUCK_LISTED {
            stuck.push(StuckOperation {
                operation: op,
                reasons,
            });
        }
    }
    Overview {
        now,
        window: params.window,
        stuck_after: params.stuck_after,
        running,
        oldest: rows.oldest,
        stuck,
        stuck_count,
        stuck_truncated,
        producers: producers.into_values().collect(),
        sampled: rows.sample.len() >= query.sample,
        sample_size: rows.sample.len() as u64,
    }
}

#[cfg(test)]
mod tests;
