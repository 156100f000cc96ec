//! Request metrics for every route, gRPC and REST alike, as one middleware.

use std::sync::Arc;
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
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let http_method = request.method().clone();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    if is_grpc {
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
            path
        } else {
            "unknown".to_owned()
        };
        metrics.request("grpc", &method, opsd_proto::grpc_code_name(code), elapsed);
    } else {
        let method = match route {
            Some(route) => format!("{http_method} {route}"),
            None => "unknown".to_owned(),
        };
        metrics.request("http", &method, response.status().as_str(), elapsed);
    }
    response
}
