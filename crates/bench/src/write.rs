//! Create + Complete: producers each creating an operation and completing it,
//! as fast as answers come. Durable SQLite with group commit against the same
//! store committing every write on its own; PostgreSQL with its pool against
//! one connection (one commit at a time). The memory store, which writes
//! nothing to disk, shows what the RPCs and the service cost on their own:
//! the ceiling any durable store can approach on this machine.

use std::process::Command;
use std::sync::Arc;

use anyhow::Context;
use opsd_proto::opsd::v1 as pb;
use serde_json::{Value, json};

use crate::harness::{self, Binaries, Pinning, Plan, Row, Server};

/// The servers compared: a name, and how to start opsd.
struct Setup {
    name: &'static str,
    args: Vec<String>,
    postgres: bool,
}

pub async fn run(
    plan: &Plan,
    bins: &Binaries,
    pinning: Pinning,
    cluster: Option<&opsd_testkit::Cluster>,
    producer_counts: &[usize],
) -> anyhow::Result<Value> {
    let mut setups = vec![
        Setup {
            name: "sqlite, group commit",
            args: vec![],
            postgres: false,
        },
        Setup {
            name: "sqlite, one commit per write",
            args: vec!["--sqlite-max-batch".into(), "1".into()],
            postgres: false,
        },
        Setup {
            name: "memory, nothing stored (the ceiling)",
            args: vec!["--store".into(), "memory".into()],
            postgres: false,
        },
    ];
    if let Some(cluster) = cluster {
        let url = cluster.url("postgres");
        setups.push(Setup {
            name: "postgres, 16 connections",
            args: vec![
                "--store".into(),
                url.clone(),
                "--postgres-max-connections".into(),
                "16".into(),
            ],
            postgres: true,
        });
        setups.push(Setup {
            name: "postgres, 1 connection",
            args: vec![
                "--store".into(),
                url,
                "--postgres-max-connections".into(),
                "1".into(),
            ],
            postgres: true,
        });
    }
    let mut tables = Vec::new();
    for &producers in producer_counts {
        let mut rows = Vec::new();
        for setup in &setups {
            let data = tempfile::tempdir()?;
            let args: Vec<&str> = setup.args.iter().map(String::as_str).collect();
            let opsd = Server::start(bins.opsd(data.path(), &args))?;
            pinning.server(opsd.pid());
            let postmaster = match (setup.postgres, cluster) {
                (true, Some(cluster)) => {
                    let pid = cluster
                        .postmaster_pid()
                        .context("postgres is not running")?;
                    pinning.server(pid);
                    Some(pid)
                }
                _ => None,
            };
            let opsd_pid = opsd.pid();
            let cpu_of = move || match postmaster {
                Some(postmaster) => crate::get::postgres_pids(postmaster, opsd_pid),
                None => vec![opsd_pid],
            };
            let mut row = Row::new(format!("{} ({producers} producers)", setup.name));
            let plan = Plan {
                concurrency: producers,
                rate: None,
                ..plan.clone()
            };
            for _ in 0..plan.repetitions {
                let channels =
                    harness::channels(&opsd.endpoint, plan.connections.min(producers)).await?;
                let clients: Arc<Vec<_>> = Arc::new(
                    channels
                        .into_iter()
                        .map(pb::producer_service_client::ProducerServiceClient::new)
                        .collect(),
                );
                let run = harness::drive(&plan, &cpu_of, move |worker, _| {
                    let mut client = clients[worker % clients.len()].clone();
                    async move { create_and_complete(&mut client).await }
                })
                .await
                .with_context(|| row.name.clone())?;
                row.runs.push(run);
            }
            row.peak_rss = opsd.peak_rss().ok();
            row.extra = json!({ "producers": producers, "setup": setup.name });
            rows.push(row);
            drop(opsd);
            if setup.postgres
                && let Some(cluster) = cluster
            {
                truncate(cluster)?;
            }
        }
        harness::print_table(
            &format!(
                "create + complete, {producers} producers (operations/s; ratio to one commit per write)"
            ),
            "ops/s",
            &rows,
            Some(&format!(
                "sqlite, one commit per write ({producers} producers)"
            )),
        );
        tables.push(json!({
            "producers": producers,
            "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({ "tables": tables }))
}

/// One operation's life: Create, then Complete with a response. Both calls
/// must succeed and the completion must be the one stored.
pub async fn create_and_complete(
    client: &mut pb::producer_service_client::ProducerServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    let created = client
        .create(pb::CreateOperationRequest {
            description: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = created.operation.context("no operation in the answer")?.id;
    let completed = client
        .complete(pb::CompleteOperationRequest {
            operation_id: id,
            result: Some(pb::complete_operation_request::Result::Response(
                opsd_client::pack_struct(&Default::default()),
            )),
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        completed.operation.is_some_and(|op| op.done),
        "the completed operation is not done"
    );
    Ok(())
}

/// Empties the tables between runs so each starts alike.
fn truncate(cluster: &opsd_testkit::Cluster) -> anyhow::Result<()> {
    let psql = opsd_testkit::postgres_bin_dir()
        .context("no psql")?
        .join("psql");
    let output = Command::new(psql)
        .args([
            &cluster.url("postgres"),
            "-q",
            "-c",
            "TRUNCATE operations, events",
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "truncate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
