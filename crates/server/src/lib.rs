//! The opsd server: adapters over the service, and the process around them.

pub mod auth;
pub mod call_span;
pub mod config;
pub mod console;
pub mod discovery;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod rest;
pub mod telemetry;
pub mod tls;
pub mod translate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::endpoint as ycep;
use opsd_proto::yandex::cloud::iam::v1 as yciam;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::OperationService;
use tokio::net::TcpListener;

/// How the listener serves.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub grpc: grpc::GrpcOptions,
    /// TLS for every connection; plaintext when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What endpoint discovery answers; by default `operation` and `iam` at
    /// the public address.
    pub endpoints: Option<discovery::Endpoints>,
    /// The address clients reach this server at (`--public-address`); by
    /// default the listener's own. Service-account JWTs may be addressed to
    /// `https://iam.<public address>/iam/v1/tokens`.
    pub public_address: Option<String>,
    /// Who may call; anonymous callers when it has no credentials configured.
    pub auth: Arc<auth::Authenticator>,
    /// Run each call in an exported server span (see [`telemetry::init`]);
    /// the caller's trace context is kept either way.
    pub trace_spans: bool,
    /// What the web console at `/console` is told.
    pub console: console::ConsoleOptions,
}

/// Serves gRPC and REST on `listener` until `shutdown` resolves, then lets
/// in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    service: Arc<OperationService>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let public_address = match options.public_address.clone() {
        Some(address) => address,
        None => listener.local_addr()?.to_string(),
    };
    let endpoints = match options.endpoints.clone() {
        Some(endpoints) => endpoints,
        None => discovery::Endpoints::new(&public_address, &[]),
    };
    let metrics = Arc::clone(service.metrics());
    let gate = auth::Gatekeeper::new(Arc::clone(&options.auth), Arc::clone(service.metrics()))
        .with_public_address(&public_address);
    let (drain, draining) = tokio::sync::watch::channel(false);
    let grpc_options = grpc::GrpcOptions {
        draining: Some(draining),
        ..options.grpc.clone()
    };
    let shutdown = async move {
        shutdown.await;
        let _ = drain.send(true);
    };
    let credentials_required = !options.auth.is_anonymous();
    let app = router(service, gate, &grpc_options, endpoints)
        .await?
        .merge(console::router(&options.console, credentials_required))
        .layer(metrics::RecordLayer::new(metrics))
        .layer(call_span::CallSpanLayer {
            spans: options.trace_spans,
        });
    http::run(listener, app, options.tls, &grpc_options.limits, shutdown).await
}

/// Every route of the listener: the gRPC services, then REST.
pub async fn router(
    service: Arc<OperationService>,
    gate: auth::Gatekeeper,
    grpc_options: &grpc::GrpcOptions,
    endpoints: discovery::Endpoints,
) -> anyhow::Result<axum::Router> {
    use tonic::service::interceptor::InterceptedService;

    let max_message = grpc_options.limits.max_message_size;
    let watchers =
        limits::WatcherLimits::new(&grpc_options.limits, Some(Arc::clone(service.metrics())));
    let feed_readers = limits::WatcherLimits::feed_readers(
        &grpc_options.limits,
        Some(Arc::clone(service.metrics())),
    );
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let health = health.max_decoding_message_size(max_message);
    health_reporter
        .set_serving::<ycop::operation_service_server::OperationServiceServer<grpc::CloudOperations>>()
        .await;
    health_reporter
        .set_serving::<pb::operation_service_server::OperationServiceServer<grpc::OpsdOperations>>()
        .await;
    health_reporter
        .set_serving::<pb::producer_service_server::ProducerServiceServer<grpc::Producers>>()
        .await;
    health_reporter
        .set_serving::<ycep::api_endpoint_service_server::ApiEndpointServiceServer<discovery::Discovery>>()
        .await;
    health_reporter
        .set_serving::<yciam::iam_token_service_server::IamTokenServiceServer<grpc::iam::IamTokens>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opsd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?
        .max_decoding_message_size(max_message);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opsd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?
        .max_decoding_message_size(max_message);

    let cloud = InterceptedService::new(
        ycop::operation_service_server::OperationServiceServer::new(grpc::CloudOperations {
            service: Arc::clone(&service),
            options: grpc_options.clone(),
        })
        .max_decoding_message_size(max_message),
        grpc::interceptor(gate.clone()),
    );
    let opsd = InterceptedService::new(
        pb::operation_service_server::OperationServiceServer::new(grpc::OpsdOperations {
            service: Arc::clone(&service),
            options: grpc_options.clone(),
            watchers: watchers.clone(),
            feed_readers: feed_readers.clone(),
        })
        .max_decoding_message_size(max_message),
        grpc::interceptor(gate.clone()),
    );
    let producers = InterceptedService::new(
        pb::producer_service_server::ProducerServiceServer::new(grpc::Producers {
            service: Arc::clone(&service),
        })
        .max_decoding_message_size(max_message),
        grpc::interceptor(gate.clone()),
    );
    // Discovery needs no credentials: the SDKs call it before anything else.
    let discovery =
        ycep::api_endpoint_service_server::ApiEndpointServiceServer::new(discovery::Discovery {
            endpoints,
        })
        .max_decoding_message_size(max_message);
    // Nor does the IAM token exchange: it is how a caller gets credentials.
    let iam = yciam::iam_token_service_server::IamTokenServiceServer::new(grpc::iam::IamTokens {
        gate: gate.clone(),
    })
    .max_decoding_message_size(max_message);

    let grpc = tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(discovery)
        .add_service(iam)
        .add_service(cloud)
        .add_service(opsd)
        .add_service(producers)
        .prepare()
        .into_axum_router()
        .layer(grpc::calls::GrpcCallsLayer::new(Arc::clone(
            service.metrics(),
        )));
    let scrape = {
        let service = Arc::clone(&service);
        axum::routing::get(move || async move {
            (
                [(
                    ::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                service.metrics_text().await,
            )
        })
    };
    Ok(grpc
        .merge(rest::router(
            Arc::clone(&service),
            gate,
            grpc_options,
            watchers,
            feed_readers,
        ))
        .route("/metrics", scrape)
        .fallback(rest::fallback))
}

/// Without credentials configured every caller is anonymous and may do
/// anything, so only this machine may call.
pub fn check_listen_address(address: SocketAddr, anonymous: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        !anonymous || address.ip().is_loopback(),
        "refusing to listen on {address}: no credentials are configured (--tokens-file, --jwt-* or --iam-signing-key), so opsd only listens on a loopback address"
    );
    Ok(())
}
