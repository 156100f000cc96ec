//! Configuration of the opsd process: defaults, then a TOML file
//! (`--config`), then `OPSD_…` environment variables, then flags; each
//! overrides the one before. The file's keys are the flags' names in
//! snake_case (`data_dir = "/var/lib/opsd"`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

/// The documented default: loopback on a fixed port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7117";

/// Where operations are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite in the data directory: durable, the default.
    Sqlite,
    /// In memory: everything is lost when opsd stops. For experiments.
    Memory,
    /// A PostgreSQL database shared by any number of opsd replicas.
    Postgres(String),
}

impl std::fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Sqlite => f.write_str("sqlite"),
            StoreKind::Memory => f.write_str("memory"),
            StoreKind::Postgres(url) => write!(f, "{}", redact_url(url)),
        }
    }
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Make a new token: prints it once, and the tokens-file entry holding its hash.
    Token(TokenArgs),
    /// Bring the store's schema up to this opsd's version and exit.
    Migrate(MigrateArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct MigrateArgs {
    /// Change nothing: exit 0 if the schema is this opsd's version, 1 if it
    /// is behind or ahead (or cannot be read).
    #[arg(long)]
    pub check: bool,
}

/// How opsd treats the database beyond `--store`: the notification
/// connection, a pooler in front, and schema changes.
#[derive(Clone, Debug, clap::Args)]
pub struct DatabaseArgs {
    /// Where the PostgreSQL notification (LISTEN) connection goes, straight to
    /// the database, when --store's URL goes through a pooler. Default: --store's URL.
    #[arg(long, env = "OPSD_POSTGRES_LISTEN_URL", value_parser = parse_postgres_url)]
    pub postgres_listen_url: Option<String>,

    /// `transaction` when --store's URL goes through a transaction-mode pooler
    /// (PgBouncer `pool_mode = transaction`): no statement stays prepared
    /// across transactions; needs --postgres-listen-url.
    #[arg(long, env = "OPSD_POSTGRES_POOLER", value_enum, default_value = "none")]
    pub postgres_pooler: PostgresPooler,

    /// Never change the schema (replicas that must not): refuse to start if it
    /// is behind this opsd, instead of migrating it (`opsd migrate` does that).
    #[arg(
        long,
        env = "OPSD_NO_MIGRATE",
        default_value_t = false,
        default_missing_value = "true",
        num_args = 0..=1,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub no_migrate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PostgresPooler {
    /// Straight to PostgreSQL, or a session-mode pooler.
    None,
    /// A transaction-mode pooler.
    Transaction,
}

impl DatabaseArgs {
    /// Settings that are wrong together.
    fn validate(&self, store: &StoreKind) -> anyhow::Result<()> {
        let postgres = matches!(store, StoreKind::Postgres(_));
        anyhow::ensure!(
            postgres || self.postgres_listen_url.is_none(),
            "--postgres-listen-url (postgres_listen_url) applies to a postgres store only"
        );
        anyhow::ensure!(
            postgres || self.postgres_pooler == PostgresPooler::None,
            "--postgres-pooler (postgres_pooler) applies to a postgres store only"
        );
        anyhow::ensure!(
            self.postgres_pooler != PostgresPooler::Transaction
                || self.postgres_listen_url.is_some(),
            "--postgres-pooler=transaction needs --postgres-listen-url: a transaction-mode pooler \
             cannot hold a LISTEN, so waiters could not be woken"
        );
        anyhow::ensure!(
            !(self.no_migrate && matches!(store, StoreKind::Memory)),
            "--no-migrate applies to the sqlite and postgres stores only"
        );
        Ok(())
    }

    fn put_toml(&self, put: &mut dyn FnMut(&str, toml::Value)) {
        if let Some(url) = &self.postgres_listen_url {
            put("postgres_listen_url", toml::Value::String(redact_url(url)));
        }
        put(
            "postgres_pooler",
            toml::Value::String(
                match self.postgres_pooler {
                    PostgresPooler::None => "none",
                    PostgresPooler::Transaction => "transaction",
                }
                .into(),
            ),
        );
        if self.no_migrate {
            put("no_migrate", toml::Value::String("true".into()));
        }
    }
}

/// A `postgres://` / `postgresql://` URL.
pub fn parse_postgres_url(raw: &str) -> Result<String, String> {
    match parse_store(raw)? {
        StoreKind::Postgres(url) => Ok(url),
        _ => Err("expected a postgres:// url".to_owned()),
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct TokenArgs {
    /// The principal id (recorded as created_by).
    #[arg(long)]
    pub id: String,
    /// Scopes the principal may see; "*" for all. Repeatable.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// viewer, operator, producer or admin. Repeatable.
    #[arg(long = "role", required = true)]
    pub roles: Vec<String>,
}

/// Keys that only make sense on the command line.
const NOT_IN_FILE: &[&str] = &["config", "print_config", "help", "version"];

impl Config {
    /// Flags and environment, then the file they name for whatever neither set.
    /// Bad flags exit with clap's usage message; a bad file is an error naming the key.
    pub fn load_from<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let matches = Self::command().get_matches_from(args.clone());
        let config = Self::from_arg_matches(&matches)?;
        let Some(path) = config.config.clone() else {
            return Ok(config);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::with_file(args, &matches, &path, &text)
    }

    /// The configuration a file at `path` holding `text` gives, with no flags
    /// and the process's environment: what `opsd --config PATH` would load.
    pub fn from_file_text(path: &Path, text: &str) -> anyhow::Result<Self> {
        let args: Vec<OsString> = vec!["opsd".into(), "--config".into(), path.into()];
        let matches = Self::command().try_get_matches_from(args.clone())?;
        Self::with_file(args, &matches, path, text)
    }

    /// `args` (parsed as `matches`) over the TOML `text` of the file at `path`.
    fn with_file(
        args: Vec<OsString>,
        matches: &clap::ArgMatches,
        path: &Path,
        text: &str,
    ) -> anyhow::Result<Self> {
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("config file {} is not valid toml", path.display()))?;

        let command = Self::command();
        let mut from_file = Vec::new();
        for (key, value) in &table {
            let fail =
                |why: String| anyhow::anyhow!("config file {}: key {key}: {why}", path.display());
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == key.as_str() && !NOT_IN_FILE.contains(&key.as_str()))
                .ok_or_else(|| fail("unknown key".into()))?;
            let values = match value {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Integer(n) => vec![n.to_string()],
                toml::Value::Float(x) => vec![x.to_string()],
                toml::Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        toml::Value::String(s) => Ok(s.clone()),
                        toml::Value::Integer(n) => Ok(n.to_string()),
                        _ => Err(fail("lists may hold strings and integers only".into())),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(fail("expected a string, a number or a list".into())),
            };
            let long = arg
                .get_long()
                .ok_or_else(|| fail("is not an option".into()))?;
            for value in &values {
                // The option alone, to blame a bad value on this key; options that
                // need a companion (tls_cert and tls_key) are checked together below.
                if let Err(e) =
                    Self::command().try_get_matches_from(["opsd", &format!("--{long}={value}")])
                    && e.kind() != clap::error::ErrorKind::MissingRequiredArgument
                {
                    let message = e.to_string();
                    let first_line = message.lines().next().unwrap_or_default();
                    return Err(fail(first_line.trim_start_matches("error: ").to_owned()));
                }
            }
            // The environment and flags win over the file.
            if matches.value_source(key) != Some(ValueSource::DefaultValue)
                && matches.value_source(key).is_some()
            {
                continue;
            }
            for value in values {
                from_file.push(OsString::from(format!("--{long}={value}")));
            }
        }
        let mut all = args;
        all.extend(from_file);
        let matches = Self::command()
            .try_get_matches_from(all)
            .with_context(|| format!("config file {}", path.display()))?;
        Ok(Self::from_arg_matches(&matches)?)
    }

    /// The effective configuration as a TOML file would give it (passwords hidden).
    pub fn to_toml(&self) -> String {
        let mut table = toml::Table::new();
        let mut put = |key: &str, value: toml::Value| {
            table.insert(key.to_owned(), value);
        };
        let text = |s: String| toml::Value::String(s);
        put("listen", text(self.listen.to_string()));
        put("data_dir", text(self.data_dir.display().to_string()));
        put("store", text(format!("{:?}", self.store)));
        if let Some(cert) = &self.tls_cert {
            put("tls_cert", text(cert.display().to_string()));
        }
        if let Some(key) = &self.tls_key {
            put("tls_key", text(key.display().to_string()));
        }
        if let Some(address) = &self.public_address {
            put("public_address", text(address.clone()));
        }
        put(
            "endpoint_ids",
            toml::Value::Array(self.endpoint_ids.iter().cloned().map(text).collect()),
        );
        put(
            "sqlite_max_batch",
            toml::Value::Integer(i64::try_from(self.sqlite_max_batch).unwrap_or(i64::MAX)),
        );
        // Printed only when turned off: the knob is for benchmarks.
        if !self.sqlite_record_events {
            put("sqlite_record_events", text("false".into()));
        }
        put(
            "postgres_max_connections",
            toml::Value::Integer(i64::try_from(self.postgres_max_connections).unwrap_or(i64::MAX)),
        );
        self.database.put_toml(&mut put);
        put("cache_size", text(format_size(self.cache_size)));
        for (key, duration) in [
            ("store_timeout", self.store_timeout),
            ("retention", self.retention),
            ("poll_interval", self.poll_interval),
            ("max_wait", self.max_wait),
            ("reaper_interval", self.reaper_interval),
            ("retention_interval", self.retention_interval),
            ("shutdown_grace", self.shutdown_grace),
        ] {
            put(key, text(format_duration(duration)));
        }
        put("retention_share", toml::Value::Float(self.retention_share));
        put("max_message_size", text(format_size(self.max_message_size)));
        for (key, value) in [
            (
                "max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            (
                "max_watchers_per_connection",
                self.max_watchers_per_connection,
            ),
            ("max_watchers", self.max_watchers),
            (
                "max_feed_readers_per_connection",
                self.max_feed_readers_per_connection,
            ),
            ("max_feed_readers", self.max_feed_readers),
            ("max_events_per_operation", self.max_events_per_operation),
        ] {
            put(
                key,
                toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX)),
            );
        }
        put("id_prefix", text(self.id_prefix.clone()));
        if let Some(file) = &self.tokens_file {
            put("tokens_file", text(file.display().to_string()));
        }
        if let Some(file) = &self.jwt_hs256_secret_file {
            put("jwt_hs256_secret_file", text(file.display().to_string()));
        }
        put(
            "jwt_public_keys",
            toml::Value::Array(
                self.jwt_public_keys
                    .iter()
                    .map(|p| text(p.display().to_string()))
                    .collect(),
            ),
        );
        if let Some(file) = &self.jwt_jwks_file {
            put("jwt_jwks_file", text(file.display().to_string()));
        }
        if let Some(audience) = &self.jwt_audience {
            put("jwt_audience", text(audience.clone()));
        }
        if let Some(issuer) = &self.jwt_issuer {
            put("jwt_issuer", text(issuer.clone()));
        }
        put("jwt_scopes_claim", text(self.jwt_scopes_claim.clone()));
        put("jwt_roles_claim", text(self.jwt_roles_claim.clone()));
        put("jwt_leeway", text(format_duration(self.jwt_leeway)));
        if let Some(file) = &self.iam_signing_key {
            put("iam_signing_key", text(file.display().to_string()));
        }
        put(
            "iam_token_lifetime",
            text(format_duration(self.iam_token_lifetime)),
        );
        put(
            "iam_audiences",
            toml::Value::Array(self.iam_audiences.iter().cloned().map(text).collect()),
        );
        put(
            "log_format",
            text(match self.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            }),
        );
        if let Some(endpoint) = &self.otlp_endpoint {
            put("otlp_endpoint", text(endpoint.clone()));
        }
        if let Some(endpoint) = &self.otlp_traces_endpoint {
            put("otlp_traces_endpoint", text(endpoint.clone()));
        }
        put("otlp_protocol", text(self.otlp_protocol.name().into()));
        // Header values are credentials more often than not.
        if let Some(headers) = &self.otlp_headers {
            let names: Vec<String> = headers.0.iter().map(|(k, _)| format!("{k}=…")).collect();
            put("otlp_headers", text(names.join(",")));
        }
        if let Some(path) = &self.otlp_certificate {
            put("otlp_certificate", text(path.display().to_string()));
        }
        put("otlp_timeout", text(format_duration(self.otlp_timeout)));
        put("service_name", text(self.service_name.clone()));
        if let Some(attributes) = &self.resource_attributes {
            put("resource_attributes", text(format_key_values(attributes)));
        }
        put("trace_sampler", text(self.trace_sampler.name().into()));
        put(
            "trace_sampler_arg",
            text(self.trace_sampler_arg.to_string()),
        );
        for (key, value) in [
            ("trace_queue_size", self.trace_queue_size),
            ("trace_batch_size", self.trace_batch_size),
        ] {
            put(
                key,
                toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX)),
            );
        }
        put(
            "trace_export_delay",
            text(format_duration(self.trace_export_delay)),
        );
        if let Some(url) = &self.console_trace_url {
            put("console_trace_url", text(url.clone()));
        }
        put(
            "console_stuck_after",
            text(format_duration(self.console_stuck_after)),
        );
        put(
            "descriptor_sets",
            toml::Value::Array(
                self.descriptor_sets
                    .iter()
                    .map(|p| text(p.display().to_string()))
                    .collect(),
            ),
        );
        toml::to_string(&table).expect("a table of strings and numbers serializes")
    }

    /// Where spans go, when tracing is on: an endpoint is configured and
    /// neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says otherwise.
    pub fn trace_export(&self) -> anyhow::Result<Option<crate::telemetry::TraceExport>> {
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        match std::env::var("OTEL_TRACES_EXPORTER")
            .as_deref()
            .map(str::trim)
        {
            Err(_) | Ok("otlp") | Ok("") => {}
            Ok("none") => return Ok(None),
            Ok(other) => {
                anyhow::bail!("OTEL_TRACES_EXPORTER={other} is not supported: otlp or none")
            }
        }
        if disabled {
            return Ok(None);
        }
        let endpoint = match (&self.otlp_traces_endpoint, &self.otlp_endpoint) {
            (Some(traces), _) => traces.trim().to_owned(),
            (None, Some(base)) => match self.otlp_protocol {
                crate::telemetry::OtlpProtocol::Grpc => base.trim().to_owned(),
                crate::telemetry::OtlpProtocol::HttpProtobuf => {
                    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
                }
            },
            (None, None) => return Ok(None),
        };
        anyhow::ensure!(
            endpoint.starts_with("http://") || endpoint.starts_with("https://"),
            "--otlp-endpoint {endpoint:?} must be an http:// or https:// url"
        );
        Ok(Some(crate::telemetry::TraceExport {
            endpoint,
            protocol: self.otlp_protocol,
            headers: self.otlp_headers.clone().map(|h| h.0).unwrap_or_default(),
            certificate: self.otlp_certificate.clone(),
            timeout: self.otlp_timeout,
            service_name: self.service_name.clone(),
            resource_attributes: self
                .resource_attributes
                .clone()
                .map(|a| a.0)
                .unwrap_or_default(),
            sampler: self.trace_sampler,
            sampler_ratio: self.trace_sampler_arg,
            max_queue_size: usize::try_from(self.trace_queue_size).unwrap_or(usize::MAX),
            max_export_batch_size: usize::try_from(self.trace_batch_size).unwrap_or(usize::MAX),
            schedule_delay: self.trace_export_delay,
        }))
    }
}

impl Config {
    /// Settings that are wrong together, though each is fine alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.database.validate(&self.store)?;
        anyhow::ensure!(
            self.iam_signing_key.is_some() || self.iam_audiences.is_empty(),
            "--iam-audience (iam_audiences) needs --iam-signing-key: without it no jwt is exchanged"
        );
        Ok(())
    }

    /// The limits on what callers may send and hold open.
    /// What the web console is told.
    pub fn console(&self) -> crate::console::ConsoleOptions {
        crate::console::ConsoleOptions {
            trace_url: self.console_trace_url.clone(),
        }
    }

    pub fn limits(&self) -> crate::limits::Limits {
        crate::limits::Limits {
            max_message_size: self.max_message_size,
            max_streams_per_connection: self.max_streams_per_connection,
            max_watchers_per_connection: usize::try_from(self.max_watchers_per_connection)
                .unwrap_or(usize::MAX),
            max_watchers: usize::try_from(self.max_watchers).unwrap_or(usize::MAX),
            max_feed_readers_per_connection: usize::try_from(self.max_feed_readers_per_connection)
                .unwrap_or(usize::MAX),
            max_feed_readers: usize::try_from(self.max_feed_readers).unwrap_or(usize::MAX),
        }
    }

    /// Who may call, from the tokens file, JWT and IAM settings; JWT is on
    /// when any key, audience or issuer is given, the IAM token exchange when
    /// a signing key is.
    pub fn auth(&self) -> crate::auth::AuthConfig {
        let jwt_wanted = self.jwt_hs256_secret_file.is_some()
            || !self.jwt_public_keys.is_empty()
            || self.jwt_jwks_file.is_some()
            || self.jwt_audience.is_some()
            || self.jwt_issuer.is_some();
        crate::auth::AuthConfig {
            tokens_file: self.tokens_file.clone(),
            jwt: jwt_wanted.then(|| crate::auth::JwtConfig {
                audience: self.jwt_audience.clone(),
                issuer: self.jwt_issuer.clone(),
                hs256_secret_file: self.jwt_hs256_secret_file.clone(),
                public_key_files: self.jwt_public_keys.clone(),
                jwks_file: self.jwt_jwks_file.clone(),
                scopes_claim: self.jwt_scopes_claim.clone(),
                roles_claim: self.jwt_roles_claim.clone(),
                leeway: self.jwt_leeway,
            }),
            iam: self
                .iam_signing_key
                .as_ref()
                .map(|signing_key_file| crate::auth::IamConfig {
                    signing_key_file: signing_key_file.clone(),
                    token_lifetime: self.iam_token_lifetime,
                    audiences: self.iam_audiences.clone(),
                    leeway: self.jwt_leeway,
                }),
        }
    }
}

/// The largest whole unit that [`parse_duration`] reads back exactly.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis > 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// The largest whole unit that [`parse_size`] reads back exactly.
pub fn format_size(bytes: usize) -> String {
    for (unit, size) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes > 0 && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A size in bytes: a whole number, alone or with a unit: `4MiB`, `512KiB`, `1GiB`, `100B`.
pub fn parse_size(raw: &str) -> Result<usize, String> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{raw:?} does not start with a whole number"))?;
    let scale: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{raw:?} has an unknown unit (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{raw:?} is too large"))
}

/// The smallest and largest `--max-message-size`.
pub const MESSAGE_SIZE_RANGE: std::ops::RangeInclusive<usize> = (1 << 10)..=(256 << 20);

/// `--max-message-size`: a size within [`MESSAGE_SIZE_RANGE`].
pub fn parse_message_size(raw: &str) -> Result<usize, String> {
    let size = parse_size(raw)?;
    if MESSAGE_SIZE_RANGE.contains(&size) {
        Ok(size)
    } else {
        Err(format!(
            "{raw:?} is outside {} to {}",
            format_size(*MESSAGE_SIZE_RANGE.start()),
            format_size(*MESSAGE_SIZE_RANGE.end())
        ))
    }
}

/// The shortest and longest `--iam-token-lifetime`.
pub const IAM_TOKEN_LIFETIME_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(7 * 86_400);

/// `--iam-token-lifetime`: whole seconds within [`IAM_TOKEN_LIFETIME_RANGE`].
pub fn parse_iam_token_lifetime(raw: &str) -> Result<Duration, String> {
    let lifetime = parse_duration(raw)?;
    if lifetime.subsec_nanos() != 0 {
        return Err(format!("{raw:?} is not a whole number of seconds"));
    }
    if !IAM_TOKEN_LIFETIME_RANGE.contains(&lifetime) {
        return Err(format!(
            "{raw:?} is outside {} to {}",
            format_duration(*IAM_TOKEN_LIFETIME_RANGE.start()),
            format_duration(*IAM_TOKEN_LIFETIME_RANGE.end())
        ));
    }
    Ok(lifetime)
}

/// `--iam-audience`: a non-empty value without spaces.
pub fn parse_audience(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{raw:?} must be non-empty, without spaces"));
    }
    Ok(raw.to_owned())
}

/// `sqlite`, `memory`, or a `postgres://` / `postgresql://` URL.
pub fn parse_store(raw: &str) -> Result<StoreKind, String> {
    match raw {
        "sqlite" => Ok(StoreKind::Sqlite),
        "memory" => Ok(StoreKind::Memory),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(StoreKind::Postgres(url.to_owned()))
        }
        _ => Err("expected sqlite, memory or a postgres:// url".to_owned()),
    }
}

/// The URL without its password, fit for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!(
                "{}{user}{hidden}@{host}{}",
                &url[..scheme_end],
                &url[authority_end..]
            )
        }
        None => url.to_owned(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "opsd",
    version,
    about = "opsd: the long-running operations service"
)]
pub struct Config {
    /// A TOML configuration file; environment variables and flags override it.
    #[arg(long, env = "OPSD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to serve gRPC on; port 0 picks a free port.
    #[arg(long, env = "OPSD_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// TLS certificate chain (PEM); with --tls-key, serve TLS only. Reloaded on
    /// SIGHUP and when the file changes.
    #[arg(long, env = "OPSD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "OPSD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The address clients reach opsd at (behind a load balancer, say), which
    /// endpoint discovery announces. Default: the listen address.
    #[arg(long, env = "OPSD_PUBLIC_ADDRESS")]
    pub public_address: Option<String>,

    /// More endpoint ids for discovery, beside `operation` and `iam`: `ID`
    /// (served by opsd) or `ID=HOST:PORT`. Repeatable; comma-separated in the env.
    #[arg(long = "endpoint-id", env = "OPSD_ENDPOINT_IDS", value_delimiter = ',')]
    pub endpoint_ids: Vec<String>,

    /// Principals and their hashed tokens (TOML; `opsd token` makes entries).
    #[arg(long, env = "OPSD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Verify JWTs signed with this HS256 secret (a file of at least 32 bytes).
    #[arg(long, env = "OPSD_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// Verify JWTs signed by these RS256/ES256 public keys (PEM); repeatable.
    #[arg(
        long = "jwt-public-key",
        env = "OPSD_JWT_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub jwt_public_keys: Vec<PathBuf>,

    /// Verify JWTs against the keys of this JWKS file.
    #[arg(long, env = "OPSD_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// The `aud` JWTs must carry.
    #[arg(long, env = "OPSD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The `iss` JWTs must carry.
    #[arg(long, env = "OPSD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The JWT claim listing the caller's scopes ("*" for all).
    #[arg(long, env = "OPSD_JWT_SCOPES_CLAIM", default_value = "scopes")]
    pub jwt_scopes_claim: String,

    /// The JWT claim listing the caller's roles.
    #[arg(long, env = "OPSD_JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,

    /// Clock skew tolerated on `exp` and `nbf` (and `iat` of service-account JWTs).
    #[arg(long, env = "OPSD_JWT_LEEWAY", default_value = "60s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Serve IamTokenService/Create: issue IAM tokens signed with this Ed25519
    /// or ECDSA P-256 private key (PEM), and accept them. Replicas with the
    /// same key accept each other's tokens. Without it the exchange answers
    /// UNIMPLEMENTED.
    #[arg(long, env = "OPSD_IAM_SIGNING_KEY")]
    pub iam_signing_key: Option<PathBuf>,

    /// How long an issued IAM token is valid (1m to 7d, whole seconds).
    #[arg(long, env = "OPSD_IAM_TOKEN_LIFETIME", default_value = "12h", value_parser = parse_iam_token_lifetime)]
    pub iam_token_lifetime: Duration,

    /// Another `aud` service-account JWTs may carry, beside the clouds' and
    /// `https://iam.<public address>/iam/v1/tokens`. Repeatable; comma-separated in the env.
    #[arg(
        long = "iam-audience",
        env = "OPSD_IAM_AUDIENCES",
        value_delimiter = ',',
        value_parser = parse_audience
    )]
    pub iam_audiences: Vec<String>,

    /// Directory of the embedded database; created if missing.
    #[arg(long, env = "OPSD_DATA_DIR", default_value = "./opsd-data")]
    pub data_dir: PathBuf,

    /// Storage: `sqlite` (in --data-dir), `memory`, or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`) shared by several replicas.
    #[arg(long, env = "OPSD_STORE", default_value = "sqlite", value_parser = parse_store)]
    pub store: StoreKind,

    /// The most writes one SQLite commit (and its one sync) may carry; `1`
    /// commits every write on its own.
    #[arg(long, env = "OPSD_SQLITE_MAX_BATCH", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub sqlite_max_batch: u64,

    /// A benchmark knob, hidden from `--help`: `false` makes the SQLite store
    /// write no events, to measure what the timeline costs a write
    /// (`opsd-bench --scenario feed`). ListEvents and WatchOperations then fail
    /// with INTERNAL; only a new data directory can be written so, and its
    /// database is refused later by an opsd that records events.
    #[arg(long, hide = true, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub sqlite_record_events: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Most PostgreSQL connections one replica opens for requests.
    #[arg(long, env = "OPSD_POSTGRES_MAX_CONNECTIONS", default_value_t = 16)]
    pub postgres_max_connections: usize,

    /// The longest a request waits for the database (connection, lock and
    /// statements together) before failing with UNAVAILABLE, also when the
    /// database stops answering altogether.
    #[arg(long, env = "OPSD_STORE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// Memory for done operations served without reading the store (they never
    /// change) and, on SQLite, as much again for running ones (the store's one
    /// writer keeps what it wrote); `0` turns both caches off. Units: B, KiB,
    /// MiB, GiB.
    #[arg(long, env = "OPSD_CACHE_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub cache_size: usize,

    /// Prefix of operation ids when a producer names none ([a-z][0-9a-z]{2}).
    #[arg(long, env = "OPSD_ID_PREFIX", default_value = "ops")]
    pub id_prefix: String,

    /// How long done operations are kept before they are deleted.
    #[arg(long, env = "OPSD_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,

    /// Poll interval suggested to clients (`x-operation-poll-interval`, whole seconds).
    #[arg(long, env = "OPSD_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// The longest one Wait call may wait.
    #[arg(long, env = "OPSD_MAX_WAIT", default_value = "10m", value_parser = parse_duration)]
    pub max_wait: Duration,

    /// How often lapsed leases and passed deadlines are looked for.
    #[arg(long, env = "OPSD_REAPER_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub reaper_interval: Duration,

    /// How often done operations past retention are collected.
    #[arg(long, env = "OPSD_RETENTION_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub retention_interval: Duration,

    /// The most of its time the retention collector spends deleting a backlog,
    /// from 0.01 to 1: after a batch that took t it waits t × (1/share − 1),
    /// so deletion yields to the calls being served. 1 deletes flat out.
    #[arg(long, env = "OPSD_RETENTION_SHARE", default_value = "0.1", value_parser = parse_share)]
    pub retention_share: f64,

    /// How long a stopping server waits for open calls before dropping them.
    #[arg(long, env = "OPSD_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// The largest request: a gRPC message or a REST body (`4MiB`, `512KiB`, or
    /// bytes). Larger gRPC messages are refused with RESOURCE_EXHAUSTED, larger
    /// bodies with 400.
    #[arg(long, env = "OPSD_MAX_MESSAGE_SIZE", default_value = "4MiB", value_parser = parse_message_size)]
    pub max_message_size: usize,

    /// HTTP/2 streams (calls in flight) one connection may have open at once.
    #[arg(
        long,
        env = "OPSD_MAX_STREAMS_PER_CONNECTION",
        default_value_t = crate::limits::DEFAULT_MAX_STREAMS_PER_CONNECTION,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_streams_per_connection: u32,

    /// Watch streams and Wait calls one connection may hold open at once; more
    /// are refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "OPSD_MAX_WATCHERS_PER_CONNECTION",
        default_value_t = crate::limits::DEFAULT_MAX_WATCHERS_PER_CONNECTION as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_watchers_per_connection: u64,

    /// Watch streams and Wait calls the server holds open at once; more are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "OPSD_MAX_WATCHERS",
        default_value_t = crate::limits::DEFAULT_MAX_WATCHERS as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_watchers: u64,

    /// WatchOperations streams (the change feed, gRPC and SSE) one connection
    /// may hold open at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "OPSD_MAX_FEED_READERS_PER_CONNECTION",
        default_value_t = crate::limits::DEFAULT_MAX_FEED_READERS_PER_CONNECTION as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_feed_readers_per_connection: u64,

    /// WatchOperations streams the server holds open at once; more are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "OPSD_MAX_FEED_READERS",
        default_value_t = crate::limits::DEFAULT_MAX_FEED_READERS as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_feed_readers: u64,

    /// Events one operation's timeline keeps; past it, metadata updates fold
    /// into the last one (every other kind is still kept).
    #[arg(
        long,
        env = "OPSD_MAX_EVENTS_PER_OPERATION",
        default_value_t = opsd_core::event::DEFAULT_MAX_EVENTS_PER_OPERATION,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_events_per_operation: u64,

    /// Log output format.
    #[arg(long, env = "OPSD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Export spans over OTLP to this collector (`http://host:4317` for
    /// gRPC, `http://host:4318` for HTTP, which appends `/v1/traces`).
    /// Tracing is off without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The collector's traces URL, used as given (overrides --otlp-endpoint).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,

    /// `grpc` or `http/protobuf`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc", value_parser = crate::telemetry::OtlpProtocol::parse)]
    pub otlp_protocol: crate::telemetry::OtlpProtocol,

    /// Headers sent with every export, `key=value,…` (values percent-encoded).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", value_parser = parse_key_values)]
    pub otlp_headers: Option<KeyValues>,

    /// A CA certificate (PEM) the collector's must chain to (https only).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_certificate: Option<PathBuf>,

    /// The longest one export may take (`10s`; a bare number is milliseconds,
    /// as OTEL_EXPORTER_OTLP_TIMEOUT writes it).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value = "10s", value_parser = parse_millis_or_duration)]
    pub otlp_timeout: Duration,

    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "opsd")]
    pub service_name: String,

    /// Other resource attributes, `key=value,…` (values percent-encoded).
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", value_parser = parse_key_values)]
    pub resource_attributes: Option<KeyValues>,

    /// always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", default_value = "parentbased_always_on", value_parser = crate::telemetry::SamplerKind::parse)]
    pub trace_sampler: crate::telemetry::SamplerKind,

    /// The ratio of the `traceidratio` samplers, from 0 to 1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = parse_ratio)]
    pub trace_sampler_arg: f64,

    /// Ended spans waiting for export beyond this many are dropped (and
    /// counted in opsd_trace_spans_dropped_total).
    #[arg(long, env = "OTEL_BSP_MAX_QUEUE_SIZE", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub trace_queue_size: u64,

    /// Spans per export.
    #[arg(long, env = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub trace_batch_size: u64,

    /// The longest a span waits for its batch to fill (`5s`; a bare number
    /// is milliseconds, as OTEL_BSP_SCHEDULE_DELAY writes it).
    #[arg(long, env = "OTEL_BSP_SCHEDULE_DELAY", default_value = "5s", value_parser = parse_millis_or_duration)]
    pub trace_export_delay: Duration,

    // The web console (`/console`); its settings stay together here.
    /// Where the console links a trace id: a URL template with `{trace_id}`
    /// (`https://jaeger.internal/trace/{trace_id}`); no link without it.
    #[arg(long, env = "OPSD_CONSOLE_TRACE_URL", value_parser = crate::console::parse_trace_url)]
    pub console_trace_url: Option<String>,

    /// The overview (GetOverview, `GET /v1/overview`, the console's overview
    /// page) calls a running operation stuck when nothing changed on it for
    /// this long, and a cancel request this old unanswered, unless the
    /// request names its own threshold.
    #[arg(long, env = "OPSD_CONSOLE_STUCK_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub console_stuck_after: Duration,

    /// A producer's message types: a serialized FileDescriptorSet (`protoc
    /// --include_imports --descriptor_set_out FILE`, `buf build -o FILE`), so
    /// that REST and the console print their payloads field by field instead
    /// of as base64. Repeatable; comma-separated in the environment.
    #[arg(
        long = "descriptor-set",
        env = "OPSD_DESCRIPTOR_SETS",
        value_delimiter = ','
    )]
    pub descriptor_sets: Vec<PathBuf>,
}

/// `key=value` pairs, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValues(pub Vec<(String, String)>);

fn parse_key_values(raw: &str) -> Result<KeyValues, String> {
    crate::telemetry::parse_key_values(raw).map(KeyValues)
}

fn format_key_values(pairs: &KeyValues) -> String {
    pairs
        .0
        .iter()
        .map(|(k, v)| {
            let escaped: String = v
                .chars()
                .map(|c| match c {
                    ',' => "%2C".to_owned(),
                    '%' => "%25".to_owned(),
                    '=' => "%3D".to_owned(),
                    c => c.to_string(),
                })
                .collect();
            format!("{k}={escaped}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A duration, or a bare number of milliseconds (the OTEL_* variables' unit).
pub fn parse_millis_or_duration(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(millis) => Ok(Duration::from_millis(millis)),
        Err(_) => parse_duration(raw),
    }
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|ratio| (0.0..=1.0).contains(ratio))
        .ok_or_else(|| format!("{raw:?} is not a ratio from 0 to 1"))
}

/// A share of time for `--retention-share`: a ratio of at least 0.01 (a
/// share of 0 would never delete).
fn parse_share(raw: &str) -> Result<f64, String> {
    parse_ratio(raw)
        .ok()
        .filter(|&share| share >= 0.01)
        .ok_or_else(|| format!("{raw:?} is not a share from 0.01 to 1 (like 0.1)"))
}

/// A duration as a number and a unit: `500ms`, `30s`, `5m`, `1h`, `30d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{raw:?} has no unit (ms, s, m, h or d)"))?;
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        "d" => number.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "{raw:?} has an unknown unit (use ms, s, m, h or d)"
            ));
        }
    }
    .ok_or_else(|| format!("{raw:?} is too long"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_need_a_number_and_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        for bad in ["", "30", "s", "-1s", "1.5s", "10w", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_an_optional_binary_unit() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in [
            "",
            "MiB",
            "4MB",
            "4 MiB",
            "-1",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_message_size("4MiB"), Ok(4 << 20));
        assert!(parse_message_size("1000").is_err(), "below 1 KiB");
        assert!(parse_message_size("1GiB").is_err(), "above 256 MiB");
    }

    #[test]
    fn limits_come_from_the_file_with_defaults_otherwise() {
        let defaults = Config::load_from(["opsd"]).unwrap().limits();
        assert_eq!(defaults, crate::limits::Limits::default());
        let file = write(
            "max_message_size = \"1MiB\"\nmax_streams_per_connection = 64\n\
             max_watchers_per_connection = 8\nmax_watchers = 100\n\
             max_feed_readers_per_connection = 2\nmax_feed_readers = 9\n",
        );
        let config =
            Config::load_from(["opsd", "--config", file.path().to_str().unwrap()]).unwrap();
        assert_eq!(
            config.limits(),
            crate::limits::Limits {
                max_message_size: 1 << 20,
                max_streams_per_connection: 64,
                max_watchers_per_connection: 8,
                max_watchers: 100,
                max_feed_readers_per_connection: 2,
                max_feed_readers: 9,
            }
        );
        for (text, expected) in [
            (
                "max_streams_per_connection = 0",
                "key max_streams_per_connection",
            ),
            ("max_watchers = -1", "key max_watchers"),
            ("max_message_size = \"1TiB\"", "key max_message_size"),
        ] {
            let file = write(text);
            let error =
                Config::load_from(["opsd", "--config", file.path().to_str().unwrap()]).unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{text}: {error:#}");
        }
    }

    #[test]
    fn stores_are_named_or_given_by_url() {
        assert_eq!(parse_store("sqlite"), Ok(StoreKind::Sqlite));
        assert_eq!(parse_store("memory"), Ok(StoreKind::Memory));
        assert_eq!(
            parse_store("postgres://u@h/db"),
            Ok(StoreKind::Postgres("postgres://u@h/db".into()))
        );
        assert!(parse_store("mysql://h/db").is_err());
        assert!(parse_store("").is_err());
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("postgres://opsd:s3cret@db:5432/ops?sslmode=require"),
            "postgres://opsd:***@db:5432/ops?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://opsd@db/ops"),
            "postgres://opsd@db/ops"
        );
        assert_eq!(redact_url("postgres://db/ops"), "postgres://db/ops");
        let shown = format!("{:?}", StoreKind::Postgres("postgres://a:b@c/d".into()));
        assert!(!shown.contains(":b@"), "{shown}");
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn the_file_sits_between_defaults_and_the_environment() {
        let file = write(
            "listen = \"127.0.0.1:9000\"\nretention = \"7d\"\nendpoint_ids = [\"compute\"]\n\
             postgres_max_connections = 4\n",
        );
        let path = file.path().to_str().unwrap();
        let config = Config::load_from(["opsd", "--config", path]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.endpoint_ids, ["compute"]);
        assert_eq!(config.postgres_max_connections, 4);
        assert_eq!(
            config.poll_interval,
            Duration::from_secs(1),
            "defaults stay"
        );

        let flagged =
            Config::load_from(["opsd", "--config", path, "--listen", "127.0.0.1:9001"]).unwrap();
        assert_eq!(flagged.listen.to_string(), "127.0.0.1:9001", "flags win");
    }

    #[test]
    fn bad_files_name_the_key() {
        for (text, expected) in [
            ("listen = \"nowhere\"", "key listen"),
            ("retention = \"forever\"", "key retention"),
            ("no_such_key = 1", "key no_such_key: unknown key"),
            ("config = \"other.toml\"", "key config: unknown key"),
            ("retention = true", "key retention: expected"),
            ("listen = ", "not valid toml"),
        ] {
            let file = write(text);
            let error =
                Config::load_from(["opsd", "--config", file.path().to_str().unwrap()]).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let config =
            Config::load_from(["opsd", "--retention", "90m", "--store", "memory"]).unwrap();
        let file = write(&config.to_toml());
        let again = Config::load_from(["opsd", "--config", file.path().to_str().unwrap()]).unwrap();
        assert_eq!(again.to_toml(), config.to_toml());
        assert!(config.to_toml().contains("retention = \"90m\""));
    }

    #[test]
    fn iam_settings_come_from_the_file_env_and_flags() {
        let defaults = Config::load_from(["opsd"]).unwrap();
        assert!(defaults.auth().iam.is_none());
        assert_eq!(
            defaults.iam_token_lifetime,
            crate::auth::DEFAULT_IAM_TOKEN_LIFETIME
        );

        let file = write(
            "iam_signing_key = \"/etc/opsd/iam.pem\"\niam_token_lifetime = \"1h\"\n\
             iam_audiences = [\"https://iam.a/iam/v1/tokens\", \"opsd\"]\n",
        );
        let path = file.path().to_str().unwrap();
        let config = Config::load_from(["opsd", "--config", path]).unwrap();
        let iam = config.auth().iam.unwrap();
        assert_eq!(iam.signing_key_file, PathBuf::from("/etc/opsd/iam.pem"));
        assert_eq!(iam.token_lifetime, Duration::from_secs(3600));
        assert_eq!(iam.audiences, ["https://iam.a/iam/v1/tokens", "opsd"]);
        assert_eq!(iam.leeway, config.jwt_leeway);

        let printed = config.to_toml();
        for line in [
            "iam_signing_key = \"/etc/opsd/iam.pem\"",
            "iam_token_lifetime = \"1h\"",
            "iam_audiences = [\"https://iam.a/iam/v1/tokens\", \"opsd\"]",
        ] {
            assert!(printed.contains(line), "{line} missing from\n{printed}");
        }
        let again = write(&printed);
        let reread =
            Config::load_from(["opsd", "--config", again.path().to_str().unwrap()]).unwrap();
        assert_eq!(reread.to_toml(), printed);

        let flagged = Config::load_from([
            "opsd",
            "--config",
            path,
            "--iam-token-lifetime",
            "2d",
            "--iam-audience",
            "x",
            "--iam-audience",
            "y",
        ])
        .unwrap();
        assert_eq!(flagged.iam_token_lifetime, Duration::from_secs(2 * 86_400));
        assert_eq!(flagged.iam_audiences, ["x", "y"], "flags win");
    }

    #[test]
    fn bad_iam_settings_name_the_key() {
        assert_eq!(
            parse_iam_token_lifetime("7d"),
            Ok(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(parse_iam_token_lifetime("1m"), Ok(Duration::from_secs(60)));
        for bad in ["59s", "8d", "90500ms", "0s", "soon"] {
            assert!(parse_iam_token_lifetime(bad).is_err(), "{bad}");
        }
        for bad in ["", "two words", "tab\there"] {
            assert!(parse_audience(bad).is_err(), "{bad:?}");
        }
        for (text, expected) in [
            ("iam_token_lifetime = \"30s\"", "key iam_token_lifetime"),
            ("iam_token_lifetime = \"1500ms\"", "key iam_token_lifetime"),
            (
                "iam_signing_key = \"k.pem\"\niam_audiences = [\"\"]",
                "key iam_audiences",
            ),
            ("iam_signing_key = true", "key iam_signing_key: expected"),
        ] {
            let file = write(text);
            let error =
                Config::load_from(["opsd", "--config", file.path().to_str().unwrap()]).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn iam_audiences_need_a_signing_key() {
        let alone = Config::load_from(["opsd", "--iam-audience", "opsd"]).unwrap();
        let error = alone.validate().unwrap_err().to_string();
        assert_eq!(
            error,
            "--iam-audience (iam_audiences) needs --iam-signing-key: without it no jwt is exchanged"
        );
        let with_key = Config::load_from([
            "opsd",
            "--iam-audience",
            "opsd",
            "--iam-signing-key",
            "k.pem",
        ])
        .unwrap();
        assert!(with_key.validate().is_ok());
        assert!(Config::load_from(["opsd"]).unwrap().validate().is_ok());
    }

    #[test]
    fn postgres_production_settings_from_file_and_flags() {
        let config = Config::from_file_text(
            Path::new("opsd.toml"),
            "store = \"postgres://opsd:s3cret@bouncer:6432/opsd\"\n\
             postgres_listen_url = \"postgres://opsd:s3cret@a:5432,b:5432/opsd?sslmode=require\"\n\
             postgres_pooler = \"transaction\"\nno_migrate = \"true\"\n",
        )
        .unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(config.database.postgres_pooler, PostgresPooler::Transaction);
        assert!(config.database.no_migrate);
        let printed = config.to_toml();
        assert!(
            printed.contains(
                "postgres_listen_url = \"postgres://opsd:***@a:5432,b:5432/opsd?sslmode=require\""
            ),
            "{printed}"
        );
        assert!(!printed.contains("s3cret"));
        let again = Config::from_file_text(Path::new("opsd.toml"), &printed).unwrap();
        assert_eq!(again.to_toml(), printed);

        let flags = Config::load_from(["opsd", "--no-migrate"]).unwrap();
        assert!(flags.database.no_migrate);
        assert!(!Config::load_from(["opsd"]).unwrap().database.no_migrate);
        let migrate = Config::load_from(["opsd", "migrate", "--check"]).unwrap();
        assert!(matches!(
            migrate.command,
            Some(Command::Migrate(MigrateArgs { check: true }))
        ));
    }

    #[test]
    fn postgres_settings_that_cannot_work_are_refused() {
        let refusal = |args: &[&str]| {
            let mut all = vec!["opsd"];
            all.extend_from_slice(args);
            Config::load_from(all)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refusal(&[
                "--store",
                "postgres://h/db",
                "--postgres-pooler",
                "transaction"
            ]),
            "--postgres-pooler=transaction needs --postgres-listen-url: a transaction-mode pooler \
             cannot hold a LISTEN, so waiters could not be woken"
        );
        assert_eq!(
            refusal(&["--postgres-listen-url", "postgres://h/db"]),
            "--postgres-listen-url (postgres_listen_url) applies to a postgres store only"
        );
        assert_eq!(
            refusal(&["--postgres-pooler", "transaction"]),
            "--postgres-pooler (postgres_pooler) applies to a postgres store only"
        );
        assert_eq!(
            refusal(&["--store", "memory", "--no-migrate"]),
            "--no-migrate applies to the sqlite and postgres stores only"
        );
        assert!(
            Config::command()
                .try_get_matches_from(["opsd", "--postgres-listen-url", "mysql://h/db"])
                .is_err()
        );
    }

    /// The benchmark knob that turns events off is not offered in `--help`,
    /// is printed only when it is in effect, and reads back from the file.
    #[test]
    fn recording_no_events_is_a_hidden_benchmark_knob() {
        let help = Config::command().render_long_help().to_string();
        assert!(!help.contains("record-events"), "{help}");
        let default = Config::load_from(["opsd"]).unwrap();
        assert!(default.sqlite_record_events);
        assert!(!default.to_toml().contains("record_events"));

        let off = Config::load_from(["opsd", "--sqlite-record-events=false"]).unwrap();
        assert!(!off.sqlite_record_events);
        let file = write(&off.to_toml());
        let again = Config::load_from(["opsd", "--config", file.path().to_str().unwrap()]).unwrap();
        assert!(!again.sqlite_record_events);
    }

    #[test]
    fn the_retention_share_is_a_number_from_a_hundredth_to_one() {
        assert_eq!(parse_share("0.1"), Ok(0.1));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert_eq!(parse_share("0.01"), Ok(0.01));
        for bad in ["0", "0.001", "1.5", "-0.5", "NaN", "inf", "", "10%"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        let config =
            Config::load_from(["opsd", "--store", "memory", "--retention-share", "0.25"]).unwrap();
        assert_eq!(config.retention_share, 0.25);
        assert!(config.to_toml().contains("retention_share = 0.25"));
    }

    proptest! {
        #[test]
        fn formatted_durations_parse_back(millis in 0u64..10_000_000_000) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn formatted_sizes_parse_back(bytes in 0usize..(1 << 40)) {
            prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }

        #[test]
        fn redact_url_never_panics(raw in "\\PC{0,40}") {
            let _ = redact_url(&raw);
        }

        #[test]
        fn parse_duration_never_panics(raw in "\\PC{0,24}") {
            let _ = parse_duration(&raw);
        }

        #[test]
        fn parse_share_accepts_exactly_numbers_from_a_hundredth_to_one(raw in "\\PC{0,12}") {
            let expected = raw.trim().parse::<f64>().ok().filter(|x| (0.01..=1.0).contains(x));
            prop_assert_eq!(parse_share(&raw).ok(), expected);
        }
    }
}
