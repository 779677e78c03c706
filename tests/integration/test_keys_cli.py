"""``capstream keys`` and ``capstream collections`` against the test stack's Redis: a token is
printed once and stored only hashed, a revoked key no longer verifies, unknown collections are
refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest
from redis.asyncio import Redis

from workers.access.api_keys import ApiKeyStore
from workers.localstack import StackEndpoints
from workers.state import RedisKeys

pytestmark = pytest.mark.integration

RULES = "news=media/news/;talks=media/talks/"


def _capstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def _stored(redis_url: str, prefix: str, token: str) -> tuple[bytes, bool]:
    redis = Redis.from_url(redis_url)
    try:
        store = ApiKeyStore(redis, RedisKeys(prefix))
        key_id = token.split("_")[1]
        dump = b"".join(v for v in (await redis.hgetall(RedisKeys(prefix).api_key(key_id))).values())
        return dump, await store.verify(token) is not None
    finally:
        await redis.aclose()


def test_keys_create_list_revoke(stack: StackEndpoints) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPSTREAM_", "AWS_"))}
    env |= stack.env() | {"CAPSTREAM_KEY_PREFIX": prefix, "CAPSTREAM_COLLECTIONS": RULES}

    listed = _capstream(env, "collections", "--json")
    assert [c["name"] for c in json.loads(listed.stdout)["collections"]] == ["news", "talks"]

    refused = _capstream(env, "keys", "create", "--collection", "sports")
    assert refused.returncode == 2 and "no collection sports" in refused.stderr

    made = _capstream(env, "keys", "create", "--collection", "news", "--collection", "talks", "--name", "newsroom")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("csk_") and "shown only now" in made.stderr
    dump, valid = asyncio.run(_stored(stack.redis_url, prefix, token))
    assert valid and token.split("_", 2)[2].encode() not in dump  # only a hash of the secret is kept

    keys = json.loads(_capstream(env, "keys", "list", "--json").stdout)
    assert [(k["name"], k["collections"], k["revoked_at"]) for k in keys] == [("newsroom", ["news", "talks"], None)]
    assert "token" not in keys[0] and token not in json.dumps(keys)

    assert _capstream(env, "keys", "revoke", keys[0]["key_id"]).returncode == 0
    assert asyncio.run(_stored(stack.redis_url, prefix, token))[1] is False
    assert json.loads(_capstream(env, "keys", "list", "--json").stdout)[0]["revoked_at"]
    assert _capstream(env, "keys", "revoke", "0123456789abcdef").returncode == 1
