//! Get of hot operations, against the same-run baseline: embedded (SQLite)
//! and on PostgreSQL, for done and for running operations.

use std::process::Command;
use std::sync::Arc;

use anyhow::Context;
use opsd_proto::yandex::cloud::operation as ycop;
use serde_json::{Value, json};

use crate::harness::{self, Binaries, Pinning, Plan, Row, Server};

const HOT_OPERATIONS: usize = 100;

/// Creates `count` operations; done ones are completed with an empty Struct.
pub async fn hot_operations(
    server: &Server,
    count: usize,
    done: bool,
) -> anyhow::Result<Vec<String>> {
    let client = server.client().await?;
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let op = client
            .create(opsd_client::NewOperation::new(format!("hot {n}")))
            .await?;
        let id = op.operation.context("created operation")?.id;
        if done {
            client
                .complete(
                    &id,
                    opsd_client::Completion::Response(
                        opsd_client::pack_struct(&Default::default()),
                    ),
                )
                .await?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// One Get target: a server, the ids it is asked for, and the processes whose
/// CPU the calls cost (opsd, plus the database server when there is one).
struct Target<'a> {
    row: Row,
    server: &'a Server,
    ids: Arc<Vec<String>>,
    cpu_of: Box<dyn Fn() -> Vec<u32> + Sync>,
}

async fn measure(plan: &Plan, targets: &mut [Target<'_>]) -> anyhow::Result<()> {
    for _ in 0..plan.repetitions {
        for target in targets.iter_mut() {
            let run = drive_gets(
                plan,
                &target.server.endpoint,
                Arc::clone(&target.ids),
                &*target.cpu_of,
                |worker, n| worker + n as usize,
            )
            .await
            .with_context(|| target.row.name.clone())?;
            target.row.runs.push(run);
        }
    }
    for target in targets.iter_mut() {
        target.row.peak_rss = target.server.peak_rss().ok();
    }
    Ok(())
}

/// Gets of `ids` against `endpoint`, each answer checked to be the operation
/// asked for; `pick(worker, n)` chooses the id (modulo the count).
pub async fn drive_gets(
    plan: &Plan,
    endpoint: &str,
    ids: Arc<Vec<String>>,
    cpu_of: &(dyn Fn() -> Vec<u32> + Sync),
    pick: fn(usize, u64) -> usize,
) -> anyhow::Result<harness::Run> {
    let channels = harness::channels(endpoint, plan.connections).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .into_iter()
            .map(ycop::operation_service_client::OperationServiceClient::new)
            .collect(),
    );
    harness::drive(plan, cpu_of, move |worker, n| {
        let mut client = clients[worker % clients.len()].clone();
        let id = ids[pick(worker, n) % ids.len()].clone();
        async move {
            let op = client
                .get(ycop::GetOperationRequest {
                    operation_id: id.clone(),
                })
                .await?
                .into_inner();
            anyhow::ensure!(op.id == id, "asked for {id}, got {}", op.id);
            Ok(())
        }
    })
    .await
}

pub async fn embedded(plan: &Plan, bins: &Binaries, pinning: Pinning) -> anyhow::Result<Value> {
    let data = tempfile::tempdir()?;
    let traced_data = tempfile::tempdir()?;
    let baseline = Server::start(bins.baseline())?;
    let opsd = Server::start(bins.opsd(data.path(), &[]))?;
    // The same server exporting a span per call to a collector in this
    // process (always_on: every Get is a sampled root span).
    let (collector, collector_url) = crate::collector::Collector::start().await?;
    let traced = Server::start(bins.opsd(
        traced_data.path(),
        &[
            "--otlp-endpoint",
            &collector_url,
            "--trace-sampler",
            "always_on",
            "--trace-export-delay",
            "200ms",
        ],
    ))?;
    pinning.server(baseline.pid());
    pinning.server(opsd.pid());
    pinning.server(traced.pid());
    let done = hot_operations(&opsd, HOT_OPERATIONS, true).await?;
    let running = hot_operations(&opsd, HOT_OPERATIONS, false).await?;
    let traced_done = hot_operations(&traced, HOT_OPERATIONS, true).await?;
    let traced_running = hot_operations(&traced, HOT_OPERATIONS, false).await?;
    let (baseline_pid, opsd_pid, traced_pid) = (baseline.pid(), opsd.pid(), traced.pid());
    let mut targets = [
        Target {
            row: Row::new("baseline (constant reply)"),
            server: &baseline,
            ids: Arc::new(vec!["ops00000000000000001".to_owned()]),
            cpu_of: Box::new(move || vec![baseline_pid]),
        },
        Target {
            row: Row::new("opsd sqlite, done operations"),
            server: &opsd,
            ids: Arc::new(done),
            cpu_of: Box::new(move || vec![opsd_pid]),
        },
        Target {
            row: Row::new("opsd sqlite, running operations"),
            server: &opsd,
            ids: Arc::new(running),
            cpu_of: Box::new(move || vec![opsd_pid]),
        },
        Target {
            row: Row::new("opsd sqlite, done operations, traced (always_on)"),
            server: &traced,
            ids: Arc::new(traced_done),
            cpu_of: Box::new(move || vec![traced_pid]),
        },
        Target {
            row: Row::new("opsd sqlite, running operations, traced (always_on)"),
            server: &traced,
            ids: Arc::new(traced_running),
            cpu_of: Box::new(move || vec![traced_pid]),
        },
    ];
    let spans_before = collector.spans();
    measure(plan, &mut targets).await?;
    let rows: Vec<Row> = targets.into_iter().map(|t| t.row).collect();
    harness::print_table(
        "get of hot operations, embedded (req/s; ratio to the baseline)",
        "req/s",
        &rows,
        Some("baseline (constant reply)"),
    );
    // The cost of a span per call: traced rows against their untraced twins.
    let cpu = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(Row::cpu_us_per_call)
            .unwrap_or_default()
    };
    let rate = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(Row::per_second)
            .unwrap_or_default()
    };
    let mut tracing_cost = Vec::new();
    for state in ["done", "running"] {
        let plain = format!("opsd sqlite, {state} operations");
        let traced = format!("{plain}, traced (always_on)");
        let extra_cpu = cpu(&traced) - cpu(&plain);
        let ratio = rate(&traced) / rate(&plain).max(1e-9);
        println!(
            "tracing, {state} operations: {ratio:.2}× the untraced throughput, {extra_cpu:+.1} µs of server CPU per call"
        );
        tracing_cost.push(json!({
            "operations": state,
            "throughput_ratio": ratio,
            "extra_cpu_us_per_call": extra_cpu,
        }));
    }
    let exported = collector.spans() - spans_before;
    println!("spans the bench's collector received while measuring: {exported}");
    Ok(json!({
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "tracing_cost": tracing_cost,
        "spans_exported": exported,
    }))
}

pub async fn postgres(
    plan: &Plan,
    bins: &Binaries,
    pinning: Pinning,
    cluster: &opsd_testkit::Cluster,
) -> anyhow::Result<Value> {
    let data = tempfile::tempdir()?;
    let url = cluster.url("postgres");
    let pool = "16";
    let baseline = Server::start(bins.baseline())?;
    let opsd = Server::start(bins.opsd(
        data.path(),
        &["--store", &url, "--postgres-max-connections", pool],
    ))?;
    let postmaster = cluster
        .postmaster_pid()
        .context("postgres is not running")?;
    pinning.server(postmaster);
    pinning.server(baseline.pid());
    pinning.server(opsd.pid());
    let done = hot_operations(&opsd, HOT_OPERATIONS, true).await?;
    let running = hot_operations(&opsd, HOT_OPERATIONS, false).await?;
    let (baseline_pid, opsd_pid) = (baseline.pid(), opsd.pid());
    let mut targets = [
        Target {
            row: Row::new("baseline (constant reply)"),
            server: &baseline,
            ids: Arc::new(vec!["ops00000000000000001".to_owned()]),
            cpu_of: Box::new(move || vec![baseline_pid]),
        },
        Target {
            row: Row::new("opsd postgres, done operations"),
            server: &opsd,
            ids: Arc::new(done),
            cpu_of: Box::new(move || postgres_pids(postmaster, opsd_pid)),
        },
        Target {
            row: Row::new("opsd postgres, running operations"),
            server: &opsd,
            ids: Arc::new(running),
            cpu_of: Box::new(move || postgres_pids(postmaster, opsd_pid)),
        },
    ];
    measure(plan, &mut targets).await?;
    let mut rows: Vec<Row> = targets.into_iter().map(|t| t.row).collect();
    drop(opsd);
    rows.push(pgbench_select(plan, pinning, cluster, pool.parse()?)?);
    harness::print_table(
        "get of hot operations, postgres (req/s; ratio to the baseline)",
        "req/s",
        &rows,
        Some("baseline (constant reply)"),
    );
    let pgbench = rows.last().map(Row::per_second).unwrap_or_default();
    let running = rows
        .iter()
        .find(|r| r.name.contains("running"))
        .map(Row::per_second)
        .unwrap_or_default();
    println!(
        "opsd postgres running / pgbench -S: {:.2}×",
        running / pgbench.max(1e-9)
    );
    Ok(json!({
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "ratio_running_to_pgbench": running / pgbench.max(1e-9),
    }))
}

/// The postmaster's backends (its children) and opsd: everything a Get costs.
pub fn postgres_pids(postmaster: u32, opsd: u32) -> Vec<u32> {
    let mut pids = vec![opsd, postmaster];
    if let Ok(children) =
        std::fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children"))
    {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids
}

/// `pgbench -S` (primary-key selects, prepared) with as many clients as opsd
/// has database connections: the database's own ceiling for point reads.
fn pgbench_select(
    plan: &Plan,
    pinning: Pinning,
    cluster: &opsd_testkit::Cluster,
    clients: usize,
) -> anyhow::Result<Row> {
    let bin = opsd_testkit::postgres_bin_dir().context("no pgbench")?;
    let pgbench = bin.join("pgbench");
    let url = cluster.url("postgres");
    let status = Command::new(&pgbench)
        .args(["-i", "-q", "-s", "10", &url])
        .output()?;
    anyhow::ensure!(
        status.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let seconds = plan.measured.as_secs().max(1).to_string();
    let mut row = Row::new(format!("pgbench -S -M prepared, {clients} clients"));
    for _ in 0..plan.repetitions {
        let mut command = Command::new(&pgbench);
        command.args([
            "-S",
            "-M",
            "prepared",
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "1",
            "-T",
            &seconds,
            &url,
        ]);
        pinning.load_command(&mut command);
        let output = command.output()?;
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let tps: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no tps in pgbench output: {text}"))?;
        let latency_ms: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("latency average = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        row.runs.push(harness::Run {
            calls: (tps * plan.measured.as_secs_f64()) as u64,
            per_second: tps,
            p50_us: latency_ms * 1000.0,
            p99_us: 0.0,
            cpu_us_per_call: 0.0,
        });
    }
    row.extra = json!({ "note": "p50 column is pgbench's average latency; no p99 or CPU" });
    Ok(row)
}
