//! How opsctl prints an operation.

use clap::ValueEnum;
use opsd_client::{
    Event, EventKind, FeedEvent, ListEventsResponse, ListOperationsResponse, Operation,
    OpsdOperation, WatchOperationsResponse,
};
use opsd_proto::yandex::cloud::operation::operation::Result as OperationResult;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned `field: value` lines.
    Text,
    /// The proto3 JSON mapping (camelCase names, Any with "@type", RFC 3339 times).
    Json,
    /// The same mapping, as YAML.
    Yaml,
}

pub fn render(operation: &Operation, format: Format) -> anyhow::Result<String> {
    render_traced(operation, None, format)
}

/// The operation, and in text the trace it was created in. JSON and YAML
/// stay exactly the clouds' `Operation`.
pub fn render_traced(
    operation: &Operation,
    trace_id: Option<&str>,
    format: Format,
) -> anyhow::Result<String> {
    let json = opsd_proto::json::to_json(operation)?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json)?,
        Format::Yaml => yaml(&json),
        Format::Text => {
            let mut printed = text(operation, &json);
            if let Some(trace_id) = trace_id {
                printed.push_str(&format!("\n{:13}{trace_id}", "trace_id:"));
            }
            printed
        }
    })
}

/// One change seen by `watch`: a line of text, a JSON line, or a YAML document.
pub fn render_update(op: &OpsdOperation, format: Format) -> anyhow::Result<String> {
    let json = opsd_proto::json::to_json(op)?;
    Ok(match format {
        Format::Json => serde_json::to_string(&json)?,
        Format::Yaml => format!("---\n{}", yaml(&json)),
        Format::Text => {
            let public = op.operation.clone().unwrap_or_default();
            let state = if public.done {
                match &public.result {
                    Some(OperationResult::Error(status)) => format!(
                        "DONE {}: {}",
                        opsd_client::code_name(tonic::Code::from_i32(status.code)),
                        status.message
                    ),
                    _ => "DONE".to_owned(),
                }
            } else {
                let running = if op.cancel_requested_at.is_some() {
                    "CANCEL_REQUESTED"
                } else {
                    "RUNNING"
                };
                match &public.result {
                    Some(OperationResult::Error(status)) => format!(
                        "{running} FAILING {}: {}",
                        opsd_client::code_name(tonic::Code::from_i32(status.code)),
                        status.message
                    ),
                    _ => running.to_owned(),
                }
            };
            let progress = op.progress.as_ref().map_or(String::new(), |p| {
                let amount = if p.work_total > 0 {
                    format!("{}/{}", p.work_done, p.work_total)
                } else {
                    p.work_done.to_string()
                };
                format!("  {amount}  {}", p.message).trim_end().to_owned()
            });
            let at = json["operation"]["modifiedAt"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            format!("{at}  {}  {state}{progress}", public.id)
        }
    })
}

/// A page of `list`: an aligned table, or the response in JSON or YAML.
pub fn render_list(page: &ListOperationsResponse, format: Format) -> anyhow::Result<String> {
    let json = opsd_proto::json::to_json(page)?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json)?,
        Format::Yaml => yaml(&json),
        Format::Text => {
            let mut rows = vec![vec![
                "ID".to_owned(),
                "STATE".to_owned(),
                "CREATED".to_owned(),
                "CREATED BY".to_owned(),
                "DESCRIPTION".to_owned(),
            ]];
            for (op, printed) in page
                .operations
                .iter()
                .zip(json["operations"].as_array().into_iter().flatten())
            {
                let public = op.operation.clone().unwrap_or_default();
                let state = match (&public.result, op.cancel_requested_at.is_some()) {
                    (Some(OperationResult::Response(_)), _) => "DONE".to_owned(),
                    // Reported while still running: the producer is cleaning up.
                    (Some(OperationResult::Error(status)), _) if !public.done => format!(
                        "FAILING:{}",
                        opsd_client::code_name(tonic::Code::from_i32(status.code))
                    ),
                    (Some(OperationResult::Error(status)), _) => {
                        opsd_client::code_name(tonic::Code::from_i32(status.code)).to_owned()
                    }
                    (None, true) => "CANCEL_REQUESTED".to_owned(),
                    (None, false) => "RUNNING".to_owned(),
                };
                rows.push(vec![
                    public.id,
                    state,
                    printed["operation"]["createdAt"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    public.created_by,
                    public.description,
                ]);
            }
            let mut lines = table(&rows, &[]);
            if !page.next_page_token.is_empty() {
                lines.push(format!("next page: --page-token {}", page.next_page_token));
            }
            lines.join("\n")
        }
    })
}

/// A duration as a person reads it: 850ms, 4.2s, 3m 5s, 2h 10m, 3d 4h.
fn human(d: Option<&prost_types::Duration>) -> String {
    let Some(d) = d else {
        return String::new();
    };
    let ms = d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000;
    let s = d.seconds;
    match ms {
        ..1_000 => format!("{}ms", ms.max(0)),
        1_000..10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        10_000..60_000 => format!("{s}s"),
        60_000..3_600_000 => two(s / 60, "m", s % 60, "s"),
        3_600_000..86_400_000 => two(s / 3600, "h", s % 3600 / 60, "m"),
        _ => two(s / 86400, "d", s % 86400 / 3600, "h"),
    }
}

/// `3m 5s`, or `3m` when the smaller unit is zero.
fn two(big: i64, big_unit: &str, small: i64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit} {small}{small_unit}")
    }
}

/// How long from `from` to `to`, as a wire duration.
fn since(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Option<prost_types::Duration> {
    let (from, to) = (from?, to?);
    let nanos = (i128::from(to.seconds) - i128::from(from.seconds)) * 1_000_000_000
        + i128::from(to.nanos - from.nanos);
    let nanos = nanos.max(0);
    Some(prost_types::Duration {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

/// Why an operation is stuck, rule by rule.
fn stuck_why(reasons: &[opsd_client::StuckReason]) -> String {
    use opsd_client::stuck_reason::Rule;
    reasons
        .iter()
        .filter_map(|reason| reason.rule.as_ref())
        .map(|rule| match rule {
            Rule::Unchanged(r) => format!("no change for over {}", human(r.threshold.as_ref())),
            Rule::SlowerThanUsual(r) => format!(
                "over {}x the usual {} between updates",
                r.factor,
                human(r.typical_gap.as_ref())
            ),
            Rule::LeaseLapsing(r) => match &r.lapses_in {
                Some(d) if d.seconds > 0 || d.nanos > 0 => {
                    format!("lease lapses in {}", human(Some(d)))
                }
                _ => "lease lapsed".to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The overview: a summary line and three tables (stuck, oldest running,
/// producers), or the response in JSON or YAML.
pub fn render_overview(
    overview: &opsd_client::GetOverviewResponse,
    format: Format,
) -> anyhow::Result<String> {
    let json = opsd_proto::json::to_json(overview)?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json)?,
        Format::Yaml => yaml(&json),
        Format::Text => {
            let completed: i64 = overview.producers.iter().map(|p| p.completed).sum();
            let failed: i64 = overview.producers.iter().map(|p| p.failed).sum();
            let window = human(overview.window.as_ref());
            let mut lines = vec![format!(
                "running {}  stuck {}  done {completed}  failed {failed}  (last {window}; stuck after {})",
                overview.running,
                overview.stuck_count,
                human(overview.stuck_after.as_ref()),
            )];
            if overview.stuck_truncated {
                lines.push(
                    "stuck operations were looked for among the 1000 running ones changed least recently"
                        .to_owned(),
                );
            }
            if overview.sampled {
                lines.push(format!(
                    "percentiles cover the {} operations done most recently",
                    overview.sample_size
                ));
            }
            let now = overview.now.as_ref();
            lines.push(String::new());
            lines.push("STUCK".to_owned());
            let mut rows = vec![
                ["ID", "UNCHANGED FOR", "WHY", "DESCRIPTION"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for stuck in &overview.stuck {
                let op = stuck.operation.clone().unwrap_or_default();
                let public = op.operation.unwrap_or_default();
                rows.push(vec![
                    public.id,
                    human(since(public.modified_at.as_ref(), now).as_ref()),
                    stuck_why(&stuck.reasons),
                    public.description,
                ]);
            }
            lines.extend(table(&rows, &[1]));
            lines.push(String::new());
            lines.push("OLDEST RUNNING".to_owned());
            let mut rows = vec![
                ["ID", "RUNNING FOR", "DESCRIPTION"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for op in &overview.oldest_running {
                let public = op.operation.clone().unwrap_or_default();
                rows.push(vec![
                    public.id,
                    human(since(public.created_at.as_ref(), now).as_ref()),
                    public.description,
                ]);
            }
            lines.extend(table(&rows, &[1]));
            lines.push(String::new());
            lines.push(format!("PRODUCERS (last {window})"));
            let mut rows = vec![
                [
                    "PREFIX",
                    "RUNNING",
                    "DONE",
                    "FAILED",
                    "CANCELLED",
                    "P50",
                    "P99",
                    "CANCEL P50",
                    "USUAL GAP",
                    "IGNORING CANCEL",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for p in &overview.producers {
                let share = if p.completed > 0 {
                    format!(
                        "{} ({}%)",
                        p.failed,
                        (p.failed * 100 + p.completed / 2) / p.completed
                    )
                } else {
                    String::new()
                };
                rows.push(vec![
                    p.id_prefix.clone(),
                    p.running.to_string(),
                    p.completed.to_string(),
                    share,
                    p.cancelled.to_string(),
                    human(p.p50_to_done.as_ref()),
                    human(p.p99_to_done.as_ref()),
                    human(p.p50_cancel_to_done.as_ref()),
                    human(p.typical_gap.as_ref()),
                    p.cancel_overdue.to_string(),
                ]);
            }
            lines.extend(table(&rows, &[1, 2, 3, 4, 5, 6, 7, 8, 9]));
            lines.join("\n")
        }
    })
}

/// Rows as aligned columns two spaces apart; the columns in `right` are
/// right-aligned (numbers), the others left-aligned. No trailing spaces.
fn table(rows: &[Vec<String>], right: &[usize]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, width))| {
                    if right.contains(&c) {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:width$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect()
}

/// An operation's timeline: an aligned table, or every page of ListEvents
/// merged into one response (`{"events": [...]}`) in JSON or YAML.
pub fn render_events(events: &[Event], format: Format) -> anyhow::Result<String> {
    let merged = ListEventsResponse {
        events: events.to_vec(),
        next_page_token: String::new(),
    };
    let json = opsd_proto::json::to_json(&merged)?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json)?,
        Format::Yaml => yaml(&json),
        Format::Text => {
            let mut rows = vec![
                ["SEQ", "TIME", "KIND", "ACTOR", "VERSION", "DETAILS"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for event in events {
                rows.push(vec![
                    event.sequence.to_string(),
                    event_time(event),
                    kind_name(event.kind).to_owned(),
                    event.actor.clone(),
                    event.version.to_string(),
                    event_details(event),
                ]);
            }
            table(&rows, &[0, 4]).join("\n")
        }
    })
}

/// Widest kind name, so feed lines keep their details in one column.
const KIND_WIDTH: usize = "deadline_exceeded".len();

/// One event of `watch --all`: a line of text, a JSON line (the
/// WatchOperationsResponse, with its resume token), or a YAML document.
pub fn render_feed_event(item: &FeedEvent, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Text => {
            let event = &item.event;
            format!(
                "{}  {}  {:KIND_WIDTH$}  {}",
                event_time(event),
                event.operation_id,
                kind_name(event.kind),
                event_details(event)
            )
            .trim_end()
            .to_owned()
        }
        _ => {
            let json = opsd_proto::json::to_json(&WatchOperationsResponse::from(item.clone()))?;
            match format {
                Format::Json => serde_json::to_string(&json)?,
                _ => format!("---\n{}", yaml(&json)),
            }
        }
    })
}

/// The name the timeline prints: `created`, `metadata_updated`, ...
fn kind_name(raw: i32) -> String {
    match EventKind::try_from(raw) {
        Ok(EventKind::Unspecified) | Err(_) => format!("kind_{raw}"),
        Ok(kind) => kind
            .as_str_name()
            .trim_start_matches("EVENT_KIND_")
            .to_ascii_lowercase(),
    }
}

/// RFC 3339 in UTC with milliseconds always present, so times line up.
fn event_time(event: &Event) -> String {
    let Some(time) = &event.time else {
        return "-".to_owned();
    };
    let printed = time.to_string();
    let Some(body) = printed.strip_suffix('Z') else {
        return printed;
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    let millis: String = fraction.chars().chain("000".chars()).take(3).collect();
    format!("{whole}.{millis}Z")
}

/// A short line of what the event says beyond its kind: the description,
/// progress, error, response type, lease and deadline, folded updates.
pub fn event_details(event: &Event) -> String {
    let mut parts = Vec::new();
    let kind = EventKind::try_from(event.kind).unwrap_or(EventKind::Unspecified);
    if !event.description.is_empty() {
        parts.push(format!("\"{}\"", short(&event.description)));
    }
    match (&event.progress, kind) {
        (Some(progress), _) => parts.push(progress_text(progress)),
        (None, EventKind::MetadataUpdated) if !event.metadata_type_url.is_empty() => {
            parts.push(format!("metadata {}", type_name(&event.metadata_type_url)));
        }
        _ => {}
    }
    if let Some(error) = &event.error {
        parts.push(format!(
            "{}: {}",
            opsd_client::code_name(tonic::Code::from_i32(error.code)),
            short(&error.message)
        ));
    }
    if !event.response_type_url.is_empty() {
        parts.push(format!("response {}", type_name(&event.response_type_url)));
    }
    if let Some(lease) = &event.lease_expires_at {
        parts.push(format!("lease {}", span(event.time.as_ref(), lease)));
    }
    if let Some(deadline) = &event.deadline {
        parts.push(format!(
            "deadline in {}",
            span(event.time.as_ref(), deadline)
        ));
    }
    let mut details = parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    if event.folded > 0 {
        details = format!("{details} (+{} folded)", event.folded)
            .trim_start()
            .to_owned();
    }
    details
}

/// `3/10 copying`; without a total, `3 copying`; without work, the message.
fn progress_text(progress: &opsd_client::Progress) -> String {
    let amount = if progress.work_total > 0 {
        format!("{}/{}", progress.work_done, progress.work_total)
    } else if progress.work_done > 0 {
        progress.work_done.to_string()
    } else {
        String::new()
    };
    format!("{amount} {}", short(&progress.message))
        .trim()
        .to_owned()
}

/// The message name of a type URL: `google.protobuf.Struct`.
fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Free text on one line, at most 80 characters.
fn short(text: &str) -> String {
    const MAX: usize = 80;
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() <= MAX {
        return line;
    }
    let mut cut: String = line.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

/// How long from `from` until `to`, in words: `30s`, `1m30s`, `2h`, `250ms`;
/// the time itself when there is nothing to count from.
fn span(from: Option<&prost_types::Timestamp>, to: &prost_types::Timestamp) -> String {
    let Some(from) = from else {
        return format!("until {to}");
    };
    let nanos = (i128::from(to.seconds) - i128::from(from.seconds)) * 1_000_000_000
        + i128::from(to.nanos)
        - i128::from(from.nanos);
    if nanos < 0 {
        return format!("until {to} (already past)");
    }
    let millis = nanos / 1_000_000;
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let total = (millis + 500) / 1000;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || text.is_empty() {
        text.push_str(&format!("{seconds}s"));
    }
    text
}

/// JSON as YAML: block style for objects and lists, JSON-quoted strings
/// (valid YAML scalars that never need escaping rules of their own).
fn yaml(value: &Value) -> String {
    fn write(value: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match value {
            Value::Object(fields) if !fields.is_empty() => {
                for (key, value) in fields {
                    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic())
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let key = if plain {
                        key.clone()
                    } else {
                        serde_json::to_string(key).expect("strings serialize")
                    };
                    match value {
                        Value::Object(f) if !f.is_empty() => {
                            out.push_str(&format!("{pad}{key}:\n"));
                            write(value, indent + 2, out);
                        }
                        Value::Array(a) if !a.is_empty() => {
                            out.push_str(&format!("{pad}{key}:\n"));
                            write(value, indent, out);
                        }
                        scalar => out.push_str(&format!("{pad}{key}: {}\n", inline(scalar))),
                    }
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for item in items {
                    match item {
                        Value::Object(f) if !f.is_empty() => {
                            let mut nested = String::new();
                            write(item, indent + 2, &mut nested);
                            out.push_str(&format!("{pad}- {}", &nested[indent + 2..]));
                        }
                        Value::Array(a) if !a.is_empty() => {
                            out.push_str(&format!("{pad}-\n"));
                            write(item, indent + 2, out);
                        }
                        scalar => out.push_str(&format!("{pad}- {}\n", inline(scalar))),
                    }
                }
            }
            scalar => out.push_str(&format!("{pad}{}\n", inline(scalar))),
        }
    }
    fn inline(value: &Value) -> String {
        match value {
            Value::Object(_) => "{}".to_owned(),
            Value::Array(_) => "[]".to_owned(),
            other => other.to_string(),
        }
    }
    let mut out = String::new();
    write(value, 0, &mut out);
    out.trim_end().to_owned()
}

/// Field values come from the JSON mapping, so times and payloads read the same in both formats.
fn text(operation: &Operation, json: &Value) -> String {
    let field = |name: &str| match json.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut lines = vec![
        ("id", operation.id.clone()),
        ("description", operation.description.clone()),
        ("created_by", operation.created_by.clone()),
        ("created_at", field("createdAt")),
        ("modified_at", field("modifiedAt")),
        ("done", operation.done.to_string()),
    ];
    if operation.metadata.is_some() {
        lines.push(("metadata", field("metadata")));
    }
    match &operation.result {
        Some(OperationResult::Response(_)) => lines.push(("response", field("response"))),
        Some(OperationResult::Error(status)) => lines.push((
            "error",
            format!(
                "{} ({}): {}{}",
                opsd_client::code_name(tonic::Code::from_i32(status.code)),
                status.code,
                status.message,
                if operation.done {
                    ""
                } else {
                    " (reported while running: the producer is still cleaning up)"
                }
            ),
        )),
        None => {}
    }
    lines
        .iter()
        .map(|(name, value)| format!("{:13}{value}", format!("{name}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    #[test]
    fn times_always_have_milliseconds() {
        let event = |time| Event {
            time: Some(time),
            ..Event::default()
        };
        assert_eq!(event_time(&event(at(0, 0))), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            event_time(&event(at(0, 123_456_789))),
            "1970-01-01T00:00:00.123Z"
        );
        assert_eq!(
            event_time(&event(at(0, 50_000_000))),
            "1970-01-01T00:00:00.050Z"
        );
        assert_eq!(event_time(&Event::default()), "-");
    }

    #[test]
    fn spans_read_as_words() {
        let from = at(100, 0);
        assert_eq!(span(Some(&from), &at(130, 0)), "30s");
        assert_eq!(span(Some(&from), &at(190, 0)), "1m30s");
        assert_eq!(span(Some(&from), &at(100 + 7200, 0)), "2h");
        assert_eq!(span(Some(&from), &at(100, 250_000_000)), "250ms");
        assert!(span(Some(&from), &at(99, 0)).ends_with("(already past)"));
        assert_eq!(span(None, &at(0, 0)), "until 1970-01-01T00:00:00Z");
    }

    #[test]
    fn details_summarize_each_kind() {
        let base = Event {
            time: Some(at(100, 0)),
            ..Event::default()
        };
        let created = Event {
            kind: EventKind::Created.into(),
            description: "resize\ndisk-3".into(),
            lease_expires_at: Some(at(130, 0)),
            deadline: Some(at(700, 0)),
            metadata_type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            ..base.clone()
        };
        assert_eq!(
            event_details(&created),
            "\"resize disk-3\", lease 30s, deadline in 10m"
        );
        let progressed = Event {
            kind: EventKind::MetadataUpdated.into(),
            progress: Some(opsd_client::Progress {
                work_done: 3,
                work_total: 10,
                message: "copying".into(),
                steps: Vec::new(),
            }),
            folded: 12,
            ..base.clone()
        };
        assert_eq!(event_details(&progressed), "3/10 copying (+12 folded)");
        let metadata_only = Event {
            kind: EventKind::MetadataUpdated.into(),
            metadata_type_url: "type.googleapis.com/opsd.example.v1.SnapshotMetadata".into(),
            ..base.clone()
        };
        assert_eq!(
            event_details(&metadata_only),
            "metadata opsd.example.v1.SnapshotMetadata"
        );
        let failed = Event {
            kind: EventKind::FailureReported.into(),
            error: Some(opsd_proto::RpcStatus {
                code: 8,
                message: "quota".into(),
                details: Vec::new(),
            }),
            ..base.clone()
        };
        assert_eq!(event_details(&failed), "RESOURCE_EXHAUSTED: quota");
        let succeeded = Event {
            kind: EventKind::Completed.into(),
            response_type_url: "type.googleapis.com/opsd.example.v1.Snapshot".into(),
            ..base.clone()
        };
        assert_eq!(
            event_details(&succeeded),
            "response opsd.example.v1.Snapshot"
        );
        let folded_only = Event {
            kind: EventKind::MetadataUpdated.into(),
            folded: 2,
            ..base.clone()
        };
        assert_eq!(event_details(&folded_only), "(+2 folded)");
        let cancel = Event {
            kind: EventKind::CancelRequested.into(),
            ..base
        };
        assert_eq!(event_details(&cancel), "");
        assert_eq!(kind_name(EventKind::LeaseLapsed.into()), "lease_lapsed");
        assert_eq!(kind_name(99), "kind_99");
    }

    #[test]
    fn long_text_is_cut_to_one_short_line() {
        let long = "x".repeat(200);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), 80);
        assert!(cut.ends_with('…'));
        assert_eq!(short("a\tb\nc"), "a b c");
    }

    #[test]
    fn durations_read_as_a_person_says_them() {
        let d = |seconds: i64, nanos: i32| human(Some(&prost_types::Duration { seconds, nanos }));
        assert_eq!(d(0, 850_000_000), "850ms");
        assert_eq!(d(4, 200_000_000), "4.2s");
        assert_eq!(d(42, 0), "42s");
        assert_eq!(d(185, 0), "3m 5s");
        assert_eq!(d(600, 0), "10m");
        assert_eq!(d(3600, 0), "1h");
        assert_eq!(d(7800, 0), "2h 10m");
        assert_eq!(d(7 * 86400, 0), "7d");
        assert_eq!(human(None), "");
    }

    #[test]
    fn tables_align_left_and_right() {
        let rows = vec![
            vec!["SEQ".to_owned(), "KIND".to_owned(), "X".to_owned()],
            vec!["1".to_owned(), "created".to_owned(), String::new()],
            vec!["10".to_owned(), "completed".to_owned(), "done".to_owned()],
        ];
        assert_eq!(
            table(&rows, &[0]),
            ["SEQ  KIND       X", "  1  created", " 10  completed  done"]
        );
    }
}
