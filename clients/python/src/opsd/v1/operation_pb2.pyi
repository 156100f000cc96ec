import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from opsd._yandex import operation_pb2 as _operation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CancellationPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCELLATION_POLICY_UNSPECIFIED: _ClassVar[CancellationPolicy]
    CANCELLATION_POLICY_IMMEDIATE: _ClassVar[CancellationPolicy]
    CANCELLATION_POLICY_COOPERATIVE: _ClassVar[CancellationPolicy]
    CANCELLATION_POLICY_NOT_CANCELLABLE: _ClassVar[CancellationPolicy]

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    OPERATION_STATE_RUNNING: _ClassVar[OperationState]
    OPERATION_STATE_CANCEL_REQUESTED: _ClassVar[OperationState]
    OPERATION_STATE_DONE: _ClassVar[OperationState]

class StateFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_FILTER_UNSPECIFIED: _ClassVar[StateFilter]
    STATE_FILTER_ANY: _ClassVar[StateFilter]
    STATE_FILTER_RUNNING: _ClassVar[StateFilter]
    STATE_FILTER_DONE: _ClassVar[StateFilter]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_CREATED: _ClassVar[EventKind]
    EVENT_KIND_METADATA_UPDATED: _ClassVar[EventKind]
    EVENT_KIND_LEASE_TAKEN: _ClassVar[EventKind]
    EVENT_KIND_LEASE_LAPSED: _ClassVar[EventKind]
    EVENT_KIND_CANCEL_REQUESTED: _ClassVar[EventKind]
    EVENT_KIND_FAILURE_REPORTED: _ClassVar[EventKind]
    EVENT_KIND_COMPLETED: _ClassVar[EventKind]
    EVENT_KIND_DEADLINE_EXCEEDED: _ClassVar[EventKind]
CANCELLATION_POLICY_UNSPECIFIED: CancellationPolicy
CANCELLATION_POLICY_IMMEDIATE: CancellationPolicy
CANCELLATION_POLICY_COOPERATIVE: CancellationPolicy
CANCELLATION_POLICY_NOT_CANCELLABLE: CancellationPolicy
OPERATION_STATE_UNSPECIFIED: OperationState
OPERATION_STATE_RUNNING: OperationState
OPERATION_STATE_CANCEL_REQUESTED: OperationState
OPERATION_STATE_DONE: OperationState
STATE_FILTER_UNSPECIFIED: StateFilter
STATE_FILTER_ANY: StateFilter
STATE_FILTER_RUNNING: StateFilter
STATE_FILTER_DONE: StateFilter
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_CREATED: EventKind
EVENT_KIND_METADATA_UPDATED: EventKind
EVENT_KIND_LEASE_TAKEN: EventKind
EVENT_KIND_LEASE_LAPSED: EventKind
EVENT_KIND_CANCEL_REQUESTED: EventKind
EVENT_KIND_FAILURE_REPORTED: EventKind
EVENT_KIND_COMPLETED: EventKind
EVENT_KIND_DEADLINE_EXCEEDED: EventKind

class Operation(_message.Message):
    __slots__ = ("operation", "state", "resource_id", "cancellation_policy", "cancel_requested_at", "progress", "deadline", "lease_expires_at", "exclusive", "scope", "reported_failure", "failure_reported_at", "trace_parent", "trace_state")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_POLICY_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FAILURE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    TRACE_STATE_FIELD_NUMBER: _ClassVar[int]
    operation: _operation_pb2.Operation
    state: OperationState
    resource_id: str
    cancellation_policy: CancellationPolicy
    cancel_requested_at: _timestamp_pb2.Timestamp
    progress: Progress
    deadline: _timestamp_pb2.Timestamp
    lease_expires_at: _timestamp_pb2.Timestamp
    exclusive: bool
    scope: str
    reported_failure: _status_pb2.Status
    failure_reported_at: _timestamp_pb2.Timestamp
    trace_parent: str
    trace_state: str
    def __init__(self, operation: _Optional[_Union[_operation_pb2.Operation, _Mapping]] = ..., state: _Optional[_Union[OperationState, str]] = ..., resource_id: _Optional[str] = ..., cancellation_policy: _Optional[_Union[CancellationPolicy, str]] = ..., cancel_requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exclusive: bool = ..., scope: _Optional[str] = ..., reported_failure: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., failure_reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_parent: _Optional[str] = ..., trace_state: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("work_done", "work_total", "message", "steps")
    WORK_DONE_FIELD_NUMBER: _ClassVar[int]
    WORK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    work_done: int
    work_total: int
    message: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    def __init__(self, work_done: _Optional[int] = ..., work_total: _Optional[int] = ..., message: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("name", "state")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Step.State]
        STATE_PENDING: _ClassVar[Step.State]
        STATE_RUNNING: _ClassVar[Step.State]
        STATE_DONE: _ClassVar[Step.State]
        STATE_FAILED: _ClassVar[Step.State]
        STATE_SKIPPED: _ClassVar[Step.State]
    STATE_UNSPECIFIED: Step.State
    STATE_PENDING: Step.State
    STATE_RUNNING: Step.State
    STATE_DONE: Step.State
    STATE_FAILED: Step.State
    STATE_SKIPPED: Step.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: Step.State
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[Step.State, str]] = ...) -> None: ...

class ListOperationsRequest(_message.Message):
    __slots__ = ("resource_id", "created_by", "state", "created_after", "created_before", "page_size", "page_token", "scope", "id_prefix", "description_contains")
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    resource_id: str
    created_by: str
    state: StateFilter
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    scope: str
    id_prefix: str
    description_contains: str
    def __init__(self, resource_id: _Optional[str] = ..., created_by: _Optional[str] = ..., state: _Optional[_Union[StateFilter, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., scope: _Optional[str] = ..., id_prefix: _Optional[str] = ..., description_contains: _Optional[str] = ...) -> None: ...

class ListOperationsResponse(_message.Message):
    __slots__ = ("operations", "next_page_token")
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    next_page_token: str
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WaitOperationRequest(_message.Message):
    __slots__ = ("operation_id", "timeout")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    timeout: _duration_pb2.Duration
    def __init__(self, operation_id: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("operation_id", "sequence", "time", "kind", "actor", "version", "scope", "resource_id", "created_by", "folded", "description", "lease_expires_at", "deadline", "metadata_type_url", "progress", "error", "response_type_url", "trace_id", "span_id")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    FOLDED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    METADATA_TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    kind: EventKind
    actor: str
    version: int
    scope: str
    resource_id: str
    created_by: str
    folded: int
    description: str
    lease_expires_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    metadata_type_url: str
    progress: Progress
    error: _status_pb2.Status
    response_type_url: str
    trace_id: str
    span_id: str
    def __init__(self, operation_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[EventKind, str]] = ..., actor: _Optional[str] = ..., version: _Optional[int] = ..., scope: _Optional[str] = ..., resource_id: _Optional[str] = ..., created_by: _Optional[str] = ..., folded: _Optional[int] = ..., description: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata_type_url: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., response_type_url: _Optional[str] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("operation_id", "page_size", "page_token")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    page_size: int
    page_token: str
    def __init__(self, operation_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchOperationsRequest(_message.Message):
    __slots__ = ("scope", "resource_id", "created_by", "id_prefix", "kinds", "resume_token")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    scope: str
    resource_id: str
    created_by: str
    id_prefix: str
    kinds: _containers.RepeatedScalarFieldContainer[EventKind]
    resume_token: str
    def __init__(self, scope: _Optional[str] = ..., resource_id: _Optional[str] = ..., created_by: _Optional[str] = ..., id_prefix: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[EventKind, str]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchOperationsResponse(_message.Message):
    __slots__ = ("event", "resume_token")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event: Event
    resume_token: str
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...
