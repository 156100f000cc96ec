//! Watch fan-out: many watchers on a few operations; the memory they hold in
//! the server, and how long a completion takes to reach every one of them,
//! in one process and from one PostgreSQL replica to another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opsd_proto::opsd::v1 as pb;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::harness::{self, Binaries, Pinning, Server};

pub struct Shape {
    pub watchers: usize,
    pub operations: usize,
    pub connections: usize,
}

pub async fn run(
    shape: &Shape,
    bins: &Binaries,
    pinning: Pinning,
    cluster: Option<&opsd_testkit::Cluster>,
) -> anyhow::Result<Value> {
    let mut results = Vec::new();
    let data = tempfile::tempdir()?;
    let single = Server::start(bins.opsd(data.path(), &[]))?;
    pinning.server(single.pid());
    results.push(fan_out("one process (sqlite)", shape, &single, &single).await?);
    drop(single);
    if let Some(cluster) = cluster {
        let url = cluster.url("postgres");
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let producer_side = Server::start(bins.opsd(a.path(), &["--store", &url]))?;
        let watcher_side = Server::start(bins.opsd(b.path(), &["--store", &url]))?;
        pinning.server(producer_side.pid());
        pinning.server(watcher_side.pid());
        if let Some(postmaster) = cluster.postmaster_pid() {
            pinning.server(postmaster);
        }
        results.push(
            fan_out(
                "across two replicas (postgres)",
                shape,
                &producer_side,
                &watcher_side,
            )
            .await?,
        );
    }
    println!(
        "\nwatch fan-out: {} watchers on {} operations over {} connections",
        shape.watchers, shape.operations, shape.connections
    );
    println!(
        "{:<44} {:>14} {:>14} {:>10} {:>10}",
        "", "server MiB +", "peak MiB", "p50 ms", "p99 ms"
    );
    for r in &results {
        println!(
            "{:<44} {:>14.1} {:>14.1} {:>10.2} {:>10.2}",
            r["name"].as_str().unwrap_or_default(),
            r["rss_growth_bytes"].as_f64().unwrap_or_default() / (1 << 20) as f64,
            r["peak_rss_bytes"].as_f64().unwrap_or_default() / (1 << 20) as f64,
            r["notify_p50_us"].as_f64().unwrap_or_default() / 1000.0,
            r["notify_p99_us"].as_f64().unwrap_or_default() / 1000.0,
        );
    }
    Ok(json!({
        "watchers": shape.watchers,
        "operations": shape.operations,
        "connections": shape.connections,
        "results": results,
    }))
}

async fn fan_out(
    name: &str,
    shape: &Shape,
    producer_side: &Server,
    watcher_side: &Server,
) -> anyhow::Result<Value> {
    let producer = producer_side.client().await?;
    let mut ids = Vec::new();
    for n in 0..shape.operations {
        let op = producer
            .create(opsd_client::NewOperation::new(format!("watched {n}")))
            .await?;
        ids.push(op.operation.context("created operation")?.id);
    }
    let rss_before = watcher_side.rss()?;
    let channels = harness::channels(&watcher_side.endpoint, shape.connections).await?;
    let registered = Arc::new(Barrier::new(shape.watchers + 1));
    let mut watchers = Vec::with_capacity(shape.watchers);
    for w in 0..shape.watchers {
        let mut client = pb::operation_service_client::OperationServiceClient::new(
            channels[w % channels.len()].clone(),
        );
        let op = w % ids.len();
        let id = ids[op].clone();
        let registered = Arc::clone(&registered);
        watchers.push(tokio::spawn(async move {
            let mut stream = client
                .watch(pb::WatchOperationRequest { operation_id: id })
                .await?
                .into_inner();
            // The first message is the state at registration.
            let first = stream.message().await?.context("watch ended at once")?;
            anyhow::ensure!(
                !first.operation.is_some_and(|o| o.done),
                "the operation was done before it was completed"
            );
            registered.wait().await;
            loop {
                let message = stream
                    .message()
                    .await?
                    .context("watch ended before the operation was done")?;
                if message.operation.is_some_and(|o| o.done) {
                    return Ok::<_, anyhow::Error>((op, Instant::now()));
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(300), registered.wait())
        .await
        .context("watchers did not all register within 300 s")?;
    let rss_after = watcher_side.rss()?;
    // One completion at a time, so each is measured on its own.
    let mut completed_at = Vec::with_capacity(ids.len());
    for id in &ids {
        completed_at.push(Instant::now());
        producer
            .complete(
                id,
                opsd_client::Completion::Response(opsd_client::pack_struct(&Default::default())),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies = Vec::with_capacity(watchers.len());
    for watcher in watchers {
        let (op, received) = tokio::time::timeout(Duration::from_secs(120), watcher)
            .await
            .context("a watcher never heard the completion")???;
        latencies.push(
            received
                .saturating_duration_since(completed_at[op])
                .as_micros() as u32,
        );
    }
    latencies.sort_unstable();
    Ok(json!({
        "name": name,
        "notified": latencies.len(),
        "rss_before_bytes": rss_before,
        "rss_with_watchers_bytes": rss_after,
        "rss_growth_bytes": rss_after.saturating_sub(rss_before),
        "peak_rss_bytes": watcher_side.peak_rss()?,
        "notify_p50_us": harness::quantile(&latencies, 0.5),
        "notify_p99_us": harness::quantile(&latencies, 0.99),
        "notify_max_us": latencies.last().copied().unwrap_or(0),
    }))
}
