"""The chaos verdict: pure data in (ground truth, what the topics, the index, the result view
and the metrics say, which kills hit which work), figures and problems out.

No services: `tests/unit/test_chaos_verifier.py` plants each fault the run must catch (a
dropped embedding, a duplicated output, a stage that ignores its done marker, a shifted
boundary) into otherwise clean data and checks the verdict fails.

What counts, and the bound each figure must stay under:

- ``lost``: a segment of a good object with no embedding record, no index row or no row in
  the result view (``capstream results``); a speech chunk of a good object with no transcript,
  no embedding, no index row or no result row; a voice the truth put in an object that no
  speech chunk covers, a chunk number skipped; a good object not ``done``, a poison object not
  ``failed`` or without its dead letter, count one each. Bound: 0.
- ``duplicate_outputs``: records beyond one per segment on a stage's output topic (the copies
  the run re-published itself are subtracted), index rows beyond one per segment, dead letters
  beyond one per poison object. At-least-once delivery allows a copy for each record a killed
  worker had in flight (its output may have been acknowledged before the kill landed), so per
  stage the bound is the sum of in-flight records over the kills that hit it (worker kills,
  and the broker kill for every stage). Decode re-cuts a whole object, so its bound is in
  objects: objects with a duplicated segment or dead letter <= decode's in-flight sum. Index
  rows are upserts on ``segment_id``: bound 0.
- ``redone_work``: per model stage (caption, transcribe, embed: every stage served by a model,
  read from the registry), model calls beyond one per segment or chunk that reached the stage;
  calls are the larger of the metrics' count (per process, last scrape) and the output records
  per segment (a call that ended in a record is a call; an unscraped one is not lost from the
  count that way). Same bound as duplicates: a redone call needs a record that was in flight.
- ``boundary_errors``: per good object, each segment whose start or end is off the truth by
  more than ``tolerance_s`` (half a frame), plus every segment too many or too few; each voice
  whose chunk starts or ends more than ``speech_tolerance_s`` inside it (the detector pads a
  chunk, so the chunk may reach further out, never in), and each chunk that covers no voice.

Speech chunks and their transcripts and embeddings are told from visual segments by their ids
(``schemas.ids.speech_segment_id``): decode's outputs are its segments and its chunks, embed's
are both kinds' embeddings, and the index holds rows of both.

A Redis ``kill -9`` also allows a repeat for each record finished in its last second (lost
markers, ``conduct.AOF_LOSS_S``). Whether the run itself can be trusted (settled, clean exits,
a quiet replay with zero model calls, kills measured) is ``conduct.run_problems``: each such
problem fails the verdict too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from loadtest.chaos.conduct import Kill, RunFacts, kill_bounds, run_problems
from schemas.ids import segment_id, speech_segment_id
from workers.settings import CommonSettings, ModelStageSettings
from workers.stages import REGISTRY, StageRegistry


def model_stages(registry: StageRegistry = REGISTRY) -> tuple[str, ...]:
    """The stages served by a model (their settings are a ``ModelStageSettings``)."""
    return tuple(s.name for s in registry if issubclass(s.settings, ModelStageSettings))


def loops_of(stage: str, registry: StageRegistry = REGISTRY) -> tuple[str, ...]:
    """The consumer loops of a stage: the ``stage`` label of their metrics (embed has two)."""
    return tuple(c.name for c in registry[stage].consumers)


MODEL_STAGES = model_stages()
# The stages that write one record per segment (or speech chunk) to a topic (index writes rows).
TOPIC_STAGES = tuple(REGISTRY.progress_stages())


def segment_topics(settings: CommonSettings, registry: StageRegistry = REGISTRY) -> list[tuple[str, str]]:
    """(stage, topic) of every topic holding one record per segment or speech chunk: each
    stage's progress topic and every other output a model stage consumes (decode's speech
    chunks), with the stage that writes it."""
    model_inputs = {c.topic_field for s in registry if s.name in model_stages(registry) for c in s.consumers}
    return [
        (spec.name, getattr(settings, name))
        for spec in registry
        if spec.progress is not None
        for i, name in enumerate(spec.output_fields)
        if i == 0 or name in model_inputs
    ]


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float


@dataclass(frozen=True)
class TruthObject:
    """One submitted object: its segments from the cut times it was generated with."""

    name: str
    object_id: str
    poison: bool
    segments: tuple[Span, ...] = ()
    tolerance_s: float = 0.05
    speech: tuple[Span, ...] = ()  # where a voice speaks (each should be one speech chunk's)
    speech_tolerance_s: float = 0.3


@dataclass(frozen=True)
class SeenSegment:
    """One record about one segment, as read from a topic, the index or the result view."""

    object_id: str
    segment_id: str
    segment_index: int
    start_s: float
    end_s: float

    @property
    def is_speech(self) -> bool:
        """A speech chunk's record (chunk, transcript, its embedding or index row), by its id."""
        return self.segment_id == speech_segment_id(self.object_id, self.segment_index)


@dataclass
class Observed:
    outputs: dict[str, list[SeenSegment]] = field(default_factory=dict)  # stage -> its output topic's records
    injected: dict[str, Counter[str]] = field(default_factory=dict)  # stage -> segment_id -> copies we re-published
    index_rows: list[SeenSegment] = field(default_factory=list)
    results: dict[str, list[str]] = field(default_factory=dict)  # object_id -> segment ids in `capstream results`
    states: dict[str, str] = field(default_factory=dict)  # object_id -> progress state
    dead_letters: Counter[str] = field(default_factory=Counter)  # object_id -> dead letters for it
    model_calls: dict[str, int] = field(default_factory=dict)  # stage -> calls counted by the metrics
    kills: list[Kill] = field(default_factory=list)
    run: RunFacts = field(default_factory=RunFacts)


@dataclass
class Verdict:
    objects: int = 0
    segments: int = 0
    speech_chunks: int = 0
    lost: int = 0
    duplicate_outputs: int = 0
    redone_work: int = 0
    boundary_errors: int = 0
    duplicates_by_stage: dict[str, int] = field(default_factory=dict)
    redone_by_stage: dict[str, int] = field(default_factory=dict)
    bound_by_stage: dict[str, int] = field(default_factory=dict)  # in-flight records at the kills
    redecoded_objects: int = 0
    problems: list[str] = field(default_factory=list)
    run_problems: list[str] = field(default_factory=list)  # the run itself untrustworthy (conduct)

    @property
    def bounds_exceeded(self) -> list[str]:
        over = [
            f"{stage}: {what} {n} > bound {self.bound(stage)}"
            for what, figures in (
                ("duplicate_outputs", self.duplicates_by_stage),
                ("redone_work", self.redone_by_stage),
            )
            for stage, n in figures.items()
            if stage != "decode" and n > self.bound(stage)
        ]
        if self.redecoded_objects > self.bound("decode"):
            over.append(f"decode: redecoded_objects {self.redecoded_objects} > bound {self.bound('decode')}")
        return over

    def bound(self, stage: str) -> int:
        """What the kills allow the stage; an index row is an upsert, so no kill allows a copy."""
        return 0 if stage == "index" else self.bound_by_stage.get(stage, 0)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.boundary_errors == 0 and not self.bounds_exceeded and not self.run_problems


def _by_segment(records: Iterable[SeenSegment]) -> dict[str, list[SeenSegment]]:
    found: dict[str, list[SeenSegment]] = defaultdict(list)
    for r in records:
        found[r.segment_id].append(r)
    return found


def verify(truth: list[TruthObject], seen: Observed) -> Verdict:
    v = Verdict(
        objects=len(truth), bound_by_stage=kill_bounds(seen.kills), run_problems=run_problems(seen.run, seen.kills)
    )
    by_stage = {stage: _by_segment(seen.outputs.get(stage, [])) for stage in TOPIC_STAGES}
    rows = _by_segment(seen.index_rows)
    _count_duplicates(v, truth, seen, by_stage, rows)
    _count_redone(v, seen, by_stage)
    for obj in truth:
        if obj.poison:
            _check_poison(v, obj, seen)
        else:
            _check_good(v, obj, seen, by_stage, rows)
            _check_speech(v, obj, seen, by_stage, rows)
    return v


def _count_duplicates(
    v: Verdict,
    truth: list[TruthObject],
    seen: Observed,
    by_stage: dict[str, dict[str, list[SeenSegment]]],
    rows: dict[str, list[SeenSegment]],
) -> None:
    redecoded: set[str] = set()
    for stage, records in by_stage.items():
        injected = seen.injected.get(stage, Counter())
        extra = 0
        for sid, copies in records.items():
            surplus = len(copies) - 1 - injected[sid]
            if surplus > 0:
                extra += surplus
                v.problems.append(f"{stage}: segment {sid} has {len(copies)} output records ({injected[sid]} injected)")
                if stage == "decode":
                    redecoded.add(copies[0].object_id)
        v.duplicates_by_stage[stage] = extra
    v.duplicates_by_stage["index"] = sum(len(r) - 1 for r in rows.values() if len(r) > 1)
    for obj in truth:
        if obj.poison and seen.dead_letters[obj.object_id] > 1:
            v.duplicates_by_stage["decode"] += seen.dead_letters[obj.object_id] - 1
            redecoded.add(obj.object_id)
    v.redecoded_objects = len(redecoded)
    v.duplicate_outputs = sum(v.duplicates_by_stage.values())


def _count_redone(v: Verdict, seen: Observed, by_stage: dict[str, dict[str, list[SeenSegment]]]) -> None:
    for stage in MODEL_STAGES:
        records = by_stage[stage]
        injected = seen.injected.get(stage, Counter())
        produced = sum(max(len(copies) - injected[sid], 0) for sid, copies in records.items())
        reached = sum(1 for sid, copies in records.items() if len(copies) > injected[sid])
        calls = max(seen.model_calls.get(stage, 0), produced)
        v.redone_by_stage[stage] = max(calls - reached, 0)
        if v.redone_by_stage[stage]:
            v.problems.append(f"{stage}: {calls} model calls for {reached} segments")
    v.redone_work = sum(v.redone_by_stage.values())


def _check_poison(v: Verdict, obj: TruthObject, seen: Observed) -> None:
    state = seen.states.get(obj.object_id)
    if state != "failed" or seen.dead_letters[obj.object_id] == 0:
        v.lost += 1
        v.problems.append(f"poison {obj.name}: state {state}, {seen.dead_letters[obj.object_id]} dead letters")


def _check_good(
    v: Verdict,
    obj: TruthObject,
    seen: Observed,
    by_stage: dict[str, dict[str, list[SeenSegment]]],
    rows: dict[str, list[SeenSegment]],
) -> None:
    state = seen.states.get(obj.object_id)
    if state != "done":
        v.lost += 1
        v.problems.append(f"object {obj.name}: state {state}, not done")
    in_results = set(seen.results.get(obj.object_id, []))
    decoded: list[SeenSegment] = []
    for index in range(len(obj.segments)):
        sid = segment_id(obj.object_id, index)
        v.segments += 1
        _lost_unless(
            v,
            f"object {obj.name} segment {index}",
            embedding=sid in by_stage["embed"],
            index_row=sid in rows,
            result=sid in in_results,
        )
        copies = by_stage["decode"].get(sid) or by_stage["embed"].get(sid) or rows.get(sid) or []
        decoded += copies[:1]
    # Segments the pipeline cut beyond the truth's count (their ids are not in the loop above).
    beyond = {
        r.segment_index
        for r in _records_of(obj.object_id, by_stage, rows)
        if r.segment_index >= len(obj.segments) and not r.is_speech
    }
    short = len(obj.segments) - len(decoded)
    if beyond or short:
        v.boundary_errors += len(beyond) + short
        v.problems.append(f"object {obj.name}: {len(obj.segments)} segments in truth, {len(decoded) + len(beyond)} cut")
    for r in decoded:
        want = obj.segments[r.segment_index]
        for copy in _records_of(obj.object_id, by_stage, rows, r.segment_id):
            off = max(abs(copy.start_s - want.start_s), abs(copy.end_s - want.end_s))
            if off > obj.tolerance_s:
                v.boundary_errors += 1
                v.problems.append(
                    f"object {obj.name} segment {r.segment_index}: {copy.start_s:.3f}-{copy.end_s:.3f}s, "
                    f"truth {want.start_s:.3f}-{want.end_s:.3f}s"
                )
                break


def _lost_unless(v: Verdict, what: str, **present: bool) -> None:
    """One lost item when any of its records is missing; the problem names them all."""
    missing = [name.replace("_", " ") for name, found in present.items() if not found]
    if missing:
        v.lost += 1
        v.problems.append(f"{what}: no {', no '.join(missing)}")


def _check_speech(
    v: Verdict,
    obj: TruthObject,
    seen: Observed,
    by_stage: dict[str, dict[str, list[SeenSegment]]],
    rows: dict[str, list[SeenSegment]],
) -> None:
    """Every voice in a chunk, every chunk transcribed, embedded, indexed and in the results once."""
    chunks = {r.segment_index: r for r in _records_of(obj.object_id, {"decode": by_stage["decode"]}, {}) if r.is_speech}
    in_results = set(seen.results.get(obj.object_id, []))
    for index in range(max(chunks, default=-1) + 1):
        sid = speech_segment_id(obj.object_id, index)
        v.speech_chunks += 1
        _lost_unless(
            v,
            f"object {obj.name} speech chunk {index}",
            speech_chunk=index in chunks,
            transcript=sid in by_stage.get("transcribe", {}),
            embedding=sid in by_stage["embed"],
            index_row=sid in rows,
            result=sid in in_results,
        )
    tol = obj.speech_tolerance_s
    for voice in obj.speech:
        covering = [c for c in chunks.values() if c.start_s < voice.end_s and c.end_s > voice.start_s]
        if not covering:
            v.lost += 1
            v.problems.append(f"object {obj.name}: voice {voice.start_s:.2f}-{voice.end_s:.2f}s in no speech chunk")
        elif (
            min(c.start_s for c in covering) > voice.start_s + tol or max(c.end_s for c in covering) < voice.end_s - tol
        ):
            v.boundary_errors += 1
            v.problems.append(
                f"object {obj.name}: voice {voice.start_s:.2f}-{voice.end_s:.2f}s, its chunks "
                f"{min(c.start_s for c in covering):.2f}-{max(c.end_s for c in covering):.2f}s"
            )
    for c in chunks.values():
        if not any(c.start_s < voice.end_s and c.end_s > voice.start_s for voice in obj.speech):
            v.boundary_errors += 1
            v.problems.append(
                f"object {obj.name} speech chunk {c.segment_index}: {c.start_s:.2f}-{c.end_s:.2f}s, no voice"
            )


def _records_of(
    object_id: str,
    by_stage: dict[str, dict[str, list[SeenSegment]]],
    rows: dict[str, list[SeenSegment]],
    sid: str | None = None,
) -> list[SeenSegment]:
    """Every record of the object (or of one of its segments) on every topic and in the index."""
    found: list[SeenSegment] = []
    for records in [*by_stage.values(), rows]:
        groups = [records.get(sid, [])] if sid is not None else records.values()
        found += [r for group in groups for r in group if r.object_id == object_id]
    return found
