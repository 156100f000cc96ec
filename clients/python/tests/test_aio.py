"""The asyncio flavour, `opsd.aio`, against a real opsd: the same shape as
the blocking client."""

import asyncio
import logging

import grpc
import pytest
from google.protobuf import struct_pb2

import opsd
import opsd.aio
from opsd.v1 import operation_pb2


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_producer_and_consumer_happy_path(opsd_server):
    async def main():
        async with opsd.aio.Client(opsd_server.endpoint) as client:
            async with client.start_operation(description="async snapshot", resource_id="disk-a", lease=3) as op:
                answer = await op.progress(1, 2, "half", steps=[("copy", "done"), ("verify", "running")])
                assert answer.progress.steps[0].state == operation_pb2.Step.STATE_DONE
                waiter = asyncio.ensure_future(client.wait(op.id, timeout=10))
                await asyncio.sleep(0)
                await op.succeed({"size": "20G"})
            done = await waiter
            assert done.response_as(struct_pb2.Struct)["size"] == "20G"
            got = await client.get(op.id)
            assert got.operation.done
            listed = [o.operation.id async for o in client.list_all(resource_id="disk-a")]
            assert listed == [op.id]
            searched = await client.list(id_prefix=op.id[:10], description_contains="ASYNC SNAPSHOT")
            assert [o.operation.id for o in searched.operations] == [op.id]
            assert not (await client.list(id_prefix=op.id, description_contains="sync_")).operations
            events = await client.list_events(op.id)
            assert events.events[-1].kind == operation_pb2.EVENT_KIND_COMPLETED
            seen = [o async for o in client.watch(op.id)]
            assert len(seen) == 1 and seen[0].operation.done

    run(main())


def test_cooperative_cancel_is_heard_within_a_lease_third(opsd_server):
    async def main():
        async with opsd.aio.Client(opsd_server.endpoint) as client:
            async with client.start_operation(description="async cancel", lease=3) as op:
                cancelled = await client.cancel(op.id)
                assert not cancelled.done
                await asyncio.wait_for(op.cancel_requested.wait(), 1.0)
                await op.fail(grpc.StatusCode.CANCELLED, "cancelled on request")
            with pytest.raises(opsd.OperationCancelled):
                await client.wait(op.id, timeout=10)

    run(main())


def test_leaving_with_an_exception_or_uncompleted_fails_the_operation(opsd_server):
    async def main():
        async with opsd.aio.Client(opsd_server.endpoint) as client:
            with pytest.raises(LookupError):
                async with client.start_operation(description="raises") as raising:
                    raise LookupError("secret")
            with pytest.raises(opsd.OperationFailed) as raised:
                await client.wait(raising.id, timeout=10)
            assert raised.value.code == grpc.StatusCode.ABORTED.value[0]
            assert raised.value.message == "the producer raised LookupError"

            async with client.start_operation(description="left") as left:
                pass
            with pytest.raises(opsd.OperationFailed) as raised:
                await client.wait(left.id, timeout=10)
            assert raised.value.message == opsd.DROPPED_MESSAGE

            handle = await client.start_operation(description="awaited")
            await handle.fail(9, "no")
            with pytest.raises(opsd.OperationFailed):
                await client.wait(handle.id, timeout=10)

    run(main())


def test_lease_renewal_keeps_a_two_second_lease_alive(opsd_server):
    async def main():
        async with opsd.aio.Client(opsd_server.endpoint) as client:
            async with client.start_operation(description="async slow", lease=2) as op:
                await asyncio.sleep(5)
                assert (await client.get(op.id)).state == operation_pb2.OPERATION_STATE_RUNNING
                await op.succeed()

    run(main())


def test_typed_errors_and_timeouts(opsd_server):
    async def main():
        async with opsd.aio.Client(opsd_server.endpoint) as client:
            with pytest.raises(opsd.InvalidArgument) as raised:
                await client.cancel("")
            assert raised.value.field_violations == [("operation_id", "is required")]
            with pytest.raises(opsd.NotFound):
                await client.wait("ops00000000000000000", timeout=5)
            op = await client.create("async timeout")
            with pytest.raises(opsd.WaitTimeout):
                await client.wait(op.operation.id, timeout=0.3)

    run(main())


def test_wait_rides_out_a_restart_of_opsd(start_opsd, caplog):
    server = start_opsd()

    async def main():
        async with opsd.aio.Client(server.endpoint) as client:
            op_id = (await client.create("async restart")).operation.id
            with caplog.at_level(logging.DEBUG, logger="opsd"):
                waiter = asyncio.ensure_future(client.wait(op_id, timeout=60))
                for _ in range(200):
                    if any(r.getMessage() == "following the operation" for r in caplog.records):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the waiter never followed the operation")
                await asyncio.get_running_loop().run_in_executor(None, server.restart)
                async with opsd.aio.Client(server.endpoint) as producer:
                    await producer.complete(op_id, response={"after": "restart"})
                done = await waiter
            assert done.operation.done
            assert [r for r in caplog.records if r.getMessage() == "watch interrupted, reconnecting"]

    run(main())


def test_wait_polls_at_the_servers_hint_when_watch_is_refused(start_opsd, caplog):
    server = start_opsd("--max-watchers", "1", "--poll-interval", "2s")

    async def main():
        async with opsd.aio.Client(server.endpoint) as client:
            held = await client.create("holds the only watcher")
            holder = client.watch(held.operation.id)
            assert (await holder.__anext__()).operation.id == held.operation.id
            op_id = (await client.create("polled")).operation.id

            async def complete_later():
                await asyncio.sleep(1.0)
                await client.complete(op_id, response={"ok": True})

            completer = asyncio.ensure_future(complete_later())
            with caplog.at_level(logging.DEBUG, logger="opsd"):
                done = await client.wait(op_id, timeout=20)
            await completer
            await holder.aclose()
            assert done.operation.done

    run(main())
    assert [r for r in caplog.records if r.getMessage() == "watch refused, polling"]
    polls = [r.poll_interval for r in caplog.records if r.getMessage() == "operation not done, polling"]
    assert polls and all(interval == 2.0 for interval in polls), polls


def test_tls_and_tokens(start_opsd, tmp_path):
    from conftest import certificates, make_token, tokens_file

    ca, cert, key = certificates(tmp_path)
    admin = make_token()
    tokens = tokens_file(tmp_path / "tokens.toml", [("py-aio", admin, ["admin"])])
    server = start_opsd("--tls-cert", str(cert), "--tls-key", str(key), "--tokens-file", str(tokens))

    async def main():
        endpoint = f"https://{server.endpoint}"
        async with opsd.aio.Client(endpoint, ca=str(ca), token=admin) as client:
            async with client.start_operation(description="aio over tls") as op:
                await op.succeed()
            assert (await client.wait(op.id, timeout=10)).operation.created_by == "py-aio"
        async with opsd.aio.Client(endpoint, ca=str(ca), token="") as anonymous:
            with pytest.raises(opsd.Unauthenticated):
                await anonymous.get(op.id)

    run(main())
