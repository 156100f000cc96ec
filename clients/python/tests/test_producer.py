"""The producer helper against a real opsd: the happy path, cooperative
cancel, failing on exception or on leaving uncompleted, lease renewal."""

import time

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

import opsd
from opsd.v1 import operation_pb2


def test_happy_path_progress_then_typed_response(client):
    metadata = duration_pb2.Duration(seconds=7)
    with client.start_operation(
        description="snapshot disk-1", resource_id="disk-1", metadata=metadata, lease=30
    ) as op:
        assert len(op.id) == 20 and op.id.startswith("ops")
        assert not op.cancel_requested.is_set()
        running = client.get(op.id)
        assert running.state == operation_pb2.OPERATION_STATE_RUNNING
        assert running.resource_id == "disk-1"
        assert running.cancellation_policy == operation_pb2.CANCELLATION_POLICY_COOPERATIVE
        assert running.HasField("lease_expires_at")
        assert running.metadata_as(duration_pb2.Duration) == metadata

        answer = op.progress(3, 10, "copying", steps={"copy": "running", "verify": "pending"})
        assert answer.progress.work_done == 3
        progress = client.get(op.id).progress
        assert (progress.work_done, progress.work_total, progress.message) == (3, 10, "copying")
        assert [(s.name, s.state) for s in progress.steps] == [
            ("copy", operation_pb2.Step.STATE_RUNNING),
            ("verify", operation_pb2.Step.STATE_PENDING),
        ]
        done = op.succeed(timestamp_pb2.Timestamp(seconds=1_700_000_000))
        assert done.operation.done

    waited = client.wait(op.id, timeout=10)
    assert isinstance(waited, operation_pb2.Operation)
    assert waited.state == operation_pb2.OPERATION_STATE_DONE
    assert waited.response_as(timestamp_pb2.Timestamp).seconds == 1_700_000_000
    assert opsd.response_as(waited.operation, timestamp_pb2.Timestamp).seconds == 1_700_000_000
    with pytest.raises(opsd.PayloadError, match="not google.protobuf.Struct"):
        waited.response_as(struct_pb2.Struct)

    kinds = [e.kind for e in client.list_events(op.id).events]
    assert kinds == [
        operation_pb2.EVENT_KIND_CREATED,
        operation_pb2.EVENT_KIND_METADATA_UPDATED,
        operation_pb2.EVENT_KIND_COMPLETED,
    ]


def test_a_dict_response_travels_as_a_struct(client):
    with client.start_operation(description="resize") as op:
        op.succeed({"size": "20G", "disks": 2})
    struct = client.wait(op.id, timeout=10).response_as(struct_pb2.Struct)
    assert dict(struct) == {"size": "20G", "disks": 2.0}


def test_cooperative_cancel_is_heard_within_a_lease_third(client):
    lease = 3.0
    with client.start_operation(description="long work", cancellation="cooperative", lease=lease) as op:
        cancelled = client.cancel(op.id)
        assert not cancelled.done, "a cooperative operation waits for its producer"
        asked = time.monotonic()
        assert op.cancel_requested.wait(timeout=lease / 3), "cancel not heard within a lease third"
        heard = time.monotonic() - asked
        assert client.get(op.id).state == operation_pb2.OPERATION_STATE_CANCEL_REQUESTED
        op.fail(grpc.StatusCode.CANCELLED, "cancelled on request")
    assert heard < lease / 3
    with pytest.raises(opsd.OperationCancelled) as raised:
        client.wait(op.id, timeout=10)
    assert raised.value.message == "cancelled on request"
    assert isinstance(raised.value, opsd.OperationFailed)


def test_an_immediate_cancel_also_tells_the_producer(client):
    with client.start_operation(description="immediate", cancellation="immediate", lease=3) as op:
        assert client.cancel(op.id).done
        assert op.cancel_requested.wait(timeout=1), "an immediate cancel not heard"
    # Leaving the block found the operation done: it stays cancelled.
    with pytest.raises(opsd.OperationCancelled):
        client.wait(op.id, timeout=10)


class QuotaError(Exception):
    pass


def test_leaving_the_block_with_an_exception_fails_the_operation(client):
    with pytest.raises(QuotaError):
        with client.start_operation(description="doomed") as op:
            op.progress(1, 2)
            raise QuotaError("secret detail: password=hunter2")
    with pytest.raises(opsd.OperationFailed) as raised:
        client.wait(op.id, timeout=10)
    error = raised.value
    assert not isinstance(error, opsd.OperationCancelled)
    assert error.code == grpc.StatusCode.ABORTED.value[0]
    assert error.message == f"the producer raised {__name__}.QuotaError"
    assert "hunter2" not in error.message and "Traceback" not in error.message
    assert op.completed


def test_leaving_the_block_without_completing_fails_the_operation(client):
    with client.start_operation(description="forgotten") as op:
        op.progress(1, 3)
    with pytest.raises(opsd.OperationFailed) as raised:
        client.wait(op.id, timeout=10)
    assert raised.value.code == grpc.StatusCode.ABORTED.value[0]
    assert raised.value.message == opsd.DROPPED_MESSAGE


def test_reported_failure_then_cleanup_then_done_with_it(client):
    with client.start_operation(description="rollback") as op:
        reported = op.report_failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "disk quota exceeded, rolling back")
        assert not reported.operation.done
        with pytest.raises(opsd.FailureReported) as early:
            client.wait(op.id, timeout=10, stop_at_reported_failure=True)
        assert early.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        with pytest.raises(opsd.FailedPrecondition) as refused:
            client.complete(op.id, response={"ok": True})
        assert refused.value.precondition_types == ["FAILURE_REPORTED"]
        op.fail_as_reported()
    with pytest.raises(opsd.OperationFailed) as raised:
        client.wait(op.id, timeout=10)
    assert raised.value.message == "disk quota exceeded, rolling back"


def test_fail_carries_details(client):
    from google.rpc import error_details_pb2

    info = error_details_pb2.ErrorInfo(reason="QUOTA", domain="disks.example")
    with client.start_operation(description="fails") as op:
        op.fail(9, "quota exceeded", details=[info])
    with pytest.raises(opsd.OperationFailed) as raised:
        client.wait(op.id, timeout=10)
    assert raised.value.detail(error_details_pb2.ErrorInfo) == info
    assert raised.value.operation.operation.id == op.id


def test_lease_renewal_keeps_a_two_second_lease_alive_for_ten_seconds(client):
    with client.start_operation(description="slow work", lease=2) as op:
        first = client.get(op.id).lease_expires_at.ToDatetime()
        # Five lease lengths, the reaper looking every second: only the
        # background renewals keep the operation running.
        time.sleep(10)
        now = client.get(op.id)
        assert now.state == operation_pb2.OPERATION_STATE_RUNNING, now
        assert now.lease_expires_at.ToDatetime() > first
        op.succeed()
    assert client.wait(op.id, timeout=10).operation.done


def test_without_renewal_a_two_second_lease_lapses(client):
    created = client.create("unattended", lease=2)
    with pytest.raises(opsd.OperationFailed) as raised:
        client.wait(created.operation.id, timeout=15)
    assert raised.value.code == grpc.StatusCode.ABORTED.value[0]


def test_create_with_an_idempotency_key_returns_the_first_operation(client):
    first = client.create("once", idempotency_key="py-key-1")
    again = client.create("once", idempotency_key="py-key-1")
    assert again.operation.id == first.operation.id
    with pytest.raises(opsd.FailedPrecondition) as raised:
        client.create("another request", idempotency_key="py-key-1")
    assert raised.value.precondition_types == ["IDEMPOTENCY_KEY_REUSED"]


def test_calls_carry_the_trace_context_and_the_handle_joins_the_operations_trace(opsd_server):
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = f"00-{trace_id}-{span_id}-01"
    with opsd.Client(opsd_server.endpoint, traceparent=traceparent, tracestate="vendor=1") as traced:
        created = traced.create("traced")
        # opsd exports no traces here: it keeps the caller's own context.
        assert created.trace_parent == traceparent
        assert created.trace_state == "vendor=1"
        with traced.start_operation(description="traced producer") as op:
            op.progress(1, 2)
            op.succeed()
        events = traced.list_events(op.id).events
        assert [e.trace_id for e in events] == [trace_id] * 3
        other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert traced.in_trace(other).progress(created.operation.id, 1).operation.id == created.operation.id
        last = traced.list_events(created.operation.id).events[-1]
        assert last.trace_id == "0af7651916cd43dd8448eb211c80319c"
    with opsd.Client(opsd_server.endpoint, traceparent="") as untraced:
        plain = untraced.create("untraced")
        assert plain.trace_parent == ""
        assert untraced.list_events(plain.operation.id).events[0].trace_id == ""
    with pytest.raises(ValueError, match="the traceparent cannot be sent as a header value"):
        opsd.Client(opsd_server.endpoint, traceparent="00-\u00e9")
