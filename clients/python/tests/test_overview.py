"""The overview against a real opsd: GetOverview, sync and async, computed
by the server over the caller's scopes."""

import asyncio
import uuid

import pytest

import opsd
import opsd.aio


def test_overview_counts_running_and_done_and_names_the_stuck(client):
    tag = uuid.uuid4().hex[:8]
    quiet = client.create(f"quiet {tag}", resource_id=f"disk-overview-{tag}").operation.id
    done = client.create(f"done {tag}").operation.id
    client.complete(done, response={"size": "20G"})

    overview = client.overview(window=600, stuck_after=0.000000001, oldest=100)
    assert overview.window.seconds == 600
    assert overview.stuck_after.ToNanoseconds() == 1
    assert overview.running >= 1
    assert quiet in [op.operation.id for op in overview.oldest_running]
    stuck = {s.operation.operation.id: s for s in overview.stuck}
    assert quiet in stuck, "unchanged for longer than stuck_after"
    rules = [reason.WhichOneof("rule") for reason in stuck[quiet].reasons]
    assert "unchanged" in rules
    assert done not in stuck, "a done operation is never stuck"
    assert overview.stuck_count >= len(overview.stuck)
    prefix = quiet[:3]
    producer = next(p for p in overview.producers if p.id_prefix == prefix)
    assert producer.running >= 1 and producer.completed >= 1
    assert producer.sample_size >= 1 and producer.HasField("p50_to_done")
    assert overview.stuck_gap_factor == 10
    assert overview.lease_warning.seconds == 30

    # The server's defaults: one hour, its own threshold (10 minutes), 10 oldest.
    default = client.overview()
    assert default.window.seconds == 3600
    assert default.stuck_after.seconds == 600
    assert len(default.oldest_running) <= 10

    with pytest.raises(opsd.InvalidArgument) as refused:
        client.overview(window=8 * 24 * 3600, oldest=101)
    assert "window" in str(refused.value) and "oldest" in str(refused.value)


def test_overview_async(opsd_server):
    async def main():
        async with opsd.aio.Client(opsd_server.endpoint) as client:
            made = await client.create("async overview")
            overview = await client.overview(window=60, stuck_after=0.000000001, oldest=100)
            assert made.operation.id in [op.operation.id for op in overview.oldest_running]
            assert made.operation.id in [s.operation.operation.id for s in overview.stuck]
            with pytest.raises(opsd.InvalidArgument):
                await client.overview(oldest=-1)

    asyncio.run(main())
