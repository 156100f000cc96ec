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

class GetOverviewRequest(_message.Message):
    __slots__ = ("window", "stuck_after", "oldest")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    STUCK_AFTER_FIELD_NUMBER: _ClassVar[int]
    OLDEST_FIELD_NUMBER: _ClassVar[int]
    window: _duration_pb2.Duration
    stuck_after: _duration_pb2.Duration
    oldest: int
    def __init__(self, window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stuck_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., oldest: _Optional[int] = ...) -> None: ...

class StuckReason(_message.Message):
    __slots__ = ("unchanged", "slower_than_usual", "lease_lapsing")
    class Unchanged(_message.Message):
        __slots__ = ("quiet", "threshold")
        QUIET_FIELD_NUMBER: _ClassVar[int]
        THRESHOLD_FIELD_NUMBER: _ClassVar[int]
        quiet: _duration_pb2.Duration
        threshold: _duration_pb2.Duration
        def __init__(self, quiet: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., threshold: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    class SlowerThanUsual(_message.Message):
        __slots__ = ("quiet", "typical_gap", "factor", "threshold")
        QUIET_FIELD_NUMBER: _ClassVar[int]
        TYPICAL_GAP_FIELD_NUMBER: _ClassVar[int]
        FACTOR_FIELD_NUMBER: _ClassVar[int]
        THRESHOLD_FIELD_NUMBER: _ClassVar[int]
        quiet: _duration_pb2.Duration
        typical_gap: _duration_pb2.Duration
        factor: int
        threshold: _duration_pb2.Duration
        def __init__(self, quiet: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., typical_gap: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., factor: _Optional[int] = ..., threshold: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    class LeaseLapsing(_message.Message):
        __slots__ = ("lapses_in", "warning")
        LAPSES_IN_FIELD_NUMBER: _ClassVar[int]
        WARNING_FIELD_NUMBER: _ClassVar[int]
        lapses_in: _duration_pb2.Duration
        warning: _duration_pb2.Duration
        def __init__(self, lapses_in: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., warning: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    SLOWER_THAN_USUAL_FIELD_NUMBER: _ClassVar[int]
    LEASE_LAPSING_FIELD_NUMBER: _ClassVar[int]
    unchanged: StuckReason.Unchanged
    slower_than_usual: StuckReason.SlowerThanUsual
    lease_lapsing: StuckReason.LeaseLapsing
    def __init__(self, unchanged: _Optional[_Union[StuckReason.Unchanged, _Mapping]] = ..., slower_than_usual: _Optional[_Union[StuckReason.SlowerThanUsual, _Mapping]] = ..., lease_lapsing: _Optional[_Union[StuckReason.LeaseLapsing, _Mapping]] = ...) -> None: ...

class StuckOperation(_message.Message):
    __slots__ = ("operation", "reasons")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    reasons: _containers.RepeatedCompositeFieldContainer[StuckReason]
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ..., reasons: _Optional[_Iterable[_Union[StuckReason, _Mapping]]] = ...) -> None: ...

class ProducerOverview(_message.Message):
    __slots__ = ("id_prefix", "running", "completed", "failed", "cancelled", "p50_to_done", "p99_to_done", "p50_cancel_to_done", "cancel_overdue", "typical_gap", "sample_size")
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    P50_TO_DONE_FIELD_NUMBER: _ClassVar[int]
    P99_TO_DONE_FIELD_NUMBER: _ClassVar[int]
    P50_CANCEL_TO_DONE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_OVERDUE_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_GAP_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    id_prefix: str
    running: int
    completed: int
    failed: int
    cancelled: int
    p50_to_done: _duration_pb2.Duration
    p99_to_done: _duration_pb2.Duration
    p50_cancel_to_done: _duration_pb2.Duration
    cancel_overdue: int
    typical_gap: _duration_pb2.Duration
    sample_size: int
    def __init__(self, id_prefix: _Optional[str] = ..., running: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., p50_to_done: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p99_to_done: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p50_cancel_to_done: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cancel_overdue: _Optional[int] = ..., typical_gap: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., sample_size: _Optional[int] = ...) -> None: ...

class GetOverviewResponse(_message.Message):
    __slots__ = ("now", "window", "stuck_after", "running", "oldest_running", "stuck", "stuck_count", "stuck_truncated", "producers", "sampled", "sample_size", "stuck_gap_factor", "stuck_gap_floor", "lease_warning")
    NOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    STUCK_AFTER_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    OLDEST_RUNNING_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    STUCK_COUNT_FIELD_NUMBER: _ClassVar[int]
    STUCK_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PRODUCERS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    STUCK_GAP_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STUCK_GAP_FLOOR_FIELD_NUMBER: _ClassVar[int]
    LEASE_WARNING_FIELD_NUMBER: _ClassVar[int]
    now: _timestamp_pb2.Timestamp
    window: _duration_pb2.Duration
    stuck_after: _duration_pb2.Duration
    running: int
    oldest_running: _containers.RepeatedCompositeFieldContainer[Operation]
    stuck: _containers.RepeatedCompositeFieldContainer[StuckOperation]
    stuck_count: int
    stuck_truncated: bool
    producers: _containers.RepeatedCompositeFieldContainer[ProducerOverview]
    sampled: bool
    sample_size: int
    stuck_gap_factor: int
    stuck_gap_floor: _duration_pb2.Duration
    lease_warning: _duration_pb2.Duration
    def __init__(self, now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stuck_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., running: _Optional[int] = ..., oldest_running: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., stuck: _Optional[_Iterable[_Union[StuckOperation, _Mapping]]] = ..., stuck_count: _Optional[int] = ..., stuck_truncated: bool = ..., producers: _Optional[_Iterable[_Union[ProducerOverview, _Mapping]]] = ..., sampled: bool = ..., sample_size: _Optional[int] = ..., stuck_gap_factor: _Optional[int] = ..., stuck_gap_floor: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease_warning: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
