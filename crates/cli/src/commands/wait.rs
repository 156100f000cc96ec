use std::time::Duration;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The operation id.
    pub id: String,
    /// Give up after this long (e.g. 90s, 10m); exit code 6. Default: wait until done.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Stop as soon as the producer reports a failure (exit code 7), instead
    /// of waiting for it to finish cleaning up.
    #[arg(long)]
    pub stop_at_failure: bool,
}

/// A whole number and a unit: ms, s, m or h.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{raw:?} needs a unit (ms, s, m or h)"))?;
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} does not start with a whole number"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(format!("{raw:?} has an unknown unit (ms, s, m or h)")),
    })
}
