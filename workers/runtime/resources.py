"""What the stage loops of one worker process share, released when the process stops."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from redis.asyncio import Redis

from workers.runtime.continuous import engine_thread
from workers.runtime.metrics import WorkerMetrics


@dataclass
class WorkerResources:
    """Shared by every stage a process runs (one with ``capstream worker``, all with ``run``).

    One engine thread for every in-process vLLM engine: vLLM's forward context and parallel
    groups are process-global, so two engines must never run at the same time.
    """

    engine_executor: ThreadPoolExecutor = field(default_factory=engine_thread)
    redis_clients: list[Redis] = field(default_factory=list)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    def redis(self, url: str) -> Redis:
        client = Redis.from_url(url)
        self.redis_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.redis_clients:
            await client.aclose()
        self.engine_executor.shutdown(wait=False, cancel_futures=True)
