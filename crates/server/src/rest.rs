//! The REST/JSON gateway: the clouds' REST mapping and opsd.v1 routes, bodies
//! in the proto3 JSON mapping, errors as google.rpc.Status JSON.

use std::sync::Arc;

use opsd_service::OperationService;

use crate::grpc::GrpcOptions;

pub fn router(_service: Arc<OperationService>, _options: &GrpcOptions) -> axum::Router {
    axum::Router::new()
}
