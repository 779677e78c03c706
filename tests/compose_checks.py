"""What ``docker/compose.yaml`` must mean, as checks that return the problems they find.

There is no Docker engine on the machines that test capstream, so the compose file is
checked for what it says rather than run: each check reads the file (after ``podman-compose
config`` resolved its anchors and ``${VAR:-default}`` values) and returns a list of problems,
empty when the file is right. ``tests/unit/test_docker_compose.py`` runs every check on the
real file and on a copy with a fault planted, so each check is shown to catch its fault.

Stages, topics and consumer groups come from the stage registry (``workers.stages``), resolved
with each worker service's environment, so a topic renamed in the settings, a stage that
starts producing a new topic or a newly registered stage is checked without editing this
file (``tests/unit/test_stages.py`` shows the registry agrees with the loops the workers build).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from loadtest.decode_memory import WORST_PEAK_BYTES
from workers.runtime.kafka import dlq_topic
from workers.runtime.retention import TopicRetention, retention_problems
from workers.settings import ModelServing
from workers.stages import REGISTRY, StageRegistry

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
AUTOSCALING = ROOT / "docker" / "k8s" / "autoscaling.yaml"
# Peak RSS of one decode on the worst input its per-object budgets accept (an 8192x8192 video
# at 16 codec threads), imports included: measured by loadtest/decode_memory.py, held by
# tests/unit/test_decode_memory.py.
DECODE_WORST_PEAK_BYTES = WORST_PEAK_BYTES
DECODE_MEMORY_HEADROOM = 1.25  # at least this much above in-flight objects x worst peak
ONE_SHOT_CONDITION = "service_completed_successfully"

Compose = dict[str, Any]


# The secrets a deployment's docker/.env must set: the file has no default for them.
SECRETS = {"MINIO_ROOT_PASSWORD": "root-secret-of-the-test", "CAPSTREAM_SERVE_S3_SECRET": "serve-secret-of-the-test"}


class MissingVariable(ValueError):
    pass


def podman_compose_config(path: Path, secrets: dict[str, str] = SECRETS) -> subprocess.CompletedProcess[str]:
    """``podman-compose -f PATH config``: parse, merge and interpolate as podman-compose runs it."""
    exe = Path(sys.executable).with_name("podman-compose")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS} | secrets
    return subprocess.run(
        [str(exe), "-f", str(path), "config"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )


def resolved(path: Path) -> Compose:
    proc = podman_compose_config(path)
    if proc.returncode != 0:
        raise AssertionError(f"podman-compose config failed: {proc.stderr[-2000:]}")
    data = yaml.safe_load(proc.stdout)
    assert isinstance(data, dict)
    return data


_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\})")


def _substitute(match: re.Match[str], env: dict[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    name, kind, word = match.group(1), match.group(2), match.group(3) or ""
    if value := env.get(name):
        return value
    if kind == "?":
        raise MissingVariable(f"required variable {name} is missing a value: {word}")
    return word


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` (raises
    ``MissingVariable`` when unset), ``$$`` for a literal ``$``."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: _substitute(m, env), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def load(path: Path, secrets: dict[str, str] = SECRETS) -> Compose:
    """The file as ``podman-compose config`` resolves it with only the required secrets set
    (anchors and merge keys by PyYAML, defaults by ``interpolate``), without a subprocess per
    read: ``test_docker_compose`` shows the two agree on the real file."""
    data = interpolate(yaml.safe_load(path.read_text()), secrets)
    assert isinstance(data, dict)
    return data


# -- reading services ---------------------------------------------------------------------
def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def worker_stage(service: dict[str, Any]) -> str | None:
    """The stage a ``capstream worker STAGE`` service runs, else None."""
    cmd = argv(service.get("command"))
    return cmd[1] if len(cmd) == 2 and cmd[0] == "worker" else None


def runs_vllm_serve(service: dict[str, Any]) -> bool:
    return argv(service.get("entrypoint"))[:2] == ["vllm", "serve"]


def runs_capstream(service: dict[str, Any]) -> bool:
    return worker_stage(service) is not None or argv(service.get("command"))[:1] == ["serve"]


def flag(args: list[str], name: str) -> str | None:
    """Value of ``--name VALUE`` or ``--name=VALUE``."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: started, not healthy
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def created_topics(compose: Compose) -> dict[str, int]:
    """Topic -> partitions, from kafka-init's ``create NAME PARTITIONS`` calls."""
    script = "\n".join(argv(compose["services"]["kafka-init"].get("command")))
    return {name: int(parts) for name, parts in re.findall(r"^\s*create\s+(\S+)\s+(\d+)", script, flags=re.M)}


def created_topic_configs(compose: Compose) -> dict[str, dict[str, str]]:
    """Topic -> the ``--config key=value`` settings kafka-init creates it with."""
    script = "\n".join(argv(compose["services"]["kafka-init"].get("command")))
    return {
        name: dict(kv.split("=", 1) for kv in re.findall(r"--config\s+(\S+=\S+)", rest))
        for name, rest in re.findall(r"^\s*create\s+(\S+)\s+\d+(.*)$", script, flags=re.M)
    }


def memory_bytes(value: str | int) -> int:
    """Compose byte values: ``1536M``, ``2g``, ``512m``, ``1073741824``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(value).strip().lower())
    if match is None:
        raise ValueError(f"not a compose byte value: {value!r}")
    scale = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * scale)


def limits(service: dict[str, Any]) -> dict[str, Any]:
    return ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}


# -- the workers' own view of their topics ------------------------------------------------
@dataclass(frozen=True)
class StageLoopView:
    stage: str
    group: str
    input_topic: str
    output_topics: tuple[str, ...]


@contextmanager
def service_environment(service: dict[str, Any]) -> Iterator[None]:
    """The process environment a container of ``service`` would see (capstream's part)."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(("CAPSTREAM_", "AWS_"))]:
            del os.environ[key]
        os.environ.update(env_of(service))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def stage_loops(service: dict[str, Any], registry: StageRegistry = REGISTRY) -> list[StageLoopView]:
    """The consumer loops ``capstream worker STAGE`` runs with this service's environment."""
    stage = worker_stage(service)
    assert stage is not None
    spec = registry[stage]
    with service_environment(service):
        settings = spec.load_settings()
    outputs = tuple(spec.output_topics(settings))
    groups = {c.name: (getattr(settings, c.group_field), getattr(settings, c.topic_field)) for c in spec.consumers}
    return [StageLoopView(name, group, topic, outputs) for name, (group, topic) in groups.items()]


def worker_loops(compose: Compose, registry: StageRegistry = REGISTRY) -> dict[str, list[StageLoopView]]:
    services = compose["services"].items()
    return {name: stage_loops(svc, registry) for name, svc in services if worker_stage(svc) in registry.names()}


# -- checks: each returns its problems ----------------------------------------------------
def check_stages_deployed(compose: Compose, registry: StageRegistry = REGISTRY) -> list[str]:
    """Every registered stage that is no add-on has a ``capstream worker STAGE`` service, and
    every worker service runs a registered stage."""
    deployed = {stage: name for name, svc in compose["services"].items() if (stage := worker_stage(svc))}
    problems = [
        f"no service runs `capstream worker {spec.name}`"
        for spec in registry
        if spec.required and spec.name not in deployed
    ]
    return problems + [
        f"{name} runs `capstream worker {stage}`, no registered stage"
        for stage, name in deployed.items()
        if stage not in registry.names()
    ]


def check_topics_exist(compose: Compose, loops: dict[str, list[StageLoopView]]) -> list[str]:
    """Every topic a worker consumes or produces, and the dead-letter topic of each one it
    consumes, is created by kafka-init (auto-create is off: no partition count by accident)."""
    created = created_topics(compose)
    problems = []
    for name, views in loops.items():
        for view in views:
            needed = {view.input_topic, dlq_topic(view.input_topic), *view.output_topics}
            problems += [
                f"{name} ({view.stage}) uses {t}, which kafka-init does not create"
                for t in sorted(needed - set(created))
            ]
    return problems


def check_retention(compose: Compose, registry: StageRegistry = REGISTRY) -> list[str]:
    """Every topic a worker uses is created with the retention its role in the registry
    declares: the record topics (what Redis and the index are rebuilt from) kept forever."""
    created = created_topic_configs(compose)
    roles: dict[str, TopicRetention] = {}
    for svc in compose["services"].values():
        if (stage := worker_stage(svc)) not in registry.names():
            continue
        with service_environment(svc):
            roles.update(registry.topic_retention(registry[stage].load_settings()))
    return [
        p for topic, role in roles.items() if topic in created for p in retention_problems(topic, role, created[topic])
    ]


def scaled_objects(path: Path = AUTOSCALING) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return [d for d in docs if d.get("kind") == "ScaledObject"]


def check_partitions_cover_replicas(
    compose: Compose, loops: dict[str, list[StageLoopView]], scaled: list[dict[str, Any]]
) -> list[str]:
    """The scaling docs' replica ceilings (KEDA ScaledObjects' ``maxReplicaCount``) never
    exceed the partitions of the topics they scale on (replicas beyond them sit idle), and
    each Kafka trigger names a consumer group and topic that a worker really uses."""
    created = created_topics(compose)
    used = {(v.group, v.input_topic) for views in loops.values() for v in views}
    problems = []
    triggers = 0
    for obj in scaled:
        name = obj["metadata"]["name"]
        spec = obj["spec"]
        for trigger in spec.get("triggers", []):
            if trigger.get("type") != "kafka":
                continue
            triggers += 1
            meta = trigger["metadata"]
            topic, group = meta["topic"], meta["consumerGroup"]
            if (group, topic) not in used:
                problems.append(f"{name}: no worker consumes {topic} as group {group}")
            partitions = created.get(topic)
            if partitions is None:
                problems.append(f"{name}: {topic} is not created by kafka-init")
            elif int(spec["maxReplicaCount"]) > partitions:
                problems.append(
                    f"{name}: maxReplicaCount {spec['maxReplicaCount']} > {partitions} partitions of {topic}"
                )
    if triggers == 0:
        problems.append("no ScaledObject with a Kafka trigger: nothing recommends replica counts")
    return problems


def check_dependencies(compose: Compose) -> list[str]:
    """Dependencies exist; one-shot services are awaited to completion, and a service is
    awaited healthy only if it has a health check."""
    services = compose["services"]
    problems = []
    for name, svc in services.items():
        for dep, condition in depends(svc).items():
            target = services.get(dep)
            if target is None:
                problems.append(f"{name} depends on {dep}, which is not a service")
                continue
            one_shot = str(target.get("restart", "no")) == "no"
            if one_shot and condition != ONE_SHOT_CONDITION:
                problems.append(f"{name} waits for one-shot {dep} with {condition}, not {ONE_SHOT_CONDITION}")
            if condition == "service_healthy" and not (target.get("healthcheck") or {}).get("test"):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no health check")
    return problems


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    return parts.hostname or "", parts.port


def model_servings(service: dict[str, Any], registry: StageRegistry = REGISTRY) -> list[ModelServing]:
    """The models a capstream service calls, as it resolves them from its environment: a
    model stage's worker its stage's model (every ``ModelStageSettings`` stage of the
    registry), ``serve`` the embed model (it embeds queries)."""
    from workers.settings import EmbedSettings, ModelStageSettings

    stage = worker_stage(service)
    with service_environment(service):
        if stage is None:
            return [EmbedSettings().serving] if runs_capstream(service) else []
        settings = registry[stage].load_settings() if stage in registry.names() else None
    return [settings.serving] if isinstance(settings, ModelStageSettings) else []


def check_endpoints(compose: Compose, registry: StageRegistry = REGISTRY) -> list[str]:
    """Each worker's Kafka, Redis, S3 and model URLs name a service of this file that is what
    the URL expects (a model server serving that very model on that port), and the worker
    waits for it."""
    from workers.settings import S3Settings

    services = compose["services"]
    problems = []

    def expect(name: str, url: str, what: str, is_it: Any) -> str | None:
        host, port = _host_port(url)
        target = services.get(host)
        if target is None or not is_it(target, port):
            problems.append(f"{name}: {what} {url} is not a {what} service of this file")
            return None
        return host

    minio_env = env_of(services.get("minio", {}))
    for name, svc in services.items():
        if not runs_capstream(svc):
            continue
        with service_environment(svc):
            s3 = S3Settings()
            aws = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        expect(name, s3.kafka_bootstrap, "kafka", lambda t, p: "kafka" in str(t.get("image")))
        expect(name, s3.redis_url, "redis", lambda t, p: "redis-server" in argv(t.get("command")))
        expect(name, s3.s3_endpoint_url or "", "s3", lambda t, p: argv(t.get("command"))[:1] == ["server"])
        root = {
            "AWS_ACCESS_KEY_ID": minio_env.get("MINIO_ROOT_USER"),
            "AWS_SECRET_ACCESS_KEY": minio_env.get("MINIO_ROOT_PASSWORD"),
        }
        if argv(svc.get("command"))[:1] == ["serve"]:
            problems.extend(_read_only_identity(name, aws, root, services.get("minio-init", {})))
        elif aws != root:
            problems.append(f"{name}: AWS credentials are not MinIO's root user")
        for serving in model_servings(svc, registry):
            if serving.backend != "openai":
                continue

            def serves_model(t: dict[str, Any], port: int | None, model: str = serving.served_name) -> bool:
                cmd = argv(t.get("command"))
                return runs_vllm_serve(t) and cmd[:1] == [model] and flag(cmd, "--port") == str(port)

            server = expect(name, serving.openai_url, f"vllm serve of {serving.served_name}", serves_model)
            if server and depends(svc).get(server) != "service_healthy":
                problems.append(f"{name} does not wait for {server} to be healthy")
    return problems


def _read_only_identity(
    name: str, aws: dict[str, str | None], root: dict[str, str | None], init: dict[str, Any]
) -> list[str]:
    """``serve`` signs links with an identity of its own that minio-init creates with MinIO's
    built-in ``readonly`` policy: never the root user, whose links could be anything."""
    if aws == root or aws.get("AWS_ACCESS_KEY_ID") == root.get("AWS_ACCESS_KEY_ID"):
        return [f"{name}: signs with MinIO's root user, not a read-only identity of its own"]
    init_env = env_of(init)
    script = " ".join(argv(init.get("command")))
    made = {
        k: init_env.get(v)
        for k, v in (("AWS_ACCESS_KEY_ID", "SERVE_S3_USER"), ("AWS_SECRET_ACCESS_KEY", "SERVE_S3_SECRET"))
    }
    problems = []
    if aws != made or 'mc admin user add local "$SERVE_S3_USER" "$SERVE_S3_SECRET"' not in script:
        problems.append(f"{name}: its AWS credentials are not the user minio-init creates")
    if 'mc admin policy attach local readonly --user "$SERVE_S3_USER"' not in script:
        problems.append(f"{name}: minio-init does not give its user the readonly policy")
    return problems


def check_redis_persistence(compose: Compose) -> list[str]:
    """The manual (docs/guarantees.md) promises that a Redis restart loses nothing: append-only file on, fsynced
    at least every second."""
    args = argv(compose["services"]["redis"].get("command"))
    config = {args[i].removeprefix("--"): args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--")}
    problems = []
    if config.get("appendonly") != "yes":
        problems.append(f"redis runs with appendonly={config.get('appendonly', 'no (default)')}")
    if config.get("appendfsync", "everysec") not in ("everysec", "always"):
        problems.append(f"redis fsyncs its AOF with {config['appendfsync']}: a restart can lose more than a second")
    return problems


def check_limits(compose: Compose) -> list[str]:
    """Every capstream process and model server has CPU and memory limits; the decode
    worker's memory covers its objects in flight at the worst measured peak, and its thread
    pool is no larger than its CPU limit (the default is the host's core count)."""
    from workers.settings import DecodeSettings

    problems = []
    for name, svc in compose["services"].items():
        if not (runs_capstream(svc) or runs_vllm_serve(svc)):
            continue
        lim = limits(svc)
        if not lim.get("cpus") or not lim.get("memory"):
            problems.append(f"{name} has no CPU and memory limits (deploy.resources.limits)")
            continue
        if worker_stage(svc) == "decode":
            with service_environment(svc):
                ds = DecodeSettings()
            need = ds.decode_max_in_flight * DECODE_WORST_PEAK_BYTES * DECODE_MEMORY_HEADROOM
            if memory_bytes(lim["memory"]) < need:
                problems.append(
                    f"{name}: memory {lim['memory']} < {ds.decode_max_in_flight} objects x "
                    f"{DECODE_WORST_PEAK_BYTES / 1e6:.0f} MB x {DECODE_MEMORY_HEADROOM}"
                )
            if not 0 < ds.decode_threads <= float(lim["cpus"]):
                problems.append(f"{name}: CAPSTREAM_DECODE_THREADS={ds.decode_threads} does not fit cpus={lim['cpus']}")
    return problems


def healthcheck_url(service: dict[str, Any]) -> str | None:
    test = " ".join(argv((service.get("healthcheck") or {}).get("test")))
    match = re.search(r"https?://[^'\"\s)]+", test)
    return match.group(0) if match else None


def check_worker_healthchecks(compose: Compose) -> list[str]:
    """Every worker serves /metrics (on all interfaces, so a scraper in another container
    reaches it) and its health check fetches that port; serve's fetches its /healthz."""
    from workers.settings import CommonSettings, SearchSettings

    problems = []
    for name, svc in compose["services"].items():
        if not runs_capstream(svc):
            continue
        url = healthcheck_url(svc)
        host, port = _host_port(url or "")
        with service_environment(svc):
            common = CommonSettings()
            serve_port = SearchSettings().serve_port
        if worker_stage(svc) is None:
            want = (serve_port, "/healthz")
        else:
            if common.metrics_port is None:
                problems.append(f"{name}: CAPSTREAM_METRICS_PORT is unset, no /metrics to check")
                continue
            if common.metrics_host != "0.0.0.0":
                problems.append(f"{name}: /metrics binds {common.metrics_host}, unreachable from other containers")
            want = (common.metrics_port, "/metrics")
        if url is None or port != want[0] or urlsplit(url).path != want[1] or host not in ("127.0.0.1", "localhost"):
            problems.append(f"{name}: health check {url} is not http://127.0.0.1:{want[0]}{want[1]}")
    return problems


def volume_mount(entry: str | dict[str, Any]) -> tuple[str, str, bool]:
    """(source, target, read-only) of a short (``src:dst[:ro]``) or long volume entry."""
    if isinstance(entry, dict):
        return str(entry.get("source")), str(entry.get("target")), bool(entry.get("read_only"))
    parts = entry.split(":")
    return parts[0], parts[1] if len(parts) > 1 else parts[0], "ro" in parts[2:]


def check_shared_index(compose: Compose) -> list[str]:
    """The index workers and serve see one index: the same named volume mounted where
    CAPSTREAM_INDEX_URI points, writable for the writers, read-only for serve."""
    from workers.settings import IndexSettings

    problems = []
    mounts: dict[str, tuple[str, bool]] = {}
    for name, svc in compose["services"].items():
        if worker_stage(svc) != "index" and argv(svc.get("command"))[:1] != ["serve"]:
            continue
        with service_environment(svc):
            uri = IndexSettings().index_uri
        found = [m for m in map(volume_mount, svc.get("volumes") or []) if m[1] == uri]
        if not found:
            problems.append(f"{name}: nothing is mounted at CAPSTREAM_INDEX_URI={uri}")
            continue
        mounts[name] = (found[0][0], found[0][2])
    sources = {src for src, _ in mounts.values()}
    if len(sources) > 1:
        problems.append(f"the index is on different volumes: {mounts}")
    writers = [n for n, svc in compose["services"].items() if worker_stage(svc) == "index"]
    readers = [n for n, svc in compose["services"].items() if argv(svc.get("command"))[:1] == ["serve"]]
    if not writers or not readers:
        problems.append(f"index writers {writers} and serve {readers} must both be in compose")
    problems += [f"{n} mounts the index read-only" for n in writers if mounts.get(n, ("", False))[1]]
    problems += [f"{n} (a reader) mounts the index writable" for n in readers if n in mounts and not mounts[n][1]]
    return problems
