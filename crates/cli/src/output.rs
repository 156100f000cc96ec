//! How opsctl prints an operation.

use clap::ValueEnum;
use opsd_client::{ListOperationsResponse, Operation, OpsdOperation};
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
    let json = opsd_proto::json::to_json(operation)?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json)?,
        Format::Yaml => yaml(&json),
        Format::Text => text(operation, &json),
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
            let mut rows = vec![[
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
                rows.push([
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
            let widths: Vec<usize> = (0..5)
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            let mut lines: Vec<String> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(&widths)
                        .map(|(cell, width)| format!("{cell:width$}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                        .trim_end()
                        .to_owned()
                })
                .collect();
            if !page.next_page_token.is_empty() {
                lines.push(format!("next page: --page-token {}", page.next_page_token));
            }
            lines.join("\n")
        }
    })
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
