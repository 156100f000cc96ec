"""Python client of opsd, the long-running operations service.

Producers::

    client = opsd.Client("127.0.0.1:7117")
    with client.start_operation(description="snapshot disk-1", lease=30) as op:
        for step in range(10):
            if op.cancel_requested.is_set():
                op.fail(1, "cancelled on request")
                break
            op.progress(step + 1, 10, "copying")
        else:
            op.succeed({"size": "20G"})

Consumers::

    done = client.wait(operation_id, timeout=600)   # raises OperationFailed / OperationCancelled
    snapshot = done.response_as(MySnapshot)

`opsd.aio` has the same shape for asyncio.
"""

from opsd import _common
from opsd._common import DROPPED_MESSAGE, Retry, metadata_as, pack, progress, response_as, status, unpack
from opsd.client import Client, OperationHandle
from opsd.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FailureReported,
    Internal,
    InvalidArgument,
    NotFound,
    OperationCancelled,
    OperationError,
    OperationFailed,
    OpsdError,
    OutOfRange,
    PayloadError,
    PermissionDenied,
    ResourceExhausted,
    RpcError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    WaitTimeout,
)
from opsd.v1 import operation_pb2, producer_pb2

from opsd import aio  # noqa: E402  (after the names it uses)

_common.install_methods()

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "aio",
    "AlreadyExists",
    "Cancelled",
    "Client",
    "DROPPED_MESSAGE",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FailureReported",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OperationCancelled",
    "OperationError",
    "OperationFailed",
    "OperationHandle",
    "OpsdError",
    "OutOfRange",
    "PayloadError",
    "PermissionDenied",
    "ResourceExhausted",
    "Retry",
    "RpcError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "WaitTimeout",
    "metadata_as",
    "operation_pb2",
    "pack",
    "producer_pb2",
    "progress",
    "response_as",
    "status",
    "unpack",
]
