//! The harness runs every scenario end to end and writes well-formed results;
//! it asserts no speed.

use std::path::Path;

use serde_json::Value;

fn positive(value: &Value, what: &str) {
    let number = value.as_f64().unwrap_or(-1.0);
    assert!(number > 0.0, "{what} should be positive: {value}");
}

#[test]
fn a_quick_run_of_every_scenario_writes_well_formed_results() {
    let bench = Path::new(env!("CARGO_BIN_EXE_opsd-bench"));
    let opsd = bench.with_file_name("opsd");
    assert!(
        opsd.exists(),
        "{} is missing: the workspace test build makes it (cargo test --workspace)",
        opsd.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(bench)
        .args([
            "--quick",
            "--connections",
            "2",
            "--concurrency",
            "8",
            "--opsd",
        ])
        .arg(&opsd)
        .arg("--out-dir")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        !dir.path().join("targets.json").exists(),
        "a quick run measures nothing, so it is held to no target"
    );
    let read = |scenario: &str| -> Value {
        let path = dir.path().join(format!("{scenario}.json"));
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(report["scenario"], scenario);
        assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
        report
    };

    for scenario in ["get", "get-postgres"] {
        let report = read(scenario);
        let rows = report["results"]["rows"].as_array().unwrap();
        assert!(rows.len() >= 3, "{scenario}: {rows:?}");
        for row in rows {
            assert!(row["calls"].as_u64().unwrap() > 0, "{row}");
            positive(&row["per_second"], "per_second");
            positive(&row["p50_us"], "p50_us");
        }
        // Every opsd row measured its own server's CPU and memory. CPU time
        // comes in clock ticks (10 ms), so a quick run on a busy machine may
        // see none: present and not negative is all that is certain.
        for row in rows
            .iter()
            .filter(|r| r["name"].as_str().unwrap().starts_with("opsd"))
        {
            let cpu = row["cpu_us_per_call"]
                .as_f64()
                .expect("cpu_us_per_call is a number");
            assert!(cpu.is_finite() && cpu >= 0.0, "cpu_us_per_call: {row}");
            positive(&row["peak_rss_bytes"], "peak_rss_bytes");
        }
    }

    let write = read("write");
    let tables = write["results"]["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    for table in tables {
        let rows = table["rows"].as_array().unwrap();
        assert_eq!(
            rows.len(),
            5,
            "sqlite × 2, memory and postgres × 2: {rows:?}"
        );
        for row in rows {
            positive(&row["per_second"], "operations per second");
        }
    }

    let watch = read("watch");
    let results = watch["results"]["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        2,
        "one process and two replicas: {results:?}"
    );
    for result in results {
        assert_eq!(result["notified"].as_u64().unwrap(), 200);
        positive(&result["notify_p99_us"], "notify_p99_us");
        positive(
            &result["rss_with_watchers_bytes"],
            "rss_with_watchers_bytes",
        );
    }

    let scale = read("scale");
    let stores = scale["results"]["stores"].as_array().unwrap();
    assert_eq!(stores.len(), 2);
    for store in stores {
        positive(&store["get"]["p99_us"], "get p99");
        positive(&store["list_first_page"]["p99_us"], "list p99");
    }
    let retention = &scale["results"]["retention"];
    assert!(retention["deleted"].as_f64().unwrap() >= retention["expired"].as_f64().unwrap());

    // Every reader received every event exactly once, or the run would have
    // failed; here only the shape of what it wrote (rates in a 300 ms window
    // on a busy machine may be zero).
    let feed = read("feed");
    let rows = feed["results"]["delivery"]["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        6,
        "no readers, 1 and 100, flat out and at a fixed rate: {rows:?}"
    );
    for row in rows {
        let events = row["events"].as_u64().unwrap();
        let readers = row["readers"].as_u64().unwrap();
        assert!(events > 0, "{row}");
        assert_eq!(row["delivered_events"].as_u64().unwrap(), events * readers);
        for key in [
            "committed_events_per_second",
            "per_reader_events_per_second",
            "p99_us",
            "store_reads_per_event_per_reader",
        ] {
            let value = row[key].as_f64().expect("a number");
            assert!(value.is_finite() && value >= 0.0, "{key}: {row}");
        }
    }
    let cost = &feed["results"]["write_cost"];
    let rows = cost["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "with events and without: {rows:?}");
    for row in rows {
        positive(&row["per_second"], "operations per second");
    }
    positive(
        &cost["throughput_ratio_with_to_without"],
        "throughput ratio",
    );

    let console = read("console");
    let rows = console["results"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "empty and filled store: {rows:?}");
    assert_eq!(rows[0]["operations"], 0);
    assert_eq!(rows[1]["operations"], 1000);
    for row in rows {
        assert!(row["loads"].as_u64().unwrap() > 0, "{row}");
        positive(&row["p50_ms"], "p50_ms");
        positive(&row["list_p50_ms"], "list_p50_ms");
        // The browser's part ran, or says why it could not.
        let browser = &row["browser"];
        match browser["skipped"].as_str() {
            Some(why) => {
                assert!(!why.is_empty(), "{row}");
                assert_ne!(
                    std::env::var("OPSD_REQUIRE_BROWSER").as_deref(),
                    Ok("1"),
                    "the browser was required: {why}"
                );
            }
            None => {
                assert_eq!(browser["loads"], 3, "{row}");
                positive(&browser["p50_ms"], "browser p50_ms");
                assert!(browser["p99_ms"].as_f64() >= browser["p50_ms"].as_f64());
                assert_eq!(browser["target_ms"], 300.0);
            }
        }
    }
}
