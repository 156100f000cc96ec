//! Every call, gRPC or REST, runs with the W3C trace context its caller
//! sent (`traceparent`, `tracestate`: gRPC metadata are HTTP/2 headers, so
//! one layer reads both) and, when spans are exported, inside a server span
//! that is a child of it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use futures_util::future::Either;
use opentelemetry::trace::TraceContextExt;
use opsd_core::TraceContext;
use opsd_service::trace::{TARGET, caller_context_scope, span_context};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Adds [`CallSpan`] to every route.
#[derive(Clone, Copy, Debug)]
pub struct CallSpanLayer {
    /// Make server spans (only when they are exported: otherwise they would
    /// cost every call for nothing).
    pub spans: bool,
}

impl<S> Layer<S> for CallSpanLayer {
    type Service = CallSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallSpan {
            inner,
            spans: self.spans,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CallSpan<S> {
    inner: S,
    spans: bool,
}

type Response = axum::response::Response;
type BoxedCall<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for CallSpan<S>
where
    S: Service<http::Request<B>, Response = Response> + Send,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<TaskLocalFuture<Option<TraceContext>, S::Future>, BoxedCall<S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = caller_context(request.headers());
        if !self.spans {
            return Either::Left(caller_context_scope(caller, self.inner.call(request)));
        }
        let span = server_span(&request);
        let parent = match &caller {
            Some(caller) => {
                opentelemetry::Context::new().with_remote_span_context(span_context(caller))
            }
            // A call without a context starts a trace of its own.
            None => opentelemetry::Context::new(),
        };
        let _ = span.set_parent(parent);
        let is_grpc = is_grpc(&request);
        let call = caller_context_scope(caller, self.inner.call(request));
        let recorded = span.clone();
        Either::Right(Box::pin(
            async move {
                let response = call.await?;
                record_outcome(&recorded, is_grpc, &response);
                Ok(response)
            }
            .instrument(span),
        ))
    }
}

/// The caller's context; a malformed one is ignored, as W3C asks.
fn caller_context(headers: &http::HeaderMap) -> Option<TraceContext> {
    let traceparent = headers.get("traceparent")?.to_str().ok()?;
    let tracestate = headers.get("tracestate").and_then(|v| v.to_str().ok());
    TraceContext::parse(traceparent, tracestate)
}

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A span named as OpenTelemetry's RPC and HTTP conventions name server spans.
fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    if is_grpc(request) {
        let path = request.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        tracing::info_span!(
            target: TARGET,
            "grpc",
            otel.name = %path,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        )
    } else {
        let method = request.method().as_str();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|route| route.as_str().to_owned());
        let name = match &route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        };
        tracing::info_span!(
            target: TARGET,
            "http",
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = route.as_deref(),
            url.path = %request.uri().path(),
            http.response.status_code = tracing::field::Empty,
        )
    }
}

/// The result on the span; errors the server is to blame for mark it failed.
fn record_outcome(span: &tracing::Span, is_grpc: bool, response: &Response) {
    if is_grpc {
        // Errors come trailers-only, with grpc-status in the headers; a
        // success puts it in the trailers, after this point.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        span.record("rpc.grpc.status_code", code);
        // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
        if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
            span.record("otel.status_code", "ERROR");
        }
    } else {
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_context_comes_from_its_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(caller_context(&headers), None);
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        headers.insert("tracestate", "vendor=1".parse().unwrap());
        let context = caller_context(&headers).unwrap();
        assert_eq!(
            context.span.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.state.as_deref(), Some("vendor=1"));
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(caller_context(&headers), None, "ignored, never refused");
    }
}
