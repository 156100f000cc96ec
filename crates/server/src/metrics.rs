//! Request metrics for every route, gRPC and REST alike, as one middleware.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opsd_service::Metrics;

/// Counts and times each request by protocol, method and result code.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    // A shared string: cloning it allocates nothing.
    let route = request.extensions().get::<MatchedPath>().cloned();
    if is_grpc {
        let method = grpc_method_label(request.uri().path());
        let response = next.run(request).await;
        let elapsed = started.elapsed();
        // Errors come as trailers-only responses (grpc-status in the headers);
        // success puts it in the trailers, after this point.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(tonic::Code::Ok, tonic::Code::from_i32);
        // Paths of methods that do not exist are the caller's to choose: one label.
        let method = if route.is_some() && code != tonic::Code::Unimplemented {
            method
        } else {
            Cow::Borrowed("unknown")
        };
        metrics.request(
            "grpc",
            method,
            Cow::Borrowed(opsd_proto::grpc_code_name(code)),
            elapsed,
        );
        response
    } else {
        let http_method = request.method().clone();
        let response = next.run(request).await;
        let elapsed = started.elapsed();
        let method = match route {
            Some(route) => Cow::Owned(format!("{http_method} {}", route.as_str())),
            None => Cow::Borrowed("unknown"),
        };
        metrics.request(
            "http",
            method,
            Cow::Owned(response.status().as_str().to_owned()),
            elapsed,
        );
        response
    }
}

/// The label of a gRPC path: borrowed from a table of every method opsd
/// defines (no allocation per request), else the path itself.
fn grpc_method_label(path: &str) -> Cow<'static, str> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut known = HashSet::new();
        for service in opsd_proto::json::descriptor_pool().services() {
            for method in service.methods() {
                known.insert(format!("/{}/{}", service.full_name(), method.name()));
            }
        }
        known
    });
    match known.get(path) {
        Some(known) => Cow::Borrowed(known.as_str()),
        None => Cow::Owned(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_grpc_methods_are_labelled_without_allocating() {
        let label = grpc_method_label("/yandex.cloud.operation.OperationService/Get");
        assert!(matches!(
            label,
            Cow::Borrowed("/yandex.cloud.operation.OperationService/Get")
        ));
        let label = grpc_method_label("/opsd.v1.ProducerService/Create");
        assert!(matches!(label, Cow::Borrowed(_)));
        let label = grpc_method_label("/grpc.health.v1.Health/Check");
        assert_eq!(label, "/grpc.health.v1.Health/Check");
    }
}
