"""Typed errors: one exception class per gRPC status code, carrying the code,
the message and the decoded `google.rpc` details; and the outcomes of waiting
for an operation (`OperationFailed`, `OperationCancelled`, `FailureReported`,
`WaitTimeout`)."""

from typing import Any as _AnyType
from typing import Dict, List, Optional, Sequence, Tuple, Type

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

# Error details opsd (and gRPC servers generally) send, by type name.
_DETAIL_TYPES = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.BadRequest,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.ErrorInfo,
        error_details_pb2.RetryInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.DebugInfo,
        error_details_pb2.RequestInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def decode_details(details: Sequence[any_pb2.Any]) -> List[_AnyType]:
    """Unpacks each `Any` of a `google.rpc.Status` into its `google.rpc`
    message; an unknown or undecodable type stays an `Any`."""
    decoded: List[_AnyType] = []
    for packed in details:
        cls = _DETAIL_TYPES.get(packed.type_url.rsplit("/", 1)[-1])
        message = cls() if cls is not None else None
        if message is not None and packed.Unpack(message):
            decoded.append(message)
        else:
            decoded.append(packed)
    return decoded


class _Details:
    """Typed access to decoded `google.rpc` details (mixed into the errors)."""

    details: List[_AnyType]

    def detail(self, cls: Type) -> Optional[_AnyType]:
        """The first detail of type `cls` (e.g. `error_details_pb2.ResourceInfo`), or None."""
        return next((d for d in self.details if isinstance(d, cls)), None)

    @property
    def bad_request(self) -> Optional[error_details_pb2.BadRequest]:
        return self.detail(error_details_pb2.BadRequest)

    @property
    def field_violations(self) -> List[Tuple[str, str]]:
        """`(field, description)` of every `google.rpc.BadRequest` field violation."""
        bad = self.bad_request
        if bad is None:
            return []
        return [(v.field, v.description) for v in bad.field_violations]

    @property
    def precondition_failure(self) -> Optional[error_details_pb2.PreconditionFailure]:
        return self.detail(error_details_pb2.PreconditionFailure)

    @property
    def precondition_types(self) -> List[str]:
        """The `type` of every `google.rpc.PreconditionFailure` violation
        (`NOT_CANCELLABLE`, `ALREADY_DONE`, `FAILURE_REPORTED`, ...)."""
        failure = self.precondition_failure
        if failure is None:
            return []
        return [v.type for v in failure.violations]

    @property
    def resource_info(self) -> Optional[error_details_pb2.ResourceInfo]:
        return self.detail(error_details_pb2.ResourceInfo)


class OpsdError(Exception):
    """Base of every error this package raises."""


class RpcError(OpsdError, _Details):
    """The server (or the channel) answered a call with a non-OK status.

    `code` is the `grpc.StatusCode`, `message` the status message, `details`
    the decoded `google.rpc` details, `status` the whole `google.rpc.Status`
    when the server sent one."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        details: Sequence[_AnyType] = (),
        status: Optional[status_pb2.Status] = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = list(details)
        self.status = status

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={len(self.details)})"


class Cancelled(RpcError):
    code = grpc.StatusCode.CANCELLED


class Unknown(RpcError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(RpcError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(RpcError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(RpcError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RpcError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(RpcError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(RpcError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(RpcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(RpcError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(RpcError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(RpcError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(RpcError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(RpcError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(RpcError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(RpcError):
    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_CLASSES: Dict[grpc.StatusCode, Type[RpcError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def code_name(number: int) -> str:
    """`NOT_FOUND` for 5; the number itself for one outside the table."""
    code = _CODES_BY_NUMBER.get(number)
    return code.name if code is not None else str(number)


def from_grpc(error: grpc.RpcError) -> RpcError:
    """The typed error of a failed gRPC call, its details decoded from the
    `grpc-status-details-bin` trailer."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or ""
    status = None
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            parsed = status_pb2.Status()
            try:
                parsed.ParseFromString(value)
            except Exception:  # a malformed trailer: keep the plain status
                break
            status = parsed
            break
    details = decode_details(status.details) if status is not None else []
    cls = ERROR_CLASSES.get(code, Unknown)
    return cls(message, code=code, details=details, status=status)


class OperationError(OpsdError, _Details):
    """An operation carries an error: `status` is its `google.rpc.Status`,
    `code` its number, `message` and the decoded `details` its parts, and
    `operation` the `opsd.v1.Operation` as last seen."""

    def __init__(self, operation_id: str, status: status_pb2.Status, operation=None) -> None:
        self.operation_id = operation_id
        self.status = status
        self.code = status.code
        self.message = status.message
        self.details = decode_details(status.details)
        self.operation = operation
        super().__init__(self._describe())

    def _describe(self) -> str:
        return f"operation {self.operation_id} failed: {code_name(self.code)}: {self.message}"


class OperationFailed(OperationError):
    """The operation is done with an error."""


class OperationCancelled(OperationFailed):
    """The operation is done with error code 1 (CANCELLED): it was cancelled."""

    def _describe(self) -> str:
        return f"operation {self.operation_id} was cancelled: {self.message}"


class FailureReported(OperationError):
    """The operation still runs, but its producer reported this failure
    (raised only by a wait with `stop_at_reported_failure=True`)."""

    def _describe(self) -> str:
        return (
            f"operation {self.operation_id} is failing (still running): "
            f"{code_name(self.code)}: {self.message}"
        )


class WaitTimeout(OpsdError, TimeoutError):
    """The operation was not done before the wait's timeout; `operation` is
    its state as last seen (None if it was never read)."""

    def __init__(self, operation_id: str, operation=None) -> None:
        self.operation_id = operation_id
        self.operation = operation
        super().__init__(f"operation {operation_id} was not done before the wait's timeout")


class PayloadError(OpsdError, TypeError):
    """A packed payload (response or metadata) is missing, or not of the
    type asked for."""


def operation_error(operation_id: str, status: status_pb2.Status, operation=None) -> OperationFailed:
    """`OperationCancelled` for code 1, else `OperationFailed`."""
    if status.code == grpc.StatusCode.CANCELLED.value[0]:
        return OperationCancelled(operation_id, status, operation)
    return OperationFailed(operation_id, status, operation)
