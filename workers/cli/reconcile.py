"""``capstream reconcile``: rebuild Redis (claims, done markers, progress, result view,
sequencers) from the topics after Redis lost its data (``workers.state.reconcile``)."""

from __future__ import annotations

import json
from dataclasses import asdict

from redis.asyncio import Redis

from workers.settings import DecodeSettings
from workers.state.reconcile import Reconciler


async def cmd_reconcile(as_json: bool) -> int:
    settings = DecodeSettings()
    redis = Redis.from_url(settings.redis_url)
    try:
        counts = await Reconciler(settings, redis).run()
    finally:
        await redis.aclose()
    if as_json:
        print(json.dumps(asdict(counts)))
    else:
        print("reconcile: " + " ".join(f"{k}={v}" for k, v in asdict(counts).items()))
    return 0
