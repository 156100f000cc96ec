//! What every scenario needs: server processes it can pin and measure, load
//! generators (closed loop and fixed rate), medians and a report.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// How long and how hard each measurement runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub warmup: Duration,
    pub measured: Duration,
    pub repetitions: usize,
    pub connections: usize,
    pub concurrency: usize,
    /// Requests per second for latency runs; `None` runs closed-loop.
    pub rate: Option<f64>,
    pub quick: bool,
}

/// A server process and the address it announced.
pub struct Server {
    pub child: Child,
    pub endpoint: String,
}

impl Server {
    /// Starts `command` and waits for its `address=HOST:PORT` log line.
    pub fn start(mut command: Command) -> anyhow::Result<Self> {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        memory(self.pid(), "VmHWM:")
    }

    pub fn rss(&self) -> anyhow::Result<u64> {
        memory(self.pid(), "VmRSS:")
    }

    pub async fn client(&self) -> anyhow::Result<opsd_client::Client> {
        Ok(opsd_client::Client::connect(&self.endpoint).await?)
    }

    /// One counter or gauge from `/metrics` (the sum over its label sets).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        self.metric_where(name, "").await
    }

    /// One counter or gauge from `/metrics`, summed over the label sets that
    /// contain `label` (`operation="read_feed"`; empty for all of them).
    pub async fn metric_where(&self, name: &str, label: &str) -> anyhow::Result<f64> {
        let text = http_get(&self.endpoint, "/metrics").await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && labels.contains(label)).then(|| value.parse::<f64>().ok())?
            })
            .sum())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET on loopback (the metrics page), without another client crate.
pub async fn http_get(endpoint: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(endpoint).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {endpoint}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed http response")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    Ok(body.to_owned())
}

/// User plus system CPU time a process has used.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
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

fn memory(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
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

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where servers run and where the load generator runs, when the machine has
/// two or more CPUs: servers on CPU 0, everything else on the rest.
#[derive(Clone, Copy, Debug)]
pub struct Pinning {
    pub machine_cpus: usize,
    pub enabled: bool,
}

impl Pinning {
    /// Reads the CPU count before pinning this process narrows what it sees.
    pub fn detect() -> Self {
        let machine_cpus = cpus();
        let enabled =
            machine_cpus >= 2 && pin(std::process::id(), &format!("1-{}", machine_cpus - 1));
        Self {
            machine_cpus,
            enabled,
        }
    }

    pub fn server(&self, pid: u32) {
        if self.enabled {
            pin(pid, "0");
        }
    }

    /// A load tool other than this process (pgbench).
    pub fn load_command(&self, command: &mut Command) -> bool {
        if self.enabled {
            let program = command.get_program().to_owned();
            let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
            *command = Command::new("taskset");
            command
                .arg("-c")
                .arg(format!("1-{}", self.machine_cpus - 1))
                .arg(program)
                .args(args);
        }
        self.enabled
    }
}

/// Pins every thread of `pid` to `cpus`, when `taskset` is there.
fn pin(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-pc", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn machine(pinning: Pinning) -> Value {
    json!({
        "cpus": pinning.machine_cpus,
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())),
        "memory_bytes": memory_total(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "pinned": pinning.enabled,
    })
}

fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One measured run.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub calls: u64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_call: f64,
}

/// Latencies in microseconds, sorted.
pub fn quantile(sorted: &[u32], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0) as f64
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Drives `call(worker, n)` closed-loop (each of `concurrency` workers sends
/// its next call when the last one answered) or at a fixed rate (calls start
/// on schedule whatever the answers do; latency counts from the scheduled
/// start, so a stall is not hidden). Every call must succeed: one failure
/// fails the run. `cpu_of` names the processes whose CPU time is charged
/// (asked again at the end: a database may start backends meanwhile).
pub async fn drive<F, Fut>(
    plan: &Plan,
    cpu_of: &(dyn Fn() -> Vec<u32> + Sync),
    call: F,
) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.measured;
    let mut tasks = Vec::new();
    match plan.rate {
        None => {
            for worker in 0..plan.concurrency.max(1) {
                let call = Arc::clone(&call);
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failure = None;
                    let mut n = 0u64;
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let answer = call(worker, n).await;
                        n += 1;
                        if sent >= measure_from {
                            match answer {
                                Ok(()) => latencies.push(sent.elapsed().as_micros() as u32),
                                Err(e) => {
                                    failure.get_or_insert(e);
                                }
                            }
                        }
                    }
                    (latencies, failure)
                }));
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
            // One scheduler per worker keeps each task's queue short.
            let workers = plan.concurrency.max(1);
            for worker in 0..workers {
                let call = Arc::clone(&call);
                tasks.push(tokio::spawn(async move {
                    let mut in_flight = tokio::task::JoinSet::new();
                    let mut n = worker as u64;
                    loop {
                        let scheduled = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
                        if scheduled >= end {
                            break;
                        }
                        tokio::time::sleep_until(scheduled.into()).await;
                        let call = Arc::clone(&call);
                        in_flight.spawn(async move {
                            let answer = call(worker, n).await;
                            (scheduled, scheduled.elapsed(), answer)
                        });
                        n += workers as u64;
                    }
                    let mut latencies = Vec::new();
                    let mut failure = None;
                    while let Some(done) = in_flight.join_next().await {
                        let (scheduled, latency, answer) = done.expect("calls do not panic");
                        if scheduled >= measure_from {
                            match answer {
                                Ok(()) => latencies.push(latency.as_micros() as u32),
                                Err(e) => {
                                    failure.get_or_insert(e);
                                }
                            }
                        }
                    }
                    (latencies, failure)
                }));
            }
        }
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = total_cpu(cpu_of)?;
    let mut latencies = Vec::new();
    let mut failure = None;
    let mut cpu_used = None;
    for task in tasks {
        let (l, f) = task.await?;
        if cpu_used.is_none() && Instant::now() >= end {
            cpu_used = Some(total_cpu(cpu_of)?.saturating_sub(cpu_before));
        }
        latencies.extend(l);
        failure = failure.or(f);
    }
    let cpu_used = match cpu_used {
        Some(used) => used,
        None => total_cpu(cpu_of)?.saturating_sub(cpu_before),
    };
    if let Some(e) = failure {
        bail!("a call failed (a run with errors measures nothing): {e:#}");
    }
    latencies.sort_unstable();
    let calls = latencies.len() as u64;
    Ok(Run {
        calls,
        per_second: calls as f64 / plan.measured.as_secs_f64(),
        p50_us: quantile(&latencies, 0.5),
        p99_us: quantile(&latencies, 0.99),
        cpu_us_per_call: cpu_used.as_secs_f64() * 1e6 / calls.max(1) as f64,
    })
}

/// Processes that exited meanwhile count as nothing.
fn total_cpu(pids: &(dyn Fn() -> Vec<u32> + Sync)) -> anyhow::Result<Duration> {
    Ok(pids()
        .into_iter()
        .filter_map(|pid| process_cpu(pid).ok())
        .sum())
}

/// HTTP/2 connections to `endpoint`, for spreading workers over.
pub async fn channels(
    endpoint: &str,
    count: usize,
) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    let mut channels = Vec::new();
    for _ in 0..count.max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// A row of a result table: a name and its medians over repetitions.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub runs: Vec<Run>,
    pub peak_rss: Option<u64>,
    /// Anything else worth keeping (configuration, counters).
    pub extra: Value,
}

impl Row {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            runs: Vec::new(),
            peak_rss: None,
            extra: json!({}),
        }
    }

    pub fn per_second(&self) -> f64 {
        median(self.runs.iter().map(|r| r.per_second).collect())
    }

    pub fn cpu_us_per_call(&self) -> f64 {
        median(self.runs.iter().map(|r| r.cpu_us_per_call).collect())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "calls": self.runs.iter().map(|r| r.calls).sum::<u64>(),
            "per_second": self.per_second(),
            "p50_us": median(self.runs.iter().map(|r| r.p50_us).collect()),
            "p99_us": median(self.runs.iter().map(|r| r.p99_us).collect()),
            "cpu_us_per_call": median(self.runs.iter().map(|r| r.cpu_us_per_call).collect()),
            "peak_rss_bytes": self.peak_rss,
            "repetitions": self.runs.len(),
            "extra": self.extra,
        })
    }
}

/// Prints rows as a table, each with its ratio to `reference` (a row name).
pub fn print_table(title: &str, unit: &str, rows: &[Row], reference: Option<&str>) {
    println!("\n{title}");
    println!(
        "{:<52} {:>10} {:>9} {:>9} {:>12} {:>10} {:>8}",
        "", unit, "p50 µs", "p99 µs", "cpu µs/call", "peak MiB", "ratio"
    );
    let reference = reference
        .and_then(|name| rows.iter().find(|r| r.name == name))
        .map(Row::per_second);
    for row in rows {
        let j = row.to_json();
        let ratio = reference
            .filter(|r| *r > 0.0)
            .map_or_else(String::new, |r| format!("{:.2}×", row.per_second() / r));
        println!(
            "{:<52} {:>10.0} {:>9.0} {:>9.0} {:>12.1} {:>10} {:>8}",
            row.name,
            row.per_second(),
            j["p50_us"].as_f64().unwrap_or_default(),
            j["p99_us"].as_f64().unwrap_or_default(),
            j["cpu_us_per_call"].as_f64().unwrap_or_default(),
            row.peak_rss.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.1}", b as f64 / (1 << 20) as f64)
            ),
            ratio
        );
    }
}

pub fn write_json(dir: &Path, scenario: &str, report: &Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{scenario}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The binaries the runner starts: given, or next to this one.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub opsd: PathBuf,
    pub baseline: PathBuf,
}

impl Binaries {
    pub fn opsd(&self, data_dir: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(&self.opsd);
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("OPSD_LOG", "info");
        command
    }

    pub fn baseline(&self) -> Command {
        let mut command = Command::new(&self.baseline);
        command.arg("127.0.0.1:0");
        command
    }
}

pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
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
