//! The change feed: how many events per second reach 1 and 100 feed readers
//! (WatchOperations streams) while producers create and complete operations
//! flat out, how long an event takes from the producer's call to each reader
//! at a fixed rate, and what recording events costs a write (durable SQLite,
//! with events against without, side by side).
//!
//! Every reader must receive every event of the trial exactly once, in commit
//! order: one missing, duplicated, out of order or foreign event fails the run.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use opsd_proto::opsd::v1 as pb;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::harness::{self, Binaries, Pinning, Plan, Row, Server};

/// Feed readers per connection: the server allows 16 by default
/// (`--max-feed-readers-per-connection`), so 100 readers take 9 connections.
const READERS_PER_CONNECTION: usize = 12;

/// The most operations one trial may create (it sizes the trial's tables);
/// a trial that would make more fails.
const MAX_OPERATIONS: usize = 1_000_000;

/// How long readers may take to catch up once the producers stopped.
const CATCH_UP: Duration = Duration::from_secs(300);

/// The store counter that says how often readers went to the store.
const STORE_CALLS: &str = "opsd_store_duration_seconds_count";

pub struct Shape {
    /// Feed reader counts (1 and 100).
    pub readers: Vec<usize>,
    /// Operations per second of the latency trials (two events each).
    pub rate: f64,
}

pub async fn run(
    plan: &Plan,
    shape: &Shape,
    bins: &Binaries,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    let delivery = delivery(plan, shape, bins, pinning).await?;
    let cost = write_cost(plan, bins, pinning).await?;
    Ok(json!({
        "producers": plan.concurrency,
        "rate_operations_per_second": shape.rate,
        "readers_per_connection": READERS_PER_CONNECTION,
        "delivery": delivery,
        "write_cost": cost,
    }))
}

/// One kind of trial: how many readers, and how the producers write.
#[derive(Clone, Copy, Debug)]
struct Load {
    readers: usize,
    /// Operations per second; `None` is flat out.
    rate: Option<f64>,
}

impl Load {
    fn name(&self) -> String {
        let readers = match self.readers {
            0 => "no readers".to_owned(),
            1 => "1 reader".to_owned(),
            n => format!("{n} readers"),
        };
        match self.rate {
            None => format!("{readers}, flat out"),
            Some(rate) => format!("{readers}, {rate:.0} ops/s"),
        }
    }
}

/// What one trial measured.
#[derive(Clone, Debug, Default)]
struct Trial {
    /// Events committed per second in the measured window.
    committed_per_second: f64,
    /// Events per second one reader received in the window (the median reader).
    per_reader_per_second: f64,
    /// The slowest reader's.
    slowest_reader_per_second: f64,
    /// Every reader's together.
    delivered_per_second: f64,
    /// Producer call → reader received, over every reader and event.
    p50_us: f64,
    p99_us: f64,
    /// Server CPU per operation (two events).
    cpu_us_per_operation: f64,
    /// Feed reads of the store, per committed event per reader.
    store_reads_per_event_per_reader: f64,
    /// From the producers' last answer to the slowest reader's last event.
    catch_up_ms: f64,
    /// CPU of this process (producers and readers) over the trial's time.
    load_generator_cpu_share: f64,
    /// Events committed in the trial (warm-up and measured window), and
    /// received by all readers together (each reader all of them).
    events: u64,
    delivered: u64,
}

async fn delivery(
    plan: &Plan,
    shape: &Shape,
    bins: &Binaries,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    let data = tempfile::tempdir()?;
    let opsd = Server::start(bins.opsd(data.path(), &[]))?;
    pinning.server(opsd.pid());
    // Each way of writing without readers too: what readers add is the difference.
    let mut loads = Vec::new();
    for rate in [None, Some(shape.rate)] {
        for readers in std::iter::once(0).chain(shape.readers.iter().copied().filter(|&r| r > 0)) {
            loads.push(Load { readers, rate });
        }
    }
    let mut trials: Vec<Vec<Trial>> = vec![Vec::new(); loads.len()];
    let mut tag = 0u32;
    for _ in 0..plan.repetitions {
        for (load, runs) in loads.iter().zip(&mut trials) {
            tag += 1;
            let trial = trial(plan, &opsd, *load, tag)
                .await
                .with_context(|| load.name())?;
            runs.push(trial);
        }
    }
    let peak_rss = opsd.peak_rss().ok();
    let mut rows: Vec<Value> = loads
        .iter()
        .zip(&trials)
        .map(|(load, runs)| summary(load, runs))
        .collect();
    // Server CPU that readers add, per event delivered: against the same
    // writes without readers, where each operation delivers two events to each.
    for (i, load) in loads.iter().enumerate() {
        let alone = loads
            .iter()
            .position(|l| l.readers == 0 && l.rate == load.rate)
            .expect("every way of writing has a row without readers");
        let cpu = |row: &Value| row["cpu_us_per_operation"].as_f64().unwrap_or_default();
        let added = (load.readers > 0)
            .then(|| (cpu(&rows[i]) - cpu(&rows[alone])) / (2.0 * load.readers as f64));
        rows[i]["reader_cpu_us_per_delivered_event"] = json!(added);
    }
    print_delivery(plan, &rows);
    Ok(json!({ "peak_rss_bytes": peak_rss, "rows": rows }))
}

/// The medians of one load's trials.
fn summary(load: &Load, runs: &[Trial]) -> Value {
    let m = |f: fn(&Trial) -> f64| harness::median(runs.iter().map(f).collect());
    json!({
        "name": load.name(),
        "readers": load.readers,
        "rate_operations_per_second": load.rate,
        "repetitions": runs.len(),
        "events": runs.iter().map(|t| t.events).sum::<u64>(),
        "delivered_events": runs.iter().map(|t| t.delivered).sum::<u64>(),
        "committed_events_per_second": m(|t| t.committed_per_second),
        "per_reader_events_per_second": m(|t| t.per_reader_per_second),
        "slowest_reader_events_per_second": m(|t| t.slowest_reader_per_second),
        "delivered_events_per_second": m(|t| t.delivered_per_second),
        "p50_us": m(|t| t.p50_us),
        "p99_us": m(|t| t.p99_us),
        "cpu_us_per_operation": m(|t| t.cpu_us_per_operation),
        "store_reads_per_event_per_reader": m(|t| t.store_reads_per_event_per_reader),
        "catch_up_ms": m(|t| t.catch_up_ms),
        "load_generator_cpu_share": m(|t| t.load_generator_cpu_share),
        // Each repetition, to show the spread behind the medians.
        "runs": runs.iter().map(|t| json!({
            "committed_events_per_second": t.committed_per_second,
            "per_reader_events_per_second": t.per_reader_per_second,
            "p50_us": t.p50_us,
            "p99_us": t.p99_us,
            "cpu_us_per_operation": t.cpu_us_per_operation,
        })).collect::<Vec<_>>(),
    })
}

fn print_delivery(plan: &Plan, rows: &[Value]) {
    println!(
        "\nfeed delivery: {} producers create + complete (2 events per operation); \
         events/s in the measured window",
        plan.concurrency
    );
    println!(
        "{:<30} {:>10} {:>11} {:>11} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "",
        "committed",
        "per reader",
        "all readers",
        "p50 ms",
        "p99 ms",
        "cpu µs/op",
        "+cpu µs/ev",
        "reads/ev/r",
        "catch-up"
    );
    for r in rows {
        let f = |key: &str| r[key].as_f64().unwrap_or_default();
        let readers = r["readers"].as_u64().unwrap_or_default();
        let or_dash = |text: String| if readers == 0 { "-".to_owned() } else { text };
        println!(
            "{:<30} {:>10.0} {:>11} {:>11} {:>9} {:>9} {:>9.1} {:>10} {:>10} {:>9}",
            r["name"].as_str().unwrap_or_default(),
            f("committed_events_per_second"),
            or_dash(format!("{:.0}", f("per_reader_events_per_second"))),
            or_dash(format!("{:.0}", f("delivered_events_per_second"))),
            or_dash(format!("{:.2}", f("p50_us") / 1000.0)),
            or_dash(format!("{:.2}", f("p99_us") / 1000.0)),
            f("cpu_us_per_operation"),
            or_dash(format!("{:.1}", f("reader_cpu_us_per_delivered_event"))),
            or_dash(format!("{:.2}", f("store_reads_per_event_per_reader"))),
            or_dash(format!("{:.0} ms", f("catch_up_ms"))),
        );
    }
}

/// Per operation of a trial: when its calls were sent, and which of its
/// events the store acknowledged.
struct Ledger {
    tag: u32,
    next: AtomicUsize,
    /// Nanoseconds after `base` (+1, so 0 is "not sent"), per operation:
    /// Create, then Complete.
    sent: Vec<[AtomicU64; 2]>,
    /// Bit 1: created; bit 2: completed.
    committed: Vec<AtomicU8>,
    base: Instant,
    failure: Mutex<Option<String>>,
}

impl Ledger {
    fn new(tag: u32) -> Self {
        Self {
            tag,
            next: AtomicUsize::new(0),
            sent: (0..MAX_OPERATIONS).map(|_| Default::default()).collect(),
            committed: (0..MAX_OPERATIONS).map(|_| AtomicU8::new(0)).collect(),
            base: Instant::now(),
            failure: Mutex::new(None),
        }
    }

    fn stamp(&self, n: usize, which: usize) {
        let nanos = self.base.elapsed().as_nanos() as u64 + 1;
        self.sent[n][which].store(nanos, Ordering::SeqCst);
    }

    fn sent_at(&self, n: usize, which: usize) -> Option<Instant> {
        match self.sent.get(n)?[which].load(Ordering::SeqCst) {
            0 => None,
            nanos => Some(self.base + Duration::from_nanos(nanos - 1)),
        }
    }

    fn operations(&self) -> usize {
        self.next.load(Ordering::SeqCst).min(MAX_OPERATIONS)
    }

    fn resource(&self, n: usize) -> String {
        format!("feed-{}-{n}", self.tag)
    }

    /// The operation a resource id names, if it is one of this trial's.
    fn parse_resource(&self, resource: &str) -> Option<usize> {
        let rest = resource.strip_prefix("feed-")?;
        let (tag, n) = rest.split_once('-')?;
        (tag.parse::<u32>().ok()? == self.tag)
            .then(|| n.parse().ok())
            .flatten()
    }

    /// Create, then Complete, each stamped just before it is sent.
    async fn operation(
        &self,
        client: &mut pb::producer_service_client::ProducerServiceClient<tonic::transport::Channel>,
    ) -> anyhow::Result<()> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        anyhow::ensure!(
            n < MAX_OPERATIONS,
            "a trial may create at most {MAX_OPERATIONS} operations: measure fewer seconds"
        );
        self.stamp(n, 0);
        let created = client
            .create(pb::CreateOperationRequest {
                description: "feed".into(),
                resource_id: self.resource(n),
                ..Default::default()
            })
            .await?
            .into_inner();
        self.committed[n].fetch_or(1, Ordering::SeqCst);
        let id = created.operation.context("no operation in the answer")?.id;
        self.stamp(n, 1);
        let completed = client
            .complete(pb::CompleteOperationRequest {
                operation_id: id,
                result: Some(pb::complete_operation_request::Result::Response(
                    opsd_client::pack_struct(&Default::default()),
                )),
            })
            .await?
            .into_inner();
        self.committed[n].fetch_or(2, Ordering::SeqCst);
        anyhow::ensure!(
            completed.operation.is_some_and(|op| op.done),
            "the completed operation is not done"
        );
        Ok(())
    }
}

/// What one reader saw.
struct Seen {
    /// Per operation: bit 1 its created event, bit 2 its completed one.
    events: Vec<u8>,
    count: u64,
    in_window: u64,
    latencies: Vec<u32>,
    last: Option<Instant>,
}

/// The measured window of a trial.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn holds(&self, at: Instant) -> bool {
        at >= self.from && at < self.to
    }
}

/// Reads one stream until it has `expected` events (known once the producers
/// stop), checking each: this trial's, in commit order, each once.
async fn read(
    mut stream: tonic::Streaming<pb::WatchOperationsResponse>,
    ledger: Arc<Ledger>,
    window: Window,
    mut expected: watch::Receiver<Option<u64>>,
) -> anyhow::Result<Seen> {
    let created = pb::EventKind::Created as i32;
    let completed = pb::EventKind::Completed as i32;
    let mut seen = Seen {
        events: Vec::new(),
        count: 0,
        in_window: 0,
        latencies: Vec::new(),
        last: None,
    };
    let mut position = 0u64;
    loop {
        if let Some(want) = *expected.borrow_and_update()
            && seen.count >= want
        {
            return Ok(seen);
        }
        let message = tokio::select! {
            message = stream.message() => message?.context("the feed ended")?,
            changed = expected.changed() => {
                changed.context("the trial went away")?;
                continue;
            }
        };
        let received = Instant::now();
        // The opening bookmark carries only where the feed starts.
        let Some(event) = message.event else {
            continue;
        };
        let at = opsd_core::event::decode_resume_token("resume_token", &message.resume_token)?;
        anyhow::ensure!(
            at > position,
            "event at position {at} after {position}: out of commit order or repeated"
        );
        position = at;
        let n = ledger.parse_resource(&event.resource_id).with_context(|| {
            format!(
                "an event of another operation ({} on {:?})",
                event.operation_id, event.resource_id
            )
        })?;
        let which = match (event.kind, event.sequence) {
            (kind, 1) if kind == created => 0,
            (kind, 2) if kind == completed => 1,
            (kind, sequence) => bail!(
                "unexpected event of {}: kind {kind}, sequence {sequence}",
                event.operation_id
            ),
        };
        if seen.events.len() <= n {
            seen.events.resize(n + 1, 0);
        }
        let bit = 1u8 << which;
        anyhow::ensure!(
            seen.events[n] & bit == 0,
            "event {} of {} delivered twice",
            event.sequence,
            event.operation_id
        );
        anyhow::ensure!(
            which == 0 || seen.events[n] & 1 == 1,
            "{} completed before it was created",
            event.operation_id
        );
        seen.events[n] |= bit;
        seen.count += 1;
        let sent = ledger
            .sent_at(n, which)
            .context("an event of a call that was never sent")?;
        if window.holds(sent) {
            seen.latencies
                .push(received.saturating_duration_since(sent).as_micros() as u32);
        }
        if window.holds(received) {
            seen.in_window += 1;
        }
        seen.last = Some(received);
    }
}

/// Readers follow the feed from now; producers write for the plan's time;
/// then every reader must have every event the producers were told of.
async fn trial(plan: &Plan, opsd: &Server, load: Load, tag: u32) -> anyhow::Result<Trial> {
    let ledger = Arc::new(Ledger::new(tag));
    let reads_before = opsd
        .metric_where(STORE_CALLS, "operation=\"read_feed\"")
        .await?;
    // Each stream has its place in the feed once its headers are back.
    let connections = load.readers.div_ceil(READERS_PER_CONNECTION);
    let channels = if load.readers > 0 {
        harness::channels(&opsd.endpoint, connections).await?
    } else {
        Vec::new()
    };
    let mut streams = Vec::with_capacity(load.readers);
    for r in 0..load.readers {
        let mut client = pb::operation_service_client::OperationServiceClient::new(
            channels[r % connections].clone(),
        );
        streams.push(
            client
                .watch_operations(pb::WatchOperationsRequest::default())
                .await
                .context("watch operations")?
                .into_inner(),
        );
    }
    let (expect, expected) = watch::channel(None);
    let started = Instant::now();
    let window = Window {
        from: started + plan.warmup,
        to: started + plan.warmup + plan.measured,
    };
    let client_cpu_before = harness::process_cpu(std::process::id())?;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(read(stream, Arc::clone(&ledger), window, expected.clone())))
        .collect();

    let producer_channels = harness::channels(&opsd.endpoint, plan.connections).await?;
    let producers: Arc<Vec<_>> = Arc::new(
        producer_channels
            .into_iter()
            .map(pb::producer_service_client::ProducerServiceClient::new)
            .collect(),
    );
    let producer_plan = Plan {
        rate: load.rate,
        ..plan.clone()
    };
    let opsd_pid = opsd.pid();
    let writer = Arc::clone(&ledger);
    let run = harness::drive(&producer_plan, &move || vec![opsd_pid], move |worker, _| {
        let mut client = producers[worker % producers.len()].clone();
        let ledger = Arc::clone(&writer);
        async move {
            let result = ledger.operation(&mut client).await;
            if let Err(e) = &result {
                // Also in the warm-up, which `drive` does not judge: a call
                // that failed leaves the trial's events unknown.
                ledger
                    .failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| format!("{e:#}"));
            }
            result
        }
    })
    .await?;
    let stopped = Instant::now();
    if let Some(failure) = ledger
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        bail!("a producer call failed (a run with errors measures nothing): {failure}");
    }
    let operations = ledger.operations();
    let committed: Vec<u8> = ledger.committed[..operations]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    let events: u64 = committed.iter().map(|c| u64::from(c.count_ones())).sum();
    expect.send_replace(Some(events));

    let mut seen = Vec::with_capacity(readers.len());
    for reader in readers {
        seen.push(
            tokio::time::timeout(CATCH_UP, reader)
                .await
                .context("a reader did not receive every event in time")???,
        );
    }
    let client_cpu = harness::process_cpu(std::process::id())?.saturating_sub(client_cpu_before);
    let reads = opsd
        .metric_where(STORE_CALLS, "operation=\"read_feed\"")
        .await?
        - reads_before;
    for (r, reader) in seen.iter().enumerate() {
        let mut got = reader.events.clone();
        got.resize(operations.max(got.len()), 0);
        if let Some(n) = (0..got.len()).find(|&n| got[n] != committed.get(n).copied().unwrap_or(0))
        {
            bail!(
                "reader {r} has events {:#b} of operation {n}, the store acknowledged {:#b}",
                got[n],
                committed.get(n).copied().unwrap_or(0)
            );
        }
    }

    let measured = plan.measured.as_secs_f64();
    let mut per_reader: Vec<f64> = seen.iter().map(|s| s.in_window as f64 / measured).collect();
    per_reader.sort_by(f64::total_cmp);
    let in_window: u64 = seen.iter().map(|s| s.in_window).sum();
    let mut latencies: Vec<u32> = seen
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let last = seen.iter().filter_map(|s| s.last).max();
    Ok(Trial {
        committed_per_second: 2.0 * run.per_second,
        per_reader_per_second: harness::median(per_reader.clone()),
        slowest_reader_per_second: per_reader.first().copied().unwrap_or(0.0),
        delivered_per_second: in_window as f64 / measured,
        p50_us: harness::quantile(&latencies, 0.5),
        p99_us: harness::quantile(&latencies, 0.99),
        cpu_us_per_operation: run.cpu_us_per_call,
        store_reads_per_event_per_reader: if load.readers == 0 {
            0.0
        } else {
            reads / (events.max(1) * load.readers as u64) as f64
        },
        catch_up_ms: last.map_or(0.0, |l| {
            l.saturating_duration_since(stopped).as_secs_f64() * 1000.0
        }),
        load_generator_cpu_share: client_cpu.as_secs_f64()
            / started.elapsed().as_secs_f64().max(1e-9),
        events,
        delivered: seen.iter().map(|s| s.count).sum(),
    })
}

/// Create + Complete on durable SQLite with events and without
/// (`--sqlite-record-events=false`), A/B/A/B.
async fn write_cost(plan: &Plan, bins: &Binaries, pinning: Pinning) -> anyhow::Result<Value> {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let with = Server::start(bins.opsd(a.path(), &[]))?;
    let without = Server::start(bins.opsd(b.path(), &["--sqlite-record-events=false"]))?;
    pinning.server(with.pid());
    pinning.server(without.pid());
    check_no_timeline(&without).await?;
    let producers = plan.concurrency;
    let plan = Plan {
        rate: None,
        ..plan.clone()
    };
    let mut rows = [
        Row::new(format!("sqlite, with events ({producers} producers)")),
        Row::new(format!("sqlite, without events ({producers} producers)")),
    ];
    for _ in 0..plan.repetitions {
        for (row, server) in rows.iter_mut().zip([&with, &without]) {
            let channels =
                harness::channels(&server.endpoint, plan.connections.min(producers)).await?;
            let clients: Arc<Vec<_>> = Arc::new(
                channels
                    .into_iter()
                    .map(pb::producer_service_client::ProducerServiceClient::new)
                    .collect(),
            );
            let pid = server.pid();
            let run = harness::drive(&plan, &move || vec![pid], move |worker, _| {
                let mut client = clients[worker % clients.len()].clone();
                async move { crate::write::create_and_complete(&mut client).await }
            })
            .await
            .with_context(|| row.name.clone())?;
            row.runs.push(run);
        }
    }
    for (row, (server, events)) in rows.iter_mut().zip([(&with, true), (&without, false)]) {
        row.peak_rss = server.peak_rss().ok();
        row.extra = json!({
            "producers": producers,
            "events": events,
            "per_second_runs": row.runs.iter().map(|r| r.per_second).collect::<Vec<_>>(),
            "cpu_us_per_call_runs": row.runs.iter().map(|r| r.cpu_us_per_call).collect::<Vec<_>>(),
        });
    }
    harness::print_table(
        &format!(
            "the timeline's cost: create + complete, {producers} producers, durable sqlite \
             (operations/s; ratio to without events)"
        ),
        "ops/s",
        &rows,
        Some(rows[1].name.as_str()),
    );
    let cpu = |row: &Row| harness::median(row.runs.iter().map(|r| r.cpu_us_per_call).collect());
    Ok(json!({
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "throughput_ratio_with_to_without": rows[0].per_second() / rows[1].per_second().max(1e-9),
        "cpu_ratio_with_to_without": cpu(&rows[0]) / cpu(&rows[1]).max(1e-9),
    }))
}

/// The server without events must say it has no timeline, not show an empty one.
async fn check_no_timeline(server: &Server) -> anyhow::Result<()> {
    let channel = harness::channels(&server.endpoint, 1).await?.remove(0);
    let refused = pb::operation_service_client::OperationServiceClient::new(channel)
        .watch_operations(pb::WatchOperationsRequest::default())
        .await;
    match refused {
        Err(status) if status.code() == tonic::Code::Internal => Ok(()),
        Err(status) => bail!("the server without events refused its feed with {status:?}"),
        Ok(_) => bail!("the server without events offered a feed"),
    }
}
