"""The consumer side against a real opsd: get, list, cancel, and wait
following Watch, polling at the server's hint, riding out a restart."""

import datetime
import logging
import threading
import uuid

import grpc
import pytest

import opsd
from opsd.v1 import operation_pb2


def test_get_list_and_cancel(client):
    resource = "disk-list-1"
    ids = [client.create(f"op {i}", resource_id=resource).operation.id for i in range(3)]
    listed = client.list(resource_id=resource)
    assert [op.operation.id for op in listed.operations] == ids[::-1], "newest first"
    page = client.list(resource_id=resource, page_size=2)
    assert len(page.operations) == 2 and page.next_page_token
    assert [op.operation.id for op in client.list_all(resource_id=resource, page_size=2)] == ids[::-1]

    cancelled = client.cancel(ids[0])
    assert cancelled.done and cancelled.error.code == 1
    assert [op.operation.id for op in client.list(resource_id=resource, state="running").operations] == [
        ids[2],
        ids[1],
    ]
    assert [op.operation.id for op in client.list(resource_id=resource, state="done").operations] == [ids[0]]
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    assert not client.list(resource_id=resource, created_after=future).operations

    public = client.get_public(ids[1])
    assert public.id == ids[1] and not public.done
    assert client.get(ids[1]).operation == public

    with pytest.raises(ValueError, match="unknown state"):
        client.list(state="sleeping")


def test_list_searches_ids_and_descriptions_on_the_server(client):
    tag = uuid.uuid4().hex[:8]
    made = [client.create(f"Ärger {tag} {i}" if i % 2 else f"plain {tag} {i}").operation for i in range(5)]
    # More than one page: the matches are found beyond the first.
    found = client.list(description_contains=f"ärger {tag.upper()}", page_size=1)
    assert [op.operation.id for op in found.operations] == [made[3].id]
    assert found.next_page_token
    every = [op.operation.id for op in client.list_all(description_contains=f"ÄRGER {tag}", page_size=1)]
    assert every == [made[3].id, made[1].id]
    by_prefix = client.list(id_prefix=made[2].id[:16], description_contains=tag)
    assert [op.operation.id for op in by_prefix.operations] == [made[2].id]
    assert not client.list(description_contains=f"{tag}%").operations, "% is a plain character"
    with pytest.raises(opsd.InvalidArgument) as refused:
        client.list(id_prefix="OPS")
    assert "id_prefix" in str(refused.value)


def test_wait_follows_watch_until_done(client):
    op = client.create("watched", cancellation="cooperative")
    op_id = op.operation.id
    timer = threading.Timer(0.5, lambda: client.complete(op_id, response={"ok": True}))
    timer.start()
    try:
        done = client.wait(op_id, timeout=10)
    finally:
        timer.cancel()
    assert done.operation.done and done.state == operation_pb2.OPERATION_STATE_DONE
    seen = list(client.watch(op_id))
    assert len(seen) == 1 and seen[0].operation.done, "a done operation's watch sends it and ends"


def test_wait_times_out_with_the_last_state(client):
    op = client.create("never finishes")
    with pytest.raises(opsd.WaitTimeout) as raised:
        client.wait(op.operation.id, timeout=0.5)
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.operation.operation.id == op.operation.id
    assert not raised.value.operation.operation.done


def test_wait_for_an_unknown_operation_is_not_found(client):
    with pytest.raises(opsd.NotFound):
        client.wait("ops00000000000000000", timeout=5)


def test_wait_polls_at_the_servers_hint_when_watch_is_refused(start_opsd, caplog):
    # One watcher in all, held by the first Watch below: the waiter's own Watch
    # is refused (RESOURCE_EXHAUSTED) and it polls Get at the 2 s hint.
    server = start_opsd("--max-watchers", "1", "--poll-interval", "2s")
    with opsd.Client(server.endpoint, timeout=10) as client:
        held = client.create("holds the only watcher")
        holder = client._opsd.Watch(
            operation_pb2.WatchOperationRequest(operation_id=held.operation.id),
            metadata=client._metadata(),
        )
        assert next(holder).operation.id == held.operation.id
        try:
            op = client.create("polled")
            op_id = op.operation.id
            timer = threading.Timer(1.0, lambda: client.complete(op_id, response={"ok": True}))
            timer.start()
            with caplog.at_level(logging.DEBUG, logger="opsd"):
                done = client.wait(op_id, timeout=20)
            timer.cancel()
        finally:
            holder.cancel()
    assert done.operation.done
    refused = [r for r in caplog.records if r.getMessage() == "watch refused, polling"]
    assert refused and refused[0].code == "RESOURCE_EXHAUSTED"
    polls = [r.poll_interval for r in caplog.records if r.getMessage() == "operation not done, polling"]
    assert polls and all(interval == 2.0 for interval in polls), polls


def test_wait_rides_out_a_restart_of_opsd(start_opsd, caplog):
    server = start_opsd()
    with opsd.Client(server.endpoint, timeout=10) as client:
        op_id = client.create("survives a restart").operation.id
        outcome = {}

        def wait() -> None:
            try:
                outcome["done"] = client.wait(op_id, timeout=60)
            except Exception as error:  # reported below
                outcome["error"] = error

        with caplog.at_level(logging.DEBUG, logger="opsd"):
            waiter = threading.Thread(target=wait)
            waiter.start()
            # The waiter logs when its Watch delivers the operation.
            _wait_until(lambda: _watching(caplog), 10)
            server.restart()  # kill -9, then the same address and data
            with opsd.Client(server.endpoint, timeout=10) as producer:
                producer.complete(op_id, response={"after": "restart"})
            waiter.join(timeout=60)
    assert not waiter.is_alive(), "the wait did not end"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["done"].operation.done
    reconnects = [r for r in caplog.records if r.getMessage().startswith("watch")]
    assert reconnects, "the waiter never noticed the restart"


def _watching(caplog) -> bool:
    return any(r.getMessage() == "following the operation" for r in caplog.records)


def _wait_until(condition, seconds: float) -> None:
    pause = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        pause.wait(0.05)
    raise AssertionError("condition not met in time")


def test_wait_reports_a_failed_operation_with_its_status(client):
    op_id = client.create("fails").operation.id
    client.complete(op_id, error=opsd.status(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota exceeded"))
    with pytest.raises(opsd.OperationFailed) as raised:
        client.wait(op_id, timeout=10)
    assert raised.value.code == 8
    assert raised.value.status.message == "quota exceeded"
    assert str(raised.value) == f"operation {op_id} failed: RESOURCE_EXHAUSTED: quota exceeded"
