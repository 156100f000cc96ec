//! The opsd server: adapters over the service, and the process around them.

pub mod config;
pub mod grpc;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::OperationService;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Serves every gRPC service on `listener` until `shutdown` resolves, then
/// lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    service: Arc<OperationService>,
    options: grpc::GrpcOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ycop::operation_service_server::OperationServiceServer<grpc::CloudOperations>>()
        .await;
    health_reporter
        .set_serving::<pb::operation_service_server::OperationServiceServer<grpc::OpsdOperations>>()
        .await;
    health_reporter
        .set_serving::<pb::producer_service_server::ProducerServiceServer<grpc::Producers>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opsd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opsd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let cloud = ycop::operation_service_server::OperationServiceServer::with_interceptor(
        grpc::CloudOperations {
            service: Arc::clone(&service),
            options: options.clone(),
        },
        grpc::authenticate,
    );
    let opsd = pb::operation_service_server::OperationServiceServer::with_interceptor(
        grpc::OpsdOperations {
            service: Arc::clone(&service),
            options,
        },
        grpc::authenticate,
    );
    let producers = pb::producer_service_server::ProducerServiceServer::with_interceptor(
        grpc::Producers { service },
        grpc::authenticate,
    );

    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(cloud)
        .add_service(opsd)
        .add_service(producers)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Until authentication exists, only this machine may call opsd.
pub fn check_listen_address(address: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        address.ip().is_loopback(),
        "refusing to listen on {address}: opsd has no authentication yet, so it only listens on a loopback address"
    );
    Ok(())
}
