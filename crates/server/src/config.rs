//! Command-line configuration of the opsd process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

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

    /// Directory of the embedded database; created if missing.
    #[arg(long, env = "OPSD_DATA_DIR", default_value = "./opsd-data")]
    pub data_dir: PathBuf,

    /// Storage: `sqlite` (in --data-dir), `memory`, or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`) shared by several replicas.
    #[arg(long, env = "OPSD_STORE", default_value = "sqlite", value_parser = parse_store)]
    pub store: StoreKind,

    /// Most PostgreSQL connections one replica opens for requests.
    #[arg(long, env = "OPSD_POSTGRES_MAX_CONNECTIONS", default_value_t = 16)]
    pub postgres_max_connections: usize,

    /// How long a request waits for the database (connection, lock or statement)
    /// before failing with UNAVAILABLE.
    #[arg(long, env = "OPSD_STORE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub store_timeout: Duration,

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

    /// How long a stopping server waits for open calls before dropping them.
    #[arg(long, env = "OPSD_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log output format.
    #[arg(long, env = "OPSD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
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

    proptest! {
        #[test]
        fn redact_url_never_panics(raw in "\\PC{0,40}") {
            let _ = redact_url(&raw);
        }

        #[test]
        fn parse_duration_never_panics(raw in "\\PC{0,24}") {
            let _ = parse_duration(&raw);
        }
    }
}
