"""Whether the chaos run itself can be trusted, apart from what the pipeline produced.

The verifier's counts mean something only if the run measured what it claims: every
consumer had reached lag 0 with nothing in flight before anything was counted (else records
still on their way look lost, and their redone work uncounted); every worker stopped with exit
status 0 (a worker that crashed on its own, or would not drain, is a fault the counts cannot
show); the quiet replay at the end caused no model call at all, counted from the metrics
(skipped records alone do not prove that none went to the model); and each kill's bound was
measured, not guessed. A scrape that failed right before a kill leaves that kill's in-flight
count unknown: the run reports it instead of reusing an older scrape. A Redis ``kill -9`` with
``appendfsync everysec`` loses up to ``AOF_LOSS_S`` of writes (Redis writes the append-only file
each second), so the done markers and claims of the records finished in that last second (and
of those in flight) may be gone: each such record may be done once more. The run counts them
over a window of at least ``AOF_LOSS_S`` ending at the kill; a shorter window fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

AOF_LOSS_S = 1.0  # appendfsync everysec: the writes of up to the last second die with the process
REDIS_KILL = "redis"  # Kill.target of a Redis kill -9 (append-only file kept, not wiped)


@dataclass(frozen=True)
class Kill:
    """A kill -9 (of a worker, the broker or Redis) and the records it may cost per stage."""

    target: str  # worker name, "broker" or REDIS_KILL
    in_flight: dict[str, int]  # stage -> records in flight right before the signal
    at_s: float = 0.0
    # Redis kill -9: stage -> records finished in the `window_s` before it (markers maybe lost).
    finished: dict[str, int] = field(default_factory=dict)
    window_s: float | None = None
    unscraped: tuple[str, ...] = ()  # workers whose scrape right before the kill failed


@dataclass
class RunFacts:
    """How the run went, as the run observed it."""

    settled: bool = False  # lag 0 and nothing in flight before the count, and after the replay
    exit_codes: dict[str, int | None] = field(default_factory=dict)  # worker -> status at the final SIGTERM
    replay_records: int = 0  # events and records re-published by the quiet replay
    replay_consumed: bool = False  # every one of them was taken and finished by its stage
    replay_model_calls: dict[str, int] | None = None  # stage -> model calls during the quiet replay
    replay_unscraped: tuple[str, ...] = ()  # workers a scrape of the quiet replay failed for


def kill_bounds(kills: Iterable[Kill]) -> dict[str, int]:
    """Per stage, the records each kill may cost summed over the kills that hit it: those in
    flight, and for a Redis kill -9 also those whose markers fell in its lost second."""
    bound: Counter[str] = Counter()
    for kill in kills:
        bound.update({stage: n for stage, n in kill.in_flight.items() if n > 0})
        bound.update({stage: n for stage, n in kill.finished.items() if n > 0})
    return dict(bound)


def run_problems(facts: RunFacts, kills: Iterable[Kill]) -> list[str]:
    """What makes the run's counts untrustworthy; each one fails the verdict."""
    problems: list[str] = []
    if not facts.settled:
        problems.append("never settled: consumer lag or records in flight were not 0 when counted")
    if not facts.exit_codes:
        problems.append("no worker exit status recorded")
    problems += [f"worker {name} exited with {code}" for name, code in facts.exit_codes.items() if code != 0]
    problems += _replay_problems(facts)
    for kill in kills:
        if kill.unscraped:
            problems.append(f"{kill.target} kill: scrape of {', '.join(kill.unscraped)} failed right before it")
        if kill.target == REDIS_KILL and (kill.window_s is None or kill.window_s < AOF_LOSS_S):
            problems.append(
                f"redis kill -9: finished records counted over {kill.window_s}s, "
                f"but appendfsync everysec may lose the last {AOF_LOSS_S}s"
            )
    return problems


def _replay_problems(facts: RunFacts) -> list[str]:
    if facts.replay_model_calls is None:
        return ["no quiet replay was counted"]
    problems = [] if facts.replay_records else ["the quiet replay re-published nothing"]
    if facts.replay_records and not facts.replay_consumed:
        problems.append("the quiet replay's records were not all taken and finished")
    if facts.replay_unscraped:
        problems.append(f"quiet replay: scrape of {', '.join(facts.replay_unscraped)} failed, its calls unknown")
    problems += [
        f"{stage}: {n} model calls for replayed records (must be 0)"
        for stage, n in facts.replay_model_calls.items()
        if n
    ]
    return problems
