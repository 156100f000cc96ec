//! `opsd-bench`: opsd's benchmarks, each against a baseline measured in the
//! same run.
//!
//! Servers run as their own processes, pinned to CPU 0 when the machine has
//! two or more (the load generator takes the others). Comparisons run
//! A/B/A/B with warm-up; every response is checked (a run with errors fails);
//! results are medians over the repetitions, printed as tables and written as
//! JSON with a description of the machine, one file per scenario.
//!
//! Scenarios: `get` (embedded), `get-postgres` (with `pgbench -S`), `write`
//! (Create + Complete, group commit against one commit per write), `watch`
//! (fan-out memory and latency), `scale` (large store, retention under load),
//! `feed` (change feed delivery and latency, and the timeline's cost on writes),
//! `console` (the web console's first page over a store of many operations,
//! from the server and in a real Chromium).

mod collector;
mod console;
mod feed;
mod get;
mod harness;
mod scale;
mod targets;
mod watch;
mod write;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde_json::json;

use harness::{Binaries, Pinning, Plan};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Get,
    GetPostgres,
    Write,
    Watch,
    Scale,
    Feed,
    Console,
}

#[derive(Debug, Parser)]
#[command(about = "Benchmarks opsd against same-run baselines")]
struct Args {
    /// Scenarios to run [default: all].
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
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
    /// Fixed-rate mode for the Get scenarios: this many calls per second,
    /// started on schedule whatever the answers do (latency, not throughput).
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Producer counts of the write scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    producers: Vec<usize>,
    /// Watchers of the watch scenario.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Operations of the large store of the scale scenario.
    #[arg(long, default_value_t = 10_000_000)]
    large_store: usize,
    /// Expired operations retention deletes in the scale scenario.
    #[arg(long, default_value_t = 1_000_000)]
    expired: usize,
    /// Feed reader counts of the feed scenario (WatchOperations streams).
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    feed_readers: Vec<usize>,
    /// Operations per second of the feed scenario's latency runs.
    #[arg(long, default_value_t = 500.0, value_name = "PER_SECOND")]
    feed_rate: f64,
    /// Operations in the store of the console scenario.
    #[arg(long, default_value_t = 10_000)]
    console_operations: usize,
    /// Page loads in Chromium per store of the console scenario.
    #[arg(long, default_value_t = 100)]
    console_browser_loads: usize,
    /// Seconds-long runs on tiny data: checks the harness, measures nothing.
    #[arg(long)]
    quick: bool,
    /// Where the JSON results go (one file per scenario).
    #[arg(long, default_value = "bench-results")]
    out_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = if args.quick {
        Plan {
            warmup: Duration::from_millis(100),
            measured: Duration::from_millis(300),
            repetitions: 1,
            connections: args.connections,
            concurrency: args.concurrency.min(16),
            rate: args.rate,
            quick: true,
        }
    } else {
        Plan {
            warmup: Duration::from_secs_f64(args.warmup),
            measured: Duration::from_secs_f64(args.seconds),
            repetitions: args.repetitions.max(1),
            connections: args.connections,
            concurrency: args.concurrency,
            rate: args.rate,
            quick: false,
        }
    };
    let bins = Binaries {
        opsd: match &args.opsd {
            Some(path) => path.clone(),
            None => harness::sibling("opsd")?,
        },
        baseline: match &args.baseline {
            Some(path) => path.clone(),
            None => harness::sibling("opsd-bench-baseline")?,
        },
    };
    let scenarios = if args.scenarios.is_empty() {
        vec![
            Scenario::Get,
            Scenario::GetPostgres,
            Scenario::Write,
            Scenario::Watch,
            Scenario::Scale,
            Scenario::Feed,
            Scenario::Console,
        ]
    } else {
        args.scenarios.clone()
    };
    let pinning = Pinning::detect();
    let machine = harness::machine(pinning);
    let needs_postgres = scenarios
        .iter()
        .any(|s| matches!(s, Scenario::GetPostgres | Scenario::Write | Scenario::Watch));
    // One throwaway cluster for every PostgreSQL measurement; required only
    // by get-postgres (the others then measure SQLite alone, and say so).
    let cluster = if needs_postgres {
        opsd_testkit::dedicated_cluster()
    } else {
        None
    };
    if needs_postgres && cluster.is_none() {
        eprintln!("no postgresql: postgres rows are left out");
    }

    let mut measured = Vec::new();
    for scenario in scenarios {
        let (name, results) = match scenario {
            Scenario::Get => ("get", get::embedded(&plan, &bins, pinning).await?),
            Scenario::GetPostgres => {
                let cluster = cluster
                    .as_ref()
                    .context("the get-postgres scenario needs postgresql")?;
                (
                    "get-postgres",
                    get::postgres(&plan, &bins, pinning, cluster).await?,
                )
            }
            Scenario::Write => {
                let producers: Vec<usize> = if args.quick {
                    vec![1, 4]
                } else {
                    args.producers.clone()
                };
                (
                    "write",
                    write::run(&plan, &bins, pinning, cluster.as_ref(), &producers).await?,
                )
            }
            Scenario::Watch => {
                let shape = if args.quick {
                    watch::Shape {
                        watchers: 200,
                        operations: 10,
                        connections: 4,
                    }
                } else {
                    watch::Shape {
                        watchers: args.watchers,
                        operations: 100,
                        connections: args.watchers.div_ceil(100).max(1),
                    }
                };
                (
                    "watch",
                    watch::run(&shape, &bins, pinning, cluster.as_ref()).await?,
                )
            }
            Scenario::Scale => {
                let sizes = if args.quick {
                    scale::Sizes {
                        small: 1_000,
                        large: 20_000,
                        expired: 5_000,
                        rate: 500.0,
                    }
                } else {
                    scale::Sizes {
                        small: 10_000,
                        large: args.large_store,
                        expired: args.expired,
                        rate: 2_000.0,
                    }
                };
                ("scale", scale::run(&plan, &sizes, &bins, pinning).await?)
            }
            Scenario::Feed => {
                let shape = feed::Shape {
                    readers: args.feed_readers.clone(),
                    rate: if args.quick {
                        args.feed_rate.min(200.0)
                    } else {
                        args.feed_rate
                    },
                };
                ("feed", feed::run(&plan, &shape, &bins, pinning).await?)
            }
            Scenario::Console => {
                let sizes = if args.quick {
                    console::Sizes {
                        operations: 1_000,
                        loads: 5,
                        browser_loads: 3,
                    }
                } else {
                    console::Sizes {
                        operations: args.console_operations,
                        loads: 50,
                        browser_loads: args.console_browser_loads,
                    }
                };
                (
                    "console",
                    console::run(&plan, &sizes, &bins, pinning).await?,
                )
            }
        };
        let report = json!({
            "scenario": name,
            "quick": plan.quick,
            "repetitions": plan.repetitions,
            "measured_seconds": plan.measured.as_secs_f64(),
            "warmup_seconds": plan.warmup.as_secs_f64(),
            "connections": plan.connections,
            "concurrency": plan.concurrency,
            "rate": plan.rate,
            "machine": machine,
            "results": results,
        });
        let path = harness::write_json(&args.out_dir, name, &report)?;
        println!("({})", path.display());
        measured.push((name, report["results"].clone()));
    }
    // Quick runs measure nothing, so they are held to no target.
    if !plan.quick {
        let report = json!({
            "scenario": "targets",
            "machine": machine,
            "results": targets::evaluate(&measured),
        });
        let path = harness::write_json(&args.out_dir, "targets", &report)?;
        println!("({})", path.display());
    }
    Ok(())
}
