//! The gRPC adapter: the clouds' `yandex.cloud.operation.OperationService` and
//! opsd's own `opsd.v1` services, translating to [`OperationService`] calls.

pub mod convert;
pub mod status;

use std::sync::Arc;

use opsd_core::{Error, IdPrefix, NewOperation, OperationId, Outcome, Principal};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use opsd_service::OperationService;
use tonic::{Request, Response, Status};

use convert::{
    any_from_wire, non_empty, operation_to_opsd_wire, operation_to_wire, policy_from_wire,
    status_from_wire,
};
use status::to_status;

/// The header the clouds' SDKs send an idempotency key in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Identifies the caller once per request, before any handler runs. Without
/// authentication configured every caller is anonymous; the server only
/// listens on loopback then.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn authenticate(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.extensions_mut().insert(Principal::anonymous());
    Ok(request)
}

#[allow(clippy::result_large_err)]
fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

#[allow(clippy::result_large_err)]
fn operation_id(raw: &str) -> Result<OperationId, Status> {
    OperationId::parse("operation_id", raw).map_err(to_status)
}

/// `yandex.cloud.operation.OperationService`.
pub struct CloudOperations {
    pub service: Arc<OperationService>,
}

#[tonic::async_trait]
impl ycop::operation_service_server::OperationService for CloudOperations {
    async fn get(
        &self,
        request: Request<ycop::GetOperationRequest>,
    ) -> Result<Response<ycop::Operation>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let op = self.service.get(&caller, &id).await.map_err(to_status)?;
        Ok(Response::new(operation_to_wire(&op)))
    }

    async fn cancel(
        &self,
        request: Request<ycop::CancelOperationRequest>,
    ) -> Result<Response<ycop::Operation>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let op = self.service.cancel(&caller, &id).await.map_err(to_status)?;
        Ok(Response::new(operation_to_wire(&op)))
    }
}

/// `opsd.v1.OperationService`.
pub struct OpsdOperations {
    pub service: Arc<OperationService>,
}

#[tonic::async_trait]
impl pb::operation_service_server::OperationService for OpsdOperations {
    async fn get(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let id = operation_id(&request.get_ref().operation_id)?;
        let op = self.service.get(&caller, &id).await.map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }
}

/// `opsd.v1.ProducerService`.
pub struct Producers {
    pub service: Arc<OperationService>,
}

#[tonic::async_trait]
impl pb::producer_service_server::ProducerService for Producers {
    async fn create(
        &self,
        request: Request<pb::CreateOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let header_key = idempotency_header(&request)?;
        let body = request.into_inner();
        let idempotency_key = match (non_empty(body.idempotency_key), header_key) {
            (Some(field), Some(header)) if field != header => {
                return Err(to_status(Error::invalid_argument(
                    "idempotency_key",
                    "differs from the idempotency-key header",
                )));
            }
            (field, header) => field.or(header),
        };
        let cancellation = policy_from_wire(body.cancellation_policy).ok_or_else(|| {
            to_status(Error::invalid_argument(
                "cancellation_policy",
                "unknown cancellation policy",
            ))
        })?;
        let id_prefix = non_empty(body.id_prefix)
            .map(|p| IdPrefix::parse("id_prefix", &p))
            .transpose()
            .map_err(to_status)?;
        let new = NewOperation {
            description: body.description,
            resource_id: non_empty(body.resource_id),
            metadata: body.metadata.map(any_from_wire),
            cancellation,
            idempotency_key,
            id_prefix,
        };
        let op = self.service.create(&caller, new).await.map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }

    async fn update_metadata(
        &self,
        request: Request<pb::UpdateMetadataRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let metadata = body
            .metadata
            .map(any_from_wire)
            .ok_or_else(|| to_status(Error::invalid_argument("metadata", "is required")))?;
        let op = self
            .service
            .update_metadata(&caller, &id, metadata)
            .await
            .map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        use pb::complete_operation_request::Result as Wire;
        let caller = caller(&request)?;
        let body = request.into_inner();
        let id = operation_id(&body.operation_id)?;
        let outcome = match body.result {
            Some(Wire::Response(any)) => Outcome::Response(any_from_wire(any)),
            Some(Wire::Error(status)) => Outcome::Error(status_from_wire(status)),
            None => {
                return Err(to_status(Error::invalid_argument(
                    "result",
                    "one of response or error is required",
                )));
            }
        };
        let op = self
            .service
            .complete(&caller, &id, outcome)
            .await
            .map_err(to_status)?;
        Ok(Response::new(operation_to_opsd_wire(&op)))
    }
}

#[allow(clippy::result_large_err)]
fn idempotency_header<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    match request.metadata().get(IDEMPOTENCY_KEY_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|s| non_empty(s.to_owned()))
            .map_err(|_| {
                to_status(Error::invalid_argument(
                    "idempotency-key",
                    "header must be printable ascii",
                ))
            }),
    }
}
