//! opsctl: get, cancel, create and complete opsd operations from a shell.
//!
//! Exit codes: 0 success; 1 the server answered with an error (its gRPC code
//! name and message go to stderr); 2 bad usage; 3 opsd could not be reached.

mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opsd_client::{Client, ClientError, ConnectOptions};

use output::Format;

#[derive(Debug, Parser)]
#[command(name = "opsctl", version, about = "Command-line client of opsd")]
struct Cli {
    /// opsd's gRPC address, HOST:PORT or a full http(s):// URI.
    #[arg(
        long,
        global = true,
        env = "OPSD_ENDPOINT",
        default_value = "127.0.0.1:7117"
    )]
    endpoint: String,

    /// CA certificate (PEM) to verify an https:// endpoint with, instead of the web PKI roots.
    #[arg(long, global = true, env = "OPSD_CA")]
    ca: Option<std::path::PathBuf>,

    /// Sent as `authorization: Bearer <token>`.
    #[arg(long, global = true, env = "OPSD_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// How to print operations: readable text, or the proto3 JSON mapping.
    #[arg(long, global = true, value_enum, default_value = "text")]
    format: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an operation.
    Get(commands::get::Args),
    /// Cancel an operation.
    Cancel(commands::cancel::Args),
    /// Create an operation (producer API).
    Create(commands::create::Args),
    /// Complete an operation with a response or an error (producer API).
    Complete(commands::complete::Args),
}

const EXIT_RPC_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = match error.downcast_ref::<ClientError>() {
                Some(ClientError::Rpc(_)) => EXIT_RPC_ERROR,
                Some(_) => EXIT_UNREACHABLE,
                None => EXIT_USAGE,
            };
            match error.downcast_ref::<ClientError>() {
                // `CODE_NAME: message`, as the SDKs and grpcurl print statuses.
                Some(rpc @ ClientError::Rpc(_)) => eprintln!("{rpc}"),
                Some(other) => eprintln!("error: {other}"),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Arguments are checked before connecting, so usage errors need no server.
    let request = commands::Request::from_command(cli.command)?;
    let ca_pem = cli
        .ca
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("--ca {}: {e}", path.display()))
        })
        .transpose()?;
    let client = Client::connect_with(
        &cli.endpoint,
        ConnectOptions {
            ca_pem,
            token: cli.token,
        },
    )
    .await?;
    let operation = request.send(&client).await?;
    println!("{}", output::render(&operation, cli.format)?);
    Ok(())
}
