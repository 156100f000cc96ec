use std::fs::File;
use std::sync::Arc;

use anyhow::Context;
use opsd_core::{IdPrefix, SystemClock};
use opsd_server::ServeOptions;
use opsd_server::auth::Authenticator;
use opsd_server::config::{Command, Config, MigrateArgs, PostgresPooler, StoreKind, TokenArgs};
use opsd_server::discovery::Endpoints;
use opsd_server::grpc::GrpcOptions;
use opsd_server::tls::ReloadingCertificate;
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::{
    CachingStore, MemoryStore, OperationStore, PostgresOptions, PostgresStore, SqliteOptions,
    SqliteStore,
};

/// Every call allocates (headers, messages, the operation's strings), and
/// mimalloc's fast path costs a fraction of glibc's (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::load_from(std::env::args_os()).and_then(|config| {
        config.validate()?;
        Ok(config)
    }) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("opsd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if config.print_config {
        print!("{}", config.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(Command::Token(args)) = &config.command {
        return print_new_token(args);
    }
    if let Some(Command::Migrate(args)) = &config.command {
        // A migration makes no calls to trace: logs only.
        if let Err(e) = opsd_server::telemetry::init(config.log_format, None) {
            eprintln!("opsd: {e:#}");
            return std::process::ExitCode::from(2);
        }
        return migrate(&config, args).await;
    }
    let telemetry = match config
        .trace_export()
        .and_then(|export| opsd_server::telemetry::init(config.log_format, export.as_ref()))
    {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("opsd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = run(config, telemetry.exports()).await;
    telemetry.shutdown(std::time::Duration::from_secs(5)).await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "opsd failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, trace_spans: bool) -> anyhow::Result<()> {
    for path in &config.descriptor_sets {
        let messages = opsd_proto::json::register_descriptor_set_file(path)
            .map_err(|e| anyhow::anyhow!("--descriptor-set: {e}"))?;
        tracing::info!(file = %path.display(), messages = ?messages, "descriptor set loaded");
    }
    let authenticator = Arc::new(Authenticator::from_config(&config.auth())?);
    opsd_server::check_listen_address(config.listen, authenticator.is_anonymous())?;
    let default_id_prefix = IdPrefix::parse("id_prefix", &config.id_prefix)
        .map_err(|e| anyhow::anyhow!("--id-prefix: {e}"))?;

    // Held until exit: a second opsd on the same data directory would corrupt nothing
    // (SQLite locks) but would confuse everyone, so it is refused up front.
    let mut _data_dir_lock = None;
    if !config.sqlite_record_events && !matches!(config.store, StoreKind::Sqlite) {
        anyhow::bail!("--sqlite-record-events applies to the sqlite store only");
    }
    let store: Arc<dyn OperationStore> = match &config.store {
        StoreKind::Memory => Arc::new(
            MemoryStore::new().with_max_events_per_operation(config.max_events_per_operation),
        ),
        StoreKind::Postgres(url) => {
            tracing::info!(store = ?config.store, "opening postgres store");
            Arc::new(PostgresStore::open(postgres_options(&config, url)).await?)
        }
        StoreKind::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("cannot create data directory {}", config.data_dir.display())
            })?;
            let lock_path = config.data_dir.join("opsd.lock");
            let lock = File::create(&lock_path)
                .with_context(|| format!("cannot create {}", lock_path.display()))?;
            lock.try_lock().with_context(|| {
                format!(
                    "data directory {} is in use by another opsd",
                    config.data_dir.display()
                )
            })?;
            _data_dir_lock = Some(lock);
            let path = config.data_dir.join("opsd.db");
            tracing::info!(path = %path.display(), "opening sqlite store");
            if !config.sqlite_record_events {
                tracing::warn!(
                    "sqlite store records no events (a benchmark setting): \
                     ListEvents and WatchOperations fail"
                );
            }
            Arc::new(SqliteStore::open(SqliteOptions {
                max_batch: usize::try_from(config.sqlite_max_batch).unwrap_or(usize::MAX),
                max_events_per_operation: config.max_events_per_operation,
                record_events: config.sqlite_record_events,
                migrate: !config.database.no_migrate,
                running_cache_bytes: u64::try_from(config.cache_size).unwrap_or(u64::MAX),
                ..SqliteOptions::new(path)
            })?)
        }
    };

    let store: Arc<dyn OperationStore> = if config.cache_size > 0 {
        Arc::new(CachingStore::new(
            store,
            u64::try_from(config.cache_size).unwrap_or(u64::MAX),
        ))
    } else {
        store
    };

    let service = Arc::new(OperationService::new(
        Arc::clone(&store),
        Arc::new(SystemClock),
        ServiceConfig {
            default_id_prefix,
            retention: config.retention,
            max_wait: config.max_wait,
            stuck_after: config.console_stuck_after,
            retention_share: config.retention_share,
            ..ServiceConfig::default()
        },
    ));
    let background = service.spawn_background(config.reaper_interval, config.retention_interval);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let certificate = ReloadingCertificate::load(cert, key)?;
            let _reloader = certificate.spawn_reloader(std::time::Duration::from_secs(2));
            Some(certificate.server_config()?)
        }
        _ => None,
    };
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let public_address = config
        .public_address
        .clone()
        .unwrap_or_else(|| address.to_string());
    let options = ServeOptions {
        grpc: GrpcOptions {
            poll_interval: config.poll_interval,
            limits: config.limits(),
            ..GrpcOptions::default()
        },
        endpoints: Some(Endpoints::new(&public_address, &config.endpoint_ids)),
        public_address: Some(public_address),
        tls: tls.clone(),
        auth: authenticator,
        trace_spans,
        console: config.console(),
    };
    tracing::info!(%address, tls = tls.is_some(), store = ?config.store, "opsd listening");

    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(opsd_server::serve(listener, service, options, async move {
        shutdown.await;
        let _ = signalled.send(());
    }));
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => served??,
        _ = on_signal => match tokio::time::timeout(config.shutdown_grace, &mut server).await {
            Ok(served) => served??,
            Err(_) => {
                tracing::warn!(grace = ?config.shutdown_grace, "calls still open after the grace period, dropping them");
                server.abort();
            }
        },
    }
    drop(background);
    tracing::info!("calls finished, closing the store");
    store.close().await?;
    tracing::info!("opsd stopped");
    Ok(())
}

fn postgres_options(config: &Config, url: &str) -> PostgresOptions {
    PostgresOptions {
        listen_url: config.database.postgres_listen_url.clone(),
        pooled: config.database.postgres_pooler == PostgresPooler::Transaction,
        migrate: !config.database.no_migrate,
        max_connections: config.postgres_max_connections,
        timeout: config.store_timeout,
        max_events_per_operation: config.max_events_per_operation,
        ..PostgresOptions::new(url)
    }
}

/// `opsd migrate [--check]`: 0 when the schema is (now) this opsd's version;
/// 1 when it is behind or ahead, or cannot be read or changed.
async fn migrate(config: &Config, args: &MigrateArgs) -> std::process::ExitCode {
    let outcome = if args.check {
        check_schema(config).await
    } else {
        migrate_schema(config).await
    };
    match outcome {
        Ok(message) => {
            println!("{message}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opsd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn check_schema(config: &Config) -> anyhow::Result<String> {
    let version = match &config.store {
        StoreKind::Memory => anyhow::bail!("the memory store has no schema"),
        StoreKind::Sqlite => SqliteStore::schema_version(&config.data_dir.join("opsd.db"))?,
        StoreKind::Postgres(url) => {
            PostgresStore::schema_version(&postgres_options(config, url)).await?
        }
    };
    version.check().map_err(|e| anyhow::anyhow!(e))?;
    Ok(format!(
        "schema version {}: this opsd's, up to date",
        version.database
    ))
}

async fn migrate_schema(config: &Config) -> anyhow::Result<String> {
    let (before, after) = match &config.store {
        StoreKind::Memory => anyhow::bail!("the memory store has no schema"),
        StoreKind::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("cannot create data directory {}", config.data_dir.display())
            })?;
            SqliteStore::migrate_database(&config.data_dir.join("opsd.db"), None)?
        }
        StoreKind::Postgres(url) => {
            PostgresStore::migrate_database(&postgres_options(config, url), None).await?
        }
    };
    Ok(if before == after {
        format!("schema version {after}: already up to date")
    } else {
        format!("schema migrated from version {before} to {after}")
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal sent as soon as opsd says it listens is not lost.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(signal = "ctrl-c", "shutting down");
    })
}

/// `opsd token`: the token goes to the caller once; only its hash is stored.
fn print_new_token(args: &TokenArgs) -> std::process::ExitCode {
    for role in &args.roles {
        if opsd_core::Role::parse(role).is_none() {
            eprintln!("opsd: unknown role {role} (viewer, operator, producer or admin)");
            return std::process::ExitCode::from(2);
        }
    }
    for scope in args.scopes.iter().filter(|s| s.as_str() != "*") {
        if let Err(e) = opsd_core::principal::validate_scope("scope", scope) {
            eprintln!("opsd: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    let (token, hash) = opsd_server::auth::new_token();
    let list = |items: &[String]| {
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!("the token, shown once: give it to the caller (authorization: Bearer <token>)");
    println!("{token}");
    eprintln!("add this entry to the tokens file (--tokens-file):");
    eprintln!(
        "\n[[principal]]\nid = {:?}\ntoken_sha256 = \"{hash}\"\nscopes = [{}]\nroles = [{}]\n",
        args.id,
        list(&args.scopes),
        list(&args.roles)
    );
    std::process::ExitCode::SUCCESS
}
