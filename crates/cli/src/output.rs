//! How opsctl prints an operation.

use clap::ValueEnum;
use opsd_client::Operation;
use opsd_proto::yandex::cloud::operation::operation::Result as OperationResult;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned `field: value` lines.
    Text,
    /// The proto3 JSON mapping (camelCase names, Any with "@type", RFC 3339 times).
    Json,
}

pub fn render(operation: &Operation, format: Format) -> anyhow::Result<String> {
    let json = opsd_proto::json::to_json(operation)?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json)?,
        Format::Text => text(operation, &json),
    })
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
                "{} ({}): {}",
                opsd_client::code_name(tonic::Code::from_i32(status.code)),
                status.code,
                status.message
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
