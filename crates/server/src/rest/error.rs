//! Errors as google.rpc.Status JSON, with the HTTP status from the one code table.

use std::fmt::Write;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opsd_core::{Code, Error, FieldViolation};
use tonic_types::{BadRequest, PreconditionFailure, ResourceInfo, StatusExt};

use crate::grpc::status::to_status;

/// A failed request. It holds the status the gRPC adapter would answer, so
/// both adapters carry the same code, message and details.
#[derive(Debug)]
pub struct RestError(tonic::Status);

impl RestError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::invalid_argument(field, description).into()
    }

    /// A field named as the caller spelled it (a query parameter), kept as is
    /// instead of being turned into its JSON name.
    pub fn invalid_as_given(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self(to_status(Error::invalid_argument(field, description)))
    }

    /// The status the gRPC adapter would answer with.
    pub fn status(&self) -> &tonic::Status {
        &self.0
    }

    pub fn no_route(method: &axum::http::Method, path: &str) -> Self {
        Self(tonic::Status::not_found(format!(
            "no route for {method} {path}"
        )))
    }
}

impl From<Error> for RestError {
    fn from(error: Error) -> Self {
        let error = match error {
            // REST callers spell fields as JSON does, and google.rpc.BadRequest
            // asks for the names the caller used.
            Error::InvalidArgument(violations) => Error::InvalidArgument(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(json_name(&v.field), v.description))
                    .collect(),
            ),
            other => other,
        };
        Self(to_status(error))
    }
}

/// From [`crate::auth::Gatekeeper::admit`], which answers in gRPC terms.
impl From<tonic::Status> for RestError {
    fn from(status: tonic::Status) -> Self {
        Self(status)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = self.0;
        let body = format!(
            r#"{{"code":{},"message":{},"details":[{}]}}"#,
            status.code() as i32,
            quote(status.message()),
            details_json(&status).join(",")
        );
        (
            http_status(status.code()),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// The HTTP status of a gRPC code, from [`Code::http_status`]; codes opsd
/// never answers with are server errors.
fn http_status(code: tonic::Code) -> StatusCode {
    // Not a domain error: only the IAM token exchange, when it is off.
    if code == tonic::Code::Unimplemented {
        return StatusCode::NOT_IMPLEMENTED;
    }
    const CODES: [Code; 13] = [
        Code::Cancelled,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Internal,
        Code::Unavailable,
        Code::Unauthenticated,
    ];
    CODES
        .into_iter()
        .find(|c| c.grpc() == code as i32)
        .and_then(|c| StatusCode::from_u16(c.http_status()).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The details opsd attaches (see [`to_status`]) in the proto3 JSON mapping.
/// Written out here: the JSON mapping's descriptor pool lacks google.rpc's
/// error detail messages.
fn details_json(status: &tonic::Status) -> Vec<String> {
    let details = status.get_error_details();
    let mut out = Vec::new();
    if let Some(bad_request) = details.bad_request() {
        let violations = bad_request
            .field_violations
            .iter()
            .map(|v| {
                format!(
                    r#"{{"field":{},"description":{}}}"#,
                    quote(&v.field),
                    quote(&v.description)
                )
            })
            .collect::<Vec<_>>();
        out.push(format!(
            r#"{{"@type":{},"fieldViolations":[{}]}}"#,
            quote(BadRequest::TYPE_URL),
            violations.join(",")
        ));
    }
    if let Some(info) = details.resource_info() {
        out.push(format!(
            r#"{{"@type":{},"resourceType":{},"resourceName":{},"owner":{},"description":{}}}"#,
            quote(ResourceInfo::TYPE_URL),
            quote(&info.resource_type),
            quote(&info.resource_name),
            quote(&info.owner),
            quote(&info.description)
        ));
    }
    if let Some(failure) = details.precondition_failure() {
        let violations = failure
            .violations
            .iter()
            .map(|v| {
                format!(
                    r#"{{"type":{},"subject":{},"description":{}}}"#,
                    quote(&v.r#type),
                    quote(&v.subject),
                    quote(&v.description)
                )
            })
            .collect::<Vec<_>>();
        out.push(format!(
            r#"{{"@type":{},"violations":[{}]}}"#,
            quote(PreconditionFailure::TYPE_URL),
            violations.join(",")
        ));
    }
    out
}

/// `text` as a JSON string literal.
pub(super) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A field path with proto names (`created_after`, `progress.work_done`) in
/// JSON names (`createdAfter`, `progress.workDone`).
fn json_name(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("line\nnext\u{1}"), r#""line\u000anext\u0001""#);
        assert_eq!(quote("ünïcode ✓"), "\"ünïcode ✓\"");
    }

    #[test]
    fn field_paths_take_json_names() {
        assert_eq!(json_name("operation_id"), "operationId");
        assert_eq!(
            json_name("progress.steps[2].state"),
            "progress.steps[2].state"
        );
        assert_eq!(json_name("error.details[0]"), "error.details[0]");
        assert_eq!(json_name("idempotency-key"), "idempotency-key");
    }

    #[test]
    fn every_code_has_its_http_status() {
        assert_eq!(
            http_status(tonic::Code::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(tonic::Code::Unauthenticated),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(http_status(tonic::Code::Cancelled).as_u16(), 499);
        assert_eq!(
            http_status(tonic::Code::DataLoss),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
