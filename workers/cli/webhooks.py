"""``capstream webhooks``: register, list and remove the webhooks the webhooks stage posts to."""

from __future__ import annotations

import argparse
import json
import sys

from redis.asyncio import Redis

from schemas.outcome import WEBHOOK_EVENTS, WebhookEvent
from workers.runtime.outbound import public_uri, url_refusal
from workers.settings import CommonSettings
from workers.state import RedisKeys
from workers.webhooks.store import Webhook, WebhookStore


def _line(hook: Webhook) -> str:
    return (
        f"{hook.webhook_id}  {public_uri(hook.url)}  {','.join(hook.collections)}  {','.join(hook.events)}  "
        f"created {hook.created_at:%Y-%m-%d %H:%M}"
    )


def _shown(hook: Webhook) -> dict[str, object]:
    return hook.model_dump(mode="json", exclude={"secret"}) | {"url": public_uri(hook.url)}


def _problem(args: argparse.Namespace, settings: CommonSettings) -> str | None:
    if refusal := url_refusal(args.url):
        return refusal
    known = settings.collection_rules().names
    if unknown := sorted(set(args.collection) - set(known)):
        return f"no collection {', '.join(unknown)} (configured: {', '.join(known)})"
    if bad := [e for e in args.events.split(",") if e.strip() not in WEBHOOK_EVENTS]:
        return f"unknown event {', '.join(bad)} (events: {', '.join(WEBHOOK_EVENTS)})"
    return None


async def cmd_webhooks(action: str, args: argparse.Namespace) -> int:
    settings = CommonSettings()
    redis = Redis.from_url(settings.redis_url)
    store = WebhookStore(redis, RedisKeys(settings.key_prefix))
    try:
        if action == "add":
            if problem := _problem(args, settings):
                sys.stderr.write(f"capstream webhooks: {problem}\n")
                return 2
            events: list[WebhookEvent] = [e.strip() for e in args.events.split(",")]
            hook = await store.add(args.url, args.collection, events)
            if args.json:
                print(json.dumps(_shown(hook) | {"secret": hook.secret}, indent=2))
            else:
                print(hook.secret)
                sys.stderr.write(
                    f"{_line(hook)}\nThe signing secret is shown only now: check each POST's "
                    "Capstream-Signature with it.\n"
                )
            return 0
        if action == "list":
            hooks = await store.all()
            if args.json:
                print(json.dumps([_shown(h) for h in hooks], indent=2))
            else:
                for h in hooks:
                    print(_line(h))
            return 0
        if action == "remove":
            if not await store.remove(args.webhook_id):
                sys.stderr.write(f"capstream webhooks: no webhook {args.webhook_id}\n")
                return 1
            print(f"removed {args.webhook_id}")
            return 0
        raise AssertionError(action)
    finally:
        await redis.aclose()
