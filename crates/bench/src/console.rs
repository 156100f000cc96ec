//! The web console's first page: what a browser fetches to show
//! `/console` (the page, its script and style, its settings, `/v1/caller`,
//! then the first page of `GET /v1/operations`), timed end to end, over a
//! store of many operations against the same server with an empty store.
//!
//! The requests follow the browser's critical path: the page, then its
//! script and style together, then the script's calls one after the other.
//! Each request opens its own connection (a browser would reuse one), so
//! the times are an upper bound. Rendering in the browser is not included.
//!
//! Then the browser's part: `console_browser.py` loads `/console` in a real
//! Chromium (`/usr/bin/chromium` or `OPSD_CHROMIUM`, driven by Playwright from
//! `scripts/console-venv`) and times navigation start to the first page's
//! rows being in the document, against [`BROWSER_TARGET_MS`]. Without a
//! Chromium or the venv the row says why instead (`OPSD_REQUIRE_BROWSER=1`
//! makes that an error).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opsd_client::{Completion, NewOperation};
use opsd_proto::opsd::v1 as pb;
use serde_json::{Value, json};

use crate::harness::{self, Binaries, Pinning, Plan, Server};

pub struct Sizes {
    /// Operations in the store of the measured row.
    pub operations: usize,
    /// Page loads timed per repetition.
    pub loads: usize,
    /// Page loads timed in the browser, per store (after two unmeasured ones).
    pub browser_loads: usize,
}

/// What a first page in the browser should take at most, navigation start to rows.
pub const BROWSER_TARGET_MS: f64 = 300.0;

pub async fn run(
    plan: &Plan,
    sizes: &Sizes,
    bins: &Binaries,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    let browser = Browser::find();
    if let Err(why) = &browser {
        println!("console: browser part SKIPPED: {why}");
        anyhow::ensure!(
            std::env::var("OPSD_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "OPSD_REQUIRE_BROWSER=1 but {why}"
        );
    }
    for (name, operations) in [
        ("empty store".to_owned(), 0),
        (
            format!("{} operations", thousands(sizes.operations)),
            sizes.operations,
        ),
    ] {
        let data = tempfile::tempdir()?;
        let opsd = Server::start(bins.opsd(data.path(), &[]))?;
        pinning.server(opsd.pid());
        fill(&opsd, operations).await?;
        // Warm-up: the first loads pay for caches and connections.
        let warm_until = Instant::now() + plan.warmup;
        while Instant::now() < warm_until {
            first_page(&opsd.endpoint, operations).await?;
        }
        let mut medians = Vec::new();
        let mut all = Vec::new();
        let mut list = Vec::new();
        for _ in 0..plan.repetitions {
            let mut times = Vec::new();
            for _ in 0..sizes.loads {
                let (total, list_only) = first_page(&opsd.endpoint, operations).await?;
                times.push(total);
                list.push(list_only);
            }
            times.sort();
            medians.push(ms(times[times.len() / 2]));
            all.extend(times);
        }
        all.sort();
        list.sort();
        let search = search_misses(&opsd.endpoint, sizes.loads).await?;
        let in_browser = match &browser {
            Ok(browser) => {
                let times = browser.first_pages(
                    &opsd.endpoint,
                    sizes.browser_loads,
                    operations.min(100),
                )?;
                browser_summary(&browser.chromium, times)
            }
            Err(why) => json!({ "skipped": why }),
        };
        rows.push(json!({
            "name": name,
            "operations": operations,
            "loads": all.len(),
            "p50_ms": harness::median(medians),
            "p99_ms": ms(all[((all.len() - 1) as f64 * 0.99).round() as usize]),
            "max_ms": ms(*all.last().expect("loads")),
            "list_p50_ms": ms(list[list.len() / 2]),
            "search_miss_p50_ms": ms(search[search.len() / 2]),
            "search_miss_max_ms": ms(*search.last().expect("searches")),
            "browser": in_browser,
        }));
    }
    println!("\nconsole: first page of /console (page, assets, /v1/caller, first List page)");
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>14} {:>16}",
        "", "p50 ms", "p99 ms", "max ms", "List p50 ms", "search p50 ms"
    );
    for row in &rows {
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>10.1} {:>14.1} {:>16.1}",
            row["name"].as_str().unwrap_or_default(),
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
            row["list_p50_ms"].as_f64().unwrap_or_default(),
            row["search_miss_p50_ms"].as_f64().unwrap_or_default(),
        );
    }
    println!(
        "\nconsole in chromium: navigation start to the first page's rows in the document \
         (target {BROWSER_TARGET_MS} ms)"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>8}",
        "", "p50 ms", "p99 ms", "max ms", "target"
    );
    for row in &rows {
        let name = row["name"].as_str().unwrap_or_default();
        let browser = &row["browser"];
        match browser["skipped"].as_str() {
            Some(why) => println!("{name:<28} SKIPPED: {why}"),
            None => println!(
                "{:<28} {:>10.1} {:>10.1} {:>10.1} {:>8}",
                name,
                browser["p50_ms"].as_f64().unwrap_or_default(),
                browser["p99_ms"].as_f64().unwrap_or_default(),
                browser["max_ms"].as_f64().unwrap_or_default(),
                if browser["within_target"].as_bool() == Some(true) {
                    "met"
                } else {
                    "MISSED"
                },
            ),
        }
    }
    Ok(json!({ "rows": rows, "browser_target_ms": BROWSER_TARGET_MS }))
}

/// A Chromium and the Python that drives it.
struct Browser {
    chromium: PathBuf,
    python: String,
    script: PathBuf,
}

impl Browser {
    /// Both, or why the browser's part cannot run here.
    fn find() -> Result<Self, String> {
        let chromium = std::env::var_os("OPSD_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        if !chromium.is_file() {
            return Err(format!(
                "no chromium at {} (apt-get install chromium, or set OPSD_CHROMIUM)",
                chromium.display()
            ));
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = Command::new("bash")
            .arg(repo.join("scripts/console-venv"))
            .output()
            .map_err(|e| format!("cannot run scripts/console-venv: {e}"))?;
        let stdout = String::from_utf8_lossy(&venv.stdout);
        let python = stdout.lines().last().unwrap_or_default().trim().to_owned();
        if !venv.status.success() || python.is_empty() {
            return Err(format!(
                "scripts/console-venv failed: {}",
                String::from_utf8_lossy(&venv.stderr).trim()
            ));
        }
        Ok(Self {
            chromium,
            python,
            script: repo.join("crates/bench/console_browser.py"),
        })
    }

    /// The time of each of `loads` first pages, in milliseconds.
    fn first_pages(&self, endpoint: &str, loads: usize, rows: usize) -> anyhow::Result<Vec<f64>> {
        let output = Command::new(&self.python)
            .arg(&self.script)
            .arg("--url")
            .arg(format!("http://{endpoint}"))
            .arg("--chromium")
            .arg(&self.chromium)
            .args(["--loads", &loads.to_string(), "--rows", &rows.to_string()])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "the console in chromium failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let answer: Value = serde_json::from_slice(&output.stdout)?;
        let times: Vec<f64> = answer["times_ms"]
            .as_array()
            .map(|times| times.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        anyhow::ensure!(
            times.len() == loads,
            "the browser timed {} loads of {loads}",
            times.len()
        );
        Ok(times)
    }
}

fn browser_summary(chromium: &Path, mut times: Vec<f64>) -> Value {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    json!({
        "chromium": chromium.display().to_string(),
        "loads": times.len(),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": times.last().copied().unwrap_or_default(),
        "target_ms": BROWSER_TARGET_MS,
        "within_target": p99 <= BROWSER_TARGET_MS,
    })
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `operations` operations, as a console sees them: most done, some running
/// with progress, each with a description and a resource.
async fn fill(opsd: &Server, operations: usize) -> anyhow::Result<()> {
    let client = opsd.client().await?;
    let workers = 32;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while n < operations {
                let new = NewOperation {
                    resource_id: Some(format!("disk-{}", n % 500)),
                    ..NewOperation::new(format!("snapshot disk-{} for backup {n}", n % 500))
                };
                let id = client.create(new).await?.operation.unwrap_or_default().id;
                if n % 10 == 0 {
                    let progress = pb::Progress {
                        work_done: 3,
                        work_total: 10,
                        message: "copying blocks".into(),
                        steps: vec![],
                    };
                    client.update(&id, None, Some(progress)).await?;
                } else {
                    let response = prost_types::Struct {
                        fields: [(
                            "snapshotId".to_owned(),
                            prost_types::Value {
                                kind: Some(prost_types::value::Kind::StringValue(format!(
                                    "snap-{n}"
                                ))),
                            },
                        )]
                        .into(),
                    };
                    client
                        .complete(
                            &id,
                            Completion::Response(opsd_client::pack_struct(&response)),
                        )
                        .await?;
                }
                n += workers;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// `count` List calls searching descriptions for a text none has: the worst
/// case, a read of every row. Sorted times.
async fn search_misses(endpoint: &str, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let started = Instant::now();
        let answer =
            harness::http_get(endpoint, "/v1/operations?descriptionContains=N%C3%B6where").await?;
        times.push(started.elapsed());
        let answer: Value = serde_json::from_str(&answer)?;
        anyhow::ensure!(
            answer["operations"].as_array().is_none_or(Vec::is_empty),
            "a search for a text no description has found something"
        );
    }
    times.sort();
    Ok(times)
}

/// One page load; returns its time and that of the List call alone. Checks
/// that the first page holds what the store has.
async fn first_page(endpoint: &str, operations: usize) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let page = harness::http_get(endpoint, "/console").await?;
    anyhow::ensure!(page.contains("console.js"), "the console page is wrong");
    let (script, style) = tokio::join!(
        harness::http_get(endpoint, "/console/console.js"),
        harness::http_get(endpoint, "/console/console.css"),
    );
    script?;
    style?;
    harness::http_get(endpoint, "/console/settings.json").await?;
    harness::http_get(endpoint, "/v1/caller").await?;
    let list_started = Instant::now();
    let list = harness::http_get(endpoint, "/v1/operations").await?;
    let list_time = list_started.elapsed();
    let total = started.elapsed();
    let list: Value = serde_json::from_str(&list)?;
    let shown = list["operations"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        shown == operations.min(100),
        "the first page shows {shown} operations of {operations}"
    );
    Ok((total, list_time))
}
