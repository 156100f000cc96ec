//! Domain errors as gRPC statuses, with google.rpc error details.

use opsd_core::{Code, Error};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub fn grpc_code(code: Code) -> tonic::Code {
    tonic::Code::from_i32(code.grpc())
}

pub fn to_status(error: Error) -> tonic::Status {
    let code = grpc_code(error.code());
    let message = error.to_string();
    match &error {
        Error::InvalidArgument(violations) => {
            let violations = violations
                .iter()
                .map(|v| FieldViolation::new(&v.field, &v.description))
                .collect::<Vec<_>>();
            tonic::Status::with_error_details(
                code,
                message,
                ErrorDetails::with_bad_request(violations),
            )
        }
        Error::NotFound { id } => tonic::Status::with_error_details(
            code,
            message,
            ErrorDetails::with_resource_info("operation", id, "", "no such operation"),
        ),
        Error::FailedPrecondition { id, precondition } => tonic::Status::with_error_details(
            code,
            message,
            ErrorDetails::with_precondition_failure_violation(
                precondition.reason(),
                format!("operations/{id}"),
                precondition.reason().to_ascii_lowercase().replace('_', " "),
            ),
        ),
        Error::ResourceBusy { running_id, .. } => tonic::Status::with_error_details(
            code,
            message,
            ErrorDetails::with_resource_info(
                "operation",
                running_id,
                "",
                "the running exclusive operation on this resource",
            ),
        ),
        Error::PermissionDenied(_) | Error::Unauthenticated(_) | Error::OutOfRange(_) => {
            tonic::Status::new(code, message)
        }
        Error::ResourceExhausted(_) => {
            tracing::info!(error = %message, "request refused: a limit is reached");
            tonic::Status::new(code, message)
        }
        Error::Unavailable(_) => {
            tracing::warn!(error = %message, "request failed: unavailable");
            tonic::Status::new(code, message)
        }
        Error::Internal(_) => {
            tracing::error!(error = %message, "request failed: internal error");
            tonic::Status::new(code, message)
        }
    }
}
