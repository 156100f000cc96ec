//! What a REST request brings: the caller, the operation in the path, a JSON
//! body or query parameters, each read into the request message the gRPC
//! adapter would receive.

use std::collections::HashSet;

use axum::extract::{FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};
use futures_util::StreamExt;
use opsd_core::{Error, OperationId, Principal};
use opsd_proto::json::{JsonError, encoded_from_json, from_json};

use super::error::{RestError, quote};

/// The most a request body may hold unless `--max-message-size` says otherwise.
pub const MAX_BODY_BYTES: usize = crate::limits::DEFAULT_MAX_MESSAGE_SIZE;

/// The authenticated caller. Every handler takes one, so each request is
/// authenticated exactly once, before anything else is read.
pub(crate) struct Caller(pub std::sync::Arc<Principal>);

impl FromRequestParts<std::sync::Arc<super::Gateway>> for Caller {
    type Rejection = RestError;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &std::sync::Arc<super::Gateway>,
    ) -> Result<Self, RestError> {
        Ok(Self(gateway.gate.admit(&parts.headers)?))
    }
}

/// The last segment of `/operations/{id}` or `/operations/{id}:{verb}`.
pub(crate) struct Target {
    pub id: String,
    pub verb: Option<String>,
}

impl Target {
    /// The operation named by the path. The request message may name it too,
    /// but only the same one.
    pub fn operation_id(&self, in_message: &str) -> Result<OperationId, RestError> {
        if !in_message.is_empty() && in_message != self.id {
            return Err(RestError::invalid(
                "operationId",
                "differs from the operation id in the path",
            ));
        }
        Ok(OperationId::parse("operation_id", &self.id)?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, RestError> {
        let Path(segment) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| RestError::invalid("operationId", "is not valid utf-8"))?;
        Ok(match segment.rsplit_once(':') {
            Some((id, verb)) => Self {
                id: id.to_owned(),
                verb: Some(verb.to_owned()),
            },
            None => Self {
                id: segment,
                verb: None,
            },
        })
    }
}

/// Reads the body, at most `limit` bytes, as the request message `M` in the
/// proto3 JSON mapping (see [`parse_body`]).
pub async fn read_json<M: prost::Name + Default>(
    request: Request,
    limit: usize,
) -> Result<M, RestError> {
    let too_large = || {
        RestError::invalid(
            "body",
            format!("is larger than {}", crate::limits::human_size(limit)),
        )
    };
    // Past the limit the body is still read, up to twice the limit, so that a
    // client that sent a little too much reads the answer instead of a reset.
    let drain_limit = limit.saturating_mul(2);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > drain_limit as u64) {
        return Err(too_large());
    }
    let is_json = is_json(request.headers());
    let mut chunks = request.into_body().into_data_stream();
    let mut body = Vec::new();
    let mut received = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| RestError::invalid("body", format!("cannot be read: {e}")))?;
        received = received.saturating_add(chunk.len());
        if received > drain_limit {
            break;
        }
        if received <= limit {
            body.extend_from_slice(&chunk);
        }
    }
    if received > limit {
        return Err(too_large());
    }
    parse_body(is_json, &body)
}

/// A body as the request message `M`. An empty body is the empty message;
/// any other needs a JSON content type (`is_json`), valid UTF-8, and JSON
/// that is `M` in the proto3 JSON mapping, unknown fields refused.
pub fn parse_body<M: prost::Name + Default>(is_json: bool, body: &[u8]) -> Result<M, RestError> {
    if body.is_empty() {
        return Ok(M::default());
    }
    if !is_json {
        return Err(RestError::invalid(
            "content-type",
            "must be application/json for a request with a body",
        ));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| RestError::invalid("body", "is not valid utf-8"))?;
    from_json(text).map_err(|e| json_error("body", e, true))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The query string as name and value pairs, decoded.
pub fn query_params(uri: &Uri) -> Result<Vec<(String, String)>, RestError> {
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| RestError::invalid("query", "is not a valid query string"))?;
    Ok(params)
}

/// Query parameters as the request message `M`: each parameter is the field
/// of that JSON name, its value read as it would be in a JSON body, so a
/// timestamp or a duration is spelled the same in both.
pub fn from_params<M: prost::Name + Default>(params: &[(String, String)]) -> Result<M, RestError> {
    let mut seen = HashSet::new();
    let mut encoded = Vec::new();
    for (name, value) in params {
        // `?=x` or `?&=`: nothing to name in the answer but the query itself.
        if name.is_empty() {
            return Err(RestError::invalid(
                "query",
                "has a parameter without a name",
            ));
        }
        if !seen.insert(name) {
            return Err(RestError::invalid_as_given(name, "is given more than once"));
        }
        // Every field a query sets (strings, numbers, enums, timestamps,
        // durations) may be a JSON string.
        let json = format!("{{{}:{}}}", quote(name), quote(value));
        let field =
            encoded_from_json(&M::full_name(), &json).map_err(|e| json_error(name, e, false))?;
        // Protobuf encodings concatenate into the merged message.
        encoded.extend(field);
    }
    M::decode(encoded.as_slice()).map_err(|e| Error::Internal(e.to_string()).into())
}

fn json_error(field: &str, error: JsonError, in_body: bool) -> RestError {
    match error {
        JsonError::Json { source, .. } => {
            let text = source.to_string();
            if in_body {
                RestError::invalid(field, format!("invalid json: {text}"))
            } else {
                // The position would be in the JSON made of the parameter, not in
                // the query; the parameter is named as the caller spelled it.
                let text = text.split(" at line ").next().unwrap_or_default();
                RestError::invalid_as_given(field, text)
            }
        }
        other => Error::Internal(other.to_string()).into(),
    }
}
