//! `snapshot-service`: `POST /snapshots {"disk":"disk-1"}` answers at once
//! with the opsd operation that tracks the snapshot.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use opsd_client::{Client, ConnectOptions};
use opsd_example_snapshot::{Work, start, work};

#[derive(Parser)]
#[command(about = "A toy disk-snapshot service that runs its work as opsd operations")]
struct Args {
    /// Where this service listens.
    #[arg(long, default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// opsd's address.
    #[arg(long, env = "OPSD_ENDPOINT", default_value = "127.0.0.1:7117")]
    opsd: String,
    /// opsd token of a producer.
    #[arg(long, env = "OPSD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(serde::Deserialize)]
struct SnapshotRequest {
    disk: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = ConnectOptions {
        token: args.token,
        ..Default::default()
    };
    let client = Arc::new(Client::connect_with(&args.opsd, options).await?);
    let app = Router::new()
        .route("/snapshots", post(snapshot))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("snapshot-service listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn snapshot(
    State(client): State<Arc<Client>>,
    Json(request): Json<SnapshotRequest>,
) -> (StatusCode, Json<serde_json::Value>) {
    match start(&client, &request.disk).await {
        Ok(operation) => {
            let id = operation.id().to_owned();
            tokio::spawn(async move {
                if let Err(e) = work(operation, &request.disk, &Work::default()).await {
                    eprintln!("snapshot of {} failed: {e}", request.disk);
                }
            });
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "operationId": id })),
            )
        }
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": e.to_string() })),
        ),
    }
}
