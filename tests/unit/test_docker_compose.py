"""docker/compose.yaml is valid Compose and means what the pipeline needs (no Docker engine here).

Validity: the Compose Specification's JSON schema (the copy check-jsonschema ships, Apache-2.0)
and ``podman-compose config`` (podman-compose parses, merges and interpolates the file the way
it would run it; it needs Debian's ``podman``, which ``make system-deps`` installs).
Meaning: the checks in ``tests/compose_checks.py``, each run on the real file and on a copy
with a fault planted, so every check is seen to fail when its fault is there.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests import compose_checks as cc
from workers import engine_version as ev
from workers.stages import REGISTRY

DOCKER = cc.ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> cc.Compose:
    return cc.load(cc.COMPOSE)


@pytest.fixture(scope="module")
def loops(compose: cc.Compose) -> dict[str, list[cc.StageLoopView]]:
    return cc.worker_loops(compose)


def plant(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    """A copy of compose.yaml (beside a docker/ folder, so relative paths resolve alike)
    with ``old`` replaced by ``new`` ``count`` times."""
    text = cc.COMPOSE.read_text()
    assert text.count(old) >= count, f"fault site {old!r} not in compose.yaml"
    path = tmp_path / "docker" / "compose.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace(old, new, count))
    return path


# -- validity -------------------------------------------------------------------------------
def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    assert "Apache License" in (vendor / "licenses" / "LICENSE.compose-spec").read_text()
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def schema_errors(path: Path) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    document = yaml.safe_load(path.read_text())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_matches_the_compose_specification_schema() -> None:
    assert compose_schema()["title"] == "Compose Specification"
    assert schema_errors(cc.COMPOSE) == []


def test_schema_rejects_a_bad_depends_on_condition(tmp_path: Path) -> None:
    bad = plant(tmp_path, "condition: service_healthy", "condition: service_ready")
    errors = schema_errors(bad)
    assert errors and any("depends_on" in e for e in errors), errors


@pytest.mark.impure  # podman-compose
def test_podman_compose_config_accepts_compose() -> None:
    proc = cc.podman_compose_config(cc.COMPOSE)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config["name"] == "capstream"
    # Interpolated with the defaults, as it would run.
    caption_server = cc.argv(config["services"]["vllm-caption"]["command"])
    assert cc.flag(caption_server, "--gpu-memory-utilization") == "0.90"
    assert cc.env_of(config["services"]["decode-worker"])["AWS_ACCESS_KEY_ID"] == "capstream"


@pytest.mark.impure  # podman-compose
def test_compose_refuses_to_start_without_its_secrets() -> None:
    """No known password to fall back to: without MINIO_ROOT_PASSWORD or
    CAPSTREAM_SERVE_S3_SECRET the file does not resolve (podman-compose, and the checks' reader)."""
    for missing in cc.SECRETS:
        secrets = {k: v for k, v in cc.SECRETS.items() if k != missing}
        proc = cc.podman_compose_config(cc.COMPOSE, secrets)
        assert proc.returncode != 0 and f"required variable {missing} is missing" in proc.stderr, proc.stderr[-500:]
        with pytest.raises(cc.MissingVariable, match=missing):
            cc.load(cc.COMPOSE, secrets)
    assert "capstream-secret" not in cc.COMPOSE.read_text()


@pytest.mark.impure  # podman-compose
def test_checks_read_the_file_as_podman_compose_does(compose: cc.Compose) -> None:
    """The checks read the file in-process (``cc.load``); podman-compose resolves it the same
    way, build sections aside (it makes paths absolute)."""

    def comparable(doc: cc.Compose) -> dict[str, Any]:
        return {name: {k: v for k, v in svc.items() if k != "build"} for name, svc in doc["services"].items()}

    assert comparable(compose) == comparable(cc.resolved(cc.COMPOSE))


@pytest.mark.impure  # podman-compose
def test_podman_compose_config_rejects_a_bad_depends_on_condition(tmp_path: Path) -> None:
    bad = plant(tmp_path, "condition: service_completed_successfully", "condition: service_finished")
    proc = cc.podman_compose_config(bad)
    assert proc.returncode != 0
    assert "not a valid condition" in proc.stderr


# -- meaning --------------------------------------------------------------------------------
Check = Callable[[cc.Compose, dict[str, list[cc.StageLoopView]]], list[str]]
CHECKS: dict[str, Check] = {
    "stages": lambda c, lp: cc.check_stages_deployed(c),
    "topics": cc.check_topics_exist,
    "retention": lambda c, lp: cc.check_retention(c),
    "replicas": lambda c, lp: cc.check_partitions_cover_replicas(c, lp, cc.scaled_objects()),
    "dependencies": lambda c, lp: cc.check_dependencies(c),
    "endpoints": lambda c, lp: cc.check_endpoints(c),
    "redis": lambda c, lp: cc.check_redis_persistence(c),
    "limits": lambda c, lp: cc.check_limits(c),
    "healthchecks": lambda c, lp: cc.check_worker_healthchecks(c),
    "index": lambda c, lp: cc.check_shared_index(c),
}

# (check, text in compose.yaml, its faulty replacement, what the problem must mention)
FAULTS = [
    ("stages", 'command: ["worker", "embed"]', 'command: ["worker", "embedder"]', "capstream worker embed`"),
    (
        "topics",
        "        create media.removals 4 --config retention.ms=-1 --config retention.bytes=-1\n",
        "",
        "media.removals",
    ),
    ("topics", "create media.captions.dlq 1", "create media.captions-dlq 1", "media.captions.dlq"),
    (
        "retention",
        "create media.captions 12 --config retention.ms=-1",
        "create media.captions 12 --config retention.ms=604800000",
        "media.captions (record) has retention.ms=604800000",
    ),
    (
        "retention",
        "create media.embeddings 4 --config retention.ms=-1 --config retention.bytes=-1",
        "create media.embeddings 4",
        "media.embeddings (record) has no retention.ms",
    ),
    ("replicas", "create media.objects 4", "create media.objects 2", "2 partitions of media.objects"),
    ("dependencies", "condition: service_completed_successfully", "condition: service_healthy", "one-shot kafka-init"),
    (
        "dependencies",
        '    healthcheck:\n      test: ["CMD", "redis-cli", "ping"]',
        "    labels:\n      test: x",
        "redis has no health check",
    ),
    (
        "endpoints",
        "http://vllm-caption:8000/v1",
        "http://vllm-caption:8001/v1",
        "vllm serve of Qwen/Qwen3-VL-4B-Instruct",
    ),
    (
        "endpoints",
        "CAPSTREAM_EMBED_MODEL: Qwen/Qwen3-Embedding-8B",
        "CAPSTREAM_EMBED_MODEL: Qwen/Qwen3-Embedding-0.6B",
        "Qwen3-Embedding-0.6B",
    ),
    (  # every model stage of the registry is checked, not a list of them
        "endpoints",
        "http://vllm-whisper:8000/v1",
        "http://vllm-caption:8000/v1",
        "vllm serve of openai/whisper-large-v3-turbo",
    ),
    (
        "endpoints",
        "CAPSTREAM_REDIS_URL: redis://redis:6379/0",
        "CAPSTREAM_REDIS_URL: redis://cache:6379/0",
        "redis://cache",
    ),
    (  # serve signs links as the root user
        "endpoints",
        "      AWS_ACCESS_KEY_ID: capstream-serve\n",
        "      AWS_ACCESS_KEY_ID: ${MINIO_ROOT_USER:-capstream}\n",
        "serve: signs with MinIO's root user",
    ),
    (
        "endpoints",
        "      AWS_ACCESS_KEY_ID: capstream-serve\n",
        "      AWS_ACCESS_KEY_ID: someone-else\n",
        "serve: its AWS credentials are not the user minio-init creates",
    ),
    (
        "endpoints",
        '|| mc admin policy attach local readonly --user "$$SERVE_S3_USER"',
        '|| mc admin policy attach local readwrite --user "$$SERVE_S3_USER"',
        "does not give its user the readonly policy",
    ),
    ("redis", '"--appendonly", "yes"', '"--appendonly", "no"', "appendonly=no"),
    ("limits", "memory: 6G", "memory: 4G", "decode-worker: memory 4G"),
    ("limits", 'CAPSTREAM_DECODE_THREADS: "2"', 'CAPSTREAM_DECODE_THREADS: "0"', "CAPSTREAM_DECODE_THREADS=0"),
    (
        "limits",
        'well under a megabyte.\n          cpus: "1"\n          memory: 512M\n',
        "well under a megabyte.\n          pids: 100\n",
        "embed-worker has no CPU and memory limits",
    ),
    ("healthchecks", "127.0.0.1:9100/metrics", "127.0.0.1:9101/metrics", "is not http://127.0.0.1:9100/metrics"),
    ("healthchecks", "CAPSTREAM_METRICS_HOST: 0.0.0.0", "CAPSTREAM_METRICS_HOST: 127.0.0.1", "unreachable"),
    (
        "index",
        "index-data:/var/lib/capstream/index:ro",
        "index-data:/var/lib/capstream/index",
        "mounts the index writable",
    ),
    (
        "index",
        "      - index-data:/var/lib/capstream/index\n",
        "      - other-data:/var/lib/capstream/index\n",
        "different volumes",
    ),
]


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_compose_passes_check(check: str, compose: cc.Compose, loops: dict[str, list[cc.StageLoopView]]) -> None:
    assert CHECKS[check](compose, loops) == []


@pytest.mark.parametrize(("check", "old", "new", "mention"), FAULTS, ids=[f"{f[0]}-{f[3][:30]}" for f in FAULTS])
def test_check_catches_planted_fault(check: str, old: str, new: str, mention: str, tmp_path: Path) -> None:
    path = plant(tmp_path, old, new)
    if "other-data" in new:  # a volume of its own must be declared, or the file is invalid
        path.write_text(path.read_text() + "  other-data:\n")
    faulty = cc.load(path)
    problems = CHECKS[check](faulty, cc.worker_loops(faulty))
    assert any(mention in p for p in problems), problems


def test_workers_consume_what_kafka_init_creates_and_minio_publishes(
    compose: cc.Compose, loops: dict[str, list[cc.StageLoopView]]
) -> None:
    stages = {v.stage for views in loops.values() for v in views}
    assert set(REGISTRY.required_names()) <= stages
    # A stage with two consumer groups runs both in its one service.
    embed_groups = {(v.group, v.input_topic) for v in loops["embed-worker"]}
    assert embed_groups == {("capstream-embed", "media.captions"), ("capstream-embed-speech", "media.transcripts")}
    decode_input = next(v.input_topic for v in loops["decode-worker"])
    minio = cc.env_of(compose["services"]["minio"])
    assert minio["MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY"] == decode_input
    assert (
        minio["MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY"]
        == cc.env_of(compose["services"]["decode-worker"])["CAPSTREAM_KAFKA_BOOTSTRAP"]
    )
    # Decode turns deletions into removals for the index: MinIO must send them.
    rule = re.search(r"mc event add .* --event (\S+)", "\n".join(cc.argv(compose["services"]["minio-init"]["command"])))
    assert rule is not None and {"put", "delete"} <= set(rule.group(1).split(","))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.impure  # the health check in a child process
def test_worker_healthcheck_command_reads_a_real_metrics_endpoint(compose: cc.Compose) -> None:
    """The health check's own command, against a worker's real /metrics server: healthy while
    it answers, unhealthy where nothing listens (the port is moved to a free one: the check's
    port itself is checked against CAPSTREAM_METRICS_PORT above)."""
    from workers.runtime.metrics import WorkerMetrics

    service = compose["services"]["decode-worker"]
    test = cc.argv(service["healthcheck"]["test"])
    assert test[0] == "CMD" and test[1] == "python3"
    url = cc.healthcheck_url(service)
    assert url is not None

    def run_check(port: int) -> int:
        args = [sys.executable, *(a.replace(url, re.sub(r":\d+/", f":{port}/", url)) for a in test[2:])]
        return subprocess.run(args, capture_output=True, timeout=30).returncode

    port = WorkerMetrics().serve(0, "127.0.0.1")
    assert run_check(port) == 0
    assert run_check(_free_port()) != 0


# -- the vllm serve commands are valid for the pinned vLLM ------------------------------------
def parse_vllm_serve(args: list[str]) -> Any:
    """``vllm serve ARGS`` parsed by the installed vLLM's own parser (the release
    tests/unit/test_engine_version.py holds everything to)."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand()
    serve.subparser_init(parser.add_subparsers(dest="subparser"))
    parsed = parser.parse_args(["serve", *args])
    serve.validate(parsed)
    return parsed


@pytest.mark.impure  # importing vLLM probes the machine in child processes (uname, file)
def test_vllm_serve_commands_parse_with_the_pinned_vllm(compose: cc.Compose) -> None:
    from workers.caption.backend import vllm_serve_caption_args
    from workers.settings import CaptionSettings

    servers = {name: svc for name, svc in compose["services"].items() if cc.runs_vllm_serve(svc)}
    assert set(servers) == {"vllm-caption", "vllm-embed", "vllm-whisper"}
    parsed = {name: parse_vllm_serve(cc.argv(svc["command"])) for name, svc in servers.items()}
    with cc.service_environment(compose["services"]["caption-worker"]):
        caption = CaptionSettings()
    # The server accepts every frame and the context a caption worker sends, as images or as
    # one video whose frame times ride in the request (what the caption backend says it needs).
    assert parsed["vllm-caption"].limit_mm_per_prompt["image"] >= caption.caption_max_images
    needed = parse_vllm_serve(["Qwen/Qwen3-VL-4B-Instruct", *vllm_serve_caption_args(caption)])
    assert parsed["vllm-caption"].limit_mm_per_prompt["video"] >= needed.limit_mm_per_prompt["video"]
    assert parsed["vllm-caption"].trust_request_mm_kwargs >= needed.trust_request_mm_kwargs
    assert parsed["vllm-caption"].structured_outputs_config == needed.structured_outputs_config
    assert parsed["vllm-caption"].max_model_len >= caption.caption_max_model_len
    assert parsed["vllm-embed"].runner == "pooling"
    # Whisper needs no flag for /v1/audio/transcriptions; --task, which older guides pass, is
    # gone from this vLLM.
    assert parsed["vllm-whisper"].runner == "auto"
    with pytest.raises(SystemExit):
        parse_vllm_serve([*cc.argv(servers["vllm-whisper"]["command"]), "--task", "transcription"])
    with pytest.raises(SystemExit):  # the parser does reject what this vLLM does not know
        parse_vllm_serve([*cc.argv(servers["vllm-caption"]["command"]), "--limit-frames-per-prompt", "8"])


# -- images ---------------------------------------------------------------------------------
def test_build_contexts_resolve(compose: cc.Compose) -> None:
    built = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert built
    for name, build in built.items():
        context = cc.COMPOSE.parent / build["context"]
        assert context.resolve() == cc.ROOT, name
        assert (context / build["dockerfile"]).is_file(), name


def test_dockerfiles() -> None:
    decode = (DOCKER / "Dockerfile.decode").read_text()
    assert re.search(r"^FROM python:3\.11-slim", decode, flags=re.MULTILINE)
    assert not re.search(r"^RUN .*apt-get", decode, flags=re.MULTILINE)  # PyAV wheels bundle FFmpeg
    assert "USER capstream" in decode
    # The index volume's mount point belongs to the unprivileged user (named volumes copy it).
    assert re.search(r"chown capstream /var/lib/capstream/index", decode)

    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    assert "FROM ${VLLM_IMAGE}" in gpu
    assert "pip install -c /tmp/vllm-constraints.txt ." in gpu  # never re-resolves vllm/torch
    assert not re.search(r"pip install[^\n]*\.\[", gpu)  # no extras: [gpu] would re-resolve vllm
    assert "python3 -m workers.engine_version check" in gpu  # another vLLM fails the build
    for name in ("Dockerfile.decode", "Dockerfile.gpu"):
        assert 'ENTRYPOINT ["capstream"]' in (DOCKER / name).read_text()
        ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
        assert ignore[0] != "!" and "*" in ignore and "!workers/" in ignore


VLLM_IMAGE_ARG = re.compile(r"^ARG VLLM_IMAGE=(\S+)", flags=re.MULTILINE)


def vllm_server_image_problems(compose: cc.Compose) -> list[str]:
    """Every ``vllm serve`` service runs the tested vLLM release: its image is the release's,
    or one built FROM it (the ``VLLM_IMAGE`` build argument and the Dockerfile's default are
    the release, and the build stops on another one)."""
    problems = []
    for name, svc in compose["services"].items():
        if not cc.runs_vllm_serve(svc) or svc.get("image") == ev.VLLM_IMAGE:
            continue
        build = svc.get("build") or {}
        dockerfile = cc.COMPOSE.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        text = dockerfile.read_text() if "build" in svc and dockerfile.is_file() else ""
        if (build.get("args") or {}).get("VLLM_IMAGE") != ev.VLLM_IMAGE or VLLM_IMAGE_ARG.findall(text) != [
            ev.VLLM_IMAGE
        ]:
            problems.append(f"{name}: image {svc.get('image')} is neither {ev.VLLM_IMAGE} nor built FROM it")
        elif "engine_version.py check" not in text:
            problems.append(f"{name}: {dockerfile.name} does not stop on another vLLM release")
    return problems


def test_vllm_servers_run_the_release(compose: cc.Compose) -> None:
    assert vllm_server_image_problems(compose) == []
    # Whisper's server is the release plus vLLM's audio extra, which the published image lacks.
    assert compose["services"]["vllm-whisper"]["build"]["dockerfile"] == "docker/Dockerfile.vllm-audio"
    audio = (DOCKER / "Dockerfile.vllm-audio").read_text()
    assert '"vllm[audio]==$(python3 /tmp/engine_version.py)"' in audio
    ignore = (DOCKER / "Dockerfile.vllm-audio.dockerignore").read_text().split()
    assert "*" in ignore and "!workers/engine_version.py" in ignore


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "        VLLM_IMAGE: *vllm-image\n    entrypoint",
            "        VLLM_IMAGE: vllm/vllm-openai:v0.11.0\n    entrypoint",
        ),
        ("    image: *vllm-image\n", "    image: capstream-vllm-audio:latest\n"),
    ],
)
def test_vllm_server_image_check_catches_another_release(old: str, new: str, tmp_path: Path) -> None:
    problems = vllm_server_image_problems(cc.load(plant(tmp_path, old, new)))
    assert any("is neither" in p for p in problems), problems
