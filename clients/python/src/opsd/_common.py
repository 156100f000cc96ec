"""What the blocking and the asyncio clients share: reading the endpoint,
token and CA, building requests, packing payloads, retry pacing and typed
unpacking. No I/O on the network here."""

import dataclasses
import datetime
import os
import random
from dataclasses import dataclass, field
from typing import Any as _AnyType
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import grpc
from google.protobuf import any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from opsd.errors import PayloadError
from opsd.v1 import operation_pb2, producer_pb2

DEFAULT_ENDPOINT = "127.0.0.1:7117"
POLL_INTERVAL_HEADER = "x-operation-poll-interval"
IDEMPOTENCY_KEY_HEADER = "idempotency-key"

# The message an operation fails with when its producer leaves it uncompleted.
DROPPED_MESSAGE = "the producer stopped without completing the operation"

# Reconnect quickly after a server restart: gRPC's default first pause is 1 s,
# growing to 2 minutes.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)

Seconds = Union[int, float, datetime.timedelta]
Payload = Union[Message, Mapping[str, _AnyType], None]
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Target:
    """Where and how to connect: `address` is `host:port`."""

    address: str
    tls: bool
    ca: Optional[bytes]
    token: Optional[str]
    traceparent: Optional[str] = None
    tracestate: Optional[str] = None


def resolve_target(
    endpoint: Optional[str],
    token: Optional[str],
    ca: Union[str, "os.PathLike[str]", bytes, None],
    traceparent: Optional[str] = None,
    tracestate: Optional[str] = None,
) -> Target:
    """The endpoint (`HOST:PORT`, `http://HOST:PORT` or `https://HOST[:PORT]`,
    else `OPSD_ENDPOINT`, else 127.0.0.1:7117), the token (else `OPSD_TOKEN`;
    an empty one sends none)
    and the CA (PEM bytes or a file path, else the file `OPSD_CA` names; used
    for https:// endpoints, which are verified against the system roots
    without one), and the W3C trace context its calls carry (else
    `TRACEPARENT` and `TRACESTATE`), as opsctl takes them."""
    if endpoint is None:
        endpoint = os.environ.get("OPSD_ENDPOINT") or DEFAULT_ENDPOINT
    if token is None:
        token = os.environ.get("OPSD_TOKEN") or None
    if ca is None and os.environ.get("OPSD_CA"):
        ca = os.environ["OPSD_CA"]
    tls = False
    rest = endpoint.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in ("http", "https"):
            raise ValueError(f"invalid endpoint {endpoint!r}: the scheme must be http or https")
        tls = scheme == "https"
        rest = rest.rstrip("/")
        if "/" in rest:
            raise ValueError(f"invalid endpoint {endpoint!r}: a path is not allowed")
        if tls and not _has_port(rest):
            rest = f"{rest}:443"
    if not rest or not _has_port(rest):
        raise ValueError(f"invalid endpoint {endpoint!r}: expected HOST:PORT or https://HOST[:PORT]")
    if token == "":  # explicitly none, whatever OPSD_TOKEN says
        token = None
    if token is not None and not _header_safe(token):
        raise ValueError("the token cannot be sent as a header value")
    pem: Optional[bytes] = None
    if isinstance(ca, bytes):
        pem = ca
    elif ca is not None:
        try:
            with open(ca, "rb") as file:
                pem = file.read()
        except OSError as error:
            raise ValueError(f"ca {os.fspath(ca)}: {error.strerror or error}") from None
    if traceparent is None:
        traceparent = os.environ.get("TRACEPARENT") or None
        if tracestate is None:
            tracestate = os.environ.get("TRACESTATE") or None
    target = Target(address=rest, tls=tls, ca=pem, token=token or None)
    return with_trace(target, traceparent, tracestate)


def with_trace(target: Target, traceparent: Optional[str], tracestate: Optional[str]) -> Target:
    """`target` whose calls carry `traceparent` (and `tracestate`): a W3C
    trace context, which opsd ignores unless well-formed; an empty one means none."""
    for name, value in (("traceparent", traceparent), ("tracestate", tracestate)):
        if value and not all(32 <= ord(ch) <= 126 for ch in value):
            raise ValueError(f"the {name} cannot be sent as a header value")
    if not traceparent:
        return dataclasses.replace(target, traceparent=None, tracestate=None)
    return dataclasses.replace(target, traceparent=traceparent, tracestate=tracestate or None)


def _has_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit())


def _header_safe(value: str) -> bool:
    return bool(value) and all(33 <= ord(ch) <= 126 for ch in value)


def channel_credentials(target: Target) -> Optional[grpc.ChannelCredentials]:
    if not target.tls:
        return None
    return grpc.ssl_channel_credentials(root_certificates=target.ca)


def call_metadata(target: Target, extra: Sequence[Tuple[str, str]] = ()) -> Tuple[Tuple[str, str], ...]:
    metadata = tuple(extra)
    if target.token:
        metadata += (("authorization", f"Bearer {target.token}"),)
    if target.traceparent:
        metadata += (("traceparent", target.traceparent),)
        if target.tracestate:
            metadata += (("tracestate", target.tracestate),)
    return metadata


# --- retries -----------------------------------------------------------------

TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class Retry:
    """How idempotent calls are retried: on the `codes` (UNAVAILABLE), up to
    `attempts` tries in all and for at most `max_elapsed` seconds, pausing a
    jittered, doubling step (half to all of it) from `initial_backoff` up to
    `max_backoff`. `Retry(attempts=1)` never retries."""

    attempts: int = 8
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    max_elapsed: float = 15.0
    codes: frozenset = field(default=TRANSIENT_CODES)

    def pauses(self) -> Iterator[float]:
        """The pause before each retry, jittered."""
        step = self.initial_backoff
        for _ in range(max(self.attempts - 1, 0)):
            yield step * random.uniform(0.5, 1.0)
            step = min(step * 2, self.max_backoff)


class Backoff:
    """A jittered, doubling pause for loops that retry without end (the waiter,
    the lease keeper): half to all of the current step, up to `max`."""

    def __init__(self, initial: float = 0.05, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.step = initial

    def next(self) -> float:
        pause = self.step * random.uniform(0.5, 1.0)
        self.step = min(self.step * 2, self.maximum)
        return pause

    def reset(self) -> None:
        self.step = self.initial


# Codes after which following an operation (Watch) simply reconnects: the
# server restarted, drained for shutdown, or dropped the connection.
RECONNECT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
    }
)

# Codes of a Watch refused at once after which the waiter polls Get instead:
# a server without opsd's extensions, or one holding all the watchers it allows.
POLL_INSTEAD_CODES = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED})


def poll_hint(metadata: Optional[Iterable[Tuple[str, _AnyType]]]) -> Optional[float]:
    """The server's suggested poll interval in seconds, from the response metadata."""
    for key, value in metadata or ():
        if key == POLL_INTERVAL_HEADER:
            try:
                seconds = int(value)
            except (TypeError, ValueError):
                return None
            return float(seconds) if seconds > 0 else None
    return None


# --- requests ------------------------------------------------------------------

_CANCELLATION = {
    None: operation_pb2.CANCELLATION_POLICY_UNSPECIFIED,
    "immediate": operation_pb2.CANCELLATION_POLICY_IMMEDIATE,
    "cooperative": operation_pb2.CANCELLATION_POLICY_COOPERATIVE,
    "not_cancellable": operation_pb2.CANCELLATION_POLICY_NOT_CANCELLABLE,
}

_STATE_FILTER = {
    None: operation_pb2.STATE_FILTER_UNSPECIFIED,
    "any": operation_pb2.STATE_FILTER_ANY,
    "running": operation_pb2.STATE_FILTER_RUNNING,
    "done": operation_pb2.STATE_FILTER_DONE,
}

_STEP_STATE = {
    "pending": operation_pb2.Step.STATE_PENDING,
    "running": operation_pb2.Step.STATE_RUNNING,
    "done": operation_pb2.Step.STATE_DONE,
    "failed": operation_pb2.Step.STATE_FAILED,
    "skipped": operation_pb2.Step.STATE_SKIPPED,
}


def cancellation_policy(value: Union[str, int, None]) -> int:
    if isinstance(value, int):
        return value
    try:
        return _CANCELLATION[value]
    except KeyError:
        raise ValueError(
            f"unknown cancellation {value!r}: expected immediate, cooperative or not_cancellable"
        ) from None


def state_filter(value: Union[str, int, None]) -> int:
    if isinstance(value, int):
        return value
    try:
        return _STATE_FILTER[value]
    except KeyError:
        raise ValueError(f"unknown state {value!r}: expected running, done or any") from None


def duration(value: Seconds) -> duration_pb2.Duration:
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    result = duration_pb2.Duration()
    result.FromNanoseconds(int(round(value * 1e9)))
    return result


def timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    """A naive datetime is taken as UTC."""
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


def seconds(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)


def pack(payload: Payload) -> Optional[any_pb2.Any]:
    """A message packed into `Any` (type URL `type.googleapis.com/<full name>`);
    an `Any` as it is; a mapping as a `google.protobuf.Struct`; None as None."""
    if payload is None:
        return None
    if isinstance(payload, any_pb2.Any):
        return payload
    if isinstance(payload, Message):
        packed = any_pb2.Any()
        packed.Pack(payload)
        return packed
    if isinstance(payload, Mapping):
        struct = struct_pb2.Struct()
        struct.update(payload)
        packed = any_pb2.Any()
        packed.Pack(struct)
        return packed
    raise TypeError(f"cannot pack {type(payload).__name__}: expected a protobuf message or a dict")


def status(code: Union[int, grpc.StatusCode], message: str, details: Sequence[Message] = ()) -> status_pb2.Status:
    """A `google.rpc.Status`; `details` are packed into `Any`."""
    number = code.value[0] if isinstance(code, grpc.StatusCode) else int(code)
    result = status_pb2.Status(code=number, message=message)
    for detail in details:
        result.details.append(pack(detail))
    return result


StepsArg = Union[Mapping[str, Union[str, int]], Sequence[_AnyType], None]


def progress(done: int, total: int = 0, message: str = "", steps: StepsArg = None) -> operation_pb2.Progress:
    """`steps` as `{"copy": "done", "verify": "running"}`, a list of
    `(name, state)` pairs or of `opsd.v1.Step` messages; states are pending,
    running, done, failed or skipped."""
    result = operation_pb2.Progress(work_done=done, work_total=total, message=message)
    items: Iterable[_AnyType] = steps.items() if isinstance(steps, Mapping) else (steps or ())
    for item in items:
        if isinstance(item, operation_pb2.Step):
            result.steps.append(item)
            continue
        name, state = item
        if isinstance(state, str):
            try:
                state = _STEP_STATE[state]
            except KeyError:
                raise ValueError(
                    f"unknown step state {state!r}: expected pending, running, done, failed or skipped"
                ) from None
        result.steps.append(operation_pb2.Step(name=name, state=state))
    return result


def create_request(
    *,
    description: str,
    resource_id: str,
    metadata: Payload,
    cancellation: Union[str, int, None],
    lease: Optional[Seconds],
    deadline: Optional[datetime.datetime],
    idempotency_key: Optional[str],
    id_prefix: str,
    exclusive: bool,
    scope: str,
) -> producer_pb2.CreateOperationRequest:
    request = producer_pb2.CreateOperationRequest(
        description=description,
        resource_id=resource_id,
        cancellation_policy=cancellation_policy(cancellation),
        idempotency_key=idempotency_key or "",
        id_prefix=id_prefix,
        exclusive=exclusive,
        scope=scope,
    )
    packed = pack(metadata)
    if packed is not None:
        request.metadata.CopyFrom(packed)
    if lease is not None:
        request.lease_duration.CopyFrom(duration(lease))
    if deadline is not None:
        request.deadline.CopyFrom(timestamp(deadline))
    return request


def list_request(
    *,
    resource_id: str,
    created_by: str,
    state: Union[str, int, None],
    created_after: Optional[datetime.datetime],
    created_before: Optional[datetime.datetime],
    scope: str,
    page_size: int,
    page_token: str,
    id_prefix: str = "",
    description_contains: str = "",
) -> operation_pb2.ListOperationsRequest:
    request = operation_pb2.ListOperationsRequest(
        resource_id=resource_id,
        created_by=created_by,
        state=state_filter(state),
        scope=scope,
        id_prefix=id_prefix,
        description_contains=description_contains,
        page_size=page_size,
        page_token=page_token,
    )
    if created_after is not None:
        request.created_after.CopyFrom(timestamp(created_after))
    if created_before is not None:
        request.created_before.CopyFrom(timestamp(created_before))
    return request


def complete_request(
    operation_id: str,
    response: Payload = None,
    error: Optional[status_pb2.Status] = None,
) -> producer_pb2.CompleteOperationRequest:
    """Neither response nor error: complete with the failure reported earlier."""
    request = producer_pb2.CompleteOperationRequest(operation_id=operation_id)
    if response is not None and error is not None:
        raise ValueError("complete with a response or an error, not both")
    if error is not None:
        request.error.CopyFrom(error)
    elif response is not None:
        request.response.CopyFrom(pack(response))
    return request


def overview_request(
    *,
    window: Optional[Seconds],
    stuck_after: Optional[Seconds],
    oldest: int,
) -> operation_pb2.GetOverviewRequest:
    request = operation_pb2.GetOverviewRequest(oldest=oldest)
    if window is not None:
        request.window.CopyFrom(duration(window))
    if stuck_after is not None:
        request.stuck_after.CopyFrom(duration(stuck_after))
    return request


def empty_response() -> any_pb2.Any:
    return pack(empty_pb2.Empty())


def exception_message(error: BaseException) -> str:
    """What an operation fails with when its producer raised `error`: the
    exception's type only, never its message or traceback."""
    cls = type(error)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return f"the producer raised {name}"


# --- reading operations ------------------------------------------------------------


def unpack(packed: any_pb2.Any, cls: Type[M]) -> M:
    """`packed` as a `cls`, after checking that its type URL names `cls`."""
    expected = cls.DESCRIPTOR.full_name
    actual = packed.type_url.rsplit("/", 1)[-1]
    if actual != expected:
        raise PayloadError(f"payload is {packed.type_url}, not {expected}")
    message = cls()
    try:
        message.ParseFromString(packed.value)
    except DecodeError as error:
        raise PayloadError(f"payload {packed.type_url} cannot be decoded: {error}") from None
    return message


def _public(op) -> _AnyType:
    """The clouds' Operation inside an opsd.v1.Operation, or `op` itself."""
    if isinstance(op, operation_pb2.Operation):
        return op.operation
    return op


def response_as(op, cls: Type[M]) -> M:
    """The response of a done operation (`opsd.v1.Operation` or the clouds'
    `Operation`), unpacked as `cls`; `PayloadError` when it has none or it
    is of another type."""
    public = _public(op)
    if public.WhichOneof("result") != "response":
        raise PayloadError("the operation has no response")
    return unpack(public.response, cls)


def metadata_as(op, cls: Type[M]) -> M:
    """The metadata of an operation, unpacked as `cls`."""
    public = _public(op)
    if not public.HasField("metadata"):
        raise PayloadError("the operation has no metadata")
    return unpack(public.metadata, cls)


def error_of(op) -> Optional[status_pb2.Status]:
    public = _public(op)
    return public.error if public.WhichOneof("result") == "error" else None


def is_finished(op: operation_pb2.Operation, stop_at_reported_failure: bool) -> bool:
    return op.operation.done or (stop_at_reported_failure and error_of(op) is not None)


def cancel_was_requested(op: operation_pb2.Operation) -> bool:
    """A consumer asked to cancel (cooperative), or the operation was cancelled at once."""
    if op.HasField("cancel_requested_at") or op.state == operation_pb2.OPERATION_STATE_CANCEL_REQUESTED:
        return True
    error = error_of(op)
    return op.operation.done and error is not None and error.code == grpc.StatusCode.CANCELLED.value[0]


def install_methods() -> None:
    """Typed unpacking as methods of `opsd.v1.Operation`: `op.response_as(cls)`
    and `op.metadata_as(cls)`."""
    operation_pb2.Operation.response_as = response_as
    operation_pb2.Operation.metadata_as = metadata_as
