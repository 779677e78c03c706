"""``capstream`` entry point: argument parsing and dispatch, nothing else."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.cli.home import StackNotRunning, stack_home, use_running_stack
from workers.runtime.logging import configure_logging
from workers.settings import CommonSettings
from workers.stages import REGISTRY, StageRegistry


def build_parser(registry: StageRegistry = REGISTRY) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capstream", description="Media in object storage -> timestamped, searchable captions."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack (broker, redis, S3) in the background")
    up.add_argument("--durable", action="store_true", help="keep Kafka data in the local S3 store")
    sub.add_parser("down", help="stop the local stack")

    run = sub.add_parser(
        "run", help="run all stages in one process (laptop mode; with the event bridge if the stack has it)"
    )
    worker = sub.add_parser("worker", help="run one stage (scale-out mode)")
    worker.add_argument("stage", choices=registry.names())
    for p in (run, worker):
        p.add_argument(
            "--offline",
            action="store_true",
            help="use the offline CPU models (tiny Qwen3-VL, all-MiniLM-L6-v2) unless env says otherwise",
        )

    sb = sub.add_parser("submit", help="upload media and publish ObjectCreated events")
    sb.add_argument("paths", nargs="+", type=Path)
    sb.add_argument("--wait", action="store_true", help="show progress until every object finishes")
    sb.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (with --wait)")

    st = sub.add_parser("status", help="progress of one object or the most recent ones")
    st.add_argument("object_id", nargs="?")
    st.add_argument("--json", action="store_true")

    rs = sub.add_parser("results", help="segments, captions and embedding info of an object")
    rs.add_argument("object_id")
    rs.add_argument("--json", action="store_true")

    pe = sub.add_parser("parse-event", help="normalise an event (file or - for stdin)")
    pe.add_argument("source")

    sg = sub.add_parser("segments", help="segments and frame times a file would produce (no Kafka)")
    sg.add_argument("file", type=Path)
    sg.add_argument("--json", action="store_true", help="list of {start_s, end_s, reason, frame_pts}")

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters")
    dlq.add_argument("action", choices=["list", "show", "replay"])
    dlq.add_argument("refs", nargs="*", help="<dlq topic>/<partition>/<offset> as printed by `dlq list`")
    dlq.add_argument("--stage", choices=registry.consumer_names(), help="the stage (consumer) that dead-lettered")
    dlq.add_argument("--reason", help="only dead letters with this reason code")
    dlq.add_argument("--json", action="store_true")

    se = sub.add_parser("search", help="search the index: captions by meaning (vector) and words (BM25)")
    se.add_argument("q", metavar="QUERY")
    se.add_argument("--k", type=int, help="hits to return (default CAPSTREAM_SEARCH_K)")
    se.add_argument("--mode", choices=["hybrid", "vector", "text"], help="default CAPSTREAM_SEARCH_MODE (hybrid)")
    se.add_argument("--bucket", help="only objects in this bucket")
    se.add_argument("--prefix", help="only keys starting with this")
    se.add_argument("--object", dest="object_id", help="only this object id")
    se.add_argument("--per-object", type=int, help="most hits from one object (default CAPSTREAM_SEARCH_PER_OBJECT)")
    se.add_argument(
        "--modality", choices=["visual", "speech", "page"], help="only captions (visual), what was said, or pages"
    )
    se.add_argument(
        "--no-merge", dest="merge", action="store_false", help="keep a caption and the speech of its moment apart"
    )
    se.add_argument(
        "--level",
        choices=["segment", "object"],
        default="segment",
        help="rank moments (default), or whole objects with their summaries and chapters",
    )
    se.add_argument("--json", action="store_true", help="list of {object_id, segment_id, uri, ..., score}")
    ak = sub.add_parser("ask", help="answer a question from the index's moments, citing them (the caption model)")
    ak.add_argument("question", metavar="QUESTION")
    ak.add_argument("--k", type=int, help="moments to retrieve (default CAPSTREAM_ASK_K)")
    ak.add_argument("--object", dest="object_id", help="only this object id")
    ak.add_argument("--bucket", help="only objects in this bucket")
    ak.add_argument("--prefix", help="only keys starting with this")
    ak.add_argument("--json", action="store_true", help="the answer, its citations, every moment and the timings")
    sv = sub.add_parser("serve", help="HTTP search API and page (FastAPI)")
    sv.add_argument("--host", help="default CAPSTREAM_SERVE_HOST (127.0.0.1)")
    sv.add_argument("--port", type=int, help="default CAPSTREAM_SERVE_PORT (8686)")
    sv.add_argument(
        "--no-auth", action="store_true", help="no API keys: every caller sees everything (loopback addresses only)"
    )
    ky = sub.add_parser("keys", help="API keys of `capstream serve`: create, list, revoke")
    ky_sub = ky.add_subparsers(dest="keys_action", required=True)
    ky_create = ky_sub.add_parser("create", help="a new key for some collections (its token is shown once)")
    ky_create.add_argument("--collection", action="append", required=True, help="repeat for several")
    ky_create.add_argument("--name", default="", help="what the key is for")
    ky_sub.add_parser("list", help="every key: id, name, collections, created, revoked")
    ky_revoke = ky_sub.add_parser("revoke", help="revoke a key (takes effect on its next request)")
    ky_revoke.add_argument("key_id")
    for p in (ky_create, ky_sub.choices["list"], ky_revoke):
        p.add_argument("--json", action="store_true")
    wh = sub.add_parser("webhooks", help="signed POSTs when objects become done or failed: add, list, remove")
    wh_sub = wh.add_subparsers(dest="webhooks_action", required=True)
    wh_add = wh_sub.add_parser("add", help="a new webhook (its signing secret is shown once)")
    wh_add.add_argument("url", help="http(s) URL to POST to")
    wh_add.add_argument("--collection", action="append", required=True, help="repeat for several")
    wh_add.add_argument(
        "--events", default="object.done,object.failed", help="comma-separated: object.done, object.failed"
    )
    wh_sub.add_parser("list", help="every webhook: id, URL, collections, events (no secrets)")
    wh_remove = wh_sub.add_parser("remove", help="remove a webhook (from its next outcome on)")
    wh_remove.add_argument("webhook_id")
    for p in (wh_add, wh_sub.choices["list"], wh_remove):
        p.add_argument("--json", action="store_true")
    mc = sub.add_parser(
        "mcp", help="agent tools over MCP (stdio): search and object status, as the key in CAPSTREAM_API_KEY"
    )
    mc.add_argument("--url", default="http://127.0.0.1:8686", help="the capstream serve to ask")
    co = sub.add_parser("collections", help="the configured collections and their sources")
    co.add_argument("--json", action="store_true")
    for p in (se, sv, ak):
        p.add_argument("--offline", action="store_true", help="embed queries with the offline CPU model (MiniLM)")

    ri = sub.add_parser("reindex", help="rebuild the search index from the embeddings and removals topics")
    ri.add_argument(
        "--from-scratch",
        action="store_true",
        help="build a new table from the topics, check it holds every row, then switch to it",
    )
    ri.add_argument("--model", help="only embeddings of this embedding model (e.g. after a model change)")
    ri.add_argument("--json", action="store_true")

    rc = sub.add_parser(
        "reconcile", help="rebuild Redis (claims, done markers, progress, results) from the topics after a data loss"
    )
    rc.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", help="run the whole pipeline offline on sample media")
    demo.add_argument("paths", nargs="*", type=Path)
    demo.add_argument("--json", action="store_true")
    demo.add_argument("--timeout", type=float, default=600.0)
    demo.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(argv)
    except StackNotRunning as exc:
        sys.stderr.write(f"capstream: {exc}\n")
        return 1
    except (KafkaConnectionError, RedisConnectionError) as exc:
        # No running stack or wrong endpoints: say so in one line instead of a traceback.
        service = "Kafka" if isinstance(exc, KafkaConnectionError) else "Redis"
        sys.stderr.write(
            f"capstream: cannot reach {service}: {exc} "
            "(start a stack with `capstream up`, or set CAPSTREAM_KAFKA_BOOTSTRAP / CAPSTREAM_REDIS_URL)\n"
        )
        return 1


def _dispatch(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    settings = CommonSettings()
    configure_logging(settings.log_level, "console" if sys.stderr.isatty() else settings.log_format)
    cmd = args.command

    if cmd == "up":
        from workers.localstack import StackError, revive_stack, start_stack, stop_stack

        home = stack_home()
        try:
            endpoints = revive_stack(home)
        except StackError as exc:  # e.g. a recorded port was taken meanwhile: start afresh
            sys.stderr.write(f"capstream: could not restart the recorded stack ({exc}); starting a new one\n")
            stop_stack(home)
            endpoints = None
        endpoints = endpoints or start_stack(home, durable_kafka=args.durable)
        shown = endpoints.env()
        # The secret stays in the owner-only stack file; other commands read it from there.
        shown["AWS_SECRET_ACCESS_KEY"] = f"<in {home / 'stack.json'}>"
        print(json.dumps(shown, indent=2))
        return 0
    if cmd == "down":
        from workers.localstack import stop_stack

        stopped = stop_stack(stack_home())
        print("stopped" if stopped else "nothing was running")
        return 0
    if cmd == "parse-event":
        from workers.cli.inspect import cmd_parse_event

        return cmd_parse_event(args.source)
    if cmd == "segments":
        from workers.cli.segments import cmd_segments

        return cmd_segments(args.file, args.json)
    if cmd == "mcp":
        from workers.agent_tools.server import run_stdio

        run_stdio(args.url, os.environ.get("CAPSTREAM_API_KEY"))
        return 0
    if cmd == "collections":
        from workers.cli.keys import cmd_collections

        return cmd_collections(args.json)
    if cmd == "demo":
        from workers.cli.demo import cmd_demo

        return cmd_demo(args.paths, args.json, args.timeout, args.keep)

    use_running_stack()
    if cmd in ("run", "worker"):
        from workers.app import run_stages

        _offline_env(args.offline)
        asyncio.run(run_stages(REGISTRY.laptop_stages() if cmd == "run" else (args.stage,)))
        return 0
    if cmd == "submit":
        return asyncio.run(_submit(args.paths, args.wait, args.timeout))
    if cmd == "status":
        from workers.cli.inspect import cmd_status

        return asyncio.run(cmd_status(args.object_id, args.json))
    if cmd == "dlq":
        from workers.cli.dlq import cmd_dlq

        return asyncio.run(cmd_dlq(args.action, args.refs, args.stage, args.reason, args.json))
    if cmd == "reindex":
        from workers.cli.reindex import cmd_reindex

        return asyncio.run(cmd_reindex(args.from_scratch, args.model, args.json))
    if cmd == "reconcile":
        from workers.cli.reconcile import cmd_reconcile

        return asyncio.run(cmd_reconcile(args.json))
    if cmd == "keys":
        from workers.cli.keys import cmd_keys

        return asyncio.run(cmd_keys(args.keys_action, args))
    if cmd == "webhooks":
        from workers.cli.webhooks import cmd_webhooks

        return asyncio.run(cmd_webhooks(args.webhooks_action, args))
    if cmd == "results":
        from workers.cli.inspect import cmd_results

        return asyncio.run(cmd_results(args.object_id, args.json))
    if cmd == "ask":
        from workers.cli.ask import cmd_ask

        _offline_env(args.offline)
        return asyncio.run(cmd_ask(args.question, args.json, args.k, args.object_id, args.bucket, args.prefix))
    if cmd == "search":
        from workers.cli.search import cmd_search

        _offline_env(args.offline)
        return asyncio.run(
            cmd_search(
                args.q,
                args.json,
                args.level,
                k=args.k,
                mode=args.mode,
                bucket=args.bucket,
                prefix=args.prefix,
                object_id=args.object_id,
                per_object=args.per_object,
                modality=args.modality,
                merge=args.merge,
            )
        )
    if cmd == "serve":
        from workers.cli.search import cmd_serve

        _offline_env(args.offline)
        return cmd_serve(args.host, args.port, args.no_auth)
    raise AssertionError(cmd)


def _offline_env(offline: bool) -> None:
    """``--offline``: the offline CPU models, unless the environment names others."""
    if offline:
        from workers.offline_profile import offline_env

        for key, value in offline_env().items():
            os.environ.setdefault(key, value)


async def _submit(paths: list[Path], wait: bool, timeout_s: float) -> int:
    from workers.cli.submit import submit, wait_for
    from workers.settings import S3Settings

    settings = S3Settings()
    submitted = await submit(paths, settings)
    for s in submitted:
        print(f"{s.object_id}  s3://{settings.s3_bucket}/{s.key}")
    if not wait:
        return 0
    states = await wait_for(
        [s.object_id for s in submitted], {s.object_id: s.key for s in submitted}, settings, timeout_s
    )
    return 0 if all(p is not None and p.state.value == "done" for p in states.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
