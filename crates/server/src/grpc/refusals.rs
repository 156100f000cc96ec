//! tonic's own refusals of a request, before any handler runs, in opsd's
//! terms. tonic answers a message over the size limit with OUT_OF_RANGE and a
//! message it cannot decode (or a missing or truncated one) with INTERNAL; a
//! caller's mistake must never look like a server bug, so these become
//! RESOURCE_EXHAUSTED (as gRPC's status code table has it for a message over
//! the limit) and INVALID_ARGUMENT with a field violation.
//!
//! Only trailers-only answers are looked at (grpc-status in the headers): a
//! request refused before its handler ran gets one, so an answer a handler
//! streamed is never touched. opsd's own INTERNAL errors say "internal error",
//! which none of tonic's refusals do.

use axum::response::Response;
use opsd_core::Error;
use opsd_service::Metrics;

use super::status::to_status;
use crate::limits::human_size;

/// What tonic says when it refuses a request's message, by the start of its message.
const UNDECODABLE: [&str; 4] = [
    // prost's decode error
    "failed to decode Protobuf message",
    // a frame cut short
    "Unexpected EOF decoding stream",
    // a unary call without a message
    "Missing request message",
    // a compressed-flag that is neither 0 nor 1, or 1 without grpc-encoding
    "protocol error: received message with",
];
const TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's refusals, passes everything else through.
pub fn rewrite(metrics: &Metrics, response: Response) -> Response {
    // Successes and opsd's own answers are the common case: look no further.
    let refusal = response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11" || code.as_bytes() == b"13");
    if !refusal {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    match translate(&status) {
        Some(error) => {
            if matches!(error, Error::ResourceExhausted(_)) {
                metrics.limit_refused("message_size");
            }
            to_status(error).into_http()
        }
        None => response,
    }
}

/// The opsd error for one of tonic's refusals; `None` for any other status.
pub fn translate(status: &tonic::Status) -> Option<Error> {
    let message = status.message();
    match status.code() {
        tonic::Code::OutOfRange if message.starts_with(TOO_LARGE) => {
            // "... found {len} bytes, the limit is: {limit} bytes"
            let number_after = |marker: &str| -> Option<usize> {
                let rest = &message[message.find(marker)? + marker.len()..];
                rest.split_whitespace().next()?.parse().ok()
            };
            let found = number_after("found ");
            let limit = number_after("the limit is: ");
            let text = match (found, limit) {
                (Some(found), Some(limit)) => format!(
                    "the request message of {found} bytes is larger than the limit of {} (--max-message-size)",
                    human_size(limit)
                ),
                _ => "the request message is larger than the limit (--max-message-size)".to_owned(),
            };
            Some(Error::ResourceExhausted(text))
        }
        tonic::Code::Internal if UNDECODABLE.iter().any(|m| message.starts_with(m)) => {
            let reason = message.trim_end_matches('.');
            let mut chars = reason.chars();
            let reason = match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect::<String>(),
                None => String::new(),
            };
            Some(Error::invalid_argument(
                "request",
                format!("is not a valid request message: {reason}"),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_message_is_resource_exhausted_naming_the_limit() {
        let status = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5242885 bytes, the limit is: 4194304 bytes",
        );
        let error = translate(&status).unwrap();
        assert_eq!(error.code(), opsd_core::Code::ResourceExhausted);
        assert_eq!(
            error.to_string(),
            "resource exhausted: the request message of 5242885 bytes is larger than the limit of 4 MiB (--max-message-size)"
        );
    }

    #[test]
    fn undecodable_messages_are_invalid_arguments() {
        for message in [
            "failed to decode Protobuf message: invalid wire type value: 7",
            "Unexpected EOF decoding stream.",
            "Missing request message.",
            "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request",
        ] {
            let error = translate(&tonic::Status::internal(message)).unwrap();
            assert_eq!(error.code(), opsd_core::Code::InvalidArgument, "{message}");
            let text = error.to_string();
            assert!(
                text.starts_with("request: is not a valid request message: "),
                "{text}"
            );
            assert!(!text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn opsd_errors_pass_unchanged() {
        for status in [
            tonic::Status::internal("internal error: cannot print opsd.v1.Operation as json"),
            tonic::Status::out_of_range("something else"),
            tonic::Status::invalid_argument("operation_id: is required"),
            tonic::Status::unavailable("unavailable: store down"),
        ] {
            assert!(translate(&status).is_none(), "{status:?}");
        }
    }
}
