"""Index faults against real stores: a stopped S3 store is waited out, a bad row fails alone.

The outage is real: the test starts its own SeaweedFS (the session stack's also holds other
tests' data), indexes into it, stops it, and starts it again on the same ports and data. The
bad row is one the wire schema accepts and the table cannot hold (a ``segment_index`` over
int32): pyarrow refuses it while converting the batch, before any store call.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_index_stage import (
    _async,
    committed,
    emb,
    eventually,
    index_settings,
    index_worker,
    produce_embeddings,
    table_rows,
)
from workers.index.faults import UNWRITABLE_ROW
from workers.localstack import StackEndpoints
from workers.localstack.processes import ManagedProcess, free_port
from workers.localstack.readiness import wait_for_s3
from workers.localstack.services import start_seaweedfs, stop_process
from workers.runtime.kafka import ensure_topics
from workers.state.dead_letter_log import read_letters

pytestmark = pytest.mark.integration


class OwnS3:
    """A SeaweedFS of this test's own, stopped and started again on the same ports and data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.keys = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        self.process: ManagedProcess | None = None
        self.ports: dict[str, int] = {}
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> None:
        port = self.ports.get("s3") or free_port()
        self.process = start_seaweedfs(
            self.data_dir, port, access_key=self.keys[0], secret_key=self.keys[1], ports=self.ports or None
        )
        self.ports = dict(self.process.ports)
        wait_for_s3(self.endpoint, *self.keys, ["media"], process=self.process)

    def stop(self) -> None:
        assert self.process is not None
        stop_process(self.process)
        self.process = None


@pytest.fixture
def own_s3(stack_env: StackEndpoints, tmp_path: Path) -> Iterator[OwnS3]:
    s3 = OwnS3(tmp_path / "own-s3")
    try:
        yield s3
    finally:
        if s3.process is not None:
            s3.stop()


async def test_a_stopped_store_is_waited_out_without_spending_retries_and_the_worker_resumes(
    own_s3: OwnS3, unique: str, tmp_path: Path
) -> None:
    settings = index_settings("s3", unique, tmp_path, s3_endpoint_url=own_s3.endpoint)
    await ensure_topics(settings, [settings.topic_embeddings, f"{settings.topic_embeddings}.dlq"])
    before = [emb("before.mp4", "10", i) for i in range(3)]
    during = [emb("during.mp4", "10", i) for i in range(3)]
    await produce_embeddings(settings, before)
    async with index_worker(settings, removals=False) as (loop,):
        await eventually(lambda: _async(committed(loop) == 3), timeout_s=60, what="rows before the outage")
        await asyncio.to_thread(own_s3.stop)
        await produce_embeddings(settings, during)
        # Each try of the three records fails on the store and on the probe: it waits.
        await eventually(lambda: _async(loop.metrics.outage_waits >= 6), timeout_s=90, what="outage waits")
        assert committed(loop) == 3, "nothing is committed while the store is down"
        assert loop.metrics.retries == 0 and loop.metrics.dead_letters == 0, "an outage spends no retries"
        await asyncio.to_thread(own_s3.start)
        await eventually(lambda: _async(committed(loop) == 6), timeout_s=90, what="resumed after the store came back")
        assert loop.metrics.retries == 0 and loop.metrics.dead_letters == 0
    assert {r["segment_id"] for r in await table_rows(settings)} == {e.segment_id for e in before + during}
    assert [s for s in await read_letters(settings) if s.letter.stage == "index"] == []


async def test_one_unwritable_row_is_dead_lettered_and_its_batch_mates_are_indexed(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings = index_settings("local", unique, tmp_path, index_batch_age_s=1.0)
    await ensure_topics(settings, [settings.topic_embeddings, f"{settings.topic_embeddings}.dlq"])
    good = [emb(f"good{o}.mp4", "10", i) for o in range(3) for i in range(3)]
    # Valid on the wire (segment_index >= 0), too large for the table's int32 column.
    bad = emb("bad.mp4", "10", 0).model_copy(update={"segment_index": 2**40})
    await produce_embeddings(settings, [*good[:4], bad, *good[4:]])  # all waiting before the worker starts
    async with index_worker(settings, removals=False) as (loop,):
        await eventually(lambda: _async(committed(loop) == len(good) + 1), what="every record finished")
        assert loop.metrics.retries == 0, "the bad row is found without retrying its batch-mates"
    letters = [s.letter for s in await read_letters(settings) if s.letter.stage == "index"]
    assert [(x.reason, x.kind, x.attempts, x.segment_id, x.object_id) for x in letters] == [
        (UNWRITABLE_ROW, "permanent", 1, bad.segment_id, bad.object_id)
    ]
    assert "ArrowInvalid" in letters[0].message
    assert {r["segment_id"] for r in await table_rows(settings)} == {g.segment_id for g in good}
