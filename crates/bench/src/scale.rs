//! Scale: Get and List latency on a large store against a small one, and Get
//! latency while retention deletes a large batch of expired operations.
//! Stores are loaded through the SQLite store's bulk import (one transaction
//! per batch) before opsd starts on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opsd_core::{
    Any, CancellationPolicy, IdPrefix, NewOperation, Operation, OperationId, Outcome, State,
    Timestamp,
};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_store::{OperationStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};

use crate::harness::{self, Binaries, Pinning, Plan, Server};

pub struct Sizes {
    pub small: usize,
    pub large: usize,
    pub expired: usize,
    /// Get calls per second during latency runs.
    pub rate: f64,
}

const IMPORT_BATCH: usize = 50_000;
/// Ids kept per store to ask for, picked uniformly.
const SAMPLE: usize = 20_000;
const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

pub async fn run(
    plan: &Plan,
    sizes: &Sizes,
    bins: &Binaries,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    let plan = Plan {
        rate: Some(sizes.rate),
        concurrency: plan.concurrency.min(16),
        ..plan.clone()
    };
    let mut stores = Vec::new();
    for size in [sizes.small, sizes.large] {
        let data = tempfile::tempdir()?;
        let started = Instant::now();
        let sample = load(data.path(), size, 0).await?;
        let load_seconds = started.elapsed().as_secs_f64();
        println!(
            "loaded {size} operations in {load_seconds:.1} s ({:.0}/s)",
            size as f64 / load_seconds
        );
        let opsd = Server::start(bins.opsd(data.path(), &[]))?;
        pinning.server(opsd.pid());
        let get = get_latency(&plan, &opsd, &sample).await?;
        let list = list_latency(&plan, &opsd).await?;
        stores.push(json!({
            "operations": size,
            "load_seconds": load_seconds,
            "database_bytes": std::fs::metadata(data.path().join("opsd.db"))?.len(),
            "get": run_json(&get),
            "list_first_page": run_json(&list),
            "peak_rss_bytes": opsd.peak_rss()?,
        }));
    }
    let p99 = |i: usize, what: &str| stores[i][what]["p99_us"].as_f64().unwrap_or(0.0);
    let get_ratio = p99(1, "get") / p99(0, "get").max(1.0);
    let list_ratio = p99(1, "list_first_page") / p99(0, "list_first_page").max(1.0);

    let retention = retention_under_load(&plan, sizes, bins, pinning).await?;

    println!(
        "\nscale: get at {:.0}/s (fixed rate), list first page (100) at {:.0}/s",
        sizes.rate,
        sizes.rate / 10.0
    );
    println!(
        "{:<44} {:>12} {:>12} {:>14} {:>14}",
        "", "get p50 µs", "get p99 µs", "list p50 µs", "list p99 µs"
    );
    for store in &stores {
        println!(
            "{:<44} {:>12.0} {:>12.0} {:>14.0} {:>14.0}",
            format!("{} operations", store["operations"]),
            store["get"]["p50_us"].as_f64().unwrap_or_default(),
            store["get"]["p99_us"].as_f64().unwrap_or_default(),
            store["list_first_page"]["p50_us"]
                .as_f64()
                .unwrap_or_default(),
            store["list_first_page"]["p99_us"]
                .as_f64()
                .unwrap_or_default(),
        );
    }
    println!("large / small get p99: {get_ratio:.2}×; list p99: {list_ratio:.2}×");
    println!(
        "get p99 while retention deletes {} operations: {:.0} µs vs {:.0} µs without ({:.2}×); {} deleted in {:.1} s",
        sizes.expired,
        retention["during"]["p99_us"].as_f64().unwrap_or_default(),
        retention["before"]["p99_us"].as_f64().unwrap_or_default(),
        retention["p99_ratio"].as_f64().unwrap_or_default(),
        retention["deleted"],
        retention["deletion_seconds"].as_f64().unwrap_or_default(),
    );
    Ok(json!({
        "rate": sizes.rate,
        "stores": stores,
        "get_p99_ratio_large_to_small": get_ratio,
        "list_p99_ratio_large_to_small": list_ratio,
        "retention": retention,
    }))
}

fn run_json(run: &harness::Run) -> Value {
    json!({ "calls": run.calls, "p50_us": run.p50_us, "p99_us": run.p99_us, "per_second": run.per_second })
}

/// Fills `data_dir/opsd.db` with `live` operations (nine in ten done) and
/// `expired` done ones last changed two days ago; returns a sample of the
/// live ids.
async fn load(
    data_dir: &std::path::Path,
    live: usize,
    expired: usize,
) -> anyhow::Result<Vec<String>> {
    let store = SqliteStore::open(SqliteOptions::new(data_dir.join("opsd.db")))?;
    let now = opsd_core::Clock::now(&opsd_core::SystemClock);
    let prefix = IdPrefix::default();
    let mut rng = rand::rng();
    let mut sample = Vec::with_capacity(SAMPLE);
    let every = (live / SAMPLE).max(1);
    let total = live + expired;
    let mut made = 0;
    while made < total {
        let batch_len = IMPORT_BATCH.min(total - made);
        let mut batch = Vec::with_capacity(batch_len);
        for _ in 0..batch_len {
            let n = made;
            made += 1;
            let is_expired = n >= live;
            // In creation order, as a store fills: live ones over the last
            // half day, expired ones two days before that (a one-day
            // retention tells them apart).
            let (offset, count, index) = if is_expired {
                (2 * DAY_NANOS + DAY_NANOS / 2, expired, n - live)
            } else {
                (DAY_NANOS / 2, live, n)
            };
            let step = DAY_NANOS / 2 / i64::try_from(count.max(1)).unwrap_or(i64::MAX);
            let created = Timestamp::from_unix_nanos(
                now.unix_nanos() - offset + step * i64::try_from(index).unwrap_or(0),
            );
            let id = OperationId::generate(&prefix, created, &mut rng);
            if !is_expired && n % every == 0 && sample.len() < SAMPLE {
                sample.push(id.to_string());
            }
            batch.push(operation(id, created, is_expired || n % 10 != 0));
        }
        let imported = store.import(batch).await?;
        anyhow::ensure!(imported == batch_len, "imported {imported} of {batch_len}");
    }
    store.close().await?;
    Ok(sample)
}

fn operation(id: OperationId, created: Timestamp, done: bool) -> Operation {
    let mut op = Operation::create(
        id,
        NewOperation {
            description: "Create instance".into(),
            resource_id: None,
            metadata: Some(Any {
                type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                value: Vec::new(),
            }),
            cancellation: CancellationPolicy::default(),
            idempotency_key: None,
            id_prefix: None,
            lease_duration: None,
            deadline: None,
            exclusive: false,
            scope: Some("default".into()),
            trace: None,
        },
        "anonymous",
        created,
    );
    if done {
        op.version = 2;
        op.modified_at = Timestamp::from_unix_nanos(created.unix_nanos() + 1_000_000_000);
        op.state = State::Done {
            outcome: Outcome::Response(Any {
                type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                value: Vec::new(),
            }),
            cancel_requested_at: None,
        };
    }
    op
}

async fn get_latency(plan: &Plan, opsd: &Server, ids: &[String]) -> anyhow::Result<harness::Run> {
    let pid = opsd.pid();
    crate::get::drive_gets(
        plan,
        &opsd.endpoint,
        Arc::new(ids.to_vec()),
        &move || vec![pid],
        // Spread over the sample rather than walking it in order.
        |_, n| (n as usize).wrapping_mul(7919),
    )
    .await
}

async fn list_latency(plan: &Plan, opsd: &Server) -> anyhow::Result<harness::Run> {
    let channels = harness::channels(&opsd.endpoint, plan.connections).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .into_iter()
            .map(pb::operation_service_client::OperationServiceClient::new)
            .collect(),
    );
    let plan = Plan {
        rate: plan.rate.map(|r| r / 10.0),
        ..plan.clone()
    };
    let pid = opsd.pid();
    harness::drive(&plan, &move || vec![pid], move |worker, _| {
        let mut client = clients[worker % clients.len()].clone();
        async move {
            let page = client
                .list(pb::ListOperationsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::ensure!(page.operations.len() == 100, "a short first page");
            Ok(())
        }
    })
    .await
}

/// Get latency on a store holding `expired` done operations past retention:
/// first with retention too long to delete them, then while it deletes them.
async fn retention_under_load(
    plan: &Plan,
    sizes: &Sizes,
    bins: &Binaries,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    let data = tempfile::tempdir()?;
    let live = sizes.small.max(SAMPLE);
    let sample = load(data.path(), live, sizes.expired).await?;

    let before = {
        let opsd = Server::start(bins.opsd(data.path(), &["--retention", "30d"]))?;
        pinning.server(opsd.pid());
        get_latency(plan, &opsd, &sample).await?
    };

    let opsd = Server::start(bins.opsd(
        data.path(),
        &["--retention", "1d", "--retention-interval", "1h"],
    ))?;
    pinning.server(opsd.pid());
    // Retention starts with the server; Gets run until it has deleted them all.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let channels = harness::channels(&opsd.endpoint, plan.connections).await?;
        let stop = Arc::clone(&stop);
        let rate = sizes.rate;
        let ids = sample.clone();
        tokio::spawn(async move { fixed_rate_until(channels, ids, rate, stop).await })
    };
    let started = Instant::now();
    let limit = Duration::from_secs(600);
    let deleted = loop {
        let deleted = opsd.metric("opsd_operations_deleted_total").await?;
        if deleted as usize >= sizes.expired || started.elapsed() > limit {
            break deleted;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deletion_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let during = load.await??;
    anyhow::ensure!(
        deleted as usize >= sizes.expired,
        "retention deleted {deleted} of {} within {limit:?}",
        sizes.expired
    );
    Ok(json!({
        "expired": sizes.expired,
        "deleted": deleted,
        "deletion_seconds": deletion_seconds,
        "before": run_json(&before),
        "during": run_json(&during),
        "p99_ratio": during.p99_us / before.p99_us.max(1.0),
    }))
}

/// Gets at a fixed rate until told to stop; latency from each call's
/// scheduled start.
async fn fixed_rate_until(
    channels: Vec<tonic::transport::Channel>,
    ids: Vec<String>,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<harness::Run> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let scheduled = start + interval * n;
        tokio::time::sleep_until(scheduled.into()).await;
        let mut client = ycop::operation_service_client::OperationServiceClient::new(
            channels[n as usize % channels.len()].clone(),
        );
        let id = ids[(n as usize).wrapping_mul(7919) % ids.len()].clone();
        calls.spawn(async move {
            let answer = client
                .get(ycop::GetOperationRequest { operation_id: id })
                .await;
            (scheduled.elapsed(), answer.is_ok())
        });
        n += 1;
    }
    let elapsed = start.elapsed();
    let mut latencies = Vec::with_capacity(n as usize);
    while let Some(call) = calls.join_next().await {
        let (latency, ok) = call?;
        anyhow::ensure!(ok, "a get failed during retention");
        latencies.push(latency.as_micros() as u32);
    }
    latencies.sort_unstable();
    Ok(harness::Run {
        calls: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: harness::quantile(&latencies, 0.5),
        p99_us: harness::quantile(&latencies, 0.99),
        cpu_us_per_call: 0.0,
    })
}
