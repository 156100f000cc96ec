//! Command-line configuration of the opsd process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The documented default: loopback on a fixed port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7117";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// SQLite in the data directory: durable, the default.
    Sqlite,
    /// In memory: everything is lost when opsd stops. For experiments.
    Memory,
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

    /// Directory of the embedded database; created if missing.
    #[arg(long, env = "OPSD_DATA_DIR", default_value = "./opsd-data")]
    pub data_dir: PathBuf,

    /// Storage backend.
    #[arg(long, env = "OPSD_STORE", value_enum, default_value = "sqlite")]
    pub store: StoreKind,

    /// Prefix of operation ids when a producer names none ([a-z][0-9a-z]{2}).
    #[arg(long, env = "OPSD_ID_PREFIX", default_value = "ops")]
    pub id_prefix: String,

    /// How long a stopping server waits for open calls before dropping them.
    #[arg(long, env = "OPSD_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log output format.
    #[arg(long, env = "OPSD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A duration as a number and a unit: `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{raw:?} has no unit (ms, s, m or h)"))?;
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(format!("{raw:?} has an unknown unit (use ms, s, m or h)")),
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
        for bad in ["", "30", "s", "-1s", "1.5s", "10d", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_duration_never_panics(raw in "\\PC{0,24}") {
            let _ = parse_duration(&raw);
        }
    }
}
