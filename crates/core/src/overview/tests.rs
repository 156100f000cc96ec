use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::Code;
use crate::operation::{NewOperation, State};

const SECOND: i64 = 1_000_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000 * SECOND + seconds * SECOND)
}

fn id(prefix: &str, n: u32) -> OperationId {
    OperationId::from_trusted(format!("{prefix}{n:017}"))
}

fn running(prefix: &str, n: u32, created: i64, modified: i64) -> Operation {
    let mut op = Operation::create(id(prefix, n), NewOperation::new("work"), "p", at(created));
    op.modified_at = at(modified);
    op
}

fn params() -> OverviewParams {
    OverviewParams {
        window: DEFAULT_WINDOW,
        stuck_after: Duration::from_secs(600),
        oldest: DEFAULT_OLDEST,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn parameters_out_of_range_are_refused_with_every_field() {
    assert!(params().validate().is_ok());
    let bad = OverviewParams {
        window: Duration::ZERO,
        stuck_after: MAX_WINDOW + secs(1),
        oldest: MAX_OLDEST + 1,
    };
    let error = bad.validate().unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let Error::InvalidArgument(violations) = error else {
        unreachable!()
    };
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["window", "stuck_after", "oldest"]);
}

#[test]
fn unset_parameters_take_their_defaults() {
    let params = OverviewParams::resolve(None, None, 0, secs(42)).unwrap();
    assert_eq!(
        params,
        OverviewParams {
            window: DEFAULT_WINDOW,
            stuck_after: secs(42),
            oldest: DEFAULT_OLDEST
        }
    );
    let asked = OverviewParams::resolve(Some(secs(60)), Some(secs(5)), 3, secs(42)).unwrap();
    assert_eq!(
        (asked.window, asked.stuck_after, asked.oldest),
        (secs(60), secs(5), 3)
    );
    for oldest in [-1, 101] {
        let error = OverviewParams::resolve(None, None, oldest, secs(42)).unwrap_err();
        assert_eq!(error.to_string(), "oldest: must be 0-100");
    }
    let error = OverviewParams::resolve(Some(Duration::ZERO), None, 0, secs(42)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "window: must be more than 0s and at most 7 days"
    );
}

#[test]
fn an_unchanged_operation_is_stuck_past_the_threshold_only() {
    let op = running("snp", 1, 0, 0);
    assert!(stuck_reasons(&op, at(600), secs(600), None).is_empty());
    assert_eq!(
        stuck_reasons(&op, at(601), secs(600), None),
        [StuckReason::Unchanged {
            quiet: secs(601),
            threshold: secs(600)
        }]
    );
}

#[test]
fn quiet_for_k_typical_gaps_is_stuck_and_the_floor_holds() {
    let op = running("cpy", 1, 0, 0);
    let gap = Duration::from_millis(500);
    // 10 x 500ms = 5s.
    assert!(stuck_reasons(&op, at(5), secs(600), Some(gap)).is_empty());
    assert_eq!(
        stuck_reasons(&op, at(6), secs(600), Some(gap)),
        [StuckReason::SlowerThanUsual {
            quiet: secs(6),
            typical_gap: gap,
            factor: STUCK_GAP_FACTOR,
            threshold: secs(5)
        }]
    );
    // A producer reporting every millisecond: 10ms is below the 1s floor.
    let fast = Duration::from_millis(1);
    assert_eq!(usual_gap_threshold(fast), STUCK_GAP_FLOOR);
    let quiet = Timestamp::from_unix_nanos(at(0).unix_nanos() + 999_000_000);
    assert!(stuck_reasons(&op, quiet, secs(600), Some(fast)).is_empty());
    assert_eq!(stuck_reasons(&op, at(2), secs(600), Some(fast)).len(), 1);
}

#[test]
fn a_lease_lapsing_soon_is_stuck_even_when_just_changed() {
    let mut op = running("rsz", 1, 0, 100);
    op.lease_expires_at = Some(at(120));
    assert_eq!(
        stuck_reasons(&op, at(100), secs(600), None),
        [StuckReason::LeaseLapsing {
            lapses_in: secs(20),
            warning: LEASE_WARNING
        }]
    );
    op.lease_expires_at = Some(at(131));
    assert!(stuck_reasons(&op, at(100), secs(600), None).is_empty());
    // Already lapsed (the reaper has not run yet): lapses in zero.
    op.lease_expires_at = Some(at(90));
    assert_eq!(
        stuck_reasons(&op, at(100), secs(600), None),
        [StuckReason::LeaseLapsing {
            lapses_in: Duration::ZERO,
            warning: LEASE_WARNING
        }]
    );
}

#[test]
fn a_done_operation_is_never_stuck() {
    let mut op = running("snp", 1, 0, 0);
    op.lease_expires_at = Some(at(1));
    op.state = State::Done {
        outcome: crate::Outcome::Error(crate::RpcStatus {
            code: 9,
            message: "busy".into(),
            details: Vec::new(),
        }),
        cancel_requested_at: None,
    };
    assert!(stuck_reasons(&op, at(10_000), secs(1), Some(Duration::from_millis(1))).is_empty());
}

#[test]
fn typical_gaps_are_the_median_of_reports_between_opsd_and_consumers_ignored() {
    let sample = |n: u32, events: &[(EventKind, i64)]| ProgressSample {
        id: id("cpy", n),
        events: events.iter().map(|(k, s)| (*k, at(*s))).collect(),
    };
    let samples = [
        sample(
            1,
            &[
                (EventKind::Created, 0),
                (EventKind::MetadataUpdated, 2),
                (EventKind::CancelRequested, 3),
                (EventKind::MetadataUpdated, 4),
                (EventKind::Completed, 10),
            ],
        ),
        // One event: no gap. Another prefix with a single gap: not enough.
        sample(2, &[(EventKind::Created, 0)]),
        ProgressSample {
            id: id("snp", 1),
            events: vec![(EventKind::Created, at(0)), (EventKind::Completed, at(5))],
        },
        // The reaper's completion is not a report.
        ProgressSample {
            id: id("rsz", 1),
            events: vec![
                (EventKind::Created, at(0)),
                (EventKind::LeaseTaken, at(1)),
                (EventKind::LeaseLapsed, at(100)),
            ],
        },
    ];
    let gaps = typical_gaps(&samples);
    // cpy: gaps 2, 2, 6 -> median 2.
    assert_eq!(gaps.get("cpy"), Some(&secs(2)));
    assert_eq!(gaps.get("snp"), None);
    assert_eq!(gaps.get("rsz"), None);
}

#[test]
fn the_quiet_bound_is_the_shortest_threshold_of_any_rule() {
    let mut gaps = BTreeMap::new();
    let now = at(1000);
    let query = overview_query(&params(), now, None, &gaps);
    assert_eq!(query.quiet_before, at(400));
    assert_eq!(query.cancel_requested_before, at(400));
    assert_eq!(query.done_since, at(1000 - 3600));
    assert_eq!(query.lease_before, at(1030));
    gaps.insert("cpy".to_owned(), secs(3));
    gaps.insert("snp".to_owned(), Duration::from_millis(1));
    let query = overview_query(&params(), now, None, &gaps);
    assert_eq!(query.quiet_before, at(999));
}

#[test]
fn failed_excludes_cancelled_and_percentiles_come_from_the_sample() {
    let q = overview_query(&params(), at(1000), None, &BTreeMap::new());
    let done =
        |prefix: &str, n: u32, took: i64, cancel: Option<i64>, code: Option<i32>| DoneSample {
            id: id(prefix, n),
            created_at: at(0),
            modified_at: at(took),
            cancel_requested_at: cancel.map(at),
            error_code: code,
        };
    let rows = OverviewRows {
        running: vec![RunningCount {
            prefix: "coo".into(),
            running: 3,
            cancel_overdue: 2,
        }],
        done: vec![
            DoneCount {
                prefix: "snp".into(),
                error_code: None,
                count: 3,
            },
            DoneCount {
                prefix: "snp".into(),
                error_code: Some(9),
                count: 1,
            },
            DoneCount {
                prefix: "snp".into(),
                error_code: Some(1),
                count: 2,
            },
        ],
        oldest: Vec::new(),
        candidates: Vec::new(),
        sample: vec![
            done("snp", 1, 10, None, None),
            done("snp", 2, 20, None, Some(9)),
            done("snp", 3, 30, Some(25), Some(1)),
            done("snp", 4, 40, Some(39), Some(1)),
        ],
    };
    let overview = assemble(&params(), at(1000), &BTreeMap::new(), &q, rows);
    assert_eq!(overview.running, 3);
    assert!(!overview.sampled);
    assert_eq!(overview.sample_size, 4);
    let [coo, snp] = overview.producers.as_slice() else {
        panic!("{:?}", overview.producers)
    };
    assert_eq!(
        (coo.prefix.as_str(), coo.running, coo.cancel_overdue),
        ("coo", 3, 2)
    );
    assert_eq!((snp.completed, snp.failed, snp.cancelled), (6, 1, 2));
    assert_eq!(snp.p50, Some(secs(20)));
    assert_eq!(snp.p99, Some(secs(40)));
    // Cancels honoured after 5s and 1s.
    assert_eq!(snp.cancel_p50, Some(secs(1)));
    assert_eq!(snp.sample_size, 4);
}

#[test]
fn stuck_operations_are_judged_by_their_own_prefix_and_listed_with_a_count() {
    let q = overview_query(&params(), at(1000), None, &BTreeMap::new());
    let mut gaps = BTreeMap::new();
    gaps.insert("cpy".to_owned(), Duration::from_millis(200));
    let rows = OverviewRows {
        candidates: vec![
            running("snp", 1, 0, 0),
            running("cpy", 1, 990, 990),
            running("snp", 2, 990, 990),
        ],
        ..OverviewRows::default()
    };
    let overview = assemble(&params(), at(1000), &gaps, &q, rows);
    assert_eq!(overview.stuck_count, 2);
    assert!(!overview.stuck_truncated);
    let ids: Vec<&str> = overview
        .stuck
        .iter()
        .map(|s| s.operation.id.as_str())
        .collect();
    assert_eq!(ids, [id("snp", 1).as_str(), id("cpy", 1).as_str()]);
    assert!(matches!(
        overview.stuck[0].reasons[0],
        StuckReason::Unchanged { .. }
    ));
    assert!(matches!(
        overview.stuck[1].reasons[0],
        StuckReason::SlowerThanUsual { .. }
    ));
}

#[test]
fn prefixes_are_the_first_three_characters() {
    assert_eq!(prefix_of(&id("fhm", 7)), "fhm");
    assert_eq!(Completion::of(None), Completion::Succeeded);
    assert_eq!(Completion::of(Some(1)), Completion::Cancelled);
    assert_eq!(Completion::of(Some(4)), Completion::Failed);
}

#[test]
fn percentiles_of_small_lists() {
    assert_eq!(percentile(&[], 0.5), None);
    let list = [secs(1), secs(2), secs(3), secs(4)];
    assert_eq!(percentile(&list, 0.5), Some(secs(2)));
    assert_eq!(percentile(&list, 0.99), Some(secs(4)));
    assert_eq!(percentile(&list, 0.0), Some(secs(1)));
    assert_eq!(percentile(&[secs(7)], 0.99), Some(secs(7)));
}

proptest! {
    #[test]
    fn a_percentile_is_a_member_bounded_and_monotone(
        mut values in proptest::collection::vec(0u64..1_000_000, 1..200),
        p in 0.0f64..=1.0,
        q in 0.0f64..=1.0,
    ) {
        values.sort_unstable();
        let sorted: Vec<Duration> = values.iter().map(|&v| Duration::from_micros(v)).collect();
        let at_p = percentile(&sorted, p).unwrap();
        prop_assert!(sorted.contains(&at_p));
        prop_assert!(sorted[0] <= at_p && at_p <= sorted[sorted.len() - 1]);
        // At least a share p of the values are at or below it.
        let below = sorted.iter().filter(|&&v| v <= at_p).count();
        prop_assert!(below as f64 >= p * sorted.len() as f64 - 1e-9);
        let (low, high) = if p <= q { (p, q) } else { (q, p) };
        prop_assert!(percentile(&sorted, low).unwrap() <= percentile(&sorted, high).unwrap());
        prop_assert_eq!(percentile(&sorted, 1.0).unwrap(), sorted[sorted.len() - 1]);
    }

    #[test]
    fn stuck_rules_fire_exactly_past_their_thresholds(
        quiet_ms in 0u64..2_000_000,
        gap_ms in proptest::option::of(0u64..100_000),
        stuck_after_s in 1u64..1000,
        lease_in_s in proptest::option::of(-100i64..100),
    ) {
        let now = at(10_000);
        let mut op = running("snp", 1, 0, 0);
        op.modified_at = Timestamp::from_unix_nanos(now.unix_nanos() - quiet_ms as i64 * 1_000_000);
        op.lease_expires_at = lease_in_s.map(|s| at(10_000 + s));
        let gap = gap_ms.map(Duration::from_millis);
        let reasons = stuck_reasons(&op, now, secs(stuck_after_s), gap);
        let quiet = Duration::from_millis(quiet_ms);
        let unchanged = reasons.iter().any(|r| matches!(r, StuckReason::Unchanged { .. }));
        prop_assert_eq!(unchanged, quiet > secs(stuck_after_s));
        let slower = reasons.iter().any(|r| matches!(r, StuckReason::SlowerThanUsual { .. }));
        prop_assert_eq!(slower, gap.is_some_and(|g| quiet > (g * STUCK_GAP_FACTOR).max(STUCK_GAP_FLOOR)));
        let lapsing = reasons.iter().any(|r| matches!(r, StuckReason::LeaseLapsing { .. }));
        prop_assert_eq!(lapsing, lease_in_s.is_some_and(|s| s <= 30));
        // Whatever fires is within what the store is asked for.
        let mut gaps = BTreeMap::new();
        if let Some(g) = gap { gaps.insert("snp".to_owned(), g); }
        let p = OverviewParams { stuck_after: secs(stuck_after_s), ..params() };
        let query = overview_query(&p, now, None, &gaps);
        if !reasons.is_empty() {
            prop_assert!(op.modified_at <= query.quiet_before
                || op.lease_expires_at.is_some_and(|l| l <= query.lease_before));
        }
    }
}
