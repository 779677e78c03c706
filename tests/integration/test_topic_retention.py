"""A worker creates the pipeline's topics with the retention of their roles (the record kept
forever), and says so when an existing record topic would expire: on the real local broker
(Tansu stores and describes topic configs as Apache Kafka does)."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from structlog.testing import capture_logs

from workers.localstack import StackEndpoints
from workers.runtime.kafka import ensure_topics, topic_configs
from workers.runtime.retention import RECORD
from workers.settings import BridgeSettings
from workers.stages import REGISTRY, ensure_pipeline_topics

pytestmark = pytest.mark.integration


def _settings(unique: str) -> BridgeSettings:
    # Every topic of the pipeline under this test's own names: a shared name (media.speech) may
    # already exist on the session's broker, made by another test with the broker's defaults.
    fields = [f for f, info in BridgeSettings.model_fields.items() if f.startswith("topic_") and info.annotation is str]
    return BridgeSettings.model_validate({f: f"ret-{unique}.{f.removeprefix('topic_')}" for f in fields})


async def _describe(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await topic_configs(admin, topics)
    finally:
        await admin.close()


async def test_pipeline_topics_are_created_with_their_retention(stack_env: StackEndpoints, unique: str) -> None:
    settings = _settings(unique)
    await ensure_pipeline_topics(settings)
    wanted = REGISTRY.topic_configs(settings)
    actual = await _describe(settings.kafka_bootstrap, list(wanted))
    assert {t: {k: actual[t].get(k) for k in want} for t, want in wanted.items()} == wanted
    for topic in REGISTRY.record_topics(settings):
        assert actual[topic]["retention.ms"] == "-1" and actual[topic]["retention.bytes"] == "-1", topic
    assert actual[settings.topic_segments]["retention.ms"] == str(3 * 24 * 3600 * 1000)


async def test_an_existing_record_topic_that_expires_is_reported(stack_env: StackEndpoints, unique: str) -> None:
    settings = _settings(unique)
    week = {"retention.ms": str(7 * 24 * 3600 * 1000)}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topic_captions, 1, 1, topic_configs=week)])
    finally:
        await admin.close()
    with capture_logs() as logs:
        await ensure_topics(settings, [settings.topic_captions], {settings.topic_captions: RECORD.configs()})
    differ = [e for e in logs if e["event"] == "topic_configs_differ"]
    assert [e["topic"] for e in differ] == [settings.topic_captions], logs
    assert differ[0]["broker"]["retention.ms"] == week["retention.ms"]
    # Reported, not changed: an operator's override is the operator's to undo.
    described = await _describe(settings.kafka_bootstrap, [settings.topic_captions])
    assert described[settings.topic_captions]["retention.ms"] == week["retention.ms"]
