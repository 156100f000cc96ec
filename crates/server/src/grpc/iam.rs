//! `yandex.cloud.iam.v1.IamTokenService`: the official SDKs' `token=` and
//! service-account credentials exchange themselves here for an IAM token. It
//! needs no credentials of its own (it is how a caller gets them); whether
//! the offered credential is good is decided by the [`Gatekeeper`].

use opsd_proto::yandex::cloud::iam::v1 as pb;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::auth::Gatekeeper;
use crate::translate;

pub struct IamTokens {
    pub gate: Gatekeeper,
}

#[tonic::async_trait]
impl pb::iam_token_service_server::IamTokenService for IamTokens {
    async fn create(
        &self,
        request: Request<pb::CreateIamTokenRequest>,
    ) -> Result<Response<pb::CreateIamTokenResponse>, Status> {
        self.gate.iam_enabled()?;
        let credential = translate::iam_credential(request.get_ref()).map_err(to_status)?;
        let issued = self.gate.exchange(credential)?;
        Ok(Response::new(translate::iam_token_response(issued)))
    }

    async fn create_for_service_account(
        &self,
        _request: Request<pb::CreateIamTokenForServiceAccountRequest>,
    ) -> Result<Response<pb::CreateIamTokenResponse>, Status> {
        Err(Status::unimplemented(
            "opsd does not implement CreateForServiceAccount: exchange a service-account jwt with Create",
        ))
    }

    async fn revoke(
        &self,
        _request: Request<pb::RevokeIamTokenRequest>,
    ) -> Result<Response<pb::RevokeIamTokenResponse>, Status> {
        Err(Status::unimplemented(
            "opsd does not implement Revoke: its iam tokens are valid until they expire",
        ))
    }
}
