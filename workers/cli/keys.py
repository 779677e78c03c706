"""``capstream keys`` (API keys of ``capstream serve``) and ``capstream collections``."""

from __future__ import annotations

import argparse
import json
import sys

from redis.asyncio import Redis

from workers.access.api_keys import ApiKey, ApiKeyStore
from workers.settings import CommonSettings
from workers.state import RedisKeys


def _line(key: ApiKey) -> str:
    revoked = f"  revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
    return (
        f"{key.key_id}  {key.name or '-':<16} {','.join(key.collections):<24} "
        f"created {key.created_at:%Y-%m-%d %H:%M}{revoked}"
    )


async def cmd_keys(action: str, args: argparse.Namespace) -> int:
    settings = CommonSettings()
    redis = Redis.from_url(settings.redis_url)
    store = ApiKeyStore(redis, RedisKeys(settings.key_prefix))
    try:
        if action == "create":
            known = settings.collection_rules().names
            unknown = sorted(set(args.collection) - set(known))
            if unknown:
                sys.stderr.write(
                    f"capstream keys: no collection {', '.join(unknown)} (configured: {', '.join(known)})\n"
                )
                return 2
            key, token = await store.create(args.collection, args.name)
            if args.json:
                print(json.dumps({**key.model_dump(mode="json"), "token": token}, indent=2))
            else:
                print(token)
                sys.stderr.write(f"{_line(key)}\nThe token is shown only now; capstream keeps a hash of it.\n")
            return 0
        if action == "list":
            keys = await store.all()
            if args.json:
                print(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
            else:
                for k in keys:
                    print(_line(k))
            return 0
        if action == "revoke":
            if not await store.revoke(args.key_id):
                sys.stderr.write(f"capstream keys: no key {args.key_id}\n")
                return 1
            print(f"revoked {args.key_id}")
            return 0
        raise AssertionError(action)
    finally:
        await redis.aclose()


def cmd_collections(as_json: bool) -> int:
    rules = CommonSettings().collection_rules()
    if as_json:
        print(json.dumps(rules.model_dump(mode="json"), indent=2))
        return 0
    if not rules.configured:
        print("default  *  (no collections configured: every source)")
    for c in rules.collections if rules.configured else []:
        print(f"{c.name}  {', '.join(str(s) for s in c.sources)}")
    return 0
