//! `yandex.cloud.endpoint.ApiEndpointService`: the official SDKs ask it where
//! each service lives before they call anything. It needs no credentials.

use opsd_proto::yandex::cloud::endpoint as pb;
use tonic::{Request, Response, Status};

/// The endpoints opsd announces, in the order it lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints(pub Vec<pb::ApiEndpoint>);

impl Endpoints {
    /// `operation` and `iam` at opsd's public address, then `extra` entries:
    /// `ID` (also at opsd's address) or `ID=HOST:PORT`.
    pub fn new(public_address: &str, extra: &[String]) -> Self {
        let mut endpoints = Vec::new();
        let mut add = |id: &str, address: &str| {
            endpoints.retain(|e: &pb::ApiEndpoint| e.id != id);
            endpoints.push(pb::ApiEndpoint {
                id: id.to_owned(),
                address: address.to_owned(),
            });
        };
        add("operation", public_address);
        add("iam", public_address);
        for entry in extra {
            match entry.split_once('=') {
                Some((id, address)) => add(id, address),
                None => add(entry, public_address),
            }
        }
        Self(endpoints)
    }
}

pub struct Discovery {
    pub endpoints: Endpoints,
}

#[tonic::async_trait]
impl pb::api_endpoint_service_server::ApiEndpointService for Discovery {
    async fn get(
        &self,
        request: Request<pb::GetApiEndpointRequest>,
    ) -> Result<Response<pb::ApiEndpoint>, Status> {
        let id = &request.get_ref().api_endpoint_id;
        if id.is_empty() {
            return Err(crate::grpc::status::to_status(
                opsd_core::Error::invalid_argument("api_endpoint_id", "is required"),
            ));
        }
        // The id is the caller's: quoted, so that it reads as data.
        self.endpoints
            .0
            .iter()
            .find(|e| e.id == *id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no endpoint {id:?}")))
    }

    async fn list(
        &self,
        _request: Request<pb::ListApiEndpointsRequest>,
    ) -> Result<Response<pb::ListApiEndpointsResponse>, Status> {
        // A handful of entries: one page holds them all, whatever the page size.
        Ok(Response::new(pb::ListApiEndpointsResponse {
            endpoints: self.endpoints.0.clone(),
            next_page_token: String::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::api_endpoint_service_server::ApiEndpointService;

    #[tokio::test]
    async fn get_names_what_it_cannot_find_and_needs_an_id() {
        let discovery = Discovery {
            endpoints: Endpoints::new("ops.example:443", &[]),
        };
        let get = |id: &str| {
            discovery.get(Request::new(pb::GetApiEndpointRequest {
                api_endpoint_id: id.to_owned(),
            }))
        };
        assert_eq!(
            get("iam").await.unwrap().into_inner().address,
            "ops.example:443"
        );
        let missing = get("compute.\n").await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert_eq!(missing.message(), r#"no endpoint "compute.\n""#);
        let empty = get("").await.unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        assert_eq!(empty.message(), "api_endpoint_id: is required");
    }

    #[test]
    fn operation_and_iam_point_at_opsd_and_extras_may_point_elsewhere() {
        let endpoints = Endpoints::new(
            "ops.example:443",
            &["compute".into(), "iam=iam.example:443".into()],
        );
        let pairs: Vec<_> = endpoints
            .0
            .iter()
            .map(|e| (e.id.as_str(), e.address.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("operation", "ops.example:443"),
                ("compute", "ops.example:443"),
                ("iam", "iam.example:443"),
            ]
        );
    }
}
