"""The blocking client: consumers (get, list, cancel, watch, wait) and
producers (create, progress, heartbeat, report a failure, complete, and
`start_operation`, which keeps an operation's lease alive in the background)."""

import copy
import datetime
import logging
import threading
import time
import uuid
from typing import Any as _AnyType
from typing import Callable, Iterator, Optional, Sequence, TypeVar, Union

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

from opsd import _common
from opsd._common import DROPPED_MESSAGE, Payload, Retry, Seconds, StepsArg
from opsd._yandex import operation_service_pb2, operation_service_pb2_grpc
from opsd.errors import (
    FailedPrecondition,
    FailureReported,
    OpsdError,
    RpcError,
    WaitTimeout,
    from_grpc,
    operation_error,
)
from opsd.v1 import operation_pb2, operation_pb2_grpc, producer_pb2, producer_pb2_grpc

log = logging.getLogger("opsd")

T = TypeVar("T")

# How long a producer's completion is retried through outages before giving up.
COMPLETE_RETRY = Retry(attempts=1000, max_backoff=5.0, max_elapsed=30.0)


class Client:
    """A connection to opsd.

    `endpoint` is `HOST:PORT` (plaintext), `http://HOST:PORT` or
    `https://HOST[:PORT]` (TLS, verified against `ca`, PEM bytes or a file,
    else the system roots); unset, `OPSD_ENDPOINT`, else 127.0.0.1:7117.
    `token` (else `OPSD_TOKEN`) is sent as `authorization: Bearer <token>`.
    `timeout` bounds each unary call (seconds); `retry` says how idempotent
    calls are retried on UNAVAILABLE (Create only with an idempotency key).
    `traceparent` and `tracestate` (else `TRACEPARENT`, `TRACESTATE`) put
    every call in that W3C trace context. Use it as a context manager, or
    call `close()`."""

    def __init__(
        self,
        endpoint: Optional[str] = None,
        *,
        token: Optional[str] = None,
        ca: Union[str, bytes, None] = None,
        timeout: float = 30.0,
        retry: Retry = Retry(),
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> None:
        self._target = _common.resolve_target(endpoint, token, ca, traceparent, tracestate)
        self.endpoint = self._target.address
        self.timeout = timeout
        self.retry = retry
        credentials = _common.channel_credentials(self._target)
        if credentials is None:
            self._channel = grpc.insecure_channel(self._target.address, options=_common.CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(
                self._target.address, credentials, options=_common.CHANNEL_OPTIONS
            )
        self._public = operation_service_pb2_grpc.OperationServiceStub(self._channel)
        self._opsd = operation_pb2_grpc.OperationServiceStub(self._channel)
        self._producer = producer_pb2_grpc.ProducerServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: _AnyType) -> None:
        self.close()

    def in_trace(self, traceparent: str, tracestate: Optional[str] = None) -> "Client":
        """This client, its calls carrying `traceparent` (e.g. an operation's
        `trace_parent`, so they join its trace); it shares the connection,
        so close only one of them. The same client for an empty one."""
        if not traceparent:
            return self
        joined = copy.copy(self)
        joined._target = _common.with_trace(self._target, traceparent, tracestate)
        return joined

    def _metadata(self, *extra):
        return _common.call_metadata(self._target, extra)

    def _call(self, method: Callable[..., T], request: Message, *, idempotent: bool, retry: Optional[Retry] = None) -> T:
        """One unary call with the client's deadline, retried on the retry
        policy's codes when `idempotent`; errors become typed."""
        policy = retry or self.retry
        pauses = policy.pauses() if idempotent else iter(())
        started = time.monotonic()
        while True:
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata())
            except grpc.RpcError as error:
                code = error.code()
                pause = next(pauses, None) if code in policy.codes else None
                if pause is None or time.monotonic() - started + pause > policy.max_elapsed:
                    raise from_grpc(error) from None
                log.debug("call failed, retrying", extra={"code": code.name, "pause": pause})
                time.sleep(pause)

    # --- consumers ---------------------------------------------------------------

    def get(self, operation_id: str) -> operation_pb2.Operation:
        """The operation with opsd's fields (`opsd.v1.OperationService/Get`)."""
        request = operation_pb2.GetOperationRequest(operation_id=operation_id)
        return self._call(self._opsd.Get, request, idempotent=True)

    def get_public(self, operation_id: str):
        """The operation as the clouds' API answers it (`yandex.cloud.operation.OperationService/Get`)."""
        request = operation_service_pb2.GetOperationRequest(operation_id=operation_id)
        return self._call(self._public.Get, request, idempotent=True)

    def cancel(self, operation_id: str):
        """Asks to cancel (`yandex.cloud.operation.OperationService/Cancel`):
        an immediate operation is done at once, a cooperative one is marked
        cancel-requested for its producer; answers the clouds' `Operation`."""
        request = operation_service_pb2.CancelOperationRequest(operation_id=operation_id)
        return self._call(self._public.Cancel, request, idempotent=True)

    def list(
        self,
        *,
        resource_id: str = "",
        created_by: str = "",
        state: Optional[str] = None,
        created_after: Optional[datetime.datetime] = None,
        created_before: Optional[datetime.datetime] = None,
        scope: str = "",
        id_prefix: str = "",
        description_contains: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> operation_pb2.ListOperationsResponse:
        """One page of operations, newest first; `state` is running, done or any.

        `id_prefix` keeps ids that start with it; `description_contains` keeps
        descriptions that contain it, ignoring case (Unicode lowercase, on the server).
        """
        request = _common.list_request(
            resource_id=resource_id,
            created_by=created_by,
            state=state,
            created_after=created_after,
            created_before=created_before,
            scope=scope,
            id_prefix=id_prefix,
            description_contains=description_contains,
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self._opsd.List, request, idempotent=True)

    def list_all(self, **filters: _AnyType) -> Iterator[operation_pb2.Operation]:
        """Every operation matching the filters of `list`, page after page."""
        token = ""
        while True:
            page = self.list(page_token=token, **filters)
            yield from page.operations
            token = page.next_page_token
            if not token:
                return

    def overview(
        self,
        *,
        window: Optional[Seconds] = None,
        stuck_after: Optional[Seconds] = None,
        oldest: int = 0,
    ) -> operation_pb2.GetOverviewResponse:
        """What runs, what is stuck (and by which rule) and how each id prefix
        fared within `window` (default one hour); `stuck_after` defaults to
        the server's threshold, `oldest` (0: 10) is how many of the oldest
        running operations to list."""
        request = _common.overview_request(window=window, stuck_after=stuck_after, oldest=oldest)
        return self._call(self._opsd.GetOverview, request, idempotent=True)

    def list_events(self, operation_id: str, *, page_size: int = 0, page_token: str = "") -> operation_pb2.ListEventsResponse:
        """One page of the operation's timeline, oldest first."""
        request = operation_pb2.ListEventsRequest(
            operation_id=operation_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._opsd.ListEvents, request, idempotent=True)

    def watch(self, operation_id: str) -> Iterator[operation_pb2.Operation]:
        """The operation now, then at every change until it is done, over one
        stream (no reconnection: `wait` reconnects)."""
        call = self._opsd.Watch(
            operation_pb2.WatchOperationRequest(operation_id=operation_id), metadata=self._metadata()
        )
        try:
            yield from call
        except grpc.RpcError as error:
            raise from_grpc(error) from None
        finally:
            call.cancel()

    def wait(
        self,
        operation_id: str,
        timeout: Optional[Seconds] = None,
        *,
        poll_interval: float = 1.0,
        stop_at_reported_failure: bool = False,
    ) -> operation_pb2.Operation:
        """Waits until the operation is done and returns it (`opsd.v1.Operation`).

        Follows Watch, reconnecting with jittered backoff through restarts and
        outages; polls Get at the server's hint (`poll_interval` without one)
        when Watch is refused. Raises `OperationCancelled` or `OperationFailed`
        for a done operation with an error, `WaitTimeout` after `timeout`
        seconds, `FailureReported` at the first reported failure when
        `stop_at_reported_failure`, and the typed error of a final answer
        (NOT_FOUND, PERMISSION_DENIED, ...)."""
        deadline = None if timeout is None else time.monotonic() + _common.seconds(timeout)
        op = self._follow(operation_id, deadline, poll_interval, stop_at_reported_failure)
        return _outcome(operation_id, op)

    def _follow(self, operation_id, deadline, poll_interval, stop_at_reported_failure):
        backoff = _common.Backoff()
        last = None
        request = operation_pb2.WatchOperationRequest(operation_id=operation_id)
        while True:
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(operation_id, last)
            call = self._opsd.Watch(request, timeout=remaining, metadata=self._metadata())
            received = False
            try:
                for op in call:
                    if not received:
                        log.debug("following the operation", extra={"operation_id": operation_id})
                    received = True
                    backoff.reset()
                    last = op
                    if _common.is_finished(op, stop_at_reported_failure):
                        return op
                log.debug("watch ended before done, reconnecting", extra={"operation_id": operation_id})
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    raise WaitTimeout(operation_id, last) from None
                if code in _common.POLL_INSTEAD_CODES and not received:
                    log.debug("watch refused, polling", extra={"operation_id": operation_id, "code": code.name})
                    return self._poll(operation_id, deadline, poll_interval, stop_at_reported_failure, last)
                if code not in _common.RECONNECT_CODES:
                    raise from_grpc(error) from None
                log.debug("watch interrupted, reconnecting", extra={"operation_id": operation_id, "code": code.name})
            finally:
                call.cancel()
            _sleep(backoff.next(), deadline)

    def _poll(self, operation_id, deadline, poll_interval, stop_at_reported_failure, last):
        backoff = _common.Backoff()
        public_only = False
        while True:
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(operation_id, last)
            call_timeout = self.timeout if remaining is None else min(self.timeout, remaining)
            try:
                if public_only:
                    public, call = self._public.Get.with_call(
                        operation_service_pb2.GetOperationRequest(operation_id=operation_id),
                        timeout=call_timeout,
                        metadata=self._metadata(),
                    )
                    op = operation_pb2.Operation()
                    op.operation.CopyFrom(public)
                else:
                    op, call = self._opsd.Get.with_call(
                        operation_pb2.GetOperationRequest(operation_id=operation_id),
                        timeout=call_timeout,
                        metadata=self._metadata(),
                    )
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNIMPLEMENTED and not public_only:
                    public_only = True  # a server with the clouds' API only
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None and _remaining(deadline) <= 0:
                    raise WaitTimeout(operation_id, last) from None
                if code not in _common.RECONNECT_CODES and code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise from_grpc(error) from None
                _sleep(backoff.next(), deadline)
                continue
            backoff.reset()
            last = op
            if _common.is_finished(op, stop_at_reported_failure):
                return op
            interval = _common.poll_hint(call.initial_metadata()) or poll_interval
            log.debug("operation not done, polling", extra={"operation_id": operation_id, "poll_interval": interval})
            _sleep(interval, deadline)

    # --- producers -----------------------------------------------------------------

    def create(
        self,
        description: str = "",
        *,
        resource_id: str = "",
        metadata: Payload = None,
        cancellation: Optional[str] = None,
        lease: Optional[Seconds] = None,
        deadline: Optional[datetime.datetime] = None,
        idempotency_key: Optional[str] = None,
        id_prefix: str = "",
        exclusive: bool = False,
        scope: str = "",
    ) -> operation_pb2.Operation:
        """Creates a running operation. `cancellation` is immediate (the
        server's default), cooperative or not_cancellable; `lease` seconds
        takes a lease at once. Retried on UNAVAILABLE only with an
        `idempotency_key` (a repeat returns the operation the first made)."""
        request = _common.create_request(
            description=description,
            resource_id=resource_id,
            metadata=metadata,
            cancellation=cancellation,
            lease=lease,
            deadline=deadline,
            idempotency_key=idempotency_key,
            id_prefix=id_prefix,
            exclusive=exclusive,
            scope=scope,
        )
        return self._call(self._producer.Create, request, idempotent=bool(idempotency_key))

    def update_metadata(
        self,
        operation_id: str,
        *,
        metadata: Payload = None,
        progress: Optional[operation_pb2.Progress] = None,
    ) -> operation_pb2.Operation:
        """Replaces the metadata and/or the progress of a running operation."""
        request = producer_pb2.UpdateMetadataRequest(operation_id=operation_id)
        packed = _common.pack(metadata)
        if packed is not None:
            request.metadata.CopyFrom(packed)
        if progress is not None:
            request.progress.CopyFrom(progress)
        return self._call(self._producer.UpdateMetadata, request, idempotent=True)

    def progress(
        self, operation_id: str, done: int, total: int = 0, message: str = "", *, steps: StepsArg = None
    ) -> operation_pb2.Operation:
        """Reports progress: `done` of `total` units, a message and named steps."""
        return self.update_metadata(operation_id, progress=_common.progress(done, total, message, steps))

    def heartbeat(self, operation_id: str, lease: Optional[Seconds] = None) -> producer_pb2.HeartbeatResponse:
        """Takes or renews the lease (`lease` seconds, the server's 30 s when unset)."""
        request = producer_pb2.HeartbeatRequest(operation_id=operation_id)
        if lease is not None:
            request.lease_duration.CopyFrom(_common.duration(lease))
        return self._call(self._producer.Heartbeat, request, idempotent=True)

    def report_failure(
        self, operation_id: str, code: Union[int, grpc.StatusCode], message: str, details: Sequence[Message] = ()
    ) -> operation_pb2.Operation:
        """Records a failure while the producer still cleans up: consumers see
        `error` set while `done` is false; only an error can complete it now."""
        request = producer_pb2.ReportFailureRequest(
            operation_id=operation_id, error=_common.status(code, message, details)
        )
        return self._call(self._producer.ReportFailure, request, idempotent=True)

    def complete(
        self,
        operation_id: str,
        *,
        response: Payload = None,
        error: Optional[status_pb2.Status] = None,
        retry: Optional[Retry] = None,
    ) -> operation_pb2.Operation:
        """Completes with `response` (a message, `Any` or dict) or `error` (a
        `google.rpc.Status`, see `opsd.status`); with neither, with the
        failure reported earlier."""
        request = _common.complete_request(operation_id, response, error)
        return self._call(self._producer.Complete, request, idempotent=True, retry=retry)

    def start_operation(
        self,
        description: str = "",
        *,
        resource_id: str = "",
        metadata: Payload = None,
        cancellation: Optional[str] = "cooperative",
        lease: Seconds = 30,
        deadline: Optional[datetime.datetime] = None,
        idempotency_key: Optional[str] = None,
        id_prefix: str = "",
        exclusive: bool = False,
        scope: str = "",
    ) -> "OperationHandle":
        """Creates an operation (cooperative by default, with a lease of
        `lease` seconds and an idempotency key, so the Create is retried
        safely) and returns its handle, which renews the lease in the
        background. Use it as a context manager: leaving the block without
        completing, or with an exception, fails the operation (ABORTED)."""
        created = self.create(
            description,
            resource_id=resource_id,
            metadata=metadata,
            cancellation=cancellation,
            lease=lease,
            deadline=deadline,
            idempotency_key=idempotency_key or f"opsd-py-{uuid.uuid4().hex}",
            id_prefix=id_prefix,
            exclusive=exclusive,
            scope=scope,
        )
        # The handle's heartbeats, progress and completion join the operation's trace.
        joined = self.in_trace(created.trace_parent, created.trace_state)
        return OperationHandle(joined, created, _common.seconds(lease))


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else deadline - time.monotonic()


def _sleep(pause: float, deadline: Optional[float]) -> None:
    remaining = _remaining(deadline)
    time.sleep(max(0.0, pause if remaining is None else min(pause, remaining)))


def _outcome(operation_id: str, op: operation_pb2.Operation) -> operation_pb2.Operation:
    error = _common.error_of(op)
    if error is None:
        return op
    if op.operation.done:
        raise operation_error(operation_id, error, op)
    raise FailureReported(operation_id, error, op)


class OperationHandle:
    """A running operation owned by this producer.

    While it is open, a background thread renews the lease at a third of its
    length and another follows the operation with Watch, so `cancel_requested`
    (a `threading.Event`) is set as soon as a consumer asks to cancel (or the
    operation was cancelled at once). Complete it with `succeed` or `fail`
    (or `fail_as_reported` after `report_failure`)."""

    def __init__(self, client: Client, created: operation_pb2.Operation, lease: float) -> None:
        self._client = client
        self.operation = created
        self.id: str = created.operation.id
        self.lease = lease
        self.cancel_requested = threading.Event()
        self.completed = False
        self._stop = threading.Event()
        self._watch_call = None
        self._watch_lock = threading.Lock()
        if _common.cancel_was_requested(created):
            self.cancel_requested.set()
        self._threads = [
            threading.Thread(target=self._renew, name=f"opsd-lease-{self.id}", daemon=True),
            threading.Thread(target=self._follow, name=f"opsd-watch-{self.id}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> "OperationHandle":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if not self.completed:
                message = DROPPED_MESSAGE if exc is None else _common.exception_message(exc)
                try:
                    self._finish(None, _common.status(grpc.StatusCode.ABORTED, message))
                except FailedPrecondition as error:
                    # Already done otherwise: cancelled at once, or its lease lapsed.
                    log.debug("operation already done", extra={"operation_id": self.id, "error": str(error)})
                except OpsdError as error:
                    if exc is None:
                        raise
                    log.warning("cannot fail the operation", extra={"operation_id": self.id, "error": str(error)})
        finally:
            self._stop_background()
        return False

    # --- the work's calls ---------------------------------------------------------------

    def progress(
        self, done: int, total: int = 0, message: str = "", *, steps: StepsArg = None
    ) -> operation_pb2.Operation:
        """Reports progress; the answer also sets `cancel_requested` when asked."""
        op = self._client.progress(self.id, done, total, message, steps=steps)
        self._saw(op)
        return op

    def update_metadata(self, metadata: Payload) -> operation_pb2.Operation:
        op = self._client.update_metadata(self.id, metadata=metadata)
        self._saw(op)
        return op

    def report_failure(
        self, code: Union[int, grpc.StatusCode], message: str, details: Sequence[Message] = ()
    ) -> operation_pb2.Operation:
        """Tells consumers at once that the work failed while this producer
        cleans up; the operation stays running (and leased) and can only be
        completed with an error now, e.g. by `fail_as_reported`."""
        op = self._client.report_failure(self.id, code, message, details)
        self._saw(op)
        return op

    def succeed(self, response: Payload = None) -> operation_pb2.Operation:
        """Completes with `response` (a message, `Any` or dict; `google.protobuf.Empty` when None)."""
        return self._finish(response if response is not None else _common.empty_response(), None)

    def fail(
        self, code: Union[int, grpc.StatusCode], message: str, details: Sequence[Message] = ()
    ) -> operation_pb2.Operation:
        """Completes with an error (`code` 1-16)."""
        return self._finish(None, _common.status(code, message, details))

    def fail_as_reported(self) -> operation_pb2.Operation:
        """Completes with the failure reported last, once cleanup is over."""
        return self._finish(None, None)

    def _finish(self, response: Payload, error: Optional[status_pb2.Status]) -> operation_pb2.Operation:
        # Whatever the answer, the work is over: do not fail it again on exit.
        self.completed = True
        try:
            op = self._client.complete(self.id, response=response, error=error, retry=COMPLETE_RETRY)
        finally:
            self._stop_background()
        self.operation = op
        return op

    # --- the background ------------------------------------------------------------------

    def _saw(self, op: operation_pb2.Operation) -> None:
        self.operation = op
        if _common.cancel_was_requested(op):
            self.cancel_requested.set()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                answer = self._client.heartbeat(self.id, lease=self.lease)
            except RpcError as error:
                if error.code in _common.RECONNECT_CODES:
                    continue
                # Done, gone or refused: there is nothing left to keep alive.
                log.debug("lease renewal ended", extra={"operation_id": self.id, "error": str(error)})
                return
            except ValueError:  # the client was closed
                return
            if answer.cancel_requested:
                self.cancel_requested.set()

    def _follow(self) -> None:
        backoff = _common.Backoff()
        request = operation_pb2.WatchOperationRequest(operation_id=self.id)
        while not self._stop.is_set():
            with self._watch_lock:
                if self._stop.is_set():
                    return
                try:
                    call = self._client._opsd.Watch(request, metadata=self._client._metadata())
                except ValueError:  # the client was closed
                    return
                self._watch_call = call
            try:
                for op in call:
                    backoff.reset()
                    if _common.cancel_was_requested(op):
                        self.cancel_requested.set()
                    if op.operation.done:
                        return
            except grpc.RpcError as error:
                if self._stop.is_set() or error.code() not in _common.RECONNECT_CODES:
                    return
            except ValueError:  # the client was closed
                return
            self._stop.wait(backoff.next())

    def _stop_background(self) -> None:
        self._stop.set()
        with self._watch_lock:
            if self._watch_call is not None:
                self._watch_call.cancel()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)


__all__ = ["Client", "OperationHandle"]
