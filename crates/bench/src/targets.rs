//! The hot paths' targets, read from the scenarios of this run: each row
//! names what is measured, the value, the target and whether it is met.
//! A target whose scenario did not run (or ran without PostgreSQL) is
//! printed as not measured, never as met.

use serde_json::{Value, json};

/// One target: what it measures, the value it found (or why none), the
/// target's text and whether the value meets it.
struct Target {
    name: &'static str,
    target: &'static str,
    measured: Option<(String, bool)>,
}

/// The row of `rows` (a scenario's `rows` array) called `name`.
fn row<'a>(rows: &'a Value, name: &str) -> Option<&'a Value> {
    rows.as_array()?
        .iter()
        .find(|row| row["name"].as_str() == Some(name))
}

fn number(value: &Value, key: &str) -> Option<f64> {
    value.get(key)?.as_f64()
}

/// A Get row against its baseline: throughput ratio and extra CPU per call.
fn against_baseline(
    rows: &Value,
    name: &str,
    min_ratio: f64,
    max_extra_us: f64,
) -> Option<(String, bool)> {
    let baseline = row(rows, "baseline (constant reply)")?;
    let opsd = row(rows, name)?;
    let ratio = number(opsd, "per_second")? / number(baseline, "per_second")?.max(1e-9);
    let extra = number(opsd, "cpu_us_per_call")? - number(baseline, "cpu_us_per_call")?;
    Some((
        format!("{ratio:.2}×, {extra:+.1} µs"),
        ratio >= min_ratio && extra <= max_extra_us,
    ))
}

/// The targets, evaluated over the results of this run by scenario name.
pub fn evaluate(results: &[(&str, Value)]) -> Value {
    let of = |scenario: &str| {
        results
            .iter()
            .find(|(name, _)| *name == scenario)
            .map(|(_, results)| results)
    };
    let get = of("get").map(|r| &r["rows"]);
    let get_postgres = of("get-postgres");
    let write_64 = of("write").and_then(|r| {
        r["tables"]
            .as_array()?
            .iter()
            .find(|t| t["producers"].as_u64() == Some(64))
            .map(|t| &t["rows"])
    });
    let scale = of("scale");
    let feed = of("feed");
    let targets = [
        Target {
            name: "Get of a running operation, SQLite",
            target: "≥ 0.85× baseline, ≤ +5 µs",
            measured: get.and_then(|rows| {
                against_baseline(rows, "opsd sqlite, running operations", 0.85, 5.0)
            }),
        },
        Target {
            name: "Get of a done operation, SQLite",
            target: "≥ 0.9× baseline, ≤ +3 µs",
            measured: get
                .and_then(|rows| against_baseline(rows, "opsd sqlite, done operations", 0.9, 3.0)),
        },
        Target {
            name: "Get of a running operation, PostgreSQL",
            target: "≥ 1.0× pgbench -S",
            measured: get_postgres.and_then(|r| {
                let ratio = number(r, "ratio_running_to_pgbench")?;
                Some((format!("{ratio:.2}× pgbench -S"), ratio >= 1.0))
            }),
        },
        Target {
            name: "Get of a done operation, PostgreSQL",
            target: "≥ 0.9× baseline",
            measured: get_postgres.and_then(|r| {
                against_baseline(
                    &r["rows"],
                    "opsd postgres, done operations",
                    0.9,
                    f64::INFINITY,
                )
            }),
        },
        Target {
            name: "Create + Complete, SQLite, 64 producers",
            target: "≥ 10k ops/s and ≥ 8× one commit per write",
            measured: write_64.and_then(|rows| {
                let group = number(
                    row(rows, "sqlite, group commit (64 producers)")?,
                    "per_second",
                )?;
                let single = number(
                    row(rows, "sqlite, one commit per write (64 producers)")?,
                    "per_second",
                )?;
                let ratio = group / single.max(1e-9);
                Some((
                    format!("{group:.0} ops/s, {ratio:.2}×"),
                    group >= 10_000.0 && ratio >= 8.0,
                ))
            }),
        },
        Target {
            name: "Create + Complete, PostgreSQL, 64 producers",
            target: "≥ 5k ops/s",
            measured: write_64.and_then(|rows| {
                let rate = number(
                    row(rows, "postgres, 16 connections (64 producers)")?,
                    "per_second",
                )?;
                Some((format!("{rate:.0} ops/s"), rate >= 5_000.0))
            }),
        },
        Target {
            name: "Retention of 1M expired under 2,000 Get/s",
            target: "Get p99 ≤ 1.3×, ≥ 5k deleted/s",
            measured: scale.and_then(|r| {
                let retention = &r["retention"];
                let ratio = number(retention, "p99_ratio")?;
                let rate = number(retention, "deleted")?
                    / number(retention, "deletion_seconds")?.max(1e-9);
                Some((
                    format!("{ratio:.2}×, {rate:.0}/s"),
                    ratio <= 1.3 && rate >= 5_000.0,
                ))
            }),
        },
        Target {
            name: "Large store: List first page p99",
            target: "≤ 1.5× the 10k store",
            measured: scale.and_then(|r| {
                let ratio = number(r, "list_p99_ratio_large_to_small")?;
                Some((format!("{ratio:.2}×"), ratio <= 1.5))
            }),
        },
        Target {
            name: "The timeline's cost on writes",
            target: "≤ 15% of throughput",
            measured: feed.and_then(|r| {
                let ratio = number(&r["write_cost"], "throughput_ratio_with_to_without")?;
                let cost = (1.0 - ratio) * 100.0;
                Some((format!("{cost:.0}%"), cost <= 15.0))
            }),
        },
    ];
    println!("\nagainst the targets");
    println!("{:<46} {:<30} {:<44} ", "", "measured", "target");
    for target in &targets {
        let (measured, verdict) = match &target.measured {
            Some((value, true)) => (value.as_str(), "met"),
            Some((value, false)) => (value.as_str(), "NOT MET"),
            None => ("-", "not measured"),
        };
        println!(
            "{:<46} {:<30} {:<44} {verdict}",
            target.name, measured, target.target
        );
    }
    json!({
        "targets": targets
            .iter()
            .map(|t| json!({
                "name": t.name,
                "target": t.target,
                "measured": t.measured.as_ref().map(|(value, _)| value),
                "met": t.measured.as_ref().map(|(_, met)| met),
            }))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_rows(baseline: f64, running: f64, running_cpu: f64) -> Value {
        json!({ "rows": [
            { "name": "baseline (constant reply)", "per_second": baseline, "cpu_us_per_call": 10.0 },
            { "name": "opsd sqlite, running operations", "per_second": running, "cpu_us_per_call": running_cpu },
            { "name": "opsd sqlite, done operations", "per_second": baseline, "cpu_us_per_call": 14.0 },
        ]})
    }

    fn met(report: &Value, name: &str) -> Value {
        report["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["met"]
            .clone()
    }

    #[test]
    fn a_target_is_met_only_when_every_bound_holds() {
        let report = evaluate(&[("get", get_rows(100.0, 90.0, 14.0))]);
        assert_eq!(
            met(&report, "Get of a running operation, SQLite"),
            json!(true)
        );
        // +4 µs of CPU fails the done target's +3 µs, whatever the throughput.
        assert_eq!(
            met(&report, "Get of a done operation, SQLite"),
            json!(false)
        );

        let slow = evaluate(&[("get", get_rows(100.0, 80.0, 12.0))]);
        assert_eq!(
            met(&slow, "Get of a running operation, SQLite"),
            json!(false)
        );
    }

    #[test]
    fn scenarios_that_did_not_run_are_not_measured_not_met() {
        let report = evaluate(&[("get", get_rows(100.0, 90.0, 12.0))]);
        assert_eq!(
            met(&report, "Create + Complete, PostgreSQL, 64 producers"),
            Value::Null
        );
        assert_eq!(met(&report, "The timeline's cost on writes"), Value::Null);
    }

    #[test]
    fn the_write_target_needs_both_the_rate_and_the_ratio() {
        let write = |group: f64, single: f64| {
            json!({ "tables": [{ "producers": 64, "rows": [
                { "name": "sqlite, group commit (64 producers)", "per_second": group },
                { "name": "sqlite, one commit per write (64 producers)", "per_second": single },
            ]}]})
        };
        let name = "Create + Complete, SQLite, 64 producers";
        assert_eq!(
            met(&evaluate(&[("write", write(12_000.0, 1_000.0))]), name),
            json!(true)
        );
        assert_eq!(
            met(&evaluate(&[("write", write(12_000.0, 2_000.0))]), name),
            json!(false)
        );
        assert_eq!(
            met(&evaluate(&[("write", write(9_000.0, 1_000.0))]), name),
            json!(false)
        );
    }
}
