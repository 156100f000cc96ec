//! The caller's deadline, from the `grpc-timeout` header.

use std::time::Duration;

/// Parses `grpc-timeout` (at most 8 digits and a unit: H, M, S, m, u or n).
pub fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    if !raw.is_ascii() || raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// Answers DEADLINE_EXCEEDED (trailers-only) when a gRPC call is not
/// answered within the deadline its caller sent, and stops working on it.
/// Clients built on gRPC's core libraries also give up on their own, but one
/// that only sends the header (or a proxy) would otherwise wait as long as
/// the slowest store call. A stream's deadline covers its first answer.
pub async fn enforce(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let deadline = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let Some(deadline) = deadline else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(method = %path, ?deadline, "call outlived its deadline");
            tonic::Status::deadline_exceeded("the call's deadline passed before it was answered")
                .into_http()
        }
    }
}

/// How long the caller is still listening, if it said.
pub fn remaining<T>(request: &tonic::Request<T>) -> Option<Duration> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_follow_the_grpc_spec() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(raw in "\\PC{0,12}") {
            let _ = parse_grpc_timeout(&raw);
        }
    }
}
