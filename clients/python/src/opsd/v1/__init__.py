"""opsd's own API, `opsd.v1`, generated from proto/opsd/v1: `operation_pb2`
(`Operation`, `Progress`, `Step`, `Event`, ...), `producer_pb2` and their
gRPC stubs (`*_pb2_grpc`)."""

from opsd.v1.operation_pb2 import (
    Event,
    ListEventsResponse,
    ListOperationsResponse,
    Operation,
    Progress,
    Step,
)
from opsd.v1.producer_pb2 import HeartbeatResponse

__all__ = [
    "Event",
    "HeartbeatResponse",
    "ListEventsResponse",
    "ListOperationsResponse",
    "Operation",
    "Progress",
    "Step",
]
