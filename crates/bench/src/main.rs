//! `opsd-bench`: Get of hot operations on opsd (embedded SQLite) against the
//! same-run baseline, a minimal tonic server answering a constant reply.
//!
//! Both servers run as their own processes, pinned to CPU 0 when the machine
//! has two or more (the load generator takes the others). Each comparison
//! runs A/B/A/B with warm-up; every response's status is checked (a run with
//! errors fails); results are medians over the repetitions, printed as a table
//! and written as JSON with a description of the machine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use opsd_proto::yandex::cloud::operation as ycop;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks opsd against a same-run baseline")]
struct Args {
    /// The opsd binary [default: next to this one].
    #[arg(long)]
    opsd: Option<PathBuf>,
    /// The baseline binary [default: next to this one].
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Measured time per run.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    seconds: f64,
    /// Unmeasured time before each run.
    #[arg(long, default_value = "1", value_name = "SECONDS")]
    warmup: f64,
    /// How many times each server is measured (interleaved A/B/A/B).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// HTTP/2 connections of the load generator.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight at once (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// A few hundred milliseconds per run, once: checks the harness, measures nothing.
    #[arg(long)]
    quick: bool,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
}

/// A server process and the address it announced.
struct Server {
    child: Child,
    endpoint: String,
}

impl Server {
    fn start(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start a server")?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let endpoint = loop {
            let line = lines
                .next()
                .context("the server exited before listening")??;
            if let Some(rest) = line.split("address=").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, endpoint })
    }

    /// User plus system CPU time the process has used.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
    }

    /// Peak resident memory (VmHWM), in bytes.
    fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .context("no VmHWM")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins every thread of `pid` to the given CPUs, when `taskset` is there.
fn pin(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-pc", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[derive(Clone, Debug)]
struct Run {
    requests: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_call: f64,
}

/// Closed-loop Get against `endpoint`, spreading over `ids`.
async fn load(
    server: &Server,
    ids: &[String],
    args: &Args,
    warmup: Duration,
    measured: Duration,
) -> anyhow::Result<Run> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.endpoint))?
                .connect()
                .await?;
        channels.push(channel);
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measured;
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let mut client = ycop::operation_service_client::OperationServiceClient::new(
            channels[worker % channels.len()].clone(),
        );
        let ids = ids.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = worker;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let request = ycop::GetOperationRequest {
                    operation_id: ids[n % ids.len()].clone(),
                };
                n += 1;
                let answer = client.get(request).await;
                if sent >= measure_from {
                    match answer {
                        Ok(_) => latencies.push(sent.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = server.cpu()?;
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let cpu_used = server.cpu()?.saturating_sub(cpu_before);
    if errors > 0 {
        bail!("{errors} requests failed: a run with errors measures nothing");
    }
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0) as f64
    };
    let requests = latencies.len() as u64;
    Ok(Run {
        requests,
        rps: requests as f64 / measured.as_secs_f64(),
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        cpu_us_per_call: cpu_used.as_secs_f64() * 1e6 / requests.max(1) as f64,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .context("no directory of the bench binary")?
        .join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first (cargo build --release -p opsd -p opsd-bench)",
        path.display()
    );
    Ok(path)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (warmup, measured, repetitions) = if args.quick {
        (Duration::from_millis(100), Duration::from_millis(300), 1)
    } else {
        (
            Duration::from_secs_f64(args.warmup),
            Duration::from_secs_f64(args.seconds),
            args.repetitions.max(1),
        )
    };
    let opsd_binary = match &args.opsd {
        Some(path) => path.clone(),
        None => sibling("opsd")?,
    };
    let baseline_binary = match &args.baseline {
        Some(path) => path.clone(),
        None => sibling("opsd-bench-baseline")?,
    };
    let data = tempfile::tempdir()?;
    let mut baseline_command = Command::new(&baseline_binary);
    baseline_command.arg("127.0.0.1:0");
    let baseline = Server::start(baseline_command)?;
    let mut opsd_command = Command::new(&opsd_binary);
    opsd_command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("OPSD_LOG", "info");
    let opsd = Server::start(opsd_command)?;

    // Read before pinning: pinning this process narrows what it can see.
    let machine_cpus = cpus();
    let pinned = machine_cpus >= 2
        && pin(baseline.child.id(), "0")
        && pin(opsd.child.id(), "0")
        && pin(std::process::id(), &format!("1-{}", machine_cpus - 1));

    // Hot operations: half done, half running.
    let client = opsd_client::Client::connect(&opsd.endpoint).await?;
    let mut ids = Vec::new();
    for n in 0..100 {
        let op = client
            .create(opsd_client::NewOperation::new(format!("hot {n}")))
            .await?;
        let id = op.operation.context("created operation")?.id;
        if n % 2 == 0 {
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
    let baseline_ids = vec!["ops00000000000000001".to_owned()];

    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..repetitions {
        runs[0].push(load(&baseline, &baseline_ids, &args, warmup, measured).await?);
        runs[1].push(load(&opsd, &ids, &args, warmup, measured).await?);
    }
    let summarize =
        |name: &str, runs: &[Run], server: &Server| -> anyhow::Result<serde_json::Value> {
            Ok(json!({
                "server": name,
                "requests": runs.iter().map(|r| r.requests).sum::<u64>(),
                "rps": median(runs.iter().map(|r| r.rps).collect()),
                "p50_us": median(runs.iter().map(|r| r.p50_us).collect()),
                "p99_us": median(runs.iter().map(|r| r.p99_us).collect()),
                "cpu_us_per_call": median(runs.iter().map(|r| r.cpu_us_per_call).collect()),
                "peak_rss_bytes": server.peak_rss()?,
            }))
        };
    let results = [
        summarize("baseline", &runs[0], &baseline)?,
        summarize("opsd-sqlite", &runs[1], &opsd)?,
    ];
    let ratio = results[1]["rps"].as_f64().unwrap_or(0.0)
        / results[0]["rps"].as_f64().unwrap_or(1.0).max(1e-9);

    println!(
        "scenario: get of hot operations (embedded) — {repetitions} × A/B, {measured:?} each, {} connections × {} in flight, pinned: {pinned}",
        args.connections, args.concurrency
    );
    println!(
        "{:<14} {:>10} {:>9} {:>9} {:>12} {:>10}",
        "server", "req/s", "p50 µs", "p99 µs", "cpu µs/call", "peak MiB"
    );
    for r in &results {
        println!(
            "{:<14} {:>10.0} {:>9.0} {:>9.0} {:>12.1} {:>10.1}",
            r["server"].as_str().unwrap_or_default(),
            r["rps"].as_f64().unwrap_or_default(),
            r["p50_us"].as_f64().unwrap_or_default(),
            r["p99_us"].as_f64().unwrap_or_default(),
            r["cpu_us_per_call"].as_f64().unwrap_or_default(),
            r["peak_rss_bytes"].as_u64().unwrap_or_default() as f64 / (1 << 20) as f64,
        );
    }
    println!("opsd / baseline req/s: {ratio:.2}");

    let machine = json!({
        "cpus": machine_cpus,
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "pinned": pinned,
    });
    let report = json!({
        "scenario": "get_hot_operations_embedded",
        "quick": args.quick,
        "repetitions": repetitions,
        "measured_seconds": measured.as_secs_f64(),
        "connections": args.connections,
        "concurrency": args.concurrency,
        "machine": machine,
        "results": results,
        "ratio_rps_opsd_to_baseline": ratio,
    });
    write(&args.out, &report)?;
    Ok(())
}

fn write(path: &Path, report: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
