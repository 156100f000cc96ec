//! The ceiling for Get: a minimal tonic server answering every
//! `yandex.cloud.operation.OperationService/Get` with one constant operation.

use opsd_proto::yandex::cloud::operation as ycop;
use tonic::{Request, Response, Status};

/// The same allocator as opsd's binary, so the ratio to this ceiling measures
/// opsd's own work and not the allocators' difference.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Constant(ycop::Operation);

#[tonic::async_trait]
impl ycop::operation_service_server::OperationService for Constant {
    async fn get(
        &self,
        _request: Request<ycop::GetOperationRequest>,
    ) -> Result<Response<ycop::Operation>, Status> {
        Ok(Response::new(self.0.clone()))
    }

    async fn cancel(
        &self,
        _request: Request<ycop::CancelOperationRequest>,
    ) -> Result<Response<ycop::Operation>, Status> {
        Err(Status::unimplemented("the baseline only answers Get"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    // The runner reads this line to find the port.
    eprintln!("baseline listening address={}", listener.local_addr()?);
    let operation = ycop::Operation {
        id: "ops00000000000000001".into(),
        description: "baseline".into(),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        created_by: "baseline".into(),
        modified_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        done: true,
        ..Default::default()
    };
    tonic::transport::Server::builder()
        .add_service(ycop::operation_service_server::OperationServiceServer::new(
            Constant(operation),
        ))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
