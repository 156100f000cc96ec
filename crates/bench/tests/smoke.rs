//! The harness runs end to end and writes well-formed results; it asserts no speed.

use std::path::Path;

#[test]
fn a_quick_run_writes_well_formed_results() {
    let bench = Path::new(env!("CARGO_BIN_EXE_opsd-bench"));
    let opsd = bench.with_file_name("opsd");
    assert!(
        opsd.exists(),
        "{} is missing: the workspace test build makes it (cargo test --workspace)",
        opsd.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.json");
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
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["scenario"], "get_hot_operations_embedded");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        assert!(result["requests"].as_u64().unwrap() > 0, "{result}");
        for key in ["rps", "p50_us", "p99_us", "cpu_us_per_call"] {
            assert!(result[key].as_f64().unwrap() >= 0.0, "{key}: {result}");
        }
        assert!(result["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
}
