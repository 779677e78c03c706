"""docker/compose.yaml wires the production stack as designed (parsed, not run: no Docker engine here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
TOPICS = ["media.objects", "media.segments", "media.captions", "media.embeddings"]
WORKERS = ["decode-worker", "caption-worker", "embed-worker"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs = compose["services"]
    assert isinstance(svcs, dict)
    return svcs


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _command_text(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return cmd if isinstance(cmd, str) else "\n".join(str(c) for c in cmd)


def _flag(args: list[str], name: str) -> str:
    """Value of ``--name VALUE`` or ``--name=VALUE`` in an argv list."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {args}")


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    assert isinstance(deps, dict), "depends_on must use the long form with conditions"
    return {name: spec["condition"] for name, spec in deps.items()}


def test_expected_services(services: dict[str, Any]) -> None:
    expected = {
        "kafka",
        "kafka-init",
        "redis",
        "minio",
        "minio-init",
        "vllm-caption",
        "vllm-embed",
        *WORKERS,
    }
    assert expected <= set(services)


def test_kafka_is_apache_kraft_single_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.0"
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "ZOOKEEPER" not in " ".join(env).upper()
    assert "healthcheck" in kafka


def test_init_container_creates_topics_and_dlqs(services: dict[str, Any]) -> None:
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"]
    assert _depends(init) == {"kafka": "service_healthy"}
    assert init.get("restart") in ("no", None)
    script = _command_text(init)
    created = set(re.findall(r"^\s*create\s+(\S+)", script, flags=re.MULTILINE))
    assert created == {*TOPICS, *(f"{t}.dlq" for t in TOPICS)}
    assert "--if-not-exists" in script  # safe to re-run on every `up`


def test_redis(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    assert "redis-cli" in json.dumps(redis["healthcheck"]["test"])


def test_minio_publishes_object_events_to_kafka(services: dict[str, Any]) -> None:
    minio = services["minio"]
    env = _env(minio)
    assert env["MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY"] == "on"
    assert env["MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY"] == "kafka:9092"
    assert env["MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY"] == "media.objects"
    assert _depends(minio)["kafka-init"] == "service_completed_successfully"
    assert "healthcheck" in minio

    init = services["minio-init"]
    assert "mc" in str(init["image"])
    assert _depends(init) == {"minio": "service_healthy"}
    script = _command_text(init)
    assert re.search(r"mc mb\b.*\blocal/media\b", script)
    assert re.search(r"mc event add\b.*local/media arn:minio:sqs::PRIMARY:kafka --event put", script)


def test_vllm_servers(services: dict[str, Any]) -> None:
    caption = services["vllm-caption"]
    assert str(caption["image"]).startswith("vllm/vllm-openai:")
    args = [str(a) for a in caption["command"]]
    assert args[0] == "Qwen/Qwen3-VL-4B-Instruct"
    assert _flag(args, "--max-model-len") == "32768"
    assert json.loads(_flag(args, "--limit-mm-per-prompt")) == {"image": 8, "video": 0}
    assert _flag(args, "--mm-processor-cache-gb") == "0"

    embed = services["vllm-embed"]
    args = [str(a) for a in embed["command"]]
    assert args[0] == "Qwen/Qwen3-Embedding-8B"
    assert _flag(args, "--runner") == "pooling"

    for server in (caption, embed):
        assert server["entrypoint"] == ["vllm", "serve"]
        assert _flag([str(a) for a in server["command"]], "--port") == "8000"
        devices = server["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
        assert "/health" in json.dumps(server["healthcheck"]["test"])


def test_workers_wiring(services: dict[str, Any]) -> None:
    common = {
        "CAPSTREAM_KAFKA_BOOTSTRAP": "kafka:9092",
        "CAPSTREAM_REDIS_URL": "redis://redis:6379/0",
        "CAPSTREAM_S3_ENDPOINT_URL": "http://minio:9000",
        "CAPSTREAM_S3_BUCKET": "media",
    }
    minio_env = _env(services["minio"])
    for name in WORKERS:
        env = _env(services[name])
        for key, value in common.items():
            assert env[key] == value, (name, key)
        # workers use MinIO's credentials
        assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
        assert env["AWS_DEFAULT_REGION"] == "us-east-1"
        deps = _depends(services[name])
        assert deps["kafka-init"] == "service_completed_successfully"
        assert deps["redis"] == "service_healthy"

    decode = services["decode-worker"]
    assert decode["build"]["dockerfile"] == "docker/Dockerfile.decode"
    assert decode["command"] == ["worker", "decode"]
    assert _depends(decode)["minio-init"] == "service_completed_successfully"

    caption = services["caption-worker"]
    env = _env(caption)
    assert caption["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert caption["command"] == ["worker", "caption"]
    assert env["CAPSTREAM_CAPTION_BACKEND"] == "openai"
    assert env["CAPSTREAM_CAPTION_OPENAI_URL"] == "http://vllm-caption:8000/v1"
    assert env["CAPSTREAM_CAPTION_MODEL"] == services["vllm-caption"]["command"][0]
    assert _depends(caption)["vllm-caption"] == "service_healthy"

    embed = services["embed-worker"]
    env = _env(embed)
    assert embed["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert embed["command"] == ["worker", "embed"]
    assert env["CAPSTREAM_EMBED_BACKEND"] == "openai"
    assert env["CAPSTREAM_EMBED_OPENAI_URL"] == "http://vllm-embed:8000/v1"
    assert env["CAPSTREAM_EMBED_MODEL"] == services["vllm-embed"]["command"][0]
    assert _depends(embed)["vllm-embed"] == "service_healthy"


def test_every_dependency_exists_and_build_contexts_resolve(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dep in _depends(service) if "depends_on" in service else {}:
            assert dep in services, (name, dep)
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()


def test_dockerfiles() -> None:
    decode = (DOCKER / "Dockerfile.decode").read_text()
    assert re.search(r"^FROM python:3\.11-slim", decode, flags=re.MULTILINE)
    assert "pip install ." in decode
    assert 'ENTRYPOINT ["capstream"]' in decode and 'CMD ["worker", "decode"]' in decode
    assert not re.search(r"^RUN .*apt-get", decode, flags=re.MULTILINE)  # PyAV wheels bundle FFmpeg

    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    assert re.search(r"^ARG VLLM_IMAGE=vllm/vllm-openai:v\d", gpu, flags=re.MULTILINE)
    assert "FROM ${VLLM_IMAGE}" in gpu
    assert "pip install -c /tmp/vllm-constraints.txt ." in gpu  # never re-resolves vllm/torch
    assert not re.search(r"pip install[^\n]*\.\[", gpu)  # no extras: [gpu] would re-resolve vllm
    assert 'ENTRYPOINT ["capstream"]' in gpu and 'CMD ["worker", "caption"]' in gpu
    for name in ("Dockerfile.decode", "Dockerfile.gpu"):
        ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
        assert ignore[0] != "!" and "*" in ignore and "!workers/" in ignore


def _docker_compose_available() -> str | None:
    """None if `docker compose` works, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        proc = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker compose version` failed: {exc}"
    if proc.returncode != 0:
        first_line = ((proc.stderr or proc.stdout).strip().splitlines() or [""])[0]
        return f"`docker compose version` exited {proc.returncode}: {first_line[:200]}"
    return None


def test_docker_compose_config_validates() -> None:
    reason = _docker_compose_available()
    if reason is not None:
        pytest.skip(f"docker compose plugin unavailable ({reason})")
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
