"""The stage registry: every stage of the pipeline declared once.

Whatever lists stages reads ``REGISTRY``: ``capstream worker``'s choices and what ``capstream
run`` runs, ``dlq --stage``'s choices, the topics a worker creates (inputs, outputs and one
``<input>.dlq`` per input), the dead-letter tools, reconcile, the load and chaos runs, and the
compose and Kubernetes checks. Before it, a stage was listed by hand in about fourteen places,
and the lists drifted (the s3-events bridge's dead letters were invisible to ``capstream dlq``).

A stage is a folder (its ``Stage`` classes and a ``loops.build_loops(settings, resources)``)
plus one ``StageSpec`` here. Topics and groups are named by settings fields, not by value:
the field's ``CAPSTREAM_<FIELD>`` variable renames them in a deployment, and the deployment
checks know which variable to look for.

This module imports settings only (builders are imported when a loop is built), so the
runtime, state and CLI layers can all read it without an import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from workers.runtime.kafka import dlq_topic, ensure_topics
from workers.runtime.retention import DEAD_LETTERS, FEED, FRAMES, NOTICES, RECORD, TopicRetention
from workers.settings import (
    BridgeSettings,
    CaptionSettings,
    CommonSettings,
    DecodeSettings,
    EmbedSettings,
    IndexSettings,
    SummarizeSettings,
    TranscribeSettings,
    WebhookSettings,
)

if TYPE_CHECKING:
    from workers.runtime.loop import StageLoop
    from workers.runtime.resources import WorkerResources

# The per-object counter a stage's outputs advance (``workers.state.progress.StageCounter``).
ProgressCounter = Literal["decoded", "captioned", "transcribed", "embedded"]
LoopBuilder = Callable[[Any, "WorkerResources"], "list[StageLoop[Any]]"]


class ProgressTopic(NamedTuple):
    stage: str
    counter: ProgressCounter
    topic: str  # each record on it is one segment the stage finished


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer loop of a stage (most stages have one; the index stage has two)."""

    name: str  # the loop's ``Stage.name``: its dead letters' ``stage``, a ``dlq --stage`` choice
    topic_field: str  # settings field naming the input topic (its DLQ is ``<topic>.dlq``)
    group_field: str  # settings field naming the consumer group


@dataclass(frozen=True)
class StageSpec:
    name: str  # ``capstream worker NAME``
    settings: type[CommonSettings]
    consumers: tuple[ConsumerSpec, ...]
    output_fields: tuple[str, ...]  # settings fields naming the topics it produces to
    builder: str  # "module:function", a ``LoopBuilder``; imported only when loops are built
    # The progress counter its output topic's records advance (the first output topic);
    # reconcile replays that topic into the counter.
    progress: ProgressCounter | None = None
    # ``capstream run`` runs the stage when this boolean setting is true; None: always, and
    # then every deployment (compose, k8s) must run it too. With a flag it is an add-on (the
    # s3-events bridge serves SeaweedFS; compose's MinIO publishes events itself).
    run_flag: str | None = None

    def load_settings(self) -> CommonSettings:
        """The stage's settings from the environment."""
        return self.settings()

    def input_topics(self, settings: CommonSettings) -> list[str]:
        return [_field(settings, c.topic_field) for c in self.consumers]

    def output_topics(self, settings: CommonSettings) -> list[str]:
        return [_field(settings, f) for f in self.output_fields]

    def dlq_topics(self, settings: CommonSettings) -> list[str]:
        return [dlq_topic(t) for t in self.input_topics(settings)]

    def groups(self, settings: CommonSettings) -> dict[str, str]:
        """Consumer group -> input topic, as a worker with these settings consumes them."""
        return {_field(settings, c.group_field): _field(settings, c.topic_field) for c in self.consumers}

    @property
    def required(self) -> bool:
        """Every deployment runs it (it is no add-on behind a flag)."""
        return self.run_flag is None

    def in_laptop_run(self, settings: CommonSettings) -> bool:
        return self.run_flag is None or bool(getattr(settings, self.run_flag))

    def build_loops(self, settings: CommonSettings, resources: WorkerResources) -> list[StageLoop[Any]]:
        return self.load_builder()(settings, resources)

    def load_builder(self) -> LoopBuilder:
        module, _, attr = self.builder.partition(":")
        builder: LoopBuilder = getattr(importlib.import_module(module), attr)
        return builder


def _field(settings: CommonSettings, name: str) -> str:
    value = getattr(settings, name)
    assert isinstance(value, str), f"{type(settings).__name__}.{name} is not a topic or group name"
    return value


@dataclass(frozen=True)
class StageRegistry:
    specs: tuple[StageSpec, ...]
    # Settings field naming a topic -> how long the topic keeps its records
    # (``workers.runtime.retention``); every topic a stage reads or writes has one, and each
    # topic's dead-letter topic is DEAD_LETTERS.
    retention: Mapping[str, TopicRetention] = field(default_factory=dict)
    _by_name: dict[str, StageSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {s.name: s for s in self.specs}
        loop_names = [c.name for s in self.specs for c in s.consumers]
        if len(by_name) != len(self.specs) or len(set(loop_names)) != len(loop_names):
            raise ValueError(f"stage and consumer names must be unique: {[s.name for s in self.specs]}, {loop_names}")
        fields = {f for s in self.specs for f in (*(c.topic_field for c in s.consumers), *s.output_fields)}
        if missing := sorted(fields - set(self.retention)):
            raise ValueError(f"topics without a retention role (StageRegistry.retention): {missing}")
        object.__setattr__(self, "_by_name", by_name)

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self.specs)

    def __getitem__(self, name: str) -> StageSpec:
        return self._by_name[name]

    def with_stage(self, spec: StageSpec, retention: Mapping[str, TopicRetention] | None = None) -> StageRegistry:
        return StageRegistry((*self.specs, spec), {**self.retention, **(retention or {})})

    def names(self) -> list[str]:
        """``capstream worker`` choices."""
        return [s.name for s in self.specs]

    def consumer_names(self) -> list[str]:
        """The dead letters' stage names: ``capstream dlq --stage`` choices."""
        return [c.name for s in self.specs for c in s.consumers]

    def required_names(self) -> list[str]:
        """The stages every deployment runs (no add-ons)."""
        return [s.name for s in self.specs if s.required]

    def progress_stages(self) -> list[str]:
        """The stages whose output records advance per-object progress, in pipeline order."""
        return [s.name for s in self.specs if s.progress is not None]

    def settings_classes(self) -> list[type[CommonSettings]]:
        return list(dict.fromkeys(s.settings for s in self.specs))

    def laptop_stages(self) -> list[str]:
        """What ``capstream run`` runs, each stage's own settings deciding."""
        return [s.name for s in self.specs if s.in_laptop_run(s.load_settings())]

    def input_topics(self, settings: CommonSettings) -> list[str]:
        return _unique(t for s in self.specs for t in s.input_topics(_for(s, settings)))

    def dlq_topics(self, settings: CommonSettings) -> list[str]:
        return [dlq_topic(t) for t in self.input_topics(settings)]

    def topics(self, settings: CommonSettings) -> list[str]:
        """Every topic the pipeline reads or writes, DLQs included: what a worker creates."""
        outputs = [t for s in self.specs for t in s.output_topics(_for(s, settings))]
        return _unique([*self.input_topics(settings), *outputs, *self.dlq_topics(settings)])

    def topic_retention(self, settings: CommonSettings) -> dict[str, TopicRetention]:
        """Every topic of ``topics(settings)`` -> its retention role."""
        named: dict[str, TopicRetention] = {}
        for spec in self.specs:
            stage_settings = _for(spec, settings)
            for name in (*(c.topic_field for c in spec.consumers), *spec.output_fields):
                named[_field(stage_settings, name)] = self.retention[name]
        named.update({dlq_topic(t): DEAD_LETTERS for t in self.input_topics(settings)})
        return {t: named[t] for t in self.topics(settings)}

    def topic_configs(self, settings: CommonSettings) -> dict[str, dict[str, str]]:
        """Topic -> the configs it is created with (its retention)."""
        return {t: r.configs() for t, r in self.topic_retention(settings).items()}

    def record_topics(self, settings: CommonSettings) -> list[str]:
        """The topics kept forever: what Redis and the index are rebuilt from."""
        return [t for t, r in self.topic_retention(settings).items() if r.is_record]

    def progress_topics(self, settings: CommonSettings) -> list[ProgressTopic]:
        """The stages that advance progress, each with its counter and output topic, in
        pipeline order."""
        return [
            ProgressTopic(spec.name, spec.progress, spec.output_topics(_for(spec, settings))[0])
            for spec in self.specs
            if spec.progress is not None
        ]


def _for(spec: StageSpec, settings: CommonSettings) -> CommonSettings:
    """``settings`` as the stage sees it: its own settings class (a stage may declare topics
    of its own), with every value ``settings`` has (a caller's topic names win)."""
    if isinstance(settings, spec.settings):
        return settings
    return spec.settings(**settings.model_dump())


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


async def ensure_pipeline_topics(settings: CommonSettings, registry: StageRegistry | None = None) -> None:
    """Create the pipeline's missing topics with their retention (what a worker does first)."""
    registry = registry or REGISTRY
    await ensure_topics(settings, registry.topics(settings), registry.topic_configs(settings))


REGISTRY = StageRegistry(
    (
        StageSpec(
            name="s3-events",
            settings=BridgeSettings,
            consumers=(ConsumerSpec("s3-events", "topic_filer_events", "s3_events_group"),),
            output_fields=("topic_objects",),
            builder="workers.bridge.loops:build_loops",
            run_flag="s3_events_bridge",
        ),
        StageSpec(
            name="decode",
            settings=DecodeSettings,
            consumers=(ConsumerSpec("decode", "topic_objects", "decode_group"),),
            output_fields=("topic_segments", "topic_removals", "topic_speech"),
            builder="workers.decode.loops:build_loops",
            progress="decoded",
        ),
        StageSpec(
            name="caption",
            settings=CaptionSettings,
            consumers=(ConsumerSpec("caption", "topic_segments", "caption_group"),),
            output_fields=("topic_captions",),
            builder="workers.caption.loops:build_loops",
            progress="captioned",
        ),
        StageSpec(
            name="transcribe",
            settings=TranscribeSettings,
            consumers=(ConsumerSpec("transcribe", "topic_speech", "transcribe_group"),),
            output_fields=("topic_transcripts",),
            builder="workers.transcribe.loops:build_loops",
            progress="transcribed",
        ),
        StageSpec(
            name="embed",
            settings=EmbedSettings,
            consumers=(
                ConsumerSpec("embed", "topic_captions", "embed_group"),
                ConsumerSpec("embed-speech", "topic_transcripts", "embed_speech_group"),
            ),
            output_fields=("topic_embeddings",),
            builder="workers.embed.loops:build_loops",
            progress="embedded",
        ),
        StageSpec(
            name="index",
            settings=IndexSettings,
            consumers=(
                ConsumerSpec("index", "topic_embeddings", "index_group"),
                ConsumerSpec("index-removals", "topic_removals", "index_removals_group"),
            ),
            output_fields=(),
            builder="workers.index.loops:build_loops",
        ),
        StageSpec(
            name="summarize",
            settings=SummarizeSettings,
            consumers=(ConsumerSpec("summarize", "topic_outcomes", "summarize_group"),),
            output_fields=(),
            builder="workers.summarize.loops:build_loops",
        ),
        StageSpec(
            name="webhooks",
            settings=WebhookSettings,
            consumers=(ConsumerSpec("webhooks", "topic_outcomes", "webhooks_group"),),
            output_fields=(),
            builder="workers.webhooks.loops:build_loops",
        ),
    ),
    retention={
        # The record: what Redis and the index are rebuilt from, and what a re-decode replays
        # (workers/runtime/retention.py says why each is kept; docs/sizing.md what it costs).
        "topic_objects": RECORD,
        "topic_captions": RECORD,
        "topic_embeddings": RECORD,
        "topic_removals": RECORD,
        "topic_transcripts": RECORD,
        # Inline JPEG frames: the bulk of the bytes, redone by a re-decode once expired.
        "topic_segments": FRAMES,
        "topic_speech": FRAMES,  # inline FLAC, likewise
        "topic_filer_events": FEED,
        "topic_outcomes": NOTICES,
    },
)
