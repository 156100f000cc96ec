//! opsctl: opsd operations from a shell.
//!
//! Exit codes: 0 success; 1 the server answered with an error (its gRPC code
//! name and message go to stderr); 2 bad usage; 3 opsd could not be reached;
//! and for `wait`: 4 the operation failed, 5 it was cancelled, 6 the wait
//! timed out, 7 (with `--stop-at-failure`) a failure was reported while the
//! operation still runs; `watch --all` runs until interrupted: 130 at Ctrl-C.
//! A closed stdout (`opsctl list | head`) ends any command quietly, with the
//! exit code it would have had.

mod commands;
mod live;
mod output;
mod profile;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use opsd_client::{Client, ClientError, ConnectOptions, FeedNotice, FollowOptions};

use output::Format;

#[derive(Debug, Parser)]
#[command(name = "opsctl", version, about = "Command-line client of opsd")]
struct Cli {
    /// opsd's address, HOST:PORT or a full http(s):// URI [default: the
    /// profile's, else 127.0.0.1:7117].
    #[arg(long, global = true, env = "OPSD_ENDPOINT")]
    endpoint: Option<String>,

    /// The profile of the config file (~/.config/opsd/config.toml) to use.
    #[arg(long, global = true, env = "OPSD_PROFILE")]
    profile: Option<String>,

    /// CA certificate (PEM) to verify an https:// endpoint with, instead of the web PKI roots.
    #[arg(long, global = true, env = "OPSD_CA")]
    ca: Option<std::path::PathBuf>,

    /// Sent as `authorization: Bearer <token>`.
    #[arg(long, global = true, env = "OPSD_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// A producer's message types (a serialized FileDescriptorSet, as `protoc
    /// --include_imports --descriptor_set_out` or `buf build` writes it), so
    /// that JSON output prints their payloads field by field. Repeatable.
    #[arg(
        long = "descriptor-set",
        global = true,
        env = "OPSD_DESCRIPTOR_SETS",
        value_delimiter = ','
    )]
    descriptor_sets: Vec<std::path::PathBuf>,

    /// How to print operations: readable text, or the proto3 JSON mapping.
    #[arg(long, global = true, value_enum, default_value = "text")]
    format: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Debug, Subcommand)]
enum Command {
    /// Print an operation.
    Get(commands::get::Args),
    /// Cancel an operation.
    Cancel(commands::cancel::Args),
    /// Create an operation (producer API).
    Create(commands::create::Args),
    /// Complete an operation with a response or an error (producer API).
    Complete(commands::complete::Args),
    /// Report progress of a running operation (producer API).
    Progress(commands::progress::Args),
    /// Report a failure while the operation still runs, cleaning up (producer API).
    ReportFailure(commands::report_failure::Args),
    /// Wait until an operation is done; the exit code tells how it ended.
    Wait(commands::wait::Args),
    /// Print an operation's state, then every change, until it is done; or,
    /// with --all, follow the events of every operation.
    Watch(commands::watch::Args),
    /// Print an operation's timeline: every event, oldest first.
    Events(commands::events::Args),
    /// List operations, newest first.
    List(commands::list::Args),
    /// What runs, what is stuck and why, and how each producer (id prefix)
    /// fared lately: completions, failed share, time to done, cancellations.
    Overview(commands::overview::Args),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const EXIT_RPC_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_FAILED: u8 = 4;
const EXIT_CANCELLED: u8 = 5;
const EXIT_TIMED_OUT: u8 = 6;
const EXIT_FAILURE_REPORTED: u8 = 7;
/// 128 + SIGINT, as shells report a command ended by Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let code = match error.downcast_ref::<ClientError>() {
                Some(ClientError::Rpc(_) | ClientError::FeedTooOld { .. }) => EXIT_RPC_ERROR,
                Some(_) => EXIT_UNREACHABLE,
                None => EXIT_USAGE,
            };
            match error.downcast_ref::<ClientError>() {
                // `CODE_NAME: message`, as the SDKs and grpcurl print statuses.
                Some(rpc @ (ClientError::Rpc(_) | ClientError::FeedTooOld { .. })) => {
                    eprintln!("{rpc}")
                }
                Some(other) => eprintln!("error: {other}"),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    for path in &cli.descriptor_sets {
        opsd_proto::json::register_descriptor_set_file(path)
            .map_err(|e| anyhow::anyhow!("--descriptor-set: {e}"))?;
    }
    let command = match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Into a buffer: writing straight to stdout panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "opsctl", &mut script);
            write_stdout(&script)?;
            return Ok(0);
        }
        command => command,
    };
    // Arguments are checked before connecting, so usage errors need no server.
    let request = match &command {
        Command::Wait(_)
        | Command::Watch(_)
        | Command::List(_)
        | Command::Overview(_)
        | Command::Events(_) => None,
        _ => Some(commands::Request::from_command(command.clone())?),
    };
    let profile = profile::load(profile::config_path().as_deref(), cli.profile.as_deref())?;
    let endpoint = cli
        .endpoint
        .or(profile.endpoint)
        .unwrap_or_else(|| profile::DEFAULT_ENDPOINT.to_owned());
    let ca_pem = cli
        .ca
        .or(profile.ca)
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("--ca {}: {e}", path.display()))
        })
        .transpose()?;
    let client = Client::connect_with(
        &endpoint,
        ConnectOptions {
            ca_pem,
            token: cli.token.or(profile.token),
            // As otel-cli and friends pass a parent span to a command.
            traceparent: std::env::var("TRACEPARENT").ok(),
            tracestate: std::env::var("TRACESTATE").ok(),
        },
    )
    .await?;
    if let Some(request) = request {
        let (operation, trace_id) = request.send(&client).await?;
        print_line(&output::render_traced(
            &operation,
            trace_id.as_deref(),
            cli.format,
        )?)?;
        return Ok(0);
    }
    match command {
        Command::Wait(args) => wait(&client, &args, cli.format).await,
        Command::Watch(args) if args.all => watch_all(&client, &args, cli.format).await,
        Command::Watch(args) => {
            let id = args.id.expect("clap requires an id without --all");
            if live::wanted(cli.format) {
                live::follow(client.clone(), id.clone()).await;
                let latest = client.get(&id).await?;
                print_line(&output::render(&latest, cli.format)?)?;
                return Ok(0);
            }
            let mut stream = client.watch(&id).await?;
            while let Some(op) = stream.message().await.map_err(ClientError::from)? {
                if print_line(&output::render_update(&op, cli.format)?)? == Stdout::Closed {
                    break;
                }
            }
            Ok(0)
        }
        Command::Events(args) => {
            let events = args.timeline(&client).await?;
            print_line(&output::render_events(&events, cli.format)?)?;
            Ok(0)
        }
        Command::List(args) => {
            let page = client.list(args.request()).await?;
            print_line(&output::render_list(&page, cli.format)?)?;
            Ok(0)
        }
        Command::Overview(args) => {
            let overview = client.overview(args.request()).await?;
            print_line(&output::render_overview(&overview, cli.format)?)?;
            Ok(0)
        }
        _ => unreachable!("single-operation commands returned above"),
    }
}

/// Follows the change feed until Ctrl-C (or a closed stdout), printing each
/// event; says on stderr when the connection drops and it resumes.
async fn watch_all(
    client: &Client,
    args: &commands::watch::Args,
    format: Format,
) -> anyhow::Result<u8> {
    let options = FollowOptions {
        notify: Some(Arc::new(announce_interruptions())),
        ..FollowOptions::default()
    };
    let mut feed = client
        .follow_operations(args.filter(), args.resume_token.clone(), options)
        .await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let item = tokio::select! {
            next = feed.next() => next?,
            _ = &mut interrupted => {
                if let Some(token) = feed.resume_token() {
                    // After the terminal's `^C`, on a line of its own.
                    let newline = if std::io::stderr().is_terminal() { "\n" } else { "" };
                    eprintln!("{newline}resume with: --resume-token {token}");
                }
                return Ok(EXIT_INTERRUPTED);
            }
        };
        let Some(item) = item else {
            return Ok(0);
        };
        if print_line(&output::render_feed_event(&item, format)?)? == Stdout::Closed {
            return Ok(0);
        }
    }
}

/// Whether anyone still reads what opsctl prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stdout {
    Open,
    /// The reader went away (`opsctl list | head`): the command is done, not
    /// failed, and prints nothing more.
    Closed,
}

/// Prints `text` and a newline, flushed, so a follower's line shows at once.
fn print_line(text: &str) -> std::io::Result<Stdout> {
    write_stdout(format!("{text}\n").as_bytes())
}

/// Writes to stdout without `println!`'s panic when the pipe is closed.
fn write_stdout(bytes: &[u8]) -> std::io::Result<Stdout> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Stdout::Open),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(Stdout::Closed),
        Err(error) => Err(error),
    }
}

/// Says on stderr when the feed drops and when it is back: once per
/// interruption, and again only when the reason changes.
fn announce_interruptions() -> impl Fn(FeedNotice<'_>) + Send + Sync {
    let last = std::sync::Mutex::new(None::<String>);
    move |notice| {
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match notice {
            FeedNotice::Interrupted(error) => {
                let reason = error.to_string();
                match last.as_deref() {
                    None => eprintln!("feed interrupted ({reason}), reconnecting"),
                    Some(previous) if previous != reason => {
                        eprintln!("still reconnecting: {reason}")
                    }
                    Some(_) => {}
                }
                *last = Some(reason);
            }
            FeedNotice::Resumed => {
                eprintln!("feed resumed");
                *last = None;
            }
        }
    }
}

/// Waits, prints the final (or latest) state, and exits by how it ended.
async fn wait(client: &Client, args: &commands::wait::Args, format: Format) -> anyhow::Result<u8> {
    let options = opsd_client::WaitOptions {
        timeout: args.timeout,
        stop_at_reported_failure: args.stop_at_failure,
        ..Default::default()
    };
    let bar =
        live::wanted(format).then(|| tokio::spawn(live::follow(client.clone(), args.id.clone())));
    let waited = client.wait_until_done(&args.id, options).await;
    if let Some(mut bar) = bar {
        // The bar clears itself once it sees the end; on a timeout it stops here.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), &mut bar).await;
        bar.abort();
    }
    let code = match waited {
        Ok(_) => 0,
        Err(ClientError::OperationFailed { status, .. }) if status.code == 1 => EXIT_CANCELLED,
        Err(ClientError::OperationFailed { .. }) => EXIT_FAILED,
        Err(ClientError::WaitTimedOut { .. }) => EXIT_TIMED_OUT,
        Err(ClientError::FailureReported { .. }) => EXIT_FAILURE_REPORTED,
        Err(other) => return Err(other.into()),
    };
    let latest = client.get(&args.id).await?;
    print_line(&output::render(&latest, format)?)?;
    Ok(code)
}
