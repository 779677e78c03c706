"""The chaos verifier catches each fault it exists for, planted into otherwise clean data: a
dropped embedding, a duplicated output record, a stage that ignores its done marker (redone
model calls beyond what the kills explain), a shifted boundary; the speech path's own: a lost
or duplicated transcript, a speech embedding lost or doubled, a voice in no chunk, a chunk in
silence; and a run that cannot be
trusted: never settled, a worker's non-zero exit, a replayed record that reached the model, a
kill whose pre-kill scrape failed, a Redis kill -9 measured over less than its lost second.
Pure data, no services."""

from __future__ import annotations

import dataclasses
from collections import Counter

from loadtest.chaos.conduct import AOF_LOSS_S, REDIS_KILL, Kill, RunFacts
from loadtest.chaos.verifier import (
    MODEL_STAGES,
    Observed,
    SeenSegment,
    Span,
    TruthObject,
    segment_topics,
    verify,
)
from schemas.ids import segment_id, speech_segment_id
from workers.settings import CommonSettings

MONTAGE = TruthObject("montage", "6c1a3f8e-6f47-4a8e-9d43-0d5c2b1e7a10", False, (Span(0.0, 1.5), Span(1.5, 3.25)))
STILL = TruthObject("still", "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f", False, (Span(0.0, 0.0),))
POISON = TruthObject("poison", "3e4d5c6b-7a89-4b0c-9d1e-2f3a4b5c6d7e", True)
# A spoken clip: one visual segment, and a voice from 0.4 s to 2.6 s that one chunk must cover.
SPOKEN = TruthObject(
    "spoken", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", False, (Span(0.0, 3.5),), speech=(Span(0.4, 2.6),)
)
TRUTH = [MONTAGE, STILL, POISON, SPOKEN]


def _records(obj: TruthObject) -> list[SeenSegment]:
    return [
        SeenSegment(obj.object_id, segment_id(obj.object_id, i), i, span.start_s, span.end_s)
        for i, span in enumerate(obj.segments)
    ]


def _chunk(obj: TruthObject, index: int, start_s: float, end_s: float) -> SeenSegment:
    """A speech chunk's record (the chunk, its transcript, embedding or index row)."""
    return SeenSegment(obj.object_id, speech_segment_id(obj.object_id, index), index, start_s, end_s)


CHUNK = _chunk(SPOKEN, 0, 0.25, 2.8)  # the detector pads the voice a little


def clean() -> Observed:
    good = [r for obj in TRUTH for r in _records(obj)]
    return Observed(
        # decode: segments and speech chunks; caption: segments; transcribe: chunks; embed: both.
        outputs={
            "decode": [*good, CHUNK],
            "caption": list(good),
            "transcribe": [CHUNK],
            "embed": [*good, CHUNK],
        },
        index_rows=[*good, CHUNK],
        results={obj.object_id: [r.segment_id for r in _records(obj)] for obj in TRUTH if not obj.poison}
        | {SPOKEN.object_id: [*(r.segment_id for r in _records(SPOKEN)), CHUNK.segment_id]},
        states={
            MONTAGE.object_id: "done",
            STILL.object_id: "done",
            POISON.object_id: "failed",
            SPOKEN.object_id: "done",
        },
        dead_letters=Counter({POISON.object_id: 1}),
        model_calls={"caption": len(good), "transcribe": 1, "embed": len(good) + 1},
        run=RunFacts(
            settled=True,
            exit_codes={"decode-0": 0, "caption-0": 0, "transcribe-0": 0, "embed-0": 0, "index-0": 0},
            replay_records=4,
            replay_consumed=True,
            replay_model_calls={"caption": 0, "transcribe": 0, "embed": 0},
        ),
    )


def test_clean_run_passes_with_every_figure_zero() -> None:
    v = verify(TRUTH, clean())
    assert v.passed, v.problems
    figures = (v.objects, v.segments, v.speech_chunks, v.lost, v.duplicate_outputs, v.redone_work, v.boundary_errors)
    assert figures == (4, 4, 1, 0, 0, 0, 0)


def test_model_stages_and_segment_topics_come_from_the_registry() -> None:
    """Transcribe is counted like caption and embed without being listed by hand; decode's
    speech chunks are read (and replayed) beside its segments."""
    assert MODEL_STAGES == ("caption", "transcribe", "embed")
    topics = segment_topics(CommonSettings())
    assert ("decode", "media.speech") in topics and ("transcribe", "media.transcripts") in topics
    assert [stage for stage, _ in topics] == ["decode", "decode", "caption", "transcribe", "embed"]


def test_a_lost_transcript_is_lost() -> None:
    seen = clean()
    seen.outputs["transcribe"] = []
    v = verify(TRUTH, seen)
    assert v.lost == 1 and not v.passed
    assert "object spoken speech chunk 0: no transcript" in v.problems


def test_a_lost_speech_embedding_row_or_result_is_lost() -> None:
    seen = clean()
    seen.outputs["embed"] = [r for r in seen.outputs["embed"] if r != CHUNK]
    seen.index_rows = [r for r in seen.index_rows if r != CHUNK]
    seen.results[SPOKEN.object_id] = seen.results[SPOKEN.object_id][:1]
    v = verify(TRUTH, seen)
    assert v.lost == 1 and "object spoken speech chunk 0: no embedding, no index row, no result" in v.problems


def test_a_duplicated_transcript_fails_unless_a_transcribe_kill_had_it_in_flight() -> None:
    seen = clean()
    seen.outputs["transcribe"].append(CHUNK)
    seen.model_calls["transcribe"] += 1
    v = verify(TRUTH, seen)
    assert v.duplicates_by_stage["transcribe"] == 1 and not v.passed
    assert v.bounds_exceeded == [
        "transcribe: duplicate_outputs 1 > bound 0",
        "transcribe: redone_work 1 > bound 0",
    ]
    seen.kills.append(Kill("caption-0", {"caption": 1}))  # another stage's kill explains nothing here
    assert not verify(TRUTH, seen).passed
    seen.kills.append(Kill("transcribe-0", {"transcribe": 1}))
    assert verify(TRUTH, seen).passed


def test_a_transcript_redone_without_output_is_counted_from_the_metrics() -> None:
    seen = clean()
    seen.model_calls["transcribe"] += 1  # a replayed chunk transcribed again, its record lost with a kill
    assert verify(TRUTH, seen).bounds_exceeded == ["transcribe: redone_work 1 > bound 0"]


def test_a_doubled_speech_index_row_fails_whatever_the_kills() -> None:
    seen = clean()
    seen.index_rows.append(CHUNK)
    seen.kills.append(Kill("index-0", {"index": 3}))
    assert verify(TRUTH, seen).duplicates_by_stage["index"] == 1 and not verify(TRUTH, seen).passed


def test_a_replayed_chunk_that_reached_the_recognizer_fails() -> None:
    seen = clean()
    seen.run.replay_model_calls = {"caption": 0, "transcribe": 1, "embed": 0}
    assert verify(TRUTH, seen).run_problems == ["transcribe: 1 model calls for replayed records (must be 0)"]


def test_a_voice_in_no_chunk_is_lost_and_a_chunk_in_silence_is_a_boundary_error() -> None:
    seen = clean()  # the decoder published no chunk at all (and so nothing downstream of it)
    for stage in ("decode", "transcribe", "embed"):
        seen.outputs[stage] = [r for r in seen.outputs[stage] if r != CHUNK]
    seen.index_rows = [r for r in seen.index_rows if r != CHUNK]
    seen.results[SPOKEN.object_id] = seen.results[SPOKEN.object_id][:1]
    v = verify(TRUTH, seen)
    assert v.lost == 1 and "object spoken: voice 0.40-2.60s in no speech chunk" in v.problems
    seen = clean()
    seen.outputs["decode"] = [
        r if r != CHUNK else dataclasses.replace(CHUNK, start_s=2.7, end_s=3.4) for r in seen.outputs["decode"]
    ]
    v = verify(TRUTH, seen)
    # The voice in no chunk (lost), and a chunk where no voice is.
    assert (v.lost, v.boundary_errors) == (1, 1) and "object spoken speech chunk 0: 2.70-3.40s, no voice" in v.problems


def test_a_chunk_that_cuts_into_the_voice_is_a_boundary_error() -> None:
    seen = clean()
    seen.outputs["decode"] = [
        r if r != CHUNK else dataclasses.replace(CHUNK, end_s=2.0) for r in seen.outputs["decode"]
    ]
    v = verify(TRUTH, seen)
    assert v.boundary_errors == 1 and v.problems == ["object spoken: voice 0.40-2.60s, its chunks 0.25-2.00s"]


def test_a_skipped_chunk_number_is_lost() -> None:
    seen = clean()
    second = _chunk(SPOKEN, 1, 1.5, 2.8)
    seen.outputs["decode"] = [r if r != CHUNK else second for r in seen.outputs["decode"]]
    for stage in ("transcribe", "embed"):
        seen.outputs[stage] = [r if r != CHUNK else second for r in seen.outputs[stage]]
    seen.index_rows = [r if r != CHUNK else second for r in seen.index_rows]
    seen.results[SPOKEN.object_id][-1] = second.segment_id
    v = verify(TRUTH, seen)
    assert v.lost == 1 and v.problems[0].startswith("object spoken speech chunk 0: no speech chunk")


def test_a_dropped_embedding_is_lost() -> None:
    seen = clean()
    seen.outputs["embed"] = seen.outputs["embed"][1:]
    v = verify(TRUTH, seen)
    assert v.lost == 1 and not v.passed
    assert any("no embedding" in p for p in v.problems)


def test_a_missing_index_row_or_result_is_lost() -> None:
    seen = clean()
    seen.index_rows = seen.index_rows[:-1]
    seen.results[MONTAGE.object_id] = seen.results[MONTAGE.object_id][:1]
    assert verify(TRUTH, seen).lost == 2


def test_a_duplicated_output_record_fails_unless_a_kill_had_it_in_flight() -> None:
    seen = clean()
    seen.outputs["caption"].append(seen.outputs["caption"][0])
    seen.model_calls["caption"] += 1
    v = verify(TRUTH, seen)
    assert v.duplicate_outputs == 1 and not v.passed
    assert v.bounds_exceeded == [
        "caption: duplicate_outputs 1 > bound 0",
        "caption: redone_work 1 > bound 0",
    ]
    # The same copy after a kill -9 of the caption worker with one segment in flight is allowed.
    seen.kills.append(Kill("caption-0", {"caption": 1}))
    assert verify(TRUTH, seen).passed


def test_a_duplicated_index_row_fails_whatever_the_kills() -> None:
    seen = clean()
    seen.index_rows.append(seen.index_rows[0])
    seen.kills.append(Kill("index-0", {"index": 5}))
    v = verify(TRUTH, seen)
    assert v.duplicate_outputs == 1 and not v.passed


def test_a_stage_that_ignores_its_done_marker_redoes_replayed_segments() -> None:
    """The run re-publishes finished segments; a caption stage that skips its done-marker check
    captions them again: more model calls than segments, more than the one kill explains."""
    seen = clean()
    replayed = seen.outputs["decode"][:2]
    seen.outputs["decode"] += replayed
    seen.injected["decode"] = Counter(r.segment_id for r in replayed)
    assert verify(TRUTH, seen).passed  # replays that were skipped are no fault
    seen.outputs["caption"] += replayed
    seen.model_calls["caption"] += 2
    seen.kills.append(Kill("caption-0", {"caption": 1}))
    v = verify(TRUTH, seen)
    assert v.redone_by_stage["caption"] == 2 and not v.passed
    assert "caption: redone_work 2 > bound 1" in v.bounds_exceeded


def test_redone_calls_without_output_are_counted_from_the_metrics() -> None:
    seen = clean()
    seen.model_calls["embed"] += 3  # e.g. calls cut short by kills: no record, but counted
    assert verify(TRUTH, seen).bounds_exceeded == ["embed: redone_work 3 > bound 0"]
    seen.kills += [Kill("embed-0", {"embed": 2}), Kill("broker", {"embed": 1, "caption": 0})]
    assert verify(TRUTH, seen).passed


def test_a_redecoded_object_counts_against_decodes_bound_in_objects() -> None:
    seen = clean()
    seen.outputs["decode"] += _records(MONTAGE)  # the decode claim ignored: the object cut twice
    v = verify(TRUTH, seen)
    assert (v.duplicates_by_stage["decode"], v.redecoded_objects) == (2, 1) and not v.passed
    seen.kills.append(Kill("decode-1", {"decode": 1}))
    assert verify(TRUTH, seen).passed


def test_a_shifted_boundary_is_a_boundary_error() -> None:
    seen = clean()
    first = seen.outputs["decode"][0]
    seen.outputs["decode"][0] = dataclasses.replace(first, end_s=first.end_s + 0.25)
    v = verify(TRUTH, seen)
    assert v.boundary_errors == 1 and not v.passed
    assert any("truth 0.000-1.500s" in p for p in v.problems)


def test_a_missed_cut_is_a_boundary_error() -> None:
    seen = clean()
    merged = SeenSegment(MONTAGE.object_id, segment_id(MONTAGE.object_id, 0), 0, 0.0, 3.25)
    first, second = segment_id(MONTAGE.object_id, 0), segment_id(MONTAGE.object_id, 1)
    for stage in ("decode", "caption", "embed"):
        kept = [r for r in seen.outputs[stage] if r.segment_id != second]
        seen.outputs[stage] = [merged if r.segment_id == first else r for r in kept]
    seen.index_rows = list(seen.outputs["embed"])
    v = verify(TRUTH, seen)
    assert v.boundary_errors >= 2  # one segment too few, and the one left ends at the wrong time


def test_a_poison_object_must_fail_with_one_dead_letter() -> None:
    seen = clean()
    seen.states[POISON.object_id] = "decoding"
    seen.dead_letters[POISON.object_id] = 0
    assert verify(TRUTH, seen).lost == 1
    seen = clean()
    seen.dead_letters[POISON.object_id] = 2
    v = verify(TRUTH, seen)
    assert v.duplicate_outputs == 1 and v.redecoded_objects == 1 and not v.passed


def test_a_run_that_never_settled_fails() -> None:
    seen = clean()
    seen.run.settled = False
    v = verify(TRUTH, seen)
    assert not v.passed and v.run_problems == [
        "never settled: consumer lag or records in flight were not 0 when counted"
    ]


def test_a_worker_that_exited_non_zero_or_not_at_all_fails() -> None:
    seen = clean()
    seen.run.exit_codes["caption-0"] = 1
    seen.run.exit_codes["embed-0"] = None  # would not drain: SIGKILLed at the stop timeout
    v = verify(TRUTH, seen)
    assert not v.passed and v.run_problems == ["worker caption-0 exited with 1", "worker embed-0 exited with None"]
    seen.run.exit_codes = {}
    assert verify(TRUTH, seen).run_problems == ["no worker exit status recorded"]


def test_a_replayed_record_that_reached_the_model_fails_even_if_others_were_skipped() -> None:
    """A caption stage that skips most replayed segments but captions one again: the outputs
    may not show it (the copy's record can be lost with a kill), the metrics do."""
    seen = clean()
    seen.run.replay_model_calls = {"caption": 1, "embed": 0}
    v = verify(TRUTH, seen)
    assert not v.passed and v.run_problems == ["caption: 1 model calls for replayed records (must be 0)"]


def test_a_replay_that_was_not_counted_or_not_consumed_proves_nothing() -> None:
    seen = clean()
    seen.run.replay_model_calls = None
    assert verify(TRUTH, seen).run_problems == ["no quiet replay was counted"]
    seen = clean()
    seen.run.replay_consumed = False
    assert verify(TRUTH, seen).run_problems == ["the quiet replay's records were not all taken and finished"]
    seen = clean()
    seen.run.replay_records = 0
    assert verify(TRUTH, seen).run_problems == ["the quiet replay re-published nothing"]
    seen = clean()
    seen.run.replay_unscraped = ("embed-0",)  # its last count could be older than a call
    assert verify(TRUTH, seen).run_problems == ["quiet replay: scrape of embed-0 failed, its calls unknown"]


def test_a_kill_whose_pre_kill_scrape_failed_is_reported_not_bounded_by_an_older_scrape() -> None:
    seen = clean()
    seen.kills.append(Kill("broker", {"caption": 3, "embed": 0}, unscraped=("caption-0",)))
    v = verify(TRUTH, seen)
    assert not v.passed and v.run_problems == ["broker kill: scrape of caption-0 failed right before it"]


def test_a_redis_kill9_allows_a_repeat_per_record_finished_in_its_lost_second() -> None:
    """appendfsync everysec: the markers of the records finished in the last second may be
    gone, so each may be captioned again; counted over a shorter window, the bound is a guess."""
    seen = clean()
    seen.outputs["caption"].append(seen.outputs["caption"][0])
    seen.model_calls["caption"] += 1
    seen.kills.append(Kill(REDIS_KILL, {"caption": 0}, finished={"caption": 0}, window_s=AOF_LOSS_S + 0.05))
    assert "caption: redone_work 1 > bound 0" in verify(TRUTH, seen).bounds_exceeded
    seen.kills[-1] = Kill(REDIS_KILL, {"caption": 0}, finished={"caption": 1}, window_s=AOF_LOSS_S + 0.05)
    assert verify(TRUTH, seen).passed
    seen.kills[-1] = Kill(REDIS_KILL, {"caption": 0}, finished={"caption": 1}, window_s=0.3)
    v = verify(TRUTH, seen)
    assert not v.passed and v.run_problems == [
        f"redis kill -9: finished records counted over 0.3s, but appendfsync everysec may lose the last {AOF_LOSS_S}s"
    ]
