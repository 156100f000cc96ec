//! What every gRPC call goes through before and after tonic: the caller's
//! deadline is enforced and tonic's refusals are put in opsd's terms
//! ([`super::refusals`]).
//!
//! A hand-written layer rather than `axum::middleware`, whose `from_fn` and
//! `map_response` box a future per call each: this runs on every call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::response::Response;
use opsd_service::Metrics;
use tower::{Layer, Service};

use super::deadline::parse_grpc_timeout;
use super::refusals;

/// Adds [`GrpcCalls`] to the gRPC routes.
#[derive(Clone)]
pub struct GrpcCallsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcCallsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcCallsLayer {
    type Service = GrpcCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcCalls {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct GrpcCalls<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<http::Request<B>> for GrpcCalls<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GrpcCallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Answers DEADLINE_EXCEEDED (trailers-only) when the call is not
        // answered within the deadline its caller sent, and stops working on
        // it. Clients built on gRPC's core libraries also give up on their
        // own, but one that only sends the header (or a proxy) would otherwise
        // wait as long as the slowest store call. A stream's deadline covers
        // its first answer.
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let call = match deadline {
            None => Call::Open {
                inner: self.inner.call(request),
            },
            Some(deadline) => {
                let path = request.uri().path().to_owned();
                Call::Timed {
                    inner: tokio::time::timeout(deadline, self.inner.call(request)),
                    path,
                    deadline,
                }
            }
        };
        GrpcCallFuture {
            call,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = CallProjection]
    enum Call<F> {
        Open { #[pin] inner: F },
        Timed {
            #[pin]
            inner: tokio::time::Timeout<F>,
            path: String,
            deadline: Duration,
        },
    }
}

pin_project_lite::pin_project! {
    pub struct GrpcCallFuture<F> {
        #[pin]
        call: Call<F>,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for GrpcCallFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.call.project() {
            CallProjection::Open { inner } => ready!(inner.poll(cx)),
            CallProjection::Timed {
                inner,
                path,
                deadline,
            } => match ready!(inner.poll(cx)) {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(method = %path, ?deadline, "call outlived its deadline");
                    return Poll::Ready(Ok(tonic::Status::deadline_exceeded(
                        "the call's deadline passed before it was answered",
                    )
                    .into_http()));
                }
            },
        };
        Poll::Ready(result.map(|response| refusals::rewrite(this.metrics, response)))
    }
}
