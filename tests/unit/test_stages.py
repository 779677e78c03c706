"""The stage registry is the one list of stages: it agrees with the loops each stage really
builds, and a stage declared in this test alone gets its topics, its DLQ, its CLI choices and
the deployment checks, with no other file touched."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest

from tests import compose_checks as cc
from tests.unit.test_k8s_manifests import load_manifests, of_kind, stage_deployment_problems
from workers.cli.main import build_parser
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.runtime.retention import DEAD_LETTERS, FRAMES, RECORD
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import CommonSettings
from workers.stages import REGISTRY, ConsumerSpec, StageRegistry, StageSpec

# -- a throwaway stage: OCR of pages, declared here and nowhere else --------------------------


class OcrSettings(CommonSettings):
    topic_pages: str = "media.pages"
    topic_ocr: str = "media.ocr"
    ocr_group: str = "capstream-ocr"
    ocr_max_in_flight: int = 4


class OcrStage(Stage[bytes]):
    name = "ocr"

    def __init__(self, settings: OcrSettings) -> None:
        self.input_topic = settings.topic_pages
        self.output_topics = (settings.topic_ocr,)

    def parse(self, value: bytes) -> bytes:
        return value

    async def process(self, item: bytes, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        raise NotImplementedError
        yield  # pragma: no cover


def build_ocr_loops(settings: OcrSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    return [StageLoop(OcrStage(settings), settings, settings.ocr_group, settings.ocr_max_in_flight, res.metrics)]


OCR = StageSpec(
    name="ocr",
    settings=OcrSettings,
    consumers=(ConsumerSpec("ocr", "topic_pages", "ocr_group"),),
    output_fields=("topic_ocr",),
    builder=f"{__name__}:build_ocr_loops",
)
OCR_RETENTION = {"topic_pages": FRAMES, "topic_ocr": RECORD}
WITH_OCR = REGISTRY.with_stage(OCR, OCR_RETENTION)


def _declared(spec: StageSpec, settings: CommonSettings) -> list[tuple[str, str, str, tuple[str, ...]]]:
    outputs = tuple(spec.output_topics(settings))
    return sorted(
        (c.name, getattr(settings, c.group_field), getattr(settings, c.topic_field), outputs) for c in spec.consumers
    )


def _built(spec: StageSpec, settings: CommonSettings) -> list[tuple[str, str, str, tuple[str, ...]]]:
    resources = WorkerResources()
    try:
        loops = spec.build_loops(settings, resources)
    finally:
        resources.engine_executor.shutdown(wait=False)
    # The index's removals loop produces nothing; a loop's outputs are its stage's outputs.
    produced = tuple(dict.fromkeys(t for sl in loops for t in sl.stage.output_topics))
    return sorted((sl.stage.name, sl.group_id, sl.stage.input_topic, produced) for sl in loops)


@pytest.mark.parametrize("spec", [*REGISTRY, OCR], ids=lambda s: s.name)
def test_registry_agrees_with_the_loops_each_stage_builds(spec: StageSpec) -> None:
    """Names, groups, input and output topics as declared are what the built loops use (no
    broker, Redis or model is touched: clients connect when a loop runs)."""
    settings = spec.load_settings()
    assert _built(spec, settings) == _declared(spec, settings)


def test_a_planted_disagreement_is_caught() -> None:
    wrong = StageSpec(
        name="ocr",
        settings=OcrSettings,
        consumers=(ConsumerSpec("ocr", "topic_pages", "ocr_group"),),
        output_fields=("topic_pages",),  # not what the stage produces
        builder=OCR.builder,
    )
    settings = wrong.load_settings()
    assert _built(wrong, settings) != _declared(wrong, settings)


def test_a_new_stage_gets_its_topics_and_dlq() -> None:
    settings = CommonSettings()
    assert "media.pages" not in REGISTRY.topics(settings)
    topics = WITH_OCR.topics(settings)
    assert {"media.pages", "media.ocr", "media.pages.dlq"} <= set(topics)
    assert set(REGISTRY.topics(settings)) < set(topics)
    assert "media.pages.dlq" in WITH_OCR.dlq_topics(settings)  # what `dlq list` and reconcile read
    assert WITH_OCR["ocr"].groups(OcrSettings()) == {"capstream-ocr": "media.pages"}


def test_a_caller_s_topic_names_win() -> None:
    """Tests and tools pass settings with their own topic names; every stage sees them."""
    settings = CommonSettings(topic_segments="segments-x", topic_captions="captions-x")
    assert {"segments-x", "captions-x", "segments-x.dlq", "captions-x.dlq"} <= set(REGISTRY.topics(settings))
    assert "media.segments" not in REGISTRY.topics(settings)


def test_a_new_stage_gets_its_cli_choices() -> None:
    parser = build_parser(WITH_OCR)
    assert parser.parse_args(["worker", "ocr"]).stage == "ocr"
    assert parser.parse_args(["dlq", "list", "--stage", "ocr"]).stage == "ocr"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "ocr"])


def test_every_consumer_is_a_dlq_choice_the_bridge_included() -> None:
    parser = build_parser()
    for name in ("s3-events", "decode", "caption", "transcribe", "embed", "embed-speech", "index", "index-removals"):
        assert parser.parse_args(["dlq", "list", "--stage", name]).stage == name
    assert "seaweedfs.filer.dlq" in REGISTRY.dlq_topics(CommonSettings())


def test_the_laptop_run_takes_add_ons_only_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPSTREAM_S3_EVENTS_BRIDGE", raising=False)
    assert REGISTRY.laptop_stages() == ["decode", "caption", "transcribe", "embed", "index", "summarize", "webhooks"]
    monkeypatch.setenv("CAPSTREAM_S3_EVENTS_BRIDGE", "true")
    assert REGISTRY.laptop_stages() == [
        "s3-events",
        "decode",
        "caption",
        "transcribe",
        "embed",
        "index",
        "summarize",
        "webhooks",
    ]
    assert WITH_OCR.laptop_stages()[-1] == "ocr"


def test_the_compose_checks_see_a_new_stage() -> None:
    compose = cc.load(cc.COMPOSE)
    assert cc.check_stages_deployed(compose, WITH_OCR) == ["no service runs `capstream worker ocr`"]
    services = compose["services"]
    services["ocr-worker"] = {**services["embed-worker"], "command": ["worker", "ocr"]}
    assert cc.check_stages_deployed(compose, WITH_OCR) == []
    problems = cc.check_topics_exist(compose, cc.worker_loops(compose, WITH_OCR))
    assert {p.rsplit(" uses ", 1)[1].split(",")[0] for p in problems} == {"media.pages", "media.pages.dlq", "media.ocr"}


def test_the_k8s_checks_see_a_new_stage() -> None:
    deployments = of_kind(load_manifests(), "Deployment")
    assert stage_deployment_problems(deployments) == []
    assert stage_deployment_problems(deployments, WITH_OCR) == ["no Deployment runs `capstream worker ocr`"]


def test_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        WITH_OCR.with_stage(OCR)
    assert isinstance(WITH_OCR, StageRegistry)


def test_every_topic_has_a_retention_role_and_the_record_is_kept_forever() -> None:
    settings = CommonSettings()
    roles = REGISTRY.topic_retention(settings)
    assert set(roles) == set(REGISTRY.topics(settings))
    assert REGISTRY.record_topics(settings) == [
        "media.objects",
        "media.captions",
        "media.transcripts",
        "media.embeddings",
        "media.removals",
    ]
    assert roles["media.segments"] == FRAMES and roles["media.segments.dlq"] == DEAD_LETTERS
    assert roles["media.speech"] == FRAMES and roles["media.speech.dlq"] == DEAD_LETTERS
    assert REGISTRY.topic_configs(settings)["media.embeddings"] == {"retention.ms": "-1", "retention.bytes": "-1"}


def test_a_new_stage_must_say_how_long_its_topics_are_kept() -> None:
    with pytest.raises(ValueError, match="retention role.*topic_ocr"):
        REGISTRY.with_stage(OCR, {"topic_pages": FRAMES})
    assert WITH_OCR.topic_retention(OcrSettings())["media.ocr"] == RECORD
    assert "media.ocr" in WITH_OCR.record_topics(OcrSettings())
