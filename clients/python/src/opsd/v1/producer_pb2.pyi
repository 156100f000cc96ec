import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from opsd.v1 import operation_pb2 as _operation_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportFailureRequest(_message.Message):
    __slots__ = ("operation_id", "error")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    error: _status_pb2.Status
    def __init__(self, operation_id: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class CreateOperationRequest(_message.Message):
    __slots__ = ("description", "resource_id", "metadata", "cancellation_policy", "idempotency_key", "id_prefix", "lease_duration", "deadline", "exclusive", "scope")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_POLICY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    description: str
    resource_id: str
    metadata: _any_pb2.Any
    cancellation_policy: _operation_pb2.CancellationPolicy
    idempotency_key: str
    id_prefix: str
    lease_duration: _duration_pb2.Duration
    deadline: _timestamp_pb2.Timestamp
    exclusive: bool
    scope: str
    def __init__(self, description: _Optional[str] = ..., resource_id: _Optional[str] = ..., metadata: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., cancellation_policy: _Optional[_Union[_operation_pb2.CancellationPolicy, str]] = ..., idempotency_key: _Optional[str] = ..., id_prefix: _Optional[str] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exclusive: bool = ..., scope: _Optional[str] = ...) -> None: ...

class UpdateMetadataRequest(_message.Message):
    __slots__ = ("operation_id", "metadata", "progress")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    metadata: _any_pb2.Any
    progress: _operation_pb2.Progress
    def __init__(self, operation_id: _Optional[str] = ..., metadata: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., progress: _Optional[_Union[_operation_pb2.Progress, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("operation_id", "lease_duration")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    lease_duration: _duration_pb2.Duration
    def __init__(self, operation_id: _Optional[str] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("operation", "cancel_requested", "lease_expires_at")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    operation: _operation_pb2.Operation
    cancel_requested: bool
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, operation: _Optional[_Union[_operation_pb2.Operation, _Mapping]] = ..., cancel_requested: bool = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompleteOperationRequest(_message.Message):
    __slots__ = ("operation_id", "error", "response")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    error: _status_pb2.Status
    response: _any_pb2.Any
    def __init__(self, operation_id: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., response: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
