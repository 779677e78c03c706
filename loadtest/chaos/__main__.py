"""Chaos run: measure what crashes cost, not just whether outputs exist.

    python -m loadtest.chaos [--objects N] [--rate R] [--kills K] [--wipe-redis]
                             [--seconds S] [--seed N] [--keep]

Starts a private stack (durable broker), one ``capstream worker`` process per stage (decode
twice, caption, embed, index), submits N objects (montages, clips, stills, ~10% poison) at R
per second and meanwhile: ``kill -9``s K workers that have records in flight (restarting each
at once), restarts Redis with SIGTERM, kills the broker and Redis with -9 while segments are
in flight (``--wipe-redis``: Redis comes back empty and ``capstream reconcile`` runs), and
re-publishes the events and records of ~10% of the finished objects. Every worker's
``/metrics`` is scraped every 0.3 s and right before its kill. See ``verifier`` for what is
counted and bounded.

The last line is ``chaos: objects=N segments=N kills=N inflight_kills=N restarts=N lost=N
duplicate_outputs=N redone_work=N boundary_errors=N``. The exit status is non-zero when
anything is lost, a boundary is off, duplicate outputs or redone work exceed what the kills
allow, or the run hit ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio

from loadtest.chaos.run import run
from workers.runtime.logging import configure_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.5, help="objects submitted per second")
    parser.add_argument("--kills", type=int, default=None, help="worker kills (default: objects / 6, at least 4)")
    parser.add_argument("--wipe-redis", action="store_true", help="Redis loses its data; capstream reconcile runs")
    parser.add_argument("--seconds", type=float, default=1800.0, help="bound on the whole run")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds for the workers to start")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep data and logs even on success")
    args = parser.parse_args(argv)
    if args.objects < 2:
        parser.error("--objects must be at least 2")
    if args.kills is None:
        args.kills = max(4, args.objects // 6)
    return args


def main(argv: list[str] | None = None) -> int:
    configure_logging("INFO", "console")  # logs on stderr: stdout ends with the figures line
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
