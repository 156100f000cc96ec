"""The asyncio client, the same shape as `opsd.Client`: every call is a
coroutine, `watch` an async iterator, and the producer's handle an async
context manager whose `cancel_requested` is an `asyncio.Event`::

    async with opsd.aio.Client("127.0.0.1:7117") as client:
        async with client.start_operation(description="snapshot disk-1") as op:
            await op.progress(1, 10, "copying")
            await op.succeed({"size": "20G"})
        done = await client.wait(op.id, timeout=60)

Create the client inside the running event loop that uses it."""

import asyncio
import copy
import datetime
import logging
import time
import uuid
from typing import Any as _AnyType
from typing import AsyncIterator, Optional, Sequence, Union

import grpc
import grpc.aio
from google.protobuf.message import Message
from google.rpc import status_pb2

from opsd import _common
from opsd._common import DROPPED_MESSAGE, Payload, Retry, Seconds, StepsArg
from opsd._yandex import operation_service_pb2, operation_service_pb2_grpc
from opsd.client import COMPLETE_RETRY, _outcome, _remaining
from opsd.errors import FailedPrecondition, OpsdError, RpcError, WaitTimeout, from_grpc
from opsd.v1 import operation_pb2, operation_pb2_grpc, producer_pb2, producer_pb2_grpc

log = logging.getLogger("opsd")


class Client:
    """A connection to opsd for asyncio; the arguments are those of `opsd.Client`.
    Use it with `async with`, or `await client.close()`."""

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
            self._channel = grpc.aio.insecure_channel(self._target.address, options=_common.CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(
                self._target.address, credentials, options=_common.CHANNEL_OPTIONS
            )
        self._public = operation_service_pb2_grpc.OperationServiceStub(self._channel)
        self._opsd = operation_pb2_grpc.OperationServiceStub(self._channel)
        self._producer = producer_pb2_grpc.ProducerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: _AnyType) -> None:
        await self.close()

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

    async def _call(self, method, request: Message, *, idempotent: bool, retry: Optional[Retry] = None):
        policy = retry or self.retry
        pauses = policy.pauses() if idempotent else iter(())
        started = time.monotonic()
        while True:
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata())
            except grpc.RpcError as error:
                code = error.code()
                pause = next(pauses, None) if code in policy.codes else None
                if pause is None or time.monotonic() - started + pause > policy.max_elapsed:
                    raise from_grpc(error) from None
                log.debug("call failed, retrying", extra={"code": code.name, "pause": pause})
                await asyncio.sleep(pause)

    # --- consumers ---------------------------------------------------------------

    async def get(self, operation_id: str) -> operation_pb2.Operation:
        request = operation_pb2.GetOperationRequest(operation_id=operation_id)
        return await self._call(self._opsd.Get, request, idempotent=True)

    async def get_public(self, operation_id: str):
        request = operation_service_pb2.GetOperationRequest(operation_id=operation_id)
        return await self._call(self._public.Get, request, idempotent=True)

    async def cancel(self, operation_id: str):
        request = operation_service_pb2.CancelOperationRequest(operation_id=operation_id)
        return await self._call(self._public.Cancel, request, idempotent=True)

    async def list(
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
        return await self._call(self._opsd.List, request, idempotent=True)

    async def overview(
        self,
        *,
        window: Optional[Seconds] = None,
        stuck_after: Optional[Seconds] = None,
        oldest: int = 0,
    ) -> operation_pb2.GetOverviewResponse:
        request = _common.overview_request(window=window, stuck_after=stuck_after, oldest=oldest)
        return await self._call(self._opsd.GetOverview, request, idempotent=True)

    async def list_all(self, **filters: _AnyType) -> AsyncIterator[operation_pb2.Operation]:
        token = ""
        while True:
            page = await self.list(page_token=token, **filters)
            for op in page.operations:
                yield op
            token = page.next_page_token
            if not token:
                return

    async def list_events(
        self, operation_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> operation_pb2.ListEventsResponse:
        request = operation_pb2.ListEventsRequest(
            operation_id=operation_id, page_size=page_size, page_token=page_token
        )
        return await self._call(self._opsd.ListEvents, request, idempotent=True)

    async def watch(self, operation_id: str) -> AsyncIterator[operation_pb2.Operation]:
        call = self._opsd.Watch(
            operation_pb2.WatchOperationRequest(operation_id=operation_id), metadata=self._metadata()
        )
        try:
            async for op in call:
                yield op
        except grpc.RpcError as error:
            raise from_grpc(error) from None
        finally:
            call.cancel()

    async def wait(
        self,
        operation_id: str,
        timeout: Optional[Seconds] = None,
        *,
        poll_interval: float = 1.0,
        stop_at_reported_failure: bool = False,
    ) -> operation_pb2.Operation:
        """As `opsd.Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + _common.seconds(timeout)
        op = await self._follow(operation_id, deadline, poll_interval, stop_at_reported_failure)
        return _outcome(operation_id, op)

    async def _follow(self, operation_id, deadline, poll_interval, stop_at_reported_failure):
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
                async for op in call:
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
                    return await self._poll(operation_id, deadline, poll_interval, stop_at_reported_failure, last)
                if code not in _common.RECONNECT_CODES:
                    raise from_grpc(error) from None
                log.debug("watch interrupted, reconnecting", extra={"operation_id": operation_id, "code": code.name})
            finally:
                call.cancel()
            await _sleep(backoff.next(), deadline)

    async def _poll(self, operation_id, deadline, poll_interval, stop_at_reported_failure, last):
        backoff = _common.Backoff()
        public_only = False
        while True:
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(operation_id, last)
            call_timeout = self.timeout if remaining is None else min(self.timeout, remaining)
            try:
                if public_only:
                    call = self._public.Get(
                        operation_service_pb2.GetOperationRequest(operation_id=operation_id),
                        timeout=call_timeout,
                        metadata=self._metadata(),
                    )
                    op = operation_pb2.Operation()
                    op.operation.CopyFrom(await call)
                else:
                    call = self._opsd.Get(
                        operation_pb2.GetOperationRequest(operation_id=operation_id),
                        timeout=call_timeout,
                        metadata=self._metadata(),
                    )
                    op = await call
                metadata = await call.initial_metadata()
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNIMPLEMENTED and not public_only:
                    public_only = True
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None and _remaining(deadline) <= 0:
                    raise WaitTimeout(operation_id, last) from None
                if code not in _common.RECONNECT_CODES and code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise from_grpc(error) from None
                await _sleep(backoff.next(), deadline)
                continue
            backoff.reset()
            last = op
            if _common.is_finished(op, stop_at_reported_failure):
                return op
            interval = _common.poll_hint(metadata) or poll_interval
            log.debug("operation not done, polling", extra={"operation_id": operation_id, "poll_interval": interval})
            await _sleep(interval, deadline)

    # --- producers -----------------------------------------------------------------

    async def create(
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
        return await self._call(self._producer.Create, request, idempotent=bool(idempotency_key))

    async def update_metadata(
        self,
        operation_id: str,
        *,
        metadata: Payload = None,
        progress: Optional[operation_pb2.Progress] = None,
    ) -> operation_pb2.Operation:
        request = producer_pb2.UpdateMetadataRequest(operation_id=operation_id)
        packed = _common.pack(metadata)
        if packed is not None:
            request.metadata.CopyFrom(packed)
        if progress is not None:
            request.progress.CopyFrom(progress)
        return await self._call(self._producer.UpdateMetadata, request, idempotent=True)

    async def progress(
        self, operation_id: str, done: int, total: int = 0, message: str = "", *, steps: StepsArg = None
    ) -> operation_pb2.Operation:
        return await self.update_metadata(operation_id, progress=_common.progress(done, total, message, steps))

    async def heartbeat(self, operation_id: str, lease: Optional[Seconds] = None) -> producer_pb2.HeartbeatResponse:
        request = producer_pb2.HeartbeatRequest(operation_id=operation_id)
        if lease is not None:
            request.lease_duration.CopyFrom(_common.duration(lease))
        return await self._call(self._producer.Heartbeat, request, idempotent=True)

    async def report_failure(
        self, operation_id: str, code: Union[int, grpc.StatusCode], message: str, details: Sequence[Message] = ()
    ) -> operation_pb2.Operation:
        request = producer_pb2.ReportFailureRequest(
            operation_id=operation_id, error=_common.status(code, message, details)
        )
        return await self._call(self._producer.ReportFailure, request, idempotent=True)

    async def complete(
        self,
        operation_id: str,
        *,
        response: Payload = None,
        error: Optional[status_pb2.Status] = None,
        retry: Optional[Retry] = None,
    ) -> operation_pb2.Operation:
        request = _common.complete_request(operation_id, response, error)
        return await self._call(self._producer.Complete, request, idempotent=True, retry=retry)

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
    ) -> "_Starting":
        """As `opsd.Client.start_operation`; use `async with client.start_operation(...) as op`
        (or `op = await client.start_operation(...)`)."""

        async def start() -> OperationHandle:
            created = await self.create(
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

        return _Starting(start)


async def _sleep(pause: float, deadline: Optional[float]) -> None:
    remaining = _remaining(deadline)
    await asyncio.sleep(max(0.0, pause if remaining is None else min(pause, remaining)))


class _Starting:
    """What `start_operation` returns: awaitable, and an async context manager."""

    def __init__(self, start) -> None:
        self._start = start
        self._handle: Optional[OperationHandle] = None

    def __await__(self):
        return self._start().__await__()

    async def __aenter__(self) -> "OperationHandle":
        self._handle = await self._start()
        return self._handle

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        assert self._handle is not None
        return await self._handle.__aexit__(exc_type, exc, tb)


class OperationHandle:
    """As `opsd.OperationHandle`, for asyncio: background tasks renew the
    lease and follow the operation; `cancel_requested` is an `asyncio.Event`."""

    def __init__(self, client: Client, created: operation_pb2.Operation, lease: float) -> None:
        self._client = client
        self.operation = created
        self.id: str = created.operation.id
        self.lease = lease
        self.cancel_requested = asyncio.Event()
        self.completed = False
        if _common.cancel_was_requested(created):
            self.cancel_requested.set()
        self._tasks = [
            asyncio.ensure_future(self._renew()),
            asyncio.ensure_future(self._follow()),
        ]

    async def __aenter__(self) -> "OperationHandle":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            if not self.completed:
                message = DROPPED_MESSAGE if exc is None else _common.exception_message(exc)
                try:
                    await self._finish(None, _common.status(grpc.StatusCode.ABORTED, message))
                except FailedPrecondition as error:
                    log.debug("operation already done", extra={"operation_id": self.id, "error": str(error)})
                except OpsdError as error:
                    if exc is None:
                        raise
                    log.warning("cannot fail the operation", extra={"operation_id": self.id, "error": str(error)})
        finally:
            await self._stop_background()
        return False

    async def progress(
        self, done: int, total: int = 0, message: str = "", *, steps: StepsArg = None
    ) -> operation_pb2.Operation:
        op = await self._client.progress(self.id, done, total, message, steps=steps)
        self._saw(op)
        return op

    async def update_metadata(self, metadata: Payload) -> operation_pb2.Operation:
        op = await self._client.update_metadata(self.id, metadata=metadata)
        self._saw(op)
        return op

    async def report_failure(
        self, code: Union[int, grpc.StatusCode], message: str, details: Sequence[Message] = ()
    ) -> operation_pb2.Operation:
        op = await self._client.report_failure(self.id, code, message, details)
        self._saw(op)
        return op

    async def succeed(self, response: Payload = None) -> operation_pb2.Operation:
        return await self._finish(response if response is not None else _common.empty_response(), None)

    async def fail(
        self, code: Union[int, grpc.StatusCode], message: str, details: Sequence[Message] = ()
    ) -> operation_pb2.Operation:
        return await self._finish(None, _common.status(code, message, details))

    async def fail_as_reported(self) -> operation_pb2.Operation:
        return await self._finish(None, None)

    async def _finish(self, response: Payload, error: Optional[status_pb2.Status]) -> operation_pb2.Operation:
        self.completed = True
        try:
            op = await self._client.complete(self.id, response=response, error=error, retry=COMPLETE_RETRY)
        finally:
            await self._stop_background()
        self.operation = op
        return op

    def _saw(self, op: operation_pb2.Operation) -> None:
        self.operation = op
        if _common.cancel_was_requested(op):
            self.cancel_requested.set()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                answer = await self._client.heartbeat(self.id, lease=self.lease)
            except RpcError as error:
                if error.code in _common.RECONNECT_CODES:
                    continue
                log.debug("lease renewal ended", extra={"operation_id": self.id, "error": str(error)})
                return
            if answer.cancel_requested:
                self.cancel_requested.set()

    async def _follow(self) -> None:
        backoff = _common.Backoff()
        request = operation_pb2.WatchOperationRequest(operation_id=self.id)
        while True:
            call = self._client._opsd.Watch(request, metadata=self._client._metadata())
            try:
                async for op in call:
                    backoff.reset()
                    if _common.cancel_was_requested(op):
                        self.cancel_requested.set()
                    if op.operation.done:
                        return
            except grpc.RpcError as error:
                if error.code() not in _common.RECONNECT_CODES:
                    return
            finally:
                call.cancel()
            await asyncio.sleep(backoff.next())

    async def _stop_background(self) -> None:
        current = asyncio.current_task()
        others = [task for task in self._tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
