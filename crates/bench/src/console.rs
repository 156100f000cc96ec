//! The web console's first page: what a browser fetches to show
//! `/console` (the page, its script and style, its settings, `/v1/caller`,
//! then the first page of `GET /v1/operations`), timed end to end, over a
//! store of many operations against the same server with an empty store.
//!
//! The requests follow the browser's critical path: the page, then its
//! script and style together, then the script's calls one after the other.
//! Each request opens its own connection (a browser would reuse one), so
//! the times are an upper bound. Rendering in the browser is not included.

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
}

pub async fn run(
    plan: &Plan,
    sizes: &Sizes,
    bins: &Binaries,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
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
        rows.push(json!({
            "name": name,
            "operations": operations,
            "loads": all.len(),
            "p50_ms": harness::median(medians),
            "p99_ms": ms(all[((all.len() - 1) as f64 * 0.99).round() as usize]),
            "max_ms": ms(*all.last().expect("loads")),
            "list_p50_ms": ms(list[list.len() / 2]),
        }));
    }
    println!("\nconsole: first page of /console (page, assets, /v1/caller, first List page)");
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>14}",
        "", "p50 ms", "p99 ms", "max ms", "List p50 ms"
    );
    for row in &rows {
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>10.1} {:>14.1}",
            row["name"].as_str().unwrap_or_default(),
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
            row["list_p50_ms"].as_f64().unwrap_or_default(),
        );
    }
    Ok(json!({ "rows": rows }))
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
