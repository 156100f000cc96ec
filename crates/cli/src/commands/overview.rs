use std::time::Duration;

use opsd_client::GetOverviewRequest;

use super::wait::parse_duration;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The per-producer numbers cover operations done within this (e.g. 1h,
    /// 30m; at most 7 days). Default: one hour.
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<Duration>,
    /// A running operation unchanged for longer is stuck, and a cancel
    /// request older counts as ignored (e.g. 10m). Default: the server's.
    #[arg(long, value_parser = parse_duration)]
    pub stuck_after: Option<Duration>,
    /// How many of the oldest running operations to list, 1-100.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub oldest: i32,
}

fn wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

impl Args {
    pub fn request(&self) -> GetOverviewRequest {
        GetOverviewRequest {
            window: self.window.map(wire),
            stuck_after: self.stuck_after.map(wire),
            oldest: self.oldest,
        }
    }
}
