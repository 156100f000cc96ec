//! Request metrics for every route, gRPC and REST alike, as one middleware.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::response::Response;
use opsd_service::Metrics;
use opsd_service::metrics::RequestSeries;
use tower::{Layer, Service};

/// Counts and times each request by protocol, method and result code.
///
/// A tower layer of its own rather than `axum::middleware::from_fn`, which
/// boxes a future per call: this is on every call, and the series of each
/// gRPC method's successful answers are looked up once, here, not per call.
#[derive(Clone)]
pub struct RecordLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Arc<Metrics>,
    /// The OK series of every gRPC method opsd defines, by path.
    grpc_ok: HashMap<&'static str, RequestSeries, foldhash::fast::FixedState>,
}

impl RecordLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let grpc_ok = known_grpc_methods()
            .iter()
            .map(|&path| {
                let ok = Cow::Borrowed(opsd_proto::grpc_code_name(tonic::Code::Ok));
                (
                    path,
                    metrics.request_series("grpc", Cow::Borrowed(path), ok),
                )
            })
            .collect();
        Self {
            shared: Arc::new(Shared { metrics, grpc_ok }),
        }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Record {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Clone)]
pub struct Record<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What the answer will be recorded under, found before the call.
enum Labels {
    /// A gRPC call of a method opsd defines.
    KnownGrpc(&'static str),
    /// Any other gRPC path: routed (health, reflection) or not.
    OtherGrpc { path: Option<String> },
    Http {
        method: http::Method,
        route: Option<MatchedPath>,
    },
}

impl<S, B> Service<http::Request<B>> for Record<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let labels = if is_grpc {
            let path = request.uri().path();
            match self.shared.grpc_ok.get_key_value(path) {
                Some((&known, _)) => Labels::KnownGrpc(known),
                None => Labels::OtherGrpc {
                    // Paths nothing serves are the caller's to choose: one label.
                    path: request
                        .extensions()
                        .get::<MatchedPath>()
                        .map(|_| path.to_owned()),
                },
            }
        } else {
            Labels::Http {
                method: request.method().clone(),
                // A shared string: cloning it allocates nothing.
                route: request.extensions().get::<MatchedPath>().cloned(),
            }
        };
        RecordFuture {
            inner: self.inner.call(request),
            started,
            labels: Some(labels),
            shared: Arc::clone(&self.shared),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        labels: Option<Labels>,
        shared: Arc<Shared>,
    }
}

impl<F, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(labels)) = (&result, this.labels.take()) {
            record(this.shared, labels, response, this.started.elapsed());
        }
        Poll::Ready(result)
    }
}

fn record(shared: &Shared, labels: Labels, response: &Response, elapsed: std::time::Duration) {
    let metrics = &shared.metrics;
    match labels {
        Labels::KnownGrpc(path) => {
            let code = grpc_code(response);
            match (code, shared.grpc_ok.get(path)) {
                (tonic::Code::Ok, Some(ok)) => ok.record(elapsed),
                // Unimplemented: a method of a service opsd does not serve here.
                (tonic::Code::Unimplemented, _) => {
                    metrics.request("grpc", Cow::Borrowed("unknown"), code_label(code), elapsed)
                }
                _ => metrics.request("grpc", Cow::Borrowed(path), code_label(code), elapsed),
            }
        }
        Labels::OtherGrpc { path } => {
            let code = grpc_code(response);
            let method = match path {
                Some(path) if code != tonic::Code::Unimplemented => Cow::Owned(path),
                _ => Cow::Borrowed("unknown"),
            };
            metrics.request("grpc", method, code_label(code), elapsed);
        }
        Labels::Http { method, route } => {
            let method = match route {
                Some(route) => Cow::Owned(format!("{method} {}", route.as_str())),
                None => Cow::Borrowed("unknown"),
            };
            metrics.request(
                "http",
                method,
                Cow::Owned(response.status().as_str().to_owned()),
                elapsed,
            );
        }
    }
}

/// Errors come as trailers-only responses (grpc-status in the headers);
/// success puts it in the trailers, after this point.
fn grpc_code(response: &Response) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

fn code_label(code: tonic::Code) -> Cow<'static, str> {
    Cow::Borrowed(opsd_proto::grpc_code_name(code))
}

/// Every gRPC method opsd defines, as a request path.
fn known_grpc_methods() -> &'static [&'static str] {
    static KNOWN: OnceLock<Vec<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = Vec::new();
        for service in opsd_proto::json::descriptor_pool().services() {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                known.push(&*Box::leak(path.into_boxed_str()));
            }
        }
        known
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use tower::ServiceExt;

    fn grpc(path: &str) -> http::Request<axum::body::Body> {
        http::Request::post(path)
            .header("content-type", "application/grpc")
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn requests_are_counted_by_protocol_method_and_code() {
        let metrics = Arc::new(Metrics::new());
        let get = "/yandex.cloud.operation.OperationService/Get";
        let app = axum::Router::new()
            .route(
                get,
                axum::routing::post(|headers: http::HeaderMap| async move {
                    // A trailers-only error when asked for one.
                    if headers.contains_key("fail") {
                        ([("grpc-status", "5")], "").into_response()
                    } else {
                        "".into_response()
                    }
                }),
            )
            .route(
                "/grpc.health.v1.Health/Check",
                axum::routing::post(|| async { "" }),
            )
            .route("/v1/operations/{id}", axum::routing::get(|| async { "" }))
            .fallback(|| async { ([("grpc-status", "12")], "") })
            .layer(RecordLayer::new(Arc::clone(&metrics)));
        let call = |request| app.clone().oneshot(request);
        call(grpc(get)).await.unwrap();
        call(grpc(get)).await.unwrap();
        let mut failing = grpc(get);
        failing
            .headers_mut()
            .insert("fail", http::HeaderValue::from_static("1"));
        call(failing).await.unwrap();
        call(grpc("/grpc.health.v1.Health/Check")).await.unwrap();
        call(grpc("/no.such.Service/Call")).await.unwrap();
        call(
            http::Request::get("/v1/operations/abc")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();

        let text = metrics.encode();
        for series in [
            format!(r#"opsd_requests_total{{protocol="grpc",method="{get}",code="OK"}} 2"#),
            format!(r#"opsd_requests_total{{protocol="grpc",method="{get}",code="NOT_FOUND"}} 1"#),
            format!(r#"opsd_request_duration_seconds_count{{protocol="grpc",method="{get}"}} 3"#),
            r#"opsd_requests_total{protocol="grpc",method="/grpc.health.v1.Health/Check",code="OK"} 1"#.to_owned(),
            // Paths nothing serves share one label.
            r#"opsd_requests_total{protocol="grpc",method="unknown",code="UNIMPLEMENTED"} 1"#.to_owned(),
            r#"opsd_requests_total{protocol="http",method="GET /v1/operations/{id}",code="200"} 1"#.to_owned(),
        ] {
            assert!(text.contains(&series), "{series} missing from\n{text}");
        }
    }
}
